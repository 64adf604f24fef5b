"""Our bugs are ours (issue 7, part 5).

- JSON of a shape a protocol does not allow is a `ProtocolError` that names what was expected,
  decided by explicit checks in each codec (nothing catches KeyError/TypeError around them).
- A bug in our code (here: an injected decoder raising KeyError) propagates as it is: it is not
  turned into a retryable ProtocolError, retried and blamed on the provider.
- No module reads another module's private attributes.
- Usage says whether it is final: only a provider's terminal usage on a complete Response is.
"""

from __future__ import annotations

import ast
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import anyio
import pytest

from tally_client import (
    AsyncClient,
    Client,
    ModelSpec,
    ProtocolError,
    RetryPolicy,
    StreamEvent,
    StreamInterrupted,
    TextDelta,
    UsageReported,
)
from tally_client._config import load_provider
from tally_client.providers.openai_chat import ChatStreamDecoder, OpenAIChatProvider
from tally_client.testing.replay import ReplayServer, Reply

PACKAGE = Path(__file__).parent.parent / "tally_client"
RECORDINGS = Path(__file__).parent / "recordings"
THREE = RetryPolicy(max_attempts=3, initial_delay=0.0, max_delay=0.0)
NO_RETRY = RetryPolicy(max_attempts=1)

# -- malformed shapes, per provider ------------------------------------------------------------

MALFORMED: dict[str, list[tuple[str, Any, str]]] = {
    # protocol: (SSE event name, JSON data, what the error says was expected)
    "openai-chat": [
        ("", {"choices": "oops"}, "choices to be an array of objects"),
        ("", {"choices": [["a"]]}, "choices to be an array of objects"),
        ("", {"choices": [{"delta": "hi"}]}, "choices[0].delta to be an object"),
        ("", {"choices": [{"delta": {"content": 5, "role": "assistant"}}]}, "delta.content"),
        ("", {"choices": [{"delta": {}, "finish_reason": 3}]}, "finish_reason to be a string"),
        ("", {"choices": [{"delta": {"tool_calls": {"id": 1}}}]}, "tool_calls to be an array"),
        ("", {"choices": [{"delta": {"tool_calls": [{"function": "f"}]}}]}, "function"),
        ("", {"choices": [], "usage": {"prompt_tokens": "9"}}, "usage prompt_tokens"),
        ("", {"choices": [], "usage": ["x"]}, "usage to be an object"),
        ("", {"model": 4, "choices": []}, "model to be a string"),
    ],
    "openai-responses": [
        ("", {"type": "response.output_text.delta", "delta": ["x"]}, "delta to be a string"),
        ("", {"type": "response.output_item.added", "item": "x"}, "item to be an object"),
        ("", {"type": "response.function_call_arguments.delta", "delta": 1}, "delta"),
        ("", {"type": "response.completed", "response": []}, "response to be an object"),
        ("", {"type": "response.completed", "response": {"output": {}}}, "output to be an array"),
        ("", {"type": "response.completed", "response": {"usage": {"input_tokens": 1.5}}},
         "usage input_tokens to be an integer"),
        ("", {"type": 7}, "string `type`"),
        ("", {"type": "response.created", "response": {"model": ["m"]}}, "model to be a string"),
    ],
    "anthropic": [
        ("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": "x"},
         "delta to be an object"),
        ("content_block_delta",
         {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": 1}},
         "text_delta.text to be a string"),
        ("content_block_delta",
         {"type": "content_block_delta", "index": "0",
          "delta": {"type": "thinking_delta", "thinking": "t"}}, "index"),
        ("content_block_start", {"type": "content_block_start", "index": 0, "content_block": []},
         "content_block to be an object"),
        ("message_start", {"type": "message_start", "message": "m"}, "message to be an object"),
        ("message_start", {"type": "message_start", "message": {"usage": {"input_tokens": "3"}}},
         "usage input_tokens"),
        ("message_delta", {"type": "message_delta", "delta": {"stop_reason": 1}}, "stop_reason"),
        ("x", {"type": None}, "string `type`"),
    ],
    "gemini": [
        ("", {"candidates": {"0": {}}}, "candidates to be an array"),
        ("", {"candidates": ["text"]}, "candidates[0] to be an object"),
        ("", {"candidates": [{"content": "text"}]}, "content to be an object"),
        ("", {"candidates": [{"content": {"parts": {"text": "a"}}}]}, "parts to be an array"),
        ("", {"candidates": [{"content": {"parts": [{"text": 3}, {"text": "b"}]}}]}, "part.text"),
        ("", {"candidates": [{"content": {"parts": [{"functionCall": "f"}]}}]}, "functionCall"),
        ("", {"candidates": [{"finishReason": 1}]}, "finishReason to be a string"),
        ("", {"usageMetadata": {"promptTokenCount": [1]}}, "usage promptTokenCount"),
        ("", {"promptFeedback": "blocked"}, "promptFeedback to be an object"),
    ],
}  # fmt: skip

