"""What every provider module implements, and the code they share.

A provider is a codec, not a client: it builds `WireRequest`s, decodes atomic bodies and SSE
events into `StreamEvent`s, and turns error bodies into typed errors. It never does I/O, so
one provider serves the sync and the async client, and tests feed it recorded bytes.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any, ClassVar, Protocol
from urllib.parse import urlencode, urlsplit

from .._errors import (
    APIStatusError,
    ConfigurationError,
    MissingAPIKeyError,
    ProtocolError,
    status_error,
)
from .._events import StreamEvent
from .._request import CallSpec, WireRequest
from .._retry import parse_retry_after

__all__ = [
    "AtomicResult",
    "Provider",
    "Shape",
    "StreamDecoder",
    "auth_values",
    "counts",
    "error_from_body",
    "loads_event",
    "mask_secrets",
    "shape_error",
]

NO_EVENTS: tuple[StreamEvent, ...] = ()
_AUTH_HEADERS = frozenset({"authorization", "x-api-key", "api-key", "x-goog-api-key"})
_MIN_SECRET = 6  # shorter "keys" (placeholders like "none") are not worth masking


def auth_values(headers: Mapping[str, str]) -> tuple[str, ...]:
    """The credentials in auth headers (`Authorization` without its "Bearer ", `x-api-key`,
    `api-key`, `x-goog-api-key`)."""
    found = []
    for header, value in headers.items():
        if header.lower() in _AUTH_HEADERS:
            secret = value.removeprefix("Bearer ").removeprefix("bearer ").strip()
            if len(secret) >= _MIN_SECRET:
                found.append(secret)
    return tuple(found)


def mask_secrets(value: Any, secrets: Sequence[str]) -> Any:
    """`value` (a str, or dicts and lists of them) with each secret replaced by `****` and
    its last 4 characters; other values are returned as they are."""
    if isinstance(value, str):
        for secret in secrets:
            if secret in value:
                value = value.replace(secret, "****" + secret[-4:])
        return value
    if isinstance(value, dict):
        return {k: mask_secrets(v, secrets) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(mask_secrets(v, secrets) for v in value)
    return value


class Shape:
    """Shape checks for one decoder: each returns the value when it has the expected type (or
    is None, for the optional ones) and raises the ProtocolError naming what was expected.

    Decoders check the type of everything they index or keep, so JSON of another shape is a
    ProtocolError (blamed on the wire, retried) while a bug in our code raises as it is.
    The hot paths inline the same `type(x) is T` tests.
    """

    __slots__ = ("provider",)

    def __init__(self, provider: str) -> None:
        self.provider = provider

    def error(self, expected: str, got: Any) -> ProtocolError:
        """The ProtocolError for `got`, which is not `expected`."""
        return shape_error(self.provider, expected, got)

    def obj(self, value: Any, what: str, data: Any) -> dict[str, Any]:
        """`value` as a JSON object; None counts as an empty one."""
        if type(value) is dict:
            return value
        if value is None:
            return {}
        raise shape_error(self.provider, f"{what} to be an object", data)

    def arr(self, value: Any, what: str, data: Any) -> list[Any]:
        """`value` as a JSON array; None counts as an empty one."""
        if type(value) is list:
            return value
        if value is None:
            return []
        raise shape_error(self.provider, f"{what} to be an array", data)

    def text(self, value: Any, what: str, data: Any) -> str | None:
        """`value` as a string, or None."""
        if value is None or type(value) is str:
            return value
        raise shape_error(self.provider, f"{what} to be a string", data)

    def integer(self, value: Any, what: str, data: Any) -> int | None:
        """`value` as an integer (not a bool), or None."""
        if value is None or type(value) is int:
            return value
        raise shape_error(self.provider, f"{what} to be an integer", data)


def counts(u: Any, keys: Sequence[str], provider: str | None) -> list[int | None]:
    """The token counts `keys` of a usage object, each an integer or None.

    Raises:
        ProtocolError: the usage is not an object, or a count is not an integer.
    """
    if type(u) is not dict:
        raise shape_error(provider or "", "usage to be an object", u)
    out: list[int | None] = []
    for key in keys:
        value = u.get(key)
        if value is not None and type(value) is not int:
            raise shape_error(provider or "", f"usage {key} to be an integer", u)
        out.append(value)
    return out


def shape_error(provider: str, expected: str, got: Any) -> ProtocolError:
    """The ProtocolError for JSON of a shape the protocol does not allow: what was expected
    and (the start of) what came."""
    shown = got if isinstance(got, str) else json.dumps(got, ensure_ascii=False, default=repr)
    if len(shown) > 200:
        shown = shown[:200] + "…"
    return ProtocolError(
        f"unexpected shape: expected {expected}, got {shown}", provider=provider or None
    )


class StreamDecoder(Protocol):
    """Decodes one SSE stream, event by event.

    Attributes:
        terminal: True once the provider's success terminator arrived (`[DONE]` after every
            choice finished, `message_stop`, `response.completed`, a Gemini `finishReason`).
            A stream that ends while this is False is partial, whatever text it had.
        model: the model the provider reports, once seen.
        response_id: the provider's response id, once seen.
    """

    terminal: bool
    model: str | None
    response_id: str | None

    def feed(self, event: str, data: str) -> Sequence[StreamEvent]:
        """Decode one SSE event (its `event:` name, "" if none, and its `data:`).

        Raises:
            APIStatusError: the event is an in-stream error (retryable or not by its type).
            ProtocolError: the data is not the JSON the protocol promises.
        """
        ...


class AtomicResult(Protocol):
    """What decoding an atomic body gives: the same events a stream would have yielded."""

    events: Sequence[StreamEvent]
    model: str | None
    response_id: str | None
    continuation: Any


class Provider:
    """Base of the provider codecs. Subclasses set `name` and implement the four methods.

    The API key is kept out of `repr()` and never put in an error message.

    Raises:
        ConfigurationError: `base_url` is not an http(s) URL.
        MissingAPIKeyError: the provider's official host with no key and no auth header (the
            message names the environment variable to set).
    """

    name: ClassVar[str] = "provider"
    protocol: ClassVar[str] = "provider"
    api_key_env: ClassVar[tuple[str, ...]] = ()
    default_base_url: ClassVar[str] = ""
    auth_header: ClassVar[str] = "Authorization"
    """The header that carries the API key."""
    auth_scheme: ClassVar[str] = "Bearer "
    """What comes before the key in that header ("" for a bare key)."""
    connect_hint: str = ""
    """Appended to a connection error's message (set for the default local endpoint: how to
    start a server there, which keys select a hosted provider; see `_config.local_hint`)."""
    compatible_label: ClassVar[str | None] = None
    """The provider name reported when the base URL is not the official host (for example
    "openai-compatible" for llama.cpp, vLLM or Ollama), unless `name=` is given."""

    def __init__(
        self,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        headers: Mapping[str, str] | None = None,
        name: str | None = None,
        query: Mapping[str, str] | None = None,
    ) -> None:
        self.base_url = (base_url or self.default_base_url).rstrip("/")
        try:
            parts = urlsplit(self.base_url)
            valid = parts.scheme in ("http", "https") and bool(parts.hostname)
        except ValueError:
            valid = False
        if not valid:
            raise ConfigurationError(
                f"base_url must be an http(s) URL such as 'http://127.0.0.1:8080/v1', "
                f"got {base_url!r}"
            )
        self._api_key = api_key
        self.extra_headers = dict(headers or {})
        self.label = name or self.name
        self.query = dict(query or {})
        self.official = parts.hostname == urlsplit(self.default_base_url).hostname
        """True when the base URL is the provider's own host."""
        if name is None and not self.official and self.compatible_label:
            self.label = self.compatible_label
        has_auth = any(h.lower() in _AUTH_HEADERS for h in self.extra_headers)
        if not api_key and not has_auth and self.official:
            raise MissingAPIKeyError(self.label, self.api_key_env)

    @property
    def secrets(self) -> tuple[str, ...]:
        """The credentials this provider sends: its API key and the values of auth headers
        given in `headers` (without a "Bearer " prefix). Masked in every error it raises."""
        found = (self._api_key,) if self._api_key else ()
        return tuple(s for s in found if len(s) >= _MIN_SECRET) + auth_values(self.extra_headers)

    def redact(self, error: BaseException, extra: Sequence[str] = ()) -> BaseException:
        """Mask this provider's credentials (and `extra` ones, e.g. auth headers given for
        one call) in `error` in place: its message and, for an `APIStatusError`, its `body`,
        keeping their last 4 characters: `****abcd`.

        A provider that echoes the key in an error body (some do, for a wrong key) would
        otherwise put it in logs, tracebacks and error reporters. Returns `error`.
        """
        secrets = (*self.secrets, *extra)
        if not secrets:
            return error
        error.args = tuple(mask_secrets(a, secrets) for a in error.args)
        if isinstance(error, APIStatusError) and error.body is not None:
            error.body = mask_secrets(error.body, secrets)
        return error

    def check_sampling(self, spec: CallSpec, supported: Collection[str]) -> None:
        """Reject the sampling options (`CallSpec.sampling_set()`) this protocol has no
        field for, before any request is made.

        Raises:
            ConfigurationError: naming the provider, the option and what to do instead.
        """
        for option in spec.sampling_set():
            if option not in supported:
                raise ConfigurationError(
                    f"{self.label} ({self.protocol}) has no {option} parameter: drop "
                    f"{option}=, or route this call to a provider that has one "
                    f"(supported here: {', '.join(sorted(supported)) or 'none'})"
                )

    def request_headers(self, **fixed: str) -> dict[str, str]:
        """Headers for a request: `fixed` ones, the caller's extra headers, then the key."""
        headers = {**fixed, **self.extra_headers}
        if self._api_key:
            headers[self.auth_header] = f"{self.auth_scheme}{self._api_key}"
        return headers

    def endpoint(self, path: str) -> str:
        """The URL for `path` under the base URL, with the provider's query (Azure's
        `api-version`) appended."""
        url = f"{self.base_url}{path}"
        return f"{url}?{urlencode(self.query)}" if self.query else url

    def __repr__(self) -> str:
        key = "set" if self._api_key else "none"
        return f"{type(self).__name__}(base_url={self.base_url!r}, api_key=<{key}>)"

    def build_request(self, spec: CallSpec, model: str, *, stream: bool) -> WireRequest:
        """The HTTP request for `spec` on `model`, streamed or atomic."""
        raise NotImplementedError

    def decode_body(self, body: Any) -> AtomicResult:
        """Decode an atomic (non-streamed) JSON body.

        Raises:
            ProtocolError: the body is not the provider's response shape.
        """
        raise NotImplementedError

    def new_decoder(self) -> StreamDecoder:
        """A fresh decoder for one streamed attempt."""
        raise NotImplementedError

    def error_from_response(
        self, status_code: int, body: bytes, headers: Mapping[str, str]
    ) -> APIStatusError | ProtocolError:
        """Turn a non-2xx response (or a 2xx that is not JSON/SSE) into a typed error, with
        this provider's credentials masked (see `redact`)."""
        for secret in self.secrets:  # before any truncation could cut a key in two
            body = body.replace(secret.encode(), f"****{secret[-4:]}".encode())
        error = error_from_body(self.label, status_code, body, headers)
        self.redact(error)
        return error


