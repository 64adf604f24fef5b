"""The hosted Tally router (through the loopback stand-in): decisions, every failure falling
back, telemetry that never delays a call, and no content in any byte sent to it."""

from __future__ import annotations

import gzip
import json
import secrets
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from tally_client import (
    AsyncClient,
    Client,
    ConfigurationError,
    MissingAPIKeyError,
    ModelSpec,
    build_envelope,
)
from tally_client._config import load_provider
from tally_client._decision import Decision, Outcome
from tally_client._transport import DEADLINE
from tally_client.routing import EmbeddedRouter
from tally_client.routing.remote import TallyRouter
from tally_client.routing.telemetry import Telemetry
from tally_client.testing import TallyServer
from tally_client.testing.replay import ReplayServer, Reply, Scenario

RECORDINGS = Path(__file__).parent / "recordings"
KEY = "tly_" + "k" * 32
MODELS = [ModelSpec("gpt-4.1-nano", "p"), ModelSpec("gpt-4.1", "p")]


@pytest.fixture
def tally() -> Iterator[TallyServer]:
    with TallyServer(api_key=KEY) as server:
        yield server


@pytest.fixture(scope="module")
def provider() -> Iterator[ReplayServer]:
    with ReplayServer() as server:
        yield server


def make_client(provider: ReplayServer, router: Any, reply: Reply | None = None) -> Client:
    url = provider.add(reply or Reply.from_file(RECORDINGS / "openai_chat" / "text.json"))
    codec = load_provider("openai-chat", base_url=url + "/v1", api_key="k")
    return Client(MODELS, providers={"p": codec}, router=router)


def test_a_remote_decision_is_followed_and_its_outcome_reported(
    tally: TallyServer, provider: ReplayServer
) -> None:
    router = TallyRouter(KEY, tally.url, timeout=2.0)
    with make_client(provider, router) as client:
        d = client.route(task_type="qa-simple", consumer="machine", expected_output_tokens=50)
        assert d.source == "remote" and d.model in ("gpt-4.1-nano", "gpt-4.1")
        assert d.id.startswith("tly-")
        assert any("recommended by the hosted router" in r for r in d.reasons)
        r = client.complete("hi", task_type="qa-simple")
        assert r.text and r.decision is not None and r.decision.source == "caller"
        client.feedback(r, score=0.0)
    router.close()
    route = json.loads(tally.bodies("/route")[0])
    assert set(route) == {"semantic_envelope", "available_models", "available_tools"}
    assert route["semantic_envelope"]["task_type"] == "qa-simple"
    assert route["semantic_envelope"]["protocol_version"] == "2"
    sent = [json.loads(b) for b in tally.bodies("/telemetry")]
    assert [t["decision_id"] for t in sent] == [r.decision.id] * 2  # outcome, then feedback
    first, verdict = sent
    assert first["outcome"] == "success" and first["ntok_input"] == 14
    assert first["ntok_output"] == 11 and first["stream"] is False
    assert first["model_used"] == first["recommended_model"] == r.decision.model
    assert isinstance(first["latency_ms"], int)
    assert verdict["outcome"] == "failure" and verdict["score"] == 0.0
    headers = [req.headers for req in tally.requests]
    assert all(h["authorization"] == f"Bearer {KEY}" for h in headers)


def _closed_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"  # nothing listens there any more


