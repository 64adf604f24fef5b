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
from ._base import NO_EVENTS, AtomicResult, Provider, atomic, in_stream_error, loads_event

__all__ = ["OpenAIChatProvider"]

FINISH_REASONS: dict[str, FinishReason] = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",
    "content_filter": "content_filter",
}


def finish(raw: str) -> Finished:
    """A Finished event for a Chat Completions finish_reason (unknown ones map to "stop")."""
    return Finished(FINISH_REASONS.get(raw, "stop"), raw)


def usage_from(u: Mapping[str, Any]) -> Usage:
    """Usage from a Chat Completions `usage` object (details optional)."""
    prompt_details = u.get("prompt_tokens_details") or {}
    completion_details = u.get("completion_tokens_details") or {}
    return Usage.of(
        u.get("prompt_tokens"),
        u.get("completion_tokens"),
        total_tokens=u.get("total_tokens"),
        cached_input_tokens=prompt_details.get("cached_tokens"),
        reasoning_tokens=completion_details.get("reasoning_tokens"),
    )


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
        Bearer). See `_openai_sdk._from_openai_sdk`.

        Raises:
            ConfigurationError: the client authenticates per request (an `api_key` callable,
                an Azure AD token provider, workload identity); or it is an Azure client,
                whose `api-version` query this class cannot send yet.
        """
        from ._openai_sdk import _from_openai_sdk

        return _from_openai_sdk(cls, client, name=name)

    def build_request(self, spec: CallSpec, model: str, *, stream: bool) -> WireRequest:
        """The `/chat/completions` request; streams always ask for the usage chunk."""
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
        """Decode a `chat.completion` body into events (text, tool calls, usage, finish)."""
        try:
            choice = body["choices"][0]
            message = choice["message"]
        except (KeyError, IndexError, TypeError):
            raise ProtocolError(
                f"not a chat.completion body: {str(body)[:200]!r}", provider=self.label
            ) from None
        events: list[StreamEvent] = []
        reasoning = message.get("reasoning_content")
        if reasoning:
            events.append(ThinkingDelta(reasoning))
        text = message.get("content") or message.get("refusal")
        if text:
            events.append(TextDelta(text))
        for i, call in enumerate(message.get("tool_calls") or ()):
            fn = call.get("function") or {}
            events.append(
                ToolCallDelta(i, call.get("id"), fn.get("name"), fn.get("arguments") or "")
            )
        if body.get("usage"):
            events.append(UsageReported(usage_from(body["usage"])))
        raw = choice.get("finish_reason")
        if raw:
            events.append(
                Finished("content_filter", raw) if message.get("refusal") else finish(raw)
            )
        return atomic(events, body.get("model"), body.get("id"))

    def new_decoder(self) -> ChatStreamDecoder:
        """A decoder for one streamed attempt."""
        return ChatStreamDecoder(self.label)


class ChatStreamDecoder:
    """Decodes `chat.completion.chunk` events (choice 0) into StreamEvents."""

    __slots__ = ("_finished", "_provider", "_refusal", "model", "response_id", "terminal")

    def __init__(self, provider: str) -> None:
        self._provider = provider
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
        if not isinstance(chunk, dict):
            raise ProtocolError(
                f"SSE data is not a JSON object: {data[:200]!r}", provider=self._provider
            )
        if chunk.get("error"):
            raise in_stream_error(self._provider, chunk)
        if self.model is None:
            self.model = chunk.get("model")
            self.response_id = chunk.get("id")
        choices = chunk.get("choices")
        usage = chunk.get("usage")
        if not choices:
            return (UsageReported(usage_from(usage)),) if usage else NO_EVENTS
        choice = choices[0]
        delta = choice.get("delta")
        raw = choice.get("finish_reason")
        if delta and len(delta) == 1 and not raw and not usage:
            content = delta.get("content")
            if content:
                return (TextDelta(content),)  # the common chunk: one text piece, nothing else
        events: list[StreamEvent] = []
        if delta:
            events.extend(self._delta_events(delta))
        if raw:
            self._finished = True
            events.append(Finished("content_filter", raw) if self._refusal else finish(raw))
        if usage:
            events.append(UsageReported(usage_from(usage)))
        return events

    def _delta_events(self, delta: Mapping[str, Any]) -> list[StreamEvent]:
        events: list[StreamEvent] = []
        reasoning = delta.get("reasoning_content")
        if reasoning:
            events.append(ThinkingDelta(reasoning))
        content = delta.get("content")
        if content:
            events.append(TextDelta(content))
        refusal = delta.get("refusal")
        if refusal:
            self._refusal = True
            events.append(TextDelta(refusal))
        for call in delta.get("tool_calls") or ():
            fn = call.get("function") or {}
            events.append(
                ToolCallDelta(
                    call.get("index", 0), call.get("id"), fn.get("name"), fn.get("arguments") or ""
                )
            )
        return events
