"""The connections under a call, reachable so that a call can be stopped in any phase.

A sync call blocks in four places: connecting, waiting for response headers, reading the body
and sleeping between attempts. Closing it from another thread must end each of them at once.
The body read can be ended through the response's network stream, but httpx gives no handle on
the connection before the headers arrive, and a thread blocked in connect() or recv() wakes
only when its socket is shut down. So the sync clients that tally_client creates use
`SupervisedTransport`: httpx's transport design over httpcore's public
`ConnectionPool(network_backend=...)`, with a network backend of ours whose sockets show
themselves to the call that is using them (a context variable names it) before they connect
and whenever a request is written. Every phase then ends the same way: the call's `Link` is
marked closed and its socket is shut down, which aborts the connect, refuses the write or
wakes the blocked read; the driver sees the mark.

A sync client passed in by the user (`http_client=`) keeps its own transport: there, connecting
and waiting for headers cannot be interrupted (they still end at their time limits). The async
driver needs none of this: it awaits the headers in a cancel scope that close() cancels.

A request can also carry one absolute deadline for all of its socket operations (`DEADLINE`,
set around it by the thread making it): each connect, TLS handshake, write and read then waits
at most until that moment, so a server that trickles bytes cannot stretch the request past it.
The hosted router uses it: its whole decision has one time budget.
"""

from __future__ import annotations

import contextlib
import select
import socket
import ssl
import time
from collections.abc import Iterable, Iterator
from contextvars import ContextVar
from typing import Any

import httpcore
import httpx

from ._http import CALLING

__all__ = ["DEADLINE", "SupervisedTransport", "env_proxies"]

DEADLINE: ContextVar[float | None] = ContextVar("tally_client_deadline", default=None)
"""A `time.monotonic()` moment that every socket operation of the request this thread or task
is making must end by (None: only the per-operation timeouts apply). Set it around the request
and reset it after."""


def _bounded(timeout: float | None) -> float | None:
    """`timeout` (seconds per operation), shortened to what is left before `DEADLINE`.

    Raises:
        TimeoutError: the deadline has passed.
    """
    deadline = DEADLINE.get()
    if deadline is None:
        return timeout
    left = deadline - time.monotonic()
    if left <= 0.0:
        raise TimeoutError("the request's deadline passed")
    return left if timeout is None or left < timeout else timeout


class _Socket(httpcore.NetworkStream):
    """A connection: a blocking socket with a timeout per operation (httpcore's contract)."""

    __slots__ = ("_sock",)

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        try:
            self._sock.settimeout(_bounded(timeout))
            return self._sock.recv(max_bytes)
        except TimeoutError as exc:
            raise httpcore.ReadTimeout(str(exc)) from None
        except OSError as exc:
            raise httpcore.ReadError(str(exc)) from None

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        link = CALLING.get()
        if link is not None:
            link.attach(self)
        try:
            self._sock.settimeout(_bounded(timeout))
            self._sock.sendall(buffer)
        except TimeoutError as exc:
            raise httpcore.WriteTimeout(str(exc)) from None
        except OSError as exc:
            raise httpcore.WriteError(str(exc)) from None

    def close(self) -> None:
        self._sock.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        try:
            self._sock.settimeout(_bounded(timeout))
            return _Socket(ssl_context.wrap_socket(self._sock, server_hostname=server_hostname))
        except TimeoutError as exc:
            self._sock.close()
            raise httpcore.ConnectTimeout(str(exc)) from None
        except OSError as exc:
            self._sock.close()
            raise httpcore.ConnectError(str(exc)) from None

    def get_extra_info(self, info: str) -> Any:
        sock = self._sock
        if info == "socket":
            return sock
        if info == "ssl_object":  # httpcore asks it for the ALPN protocol
            return sock if isinstance(sock, ssl.SSLSocket) else None
        if info == "client_addr":
            return sock.getsockname()
        if info == "server_addr":
            return sock.getpeername()
        if info == "is_readable":  # an idle pooled connection the server closed reads as EOF
            return sock.fileno() < 0 or bool(select.select([sock], [], [], 0)[0])
        return None


