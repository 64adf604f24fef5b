"""Tools from Python functions, and the pure half of the tool loop (`run_tools()`).

A function becomes a `Tool`: its signature gives the JSON Schema of its arguments (Pydantic
builds it from the annotations) and its docstring the descriptions (docstring-parser reads
Google, NumPy, Sphinx and Epydoc styles). Pydantic and docstring-parser load on first use.

`ToolLoop` holds everything about a tool loop that is not I/O: the messages of each round, which
events to show, the validation of the model's tool calls against their schemas, the result
messages in the shape every provider module translates, the round limit and the summed usage.
`Client.run_tools` / `AsyncClient.run_tools` drive it; they only make the calls and run the
tools (threads for sync, tasks for async).
"""

from __future__ import annotations

import inspect
import time
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal

from ._errors import ConfigurationError
from ._events import StreamEvent, ToolCallDelta
from ._request import Message, Tool
from ._response import Metrics, Response, ToolCall, Usage

if TYPE_CHECKING:
    from ._client import CallOptions

__all__ = [
    "PreparedCall",
    "ToolCallStarted",
    "ToolLoop",
    "ToolResult",
    "ToolRound",
    "tool_from_function",
]

StopReason = Literal["answered", "max_rounds"]


@dataclass(frozen=True)
class ToolCallStarted:
    """A tool call of the model is about to run (its arguments passed validation or not).

    Attributes:
        call: the model's tool call (id, name, JSON arguments).
        round: the number of the round that asked for it (1 for the first).
    """

    call: ToolCall
    round: int


@dataclass(frozen=True)
class ToolResult:
    """A tool call ran (or could not): what goes back to the model.

    Attributes:
        call: the model's tool call.
        output: the text sent to the model as the result (a string as returned, other values
            as JSON; for an error, a message saying what went wrong).
        is_error: the tool raised, the arguments failed validation, or no such tool exists.
        error: the exception (the tool's own, or the `pydantic.ValidationError`), or None.
        seconds: how long the tool ran, in seconds.
        round: the number of the round that asked for it.
    """

    call: ToolCall
    output: str
    is_error: bool = False
    error: BaseException | None = None
    seconds: float = 0.0
    round: int = 1


@dataclass(frozen=True)
class ToolRound:
    """One model call of a tool loop and the tool calls it made.

    Attributes:
        number: 1 for the first round.
        response: that call's own Response (its own usage and metrics).
        results: the results of the tool calls it asked for, in call order (empty for the
            round that answered).
    """

    number: int
    response: Response
    results: tuple[ToolResult, ...] = ()

    @property
    def errors(self) -> tuple[BaseException, ...]:
        """The exceptions raised by this round's tools (or their argument validation)."""
        return tuple(r.error for r in self.results if r.error is not None)


@dataclass
class PreparedCall:
    """A tool call checked against its tool: what to run, or the error result to send."""

    call: ToolCall
    round: int
    function: Callable[..., Any] | None = None
    arguments: dict[str, Any] = field(default_factory=dict)
    error: BaseException | None = None
    error_text: str = ""

    @property
    def is_async(self) -> bool:
        """The tool is a coroutine function (awaited, never run in a thread)."""
        return self.function is not None and inspect.iscoroutinefunction(self.function)

    def result(self, value: Any, seconds: float) -> ToolResult:
        """The ToolResult for the tool's return value."""
        from ._output import dumps

        return ToolResult(self.call, dumps(value), False, None, seconds, self.round)

    def failure(self, exc: BaseException | None, seconds: float = 0.0) -> ToolResult:
        """The error ToolResult for an exception the tool raised (or the validation error)."""
        if exc is not None and not self.error_text:
            text = f"Error: the tool raised {type(exc).__name__}: {exc}"
        else:
            text = self.error_text
        return ToolResult(
            self.call, text, True, exc if exc is not None else self.error, seconds, self.round
        )


# -- tools from functions --------------------------------------------------------------------


