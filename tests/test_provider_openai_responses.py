"""The OpenAI Responses provider: codec units, request building, from_sdk, and end to end.

The codec is fed the recordings in tests/recordings/openai_responses and inline bodies for the
shapes they lack (llama-server's events without `sequence_number` / `output_index` / item ids,
the nested error shape, reasoning, refusals). `from_sdk` is checked with real `openai` client
objects pointed at the ReplayServer: the request the SDK sends and the one we send must go to
the same path, with the same query and auth headers. The end-to-end tests run the public Client
against the ReplayServer.
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
    ProtocolError,
    RateLimitError,
    Reset,
    RetryPolicy,
    ServerError,
    TextDelta,
    ThinkingDelta,
    Tool,
    ToolCall,
    ToolCallDelta,
    Usage,
    UsageReported,
)
from tally_client._request import CallSpec
from tally_client._supervisor import Accumulator
from tally_client.providers.openai_chat import OpenAIChatProvider
from tally_client.providers.openai_responses import (
    OpenAIResponsesProvider,
    ResponsesStreamDecoder,
    input_items,
)
from tally_client.testing import ReplayServer, Reply, Scenario

RECORDINGS = Path(__file__).parent / "recordings" / "openai_responses"
KEY = "sk-test-SECRET-1234"
FAST = RetryPolicy(max_attempts=1)
TEXT = "Hello! Café au lait — a classic ☕."
MODEL = "gpt-4.1-mini-2025-04-14"


def sse(*events: dict[str, Any] | str, named: bool = True) -> bytes:
    """An SSE body from JSON payloads (named by their `type`, as OpenAI does) or raw data."""
    out = []
    for payload in events:
        if isinstance(payload, str):
            out.append(f"data: {payload}\n\n")
        elif named:
            out.append(f"event: {payload.get('type', 'message')}\ndata: {json.dumps(payload)}\n\n")
        else:
            out.append(f"data: {json.dumps(payload)}\n\n")
    return "".join(out).encode()


def sse_events(body: bytes) -> list[tuple[str, str]]:
    """(event, data) pairs as httpx-sse parses them (the same decoder the client uses)."""
    response = httpx.Response(200, headers={"content-type": "text/event-stream"}, content=body)
    return [(s.event, s.data) for s in EventSource(response).iter_sse()]


def decode(body: bytes) -> tuple[ResponsesStreamDecoder, Accumulator, list[Any]]:
    """Feed a whole SSE body through a fresh decoder into an Accumulator."""
    decoder = OpenAIResponsesProvider(api_key="test-key").new_decoder()
    acc = Accumulator(0.0)
    seen: list[Any] = []
    for name, data in sse_events(body):
        for event in decoder.feed(name, data):
            seen.append(event)
            acc.add(event, 0.0)
    return decoder, acc, seen


def recorded(name: str) -> bytes:
    return (RECORDINGS / name).read_bytes()


def completed(usage: dict[str, Any] | None = None, **response: Any) -> dict[str, Any]:
    return {
        "type": "response.completed",
        "response": {"id": "resp_1", "status": "completed", "usage": usage, **response},
    }


# -- the codec on the recordings --------------------------------------------------------------

RECORDED = {
    # name: (text, tool calls, usage, finish, raw finish)
    "text.sse": (TEXT, [], Usage.of(21, 11, total_tokens=32, cached_input_tokens=0,
                                    reasoning_tokens=0, final=True), "stop", "completed"),
    "tool_call.sse": (
        "",
        [ToolCall("call_Vt3kP9xQm2LwR7nB5yZc8HdJ", "get_weather",
                  '{"city":"Paris","unit":"celsius"}')],
        Usage.of(58, 19, total_tokens=77, cached_input_tokens=0, reasoning_tokens=0, final=True),
        "tool_calls",
        "completed",
    ),
    "incomplete.sse": (
        "The history of the Roman Empire spans more",
        [],
        Usage.of(12, 8, total_tokens=20, cached_input_tokens=0, reasoning_tokens=0, final=True),
        "length",
        "max_output_tokens",
    ),
    "content_filter.sse": (
        "Sure, here is the",
        [],
        Usage.of(15, 5, total_tokens=20, cached_input_tokens=0, reasoning_tokens=0, final=True),
        "content_filter",
        "content_filter",
    ),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(RECORDED))
def test_recorded_stream(name: str) -> None:
    text, calls, usage, finish, raw = RECORDED[name]
    decoder, acc, _ = decode(recorded(name))
    assert decoder.terminal, "response.completed / response.incomplete end the stream"
    assert acc.text == text
    assert list(acc.tool_calls()) == calls
    assert acc.usage == usage
    assert (acc.finish_reason, acc.raw_finish_reason) == (finish, raw)
    assert decoder.model == MODEL
    assert decoder.response_id is not None and decoder.response_id.startswith("resp_")


@pytest.mark.parametrize("name", ["text", "tool_call"])
def test_recorded_body_gives_the_stream_events(name: str) -> None:
    provider = OpenAIResponsesProvider(api_key="test-key")
    result = provider.decode_body(json.loads(recorded(f"{name}.json")))
    acc = Accumulator(0.0)
    for event in result.events:
        acc.add(event, 0.0)
    text, calls, usage, finish, raw = RECORDED[f"{name}.sse"]
    assert (acc.text, list(acc.tool_calls()), acc.usage) == (text, calls, usage)
    assert (acc.finish_reason, acc.raw_finish_reason) == (finish, raw)
    assert result.model == MODEL and result.response_id is not None


def test_recorded_flat_error_event_raises_a_retryable_server_error() -> None:
    decoder = OpenAIResponsesProvider(api_key="test-key", name="openai").new_decoder()
    texts: list[str] = []
    with pytest.raises(ServerError) as info:
        for name, data in sse_events(recorded("error_event.sse")):
            texts.extend(e.text for e in decoder.feed(name, data) if isinstance(e, TextDelta))
    assert "".join(texts) == "The answer is"
    err = info.value
    assert (err.status_code, err.error_type, err.in_stream, err.retryable) == (
        500,
        "server_error",
        True,
        True,
    )
    assert "The server had an error" in str(err) and err.provider == "openai"
    assert not decoder.terminal


def test_recorded_response_failed_raises_with_its_error() -> None:
    decoder = OpenAIResponsesProvider(api_key="test-key").new_decoder()
    with pytest.raises(ServerError) as info:
        for name, data in sse_events(recorded("failed.sse")):
            decoder.feed(name, data)
    assert info.value.retryable and info.value.error_type == "server_error"
    assert "The model failed to generate a response." in str(info.value)
    assert not decoder.terminal


# -- the codec on shapes the recordings lack --------------------------------------------------


def test_nested_error_event_insufficient_quota_is_not_retried() -> None:
    body = sse(
        {
            "type": "error",
            "sequence_number": 2,
            "error": {
                "type": "insufficient_quota",
                "code": "insufficient_quota",
                "message": "You exceeded your current quota",
                "param": None,
            },
        }
    )
    with pytest.raises(RateLimitError) as info:
        decode(body)
    assert info.value.retryable is False and info.value.error_type == "insufficient_quota"


@pytest.mark.parametrize(
    ("code", "cls", "retryable"),
    [
        ("server_error", ServerError, True),
        ("rate_limit_exceeded", RateLimitError, True),
        ("invalid_prompt", BadRequestError, False),
        ("image_too_large", BadRequestError, False),
        ("bio_policy", BadRequestError, False),
        ("something_new", ServerError, True),
    ],
)
def test_response_failed_codes(code: str, cls: type[APIStatusError], retryable: bool) -> None:
    failed = {
        "type": "response.failed",
        "response": {"status": "failed", "error": {"code": code, "message": "m"}, "usage": None},
    }
    with pytest.raises(cls) as info:
        decode(sse(failed))
    assert info.value.retryable is retryable and info.value.error_type == code


def test_chat_style_error_without_type_raises() -> None:
    with pytest.raises(ServerError, match="boom"):
        decode(sse('{"error": {"message": "boom", "type": "server_error", "code": 500}}'))


def test_llama_server_shapes() -> None:
    """No sequence_number/output_index; function_call items have only call_id (= item_id)."""
    body = sse(
        {"type": "response.created", "response": {"id": "resp_L", "object": "response"}},
        {"type": "response.output_item.added", "item": {"type": "reasoning", "id": "rs_1"}},
        {"type": "response.reasoning_text.delta", "item_id": "rs_1", "delta": "Think"},
        {"type": "response.reasoning_text.delta", "item_id": "rs_1", "delta": "ing."},
        {"type": "response.output_item.added", "item": {"type": "message", "id": "msg_1"}},
        {"type": "response.output_text.delta", "item_id": "msg_1", "delta": "Let me check."},
        *[
            event
            for n, city in ((1, "Paris"), (2, "Rome"))
            for event in (
                {
                    "type": "response.output_item.added",
                    "item": {
                        "type": "function_call",
                        "arguments": "",
                        "call_id": f"fc_{n}",
                        "name": "get_weather",
                        "status": "in_progress",
                    },
                },
                {"type": "response.function_call_arguments.delta", "item_id": f"fc_{n}",
                 "delta": '{"city":'},
                {"type": "response.function_call_arguments.delta", "item_id": f"fc_{n}",
                 "delta": f'"{city}"}}'},
            )
        ],
        {
            "type": "response.output_item.done",
            "item": {"type": "function_call", "call_id": "fc_1", "name": "get_weather",
                     "arguments": '{"city":"Paris"}', "status": "completed"},
        },
        completed(
            {"input_tokens": 32, "output_tokens": 12, "total_tokens": 44,
             "input_tokens_details": {"cached_tokens": 24}},
            model="smollm2",
            id="resp_L",
            output=[
                {"type": "function_call", "call_id": "fc_1", "name": "get_weather",
                 "arguments": '{"city":"Paris"}'},
                {"type": "function_call", "call_id": "fc_2", "name": "get_weather",
                 "arguments": '{"city":"Rome"}'},
            ],
        ),
    )  # fmt: skip
    decoder, acc, _ = decode(body)
    assert decoder.terminal and decoder.model == "smollm2" and decoder.response_id == "resp_L"
    assert acc.thinking == "Thinking."
    assert acc.text == "Let me check."
    assert list(acc.tool_calls()) == [
        ToolCall("fc_1", "get_weather", '{"city":"Paris"}'),
        ToolCall("fc_2", "get_weather", '{"city":"Rome"}'),
    ]
    assert acc.usage == Usage.of(32, 12, total_tokens=44, cached_input_tokens=24, final=True)
    assert acc.finish_reason == "tool_calls"


def test_arguments_only_in_the_done_item_are_not_lost_or_doubled() -> None:
    call = {"type": "function_call", "id": "fc_A", "call_id": "call_A", "name": "f"}
    body = sse(
        {"type": "response.output_item.added", "output_index": 0,
         "item": {**call, "arguments": ""}},
        {"type": "response.output_item.done", "output_index": 0,
         "item": {**call, "arguments": '{"x":1}'}},
        completed(output=[{**call, "arguments": '{"x":1}'}]),
    )  # fmt: skip
    _, acc, _ = decode(body)
    assert list(acc.tool_calls()) == [ToolCall("call_A", "f", '{"x":1}')]


def test_deltas_found_by_output_index_and_unknown_keys_go_to_the_latest_call() -> None:
    body = sse(
        {"type": "response.output_item.added", "output_index": 3,
         "item": {"type": "function_call", "call_id": "c1", "name": "f", "arguments": ""}},
        {"type": "response.function_call_arguments.delta", "output_index": 3, "delta": "{"},
        {"type": "response.function_call_arguments.delta", "item_id": "zzz", "delta": "}"},
        completed(),
    )  # fmt: skip
    _, acc, _ = decode(body)
    assert list(acc.tool_calls()) == [ToolCall("c1", "f", "{}")]


def test_text_only_in_the_terminal_output_is_taken_from_it() -> None:
    output = [{"type": "message", "content": [{"type": "output_text", "text": "Whole."}]}]
    _, acc, _ = decode(sse(completed(output=output)))
    assert acc.text == "Whole." and acc.finish_reason == "stop"


def test_text_streamed_is_not_repeated_from_the_terminal_output() -> None:
    output = [{"type": "message", "content": [{"type": "output_text", "text": "Hi"}]}]
    body = sse({"type": "response.output_text.delta", "delta": "Hi"}, completed(output=output))
    _, acc, _ = decode(body)
    assert acc.text == "Hi"


def test_refusal_gives_its_text_and_content_filter() -> None:
    body = sse(
        {"type": "response.refusal.delta", "delta": "I can't"},
        {"type": "response.refusal.delta", "delta": " help."},
        completed(),
    )
    _, acc, _ = decode(body)
    assert acc.text == "I can't help."
    assert (acc.finish_reason, acc.raw_finish_reason) == ("content_filter", "completed")


def test_reasoning_summary_is_thinking() -> None:
    body = sse({"type": "response.reasoning_summary_text.delta", "delta": "Plan"}, completed())
    _, _, seen = decode(body)
    assert seen[0] == ThinkingDelta("Plan")


@pytest.mark.parametrize(
    ("reason", "finish"),
    [
        ("max_output_tokens", "length"),
        ("content_filter", "content_filter"),
        ("max_messages", "length"),
        ("steered", "stop"),
        ("unheard_of", "length"),
        (None, "length"),
    ],
)
def test_incomplete_reasons(reason: str | None, finish: str) -> None:
    details = {"reason": reason} if reason else None
    incomplete = {
        "type": "response.incomplete",
        "response": {"status": "incomplete", "incomplete_details": details},
    }
    decoder, acc, _ = decode(sse(incomplete))
    assert decoder.terminal, "finished but truncated is still complete"
    assert acc.finish_reason == finish
    assert acc.raw_finish_reason == (reason or "incomplete")


def test_terminal_status_missing_follows_the_event_name() -> None:
    decoder, acc, _ = decode(sse({"type": "response.completed", "response": {}}))
    assert decoder.terminal and acc.finish_reason == "stop"


def test_not_terminal_without_the_terminal_event() -> None:
    body = recorded("text.sse")
    cut = body[: body.index(b"event: response.completed")]
    decoder, acc, _ = decode(cut)
    assert not decoder.terminal
    assert acc.text == TEXT and not acc.usage.reported and acc.finish_reason is None


def test_no_usage_is_missing_not_zero() -> None:
    _, acc, seen = decode(sse(completed(None)))
    assert not any(isinstance(e, UsageReported) for e in seen)
    assert acc.usage == Usage() and not acc.usage.reported


def test_events_routed_by_json_type_even_without_event_lines() -> None:
    body = sse({"type": "response.output_text.delta", "delta": "x"}, completed(), named=False)
    decoder, acc, _ = decode(body)
    assert decoder.terminal and acc.text == "x"


def test_lifecycle_unknown_events_done_and_empty_data_are_ignored() -> None:
    decoder = ResponsesStreamDecoder("openai")
    for event, data in [
        ("response.in_progress", '{"type":"response.in_progress","response":{"id":"r"}}'),
        ("response.web_search_call.searching", '{"type":"response.web_search_call.searching"}'),
        ("response.output_text.done", '{"type":"response.output_text.done","text":"abc"}'),
        ("response.output_text.delta", '{"type":"response.output_text.delta","delta":""}'),
        ("message", "[DONE]"),
        ("ping", ""),
    ]:
        assert list(decoder.feed(event, data)) == []
    assert decoder.response_id == "r" and not decoder.terminal


@pytest.mark.parametrize("data", ["<html>", '{"type":"response.output_text', "[1, 2]", '"x"'])
def test_undecodable_data_is_a_protocol_error(data: str) -> None:
    with pytest.raises(ProtocolError):
        ResponsesStreamDecoder("openai").feed("message", data)


def test_the_common_text_delta_is_one_event() -> None:
    decoder = ResponsesStreamDecoder("openai")
    out = decoder.feed(
        "response.output_text.delta", '{"type":"response.output_text.delta","delta":"Hi"}'
    )
    assert out == (TextDelta("Hi"),)


def test_decode_body_shapes() -> None:
    provider = OpenAIResponsesProvider(api_key="test-key")
    body = {
        "id": "resp_B",
        "model": "m",
        "status": "incomplete",
        "incomplete_details": {"reason": "max_output_tokens"},
        "output": [
            {"type": "reasoning", "summary": [{"type": "summary_text", "text": "Hmm."}]},
            {"type": "message", "content": [{"type": "refusal", "refusal": "No."}]},
        ],
    }
    events = list(provider.decode_body(body).events)
    assert events == [
        ThinkingDelta("Hmm."),
        TextDelta("No."),
        Finished("length", "max_output_tokens"),
    ]
    body["status"] = "completed"
    assert provider.decode_body(body).events[-1] == Finished("content_filter", "completed")
    with pytest.raises(RateLimitError):
        provider.decode_body(
            {
                "status": "failed",
                "output": [],
                "error": {"code": "rate_limit_exceeded", "message": "slow down"},
            }
        )
    garbage: Any
    for garbage in ({"choices": []}, [], "text", {"output": None}):
        with pytest.raises(ProtocolError):
            provider.decode_body(garbage)


# -- request building ---------------------------------------------------------------------------

WEATHER = Tool("get_weather", "Weather for a city", {"type": "object", "properties": {}})
SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}}


def build(spec: CallSpec, *, stream: bool = True, **kwargs: Any) -> tuple[str, Any, Any]:
    wire = OpenAIResponsesProvider(**kwargs).build_request(spec, "gpt-4.1", stream=stream)
    return wire.url, dict(wire.headers), dict(wire.json)


def test_request_url_auth_and_fields() -> None:
    spec = CallSpec(
        ({"role": "user", "content": "Hi"},),
        max_tokens=64,
        temperature=0.2,
        schema=SCHEMA,
        schema_name="city",
        tools=(WEATHER,),
    )
    url, headers, body = build(spec, api_key=KEY, headers={"OpenAI-Project": "proj_1"})
    assert url == "https://api.openai.com/v1/responses"
    assert headers == {"Authorization": f"Bearer {KEY}", "OpenAI-Project": "proj_1"}
    assert body == {
        "model": "gpt-4.1",
        "input": [{"role": "user", "content": "Hi"}],
        "store": False,
        "stream": True,
        "max_output_tokens": 64,
        "temperature": 0.2,
        # not strict: the property is optional
        "text": {
            "format": {"type": "json_schema", "name": "city", "schema": SCHEMA, "strict": False}
        },
        "tools": [
            {
                "type": "function",
                "name": "get_weather",
                "description": "Weather for a city",
                "parameters": {"type": "object", "properties": {}},
                "strict": False,
            }
        ],
    }


def test_request_atomic_minimal_no_key_query_and_extra_body_last() -> None:
    spec = CallSpec(({"role": "user", "content": "Hi"},), extra_body={"store": True, "top_p": 1})
    url, headers, body = build(
        spec,
        stream=False,
        base_url="http://127.0.0.1:8099/v1/",
        query={"api-version": "2025-04-01-preview"},
    )
    assert url == "http://127.0.0.1:8099/v1/responses?api-version=2025-04-01-preview"
    assert headers == {}
    assert body == {
        "model": "gpt-4.1",
        "input": [{"role": "user", "content": "Hi"}],
        "store": True,
        "top_p": 1,
    }


def test_input_items_translate_a_chat_conversation() -> None:
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": "Be brief."},
        {"role": "developer", "content": "Use metric units."},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Weather here?"},
                {"type": "image_url", "image_url": {"url": "https://x/y.png"}},
                {"type": "image_url", "image_url": "data:image/png;base64,AAA"},
            ],
        },
        {
            "role": "assistant",
            "content": [{"type": "text", "text": "Checking"}, {"type": "text", "text": "."}],
            "tool_calls": [
                ToolCall("call_1", "get_weather", '{"city":"Paris"}'),
                {"id": "call_2", "type": "function",
                 "function": {"name": "get_time", "arguments": {"tz": "CET"}}},
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": '{"temp": 21}'},
        {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "12:00"}]},
        {"role": "assistant", "content": None, "tool_calls": []},
        {"role": "user", "content": None},
    ]  # fmt: skip
    assert input_items(messages) == [
        {"role": "system", "content": "Be brief."},
        {"role": "developer", "content": "Use metric units."},
        {
            "role": "user",
            "content": [
                {"type": "input_text", "text": "Weather here?"},
                {"type": "input_image", "image_url": "https://x/y.png", "detail": "auto"},
                {"type": "input_image", "image_url": "data:image/png;base64,AAA",
                 "detail": "auto"},
            ],
        },
        {
            "type": "message",
            "role": "assistant",
            "content": [{"type": "output_text", "text": "Checking.", "annotations": []}],
        },
        {"type": "function_call", "call_id": "call_1", "name": "get_weather",
         "arguments": '{"city":"Paris"}'},
        {"type": "function_call", "call_id": "call_2", "name": "get_time",
         "arguments": '{"tz": "CET"}'},
        {"type": "function_call_output", "call_id": "call_1", "output": '{"temp": 21}'},
        {"type": "function_call_output", "call_id": "call_2", "output": "12:00"},
        {"role": "user", "content": ""},
    ]  # fmt: skip


def test_key_never_in_repr() -> None:
    provider = OpenAIResponsesProvider(api_key=KEY)
    assert KEY not in repr(provider) and "api_key=<set>" in repr(provider)
    wire = provider.build_request(CallSpec(({"role": "user", "content": "x"},)), "m", stream=True)
    assert KEY not in repr(wire)


def test_label_follows_the_endpoint() -> None:
    assert OpenAIResponsesProvider(api_key="test-key").label == "openai"
    assert OpenAIResponsesProvider(base_url="http://127.0.0.1:1/v1").label == "openai-compatible"
    assert OpenAIResponsesProvider(base_url="http://h/v1", name="vllm").label == "vllm"


# -- from_sdk, checked against the request the SDK itself sends -------------------------------


@pytest.fixture(scope="module")
def server() -> Iterator[ReplayServer]:
    with ReplayServer() as srv:
        yield srv


@pytest.fixture(scope="module")
def openai() -> Any:
    import openai

    return openai


def _sdk_and_ours(
    server: ReplayServer, make_sdk: Any, provider_cls: Any, path: str, body_file: str
) -> tuple[Any, Any, Any]:
    """Send one atomic call with the SDK client and one with the provider built from it."""
    url = server.add(Reply.from_file(RECORDINGS.parent / body_file))
    sdk = make_sdk(url)
    messages = [{"role": "user", "content": "Hi"}]
    if path == "responses":
        sdk.responses.create(model="dep-1", input=messages)
    else:
        sdk.chat.completions.create(model="dep-1", messages=messages)
    provider = provider_cls.from_sdk(sdk)
    sdk.close()
    with Client(providers={"p": provider}, models=[ModelSpec("dep-1", "p")], retry=FAST) as c:
        response = c.complete(messages)
    sdk_request, our_request = server.requests(url)
    return provider, (sdk_request, our_request), response


def _same_route(sdk_request: Any, our_request: Any, *headers: str) -> None:
    assert our_request.path == sdk_request.path
    assert our_request.query_params == sdk_request.query_params
    for name in headers:
        assert our_request.headers.get(name) == sdk_request.headers.get(name), name


def test_from_sdk_openai_client(server: ReplayServer, openai: Any) -> None:
    def make(url: str) -> Any:
        return openai.OpenAI(
            base_url=url + "/v1",
            api_key=KEY,
            organization="org_1",
            project="proj_1",
            default_headers={"X-Team": "search"},
            default_query={"tenant": "t1"},
            max_retries=0,
        )

    provider, (sdk_req, our_req), response = _sdk_and_ours(
        server, make, OpenAIResponsesProvider, "responses", "openai_responses/text.json"
    )
    assert our_req.path == "/v1/responses"
    _same_route(sdk_req, our_req, "authorization", "openai-organization", "openai-project",
                "x-team")  # fmt: skip
    assert our_req.headers["authorization"] == f"Bearer {KEY}"
    assert our_req.query_params == {"tenant": ["t1"]}
    assert response.text == TEXT
    assert KEY not in repr(provider) and provider.label == "openai-compatible"
    assert not any(h.startswith("x-stainless") for h in our_req.headers)


def test_from_sdk_chat_provider_openai_client(server: ReplayServer, openai: Any) -> None:
    def make(url: str) -> Any:
        return openai.OpenAI(base_url=url + "/v1", api_key=KEY, project="proj_9", max_retries=0)

    _, (sdk_req, our_req), response = _sdk_and_ours(
        server, make, OpenAIChatProvider, "chat", "openai_chat/text.json"
    )
    assert our_req.path == "/v1/chat/completions"
    _same_route(sdk_req, our_req, "authorization", "openai-project")
    assert response.text == TEXT


def test_from_sdk_async_client(openai: Any) -> None:
    sdk = openai.AsyncOpenAI(base_url="http://127.0.0.1:9/v1", api_key=KEY, organization="o")
    provider = OpenAIResponsesProvider.from_sdk(sdk, name="mine")
    wire = provider.build_request(CallSpec(({"role": "user", "content": "x"},)), "m", stream=True)
    assert wire.url == "http://127.0.0.1:9/v1/responses"
    assert wire.headers == {"OpenAI-Organization": "o", "Authorization": f"Bearer {KEY}"}
    assert provider.label == "mine"


def test_from_sdk_azure_deployment_client(server: ReplayServer, openai: Any) -> None:
    def make(url: str) -> Any:
        return openai.AzureOpenAI(
            azure_endpoint=url,
            azure_deployment="dep-1",
            api_version="2025-04-01-preview",
            api_key=KEY,
            max_retries=0,
        )

    provider, (sdk_req, our_req), response = _sdk_and_ours(
        server, make, OpenAIResponsesProvider, "responses", "openai_responses/text.json"
    )
    assert our_req.path == "/openai/responses"  # Responses is not per deployment
    assert our_req.query_params == {"api-version": ["2025-04-01-preview"]}
    _same_route(sdk_req, our_req, "api-key", "authorization")
    assert our_req.headers["api-key"] == KEY and "authorization" not in our_req.headers
    assert provider.label == "azure-openai" and response.text == TEXT
    assert KEY not in repr(provider)


def test_from_sdk_azure_without_deployment_and_with_a_token(
    server: ReplayServer, openai: Any
) -> None:
    def make(url: str) -> Any:
        return openai.AzureOpenAI(
            azure_endpoint=url, api_version="2024-10-21", azure_ad_token="aad-TOKEN", max_retries=0
        )

    _, (sdk_req, our_req), _ = _sdk_and_ours(
        server, make, OpenAIResponsesProvider, "responses", "openai_responses/text.json"
    )
    assert our_req.path == "/openai/responses"
    _same_route(sdk_req, our_req, "api-key", "authorization")
    assert our_req.headers["authorization"] == "Bearer aad-TOKEN"
    with pytest.raises(ConfigurationError, match="azure_deployment"):
        OpenAIChatProvider.from_sdk(make("http://127.0.0.1:9"))


def test_from_sdk_chat_provider_azure_deployment(server: ReplayServer, openai: Any) -> None:
    def make(url: str) -> Any:
        return openai.AzureOpenAI(
            azure_endpoint=url,
            azure_deployment="dep-1",
            api_version="2024-10-21",
            api_key=KEY,
            max_retries=0,
        )

    _, (sdk_req, our_req), _ = _sdk_and_ours(
        server, make, OpenAIChatProvider, "chat", "openai_chat/text.json"
    )
    assert our_req.path == "/openai/deployments/dep-1/chat/completions"
    _same_route(sdk_req, our_req, "api-key", "authorization")


def test_from_sdk_refuses_per_request_credentials(openai: Any) -> None:
    refused = [
        openai.OpenAI(base_url="http://127.0.0.1:9/v1", api_key=lambda: "rotating"),
        openai.AzureOpenAI(
            azure_endpoint="http://127.0.0.1:9",
            api_version="2024-10-21",
            azure_ad_token_provider=lambda: "token",
        ),
    ]
    for sdk in refused:
        with pytest.raises(ConfigurationError, match="per request"):
            OpenAIResponsesProvider.from_sdk(sdk)
    with httpx.Client() as not_openai:
        for other in (object(), not_openai):
            with pytest.raises(ConfigurationError, match=r"openai\.OpenAI"):
                OpenAIResponsesProvider.from_sdk(other)


# -- end to end through the public Client ------------------------------------------------------


def client_for(url: str, **kwargs: Any) -> Client:
    kwargs.setdefault("retry", FAST)
    return Client(base_url=url + "/v1", protocol="openai-responses", api_key=KEY, **kwargs)


def recording(name: str, **faults: Any) -> Reply:
    return Reply.from_file(RECORDINGS / name, **faults)


def test_e2e_stream_text_usage_and_request(server: ReplayServer) -> None:
    url = server.add(recording("text.sse", split=[5]))  # bytes cut anywhere, UTF-8 included
    with client_for(url) as client:
        response = client.stream("Say hello", system="Be warm.", max_tokens=50).final()
    assert response.text == TEXT and response.state == "complete"
    assert response.usage == RECORDED["text.sse"][2]
    assert (response.finish_reason, response.raw_finish_reason) == ("stop", "completed")
    assert response.model == MODEL and response.provider == "openai-compatible"
    (request,) = server.requests(url)
    assert request.path == "/v1/responses"
    assert request.headers["authorization"] == f"Bearer {KEY}"
    sent = request.json()
    assert sent["input"] == [
        {"role": "system", "content": "Be warm."},
        {"role": "user", "content": "Say hello"},
    ]
    assert (sent["stream"], sent["store"], sent["max_output_tokens"]) == (True, False, 50)


def test_e2e_atomic_text(server: ReplayServer) -> None:
    url = server.add(recording("text.json"))
    with client_for(url) as client:
        response = client.complete("Say hello")
    assert response.text == TEXT and response.state == "complete"
    assert response.usage == RECORDED["text.sse"][2]
    assert response.finish_reason == "stop" and response.model == MODEL
    assert "stream" not in server.requests(url)[0].json()


@pytest.mark.parametrize("name", ["tool_call.sse", "tool_call.json"])
def test_e2e_tool_call(server: ReplayServer, name: str) -> None:
    url = server.add(recording(name, split=[7]) if name.endswith(".sse") else recording(name))
    with client_for(url) as client:
        if name.endswith(".sse"):
            stream = client.stream("Weather in Paris?", tools=[WEATHER])
            deltas = [e for e in stream if isinstance(e, ToolCallDelta)]
            assert len(deltas) > 2, "the arguments arrive in pieces"
            response = stream.final()
        else:
            response = client.complete("Weather in Paris?", tools=[WEATHER])
    (call,) = response.tool_calls
    assert (call.id, call.name) == ("call_Vt3kP9xQm2LwR7nB5yZc8HdJ", "get_weather")
    assert call.parsed_arguments() == {"city": "Paris", "unit": "celsius"}
    assert response.finish_reason == "tool_calls" and response.usage.input_tokens == 58
    assert server.requests(url)[0].json()["tools"][0]["name"] == "get_weather"


@pytest.mark.parametrize(
    ("name", "finish", "raw"),
    [
        ("incomplete.sse", "length", "max_output_tokens"),
        ("content_filter.sse", "content_filter", "content_filter"),
    ],
)
def test_e2e_incomplete_is_complete_with_its_reason(
    server: ReplayServer, name: str, finish: str, raw: str
) -> None:
    url = server.add(recording(name))
    with client_for(url) as client:
        response = client.stream("x").final()
    assert response.state == "complete"
    assert (response.finish_reason, response.raw_finish_reason) == (finish, raw)
    assert response.usage.reported


def test_e2e_clean_end_before_the_terminal_event_is_partial(server: ReplayServer) -> None:
    reply = recording("text.sse")
    cut = reply.body.index(b"event: response.completed")
    url = server.add(reply.replace(cut_after=cut, cut="clean"))
    with client_for(url) as client:
        response = client.stream("x").final()
    assert response.state == "partial"
    assert response.text == TEXT
    assert response.finish_reason is None and not response.usage.reported


@pytest.mark.parametrize("name", ["error_event.sse", "failed.sse"])
def test_e2e_error_mid_stream_carries_the_partial_text(server: ReplayServer, name: str) -> None:
    url = server.add(recording(name))
    with client_for(url) as client, pytest.raises(ServerError) as info:
        client.stream("x").final()
    err = info.value
    assert err.in_stream and err.retryable and err.status_code == 500
    assert err.partial is not None and err.partial.text == "The answer is"
    assert err.partial.state == "interrupted"


def test_e2e_error_event_is_retried_with_a_reset(server: ReplayServer) -> None:
    url = server.add(Scenario(recording("error_event.sse"), recording("text.sse")))
    retry = RetryPolicy(max_attempts=2, initial_delay=0.0, max_delay=0.0)
    with client_for(url, retry=retry) as client:
        stream = client.stream("x")
        events = list(stream)
        response = stream.final()
    resets = [e for e in events if isinstance(e, Reset)]
    assert len(resets) == 1 and resets[0].discarded_text == "The answer is"
    assert response.text == TEXT and len(response.attempts) == 2
