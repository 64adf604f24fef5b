"""Google Gemini (Developer API, `generativelanguage.googleapis.com`), `/v1` and `/v1beta`.

Wire facts (wire-formats.md §0, §4, §6, §9; google-genai 3.4 `types.py`, `_api_client.py`):
- `POST {base}/{version}/models/{model}:generateContent`; streamed
  `...:streamGenerateContent?alt=sse`; the key goes in the `x-goog-api-key` header. google-genai
  3.x calls `/v1`, 2.x `/v1beta`: both serve the same shapes.
- A stream is `data: <GenerateContentResponse>` events framed with CRLF (httpx-sse splits CR,
  LF and CRLF alike) and has **no terminator**: the chunk whose candidate carries a
  `finishReason` is the last one, and a blocked prompt ends with a chunk that has no
  candidates and a `promptFeedback.blockReason`. A body that ends before either is partial.
- `usageMetadata` is a running total on (almost) every chunk; early chunks may lack
  `candidatesTokenCount`. Thinking is not part of `candidatesTokenCount`:
  `totalTokenCount = promptTokenCount + toolUsePromptTokenCount + candidatesTokenCount +
  thoughtsTokenCount`. Here output = candidates + thoughts, input = prompt + tool-use prompt.
- Parts: `{"text"}` (with `"thought": true` it is thinking), `{"functionCall": {"name",
  "args", "id"?}}` arriving whole (the Developer API never streams arguments; `partialArgs`
  is Vertex-only), plus parts this module ignores (`inlineData`, `executableCode`,
  `codeExecutionResult`, a `thoughtSignature` on its own).
- Tool calls end with `finishReason: "STOP"` (no tool-specific reason): STOP after a
  `functionCall` is normalized to "tool_calls".
- An error after the 200 arrives as `data: {"error": {"code", "message", "status"}}`
  (`503 UNAVAILABLE` is overload, retried). google-genai also accepts the same JSON as bare,
  pretty-printed lines without `data:` (brace-counted, §4.5). httpx-sse treats such lines as
  unknown SSE fields and drops them, so this module never sees them: the stream then ends
  without its finish chunk and is reported partial (StreamInterrupted, retried by policy),
  never as complete. Catching the bare form would take a raw-line hook in the drivers.
- HTTP error bodies are `{"error": {"code", "message", "status", "details": [...]}}`; the
  retry delay is `details[].retryDelay` ("19s"), not a header (`_base.error_from_body`).

Request choices (documented in google-genai 3.4 `types.py`):
- Structured output sends `responseMimeType: "application/json"` with `responseJsonSchema`
  (full JSON Schema, `$ref`/`$defs`/`additionalProperties` included), not `responseSchema`,
  which takes Google's OpenAPI 3.0 subset and rejects common JSON Schema keywords.
- Tools send `parametersJsonSchema` (JSON Schema) for the same reason, not `parameters`.
- Gemini 3 rejects a replayed `functionCall` without its `thoughtSignature` (400). A
  `ToolCall` has no field for it, so the first call of each assistant turn carries the
  signature found on an OpenAI-dict call (`extra_content.google.thought_signature`, the
  convention of Gemini's OpenAI-compatible endpoint), else Google's documented placeholder
  `skip_thought_signature_validator` (ai.google.dev/gemini-api/docs/thought-signatures).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

from .._errors import ConfigurationError, ProtocolError
from .._events import Finished, StreamEvent, TextDelta, ThinkingDelta, ToolCallDelta, UsageReported
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

__all__ = ["GeminiProvider", "GeminiStreamDecoder"]

OFFICIAL_HOST = "generativelanguage.googleapis.com"

FINISH_REASONS: dict[str, FinishReason] = {
    # A natural end; becomes "tool_calls" when the response called a function.
    "STOP": "stop",
    # Output cut by a token limit (CONTINUATION: the per-request limit; continuable).
    "MAX_TOKENS": "length",
    "CONTINUATION": "length",
    # The provider withheld or stopped output on a policy.
    "SAFETY": "content_filter",
    "RECITATION": "content_filter",
    "LANGUAGE": "content_filter",
    "BLOCKLIST": "content_filter",
    "PROHIBITED_CONTENT": "content_filter",
    "SPII": "content_filter",
    "IMAGE_SAFETY": "content_filter",
    "IMAGE_PROHIBITED_CONTENT": "content_filter",
    "IMAGE_RECITATION": "content_filter",
    "ESCALATION": "content_filter",
    "PUP_LIMITED_DISABLED": "content_filter",
    "MODEL_ARMOR": "content_filter",
    # The generation failed: a broken tool call, a malformed response, an unnamed cause.
    "MALFORMED_FUNCTION_CALL": "error",
    "UNEXPECTED_TOOL_CALL": "error",
    "TOO_MANY_TOOL_CALLS": "error",
    "MISSING_THOUGHT_SIGNATURE": "error",
    "MALFORMED_RESPONSE": "error",
    "OTHER": "error",
    "IMAGE_OTHER": "error",
    "NO_IMAGE": "error",
    "FINISH_REASON_UNSPECIFIED": "error",
}
"""Gemini `finishReason` -> FinishReason. Every Gemini reason but STOP, MAX_TOKENS and
CONTINUATION marks an abnormal end, so a reason not listed here maps to "error"."""

GENERATION_FIELDS = (
    ("seed", "seed"),
    ("top_p", "topP"),
    ("top_k", "topK"),
    ("presence_penalty", "presencePenalty"),
    ("frequency_penalty", "frequencyPenalty"),
)
"""Sampling options -> `generationConfig` fields (stop -> `stopSequences`)."""

THOUGHT_SIGNATURE_PLACEHOLDER = "skip_thought_signature_validator"
"""Google's documented stand-in for a `functionCall`'s thought signature that is not at hand."""

_VERSION = re.compile(r"v\d+(?:alpha|beta)?\d*")
_PLACEHOLDER_ID = re.compile(r"call_\d+")  # what the accumulator names a call without an id
_SDK_HEADERS = frozenset({"x-goog-api-key", "content-type", "user-agent", "x-goog-api-client"})


def finish(raw: str, called: bool) -> Finished:
    """A Finished event for a Gemini `finishReason` (`called`: the response had functionCalls)."""
    if raw == "STOP" and called:
        return Finished("tool_calls", raw)
    return Finished(FINISH_REASONS.get(raw, "error"), raw)


def usage_from(u: Any, *, final: bool = False, provider: str | None = None) -> Usage:
    """Usage from a `usageMetadata` object (a running total; counts in tokens).

    input = promptTokenCount (+ toolUsePromptTokenCount); output = candidatesTokenCount +
    thoughtsTokenCount (thinking counted); a count the object lacks stays missing (None).

    Raises:
        ProtocolError: not an object, or a count that is not an integer.
    """
    prompt, tool_prompt, candidates, thoughts, total, cached = counts(
        u,
        (
            "promptTokenCount",
            "toolUsePromptTokenCount",
            "candidatesTokenCount",
            "thoughtsTokenCount",
            "totalTokenCount",
            "cachedContentTokenCount",
        ),
        provider,
    )
    if tool_prompt is not None:
        prompt = (prompt or 0) + tool_prompt
    output = candidates
    if thoughts is not None:
        output = (output or 0) + thoughts
    return Usage.of(
        prompt,
        output,
        total_tokens=total,
        cached_input_tokens=cached,
        reasoning_tokens=thoughts,
        final=final,
    )


def _text_of(content: Any) -> str:
    """A message's content as text: a string, or the text of OpenAI content parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    texts: list[str] = []
    for part in content:
        if isinstance(part, Mapping) and part.get("type") == "text":
            texts.append(str(part.get("text", "")))
        elif isinstance(part, str):
            texts.append(part)
    return "".join(texts)


