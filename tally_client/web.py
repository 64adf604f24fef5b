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

`sse_response()` relays an `AsyncStream` (or a sync `Stream`, iterated in a thread), or a tool
loop from `run_tools()` (`AsyncToolRun` or `ToolRun`: its tool calls, their results and the
rounds as steps), to the browser in one of two wire formats:

- `"vercel-ai"`: the Vercel AI SDK UI message stream, v1 (what `useChat` reads; source:
  vercel/ai `packages/ai/src/ui-message-stream/ui-message-chunks.ts` and
  `content/docs/04-ai-sdk-ui/50-stream-protocol.mdx`): `start`, `start-step`,
  `text-start`/`text-delta`/`text-end`, `reasoning-*`, `tool-input-*`, `tool-output-*`,
  `error`, `finish-step`, `finish`, then `data: [DONE]`.
- `"events"`: named SSE events with JSON data for hand-written pages (`start`, `text`,
  `thinking`, `tool-call`, `tool-start`, `tool-result`, `step`, `reset`, `error`, `done`);
  see docs/web.md.

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
from collections import deque
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
from ._toolrun import AsyncToolRun, ToolRun
from ._tools import ToolCallStarted, ToolResult

if TYPE_CHECKING:
    from starlette.responses import StreamingResponse
    from starlette.types import Message, Receive, Scope, Send

    from ._response import Response, ToolCall
    from ._routing import Decision

__all__ = [
    "HEADERS",
    "RelayProtocol",
    "RelayResult",
    "Relayable",
    "ResetMode",
    "decision_metadata",
    "describe_error",
    "describe_tool_error",
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
            OpenAI-compatible servers, llama-server included; an estimate elsewhere). For a
            tool run, over every round.
        output_tokens_saved: for a call stopped by the browser, the output tokens it did not
            generate: its `max_tokens` minus `output_tokens` (a tool run: of the round cut
            short). An upper bound (the model might have stopped sooner); None when the call
            was not stopped or set no max_tokens.
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

Relayable = AsyncStream[Any] | Stream[Any] | AsyncToolRun | ToolRun
"""What `sse_response()` relays: a stream, or a tool loop from `run_tools()`."""


