"""Anthropic Messages (`/v1/messages`), for api.anthropic.com and compatible servers.

Wire facts (wire-formats.md §3, §5.2; Anthropic API reference, "Messages" and "Streaming
Messages", https://platform.claude.com/docs/build-with-claude/streaming):
- `POST {base_url}/v1/messages` with headers `x-api-key` and `anthropic-version: 2023-06-01`;
  `max_tokens` is required by the API (`DEFAULT_MAX_TOKENS` is sent when the call sets none).
- The system prompt is the top-level `system` field, not a message; tool calls are `tool_use`
  content blocks of the assistant turn and their results `tool_result` blocks of a user turn.
- A stream is named events, SSE name = JSON `type`: `message_start` (id, model, input usage) ->
  per content block `content_block_start` / `content_block_delta`* / `content_block_stop` ->
  `message_delta` (`stop_reason`, cumulative usage) -> `message_stop`, the only success
  terminator. `ping` may come anywhere; unknown event types must be ignored.
- Usage: `message_start.message.usage` has the input counts; `message_delta.usage` is
  cumulative (never summed): its non-null fields override, `output_tokens` of the last one is
  the whole call's. Total input = `input_tokens` + `cache_creation_input_tokens` +
  `cache_read_input_tokens` (APY `types/raw_message_delta_event.py`, `lib/streaming/_messages.py`).
- An error after the 200 is `event: error` with `{"type": "error", "error": {"type", "message"}}`
  (`overloaded_error` is the streamed form of HTTP 529); llama-server sends it flat:
  `{"code": 500, "message", "type": "server_error"}`.
- llama-server's `/v1/messages` (§5.2): no `ping`, `message_start` usage like
  `{"cache_read_input_tokens": 31, "input_tokens": 1, "output_tokens": 0}`, final
  `message_delta` usage only `{"output_tokens": n}`, `stop_reason` only end_turn, tool_use or
  max_tokens; it ignores `output_config` (no grammar constraint from a schema).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from .._errors import ConfigurationError, ProtocolError
from .._events import Finished, StreamEvent, TextDelta, ThinkingDelta, ToolCallDelta, UsageReported
from .._output import strict_schema
from .._request import CallSpec, Message, Tool, WireRequest
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

__all__ = ["DEFAULT_MAX_TOKENS", "AnthropicProvider", "MessagesStreamDecoder"]

API_VERSION = "2023-06-01"
"""The `anthropic-version` header sent (override it through `headers=`)."""

DEFAULT_MAX_TOKENS = 4096
"""`max_tokens` sent when the call sets none: the Messages API rejects a request without it."""

FINISH_REASONS: dict[str, FinishReason] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
"""Anthropic `stop_reason` -> FinishReason (wire-formats.md §3.5); unknown ones map to "stop"."""

SAMPLING = frozenset({"stop", "top_p", "top_k"})
"""Sampling options of the Messages API (`stop` is sent as `stop_sequences`)."""

_SDK_CLASSES = frozenset({"Anthropic", "AsyncAnthropic"})


def finish(raw: str) -> Finished:
    """A Finished event for an Anthropic `stop_reason` (unknown ones map to "stop")."""
    return Finished(FINISH_REASONS.get(raw, "stop"), raw)


def usage_from(u: Any, *, final: bool = False, provider: str | None = None) -> Usage:
    """Usage from an Anthropic `usage` object (merged message_start + message_delta fields).

    Input tokens are `input_tokens` + `cache_creation_input_tokens` + `cache_read_input_tokens`
    (Anthropic's `input_tokens` counts only the uncached part); `cached_input_tokens` is
    `cache_read_input_tokens`; `reasoning_tokens` is `output_tokens_details.thinking_tokens`.
    Input is None (missing) when `input_tokens` itself is not reported.

    Raises:
        ProtocolError: not an object, or a count that is not an integer.
    """
    input_tokens, created, cache_read, output = counts(
        u,
        (
            "input_tokens",
            "cache_creation_input_tokens",
            "cache_read_input_tokens",
            "output_tokens",
        ),
        provider,
    )
    if input_tokens is not None:
        input_tokens += (created or 0) + (cache_read or 0)
    (thinking,) = counts(u.get("output_tokens_details") or {}, ("thinking_tokens",), provider)
    return Usage.of(
        input_tokens,
        output,
        cached_input_tokens=cache_read,
        reasoning_tokens=thinking,
        final=final,
    )


# -- request translation (OpenAI Chat-shaped messages -> Messages API) ----------------------


def content_blocks(content: Any) -> list[dict[str, Any]]:
    """Content (a string or OpenAI content parts) as Anthropic content blocks.

    `{"type": "text"}` parts and native Anthropic blocks pass through; `image_url` parts become
    `image` blocks (a `data:` URL as a base64 source, another URL as a url source); empty text
    is dropped (the API rejects empty text blocks).
    """
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    blocks: list[dict[str, Any]] = []
    for part in content:
        if isinstance(part, str):
            if part:
                blocks.append({"type": "text", "text": part})
        elif part.get("type") == "image_url":
            blocks.append(_image_block(part))
        elif part.get("type") == "text" and not part.get("text"):
            continue
        else:
            blocks.append(dict(part))
    return blocks


def _image_block(part: Mapping[str, Any]) -> dict[str, Any]:
    ref = part.get("image_url")
    url = ref.get("url", "") if isinstance(ref, Mapping) else str(ref or "")
    if url.startswith("data:") and ";base64," in url:
        media_type, _, data = url[5:].partition(";base64,")
        return {
            "type": "image",
            "source": {"type": "base64", "media_type": media_type, "data": data},
        }
    return {"type": "image", "source": {"type": "url", "url": url}}


def tool_use_block(call: ToolCall | Mapping[str, Any], where: str) -> dict[str, Any]:
    """An assistant tool call (`ToolCall` or OpenAI dict) as a `tool_use` block.

    Raises:
        ConfigurationError: the arguments are not a JSON object (the API needs `input` to be one).
    """
    call_id: Any
    name: Any
    arguments: Any
    if isinstance(call, ToolCall):
        call_id, name, arguments = call.id, call.name, call.arguments
    elif call.get("type") == "tool_use":
        return dict(call)  # already an Anthropic block
    else:
        fn = call.get("function") or {}
        call_id, name, arguments = call.get("id"), fn.get("name"), fn.get("arguments")
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments) if arguments.strip() else {}
        except ValueError:
            arguments = None
    if not isinstance(arguments, Mapping):
        raise ConfigurationError(
            f"{where}: the arguments of tool call {call_id!r} are not a JSON object; "
            "Anthropic's tool_use input must be one"
        )
    return {"type": "tool_use", "id": call_id, "name": name, "input": dict(arguments)}


def tool_result_block(message: Message, where: str) -> dict[str, Any]:
    """A `{"role": "tool", "tool_call_id", "content"}` turn as a `tool_result` block.

    Raises:
        ConfigurationError: the turn has no `tool_call_id`.
    """
    call_id = message.get("tool_call_id")
    if not call_id:
        raise ConfigurationError(f"{where}: a tool message needs 'tool_call_id'")
    block: dict[str, Any] = {"type": "tool_result", "tool_use_id": call_id}
    content = message.get("content")
    if isinstance(content, str):
        block["content"] = content
    elif isinstance(content, list | tuple):
        block["content"] = content_blocks(content)
    elif content is not None:
        block["content"] = json.dumps(content, ensure_ascii=False)
    if message.get("is_error"):
        block["is_error"] = True
    return block


def assistant_turn(message: Message, where: str) -> dict[str, Any]:
    """An assistant turn; its tool calls become `tool_use` blocks after its text.

    A turn from `Response.to_message()` of an Anthropic response carries its content blocks
    (`continuation`): they are sent back as they arrived, so thinking blocks keep their
    signatures byte for byte, as the API requires when tools are used with thinking.
    """
    continuation = message.get("continuation")
    if isinstance(continuation, Mapping) and continuation.get("protocol") == "anthropic":
        return {"role": "assistant", "content": list(continuation["content"])}
    content = message.get("content")
    calls = message.get("tool_calls")
    if not calls:
        if isinstance(content, str) or content is None:
            return {"role": "assistant", "content": content or ""}
        return {"role": "assistant", "content": content_blocks(content)}
    blocks = content_blocks(content)
    blocks.extend(tool_use_block(c, f"{where}.tool_calls[{j}]") for j, c in enumerate(calls))
    return {"role": "assistant", "content": blocks}


def wire_messages(
    messages: Sequence[Message],
) -> tuple[str | list[dict[str, Any]] | None, list[dict[str, Any]]]:
    """(system, messages) for the Messages API from OpenAI Chat-shaped messages.

    System and developer turns, wherever they are, go to the top-level `system` in order (a
    string when they are plain text, else a list of blocks). Consecutive tool turns become one
    user turn of `tool_result` blocks.

    Raises:
        ConfigurationError: a tool turn without `tool_call_id`, tool arguments not an object.
    """
    system: list[dict[str, Any]] = []
    out: list[dict[str, Any]] = []
    results: list[dict[str, Any]] | None = None  # the open user turn of tool results
    for i, message in enumerate(messages):
        role = message.get("role")
        where = f"messages[{i}]"
        if role in ("system", "developer"):
            system.extend(content_blocks(message.get("content")))
            continue
        if role == "tool":
            if results is None:
                results = []
                out.append({"role": "user", "content": results})
            results.append(tool_result_block(message, where))
            continue
        results = None
        if role == "assistant":
            out.append(assistant_turn(message, where))
        else:
            content = message.get("content")
            user = content if isinstance(content, str) else content_blocks(content)
            out.append({"role": "user", "content": user})
    if not system:
        return None, out
    if all(b.keys() == {"type", "text"} and b["type"] == "text" for b in system):
        return "\n\n".join(b["text"] for b in system), out
    return system, out


def wire_tool(tool: Tool) -> dict[str, Any]:
    """A Tool as a Messages API tool definition `{"name", "description", "input_schema"}`."""
    out: dict[str, Any] = {"name": tool.name, "input_schema": dict(tool.parameters)}
    if tool.description:
        out["description"] = tool.description
    return out


class AnthropicProvider(Provider):
    """Anthropic Messages (`/v1/messages`) over httpx and httpx-sse.

    Args:
        base_url: the host root, without `/v1`: "https://api.anthropic.com" or
            "http://127.0.0.1:8080" (llama-server).
        api_key: sent as `x-api-key` (never as `Authorization`); optional for local servers.
        headers: extra headers for every request (`anthropic-beta`, or an `anthropic-version`
            replacing the default "2023-06-01").
        name: the provider name reported in responses and errors.

    Requests: `max_tokens` is required by the API; a call without one sends
    `DEFAULT_MAX_TOKENS` (4096). A schema is sent as `output_config.format`
    (`{"type": "json_schema", "schema": ...}`), the structured-output field of the current API
    (anthropic SDK 2.12 `types/output_config_param.py`); `extra_body["output_config"]` (e.g.
    `{"effort": "low"}`) is merged into it rather than replacing it.
    """

    name = "anthropic"
    protocol = "anthropic"
    api_key_env = ("ANTHROPIC_API_KEY",)
    default_base_url = "https://api.anthropic.com"
    auth_header = "x-api-key"
    auth_scheme = ""

    @classmethod
    def from_sdk(cls, client: Any, *, name: str | None = None) -> AnthropicProvider:
        """A provider with the settings of a configured `anthropic.Anthropic`/`AsyncAnthropic`.

        Reads, without importing the SDK: `api_key` (sent as `x-api-key`), `auth_token` (sent
        as `Authorization: Bearer`), `base_url`, and the headers the user added
        (`default_headers=` / `ANTHROPIC_CUSTOM_HEADERS`), not the SDK's own (user agent,
        `x-stainless-*`, its `anthropic-version`). Its timeout and retry settings are not
        used: the tally_client call's `Timeouts` and `RetryPolicy` apply.

        Args:
            client: an `anthropic.Anthropic` or `anthropic.AsyncAnthropic`.
            name: the provider name reported in responses and errors (default "anthropic").

        Raises:
            ConfigurationError: not such a client, or one authenticating in a way we cannot
                reproduce (Bedrock, Vertex, AWS, Google Cloud clients; `credentials=` token
                providers).
        """
        kind = type(client).__name__
        if kind not in _SDK_CLASSES or not type(client).__module__.startswith("anthropic"):
            raise ConfigurationError(
                f"AnthropicProvider.from_sdk takes anthropic.Anthropic or AsyncAnthropic, "
                f"got {kind}: platform clients (Bedrock, Vertex, ...) sign requests their own way"
            )
        api_key = getattr(client, "api_key", None)
        auth_token = getattr(client, "auth_token", None)
        if api_key is None and auth_token is None and getattr(client, "credentials", None):
            raise ConfigurationError(
                "this anthropic client authenticates through `credentials` (refreshed tokens), "
                "which tally_client cannot reuse: build it with api_key= or auth_token="
            )
        custom = getattr(client, "_custom_headers", None) or {}
        headers = {k: v for k, v in custom.items() if isinstance(v, str)}
        if api_key is None and auth_token is not None:
            headers["Authorization"] = f"Bearer {auth_token}"
        return cls(base_url=str(client.base_url), api_key=api_key, headers=headers, name=name)

    def build_request(self, spec: CallSpec, model: str, *, stream: bool) -> WireRequest:
        """The `/v1/messages` request (see the class docstring for defaults and the schema).

        Sampling: `stop` -> `stop_sequences`, `top_p`, `top_k` (Anthropic API reference,
        "Messages"); the API has no seed and no presence/frequency penalties. The anthropic
        SDK dropped its `temperature`/`top_p`/`top_k` keywords in 1.0 (August 2026; 2.14 has
        none), while the API still takes them on models that support sampling options; some
        recent models reject `temperature` and `top_p` together (a 400 from the provider).

        Raises:
            ConfigurationError: a message cannot be translated (see `wire_messages`); seed,
                presence_penalty or frequency_penalty.
        """
        system, messages = wire_messages(spec.messages)
        body: dict[str, Any] = {
            "model": model,
            "max_tokens": spec.max_tokens if spec.max_tokens is not None else DEFAULT_MAX_TOKENS,
            "messages": messages,
        }
        if system is not None:
            body["system"] = system
        if stream:
            body["stream"] = True
        if spec.temperature is not None:
            body["temperature"] = spec.temperature
        self.check_sampling(spec, SAMPLING)
        if spec.stop:
            body["stop_sequences"] = list(spec.stop)
        if spec.top_p is not None:
            body["top_p"] = spec.top_p
        if spec.top_k is not None:
            body["top_k"] = spec.top_k
        if spec.tools:
            body["tools"] = [wire_tool(t) for t in spec.tools]
        extra = dict(spec.extra_body)
        if spec.schema is not None:
            closed, _ = strict_schema(spec.schema)  # objects need additionalProperties false
            output_config = {"format": {"type": "json_schema", "schema": closed}}
            output_config.update(extra.pop("output_config", None) or {})
            body["output_config"] = output_config
        body.update(extra)
        headers = self.request_headers(**{"anthropic-version": API_VERSION})
        return WireRequest(f"{self.base_url}/v1/messages", body, headers)

    def decode_body(self, body: Any) -> AtomicResult:
        """Decode a `message` body (`content`, `stop_reason`, `usage`) into events.

        Content blocks in order: `text` -> TextDelta, `thinking` -> ThinkingDelta, `tool_use` ->
        one ToolCallDelta with the whole `input` as JSON; then usage and the finish reason.

        Raises:
            APIStatusError: the body is an error object (`{"type": "error", ...}`) sent with 2xx.
            ProtocolError: the body is not a message.
        """
        if isinstance(body, dict) and body.get("type") == "error":
            raise in_stream_error(self.label, body)
        shape = Shape(self.label)
        content = body.get("content") if type(body) is dict else None
        if type(content) is not list:
            raise ProtocolError(f"not a message body: {str(body)[:200]!r}", provider=self.label)
        events: list[StreamEvent] = []
        calls = 0
        for block in content:
            if type(block) is not dict:
                raise shape.error("each content block to be an object", body)
            kind = block.get("type")
            if kind == "text":
                text = shape.text(block.get("text"), "a text block's text", body)
                if text:
                    events.append(TextDelta(text))
            elif kind == "thinking":
                thinking = shape.text(block.get("thinking"), "a thinking block's text", body)
                if thinking:
                    events.append(ThinkingDelta(thinking))
            elif kind == "tool_use":
                given = shape.obj(block.get("input"), "a tool_use block's input", body)
                arguments = json.dumps(given, ensure_ascii=False)
                call_id = shape.text(block.get("id"), "a tool_use block's id", body)
                name = shape.text(block.get("name"), "a tool_use block's name", body)
                events.append(ToolCallDelta(calls, call_id, name, arguments))
                calls += 1
        if body.get("usage"):
            events.append(UsageReported(usage_from(body["usage"], final=True, provider=self.label)))
        raw = shape.text(body.get("stop_reason"), "stop_reason", body)
        if raw:
            events.append(finish(raw))
        return atomic(
            events,
            shape.text(body.get("model"), "model", body),
            shape.text(body.get("id"), "id", body),
            {"protocol": "anthropic", "content": content},
        )

    def new_decoder(self) -> MessagesStreamDecoder:
        """A decoder for one streamed attempt."""
        return MessagesStreamDecoder(self.label)


class MessagesStreamDecoder:
    """Decodes a Messages API event stream into StreamEvents.

    Dispatches on the JSON `type` (equal to the SSE name); an `event: error` raises whatever
    its data's shape. Tool calls are numbered by their position among the message's `tool_use`
    blocks (not by the block index, which counts text and thinking blocks too). Every field
    read is type-checked: an event of another shape is a ProtocolError naming what was
    expected. Usage is final only in the `message_delta` that carries the `stop_reason`.
    """

    __slots__ = (
        "_blocks",
        "_calls",
        "_pending",
        "_pieces",
        "_provider",
        "_shape",
        "_usage",
        "model",
        "response_id",
        "terminal",
    )

    def __init__(self, provider: str) -> None:
        self._provider = provider
        self._shape = Shape(provider)
        # The content blocks as they arrive, for `continuation`: block index -> the start
        # event's block, and the pieces its deltas add (text, thinking, JSON input).
        self._blocks: dict[int, dict[str, Any]] = {}
        self._pieces: dict[int, list[str]] = {}
        self._calls: dict[int, int] = {}  # content block index -> tool call position
        self._pending: dict[int, Any] = {}  # block index -> non-empty input of its start event
        self._usage: dict[str, Any] = {}
        self.terminal = False
        self.model: str | None = None
        self.response_id: str | None = None

    def feed(self, event: str, data: str) -> Sequence[StreamEvent]:
        """Decode one SSE event. See StreamDecoder.feed."""
        if event == "ping" or not data:
            return NO_EVENTS
        payload = loads_event(self._provider, data)
        if event == "error":
            raise in_stream_error(
                self._provider, payload if isinstance(payload, dict) else {"message": data}
            )
        if type(payload) is not dict:
            raise self._shape.error("an event object", data)
        kind = payload.get("type")
        if kind == "content_block_delta":
            delta = payload.get("delta")
            if type(delta) is dict and delta.get("type") == "text_delta":
                text = delta.get("text")
                if type(text) is str:
                    self._pieces.setdefault(payload.get("index"), []).append(text)  # type: ignore[arg-type]
                    return (TextDelta(text),)  # the common event
            return self._delta(payload, delta, data)
        if kind == "content_block_start":
            return self._block_start(payload, data)
        if kind == "content_block_stop":
            return self._block_stop(self._index(payload, data))
        if kind == "message_delta":
            return self._message_delta(payload, data)
        if kind == "message_start":
            return self._message_start(payload, data)
        if kind == "message_stop":
            self.terminal = True
            return NO_EVENTS
        if kind == "error":
            raise in_stream_error(self._provider, payload)
        if type(kind) is not str:
            raise self._shape.error("an event with a string `type`", data)
        return NO_EVENTS  # ping, and event types newer than this module

    def _index(self, payload: dict[str, Any], data: str) -> int:
        index = payload.get("index")
        if type(index) is not int:
            raise self._shape.error("a content block `index` integer", data)
        return index

    def _message_start(self, payload: dict[str, Any], data: str) -> Sequence[StreamEvent]:
        message = payload.get("message")
        if type(message) is not dict:
            raise self._shape.error("message_start.message to be an object", data)
        self.model = self._shape.text(message.get("model"), "message.model", data)
        self.response_id = self._shape.text(message.get("id"), "message.id", data)
        usage = self._shape.obj(message.get("usage"), "message.usage", data)
        if not usage:
            return NO_EVENTS
        self._usage = {k: v for k, v in usage.items() if v is not None}
        # The input counts and a first output count: not the call's final usage.
        return (UsageReported(usage_from(self._usage, provider=self._provider)),)

    def _message_delta(self, payload: dict[str, Any], data: str) -> Sequence[StreamEvent]:
        events: list[StreamEvent] = []
        usage = self._shape.obj(payload.get("usage"), "message_delta.usage", data)
        delta = self._shape.obj(payload.get("delta"), "message_delta.delta", data)
        raw = self._shape.text(delta.get("stop_reason"), "delta.stop_reason", data)
        if usage:
            # Cumulative counts: non-null fields override message_start's, never add to them.
            self._usage.update((k, v) for k, v in usage.items() if v is not None)
        if usage or (raw and self._usage):
            # The message_delta with the stop_reason carries the call's final counts.
            final = bool(raw)
            events.append(
                UsageReported(usage_from(self._usage, final=final, provider=self._provider))
            )
        if raw:
            events.append(finish(raw))
        return events

    @property
    def continuation(self) -> dict[str, Any] | None:
        """The message's content blocks so far, as the API sent them (see `assistant_turn`)."""
        if not self._blocks:
            return None
        content: list[dict[str, Any]] = []
        for index in sorted(self._blocks):
            block = dict(self._blocks[index])
            joined = "".join(self._pieces.get(index, ()))
            kind = block.get("type")
            if kind == "text":
                block["text"] = block.get("text", "") + joined
            elif kind == "thinking":
                block["thinking"] = block.get("thinking", "") + joined
            elif kind in ("tool_use", "server_tool_use") and joined:
                try:
                    block["input"] = json.loads(joined)
                except ValueError:
                    block["input"] = {}  # cut mid-arguments: a partial turn
            content.append(block)
        return {"protocol": "anthropic", "content": content}

    def _block_start(self, payload: dict[str, Any], data: str) -> Sequence[StreamEvent]:
        shape = self._shape
        block = payload.get("content_block")
        if type(block) is not dict:
            raise shape.error("content_block_start.content_block to be an object", data)
        index = self._index(payload, data)
        self._blocks[index] = dict(block)
        self._pieces[index] = []
        kind = block.get("type")
        if kind == "tool_use":
            position = self._calls[index] = len(self._calls)
            given = block.get("input")
            if given:
                self._pending[index] = shape.obj(given, "tool_use.input", data)
            call_id = shape.text(block.get("id"), "tool_use.id", data)
            name = shape.text(block.get("name"), "tool_use.name", data)
            return (ToolCallDelta(position, call_id, name, ""),)
        if kind == "text":
            text = shape.text(block.get("text"), "a text block's text", data)
            return (TextDelta(text),) if text else NO_EVENTS
        if kind == "thinking":
            thinking = shape.text(block.get("thinking"), "a thinking block's text", data)
            return (ThinkingDelta(thinking),) if thinking else NO_EVENTS
        return NO_EVENTS  # server_tool_use, redacted_thinking, ...: not client output

    def _delta(self, payload: dict[str, Any], delta: Any, data: str) -> Sequence[StreamEvent]:
        if type(delta) is not dict:
            raise self._shape.error("content_block_delta.delta to be an object", data)
        kind = delta.get("type")
        if kind == "text_delta":
            raise self._shape.error("text_delta.text to be a string", data)
        index = self._index(payload, data)
        if kind == "input_json_delta":
            position = self._calls.get(index)
            fragment = self._shape.text(delta.get("partial_json"), "partial_json", data)
            if fragment and index in self._pieces:
                self._pieces[index].append(fragment)
            if position is None or not fragment:
                return NO_EVENTS
            self._pending.pop(index, None)  # the deltas carry the input
            return (ToolCallDelta(position, None, None, fragment),)
        if kind == "thinking_delta":
            thinking = self._shape.text(delta.get("thinking"), "thinking_delta.thinking", data)
            if thinking and index in self._pieces:
                self._pieces[index].append(thinking)
            return (ThinkingDelta(thinking),) if thinking else NO_EVENTS
        if kind == "signature_delta" and index in self._blocks:
            signature = self._shape.text(delta.get("signature"), "signature_delta.signature", data)
            self._blocks[index]["signature"] = signature or ""
        return NO_EVENTS  # citations_delta, newer delta types

    def _block_stop(self, index: int) -> Sequence[StreamEvent]:
        pending = self._pending.pop(index, None)
        if pending is None:
            return NO_EVENTS
        # The start event carried the whole input and no delta followed (some compatible
        # servers do this; Anthropic's own start event has `"input": {}`).
        arguments = json.dumps(pending, ensure_ascii=False)
        return (ToolCallDelta(self._calls[index], None, None, arguments),)
