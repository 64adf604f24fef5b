"""The oracle: for the same bytes, our OpenAI parse equals the official openai SDK's.

Both OpenAI protocols. Every recording in tests/recordings/openai_chat and
tests/recordings/openai_responses (the streams also written 3 bytes at a time, splitting
events and UTF-8 characters; plus inline bodies for shapes the recordings lack) is served by
the ReplayServer to both sides:
- ours: the public `Client` (protocol "openai-chat" / "openai-responses"), streamed for
  `.sse`, atomic for `.json`;
- the SDK: `openai.OpenAI(base_url=..., max_retries=0)`, `chat.completions.create(...)` /
  `responses.create(...)` with `stream=True` (the chunks / events folded the plain way) or
  without.

Compared: text (Chat: `content` + `refusal`; Responses: the `output_text` deltas, or
`Response.output_text`), tool calls (id, name, arguments), usage (input, output, total,
cached, reasoning), the raw finish reason (Chat: `finish_reason`; Responses: `status`, or
`incomplete_details.reason` when incomplete) and our normalized one against a table of the
SDK's raw values.

Error events: both sides fail, differently (wire-formats.md §1.7, §2.2):
- Chat `data: {"error": {...}}` and a Responses `error` event in the nested shape: the SDK
  raises its base `openai.APIError` (no status code), `body` = the inner error object; we
  raise the typed `APIStatusError` subclass (`server_error` -> ServerError 500, retryable;
  `insufficient_quota` -> RateLimitError 429, not retryable) with the text so far in
  `.partial`.
- A Responses `error` event in the flat shape and `response.failed`: the SDK raises nothing;
  it yields a `ResponseErrorEvent` / `ResponseFailedEvent` and ends, and its
  `responses.stream(...).get_final_response()` raises `RuntimeError`; we raise ServerError.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tally_client import APIStatusError, Client, RateLimitError, Response, RetryPolicy, ServerError
from tally_client.providers.openai_chat import FINISH_REASONS as CHAT_FINISH
from tally_client.providers.openai_responses import INCOMPLETE_REASONS
from tally_client.testing import ReplayServer, Reply

RECORDINGS = Path(__file__).parent / "recordings"
CHAT = RECORDINGS / "openai_chat"
RESPONSES = RECORDINGS / "openai_responses"
MESSAGES = [{"role": "user", "content": "x"}]


def _sse(*events: dict[str, Any], named: bool = True) -> bytes:
    def one(e: dict[str, Any]) -> str:
        head = f"event: {e['type']}\n" if named else ""
        return f"{head}data: {json.dumps(e)}\n\n"

    return "".join(one(e) for e in events).encode()


def _cut_before(path: Path, marker: bytes) -> Reply:
    """The recording ended cleanly just before the event that starts with `marker`."""
    reply = Reply.from_file(path)
    return reply.replace(cut_after=reply.body.index(marker), cut="clean")


def _cut_after(path: Path, events: int) -> Reply:
    """The recording ended cleanly after its first `events` SSE events."""
    reply = Reply.from_file(path)
    return reply.replace(cut_after=reply.offset_after_event(events), cut="clean")


# llama-server's /v1/responses: no sequence_number, output_index or content_index, no event
# `created_at`/`model` until the end, usage without the *_details objects.
_LLAMA_RESPONSES = _sse(
    {"type": "response.created", "response": {"id": "resp_L", "object": "response",
                                              "status": "in_progress"}},
    {"type": "response.output_item.added",
     "item": {"content": [], "id": "msg_L", "role": "assistant", "status": "in_progress",
              "type": "message"}},
    {"type": "response.content_part.added", "item_id": "msg_L",
     "part": {"type": "output_text", "text": ""}},
    {"type": "response.output_text.delta", "item_id": "msg_L", "delta": "I'm"},
    {"type": "response.output_text.delta", "item_id": "msg_L", "delta": " glad 😊"},
    {"type": "response.output_text.done", "item_id": "msg_L", "text": "I'm glad 😊"},
    {"type": "response.completed",
     "response": {"id": "resp_L", "object": "response", "created_at": 1795362663,
                  "status": "completed", "model": "smollm2",
                  "output": [{"type": "message", "status": "completed", "id": "msg_L",
                              "role": "assistant",
                              "content": [{"type": "output_text", "annotations": [],
                                           "logprobs": [], "text": "I'm glad 😊"}]}],
                  "usage": {"input_tokens": 32, "output_tokens": 4, "total_tokens": 36}}},
)  # fmt: skip
_NESTED_ERROR = _sse(
    {"type": "response.created", "sequence_number": 0,
     "response": {"id": "resp_E", "object": "response", "status": "in_progress"}},
    {"type": "response.output_text.delta", "sequence_number": 1, "item_id": "msg_E",
     "output_index": 0, "content_index": 0, "delta": "Partial"},
    {"type": "error", "sequence_number": 2,
     "error": {"type": "insufficient_quota", "code": "insufficient_quota",
               "message": "You exceeded your current quota.", "param": None}},
)  # fmt: skip


def _cases(folder: Path) -> dict[str, Reply]:
    return {
        **{p.name: Reply.from_file(p) for p in sorted(folder.glob("*.sse"))},
        **{p.name: Reply.from_file(p) for p in sorted(folder.glob("*.json"))},
        **{f"{p.name}/split": Reply.from_file(p, split=[3]) for p in sorted(folder.glob("*.sse"))},
    }


CHAT_CASES: dict[str, Reply] = {
    **_cases(CHAT),
    # after the finish chunk (event 12 of 14), before the usage chunk and [DONE]
    "cut_before_usage.sse": _cut_after(CHAT / "text.sse", 12),
    "cut_in_tool_call.sse": _cut_after(CHAT / "tool_call.sse", 5),
}
CHAT_ERRORS = {"error_event.sse", "error_event.sse/split"}

RESPONSES_CASES: dict[str, Reply] = {
    **_cases(RESPONSES),
    "llama_text.sse": Reply(body=_LLAMA_RESPONSES),
    "nested_error.sse": Reply(body=_NESTED_ERROR),
    "cut_before_completed.sse": _cut_before(RESPONSES / "text.sse", b"event: response.completed"),
    "cut_in_tool_call.sse": _cut_after(RESPONSES / "tool_call.sse", 7),
}
RESPONSES_ERRORS = {
    "error_event.sse",
    "error_event.sse/split",
    "failed.sse",
    "failed.sse/split",
    "nested_error.sse",
}


@pytest.fixture(scope="module")
def server() -> Iterator[ReplayServer]:
    with ReplayServer() as srv:
        yield srv


@pytest.fixture(scope="module")
def openai() -> Any:
    import openai

    return openai


def _ours(url: str, protocol: str, streamed: bool) -> Response:
    with Client(
        base_url=url + "/v1", protocol=protocol, api_key="test", retry=RetryPolicy(max_attempts=1)
    ) as client:
        if streamed:
            return client.stream(MESSAGES).final()
        return client.complete(MESSAGES)


def _our_view(r: Response) -> dict[str, Any]:
    u = r.usage
    return {
        "text": r.text,
        "tools": [(c.id, c.name, c.arguments) for c in r.tool_calls],
        "usage": (u.input_tokens, u.output_tokens, u.total_tokens, u.cached_input_tokens,
                  u.reasoning_tokens),
        "raw": r.raw_finish_reason,
    }  # fmt: skip


def _usage(u: Any, inp: str, out: str, in_details: str, out_details: str) -> tuple[Any, ...]:
    if u is None:
        return (None,) * 5
    cached = getattr(getattr(u, in_details, None), "cached_tokens", None)
    reasoning = getattr(getattr(u, out_details, None), "reasoning_tokens", None)
    return (getattr(u, inp), getattr(u, out), u.total_tokens, cached, reasoning)


# -- Chat Completions -------------------------------------------------------------------------


def _chat_sdk(openai: Any, url: str, streamed: bool) -> dict[str, Any]:
    """The SDK's parse: chunks folded the plain way (content, refusal, tool calls by index)."""
    sdk = openai.OpenAI(base_url=url + "/v1", api_key="test", max_retries=0, timeout=10.0)
    try:
        if not streamed:
            completion = sdk.chat.completions.create(model="default", messages=MESSAGES)
            choice = completion.choices[0]
            message = choice.message
            return {
                "text": (message.content or "") + (message.refusal or ""),
                "refusal": bool(message.refusal),
                "tools": [
                    (c.id, c.function.name, c.function.arguments) for c in message.tool_calls or ()
                ],
                "usage": _usage(
                    completion.usage,
                    "prompt_tokens",
                    "completion_tokens",
                    "prompt_tokens_details",
                    "completion_tokens_details",
                ),
                "raw": choice.finish_reason,
            }
        text, refusal, finish, usage = [], [], None, None
        calls: dict[int, list[Any]] = {}
        for chunk in sdk.chat.completions.create(model="default", messages=MESSAGES, stream=True):
            usage = chunk.usage or usage
            for choice in chunk.choices:
                delta = choice.delta
                text.append(delta.content or "")
                refusal.append(delta.refusal or "")
                for call in delta.tool_calls or ():
                    slot = calls.setdefault(call.index, [None, None, ""])
                    slot[0] = slot[0] or call.id
                    if call.function is not None:
                        slot[1] = slot[1] or call.function.name
                        slot[2] += call.function.arguments or ""
                finish = choice.finish_reason or finish
        return {
            "text": "".join(text) + "".join(refusal),
            "refusal": any(refusal),
            "tools": [tuple(calls[i]) for i in sorted(calls)],
            "usage": _usage(
                usage,
                "prompt_tokens",
                "completion_tokens",
                "prompt_tokens_details",
                "completion_tokens_details",
            ),
            "raw": finish,
        }
    finally:
        sdk.close()


