"""Serve a stream to a browser as Server-Sent Events (optional extra `web`: Starlette).

    from fastapi import FastAPI
    from tally_client import AsyncClient
    from tally_client.web import sse_response

    app = FastAPI()
    client = AsyncClient()

    @app.post("/api/chat")
    async def chat(body: dict):
        stream = client.stream(body["messages"], consumer="human")
        return sse_response(stream, protocol="vercel-ai")

`sse_response()` relays an `AsyncStream` (or a sync `Stream`, iterated in a thread) to the
browser in one of two wire formats:

- `"vercel-ai"`: the Vercel AI SDK UI message stream, v1 (what `useChat` reads; source:
  vercel/ai `packages/ai/src/ui-message-stream/ui-message-chunks.ts` and
  `content/docs/04-ai-sdk-ui/50-stream-protocol.mdx`): `start`, `start-step`,
  `text-start`/`text-delta`/`text-end`, `reasoning-*`, `tool-input-*`, `error`,
  `finish-step`, `finish`, then `data: [DONE]`.
- `"events"`: named SSE events with JSON data for hand-written pages (`start`, `text`,
  `thinking`, `tool-call`, `reset`, `error`, `done`); see docs/web.md.

What it adds to a plain `StreamingResponse`: anti-buffering headers (`Cache-Control:
no-cache, no-transform`, `X-Accel-Buffering: no`), keep-alive comments while nothing is sent,
a part that tells the page what to clear after a `Reset`, an error part that keeps the text
already shown, TTFT / tokens per second / the routing decision as message metadata, optional
smoothing, and, when the browser leaves or presses stop, the upstream call closed at once and
a `RelayResult` saying what was shown and how many output tokens were left ungenerated.

Starlette is imported on first use: `import tally_client.web` works without it and
`sse_response()` then raises `ConfigurationError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import math
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from json.encoder import encode_basestring
from typing import TYPE_CHECKING, Any, Literal, cast

import anyio

from ._errors import (
    APIStatusError,
    ConfigurationError,
    OverloadedError,
    ProviderError,
    RateLimitError,
    StreamError,
    TransportError,
)
from ._events import Reset, StreamEvent, TextDelta, ThinkingDelta, ToolCallDelta
from ._stream import AsyncStream, Stream

if TYPE_CHECKING:
    from starlette.responses import StreamingResponse
    from starlette.types import Message, Receive, Scope, Send

    from ._response import Response
    from ._routing import Decision

__all__ = [
    "HEADERS",
    "RelayProtocol",
    "RelayResult",
    "ResetMode",
    "decision_metadata",
    "describe_error",
    "response_metadata",
    "sse_response",
]

logger = logging.getLogger("tally_client.web")

RelayProtocol = Literal["vercel-ai", "events"]
"""The wire format of a relay: the Vercel AI SDK UI message stream v1, or plain named events."""

ResetMode = Literal["data", "step"]
"""How a `Reset` reaches a Vercel AI SDK page.

- `"data"` (default; ai 5, 6 and 7): a `data-reset` part; the page shows only the parts after
  the last one (the client keeps a data part as sent and removes nothing by itself).
- `"step"` (ai 7 only; 5.x and 6.x reject the part): a `reset-step` part, which the client
  itself uses to remove the failed attempt's parts, plus a transient `data-reset` for `onData`.
"""

HEADERS: Mapping[str, str] = {
    "cache-control": "no-cache, no-transform",
    "connection": "keep-alive",
    "x-accel-buffering": "no",
}
"""Sent with every relay. `no-transform` keeps compression middleware and CDNs from holding
the stream back; `X-Accel-Buffering: no` turns nginx's proxy buffering off for this response."""

VERCEL_HEADER = ("x-vercel-ai-ui-message-stream", "v1")
"""The header the AI SDK docs require of a custom backend (the client does not read it)."""

_FINISH_REASONS = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool-calls",
    "content_filter": "content-filter",
    "error": "error",
}


