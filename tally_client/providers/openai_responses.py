"""OpenAI Responses API (`/responses`), for api.openai.com, Azure OpenAI and llama-server.

Wire facts (wire-formats.md §2, §5.3, §9; OpenAI API reference, "Responses" and "Streaming
events"; openai-python 3.54 `types/responses/*`):
- `POST {base_url}/responses`, `Authorization: Bearer <key>` (Azure: `api-key: <key>` and an
  `api-version` query parameter). Input is a list of items: messages `{"role", "content"}`,
  `function_call` `{"call_id", "name", "arguments"}` and `function_call_output`
  `{"call_id", "output"}`. Function tools are flat: `{"type": "function", "name", ...}`.
- A stream is named events (`event:` = the JSON `type`), with **no `[DONE]`**. The one terminal
  event is `response.completed`, `response.incomplete` (finished but truncated:
  `incomplete_details.reason` is `max_output_tokens`, `content_filter`, `max_messages` or
  `steered`) or `response.failed` (`response.error` = `{code, message}`).
- Usage arrives only in the terminal event's `response.usage`: `input_tokens`,
  `output_tokens`, `total_tokens`, optional `input_tokens_details.cached_tokens` and
  `output_tokens_details.reasoning_tokens`.
- An error mid-stream is an `error` event in one of two shapes: nested
  `{"type": "error", "error": {"type", "code", "message"}}` (seen from api.openai.com) or flat
  `{"type": "error", "code", "message", "param"}` (the SDK's documented `ResponseErrorEvent`).
- llama-server sends no `sequence_number`, `output_index` or `content_index`; its
  `function_call` items have no `id`, only `call_id` (`"fc_<id>"`), which its
  `function_call_arguments.delta` events use as `item_id`; its `response.created` carries only
  `{id, object, status}`. It reports `completed` even when `max_output_tokens` cut the text,
  and it ignores `text.format` (no grammar): for a schema there, pass the Chat-style
  `extra_body={"response_format": {"type": "json_schema", "json_schema": {...}}}`, which its
  Responses-to-Chat conversion passes through (checked against a running llama-server).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, Self

from .._errors import APIStatusError, ProtocolError, status_error
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
from ._openai_sdk import from_openai_sdk

__all__ = ["OpenAIResponsesProvider", "ResponsesStreamDecoder"]

INCOMPLETE_REASONS: dict[str, FinishReason] = {
    "max_output_tokens": "length",
    "max_messages": "length",
    "content_filter": "content_filter",
    "steered": "stop",
}
"""`incomplete_details.reason` -> finish reason; an unknown reason counts as "length"."""

# `response.failed` error codes that name a problem with the request or its content (openai
# 3.54 `types/responses/response_error.py`): retrying the same request cannot help.
_CLIENT_ERROR_CODES = frozenset(
    {"data_residency_mismatch", "bio_policy", "misalignment_policy_violation", "empty_image_file"}
)
_CLIENT_ERROR_PREFIXES = ("invalid_", "image_", "unsupported_", "failed_to_download_")

# Chat Completions content parts -> Responses input content parts.
_PART_TYPES = {"text": "input_text", "image_url": "input_image", "file": "input_file"}


SAMPLING = frozenset({"top_p"})
"""The only sampling option of `POST /responses` besides temperature."""


def usage_from(u: Any, *, final: bool = False, provider: str | None = None) -> Usage:
    """Usage from a Responses `usage` object (the `*_details` objects are optional).

    Raises:
        ProtocolError: not an object, or a count that is not an integer.
    """
    input_tokens, output_tokens, total = counts(
        u, ("input_tokens", "output_tokens", "total_tokens"), provider
    )
    (cached,) = counts(u.get("input_tokens_details") or {}, ("cached_tokens",), provider)
    (reasoning,) = counts(u.get("output_tokens_details") or {}, ("reasoning_tokens",), provider)
    return Usage.of(
        input_tokens,
        output_tokens,
        total_tokens=total,
        cached_input_tokens=cached,
        reasoning_tokens=reasoning,
        final=final,
    )


def finish_of(
    response: dict[str, Any],
    *,
    tool_calls: bool,
    refusal: bool,
    shape: Shape,
    status: str | None = None,
) -> Finished | None:
    """The Finished event for a Response object, or None if it has not finished.

    The object's `status` wins over `status` (the terminal event's kind, for servers that
    leave it out). `completed` gives "stop" ("tool_calls" when function calls were produced,
    "content_filter" when the model refused; raw "completed"); `incomplete` maps
    `incomplete_details.reason` (raw: the reason itself, e.g. "max_output_tokens").

    Raises:
        ProtocolError: `status` or `incomplete_details` of another type.
    """
    status = shape.text(response.get("status"), "response.status", response) or status
    if status == "completed":
        if refusal:
            return Finished("content_filter", "completed")
        return Finished("tool_calls" if tool_calls else "stop", "completed")
    if status == "incomplete":
        details = shape.obj(response.get("incomplete_details"), "incomplete_details", response)
        reason = shape.text(details.get("reason"), "incomplete_details.reason", response)
        reason = reason or "incomplete"
        return Finished(INCOMPLETE_REASONS.get(reason, "length"), reason)
    return None


def failure(provider: str, error: Mapping[str, Any]) -> APIStatusError:
    """The typed error for a `response.failed` error object or an `error` event's payload.

    The status and retryability follow the error's `type`, else its `code`
    (`_base.IN_STREAM_STATUS`: `server_error` 500 and `rate_limit_exceeded` 429 are retried,
    `insufficient_quota` is not); `response.failed` codes that name a bad input (`invalid_*`,
    `image_*`, ...) map to 400, not retried.
    """
    code = error.get("code")
    if (
        not error.get("type")
        and isinstance(code, str)
        and (code in _CLIENT_ERROR_CODES or code.startswith(_CLIENT_ERROR_PREFIXES))
    ):
        return status_error(
            400,
            str(error.get("message") or "no message"),
            provider=provider,
            error_type=code,
            body={"error": dict(error)},
            in_stream=True,
        )
    return in_stream_error(provider, {"error": dict(error)})


def _text_of(content: Any) -> str:
    """The text of a Chat-shaped content: a string, or the text of a list of parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    pieces: list[str] = []
    for part in content:
        if isinstance(part, Mapping):
            text = part.get("text", part.get("refusal"))
            if isinstance(text, str):
                pieces.append(text)
        elif isinstance(part, str):
            pieces.append(part)
    return "".join(pieces)