def _user_parts(content: Any) -> list[dict[str, Any]]:
    """Gemini parts for a user turn: text, and images given as `data:` URLs (inlineData).

    Raises:
        ConfigurationError: a content part this module cannot translate.
    """
    if content is None or isinstance(content, str):
        return [{"text": content or ""}]
    parts: list[dict[str, Any]] = []
    for i, part in enumerate(content):
        kind = part.get("type") if isinstance(part, Mapping) else None
        if kind == "text":
            parts.append({"text": str(part.get("text", ""))})
            continue
        if kind == "image_url":
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, Mapping) else image
            match = re.fullmatch(r"data:([^;,]+);base64,(.*)", str(url or ""), re.S)
            if match:
                parts.append({"inlineData": {"mimeType": match[1], "data": match[2]}})
                continue
        raise ConfigurationError(
            f"content part {i} ({kind or type(part).__name__}) cannot be sent to Gemini: "
            "use text parts, or image_url parts with a data: URL"
        )
    return parts


def _call_fields(call: Any) -> tuple[str | None, str, str, str | None]:
    """(id, name, arguments JSON, thought signature) of a ToolCall or an OpenAI tool-call dict."""
    if isinstance(call, ToolCall):
        return call.id, call.name, call.arguments, None
    fn = call.get("function") or {}
    extra = call.get("extra_content") or {}
    google = extra.get("google") if isinstance(extra, Mapping) else None
    signature = google.get("thought_signature") if isinstance(google, Mapping) else None
    return call.get("id"), str(fn.get("name", "")), fn.get("arguments") or "", signature