@dataclass
class RelayResult:
    """What one relay did, known once the response body has ended.

    Attributes:
        response: the call's Response: complete, partial, or "cancelled" with what was shown
            when the browser left; for a failed call, the error's partial Response (or None).
        error: the error that ended the call (after the retries the policy allows), or None.
        disconnected: the browser left (closed the tab, pressed stop) before the end.
        frames: body writes, each of one or more whole SSE events (pings not included).
        pings: keep-alive comments sent.
        output_tokens: output tokens the call generated: reported usage when the provider
            sent it, else the number of content deltas received (one token per delta on
            OpenAI-compatible servers, llama-server included; an estimate elsewhere).
        output_tokens_saved: for a call stopped by the browser, the output tokens it did not
            generate: its `max_tokens` minus `output_tokens`. An upper bound (the model might
            have stopped sooner); None when the call was not stopped or set no max_tokens.
        seconds: from the start of the response to its end.
    """

    response: Response | None = None
    error: BaseException | None = None
    disconnected: bool = False
    frames: int = 0
    pings: int = 0
    output_tokens: int | None = None
    output_tokens_saved: int | None = None
    seconds: float = 0.0


OnDone = Callable[[RelayResult], Awaitable[None] | None]


def sse_response(
    stream: AsyncStream | Stream,
    protocol: RelayProtocol = "vercel-ai",
    *,
    headers: Mapping[str, str] | None = None,
    ping: float | None = 15.0,
    smooth: float | None = None,
    reset: ResetMode = "data",
    message_id: str | None = None,
    metadata: Mapping[str, Any] | None = None,
    error_text: Callable[[BaseException], str] | None = None,
    on_done: OnDone | None = None,
) -> StreamingResponse:
    """Relay a stream to the browser as an SSE response (Starlette / FastAPI).

    The call starts when the response starts, and is closed (its provider connection too) as
    soon as the browser disconnects: Starlette/ASGI `http.disconnect`, or a failed send.

    Args:
        stream: the call, from `AsyncClient.stream()` / `respond()` (or a sync `Client`'s,
            iterated in a thread so the event loop never blocks). Not yet iterated.
        protocol: `"vercel-ai"` (Vercel AI SDK UI message stream v1) or `"events"`.
        headers: extra response headers (they replace the defaults of the same name, in any
            case).
        ping: seconds without a frame after which a keep-alive comment (`: ping`) is sent,
            so proxies and load balancers keep a slow first token's connection; None: never.
        smooth: coalesce text (and reasoning) deltas into at most one frame per this many
            seconds (0.05 is about 20 frames a second); None (default): one frame per delta.
        reset: how a Reset reaches a Vercel AI SDK page (see `ResetMode`); ignored by
            `"events"`, which sends a `reset` event.
        message_id: the assistant message id (default: a random `msg_...`).
        metadata: extra message metadata, sent on the `start` part / event.
        error_text: the text shown for an error that ended the call (default: a short fixed
            sentence per kind of error, which never includes the provider's message).
        on_done: called (sync or async) with the `RelayResult` when the body has ended,
            whatever the reason. The result is also logged at INFO on `tally_client.web`
            and kept on the response's `.result`.

    Returns:
        A `starlette.responses.StreamingResponse` with `Content-Type: text/event-stream`.

    Raises:
        ConfigurationError: Starlette is not installed (`pip install 'tally-client[web]'`),
            an unknown protocol or reset mode, a stream already iterated, or a negative
            `ping` / `smooth`.
    """
    response_class = _response_class()
    if protocol not in ("vercel-ai", "events"):
        raise ConfigurationError(f"protocol must be 'vercel-ai' or 'events', not {protocol!r}")
    if reset not in ("data", "step"):
        raise ConfigurationError(f"reset must be 'data' or 'step', not {reset!r}")
    if not isinstance(stream, AsyncStream | Stream):
        raise ConfigurationError(
            f"sse_response() relays an AsyncStream or a Stream, not {type(stream).__name__}"
        )
    if stream.started:
        raise ConfigurationError("this stream was already iterated: pass a fresh stream")
    for name, value in (("ping", ping), ("smooth", smooth)):
        if value is not None and not (value > 0 and math.isfinite(value)):
            raise ConfigurationError(f"{name} must be a positive number of seconds or None")
    encoder: _Encoder = _VercelEncoder(reset) if protocol == "vercel-ai" else _EventsEncoder()
    relay = _Relay(
        stream,
        encoder,
        smooth=smooth,
        message_id=message_id or f"msg_{uuid.uuid4().hex}",
        metadata=dict(metadata or {}),
        error_text=error_text or describe_error,
        on_done=on_done,
    )
    all_headers = dict(HEADERS)
    if protocol == "vercel-ai":
        all_headers[VERCEL_HEADER[0]] = VERCEL_HEADER[1]
    all_headers.update({name.lower(): value for name, value in (headers or {}).items()})
    response: StreamingResponse = response_class(relay, ping, all_headers)
    return response


