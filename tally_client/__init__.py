"""tally_client: route each LLM call to a model and a delivery mode, then supervise it.

    from tally_client import Client

    client = Client()
    with client.stream("Explain entropy in three sentences.") as stream:
        for text in stream.text():
            print(text, end="", flush=True)
    print(stream.final().metrics.ttft)

Importing this package loads no provider SDK and no provider module; they load on first use.
"""

from __future__ import annotations

import atexit
import sys
from collections.abc import Sequence
from typing import IO, TYPE_CHECKING, Any, TypeVar, Unpack

from ._client import AsyncClient, BaseCallOptions, CallOptions, Client
from ._decision import Confidence, Decision, ModelSpec, PhasePlan, Price
from ._envelope import Envelope, build_envelope
from ._errors import (
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    CheckpointError,
    ConfigurationError,
    ConnectError,
    ConnectTimeout,
    FirstTokenTimeout,
    IdleTimeout,
    MissingAPIKeyError,
    OverloadedError,
    PermissionDeniedError,
    PoolTimeout,
    ProtocolError,
    ProviderError,
    RateLimitError,
    ServerError,
    StreamError,
    StreamInterrupted,
    StructuredOutputError,
    TallyError,
    TotalTimeout,
    TransportError,
)
from ._events import (
    Finished,
    Reset,
    StreamEvent,
    TextDelta,
    ThinkingDelta,
    ToolCallDelta,
    UsageReported,
)
from ._observe import CallInfo, CallObserver, Observer
from ._output import PartialToolCall, PartialToolCalls
from ._partial import PartialJSON, parse_partial_json
from ._request import Message, Tool
from ._response import Attempt, FinishReason, Metrics, Response, ResponseState, ToolCall, Usage
from ._retry import RetryPolicy, Timeouts
from ._stream import AsyncStream, Stream
from ._supervisor import ProxyBufferingWarning
from .routing import ContextLengthError, EmbeddedRouter, Router

if TYPE_CHECKING:
    from ._batch import AsyncBatchJob, BatchItemError, BatchJob, BatchResult, BatchStatus
    from ._limiter import AdaptiveLimit, LimitChange
    from ._map import ItemError, MapResult
    from ._toolrun import AsyncToolRun, ToolRun, ToolRunEvent
    from ._tools import ToolCallStarted, ToolResult, ToolRound, tool_from_function
    from .routing.remote import TallyRouter

# Loaded on first use (PEP 562), so `import tally_client` pays only for the call path: the
# Batch API, pipelines, tool loops and the hosted router each cost milliseconds to import.
_LAZY: dict[str, str] = {
    "AsyncBatchJob": "_batch",
    "BatchItemError": "_batch",
    "BatchJob": "_batch",
    "BatchResult": "_batch",
    "BatchStatus": "_batch",
    "AdaptiveLimit": "_limiter",
    "LimitChange": "_limiter",
    "ItemError": "_map",
    "MapResult": "_map",
    "AsyncToolRun": "_toolrun",
    "ToolRun": "_toolrun",
    "ToolRunEvent": "_toolrun",
    "ToolCallStarted": "_tools",
    "ToolResult": "_tools",
    "ToolRound": "_tools",
    "tool_from_function": "_tools",
    "TallyRouter": "routing.remote",
}


