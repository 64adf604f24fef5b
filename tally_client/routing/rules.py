"""Step 1 of routing: the streaming rules (stream or atomic), embedded and deterministic.

The rules come from the product's streaming guide (DESIGN.md, "Streaming rules of the
embedded router"): JSON output, machine or pipeline consumers, tool phases and short outputs
favour atomic calls; a human reader and long prose or code favour streaming, all the more when
the chosen model would keep that reader waiting (E2E = TTFT + ITL x output tokens). Each signal
has a weight; the mode follows their sum, and the confidence says how much they agree and how
much evidence there was. A mode the caller fixed (`stream()` / `complete()`) is an input: the
rules then say what they would have chosen, and the caller's mode wins.
"""

from __future__ import annotations

from .._decision import ModelSpec, PhasePlan
from .._envelope import Envelope

__all__ = [
    "BATCH_WINDOW_SECONDS",
    "LONG_OUTPUT_TOKENS",
    "SHORT_OUTPUT_TOKENS",
    "WAIT_SECONDS",
    "Delivery",
    "batch_reason",
    "delivery",
]

SHORT_OUTPUT_TOKENS = 200
"""Below this many expected output tokens, streaming gains no noticeable TTFT."""
LONG_OUTPUT_TOKENS = 800
"""From this many expected output tokens, a reader waits long enough for streaming to matter."""
WAIT_SECONDS = 5.0
"""A person waiting longer than this (expected E2E seconds) for a whole answer tips to streaming."""

BATCH_WINDOW_SECONDS = 24 * 3600
"""The providers' Batch APIs promise results within 24 hours (OpenAI's completion_window
"24h", Anthropic's and Gemini's 24 h target): a caller must be able to wait that long."""

_Signal = tuple[float, str]  # (weight: > 0 favours streaming, < 0 atomic; reason)

Delivery = tuple[bool, float, tuple[str, ...], tuple[PhasePlan, ...]]
"""(stream, confidence 0..1, reasons strongest first, phase plans for calls with tools)."""


def delivery(
    envelope: Envelope, model: ModelSpec | None = None, fixed: bool | None = None
) -> Delivery:
    """The delivery mode for `envelope` when `model` answers.

    Args:
        envelope: the call's shape.
        model: the chosen model (its TTFT and speed give the wait a reader would have).
        fixed: the mode the caller fixed (True: `stream()`, False: `complete()`), or None.
    """
    phases: tuple[PhasePlan, ...] = ()
    if envelope.phase == "tool":
        synthesis, synth_conf, synth_reasons = _mode(_signals(envelope, model))
        tool_conf = 0.9 if envelope.consumer != "human" else 0.85
        phases = (
            PhasePlan("tool", False, tool_conf),
            PhasePlan("synthesis", synthesis, synth_conf),
        )
        then = "stream" if synthesis else "atomic"
        reasons: tuple[str, ...] = (
            f"{envelope.tools_used} tool(s) in scope: the tool phase is atomic, since a "
            "tool call needs its whole arguments before it can run",
            f"then the synthesis is {then}: " + "; ".join(synth_reasons),
        )
        stream, confidence = False, tool_conf
    else:
        stream, confidence, listed = _mode(_signals(envelope, model))
        reasons = tuple(listed)
    if fixed is None:
        return stream, confidence, reasons, phases
    return fixed, 1.0, (_CALLER_CHOSE[fixed, stream], *reasons), phases


def _signals(envelope: Envelope, model: ModelSpec | None) -> list[_Signal]:
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
    if (
        consumer == "human"
        and model is not None
        and n is not None
        and n >= SHORT_OUTPUT_TOKENS
        and (wait := model.e2e_seconds(n)) >= WAIT_SECONDS
    ):
        signals.append(
            (
                1.0,
                f"{model.name} would take ~{wait:.0f} s for the whole answer "
                "(TTFT + ITL x output tokens): a waiting reader is better served by a stream",
            )
        )
    if envelope.structure_type in ("prose", "code", "mixed") and consumer not in (
        "machine",
        "pipeline",
    ):
        # Only worth anything if someone may be watching the text arrive.
        signals.append((0.5, _SHOWN[envelope.structure_type]))
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


def batch_reason(envelope: Envelope, model: ModelSpec) -> str | None:
    """Why this call should go to a Batch API (the third delivery mode), or None.

    Only a pipeline (nobody waits on the result) that can wait the providers' 24-hour window
    (`Envelope.latency_tolerance`), without tools (a tool loop needs its rounds now), on a
    model whose provider has a Batch API (`ModelSpec.batch_discount`).
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


# Reasons that every call of a kind gives: one shared string each, not one per call.
_SHOWN = {kind: f"{kind} can be shown as it arrives" for kind in ("prose", "code", "mixed")}
_CALLER_CHOSE = {
    (True, True): "the caller chose stream(), as the rules would have",
    (False, False): "the caller chose complete(), as the rules would have",
    (True, False): "the caller chose stream(); the rules alone would have said atomic",
    (False, True): "the caller chose complete(); the rules alone would have said stream",
}