def sse_response(
    stream: Relayable,
    protocol: RelayProtocol = "vercel-ai",
    *,
    headers: Mapping[str, str] | None = None,
    ping: float | None = 15.0,
    smooth: float | None = None,
    reset: ResetMode = "data",
    message_id: str | None = None,
    metadata: Mapping[str, Any] | None = None,
    error_text: Callable[[BaseException], str] | None = None,
    tool_error_text: Callable[[ToolResult], str] | None = None,
    on_done: OnDone | None = None,
) -> StreamingResponse:
    """Relay a stream to the browser as an SSE response (Starlette / FastAPI).

    The call starts when the response starts, and is closed (its provider connection too) as
    soon as the browser disconnects: Starlette/ASGI `http.disconnect`, or a failed send.

    Args:
        stream: the call, from `AsyncClient.stream()` / `respond()`, or a tool loop from
            `AsyncClient.run_tools()` (or a sync `Client`'s, iterated in a thread so the event
            loop never blocks). Not yet iterated.
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
        tool_error_text: for a tool run, the text shown for a tool call that failed (the tool
            raised, its arguments were invalid, no such tool); default `describe_tool_error`,
            which never includes the exception's message. The model still gets the full one.
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
    if not isinstance(stream, AsyncStream | Stream | AsyncToolRun | ToolRun):
        raise ConfigurationError(
            "sse_response() relays an AsyncStream, a Stream or a run_tools() run, "
            f"not {type(stream).__name__}"
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
        tool_error_text=tool_error_text or describe_tool_error,
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


def describe_tool_error(result: ToolResult) -> str:
    """The default text shown to a user for a tool call that failed in a tool run.

    A fixed sentence naming the tool and the exception's type, never its message (which may
    carry paths, hosts or credentials); the model still gets the full error as the result.
    """
    name = result.call.name
    error = result.error
    if isinstance(error, LookupError) and error.args and "no tool named" in str(error):
        return f"The model asked for a tool that does not exist ({name})."
    if error is not None and type(error).__name__ == "ValidationError":
        return f"The model's arguments for {name} did not match its parameters."
    kind = type(error).__name__ if error is not None else "an error"
    return f"The tool {name} failed ({kind})."


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
        **({"rounds": len(response.rounds)} if response.rounds else {}),
    }


def _tool_output(result: ToolResult) -> Any:
    """A tool's output for the page: the JSON value when it is a JSON object or array (a
    tool that returned a dict, a list, a model), else the text the model got."""
    text = result.output
    if text[:1] in ("{", "["):
        try:
            return json.loads(text)
        except ValueError:
            pass
    return text


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

    def tool_start(self, event: ToolCallStarted) -> bytes:
        raise NotImplementedError

    def tool_result(self, event: ToolResult, error_text: str) -> bytes:
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
        # A tool run: its tool calls started in this step, their ids as sent, and whether
        # the step's tool results went out (the next part then opens a new step).
        self._started = 0
        self._sent_ids: dict[str, str] = {}
        self._input_errors: set[str] = set()
        self._step_done = False

    def _id(self, prefix: str) -> str:
        self._parts += 1
        return f"{prefix}{self._parts}"

    @staticmethod
    def _part(part: dict[str, Any]) -> str:
        return f"data: {_dumps(part)}\n\n"

    def _next_step(self) -> str:
        """After a tool round's results: end that step and start the next model round's."""
        self._step_done = False
        self._tools.clear()
        self._started = 0
        self._sent_ids.clear()
        self._input_errors.clear()
        return self._part({"type": "finish-step"}) + self._part({"type": "start-step"})

    def _announced_id(self, call: ToolCall, position: int) -> str | None:
        """The toolCallId under which a streamed round's deltas announced `call`, or None.

        By id first; by position (the k-th call of the round, the k-th announced) when no
        delta carried its id (a provider that names calls late or not at all), unless that
        announced call was already matched to another.
        """
        announced = [self._tools[i][0] for i in sorted(self._tools)]
        if call.id in announced:
            return call.id
        if position < len(announced) and announced[position] not in self._sent_ids.values():
            return announced[position]
        return None

    def _tool_input(self, call_id: str, call: ToolCall) -> str:
        """The call's input part: `tool-input-available` with the parsed arguments, or
        `tool-input-error` when they are not JSON (noted, so its result adds no second error
        part). The error text names the tool only: the arguments stay in `input`."""
        try:
            args = call.parsed_arguments()
        except ValueError:
            self._input_errors.add(call_id)
            return self._part(
                {
                    "type": "tool-input-error",
                    "toolCallId": call_id,
                    "toolName": call.name,
                    "input": call.arguments,
                    "errorText": f"The model's arguments for {call.name} are not valid JSON.",
                }
            )
        part: dict[str, Any] = {"type": "tool-input-available", "toolCallId": call_id}
        part["toolName"] = call.name
        part["input"] = args
        return self._part(part)

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
        out = self._next_step() if self._step_done else ""
        if self._reasoning_prefix is not None:
            out += self._part({"type": "reasoning-end", "id": self._reasoning_id})
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
        out = self._next_step() if self._step_done else ""
        if self._text_prefix is not None:
            out += self._part({"type": "text-end", "id": self._text_id})
            self._text_prefix = None
        self._reasoning_id = self._id("reasoning_")
        self._reasoning_prefix = prefix = (
            f'data: {{"type":"reasoning-delta","id":{_dumps(self._reasoning_id)},"delta":'
        )
        out += self._part({"type": "reasoning-start", "id": self._reasoning_id})
        return f"{out}{prefix}{_quote(text)}}}\n\n".encode()

    def tool(self, event: ToolCallDelta) -> bytes:
        out = self._next_step() if self._step_done else ""
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

    def _tool_call(self, call: ToolCall, position: int) -> str:
        """A whole tool call's parts: `tool-input-start` unless its streamed part already
        announced it, then its input part."""
        out = ""
        call_id = self._announced_id(call, position)
        if call_id is None:
            call_id = call.id
            out = self._part(
                {"type": "tool-input-start", "toolCallId": call_id, "toolName": call.name}
            )
        self._sent_ids[call.id] = call_id
        return out + self._tool_input(call_id, call)

    def tool_start(self, event: ToolCallStarted) -> bytes:
        out = self._next_step() if self._step_done else ""
        out += self._close_open()
        position, self._started = self._started, self._started + 1
        return (out + self._tool_call(event.call, position)).encode()

    def tool_result(self, event: ToolResult, error_text: str) -> bytes:
        self._step_done = True
        call_id = self._sent_ids.get(event.call.id, event.call.id)
        if not event.is_error:
            part = {"type": "tool-output-available", "toolCallId": call_id}
            part["output"] = _tool_output(event)
            return self._part(part).encode()
        if call_id in self._input_errors:
            return b""  # tool-input-error already put the part in its error state
        part = {"type": "tool-output-error", "toolCallId": call_id, "errorText": error_text}
        return self._part(part).encode()

    def reset(self, event: Reset, reason: str) -> bytes:
        out = self._next_step() if self._step_done else ""
        out += self._close_open()
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
        out = self._next_step() if self._step_done and response.tool_calls else ""
        out += self._close_open()
        for position, call in enumerate(response.tool_calls):
            out += self._tool_call(call, position)
        out += self._part({"type": "finish-step"})
        finish: dict[str, Any] = {"type": "finish", "messageMetadata": metadata}
        finish["finishReason"] = _FINISH_REASONS.get(response.finish_reason or "", "other")
        out += self._part(finish)
        return (out + "data: [DONE]\n\n").encode()


class _EventsEncoder(_Encoder):
    """Plain named SSE events with JSON data, for hand-written pages (docs/web.md)."""

    def __init__(self) -> None:
        self._next_round = 0  # a tool run's results went out: the next event opens this round

    @staticmethod
    def _event(name: str, data: dict[str, Any]) -> bytes:
        return f"event: {name}\ndata: {_dumps(data)}\n\n".encode()

    def start(self, message_id: str, metadata: dict[str, Any]) -> bytes:
        return self._event("start", {"messageId": message_id, "metadata": metadata})

    def text(self, text: str) -> bytes:
        frame = f'event: text\ndata: {{"text":{_quote(text)}}}\n\n'.encode()
        return self._step() + frame if self._next_round else frame

    def thinking(self, text: str) -> bytes:
        frame = f'event: thinking\ndata: {{"text":{_quote(text)}}}\n\n'.encode()
        return self._step() + frame if self._next_round else frame

    def tool(self, event: ToolCallDelta) -> bytes:
        data = {"index": event.index, "id": event.id, "name": event.name}
        data["arguments"] = event.arguments
        frame = self._event("tool-call", data)
        return self._step() + frame if self._next_round else frame

    def tool_start(self, event: ToolCallStarted) -> bytes:
        call = event.call
        try:
            args: Any = call.parsed_arguments()
        except ValueError:
            args = None
        data = {"id": call.id, "name": call.name, "arguments": call.arguments, "input": args}
        data["round"] = event.round
        frame = self._event("tool-start", data)
        return self._step() + frame if self._next_round else frame

    def tool_result(self, event: ToolResult, error_text: str) -> bytes:
        self._next_round = event.round + 1
        data: dict[str, Any] = {"id": event.call.id, "name": event.call.name}
        if event.is_error:
            data.update(isError=True, errorText=error_text)
        else:
            data.update(isError=False, output=_tool_output(event))
        data.update(seconds=round(event.seconds, 6), round=event.round)
        return self._event("tool-result", data)

    def _step(self) -> bytes:
        number, self._next_round = self._next_round, 0
        return self._event("step", {"round": number})

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

_Item = StreamEvent | ToolCallStarted | ToolResult | _End | _Failed
_Event = StreamEvent | ToolCallStarted | ToolResult

QUEUE_SIZE = 64
"""Events a producer may be ahead of the response by (a task's queue; a thread's bridge
holds up to twice this): then it waits, so a slow browser slows the read, not memory."""


class _Getter:
    """The consumer side both queues offer: `await get()` one item."""

    async def get(self) -> _Item:
        raise NotImplementedError


async def _produce(stream: AsyncStream | AsyncToolRun, queue: asyncio.Queue[_Item]) -> None:
    try:
        async for event in stream:
            await queue.put(event)
    except Exception as exc:
        await queue.put(_Failed(exc))
    else:
        await queue.put(_END)


class _Bridge(_Getter):
    """A bounded hand-over from a producer thread to the event loop.

    The thread appends under a lock and wakes the loop only when the response task waits
    for an item (so a busy response takes many events per wake-up, not one callback per
    event); the task takes everything waiting at once. The thread blocks while `size` items
    wait (backpressure into the read), until the task takes them or `close()` is called: at
    most 2 * `size` items are held, `size` waiting and up to `size` taken and not yet sent.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, size: int = QUEUE_SIZE) -> None:
        self._loop = loop
        self._size = size
        self._lock = threading.Lock()
        self._space = threading.Condition(self._lock)
        self._items: deque[_Item] = deque()
        self._taken: deque[_Item] = deque()  # the task's side: swapped with _items when empty
        self._waiter: asyncio.Future[None] | None = None
        self._closed = False

    def put(self, item: _Item) -> None:
        """From the producer thread: hand one item over (blocks while the bridge is full)."""
        with self._lock:
            while len(self._items) >= self._size and not self._closed:
                self._space.wait()
            if self._closed:
                return  # the response ended: nobody reads any more
            self._items.append(item)
            waiter, self._waiter = self._waiter, None
        if waiter is not None:
            with contextlib.suppress(RuntimeError):  # the loop closed: nobody listens any more
                self._loop.call_soon_threadsafe(_wake, waiter)

    async def get(self) -> _Item:
        taken = self._taken
        if taken:
            return taken.popleft()
        while True:
            with self._lock:
                if self._items:
                    self._taken, self._items = self._items, taken
                    self._space.notify()
                    return self._taken.popleft()
                waiter = self._waiter = self._loop.create_future()
            await waiter

    def close(self) -> None:
        """The response ended: release a producer waiting for room, drop what comes."""
        with self._lock:
            self._closed = True
            self._items.clear()
            self._space.notify_all()


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


