"""Routing: an Envelope and the configured models in, a Decision out.

The embedded router is pure and deterministic. Its streaming rules come from the product's
streaming guide (DESIGN.md, "Streaming rules of the embedded router"): JSON output, machine or
pipeline consumers, tool phases and short outputs favour atomic calls; a human reader and long
prose or code favour streaming. Each signal has a weight; the decision follows their sum, and
the confidence says how much they agree and how much evidence there was.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from ._envelope import Envelope
from ._errors import ConfigurationError

__all__ = [
    "Confidence",
    "Decision",
    "EmbeddedRouter",
    "ModelSpec",
    "PhasePlan",
    "Router",
]

SHORT_OUTPUT_TOKENS = 200
"""Below this many expected output tokens, streaming gains no noticeable TTFT."""
LONG_OUTPUT_TOKENS = 800
"""From this many expected output tokens, a reader waits long enough for streaming to matter."""
BATCH_WINDOW_SECONDS = 24 * 3600
"""The providers' Batch APIs promise results within 24 hours (OpenAI's completion_window
"24h", Anthropic's and Gemini's 24 h target): a caller must be able to wait that long."""


@dataclass(frozen=True)
class ModelSpec:
    """A model the client may route to.

    Attributes:
        name: the model id sent to the provider ("gpt-4.1-mini", "claude-sonnet-4-5", ...).
        provider: the key of the provider that serves it in the client ("openai", "local", ...).
        quality: 1 small and cheap, 2 capable, 3 strongest.
        context_window: the input + output limit, in tokens.
        cost: relative price per token (only the order matters).
        latency: relative time to first token (only the order matters).
        batch_discount: the price of a Batch API request as a fraction of a live one (0.5:
            half, as OpenAI, Anthropic and Gemini charge), or None when the provider has no
            Batch API.
    """

    name: str
    provider: str
    quality: int = 2
    context_window: int = 128_000
    cost: float = 1.0
    latency: float = 1.0
    batch_discount: float | None = None


@dataclass(frozen=True)
class Confidence:
    """How sure the router is, 0..1, of the model choice and of the delivery mode."""

    model: float
    stream: float


@dataclass(frozen=True)
class PhasePlan:
    """The delivery mode for one phase of a call with tools.

    Attributes:
        phase: "tool" (the model may call tools) or "synthesis" (it answers from results).
        stream: whether that phase streams.
        confidence: 0..1.
    """

    phase: Literal["tool", "synthesis"]
    stream: bool
    confidence: float


@dataclass(frozen=True)
class Decision:
    """Which model answers a call and whether it streams.

    Attributes:
        model: the model id.
        provider: the provider key serving it.
        stream: deliver as an SSE stream (True) or atomically (False).
        confidence: 0..1 for the model choice and for the delivery mode.
        reasons: short sentences a person can read, strongest first.
        exploration: the router tried a less proven model to learn (hosted router only).
        phases: for calls with tools: the tool phase's and the synthesis phase's modes.
        source: "embedded", "remote", or "caller" when the caller fixed the mode.
        batch: deliver through the provider's Batch API (`client.batch()`); `stream` is then
            False. Recommended only for a pipeline that can wait 24 hours, on a model whose
            provider offers one.
    """

    model: str
    provider: str
    stream: bool
    confidence: Confidence
    reasons: tuple[str, ...]
    exploration: bool = False
    phases: tuple[PhasePlan, ...] = ()
    source: str = "embedded"
    batch: bool = False


class Router(Protocol):
    """Anything that turns an envelope and the configured models into a Decision."""

    def route(self, envelope: Envelope, models: Sequence[ModelSpec]) -> Decision:
        """Choose a model among `models` and a delivery mode for `envelope`.

        Raises:
            ConfigurationError: `models` is empty.
        """
        ...


_Signal = tuple[float, str]  # (weight: > 0 favours streaming, < 0 atomic; reason)


class EmbeddedRouter:
    """The default router: streaming rules and a model choice, computed locally.

    It needs no network and never fails a call for a usable envelope.
    """

    def route(self, envelope: Envelope, models: Sequence[ModelSpec]) -> Decision:
        """See Router.route."""
        model, model_confidence, model_reasons = choose_model(envelope, models)
        reasons: tuple[str, ...]
        phases: tuple[PhasePlan, ...] = ()
        if envelope.phase == "tool":
            synthesis, synth_conf, synth_reasons = _mode(_signals(envelope))
            tool_conf = 0.9 if envelope.consumer != "human" else 0.85
            phases = (
                PhasePlan("tool", False, tool_conf),
                PhasePlan("synthesis", synthesis, synth_conf),
            )
            then = "stream" if synthesis else "atomic"
            reasons = (
                f"{envelope.tools_used} tool(s) in scope: the tool phase is atomic, since a "
                "tool call needs its whole arguments before it can run",
                f"then the synthesis is {then}: " + "; ".join(synth_reasons),
            )
            stream, stream_conf = False, tool_conf
        else:
            stream, stream_conf, reasons_list = _mode(_signals(envelope))
            reasons = tuple(reasons_list)
        batch = _batch_reason(envelope, model)
        if batch is not None:
            stream, reasons = False, (batch, *reasons)
        return Decision(
            model=model.name,
            provider=model.provider,
            stream=stream,
            confidence=Confidence(model_confidence, stream_conf),
            reasons=(*reasons, *model_reasons),
            phases=phases,
            batch=batch is not None,
        )


def _batch_reason(envelope: Envelope, model: ModelSpec) -> str | None:
    """Why this call goes to a Batch API, or None when it should not.

    Only a pipeline (nobody waits on the result) that can wait the providers' 24-hour
    window, without tools (a tool loop needs its rounds now), on a model with a Batch API.
    """
    wait = envelope.latency_tolerance
    if (
        envelope.consumer != "pipeline"
        or wait is None
        or wait < BATCH_WINDOW_SECONDS
        or envelope.tools_used
        or model.batch_discount is None
    ):
        return None
    saving = 1.0 - model.batch_discount
    return (
        f"a pipeline that can wait {wait / 3600:g} h: {model.provider}'s Batch API returns "
        f"results within 24 h and costs {saving:.0%} less"
    )


def _signals(envelope: Envelope) -> list[_Signal]:
    signals: list[_Signal] = []
    consumer = envelope.consumer
    if envelope.structure_type == "json":
        signals.append((-3.0, "JSON output: partial JSON cannot be used until it is complete"))
    if consumer == "human":
        signals.append((2.0, "a person is reading: streaming shows the first words at once"))
    elif consumer in ("machine", "pipeline"):
        signals.append((-2.0, f"a {consumer} consumes the output: it needs the whole result"))
    n = envelope.expected_output_tokens
    if n is not None and n < SHORT_OUTPUT_TOKENS:
        signals.append((-1.0, f"short output (~{n} tokens): streaming gains no noticeable TTFT"))
    elif n is not None and n >= LONG_OUTPUT_TOKENS:
        signals.append(
            (1.5, f"long output (~{n} tokens): an atomic call would keep a reader waiting")
        )
    if envelope.structure_type in ("prose", "code", "mixed") and consumer not in (
        "machine",
        "pipeline",
    ):
        # Only worth anything if someone may be watching the text arrive.
        signals.append((0.5, f"{envelope.structure_type} can be shown as it arrives"))
    if envelope.time_sensitive and consumer == "human":
        signals.append((0.5, "time-sensitive for a reader: first token as early as possible"))
    return signals


def _mode(signals: list[_Signal]) -> tuple[bool, float, list[str]]:
    """Stream or not, the confidence, and the reasons, strongest first.

    confidence = 0.5 + 0.5 * agreement * evidence, where agreement = |sum| / sum(|w|) (1 when
    every signal points the same way) and evidence = min(1, sum(|w|) / 3) (a single weak
    signal is not much to go on). With no signal: atomic at 0.5, a coin toss.
    """
    total = sum(abs(w) for w, _ in signals)
    if total == 0:
        return False, 0.5, ["no signal either way: atomic by default"]
    net = sum(w for w, _ in signals)
    stream = net > 0
    agreement = abs(net) / total
    evidence = min(1.0, total / 3.0)
    confidence = round(0.5 + 0.5 * agreement * evidence, 3)
    ordered = sorted(signals, key=lambda s: -abs(s[0]))
    reasons = [reason for _, reason in ordered]
    if agreement < 0.5:
        reasons.append("the signals conflict: either mode is defensible")
    return stream, confidence, reasons


def choose_model(
    envelope: Envelope, models: Sequence[ModelSpec]
) -> tuple[ModelSpec, float, tuple[str, ...]]:
    """The model for an envelope: the cheapest one good enough for the task.

    "Good enough": JSON output and tools need quality >= 2; code, long output and design or
    analysis tasks want 3; short machine-read output (classification) is fine at 1. The
    context window must hold the input and the expected output. Time-sensitive calls prefer
    the lowest latency among good-enough models.

    Raises:
        ConfigurationError: no model is configured.
    """
    if not models:
        raise ConfigurationError(
            "no model is configured: pass models= to the client, or set OPENAI_API_KEY, "
            "ANTHROPIC_API_KEY or GEMINI_API_KEY"
        )
    need = _needed_quality(envelope)
    size = envelope.context_tokens + (envelope.expected_output_tokens or 0)
    fits = [m for m in models if m.context_window >= size] or list(models)
    if len(models) == 1:
        return models[0], 1.0, (f"{models[0].name} is the only configured model",)
    good = [m for m in fits if m.quality >= need]
    if good:
        key = (
            (lambda m: (m.latency, m.cost))
            if envelope.time_sensitive
            else (lambda m: (m.cost, m.latency))
        )
        best = min(good, key=key)
        why = "the fastest" if envelope.time_sensitive else "the cheapest"
        confidence = 0.9 if len(good) < len(fits) else 0.75
        return best, confidence, (f"{best.name}: {why} model of quality >= {need} for this task",)
    best = max(fits, key=lambda m: (m.quality, -m.cost))
    return (
        best,
        0.5,
        (f"{best.name}: the strongest configured model; the task wants quality {need}",),
    )


def _needed_quality(envelope: Envelope) -> int:
    task = envelope.task_type or ""
    n = envelope.expected_output_tokens or 0
    if (
        envelope.structure_type == "code"
        or n >= 2_000
        or task.startswith(("code", "architecture", "data-analysis"))
    ):
        return 3
    if envelope.structure_type == "json" or envelope.tools_used:
        return 2
    if envelope.consumer in ("machine", "pipeline") and 0 < n < SHORT_OUTPUT_TOKENS:
        return 1
    return 2