def describe_error(error: BaseException) -> str:
    """The default text shown to a user for an error that ended a call or caused a Reset.

    A fixed sentence per kind of error, naming its type: never the provider's message, which
    may carry request ids, account details or prompt fragments.
    """
    if isinstance(error, TimeoutError):
        what = "The model took too long to answer"
    elif isinstance(error, TransportError):
        what = "The connection to the model broke"
    elif isinstance(error, RateLimitError | OverloadedError):
        what = "The model is overloaded or rate-limited"
    elif isinstance(error, APIStatusError):
        what = "The model's provider refused or failed the request"
    elif isinstance(error, ProviderError):
        what = "The model's provider reported an error"
    else:
        what = "The answer could not be completed"
    return f"{what} ({type(error).__name__})."


def decision_metadata(decision: Decision | None) -> dict[str, Any] | None:
    """The routing decision as JSON-ready message metadata (camelCase, as the page reads it)."""
    if decision is None:
        return None
    return {
        "id": getattr(decision, "id", None),  # the decision's id, for outcome feedback
        "model": decision.model,
        "provider": decision.provider,
        "stream": decision.stream,
        "confidence": {"model": decision.confidence.model, "stream": decision.confidence.stream},
        "reasons": list(decision.reasons),
        "source": decision.source,
    }


def response_metadata(response: Response | None) -> dict[str, Any]:
    """A Response's outcome as JSON-ready message metadata: state, usage, metrics, attempts."""
    if response is None:
        return {"state": "interrupted"}
    m = response.metrics
    usage = response.usage
    return {
        "state": response.state,
        "finishReason": response.finish_reason,
        "model": response.model,
        "provider": response.provider,
        "usage": {
            "inputTokens": usage.input_tokens,
            "outputTokens": usage.output_tokens,
            "reported": usage.reported,
        },
        "metrics": {
            "ttft": m.ttft,
            "totalSeconds": m.total_seconds,
            "itlMean": m.itl_mean,
            "itlP95": m.itl_p95,
            "outputTokensPerSecond": m.output_tokens_per_second,
            "chunks": m.chunks,
        },
        "attempts": len(response.attempts),
    }


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


_quote: Callable[[str], str] = encode_basestring
"""A str as a JSON string literal (the C encoder json.dumps uses, without its set-up cost)."""


# -- encoders: one per wire format. Each returns the bytes of whole SSE events. -----------


class _Encoder:
    """Turns stream events into SSE frames for one response (holds the open-part state)."""

    def start(self, message_id: str, metadata: dict[str, Any]) -> bytes:
        raise NotImplementedError

    def text(self, text: str) -> bytes:
        raise NotImplementedError

    def thinking(self, text: str) -> bytes:
        raise NotImplementedError

    def tool(self, event: ToolCallDelta) -> bytes:
        raise NotImplementedError

    def reset(self, event: Reset, reason: str) -> bytes:
        raise NotImplementedError

    def error(self, text: str, metadata: dict[str, Any]) -> bytes:
        raise NotImplementedError

    def finish(self, response: Response, metadata: dict[str, Any]) -> bytes:
        raise NotImplementedError


