"""Every error tally_client raises, named by who is at fault.

```
TallyError                          root of everything raised here
├── ConfigurationError              the caller's set-up is wrong: fix the code or the environment
│   └── MissingAPIKeyError          names the environment variable to set
├── StreamError                     a Stream used the wrong way (read after close, iterated twice)
├── CheckpointError                 map()'s checkpoint file could not be written: the run stopped
├── StructuredOutputError           a schema was asked for and the output does not match it
└── ProviderError                   the provider, or the path to it, failed the call
    ├── TransportError              no usable HTTP exchange                      (retryable)
    │   ├── ConnectError            could not connect
    │   └── StreamInterrupted       the connection broke after the response began
    ├── APITimeoutError (builtin TimeoutError too)                                (retryable)
    │   ├── ConnectTimeout          connect took longer than `Timeouts.connect`
    │   ├── PoolTimeout             every pooled connection stayed busy      (not retryable)
    │   ├── FirstTokenTimeout       no output within `Timeouts.first_token`
    │   ├── IdleTimeout             no byte for `Timeouts.idle` once streaming (a stalled stream)
    │   └── TotalTimeout            the call ran past `Timeouts.total`
    ├── APIStatusError              an error status, or an error event inside a 200 stream
    │   ├── BadRequestError         400, 404, 413, 422                          (not retryable)
    │   ├── AuthenticationError     401: the key is missing or wrong            (not retryable)
    │   ├── PermissionDeniedError   403: the key may not do this                (not retryable)
    │   ├── RateLimitError          429                                         (retryable)
    │   └── ServerError             408, 409, 5xx; OverloadedError for 529      (retryable)
    └── ProtocolError               the body is not what the protocol promises (HTML, bad JSON)
```

Every `ProviderError` carries `partial`: the `Response` built from what arrived before the
failure (its `state` is "partial" or "interrupted"), so no text the caller already received is
lost, and `attempts`: one record per try when retries ran.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._response import Attempt, Response

__all__ = [
    "APIStatusError",
    "APITimeoutError",
    "AuthenticationError",
    "BadRequestError",
    "CheckpointError",
    "ConfigurationError",
    "ConnectError",
    "ConnectTimeout",
    "FirstTokenTimeout",
    "IdleTimeout",
    "MissingAPIKeyError",
    "OverloadedError",
    "PermissionDeniedError",
    "PoolTimeout",
    "ProtocolError",
    "ProviderError",
    "RateLimitError",
    "ServerError",
    "StreamError",
    "StreamInterrupted",
    "StructuredOutputError",
    "TallyError",
    "TotalTimeout",
    "TransportError",
    "status_error",
]


class TallyError(Exception):
    """Root of every error raised by tally_client."""


class ConfigurationError(TallyError):
    """The caller's configuration is wrong (unknown model, bad argument, missing key or extra)."""


class MissingAPIKeyError(ConfigurationError):
    """A provider needs an API key and none was given or found in the environment.

    The message names the environment variable(s) to set; the key itself is never shown.
    """

    def __init__(self, provider: str, env_vars: tuple[str, ...]) -> None:
        self.provider = provider
        self.env_vars = env_vars
        names = " or ".join(env_vars)
        super().__init__(
            f"no API key for provider {provider!r}: set {names}, or pass api_key= to the client"
        )


class StreamError(TallyError):
    """A Stream was used the wrong way: iterated twice, or read after it was closed."""


class CheckpointError(TallyError):
    """`map()` could not open or write its checkpoint file (a full disk, a lost mount, no
    permission), so it stopped: it admits no new call, closes the open ones, then raises this.

    Every result written before the failure stays in the file, and a rerun with the same
    checkpoint resumes after them; results that could not be written are not in the file.
    The operating system's error is the `__cause__`.

    Attributes:
        path: the checkpoint file.
    """

    def __init__(self, message: str, path: str | os.PathLike[str]) -> None:
        super().__init__(message)
        self.path = path


class StructuredOutputError(TallyError):
    """A schema was requested and the final output is not valid JSON for it.

    Attributes:
        response: everything that arrived (text, usage, finish reason), so nothing is lost.
        raw_text: the model's output text (the same as `response.text`).
        errors: the validation errors, one readable line each ("age: Input should be a
            valid integer"), or why no JSON was found.
        truncated: the output hit the token limit (finish_reason "length"): raise max_tokens.
        partial: the last partial value the tolerant parser read from the text (None if no
            JSON had started).
    """

    def __init__(
        self,
        message: str,
        response: Response,
        *,
        errors: tuple[str, ...] = (),
        partial: Any = None,
        truncated: bool = False,
    ) -> None:
        super().__init__(message)
        self.response = response
        self.errors = errors
        self.partial = partial
        self.truncated = truncated

    @property
    def raw_text(self) -> str:
        """The model's output text."""
        return self.response.text


class ProviderError(TallyError):
    """The provider, or the network path to it, failed the call.

    Attributes:
        provider: provider name ("openai", "anthropic", "gemini", ...), or None.
        partial: the Response built from what arrived before the failure, if anything did.
        attempts: one `Attempt` per try, in order, when the call was retried.
        retryable: whether a retry may succeed (class default, refined per instance).
    """

    retryable: bool = False

    def __init__(
        self,
        message: str,
        *,
        provider: str | None = None,
        retryable: bool | None = None,
    ) -> None:
        super().__init__(f"[{provider}] {message}" if provider else message)
        self.provider = provider
        self.partial: Response | None = None
        self.attempts: tuple[Attempt, ...] = ()
        if retryable is not None:
            self.retryable = retryable