def _input_part(part: Any) -> Any:
    """A Chat content part as a Responses input part (other shapes pass through)."""
    if not isinstance(part, Mapping):
        return part
    kind = _PART_TYPES.get(part.get("type", ""))
    if kind == "input_text":
        return {"type": "input_text", "text": part.get("text", "")}
    if kind == "input_image":
        image = part.get("image_url")
        if isinstance(image, Mapping):
            url, detail = image.get("url"), image.get("detail") or "auto"
        else:
            url, detail = image, "auto"
        return {"type": "input_image", "image_url": url, "detail": detail}
    if kind == "input_file":
        return {"type": "input_file", **dict(part.get("file") or {})}
    return part


def _call_item(call: Any) -> dict[str, Any]:
    """A Chat tool call (a ToolCall or an OpenAI dict) as a `function_call` input item."""
    call_id: Any
    name: Any
    arguments: Any
    if isinstance(call, ToolCall):
        call_id, name, arguments = call.id, call.name, call.arguments
    else:
        fn = call.get("function") or {}
        call_id, name, arguments = call.get("id"), fn.get("name"), fn.get("arguments")
    if not isinstance(arguments, str):
        arguments = json.dumps(arguments if arguments is not None else {})
    return {"type": "function_call", "call_id": call_id, "name": name, "arguments": arguments}


def _continuation_items(message: Message) -> list[Any] | None:
    continuation = message.get("continuation")
    if isinstance(continuation, Mapping) and continuation.get("protocol") == "openai-responses":
        return list(continuation["items"])
    return None


