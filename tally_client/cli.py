"""The `tally` command line (click): ask, route, list models, run the local model.

    tally "Explain entropy in three sentences."      # to a terminal: streamed
    tally "Name three primes." | tr a-z A-Z           # piped: one atomic answer
    cat notes.txt | tally -s "Summarise." --json      # stdin joins the prompt; whole Response
    tally route --consumer machine --structure json   # the decision, no call
    tally models                                      # the catalog
    tally local                                       # llama-server + SmolLM2 on :8080

The delivery mode is the router's: a terminal on stdout means a person is reading (consumer
"human": stream), a pipe means a program consumes it (consumer "machine": atomic). `--stream`
/ `--no-stream` override it. Output to a pipe is never decorated: no spinner, colour or notice
on stdout; notices go to stderr.

Exit codes (`EXIT_CODES`): 0 done; 1 another provider error; 2 bad usage; 3 configuration
(missing key, unknown model); 4 authentication (401/403); 5 request rejected (400/404/422);
6 rate limited (429); 7 provider server error (5xx, overloaded); 8 a time limit passed;
9 connection or protocol failure; 10 structured output invalid; 11 the answer is partial
(the stream ended before its terminal event; what arrived was printed); 130 Ctrl-C (what
arrived was printed).

This module imports click (and yaspin, for the spinner): it is loaded by the `tally` script and
`python -m tally_client`, never by `import tally_client`.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import re
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, NoReturn, cast

import click

from . import (
    DEFAULT_MAX_TOKENS,
    APIStatusError,
    AuthenticationError,
    BadRequestError,
    Client,
    ConfigurationError,
    Decision,
    PermissionDeniedError,
    ProtocolError,
    ProviderError,
    RateLimitError,
    Reset,
    Response,
    ServerError,
    Stream,
    StructuredOutputError,
    TextDelta,
    TransportError,
)
from ._client import CallOptions

__all__ = ["EXIT_CODES", "main", "response_json"]

EXIT_CODES: dict[str, int] = {
    "ok": 0,
    "provider_error": 1,
    "usage": 2,
    "configuration": 3,
    "authentication": 4,
    "bad_request": 5,
    "rate_limit": 6,
    "server_error": 7,
    "timeout": 8,
    "connection": 9,
    "structured_output": 10,
    "partial": 11,
    "interrupted": 130,
}
"""Exit status per outcome (also in the module docstring and docs/cli.md)."""


def exit_code(error: BaseException) -> int:
    """The exit status for an error raised by a call (see `EXIT_CODES`)."""
    checks: tuple[tuple[type[BaseException] | tuple[type[BaseException], ...], str], ...] = (
        (ConfigurationError, "configuration"),
        (StructuredOutputError, "structured_output"),
        ((AuthenticationError, PermissionDeniedError), "authentication"),
        (BadRequestError, "bad_request"),
        (RateLimitError, "rate_limit"),
        (ServerError, "server_error"),
        (TimeoutError, "timeout"),  # every timeout class is also the builtin TimeoutError
        ((TransportError, ProtocolError), "connection"),
    )
    for kind, name in checks:
        if isinstance(error, kind):
            return EXIT_CODES[name]
    return EXIT_CODES["provider_error"]


# -- JSON ----------------------------------------------------------------------------------


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, BaseException):
        return f"{type(value).__name__}: {value}"
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, set | frozenset):
        return sorted((_plain(v) for v in value), key=str)
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)  # anything else a catalog may hold (a Decimal price, an enum...)


def response_json(response: Response) -> dict[str, Any]:
    """The whole Response as JSON-ready data.

    Keys: text, parsed, tool_calls, usage (with `reported`), cost (USD, or None when the
    catalog has no price), finish_reason, raw_finish_reason, state, model, provider, metrics,
    decision, attempts (errors as "Type: message"), thinking, response_id.
    """
    data: dict[str, Any] = _plain(response)
    data["usage"]["reported"] = response.usage.reported
    data["cost"] = _plain(getattr(response, "cost", None))
    return data


# -- schemas -------------------------------------------------------------------------------

_DSL_TYPES = {"str": "string", "int": "integer", "float": "number", "bool": "boolean"}
_MODEL_REF = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")


def compact_schema(spec: str) -> dict[str, Any]:
    """A JSON Schema from the compact form "name, age int, bio: a short bio".

    Fields are separated by commas (or newlines); each is `name [type][: description]` with
    type one of str (default), int, float, bool. Every field is required. The form is that of
    simonw/llm's `--schema` option.

    Raises:
        click.BadParameter: a field is empty or its type is unknown.
    """
    properties: dict[str, Any] = {}
    separator = "\n" if "\n" in spec else ","
    for raw in spec.split(separator):
        field, _, description = raw.partition(":")
        words = field.split()
        if not words:
            continue
        if len(words) > 2 or (len(words) == 2 and words[1] not in _DSL_TYPES):
            raise click.BadParameter(
                f"{field.strip()!r}: a field is 'name' or 'name TYPE' with TYPE one of "
                f"{', '.join(_DSL_TYPES)}",
                param_hint="--schema",
            )
        prop: dict[str, Any] = {"type": _DSL_TYPES[words[1] if len(words) == 2 else "str"]}
        if description.strip():
            prop["description"] = description.strip()
        properties[words[0]] = prop
    if not properties:
        raise click.BadParameter("the schema names no field", param_hint="--schema")
    return {"type": "object", "properties": properties, "required": list(properties)}


def load_schema(value: str) -> tuple[dict[str, Any], Callable[[Any], Any]]:
    """The JSON Schema for `--schema` and a function that validates a parsed answer.

    `value` is a JSON Schema file, inline JSON, a `module:Class` Pydantic model, or the
    compact form (`compact_schema`). The validator returns JSON-ready data (a Pydantic
    model's dump) and raises on an invalid answer.

    Raises:
        click.BadParameter: the file, JSON or class cannot be used.
    """
    path = Path(value)
    if value.lstrip().startswith("{") or (path.suffix == ".json" and path.is_file()):
        try:
            text = value if value.lstrip().startswith("{") else path.read_text()
            schema = json.loads(text)
        except (OSError, ValueError) as exc:
            raise click.BadParameter(f"not a JSON Schema: {exc}", param_hint="--schema") from exc
        return schema, _jsonschema_validator(schema)
    if _MODEL_REF.match(value):
        module_name, _, name = value.partition(":")
        try:
            target: Any = importlib.import_module(module_name)
            for part in name.split("."):
                target = getattr(target, part)
        except (ImportError, AttributeError) as exc:
            raise click.BadParameter(
                f"cannot import {value}: {exc}", param_hint="--schema"
            ) from exc
        if not hasattr(target, "model_json_schema"):
            raise click.BadParameter(f"{value} is not a Pydantic model", param_hint="--schema")
        model = target

        def validate_model(data: Any) -> Any:
            return model.model_validate(data).model_dump(mode="json")

        return model.model_json_schema(), validate_model
    schema = compact_schema(value)
    return schema, _jsonschema_validator(schema)


def _jsonschema_validator(schema: dict[str, Any]) -> Callable[[Any], Any]:
    def validate(data: Any) -> Any:
        import jsonschema

        jsonschema.validate(data, schema)
        return data

    return validate


# -- terminal ------------------------------------------------------------------------------


@contextmanager
def _spinner(show: bool, text: str) -> Iterator[Callable[[], None]]:
    """A spinner on stderr while a blocking call runs (yaspin); yields a function that stops
    it. Shown only when `show` (stderr is a terminal)."""
    if not show:
        yield lambda: None
        return
    from yaspin import yaspin

    spin = yaspin(text=text, stream=sys.stderr)
    running = [True]

    def stop() -> None:  # once: yaspin clears the current line each time it stops
        if running[0]:
            running[0] = False
            spin.stop()

    spin.start()
    try:
        yield stop
    finally:
        stop()


def _isatty(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def _note(message: str) -> None:
    """A notice for the person at the terminal: stderr, dimmed when stderr is a terminal."""
    click.echo(click.style(message, dim=True), err=True, color=_isatty(sys.stderr))


# -- the command group ---------------------------------------------------------------------


class _DefaultGroup(click.Group):
    """`tally "prompt"` means `tally prompt "prompt"` (as simonw/llm does)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if not args or (args[0] not in self.commands and args[0] not in ("--help", "--version")):
            args = ["prompt", *args]
        return super().parse_args(ctx, args)


def _client(base_url: str | None, protocol: str, model: str | None) -> Client:
    if base_url is not None:
        return Client(base_url=base_url, protocol=protocol, model=model)
    return Client()


_base_url_option = click.option(
    "--base-url",
    help="One endpoint instead of the environment's providers (no key set: the local server at "
    "$TALLY_LOCAL_BASE_URL).",
)
_protocol_option = click.option(
    "--protocol",
    type=click.Choice(["openai-chat", "openai-responses", "anthropic", "gemini"]),
    default="openai-chat",
    show_default=True,
    help="The protocol --base-url speaks.",
)


@click.group(cls=_DefaultGroup)
@click.version_option(package_name="tally-client")
def main() -> None:
    """Ask an LLM through tally_client's router: `tally "prompt"`.

    To a terminal the answer streams; piped, it comes whole. See `tally prompt --help`.
    """


def _options(pairs: Sequence[str]) -> dict[str, Any]:
    body: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{pair!r}: use key=value", param_hint="-o")
        try:
            body[key] = json.loads(raw)
        except ValueError:
            body[key] = raw
    return body


def _prompt_text(words: Sequence[str]) -> str:
    parts = []
    if not _isatty(sys.stdin):
        piped = sys.stdin.read()
        if piped.strip():
            parts.append(piped.rstrip("\n"))
    if words:
        parts.append(" ".join(words))
    if not parts:
        raise click.UsageError('give a prompt: tally "..." (or pipe text into tally)')
    return "\n\n".join(parts)


@main.command()
@click.argument("prompt", nargs=-1)
@click.option("-m", "--model", help="The model (default: the router's choice).")
@click.option("-s", "--system", help="A system prompt.")
@click.option(
    "--max-tokens",
    type=click.IntRange(min=1),
    default=DEFAULT_MAX_TOKENS,
    show_default=True,
    help="Output limit in tokens.",
)
@click.option("--temperature", type=float, help="Sampling temperature.")
@click.option(
    "-o",
    "--option",
    "pairs",
    multiple=True,
    metavar="KEY=VALUE",
    help="A provider request field (JSON value, else a string); repeatable.",
)
@click.option(
    "--schema",
    help="Structured output: a JSON Schema file, module:PydanticModel, or 'name, age int'.",
)
@click.option(
    "--stream/--no-stream",
    default=None,
    help="Override the router: stream, or answer atomically.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the whole Response as JSON.")
@click.option(
    "-v", "--verbose", is_flag=True, help="Decision, reasons, TTFT and tokens/s on stderr."
)
@_base_url_option
@_protocol_option
def prompt(
    prompt: tuple[str, ...],
    model: str | None,
    system: str | None,
    max_tokens: int,
    temperature: float | None,
    pairs: tuple[str, ...],
    schema: str | None,
    stream: bool | None,
    as_json: bool,
    verbose: bool,
    base_url: str | None,
    protocol: str,
) -> None:
    """Ask PROMPT (joined with any text on stdin) and print the answer."""
    text = _prompt_text(prompt)
    options: CallOptions = {"max_tokens": max_tokens}
    if model:
        options["model"] = model
    if system:
        options["system"] = system
    if temperature is not None:
        options["temperature"] = temperature
    if pairs:
        options["extra_body"] = _options(pairs)
    validate: Callable[[Any], Any] | None = None
    if schema is not None:
        options["schema"], validate = load_schema(schema)
    to_terminal = _isatty(sys.stdout)
    human = to_terminal and not as_json and validate is None
    options["consumer"] = "human" if human else "machine"
    if validate is not None:
        options["structure_type"] = "json"
    try:
        client = _client(base_url, protocol, model)
    except ConfigurationError as exc:
        _fail(exc)
    with client:
        response = _deliver(client, text, options, stream, not as_json and not validate, verbose)
    if verbose:
        _summary(response)
    if as_json:
        click.echo(json.dumps(response_json(response), ensure_ascii=False))
    elif validate is not None:
        _print_structured(response, validate, to_terminal)
    if response.state == "partial":
        _note("[partial: the stream ended before its terminal event]")
        sys.exit(EXIT_CODES["partial"])


def _deliver(
    client: Client,
    text: str,
    options: CallOptions,
    stream: bool | None,
    show_text: bool,
    verbose: bool,
) -> Response:
    """Make the call as the router decides (`stream` None) or as the caller chose."""
    try:
        if stream is False:  # the caller's choice: atomic, whatever the router says
            response = _run_atomic(lambda: client.complete(text, **options), show_text)
            if verbose:
                _explain(response.decision)
            return response
        call = client.stream(text, **options) if stream else client.respond(text, **options)
        if verbose:
            _explain(call.decision)
        return _run(call, show_text=show_text)
    except ConfigurationError as exc:
        _fail(exc)


def _run(call: Stream, *, show_text: bool) -> Response:
    """Drive the call: print text as it arrives (when shown), a spinner while nothing has,
    Reset notices on stderr; Ctrl-C closes the connection and exits 130."""
    out = sys.stdout
    wrote = ""
    label = f"{call.decision.model if call.decision else 'model'}"
    try:
        with _spinner(_isatty(sys.stderr), f"asking {label}") as stop, call:
            for event in call:
                if show_text:  # else the spinner runs until the Response is whole
                    stop()
                if type(event) is TextDelta and show_text:
                    out.write(event.text)
                    out.flush()
                    wrote = event.text
                elif isinstance(event, Reset):
                    _note(
                        f"\n[connection lost ({type(event.error).__name__}): retrying as "
                        f"attempt {event.attempt}; the text above is discarded]"
                    )
            response = call.final()
    except KeyboardInterrupt:
        call.close()  # the connection is closed before anything else happens
        arrived = call.snapshot().text
        if show_text and not wrote and arrived:  # nothing shown yet (atomic): show it now
            out.write(arrived)
            wrote = arrived
        if wrote and not wrote.endswith("\n"):
            out.write("\n")
        out.flush()
        _note(f"[interrupted: {len(arrived)} characters arrived]")
        sys.exit(EXIT_CODES["interrupted"])
    except (ProviderError, StructuredOutputError) as exc:
        _failed(exc, wrote, show_text)
    if show_text and not wrote and response.text:
        out.write(response.text)  # atomic: nothing was streamed
        wrote = response.text
    if show_text and (not wrote.endswith("\n") or not response.text):
        out.write("\n")
    out.flush()
    return response


def _run_atomic(complete: Callable[[], Response], show_text: bool) -> Response:
    """An atomic call (`--no-stream`): a spinner until the whole answer is in, then print it.
    Ctrl-C closes the connection (nothing has arrived yet) and exits 130."""
    try:
        with _spinner(_isatty(sys.stderr), "asking"):
            response = complete()
    except KeyboardInterrupt:
        _note("[interrupted: 0 characters arrived]")
        sys.exit(EXIT_CODES["interrupted"])
    except (ProviderError, StructuredOutputError) as exc:
        _failed(exc, "", show_text)
    if show_text:
        text = response.text
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
        sys.stdout.flush()
    return response


def _failed(exc: ProviderError | StructuredOutputError, wrote: str, show_text: bool) -> NoReturn:
    """Print what arrived (unless already shown) and exit with the error's code."""
    out = sys.stdout
    partial = exc.partial if isinstance(exc, ProviderError) else exc.response
    if show_text and not wrote and partial is not None and partial.text:
        out.write(partial.text)
        wrote = partial.text
    if wrote and not wrote.endswith("\n"):
        out.write("\n")
    out.flush()
    _fail(exc)


def _print_structured(response: Response, validate: Callable[[Any], Any], tty: bool) -> None:
    try:
        data = validate(response.parsed)
    except Exception as exc:  # jsonschema.ValidationError or pydantic.ValidationError
        click.echo(f"tally: the answer does not match the schema: {exc}", err=True)
        sys.exit(EXIT_CODES["structured_output"])
    click.echo(json.dumps(data, ensure_ascii=False, indent=2 if tty else None))


def _fail(error: BaseException) -> NoReturn:
    message = str(error)
    if isinstance(error, APIStatusError) and error.request_id:
        message += f" (request id {error.request_id})"
    click.echo(f"tally: {type(error).__name__}: {message}", err=True)
    sys.exit(exit_code(error))


def _explain(d: Decision | None) -> None:
    if d is None:
        return
    mode = "stream" if d.stream else "atomic"
    _note(
        f"[{d.provider}/{d.model}, {mode}; confidence model {d.confidence.model:.2f}, "
        f"mode {d.confidence.stream:.2f}; source {d.source}]"
    )
    for reason in d.reasons:
        _note(f"  - {reason}")


def _summary(response: Response) -> None:
    m, u = response.metrics, response.usage
    parts = [f"{response.state}, finish reason {response.finish_reason}"]
    if m.ttft is not None:
        parts.append(f"TTFT {m.ttft:.3f} s")
    if m.output_tokens_per_second is not None:
        parts.append(f"{m.output_tokens_per_second:.1f} tokens/s")
    parts.append(
        f"{u.input_tokens} in / {u.output_tokens} out tokens"
        if u.reported
        else "usage not reported"
    )
    parts.append(f"{len(response.attempts)} attempt(s), {m.total_seconds:.2f} s")
    _note("[" + "; ".join(parts) + "]")


# -- route, models, local ------------------------------------------------------------------


@main.command()
@click.argument("prompt", nargs=-1)
@click.option("-m", "--model", help="Fix the model (the mode is still the router's).")
@click.option(
    "--consumer",
    type=click.Choice(["human", "machine", "pipeline"]),
    help="Who reads the output.",
)
@click.option(
    "--structure",
    "structure_type",
    type=click.Choice(["prose", "code", "json", "list", "mixed"]),
    help="The output's form.",
)
@click.option("--task", "task_type", help="The kind of work: chat, extraction, ...")
@click.option("--expected-tokens", type=click.IntRange(min=0), help="Expected output tokens.")
@click.option("--tools", type=click.IntRange(min=0), default=0, help="Tool definitions in scope.")
@click.option("--time-sensitive", is_flag=True, help="Prefer latency over cost.")
@click.option("--json", "as_json", is_flag=True, help="Print the Decision as JSON.")
@_base_url_option
@_protocol_option
def route(
    prompt: tuple[str, ...],
    model: str | None,
    consumer: str | None,
    structure_type: str | None,
    task_type: str | None,
    expected_tokens: int | None,
    tools: int,
    time_sensitive: bool,
    as_json: bool,
    base_url: str | None,
    protocol: str,
) -> None:
    """Explain the routing decision for a call of this shape, without making it."""
    options: dict[str, Any] = {"time_sensitive": time_sensitive}
    for key, value in (
        ("model", model),
        ("consumer", consumer),
        ("structure_type", structure_type),
        ("task_type", task_type),
        ("expected_output_tokens", expected_tokens),
    ):
        if value is not None:
            options[key] = value
    if tools:
        options["tools"] = [
            {"name": f"tool_{i}", "description": "", "parameters": {"type": "object"}}
            for i in range(tools)
        ]
    try:
        with _client(base_url, protocol, model) as client:
            decision = client.route(" ".join(prompt), **cast(CallOptions, options))
    except ConfigurationError as exc:
        _fail(exc)
    if as_json:
        click.echo(json.dumps(_plain(decision)))
        return
    mode = "stream" if decision.stream else "atomic"
    click.echo(f"{decision.provider}/{decision.model}: {mode}")
    click.echo(
        f"confidence: model {decision.confidence.model:.2f}, mode {decision.confidence.stream:.2f}"
    )
    for phase in decision.phases:
        how = "stream" if phase.stream else "atomic"
        click.echo(f"phase {phase.phase}: {how} ({phase.confidence:.2f})")
    click.echo("reasons:")
    for reason in decision.reasons:
        click.echo(f"  - {reason}")


@main.command()
@click.option("--json", "as_json", is_flag=True, help="One JSON object per model.")
@_base_url_option
@_protocol_option
def models(as_json: bool, base_url: str | None, protocol: str) -> None:
    """List the models the router chooses among (from the environment or --base-url)."""
    try:
        client = _client(base_url, protocol, None)
    except ConfigurationError as exc:
        _fail(exc)
    with client:
        rows = [_plain(spec) for spec in client.models]
    if as_json:
        for row in rows:
            click.echo(json.dumps(row))
        return
    if not rows:
        return
    keys = list(rows[0])
    cells = [{k: _cell(row[k]) for k in keys} for row in rows]
    widths = {k: max(len(k), *(len(c[k]) for c in cells)) for k in keys}
    click.echo("  ".join(k.ljust(widths[k]) for k in keys).rstrip())
    for cell in cells:
        click.echo("  ".join(cell[k].ljust(widths[k]) for k in keys).rstrip())


def _cell(value: Any) -> str:
    """A catalog value for the table (prices: USD per million tokens; --json has sources)."""
    if isinstance(value, dict):
        return " ".join(f"{k}={v}" for k, v in value.items() if k not in ("source", "date"))
    if isinstance(value, list):
        return ",".join(map(str, value))
    return "-" if value is None else str(value)


@main.command()
@click.option("--port", type=click.IntRange(1, 65535), default=8080, show_default=True)
def local(port: int) -> None:
    """Run the local model (llama-server + SmolLM2-135M-Instruct) until Ctrl-C.

    Provisions it on first use (a build of about 6 minutes, then cached). `tally` with no
    provider key set talks to it at http://127.0.0.1:8080/v1.
    """
    from .testing.llama import LlamaServerError
    from .testing.llama import main as llama_main

    try:
        sys.exit(llama_main(["serve", str(port)]))
    except LlamaServerError as exc:
        click.echo(f"tally: {exc}", err=True)
        sys.exit(EXIT_CODES["configuration"])


def run() -> None:
    """Run the command line (see `tally_client.__main__.main`)."""
    main(prog_name="tally")