def __getattr__(name: str) -> Any:
    if name == "__version__":
        from importlib.metadata import version

        return version("tally-client")
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib import import_module

    value = getattr(import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "APIStatusError",
    "APITimeoutError",
    "AdaptiveLimit",
    "AsyncBatchJob",
    "AsyncClient",
    "AsyncStream",
    "AsyncToolRun",
    "Attempt",
    "AuthenticationError",
    "BadRequestError",
    "BatchItemError",
    "BatchJob",
    "BatchResult",
    "BatchStatus",
    "CallInfo",
    "CallObserver",
    "CallOptions",
    "CheckpointError",
    "Client",
    "Confidence",
    "ConfigurationError",
    "ConnectError",
    "ConnectTimeout",
    "ContextLengthError",
    "Decision",
    "EmbeddedRouter",
    "Envelope",
    "FinishReason",
    "Finished",
    "FirstTokenTimeout",
    "IdleTimeout",
    "ItemError",
    "LimitChange",
    "MapResult",
    "Message",
    "Metrics",
    "MissingAPIKeyError",
    "ModelSpec",
    "Observer",
    "OverloadedError",
    "PartialJSON",
    "PartialToolCall",
    "PartialToolCalls",
    "PermissionDeniedError",
    "PhasePlan",
    "PoolTimeout",
    "Price",
    "ProtocolError",
    "ProviderError",
    "ProxyBufferingWarning",
    "RateLimitError",
    "Reset",
    "Response",
    "ResponseState",
    "RetryPolicy",
    "Router",
    "ServerError",
    "Stream",
    "StreamError",
    "StreamEvent",
    "StreamInterrupted",
    "StructuredOutputError",
    "TallyError",
    "TallyRouter",
    "TextDelta",
    "ThinkingDelta",
    "Timeouts",
    "Tool",
    "ToolCall",
    "ToolCallDelta",
    "ToolCallStarted",
    "ToolResult",
    "ToolRound",
    "ToolRun",
    "ToolRunEvent",
    "TotalTimeout",
    "TransportError",
    "Usage",
    "UsageReported",
    "ask",
    "ask_stream",
    "build_envelope",
    "extract",
    "parse_partial_json",
    "tool_from_function",
]

T = TypeVar("T")

_default_client: Client | None = None

DEFAULT_MAX_TOKENS = 1024
"""The output cap of `ask()`, `ask_stream()` and the `tally` command when none is given, in
tokens: a small local model that never emits its stop token stops here, not when its context
window fills."""


def _client() -> Client:
    global _default_client
    if _default_client is None:
        _default_client = Client()
        atexit.register(_default_client.close)
    return _default_client


def ask(prompt: str | Sequence[Message], **options: Unpack[CallOptions]) -> str:
    """Ask once and get the answer text (an atomic call on a shared default `Client`).

    `max_tokens` defaults to `DEFAULT_MAX_TOKENS` (1024).

    Raises:
        ProviderError: the call failed; ConfigurationError: bad arguments or set-up.
    """
    options.setdefault("max_tokens", DEFAULT_MAX_TOKENS)
    return _client().complete(prompt, **options).text


def extract(
    prompt: str | Sequence[Message], schema: type[T], **options: Unpack[BaseCallOptions]
) -> T:
    """Extract a typed value from a prompt in one line: an atomic call with `schema=` on the
    shared default `Client`, returning the validated `Response.parsed`.

        person = extract("Maria Lopez, 34, lives in Seville.", Person)

    Args:
        prompt: the text to extract from (or messages).
        schema: a Pydantic model class, any type Pydantic's TypeAdapter accepts, or (typed as
            Any) a JSON Schema dict.
        **options: see `CallOptions`; `consumer` defaults to "machine".

    Raises:
        StructuredOutputError: the output does not match the schema (or was cut: raise
            max_tokens); ProviderError: the call failed; ConfigurationError: bad arguments.
    """
    options.setdefault("consumer", "machine")
    response: Response[T] = _client().complete(prompt, schema=schema, **options)
    if not response.complete:
        raise StructuredOutputError(
            f"the answer is {response.state}: no validated value", response, truncated=False
        )
    return response.parsed


def ask_stream(
    prompt: str | Sequence[Message],
    *,
    file: IO[str] | None = None,
    **options: Unpack[CallOptions],
) -> Response:
    """Stream an answer to the terminal (or `file`) as it arrives; return the Response.

    If the connection drops and the call is retried, a line saying so is printed before the
    retry's text, since a terminal cannot take back what it showed. `max_tokens` defaults to
    `DEFAULT_MAX_TOKENS` (1024).

    Raises:
        ProviderError: the call failed; ConfigurationError: bad arguments or set-up.
    """
    out = sys.stdout if file is None else file
    options.setdefault("max_tokens", DEFAULT_MAX_TOKENS)
    with _client().stream(prompt, **options) as stream:
        for event in stream:
            if isinstance(event, TextDelta):
                out.write(event.text)
                out.flush()
            elif isinstance(event, Reset):
                out.write(f"\n[connection lost; retrying (attempt {event.attempt})]\n")
    out.write("\n")
    return stream.final()