def input_items(messages: Sequence[Message]) -> list[Any]:
    """Chat-shaped messages as Responses input items, in order.

    - system / developer / user: a message item with the same role (system prompts stay in
      place rather than moving to `instructions`, so several of them keep their order);
      content parts become `input_text` / `input_image` / `input_file`.
    - assistant: its text (parts joined) as a `message` item with one `output_text` part,
      then one `function_call` item per tool call.
    - tool: a `function_call_output` item `{call_id: tool_call_id, output: text}`.
    - an assistant turn from `Response.to_message()` of a Responses call: its output items
      (`continuation`), unchanged.
    """
    items: list[Any] = []
    for message in messages:
        role = message.get("role")
        content = message.get("content")
        if role == "tool":
            items.append(
                {
                    "type": "function_call_output",
                    "call_id": message.get("tool_call_id"),
                    "output": _text_of(content),
                }
            )
        elif role == "assistant" and _continuation_items(message) is not None:
            # The output items as the API sent them (reasoning items with their encrypted
            # content, function calls): what a stateless conversation must send back.
            items.extend(_continuation_items(message) or ())
        elif role == "assistant":
            text = _text_of(content)
            if text:
                # The typed form: llama-server rejects an assistant item without
                # `type: "message"` and `output_text` parts; OpenAI takes both forms.
                part = {"type": "output_text", "text": text, "annotations": []}
                items.append({"type": "message", "role": "assistant", "content": [part]})
            items.extend(_call_item(c) for c in message.get("tool_calls") or ())
        elif isinstance(content, str) or content is None:
            items.append({"role": role, "content": content or ""})
        else:
            items.append({"role": role, "content": [_input_part(p) for p in content]})
    return items


def _message_parts(
    item: dict[str, Any], events: list[StreamEvent], shape: Shape, data: Any
) -> bool:
    """Append a message item's text and refusal parts; returns whether it refused."""
    refusal = False
    for part in shape.arr(item.get("content"), "message.content", data):
        if type(part) is not dict:
            raise shape.error("each content part to be an object", data)
        ptype = part.get("type")
        if ptype == "output_text":
            text = shape.text(part.get("text"), "output_text.text", data)
            if text:
                events.append(TextDelta(text))
        elif ptype == "refusal":
            text = shape.text(part.get("refusal"), "refusal.refusal", data)
            if text:
                refusal = True
                events.append(TextDelta(text))
    return refusal


def output_events(
    output: Any, events: list[StreamEvent], shape: Shape, data: Any, *, first_call: int = 0
) -> bool:
    """Append the events for a Response's `output` items; returns whether a refusal was seen.

    Messages give TextDelta (`output_text` and `refusal` parts), reasoning items ThinkingDelta
    (their `reasoning_text` content, else their summary), function calls ToolCallDelta
    numbered from `first_call`.

    Raises:
        ProtocolError: an item, a part or a field of another type than the API gives it.
    """
    refusal = False
    index = first_call
    for item in shape.arr(output, "output", data):
        if type(item) is not dict:
            raise shape.error("each output item to be an object", data)
        kind = item.get("type")
        if kind == "message":
            refusal = _message_parts(item, events, shape, data) or refusal
        elif kind == "function_call":
            events.append(
                ToolCallDelta(
                    index,
                    shape.text(item.get("call_id"), "function_call.call_id", data),
                    shape.text(item.get("name"), "function_call.name", data),
                    shape.text(item.get("arguments"), "function_call.arguments", data) or "",
                )
            )
            index += 1
        elif kind == "reasoning":
            parts = shape.arr(item.get("content") or item.get("summary"), "reasoning", data)
            pieces: list[str] = []
            for p in parts:
                if type(p) is not dict:
                    raise shape.error("each reasoning part to be an object", data)
                pieces.append(shape.text(p.get("text"), "reasoning text", data) or "")
            text = "".join(pieces)
            if text:
                events.append(ThinkingDelta(text))
    return refusal


