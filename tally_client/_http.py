"""The httpx boundary shared by both drivers: request building and exception mapping."""

from __future__ import annotations

import httpx

from ._errors import (
    ConnectError,
    ConnectTimeout,
    ProtocolError,
    ProviderError,
    StreamInterrupted,
    TransportError,
)
from ._request import WireRequest
from ._supervisor import Supervisor

__all__ = ["SSE_TYPE", "body_timeout", "build", "is_sse", "map_error"]

SSE_TYPE = "text/event-stream"


def build(
    http: httpx.Client | httpx.AsyncClient, wire: WireRequest, sup: Supervisor
) -> httpx.Request:
    """The httpx request for one attempt, with this attempt's connect and header limits."""
    connect = sup.connect_timeout()
    timeout = httpx.Timeout(connect=connect, read=sup.header_timeout(), write=connect, pool=connect)
    return http.build_request(
        wire.method, wire.url, json=wire.json, headers=wire.headers, timeout=timeout
    )


def body_timeout(request: httpx.Request, sup: Supervisor) -> None:
    """Switch the socket read limit from the header wait to the idle limit for the body.

    httpcore takes the read limit from the request's "timeout" extension when body reading
    starts, so changing it after the headers arrived applies it to every body read.
    """
    timeouts = request.extensions.get("timeout")
    if isinstance(timeouts, dict):
        timeouts["read"] = sup.read_timeout()


def is_sse(response: httpx.Response) -> bool:
    """True when the response is a 2xx `text/event-stream`."""
    return response.is_success and SSE_TYPE in response.headers.get("content-type", "")


def map_error(exc: httpx.HTTPError, sup: Supervisor, *, began: bool) -> ProviderError:
    """Our typed error for an httpx exception.

    Args:
        exc: what httpx raised.
        sup: the call's supervisor (it classifies read timeouts by phase).
        began: whether the response headers had arrived.
    """
    name = sup.provider.label
    if isinstance(exc, httpx.ConnectTimeout | httpx.PoolTimeout):
        seconds = sup.timeouts.connect or 0.0
        err: ProviderError = ConnectTimeout(
            f"could not connect within {seconds:g} s: {exc}", provider=name, seconds=seconds
        )
    elif isinstance(exc, httpx.ReadTimeout | httpx.WriteTimeout):
        err = sup.read_timed_out()
    elif isinstance(exc, httpx.ConnectError):
        err = ConnectError(f"could not connect: {exc}", provider=name)
    elif isinstance(exc, httpx.DecodingError):
        err = ProtocolError(f"the body could not be decoded: {exc}", provider=name)
    elif began:
        err = StreamInterrupted(
            f"the connection broke mid-response ({type(exc).__name__}: {exc})", provider=name
        )
    else:
        err = TransportError(
            f"no response ({type(exc).__name__}: {str(exc) or 'connection closed'})", provider=name
        )
    return err