def _args_object(name: str, arguments: Any) -> Any:
    """A functionCall's `args` object from the JSON arguments string.

    Raises:
        ConfigurationError: the arguments are not a JSON object.
    """
    if isinstance(arguments, Mapping):
        return dict(arguments)
    if not arguments:
        return {}
    try:
        value = json.loads(arguments)
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise ConfigurationError(
            f"tool call {name!r} has arguments that are not a JSON object: {str(arguments)[:200]!r}"
        )
    return value


def _response_object(content: Any) -> dict[str, Any]:
    """A functionResponse `response`: the parsed JSON object, else `{"result": text}`."""
    text = _text_of(content)
    if text.lstrip().startswith("{"):
        try:
            value = json.loads(text)
        except ValueError:
            value = None
        if isinstance(value, dict):
            return value
    return {"result": text}


def _wire_id(call_id: str | None) -> str | None:
    """The id to echo to Gemini: none for ids the accumulator made up (`call_<n>`)."""
    if not call_id or _PLACEHOLDER_ID.fullmatch(call_id):
        return None
    return call_id


def _model_turn(message: Message, names: dict[str, str]) -> dict[str, Any]:
    """An assistant turn as a "model" content; records its calls' names in `names`.

    A turn from `Response.to_message()` of a Gemini response carries its parts
    (`continuation`): they go back as they arrived, thoughtSignatures unchanged.
    """
    continuation = message.get("continuation")
    native = isinstance(continuation, Mapping) and continuation.get("protocol") == "gemini"
    parts: list[dict[str, Any]] = []
    text = _text_of(message.get("content"))
    if text:
        parts.append({"text": text})
    for n, call in enumerate(message.get("tool_calls") or ()):
        call_id, name, arguments, signature = _call_fields(call)
        if call_id:
            names[call_id] = name
        fc: dict[str, Any] = {"name": name, "args": _args_object(name, arguments)}
        if wire := _wire_id(call_id):
            fc["id"] = wire
        part: dict[str, Any] = {"functionCall": fc}
        if n == 0:
            part["thoughtSignature"] = signature or THOUGHT_SIGNATURE_PLACEHOLDER
        parts.append(part)
    if native:
        assert isinstance(continuation, Mapping)
        return {"role": "model", "parts": list(continuation["parts"])}
    return {"role": "model", "parts": parts or [{"text": ""}]}


