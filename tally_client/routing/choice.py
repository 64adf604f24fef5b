"""Step 2 of routing: the model choice over a priced catalog.

Among the configured models that meet the envelope's needs (JSON output needs "json", tools
need "tools"; the context window must hold the input plus the expected output), the cheapest
whose expected quality for the task suffices. A time-sensitive call weighs latency instead:
the expected end-to-end seconds E2E = TTFT + ITL x output tokens. The learner (step 3) refines
"expected quality" per task shape from outcomes; this module is its prior and its fallback.
"""

from __future__ import annotations

from collections.abc import Sequence

from .._decision import ModelSpec
from .._envelope import Envelope
from .._errors import ConfigurationError
from .rules import SHORT_OUTPUT_TOKENS

__all__ = [
    "DEFAULT_OUTPUT_TOKENS",
    "ContextLengthError",
    "candidates",
    "choose_model",
    "needed_quality",
]

DEFAULT_OUTPUT_TOKENS = 500
"""Output tokens assumed for cost and latency when the envelope does not say."""


class ContextLengthError(ConfigurationError):
    """No configured model's context window holds the call's input plus its expected output.

    Raised before any request leaves. Attributes, in tokens: `input_tokens` (the estimate),
    `output_tokens` (expected), `largest_window` (the largest configured window).
    """

    def __init__(self, input_tokens: int, output_tokens: int, largest_window: int) -> None:
        self.input_tokens = input_tokens
        self.output_tokens = output_tokens
        self.largest_window = largest_window
        super().__init__(
            f"the input (~{input_tokens} tokens, estimated) plus the expected output "
            f"({output_tokens} tokens) needs {input_tokens + output_tokens} tokens of context; "
            f"the largest configured window holds {largest_window}. Shorten the input, lower "
            "max_tokens, or configure a model with a larger context_window"
        )


def _no_models() -> ConfigurationError:
    return ConfigurationError(
        "no model is configured: pass models= to the client, or set OPENAI_API_KEY, "
        "ANTHROPIC_API_KEY or GEMINI_API_KEY"
    )


def candidates(envelope: Envelope, models: Sequence[ModelSpec]) -> list[ModelSpec]:
    """The models that can serve `envelope`: capabilities first, then the context window.

    A capability filter that would leave nothing is not applied (a model without "json" can
    still be asked for JSON and is checked afterwards); the context window is a hard limit.

    Raises:
        ConfigurationError: `models` is empty.
        ContextLengthError: no model's window holds the input plus the expected output.
    """
    if not models:
        raise _no_models()
    need: set[str] = set()
    if envelope.structure_type == "json":
        need.add("json")
    if envelope.tools_used:
        need.add("tools")
    able = [m for m in models if need <= m.capabilities] or list(models)
    output = envelope.expected_output_tokens or 0
    size = envelope.context_tokens + output
    fits = [m for m in able if m.context_window >= size]
    if not fits:
        raise ContextLengthError(
            envelope.context_tokens, output, max(m.context_window for m in models)
        )
    return fits


def needed_quality(envelope: Envelope) -> int:
    """The quality tier (1-3) a task needs before anything is learned about it."""
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


def _cost(m: ModelSpec, envelope: Envelope) -> float:
    return m.expected_cost(
        envelope.context_tokens, envelope.expected_output_tokens or DEFAULT_OUTPUT_TOKENS
    )


def _e2e(m: ModelSpec, envelope: Envelope) -> float:
    return m.e2e_seconds(envelope.expected_output_tokens or DEFAULT_OUTPUT_TOKENS)


def choose_model(
    envelope: Envelope, models: Sequence[ModelSpec]
) -> tuple[ModelSpec, float, tuple[str, ...]]:
    """The model for an envelope: the cheapest one good enough for the task.

    "Good enough" (before learning): JSON output and tools need quality >= 2; code, long
    output and design or analysis tasks want 3; short machine-read output (classification) is
    fine at 1. Time-sensitive calls take the lowest expected E2E among good-enough models.

    Returns:
        (the model, confidence 0..1, reasons).

    Raises:
        ConfigurationError: no model is configured.
        ContextLengthError: no model's window holds the input plus the expected output.
    """
    fits = candidates(envelope, models)
    if len(models) == 1:
        return models[0], 1.0, (_only_model(models[0].name),)
    need = needed_quality(envelope)
    good = [m for m in fits if m.quality >= need]
    if good:
        if envelope.time_sensitive:
            best = min(good, key=lambda m: (_e2e(m, envelope), _cost(m, envelope)))
            why = (
                f"the fastest model of quality >= {need} (~{_e2e(best, envelope):.1f} s "
                "expected, TTFT + ITL x output tokens), since the call is time-sensitive"
            )
        else:
            best = min(good, key=lambda m: (_cost(m, envelope), _e2e(m, envelope)))
            usd = _cost(best, envelope)
            why = f"the cheapest model of quality >= {need} for this task (~${usd:.5f} a call)"
        confidence = 0.9 if len(good) < len(fits) else 0.75
        return best, confidence, (f"{best.name}: {why}",)
    best = max(fits, key=lambda m: (m.quality, -_cost(m, envelope)))
    return (
        best,
        0.5,
        (f"{best.name}: the strongest configured model; the task wants quality {need}",),
    )


_ONLY: dict[str, str] = {}


def _only_model(name: str) -> str:
    """The reason for a client with one model: one shared string per model name."""
    reason = _ONLY.get(name)
    if reason is None:
        if len(_ONLY) >= 256:  # names come from the client's configuration: few; stay bounded
            _ONLY.clear()
        reason = _ONLY[name] = f"{name} is the only configured model"
    return reason
