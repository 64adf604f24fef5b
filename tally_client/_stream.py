"""Stream and AsyncStream: the twin drivers of one call, streamed or atomic.

Both run the same loop over the same `Supervisor`: open an attempt, feed it SSE events (or
an atomic body), and on a failure ask the supervisor whether to retry and after how long.
Only the I/O differs (`httpx.Client`, the Watchdog thread and `time.sleep` against
`httpx.AsyncClient`, `anyio.fail_after` and `anyio.sleep`). Keep the two classes line for
line alike.
"""

from __future__ import annotations

import json
import time
import weakref
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any, cast

import anyio
import httpx
from httpx_sse import EventSource

from ._errors import ProviderError, StreamError
from ._events import StreamEvent, TextDelta
from ._http import SupervisedBody, body_timeout, build, interrupt, is_sse, map_error, watchdog
from ._response import Response
from ._supervisor import Supervisor, check_structured

if TYPE_CHECKING:
    from ._request import WireRequest
    from ._routing import Decision

__all__ = ["AsyncStream", "Stream", "parse_partial_json"]


def parse_partial_json(text: str) -> Any:
    """Parse the longest valid reading of an incomplete JSON document (tolerant).

    For showing structured output or tool arguments while they stream; the final check is
    strict (`Response.parsed`, `ToolCall.parsed_arguments`). Returns None for empty text.
    Uses partial-json-parser, imported on first use.

    Raises:
        ValueError: the text cannot be the start of a JSON document.
    """
    if not text.strip():
        return None
    from partial_json_parser import loads

    return loads(text)


class _Closed(Exception):
    """Internal: the stream was closed from elsewhere while an attempt was reading."""


class _StreamBase:
    """State and accessors the twins share (no I/O here)."""

    def __init__(self, sup: Supervisor, wire: WireRequest) -> None:
        self._sup = sup
        self._wire = wire
        self._response: Response | None = None
        self._error: BaseException | None = None
        self._started = False
        self._closing = False
        self._live: httpx.Response | None = None

    @property
    def decision(self) -> Decision | None:
        """The routing decision this call follows (`decision.stream`: the delivery mode)."""
        return self._sup.decision

    @property
    def streaming(self) -> bool:
        """True when the call is delivered as an SSE stream, False when atomic."""
        return self._sup.stream

    def snapshot(self) -> Response:
        """What has arrived so far in the current attempt (state "partial" while running)."""
        if self._response is not None:
            return self._response
        return self._sup.snapshot()

    def partial_json(self) -> Any:
        """The output so far parsed tolerantly as JSON (structured output), or None.

        Raises:
            ValueError: the text so far cannot be the start of a JSON document.
        """
        return parse_partial_json(self.snapshot().text)

    def _begin(self) -> None:
        if self._closing:
            raise StreamError("this stream was closed: start a new call")
        if self._started:
            raise StreamError(
                "this stream was already iterated: iterate once, then use final() for the Response"
            )
        self._started = True

    def _result(self) -> Response:
        if self._error is not None:
            raise self._error
        if self._response is None:  # closed before it was ever read
            self._response = self._sup.cancelled()
        return check_structured(self._response, self._sup.structured)

    def _cancelled(self) -> None:
        if self._response is None and self._error is None:
            self._response = self._sup.cancelled()

    def _interrupt(self) -> None:
        """Close from another thread or task: unblock the attempt's read."""
        self._closing = True
        live = self._live
        if live is not None:
            interrupt(live)