class _VercelEncoder(_Encoder):
    """The Vercel AI SDK UI message stream, v1: `data: {json}` per part, then `[DONE]`."""

    def __init__(self, reset: ResetMode) -> None:
        self._reset_mode = reset
        self._parts = 0
        self._text_prefix: str | None = None  # 'data: {"type":"text-delta","id":"t1","delta":'
        self._text_id = ""
        self._reasoning_prefix: str | None = None
        self._reasoning_id = ""
        self._tools: dict[int, tuple[str, str]] = {}  # index -> (toolCallId, toolName)

    def _id(self, prefix: str) -> str:
        self._parts += 1
        return f"{prefix}{self._parts}"

    @staticmethod
    def _part(part: dict[str, Any]) -> str:
        return f"data: {_dumps(part)}\n\n"

    def _close_open(self) -> str:
        out = ""
        if self._reasoning_prefix is not None:
            out += self._part({"type": "reasoning-end", "id": self._reasoning_id})
            self._reasoning_prefix = None
        if self._text_prefix is not None:
            out += self._part({"type": "text-end", "id": self._text_id})
            self._text_prefix = None
        return out

    def start(self, message_id: str, metadata: dict[str, Any]) -> bytes:
        start: dict[str, Any] = {"type": "start", "messageId": message_id}
        if metadata:
            start["messageMetadata"] = metadata
        return (self._part(start) + self._part({"type": "start-step"})).encode()

    def text(self, text: str) -> bytes:
        prefix = self._text_prefix
        if prefix is not None:  # the hot path: one more delta of the open text part
            return f"{prefix}{_quote(text)}}}\n\n".encode()
        out = ""
        if self._reasoning_prefix is not None:
            out = self._part({"type": "reasoning-end", "id": self._reasoning_id})
            self._reasoning_prefix = None
        self._text_id = self._id("text_")
        self._text_prefix = prefix = (
            f'data: {{"type":"text-delta","id":{_dumps(self._text_id)},"delta":'
        )
        out += self._part({"type": "text-start", "id": self._text_id})
        return f"{out}{prefix}{_quote(text)}}}\n\n".encode()

    def thinking(self, text: str) -> bytes:
        prefix = self._reasoning_prefix
        if prefix is not None:
            return f"{prefix}{_quote(text)}}}\n\n".encode()
        out = ""
        if self._text_prefix is not None:
            out = self._part({"type": "text-end", "id": self._text_id})
            self._text_prefix = None
        self._reasoning_id = self._id("reasoning_")
        self._reasoning_prefix = prefix = (
            f'data: {{"type":"reasoning-delta","id":{_dumps(self._reasoning_id)},"delta":'
        )
        out += self._part({"type": "reasoning-start", "id": self._reasoning_id})
        return f"{out}{prefix}{_quote(text)}}}\n\n".encode()

    def tool(self, event: ToolCallDelta) -> bytes:
        out = ""
        known = self._tools.get(event.index)
        if known is None:
            call_id = event.id or f"call_{event.index}"
            known = self._tools[event.index] = (call_id, event.name or "")
            out += self._close_open()
            out += self._part(
                {"type": "tool-input-start", "toolCallId": call_id, "toolName": known[1]}
            )
        if event.arguments:
            out += self._part(
                {
                    "type": "tool-input-delta",
                    "toolCallId": known[0],
                    "inputTextDelta": event.arguments,
                }
            )
        return out.encode()

    def reset(self, event: Reset, reason: str) -> bytes:
        out = self._close_open()
        self._tools.clear()
        data = {"attempt": event.attempt, "discardedText": event.discarded_text, "reason": reason}
        notice: dict[str, Any] = {
            "type": "data-reset",
            "id": f"reset_{event.attempt}",
            "data": data,
        }
        if self._reset_mode == "step":
            notice["transient"] = True
            out += self._part({"type": "reset-step"}) + self._part(notice)
        else:
            out += self._part({"type": "finish-step"}) + self._part(notice)
            out += self._part({"type": "start-step"})
        return out.encode()

    def error(self, text: str, metadata: dict[str, Any]) -> bytes:
        out = self._close_open()
        out += self._part({"type": "error", "errorText": text})
        out += self._part({"type": "finish", "finishReason": "error", "messageMetadata": metadata})
        return (out + "data: [DONE]\n\n").encode()

    def finish(self, response: Response, metadata: dict[str, Any]) -> bytes:
        out = self._close_open()
        by_id = {call_id: name for call_id, name in self._tools.values()}
        announced = [self._tools[i] for i in sorted(self._tools)]
        for position, call in enumerate(response.tool_calls):
            call_id = announced[position][0] if position < len(announced) else call.id
            if call_id not in by_id:
                out += self._part(
                    {"type": "tool-input-start", "toolCallId": call_id, "toolName": call.name}
                )
            try:
                args = call.parsed_arguments()
            except ValueError as exc:
                out += self._part(
                    {
                        "type": "tool-input-error",
                        "toolCallId": call_id,
                        "toolName": call.name,
                        "input": call.arguments,
                        "errorText": f"the arguments are not valid JSON: {exc}",
                    }
                )
            else:
                out += self._part(
                    {
                        "type": "tool-input-available",
                        "toolCallId": call_id,
                        "toolName": call.name,
                        "input": args,
                    }
                )
        out += self._part({"type": "finish-step"})
        finish: dict[str, Any] = {"type": "finish", "messageMetadata": metadata}
        finish["finishReason"] = _FINISH_REASONS.get(response.finish_reason or "", "other")
        out += self._part(finish)
        return (out + "data: [DONE]\n\n").encode()


