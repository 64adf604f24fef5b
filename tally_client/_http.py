"""The httpx boundary shared by both drivers: requests, supervised body reads, error mapping.

Time limits on the body are ours, not httpcore's: httpcore takes one read timeout per body,
which cannot follow a stream from "waiting for the first token" to "between tokens". Every
read goes through `SupervisedBody`, which tells the supervisor when it blocks and when it
returns; an async read is bounded by `anyio.fail_after`, a sync one by the `Watchdog`
thread, which shuts the socket down when the supervisor's deadline passes.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator

import anyio
import httpx

from ._errors import (
    ConfigurationError,
    ConnectError,
    ConnectTimeout,
    ProtocolError,
    ProviderError,
    StreamInterrupted,
    TransportError,
)
from ._request import WireRequest
from ._supervisor import Supervisor

__all__ = [
    "SSE_TYPE",
    "SupervisedBody",
    "Watch",
    "body_timeout",
    "build",
    "interrupt",
    "is_sse",
    "map_error",
    "watchdog",
]

SSE_TYPE = "text/event-stream"


def build(
    http: httpx.Client | httpx.AsyncClient, wire: WireRequest, sup: Supervisor
) -> httpx.Request:
    """The httpx request for one attempt, with this attempt's connect and header limits."""
    if http.is_closed:  # a stream made before its client closed, iterated after
        raise ConfigurationError("the client of this stream is closed: start the call again")
    connect = sup.connect_timeout()
    timeout = httpx.Timeout(connect=connect, read=sup.header_timeout(), write=connect, pool=connect)
    return http.build_request(
        wire.method, wire.url, json=wire.json, headers=wire.headers, timeout=timeout
    )


def body_timeout(request: httpx.Request, sup: Supervisor) -> None:
    """Relax the socket read limit for the body to the safety net (the rest of `total`).

    httpcore takes the read limit from the request's "timeout" extension when body reading
    starts; the real limits are enforced per read by `SupervisedBody`.
    """
    timeouts = request.extensions.get("timeout")
    if isinstance(timeouts, dict):
        timeouts["read"] = sup.body_socket_timeout()


def is_sse(response: httpx.Response) -> bool:
    """True when the response is a 2xx `text/event-stream`."""
    return response.is_success and SSE_TYPE in response.headers.get("content-type", "")


class SupervisedBody:
    """A response's body as `httpx_sse.EventSource` reads it, each read supervised.

    Only `headers`, `iter_text()` and `aiter_text()` are used by EventSource.
    """

    __slots__ = ("_response", "_sup", "headers")

    def __init__(self, response: httpx.Response, sup: Supervisor) -> None:
        self._response = response
        self._sup = sup
        self.headers = response.headers

    def iter_text(self) -> Iterator[str]:
        """The body as text; the Watchdog bounds each blocking read."""
        sup = self._sup
        chunks = self._response.iter_text()
        while True:
            sup.read_started()
            text = next(chunks, None)
            if text is None:
                return
            sup.read_returned()
            yield text

    async def aiter_text(self) -> AsyncIterator[str]:
        """The body as text; each read is bounded by the supervisor's deadline."""
        sup = self._sup
        chunks = self._response.aiter_text()
        while True:
            sup.read_started()
            limit = sup.deadline()
            try:
                with anyio.fail_after(None if limit is None else limit[0] - sup.clock()):
                    text = await anext(chunks, None)
            except TimeoutError:
                limit = sup.deadline()
                raise sup.timeout_error(limit[1] if limit else "idle") from None
            if text is None:
                return
            sup.read_returned()
            yield text

    def read_text(self) -> str:
        """The whole body (an atomic call), each blocking read bounded by the Watchdog."""
        return "".join(self.iter_text())

    async def aread_text(self) -> str:
        """The whole body (an atomic call), each read bounded by the supervisor's deadline."""
        return "".join([text async for text in self.aiter_text()])


