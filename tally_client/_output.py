"""Output specs for structured output: a schema in, a wire JSON Schema and a strict validator out.

`schema=` takes a Pydantic model class, any type a Pydantic `TypeAdapter` accepts (dataclass,
TypedDict, `list[Model]`, `Literal[...]`, ...), or a JSON Schema dict. `output_spec()` turns it
into an `OutputSpec`: the JSON Schema sent to the provider, and the final, strict check
(Pydantic in strict JSON mode for types; the `jsonschema` library for dicts). Pydantic and
jsonschema load on the first call that uses them, never at `import tally_client`.

Pure: no I/O. The supervisor asks a per-call `StructuredCall` for the final check, and the
streams ask it for a `PartialJSON` parser.
"""

from __future__ import annotations

import copy
import json
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    Iterable,
    Iterator,
    Mapping,
)
from dataclasses import replace
from time import monotonic as _monotonic
from typing import TYPE_CHECKING, Any

from ._errors import ConfigurationError, StructuredOutputError
from ._events import Reset, StreamEvent, TextDelta, ToolCallDelta
from ._partial import PartialJSON, extract_json

if TYPE_CHECKING:
    from ._response import Response

__all__ = [
    "OutputSpec",
    "PartialObjects",
    "PartialToolCalls",
    "StructuredCall",
    "output_spec",
    "prompt_instruction",
    "strict_schema",
    "structured_call",
]

_SPECS: dict[Any, OutputSpec] = {}  # types -> their spec (building a TypeAdapter costs ~1 ms)


class OutputSpec:
    """What a call's `schema=` means: the wire JSON Schema and the strict final check.

    Attributes:
        name: the schema's name on the wire (OpenAI `json_schema.name`, Responses `format.name`).
        json_schema: the JSON Schema sent to the provider.
        target: the Python type validated against, or None for a JSON Schema dict.
        scalar_root: whether the output may be a bare string, number or literal (the root of
            the schema is not only an object or array).
    """

    def __init__(self, schema: Any, name: str | None) -> None:
        self.target: Any = None
        self._adapter: Any = None
        self._validator: Any = None
        if isinstance(schema, Mapping):
            self.json_schema: dict[str, Any] = dict(schema)
            self._validator = _json_schema_validator(self.json_schema)
            default_name = str(schema.get("title") or "output")
        else:
            self.target = schema
            self._adapter, self.json_schema = _type_adapter(schema)
            default_name = getattr(schema, "__name__", None) or "output"
        self.name = _wire_name(name or default_name)
        root = self.json_schema.get("type")
        self.scalar_root = root not in ("object", "array") and not (
            "properties" in self.json_schema or "$ref" in self.json_schema
        )

    def validate(self, text: str) -> tuple[bool, Any, tuple[str, ...]]:
        """Check the final text strictly: (valid, value, errors).

        Code fences and prose around the JSON are tolerated (see `extract_json`); the JSON
        itself must be complete and valid against the schema. JSON `null` is a valid value
        where the schema allows it.
        """
        found = extract_json(text, scalar_root=self.scalar_root)
        if found is None:
            return False, None, ("the output holds no complete JSON document",)
        value, source = found
        if self._adapter is not None:
            from pydantic import ValidationError

            try:
                return True, self._adapter.validate_json(source, strict=True), ()
            except ValidationError as exc:
                return False, None, tuple(_pydantic_error(e) for e in exc.errors())
        errors = sorted(self._validator.iter_errors(value), key=lambda e: list(e.path))
        if errors:
            return False, None, tuple(_jsonschema_error(e) for e in errors)
        return True, value, ()

    def partial_parser(self) -> PartialJSON:
        """A fresh tolerant parser for this output's partial values."""
        return PartialJSON(scalar_root=self.scalar_root)


def output_spec(schema: Any, name: str | None = None) -> OutputSpec:
    """The OutputSpec for a `schema=` value (cached for types).

    Raises:
        ConfigurationError: not a type Pydantic can validate, nor a valid JSON Schema dict.
    """
    if isinstance(schema, Mapping):
        return OutputSpec(schema, name)
    try:
        cached = _SPECS.get(schema)
    except TypeError:  # unhashable: build it each time
        return OutputSpec(schema, name)
    if cached is None:
        cached = _SPECS[schema] = OutputSpec(schema, None)
    if name is not None and name != cached.name:
        other = copy.copy(cached)
        other.name = _wire_name(name)
        return other
    return cached


