"""Stream and AsyncStream: the twin drivers of one call, streamed or atomic.

Both run the same loop over the same `Supervisor`: open an attempt, feed its SSE events (or
its atomic body) to the supervisor, and on a failure ask it whether to retry and after how
long. Only the I/O differs (`httpx.Client` and a `threading.Event` against
`httpx.AsyncClient` and an `anyio.Event`). Keep the two classes line for line alike.

Stopping a call is one mechanism (`_http.Link`): `close()` from elsewhere marks the call's
link and shuts its connection down; every blocking point (connecting, waiting for headers,
reading, sleeping between attempts) wakes up and checks the mark.
"""

from __future__ import annotations

import contextlib
import json
import threading
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Generic

import httpx

from ._errors import ProviderError, StreamError
from ._events import StreamEvent, TextDelta
from ._http import CALLING, Link, Watch, body_timeout, build, is_sse, map_error, watchdog
from ._output import PartialObjects
from ._partial import parse_partial_json
from ._response import Response, T
from ._sse import SSEDecoder
from ._supervisor import Supervisor, check_structured

if TYPE_CHECKING:
    import anyio

    from ._decision import Decision
    from ._request import WireRequest

__all__ = ["AsyncStream", "Stream", "parse_partial_json"]


class _Closed(Exception):
    """Internal: the call was closed; the loop ends and the Response is "cancelled"."""


class _StreamBase:
    """State and accessors the twins share (no I/O here)."""

    # Slotted, as the twins are: thousands of calls may wait at once (issue 13's 1,000
    # streams), and each holds one of these.
    __slots__ = ("_error", "_link", "_response", "_started", "_sup", "_wire")

    def __init__(self, sup: Supervisor, wire: WireRequest) -> None:
        self._sup = sup
        self._wire = wire
        self._link = Link()
        self._response: Response | None = None
        self._error: BaseException | None = None
        self._started = False

    @property
    def decision(self) -> Decision | None:
        """The routing decision this call follows (`decision.stream`: the delivery mode)."""
        return self._sup.decision

    @property
    def streaming(self) -> bool:
        """True when the call is delivered as an SSE stream, False when atomic."""
        return self._sup.stream

    @property
    def started(self) -> bool:
        """True once iteration began (a stream is iterated once)."""
        return self._started

    @property
    def request_body(self) -> Mapping[str, Any]:
        """The JSON body sent to the provider, in its own protocol's shape (no headers: they
        may hold the API key). For a call planned on first iteration, known from then on."""
        return self._wire.json

    @property
    def response(self) -> Response:
        """The Response once the stream ended (use `final()` to wait for it).

        Raises:
            StreamError: the stream has not ended yet.
            ProviderError: the call failed; `.partial` holds what arrived.
        """
        if self._response is None and self._error is None and not self._link.closed:
            raise StreamError("the stream has not ended: use `stream.final()`")
        return self._result()

    def snapshot(self) -> Response:
        """What has arrived so far in the current attempt (state "partial" while running)."""
        if self._response is not None:
            return self._response
        return self._sup.snapshot()

    def partial_json(self) -> Any:
        """The output so far parsed tolerantly as JSON (structured output), or None.

        Each call parses all the text so far: to follow a stream, iterate
        `partial_objects()`, whose cost is linear in the output.
        """
        return parse_partial_json(self.snapshot().text)

    def _begin(self) -> None:
        if self._link.closed:
            raise StreamError("this stream was closed: start a new call")
        if self._started:
            raise StreamError(
                "this stream was already iterated: iterate once, then use final() for the Response"
            )
        self._started = True

    def _result(self) -> Response:
        if self._error is not None:
            raise self._error
        if self._response is None:  # closed before it ended, or before it was ever read
            self._response = self._sup.cancelled()
        return check_structured(self._response, self._sup.structured)

    def _cancelled(self) -> None:
        if self._response is None and self._error is None:
            self._response = self._sup.cancelled()

    def _failure(self, exc: httpx.HTTPError, watch: Watch | None, *, began: bool) -> ProviderError:
        """The typed error for what httpx raised (a closed call is checked by the caller)."""
        if watch is not None and watch.fired:
            return self._sup.timeout_error(watch.fired)
        return map_error(exc, self._sup, began=began)

    def _opened(self, request: httpx.Request, response: httpx.Response) -> None:
        """The headers arrived: make the body interruptible even on a foreign transport."""
        if self._link.stream is None:
            self._link.stream = response.extensions.get("network_stream")
        self._sup.response_headers(response.status_code, response.headers)
        body_timeout(request, self._sup)


