"""An adaptive concurrency limit (AIMD): a pure object that the sync and async `map()` ask.

Additive increase, multiplicative decrease, as TCP congestion control does it: every call
that succeeds raises the limit by 1/limit (so about +1 per round of `limit` calls), and a 429
(or an overload: 503, 529) cuts it by `backoff`, at most once per round trip, since one burst
of refusals is one signal. A `retry-after` also holds new calls back until it has passed: the
provider said when it will take more. The drivers do the waiting; this object only answers.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from ._errors import APIStatusError, ConfigurationError

__all__ = ["AdaptiveLimit", "LimitChange"]

_OVERLOAD_STATUS = frozenset({429, 503, 529})


@dataclass(frozen=True)
class LimitChange:
    """One change of the adaptive limit.

    Attributes:
        at: seconds since the limit was created.
        limit: the new limit (calls in flight at once).
        reason: "start", "increase", "decrease" (a 429 or overload) or "pause" (a
            retry-after holds new calls back; `limit` unchanged).
        pause: for "pause", how long new calls are held back, in seconds; else 0.0.
    """

    at: float
    limit: int
    reason: str
    pause: float = 0.0


class AdaptiveLimit:
    """How many calls may be in flight now: AIMD between `minimum` and `maximum`.

    Args:
        maximum: the ceiling (the `concurrency=` given to `map()`); the limit starts there.
        minimum: the floor (at least 1).
        backoff: the factor a 429 multiplies the limit by (0 < backoff < 1).
        max_pause: the longest `retry-after` that holds new calls back, in seconds.
        clock: monotonic seconds; injectable for tests.
        trace_size: how many of the latest changes `trace` keeps (older ones are dropped, so
            a long pipeline's memory stays flat); 0 keeps none.

    Attributes:
        trace: the latest changes of the limit, oldest first (at most `trace_size`).
        changes: how many changes there were in all, the dropped ones included.

    Raises:
        ConfigurationError: `maximum` < 1, `minimum` out of range, `backoff` not in (0, 1),
            or `trace_size` < 0.
    """

    def __init__(
        self,
        maximum: int,
        *,
        minimum: int = 1,
        backoff: float = 0.5,
        max_pause: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        trace_size: int = 1000,
    ) -> None:
        if maximum < 1:
            raise ConfigurationError(f"concurrency must be an int >= 1, got {maximum!r}")
        if not 1 <= minimum <= maximum:
            raise ConfigurationError(f"minimum must be between 1 and {maximum}, got {minimum}")
        if not 0.0 < backoff < 1.0:
            raise ConfigurationError(f"backoff must be between 0 and 1, got {backoff}")
        if trace_size < 0:
            raise ConfigurationError(f"trace_size must be >= 0, got {trace_size}")
        self.maximum = maximum
        self.minimum = minimum
        self.backoff = backoff
        self.max_pause = max_pause
        self.clock = clock
        self.in_flight = 0
        self._limit = float(maximum)
        self._start = clock()
        self._paused_until = -math.inf
        self._next_decrease = -math.inf
        self._round_trip = 0.0  # a moving average of call latency, seconds
        self.trace: deque[LimitChange] = deque(maxlen=trace_size)
        self.changes = 0
        self._note(self._start, maximum, "start")

    @property
    def limit(self) -> int:
        """The current limit: calls allowed in flight at once."""
        return int(self._limit)

    def admit(self) -> float:
        """Ask to start one call.

        Returns:
            0.0 when the call may start (it is then counted in flight: call `release()` when
            it ends); otherwise the seconds to wait before asking again, `math.inf` meaning
            "until a call in flight ends".
        """
        now = self.clock()
        if now < self._paused_until:
            return self._paused_until - now
        if self.in_flight >= self.limit:
            return math.inf
        self.in_flight += 1
        return 0.0

    def overloaded(self, error: BaseException) -> bool:
        """Note a failed attempt. A 429, 503 or 529 cuts the limit and honours retry-after.

        Called for every failed attempt of a call in flight, retried or not.

        Returns:
            True when `error` was an overload signal.
        """
        if not isinstance(error, APIStatusError) or error.status_code not in _OVERLOAD_STATUS:
            return False
        now = self.clock()
        if now >= self._next_decrease:
            new = max(float(self.minimum), self._limit * self.backoff)
            if int(new) != self.limit:
                self._note(now, int(new), "decrease")
            self._limit = new
            # One cut per round trip (and per retry-after window): the calls already in
            # flight answer with the old load.
            window = max(self._round_trip, error.retry_after or 0.0, 0.001)
            self._next_decrease = now + min(window, self.max_pause)
        wait = error.retry_after
        if wait is not None and wait > 0:
            until = now + min(wait, self.max_pause)
            if until > self._paused_until:
                self._paused_until = until
                self._note(now, self.limit, "pause", round(until - now, 6))
        return True

    def release(self, succeeded: bool, seconds: float | None = None) -> None:
        """A call admitted by `admit()` ended.

        Args:
            succeeded: it returned a Response (additive increase); False for a failure or a
                cancellation (no change).
            seconds: how long it took, to estimate the round trip; None if unknown.
        """
        self.in_flight = max(0, self.in_flight - 1)
        if seconds is not None and seconds > 0:
            rt = self._round_trip
            self._round_trip = seconds if rt == 0.0 else 0.8 * rt + 0.2 * seconds
        if succeeded and self._limit < self.maximum:
            old = self.limit
            self._limit = min(float(self.maximum), self._limit + 1.0 / self._limit)
            if self.limit != old:
                self._note(self.clock(), self.limit, "increase")

    def _note(self, now: float, limit: int, reason: str, pause: float = 0.0) -> None:
        self.changes += 1
        self.trace.append(LimitChange(round(now - self._start, 6), limit, reason, pause))
