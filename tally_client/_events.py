"""Events a `Stream` yields, in provider-neutral form.

A provider decoder turns each SSE event into zero or more of these; the stream supervisor
adds `Reset`. They are small frozen objects: one is made per chunk on the hot path.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._response import FinishReason, Usage

__all__ = [
    "Finished",
    "Reset",
    "StreamEvent",
    "TextDelta",
    "ThinkingDelta",
    "ToolCallDelta",
    "UsageReported",
]


@dataclass(frozen=True, slots=True)
class TextDelta:
    """A piece of output text, in order. Concatenated they give `Response.text`."""

    text: str


@dataclass(frozen=True, slots=True)
class ThinkingDelta:
    """A piece of reasoning/thinking text (Anthropic thinking blocks, reasoning_content)."""

    text: str


@dataclass(frozen=True, slots=True)
class ToolCallDelta:
    """A fragment of a tool call, keyed by its position among the response's tool calls.

    `id` and `name` come on a call's first fragment (None afterwards); `arguments` is a piece
    of the JSON arguments string, split anywhere: concatenate by `index`, parse at the end.
    """

    index: int
    id: str | None
    name: str | None
    arguments: str


@dataclass(frozen=True, slots=True)
class UsageReported:
    """The provider reported token usage (whole-call totals so far; the last one wins)."""

    usage: Usage


@dataclass(frozen=True, slots=True)
class Finished:
    """The provider said why the model stopped. Not proof of completeness: see Response.state."""

    finish_reason: FinishReason
    raw: str


@dataclass(frozen=True, slots=True)
class Reset:
    """A failed attempt's output is discarded and the call starts again.

    Yielded before the next attempt's first delta, and only when output of the failed
    attempt(s) was already yielded: a UI should clear what it showed since the last Reset.

    Attributes:
        attempt: the number of the attempt that starts now (2 for the first retry).
        discarded_text: the text yielded since the previous Reset (what to clear).
        error: the error that ended the most recent failed attempt (when several attempts
            failed since the last Reset, the earlier errors are on `Response.attempts`).
    """

    attempt: int
    discarded_text: str
    error: BaseException


StreamEvent = TextDelta | ThinkingDelta | ToolCallDelta | UsageReported | Finished | Reset
"""Everything a Stream can yield."""