@pytest.mark.parametrize("case", sorted(set(CHAT_CASES) - CHAT_ERRORS))
def test_chat_same_parse_as_the_sdk(server: ReplayServer, openai: Any, case: str) -> None:
    url = server.add(CHAT_CASES[case])
    streamed = ".sse" in case
    ours = _ours(url, "openai-chat", streamed)
    theirs = _chat_sdk(openai, url, streamed)
    assert _our_view(ours) == {k: v for k, v in theirs.items() if k != "refusal"}
    raw = theirs["raw"]
    if raw is None:
        assert ours.finish_reason is None
    elif theirs["refusal"]:
        assert ours.finish_reason == "content_filter"  # the SDK says "stop" for a refusal
    else:
        assert ours.finish_reason == CHAT_FINISH[raw]
    # completeness comes from [DONE] after the finish reason, which the SDK does not report
    assert ours.state == ("partial" if case.startswith("cut_") else "complete")


@pytest.mark.parametrize("case", sorted(CHAT_ERRORS))
def test_chat_error_event_fails_on_both_sides(server: ReplayServer, openai: Any, case: str) -> None:
    url = server.add(CHAT_CASES[case])
    with pytest.raises(ServerError) as ours:
        _ours(url, "openai-chat", True)
    with pytest.raises(openai.APIError) as theirs:
        _chat_sdk(openai, url, True)
    assert type(theirs.value) is openai.APIError  # base class: no status code
    assert not hasattr(theirs.value, "status_code")
    err = ours.value
    assert err.in_stream and err.retryable and err.status_code == 500
    assert err.error_type == "server_error"
    assert err.body == {"error": theirs.value.body}
    assert theirs.value.message in str(err)
    assert err.partial is not None and err.partial.text == "The answer is"


