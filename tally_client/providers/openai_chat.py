"""OpenAI Chat Completions, for api.openai.com and any OpenAI-compatible server.

Wire facts (wire-formats.md §1, §5.1; OpenAI API reference, "Chat Completions"):
- `POST {base_url}/chat/completions`; a stream is `data: <chunk>` events ended by `data: [DONE]`.
- Usage streams only in a last `"choices": []` chunk, and only with
  `stream_options.include_usage` (always sent here); absent and `null` usage mean the same.
- The stream is complete only when `[DONE]` arrives after the choice's `finish_reason`.
- An error after the 200 comes as `data: {"error": {...}}` (llama-server: no `[DONE]` after it).
- llama-server and DeepSeek-style servers stream reasoning as `delta.reasoning_content`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Self

from .._errors import ProtocolError
from .._events import Finished, StreamEvent, TextDelta, ThinkingDelta, ToolCallDelta, UsageReported
from .._output import strict_schema
from .._request import CallSpec, Message, WireRequest
from .._response import FinishReason, ToolCall, Usage
from ._base import (
    NO_EVENTS,
    AtomicResult,
    Provider,
    Shape,
    atomic,
    counts,
    in_stream_error,
    loads_event,
)

__all__ = ["OpenAIChatProvider"]

FINISH_REASONS: dict[str, FinishReason] = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",
    "content_filter": "content_filter",
}


SAMPLING = frozenset({"stop", "seed", "top_p", "presence_penalty", "frequency_penalty"})
"""Sampling options api.openai.com's Chat Completions takes (same names on the wire)."""
COMPATIBLE_SAMPLING = SAMPLING | {"top_k"}
"""Compatible servers (llama.cpp's llama-server, vLLM, Ollama) also take `top_k`."""


def finish(raw: str) -> Finished:
    """A Finished event for a Chat Completions finish_reason (unknown ones map to "stop")."""
    return Finished(FINISH_REASONS.get(raw, "stop"), raw)


def usage_from(u: Any, *, final: bool = False, provider: str | None = None) -> Usage:
    """Usage from a Chat Completions `usage` object (details optional).

    Raises:
        ProtocolError: not an object, or a count that is not an integer.
    """
    prompt, completion, total = counts(
        u, ("prompt_tokens", "completion_tokens", "total_tokens"), provider
    )
    (cached,) = counts(u.get("prompt_tokens_details") or {}, ("cached_tokens",), provider)
    (reasoning,) = counts(u.get("completion_tokens_details") or {}, ("reasoning_tokens",), provider)
    return Usage.of(
        prompt,
        completion,
        total_tokens=total,
        cached_input_tokens=cached,
        reasoning_tokens=reasoning,
        final=final,
    )


def tool_call_events(calls: Any, shape: Shape, data: Any, *, streamed: bool) -> list[StreamEvent]:
    """ToolCallDeltas for a `tool_calls` array (a message's whole calls, or a delta's pieces).

    Raises:
        ProtocolError: a call, its `function` or a field of the wrong type.
    """
    events: list[StreamEvent] = []
    for i, call in enumerate(shape.arr(calls, "tool_calls", data)):
        if type(call) is not dict:
            raise shape.error("each tool call to be an object", data)
        fn = shape.obj(call.get("function"), "tool_calls[].function", data)
        index = shape.integer(call.get("index"), "tool_calls[].index", data) if streamed else i
        events.append(
            ToolCallDelta(
                index or 0,
                shape.text(call.get("id"), "tool_calls[].id", data),
                shape.text(fn.get("name"), "tool_calls[].function.name", data),
                shape.text(fn.get("arguments"), "tool_calls[].function.arguments", data) or "",
            )
        )
    return events


