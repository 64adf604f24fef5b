"""Against a real llama-server: the Anthropic Messages and OpenAI Responses adapters.

llama-server speaks `/v1/messages` and `/v1/responses` besides Chat Completions, so these
two adapters meet a real server too, streamed and atomic.
"""

from __future__ import annotations

import anyio
import pytest

from tally_client import AsyncClient, Client, Response
from tally_client.testing.llama import LlamaServer

pytestmark = pytest.mark.live

# protocol -> base URL for the server (Anthropic's convention has no /v1)
PROTOCOLS = {"anthropic": "root_url", "openai-responses": "base_url"}


def make(llama: LlamaServer, protocol: str) -> Client:
    return Client(base_url=getattr(llama, PROTOCOLS[protocol]), protocol=protocol, model="smollm2")


def check(response: Response, max_tokens: int) -> None:
    assert response.state == "complete"
    assert response.text.strip()
    assert response.finish_reason in ("stop", "length")
    usage = response.usage
    assert usage.reported
    assert usage.input_tokens and usage.input_tokens > 5  # the prompt and its template
    assert usage.output_tokens and 0 < usage.output_tokens <= max_tokens
    if response.finish_reason == "length":
        assert usage.output_tokens == max_tokens


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_streamed(llama: LlamaServer, protocol: str) -> None:
    with make(llama, protocol) as client, client.stream("Say hello to Paris.", max_tokens=24) as s:
        pieces = list(s.text())
    response = s.final()
    check(response, 24)
    assert len(pieces) > 3
    assert "".join(pieces) == response.text
    assert response.metrics.ttft is not None
    assert response.metrics.ttft < response.metrics.total_seconds


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_atomic(llama: LlamaServer, protocol: str) -> None:
    with make(llama, protocol) as client:
        response = client.complete("Name the capital of France.", max_tokens=16)
    check(response, 16)
    assert response.metrics.chunks == 1


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_async_streamed(llama: LlamaServer, protocol: str) -> None:
    async def main() -> Response:
        url = getattr(llama, PROTOCOLS[protocol])
        async with AsyncClient(base_url=url, protocol=protocol, model="smollm2") as client:
            async with client.stream("Count to five.", max_tokens=20) as stream:
                async for _ in stream:
                    pass
            return await stream.final()

    check(anyio.run(main), 20)


def test_same_prompt_same_shape_across_the_three_protocols(llama: LlamaServer) -> None:
    urls = {"openai-chat": llama.base_url, "anthropic": llama.root_url,
            "openai-responses": llama.base_url}  # fmt: skip
    results = {}
    for protocol, url in urls.items():
        with Client(base_url=url, protocol=protocol, model="smollm2") as client:
            results[protocol] = client.complete(
                "Reply with the single word: yes.", max_tokens=8, temperature=0
            )
    for response in results.values():
        check(response, 8)
    # One model, one chat template, greedy decoding: each protocol must carry the same prompt
    # to it, so the answers and their token counts agree.
    assert len({r.text for r in results.values()}) == 1, {p: r.text for p, r in results.items()}
    assert len({r.usage.output_tokens for r in results.values()}) == 1