def structured_call(schema: Any, name: str | None) -> StructuredCall | None:
    """The per-call structured-output checker for `schema=` (None without a schema).

    Raises:
        ConfigurationError: see `output_spec`.
    """
    return None if schema is None else StructuredCall(output_spec(schema, name))


class StructuredCall:
    """The structured-output side of one call: its spec, the final check, remembered.

    Raises (from `check`):
        StructuredOutputError: see `check`.
    """

    __slots__ = ("_checked", "spec")

    def __init__(self, spec: OutputSpec) -> None:
        self.spec = spec
        self._checked: tuple[Response, Response] | None = None

    def check(self, response: Response) -> Response:
        """The Response with `parsed` set to the validated value.

        A Response that is not complete (partial, interrupted, cancelled) is returned as it
        is, with `parsed` None: its `state` says why. So is one that holds only tool calls.

        Raises:
            StructuredOutputError: the complete output is not valid JSON for the schema (or was
                cut by the token limit: `truncated`), with the raw text, the validation
                errors, the Response and the last partial value.
        """
        done = self._checked
        if done is not None and done[0] is response:
            return done[1]
        if response.state != "complete" or (response.tool_calls and not response.text.strip()):
            return response
        valid, value, errors = self.spec.validate(response.text)
        if not valid:
            raise self._error(response, errors)
        checked = replace(response, parsed=value)
        self._checked = (response, checked)
        return checked

    def valid(self, response: Response) -> bool:
        """Whether `check` accepts the Response (a complete one that matches, or one it
        passes through unchecked)."""
        try:
            self.check(response)
        except StructuredOutputError:
            return False
        return True

    def _error(self, response: Response, errors: tuple[str, ...]) -> StructuredOutputError:
        truncated = response.finish_reason == "length"
        parser = self.spec.partial_parser()
        parser.feed(response.text)
        parser.finish()
        partial = parser.value(exact=True)
        if truncated:
            message = (
                f"the output was cut by the token limit (finish_reason 'length') after "
                f"{len(response.text)} characters, before its JSON was complete: raise "
                "max_tokens. The last partial value is in .partial, the text in .raw_text."
            )
        else:
            shown = "; ".join(errors[:3]) + ("; ..." if len(errors) > 3 else "")
            message = (
                f"the output does not match the schema {self.spec.name!r}: {shown}. "
                "The text is in .raw_text, all errors in .errors."
            )
        return StructuredOutputError(
            message, response, errors=errors, partial=partial, truncated=truncated
        )


