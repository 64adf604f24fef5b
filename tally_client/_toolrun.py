"""ToolRun and AsyncToolRun: the twin drivers of `run_tools()`, line for line alike.

Everything they decide, they ask a pure `ToolLoop` (`_tools.py`); they only make each round's
call (routed like `respond()`: the tool phase atomic, the synthesis as its decision says) and
run the tools (threads for sync; tasks, and worker threads for sync tools, for async).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from ._errors import StreamError
from ._events import StreamEvent, TextDelta
from ._response import Response
from ._tools import ToolCallStarted, ToolLoop, ToolResult, run_async, run_sync

if TYPE_CHECKING:
    from ._client import CallOptions
    from ._request import Message
    from ._stream import AsyncStream, Stream
    from ._tools import StopReason

    # The client's call: (messages, options, stream: None = as routed) -> a stream.
    SyncCall = Callable[[Sequence[Message], CallOptions, bool | None], Stream[Any]]
    AsyncCall = Callable[[Sequence[Message], CallOptions, bool | None], AsyncStream[Any]]

__all__ = ["AsyncToolRun", "ToolRun", "ToolRunEvent"]

ToolRunEvent = StreamEvent | ToolCallStarted | ToolResult
"""What a tool run yields: tool events, and the stream events of the rounds shown."""


class _RunBase:
    def __init__(self, loop: ToolLoop) -> None:
        self._loop = loop
        self._response: Response | None = None
        self._started = False
        self._closed = False
        self._lock = threading.Lock()  # `_closed` against the round being opened (sync twin)

    @property
    def started(self) -> bool:
        """True once iteration began (a run is iterated once)."""
        return self._started

    @property
    def response(self) -> Response:
        """The final Response once the run ended (use `final()` to run it to the end).

        Raises:
            StreamError: the run has not ended, or was closed before it ended.
        """
        if self._response is None:
            raise StreamError("the tool run has not ended: use final() (or it was closed)")
        return self._response

    def snapshot(self) -> Response:
        """The run so far: the round in flight's Response so far (between rounds, the last
        round's), with `rounds` (the finished ones) and usage summed over every round,
        the one in flight included. State "cancelled" once the run was closed before its end;
        after the end, the final Response."""
        if self._response is not None:
            return self._response
        stream = self._current()
        current = stream.snapshot() if stream is not None else None
        return self._loop.partial(current, cancelled=self._closed)

    def _current(self) -> Stream[Any] | AsyncStream[Any] | None:
        raise NotImplementedError

    @property
    def stop_reason(self) -> StopReason | None:
        """ "answered" (a round answered without tool calls), "max_rounds" (the limit ended
        the loop: `final()` is the last round, whose tool calls did not run), or None while
        running."""
        return self._loop.stop_reason

    @property
    def rounds(self) -> tuple[Any, ...]:
        """The rounds so far (`ToolRound`s)."""
        return tuple(self._loop.rounds)

    @property
    def options(self) -> Mapping[str, Any]:
        """The call options every round is made with (a read-only view; `tools` included)."""
        return MappingProxyType(self._loop.options)

    @property
    def tool_deltas(self) -> bool:
        """Whether a streamed round's `ToolCallDelta` events (argument fragments) are yielded
        too; False by default, as `ToolCallStarted` announces each call whole. Set it before
        iterating (the web relay does, for its `tool-input-delta` parts)."""
        return self._loop.tool_deltas

    @tool_deltas.setter
    def tool_deltas(self, value: bool) -> None:
        self._loop.tool_deltas = value

    def _begin(self) -> None:
        if self._started:
            raise StreamError("this tool run was already iterated: use final() for the Response")
        self._started = True


class ToolRun(_RunBase):
    """A running tool loop: iterate its events, or block on `final()`.

    Yields `ToolCallStarted` and `ToolResult` for every tool call, and the events of the
    rounds it shows (the synthesis deltas; see `ToolLoop.show`). Leaving its `with` block or
    breaking out of the loop cancels the round in flight.
    """

    def __init__(self, call: SyncCall, loop: ToolLoop) -> None:
        super().__init__(loop)
        self._call = call
        self._events: Iterator[ToolRunEvent] | None = None
        self._stream: Stream[Any] | None = None
        self._thread: int | None = None  # the thread iterating it

    def __enter__(self) -> ToolRun:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __iter__(self) -> Iterator[ToolRunEvent]:
        """Yield the run's events.

        Raises:
            ProviderError: a round failed after its retries.
            StreamError: the run was already iterated.
        """
        self._begin()
        self._events = self._run()
        return self._events

    def text(self) -> Iterator[str]:
        """Yield the text of the rounds shown (the synthesis), piece by piece."""
        for event in self:
            if type(event) is TextDelta:
                yield event.text

    def final(self) -> Response:
        """Run to the end and return the last round's Response, with `rounds` and summed usage.

        Raises:
            ProviderError: a round failed; StructuredOutputError: a schema was given and the
                answer does not match it.
        """
        if self._response is None:
            events = self._events if self._started else iter(self)
            for _ in events or ():
                pass
        if self._response is None:
            raise StreamError("the tool run was closed before it ended")
        return self._response

    def close(self) -> None:
        """Stop the run: cancel the round in flight; no further round starts. Idempotent;
        safe from any thread (a tool already running finishes: it cannot be interrupted)."""
        with self._lock:
            self._closed = True
            stream = self._stream
        if stream is not None:
            stream.close()
        if self._events is not None and self._thread in (None, threading.get_ident()):
            # From another thread, the iterating one ends the run at its next step instead.
            with contextlib.suppress(ValueError):  # closed from inside an iteration step
                self._events.close()  # type: ignore[attr-defined]

    def _current(self) -> Stream[Any] | None:
        return self._stream

    def _run(self) -> Iterator[ToolRunEvent]:
        self._thread = threading.get_ident()
        loop = self._loop
        while (call := loop.next_call()) is not None:
            messages, options = call
            stream = self._call(messages, options, None)
            with self._lock:
                closed = self._closed
                self._stream = stream
            if closed:
                stream.close()
                return
            with stream:
                for event in stream:
                    yield from loop.show(event, stream.streaming)
                response = stream.final()
            if self._closed:
                return  # the round was cancelled: it is not an answer
            self._stream = None
            held, prepared = loop.round_done(response)
            yield from held
            if prepared:
                for p in prepared:
                    yield ToolCallStarted(p.call, p.round)
                results = run_sync(prepared)
                yield from results
                loop.add_results(results)
        self._response = loop.final()


class AsyncToolRun(_RunBase):
    """The async twin of `ToolRun`: `async with`, `async for`, `await final()`."""

    def __init__(self, call: AsyncCall, loop: ToolLoop) -> None:
        super().__init__(loop)
        self._call = call
        self._events: AsyncIterator[ToolRunEvent] | None = None
        self._stream: AsyncStream[Any] | None = None

    async def __aenter__(self) -> AsyncToolRun:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def __aiter__(self) -> AsyncIterator[ToolRunEvent]:
        """Yield the run's events; see `ToolRun.__iter__`."""
        self._begin()
        self._events = self._run()
        return self._events

    async def text(self) -> AsyncIterator[str]:
        """Yield the text of the rounds shown; see `ToolRun.text`."""
        async for event in self:
            if type(event) is TextDelta:
                yield event.text

    async def final(self) -> Response:
        """Run to the end; see `ToolRun.final`."""
        if self._response is None:
            events = self._events if self._started else aiter(self)
            if events is not None:
                async for _ in events:
                    pass
        if self._response is None:
            raise StreamError("the tool run was closed before it ended")
        return self._response

    async def close(self) -> None:
        """Stop the run: close the round in flight; no further round starts. Idempotent; safe
        from any task.

        Tools already running are not interrupted by this call: from another task it only
        marks the run closed, so the iterating task yields their results, then ends instead
        of starting the next round. To stop running tools as well, cancel the task that
        iterates the run (as the web relay does when the browser leaves): tools that are
        coroutine functions run as tasks under it and are cancelled; plain functions finish
        in their worker threads.
        """
        self._closed = True
        if self._stream is not None:
            await self._stream.close()
        if self._events is not None:
            # RuntimeError: another task is inside it; the closed round ends it there.
            with contextlib.suppress(RuntimeError):
                await self._events.aclose()  # type: ignore[attr-defined]

    def _current(self) -> AsyncStream[Any] | None:
        return self._stream

    async def _run(self) -> AsyncIterator[ToolRunEvent]:
        loop = self._loop
        while (call := loop.next_call()) is not None:
            messages, options = call
            if self._closed:
                return
            async with self._call(messages, options, None) as stream:
                self._stream = stream
                async for event in stream:
                    for shown in loop.show(event, stream.streaming):
                        yield shown
                response = await stream.final()
            if self._closed:
                return  # the round was cancelled: it is not an answer
            self._stream = None
            held, prepared = loop.round_done(response)
            for shown in held:
                yield shown
            if prepared:
                for p in prepared:
                    yield ToolCallStarted(p.call, p.round)
                results = await run_async(prepared)
                for result in results:
                    yield result
                loop.add_results(results)
        self._response = loop.final()