@pytest.mark.parametrize(
    ("fault", "why"),
    [
        ("timeout", "no answer within 0.5 s"),
        ("500", "HTTP 500"),
        ("malformed", "not JSON"),
        ("not-object", "not a JSON object"),
        ("unknown-model", "'no-such-model', which is not among the configured models"),
        ("refused", "ConnectError"),
        ("bad-key", "HTTP 401"),
    ],
)
def test_every_failure_falls_back_and_the_call_proceeds(
    tally: TallyServer,
    provider: ReplayServer,
    fault: str,
    why: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    tally.fault, tally.delay = fault, 2.0
    base = _closed_port() if fault == "refused" else tally.url
    key = "tly_wrong" if fault == "bad-key" else KEY
    router = TallyRouter(key, base, timeout=0.5, telemetry=False)
    with caplog.at_level("INFO", logger="tally_client"), make_client(provider, router) as client:
        r = client.complete("hi", task_type="qa-simple")
    assert r.text and r.state == "complete"
    assert r.decision is not None and r.decision.source == "fallback"
    assert r.decision.reasons[0].startswith("the hosted router could not be used")
    assert why in r.decision.reasons[0]
    fallbacks = [rec for rec in caplog.records if "hosted router could not be used" in rec.message]
    assert [rec.levelname for rec in fallbacks] == ["INFO"]  # a fallback is logged at INFO
    assert key not in caplog.text
    router.close()


def test_a_slow_answer_past_the_limit_is_not_used(
    tally: TallyServer, provider: ReplayServer
) -> None:
    # The answer arrives, but after the limit: the embedded router decides.
    tally.fault, tally.delay = "timeout", 0.3
    router = TallyRouter(KEY, tally.url, timeout=0.2, telemetry=False)
    with make_client(provider, router) as client:
        d = client.route(task_type="qa-simple")
    assert d.source == "fallback" and "0.2 s" in d.reasons[0]
    router.close()


def test_no_key_is_a_typed_error_naming_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TALLY_API_KEY", raising=False)
    with pytest.raises(MissingAPIKeyError, match="TALLY_API_KEY"):
        Client(MODELS, providers={"p": load_provider("openai-chat", api_key="k")}, router="tally")


def test_router_tally_reads_the_environment(
    tally: TallyServer, provider: ReplayServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TALLY_API_KEY", KEY)
    monkeypatch.setenv("TALLY_BASE_URL", tally.url)
    with make_client(provider, "tally") as client:
        assert client.route(task_type="chat").source == "remote"
    assert tally.bodies("/telemetry") == []  # close() flushed: nothing was called


def test_wire_v1_sends_the_live_clients_schema(tally: TallyServer, provider: ReplayServer) -> None:
    router = TallyRouter(KEY, tally.url, wire="v1", timeout=2.0)
    with make_client(provider, router) as client:
        client.complete("hi", task_type="code-generation", structure_type="code")
    router.close()
    envelope = json.loads(tally.bodies("/route")[0])["semantic_envelope"]
    assert envelope["schema_version"] == "1.0" and envelope["task_type"] == "code"
    assert envelope["context_length_bucket"] == "small"
    (telemetry,) = [json.loads(b) for b in tally.bodies("/telemetry")]
    assert telemetry["protocol_version"] == "1.0" and telemetry["success"] is True
    assert telemetry["tokens_input"] == 14 and telemetry["outcome_signal"] == "compliant"


def test_a_hanging_telemetry_endpoint_never_delays_a_call(
    tally: TallyServer, provider: ReplayServer
) -> None:
    tally.fault, tally.delay = "hang-telemetry", 3.0
    router = TallyRouter(KEY, tally.url, timeout=2.0)
    assert router.telemetry is not None
    with make_client(provider, router) as client:
        for _ in range(5):
            assert client.complete("hi").text
        # All five calls returned while the first telemetry post is still unanswered.
        assert router.telemetry.sent == 0 and router.telemetry.failed == 0
    router.close()


def test_a_full_telemetry_queue_drops_without_blocking(tally: TallyServer) -> None:
    tally.fault, tally.delay = "hang-telemetry", 0.5
    telemetry = Telemetry(tally.url, KEY, "v2", maxsize=3, timeout=5.0)
    router = TallyRouter(KEY, tally.url, telemetry=False)
    from tally_client import build_envelope

    envelope = build_envelope(task_type="chat")
    decision = router.route(envelope, MODELS)
    accepted = [
        telemetry.send(decision, Outcome(decision.id, decision.model, 1.0, "complete"), envelope)
        for _ in range(50)
    ]
    assert accepted[:3] == [True] * 3
    assert accepted.count(False) >= 40 and telemetry.dropped == accepted.count(False)
    telemetry.close(timeout=10.0)
    assert telemetry.sent == accepted.count(True)
    router.close()


def test_close_flushes_queued_telemetry(tally: TallyServer, provider: ReplayServer) -> None:
    router = TallyRouter(KEY, tally.url, timeout=2.0)
    with make_client(provider, router) as client:
        for _ in range(10):
            client.complete("hi", task_type="summarisation")
    router.close()
    assert len(tally.bodies("/telemetry")) == 10
    assert tally.learned == 10  # the stand-in's learner learned from each


def _canary() -> str:
    return "CANARY" + secrets.token_hex(8)


@pytest.mark.parametrize("wire", ["v2", "v1"])
def test_no_content_ever_reaches_the_router_or_telemetry(
    tally: TallyServer, provider: ReplayServer, wire: str
) -> None:
    router = TallyRouter(KEY, tally.url, wire=wire, timeout=2.0)  # type: ignore[arg-type]
    canaries: list[str] = []
    for i in range(12):
        c = [_canary() for _ in range(12)]
        canaries.extend(c)
        answer = {
            "id": "x",
            "object": "chat.completion",
            "model": c[0],
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": json.dumps({"v": c[1]})},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8},
        }
        tool = {
            "name": c[2],
            "description": c[3],
            "parameters": {
                "type": "object",
                "properties": {c[4]: {"type": "string", "description": c[5]}},
            },
        }
        messages = [
            {"role": "user", "content": c[6]},
            {"role": "assistant", "content": c[7]},
            {"role": "user", "content": c[8]},
        ]
        with make_client(provider, router, Reply.json(answer)) as client:
            options: dict[str, Any] = {"system": c[9], "task_type": "chat"}
            if i % 3 == 0:
                options["tools"] = [tool]
            elif i % 3 == 1:
                options["schema"] = {"type": "object", "title": c[10], "description": c[11]}
            r = client.complete(messages, **options)
            assert c[1] in r.text
            client.feedback(r, score=0.5)
    router.close()
    sent = b"".join(req.body for req in tally.requests) + b"".join(
        str(req.headers).encode() for req in tally.requests
    )
    assert len(tally.bodies("/route")) == 12 and len(tally.bodies("/telemetry")) == 24
    leaked = [c for c in canaries if c.encode() in sent]
    assert leaked == []
    assert b"CANARY" not in sent


def test_async_client_asks_the_router_without_blocking_its_loop(
    tally: TallyServer, provider: ReplayServer
) -> None:
    used: list[str] = []

    class Gate(httpx.AsyncBaseTransport):
        """Answers only after another task opened the gate: a blocking route would hang."""

        def __init__(self) -> None:
            self.inner = httpx.AsyncHTTPTransport()
            self.gate = anyio.Event()

        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            used.append(request.url.path)
            await self.gate.wait()
            return await self.inner.handle_async_request(request)

    gate = Gate()
    router = TallyRouter(KEY, tally.url, timeout=5.0, async_transport=gate)
    sse = Reply.from_file(RECORDINGS / "openai_chat" / "text.sse")
    url = provider.add(Scenario(sse, Reply.from_file(RECORDINGS / "openai_chat" / "text.json")))
    codec = load_provider("openai-chat", base_url=url + "/v1", api_key="k")

    async def opener() -> None:
        await anyio.sleep(0.05)
        gate.gate.set()

    async def main() -> None:
        async with AsyncClient(MODELS, providers={"p": codec}, router=router) as client:
            async with anyio.create_task_group() as tg:
                tg.start_soon(opener)
                decision = await client.route(task_type="chat")
            assert decision.source == "remote"
            stream = client.stream("hi", task_type="chat")
            text = [t async for t in stream.text()]
            response = await stream.final()
            assert "".join(text) == response.text and response.decision is not None
            assert response.decision.source == "caller" and response.decision.id.startswith("tly-")
            response = await client.complete("hi")
            assert response.decision is not None and response.decision.id.startswith("tly-")

    anyio.run(main)
    assert used == ["/route", "/route", "/route"]


# -- one time budget for the whole decision -------------------------------------------------


@pytest.mark.parametrize("run", ["sync", "async"])
def test_a_raising_fallback_carries_no_httpx_error_on_its_chain(run: str) -> None:
    # An httpx error's request holds the Tally key; a user's fallback router that raises
    # must not drag it along as the exception's context.
    class Broken(EmbeddedRouter):
        def route(self, *args: Any, **kwargs: Any) -> Decision:
            raise RuntimeError("the fallback router failed")

    router = TallyRouter(KEY, _closed_port(), timeout=1, telemetry=False, fallback=Broken())
    envelope = build_envelope(task_type="chat")
    with pytest.raises(RuntimeError) as info:
        if run == "sync":
            router.route(envelope, MODELS)
        else:
            anyio.run(router.aroute, envelope, MODELS)
    chain: list[BaseException] = []
    error: BaseException | None = info.value
    while error is not None:
        chain.append(error)
        error = error.__cause__ or error.__context__
    assert not any(isinstance(e, httpx.HTTPError) for e in chain), chain
    router.close()


@pytest.mark.parametrize("phase", ["headers", "body"])
def test_a_trickling_answer_cannot_stretch_the_budget(tally: TallyServer, phase: str) -> None:
    # One byte every 50 ms: each read returns long before a per-read limit of 0.3 s would
    # end it, so only a deadline for the whole request stops it before the 20 s the whole
    # answer takes. The proof is the server's: the client hung up before the last byte.
    tally.fault = f"trickle-{phase}"
    router = TallyRouter(KEY, tally.url, timeout=0.3, telemetry=False)
    decision = router.route(build_envelope(task_type="chat"), MODELS)
    assert decision.source == "fallback"
    assert "no answer within 0.3 s" in decision.reasons[0]
    assert tally.trickle_abandoned.wait(10.0)
    assert not tally.trickle_done.is_set()
    router.close()


def test_the_fallback_runs_without_the_hosted_router_s_deadline(tally: TallyServer) -> None:
    # The budget was the hosted router's: the embedded router that decides instead (which
    # may ask llama-server's /tokenize) and the call after it must not inherit an expired one.
    seen: list[float | None] = []

    class Watching(EmbeddedRouter):
        def route(self, *args: Any, **kwargs: Any) -> Decision:
            seen.append(DEADLINE.get())
            return super().route(*args, **kwargs)

    tally.fault = "trickle-body"
    router = TallyRouter(KEY, tally.url, timeout=0.3, telemetry=False, fallback=Watching())
    decision = router.route(build_envelope(task_type="chat"), MODELS)
    assert decision.source == "fallback" and seen == [None]
    assert DEADLINE.get() is None
    router.close()


@pytest.mark.parametrize("phase", ["headers", "body"])
def test_a_trickling_answer_cannot_stretch_the_async_budget(tally: TallyServer, phase: str) -> None:
    tally.fault = f"trickle-{phase}"
    router = TallyRouter(KEY, tally.url, timeout=0.3, telemetry=False)

    async def main() -> Decision:
        try:
            return await router.aroute(build_envelope(task_type="chat"), MODELS)
        finally:
            await router.aclose()

    decision = anyio.run(main)
    assert decision.source == "fallback"
    assert "no answer within 0.3 s" in decision.reasons[0]
    assert tally.trickle_abandoned.wait(10.0)
    assert not tally.trickle_done.is_set()


def test_a_whole_answer_within_the_budget_is_used_when_it_trickles_in_time(
    tally: TallyServer,
) -> None:
    # The same trickle, with a budget that holds it: the deadline cuts only what is late.
    tally.fault, tally.trickle_interval = "trickle-body", 0.0
    router = TallyRouter(KEY, tally.url, timeout=30.0, telemetry=False)
    decision = router.route(build_envelope(task_type="chat"), MODELS)
    assert decision.source == "remote"
    assert tally.trickle_done.wait(10.0)
    router.close()


def _answering(content: bytes, headers: dict[str, str] | None = None) -> httpx.MockTransport:
    return httpx.MockTransport(
        lambda request: httpx.Response(200, content=content, headers=headers)
    )


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (b"[" * 50_000, "not JSON"),  # nested past the parser's depth: RecursionError
        (b"\xff\xfe{}", "not JSON"),
        (b'{"recommended_model": "gpt-4.1"}' + b" " * 70_000, "larger than 65536 bytes"),
    ],
)
def test_a_hostile_answer_falls_back(content: bytes, why: str) -> None:
    router = TallyRouter(KEY, "http://tally.test", telemetry=False, transport=_answering(content))
    decision = router.route(build_envelope(task_type="chat"), MODELS)
    assert decision.source == "fallback" and why in decision.reasons[0]
    router.close()