def _connect(
    host: str, port: int, timeout: float | None, source: tuple[str, int] | None
) -> socket.socket:
    """`socket.create_connection`, except that the call's Link sees each socket before it
    connects, so that close() can abort a pending connect (shutdown() does, on Linux)."""
    link = CALLING.get()
    error: OSError | None = None
    for family, kind, proto, _, address in socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM):
        sock = socket.socket(family, kind, proto)
        try:
            sock.settimeout(_bounded(timeout))
            if source is not None:
                sock.bind(source)
            if link is not None:
                link.attach(sock)
            sock.connect(address)
            return sock
        except OSError as exc:
            sock.close()
            error = exc
            if link is not None and link.closed:
                break
        except BaseException:  # the call was closed (attach refused it), or worse
            sock.close()
            raise
    raise error or OSError(f"no address found for {host}")


class _Backend(httpcore.NetworkBackend):
    """httpcore's sync network backend contract, over `_Socket`."""

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        source = None if local_address is None else (local_address, 0)
        try:
            sock = _connect(host, port, timeout, source)
            for option in socket_options or ():
                sock.setsockopt(*option)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except TimeoutError as exc:
            raise httpcore.ConnectTimeout(str(exc)) from None
        except OSError as exc:
            raise httpcore.ConnectError(str(exc)) from None
        return _Socket(sock)

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.NetworkStream:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            for option in socket_options or ():
                sock.setsockopt(*option)
            sock.settimeout(timeout)
            sock.connect(path)
        except TimeoutError as exc:
            sock.close()
            raise httpcore.ConnectTimeout(str(exc)) from None
        except OSError as exc:
            sock.close()
            raise httpcore.ConnectError(str(exc)) from None
        return _Socket(sock)

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


def env_proxies() -> bool:
    """True when the environment names an HTTP proxy (HTTP_PROXY, HTTPS_PROXY, ALL_PROXY):
    httpx honours them only with its own transport, so the sync client then keeps it."""
    import urllib.request

    return any(scheme in ("http", "https", "all") for scheme in urllib.request.getproxies())


def _to_httpx(exc: Exception) -> Exception:
    """httpx's exception for an httpcore one: httpx names each of them the same."""
    for cls in type(exc).__mro__:
        if cls.__module__.startswith("httpcore"):
            target = getattr(httpx, cls.__name__, None)
            if isinstance(target, type) and issubclass(target, httpx.HTTPError):
                return target(str(exc))
    return exc


@contextlib.contextmanager
def _mapped() -> Iterator[None]:
    try:
        yield
    except Exception as exc:
        mapped = _to_httpx(exc)
        if mapped is exc:
            raise
        raise mapped from None


def _core_request(request: httpx.Request) -> httpcore.Request:
    url = request.url
    return httpcore.Request(
        method=request.method,
        url=httpcore.URL(
            scheme=url.raw_scheme, host=url.raw_host, port=url.port, target=url.raw_path
        ),
        headers=request.headers.raw,
        content=request.stream,
        extensions=request.extensions,
    )


class _Body(httpx.SyncByteStream):
    __slots__ = ("_inner",)

    def __init__(self, inner: Iterable[bytes]) -> None:
        self._inner = inner

    def __iter__(self) -> Iterator[bytes]:
        with _mapped():
            yield from self._inner

    def close(self) -> None:
        close = getattr(self._inner, "close", None)
        if close is not None:
            close()


def _pool_options(limits: httpx.Limits) -> dict[str, Any]:
    return {
        "ssl_context": httpx.create_ssl_context(),
        "max_connections": limits.max_connections,
        "max_keepalive_connections": limits.max_keepalive_connections,
        "keepalive_expiry": limits.keepalive_expiry,
    }


class SupervisedTransport(httpx.BaseTransport):
    """httpx's HTTP/1.1 transport over httpcore, with connections a call can shut down.

    Args:
        limits: the pool's connection limits.
    """

    def __init__(self, limits: httpx.Limits) -> None:
        self._pool = httpcore.ConnectionPool(**_pool_options(limits), network_backend=_Backend())

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        with _mapped():
            response = self._pool.handle_request(_core_request(request))
        return httpx.Response(
            status_code=response.status,
            headers=response.headers,
            stream=_Body(response.stream),  # type: ignore[arg-type]
            extensions=response.extensions,
        )

    def close(self) -> None:
        self._pool.close()
