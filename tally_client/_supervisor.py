"""The stream supervisor: accumulation, completeness, time limits and retries, without I/O.

The sync and async drivers (`_stream.py`) do the HTTP and the sleeping; everything they
decide, they ask a `Supervisor`: what time limit the next read has, what a chunk means, whether
a failure is retried and after how long, and what the final `Response` is. One call, one
Supervisor; one attempt, one `Accumulator` and one provider decoder.
"""

from __future__ import annotations

import logging
import time
import warnings
from array import array
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from ._errors import (
    FirstTokenTimeout,
    IdleTimeout,
    ProviderError,
    StreamInterrupted,
    TotalTimeout,
)
from ._events import (
    Finished,
    Reset,
    StreamEvent,
    TextDelta,
    ThinkingDelta,
    ToolCallDelta,
    UsageReported,
)
from ._response import (
    MISSING_USAGE,
    Attempt,
    FinishReason,
    Metrics,
    Response,
    ResponseState,
    ToolCall,
    Usage,
)
from ._retry import RetryPolicy, Timeouts

if TYPE_CHECKING:
    from ._decision import Decision, Price
    from ._observe import CallInfo, CallObserver, Observer
    from ._output import StructuredCall
    from .providers._base import Provider, StreamDecoder

__all__ = ["Accumulator", "ProxyBufferingWarning", "Supervisor"]

log = logging.getLogger("tally_client")

BURST_MIN_DELTAS = 8
"""The buffering signal needs at least this many content deltas,"""
BURST_MIN_SILENCE = 0.5
"""a first token at least this many seconds after the request,"""
BURST_DELTAS_PER_READ = 8
"""and on average at least this many deltas per network read that carried any."""


class ProxyBufferingWarning(UserWarning):
    """A stream's first token came after a long silence, then its deltas arrived in bursts.

    The likely cause is a proxy or load balancer buffering `text/event-stream` responses
    (nginx without `proxy_buffering off` / `X-Accel-Buffering: no`, some corporate proxies):
    the user sees the whole answer at once, as if the call were atomic.
    """


_JOIN_EVERY = 32
"""Text deltas kept apart before they are joined into one string (memory near the text's size)."""


class Accumulator:
    """Builds one attempt's output from its events, and times its deltas (pure)."""

    __slots__ = (
        "_calls",
        "_gaps",
        "_joined",
        "_text",
        "_thinking",
        "finish_reason",
        "first_at",
        "last_at",
        "raw_finish_reason",
        "started",
        "usage",
    )

    def __init__(self, started: float) -> None:
        self.started = started
        self._text: list[str] = []
        self._joined = 0  # pieces of _text already joined into blocks
        # Made when first needed: a call waiting for its headers holds only what it uses.
        self._thinking: list[str] | None = None
        self._calls: dict[int, list[Any]] | None = None
        self._gaps: array[float] | None = None  # seconds between deltas, 8 bytes each
        self.usage: Usage = MISSING_USAGE
        self.finish_reason: FinishReason | None = None
        self.raw_finish_reason: str | None = None
        self.first_at: float | None = None
        self.last_at = started

    def add(self, event: StreamEvent, now: float) -> None:
        """Fold one event in; `now` is its arrival time in seconds (monotonic clock)."""
        kind = type(event)
        if kind is TextDelta:
            text = self._text
            text.append(event.text)  # type: ignore[union-attr]
            if len(text) - self._joined >= _JOIN_EVERY:
                # Join the newest pieces into one: a long answer holds a few strings of its
                # length, not one small string object per delta (linear: old text is kept).
                text[self._joined :] = ["".join(text[self._joined :])]
                self._joined += 1
        elif kind is ThinkingDelta:
            if self._thinking is None:
                self._thinking = []
            self._thinking.append(event.text)  # type: ignore[union-attr]
        elif kind is ToolCallDelta:
            assert isinstance(event, ToolCallDelta)
            calls = self._calls
            if calls is None:
                calls = self._calls = {}
            slot = calls.get(event.index)
            if slot is None:
                calls[event.index] = [event.id, event.name, [event.arguments]]
            else:
                if event.id and not slot[0]:
                    slot[0] = event.id
                if event.name and not slot[1]:
                    slot[1] = event.name
                slot[2].append(event.arguments)
        elif kind is UsageReported:
            self.usage = event.usage  # type: ignore[union-attr]
            return
        elif kind is Finished:
            self.finish_reason = event.finish_reason  # type: ignore[union-attr]
            self.raw_finish_reason = event.raw  # type: ignore[union-attr]
            return
        else:
            return
        if self.first_at is None:
            self.first_at = now
            self._gaps = array("d")
        else:
            self._gaps.append(now - self.last_at)  # type: ignore[union-attr]
        self.last_at = now

    @property
    def text(self) -> str:
        """The text so far."""
        return "".join(self._text)

    @property
    def thinking(self) -> str:
        """The thinking/reasoning text so far."""
        return "".join(self._thinking) if self._thinking is not None else ""

    @property
    def has_output(self) -> bool:
        """True once any text, thinking or tool-call delta arrived."""
        return self.first_at is not None

    def tool_calls(self) -> tuple[ToolCall, ...]:
        """The tool calls so far, in index order, arguments joined."""
        if self._calls is None:
            return ()
        return tuple(
            ToolCall(slot[0] or f"call_{index}", slot[1] or "", "".join(slot[2]))
            for index, slot in sorted(self._calls.items())
        )

    def metrics(self, end: float) -> Metrics:
        """TTFT, inter-token latency and rate for this attempt, ended at `end` (seconds)."""
        gaps = self._gaps or ()
        ttft = None if self.first_at is None else self.first_at - self.started
        itl_mean = itl_p95 = None
        if gaps:
            itl_mean = sum(gaps) / len(gaps)
            ordered = sorted(gaps)
            itl_p95 = ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]
        total = end - self.started
        rate = None
        out = self.usage.output_tokens
        if out and ttft is not None and gaps and total > ttft:
            rate = out / (total - ttft)
        chunks = len(gaps) + (self.first_at is not None)
        # Deltas of one network read share its arrival time, so a zero gap means "arrived in
        # the same read". A proxy that buffers shows as a long silence, then many deltas per
        # read; a busy client reads late but does not make the wire deliver in bursts.
        reads = 1 + sum(1 for gap in gaps if gap > 0.0)
        buffered = bool(
            ttft is not None
            and chunks >= BURST_MIN_DELTAS
            and ttft >= BURST_MIN_SILENCE
            and chunks >= BURST_DELTAS_PER_READ * reads
        )
        return Metrics(ttft, total, itl_mean, itl_p95, rate, chunks, buffered)


