"""The SSE relay over a real uvicorn server, with the replay server as the provider."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tally_client import ConfigurationError, RetryPolicy
from tally_client.testing import ReplayServer, Reply, Scenario
from tally_client.web import RelayResult, describe_error, sse_response

from .relay_app import LazyClient, guide_snippet, parse_sse, post, relay_app, vercel_parts
from .servers import serve

RECORDINGS = Path(__file__).parent.parent / "recordings"
TEXT = "Hello! Café au lait — a classic ☕."


def text_reply(**faults) -> Reply:
    return Reply.from_file(RECORDINGS / "openai_chat" / "text.sse", **faults)


def relay(
    server: ReplayServer,
    *replies: Reply,
    protocol: str = "vercel-ai",
    sync=False,
    call=None,
    client_options=None,
    **options,
):
    """Serve one relay of `replies`; return (http response, results list, upstream url)."""
    url = server.add(Scenario(*replies))
    lazy = LazyClient(url, **(client_options or {}))
    call = call or {}
    results: list[RelayResult] = []
    make = (lambda: lazy.sync_stream(**call)) if sync else (lambda: lazy.stream(**call))
    app = relay_app(make, results, protocol=protocol, **options)
    return app, results, url


def texts_after_last_reset(parts) -> str:
    last = max((i for i, p in enumerate(parts) if p["type"] == "data-reset"), default=-1)
    return "".join(p["delta"] for p in parts[last + 1 :] if p["type"] == "text-delta")


def wait_for_result(results: list[RelayResult], timeout: float = 10) -> RelayResult:
    deadline = time.monotonic() + timeout
    while not results:
        assert time.monotonic() < deadline, "the relay never reported its result"
        time.sleep(0.01)
    return results[0]


@pytest.mark.parametrize("sync", [False, True], ids=["AsyncStream", "Stream"])
def test_vercel_text_stream_and_headers(sync: bool) -> None:
    with ReplayServer() as server:
        app, results, _ = relay(server, text_reply(), sync=sync)
        with serve(app) as base:
            response = post(base)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["cache-control"] == "no-cache, no-transform"
    assert response.headers["x-accel-buffering"] == "no"
    assert response.headers["x-vercel-ai-ui-message-stream"] == "v1"
    parts = vercel_parts(response.content)
    types = [p["type"] for p in parts]
    assert types == ["start", "start-step", "text-start", *["text-delta"] * 10, "text-end",
                     "finish-step", "finish", "[DONE]"]  # fmt: skip
    assert parts[0]["messageMetadata"]["decision"]["stream"] is True
    assert "".join(p["delta"] for p in parts if p["type"] == "text-delta") == TEXT
    assert {p["id"] for p in parts if p["type"].startswith("text-")} == {parts[2]["id"]}
    finish = parts[-2]
    assert finish["finishReason"] == "stop"
    meta = finish["messageMetadata"]
    assert meta["state"] == "complete"
    assert meta["usage"] == {"inputTokens": 14, "outputTokens": 11, "reported": True}
    assert meta["metrics"]["ttft"] > 0 and meta["metrics"]["chunks"] == 10
    result = wait_for_result(results)
    assert result.response is not None and result.response.text == TEXT
    assert not result.disconnected and result.error is None
    assert result.frames == 12 and result.output_tokens == 11


def test_events_protocol() -> None:
    with ReplayServer() as server:
        app, _, _ = relay(server, text_reply(), protocol="events", message_id="m1",
                          metadata={"chatId": "c1"})  # fmt: skip
        with serve(app) as base:
            response = post(base)
    assert "x-vercel-ai-ui-message-stream" not in response.headers
    assert response.headers["x-accel-buffering"] == "no"
    events = parse_sse(response.content)
    names = [name for name, _ in events]
    assert names == ["start", *["text"] * 10, "done"]
    start = json.loads(events[0][1])
    assert start["messageId"] == "m1" and start["metadata"]["chatId"] == "c1"
    assert start["metadata"]["decision"]["stream"] is True
    assert start["metadata"]["decision"]["id"]
    assert "".join(json.loads(d)["text"] for n, d in events if n == "text") == TEXT
    done = json.loads(events[-1][1])
    assert done["metadata"]["state"] == "complete" and done["toolCalls"] == []


def test_reset_becomes_a_data_part_then_the_full_retry() -> None:
    good = text_reply()
    cut = good.replace(cut_after=good.offset_after_event(5), cut="reset")
    with ReplayServer() as server:
        app, _, _ = relay(server, cut, good)
        with serve(app) as base:
            parts = vercel_parts(post(base).content)
    types = [p["type"] for p in parts]
    reset_at = types.index("data-reset")
    assert types[reset_at - 2 : reset_at + 3] == [
        "text-end", "finish-step", "data-reset", "start-step", "text-start",
    ]  # fmt: skip
    reset = parts[reset_at]
    assert reset["data"]["attempt"] == 2
    assert reset["data"]["discardedText"] == "Hello! Café au"
    assert reset["data"]["reason"] == "The connection to the model broke (StreamInterrupted)."
    shown_before = "".join(p["delta"] for p in parts[:reset_at] if p["type"] == "text-delta")
    assert shown_before == "Hello! Café au"
    assert texts_after_last_reset(parts) == TEXT
    assert parts[-2]["messageMetadata"]["attempts"] == 2


def test_reset_step_mode_for_ai7() -> None:
    good = text_reply()
    cut = good.replace(cut_after=good.offset_after_event(5), cut="reset")
    with ReplayServer() as server:
        app, _, _ = relay(server, cut, good, reset="step")
        with serve(app) as base:
            parts = vercel_parts(post(base).content)
    types = [p["type"] for p in parts]
    at = types.index("reset-step")
    assert types[at - 1 : at + 3] == ["text-end", "reset-step", "data-reset", "text-start"]
    assert parts[at + 1]["transient"] is True
    assert types.count("start-step") == 1


def test_error_mid_stream_keeps_the_text_and_hides_the_provider_message() -> None:
    reply = Reply.from_file(RECORDINGS / "openai_chat" / "error_event.sse")
    provider_message = json.loads(reply.body.split(b"data: ")[-1])["error"]["message"]
    with ReplayServer() as server:
        app, results, _ = relay(server, reply, client_options={"retry": RetryPolicy(1)})
        with serve(app) as base:
            response = post(base)
    parts = vercel_parts(response.content)
    types = [p["type"] for p in parts]
    assert types[-5:] == ["text-delta", "text-end", "error", "finish", "[DONE]"]
    assert "".join(p["delta"] for p in parts if p["type"] == "text-delta") == "The answer is"
    error = parts[-3]["errorText"]
    assert error.startswith("The model's provider") and provider_message not in error
    assert parts[-2]["finishReason"] == "error"
    assert parts[-2]["messageMetadata"]["state"] == "interrupted"
    result = wait_for_result(results)
    assert result.error is not None and result.response is not None
    assert result.response.text == "The answer is"


def test_custom_error_text() -> None:
    reply = Reply.from_file(RECORDINGS / "openai_chat" / "error_event.sse")
    with ReplayServer() as server:
        app, _, _ = relay(server, reply, client_options={"retry": RetryPolicy(1)},
                          error_text=lambda exc: f"oops: {type(exc).__name__}")  # fmt: skip
        with serve(app) as base:
            parts = vercel_parts(post(base).content)
    assert next(p["errorText"] for p in parts if p["type"] == "error").startswith("oops: ")


def test_tool_call_parts() -> None:
    reply = Reply.from_file(RECORDINGS / "openai_chat" / "tool_call.sse")
    with ReplayServer() as server:
        app, _, _ = relay(server, reply)
        with serve(app) as base:
            parts = vercel_parts(post(base).content)
    types = [p["type"] for p in parts]
    start = parts[types.index("tool-input-start")]
    assert start == {"type": "tool-input-start", "toolCallId": "call_Qm8rT2vXbN5kLp3WzY7dHc1J",
                     "toolName": "get_weather"}  # fmt: skip
    deltas = "".join(p["inputTextDelta"] for p in parts if p["type"] == "tool-input-delta")
    assert json.loads(deltas) == {"city": "Paris", "unit": "celsius"}
    available = parts[types.index("tool-input-available")]
    assert available["input"] == {"city": "Paris", "unit": "celsius"}
    assert available["toolCallId"] == start["toolCallId"]
    assert parts[types.index("finish")]["finishReason"] == "tool-calls"


def test_reasoning_parts() -> None:
    reply = Reply.from_file(RECORDINGS / "anthropic" / "thinking.sse")
    with ReplayServer() as server:
        app, _, _ = relay(server, reply, client_options={"protocol": "anthropic"})
        with serve(app) as base:
            parts = vercel_parts(post(base).content)
    types = [p["type"] for p in parts]
    assert types.index("reasoning-start") < types.index("reasoning-end") < types.index("text-start")
    thinking = "".join(p["delta"] for p in parts if p["type"] == "reasoning-delta")
    assert thinking and "".join(p["delta"] for p in parts if p["type"] == "text-delta") == (
        "17 × 23 = 391."
    )


def test_pings_while_waiting_for_the_first_token() -> None:
    slow = text_reply(stall_after=0, stall_seconds=0.8, chunk_delay=0.02)
    with ReplayServer() as server:
        app, results, _ = relay(server, slow, ping=0.15)
        with serve(app) as base:
            response = post(base)
    events = parse_sse(response.content)
    first_text = next(i for i, (n, d) in enumerate(events) if "text-delta" in d)
    pings = [e for e in events[:first_text] if e == ("comment", "ping")]
    assert len(pings) >= 3
    assert wait_for_result(results).pings == len(pings)


def test_smoothing_coalesces_deltas_into_fewer_frames() -> None:
    paced = text_reply(chunk_delay=0.02)  # 10 text deltas over about 0.25 s
    with ReplayServer() as server:
        app_plain, _, _ = relay(server, paced)
        app_smooth, _, _ = relay(server, paced, smooth=0.1)
        with serve(app_plain) as base:
            plain = vercel_parts(post(base).content)
        with serve(app_smooth) as base:
            smooth = vercel_parts(post(base).content)
    deltas = [p["delta"] for p in plain if p["type"] == "text-delta"]
    smoothed = [p["delta"] for p in smooth if p["type"] == "text-delta"]
    assert "".join(deltas) == "".join(smoothed) == TEXT
    assert len(deltas) == 10
    assert 2 <= len(smoothed) <= 5


def read_until_text_then_leave(base: str) -> bytes:
    """Read the relay until the first text arrives, then close the connection (a stop)."""
    seen = b""
    with httpx.Client(timeout=10) as http, http.stream("POST", base + "/relay", json={}) as r:
        for chunk in r.iter_raw():
            seen += chunk
            if b"text-delta" in seen:
                break
    return seen


@pytest.mark.parametrize("sync", [False, True], ids=["AsyncStream", "Stream"])
def test_client_leaving_closes_the_upstream_and_reports_tokens_saved(sync: bool) -> None:
    good = text_reply()
    stalled = good.replace(stall_after=good.offset_after_event(4))  # 3 text deltas, then waits
    with ReplayServer() as server:
        app, results, url = relay(server, stalled, sync=sync, call={"max_tokens": 300})
        with serve(app) as base:
            seen = read_until_text_then_leave(base)
            assert b"Hello" in seen
            server.wait_for_disconnect(url, timeout=5)
            result = wait_for_result(results)
        assert server.open_connections == 0
    assert result.disconnected
    assert result.response is not None and result.response.state == "cancelled"
    if sync:  # the thread may stop between the deltas of one read: a prefix of them
        assert result.response.text in ("Hello", "Hello!", "Hello! Café")
    else:
        assert result.response.text == "Hello! Café"
    assert result.output_tokens == result.response.metrics.chunks >= 1
    assert result.output_tokens_saved == 300 - result.output_tokens


@pytest.mark.parametrize(
    "phase",
    ["waiting for headers", "waiting for the first token", "sleeping before a retry"],
)
def test_client_leaving_early_ends_the_call_in_every_phase(phase: str) -> None:
    text = text_reply()
    replies = {
        "waiting for headers": [text.replace(headers_delay=30)],
        "waiting for the first token": [text.replace(stall_after=0)],
        "sleeping before a retry": [
            Reply.error(503, {"error": {"message": "busy"}}, {"retry-after": "30"}),
            text,
        ],
    }[phase]
    retry = RetryPolicy(max_attempts=2, max_retry_after=60)
    with ReplayServer() as server:
        app, results, url = relay(server, *replies, client_options={"retry": retry})
        with serve(app) as base:
            with (
                httpx.Client(timeout=10) as http,
                http.stream("POST", base + "/relay", json={}) as r,
            ):
                chunks = r.iter_raw()  # held: dropping it would close the connection
                assert b'"type":"start"' in next(chunks)
                server.wait_for_requests(url, 1, timeout=5)
                time.sleep(0.2)  # the relay is now in the phase under test
                left_at = time.monotonic()
            result = wait_for_result(results)
            ended_after = time.monotonic() - left_at
            if phase != "sleeping before a retry":  # (the 503's connection stays pooled)
                server.wait_for_disconnect(url, timeout=5)
                server.wait_for_idle(5)
            assert len(server.requests(url)) == 1  # no retry went out after the browser left
    assert ended_after < 2
    assert result.disconnected and result.response is not None
    assert result.response.state == "cancelled" and result.response.text == ""


def test_bad_arguments_raise_configuration_error() -> None:
    with ReplayServer() as server:
        lazy = LazyClient(server.add(Scenario(text_reply())))
        from tally_client import Client

        stream = Client(base_url=lazy.url + "/v1").stream("hi")
        with pytest.raises(ConfigurationError, match="protocol"):
            sse_response(stream, protocol="ndjson")  # type: ignore[arg-type]
        with pytest.raises(ConfigurationError, match="reset"):
            sse_response(stream, reset="all")  # type: ignore[arg-type]
        with pytest.raises(ConfigurationError, match="ping"):
            sse_response(stream, ping=0)
        with pytest.raises(ConfigurationError, match="AsyncStream, a Stream or a run_tools"):
            sse_response("hello")  # type: ignore[arg-type]
        stream.final()
        with pytest.raises(ConfigurationError, match="already iterated"):
            sse_response(stream)


def test_describe_error_never_shows_the_message() -> None:
    from tally_client import RateLimitError, StreamInterrupted

    secret = "sk-proj-abc request req_123"
    assert secret not in describe_error(RateLimitError(secret, status_code=429))
    assert describe_error(StreamInterrupted(secret)) == (
        "The connection to the model broke (StreamInterrupted)."
    )


def test_import_stays_cheap() -> None:
    code = (
        "import sys, tally_client, tally_client.web; "
        "print(sorted(m for m in ('starlette', 'fastapi', 'uvicorn') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_guide_snippet_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    with ReplayServer() as server:
        url = server.add(Scenario(text_reply())) + "/v1"
        with (
            guide_snippet("", url, monkeypatch) as module,
            serve(module.app) as base,
            httpx.Client(timeout=30) as http,
        ):
            body = {"messages": [{"role": "user", "content": "hi"}]}
            response = http.post(base + "/api/chat", json=body)
    events = parse_sse(response.content)
    assert "".join(json.loads(d)["text"] for n, d in events if n == "text") == TEXT
    assert events[-1][0] == "done"


def test_extra_headers_replace_the_defaults_whatever_their_case() -> None:
    with ReplayServer() as server:
        app, _, _ = relay(server, text_reply(), headers={"Cache-Control": "no-store", "X-Id": "7"})
        with serve(app) as base:
            response = post(base)
    assert response.headers.get_list("cache-control") == ["no-store"]
    assert response.headers["x-id"] == "7"
    assert response.headers["x-accel-buffering"] == "no"


def test_sync_bridge_holds_the_producer_back_and_close_releases_it() -> None:
    import asyncio
    import threading

    from tally_client import TextDelta
    from tally_client.web import _Bridge

    async def main() -> None:
        bridge = _Bridge(asyncio.get_running_loop(), size=4)
        handed: list[int] = []

        def produce(n: int) -> None:
            for i in range(n):
                bridge.put(TextDelta(str(i)))
                handed.append(i)

        thread = threading.Thread(target=produce, args=(100,), daemon=True)
        thread.start()

        async def until_handed(count: int) -> None:
            for _ in range(500):  # up to about 5 s
                if len(handed) >= count:
                    return
                await asyncio.sleep(0.01)

        await until_handed(4)
        await asyncio.sleep(0.1)  # time to hand a fifth over, were there room
        assert len(handed) == 4 and thread.is_alive()  # full: the thread waits for room
        got = [(await bridge.get()).text]  # type: ignore[union-attr]
        # the task took the 4 as a batch: 4 more may wait, no more (2 * size held at most)
        await until_handed(8)
        await asyncio.sleep(0.1)
        assert len(handed) == 8 and thread.is_alive()
        got += [(await bridge.get()).text for _ in range(99)]  # type: ignore[union-attr]
        assert got == [str(i) for i in range(100)]
        thread.join(5)
        assert not thread.is_alive()
        blocked = threading.Thread(target=produce, args=(10,), daemon=True)
        blocked.start()
        await until_handed(104)
        await asyncio.sleep(0.1)
        assert len(handed) == 104 and blocked.is_alive()
        bridge.close()  # the response ended: the producer is let go, its items dropped
        await asyncio.to_thread(blocked.join, 5)
        assert not blocked.is_alive()

    # A thread of its own: the session's Playwright keeps an event loop in the main thread.
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, main()).result(30)
