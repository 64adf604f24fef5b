"""Time limits and the retry policy: pure objects the sync and async drivers both consult."""

from __future__ import annotations

import random
from dataclasses import dataclass

from ._errors import APIStatusError, ConfigurationError, ProviderError

__all__ = ["RetryPolicy", "Timeouts"]


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


@dataclass(frozen=True)
class Timeouts:
    """Time limits for one call, in seconds; None disables a limit.

    Attributes:
        connect: to open the connection (raises ConnectTimeout).
        first_token: from sending the request to the first output delta, response headers
            included (raises FirstTokenTimeout).
        idle: the longest silence between two reads once the response began: a stalled
            stream (raises IdleTimeout).
        total: the whole call, every attempt and every wait between attempts included
            (raises TotalTimeout).

    Raises:
        ConfigurationError: a limit that is not None or a number of seconds above 0.
    """

    connect: float | None = 10.0
    first_token: float | None = 120.0
    idle: float | None = 60.0
    total: float | None = 600.0

    def __post_init__(self) -> None:
        for name in ("connect", "first_token", "idle", "total"):
            value = getattr(self, name)
            if value is None:
                continue
            if not _is_number(value) or not value > 0 or value != value:
                raise ConfigurationError(
                    f"Timeouts.{name} must be a number of seconds above 0, or None for no "
                    f"limit; got {value!r}"
                )


@dataclass(frozen=True)
class RetryPolicy:
    """When and how long to wait before trying a failed call again.

    One retry layer, ours: connection errors, timeouts, truncated streams, 408, 409, 429, 5xx,
    529 and retryable error events mid-stream are retried; other 4xx never are. Waits use
    exponential backoff with full jitter (a uniform draw in [0, min(max_delay,
    initial_delay * 2**(n-1))]), except that a provider's `retry-after-ms` / `retry-after`
    (or Gemini's `RetryInfo.retryDelay`) is waited exactly when it is at most
    `max_retry_after`; a longer one ends the retries, since waiting less would only earn
    another refusal. The overall limit is `Timeouts.total`.

    Attributes:
        max_attempts: tries in all, the first included (1 disables retries).
        initial_delay: backoff base, seconds.
        max_delay: backoff ceiling, seconds.
        max_retry_after: the longest provider-requested wait honoured, seconds.

    Raises:
        ConfigurationError: max_attempts below 1 or not an int; a negative, infinite or
            non-numeric delay.
    """

    max_attempts: int = 3
    initial_delay: float = 0.5
    max_delay: float = 8.0
    max_retry_after: float = 60.0

    def __post_init__(self) -> None:
        attempts: object = self.max_attempts
        valid = isinstance(attempts, int) and not isinstance(attempts, bool) and attempts >= 1
        if not valid:
            raise ConfigurationError(
                f"RetryPolicy.max_attempts must be an int of at least 1 (1 means no retries); "
                f"got {attempts!r}"
            )
        for name in ("initial_delay", "max_delay", "max_retry_after"):
            value = getattr(self, name)
            if not _is_number(value) or not value >= 0 or value == float("inf"):
                raise ConfigurationError(
                    f"RetryPolicy.{name} must be a finite number of seconds, 0 or more; "
                    f"got {value!r}"
                )

    def delay(self, attempt: int, error: BaseException) -> float | None:
        """Seconds to wait before the try after `attempt` (1-based), or None to stop.

        Args:
            attempt: the number of the try that just failed.
            error: what ended it.

        Returns:
            The wait in seconds, or None when `error` is not retryable, the attempts are
            used up, or the provider asked for a wait longer than `max_retry_after`.
        """
        if attempt >= self.max_attempts or not is_retryable(error):
            return None
        if isinstance(error, APIStatusError) and error.retry_after is not None:
            if error.retry_after > self.max_retry_after:
                return None
            return max(0.0, error.retry_after)
        ceiling = min(self.max_delay, self.initial_delay * 2 ** (attempt - 1))
        return random.uniform(0.0, ceiling)


NO_RETRY = RetryPolicy(max_attempts=1)


def is_retryable(error: BaseException) -> bool:
    """Whether a retry may succeed: decided by status and error body, never by SDK class."""
    return isinstance(error, ProviderError) and error.retryable


def parse_retry_after(headers: dict[str, str] | None) -> float | None:
    """Seconds from `retry-after-ms` (preferred) or `retry-after` (seconds or an HTTP date).

    Source: the OpenAI and Anthropic SDKs' retry code reads these two headers in this order.
    """
    if not headers:
        return None
    value = headers.get("retry-after-ms")
    if value:
        try:
            return float(value) / 1000.0
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    import time
    from email.utils import parsedate_to_datetime  # rare path: keep it off import time

    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None
