"""Against a real llama-server: streamed, atomic, structured and routed calls."""

from __future__ import annotations

import anyio
import pytest

from tally_client import AsyncClient, Client, TextDelta
from tally_client.testing.llama import LlamaServer

pytestmark = pytest.mark.live

CITY_SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "country": {"type": "string"}},
    "required": ["city", "country"],
}


@pytest.fixture
def client(llama: LlamaServer):
    with Client(base_url=llama.base_url) as c:
        yield c


def test_streamed_answer_has_text_usage_and_metrics(client: Client) -> None:
    pieces: list[str] = []
    with client.stream("Explain entropy in three sentences.", max_tokens=48) as stream:
        for text in stream.text():
            pieces.append(text)
    response = stream.final()
    assert len(pieces) > 5, "a stream delivers many pieces"
    assert "".join(pieces) == response.text and response.text.strip()
    assert response.state == "complete"
    assert response.finish_reason in ("stop", "length")
    usage = response.usage
    assert usage.reported and usage.input_tokens and usage.output_tokens
    assert usage.total_tokens == usage.input_tokens + usage.output_tokens
    if response.finish_reason == "length":
        assert usage.output_tokens == 48
    m = response.metrics
    assert m.ttft is not None and 0 < m.ttft < m.total_seconds
    assert m.itl_mean is not None and m.itl_p95 is not None and m.itl_p95 >= m.itl_mean * 0.5
    assert m.output_tokens_per_second and m.output_tokens_per_second > 1
    assert response.decision is not None and response.decision.stream is True


def test_atomic_answer_has_exact_usage(client: Client) -> None:
    response = client.complete("Name the capital of France.", max_tokens=24)
    assert response.state == "complete" and response.text.strip()
    assert response.usage.reported
    assert response.usage.output_tokens and response.usage.output_tokens <= 24
    assert response.metrics.chunks == 1  # one body, not a stream
    assert response.decision is not None and response.decision.stream is False


def test_json_schema_answer_parses(client: Client) -> None:
    response = client.complete(
        "Which city is the capital of France? Answer in JSON.",
        schema=CITY_SCHEMA,
        max_tokens=60,
        temperature=0,
    )
    assert response.state == "complete"
    assert isinstance(response.parsed, dict)
    assert set(response.parsed) >= {"city", "country"}


def test_respond_follows_the_router(client: Client) -> None:
    human = client.respond("Tell me a story.", consumer="human", max_tokens=900)
    assert human.decision is not None and human.decision.stream is True
    with human:
        events = []
        for event in human:
            events.append(event)
            if sum(isinstance(e, TextDelta) for e in events) >= 8:
                break  # a reader stops early: the call is cancelled, the text kept
    assert human.streaming
    cancelled = human.final()
    assert cancelled.state == "cancelled" and cancelled.text

    machine = client.respond(
        "Label the sentiment of 'I love it' as positive or negative.",
        consumer="machine",
        max_tokens=5,
    )
    assert machine.decision is not None and machine.decision.stream is False
    assert not machine.streaming
    response = machine.final()
    assert response.state == "complete" and response.metrics.chunks == 1


def test_async_client_streams_and_completes(llama: LlamaServer) -> None:
    async def main() -> tuple[str, str, int]:
        async with AsyncClient(base_url=llama.base_url) as client:
            async with client.stream("Say hello.", max_tokens=16) as stream:
                text = "".join([t async for t in stream.text()])
            streamed = await stream.final()
            atomic = await client.complete("Say hello.", max_tokens=8)
            assert streamed.usage.reported and atomic.usage.reported
            return text, streamed.text, atomic.usage.output_tokens or 0

    joined, final_text, atomic_tokens = anyio.run(main)
    assert joined == final_text and joined
    assert 0 < atomic_tokens <= 8


def test_one_line_helpers(llama: LlamaServer, monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    import tally_client

    for key in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY", "GOOGLE_API_KEY"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("TALLY_LOCAL_BASE_URL", llama.base_url)
    monkeypatch.setattr(tally_client, "_default_client", None)
    answer = tally_client.ask("Name the capital of France.", max_tokens=16)
    assert isinstance(answer, str)
    assert answer.strip()
    out = io.StringIO()
    response = tally_client.ask_stream("Say hello.", file=out, max_tokens=12)
    assert out.getvalue() == response.text + "\n"
    assert response.state == "complete"
    assert response.usage.reported
    default = tally_client._default_client
    assert default is not None
    default.close()
