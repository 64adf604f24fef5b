"""The httpx boundary shared by both drivers: requests, stopping a call, time limits, errors.

One mechanism stops a call in every phase, for `close()` from any thread or task and for a
time limit alike: the call's `Link` is marked and the connection it uses is shut down, which
wakes whatever read is blocked on it (in a thread or on an event loop); the driver then sees
the mark. A sync call learns its connection from `SupervisedTransport` (`_transport.py`) as
soon as its request is written, so this works while waiting for headers too; an async call
awaits its headers in a cancel scope that the Link cancels. A sleep between attempts waits on
an event that `close()` sets.

Time limits on the body are ours, not httpcore's: httpcore takes one read timeout per body,
which cannot follow a stream from "waiting for the first token" to "between tokens". The
driver only notes when it blocks in a read and when the read returns (`Supervisor`); the
process's one `Watchdog` thread checks each watched call when its deadline comes and shuts
the connection down if the call is still blocked past it. Nothing is scheduled per chunk.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import os
import socket
import threading
import time
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

import httpx

from ._errors import (
    ConfigurationError,
    ConnectError,
    ConnectTimeout,
    PoolTimeout,
    ProtocolError,
    ProviderError,
    StreamInterrupted,
    TransportError,
)
from ._request import WireRequest
from ._supervisor import Supervisor

__all__ = [
    "CALLING",
    "SSE_TYPE",
    "Link",
    "Watch",
    "body_timeout",
    "build",
    "is_sse",
    "map_error",
    "shutdown",
    "watchdog",
]

SSE_TYPE = "text/event-stream"


def build(
    http: httpx.Client | httpx.AsyncClient, wire: WireRequest, sup: Supervisor
) -> httpx.Request:
    """The httpx request for one attempt, with this attempt's connect and header limits."""
    if http.is_closed:  # a stream made before its client closed, iterated after
        raise ConfigurationError(
            "the Client was closed before this stream was iterated: iterate streams inside "
            "the client's `with` block, or make a new Client"
        )
    connect = sup.connect_timeout()
    timeout = httpx.Timeout(connect=connect, read=sup.header_timeout(), write=connect, pool=connect)
    return http.build_request(
        wire.method, wire.url, json=wire.json, headers=wire.headers, timeout=timeout
    )


def body_timeout(request: httpx.Request, sup: Supervisor) -> None:
    """Relax the socket read limit for the body to the safety net (the rest of `total`).

    httpcore takes the read limit from the request's "timeout" extension when body reading
    starts; the real limits are enforced by the Watchdog.
    """
    timeouts = request.extensions.get("timeout")
    if isinstance(timeouts, dict):
        timeouts["read"] = sup.body_socket_timeout()


def is_sse(response: httpx.Response) -> bool:
    """True when the response is a 2xx `text/event-stream`."""
    return response.is_success and SSE_TYPE in response.headers.get("content-type", "")


class Link:
    """What a call shares with the connection it is using; the handle that stops it.

    Attributes:
        closed: set by `close()` from anywhere; every blocking point checks it.
        stream: the network stream carrying the call's current request, or None.
    """

    __slots__ = ("_lock", "cancel", "closed", "stream")

    def __init__(self) -> None:
        self.closed = False
        self.stream: Any = None
        self._lock = threading.Lock()  # a shutdown never hits a connection back in the pool
        self.cancel: Callable[[], object] | None = None
        """Set by the async driver while it awaits the response headers: cancels that await
        (only `close()` calls it, on the event loop; the Watchdog never does)."""

    def attach(self, stream: Any) -> None:
        """The call uses `stream` (a network stream, or a socket about to connect) now;
        refuse if it was closed meanwhile.

        Raises:
            httpcore.WriteError: the call was closed: no request byte may leave.
        """
        self.stream = stream
        if self.closed:
            import httpcore

            shutdown(stream)
            raise httpcore.WriteError("the call was closed before its request was sent")

    def detach(self) -> None:
        """The call is done with its connection (it may go back to the pool): forget it."""
        with self._lock:
            self.stream = None

    def shutdown(self) -> None:
        """Shut the call's current connection down, if it still has one. Any thread."""
        with self._lock:
            if self.stream is not None:
                shutdown(self.stream)

    def interrupt(self) -> None:
        """Mark the call closed and end whatever it is blocked in.

        Safe from any thread for a sync call; from any task on its event loop for an async one.
        """
        self.closed = True
        self.shutdown()
        cancel = self.cancel
        if cancel is not None:
            cancel()


CALLING: ContextVar[Link | None] = ContextVar("tally_client_calling", default=None)
"""The call whose request this thread or task is sending (set around `send()`)."""