# -- Responses --------------------------------------------------------------------------------


def _responses_sdk(openai: Any, url: str, streamed: bool) -> dict[str, Any]:
    """The SDK's parse: text from the `output_text` deltas, calls from `output_item.added` +
    argument deltas (by `item_id`), the rest from the terminal event's Response."""
    sdk = openai.OpenAI(base_url=url + "/v1", api_key="test", max_retries=0, timeout=10.0)
    try:
        if not streamed:
            return _response_view(sdk.responses.create(model="default", input=MESSAGES), None)
        text: list[str] = []
        calls: dict[str, list[Any]] = {}
        final = None
        kinds = []
        for event in sdk.responses.create(model="default", input=MESSAGES, stream=True):
            kinds.append(event.type)
            if event.type == "response.output_text.delta":
                text.append(event.delta)
            elif event.type == "response.output_item.added" and event.item.type == "function_call":
                calls[event.item.id] = [event.item.call_id, event.item.name, event.item.arguments]
            elif event.type == "response.function_call_arguments.delta":
                calls[event.item_id][2] += event.delta
            elif event.type in ("response.completed", "response.incomplete"):
                final = event.response
        view = _response_view(final, "".join(text))
        view["tools"] = [tuple(c) for c in calls.values()]
        view["events"] = kinds
        return view
    finally:
        sdk.close()