def tool_from_function(function: Callable[..., Any], name: str | None = None) -> Tool:
    """A `Tool` from a Python function (sync or async), which `run_tools()` can then run.

    The description is the docstring's summary and body (without its Args section); each
    parameter's type comes from its annotation (Pydantic's JSON Schema: `Literal`, enums,
    models, `list[...]`, `Annotated[..., Field(...)]`), its description from the docstring,
    and parameters without a default are required.

    Raises:
        ConfigurationError: the function takes `*args` or `**kwargs` (a tool's arguments are
            one JSON object of named fields), or an annotation Pydantic cannot describe.
    """
    import docstring_parser
    from pydantic import ConfigDict, Field, create_model
    from pydantic.json_schema import GenerateJsonSchema

    class _NoTitles(GenerateJsonSchema):
        def field_title_should_be_set(self, schema: Any) -> bool:
            return False

    tool_name: str = name or getattr(function, "__name__", None) or "tool"
    signature = inspect.signature(function)
    try:
        hints = typing.get_type_hints(function, include_extras=True)
    except (NameError, TypeError) as exc:
        raise ConfigurationError(
            f"tool {tool_name!r}: cannot read its annotations ({exc})"
        ) from exc
    doc = docstring_parser.parse(inspect.getdoc(function) or "")
    described = {p.arg_name: p.description for p in doc.params}
    fields: dict[str, Any] = {}
    for pname, param in signature.parameters.items():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            raise ConfigurationError(
                f"tool {tool_name!r} takes *{pname}: a tool's arguments are named fields of "
                "one JSON object; give each parameter a name and an annotation"
            )
        annotation = hints.get(pname, Any)
        default = ... if param.default is param.empty else param.default
        fields[pname] = (annotation, Field(default, description=described.get(pname)))
    try:
        model = create_model(
            f"{tool_name}_arguments", __config__=ConfigDict(extra="forbid"), **fields
        )
        schema = model.model_json_schema(schema_generator=_NoTitles)
    except Exception as exc:  # pydantic's schema errors have several types
        raise ConfigurationError(f"tool {tool_name!r}: {exc}") from exc
    schema.pop("title", None)
    description = "\n\n".join(
        part for part in (doc.short_description, doc.long_description) if part
    )
    return Tool(tool_name, description, schema, function=function, arguments_model=model)


# -- the loop ---------------------------------------------------------------------------------


class ToolLoop:
    """The pure half of `run_tools()`: rounds, validation, results, limit and totals.

    Args:
        messages: the conversation so far (the prompt, normalized).
        tools: the tools in scope; each needs a function to run.
        options: the call options for every round.
        max_rounds: the most model calls the loop makes (each may ask for tools).

    Raises:
        ConfigurationError: no tools, a tool without a function, a bad max_rounds.
    """

    def __init__(
        self,
        messages: Sequence[Message],
        tools: Sequence[Tool],
        options: CallOptions,
        max_rounds: int,
    ) -> None:
        if max_rounds < 1:
            raise ConfigurationError(f"max_rounds must be at least 1, got {max_rounds}")
        if not tools:
            raise ConfigurationError("run_tools() needs tools=[...]: functions or Tools with one")
        for tool in tools:
            if tool.function is None:
                raise ConfigurationError(
                    f"tool {tool.name!r} has no function to run: pass the Python function "
                    "itself, or Tool(..., function=f)"
                )
        self.messages: list[Message] = list(messages)
        self.tools = {t.name: t for t in tools}
        self.options: CallOptions = {**options, "tools": list(tools)}
        self.max_rounds = max_rounds
        self.rounds: list[ToolRound] = []
        self.stop_reason: StopReason | None = None
        self.started = time.monotonic()
        self._held: list[StreamEvent] = []
        self._pending: Response | None = None
        self.tool_deltas = False
        """Show a streamed round's `ToolCallDelta`s too (the web relay's `tool-input-delta`)."""

    def next_call(self) -> tuple[list[Message], CallOptions] | None:
        """The messages and options of the next round, or None when the loop ended."""
        if self.stop_reason is not None:
            return None
        self._held = []
        return list(self.messages), self.options

    def show(self, event: StreamEvent, streaming: bool) -> Sequence[StreamEvent]:
        """The events to yield now for one event of the current round.

        A streamed round shows its events as they come (its tool-call deltas excepted: the
        calls are announced by ToolCallStarted); an atomic round's events wait until it is
        known to be the answer rather than a tool round.
        """
        if type(event) is ToolCallDelta:
            return (event,) if streaming and self.tool_deltas else ()
        if streaming:
            return (event,)
        self._held.append(event)
        return ()

    def round_done(self, response: Response) -> tuple[Sequence[StreamEvent], list[PreparedCall]]:
        """Fold in a round's Response: (events still to show, tool calls to run now)."""
        number = len(self.rounds) + 1
        if not response.tool_calls or response.finish_reason == "length":
            self.rounds.append(ToolRound(number, response))
            self.stop_reason = "answered"
            return self._held, []
        if number >= self.max_rounds:
            self.rounds.append(ToolRound(number, response))
            self.stop_reason = "max_rounds"
            return (), []
        self._pending = response
        return (), [self.prepare(call, number) for call in response.tool_calls]

    def prepare(self, call: ToolCall, number: int) -> PreparedCall:
        """Check a tool call against its tool: the function and validated arguments, or the
        error result (unknown tool, arguments that are not JSON or fail validation)."""
        tool = self.tools.get(call.name)
        if tool is None:
            known = ", ".join(sorted(self.tools))
            error = LookupError(f"no tool named {call.name!r}")
            return PreparedCall(
                call,
                number,
                error=error,
                error_text=f"Error: no tool named {call.name!r} (tools: {known})",
            )
        try:
            arguments = call.parsed_arguments()
        except ValueError as exc:
            return PreparedCall(
                call,
                number,
                error=exc,
                error_text=f"Error: the arguments are not valid JSON: {exc}",
            )
        if not isinstance(arguments, dict):
            text = "Error: the arguments are not a JSON object"
            return PreparedCall(call, number, error=TypeError(text), error_text=text)
        try:
            validated = _validate(tool, arguments)
        except Exception as exc:
            text = f"Error: invalid arguments for {call.name}: {exc}"
            return PreparedCall(call, number, error=exc, error_text=text)
        return PreparedCall(call, number, tool.function, validated)

    def add_results(self, results: Sequence[ToolResult]) -> None:
        """Append the round's assistant turn and one tool message per result."""
        response = self._pending
        assert response is not None
        self._pending = None
        self.rounds.append(ToolRound(len(self.rounds) + 1, response, tuple(results)))
        self.messages.append(response.to_message())
        for result in results:
            message: dict[str, Any] = {
                "role": "tool",
                "tool_call_id": result.call.id,
                "name": result.call.name,
                "content": result.output,
            }
            if result.is_error:
                message["is_error"] = True
            self.messages.append(message)

    def final(self) -> Response:
        """The last round's Response with `rounds`, and usage and metrics summed over them.

        Usage counts are summed (missing stays missing only when no round reported any);
        `metrics.total_seconds` is the whole loop's wall time, tools included, `chunks` the sum;
        TTFT, inter-token latency and rate are the last round's.
        """
        return self._summed(self.rounds[-1].response, [r.response for r in self.rounds])

    def partial(self, current: Response | None, *, cancelled: bool) -> Response:
        """The run so far: the round in flight's Response (`current`; None: between rounds,
        the last round's), with the finished `rounds` and usage and metrics summed as in
        `final()`, over the round in flight too. State "cancelled" when the run was stopped.
        """
        responses = [r.response for r in self.rounds]
        if current is None:
            current = responses[-1] if responses else Response("", state="cancelled")
        else:
            responses.append(current)
        response = self._summed(current, responses)
        return replace(response, state="cancelled") if cancelled else response

    def _summed(self, last: Response, responses: Sequence[Response]) -> Response:
        usages = [r.usage for r in responses]
        usage = Usage.of(
            _sum(u.input_tokens for u in usages),
            _sum(u.output_tokens for u in usages),
            total_tokens=_sum(u.total_tokens for u in usages),
            cached_input_tokens=_sum(u.cached_input_tokens for u in usages),
            reasoning_tokens=_sum(u.reasoning_tokens for u in usages),
        )
        metrics: Metrics = replace(
            last.metrics,
            total_seconds=time.monotonic() - self.started,
            chunks=sum(r.metrics.chunks for r in responses),
        )
        return replace(last, usage=usage, metrics=metrics, rounds=tuple(self.rounds))