class Stream(_StreamBase):
    """One call's output as it arrives: iterate events or text, or block on `final()`.

    The request goes out when the stream is first iterated (or `final()` is called). Leaving
    its `with` block, `close()` (from any thread), or breaking out of a loop over it or its
    `text()` closes the HTTP connection at once, and the Response is then "cancelled" with
    the text so far. A stream is iterated once; `final()` drains what is left and returns the
    Response.

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

    def __init__(self, http: httpx.Client, sup: Supervisor, wire: WireRequest) -> None:
        super().__init__(sup, wire)
        self._http = http
        # Held weakly: when the caller drops its iterator (breaks out of a loop), the
        # generator is finalized at once, which cancels the call and closes the connection.
        self._active: weakref.ref[Iterator[StreamEvent]] | None = None

    def __enter__(self) -> Stream:
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

    def final(self) -> Response:
        """Drain the stream and return the Response (one call serves blocking code too).

        Raises:
            ProviderError: the call failed; `.partial` holds what arrived.
            StructuredOutputError: a schema was requested and the text is not valid JSON.
        """
        if self._response is None and self._error is None and not self._closing:
            events = self._active() if self._active is not None else None
            if events is None and not self._started:
                events = iter(self)
            for _ in events or ():
                pass
        return self._result()

    @property
    def response(self) -> Response:
        """The same as `final()`."""
        return self.final()

    def close(self) -> None:
        """Stop the call and close its connection now. Idempotent; safe from any thread."""
        events = self._active() if self._active is not None else None
        if events is not None:
            try:
                events.close()  # type: ignore[attr-defined]
            except ValueError:  # running in another thread: unblock its read instead
                self._interrupt()
                return
        self._closing = True
        self._cancelled()

    def _iterate(self) -> Iterator[StreamEvent]:
        try:
            yield from self._run()
        except _Closed:
            pass
        except Exception as exc:
            self._error = exc
            raise
        finally:
            self._cancelled()

    def _run(self) -> Iterator[StreamEvent]:
        sup = self._sup
        while True:
            sup.begin()
            try:
                if not sup.stream:
                    self._response = self._atomic()
                    yield from sup.atomic_events()
                    return
                yield from self._attempt()
                if self._closing:  # closed from elsewhere: the read ended, the call did not
                    raise _Closed
                outcome = sup.end_of_stream()
                if isinstance(outcome, Response):
                    self._response = outcome
                    return
                delay = outcome
            except ProviderError as exc:
                if self._closing:
                    raise _Closed from exc
                delay = sup.fail(exc)
            time.sleep(delay)

    def _send(self) -> httpx.Response:
        sup = self._sup
        request = build(self._http, self._wire, sup)
        try:
            response = self._http.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise map_error(exc, sup, began=False) from exc
        self._live = response
        sup.response_headers(response.status_code, response.headers)
        body_timeout(request, sup)
        return response

    def _attempt(self) -> Iterator[StreamEvent]:
        sup = self._sup
        response = self._send()
        watch = None
        try:
            if not is_sse(response):
                raise sup.provider.error_from_response(
                    response.status_code, response.read(), response.headers
                )
            watch = watchdog.watch(sup, response)
            body = cast(httpx.Response, SupervisedBody(response, sup))
            for sse in EventSource(body).iter_sse():
                if watch.fired:
                    break  # the watchdog fired just as data arrived: honour the limit
                events = sup.feed(sse.event, sse.data)
                if events:
                    yield from events
            if watch.fired:
                raise sup.timeout_error(watch.fired)
        except httpx.HTTPError as exc:
            if watch is not None and watch.fired:
                raise sup.timeout_error(watch.fired) from exc
            raise map_error(exc, sup, began=True) from exc
        finally:
            if watch is not None:
                watchdog.unwatch(watch)
            self._live = None
            response.close()

    def _atomic(self) -> Response:
        sup = self._sup
        response = self._send()
        watch = watchdog.watch(sup, response)
        try:
            text = SupervisedBody(response, sup).read_text()
            if watch.fired:
                raise sup.timeout_error(watch.fired)
        except httpx.HTTPError as exc:
            if watch.fired:
                raise sup.timeout_error(watch.fired) from exc
            raise map_error(exc, sup, began=True) from exc
        finally:
            watchdog.unwatch(watch)
            self._live = None
            response.close()
        return _atomic_result(sup, response, text)


class AsyncStream(_StreamBase):
    """The async twin of `Stream`: `async with`, `async for`, `await final()`.

    Cancelling the task that iterates it closes the connection, like `close()`.

    Example:
        async with client.stream("Explain entropy.") as stream:
            async for text in stream.text():
                print(text, end="", flush=True)
        response = await stream.final()
    """

    def __init__(self, http: httpx.AsyncClient, sup: Supervisor, wire: WireRequest) -> None:
        super().__init__(sup, wire)
        self._http = http
        self._active: weakref.ref[AsyncIterator[StreamEvent]] | None = None

    async def __aenter__(self) -> AsyncStream:
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

    async def final(self) -> Response:
        """Drain the stream and return the Response; see `Stream.final`."""
        if self._response is None and self._error is None and not self._closing:
            events = self._active() if self._active is not None else None
            if events is None and not self._started:
                events = aiter(self)
            if events is not None:
                async for _ in events:
                    pass
        return self._result()

    @property
    def response(self) -> Response:
        """The Response once the stream ended (use `await final()` to wait for it).

        Raises:
            StreamError: the stream has not ended yet.
        """
        if self._response is None and self._error is None and not self._closing:
            raise StreamError("the stream has not ended: use `await stream.final()`")
        return self._result()

    async def close(self) -> None:
        """Stop the call and close its connection now. Idempotent; safe from any task."""
        events = self._active() if self._active is not None else None
        if events is not None:
            try:
                await events.aclose()  # type: ignore[attr-defined]
            except RuntimeError:  # running in another task: unblock its read instead
                self._interrupt()
                return
        self._closing = True
        self._cancelled()

    async def _iterate(self) -> AsyncIterator[StreamEvent]:
        try:
            async for event in self._run():
                yield event
        except _Closed:
            pass
        except Exception as exc:
            self._error = exc
            raise
        finally:
            self._cancelled()

    async def _run(self) -> AsyncIterator[StreamEvent]:
        sup = self._sup
        while True:
            sup.begin()
            try:
                if not sup.stream:
                    self._response = await self._atomic()
                    for event in sup.atomic_events():
                        yield event
                    return
                async for event in self._attempt():
                    yield event
                if self._closing:  # closed from elsewhere: the read ended, the call did not
                    raise _Closed
                outcome = sup.end_of_stream()
                if isinstance(outcome, Response):
                    self._response = outcome
                    return
                delay = outcome
            except ProviderError as exc:
                if self._closing:
                    raise _Closed from exc
                delay = sup.fail(exc)
            await anyio.sleep(delay)

    async def _send(self) -> httpx.Response:
        sup = self._sup
        request = build(self._http, self._wire, sup)
        try:
            response = await self._http.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise map_error(exc, sup, began=False) from exc
        self._live = response
        sup.response_headers(response.status_code, response.headers)
        body_timeout(request, sup)
        return response

    async def _attempt(self) -> AsyncIterator[StreamEvent]:
        sup = self._sup
        response = await self._send()
        try:
            if not is_sse(response):
                raise sup.provider.error_from_response(
                    response.status_code, await response.aread(), response.headers
                )
            body = cast(httpx.Response, SupervisedBody(response, sup))
            async for sse in EventSource(body).aiter_sse():
                events = sup.feed(sse.event, sse.data)
                for event in events:
                    yield event
        except httpx.HTTPError as exc:
            raise map_error(exc, sup, began=True) from exc
        finally:
            self._live = None
            await response.aclose()

    async def _atomic(self) -> Response:
        sup = self._sup
        response = await self._send()
        try:
            text = await SupervisedBody(response, sup).aread_text()
        except httpx.HTTPError as exc:
            raise map_error(exc, sup, began=True) from exc
        finally:
            self._live = None
            await response.aclose()
        return _atomic_result(sup, response, text)


def _atomic_result(sup: Supervisor, response: httpx.Response, text: str) -> Response:
    """The Response for an atomic call's body, or the typed error for it."""
    if response.is_success and "json" in response.headers.get("content-type", ""):
        try:
            body = json.loads(text)
        except ValueError:
            pass
        else:
            return sup.atomic_body(body)
    raise sup.provider.error_from_response(response.status_code, text.encode(), response.headers)
