"""A `run_tools()` run relayed over a real uvicorn server, the replay server as the provider.

The small local model cannot call tools, so the rounds are byte-exact replays (as in
tests/test_tool_loop.py): a tool round (atomic), the tool runs for real, then the synthesis
(streamed).
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any, Literal

import httpx
import pytest

from tally_client import AsyncToolRun, RetryPolicy, ToolRun, tool_from_function
from tally_client.testing import ReplayServer, Reply, Scenario
from tally_client.web import RelayResult, describe_tool_error

from .relay_app import (
    LazyClient,
    guide_snippet,
    noticing_leave,
    parse_sse,
    post,
    relay_app,
    vercel_parts,
)
from .servers import serve

RECORDINGS = Path(__file__).parent.parent / "recordings" / "openai_chat"
TEXT = "Hello! Café au lait — a classic ☕."
CALL_ID = "call_Qm8rT2vXbN5kLp3WzY7dHc1J"
SECRET = "postgres://admin:hunter2@db.internal"
IDS = ["AsyncToolRun", "ToolRun"]


def get_weather(city: str, unit: Literal["celsius", "fahrenheit"] = "celsius") -> dict[str, Any]:
    """Current weather for a city.

    Args:
        city: the city's name.
        unit: the temperature unit.
    """
    return {"city": city, "temperature": 21, "unit": unit}


def _broken(city: str, unit: str = "celsius") -> str:
    """Current weather for a city (its database is down)."""
    raise ConnectionError(f"cannot reach {SECRET}")


broken_weather = tool_from_function(_broken, name="get_weather")


def reply(name: str, **faults: Any) -> Reply:
    return Reply.from_file(RECORDINGS / name, **faults)


def tool_app(server: ReplayServer, *replies: Reply, sync: bool = False, tools=None, call=None,
             **options: Any):  # fmt: skip
    """A relay of one run_tools() run over `replies`: (app, results, upstream url)."""
    url = server.add(Scenario(*replies))
    lazy = LazyClient(url, retry=RetryPolicy(1))
    call = {"tools": tools or [get_weather], **(call or {})}
    results: list[RelayResult] = []
    make = (lambda: lazy.sync_tool_run(**call)) if sync else (lambda: lazy.tool_run(**call))
    return relay_app(make, results, **options), results, url


def wait_for_result(results: list[RelayResult], timeout: float = 10) -> RelayResult:
    deadline = time.monotonic() + timeout
    while not results:
        assert time.monotonic() < deadline, "the relay never reported its result"
        time.sleep(0.01)
    return results[0]


@pytest.mark.parametrize("sync", [False, True], ids=IDS)
def test_tool_parts_steps_and_summed_usage(sync: bool) -> None:
    with ReplayServer() as server:
        app, results, url = tool_app(
            server, reply("tool_call.json"), reply("text.sse"), sync=sync, protocol="vercel-ai"
        )
        with serve(app) as base:
            response = post(base)
        sent = server.requests(url)[1].json()["messages"][-1]
    assert sent["role"] == "tool" and json.loads(sent["content"])["temperature"] == 21
    assert response.headers["x-vercel-ai-ui-message-stream"] == "v1"
    parts = vercel_parts(response.content)
    types = [p["type"] for p in parts]
    assert types == [
        "start", "start-step",
        "tool-input-start", "tool-input-available", "tool-output-available", "finish-step",
        "start-step", "text-start", *["text-delta"] * 10, "text-end", "finish-step",
        "finish", "[DONE]",
    ]  # fmt: skip
    paris = {"city": "Paris", "unit": "celsius"}
    assert parts[2:5] == [
        {"type": "tool-input-start", "toolCallId": CALL_ID, "toolName": "get_weather"},
        {"type": "tool-input-available", "toolCallId": CALL_ID, "toolName": "get_weather",
         "input": paris},
        {"type": "tool-output-available", "toolCallId": CALL_ID,
         "output": {**paris, "temperature": 21}},
    ]  # fmt: skip
    assert "".join(p["delta"] for p in parts if p["type"] == "text-delta") == TEXT
    meta = parts[-2]["messageMetadata"]
    assert parts[-2]["finishReason"] == "stop"
    assert "decision" not in parts[0].get("messageMetadata", {})  # no round is routed yet
    assert meta["decision"]["stream"] is False  # the first round's: the tool phase is atomic
    assert meta["rounds"] == 2 and meta["state"] == "complete"
    result = wait_for_result(results)
    final = result.response
    assert final is not None and final.text == TEXT and len(final.rounds) == 2
    first, second = (r.response.usage for r in final.rounds)
    assert first.input_tokens is not None and second.input_tokens is not None
    assert meta["usage"]["inputTokens"] == first.input_tokens + second.input_tokens == 61 + 14
    assert meta["usage"]["outputTokens"] == (first.output_tokens or 0) + (second.output_tokens or 0)
    assert result.output_tokens == meta["usage"]["outputTokens"]
    assert not result.disconnected and result.error is None


def test_a_streamed_tool_round_streams_its_input() -> None:
    with ReplayServer() as server:
        app, _, _ = tool_app(
            server, reply("tool_call.json"), reply("tool_call.sse"), reply("text.sse")
        )
        with serve(app) as base:
            parts = vercel_parts(post(base).content)
    types = [p["type"] for p in parts]
    assert types.count("start-step") == types.count("finish-step") == 3
    second = types.index("start-step", types.index("finish-step"))  # the streamed tool round
    step = parts[second + 1 : types.index("finish-step", second)]
    kinds = [p["type"] for p in step]
    assert kinds[0] == "tool-input-start" and kinds[-2:] == [
        "tool-input-available", "tool-output-available",
    ]  # fmt: skip
    deltas = [p["inputTextDelta"] for p in step if p["type"] == "tool-input-delta"]
    assert len(deltas) > 1 and json.loads("".join(deltas)) == {"city": "Paris", "unit": "celsius"}
    assert {p["toolCallId"] for p in step} == {CALL_ID}  # one tool part, from start to output
    assert "".join(p["delta"] for p in parts if p["type"] == "text-delta") == TEXT


def test_a_failed_tool_shows_a_fixed_sentence_not_its_message() -> None:
    with ReplayServer() as server:
        app, results, url = tool_app(
            server, reply("tool_call.json"), reply("text.sse"), tools=[broken_weather]
        )
        with serve(app) as base:
            response = post(base)
        to_model = server.requests(url)[1].json()["messages"][-1]["content"]
    assert SECRET in to_model  # the model gets the whole error; the page never does
    assert SECRET not in response.text
    parts = vercel_parts(response.content)
    (error,) = [p for p in parts if p["type"] == "tool-output-error"]
    assert error == {"type": "tool-output-error", "toolCallId": CALL_ID,
                     "errorText": "The tool get_weather failed (ConnectionError)."}  # fmt: skip
    assert "".join(p["delta"] for p in parts if p["type"] == "text-delta") == TEXT
    final = wait_for_result(results).response
    assert final is not None and isinstance(final.rounds[0].results[0].error, ConnectionError)


def test_custom_tool_error_text() -> None:
    with ReplayServer() as server:
        app, _, _ = tool_app(server, reply("tool_call.json"), reply("text.sse"),
                             tools=[broken_weather], protocol="events",
                             tool_error_text=lambda r: f"{r.call.name} is down")  # fmt: skip
        with serve(app) as base:
            events = parse_sse(post(base).content)
    (result,) = [json.loads(d) for n, d in events if n == "tool-result"]
    assert result["isError"] is True and result["errorText"] == "get_weather is down"
    assert "output" not in result


@pytest.mark.parametrize("sync", [False, True], ids=IDS)
def test_events_protocol(sync: bool) -> None:
    with ReplayServer() as server:
        app, _, _ = tool_app(
            server, reply("tool_call.json"), reply("text.sse"), sync=sync, protocol="events"
        )
        with serve(app) as base:
            events = parse_sse(post(base).content)
    names = [n for n, _ in events]
    assert names == ["start", "tool-start", "tool-result", "step", *["text"] * 10, "done"]
    data = [json.loads(d) for _, d in events]
    assert data[1] == {"id": CALL_ID, "name": "get_weather", "round": 1,
                       "arguments": '{"city":"Paris","unit":"celsius"}',
                       "input": {"city": "Paris", "unit": "celsius"}}  # fmt: skip
    result = data[2]
    assert result["id"] == CALL_ID and result["round"] == 1 and result["isError"] is False
    assert result["output"] == {"city": "Paris", "temperature": 21, "unit": "celsius"}
    assert result["seconds"] >= 0
    assert data[3] == {"round": 2}
    assert "".join(d["text"] for d in data[4:-1]) == TEXT
    assert data[-1]["metadata"]["rounds"] == 2 and data[-1]["toolCalls"] == []


def leave_after(base: str, marker: bytes, then: threading.Event | None = None) -> bytes:
    """Read the relay until `marker` arrives (and `then` is set), then close the connection
    (a stop)."""
    seen = b""
    with httpx.Client(timeout=10) as http, http.stream("POST", base + "/relay", json={}) as r:
        for chunk in r.iter_raw():
            seen += chunk
            if marker in seen:
                assert then is None or then.wait(5)
                break
    return seen


@pytest.mark.parametrize("sync", [False, True], ids=IDS)
def test_leaving_mid_synthesis_closes_the_round_and_cancels_the_run(sync: bool) -> None:
    text = reply("text.sse")
    stalled = text.replace(stall_after=text.offset_after_event(4))  # 3 deltas, then waits
    with ReplayServer() as server:
        app, results, url = tool_app(server, reply("tool_call.json"), stalled, sync=sync,
                                     call={"max_tokens": 300})  # fmt: skip
        with serve(app) as base:
            left_at = time.monotonic()
            seen = leave_after(base, b"text-delta")
            assert b"tool-output-available" in seen
            server.wait_for_disconnect(url, timeout=5)
            result = wait_for_result(results)
            ended_after = time.monotonic() - left_at
        assert server.open_connections == 0
        assert len(server.requests(url)) == 2
    assert ended_after < 3
    assert result.disconnected and result.error is None
    response = result.response
    assert response is not None and response.state == "cancelled"
    assert response.text.startswith("Hello")
    assert len(response.rounds) == 1  # the tool round finished; the synthesis was cut
    assert response.rounds[0].response.usage.output_tokens == 18
    assert response.usage.output_tokens == 18  # the cut round reported no usage: its deltas
    in_flight = response.metrics.chunks - response.rounds[0].response.metrics.chunks
    assert in_flight >= 1 and response.text.startswith("Hello")
    assert result.output_tokens == 18 + in_flight
    assert result.output_tokens_saved == 300 - in_flight  # of the round cut short


@pytest.mark.parametrize("sync", [False, True], ids=IDS)
def test_leaving_while_a_tool_runs_starts_no_further_round(sync: bool) -> None:
    started, release = threading.Event(), threading.Event()
    left, closed = threading.Event(), threading.Event()

    def slow(city: str, unit: str = "celsius") -> str:
        """Weather, slowly."""
        started.set()
        release.wait(5)
        return "sunny"

    slow_weather = tool_from_function(slow, name="get_weather")

    with ReplayServer() as server:
        url = server.add(Scenario(reply("tool_call.json"), reply("text.sse")))
        lazy = LazyClient(url, retry=RetryPolicy(1))
        results: list[RelayResult] = []

        def make() -> AsyncToolRun | ToolRun:
            if not sync:
                return lazy.tool_run(tools=[slow_weather])
            run = lazy.sync_tool_run(tools=[slow_weather])
            close = run.close

            def noted_close() -> None:
                close()
                closed.set()

            run.close = noted_close  # type: ignore[method-assign]
            return run

        app = noticing_leave(relay_app(make, results), left)
        with serve(app) as base:
            seen = leave_after(base, b"tool-input-available", then=started)
            assert left.wait(5)  # the relay saw the browser leave: its body is cancelled
            # A sync run's thread sits in the tool, out of reach of the cancellation: the
            # relay's close marks the run closed. (An async run closes after the tool
            # returns, so only the cancellation is waited for.)
            assert not sync or closed.wait(5)
            release.set()
            result = wait_for_result(results)
        assert len(server.requests(url)) == 1  # the synthesis never went out
    assert b"tool-output-available" not in seen
    assert result.disconnected
    assert result.response is not None and result.response.state == "cancelled"


def test_describe_tool_error() -> None:
    from tally_client import ToolCall, ToolResult

    call = ToolCall("c1", "lookup", "{}")
    assert describe_tool_error(ToolResult(call, "x", True, KeyError(SECRET))) == (
        "The tool lookup failed (KeyError)."
    )
    missing = ToolResult(call, "x", True, LookupError("no tool named 'lookup'"))
    assert (
        describe_tool_error(missing) == "The model asked for a tool that does not exist (lookup)."
    )


def test_the_guide_snippet_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    with ReplayServer() as server:
        url = server.add(Scenario(reply("tool_call.json"), reply("text.sse")))
        with (
            guide_snippet("## Tool runs", url + "/v1", monkeypatch) as module,
            serve(module.app) as base,
            httpx.Client(timeout=30) as http,
        ):
            ask = {
                "id": "m1",
                "role": "user",
                "parts": [{"type": "text", "text": "Weather in Paris?"}],
            }
            body = {"id": "chat1", "messages": [ask], "trigger": "submit-message"}
            response = http.post(base + "/api/chat", json=body)
        sent = server.requests(url)[0].json()["messages"]
    assert sent[-1] == {"role": "user", "content": "Weather in Paris?"}  # useChat's parts, joined
    parts = vercel_parts(response.content)
    (output,) = [p for p in parts if p["type"] == "tool-output-available"]
    assert output["output"] == {"city": "Paris", "temperature": 21, "unit": "celsius"}
    assert "".join(p["delta"] for p in parts if p["type"] == "text-delta") == TEXT


def test_a_reset_in_the_answer_ends_only_its_own_step() -> None:
    text = reply("text.sse")
    cut = text.replace(cut_after=text.offset_after_event(5), cut="reset")
    with ReplayServer() as server:
        url = server.add(Scenario(reply("tool_call.json"), cut, text))
        lazy = LazyClient(url, retry=RetryPolicy(2))
        app = relay_app(lambda: lazy.tool_run(tools=[get_weather]), [], protocol="vercel-ai")
        with serve(app) as base:
            parts = vercel_parts(post(base).content)
    types = [p["type"] for p in parts]
    at = types.index("data-reset")
    assert types[:6] == ["start", "start-step", "tool-input-start", "tool-input-available",
                         "tool-output-available", "finish-step"]  # fmt: skip
    assert types[6:8] == ["start-step", "text-start"]
    assert types[at - 2 : at + 3] == ["text-end", "finish-step", "data-reset", "start-step",
                                      "text-start"]  # fmt: skip
    # the page's rule: drop the parts from the step-start before the data-reset to it
    step = max(i for i in range(at) if types[i] == "start-step")
    shown = parts[:step] + parts[at + 1 :]
    assert "".join(p["delta"] for p in shown if p["type"] == "text-delta") == TEXT
    assert [p["type"] for p in shown].count("tool-output-available") == 1


@pytest.mark.parametrize("protocol", ["vercel-ai", "events"])
def test_max_rounds_ends_with_the_calls_that_did_not_run(protocol: str) -> None:
    with ReplayServer() as server:
        app, results, _ = tool_app(server, reply("tool_call.json"), protocol=protocol,
                                   call={"max_rounds": 1})  # fmt: skip
        with serve(app) as base:
            raw = post(base).content
    if protocol == "vercel-ai":
        parts = vercel_parts(raw)
        assert [p["type"] for p in parts] == [
            "start", "start-step", "tool-input-start", "tool-input-available", "finish-step",
            "finish", "[DONE]",
        ]  # fmt: skip
        assert parts[-2]["finishReason"] == "tool-calls"
        assert parts[-2]["messageMetadata"]["rounds"] == 1
    else:
        events = parse_sse(raw)
        assert [n for n, _ in events] == ["start", "done"]
        assert json.loads(events[-1][1])["toolCalls"][0]["id"] == CALL_ID
    final = wait_for_result(results).response
    assert final is not None and final.state == "complete" and len(final.rounds) == 1


def test_smoothing_a_tool_run() -> None:
    paced = reply("text.sse", chunk_delay=0.02)  # 10 deltas over at least 0.18 s
    with ReplayServer() as server:
        app, results, _ = tool_app(server, reply("tool_call.json"), paced, smooth=0.1)
        with serve(app) as base:
            parts = vercel_parts(post(base).content)
        seconds = wait_for_result(results).seconds
    types = [p["type"] for p in parts]
    assert types.count("tool-output-available") == 1
    deltas = [p["delta"] for p in parts if p["type"] == "text-delta"]
    assert "".join(deltas) == TEXT
    # The first delta goes out at once, the others joined. Frames are at least 0.1 s apart
    # except the flush at the end, so however the machine paced the relay, it sent at most
    # 2 + (its measured duration) / 0.1 of them (fewer than the 10 upstream on a quiet one).
    assert 2 <= len(deltas) <= 2 + seconds / 0.1


@pytest.mark.parametrize("max_rounds", [None, 1], ids=["the tool loop", "the final round"])
def test_arguments_that_are_not_json_give_one_input_error(max_rounds: int | None) -> None:
    good = reply("tool_call.json")
    broken = good.replace(body=good.body.replace(b'\\"celsius\\"}', b'\\"cel'))
    assert broken.body != good.body
    call = {"max_rounds": max_rounds} if max_rounds else None
    with ReplayServer() as server:
        app, _, _ = tool_app(server, broken, reply("text.sse"), call=call)
        with serve(app) as base:
            parts = vercel_parts(post(base).content)
    errors = [p for p in parts if p["type"].startswith("tool-") and "error" in p["type"]]
    assert errors == [
        {"type": "tool-input-error", "toolCallId": CALL_ID, "toolName": "get_weather",
         "input": '{"city":"Paris","unit":"cel',
         "errorText": "The model's arguments for get_weather are not valid JSON."},
    ]  # fmt: skip
    assert not any(p["type"] == "tool-input-available" for p in parts)


def test_started_calls_find_their_streamed_parts_by_id_then_by_position() -> None:
    from tally_client import ToolCall, ToolCallDelta, ToolCallStarted
    from tally_client.web import _VercelEncoder

    def ids(frames: bytes) -> list[tuple[str, str]]:
        return [(p["type"], p["toolCallId"]) for p in vercel_parts(frames)]

    encoder = _VercelEncoder("data")
    encoder.start("m1", {})
    announced = encoder.tool(ToolCallDelta(0, "call_b", "lookup", "{}"))
    announced += encoder.tool(ToolCallDelta(1, "call_a", "get_weather", "{}"))
    announced += encoder.tool(ToolCallDelta(2, None, "get_weather", "{}"))  # no id streamed
    assert ids(announced) == [
        ("tool-input-start", "call_b"), ("tool-input-delta", "call_b"),
        ("tool-input-start", "call_a"), ("tool-input-delta", "call_a"),
        ("tool-input-start", "call_2"), ("tool-input-delta", "call_2"),
    ]  # fmt: skip
    # the run starts them in another order than the deltas came: each keeps its part
    started = [ToolCall("call_a", "get_weather", "{}"), ToolCall("call_b", "lookup", "{}"),
               ToolCall("call_c", "get_weather", "{}")]  # fmt: skip
    frames = [encoder.tool_start(ToolCallStarted(call, 1)) for call in started]
    assert [ids(f) for f in frames] == [
        [("tool-input-available", "call_a")],
        [("tool-input-available", "call_b")],
        [("tool-input-available", "call_2")],  # no id to match: the third announced
    ]