class _EventsEncoder(_Encoder):
    """Plain named SSE events with JSON data, for hand-written pages (docs/web.md)."""

    @staticmethod
    def _event(name: str, data: dict[str, Any]) -> bytes:
        return f"event: {name}\ndata: {_dumps(data)}\n\n".encode()

    def start(self, message_id: str, metadata: dict[str, Any]) -> bytes:
        return self._event("start", {"messageId": message_id, "metadata": metadata})

    def text(self, text: str) -> bytes:
        return f'event: text\ndata: {{"text":{_quote(text)}}}\n\n'.encode()

    def thinking(self, text: str) -> bytes:
        return f'event: thinking\ndata: {{"text":{_quote(text)}}}\n\n'.encode()

    def tool(self, event: ToolCallDelta) -> bytes:
        data = {"index": event.index, "id": event.id, "name": event.name}
        data["arguments"] = event.arguments
        return self._event("tool-call", data)

    def reset(self, event: Reset, reason: str) -> bytes:
        data = {"attempt": event.attempt, "discardedText": event.discarded_text, "reason": reason}
        return self._event("reset", data)

    def error(self, text: str, metadata: dict[str, Any]) -> bytes:
        return self._event("error", {"message": text, "metadata": metadata})

    def finish(self, response: Response, metadata: dict[str, Any]) -> bytes:
        calls = [
            {"id": c.id, "name": c.name, "arguments": c.arguments} for c in response.tool_calls
        ]
        return self._event("done", {"metadata": metadata, "toolCalls": calls})


# -- the relay: events in, frames out, the upstream closed whatever happens ---------------


class _End:
    pass


@dataclass(frozen=True)
class _Failed:
    error: BaseException


_END = _End()

_Item = StreamEvent | _End | _Failed