CASES = [(protocol, *case) for protocol, cases in MALFORMED.items() for case in cases]


@pytest.mark.parametrize(
    ("protocol", "event", "payload", "expected"), CASES, ids=[f"{c[0]}-{c[3]}" for c in CASES]
)
def test_a_malformed_event_is_a_protocol_error_naming_the_shape(
    protocol: str, event: str, payload: Any, expected: str
) -> None:
    decoder = load_provider(protocol, api_key="test-key-0000").new_decoder()
    with pytest.raises(ProtocolError, match="unexpected shape: expected") as info:
        decoder.feed(event, json.dumps(payload))
    assert expected in str(info.value)
    assert info.value.retryable


MALFORMED_BODIES = {
    "openai-chat": {"choices": [{"message": {"content": ["a"]}}]},
    "openai-responses": {"output": [{"type": "message", "content": "text"}]},
    "anthropic": {"type": "message", "content": [{"type": "text", "text": 1}]},
    "gemini": {"candidates": [{"content": {"parts": "text"}}]},
}


@pytest.mark.parametrize("protocol", sorted(MALFORMED_BODIES))
def test_a_malformed_atomic_body_is_a_protocol_error(protocol: str) -> None:
    provider = load_provider(protocol, api_key="test-key-0000")
    with pytest.raises(ProtocolError, match="unexpected shape: expected"):
        provider.decode_body(MALFORMED_BODIES[protocol])


WIRES = {
    # protocol: (recording folder, base path, model, SSE newline)
    "openai-chat": ("openai_chat", "/v1", "gpt-4o-mini", "\n"),
    "openai-responses": ("openai_responses", "/v1", "gpt-5", "\n"),
    "anthropic": ("anthropic", "", "claude-sonnet-4-5", "\n"),
    "gemini": ("gemini", "", "gemini-2.5-flash", "\r\n"),
}


@pytest.fixture(scope="module")
def server() -> Iterator[ReplayServer]:
    with ReplayServer() as srv:
        yield srv


def _client(url: str, protocol: str, **kwargs: Any) -> Client:
    _, path, model, _ = WIRES[protocol]
    return Client(base_url=url + path, protocol=protocol, model=model, **kwargs)


@pytest.mark.parametrize("protocol", sorted(MALFORMED))
def test_a_malformed_stream_is_retried_as_the_wire_s_fault(
    server: ReplayServer, protocol: str
) -> None:
    folder, _, _, nl = WIRES[protocol]
    event, payload, _ = MALFORMED[protocol][0]
    head = f"event: {event}{nl}" if event else ""
    body = f"{head}data: {json.dumps(payload)}{nl}{nl}".encode()
    good = Reply.from_file(RECORDINGS / folder / "text.sse")
    url = server.add([Reply(body=body, content_type="text/event-stream"), good])
    with _client(url, protocol, retry=THREE) as client:
        response = client.stream("hi").final()
    assert response.complete
    assert isinstance(response.attempts[0].error, ProtocolError)
    assert len(server.requests(url)) == 2


# -- an injected bug propagates, once ----------------------------------------------------------


class BuggyDecoder(ChatStreamDecoder):
    """A decoder with a bug of ours: it indexes a key that is not there."""

    def feed(self, event: str, data: str) -> Sequence[StreamEvent]:
        events = super().feed(event, data)
        if any(type(e) is TextDelta for e in events):
            missing: dict[str, StreamEvent] = {}
            return (missing["no such key"],)  # the bug
        return events


class BuggyProvider(OpenAIChatProvider):
    def new_decoder(self) -> BuggyDecoder:
        return BuggyDecoder(self.label)

    def decode_body(self, body: Any) -> Any:
        return body["not there"]  # the same bug on the atomic path


def _buggy(url: str) -> dict[str, Any]:
    provider = BuggyProvider(base_url=url + "/v1", name="buggy")
    return {"providers": {"buggy": provider}, "models": [ModelSpec("m", "buggy")], "retry": THREE}


@pytest.mark.parametrize("atomic", [False, True], ids=["stream", "atomic"])
def test_our_bug_raises_as_it_is_and_is_not_retried(server: ReplayServer, atomic: bool) -> None:
    name = "text.json" if atomic else "text.sse"
    url = server.add(Reply.from_file(RECORDINGS / "openai_chat" / name))
    with Client(**_buggy(url)) as client, pytest.raises(KeyError):
        if atomic:
            client.complete("hi")
        else:
            client.stream("hi").final()
    assert len(server.requests(url)) == 1  # three attempts allowed, one made


