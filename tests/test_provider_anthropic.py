"""The Anthropic Messages provider: codec units, request building, from_sdk, and end to end.

The codec is fed the recordings in tests/recordings/anthropic (and inline bodies for shapes
the recordings lack: llama-server's flat error event, cache usage, unknown events); the
end-to-end tests run the public Client against the byte-exact ReplayServer.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from httpx_sse import EventSource

from tally_client import (
    APIStatusError,
    BadRequestError,
    Client,
    ConfigurationError,
    Finished,
    ModelSpec,
    OverloadedError,
    ProtocolError,
    Reset,
    RetryPolicy,
    ServerError,
    TextDelta,
    Tool,
    ToolCall,
    ToolCallDelta,
    Usage,
)
from tally_client._request import CallSpec
from tally_client._supervisor import Accumulator
from tally_client.providers.anthropic import (
    DEFAULT_MAX_TOKENS,
    AnthropicProvider,
    MessagesStreamDecoder,
)
from tally_client.testing import ReplayServer, Reply, Scenario

RECORDINGS = Path(__file__).parent / "recordings" / "anthropic"
KEY = "sk-ant-test-SECRET"
FAST = RetryPolicy(max_attempts=1)


def sse(*events: tuple[str, Any]) -> bytes:
    """An SSE body from (event name, JSON payload or raw string) pairs."""
    out = []
    for name, data in events:
        text = data if isinstance(data, str) else json.dumps(data)
        out.append(f"event: {name}\ndata: {text}\n\n")
    return "".join(out).encode()


def sse_events(body: bytes) -> list[tuple[str, str]]:
    """(event, data) pairs as httpx-sse parses them (the same decoder the client uses)."""
    response = httpx.Response(200, headers={"content-type": "text/event-stream"}, content=body)
    return [(s.event, s.data) for s in EventSource(response).iter_sse()]


def decode(body: bytes) -> tuple[MessagesStreamDecoder, Accumulator]:
    """Feed a whole SSE body through a fresh decoder into an Accumulator."""
    decoder = AnthropicProvider(api_key="test-key").new_decoder()
    acc = Accumulator(0.0)
    for name, data in sse_events(body):
        for event in decoder.feed(name, data):
            acc.add(event, 0.0)
    return decoder, acc


START = {
    "type": "message_start",
    "message": {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "content": [],
        "model": "claude-test",
        "stop_reason": None,
        "usage": {"input_tokens": 10, "output_tokens": 1},
    },
}
TEXT_START = {
    "type": "content_block_start",
    "index": 0,
    "content_block": {"type": "text", "text": ""},
}


def text_delta(text: str, index: int = 0) -> dict[str, Any]:
    return {
        "type": "content_block_delta",
        "index": index,
        "delta": {"type": "text_delta", "text": text},
    }


def message_delta(stop: str | None, usage: dict[str, Any]) -> dict[str, Any]:
    return {"type": "message_delta", "delta": {"stop_reason": stop}, "usage": usage}


STOP = {"type": "message_stop"}


# -- the codec against the recordings ---------------------------------------------------------

EXPECTED: dict[str, dict[str, Any]] = {
    "text": {
        "text": "Hello! Café au lait — a classic ☕.",
        "usage": Usage.of(19, 14, cached_input_tokens=0, final=True),
        "finish": ("stop", "end_turn"),
    },
    "length": {
        "text": "The history of the Roman Empire spans more",
        "usage": Usage.of(14, 8, cached_input_tokens=0, final=True),
        "finish": ("length", "max_tokens"),
    },
    "refusal": {
        "text": "I can't help with that request.",
        "usage": Usage.of(23, 9, cached_input_tokens=0, final=True),
        "finish": ("content_filter", "refusal"),
    },
    "thinking": {
        "text": "17 × 23 = 391.",
        "thinking": "The user asks for 17 × 23. 17 × 20 = 340 and 17 × 3 = 51, so 340 + 51 = 391.",
        "usage": Usage.of(45, 87, cached_input_tokens=0, final=True),
        "finish": ("stop", "end_turn"),
    },
    "tool_call": {
        "text": "I'll check the current weather in Paris for you.",
        "tools": [
            ToolCall(
                "toolu_01T1x1fJ34qAmk2tNTrN7Up6",
                "get_weather",
                '{"city": "Paris", "unit": "celsius"}',
            )
        ],
        "usage": Usage.of(402, 71, cached_input_tokens=0, final=True),
        "finish": ("tool_calls", "tool_use"),
    },
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_recorded_stream(name: str) -> None:
    want = EXPECTED[name]
    decoder, acc = decode((RECORDINGS / f"{name}.sse").read_bytes())
    assert decoder.terminal
    assert decoder.model == "claude-sonnet-4-5-20250929"
    assert decoder.response_id is not None
    assert decoder.response_id.startswith("msg_")
    assert acc.text == want["text"]
    assert acc.thinking == want.get("thinking", "")
    assert list(acc.tool_calls()) == want.get("tools", [])
    assert acc.usage == want["usage"]
    assert (acc.finish_reason, acc.raw_finish_reason) == want["finish"]


def test_recorded_tool_call_arguments_parse() -> None:
    _, acc = decode((RECORDINGS / "tool_call.sse").read_bytes())
    (call,) = acc.tool_calls()
    assert call.parsed_arguments() == {"city": "Paris", "unit": "celsius"}


def test_recorded_error_event_raises_overloaded() -> None:
    decoder = AnthropicProvider(api_key="test-key", name="claude").new_decoder()
    events = sse_events((RECORDINGS / "error_event.sse").read_bytes())
    *before, last = events
    assert last[0] == "error"
    texts = [e.text for n, d in before for e in decoder.feed(n, d) if isinstance(e, TextDelta)]
    with pytest.raises(OverloadedError) as info:
        decoder.feed(*last)
    err = info.value
    assert texts == ["The", " answer is"]
    assert err.status_code == 529
    assert err.error_type == "overloaded_error"
    assert err.in_stream
    assert err.retryable
    assert err.provider == "claude"
    assert not decoder.terminal


@pytest.mark.parametrize("name", ["text", "tool_call"])
def test_recorded_body_gives_the_stream_events(name: str) -> None:
    provider = AnthropicProvider(api_key="test-key")
    body = json.loads((RECORDINGS / f"{name}.json").read_text())
    result = provider.decode_body(body)
    acc = Accumulator(0.0)
    for event in result.events:
        acc.add(event, 0.0)
    _, streamed = decode((RECORDINGS / f"{name}.sse").read_bytes())
    assert result.model == "claude-sonnet-4-5-20250929"
    assert result.response_id == body["id"]
    assert acc.text == streamed.text
    assert acc.usage == streamed.usage
    assert (acc.finish_reason, acc.raw_finish_reason) == (
        streamed.finish_reason,
        streamed.raw_finish_reason,
    )
    assert [(c.id, c.name, c.parsed_arguments()) for c in acc.tool_calls()] == [
        (c.id, c.name, c.parsed_arguments()) for c in streamed.tool_calls()
    ]


# -- the codec: usage, terminal, errors, odd shapes -----------------------------------------


def test_usage_cache_fields_and_cumulative_output() -> None:
    start = json.loads(json.dumps(START))
    start["message"]["usage"] = {
        "input_tokens": 5,
        "cache_creation_input_tokens": 100,
        "cache_read_input_tokens": 2000,
        "output_tokens": 1,
    }
    body = sse(
        ("message_start", start),
        ("content_block_start", TEXT_START),
        ("content_block_delta", text_delta("a")),
        # an intermediate usage report, then the final one: cumulative, never summed
        ("message_delta", message_delta(None, {"output_tokens": 3})),
        (
            "message_delta",
            message_delta(
                "end_turn",
                {
                    "output_tokens": 7,
                    "cache_read_input_tokens": 2100,
                    "input_tokens": None,
                    "output_tokens_details": {"thinking_tokens": 4},
                },
            ),
        ),
        ("message_stop", STOP),
    )
    decoder, acc = decode(body)
    assert decoder.terminal
    # input 5 (message_start; the null does not erase it) + 100 + 2100 (overridden)
    assert acc.usage == Usage.of(2205, 7, cached_input_tokens=2100, reasoning_tokens=4, final=True)


def test_llama_server_usage_shape() -> None:
    start = json.loads(json.dumps(START))
    start["message"]["usage"] = {
        "cache_read_input_tokens": 31,
        "input_tokens": 1,
        "output_tokens": 0,
    }
    body = sse(
        ("message_start", start),
        ("content_block_start", TEXT_START),
        ("content_block_delta", text_delta("Hi")),
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        ("message_delta", message_delta("max_tokens", {"output_tokens": 12})),
        ("message_stop", STOP),
    )
    _, acc = decode(body)
    assert acc.usage == Usage(32, 12, 44, 31, None, final=True)
    assert acc.finish_reason == "length"


def test_usage_from_message_start_only_when_cut() -> None:
    _, acc = decode(sse(("message_start", START), ("content_block_delta", text_delta("x"))))
    assert acc.usage == Usage.of(10, 1)  # what was reported; nothing invented
    assert not acc.usage.final  # message_start's counts: not the call's usage


def test_no_usage_reported_is_missing_not_zero() -> None:
    start = json.loads(json.dumps(START))
    del start["message"]["usage"]
    _, acc = decode(sse(("message_start", start), ("message_delta", message_delta("end_turn", {}))))
    assert not acc.usage.reported
    assert acc.usage.input_tokens is None


@pytest.mark.parametrize(
    ("raw", "normalized"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("pause_turn", "stop"),
        ("max_tokens", "length"),
        ("model_context_window_exceeded", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
        ("some_future_reason", "stop"),
    ],
)
def test_stop_reasons(raw: str, normalized: str) -> None:
    decoder = MessagesStreamDecoder("anthropic")
    events = decoder.feed("message_delta", json.dumps(message_delta(raw, {"output_tokens": 1})))
    assert events[-1] == Finished(normalized, raw)  # type: ignore[arg-type]


def test_terminal_only_after_message_stop() -> None:
    decoder = MessagesStreamDecoder("anthropic")
    for name, payload in [
        ("message_start", START),
        ("content_block_start", TEXT_START),
        ("content_block_delta", text_delta("hi")),
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        ("message_delta", message_delta("end_turn", {"output_tokens": 2})),
    ]:
        decoder.feed(name, json.dumps(payload))
        assert not decoder.terminal
    decoder.feed("message_stop", json.dumps(STOP))
    assert decoder.terminal


def test_ping_unknown_events_and_deltas_are_ignored() -> None:
    decoder = MessagesStreamDecoder("anthropic")
    assert decoder.feed("ping", '{"type": "ping"}') == ()
    assert decoder.feed("ping", "") == ()
    assert decoder.feed("future_event", '{"type": "future_event", "x": 1}') == ()
    citation = {"type": "content_block_delta", "index": 0, "delta": {"type": "citations_delta"}}
    assert decoder.feed("content_block_delta", json.dumps(citation)) == ()
    sig = {"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta"}}
    assert decoder.feed("content_block_delta", json.dumps(sig)) == ()
    server_tool = {
        "type": "content_block_start",
        "index": 0,
        "content_block": {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search"},
    }
    assert decoder.feed("content_block_start", json.dumps(server_tool)) == ()
    # its input deltas are not a client tool call either
    server_input = {
        "type": "content_block_delta",
        "index": 0,
        "delta": {"type": "input_json_delta", "partial_json": '{"q": 1}'},
    }
    assert decoder.feed("content_block_delta", json.dumps(server_input)) == ()


def test_llama_server_flat_error_event() -> None:
    decoder = MessagesStreamDecoder("local")
    decoder.feed("message_start", json.dumps(START))
    with pytest.raises(ServerError) as info:
        decoder.feed("error", '{"code":500,"message":"slot failed","type":"server_error"}')
    assert info.value.status_code == 500
    assert info.value.retryable
    assert "slot failed" in str(info.value)


def test_invalid_request_error_event_is_not_retryable() -> None:
    decoder = MessagesStreamDecoder("anthropic")
    data = '{"type":"error","error":{"type":"invalid_request_error","message":"bad"}}'
    with pytest.raises(BadRequestError) as info:
        decoder.feed("error", data)
    assert info.value.status_code == 400
    assert not info.value.retryable


def test_error_type_without_error_event_name() -> None:
    decoder = MessagesStreamDecoder("anthropic")
    with pytest.raises(OverloadedError):
        decoder.feed("message", '{"type":"error","error":{"type":"overloaded_error"}}')


@pytest.mark.parametrize(
    ("event", "data"),
    [
        ("content_block_delta", "not json"),
        ("content_block_delta", '{"type":"content_block_delta","index":0}'),
        ("message_start", '{"type":"message_start"}'),
        ("content_block_delta", "[1, 2]"),
    ],
)
def test_undecodable_data_is_a_protocol_error(event: str, data: str) -> None:
    with pytest.raises(ProtocolError):
        MessagesStreamDecoder("anthropic").feed(event, data)


def test_tool_calls_are_numbered_among_tool_calls() -> None:
    def tool_start(index: int, call_id: str, name: str, given: Any = None) -> dict[str, Any]:
        block = {"type": "tool_use", "id": call_id, "name": name, "input": given or {}}
        return {"type": "content_block_start", "index": index, "content_block": block}

    def json_delta(index: int, fragment: str) -> dict[str, Any]:
        delta = {"type": "input_json_delta", "partial_json": fragment}
        return {"type": "content_block_delta", "index": index, "delta": delta}

    body = sse(
        ("message_start", START),
        ("content_block_start", TEXT_START),
        ("content_block_delta", text_delta("Two calls.")),
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        ("content_block_start", tool_start(1, "toolu_a", "first")),
        ("content_block_delta", json_delta(1, "")),
        ("content_block_delta", json_delta(1, '{"a": ')),
        ("content_block_delta", json_delta(1, "1}")),
        ("content_block_stop", {"type": "content_block_stop", "index": 1}),
        # a compatible server that puts the whole input on the start event, no deltas
        ("content_block_start", tool_start(2, "toolu_b", "second", {"b": "ü"})),
        ("content_block_stop", {"type": "content_block_stop", "index": 2}),
        ("message_delta", message_delta("tool_use", {"output_tokens": 20})),
        ("message_stop", STOP),
    )
    decoder = AnthropicProvider(api_key="test-key").new_decoder()
    events = [e for n, d in sse_events(body) for e in decoder.feed(n, d)]
    deltas = [e for e in events if isinstance(e, ToolCallDelta)]
    assert deltas[0] == ToolCallDelta(0, "toolu_a", "first", "")
    assert {d.index for d in deltas} == {0, 1}
    _, acc = decode(body)
    calls = acc.tool_calls()
    assert [(c.id, c.name, c.parsed_arguments()) for c in calls] == [
        ("toolu_a", "first", {"a": 1}),
        ("toolu_b", "second", {"b": "ü"}),
    ]
    assert acc.finish_reason == "tool_calls"


def test_decode_body_error_and_garbage() -> None:
    provider = AnthropicProvider(api_key="test-key")
    with pytest.raises(OverloadedError):
        provider.decode_body(
            {"type": "error", "error": {"type": "overloaded_error", "message": "x"}}
        )
    with pytest.raises(ProtocolError):
        provider.decode_body({"choices": []})
    with pytest.raises(ProtocolError):
        provider.decode_body("<html>")


def test_decode_body_thinking_and_no_usage() -> None:
    body = {
        "id": "msg_x",
        "model": "m",
        "content": [
            {"type": "thinking", "thinking": "hmm", "signature": "s"},
            {"type": "redacted_thinking", "data": "..."},
            {"type": "text", "text": "ok"},
        ],
        "stop_reason": "end_turn",
    }
    result = AnthropicProvider(api_key="test-key").decode_body(body)
    acc = Accumulator(0.0)
    for event in result.events:
        acc.add(event, 0.0)
    assert (acc.text, acc.thinking) == ("ok", "hmm")
    assert not acc.usage.reported


# -- request building --------------------------------------------------------------------------


def build(spec: CallSpec, *, stream: bool = True, **kwargs: Any) -> tuple[str, Any, Any]:
    provider = AnthropicProvider(api_key=KEY, **kwargs)
    wire = provider.build_request(spec, "claude-test", stream=stream)
    return wire.url, dict(wire.headers), wire.json


def test_request_url_headers_and_defaults() -> None:
    url, headers, body = build(CallSpec(messages=({"role": "user", "content": "Hi"},)))
    assert url == "https://api.anthropic.com/v1/messages"
    assert headers["x-api-key"] == KEY
    assert headers["anthropic-version"] == "2023-06-01"
    assert "Authorization" not in headers
    assert body == {
        "model": "claude-test",
        "max_tokens": DEFAULT_MAX_TOKENS,
        "messages": [{"role": "user", "content": "Hi"}],
        "stream": True,
    }
    _, _, atomic_body = build(CallSpec(messages=({"role": "user", "content": "Hi"},)), stream=False)
    assert "stream" not in atomic_body


def test_request_headers_override_version_and_no_key() -> None:
    provider = AnthropicProvider(
        base_url="http://127.0.0.1:8099/",
        headers={"anthropic-version": "2099-01-01", "anthropic-beta": "x"},
    )
    wire = provider.build_request(
        CallSpec(messages=({"role": "user", "content": "Hi"},)), "m", stream=True
    )
    assert wire.url == "http://127.0.0.1:8099/v1/messages"
    assert wire.headers == {"anthropic-version": "2099-01-01", "anthropic-beta": "x"}


def test_request_fields() -> None:
    spec = CallSpec(
        messages=(
            {"role": "system", "content": "Be brief."},
            {"role": "developer", "content": "Use metric units."},
            {"role": "user", "content": "Weather in Paris and Rome?"},
            {
                "role": "assistant",
                "content": "Checking.",
                "tool_calls": [
                    ToolCall("toolu_1", "get_weather", '{"city": "Paris"}'),
                    {
                        "id": "toolu_2",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Rome"}'},
                    },
                ],
            },
            {"role": "tool", "tool_call_id": "toolu_1", "content": "18 C"},
            {"role": "tool", "tool_call_id": "toolu_2", "content": {"temp": 21}},
            {"role": "user", "content": "Thanks. And tomorrow?"},
            {"role": "assistant", "content": None, "tool_calls": [ToolCall("toolu_3", "noop", "")]},
            {"role": "tool", "tool_call_id": "toolu_3", "content": "done", "is_error": True},
        ),
        max_tokens=300,
        temperature=0.2,
        schema={"type": "object", "properties": {"t": {"type": "number"}}},
        tools=(Tool("get_weather", "Current weather", {"type": "object"}), Tool("noop")),
        extra_body={"output_config": {"effort": "low"}, "top_k": 5},
    )
    _, _, body = build(spec)
    assert body["system"] == "Be brief.\n\nUse metric units."
    assert body["max_tokens"] == 300
    assert body["temperature"] == 0.2
    assert body["top_k"] == 5
    # objects are closed (additionalProperties false), as Anthropic's structured outputs need
    closed = {**dict(spec.schema or {}), "additionalProperties": False}
    assert body["output_config"] == {
        "format": {"type": "json_schema", "schema": closed},
        "effort": "low",
    }
    assert body["tools"] == [
        {
            "name": "get_weather",
            "description": "Current weather",
            "input_schema": {"type": "object"},
        },
        {"name": "noop", "input_schema": {"type": "object", "properties": {}}},
    ]
    assert body["messages"] == [
        {"role": "user", "content": "Weather in Paris and Rome?"},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Checking."},
                {
                    "type": "tool_use",
                    "id": "toolu_1",
                    "name": "get_weather",
                    "input": {"city": "Paris"},
                },
                {
                    "type": "tool_use",
                    "id": "toolu_2",
                    "name": "get_weather",
                    "input": {"city": "Rome"},
                },
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "18 C"},
                {"type": "tool_result", "tool_use_id": "toolu_2", "content": '{"temp": 21}'},
            ],
        },
        {"role": "user", "content": "Thanks. And tomorrow?"},
        {
            "role": "assistant",
            "content": [{"type": "tool_use", "id": "toolu_3", "name": "noop", "input": {}}],
        },
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_3",
                    "content": "done",
                    "is_error": True,
                }
            ],
        },
    ]


def test_request_content_parts_and_system_blocks() -> None:
    cached = {"type": "text", "text": "Long context.", "cache_control": {"type": "ephemeral"}}
    spec = CallSpec(
        messages=(
            {"role": "system", "content": [cached]},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is this?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBO"}},
                    {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
                ],
            },
        )
    )
    _, _, body = build(spec)
    assert body["system"] == [cached]  # blocks with extra keys are kept as blocks
    assert body["messages"][0]["content"] == [
        {"type": "text", "text": "What is this?"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBO"}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
    ]


def test_request_no_schema_no_output_config() -> None:
    _, _, body = build(
        CallSpec(
            messages=({"role": "user", "content": "x"},),
            extra_body={"output_config": {"effort": "low"}},
        )
    )
    assert body["output_config"] == {"effort": "low"}


@pytest.mark.parametrize(
    "message",
    [
        {"role": "tool", "content": "no id"},
        {"role": "assistant", "content": "", "tool_calls": [ToolCall("t", "f", "{not json")]},
        {"role": "assistant", "content": "", "tool_calls": [ToolCall("t", "f", "[1]")]},
    ],
)
def test_request_bad_messages(message: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError, match=r"messages\[1\]"):
        build(CallSpec(messages=({"role": "user", "content": "x"}, message)))


def test_key_never_in_repr() -> None:
    provider = AnthropicProvider(api_key=KEY)
    wire = provider.build_request(
        CallSpec(messages=({"role": "user", "content": "x"},)), "m", stream=True
    )
    assert KEY not in repr(provider)
    assert KEY not in repr(wire)


# -- from_sdk with a real anthropic client ---------------------------------------------------


def test_from_sdk_reads_key_url_and_custom_headers() -> None:
    import anthropic

    sdk = anthropic.Anthropic(
        api_key=KEY, base_url="http://127.0.0.1:9/proxy/", default_headers={"X-Team": "blue"}
    )
    provider = AnthropicProvider.from_sdk(sdk, name="claude")
    wire = provider.build_request(
        CallSpec(messages=({"role": "user", "content": "x"},)), "m", stream=True
    )
    assert provider.label == "claude"
    assert wire.url == "http://127.0.0.1:9/proxy/v1/messages"
    headers = {k.lower(): v for k, v in wire.headers.items()}
    assert headers == {"anthropic-version": "2023-06-01", "x-team": "blue", "x-api-key": KEY}
    assert KEY not in repr(provider)


def test_from_sdk_async_client_with_auth_token() -> None:
    import anthropic

    sdk = anthropic.AsyncAnthropic(auth_token="tok-SECRET", base_url="http://127.0.0.1:9")
    provider = AnthropicProvider.from_sdk(sdk)
    wire = provider.build_request(
        CallSpec(messages=({"role": "user", "content": "x"},)), "m", stream=True
    )
    assert wire.headers["Authorization"] == "Bearer tok-SECRET"
    assert "x-api-key" not in wire.headers
    assert "tok-SECRET" not in repr(provider)


def test_from_sdk_rejects_other_objects() -> None:
    class AnthropicBedrock:  # same name as the SDK's platform client, wrong module too
        api_key = None
        base_url = "https://bedrock"

    with pytest.raises(ConfigurationError, match="AnthropicBedrock"):
        AnthropicProvider.from_sdk(AnthropicBedrock())
    with pytest.raises(ConfigurationError):
        AnthropicProvider.from_sdk(object())


# -- end to end through the public client ----------------------------------------------------


@pytest.fixture(scope="module")
def server() -> Iterator[ReplayServer]:
    with ReplayServer() as srv:
        yield srv


def client_for(url: str, **kwargs: Any) -> Client:
    return Client(base_url=url, protocol="anthropic", api_key=KEY, **kwargs)


def recording(name: str, **faults: Any) -> Reply:
    return Reply.from_file(RECORDINGS / name, **faults)


def test_e2e_stream_text_usage_and_request(server: ReplayServer) -> None:
    url = server.add(recording("text.sse"))
    with client_for(url) as client:
        response = client.stream("Say hello", system="Be warm.", max_tokens=50).final()
    assert response.text == "Hello! Café au lait — a classic ☕."
    assert response.state == "complete"
    assert response.usage == Usage.of(19, 14, cached_input_tokens=0, final=True)
    assert (response.finish_reason, response.raw_finish_reason) == ("stop", "end_turn")
    assert response.model == "claude-sonnet-4-5-20250929"
    assert response.provider == "anthropic"
    (request,) = server.requests(url)
    assert request.path == "/v1/messages"
    assert request.headers["x-api-key"] == KEY
    assert request.headers["anthropic-version"] == "2023-06-01"
    assert "authorization" not in request.headers
    sent = request.json()
    assert sent["system"] == "Be warm."
    assert sent["stream"] is True
    assert sent["max_tokens"] == 50


def test_e2e_atomic_text(server: ReplayServer) -> None:
    url = server.add(recording("text.json"))
    with client_for(url) as client:
        response = client.complete("Say hello")
    assert response.text == "Hello! Café au lait — a classic ☕."
    assert response.state == "complete"
    assert response.usage == Usage.of(19, 14, cached_input_tokens=0, final=True)
    assert response.finish_reason == "stop"
    assert server.requests(url)[0].json()["max_tokens"] == DEFAULT_MAX_TOKENS


@pytest.mark.parametrize("name", ["tool_call.sse", "tool_call.json"])
def test_e2e_tool_call(server: ReplayServer, name: str) -> None:
    url = server.add(recording(name, split=[7]))  # .sse: events cut at arbitrary bytes
    tool = {"name": "get_weather", "description": "Weather", "parameters": {"type": "object"}}
    with client_for(url) as client:
        if name.endswith(".sse"):
            stream = client.stream("Weather in Paris?", tools=[tool])
            events = list(stream)  # any() would stop early, which cancels the call
            assert any(isinstance(e, ToolCallDelta) for e in events)
            response = stream.final()
        else:
            response = client.complete("Weather in Paris?", tools=[tool])
    (call,) = response.tool_calls
    assert (call.id, call.name) == ("toolu_01T1x1fJ34qAmk2tNTrN7Up6", "get_weather")
    assert call.parsed_arguments() == {"city": "Paris", "unit": "celsius"}
    assert response.finish_reason == "tool_calls"
    assert response.usage.input_tokens == 402
    sent = server.requests(url)[0].json()
    assert sent["tools"] == [
        {"name": "get_weather", "description": "Weather", "input_schema": {"type": "object"}}
    ]


@pytest.mark.parametrize(
    ("name", "finish", "raw"),
    [("length.sse", "length", "max_tokens"), ("refusal.sse", "content_filter", "refusal")],
)
def test_e2e_finish_reasons(server: ReplayServer, name: str, finish: str, raw: str) -> None:
    url = server.add(recording(name))
    with client_for(url) as client:
        response = client.stream("x").final()
    assert response.state == "complete"
    assert (response.finish_reason, response.raw_finish_reason) == (finish, raw)


def test_e2e_thinking(server: ReplayServer) -> None:
    url = server.add(recording("thinking.sse"))
    with client_for(url) as client:
        response = client.stream("17 × 23?").final()
    assert response.text == "17 × 23 = 391."
    assert response.thinking.startswith("The user asks for 17 × 23.")


def test_e2e_clean_end_before_message_stop_is_partial(server: ReplayServer) -> None:
    reply = recording("text.sse")
    # through the message_delta (stop_reason and usage arrived) but without message_stop
    url = server.add(reply.replace(cut_after=reply.offset_after_event(8), cut="clean"))
    with client_for(url, retry=FAST) as client:
        response = client.stream("x").final()
    assert response.state == "partial"
    assert response.text == "Hello! Café au lait — a classic ☕."
    assert response.finish_reason == "stop"


def test_e2e_error_event_raises_typed_error_with_partial(server: ReplayServer) -> None:
    url = server.add(recording("error_event.sse"))
    with client_for(url, retry=FAST) as client, pytest.raises(OverloadedError) as info:
        client.stream("x").final()
    err = info.value
    assert isinstance(err, APIStatusError)
    assert err.status_code == 529
    assert err.retryable
    assert err.partial is not None
    assert err.partial.text == "The answer is"
    assert err.partial.state == "interrupted"
    assert KEY not in str(err)


def test_e2e_overloaded_event_is_retried(server: ReplayServer) -> None:
    url = server.add(Scenario(recording("error_event.sse"), recording("text.sse")))
    policy = RetryPolicy(max_attempts=2, initial_delay=0.0, max_delay=0.0)
    with client_for(url, retry=policy) as client:
        stream = client.stream("x")
        events = list(stream)
        response = stream.final()
    resets = [e for e in events if isinstance(e, Reset)]
    assert len(resets) == 1
    assert resets[0].discarded_text == "The answer is"
    assert response.text == "Hello! Café au lait — a classic ☕."
    assert [a.error is None for a in response.attempts] == [False, True]
    assert len(server.requests(url)) == 2


def test_e2e_llama_flat_error_event(server: ReplayServer) -> None:
    body = sse(
        ("message_start", START),
        ("content_block_start", TEXT_START),
        ("content_block_delta", text_delta("Partial")),
        ("error", '{"code":500,"message":"decode failed","type":"server_error"}'),
    )
    url = server.add(Reply(body=body))
    with client_for(url, retry=FAST) as client, pytest.raises(ServerError) as info:
        client.stream("x").final()
    assert info.value.status_code == 500
    assert info.value.partial is not None
    assert info.value.partial.text == "Partial"


def test_e2e_http_error_body(server: ReplayServer) -> None:
    body = {
        "type": "error",
        "error": {"type": "invalid_request_error", "message": "max_tokens: bad"},
    }
    url = server.add(Reply.error(400, body, {"request-id": "req_1"}))
    with client_for(url, retry=FAST) as client, pytest.raises(BadRequestError) as info:
        client.complete("x")
    assert info.value.error_type == "invalid_request_error"
    assert info.value.request_id == "req_1"
    assert not info.value.retryable


def test_e2e_from_sdk_provider(server: ReplayServer) -> None:
    import anthropic

    url = server.add(recording("text.sse"))
    sdk = anthropic.Anthropic(api_key=KEY, base_url=url, default_headers={"X-Team": "blue"})
    provider = AnthropicProvider.from_sdk(sdk)
    models = [ModelSpec("claude-test", "anthropic")]
    with Client(models, providers={"anthropic": provider}) as client:
        response = client.stream("x").final()
    assert response.text == "Hello! Café au lait — a classic ☕."
    (request,) = server.requests(url)
    assert request.headers["x-team"] == "blue"
    assert request.headers["x-api-key"] == KEY
    assert not any(h.startswith("x-stainless") for h in request.headers)
    assert request.json()["model"] == "claude-test"