class _Atomic:
    __slots__ = ("continuation", "events", "model", "response_id")

    def __init__(
        self,
        events: Sequence[StreamEvent],
        model: str | None,
        response_id: str | None,
        continuation: Any,
    ) -> None:
        self.events = events
        self.model = model
        self.response_id = response_id
        self.continuation = continuation


def atomic(
    events: Sequence[StreamEvent],
    model: str | None,
    response_id: str | None,
    continuation: Any = None,
) -> AtomicResult:
    """Package decoded atomic events with the model, response id and continuation data
    (`Response.continuation`: the provider's own form of the turn, to send back)."""
    return _Atomic(events, model, response_id, continuation)


_SCAN: Callable[[str, int], tuple[Any, int]] = json.JSONDecoder().scan_once  # type: ignore[attr-defined]
"""The decoder's C scanner: one value from an index. `json.loads` wraps it in two Python
calls (about 0.5 us per event, a tenth of the per-chunk cost of a stream)."""


def loads_event(provider: str, data: str) -> Any:
    """`json.loads` for an SSE data field, failing with a ProtocolError that shows the data.

    Raises:
        ProtocolError: the data is not JSON (a proxy's page, a cut line).
    """
    try:
        value, end = _SCAN(data, 0)
        if end == len(data):  # the usual event: one value, nothing around it
            return value
    except (ValueError, StopIteration):
        pass
    try:  # whitespace around the value, or not JSON: json.loads decides, as it always did
        return json.loads(data)
    except ValueError:
        pass
    # Raised outside the handler: the JSONDecodeError (whose `doc` is the whole data, which
    # may echo a key) must not ride along as the error's __context__.
    shown = data if len(data) <= 200 else data[:200] + "…"
    raise ProtocolError(f"SSE data is not JSON: {shown!r}", provider=provider)