class OpenAIResponsesProvider(Provider):
    """The OpenAI Responses API (`/responses`) over httpx and httpx-sse.

    Requests carry `"store": false`: every call sends the whole conversation (this module
    never uses `previous_response_id`), so letting OpenAI keep each response for 30 days (its
    default) would only retain the user's content for nothing. Pass
    `extra_body={"store": True}` to have it stored.

    Args:
        base_url: up to and including the version path, e.g. "https://api.openai.com/v1" or
            "http://127.0.0.1:8080/v1".
        api_key: sent as `Authorization: Bearer`; optional for local servers. (Azure's
            `api-key` header goes in `headers`; `from_sdk` does that.)
        headers: extra headers for every request.
        name: the provider name reported in responses and errors (default "openai" for
            api.openai.com, else "openai-compatible").
        query: query parameters for every request, e.g. `{"api-version": "2025-04-01-preview"}`
            for Azure OpenAI.
    """

    name = "openai"
    protocol = "openai-responses"
    api_key_env = ("OPENAI_API_KEY",)
    default_base_url = "https://api.openai.com/v1"
    compatible_label = "openai-compatible"

    @classmethod
    def from_sdk(cls, client: Any, *, name: str | None = None) -> Self:
        """Build the provider from a configured `openai.OpenAI` / `AsyncOpenAI` /
        `AzureOpenAI` / `AsyncAzureOpenAI` client: its key, base URL, organization and project
        headers, default headers and query; for Azure, the `api-key` header (or the Entra ID
        token as Bearer) and the `api-version` query. See `_openai_sdk.from_openai_sdk`.

        Raises:
            ConfigurationError: the client authenticates per request (an `api_key` callable,
                an Azure AD token provider, workload identity), which a fixed header cannot
                reproduce.
        """
        return from_openai_sdk(cls, client, name=name)

    def build_request(self, spec: CallSpec, model: str, *, stream: bool) -> WireRequest:
        """The `/responses` request.

        Body: `model`, `input` (see `input_items`), `store: false`, `stream`,
        `max_output_tokens` (OpenAI rejects values under 16), `temperature`, `tools` as flat
        function tools with `strict: false` (the Responses API defaults to strict schemas,
        which reject most hand-written ones; Chat Completions defaults to non-strict), and the
        schema as `text.format` `{"type": "json_schema", "name", "schema"}`; `extra_body` last.
        Of the sampling options only `top_p` exists on this API (OpenAI API reference,
        "Create a model response"; openai-python `ResponseCreateParams`): no stop sequences,
        seed, top_k or penalties.

        Raises:
            ConfigurationError: stop, seed, top_k, presence_penalty or frequency_penalty.
        """
        body: dict[str, Any] = {
            "model": model,
            "input": input_items(spec.messages),
            "store": False,
        }
        if stream:
            body["stream"] = True
        if spec.max_tokens is not None:
            body["max_output_tokens"] = spec.max_tokens
        if spec.temperature is not None:
            body["temperature"] = spec.temperature
        self.check_sampling(spec, SAMPLING)
        if spec.top_p is not None:
            body["top_p"] = spec.top_p
        if spec.schema is not None:
            closed, strict = strict_schema(spec.schema)
            body["text"] = {
                "format": {
                    "type": "json_schema",
                    "name": spec.schema_name,
                    "schema": closed if strict else dict(spec.schema),
                    "strict": strict,
                }
            }
        if spec.tools:
            body["tools"] = [
                {
                    "type": "function",
                    "name": t.name,
                    "description": t.description,
                    "parameters": dict(t.parameters),
                    "strict": False,
                }
                for t in spec.tools
            ]
        body.update(spec.extra_body)
        return WireRequest(self.endpoint("/responses"), body, self.request_headers())

    def decode_body(self, body: Any) -> AtomicResult:
        """Decode a Response object into events (thinking, text, tool calls, usage, finish).

        Raises:
            APIStatusError: the body is a Response with `status: "failed"` (typed by its error).
            ProtocolError: the body is not a Response object.
        """
        if not isinstance(body, dict) or not isinstance(body.get("output"), list):
            raise ProtocolError(
                f"not a Responses API body: {str(body)[:200]!r}", provider=self.label
            )
        shape = Shape(self.label)
        if body.get("status") == "failed":
            raise failure(self.label, shape.obj(body.get("error"), "error", body))
        events: list[StreamEvent] = []
        refusal = output_events(body["output"], events, shape, body)
        if body.get("usage"):
            events.append(UsageReported(usage_from(body["usage"], final=True, provider=self.label)))
        done = finish_of(
            shape.obj(body, "a Response", body),
            tool_calls=any(type(e) is ToolCallDelta for e in events),
            refusal=refusal,
            shape=shape,
        )
        if done is not None:
            events.append(done)
        return atomic(
            events,
            shape.text(body.get("model"), "model", body),
            shape.text(body.get("id"), "id", body),
            {"protocol": "openai-responses", "items": body["output"]},
        )

    def new_decoder(self) -> ResponsesStreamDecoder:
        """A decoder for one streamed attempt."""
        return ResponsesStreamDecoder(self.label)