async def _produce(stream: AsyncStream, queue: asyncio.Queue[_Item]) -> None:
    try:
        async for event in stream:
            queue.put_nowait(event)
    except Exception as exc:
        queue.put_nowait(_Failed(exc))
    else:
        queue.put_nowait(_END)


def _produce_sync(
    stream: Stream, queue: asyncio.Queue[_Item], loop: asyncio.AbstractEventLoop
) -> None:
    def put(item: _Item) -> None:
        with contextlib.suppress(RuntimeError):  # the loop closed: nobody listens any more
            loop.call_soon_threadsafe(queue.put_nowait, item)

    try:
        for event in stream:
            put(event)
    except Exception as exc:
        put(_Failed(exc))
    else:
        put(_END)


async def _coalesce(queue: asyncio.Queue[_Item], interval: float) -> AsyncIterator[StreamEvent]:
    """Merge text (and reasoning) deltas so that at most one goes out per `interval` seconds.

    A delta after a quiet interval goes out at once (TTFT is not delayed); later ones wait
    for the interval to pass, joined. Any other event flushes what is waiting first.
    """
    loop = asyncio.get_running_loop()
    pending: list[str] = []
    pending_kind: type[TextDelta] | type[ThinkingDelta] = TextDelta
    last_sent = -math.inf
    while True:
        if pending:
            try:
                item = await asyncio.wait_for(queue.get(), last_sent + interval - loop.time())
            except TimeoutError:
                last_sent = loop.time()
                yield pending_kind("".join(pending))
                pending.clear()
                continue
        else:
            item = await queue.get()
        if type(item) is TextDelta or type(item) is ThinkingDelta:
            if pending and type(item) is pending_kind:
                pending.append(item.text)
                continue
            if pending:
                yield pending_kind("".join(pending))
                pending.clear()
            now = loop.time()
            if now - last_sent >= interval:
                last_sent = now
                yield item
            else:
                pending_kind = type(item)
                pending.append(item.text)
            continue
        if pending:
            last_sent = loop.time()
            yield pending_kind("".join(pending))
            pending.clear()
        if type(item) is _End:
            return
        if type(item) is _Failed:
            raise item.error
        yield cast(StreamEvent, item)


