"""Observers: one hook in the shared flow for logging, OpenTelemetry and anything else.

The `Supervisor` that both drivers ask at every step tells the observers of a call what
happened: the call started, an attempt's request went out, its headers came, its first token
came, a retry was decided (with the error and the wait), a `Reset` was emitted, and the call
ended (a Response: complete, partial or cancelled; or an error). Nothing is reported per chunk
except the first one.

An `Observer` is asked once per call, at its first request, and returns a `CallObserver` that
follows that call, or None to skip it (which costs nothing afterwards). Observers come from
`Client(observers=[...])` and from `add_observer()` (process-wide, how
`tally_client.otel.instrument()` installs itself). The logger "tally_client" is always
observed, but only while a level it logs at is enabled.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._errors import ProviderError
    from ._events import Reset
    from ._request import Message
    from ._response import Response
    from ._routing import Decision

__all__ = [
    "CallInfo",
    "CallObserver",
    "LoggingObserver",
    "Observer",
    "add_observer",
    "remove_observer",
]

logger = logging.getLogger("tally_client")
logger.addHandler(logging.NullHandler())


@dataclass(frozen=True)
class CallInfo:
    """What an observer may know about a call before it runs.

    Attributes:
        provider: the provider's label in the client ("openai", "local", ...).
        provider_kind: the provider class's own name ("openai", "anthropic", "gemini").
        protocol: "openai-chat", "openai-responses", "anthropic" or "gemini".
        base_url: the provider's base URL.
        model: the model requested.
        stream: True for SSE delivery, False for an atomic call.
        decision: the routing Decision followed, if any.
        max_tokens: the output limit requested, in tokens, if any.
        temperature: the sampling temperature requested, if any.
        structured: a JSON schema was requested.
        messages: the messages sent (content: an observer shows them only when its user
            opted in).
    """

    provider: str
    provider_kind: str
    protocol: str
    base_url: str
    model: str
    stream: bool
    decision: Decision | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    structured: bool = False
    messages: Sequence[Message] = ()


class CallObserver:
    """Follows one call. Every method is a no-op here: override the ones you need.

    Methods are called from the thread or task that runs the call; they must not block and
    should not raise (an exception propagates into the call).
    """

    def attempt(self, number: int) -> None:
        """Attempt `number` (1 for the first) is about to send its request."""

    def headers(self, status: int, headers: Mapping[str, str]) -> None:
        """The attempt's response headers arrived with HTTP `status`."""

    def first_token(self, seconds: float) -> None:
        """The attempt's first text, thinking or tool-call delta arrived, `seconds` after
        its request was sent (the attempt's TTFT)."""

    def retry(self, attempt: int, error: ProviderError, wait: float) -> None:
        """Attempt `attempt` failed with `error`; the next starts after `wait` seconds."""

    def reset(self, event: Reset) -> None:
        """A `Reset` was emitted: output already shown is to be discarded."""

    def finished(self, response: Response) -> None:
        """The call ended with `response`: state "complete", "partial" or "cancelled"."""

    def failed(self, error: ProviderError) -> None:
        """The call failed with `error` (its `.partial` holds what arrived). Final."""


class Observer:
    """Decides, per call, whether and how to follow it."""

    def start(self, call: CallInfo) -> CallObserver | None:
        """Return the CallObserver for `call`, or None to leave it unobserved."""
        return None


_observers: list[Observer] = []


def add_observer(observer: Observer) -> None:
    """Observe every call of every client in this process (idempotent for one observer)."""
    if observer not in _observers:
        _observers.append(observer)


def remove_observer(observer: Observer) -> None:
    """Stop observing calls with `observer` (no error if it was not added)."""
    if observer in _observers:
        _observers.remove(observer)


def start_all(own: Sequence[Observer], call: CallInfo) -> tuple[CallObserver, ...]:
    """The call observers of a call: the client's own, the process-wide ones, logging."""
    found: list[CallObserver] = []
    for observer in (*own, *_observers, _LOGGING):
        watcher = observer.start(call)
        if watcher is not None:
            found.append(watcher)
    return tuple(found)


def _error_name(error: BaseException) -> str:
    status = getattr(error, "status_code", None)
    return f"{type(error).__name__}" + (f" (HTTP {status})" if status is not None else "")


class _LoggedCall(CallObserver):
    """One log line per attempt event; never content, never keys, never error messages
    (a provider's message may quote the request)."""

    __slots__ = ("_where",)

    def __init__(self, call: CallInfo) -> None:
        self._where = f"{call.provider}/{call.model}"

    def attempt(self, number: int) -> None:
        logger.debug("%s: attempt %d: request sent", self._where, number)

    def headers(self, status: int, headers: Mapping[str, str]) -> None:
        request_id = headers.get("x-request-id") or headers.get("request-id")
        logger.debug(
            "%s: headers: HTTP %d, %s%s",
            self._where,
            status,
            headers.get("content-type", "no content-type"),
            f", request id {request_id}" if request_id else "",
        )

    def first_token(self, seconds: float) -> None:
        logger.debug("%s: first token after %.3f s", self._where, seconds)

    def retry(self, attempt: int, error: ProviderError, wait: float) -> None:
        logger.info(
            "%s: attempt %d failed (%s); retrying in %.2f s",
            self._where,
            attempt,
            _error_name(error),
            wait,
        )

    def reset(self, event: Reset) -> None:
        logger.debug(
            "%s: reset before attempt %d: %d characters shown are discarded",
            self._where,
            event.attempt,
            len(event.discarded_text),
        )

    def finished(self, response: Response) -> None:
        usage, m = response.usage, response.metrics
        tokens = (
            f"{usage.input_tokens} in / {usage.output_tokens} out tokens"
            if usage.reported
            else "usage not reported"
        )
        ttft = "n/a" if m.ttft is None else f"{m.ttft:.3f} s"
        rate = (
            ""
            if m.output_tokens_per_second is None
            else f", {m.output_tokens_per_second:.1f} tokens/s"
        )
        level = logging.INFO if response.state == "partial" else logging.DEBUG
        logger.log(
            level,
            "%s: finished: %s, finish reason %s, %s, TTFT %s, total %.3f s%s, %d attempt(s)",
            self._where,
            response.state,
            response.finish_reason,
            tokens,
            ttft,
            m.total_seconds,
            rate,
            len(response.attempts),
        )

    def failed(self, error: ProviderError) -> None:
        logger.info(
            "%s: failed after %d attempt(s): %s",
            self._where,
            max(1, len(error.attempts)),
            _error_name(error),
        )


class LoggingObserver(Observer):
    """Logs each call to the "tally_client" logger: DEBUG per attempt event, INFO for
    retries, partial results and failures. Follows a call only if that logger is enabled
    for INFO or DEBUG when the call starts, so an unconfigured program pays nothing."""

    def start(self, call: CallInfo) -> CallObserver | None:
        """See Observer.start."""
        return _LoggedCall(call) if logger.isEnabledFor(logging.INFO) else None


_LOGGING = LoggingObserver()
