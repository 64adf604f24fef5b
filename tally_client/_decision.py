"""The routing vocabulary: what a model costs and can do, and what the router decided.

A leaf module: it imports nothing from tally_client, so the envelope, errors, response and
routing modules can all use these types without importing one another.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Literal

__all__ = [
    "CallerChoice",
    "Confidence",
    "Decision",
    "DecisionSource",
    "ModelSpec",
    "Outcome",
    "PhasePlan",
    "Price",
]

DecisionSource = Literal["embedded", "remote", "fallback", "caller"]
"""Who made a Decision: the embedded router, the hosted router, the embedded router after the
hosted one failed (`fallback`), or the caller (`model=`, `stream()`/`complete()`)."""


@dataclass(frozen=True)
class Price:
    """What a model costs, in USD per million tokens, and where that number comes from.

    Attributes:
        input: USD per million input tokens (not served from a cache).
        output: USD per million output tokens (reasoning tokens included).
        cached_input: USD per million input tokens read from a prompt cache; None if unknown.
        source: where the prices were read (a URL or a description).
        date: when they were read (ISO date).
    """

    input: float
    output: float
    cached_input: float | None = None
    source: str = field(default="", repr=False)
    date: str = field(default="", repr=False)

    def cost(
        self,
        input_tokens: int | None,
        output_tokens: int | None,
        cached_input_tokens: int | None = None,
    ) -> float | None:
        """USD for that many tokens, or None when a count (or a needed price) is unknown.

        `input_tokens` includes the cached ones, as every provider reports it; the cached
        part is billed at `cached_input`. Never returns 0.0 for a missing count.
        """
        if input_tokens is None or output_tokens is None:
            return None
        cached = cached_input_tokens or 0
        if cached and self.cached_input is None:
            return None
        fresh = max(0, input_tokens - cached)
        usd = fresh * self.input + cached * (self.cached_input or 0.0) + output_tokens * self.output
        return usd / 1_000_000

    def blended(self, input_tokens: int, output_tokens: int) -> float:
        """USD expected for a call of that many input and output tokens (no cache)."""
        return (input_tokens * self.input + output_tokens * self.output) / 1_000_000


@dataclass(frozen=True)
class ModelSpec:
    """A model the client may route to.

    Attributes:
        name: the model id sent to the provider ("gpt-4.1-mini", "claude-sonnet-4-5", ...).
        provider: the key of the provider that serves it in the client ("openai", "local", ...).
        quality: the prior tier, 1 small and cheap, 2 capable, 3 strongest (the learner
            refines it per task shape from outcomes).
        context_window: the input + output limit, in tokens.
        cost: USD per million tokens, blended, used only when `price` is None (0 for a
            local model you do not pay per token for).
        latency: relative time to first token, used only when `ttft` is None.
        price: USD per million input / cached-input / output tokens (see `Price`).
        capabilities: what the model supports: a subset of {"json", "tools", "vision",
            "reasoning"}.
        ttft: typical time to first token, in seconds; None if unknown.
        output_tokens_per_second: typical generation speed, in tokens per second.
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
    price: Price | None = None
    capabilities: frozenset[str] = frozenset({"json", "tools"})
    ttft: float | None = None
    output_tokens_per_second: float | None = None
    batch_discount: float | None = None

    def expected_cost(self, input_tokens: int, output_tokens: int) -> float:
        """USD expected for a call of that size (from `price`, else the blended `cost`)."""
        if self.price is not None:
            return self.price.blended(input_tokens, output_tokens)
        return (input_tokens + output_tokens) * self.cost / 1_000_000

    def e2e_seconds(self, output_tokens: int) -> float:
        """Expected end-to-end seconds: TTFT + ITL x output tokens (ITL = 1 / tokens/s).

        Without measured figures, `latency` stands in for TTFT at 60 tokens per second.
        """
        ttft = self.ttft if self.ttft is not None else self.latency
        rate = self.output_tokens_per_second or 60.0
        return ttft + output_tokens / rate


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
class CallerChoice:
    """What the caller fixed before routing; the router decides the rest.

    Attributes:
        model: the model the caller named (`model=`), or None.
        stream: True for `stream()`, False for `complete()`, None for `respond()`.
    """

    model: str | None = None
    stream: bool | None = None


NO_CHOICE = CallerChoice()


def _new_id() -> str:
    return os.urandom(8).hex()


@dataclass(frozen=True)
class Decision:
    """Which model answers a call and whether it streams.

    Attributes:
        model: the model id.
        provider: the provider key serving it.
        stream: deliver as an SSE stream (True) or atomically (False).
        confidence: 0..1 for the model choice and for the delivery mode.
        reasons: short sentences a person can read, strongest first.
        exploration: the router picked a less proven model to learn about it (only where
            its confidence was low).
        phases: for calls with tools: the tool phase's and the synthesis phase's modes.
        source: "embedded", "remote", "fallback" (the hosted router failed; `reasons` says
            why) or "caller" (the caller fixed the model or the mode).
        id: this decision's id (16 hex digits), echoed in telemetry and feedback.
        price: the chosen model's price, used for `Response.cost`; None if unknown.
        shape: the learner's key for the envelope's shape (no content), or None.
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
    source: DecisionSource = "embedded"
    id: str = field(default_factory=_new_id)
    price: Price | None = None
    shape: str | None = None
    batch: bool = False


@dataclass(frozen=True)
class Outcome:
    """What happened to a routed call, as the router learns it. Counts only, no content.

    Attributes:
        decision_id: the Decision's id.
        model: the model that answered.
        success: 0..1: 1 for a complete answer, 0 for an error, a cut or an invalid
            structured output, or the caller's score from `feedback()`.
        state: the Response state ("complete", "partial", "interrupted", "cancelled") or
            "feedback".
        finish_reason: the normalized finish reason, or None.
        input_tokens, output_tokens: reported usage, or None.
        cost: USD, or None when unknown.
        latency: seconds from the request to the end of the call.
        stream: whether the call streamed.
        attempts: how many tries the call took.
    """

    decision_id: str
    model: str
    success: float
    state: str
    finish_reason: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    cost: float | None = None
    latency: float | None = None
    stream: bool = False
    attempts: int = 1