def shutdown(stream: Any) -> None:
    """Shut a network stream's socket down, from any thread.

    shutdown() rather than close(): closing a socket does not wake a thread blocked in recv()
    on it, and an event loop must close its own transports; after shutdown() the blocked read
    sees the end of the stream. asyncio's `TransportSocket` has shutdown() too.
    """
    if isinstance(stream, socket.socket):  # still connecting
        sock: Any = stream
    else:
        try:
            sock = stream.get_extra_info("socket")
        except Exception:  # a stream that cannot say: nothing to shut down
            return
    if sock is not None and hasattr(sock, "shutdown"):
        with contextlib.suppress(OSError):  # already closed: the read has ended anyway
            sock.shutdown(socket.SHUT_RDWR)


class Watch:
    """One call being watched: `fired` names the limit that passed, if one did."""

    __slots__ = ("active", "fired", "link", "sup")

    def __init__(self, sup: Supervisor, link: Link) -> None:
        self.sup: Supervisor | None = sup
        self.link: Link | None = link
        self.active = True
        self.fired: str | None = None


class Watchdog:
    """One daemon thread that ends body reads whose deadline passed, sync and async alike.

    Nothing is done per chunk: each watched call is checked when its deadline (or, at the
    latest, its idle limit) comes; the check recomputes the deadline from the supervisor,
    which the reading side keeps current, and only then fires or sleeps on. Firing shuts the
    call's connection down, which wakes a blocked read in a thread or on an event loop.
    Fork-safe: a child process starts its own thread on first use.
    """

    def __init__(self) -> None:
        self._reset()
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=self._reset)

    def _reset(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, Watch]] = []
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None

    def watch(self, sup: Supervisor, link: Link) -> Watch:
        """Start watching a call's body reads; call `unwatch` when reading ends."""
        entry = Watch(sup, link)
        with self._cond:
            self._schedule(entry, time.monotonic())
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="tally-client-watchdog", daemon=True
                )
                self._thread.start()
            self._cond.notify()
        return entry

    @staticmethod
    def unwatch(entry: Watch) -> None:
        """Stop watching. The heap entry stays until its time comes up, holding nothing: a
        finished call must not be kept alive for an idle limit's length."""
        entry.active = False
        entry.sup = entry.link = None

    def _schedule(self, entry: Watch, now: float) -> None:
        sup = entry.sup
        assert sup is not None  # only active entries are scheduled
        limit = sup.deadline()
        when = now + (sup.timeouts.idle or 1.0)  # re-check at least this often
        if limit is not None and limit[0] < when:
            when = limit[0]
        heapq.heappush(self._heap, (when, next(self._seq), entry))

    def _run(self) -> None:
        cond = self._cond
        while True:
            with cond:
                while not self._heap:
                    cond.wait()
                when, _, entry = self._heap[0]
                now = time.monotonic()
                if when > now:
                    cond.wait(when - now)
                    continue
                heapq.heappop(self._heap)
                sup, link = entry.sup, entry.link
                if not entry.active or sup is None or link is None:
                    continue
                limit = sup.deadline()
                if limit is None or limit[0] > now or sup.reading_since is None:
                    self._schedule(entry, now)
                    continue
                entry.fired = limit[1]
                entry.active = False
            link.shutdown()


watchdog = Watchdog()
"""The process's watchdog (its thread starts with the first watched call)."""


def map_error(exc: httpx.HTTPError, sup: Supervisor, *, began: bool) -> ProviderError:
    """Our typed error for an httpx exception.

    The result never carries `exc` (its `.request` holds the request headers, API key
    included): raise it `from None`, outside the `except` block that caught `exc`.

    Args:
        exc: what httpx raised.
        sup: the call's supervisor (it classifies timeouts by phase).
        began: whether the response headers had arrived.
    """
    name = sup.provider.label
    if isinstance(exc, httpx.PoolTimeout):
        seconds = sup.timeouts.connect or 0.0
        return PoolTimeout(
            f"every connection of this client's pool was busy for {seconds:g} s (each open "
            "stream holds one): close streams you no longer read, or raise "
            "Client(max_connections=...)",
            provider=name,
            seconds=seconds,
        )
    if isinstance(exc, httpx.ConnectTimeout):
        seconds = sup.timeouts.connect or 0.0
        return ConnectTimeout(
            f"could not connect within {seconds:g} s: {exc}", provider=name, seconds=seconds
        )
    if isinstance(exc, httpx.TimeoutException):
        return sup.timeout_error("total") if began else sup.header_timed_out()
    if isinstance(exc, httpx.ConnectError):
        hint = sup.provider.connect_hint
        return ConnectError(f"could not connect: {exc}{hint}", provider=name)
    if isinstance(exc, httpx.DecodingError):
        return ProtocolError(f"the body could not be decoded: {exc}", provider=name)
    if began:
        return StreamInterrupted(
            f"the connection broke mid-response ({type(exc).__name__}: {exc})", provider=name
        )
    return TransportError(
        f"no response ({type(exc).__name__}: {str(exc) or 'connection closed'})", provider=name
    )