def _sum(values: typing.Iterable[int | None]) -> int | None:
    present = [v for v in values if v is not None]
    return sum(present) if present else None


def _validate(tool: Tool, arguments: dict[str, Any]) -> dict[str, Any]:
    """Arguments checked against the tool's schema (Pydantic for functions, else jsonschema).

    Raises:
        pydantic.ValidationError, jsonschema.ValidationError: they do not match.
    """
    model = tool.arguments_model
    if model is not None:
        checked = model.model_validate(arguments)
        return {name: getattr(checked, name) for name in type(checked).model_fields}
    from jsonschema import validators

    schema = dict(tool.parameters)
    validators.validator_for(schema)(schema).validate(arguments)
    return arguments


def run_sync(calls: Sequence[PreparedCall]) -> list[ToolResult]:
    """Run the prepared calls of a round, concurrently in threads when there are several.

    A coroutine function runs to completion in its thread's own event loop (`asyncio.run`).
    """
    if len(calls) == 1:
        return [_run_one(calls[0])]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=min(len(calls), 16)) as pool:
        return list(pool.map(_run_one, calls))


def _run_one(prepared: PreparedCall) -> ToolResult:
    if prepared.function is None:
        return prepared.failure(prepared.error)
    start = time.monotonic()
    try:
        value = prepared.function(**prepared.arguments)
        if inspect.isawaitable(value):
            import asyncio

            async def wait() -> Any:
                return await value

            value = asyncio.run(wait())
    except Exception as exc:
        return prepared.failure(exc, time.monotonic() - start)
    return prepared.result(value, time.monotonic() - start)


async def run_async(calls: Sequence[PreparedCall]) -> list[ToolResult]:
    """Run the prepared calls of a round concurrently: coroutine functions as tasks, plain
    functions in worker threads (never on the event loop)."""
    import anyio

    results: list[ToolResult | None] = [None] * len(calls)

    async def one(i: int, prepared: PreparedCall) -> None:
        if prepared.function is None:
            results[i] = prepared.failure(prepared.error)
            return
        start = time.monotonic()
        try:
            if prepared.is_async:
                value = await prepared.function(**prepared.arguments)
            else:
                function = prepared.function
                value = await anyio.to_thread.run_sync(lambda: function(**prepared.arguments))
        except Exception as exc:
            results[i] = prepared.failure(exc, time.monotonic() - start)
            return
        results[i] = prepared.result(value, time.monotonic() - start)

    async with anyio.create_task_group() as group:
        for i, prepared in enumerate(calls):
            group.start_soon(one, i, prepared)
    return [r for r in results if r is not None]
