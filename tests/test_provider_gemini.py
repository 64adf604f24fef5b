"""The Gemini codec (tally_client.providers.gemini): recordings, requests, and the public client.

Streams are decoded the way the drivers decode them (httpx-sse over the recorded bytes); the
end-to-end tests run `tally_client.Client` against the byte-exact ReplayServer on both
`/v1` and `/v1beta`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
from httpx_sse import EventSource

from tally_client import (
    APIStatusError,
    Client,
    ConfigurationError,
    MissingAPIKeyError,
    OverloadedError,
    ProtocolError,
    RateLimitError,
    RetryPolicy,
    Tool,
)
from tally_client._events import (
    Finished,
    StreamEvent,
    TextDelta,
    ThinkingDelta,
    ToolCallDelta,
    UsageReported,
)
from tally_client._request import CallSpec
from tally_client._response import ToolCall, Usage
from tally_client._supervisor import Accumulator
from tally_client.providers.gemini import (
    THOUGHT_SIGNATURE_PLACEHOLDER,
    GeminiProvider,
    GeminiStreamDecoder,
    usage_from,
)
from tally_client.testing import ReplayServer, Reply, Scenario

REC = Path(__file__).parent / "recordings" / "gemini"
TEXT = "Hello! Café au lait — a classic ☕."
MODEL = "gemini-2.5-flash"
VERSIONS = ("v1", "v1beta")
NO_RETRY = RetryPolicy(max_attempts=1)


def provider(**kwargs: Any) -> GeminiProvider:
    kwargs.setdefault("base_url", "http://127.0.0.1:9")
    kwargs.setdefault("api_key", "sekret-key")
    return GeminiProvider(**kwargs)


def sse_events(body: bytes) -> Iterator[tuple[str, str]]:
    """(event name, data) pairs as the drivers see them: httpx-sse over the bytes."""
    response = httpx.Response(200, content=body, headers={"content-type": "text/event-stream"})
    for sse in EventSource(response).iter_sse():
        yield sse.event, sse.data


def decode(body: bytes) -> tuple[list[StreamEvent], GeminiStreamDecoder]:
    decoder = provider().new_decoder()
    events: list[StreamEvent] = []
    for name, data in sse_events(body):
        events.extend(decoder.feed(name, data))
    return events, decoder


def fold(events: Sequence[StreamEvent]) -> Accumulator:
    acc = Accumulator(0.0)
    for ev in events:
        acc.add(ev, 1.0)
    return acc


def thinking(events: Sequence[StreamEvent]) -> str:
    return "".join(e.text for e in events if isinstance(e, ThinkingDelta))


def chunk(parts: list[dict[str, Any]] | None = None, finish: str | None = None, **top: Any) -> str:
    candidate: dict[str, Any] = {"content": {"role": "model"}, "index": 0}
    if parts is not None:
        candidate["content"]["parts"] = parts
    if finish is not None:
        candidate["finishReason"] = finish
    return json.dumps({"candidates": [candidate], **top})


# -- streams from the recordings ---------------------------------------------------------------


def test_text_stream() -> None:
    events, decoder = decode((REC / "text.sse").read_bytes())
    acc = fold(events)
    assert acc.text == TEXT
    assert decoder.terminal
    assert (decoder.model, decoder.response_id) == (MODEL, "Xk1VaN2rLJqP1MkP8cSy4Ao")
    assert acc.usage == Usage(9, 11, 20, final=True)
    assert (acc.finish_reason, acc.raw_finish_reason) == ("stop", "STOP")
    # usageMetadata is a running total: each new total is reported; the first chunk has no
    # candidatesTokenCount yet, and that count stays missing rather than zero.
    usages = [e.usage for e in events if isinstance(e, UsageReported)]
    assert [u.output_tokens for u in usages] == [None, 8, 11]
    assert usages[0].input_tokens == 9


def test_common_chunk_is_one_text_delta() -> None:
    decoder = provider().new_decoder()
    usage = {"promptTokenCount": 3, "totalTokenCount": 3}
    first = decoder.feed("message", chunk([{"text": "a"}], usageMetadata=usage))
    assert first == (TextDelta("a"), UsageReported(Usage(3, None, 3)))
    # Same running total again: no new usage event, the text alone.
    assert decoder.feed("message", chunk([{"text": "b"}], usageMetadata=usage)) == (TextDelta("b"),)
    assert decoder.feed("message", chunk([{"text": "c"}])) == (TextDelta("c"),)


def test_thinking_stream_counts_thoughts_as_output() -> None:
    events, decoder = decode((REC / "thinking.sse").read_bytes())
    acc = fold(events)
    assert thinking(events).startswith("**Computing the product**")
    assert acc.text == "17 × 23 = 391."
    assert decoder.terminal
    # candidatesTokenCount (9) excludes the 58 thinking tokens; output counts both.
    assert acc.usage == Usage(11, 67, 78, None, 58, final=True)


def test_tool_call_stream() -> None:
    events, decoder = decode((REC / "tool_call.sse").read_bytes())
    acc = fold(events)
    assert decoder.terminal
    (call,) = acc.tool_calls()
    assert call.name == "get_weather"
    assert call.id == "call_0"  # the Developer API gave no id
    assert call.parsed_arguments() == {"city": "Paris", "unit": "celsius"}
    # Gemini ends tool calls with STOP; normalized to tool_calls, raw kept.
    assert (acc.finish_reason, acc.raw_finish_reason) == ("tool_calls", "STOP")
    assert acc.usage == Usage(52, 18, 70, final=True)


def test_length_stream() -> None:
    events, decoder = decode((REC / "length.sse").read_bytes())
    acc = fold(events)
    assert decoder.terminal
    assert acc.text == "The history of the Roman Empire spans more"
    assert (acc.finish_reason, acc.raw_finish_reason) == ("length", "MAX_TOKENS")
    assert acc.usage == Usage(10, 8, 18, final=True)


def test_safety_stream_keeps_text_and_filters() -> None:
    events, decoder = decode((REC / "safety.sse").read_bytes())
    acc = fold(events)
    assert decoder.terminal
    assert acc.text == "Sure, here is the"
    assert (acc.finish_reason, acc.raw_finish_reason) == ("content_filter", "SAFETY")
    assert acc.usage == Usage(15, 5, 20, final=True)


def test_blocked_prompt_is_terminal_content_filter() -> None:
    events, decoder = decode((REC / "blocked_prompt.sse").read_bytes())
    acc = fold(events)
    assert decoder.terminal
    assert acc.text == ""
    assert (acc.finish_reason, acc.raw_finish_reason) == ("content_filter", "SAFETY")
    assert acc.usage == Usage(12, None, 12, final=True)
    assert decoder.model == MODEL


def test_error_event_raises_retryable_overload() -> None:
    decoder = provider().new_decoder()
    seen: list[StreamEvent] = []
    with pytest.raises(OverloadedError) as info:
        for name, data in sse_events((REC / "error_event.sse").read_bytes()):
            seen.extend(decoder.feed(name, data))
    err = info.value
    assert fold(seen).text == "The answer is"
    assert err.status_code == 503
    assert err.error_type == "UNAVAILABLE"
    assert err.in_stream and err.retryable
    assert "overloaded" in str(err)
    assert not decoder.terminal


@pytest.mark.parametrize(
    ("body", "status", "retryable"),
    [
        ({"error": {"code": 500, "message": "x", "status": "INTERNAL"}}, 500, True),
        ({"error": {"code": 429, "message": "x", "status": "RESOURCE_EXHAUSTED"}}, 429, True),
        ({"error": {"code": 400, "message": "x", "status": "INVALID_ARGUMENT"}}, 400, False),
        ({"error": {"message": "x", "status": "DEADLINE_EXCEEDED"}}, 504, True),
    ],
)
def test_error_events_by_code(body: dict[str, Any], status: int, retryable: bool) -> None:
    with pytest.raises(APIStatusError) as info:
        provider().new_decoder().feed("message", json.dumps(body))
    assert (info.value.status_code, info.value.retryable) == (status, retryable)


def test_clean_end_before_finish_is_not_terminal() -> None:
    reply = Reply.from_file(REC / "text.sse")
    events, decoder = decode(reply.body[: reply.offset_after_event(2)])
    assert fold(events).text == "Hello! Café au lait — a classic"
    assert not decoder.terminal


def test_bare_json_error_lines_are_not_seen() -> None:
    """google-genai brace-counts bare JSON lines; httpx-sse drops them as unknown fields.

    The stream then ends without its finish chunk: partial, never complete (see the module
    docstring; the end-to-end form is test_e2e_bare_json_error_is_partial).
    """
    body = (REC / "error_event.sse").read_bytes().split(b"\r\n\r\n")[0] + b"\r\n\r\n"
    body += b'{\n  "error": {\n    "code": 503,\n    "status": "UNAVAILABLE"\n  }\n}\n'
    events, decoder = decode(body)
    assert fold(events).text == "The answer is"
    assert not decoder.terminal


def test_undecodable_data_is_a_protocol_error() -> None:
    decoder = provider().new_decoder()
    with pytest.raises(ProtocolError, match="not JSON"):
        decoder.feed("message", '{"candidates": [')
    with pytest.raises(ProtocolError, match="not a JSON object"):
        decoder.feed("message", "[1, 2]")
    with pytest.raises(ProtocolError, match="expected each part to be an object"):
        decoder.feed("message", '{"candidates": [{"content": {"parts": ["text"]}}]}')
    with pytest.raises(ProtocolError, match="expected candidates to be an array"):
        provider().decode_body({"candidates": "oops"})


def test_parallel_calls_with_ids_and_no_args() -> None:
    decoder = provider().new_decoder()
    events = list(
        decoder.feed(
            "message",
            chunk(
                [
                    {"text": "Checking.", "thoughtSignature": "c2ln"},
                    {"functionCall": {"id": "fc-1", "name": "a", "args": {"q": "é"}}},
                ]
            ),
        )
    )
    events += decoder.feed(
        "message", chunk([{"functionCall": {"name": "now"}, "thoughtSignature": "c2ln"}], "STOP")
    )
    assert events[:3] == [
        TextDelta("Checking."),
        ToolCallDelta(0, "fc-1", "a", '{"q": "é"}'),
        ToolCallDelta(1, None, "now", "{}"),
    ]
    acc = fold(events)
    assert [(c.id, c.name, c.parsed_arguments()) for c in acc.tool_calls()] == [
        ("fc-1", "a", {"q": "é"}),
        ("call_1", "now", {}),
    ]
    assert acc.finish_reason == "tool_calls"


def test_partsless_finish_chunk_and_signature_only_part() -> None:
    decoder = provider().new_decoder()
    assert decoder.feed("message", chunk([{"text": "", "thoughtSignature": "c2ln"}])) == []
    assert not decoder.terminal
    assert decoder.feed("message", chunk(None, "STOP")) == [Finished("stop", "STOP")]
    assert decoder.terminal


def test_only_candidate_zero_is_read() -> None:
    decoder = provider().new_decoder()
    data = {
        "candidates": [
            {"content": {"parts": [{"text": "second"}]}, "index": 1},
            {"content": {"parts": [{"text": "first"}]}, "index": 0, "finishReason": "STOP"},
        ]
    }
    events = decoder.feed("message", json.dumps(data))
    assert fold(events).text == "first"
    assert decoder.terminal


@pytest.mark.parametrize(
    ("raw", "normalized"),
    [
        ("STOP", "stop"),
        ("MAX_TOKENS", "length"),
        ("CONTINUATION", "length"),
        ("SAFETY", "content_filter"),
        ("RECITATION", "content_filter"),
        ("BLOCKLIST", "content_filter"),
        ("PROHIBITED_CONTENT", "content_filter"),
        ("SPII", "content_filter"),
        ("IMAGE_SAFETY", "content_filter"),
        ("MALFORMED_FUNCTION_CALL", "error"),
        ("UNEXPECTED_TOOL_CALL", "error"),
        ("TOO_MANY_TOOL_CALLS", "error"),
        ("OTHER", "error"),
        ("SOMETHING_NEW", "error"),
    ],
)
def test_finish_reasons(raw: str, normalized: str) -> None:
    decoder = provider().new_decoder()
    events = decoder.feed("message", chunk([{"text": "x"}], raw))
    assert events[-1] == Finished(normalized, raw)  # type: ignore[arg-type]
    assert decoder.terminal


def test_usage_fields() -> None:
    meta = {
        "promptTokenCount": 100,
        "toolUsePromptTokenCount": 20,
        "cachedContentTokenCount": 64,
        "candidatesTokenCount": 7,
        "thoughtsTokenCount": 30,
        "totalTokenCount": 157,
    }
    assert usage_from(meta) == Usage(120, 37, 157, 64, 30)
    assert usage_from({"promptTokenCount": 5}) == Usage(5, None, None)
    assert not usage_from({}).reported


# -- atomic bodies -----------------------------------------------------------------------------


def test_decode_text_body() -> None:
    result = provider().decode_body(json.loads((REC / "text.json").read_bytes()))
    acc = fold(result.events)
    assert acc.text == TEXT
    assert acc.usage == Usage(9, 11, 20, final=True)
    assert (acc.finish_reason, acc.raw_finish_reason) == ("stop", "STOP")
    assert (result.model, result.response_id) == (MODEL, "Xk1VaN2rLJqP1MkP8cSy4Ao")


def test_decode_tool_call_body() -> None:
    result = provider().decode_body(json.loads((REC / "tool_call.json").read_bytes()))
    acc = fold(result.events)
    (call,) = acc.tool_calls()
    assert (call.name, call.parsed_arguments()) == (
        "get_weather",
        {"city": "Paris", "unit": "celsius"},
    )
    assert acc.finish_reason == "tool_calls"


@pytest.mark.parametrize("body", [[], "text", {"choices": []}, None])
def test_decode_bad_body(body: Any) -> None:
    with pytest.raises(ProtocolError):
        provider().decode_body(body)


def test_http_error_body_retry_delay() -> None:
    body = {
        "error": {
            "code": 429,
            "message": "You exceeded your current quota. Please retry in 19.42s.",
            "status": "RESOURCE_EXHAUSTED",
            "details": [
                {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": []},
                {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "19s"},
            ],
        }
    }
    err = provider().error_from_response(429, json.dumps(body).encode(), {})
    assert isinstance(err, RateLimitError)
    assert (err.retry_after, err.error_type, err.retryable) == (19.0, "RESOURCE_EXHAUSTED", True)
    assert "sekret" not in str(err)


# -- requests ----------------------------------------------------------------------------------


def spec(**kwargs: Any) -> CallSpec:
    kwargs.setdefault("messages", ({"role": "user", "content": "Hi"},))
    return CallSpec(**kwargs)


@pytest.mark.parametrize("version", VERSIONS)
def test_urls_and_auth_header(version: str) -> None:
    p = provider(base_url="https://proxy.example/gem/", api_version=version)
    streamed = p.build_request(spec(), MODEL, stream=True)
    atomic = p.build_request(spec(), "models/" + MODEL, stream=False)
    base = f"https://proxy.example/gem/{version}/models/{MODEL}"
    assert streamed.url == base + ":streamGenerateContent?alt=sse"
    assert atomic.url == base + ":generateContent"
    assert streamed.headers == {"x-goog-api-key": "sekret-key"}
    tuned = p.build_request(spec(), "tunedModels/my-model", stream=False)
    assert tuned.url == f"https://proxy.example/gem/{version}/tunedModels/my-model:generateContent"


def test_default_version_and_version_in_base_url() -> None:
    assert provider().api_version == "v1beta"
    p = provider(base_url="http://127.0.0.1:9/s/3/v1/")
    assert (p.base_url, p.api_version) == ("http://127.0.0.1:9/s/3", "v1")
    assert provider(base_url="http://127.0.0.1:9/v1beta", api_version="v1beta").api_version == (
        "v1beta"
    )
    with pytest.raises(ConfigurationError, match="api_version"):
        provider(base_url="http://127.0.0.1:9/v1", api_version="v1beta")
    with pytest.raises(ConfigurationError, match="api_version"):
        provider(api_version="latest")


def test_official_host_needs_a_key_and_repr_hides_it() -> None:
    with pytest.raises(MissingAPIKeyError, match="GEMINI_API_KEY or GOOGLE_API_KEY"):
        GeminiProvider()
    p = GeminiProvider(api_key="sekret-key")
    assert p.base_url == "https://generativelanguage.googleapis.com"
    assert "sekret" not in repr(p)
    assert "api_key=<set>" in repr(p)
    assert "sekret" not in repr(p.build_request(spec(), MODEL, stream=True))
    # A local stand-in needs no key, and then no key header is sent.
    local = GeminiProvider(base_url="http://127.0.0.1:9")
    assert local.build_request(spec(), MODEL, stream=True).headers == {}


def test_body_generation_config_tools_schema() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]}
    params = {"type": "object", "properties": {"city": {"type": "string"}}}
    body = (
        provider()
        .build_request(
            spec(
                max_tokens=64,
                temperature=0.2,
                schema=schema,
                tools=(Tool("get_weather", "Weather now", params), Tool("noop")),
                extra_body={"generationConfig": {"thinkingConfig": {"thinkingBudget": 0}}, "x": 1},
            ),
            MODEL,
            stream=True,
        )
        .json
    )
    assert body["contents"] == [{"role": "user", "parts": [{"text": "Hi"}]}]
    assert "systemInstruction" not in body
    assert body["generationConfig"] == {
        "maxOutputTokens": 64,
        "temperature": 0.2,
        "responseMimeType": "application/json",
        "responseJsonSchema": schema,
        "thinkingConfig": {"thinkingBudget": 0},
    }
    assert body["tools"] == [
        {
            "functionDeclarations": [
                {
                    "name": "get_weather",
                    "description": "Weather now",
                    "parametersJsonSchema": params,
                },
                {"name": "noop", "parametersJsonSchema": {"type": "object", "properties": {}}},
            ]
        }
    ]
    assert body["x"] == 1
    assert "generationConfig" not in provider().build_request(spec(), MODEL, stream=True).json


def test_conversation_with_tool_round_trip() -> None:
    messages = (
        {"role": "system", "content": "Be brief."},
        {"role": "developer", "content": [{"type": "text", "text": "Use tools."}]},
        {"role": "user", "content": "Weather in Paris and the time?"},
        {
            "role": "assistant",
            "content": "Let me check.",
            "tool_calls": [
                ToolCall("call_0", "get_weather", '{"city": "Paris"}'),
                {
                    "id": "fc-7",
                    "type": "function",
                    "function": {"name": "now", "arguments": ""},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "call_0", "content": '{"temp": 21}'},
        {"role": "tool", "tool_call_id": "fc-7", "content": "12:00"},
        {"role": "user", "content": "Thanks"},
    )
    body = provider().build_request(spec(messages=messages), MODEL, stream=False).json
    assert body["systemInstruction"] == {"parts": [{"text": "Be brief."}, {"text": "Use tools."}]}
    assert body["contents"] == [
        {"role": "user", "parts": [{"text": "Weather in Paris and the time?"}]},
        {
            "role": "model",
            "parts": [
                {"text": "Let me check."},
                {
                    # call_0 is the accumulator's stand-in for a missing id: not echoed.
                    "functionCall": {"name": "get_weather", "args": {"city": "Paris"}},
                    "thoughtSignature": THOUGHT_SIGNATURE_PLACEHOLDER,
                },
                {"functionCall": {"name": "now", "args": {}, "id": "fc-7"}},
            ],
        },
        {
            "role": "user",
            "parts": [
                {"functionResponse": {"name": "get_weather", "response": {"temp": 21}}},
                {
                    "functionResponse": {
                        "name": "now",
                        "response": {"result": "12:00"},
                        "id": "fc-7",
                    }
                },
            ],
        },
        {"role": "user", "parts": [{"text": "Thanks"}]},
    ]


def test_thought_signature_from_openai_dict_is_replayed() -> None:
    call = {
        "id": "fc-1",
        "type": "function",
        "function": {"name": "f", "arguments": "{}"},
        "extra_content": {"google": {"thought_signature": "real-sig"}},
    }
    body = (
        provider()
        .build_request(
            spec(
                messages=(
                    {"role": "user", "content": "x"},
                    {"role": "assistant", "tool_calls": [call]},
                )
            ),
            MODEL,
            stream=False,
        )
        .json
    )
    assert body["contents"][1]["parts"] == [
        {"functionCall": {"name": "f", "args": {}, "id": "fc-1"}, "thoughtSignature": "real-sig"}
    ]


def test_tool_result_without_a_call_uses_its_name_or_fails() -> None:
    named = {"role": "tool", "tool_call_id": "x", "name": "lookup", "content": "[1, 2]"}
    body = provider().build_request(spec(messages=(named,)), MODEL, stream=False).json
    assert body["contents"][0]["parts"][0]["functionResponse"] == {
        "name": "lookup",
        "response": {"result": "[1, 2]"},
        "id": "x",
    }
    with pytest.raises(ConfigurationError, match="tool_call_id='x'"):
        provider().build_request(
            spec(messages=({"role": "tool", "tool_call_id": "x", "content": "1"},)),
            MODEL,
            stream=False,
        )


def test_bad_tool_arguments_and_parts_fail_clearly() -> None:
    bad_args = {"role": "assistant", "tool_calls": [ToolCall("c", "f", "not json")]}
    with pytest.raises(ConfigurationError, match="not a JSON object"):
        provider().build_request(spec(messages=(bad_args,)), MODEL, stream=False)
    audio = {"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}
    with pytest.raises(ConfigurationError, match="input_audio"):
        provider().build_request(spec(messages=(audio,)), MODEL, stream=False)


def test_image_data_url_becomes_inline_data() -> None:
    content = [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
    ]
    body = (
        provider()
        .build_request(spec(messages=({"role": "user", "content": content},)), MODEL, stream=False)
        .json
    )
    assert body["contents"][0]["parts"] == [
        {"text": "What is this?"},
        {"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}},
    ]


# -- from_sdk ----------------------------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
def test_from_sdk_reads_a_configured_client(version: str) -> None:
    from google import genai
    from google.genai import types

    client = genai.Client(
        api_key="sekret-key",
        http_options=types.HttpOptions(
            base_url="http://127.0.0.1:9/s/1/", api_version=version, headers={"X-Team": "a"}
        ),
    )
    p = GeminiProvider.from_sdk(client, name="gem")
    assert (p.base_url, p.api_version, p.label) == ("http://127.0.0.1:9/s/1", version, "gem")
    request = p.build_request(spec(), MODEL, stream=True)
    assert (
        request.url
        == f"http://127.0.0.1:9/s/1/{version}/models/{MODEL}:streamGenerateContent?alt=sse"
    )
    assert request.headers == {"X-Team": "a", "x-goog-api-key": "sekret-key"}
    # The async twin carries the same configuration.
    assert GeminiProvider.from_sdk(client.aio).api_version == version


def test_from_sdk_defaults_and_refusals() -> None:
    from google import genai

    p = GeminiProvider.from_sdk(genai.Client(api_key="k"))
    # google-genai 3.x defaults to /v1 on the official host.
    assert (p.base_url, p.api_version) == ("https://generativelanguage.googleapis.com", "v1")
    vertex = genai.Client(vertexai=True, project="p", location="us-central1", api_key=None)
    with pytest.raises(ConfigurationError, match="Vertex"):
        GeminiProvider.from_sdk(vertex)
    with pytest.raises(ConfigurationError, match=r"google\.genai\.Client"):
        GeminiProvider.from_sdk(object())


# -- end to end: the public Client against the replay server ---------------------------------


@pytest.fixture(scope="module")
def server() -> Iterator[ReplayServer]:
    with ReplayServer() as srv:
        yield srv


def gemini_client(url: str, version: str, **kwargs: Any) -> Client:
    kwargs.setdefault("retry", NO_RETRY)
    return Client(
        base_url=f"{url}/{version}", api_key="sekret-key", protocol="gemini", model=MODEL, **kwargs
    )


@pytest.mark.parametrize("version", VERSIONS)
def test_e2e_stream_text(server: ReplayServer, version: str) -> None:
    url = server.add(Reply.from_file(REC / "text.sse", split=[7]))  # cuts CRLF and UTF-8
    with gemini_client(url, version) as client:
        stream = client.stream("Hi")
        texts = list(stream.text())
        response = stream.final()
    assert "".join(texts) == TEXT == response.text
    assert response.state == "complete"
    assert response.usage == Usage(9, 11, 20, final=True)
    assert (response.finish_reason, response.raw_finish_reason) == ("stop", "STOP")
    assert (response.model, response.provider) == (MODEL, "gemini")
    assert response.response_id == "Xk1VaN2rLJqP1MkP8cSy4Ao"
    (request,) = server.requests(url)
    assert request.path == f"/{version}/models/{MODEL}:streamGenerateContent"
    assert request.query == "alt=sse"
    assert request.headers["x-goog-api-key"] == "sekret-key"
    assert "authorization" not in request.headers
    assert request.json()["contents"] == [{"role": "user", "parts": [{"text": "Hi"}]}]


@pytest.mark.parametrize("version", VERSIONS)
def test_e2e_complete_text(server: ReplayServer, version: str) -> None:
    url = server.add(Reply.from_file(REC / "text.json"))
    with gemini_client(url, version) as client:
        response = client.complete("Hi", max_tokens=50)
    assert response.text == TEXT
    assert response.state == "complete"
    assert response.usage == Usage(9, 11, 20, final=True)
    assert response.finish_reason == "stop"
    (request,) = server.requests(url)
    assert request.path == f"/{version}/models/{MODEL}:generateContent"
    assert request.json()["generationConfig"] == {"maxOutputTokens": 50}


@pytest.mark.parametrize(("name", "stream"), [("tool_call.sse", True), ("tool_call.json", False)])
def test_e2e_tool_call(server: ReplayServer, name: str, stream: bool) -> None:
    url = server.add(Reply.from_file(REC / name))
    tool = Tool("get_weather", "Weather", {"type": "object", "properties": {}})
    with gemini_client(url, "v1beta") as client:
        if stream:
            response = client.stream("Weather in Paris?", tools=[tool]).final()
        else:
            response = client.complete("Weather in Paris?", tools=[tool])
    assert response.state == "complete"
    (tc,) = response.tool_calls
    assert (tc.id, tc.name, tc.parsed_arguments()) == (
        "call_0",
        "get_weather",
        {"city": "Paris", "unit": "celsius"},
    )
    assert (response.finish_reason, response.raw_finish_reason) == ("tool_calls", "STOP")
    sent = server.requests(url)[0].json()
    assert sent["tools"][0]["functionDeclarations"][0]["name"] == "get_weather"


@pytest.mark.parametrize("version", VERSIONS)
def test_e2e_clean_end_before_finish_is_partial(server: ReplayServer, version: str) -> None:
    reply = Reply.from_file(REC / "text.sse")
    url = server.add(reply.replace(cut_after=reply.offset_after_event(2), cut="clean"))
    with gemini_client(url, version) as client:
        response = client.stream("Hi").final()
    assert response.state == "partial"
    assert response.text == "Hello! Café au lait — a classic"
    assert response.finish_reason is None
    # The running total so far, as Gemini reported it.
    assert response.usage == Usage(9, 8, 17)


def test_e2e_bare_json_error_is_partial(server: ReplayServer) -> None:
    first = (REC / "error_event.sse").read_bytes().split(b"\r\n\r\n")[0] + b"\r\n\r\n"
    bare = b'{\n  "error": {\n    "code": 503,\n    "status": "UNAVAILABLE"\n  }\n}\n'
    url = server.add(Reply(body=first + bare, content_type="text/event-stream"))
    with gemini_client(url, "v1") as client:
        response = client.stream("Hi").final()
    assert response.state == "partial"
    assert response.text == "The answer is"


@pytest.mark.parametrize("version", VERSIONS)
def test_e2e_error_event_raises_with_partial(server: ReplayServer, version: str) -> None:
    url = server.add(Reply.from_file(REC / "error_event.sse"))
    with gemini_client(url, version) as client, pytest.raises(OverloadedError) as info:
        client.stream("Hi").final()
    err = info.value
    assert isinstance(err, APIStatusError)
    assert err.status_code == 503 and err.in_stream and err.retryable
    assert err.partial is not None
    assert err.partial.text == "The answer is"
    assert err.partial.state == "interrupted"


def test_e2e_error_event_is_retried(server: ReplayServer) -> None:
    url = server.add(
        Scenario(Reply.from_file(REC / "error_event.sse"), Reply.from_file(REC / "text.sse"))
    )
    retry = RetryPolicy(max_attempts=2, initial_delay=0.0)
    with gemini_client(url, "v1beta", retry=retry) as client:
        response = client.stream("Hi").final()
    assert response.text == TEXT
    assert len(response.attempts) == 2
    assert len(server.requests(url)) == 2


@pytest.mark.parametrize(
    ("name", "reason", "raw", "text"),
    [
        ("length.sse", "length", "MAX_TOKENS", "The history of the Roman Empire spans more"),
        ("safety.sse", "content_filter", "SAFETY", "Sure, here is the"),
        ("blocked_prompt.sse", "content_filter", "SAFETY", ""),
    ],
)
def test_e2e_finish_reasons(
    server: ReplayServer, name: str, reason: str, raw: str, text: str
) -> None:
    url = server.add(Reply.from_file(REC / name))
    with gemini_client(url, "v1") as client:
        response = client.stream("Hi").final()
    assert response.state == "complete"
    assert (response.finish_reason, response.raw_finish_reason, response.text) == (
        reason,
        raw,
        text,
    )


def test_e2e_http_429_carries_retry_delay(server: ReplayServer) -> None:
    body = {
        "error": {
            "code": 429,
            "message": "Resource has been exhausted.",
            "status": "RESOURCE_EXHAUSTED",
            "details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "3s"}],
        }
    }
    url = server.add(Reply.error(429, body))
    with gemini_client(url, "v1beta") as client, pytest.raises(RateLimitError) as info:
        client.stream("Hi").final()
    assert info.value.retry_after == 3.0
    assert info.value.error_type == "RESOURCE_EXHAUSTED"
    assert "sekret" not in str(info.value)


def test_e2e_structured_output(server: ReplayServer) -> None:
    payload = {
        "candidates": [
            {
                "content": {"parts": [{"text": '{"city": "Paris"}'}], "role": "model"},
                "finishReason": "STOP",
            }
        ],
        "usageMetadata": {"promptTokenCount": 5, "candidatesTokenCount": 6, "totalTokenCount": 11},
    }
    url = server.add(Reply.json(payload))
    schema = {"type": "object", "properties": {"city": {"type": "string"}}}
    with gemini_client(url, "v1beta") as client:
        response = client.complete("City?", schema=schema)
    assert response.parsed == {"city": "Paris"}
    config = server.requests(url)[0].json()["generationConfig"]
    assert config == {"responseMimeType": "application/json", "responseJsonSchema": schema}