def _response_view(r: Any, streamed_text: str | None) -> dict[str, Any]:
    if r is None:  # no terminal event
        return {"text": streamed_text, "tools": [], "usage": (None,) * 5, "raw": None}
    reason = r.incomplete_details.reason if r.incomplete_details else None
    return {
        "text": r.output_text if streamed_text is None else streamed_text,
        "tools": [(o.call_id, o.name, o.arguments) for o in r.output if o.type == "function_call"],
        "usage": _usage(
            r.usage, "input_tokens", "output_tokens", "input_tokens_details",
            "output_tokens_details",
        ),
        "raw": reason if r.status == "incomplete" else r.status,
        "final_calls": [o.call_id for o in r.output if o.type == "function_call"],
    }  # fmt: skip


def _responses_finish(view: dict[str, Any]) -> str | None:
    raw = view["raw"]
    if raw is None:
        return None
    if raw == "completed":
        return "tool_calls" if view["final_calls"] else "stop"
    return INCOMPLETE_REASONS.get(raw, "length")


@pytest.mark.parametrize("case", sorted(set(RESPONSES_CASES) - RESPONSES_ERRORS))
def test_responses_same_parse_as_the_sdk(server: ReplayServer, openai: Any, case: str) -> None:
    url = server.add(RESPONSES_CASES[case])
    streamed = ".sse" in case
    ours = _ours(url, "openai-responses", streamed)
    theirs = _responses_sdk(openai, url, streamed)
    compared = ("text", "tools", "usage", "raw")
    assert _our_view(ours) == {k: theirs[k] for k in compared}
    assert ours.finish_reason == _responses_finish(theirs)
    # no [DONE] on this API: completeness is the terminal event, which the SDK does not check
    assert ours.state == ("partial" if case.startswith("cut_") else "complete")


@pytest.mark.parametrize("case", sorted(RESPONSES_ERRORS))
def test_responses_errors_fail_on_both_sides(server: ReplayServer, openai: Any, case: str) -> None:
    url = server.add(RESPONSES_CASES[case])
    expected = RateLimitError if case == "nested_error.sse" else ServerError
    with pytest.raises(expected) as ours:
        _ours(url, "openai-responses", True)
    err = ours.value
    assert err.in_stream and err.partial is not None
    assert err.partial.text == ("Partial" if case == "nested_error.sse" else "The answer is")
    if case == "nested_error.sse":
        # The SDK raises its base APIError (no status) at the nested `error` event.
        with pytest.raises(openai.APIError) as theirs:
            _responses_sdk(openai, url, True)
        assert type(theirs.value) is openai.APIError
        assert theirs.value.body["code"] == "insufficient_quota"
        assert (err.status_code, err.retryable) == (429, False)
        return
    # Flat `error` and `response.failed`: the SDK raises nothing; it yields the event and ends
    # without a terminal one. Its stream helper then refuses to give a final response.
    theirs_view = _responses_sdk(openai, url, True)
    last = theirs_view["events"][-1]
    assert last == ("error" if case.startswith("error_event") else "response.failed")
    assert theirs_view["text"] == err.partial.text and theirs_view["raw"] is None
    sdk = openai.OpenAI(base_url=url + "/v1", api_key="test", max_retries=0, timeout=10.0)
    with (
        pytest.raises(RuntimeError, match=r"response\.completed"),
        sdk.responses.stream(model="default", input=MESSAGES) as stream,
    ):
        stream.get_final_response()
    sdk.close()
    assert (err.status_code, err.error_type, err.retryable) == (500, "server_error", True)
    assert isinstance(err, APIStatusError)