class Stream(_StreamBase, Generic[T]):
    """One call's output as it arrives: iterate events or text, or block on `final()`.

    The request goes out when the stream is first iterated (or `final()` is called). Leaving
    its `with` block, `close()` (from any thread), or breaking out of a loop over it or its
    `text()` stops the call in whatever phase it is (connecting, waiting for headers, reading,
    waiting to retry): no request leaves after it, the connection is closed, the consumer's
    loop ends, and the Response is "cancelled" with the text so far. A stream is iterated
    once; `final()` drains what is left and returns the Response.

    After a dropped connection the call is retried; if output was already yielded, a `Reset`
    event comes first, carrying the text to clear. `text()` skips Reset events: after one,
    it yields the new attempt's text from its start, so a consumer that cannot clear (a
    terminal) shows the discarded text followed by the retry's. Iterate events to clear.

    Example:
        with client.stream("Explain entropy.") as stream:
            for text in stream.text():
                print(text, end="", flush=True)
        response = stream.final()
    """

    __slots__ = ("_active", "_http", "_prepare", "_thread", "_wake")

    def __init__(
        self,
        http: httpx.Client,
        sup: Supervisor,
        wire: WireRequest,
        prepare: Callable[[], tuple[Supervisor, WireRequest]] | None = None,
    ) -> None:
        super().__init__(sup, wire)
        self._http = http
        self._prepare = prepare  # a plan made when the stream is first iterated
        self._wake = threading.Event()
        self._thread: int | None = None
        # Held weakly: when the caller drops its iterator (breaks out of a loop), the
        # generator is finalized at once, which cancels the call and closes the connection.
        self._active: weakref.ref[Iterator[StreamEvent]] | None = None

    def __enter__(self) -> Stream[T]:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __iter__(self) -> Iterator[StreamEvent]:
        """Yield events (`TextDelta`, `ToolCallDelta`, `UsageReported`, `Finished`, `Reset`...).

        Raises:
            ProviderError: the call failed and was not (or no longer) retried; `.partial`
                holds what arrived.
            StreamError: the stream was already iterated, or closed.
        """
        self._begin()
        events = self._iterate()
        self._active = weakref.ref(events)
        return events

    def text(self) -> Iterator[str]:
        """Yield the output text piece by piece (see the class docstring on resets).

        Raises:
            ProviderError: as for iterating events.
        """
        events = iter(self)
        try:
            for event in events:
                if type(event) is TextDelta:
                    yield event.text
        finally:
            events.close()  # type: ignore[attr-defined]

    def final(self) -> Response[T]:
        """Drain the stream and return the Response (one call serves blocking code too).

        Raises:
            ProviderError: the call failed; `.partial` holds what arrived.
            StructuredOutputError: a schema was requested and the text is not valid JSON.
        """
        if self._response is None and self._error is None and not self._link.closed:
            events = self._active() if self._active is not None else None
            if events is None and not self._started:
                events = iter(self)
            for _ in events or ():
                pass
        return self._result()

    def partial_objects(self) -> Iterator[Any]:
        """Yield the structured output's partial value each time it grew (see PartialObjects).

        Values only grow and are never the final, validated one: that is `final().parsed`.
        Consumes the stream like iterating it (leaving the loop closes the call).

        Raises:
            ProviderError: as for iterating events.
        """
        tracker = PartialObjects(self._sup.structured)
        events = iter(self)
        try:
            yield from tracker.follow(events)
        finally:
            events.close()  # type: ignore[attr-defined]

    def close(self) -> None:
        """Stop the call and close its connection now. Idempotent; safe from any thread."""
        events = self._active() if self._active is not None else None
        if events is not None and self._thread == threading.get_ident():
            events.close()  # type: ignore[attr-defined]
        self._link.interrupt()
        self._wake.set()
        self._cancelled()

    def _iterate(self) -> Iterator[StreamEvent]:
        self._thread = threading.get_ident()
        if self._prepare is not None:
            prepare, self._prepare = self._prepare, None
            self._sup, self._wire = prepare()
        sup, link = self._sup, self._link
        try:
            while True:
                if link.closed:
                    raise _Closed
                sup.begin()
                try:
                    if not sup.stream:
                        self._response = self._atomic()
                        yield from sup.atomic_events()
                        return
                    yield from self._attempt()
                    outcome = sup.end_of_stream()
                    if isinstance(outcome, Response):
                        self._response = outcome
                        return
                    delay = outcome
                except ProviderError as exc:
                    if link.closed:
                        raise _Closed from None
                    delay = sup.fail(exc)
                self._wake.wait(delay)
        except _Closed:
            pass
        except Exception as exc:
            self._error = exc
            raise
        finally:
            self._cancelled()

    def _send(self) -> httpx.Response:
        sup, link = self._sup, self._link
        request = build(self._http, self._wire, sup)
        token = CALLING.set(link)
        failure = None
        try:
            response = self._http.send(request, stream=True)
        except httpx.HTTPError as exc:
            failure = self._failure(exc, None, began=False)
        finally:
            CALLING.reset(token)
        if link.closed:
            if failure is None:
                response.close()
            raise _Closed
        if failure is not None:
            raise failure  # outside the except block: the httpx error (and its request
            # headers, API key included) stays off the chain
        self._opened(request, response)
        return response

    def _attempt(self) -> Iterator[StreamEvent]:
        sup, link = self._sup, self._link
        response = self._send()
        watch = None
        failure: ProviderError | None = None
        try:
            watch = watchdog.watch(sup, link)
            if not is_sse(response):
                failure = sup.provider.error_from_response(
                    response.status_code, response.read(), response.headers
                )
            else:
                decoder = SSEDecoder()
                feed = sup.feed
                sup.read_started()
                for chunk in response.iter_bytes():
                    sup.read_returned()
                    if link.closed:  # closed elsewhere: what the read brought is not shown
                        raise _Closed
                    for name, data in decoder.feed(chunk):
                        events = feed(name, data)
                        if events:
                            yield from events
                            if link.closed:
                                raise _Closed
                    sup.read_started()
                sup.read_ended()
                for name, data in decoder.end():
                    yield from feed(name, data)
                if watch.fired and not sup.terminal:
                    failure = sup.timeout_error(watch.fired)
        except httpx.HTTPError as exc:
            failure = self._failure(exc, watch, began=True)
        finally:
            if watch is not None:
                watchdog.unwatch(watch)
            link.detach()
            response.close()
        if link.closed:
            raise _Closed
        if failure is not None:
            raise failure

    def _atomic(self) -> Response:
        sup, link = self._sup, self._link
        response = self._send()
        watch = watchdog.watch(sup, link)
        failure: ProviderError | None = None
        parts: list[bytes] = []
        try:
            sup.read_started()
            for chunk in response.iter_bytes():
                sup.read_returned()
                parts.append(chunk)
                sup.read_started()
            sup.read_ended()
            if watch.fired:
                failure = sup.timeout_error(watch.fired)
        except httpx.HTTPError as exc:
            failure = self._failure(exc, watch, began=True)
        finally:
            watchdog.unwatch(watch)
            link.detach()
            response.close()
        if link.closed:
            raise _Closed
        if failure is not None:
            raise failure
        return _atomic_result(sup, response, b"".join(parts))