def test_a_compressed_answer_is_read() -> None:
    answer = json.dumps({"recommended_model": "gpt-4.1", "confidence_score": 0.9}).encode()
    transport = _answering(gzip.compress(answer), {"content-encoding": "gzip"})
    router = TallyRouter(KEY, "http://tally.test", telemetry=False, transport=transport)
    decision = router.route(build_envelope(task_type="chat"), MODELS)
    assert decision.source == "remote" and decision.model == "gpt-4.1"
    router.close()


def test_a_bug_under_the_router_is_raised_not_hidden_by_the_fallback() -> None:
    # Only the hosted router's own failures (transport errors, unusable answers) fall back:
    # anything else is a bug and must reach the tests.
    def broken(request: httpx.Request) -> httpx.Response:
        raise RuntimeError("a bug, not a network failure")

    router = TallyRouter(
        KEY, "http://tally.test", telemetry=False, transport=httpx.MockTransport(broken)
    )
    with pytest.raises(RuntimeError, match="a bug"):
        router.route(build_envelope(task_type="chat"), MODELS)
    router.close()


@pytest.mark.parametrize(
    "url", ["tally.example", "ftp://tally.example", "http://:80", "http://a:port"]
)
def test_a_base_url_that_is_not_http_is_a_configuration_error(url: str) -> None:
    with pytest.raises(ConfigurationError, match="base URL"):
        TallyRouter(KEY, url, telemetry=False)