class PartialObjects:
    """Follows a stream's text with one incremental parser: what `partial_objects()` yields.

    `follow(events)` (`afollow` for an async stream) reads the events and yields the partial
    value each time it changed. Each character is parsed once (`PartialJSON`); deltas that
    arrive in a burst (less than `MIN_SECONDS` after the previous parse, and less than
    `MIN_BYTES` of text together) are parsed together with the next one, which keeps the
    per-delta cost of a fast stream low; in a long burst the amount held grows with the text
    (see `MIN_BYTES`), so a burst of any length costs a few dozen parses, most of them of
    complete values, which the parser reads at C speed. So a value may lag the text by the
    deltas of one burst; the end of the stream parses whatever is left. A `Reset` (a retry
    after shown output) starts a new parser, since the retry's text starts from the
    beginning. The value is the parser's own growing object (see `PartialJSON.value`), never
    the validated final one.

    The loop over the events is here, with its state in local variables, rather than a method
    called per event: a fast stream pays this per delta (about a third of the cost of the
    partial values, measured at 100 KB in 8-byte deltas).
    """

    MIN_BYTES = 64
    """Text held back in a burst is parsed once it reaches this many characters plus an
    eighth of the text parsed before it: the number of parses in a long burst then grows
    with the logarithm of its length, while a value never lags the text by more than one
    eighth (nor, once deltas come slower than `MIN_SECONDS` apart, by more than one delta)."""
    MIN_SECONDS = 0.02
    """A delta arriving this long after the previous parse is parsed at once."""

    __slots__ = ("_parser", "_spec")

    def __init__(self, structured: StructuredCall | None) -> None:
        self._spec = structured.spec if structured is not None else None
        self._parser = self._new()

    def _new(self) -> PartialJSON:
        return self._spec.partial_parser() if self._spec is not None else PartialJSON()

    def follow(self, events: Iterable[StreamEvent]) -> Iterator[Any]:
        """Yield the partial value each time it changed while reading `events`."""
        held: list[str] = []
        size = 0  # characters held
        limit = floor = self.MIN_BYTES  # a burst is parsed once it holds this many
        last = 0.0  # when the text was last parsed
        window = self.MIN_SECONDS
        for event in events:
            kind = type(event)
            if kind is TextDelta:
                text = event.text  # type: ignore[union-attr]
                size += len(text)
                now = _monotonic()
                if size < limit and now - last < window:
                    held.append(text)  # a burst: parsed with the next delta
                    continue
                if held:
                    held.append(text)
                    text = "".join(held)
                    held.clear()
                limit += size >> 3  # an eighth of the text so far (see MIN_BYTES)
                size = 0
                last = now
                if self._parser.feed(text):
                    yield self._parser.value()
            elif kind is Reset:
                self._parser = self._new()
                held.clear()
                size = 0
                limit = floor
        if self._end(held):
            yield self._parser.value()

    async def afollow(self, events: AsyncIterable[StreamEvent]) -> AsyncGenerator[Any, None]:
        """`follow` for an async stream."""
        held: list[str] = []
        size = 0
        limit = floor = self.MIN_BYTES
        last = 0.0
        window = self.MIN_SECONDS
        async for event in events:
            kind = type(event)
            if kind is TextDelta:
                text = event.text  # type: ignore[union-attr]
                size += len(text)
                now = _monotonic()
                if size < limit and now - last < window:
                    held.append(text)
                    continue
                if held:
                    held.append(text)
                    text = "".join(held)
                    held.clear()
                limit += size >> 3
                size = 0
                last = now
                if self._parser.feed(text):
                    yield self._parser.value()
            elif kind is Reset:
                self._parser = self._new()
                held.clear()
                size = 0
                limit = floor
        if self._end(held):
            yield self._parser.value()

    def _end(self, held: list[str]) -> bool:
        """The stream ended: parse held text and commit a trailing number; True if the
        value changed."""
        changed = self._parser.feed("".join(held)) if held else False
        return self._parser.finish() or changed

    def value(self) -> Any:
        """The partial value now (None before the JSON starts)."""
        return self._parser.value()


class PartialToolCall:
    """One tool call as it streams: its id and name once known, its arguments so far.

    Attributes:
        index: its position among the response's tool calls.
        id: the provider's call id, once it came (None before).
        name: the tool's name, once it came.
        parser: the incremental parser of its JSON arguments.
    """

    __slots__ = ("id", "index", "name", "parser")

    def __init__(self, index: int) -> None:
        self.index = index
        self.id: str | None = None
        self.name: str | None = None
        self.parser = PartialJSON(scalar_root=False)

    @property
    def arguments(self) -> Any:
        """The arguments so far: a growing dict (None before the object starts)."""
        return self.parser.value(exact=True)


class PartialToolCalls:
    """Tool-call arguments as they stream, parsed incrementally (each character once).

    Feed it a stream's events; it keeps one `PartialJSON` per tool call, the same tolerant
    parser as `partial_objects()`:

        calls = PartialToolCalls()
        for event in stream:
            if calls.add(event):
                show(calls.calls[-1].name, calls.calls[-1].arguments)

    The final arguments are the Response's `ToolCall.parsed_arguments()` (strict).
    """

    __slots__ = ("_by_index",)

    def __init__(self) -> None:
        self._by_index: dict[int, PartialToolCall] = {}

    @property
    def calls(self) -> list[PartialToolCall]:
        """The tool calls so far, in index order."""
        return [self._by_index[i] for i in sorted(self._by_index)]

    def add(self, event: StreamEvent) -> bool:
        """Fold in one stream event; True when a call appeared or its arguments grew."""
        if type(event) is ToolCallDelta:
            call = self._by_index.get(event.index)
            new = call is None
            if call is None:
                call = self._by_index[event.index] = PartialToolCall(event.index)
            call.id = call.id or event.id
            call.name = call.name or event.name
            grew = call.parser.feed(event.arguments) if event.arguments else False
            return new or grew
        if type(event) is Reset:
            self._by_index.clear()
        return False