class TransportError(ProviderError):
    """No usable HTTP exchange: the connection failed or broke. Retryable."""

    retryable = True


class ConnectError(TransportError):
    """The connection to the provider could not be opened."""


class StreamInterrupted(TransportError):
    """The connection broke after the response began (reset, truncated chunked body).

    `partial` holds the text received before the break.
    """


class APITimeoutError(ProviderError, TimeoutError):
    """A configured time limit ran out. Retryable. Also a builtin `TimeoutError`.

    Attributes:
        seconds: the limit that passed, in seconds.
    """

    retryable = True

    def __init__(self, message: str, *, provider: str | None = None, seconds: float) -> None:
        super().__init__(message, provider=provider)
        self.seconds = seconds


class ConnectTimeout(APITimeoutError):
    """Connecting took longer than `Timeouts.connect` seconds."""


class PoolTimeout(APITimeoutError):
    """Every connection of the client's pool stayed busy for `Timeouts.connect` seconds.

    Each open stream holds a connection for its whole length (1,000 per client by default):
    close streams you no longer read, or raise `Client(max_connections=...)`. Not retried:
    waiting again in the same queue would only add to it.
    """

    retryable = False


class FirstTokenTimeout(APITimeoutError):
    """No output arrived within `Timeouts.first_token` seconds of sending the request."""


class IdleTimeout(APITimeoutError):
    """No byte arrived for `Timeouts.idle` seconds once the response began: a stalled stream."""


class TotalTimeout(APITimeoutError):
    """The call ran past `Timeouts.total` seconds (all attempts and waits included)."""


class APIStatusError(ProviderError):
    """An error status, or an error event inside a 200 stream.

    Attributes:
        status_code: HTTP status; for an in-stream error event, the status the error type maps
            to (for example 529 for Anthropic's `overloaded_error`), with `in_stream` True.
        error_type: the provider's error type or code string, when the body has one.
        retry_after: seconds the provider asked us to wait (`retry-after-ms`, `retry-after`,
            Gemini `RetryInfo.retryDelay`), or None.
        body: the decoded error body (a dict) or the first 2,000 characters of a non-JSON one.
        request_id: the provider's request id header, when present.
    """

    def __init__(
        self,
        message: str,
        *,
        status_code: int,
        provider: str | None = None,
        error_type: str | None = None,
        retry_after: float | None = None,
        body: object = None,
        request_id: str | None = None,
        in_stream: bool = False,
        retryable: bool | None = None,
    ) -> None:
        super().__init__(message, provider=provider, retryable=retryable)
        self.status_code = status_code
        self.error_type = error_type
        self.retry_after = retry_after
        self.body = body
        self.request_id = request_id
        self.in_stream = in_stream


class BadRequestError(APIStatusError):
    """The request was rejected (400, 404, 413, 422): fix the request; not retried."""


class AuthenticationError(APIStatusError):
    """The key was missing or wrong (401): not retried."""


class PermissionDeniedError(APIStatusError):
    """The key is valid but may not do this (403: a model or feature not enabled for the
    account, a region, an organisation policy): not retried."""


class RateLimitError(APIStatusError):
    """Too many requests (429). Retried, honouring `retry_after`."""

    retryable = True


class ServerError(APIStatusError):
    """The provider failed (408, 409, 5xx, or a server error event mid-stream). Retried."""

    retryable = True


class OverloadedError(ServerError):
    """The provider is overloaded (Anthropic 529 / `overloaded_error`, Gemini 503). Retried."""


class ProtocolError(ProviderError):
    """The body broke the provider's protocol: an HTML page with a 200, a non-JSON data
    line, JSON of a shape the protocol does not allow, a JSON body where a stream was asked.

    (Bytes that are not UTF-8 are not an error: the SSE specification decodes a stream with
    replacement, so they arrive as U+FFFD.)

    Retryable: such bodies almost always come from a proxy or a broken connection.
    """

    retryable = True


_RETRYABLE_4XX = frozenset({408, 409, 429})


def status_error(
    status_code: int,
    message: str,
    *,
    provider: str | None = None,
    error_type: str | None = None,
    retry_after: float | None = None,
    body: object = None,
    headers: Mapping[str, str] | None = None,
    in_stream: bool = False,
) -> APIStatusError:
    """Build the `APIStatusError` subclass for a status code (HTTP or mapped from an event).

    Retryability follows the status and the error type (never an exception class): 408, 409,
    429, 5xx and 529 retry; other 4xx do not. An `x-should-retry` header overrides both.
    """
    cls: type[APIStatusError]
    if status_code == 429:
        cls = RateLimitError
    elif status_code in (529, 503) or error_type in ("overloaded_error", "UNAVAILABLE"):
        cls = OverloadedError
    elif status_code >= 500 or status_code in _RETRYABLE_4XX:
        cls = ServerError
    elif status_code == 401:
        cls = AuthenticationError
    elif status_code == 403:
        cls = PermissionDeniedError
    else:
        cls = BadRequestError
    retryable: bool | None = None
    request_id: str | None = None
    if headers is not None:
        should = headers.get("x-should-retry")
        if should in ("true", "false"):
            retryable = should == "true"
        request_id = headers.get("x-request-id") or headers.get("request-id")
    kind = f" {error_type}" if error_type else ""
    where = " (error event inside the stream)" if in_stream else ""
    return cls(
        f"HTTP {status_code}{kind}{where}: {message}",
        status_code=status_code,
        provider=provider,
        error_type=error_type,
        retry_after=retry_after,
        body=body,
        request_id=request_id,
        in_stream=in_stream,
        retryable=retryable,
    )