def _produce_sync(stream: Stream | ToolRun, bridge: _Bridge) -> None:
    try:
        for event in stream:
            bridge.put(event)
    except Exception as exc:
        bridge.put(_Failed(exc))
    else:
        bridge.put(_END)


async def _coalesce(
    queue: _Getter | asyncio.Queue[_Item], interval: float
) -> AsyncIterator[_Event]:
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
        yield cast(_Event, item)


class _Relay:
    """One relay's state: the stream (or tool run), its encoder, and the result being built."""

    def __init__(
        self,
        stream: Relayable,
        encoder: _Encoder,
        *,
        smooth: float | None,
        message_id: str,
        metadata: dict[str, Any],
        error_text: Callable[[BaseException], str],
        tool_error_text: Callable[[ToolResult], str],
        on_done: OnDone | None,
    ) -> None:
        self.stream = stream
        self.encoder = encoder
        self.smooth = smooth
        self.message_id = message_id
        self.metadata = metadata
        self.error_text = error_text
        self.tool_error_text = tool_error_text
        self.on_done = on_done
        self.result = RelayResult()
        self._started_at = time.perf_counter()
        self._closed = False
        self._thread: threading.Thread | None = None
        self._bridge: _Bridge | None = None
        self._producer: asyncio.Task[None] | None = None
        if isinstance(stream, ToolRun | AsyncToolRun) and isinstance(encoder, _VercelEncoder):
            stream.tool_deltas = True  # a streamed round's tool calls: tool-input-delta

    async def frames(self) -> AsyncIterator[bytes]:
        """The response body: whole SSE events, one per item. Closes the stream at the end."""
        result = self.result
        encoder = self.encoder
        self._started_at = time.perf_counter()
        result.frames += 1
        yield encoder.start(self.message_id, self._start_metadata())
        try:
            async for event in self._events():
                kind = type(event)
                if kind is TextDelta:
                    frame = encoder.text(cast(TextDelta, event).text)
                elif kind is ThinkingDelta:
                    frame = encoder.thinking(cast(ThinkingDelta, event).text)
                elif kind is ToolCallDelta:
                    frame = encoder.tool(cast(ToolCallDelta, event))
                elif kind is ToolCallStarted:
                    frame = encoder.tool_start(cast(ToolCallStarted, event))
                elif kind is ToolResult:
                    tool_result = cast(ToolResult, event)
                    text = self.tool_error_text(tool_result) if tool_result.is_error else ""
                    frame = encoder.tool_result(tool_result, text)
                elif kind is Reset:
                    reset = cast(Reset, event)
                    frame = encoder.reset(reset, self.error_text(reset.error))
                else:  # UsageReported, Finished: they reach the page on the final part
                    continue
                if frame:
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
            response = result.response = self._final()
            result.frames += 1
            yield encoder.finish(response, self._finish_metadata(response))
        finally:
            with anyio.CancelScope(shield=True):
                await self.close()

    def _start_metadata(self) -> dict[str, Any]:
        metadata = dict(self.metadata)
        stream = self.stream
        if isinstance(stream, AsyncStream | Stream):  # a tool run's rounds are not routed yet
            decision = decision_metadata(stream.decision)
            if decision is not None:
                metadata.setdefault("decision", decision)
        return metadata

    @staticmethod
    def _finish_metadata(response: Response) -> dict[str, Any]:
        metadata = response_metadata(response)
        if response.rounds:  # a tool run: the first round's decision (it planned the phases)
            decision = decision_metadata(response.rounds[0].response.decision)
            if decision is not None:
                metadata["decision"] = decision
        return metadata

    def _events(self) -> AsyncIterator[_Event]:
        stream = self.stream
        if isinstance(stream, AsyncStream | AsyncToolRun) and self.smooth is None:
            return aiter(stream)  # the fast path: iterate in the response's own task
        return self._queued()

    async def _queued(self) -> AsyncIterator[_Event]:
        """Events through a bounded queue: from a producer task (async) or thread (sync)."""
        stream = self.stream
        queue: _Getter | asyncio.Queue[_Item]
        if isinstance(stream, AsyncStream | AsyncToolRun):
            queue = asyncio.Queue(QUEUE_SIZE)
            self._producer = asyncio.create_task(_produce(stream, queue))
        else:
            queue = self._bridge = _Bridge(asyncio.get_running_loop())
            self._thread = threading.Thread(
                target=_produce_sync, args=(stream, queue), name="tally-relay", daemon=True
            )
            self._thread.start()
        if self.smooth is None:
            while True:
                item = await queue.get()
                if type(item) is _End:
                    return
                if type(item) is _Failed:
                    raise item.error
                yield cast(_Event, item)
        else:
            async for event in _coalesce(queue, self.smooth):
                yield event

    def _final(self) -> Response:
        stream = self.stream
        if isinstance(stream, Stream):
            return stream.final()
        return stream.response  # the stream or run has ended: no waiting

    async def close(self) -> None:
        """Close the upstream call now (idempotent) and wait for its producer to end."""
        if not self._closed:
            self._closed = True
            stream = self.stream
            if isinstance(stream, AsyncStream | AsyncToolRun):
                await stream.close()
            else:
                stream.close()  # thread-safe: unblocks the producer thread's read
        if self._bridge is not None:
            self._bridge.close()  # and a producer waiting for room
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
            total, last = _output_tokens(response)
            result.output_tokens = total
            budget = _max_tokens(self.stream)
            if response.state == "cancelled" and budget is not None:
                # the call cut short (a tool run: its round in flight; the others had ended)
                result.output_tokens_saved = max(0, budget - last)
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


def _output_tokens(response: Response) -> tuple[int, int]:
    """(all, the last call's) output tokens: reported usage, else the content deltas received.

    A tool run's Response sums usage and deltas over its rounds; a cancelled one's `rounds`
    lack the round in flight, whose share is what the sums hold beyond the rounds'.
    """
    if not response.rounds:
        usage = response.usage.output_tokens
        tokens = usage if usage is not None else response.metrics.chunks
        return tokens, tokens
    done = [r.response for r in response.rounds]
    reported = (response.usage.output_tokens or 0) - sum(r.usage.output_tokens or 0 for r in done)
    deltas = response.metrics.chunks - sum(r.metrics.chunks for r in done)
    last = reported if reported > 0 else deltas
    total = sum(_output_tokens(r)[0] for r in done) + last
    return total, (last if response.state == "cancelled" else _output_tokens(done[-1])[0])


def _max_tokens(stream: Relayable) -> int | None:
    """The output limit the call sent (a tool run: each round's), read from its request body
    (any of our protocols) or, for a tool run, its options."""
    if isinstance(stream, ToolRun | AsyncToolRun):
        value = stream.options.get("max_tokens")
        return value if isinstance(value, int) else None
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