def wire_message(message: Message) -> Mapping[str, Any]:
    """A message as Chat Completions takes it; `ToolCall` objects become function dicts.

    Keys of our own are dropped: `continuation` (other protocols' data), and on a tool
    result `name` and `is_error` (Chat Completions marks an error only in the content).
    """
    if message.get("role") == "tool" and ("name" in message or "is_error" in message):
        message = {k: v for k, v in message.items() if k not in ("name", "is_error")}
    if "continuation" in message:
        message = {k: v for k, v in message.items() if k != "continuation"}
    calls = message.get("tool_calls")
    if not calls or not any(isinstance(c, ToolCall) for c in calls):
        return message
    out = dict(message)
    out["tool_calls"] = [
        {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
        if isinstance(c, ToolCall)
        else c
        for c in calls
    ]
    return out


class OpenAIChatProvider(Provider):
    """OpenAI Chat Completions (`/chat/completions`) over httpx and httpx-sse.

    Args:
        base_url: up to and including the version path, e.g. "https://api.openai.com/v1" or
            "http://127.0.0.1:8080/v1".
        api_key: sent as `Authorization: Bearer`; optional for local servers.
        headers: extra headers for every request.
        name: the provider name reported in responses and errors ("openai", "local", ...).
    """

    name = "openai"
    protocol = "openai-chat"
    api_key_env = ("OPENAI_API_KEY",)
    default_base_url = "https://api.openai.com/v1"
    compatible_label = "openai-compatible"

    @classmethod
    def from_sdk(cls, client: Any, *, name: str | None = None) -> Self:
        """Build the provider from a configured `openai.OpenAI` / `AsyncOpenAI` /
        `AzureOpenAI` / `AsyncAzureOpenAI` client: its key, base URL, organization and project
        headers, default headers; for Azure, the `api-key` header (or the Entra ID token as
        Bearer). See `_openai_sdk.from_openai_sdk`.

        Raises:
            ConfigurationError: the client authenticates per request (an `api_key` callable,
                an Azure AD token provider, workload identity); or it is an Azure client,
                whose `api-version` query this class cannot send yet.
        """
        from ._openai_sdk import from_openai_sdk

        return from_openai_sdk(cls, client, name=name)

    def build_request(self, spec: CallSpec, model: str, *, stream: bool) -> WireRequest:
        """The `/chat/completions` request; streams always ask for the usage chunk.

        Sampling options keep their names (`stop` as a list, `seed`, `top_p`,
        `presence_penalty`, `frequency_penalty`); `top_k` only for compatible servers
        (llama-server, vLLM, Ollama take it; api.openai.com has no such parameter).

        Raises:
            ConfigurationError: `top_k` for api.openai.com.
        """
        body: dict[str, Any] = {
            "model": model,
            "messages": [wire_message(m) for m in spec.messages],
        }
        if stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        if spec.max_tokens is not None:
            # api.openai.com's reasoning models accept only max_completion_tokens; compatible
            # servers (llama.cpp, vLLM, Ollama) know max_tokens.
            body["max_completion_tokens" if self.official else "max_tokens"] = spec.max_tokens
        if spec.temperature is not None:
            body["temperature"] = spec.temperature
        self.check_sampling(spec, SAMPLING if self.official else COMPATIBLE_SAMPLING)
        if spec.stop:
            body["stop"] = list(spec.stop)
        for option in ("seed", "top_p", "top_k", "presence_penalty", "frequency_penalty"):
            value = getattr(spec, option)
            if value is not None:
                body[option] = value
        if spec.schema is not None:
            # Strict where the schema allows it (every property required, objects closed);
            # llama-server reads the same nested `json_schema.schema` and constrains decoding
            # with a grammar built from it.
            closed, strict = strict_schema(spec.schema)
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {
                    "name": spec.schema_name,
                    "schema": closed if strict else dict(spec.schema),
                    "strict": strict,
                },
            }
        if spec.tools:
            body["tools"] = [
                {
                    "type": "function",
                    "function": {
                        "name": t.name,
                        "description": t.description,
                        "parameters": dict(t.parameters),
                    },
                }
                for t in spec.tools
            ]
        body.update(spec.extra_body)
        return WireRequest(self.endpoint("/chat/completions"), body, self.request_headers())

    def decode_body(self, body: Any) -> AtomicResult:
        """Decode a `chat.completion` body into events (text, tool calls, usage, finish).

        Raises:
            ProtocolError: the body is not a chat.completion (a field of another type).
        """
        shape = Shape(self.label)
        if type(body) is not dict:
            raise shape.error("a chat.completion object", body)
        choices = body.get("choices")
        if type(choices) is not list or not choices or type(choices[0]) is not dict:
            raise shape.error("a chat.completion with choices[0] an object", body)
        choice = choices[0]
        message = choice.get("message")
        if type(message) is not dict:
            raise shape.error("choices[0].message to be an object", body)
        events: list[StreamEvent] = []
        reasoning = shape.text(message.get("reasoning_content"), "reasoning_content", body)
        if reasoning:
            events.append(ThinkingDelta(reasoning))
        content = shape.text(message.get("content"), "message.content", body)
        refusal = shape.text(message.get("refusal"), "message.refusal", body)
        text = content or refusal
        if text:
            events.append(TextDelta(text))
        events.extend(tool_call_events(message.get("tool_calls"), shape, body, streamed=False))
        if body.get("usage"):
            events.append(UsageReported(usage_from(body["usage"], final=True, provider=self.label)))
        raw = shape.text(choice.get("finish_reason"), "finish_reason", body)
        if raw:
            events.append(Finished("content_filter", raw) if refusal else finish(raw))
        return atomic(
            events,
            shape.text(body.get("model"), "model", body),
            shape.text(body.get("id"), "id", body),
        )

    def new_decoder(self) -> ChatStreamDecoder:
        """A decoder for one streamed attempt."""
        return ChatStreamDecoder(self.label)