class _Relay:
    """One relay's state: the stream, its encoder, and the result being built."""

    def __init__(
        self,
        stream: AsyncStream | Stream,
        encoder: _Encoder,
        *,
        smooth: float | None,
        message_id: str,
        metadata: dict[str, Any],
        error_text: Callable[[BaseException], str],
        on_done: OnDone | None,
    ) -> None:
        self.stream = stream
        self.encoder = encoder
        self.smooth = smooth
        self.message_id = message_id
        self.metadata = metadata
        self.error_text = error_text
        self.on_done = on_done
        self.result = RelayResult()
        self._started_at = time.perf_counter()
        self._closed = False
        self._thread: threading.Thread | None = None
        self._producer: asyncio.Task[None] | None = None

    async def frames(self) -> AsyncIterator[bytes]:
        """The response body: whole SSE events, one per item. Closes the stream at the end."""
        result = self.result
        encoder = self.encoder
        self._started_at = time.perf_counter()
        start_meta = dict(self.metadata)
        decision = decision_metadata(self.stream.decision)
        if decision is not None:
            start_meta.setdefault("decision", decision)
        result.frames += 1
        yield encoder.start(self.message_id, start_meta)
        try:
            async for event in self._events():
                kind = type(event)
                if kind is TextDelta:
                    frame = encoder.text(cast(TextDelta, event).text)
                elif kind is ThinkingDelta:
                    frame = encoder.thinking(cast(ThinkingDelta, event).text)
                elif kind is ToolCallDelta:
                    frame = encoder.tool(cast(ToolCallDelta, event))
                elif kind is Reset:
                    reset = cast(Reset, event)
                    frame = encoder.reset(reset, self.error_text(reset.error))
                else:  # UsageReported, Finished: they reach the page on the final part
                    continue
                result.frames += 1
                yield frame
        except Exception as exc:
            if isinstance(exc, StreamError) and self._closed:
                return  # closed because the browser left: there is no one to tell
            result.error = exc
            result.response = getattr(exc, "partial", None)
            result.frames += 1
            yield encoder.error(self.error_text(exc), response_metadata(result.response))
        else:
            if self._closed:
                return
            response = self._final()
            result.response = response
            result.frames += 1
            yield encoder.finish(response, response_metadata(response))
        finally:
            with anyio.CancelScope(shield=True):
                await self.close()

    def _events(self) -> AsyncIterator[StreamEvent]:
        stream = self.stream
        if isinstance(stream, AsyncStream) and self.smooth is None:
            return aiter(stream)  # the fast path: iterate in the response's own task
        return self._queued()

    async def _queued(self) -> AsyncIterator[StreamEvent]:
        """Events through a queue: from a producer task (async) or thread (sync stream)."""
        queue: asyncio.Queue[_Item] = asyncio.Queue()
        stream = self.stream
        if isinstance(stream, AsyncStream):
            self._producer = asyncio.create_task(_produce(stream, queue))
        else:
            loop = asyncio.get_running_loop()
            self._thread = threading.Thread(
                target=_produce_sync, args=(stream, queue, loop), name="tally-relay", daemon=True
            )
            self._thread.start()
        if self.smooth is None:
            while True:
                item = await queue.get()
                if type(item) is _End:
                    return
                if type(item) is _Failed:
                    raise item.error
                yield cast(StreamEvent, item)
        else:
            async for event in _coalesce(queue, self.smooth):
                yield event

    def _final(self) -> Response:
        stream = self.stream
        if isinstance(stream, AsyncStream):
            return stream.response
        return stream.final()

    async def close(self) -> None:
        """Close the upstream call now (idempotent) and wait for its producer to end."""
        if not self._closed:
            self._closed = True
            stream = self.stream
            if isinstance(stream, AsyncStream):
                await stream.close()
            else:
                stream.close()  # thread-safe: unblocks the producer thread's read
        producer, self._producer = self._producer, None
        if producer is not None and not producer.done():
            producer.cancel()
            await asyncio.gather(producer, return_exceptions=True)
        thread, self._thread = self._thread, None
        if thread is not None and thread.is_alive():
            await asyncio.to_thread(thread.join, 10.0)

    async def finished(self, disconnected: bool) -> RelayResult:
        """Fill in the result after the body ended, log it and call `on_done`."""
        result = self.result
        result.disconnected = disconnected
        result.seconds = time.perf_counter() - self._started_at
        if result.response is None and result.error is None:
            try:
                result.response = self._final() if not disconnected else None
            except Exception:  # a cancelled call has no final Response to raise
                result.response = None
            if result.response is None:
                result.response = self.stream.snapshot()
        response = result.response
        if response is not None:
            usage = response.usage.output_tokens
            result.output_tokens = usage if usage is not None else response.metrics.chunks
            budget = _max_tokens(self.stream)
            if response.state == "cancelled" and budget is not None:
                result.output_tokens_saved = max(0, budget - result.output_tokens)
        if disconnected:
            logger.info(
                "relay stopped by the client after %.2f s: %s output tokens generated, "
                "up to %s not generated (%d frames)",
                result.seconds,
                result.output_tokens,
                result.output_tokens_saved,
                result.frames,
            )
        else:
            logger.info(
                "relay ended after %.2f s: %s (%d frames, %d pings)",
                result.seconds,
                response.state if response is not None else type(result.error).__name__,
                result.frames,
                result.pings,
            )
        if self.on_done is not None:
            try:
                outcome = self.on_done(result)
                if inspect.isawaitable(outcome):
                    await outcome
            except Exception:
                logger.exception("the relay's on_done callback failed")
        return result


