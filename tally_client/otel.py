"""OpenTelemetry for tally_client calls, following the GenAI semantic conventions.

    from tally_client import otel
    otel.instrument()        # every call of every client: spans, events, metrics

or per client: `Client(observers=[otel.OTelObserver()])`. Needs the `otel` extra
(opentelemetry-api); bring your own SDK and exporter, as with any instrumentation.

Per call, one span of kind CLIENT named "{gen_ai.operation.name} {gen_ai.request.model}"
(for example "chat local") with the GenAI attributes: `gen_ai.operation.name`,
`gen_ai.provider.name`, `gen_ai.request.model`, `gen_ai.request.stream`,
`gen_ai.request.max_tokens`, `gen_ai.request.temperature`, `gen_ai.output.type`,
`server.address`, `server.port`, then `gen_ai.response.model`, `gen_ai.response.id`,
`gen_ai.response.finish_reasons`, `gen_ai.usage.input_tokens`, `gen_ai.usage.output_tokens`,
`gen_ai.response.time_to_first_chunk` (seconds) and, on failure, `error.type` with status
ERROR. tally_client's own facts are under `tally.*`: the routing decision
(`tally.route.stream`, `tally.route.confidence.model`, `tally.route.confidence.stream`,
`tally.route.source`), `tally.response.state` and `tally.attempts`. Each retry adds an event
`tally.retry` (error.type, `tally.attempt`, `tally.retry.wait` in seconds) and each Reset an
event `tally.reset` (`tally.attempt`, `tally.reset.discarded_chars`).

Metrics (instrument names and units from the conventions): `gen_ai.client.operation.duration`
(s), `gen_ai.client.operation.time_to_first_chunk` (s, streamed calls) and
`gen_ai.client.token.usage` ({token}, by `gen_ai.token.type` input | output).

Message content is recorded only when the user opts in through the conventions' variable
OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT (`true`, `SPAN_ONLY` or `SPAN_AND_EVENT`):
then `gen_ai.input.messages`, `gen_ai.system_instructions` and `gen_ai.output.messages` are set
as JSON strings in the conventions' parts shape.

The span is started in the context current when the call's first request goes out, so it is
the child of the caller's span in threads and asyncio tasks alike; it ends exactly once, when
the call completes, fails, is cancelled (closed, broken out of, Ctrl-C, task cancelled) or is
abandoned (its stream garbage-collected).

Sources: the OpenTelemetry GenAI semantic conventions (gen-ai-spans.md, gen-ai-metrics.md),
now in open-telemetry/semantic-conventions-genai; the attribute names are written out here
rather than imported from the deprecated `_incubating` constants.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from opentelemetry import metrics, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from ._observe import CallInfo, CallObserver, Observer, add_observer, remove_observer

if TYPE_CHECKING:
    from ._errors import ProviderError
    from ._events import Reset
    from ._request import Message
    from ._response import Response

__all__ = ["CAPTURE_CONTENT_ENV", "OTelObserver", "instrument", "uninstrument"]

CAPTURE_CONTENT_ENV = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
"""The conventions' opt-in for message content (default off)."""

_CAPTURE_VALUES = frozenset({"true", "span_only", "span_and_event"})
_DURATION_BUCKETS = [0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48,
                     40.96, 81.92]  # fmt: skip
_TOKEN_BUCKETS = [1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304,
                  16777216, 67108864]  # fmt: skip
_WELL_KNOWN = {"openai": "openai", "anthropic": "anthropic", "gemini": "gcp.gemini"}


def _provider_name(call: CallInfo) -> str:
    # The conventions' well-known name for an official provider; the client's own label for
    # anything else (an OpenAI-compatible local server is not "openai").
    if call.provider == call.provider_kind:
        return _WELL_KNOWN.get(call.provider_kind, call.provider)
    return call.provider


def _parts(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "content": content}]
    if isinstance(content, Sequence):
        return [
            {"type": "text", "content": part.get("text", "")}
            if isinstance(part, Mapping) and part.get("type") == "text"
            else {"type": str(part.get("type")) if isinstance(part, Mapping) else "unknown"}
            for part in content
        ]
    return []


def _messages(messages: Sequence[Message]) -> tuple[str, str | None]:
    system = [m for m in messages if m.get("role") in ("system", "developer")]
    rest = [
        {"role": str(m.get("role")), "parts": _parts(m.get("content"))}
        for m in messages
        if m.get("role") not in ("system", "developer")
    ]
    instructions = [p for m in system for p in _parts(m.get("content"))]
    return json.dumps(rest, ensure_ascii=False), (
        json.dumps(instructions, ensure_ascii=False) if instructions else None
    )