class ChatStreamDecoder:
    """Decodes `chat.completion.chunk` events (choice 0) into StreamEvents.

    Every field it reads is type-checked: a chunk of another shape is a ProtocolError that
    names what was expected.
    """

    __slots__ = ("_finished", "_provider", "_refusal", "_shape", "model", "response_id", "terminal")

    def __init__(self, provider: str) -> None:
        self._provider = provider
        self._shape = Shape(provider)
        self._finished = False
        self._refusal = False
        self.terminal = False
        self.model: str | None = None
        self.response_id: str | None = None

    def feed(self, event: str, data: str) -> Sequence[StreamEvent]:
        """Decode one `data:` payload. See StreamDecoder.feed."""
        if data.startswith("[DONE]"):
            # [DONE] proves the body ended where the server meant it to; the finish reason
            # proves the choice did. A stream needs both to be complete.
            self.terminal = self._finished
            return NO_EVENTS
        chunk = loads_event(self._provider, data)
        if type(chunk) is not dict:
            raise ProtocolError(
                f"SSE data is not a JSON object: {data[:200]!r}", provider=self._provider
            )
        if chunk.get("error"):
            raise in_stream_error(self._provider, chunk)
        if self.model is None:
            self._meta(chunk, data)
        choices = chunk.get("choices")
        usage = chunk.get("usage")
        if not choices:
            if usage:  # the last chunk: `"choices": []` and the whole call's usage
                return (UsageReported(usage_from(usage, final=True, provider=self._provider)),)
            return NO_EVENTS
        choice = choices[0] if type(choices) is list else None
        if type(choice) is not dict:
            raise self._shape.error("choices to be an array of objects", data)
        delta = choice.get("delta")
        raw = choice.get("finish_reason")
        if type(delta) is dict and len(delta) == 1 and raw is None and not usage:
            content = delta.get("content")
            if type(content) is str and content:
                return (TextDelta(content),)  # the common chunk: one text piece, nothing else
        events = self._delta_events(self._shape.obj(delta, "choices[0].delta", data), data)
        raw = self._shape.text(raw, "finish_reason", data)
        if raw:
            self._finished = True
            events.append(Finished("content_filter", raw) if self._refusal else finish(raw))
        if usage:
            # Chat Completions reports usage only at the end (some servers on the finish chunk).
            events.append(UsageReported(usage_from(usage, final=True, provider=self._provider)))
        return events

    def _meta(self, chunk: dict[str, Any], data: str) -> None:
        self.model = self._shape.text(chunk.get("model"), "model", data)
        self.response_id = self._shape.text(chunk.get("id"), "id", data)

    def _delta_events(self, delta: dict[str, Any], data: str) -> list[StreamEvent]:
        shape = self._shape
        events: list[StreamEvent] = []
        reasoning = shape.text(delta.get("reasoning_content"), "delta.reasoning_content", data)
        if reasoning:
            events.append(ThinkingDelta(reasoning))
        content = shape.text(delta.get("content"), "delta.content", data)
        if content:
            events.append(TextDelta(content))
        refusal = shape.text(delta.get("refusal"), "delta.refusal", data)
        if refusal:
            self._refusal = True
            events.append(TextDelta(refusal))
        if delta.get("tool_calls"):
            events.extend(tool_call_events(delta["tool_calls"], shape, data, streamed=True))
        return events