class Supervisor:
    """Decides everything about one call that is not I/O.

    Args:
        provider: the provider codec.
        model: the model name sent.
        stream: streamed (True) or atomic (False) delivery.
        policy: the retry policy.
        timeouts: the time limits.
        decision: the routing decision, attached to the Response.
        structured: the structured-output check of the call (None without `schema=`).
        clock: monotonic seconds; injectable for tests.
        price: the price each attempt is billed at, when not the decision's (a Batch API
            request's discounted price).
    """

    __slots__ = (
        "_attempts",
        "_call",
        "_continuation",
        "_discarded",
        "_meta",
        "_observers",
        "_partials",
        "_price",
        "_read_at",
        "_reset_error",
        "_watch",
        "acc",
        "attempt",
        "clock",
        "decision",
        "decoder",
        "model",
        "on_end",
        "policy",
        "provider",
        "reading_since",
        "secrets",
        "started",
        "stream",
        "structured",
        "timeouts",
    )

    def __init__(
        self,
        provider: Provider,
        model: str,
        *,
        stream: bool,
        policy: RetryPolicy,
        timeouts: Timeouts,
        decision: Decision | None = None,
        price: Price | None = None,
        structured: StructuredCall | None = None,
        clock: Callable[[], float] = time.monotonic,
        observers: Sequence[Observer] = (),
        call: CallInfo | None = None,
    ) -> None:
        self.provider = provider
        self.model = model
        self.stream = stream
        self.policy = policy
        self.timeouts = timeouts
        self.decision = decision
        self._price = price if price is not None or decision is None else decision.price
        self.on_end: Callable[[Response], None] | None = None
        """Called once with the call's final Response (complete, partial, failed's partial or
        cancelled), e.g. so the router learns the outcome; its exceptions are swallowed."""
        self.structured = structured
        self.clock = clock
        self.started = clock()
        self.attempt = 0
        self.acc = Accumulator(self.started)
        self.decoder: StreamDecoder | None = None
        # Tuples, grown by the rare failed attempt: empty ones cost nothing per call.
        self._attempts: tuple[Attempt, ...] = ()
        self._partials: tuple[Response, ...] = ()
        self._discarded: tuple[str, ...] = ()
        self._reset_error: ProviderError | None = None
        self.reading_since: float | None = None
        self._read_at: float | None = None  # when the current network read returned
        self._meta: tuple[str | None, str | None] = (None, None)  # an atomic body's model, id
        self._observers = observers
        self._call = call
        self._watch: tuple[CallObserver, ...] = ()  # observers following this call (_observe)
        self._continuation: Any = None  # an atomic body's continuation data
        self.secrets: tuple[str, ...] = ()
        """Credentials beyond the provider's own (auth headers given for this call), masked
        in every error like the provider's key."""

    # -- attempts ------------------------------------------------------------------------

    def begin(self) -> None:
        """Start the next attempt: a fresh accumulator and decoder."""
        now = self.clock()
        if self.attempt == 0:
            self.started = now  # the call's clock starts when its first request goes out
            self._watch = self._start_observers()
        self.attempt += 1
        self.acc = Accumulator(now)
        self.decoder = self.provider.new_decoder() if self.stream else None
        self.reading_since = None
        self._read_at = None
        for watcher in self._watch:
            watcher.attempt(self.attempt)

    def response_headers(self, status: int, headers: Mapping[str, str]) -> None:
        """The driver received an attempt's response headers (tells the observers)."""
        for watcher in self._watch:
            watcher.headers(status, headers)

    @property
    def terminal(self) -> bool:
        """True once the current attempt's stream sent the provider's terminal event."""
        return self.decoder is not None and self.decoder.terminal

    def connect_timeout(self) -> float | None:
        """Seconds the driver may spend connecting (bounded by what is left of `total`)."""
        return _smaller(self.timeouts.connect, self._remaining())

    def header_timeout(self) -> float | None:
        """Seconds the driver may wait for response headers.

        A stream's headers come before its first token: the first-token limit applies. An
        atomic call's come after the whole generation: only the total limit does.
        """
        first = self.timeouts.first_token if self.stream else None
        return _smaller(first, self._remaining())

    def body_socket_timeout(self) -> float | None:
        """The socket read limit once the body starts: a safety net, the rest of `total`.

        httpcore reads it once per body, so it cannot follow the phases; `deadline()` does.
        """
        return self._remaining()

    def read_started(self) -> None:
        """The driver is about to block reading the body."""
        self.reading_since = self.clock()

    def read_ended(self) -> None:
        """The body ended: the driver no longer reads."""
        self.reading_since = None

    def read_returned(self) -> None:
        """A read of the body returned data; the events it holds are fed next.

        Every event of one network read gets that read's arrival time, so the metrics describe
        arrival on the wire, not how fast the consumer asked for the next event.

        Raises:
            FirstTokenTimeout, TotalTimeout: the limit passed even though bytes kept coming
                (keep-alive comments, events without output, a trickle).
        """
        now = self.clock()
        self.reading_since = None
        self._read_at = now
        t = self.timeouts
        if t.total is not None and now - self.started > t.total:
            raise self.timeout_error("total")
        if (
            self.stream
            and t.first_token is not None
            and not self.acc.has_output
            and now - self.acc.started > t.first_token
        ):
            raise self.timeout_error("first_token")

    def deadline(self) -> tuple[float, str] | None:
        """When the current body read must be abandoned, and which limit that is.

        `total` and, before a stream's first output, `first_token` are absolute deadlines;
        `idle` counts only time spent blocked in the current read (a consumer that is slow to
        ask for the next event is not a stalled stream) and applies once output began (for
        an atomic call, once its headers arrived). None: no limit applies now.
        """
        t = self.timeouts
        best: tuple[float, str] | None = None
        if t.total is not None:
            best = (self.started + t.total, "total")
        if self.stream and not self.acc.has_output:
            if t.first_token is not None:
                best = _earlier(best, (self.acc.started + t.first_token, "first_token"))
        elif t.idle is not None and self.reading_since is not None:
            best = _earlier(best, (self.reading_since + t.idle, "idle"))
        return best

    def timeout_error(self, kind: str) -> ProviderError:
        """The typed error for a limit that passed: "total", "first_token" or "idle"."""
        name, t = self.provider.label, self.timeouts
        if kind == "total":
            total = t.total or 0.0
            return TotalTimeout(f"the call ran past {total:g} s", provider=name, seconds=total)
        if kind == "first_token":
            first = t.first_token or 0.0
            return FirstTokenTimeout(
                f"no output within {first:g} s of sending the request", provider=name, seconds=first
            )
        idle = t.idle or 0.0
        return IdleTimeout(
            f"the stream stalled: no byte for {idle:g} s", provider=name, seconds=idle
        )

    def header_timed_out(self) -> ProviderError:
        """The typed error for response headers that did not come within `header_timeout()`."""
        total = self.timeouts.total
        if total is not None and self.clock() - self.started >= total - 0.01:
            return self.timeout_error("total")
        return self.timeout_error("first_token" if self.stream else "total")

    def feed(self, event: str, data: str) -> Sequence[StreamEvent]:
        """Decode one SSE event of the current attempt and fold it in.

        Returns:
            The events to yield; a pending `Reset` comes first.

        Raises:
            ProviderError: an in-stream error event, or data the protocol does not allow
                (ProtocolError, also for JSON of an unexpected shape: the codecs check shapes).
                Anything else is a bug here and propagates as it is, never retried.
        """
        events = self.decoder.feed(event, data)  # type: ignore[union-attr]
        if not events:
            return events
        now = self._read_at
        if now is None:
            now = self.clock()
        acc = self.acc
        first = acc.first_at is None
        for ev in events:
            acc.add(ev, now)
        if first and self._watch and acc.first_at is not None:
            for watcher in self._watch:
                watcher.first_token(acc.first_at - acc.started)
        if self._reset_error is not None:
            reset = Reset(self.attempt, "".join(self._discarded), self._reset_error)
            self._reset_error = None
            self._discarded = ()
            for watcher in self._watch:
                watcher.reset(reset)
            return (reset, *events)
        return events

    def end_of_stream(self) -> Response | float:
        """The body ended cleanly. Returns the Response, or a delay before a retry.

        Without the provider's terminal event the attempt is partial: it is retried while
        the policy allows, and the longest partial Response is returned once it does not.
        """
        decoder = self.decoder
        assert decoder is not None
        if decoder.terminal:
            return self._finish("complete")
        error = StreamInterrupted(
            "the stream ended before its terminal event (the text may be cut anywhere)",
            provider=self.provider.label,
        )
        partial = self._build("partial")
        delay = self._next_delay(error, partial)
        if delay is None:
            # The last attempt ended cleanly, so this is a partial result, not a failure,
            # even when the longest text came from an attempt that broke.
            return self._ended(replace(self._longest_partial(partial), state="partial"))
        return delay

    def atomic_body(self, body: Any) -> Response:
        """The Response for an atomic call's decoded JSON body.

        Raises:
            ProtocolError: the body is not the provider's response shape.
        """
        result = self.provider.decode_body(body)
        now = self.clock()
        for ev in result.events:
            self.acc.add(ev, now)
        self.acc.first_at = now  # an atomic call's first token arrives with the last
        self._meta = (result.model, result.response_id)
        for watcher in self._watch:
            watcher.first_token(now - self.acc.started)
        self._continuation = getattr(result, "continuation", None)
        return self._finish("complete")

    def atomic_events(self) -> list[StreamEvent]:
        """The events an atomic result replays to a stream consumer, in order."""
        acc = self.acc
        events: list[StreamEvent] = []
        thinking, text = acc.thinking, acc.text
        if thinking:
            events.append(ThinkingDelta(thinking))
        if text:
            events.append(TextDelta(text))
        for i, call in enumerate(acc.tool_calls()):
            events.append(ToolCallDelta(i, call.id, call.name, call.arguments))
        if acc.usage.reported:
            events.append(UsageReported(acc.usage))
        if acc.finish_reason is not None:
            events.append(Finished(acc.finish_reason, acc.raw_finish_reason or ""))
        return events

    def fail(self, error: ProviderError) -> float:
        """An attempt failed with `error`. Returns the wait before the next attempt.

        Raises:
            ProviderError: `error` itself, with `partial` (the longest partial Response)
                and `attempts` set, when it is not retried.

        Every failed attempt's error passes here first, so this is where the provider's
        credentials are masked in it (`Provider.redact`), whatever raised it.
        """
        self.provider.redact(error, self.secrets)
        partial = self._build("interrupted")
        delay = self._next_delay(error, partial)
        if delay is None:
            error.partial = self._longest_partial(partial)
            error.attempts = self._attempts
            self._ended(error.partial, error)
            raise error
        return delay

    def cancelled(self) -> Response:
        """The caller closed the stream: the Response with the text so far."""
        return self._ended(self._build("cancelled"))

    def snapshot(self) -> Response:
        """The current attempt's Response so far (state "partial" until it ends)."""
        return self._build("partial")

    # -- internals -----------------------------------------------------------------------

    def _remaining(self) -> float | None:
        if self.timeouts.total is None:
            return None
        return max(0.001, self.timeouts.total - (self.clock() - self.started))

    def _next_delay(self, error: ProviderError, partial: Response) -> float | None:
        delay = self.policy.delay(self.attempt, error)
        if delay is not None:
            total = self.timeouts.total
            if total is not None and self.clock() - self.started + delay >= total:
                delay = None
        self._attempts += (
            Attempt(
                self.attempt, error, len(partial.text), delay or 0.0, partial.usage, self._price
            ),
        )
        self._partials += (partial,)
        if delay is not None:
            for watcher in self._watch:
                watcher.retry(self.attempt, error, delay)
        if delay is not None and self.stream:
            if self.acc.has_output:  # text, thinking or tool-call deltas were shown
                self._discarded += (partial.text,)
            if self._discarded:
                # What this and earlier failed attempts showed is cleared by one Reset,
                # yielded before the next attempt's first event.
                self._reset_error = error
        return delay

    def _longest_partial(self, last: Response) -> Response:
        best = max(self._partials, key=lambda r: len(r.text), default=last)
        return replace(best, attempts=self._attempts)

    def _finish(self, state: ResponseState) -> Response:
        self._attempts += (
            Attempt(self.attempt, None, len(self.acc.text), 0.0, self.acc.usage, self._price),
        )
        response = self._build(state)
        if response.metrics.buffered:
            warnings.warn(
                f"the first token came after {response.metrics.ttft:.1f} s and then "
                f"{response.metrics.chunks} deltas arrived in bursts (8 or more per network "
                f"read): a proxy between you and "
                f"{self.provider.label} is probably buffering the stream "
                "(nginx: proxy_buffering off, or send X-Accel-Buffering: no)",
                ProxyBufferingWarning,
                stacklevel=4,
            )
        return self._ended(response)

    def _start_observers(self) -> tuple[CallObserver, ...]:
        from ._observe import CallInfo, start_all

        provider = self.provider
        call = self._call or CallInfo(
            provider.label, provider.name, provider.protocol, provider.base_url, self.model,
            self.stream, self.decision, structured=self.structured is not None,
        )  # fmt: skip
        return start_all(self._observers, call)

    def _ended(self, response: Response, error: ProviderError | None = None) -> Response:
        """The call ended (once per call): the learning hook, then the observers."""
        hook, self.on_end = self.on_end, None
        if hook is not None:
            try:
                hook(response)
            except Exception:  # learning must never fail the call, but must not hide either
                log.debug("the router's learning hook failed", exc_info=True)
        watch, self._watch = self._watch, ()
        for watcher in watch:
            if error is None:
                watcher.finished(response)
            else:
                watcher.failed(error)
        return response

    def _build(self, state: ResponseState) -> Response:
        acc = self.acc
        if self.decoder is not None:
            model, response_id = self.decoder.model, self.decoder.response_id
            continuation = getattr(self.decoder, "continuation", None)
        else:
            model, response_id = self._meta
            continuation = self._continuation
        text = acc.text
        usage = acc.usage
        if usage.final and state != "complete":
            usage = replace(usage, final=False)  # counts of a call that did not end
        return Response(
            text=text,
            tool_calls=acc.tool_calls(),
            usage=usage,
            finish_reason=acc.finish_reason,
            state=state,
            model=model or self.model,
            provider=self.provider.label,
            decision=self.decision,
            metrics=acc.metrics(self.clock()),
            attempts=self._attempts,
            thinking=acc.thinking,
            raw_finish_reason=acc.raw_finish_reason,
            response_id=response_id,
            continuation=continuation,
        )


def check_structured(response: Response, structured: StructuredCall | None) -> Response:
    """The strict final check for structured output (see `StructuredCall.check`).

    Raises:
        StructuredOutputError: a schema was requested and the complete output does not
            match it (the error carries the Response, the errors and the last partial value).
    """
    return response if structured is None else structured.check(response)


def _earlier(a: tuple[float, str] | None, b: tuple[float, str]) -> tuple[float, str]:
    return b if a is None or b[0] < a[0] else a


def _smaller(a: float | None, b: float | None) -> float | None:
    if a is None:
        return b
    if b is None:
        return a
    return a if a < b else b