def _max_tokens(stream: AsyncStream | Stream) -> int | None:
    """The output limit the call sent, read from its request body (any of our protocols)."""
    body = stream.request_body
    for key in ("max_tokens", "max_completion_tokens", "max_output_tokens"):
        value = body.get(key)
        if isinstance(value, int):
            return value
    config = body.get("generationConfig")
    if isinstance(config, Mapping) and isinstance(config.get("maxOutputTokens"), int):
        return cast(int, config["maxOutputTokens"])
    return None


# -- the Starlette response, built on first use ----------------------------------------------

_RESPONSE_CLASS: type[StreamingResponse] | None = None


def _response_class() -> Any:
    global _RESPONSE_CLASS
    if _RESPONSE_CLASS is None:
        try:
            _RESPONSE_CLASS = _build_response_class()
        except ImportError as exc:
            raise ConfigurationError(
                "tally_client.web needs Starlette: pip install 'tally-client[web]' "
                f"(or install FastAPI) ({exc})"
            ) from exc
    return _RESPONSE_CLASS


class _Sender:
    """Serialises the body's frames and the keep-alive pings onto one ASGI `send`."""

    def __init__(self, send: Send, relay: _Relay) -> None:
        self._send = send
        self._relay = relay
        self._lock = asyncio.Lock()  # no checkpoint when free (anyio.Lock yields each time)
        self._loop = asyncio.get_running_loop()
        self.last = self._loop.time()
        self.ended = False
        self.disconnected = False

    async def send(self, message: Message) -> None:
        async with self._lock:
            if self.ended:
                return
            if message["type"] == "http.response.body" and not message.get("more_body"):
                self.ended = True
            await self._send(message)
            self.last = self._loop.time()

    async def ping(self, interval: float) -> None:
        """Send `: ping` whenever nothing was sent for `interval` seconds."""
        loop = self._loop
        while True:
            await anyio.sleep(max(0.0, self.last + interval - loop.time()))
            if loop.time() - self.last < interval:
                continue
            async with self._lock:
                if self.ended:
                    return
                await self._send(
                    {"type": "http.response.body", "body": b": ping\n\n", "more_body": True}
                )
                self.last = loop.time()
                self._relay.result.pings += 1

    async def watch(self, receive: Receive, scope: anyio.CancelScope) -> None:
        """Wait for `http.disconnect`; then stop the body, which closes the upstream call."""
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
        if self.ended:  # the server reports a finished response as a disconnect too
            return
        self.disconnected = True
        # Cancel the body task wherever it waits (a read, a retry's sleep, a send): its
        # `finally` then closes the upstream call from the task that iterates it.
        scope.cancel()


def _build_response_class() -> type[StreamingResponse]:
    from starlette.responses import StreamingResponse

    class RelayResponse(StreamingResponse):
        """A StreamingResponse that watches for the client leaving and pings while idle.

        Attributes:
            result: the RelayResult, filled in when the body has ended.
        """

        media_type = "text/event-stream"

        def __init__(self, relay: _Relay, ping: float | None, headers: Mapping[str, str]):
            super().__init__(relay.frames(), headers=headers, media_type="text/event-stream")
            self._relay = relay
            self._ping = ping
            self.result = relay.result

        async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
            relay = self._relay
            sender = _Sender(send, relay)
            try:
                async with anyio.create_task_group() as group:
                    group.start_soon(sender.watch, receive, group.cancel_scope)
                    if self._ping is not None:
                        group.start_soon(sender.ping, self._ping)
                    try:
                        await self.stream_response(sender.send)
                    except OSError:  # ASGI 2.4: the send failed because the client left
                        sender.disconnected = True
                    finally:
                        group.cancel_scope.cancel()
                        with anyio.CancelScope(shield=True):
                            await self.body_iterator.aclose()  # type: ignore[attr-defined]
            finally:
                with anyio.CancelScope(shield=True):
                    await relay.close()
                    await relay.finished(sender.disconnected)
            if self.background is not None:
                await self.background()

    return RelayResponse