def error_from_body(
    provider: str, status_code: int, body: bytes, headers: Mapping[str, str]
) -> APIStatusError | ProtocolError:
    """Build a typed error from an HTTP error body in any of the providers' shapes.

    Shapes (wire-formats.md §6.1): OpenAI `{"error": {"message", "type", "code"}}`; Anthropic
    `{"type": "error", "error": {"type", "message"}}`; Gemini `{"error": {"code", "message",
    "status", "details": [{"retryDelay"}]}}`; llama-server `{"error": {"code", "message",
    "type"}}`. A body that is not JSON (an HTML page from a proxy) keeps its first 2,000
    characters. A 2xx with such a body is a ProtocolError.
    """
    text = body.decode("utf-8", "replace")
    try:
        decoded: Any = json.loads(text)
    except ValueError:
        decoded = None
    retry_after = parse_retry_after(dict(headers))
    if not isinstance(decoded, dict):
        snippet = " ".join(text[:300].split())
        content_type = headers.get("content-type", "no content-type")
        if 200 <= status_code < 300:
            return ProtocolError(
                f"expected JSON or an SSE stream, got {content_type}: {snippet!r}",
                provider=provider,
            )
        return status_error(
            status_code,
            f"non-JSON error body ({content_type}): {snippet!r}",
            provider=provider,
            retry_after=retry_after,
            body=text[:2000],
            headers=headers,
        )
    if 200 <= status_code < 300:
        if decoded.get("error") or decoded.get("type") == "error":
            return in_stream_error(provider, decoded)
        return ProtocolError(
            f"expected an SSE stream, got a JSON body ({len(text)} bytes): the server or a "
            "proxy on the way ignored stream=true",
            provider=provider,
        )
    message, error_type, hint = describe_error(decoded)
    if retry_after is None:
        retry_after = hint
    return status_error(
        status_code,
        message,
        provider=provider,
        error_type=error_type,
        retry_after=retry_after,
        body=decoded,
        headers=headers,
    )


