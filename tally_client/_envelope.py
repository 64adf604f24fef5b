"""The semantic envelope: the shape of a call, never its content.

Field names and buckets follow the hosted Tally router's published envelope (protocol "2":
task_type, structure_type, context_length, estimated_tokens, tools_used, time_sensitive);
`consumer` and `phase` are tally_client additions the streaming decision needs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

from ._errors import ConfigurationError

__all__ = [
    "Consumer",
    "ContextLength",
    "Envelope",
    "StructureType",
    "build_envelope",
    "context_bucket",
]

StructureType = Literal["prose", "code", "json", "list", "mixed"]
Consumer = Literal["human", "machine", "pipeline"]
ContextLength = Literal["short", "medium", "long", "extended"]
Phase = Literal["tool", "synthesis"]

_STRUCTURES = frozenset({"prose", "code", "json", "list", "mixed"})
_CONSUMERS = frozenset({"human", "machine", "pipeline"})

# Context buckets from the Tally shapes page: short < 2k tokens, medium 2k-8k, long 8k-32k,
# extended 32k+. A boundary value goes to the larger bucket.
_CONTEXT_BUCKETS: tuple[tuple[int, ContextLength], ...] = (
    (2_000, "short"),
    (8_000, "medium"),
    (32_000, "long"),
)
_CHARS_PER_TOKEN = 4  # the usual English estimate; only the bucket is kept, never the text


@dataclass(frozen=True)
class Envelope:
    """The shape of one call. Holds no prompt text, no message content, no user data.

    Attributes:
        task_type: the kind of work ("chat", "summarisation", "extraction", "classification",
            "code-generation", ...), or None when the caller did not say.
        structure_type: the output's form: prose, code, json, list or mixed.
        context_length: the input size bucket: short (< 2k tokens), medium (2k-8k),
            long (8k-32k), extended (32k+).
        context_tokens: the input size estimate the bucket came from, in tokens.
        expected_output_tokens: how long the output is expected to be, in tokens, or None.
        tools_used: number of tool definitions in scope.
        time_sensitive: the caller prefers lower latency over lower cost.
        consumer: who reads the output: a human, a machine (code that parses it) or a
            pipeline (a later step); None when unknown.
        phase: for calls with tools: "tool" (the model may call tools) or "synthesis" (tool
            results are in, the model answers); None without tools.
        latency_tolerance: how long the result may wait, in seconds (None: not said). A
            pipeline that can wait 24 hours may go to a provider's Batch API.
        protocol_version: the envelope protocol version ("2").
    """

    task_type: str | None = None
    structure_type: StructureType = "prose"
    context_length: ContextLength = "short"
    context_tokens: int = 0
    expected_output_tokens: int | None = None
    tools_used: int = 0
    time_sensitive: bool = False
    consumer: Consumer | None = None
    phase: Phase | None = None
    latency_tolerance: float | None = None
    protocol_version: str = "2"

    @property
    def estimated_tokens(self) -> str | None:
        """The expected output as a bucket string ("<2k", "2k-8k", "8k-32k", "32k+")."""
        n = self.expected_output_tokens
        if n is None:
            return None
        if n < 2_000:
            return "<2k"
        if n < 8_000:
            return "2k-8k"
        return "8k-32k" if n < 32_000 else "32k+"

    def to_wire(self) -> dict[str, Any]:
        """The envelope as the hosted router's JSON (snake_case, buckets as strings)."""
        data = asdict(self)
        data["estimated_tokens"] = self.estimated_tokens
        del data["expected_output_tokens"], data["context_tokens"]
        return {k: v for k, v in data.items() if v is not None}


def context_bucket(tokens: int) -> ContextLength:
    """The context_length bucket for an input of `tokens` tokens."""
    for limit, name in _CONTEXT_BUCKETS:
        if tokens < limit:
            return name
    return "extended"


def build_envelope(
    messages: Sequence[Mapping[str, Any]] = (),
    *,
    task_type: str | None = None,
    structure_type: StructureType | None = None,
    schema: Any = None,
    tools: Sequence[Any] = (),
    max_tokens: int | None = None,
    expected_output_tokens: int | None = None,
    consumer: Consumer | None = None,
    time_sensitive: bool = False,
    context_tokens: int | None = None,
    latency_tolerance: float | None = None,
) -> Envelope:
    """Derive a call's envelope from its parameters.

    The messages are measured (characters / 4 gives a token estimate), and only the size
    bucket is kept; their text never enters the envelope.

    Args:
        messages: the conversation, used only for its size and whether the last turn is a
            tool result (which makes this the synthesis phase).
        task_type: free-form kind of work; see Envelope.task_type.
        structure_type: the output's form; defaults to "json" with a schema, else "prose".
        schema: the output's schema, a type or a JSON Schema dict (makes structure_type "json").
        tools: the tool definitions in scope (only their count is kept).
        max_tokens: the output limit; used as expected_output_tokens when that is not given.
        expected_output_tokens: how long the output is expected to be, in tokens.
        consumer: "human", "machine" or "pipeline".
        time_sensitive: prefer latency over cost.
        context_tokens: the input size in tokens, when the caller knows it exactly.
        latency_tolerance: how long the result may wait, in seconds.

    Raises:
        ConfigurationError: an unknown structure_type or consumer, or a negative
            latency_tolerance.
    """
    if structure_type is None:
        structure_type = "json" if schema is not None else "prose"
    elif structure_type not in _STRUCTURES:
        raise ConfigurationError(
            f"structure_type must be one of {sorted(_STRUCTURES)}, got {structure_type!r}"
        )
    if consumer is not None and consumer not in _CONSUMERS:
        raise ConfigurationError(
            f"consumer must be one of {sorted(_CONSUMERS)} or None, got {consumer!r}"
        )
    if latency_tolerance is not None and latency_tolerance < 0:
        raise ConfigurationError(
            f"latency_tolerance is seconds the result may wait (>= 0), got {latency_tolerance}"
        )
    if context_tokens is None:
        context_tokens = sum(_message_chars(m) for m in messages) // _CHARS_PER_TOKEN
    phase: Phase | None = None
    if tools:
        phase = "synthesis" if messages and messages[-1].get("role") == "tool" else "tool"
    return Envelope(
        task_type=task_type,
        structure_type=structure_type,
        context_length=context_bucket(context_tokens),
        context_tokens=context_tokens,
        expected_output_tokens=expected_output_tokens if expected_output_tokens else max_tokens,
        tools_used=len(tools),
        time_sensitive=time_sensitive,
        consumer=consumer,
        phase=phase,
        latency_tolerance=latency_tolerance,
    )


def _message_chars(message: Mapping[str, Any]) -> int:
    content = message.get("content")
    if isinstance(content, str):
        return len(content)
    if isinstance(content, Sequence):
        return sum(len(str(part.get("text", ""))) for part in content if isinstance(part, Mapping))
    return 0