def interrupt(response: httpx.Response) -> None:
    """Unblock a read on `response` from another thread: shut its socket down.

    Closing a socket does not wake a thread blocked in recv() on it; shutdown() does. Where
    no socket is reachable (a custom transport), the response is closed instead.
    """
    stream = response.extensions.get("network_stream")
    sock = stream.get_extra_info("socket") if stream is not None else None
    if isinstance(sock, socket.socket):
        with contextlib.suppress(OSError):  # already closed: the read has ended anyway
            sock.shutdown(socket.SHUT_RDWR)
        return
    with contextlib.suppress(Exception):  # best effort from a foreign thread; the owner closes too
        response.close()


class Watch:
    """One sync body being watched: `fired` names the limit that passed, if one did."""

    __slots__ = ("active", "fired", "response", "sup")

    def __init__(self, sup: Supervisor, response: httpx.Response) -> None:
        self.sup = sup
        self.response = response
        self.active = True
        self.fired: str | None = None


class Watchdog:
    """One daemon thread that interrupts sync body reads whose deadline passed.

    Nothing is done per chunk: each watched body is checked when its deadline (or, at the
    latest, its idle limit) comes; the check recomputes the deadline from the supervisor,
    which the reading thread keeps current, and only then fires or sleeps on.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, Watch]] = []
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None

    def watch(self, sup: Supervisor, response: httpx.Response) -> Watch:
        """Start watching a body; call `unwatch` when reading it ends."""
        entry = Watch(sup, response)
        with self._cond:
            self._schedule(entry, time.monotonic())
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="tally-client-watchdog", daemon=True
                )
                self._thread.start()
            self._cond.notify()
        return entry

    def unwatch(self, entry: Watch) -> None:
        """Stop watching (the heap entry is dropped when it comes up)."""
        entry.active = False

    def _schedule(self, entry: Watch, now: float) -> None:
        limit = entry.sup.deadline()
        when = now + (entry.sup.timeouts.idle or 1.0)  # re-check at least this often
        if limit is not None and limit[0] < when:
            when = limit[0]
        heapq.heappush(self._heap, (when, next(self._seq), entry))

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._heap:
                    self._cond.wait()
                when, _, entry = self._heap[0]
                now = time.monotonic()
                if when > now:
                    self._cond.wait(when - now)
                    continue
                heapq.heappop(self._heap)
                if not entry.active:
                    continue
                limit = entry.sup.deadline()
                blocked = entry.sup.reading_since is not None
                if limit is None or limit[0] > now or not blocked:
                    self._schedule(entry, now)
                    continue
                entry.fired = limit[1]
                entry.active = False
            interrupt(entry.response)


watchdog = Watchdog()
"""The process's watchdog (its thread starts with the first sync stream)."""


def map_error(exc: httpx.HTTPError, sup: Supervisor, *, began: bool) -> ProviderError:
    """Our typed error for an httpx exception.

    Args:
        exc: what httpx raised.
        sup: the call's supervisor (it classifies timeouts by phase).
        began: whether the response headers had arrived.
    """
    name = sup.provider.label
    if isinstance(exc, httpx.ConnectTimeout | httpx.PoolTimeout):
        seconds = sup.timeouts.connect or 0.0
        return ConnectTimeout(
            f"could not connect within {seconds:g} s: {exc}", provider=name, seconds=seconds
        )
    if isinstance(exc, httpx.TimeoutException):
        return sup.timeout_error("total") if began else sup.header_timed_out()
    if isinstance(exc, httpx.ConnectError):
        hint = sup.provider.connect_hint
        return ConnectError(f"could not connect: {exc}{f'. {hint}' if hint else ''}", provider=name)
    if isinstance(exc, httpx.DecodingError):
        return ProtocolError(f"the body could not be decoded: {exc}", provider=name)
    if began:
        return StreamInterrupted(
            f"the connection broke mid-response ({type(exc).__name__}: {exc})", provider=name
        )
    return TransportError(
        f"no response ({type(exc).__name__}: {str(exc) or 'connection closed'})", provider=name
    )