class AsyncStream(_StreamBase, Generic[T]):
    """The async twin of `Stream`: `async with`, `async for`, `await final()`.

    `await close()` from any task, or cancelling the task that iterates it, stops the call in
    whatever phase it is, like `Stream.close()`.

    Example:
        async with client.stream("Explain entropy.") as stream:
            async for text in stream.text():
                print(text, end="", flush=True)
        response = await stream.final()
    """

    __slots__ = ("_active", "_http", "_prepare", "_wake")

    def __init__(
        self,
        http: httpx.AsyncClient,
        sup: Supervisor,
        wire: WireRequest,
        prepare: Callable[[], Awaitable[tuple[Supervisor, WireRequest]]] | None = None,
    ) -> None:
        super().__init__(sup, wire)
        self._http = http
        self._prepare = prepare  # a plan that needs I/O (a hosted router), awaited first
        # Made only for a sleep between attempts (most calls never sleep): an event costs
        # about 0.9 KB, a fifth of what a waiting call holds of its own.
        self._wake: anyio.Event | None = None
        self._active: weakref.ref[AsyncIterator[StreamEvent]] | None = None

    async def __aenter__(self) -> AsyncStream[T]:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def __aiter__(self) -> AsyncIterator[StreamEvent]:
        """Yield events; see `Stream.__iter__`."""
        self._begin()
        events = self._iterate()
        self._active = weakref.ref(events)
        return events

    async def text(self) -> AsyncIterator[str]:
        """Yield the output text piece by piece; see `Stream.text`."""
        events = aiter(self)
        try:
            async for event in events:
                if type(event) is TextDelta:
                    yield event.text
        finally:
            await events.aclose()  # type: ignore[attr-defined]

    async def final(self) -> Response[T]:
        """Drain the stream and return the Response; see `Stream.final`."""
        if self._response is None and self._error is None and not self._link.closed:
            events = self._active() if self._active is not None else None
            if events is None and not self._started:
                events = aiter(self)
            if events is not None:
                async for _ in events:
                    pass
        return self._result()

    async def partial_objects(self) -> AsyncIterator[Any]:
        """Yield the structured output's partial values; see `Stream.partial_objects`."""
        tracker = PartialObjects(self._sup.structured)
        events = aiter(self)
        try:
            async with contextlib.aclosing(tracker.afollow(events)) as values:
                async for value in values:
                    yield value
        finally:
            await events.aclose()  # type: ignore[attr-defined]

    async def close(self) -> None:
        """Stop the call and close its connection now. Idempotent; safe from any task."""
        events = self._active() if self._active is not None else None
        if events is not None:
            # RuntimeError: another task is inside it; the interrupt below wakes that task.
            with contextlib.suppress(RuntimeError):
                await events.aclose()  # type: ignore[attr-defined]
        self._link.interrupt()
        if self._wake is not None:
            self._wake.set()
        self._cancelled()

    async def _iterate(self) -> AsyncIterator[StreamEvent]:  # noqa: C901 - one flat loop, see below
        import anyio

        if self._prepare is not None:
            prepare, self._prepare = self._prepare, None
            self._sup, self._wire = await prepare()
        sup, link = self._sup, self._link
        try:
            while True:
                if link.closed:
                    raise _Closed
                sup.begin()
                try:
                    if not sup.stream:
                        self._response = await self._atomic()
                        for event in sup.atomic_events():
                            yield event
                        return
                    # The attempt is inline, not a nested generator: each layer of async
                    # generator costs about a microsecond per event.
                    response = await self._send()
                    watch = None
                    failure: ProviderError | None = None
                    try:
                        watch = watchdog.watch(sup, link)
                        if not is_sse(response):
                            failure = sup.provider.error_from_response(
                                response.status_code, await response.aread(), response.headers
                            )
                        else:
                            decoder = SSEDecoder()
                            feed = sup.feed
                            sup.read_started()
                            async for chunk in response.aiter_bytes():
                                sup.read_returned()
                                if link.closed:  # closed elsewhere: see Stream._attempt
                                    raise _Closed
                                for name, data in decoder.feed(chunk):
                                    for event in feed(name, data):
                                        yield event
                                    if link.closed:
                                        raise _Closed
                                sup.read_started()
                            sup.read_ended()
                            for name, data in decoder.end():
                                for event in feed(name, data):
                                    yield event
                            if watch.fired and not sup.terminal:
                                failure = sup.timeout_error(watch.fired)
                    except httpx.HTTPError as exc:
                        failure = self._failure(exc, watch, began=True)
                    finally:
                        if watch is not None:
                            watchdog.unwatch(watch)
                        link.detach()
                        await response.aclose()
                    if link.closed:
                        raise _Closed
                    if failure is not None:
                        raise failure
                    outcome = sup.end_of_stream()
                    if isinstance(outcome, Response):
                        self._response = outcome
                        return
                    delay = outcome
                except ProviderError as exc:
                    if link.closed:
                        raise _Closed from None
                    delay = sup.fail(exc)
                if self._wake is None:
                    self._wake = anyio.Event()
                if link.closed:  # close() came before the event existed to be set
                    raise _Closed
                with anyio.move_on_after(delay):
                    await self._wake.wait()
        except _Closed:
            pass
        except Exception as exc:
            self._error = exc
            raise
        finally:
            self._cancelled()

    async def _send(self) -> httpx.Response:
        import anyio

        sup, link = self._sup, self._link
        request = build(self._http, self._wire, sup)
        failure = None
        response = None
        # Connecting and waiting for headers: close() cancels this scope (httpcore then closes
        # the connection). No yield happens inside it, so the cancellation cannot leak out.
        with anyio.CancelScope() as scope:
            link.cancel = scope.cancel
            try:
                response = await self._http.send(request, stream=True)
            except httpx.HTTPError as exc:
                failure = self._failure(exc, None, began=False)
            finally:
                link.cancel = None
        if link.closed:
            if response is not None:
                await response.aclose()
            raise _Closed
        if failure is not None:
            raise failure  # outside the except block: see Stream._send
        assert response is not None  # the scope is only cancelled by close()
        self._opened(request, response)
        return response

    async def _atomic(self) -> Response:
        sup, link = self._sup, self._link
        response = await self._send()
        watch = watchdog.watch(sup, link)
        failure: ProviderError | None = None
        parts: list[bytes] = []
        try:
            sup.read_started()
            async for chunk in response.aiter_bytes():
                sup.read_returned()
                parts.append(chunk)
                sup.read_started()
            sup.read_ended()
            if watch.fired:
                failure = sup.timeout_error(watch.fired)
        except httpx.HTTPError as exc:
            failure = self._failure(exc, watch, began=True)
        finally:
            watchdog.unwatch(watch)
            link.detach()
            await response.aclose()
        if link.closed:
            raise _Closed
        if failure is not None:
            raise failure
        return _atomic_result(sup, response, b"".join(parts))


def _atomic_result(sup: Supervisor, response: httpx.Response, body: bytes) -> Response:
    """The Response for an atomic call's body, or the typed error for it."""
    if response.is_success and "json" in response.headers.get("content-type", ""):
        try:
            decoded = json.loads(body)
        except ValueError:
            pass
        else:
            return sup.atomic_body(decoded)
    raise sup.provider.error_from_response(response.status_code, body, response.headers)