def describe_error(payload: Mapping[str, Any]) -> tuple[str, str | None, float | None]:
    """(message, error type, retry delay seconds) from any provider's error object."""
    inner = payload.get("error", payload)
    if not isinstance(inner, Mapping):
        return str(inner), None, None
    message = str(inner.get("message") or "no message")
    error_type = inner.get("type") or inner.get("status") or inner.get("code")
    delay: float | None = None
    for detail in inner.get("details") or ():
        if isinstance(detail, Mapping) and isinstance(detail.get("retryDelay"), str):
            with contextlib.suppress(ValueError):
                delay = float(detail["retryDelay"].rstrip("s"))
    return message, str(error_type) if error_type is not None else None, delay


# Error types that providers send inside a 200 stream, mapped to the status they stand for.
IN_STREAM_STATUS = {
    "overloaded_error": 529,
    "api_error": 500,
    "server_error": 500,
    "internal_server_error": 500,
    "rate_limit_error": 429,
    "rate_limit_exceeded": 429,
    "timeout_error": 504,
    "unavailable_error": 503,
    "UNAVAILABLE": 503,
    "INTERNAL": 500,
    "RESOURCE_EXHAUSTED": 429,
    "DEADLINE_EXCEEDED": 504,
    "invalid_request_error": 400,
    "authentication_error": 401,
    "permission_error": 403,
    "not_found_error": 404,
    "insufficient_quota": 429,
}


def in_stream_error(provider: str, payload: Mapping[str, Any]) -> APIStatusError:
    """A typed error for an error event that arrived inside a 200 stream.

    The status comes from the body (a numeric `code`, else the error type): Anthropic's
    `overloaded_error` maps to 529 and is retried, `invalid_request_error` to 400 and is not.
    An unknown type counts as a server error (500): the stream failed on the provider's side.
    """
    message, error_type, delay = describe_error(payload)
    inner = payload.get("error", payload)
    code = inner.get("code") if isinstance(inner, Mapping) else None
    if isinstance(code, int) and 400 <= code < 600:
        status = code
    else:
        status = IN_STREAM_STATUS.get(error_type or "", 500)
    if error_type == "insufficient_quota":
        # Billing, not load: retrying cannot help (OpenAI's 429 insufficient_quota).
        err = status_error(
            status,
            message,
            provider=provider,
            error_type=error_type,
            body=dict(payload),
            in_stream=True,
        )
        err.retryable = False
        return err
    return status_error(
        status,
        message,
        provider=provider,
        error_type=error_type,
        retry_after=delay,
        body=dict(payload),
        in_stream=True,
    )