def _result_object(message: Message) -> dict[str, Any]:
    """A tool turn's functionResponse `response`: `{"error": text}` for an error result (the
    key Google's docs name for errors), else see `_response_object`."""
    if message.get("is_error"):
        return {"error": _text_of(message.get("content"))}
    return _response_object(message.get("content"))


def wire_contents(
    messages: Sequence[Message],
) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """Translate OpenAI Chat-shaped messages to Gemini `contents` and `systemInstruction`.

    system/developer turns become `systemInstruction` parts (in order, wherever they stand);
    user -> role "user"; assistant -> role "model" with text and `functionCall` parts; tool
    turns -> `functionResponse` parts (role "user"), consecutive ones in one content, named
    after the earlier call with the same id (or the tool message's own `name`).

    Raises:
        ConfigurationError: a tool result that matches no earlier call and has no `name`, tool
            arguments that are not a JSON object, or a content part Gemini cannot take.
    """
    contents: list[dict[str, Any]] = []
    system: list[dict[str, Any]] = []
    names: dict[str, str] = {}
    results: list[dict[str, Any]] | None = None  # the parts of the tool-result turn being built
    for message in messages:
        role = message.get("role")
        content = message.get("content")
        if role != "tool":
            results = None
        if role in ("system", "developer"):
            system.append({"text": _text_of(content)})
        elif role == "assistant":
            contents.append(_model_turn(message, names))
        elif role == "tool":
            call_id = message.get("tool_call_id")
            fname = names.get(call_id or "") or message.get("name")
            if not fname:
                raise ConfigurationError(
                    f"tool message with tool_call_id={call_id!r} matches no earlier assistant "
                    "tool call: Gemini needs the function name (add 'name' to the message)"
                )
            fr: dict[str, Any] = {"name": str(fname), "response": _result_object(message)}
            if wire := _wire_id(call_id):
                fr["id"] = wire
            if results is None:
                results = []
                contents.append({"role": "user", "parts": results})
            results.append({"functionResponse": fr})
        else:
            contents.append({"role": "user", "parts": _user_parts(content)})
    return contents, ({"parts": system} if system else None)


