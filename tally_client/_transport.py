"""The connections under a call, reachable so that a call can be stopped in any phase.

A call blocks in four places: connecting, waiting for response headers, reading the body and
sleeping between attempts. Closing it from another thread or task, or a time limit passing,
must end each of them at once. The body read can be ended through the response's network
stream, but httpx gives no handle on the connection before the headers arrive. So the clients
that tally_client creates use `SupervisedTransport`: httpx's own transport design over
httpcore's public `ConnectionPool(network_backend=...)`, whose network streams tell the call
that is writing a request (a context variable names it) which connection it now uses. Every
phase then ends the same way: the call's `Link` is marked closed and its connection is shut
down, which wakes the blocked read or refuses the write; the driver sees the mark.

A client passed in by the user (`http_client=`) keeps its own transport: there, the headers
phase cannot be interrupted (it still ends at the first-token limit), the other phases can.
"""

# httpcore's network backend interface takes `timeout=` on its async methods.
# ruff: noqa: ASYNC109

from __future__ import annotations

import contextlib
import ssl
from collections.abc import AsyncIterator, Iterable, Iterator
from typing import Any

import httpcore
import httpx

from ._http import CALLING

__all__ = ["AsyncSupervisedTransport", "SupervisedTransport"]


class _Stream(httpcore.NetworkStream):
    __slots__ = ("_inner",)

    def __init__(self, inner: httpcore.NetworkStream) -> None:
        self._inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, timeout)

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        link = CALLING.get()
        if link is not None:
            link.attach(self)
        self._inner.write(buffer, timeout)

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        return _Stream(self._inner.start_tls(ssl_context, server_hostname, timeout))

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _AsyncStream(httpcore.AsyncNetworkStream):
    __slots__ = ("_inner",)

    def __init__(self, inner: httpcore.AsyncNetworkStream) -> None:
        self._inner = inner

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return await self._inner.read(max_bytes, timeout)

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        link = CALLING.get()
        if link is not None:
            link.attach(self)
        await self._inner.write(buffer, timeout)

    async def aclose(self) -> None:
        await self._inner.aclose()

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.AsyncNetworkStream:
        return _AsyncStream(await self._inner.start_tls(ssl_context, server_hostname, timeout))

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _Backend(httpcore.NetworkBackend):
    def __init__(self) -> None:
        self._inner = httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        return _Stream(self._inner.connect_tcp(host, port, timeout, local_address, socket_options))

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.NetworkStream:
        return _Stream(self._inner.connect_unix_socket(path, timeout, socket_options))

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


class _AsyncBackend(httpcore.AsyncNetworkBackend):
    def __init__(self) -> None:
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        inner = await self._inner.connect_tcp(host, port, timeout, local_address, socket_options)
        return _AsyncStream(inner)

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.AsyncNetworkStream:
        return _AsyncStream(await self._inner.connect_unix_socket(path, timeout, socket_options))

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


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


class _AsyncBody(httpx.AsyncByteStream):
    __slots__ = ("_inner",)

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with _mapped():
            async for part in self._inner:
                yield part

    async def aclose(self) -> None:
        aclose = getattr(self._inner, "aclose", None)
        if aclose is not None:
            await aclose()


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


class AsyncSupervisedTransport(httpx.AsyncBaseTransport):
    """The async twin of `SupervisedTransport` (asyncio or trio, through anyio)."""

    def __init__(self, limits: httpx.Limits) -> None:
        self._pool = httpcore.AsyncConnectionPool(
            **_pool_options(limits), network_backend=_AsyncBackend()
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        with _mapped():
            response = await self._pool.handle_async_request(_core_request(request))
        return httpx.Response(
            status_code=response.status,
            headers=response.headers,
            stream=_AsyncBody(response.stream),
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        await self._pool.aclose()
