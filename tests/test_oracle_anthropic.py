"""The oracle: for the same bytes, our Anthropic parse equals the official anthropic SDK's.

Every recording in tests/recordings/anthropic (plus inline bodies for shapes the recordings
lack: llama-server's usage and flat error event, a clean cut before `message_stop`) is served
by the ReplayServer to both sides:
- ours: the public `Client(protocol="anthropic")`, streamed for `.sse`, atomic for `.json`;
- the SDK: `anthropic.Anthropic(base_url=..., max_retries=0)`, `messages.stream(...)` +
  `get_final_message()` for `.sse`, `messages.create(...)` for `.json`.

Compared: text, thinking, tool calls (id, name, parsed arguments), usage (our input =
the SDK's `input_tokens + cache_creation_input_tokens + cache_read_input_tokens`; output;
cached = `cache_read_input_tokens`), the raw stop reason, and our normalized finish reason
against `FINISH_REASONS[sdk.stop_reason]`.

Error events: both sides fail. The SDK raises its base `APIStatusError` with
`status_code == 200` and the event's JSON as `body`; we raise the typed subclass for the error
type (`OverloadedError`, 529, retryable; llama-server's flat `server_error` -> `ServerError`,
500) carrying the text received so far in `.partial`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tally_client import APIStatusError, Client, Response, RetryPolicy, parse_partial_json
from tally_client.providers.anthropic import FINISH_REASONS
from tally_client.testing import ReplayServer, Reply

RECORDINGS = Path(__file__).parent / "recordings" / "anthropic"
MESSAGES = [{"role": "user", "content": "x"}]


def _sse(*events: tuple[str, Any]) -> bytes:
    return "".join(
        f"event: {name}\ndata: {data if isinstance(data, str) else json.dumps(data)}\n\n"
        for name, data in events
    ).encode()


_START = {
    "type": "message_start",
    "message": {
        "id": "chatcmpl-1",
        "type": "message",
        "role": "assistant",
        "content": [],
        "model": "SmolLM2",
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {"cache_read_input_tokens": 31, "input_tokens": 1, "output_tokens": 0},
    },
}
_TEXT_START = {
    "type": "content_block_start",
    "index": 0,
    "content_block": {"type": "text", "text": ""},
}


def _text(t: str) -> dict[str, Any]:
    return {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": t}}


_LLAMA_TEXT = _sse(
    ("message_start", _START),
    ("content_block_start", _TEXT_START),
    ("content_block_delta", _text("Hi")),
    ("content_block_delta", _text(" there")),
    ("content_block_stop", {"type": "content_block_stop", "index": 0}),
    (
        "message_delta",
        {
            "type": "message_delta",
            "delta": {"stop_reason": "max_tokens", "stop_sequence": None},
            "usage": {"output_tokens": 12},
        },
    ),
    ("message_stop", {"type": "message_stop"}),
)
_LLAMA_ERROR = _sse(
    ("message_start", _START),
    ("content_block_start", _TEXT_START),
    ("content_block_delta", _text("Hi")),
    ("error", '{"code":500,"message":"decode failed","type":"server_error"}'),
)


def _cut(after_event: int) -> Reply:
    """tool_call.sse ended cleanly after its n-th event: 12 = after message_delta (only
    message_stop missing), 9 = inside the tool call's arguments (`{"city": "Paris", "unit"`).

    (Cut inside a string, `{"city": "P`, the two tolerant parsers differ by policy: the SDK's
    jiter `partial_mode=True` drops the unterminated string (`{}`), our `parse_partial_json`
    keeps it (`{"city": "P"}`); the raw fragments are the same.)
    """
    reply = Reply.from_file(RECORDINGS / "tool_call.sse")
    return reply.replace(cut_after=reply.offset_after_event(after_event), cut="clean")


CASES: dict[str, Reply] = {
    **{f"{p.name}": Reply.from_file(p) for p in sorted(RECORDINGS.glob("*.sse"))},
    **{f"{p.name}": Reply.from_file(p) for p in sorted(RECORDINGS.glob("*.json"))},
    # the same streams written 3 bytes at a time (events and UTF-8 characters split)
    **{f"{p.name}/split": Reply.from_file(p, split=[3]) for p in sorted(RECORDINGS.glob("*.sse"))},
    "llama_text.sse": Reply(body=_LLAMA_TEXT),
    "llama_error.sse": Reply(body=_LLAMA_ERROR),
    "cut_before_stop.sse": _cut(12),
    "cut_in_tool_call.sse": _cut(9),
}
ERROR_CASES = {"error_event.sse", "error_event.sse/split", "llama_error.sse"}


@pytest.fixture(scope="module")
def server() -> Iterator[ReplayServer]:
    with ReplayServer() as srv:
        yield srv


@pytest.fixture(scope="module")
def anthropic() -> Any:
    import anthropic

    return anthropic


def _ours(url: str, streamed: bool) -> Response:
    with Client(
        base_url=url, protocol="anthropic", api_key="test", retry=RetryPolicy(max_attempts=1)
    ) as client:
        if streamed:
            return client.stream(MESSAGES, max_tokens=100).final()
        return client.complete(MESSAGES, max_tokens=100)


def _sdk(anthropic: Any, url: str, streamed: bool) -> Any:
    sdk = anthropic.Anthropic(api_key="test", base_url=url, max_retries=0, timeout=10.0)
    try:
        if streamed:
            with sdk.messages.stream(model="default", max_tokens=100, messages=MESSAGES) as s:
                return s.get_final_message()
        return sdk.messages.create(model="default", max_tokens=100, messages=MESSAGES)
    finally:
        sdk.close()


def _our_view(r: Response) -> dict[str, Any]:
    return {
        "text": r.text,
        "thinking": r.thinking,
        # strict parse when complete; a cut stream's arguments are compared with the tolerant
        # parser, as the SDK parses tool input in partial mode (jiter)
        "tools": [
            (c.id, c.name, c.parsed_arguments() if r.complete else parse_partial_json(c.arguments))
            for c in r.tool_calls
        ],
        "input": r.usage.input_tokens,
        "output": r.usage.output_tokens,
        "cached": r.usage.cached_input_tokens,
        "stop": r.raw_finish_reason,
    }


def _sdk_view(m: Any) -> dict[str, Any]:
    u = m.usage
    return {
        "text": "".join(b.text for b in m.content if b.type == "text"),
        "thinking": "".join(b.thinking for b in m.content if b.type == "thinking"),
        "tools": [(b.id, b.name, b.input) for b in m.content if b.type == "tool_use"],
        "input": u.input_tokens
        + (u.cache_creation_input_tokens or 0)
        + (u.cache_read_input_tokens or 0),
        "output": u.output_tokens,
        "cached": u.cache_read_input_tokens,
        "stop": m.stop_reason,
    }


@pytest.mark.parametrize("case", sorted(set(CASES) - ERROR_CASES))
def test_same_parse_as_the_sdk(server: ReplayServer, anthropic: Any, case: str) -> None:
    url = server.add(CASES[case])
    streamed = ".sse" in case
    ours = _ours(url, streamed)
    theirs = _sdk(anthropic, url, streamed)
    assert _our_view(ours) == _sdk_view(theirs)
    if theirs.stop_reason is None:
        assert ours.finish_reason is None
    else:
        assert ours.finish_reason == FINISH_REASONS[theirs.stop_reason]
    # completeness comes from message_stop, which the SDK does not report
    assert ours.state == ("partial" if case.startswith("cut_") else "complete")


@pytest.mark.parametrize("case", sorted(ERROR_CASES))
def test_error_events_fail_on_both_sides(server: ReplayServer, anthropic: Any, case: str) -> None:
    url = server.add(CASES[case])
    with pytest.raises(APIStatusError) as ours:
        _ours(url, True)
    with pytest.raises(anthropic.APIStatusError) as theirs:
        _sdk(anthropic, url, True)
    sdk_error = theirs.value
    assert sdk_error.status_code == 200  # the SDK keeps the stream's HTTP status
    assert type(sdk_error) is anthropic.APIStatusError
    body = sdk_error.body
    our_error = ours.value
    assert our_error.in_stream
    assert our_error.body == body
    if case == "llama_error.sse":
        assert (our_error.status_code, our_error.error_type) == (500, "server_error")
        assert body["type"] == "server_error"
        assert our_error.partial is not None
        assert our_error.partial.text == "Hi"
    else:
        assert (our_error.status_code, our_error.error_type) == (529, "overloaded_error")
        assert body["error"]["type"] == "overloaded_error"
        assert our_error.partial is not None
        assert our_error.partial.text == "The answer is"
    assert our_error.retryable