class GeminiProvider(Provider):
    """Google Gemini Developer API (`generateContent`) over httpx and httpx-sse.

    Args:
        base_url: the API root, default "https://generativelanguage.googleapis.com". A base
            URL that already ends in a version segment ("/v1", "/v1beta") sets `api_version`.
        api_key: sent as `x-goog-api-key`; required for the official host.
        headers: extra headers for every request.
        name: the provider name reported in responses and errors.
        api_version: "v1beta" (default; what google-genai 2.x calls) or "v1" (google-genai
            3.x's default); "v1alpha" and later versions are accepted too.

    Raises:
        ConfigurationError: an api_version that is not a version name, or one that contradicts
            the version at the end of base_url.
        MissingAPIKeyError: the official host without an API key.
    """

    name = "gemini"
    protocol = "gemini"
    api_key_env = ("GEMINI_API_KEY", "GOOGLE_API_KEY")
    default_base_url = f"https://{OFFICIAL_HOST}"
    auth_header = "x-goog-api-key"
    auth_scheme = ""
    default_api_version = "v1beta"

    def __init__(
        self,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        headers: Mapping[str, str] | None = None,
        name: str | None = None,
        api_version: str | None = None,
    ) -> None:
        super().__init__(base_url=base_url, api_key=api_key, headers=headers, name=name)
        root, _, last = self.base_url.rpartition("/")
        if urlsplit(self.base_url).path.strip("/") and _VERSION.fullmatch(last):
            if api_version is not None and api_version != last:
                raise ConfigurationError(
                    f"base_url ends in /{last} but api_version={api_version!r}: give one of them"
                )
            self.base_url, api_version = root, last
        api_version = api_version or self.default_api_version
        if not _VERSION.fullmatch(api_version):
            raise ConfigurationError(
                f"api_version must look like 'v1' or 'v1beta', not {api_version!r}"
            )
        self.api_version = api_version

    def __repr__(self) -> str:
        key = "set" if self._api_key else "none"
        return (
            f"{type(self).__name__}(base_url={self.base_url!r}, "
            f"api_version={self.api_version!r}, api_key=<{key}>)"
        )

    @classmethod
    def from_sdk(cls, client: Any, *, name: str | None = None) -> GeminiProvider:
        """A provider configured like a `google.genai.Client` (or its `.aio` twin).

        Reads the client's API key and `http_options` (`base_url`, `api_version`, extra
        `headers`) without importing google.genai. The SDK's own headers (its key header,
        user agent, content type) are not copied.

        Args:
            client: a configured `google.genai.Client` or `google.genai.client.AsyncClient`.
            name: the provider name reported in responses and errors (default "gemini").

        Raises:
            ConfigurationError: a Vertex AI client (this provider speaks the Developer API
                only) or an object that is not a google-genai client.
        """
        api = getattr(client, "_api_client", client)
        read_options = getattr(api, "get_read_only_http_options", None)
        if read_options is None:
            raise ConfigurationError(f"expected a google.genai.Client, got {type(client).__name__}")
        if getattr(api, "vertexai", False):
            raise ConfigurationError(
                "this google.genai.Client uses Vertex AI; GeminiProvider speaks the Gemini "
                "Developer API only: build the client with api_key= instead"
            )
        options: Mapping[str, Any] = read_options() or {}
        headers = {
            k: v for k, v in (options.get("headers") or {}).items() if k.lower() not in _SDK_HEADERS
        }
        base_url = options.get("base_url") or None
        return cls(
            base_url=base_url.rstrip("/") if base_url else None,
            api_key=getattr(api, "api_key", None),
            headers=headers,
            name=name,
            api_version=options.get("api_version") or None,
        )

    def build_request(self, spec: CallSpec, model: str, *, stream: bool) -> WireRequest:
        """The `generateContent` / `streamGenerateContent?alt=sse` request for `spec`.

        `model` may be bare ("gemini-2.5-flash") or a resource name ("models/...",
        "tunedModels/..."). `extra_body` is merged last, one level deep for object fields
        (so `{"generationConfig": {"thinkingConfig": ...}}` keeps maxOutputTokens). Sampling
        options go in `generationConfig`: `stopSequences`, `seed`, `topP`, `topK`,
        `presencePenalty`, `frequencyPenalty` (Gemini API reference, `GenerationConfig`).

        Raises:
            ConfigurationError: messages Gemini cannot take (see `wire_contents`).
        """
        contents, system = wire_contents(spec.messages)
        body: dict[str, Any] = {"contents": contents}
        if system is not None:
            body["systemInstruction"] = system
        if spec.tools:
            declarations: list[dict[str, Any]] = []
            for t in spec.tools:
                declaration: dict[str, Any] = {"name": t.name}
                if t.description:
                    declaration["description"] = t.description
                declaration["parametersJsonSchema"] = dict(t.parameters)
                declarations.append(declaration)
            body["tools"] = [{"functionDeclarations": declarations}]
        config: dict[str, Any] = {}
        if spec.max_tokens is not None:
            config["maxOutputTokens"] = spec.max_tokens
        if spec.temperature is not None:
            config["temperature"] = spec.temperature
        if spec.stop:
            config["stopSequences"] = list(spec.stop)
        for option, field in GENERATION_FIELDS:
            value = getattr(spec, option)
            if value is not None:
                config[field] = value
        if spec.schema is not None:
            config["responseMimeType"] = "application/json"
            config["responseJsonSchema"] = dict(spec.schema)
        if config:
            body["generationConfig"] = config
        for key, value in spec.extra_body.items():
            mine = body.get(key)
            if isinstance(mine, dict) and isinstance(value, Mapping):
                body[key] = {**mine, **value}
            else:
                body[key] = value
        resource = model if "/" in model else f"models/{model}"
        method = "streamGenerateContent?alt=sse" if stream else "generateContent"
        headers = self.request_headers()
        url = f"{self.base_url}/{self.api_version}/{resource}:{method}"
        return WireRequest(url, body, headers)

    def decode_body(self, body: Any) -> AtomicResult:
        """Decode a `GenerateContentResponse` body into the events a stream would give.

        Raises:
            ProtocolError: the body is not a GenerateContentResponse.
            APIStatusError: the body is an `{"error": ...}` object.
        """
        if not isinstance(body, dict) or not (
            "candidates" in body
            or "promptFeedback" in body
            or "usageMetadata" in body
            or "error" in body
        ):
            raise ProtocolError(
                f"not a GenerateContentResponse body: {str(body)[:200]!r}", provider=self.label
            )
        decoder = GeminiStreamDecoder(self.label)
        events = decoder.decode(body)
        return atomic(events, decoder.model, decoder.response_id, decoder.continuation)

    def new_decoder(self) -> GeminiStreamDecoder:
        """A decoder for one streamed attempt."""
        return GeminiStreamDecoder(self.label)