@pytest.mark.parametrize("atomic", [False, True], ids=["stream", "atomic"])
def test_our_bug_raises_as_it_is_on_the_async_client(server: ReplayServer, atomic: bool) -> None:
    name = "text.json" if atomic else "text.sse"
    url = server.add(Reply.from_file(RECORDINGS / "openai_chat" / name))

    async def main() -> None:
        async with AsyncClient(**_buggy(url)) as client:
            if atomic:
                await client.complete("hi")
            else:
                await client.stream("hi").final()

    with pytest.raises(KeyError):
        anyio.run(main)
    assert len(server.requests(url)) == 1


# -- no module reads another's private attributes ----------------------------------------------


def test_no_module_reads_another_module_s_private_attributes() -> None:
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute):
                name, owner = node.attr, node.value
                mine = isinstance(owner, ast.Name) and owner.id in ("self", "cls")
                if name.startswith("_") and not name.startswith("__") and not mine:
                    offenders.append(f"{path.name}:{node.lineno} {ast.unparse(node)}")
            elif isinstance(node, ast.ImportFrom):
                for alias in node.names:
                    if alias.name.startswith("_") and not alias.name.startswith("__"):
                        offenders.append(f"{path.name}:{node.lineno} import {alias.name}")
    assert offenders == []


# -- usage: final or not -----------------------------------------------------------------------


def _anthropic_events(*events: tuple[str, Any]) -> bytes:
    return "".join(f"event: {n}\ndata: {json.dumps(d)}\n\n" for n, d in events).encode()


START = (
    "message_start",
    {
        "type": "message_start",
        "message": {
            "id": "msg_1",
            "model": "claude-test",
            "usage": {"input_tokens": 10, "output_tokens": 1},
        },
    },
)
TEXT = (
    "content_block_delta",
    {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hi"}},
)
DELTA = (
    "message_delta",
    {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 7}},
)
STOP = ("message_stop", {"type": "message_stop"})  # fmt: skip


def test_anthropic_usage_cut_after_message_start_is_not_final(server: ReplayServer) -> None:
    url = server.add(Reply(body=_anthropic_events(START, TEXT), content_type="text/event-stream"))
    with _client(url, "anthropic", retry=NO_RETRY) as client:
        response = client.stream("hi").final()
    assert response.state == "partial"
    assert response.usage.reported and (response.usage.output_tokens == 1)
    assert not response.usage.final


def test_anthropic_usage_is_final_only_with_the_stop_reason(server: ReplayServer) -> None:
    body = _anthropic_events(START, TEXT, DELTA, STOP)
    url = server.add(Reply(body=body, content_type="text/event-stream"))
    with _client(url, "anthropic", retry=NO_RETRY) as client, client.stream("hi") as stream:
        reported = [e.usage.final for e in stream if isinstance(e, UsageReported)]
    assert reported == [False, True]
    assert stream.final().usage.final and stream.final().usage.output_tokens == 7


def test_final_counts_on_a_stream_that_did_not_end_are_not_final(server: ReplayServer) -> None:
    """The Chat usage chunk is the call's last usage, but without [DONE] the Response is
    partial, and its usage says so."""
    full = (RECORDINGS / "openai_chat" / "text.sse").read_bytes()
    cut = full.index(b"data: [DONE]")
    url = server.add(Reply(body=full, cut_after=cut, content_type="text/event-stream"))
    with _client(url, "openai-chat", retry=NO_RETRY) as client:
        response = client.stream("hi").final()
    assert response.state == "partial" and response.usage.reported
    assert not response.usage.final


def test_interrupted_and_cancelled_usage_is_not_final(server: ReplayServer) -> None:
    body = _anthropic_events(START, TEXT, DELTA, STOP)
    cut = len(_anthropic_events(START, TEXT, DELTA))
    sse = "text/event-stream"
    reset = server.add(Reply(body=body, cut_after=cut, cut="reset", content_type=sse))
    client = _client(reset, "anthropic", retry=NO_RETRY)
    with client, pytest.raises(StreamInterrupted) as info:
        client.stream("hi").final()
    assert info.value.partial is not None and info.value.partial.usage.output_tokens == 7
    assert not info.value.partial.usage.final

    whole = server.add(Reply(body=body, content_type=sse, stall_after=cut))
    with _client(whole, "anthropic", retry=NO_RETRY) as client, client.stream("hi") as stream:
        for event in stream:
            if isinstance(event, UsageReported) and event.usage.final:
                break  # the codec's final counts arrived; the consumer leaves before the end
    response = stream.final()
    assert response.state == "cancelled" and response.usage.output_tokens == 7
    assert not response.usage.final


@pytest.mark.parametrize("protocol", sorted(WIRES))
def test_complete_recordings_end_with_final_usage(server: ReplayServer, protocol: str) -> None:
    folder = WIRES[protocol][0]
    for name in ("text.sse", "text.json"):
        url = server.add(Reply.from_file(RECORDINGS / folder / name))
        with _client(url, protocol, retry=NO_RETRY) as client:
            response = (
                client.stream("hi").final() if name.endswith("sse") else (client.complete("hi"))
            )
        assert response.complete and response.usage.reported, name
        assert response.usage.final, name