def strict_schema(schema: Mapping[str, Any]) -> tuple[dict[str, Any], bool]:
    """The schema with every object closed, and whether OpenAI strict mode can take it.

    Strict mode (OpenAI "Structured Outputs") needs every object to list all its properties
    in `required` and to set `additionalProperties: false`. Objects that leave
    `additionalProperties` unset get `false` here (Pydantic models ignore unknown keys anyway;
    Anthropic's structured outputs need it too); a schema with an optional property or open
    additional properties is not strict-compatible, and OpenAI then gets it non-strict.
    """
    out = copy.deepcopy(dict(schema))
    return out, _make_strict(out)


def prompt_instruction(spec: OutputSpec) -> str:
    """The system instruction of the prompt fallback (`schema_mode="prompt"`), for models
    without native structured output: the schema, and a request for bare JSON."""
    return (
        "Answer with one JSON value that matches this JSON Schema, and nothing else (no code "
        "fence, no comment):\n" + json.dumps(spec.json_schema, ensure_ascii=False)
    )


def _make_strict(node: Any) -> bool:
    if isinstance(node, list):
        return all([_make_strict(item) for item in node])
    if not isinstance(node, dict):
        return True
    ok = True
    if node.get("type") == "object" or "properties" in node:
        props = node.get("properties") or {}
        if set(node.get("required") or ()) != set(props):
            ok = False
        extra = node.setdefault("additionalProperties", False)
        if extra is not False:
            ok = False
    for key, value in node.items():
        if key in ("properties", "$defs", "definitions", "patternProperties"):
            if isinstance(value, dict):
                ok = all([_make_strict(v) for v in value.values()]) and ok
        elif isinstance(value, dict | list) and key not in ("enum", "const", "default", "examples"):
            ok = _make_strict(value) and ok
    return ok


def _wire_name(name: str) -> str:
    """A schema name as OpenAI takes it: letters, digits, `_` and `-`, at most 64."""
    cleaned = "".join(c if c.isalnum() or c in "_-" else "_" for c in name)
    return cleaned[:64] or "output"


def _type_adapter(schema: Any) -> tuple[Any, dict[str, Any]]:
    """A TypeAdapter for `schema` and its JSON Schema.

    Raises:
        ConfigurationError: Pydantic is not installed, or cannot validate this type.
    """
    try:
        from pydantic import PydanticSchemaGenerationError, PydanticUserError, TypeAdapter
    except ImportError as exc:
        raise ConfigurationError(
            "schema= with a type needs Pydantic: pip install 'tally-client[structured]'"
        ) from exc
    try:
        adapter = TypeAdapter(schema)
        return adapter, adapter.json_schema()
    except (PydanticSchemaGenerationError, PydanticUserError, TypeError) as exc:
        raise ConfigurationError(
            f"schema= must be a Pydantic model, a type Pydantic's TypeAdapter accepts "
            f"(dataclass, TypedDict, list[Model], ...) or a JSON Schema dict; got {schema!r} "
            f"({exc})"
        ) from exc


def _json_schema_validator(schema: dict[str, Any]) -> Any:
    """A jsonschema validator for `schema`, of the draft it names (default: the latest).

    Raises:
        ConfigurationError: jsonschema is not installed, or `schema` is not a valid schema.
    """
    try:
        from jsonschema import exceptions, validators
    except ImportError as exc:
        raise ConfigurationError(
            "schema= with a JSON Schema dict needs jsonschema to validate the output: "
            "pip install 'tally-client[structured]'"
        ) from exc

    cls = validators.validator_for(schema)
    try:
        cls.check_schema(schema)
    except exceptions.SchemaError as exc:
        raise ConfigurationError(
            f"schema= is not a valid JSON Schema: {exc.message} (at {list(exc.path)})"
        ) from exc
    return cls(schema)


def _pydantic_error(error: Mapping[str, Any]) -> str:
    where = ".".join(str(p) for p in error.get("loc", ())) or "(root)"
    return f"{where}: {error.get('msg')}"


def _jsonschema_error(error: Any) -> str:
    where = ".".join(str(p) for p in error.absolute_path) or "(root)"
    return f"{where}: {error.message}"


def dumps(value: Any) -> str:
    """JSON text for a tool result or a value (Pydantic models and dataclasses included)."""
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value, ensure_ascii=False)
    except TypeError:
        from pydantic_core import to_json

        return to_json(value).decode()