class _SpanCall(CallObserver):
    __slots__ = ("_attrs", "_capture", "_owner", "_span", "_started", "_stream")

    def __init__(self, owner: OTelObserver, call: CallInfo, capture: bool) -> None:
        self._owner = owner
        self._capture = capture
        self._started = time.monotonic()
        self._stream = call.stream
        operation = "generate_content" if call.protocol == "gemini" else "chat"
        self._attrs: dict[str, Any] = {
            "gen_ai.operation.name": operation,
            "gen_ai.provider.name": _provider_name(call),
            "gen_ai.request.model": call.model,
        }
        url = urlsplit(call.base_url)
        if url.hostname:
            self._attrs["server.address"] = url.hostname
        if url.port:
            self._attrs["server.port"] = url.port
        attributes: dict[str, Any] = {
            **self._attrs,
            "gen_ai.request.stream": call.stream,
            "gen_ai.output.type": "json" if call.structured else "text",
        }
        if call.max_tokens is not None:
            attributes["gen_ai.request.max_tokens"] = call.max_tokens
        if call.temperature is not None:
            attributes["gen_ai.request.temperature"] = call.temperature
        if call.decision is not None:
            d = call.decision
            attributes.update(
                {
                    "tally.route.stream": d.stream,
                    "tally.route.confidence.model": d.confidence.model,
                    "tally.route.confidence.stream": d.confidence.stream,
                    "tally.route.source": d.source,
                }
            )
        if capture and call.messages:
            inputs, instructions = _messages(call.messages)
            attributes["gen_ai.input.messages"] = inputs
            if instructions is not None:
                attributes["gen_ai.system_instructions"] = instructions
        self._span = owner.tracer.start_span(
            f"{operation} {call.model}", kind=SpanKind.CLIENT, attributes=attributes
        )

    def first_token(self, seconds: float) -> None:
        self._span.set_attribute("gen_ai.response.time_to_first_chunk", seconds)
        if self._stream:
            self._owner.time_to_first_chunk.record(seconds, self._attrs)

    def retry(self, attempt: int, error: ProviderError, wait: float) -> None:
        self._span.add_event(
            "tally.retry",
            {
                "error.type": type(error).__name__,
                "tally.attempt": attempt,
                "tally.retry.wait": wait,
            },
        )

    def reset(self, event: Reset) -> None:
        self._span.add_event(
            "tally.reset",
            {
                "tally.attempt": event.attempt,
                "tally.reset.discarded_chars": len(event.discarded_text),
            },
        )

    def finished(self, response: Response) -> None:
        self._end(response, None)

    def failed(self, error: ProviderError) -> None:
        self._end(error.partial, error)

    def _end(self, response: Response | None, error: BaseException | None) -> None:
        span, attrs = self._span, dict(self._attrs)
        if response is not None:
            if response.model:
                attrs["gen_ai.response.model"] = response.model
                span.set_attribute("gen_ai.response.model", response.model)
            if response.response_id:
                span.set_attribute("gen_ai.response.id", response.response_id)
            if response.finish_reason is not None:
                span.set_attribute("gen_ai.response.finish_reasons", [response.finish_reason])
            span.set_attribute("tally.response.state", response.state)
            span.set_attribute("tally.attempts", len(response.attempts))
            usage = response.usage
            for kind, count in (("input", usage.input_tokens), ("output", usage.output_tokens)):
                if count is not None:
                    span.set_attribute(f"gen_ai.usage.{kind}_tokens", count)
                    self._owner.token_usage.record(count, {**attrs, "gen_ai.token.type": kind})
            if self._capture and error is None:
                message = {
                    "role": "assistant",
                    "parts": [{"type": "text", "content": response.text}],
                    "finish_reason": response.finish_reason or response.state,
                }
                span.set_attribute(
                    "gen_ai.output.messages", json.dumps([message], ensure_ascii=False)
                )
        if error is not None:
            attrs["error.type"] = type(error).__name__
            span.set_attribute("error.type", attrs["error.type"])
            span.set_status(Status(StatusCode.ERROR, type(error).__name__))
        self._owner.duration.record(time.monotonic() - self._started, attrs)
        span.end()


class OTelObserver(Observer):
    """Follows every call with a span, events and the GenAI client metrics (module docstring).

    Args:
        tracer_provider: the TracerProvider; default the global one.
        meter_provider: the MeterProvider; default the global one.
        capture_content: record message content; default: from
            OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT, read at each call (off unless
            set to true, SPAN_ONLY or SPAN_AND_EVENT).
    """

    def __init__(
        self,
        *,
        tracer_provider: trace.TracerProvider | None = None,
        meter_provider: metrics.MeterProvider | None = None,
        capture_content: bool | None = None,
    ) -> None:
        from importlib.metadata import version

        ours = version("tally-client")
        self.tracer = trace.get_tracer("tally_client", ours, tracer_provider=tracer_provider)
        meter = metrics.get_meter("tally_client", ours, meter_provider=meter_provider)
        self.duration = meter.create_histogram(
            "gen_ai.client.operation.duration",
            unit="s",
            description="GenAI operation duration",
            explicit_bucket_boundaries_advisory=_DURATION_BUCKETS,
        )
        self.time_to_first_chunk = meter.create_histogram(
            "gen_ai.client.operation.time_to_first_chunk",
            unit="s",
            description="Time to receive the first chunk of a streamed response",
            explicit_bucket_boundaries_advisory=_DURATION_BUCKETS,
        )
        self.token_usage = meter.create_histogram(
            "gen_ai.client.token.usage",
            unit="{token}",
            description="Number of input and output tokens used",
            explicit_bucket_boundaries_advisory=_TOKEN_BUCKETS,
        )
        self.capture_content = capture_content

    def start(self, call: CallInfo) -> CallObserver | None:
        """See Observer.start: a span for every call."""
        capture = self.capture_content
        if capture is None:
            capture = os.environ.get(CAPTURE_CONTENT_ENV, "").strip().lower() in _CAPTURE_VALUES
        return _SpanCall(self, call, capture)


_installed: OTelObserver | None = None


def instrument(
    *,
    tracer_provider: trace.TracerProvider | None = None,
    meter_provider: metrics.MeterProvider | None = None,
    capture_content: bool | None = None,
) -> OTelObserver:
    """Trace and measure every call of every client in this process; returns the observer.

    Calling it again replaces the previous instrumentation. Arguments: see `OTelObserver`.
    """
    global _installed
    uninstrument()
    _installed = OTelObserver(
        tracer_provider=tracer_provider,
        meter_provider=meter_provider,
        capture_content=capture_content,
    )
    add_observer(_installed)
    return _installed


def uninstrument() -> None:
    """Undo `instrument()` (no error if it was not called)."""
    global _installed
    if _installed is not None:
        remove_observer(_installed)
        _installed = None
