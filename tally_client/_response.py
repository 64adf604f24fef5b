"""The result of a call, whichever way it was delivered: `Response` and what it holds."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, Literal

from ._decision import Price

if TYPE_CHECKING:
    from typing_extensions import TypeVar

    from ._decision import Decision
    from ._tools import ToolRound

    T = TypeVar("T", default=Any)
else:
    # A TypeVar's default (PEP 696) matters to type checkers only; typing's TypeVar spares
    # `import tally_client` the 2 ms of importing typing_extensions.
    from typing import TypeVar

    T = TypeVar("T")
"""The type of `Response.parsed`: the `schema=` type of the call (Any without one)."""

__all__ = [
    "Attempt",
    "FinishReason",
    "Metrics",
    "Response",
    "ResponseState",
    "ToolCall",
    "Usage",
]

FinishReason = Literal["stop", "length", "tool_calls", "content_filter", "error"]
"""Why the model stopped, normalized across providers. Says nothing about completeness."""

ResponseState = Literal["complete", "partial", "interrupted", "cancelled"]
"""Whether the whole response arrived.

- complete: the provider's terminal event arrived (or the atomic body parsed).
- partial: the body ended cleanly without its terminal event: the text may be cut anywhere.
- interrupted: the connection broke, a timeout fired, or an error event arrived mid-stream.
- cancelled: the caller closed the stream before it ended.
"""


@dataclass(frozen=True)
class Usage:
    """Token counts for one call, as the provider reported them.

    Counts are in tokens. When the provider reported nothing (a stream cut before its usage
    event, or a server that never sends one) `reported` is False and the counts are None:
    missing, never zero.

    Reported is not final: some providers report counts before the end (Anthropic's
    `message_start` has the input and 1 output token; Gemini sends running totals). `final`
    is True only for the counts of the provider's terminal usage (Chat Completions' usage
    chunk, Responses' terminal event, Anthropic's last `message_delta`, Gemini's chunk with
    the `finishReason`, an atomic body) on a Response whose state is "complete". On a partial,
    interrupted or cancelled Response it is always False: the counts are a lower bound.

    Attributes:
        input_tokens: prompt tokens, cached ones included.
        output_tokens: generated tokens, reasoning/thinking tokens included.
        total_tokens: input + output as the provider counts them.
        cached_input_tokens: the part of input_tokens served from a prompt cache, if reported.
        reasoning_tokens: the part of output_tokens spent thinking, if reported.
        final: these are the whole call's counts (see above), not a running or early count.
    """

    input_tokens: int | None = None
    output_tokens: int | None = None
    total_tokens: int | None = None
    cached_input_tokens: int | None = None
    reasoning_tokens: int | None = None
    final: bool = False

    @property
    def reported(self) -> bool:
        """True when the provider reported the counts (rather than them being missing)."""
        return self.input_tokens is not None or self.output_tokens is not None

    @classmethod
    def of(
        cls,
        input_tokens: int | None,
        output_tokens: int | None,
        *,
        total_tokens: int | None = None,
        cached_input_tokens: int | None = None,
        reasoning_tokens: int | None = None,
        final: bool = False,
    ) -> Usage:
        """Build a Usage, deriving `total_tokens` from the parts when it is not given."""
        if total_tokens is None and input_tokens is not None and output_tokens is not None:
            total_tokens = input_tokens + output_tokens
        return cls(
            input_tokens, output_tokens, total_tokens, cached_input_tokens, reasoning_tokens, final
        )


MISSING_USAGE = Usage()


@dataclass(frozen=True)
class ToolCall:
    """One tool call the model asked for.

    Attributes:
        id: the provider's call id (Gemini's Developer API may give none: then "call_<index>").
        name: the tool's name.
        arguments: the arguments as the model wrote them (a JSON string).
    """

    id: str
    name: str
    arguments: str

    def parsed_arguments(self) -> Any:
        """The arguments decoded with a strict JSON parser.

        Raises:
            json.JSONDecodeError: the model wrote arguments that are not valid JSON.
        """
        return json.loads(self.arguments) if self.arguments else {}


@dataclass(frozen=True)
class Metrics:
    """Timing of the successful attempt of a call, in seconds; rates in tokens per second.

    Attributes:
        ttft: time to first token: from sending the attempt's request to its first text,
            thinking or tool-call delta (for an atomic call, the whole call).
        total_seconds: from sending the attempt's request to its end.
        itl_mean: mean inter-token latency: the mean gap between consecutive deltas.
        itl_p95: the 95th percentile of those gaps.
        output_tokens_per_second: reported output tokens / (total_seconds - ttft); None when
            usage was not reported or fewer than two deltas arrived.
        chunks: number of content deltas received.
        buffered: after a long silence the deltas arrived in bursts (many per network read):
            a proxy probably buffered the stream (see the warning raised with it).
    """

    ttft: float | None = None
    total_seconds: float = 0.0
    itl_mean: float | None = None
    itl_p95: float | None = None
    output_tokens_per_second: float | None = None
    chunks: int = 0
    buffered: bool = False


@dataclass(frozen=True)
class Attempt:
    """One try at a call.

    Attributes:
        number: 1 for the first try.
        error: the error that ended this try (None for the successful one).
        text_chars: how far it got: characters of text received.
        wait: seconds waited before the next try (0.0 for the last).
        usage: the tokens this try reported (a failed try's billed tokens count too).
        price: the model's price (from the catalog), if known.
    """

    number: int
    error: BaseException | None
    text_chars: int
    wait: float = 0.0
    usage: Usage = MISSING_USAGE
    price: Price | None = None

    @property
    def cost(self) -> float | None:
        """USD this try cost: its reported usage at the catalog price; None when either is
        unknown (never 0.0 for missing figures)."""
        if self.price is None:
            return None
        u = self.usage
        return self.price.cost(u.input_tokens, u.output_tokens, u.cached_input_tokens)


@dataclass(frozen=True)
class Response(Generic[T]):
    """The result of one call: atomic, streamed, or what a failed stream got before failing.

    Generic in the type of `parsed`: `client.complete(..., schema=Person)` returns a
    `Response[Person]`.

    Attributes:
        text: the output text of the successful attempt (thinking excluded).
        tool_calls: the tool calls the model asked for, in order.
        usage: token counts; `usage.reported` is False when the provider sent none.
        finish_reason: why the model stopped (normalized), or None if it never said.
        state: "complete", "partial", "interrupted" or "cancelled" (see ResponseState).
        model: the model that answered (as the provider named it, else as requested).
        provider: the provider name.
        decision: the routing Decision this call followed, if it was routed.
        metrics: TTFT, inter-token latency, tokens per second.
        attempts: one Attempt per try; more than one means retries ran.
        thinking: reasoning/thinking text, where the provider streams it.
        raw_finish_reason: the provider's own finish reason string.
        parsed: the structured output, validated strictly against the call's `schema=` (a
            `Person` for `schema=Person`; a JSON value for a JSON Schema dict). None when no
            schema was given or the Response is not complete; JSON `null` where the schema
            allows it.
        response_id: the provider's response id, when it gives one.
        continuation: the provider's own form of this assistant turn, kept as it arrived so
            the next request can send it back unchanged (Anthropic content blocks with
            thinking signatures, Gemini parts with `thoughtSignature`, Responses output items
            with reasoning items): `{"protocol": ..., "content" | "parts" | "items": [...]}`;
            None for Chat Completions, which needs nothing beyond the text and tool calls.
        rounds: for `run_tools()`: every round of the loop in order (each with its own
            Response, usage and metrics); empty for a single call.
    """

    text: str
    tool_calls: tuple[ToolCall, ...] = ()
    usage: Usage = MISSING_USAGE
    finish_reason: FinishReason | None = None
    state: ResponseState = "complete"
    model: str | None = None
    provider: str | None = None
    decision: Decision | None = None
    metrics: Metrics = field(default_factory=Metrics)
    attempts: tuple[Attempt, ...] = ()
    thinking: str = ""
    raw_finish_reason: str | None = None
    parsed: T = None  # type: ignore[assignment]
    response_id: str | None = None
    continuation: Any = None
    rounds: tuple[ToolRound, ...] = ()

    @property
    def cost(self) -> float | None:
        """USD for this call: the reported usage at the model's catalog price.

        The answering try's cost plus the known costs of failed tries before it (their
        billed tokens count; a try cut before its usage arrived adds nothing, as its count is
        unknown). None when the price or the answering try's usage is unknown: never 0.0
        for a missing figure. Each try's own cost is `attempts[i].cost`.
        """
        if self.attempts:
            last = self.attempts[-1].cost
            if last is None:
                return None
            return last + sum(a.cost or 0.0 for a in self.attempts[:-1])
        price = self.decision.price if self.decision is not None else None
        if price is None:
            return None
        u = self.usage
        return price.cost(u.input_tokens, u.output_tokens, u.cached_input_tokens)

    @property
    def complete(self) -> bool:
        """True when the whole response arrived (state == "complete")."""
        return self.state == "complete"

    def __str__(self) -> str:
        return self.text

    def to_message(self) -> dict[str, Any]:
        """This Response as the assistant turn to append to the messages of the next call.

        The Chat Completions shape every provider module reads: `{"role": "assistant",
        "content": text or None, "tool_calls": [OpenAI tool-call dicts]}`, plus
        `"continuation"` when the provider sent data it needs back (see the attribute), which
        the provider it came from sends verbatim (byte-identical signatures and reasoning
        items) and the others ignore.
        """
        message: dict[str, Any] = {"role": "assistant", "content": self.text or None}
        if self.tool_calls:
            message["tool_calls"] = [
                {
                    "id": c.id,
                    "type": "function",
                    "function": {"name": c.name, "arguments": c.arguments},
                }
                for c in self.tool_calls
            ]
        if self.continuation is not None:
            message["continuation"] = self.continuation
        return message