class GeminiStreamDecoder:
    """Decodes streamed `GenerateContentResponse` chunks (candidate 0) into StreamEvents.

    Every field read is type-checked: a chunk of another shape is a ProtocolError naming
    what was expected. Usage is final on the chunk with the `finishReason` (or the blocked
    prompt's), running totals before it.

    Attributes:
        terminal: True once candidate 0 sent its `finishReason`, or the prompt was blocked.
        model: `modelVersion` of the first chunk.
        response_id: `responseId` of the first chunk.
    """

    __slots__ = (
        "_calls",
        "_provider",
        "_shape",
        "_turn",
        "_usage",
        "model",
        "response_id",
        "terminal",
    )

    def __init__(self, provider: str) -> None:
        self._provider = provider
        self._shape = Shape(provider)
        self._turn: list[Any] = []  # candidate 0's parts as they arrived, for `continuation`
        self._calls = 0  # functionCall parts seen so far: the next call's index
        self._usage: Any = None  # the last usageMetadata reported, to skip repeats
        self.terminal = False
        self.model: str | None = None
        self.response_id: str | None = None

    def feed(self, event: str, data: str) -> Sequence[StreamEvent]:
        """Decode one `data:` payload (the SSE event name is unused). See StreamDecoder.feed."""
        chunk = loads_event(self._provider, data)
        if type(chunk) is not dict:
            raise ProtocolError(
                f"SSE data is not a JSON object: {data[:200]!r}", provider=self._provider
            )
        return self._decode(chunk, data)

    def decode(self, chunk: dict[str, Any]) -> Sequence[StreamEvent]:
        """Decode one GenerateContentResponse (a stream chunk or a whole atomic body).

        Raises:
            APIStatusError: the chunk is an `{"error": ...}` object.
            ProtocolError: a field does not have the type the protocol gives it.
        """
        return self._decode(chunk, chunk)

    def _meta(self, chunk: dict[str, Any], data: Any) -> None:
        self.model = self._shape.text(chunk.get("modelVersion"), "modelVersion", data)
        self.response_id = self._shape.text(chunk.get("responseId"), "responseId", data)

    def _decode(self, chunk: dict[str, Any], data: Any) -> Sequence[StreamEvent]:
        candidates = chunk.get("candidates")
        if not candidates:
            return self._no_candidates(chunk, data)
        if self.model is None:
            self._meta(chunk, data)
        candidate = self._candidate(candidates, data)
        content = candidate.get("content")
        if content is not None and type(content) is not dict:
            raise self._shape.error("candidate.content to be an object", data)
        parts = content.get("parts") if content else None
        if parts is not None and type(parts) is not list:
            raise self._shape.error("content.parts to be an array", data)
        raw = candidate.get("finishReason")
        if raw is not None and type(raw) is not str:
            raise self._shape.error("finishReason to be a string", data)
        usage = chunk.get("usageMetadata")
        if usage is not None and (usage != self._usage or raw is not None):
            self._usage = usage
        else:
            usage = None
        if raw is None and parts is not None and len(parts) == 1:
            part = parts[0]
            if type(part) is dict:
                text = part.get("text")
                if type(text) is str and text and not part.get("thought"):
                    # The common chunk: one text piece, maybe a new running usage total.
                    self._turn.append(part)
                    if usage is None:
                        return (TextDelta(text),)
                    return (
                        TextDelta(text),
                        UsageReported(usage_from(usage, provider=self._provider)),
                    )
        events = self._parts(parts, data) if parts else []
        if parts:
            self._turn.extend(parts)  # checked by _parts: every part is an object
        if usage is not None:
            final = raw is not None  # the last chunk's total is the call's usage
            events.append(UsageReported(usage_from(usage, final=final, provider=self._provider)))
        if raw is not None:
            self.terminal = True
            events.append(finish(raw, self._calls > 0))
        return events

    @property
    def continuation(self) -> dict[str, Any] | None:
        """The model turn's parts as they arrived (each streamed part kept, unmerged), so
        their `thoughtSignature`s go back byte for byte; see `wire_contents`."""
        return {"protocol": "gemini", "parts": list(self._turn)} if self._turn else None

    def _parts(self, parts: list[Any], data: Any) -> list[StreamEvent]:
        shape = self._shape
        events: list[StreamEvent] = []
        for part in parts:
            if type(part) is not dict:
                raise shape.error("each part to be an object", data)
            text = shape.text(part.get("text"), "part.text", data)
            if text:
                events.append(ThinkingDelta(text) if part.get("thought") else TextDelta(text))
                continue
            call = part.get("functionCall")
            if call is not None:
                if type(call) is not dict:
                    raise shape.error("functionCall to be an object", data)
                args = shape.obj(call.get("args"), "functionCall.args", data)
                arguments = json.dumps(args, ensure_ascii=False)
                call_id = shape.text(call.get("id"), "functionCall.id", data)
                name = shape.text(call.get("name"), "functionCall.name", data)
                events.append(ToolCallDelta(self._calls, call_id, name, arguments))
                self._calls += 1
        return events

    def _candidate(self, candidates: Any, data: Any) -> dict[str, Any]:
        if type(candidates) is not list:
            raise self._shape.error("candidates to be an array", data)
        candidate = candidates[0]
        if len(candidates) > 1:
            candidate = next(
                (c for c in candidates if type(c) is dict and not c.get("index")), candidate
            )
        if type(candidate) is not dict:
            raise self._shape.error("candidates[0] to be an object", data)
        return candidate

    def _no_candidates(self, chunk: dict[str, Any], data: Any) -> Sequence[StreamEvent]:
        """A chunk without candidates: an error, a blocked prompt, or usage alone."""
        if "error" in chunk:
            raise in_stream_error(self._provider, chunk)
        if self.model is None:
            self._meta(chunk, data)
        feedback = self._shape.obj(chunk.get("promptFeedback"), "promptFeedback", data)
        reason = feedback.get("blockReason")
        events: list[StreamEvent] = []
        usage = chunk.get("usageMetadata")
        if usage is not None and (usage != self._usage or reason):
            self._usage = usage
            final = bool(reason)
            events.append(UsageReported(usage_from(usage, final=final, provider=self._provider)))
        if reason:
            # The prompt was blocked: no candidate will come, and this chunk is the last.
            self.terminal = True
            events.append(Finished("content_filter", str(reason)))
        return events or NO_EVENTS