class ResponsesStreamDecoder:
    """Decodes Responses API stream events into StreamEvents.

    Function calls are numbered in the order their `output_item.added` arrives; argument
    deltas find their call by `item_id` (an item `id`, or llama-server's `call_id`), else by
    `output_index`, else the latest call. If a server skipped the deltas, the terminal event's
    `response.output` supplies what never streamed. Every field read is type-checked: an
    event of another shape is a ProtocolError naming what was expected.
    """

    __slots__ = (
        "_args",
        "_items",
        "_keys",
        "_provider",
        "_refusal",
        "_shape",
        "_text",
        "model",
        "response_id",
        "terminal",
    )

    def __init__(self, provider: str) -> None:
        self._provider = provider
        self._shape = Shape(provider)
        self._keys: dict[Any, int] = {}  # item id, call_id or output_index -> call index
        self._items: list[Any] = []  # finished output items, for `continuation`
        self._args: list[int] = []  # characters of arguments streamed, per call
        self._text = False
        self._refusal = False
        self.terminal = False
        self.model: str | None = None
        self.response_id: str | None = None

    def feed(self, event: str, data: str) -> Sequence[StreamEvent]:
        """Decode one SSE event. See StreamDecoder.feed."""
        if not data or data.startswith("[DONE]"):
            return NO_EVENTS  # no [DONE] on this API, but a proxy may add one
        payload = loads_event(self._provider, data)
        if type(payload) is not dict:
            raise ProtocolError(
                f"SSE data is not a JSON object: {data[:200]!r}", provider=self._provider
            )
        kind = payload.get("type") or event
        if kind == "response.output_text.delta":
            delta = payload.get("delta")
            if type(delta) is str:
                if not delta:
                    return NO_EVENTS
                self._text = True
                return (TextDelta(delta),)  # the common event: one text piece
            if delta is not None:
                raise self._shape.error("output_text.delta to be a string", data)
            return NO_EVENTS
        if kind == "response.function_call_arguments.delta":
            return self._arguments(payload, data)
        if kind in ("response.reasoning_text.delta", "response.reasoning_summary_text.delta"):
            delta = self._shape.text(payload.get("delta"), "reasoning delta", data)
            return (ThinkingDelta(delta),) if delta else NO_EVENTS
        if type(kind) is not str:
            raise self._shape.error("an event with a string `type`", data)
        return self._other(kind, payload, data)

    def _other(self, kind: str, payload: dict[str, Any], data: str) -> Sequence[StreamEvent]:
        """Every event but the deltas: items, terminal events, errors, lifecycle."""
        shape = self._shape
        if kind == "response.output_item.added":
            item = shape.obj(payload.get("item"), "output_item.added.item", data)
            return self._item_added(item, payload.get("output_index"), data)
        if kind == "response.output_item.done":
            item = shape.obj(payload.get("item"), "output_item.done.item", data)
            self._items.append(item)
            return self._item_done(item, payload.get("output_index"), data)
        if kind == "response.refusal.delta":
            delta = shape.text(payload.get("delta"), "refusal.delta", data)
            if not delta:
                return NO_EVENTS
            self._refusal = self._text = True
            return (TextDelta(delta),)
        if kind in ("response.completed", "response.incomplete"):
            status = "completed" if kind == "response.completed" else "incomplete"
            response = shape.obj(payload.get("response"), f"{kind}.response", data)
            return self._terminal(response, status, data)
        if kind == "response.failed":
            response = shape.obj(payload.get("response"), "response.failed.response", data)
            raise failure(self._provider, shape.obj(response.get("error"), "error", data))
        if kind == "error":
            inner = payload.get("error")
            if not isinstance(inner, dict):  # the flat shape
                inner = {k: v for k, v in payload.items() if k not in ("type", "sequence_number")}
            raise failure(self._provider, inner)
        if kind in ("response.created", "response.in_progress"):
            response = shape.obj(payload.get("response"), f"{kind}.response", data)
            self.model = shape.text(response.get("model"), "response.model", data) or self.model
            self.response_id = shape.text(response.get("id"), "response.id", data) or (
                self.response_id
            )
            return NO_EVENTS
        if "type" not in payload and isinstance(payload.get("error"), dict):
            raise in_stream_error(self._provider, payload)  # a Chat-style error from a proxy
        return NO_EVENTS

    def _call(self, item_id: Any, output_index: Any) -> int | None:
        index = self._keys.get(item_id) if item_id is not None else None
        if index is None and output_index is not None:
            index = self._keys.get(("#", output_index))
        return index

    def _new_call(self, keys: Sequence[Any]) -> int:
        index = len(self._args)
        self._args.append(0)
        for key in keys:
            if key is not None:
                self._keys[key] = index
        return index

    def _keys_of(self, item: dict[str, Any], output_index: Any, data: str) -> tuple[Any, ...]:
        shape = self._shape
        return (
            shape.text(item.get("id"), "item.id", data),
            shape.text(item.get("call_id"), "item.call_id", data),
            shape.integer(output_index, "output_index", data),
        )

    def _item_added(
        self, item: dict[str, Any], output_index: Any, data: str
    ) -> Sequence[StreamEvent]:
        if item.get("type") != "function_call":
            return NO_EVENTS
        item_id, call_id, position = self._keys_of(item, output_index, data)
        index = self._new_call((item_id, call_id, None if position is None else ("#", position)))
        arguments = self._shape.text(item.get("arguments"), "item.arguments", data) or ""
        name = self._shape.text(item.get("name"), "item.name", data)
        self._args[index] += len(arguments)
        return (ToolCallDelta(index, call_id, name, arguments),)

    def _arguments(self, payload: dict[str, Any], data: str) -> Sequence[StreamEvent]:
        delta = self._shape.text(payload.get("delta"), "function_call_arguments.delta", data)
        if not delta:
            return NO_EVENTS
        item_id = self._shape.text(payload.get("item_id"), "item_id", data)
        output_index = self._shape.integer(payload.get("output_index"), "output_index", data)
        index = self._call(item_id, output_index)
        if index is None:
            # Unknown keys: calls stream one after another, so the latest one (else a new one).
            index = len(self._args) - 1 if self._args else self._new_call((item_id,))
        self._args[index] += len(delta)
        return (ToolCallDelta(index, None, None, delta),)

    def _item_done(
        self, item: dict[str, Any], output_index: Any, data: Any
    ) -> Sequence[StreamEvent]:
        """A finished function call whose arguments never streamed gets them here."""
        if item.get("type") != "function_call":
            return NO_EVENTS
        item_id, call_id, position = self._keys_of(item, output_index, data)
        index = self._call(item_id, position)
        if index is None:
            index = self._call(call_id, None)
        arguments = self._shape.text(item.get("arguments"), "item.arguments", data) or ""
        if index is None:
            index = self._new_call((item_id, call_id))
            self._args[index] = len(arguments)
            name = self._shape.text(item.get("name"), "item.name", data)
            return (ToolCallDelta(index, call_id, name, arguments),)
        if self._args[index] or not arguments:
            return NO_EVENTS
        self._args[index] = len(arguments)
        return (ToolCallDelta(index, None, None, arguments),)

    @property
    def continuation(self) -> dict[str, Any] | None:
        """The response's output items (see `input_items`), once any finished."""
        return {"protocol": "openai-responses", "items": list(self._items)} if self._items else None

    def _terminal(self, response: dict[str, Any], status: str, data: str) -> Sequence[StreamEvent]:
        shape = self._shape
        self.terminal = True
        self.model = shape.text(response.get("model"), "response.model", data) or self.model
        self.response_id = shape.text(response.get("id"), "response.id", data) or self.response_id
        events: list[StreamEvent] = []
        output = shape.arr(response.get("output"), "response.output", data)
        for item in output:
            if type(item) is not dict:
                raise shape.error("each output item to be an object", data)
        if output:
            self._items = list(output)  # the whole list, as the API has it
        if not self._text:
            # Nothing streamed as text: take it from the final output (servers that skip deltas).
            texts: list[StreamEvent] = []
            messages = [i for i in output if i.get("type") == "message"]
            self._refusal = output_events(messages, texts, shape, data)
            events.extend(texts)
        for item in output:
            if item.get("type") == "function_call":
                events.extend(self._item_done(item, None, data))
        usage = response.get("usage")
        if usage:
            # Usage comes only in the terminal event: the call's final counts.
            events.append(UsageReported(usage_from(usage, final=True, provider=self._provider)))
        done = finish_of(
            response,
            tool_calls=bool(self._args),
            refusal=self._refusal,
            shape=shape,
            status=status,
        )
        if done is not None:
            events.append(done)
        return events
