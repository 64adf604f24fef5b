"""Checks on a call's inputs, made before anything is sent.

Every check raises `ConfigurationError` with a message that says what to pass instead, so a
typo (`max_token=`), a wrong type (`max_tokens="100"`, `prompt=b"..."`) or text that cannot be
encoded (a lone surrogate) fails at the call site, not as a bare TypeError deep in httpx or as
a provider's 400 after a round trip.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any

from ._errors import ConfigurationError
from ._retry import RetryPolicy, Timeouts

__all__ = [
    "SAMPLING_OPTIONS",
    "check_headers",
    "check_option_names",
    "check_option_values",
    "check_prompt",
    "check_text",
]

SAMPLING_OPTIONS = ("stop", "seed", "top_p", "top_k", "presence_penalty", "frequency_penalty")
"""The sampling options each provider maps to its own field (or rejects by name)."""

_PROVIDER_NAMES = {
    "stop_sequences": "stop",
    "stopSequences": "stop",
    "max_output_tokens": "max_tokens",
    "max_completion_tokens": "max_tokens",
    "maxOutputTokens": "max_tokens",
    "topP": "top_p",
    "topK": "top_k",
    "presencePenalty": "presence_penalty",
    "frequencyPenalty": "frequency_penalty",
    "response_format": "schema",
    "headers": "extra_headers",
    "default_headers": "extra_headers",
    "timeout": "timeouts",
}
"""Providers' own names for call options: suggested when difflib finds nothing closer."""

_SURROGATE = re.compile("[\ud800-\udfff]")


def check_option_names(options: Iterable[str], valid: Collection[str]) -> None:
    """Reject keyword options a call does not take, naming the closest valid one.

    Raises:
        ConfigurationError: an unknown option (`max_token=` -> "did you mean max_tokens=?").
    """
    unknown = [name for name in options if name not in valid]
    if not unknown:
        return
    import difflib  # the error path only

    name = unknown[0]
    alias = _PROVIDER_NAMES.get(name)
    close = [alias] if alias in valid else difflib.get_close_matches(name, sorted(valid), n=1)
    hint = f"did you mean {close[0]}=? " if close else ""
    raise ConfigurationError(
        f"unknown call option {name}=: {hint}the options are {', '.join(sorted(valid))} "
        "(provider-specific request fields go in extra_body=, headers in extra_headers=)"
    )


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_prompt(prompt: object) -> None:
    """The prompt is a string or a sequence of messages.

    Raises:
        ConfigurationError: None, a number, bytes, or another object.
    """
    if isinstance(prompt, str):
        return
    if prompt is None:
        raise ConfigurationError(
            "the prompt is None: pass the text to send (a str), or a list of messages like "
            "[{'role': 'user', 'content': 'Hi'}]"
        )
    if isinstance(prompt, bytes | bytearray | memoryview):
        raise ConfigurationError(
            "the prompt is bytes: decode it first (prompt.decode('utf-8')) and pass the str"
        )
    if isinstance(prompt, Mapping) or not isinstance(prompt, Sequence):
        hint = " (a single message: wrap it in a list)" if isinstance(prompt, Mapping) else ""
        raise ConfigurationError(
            f"the prompt must be a str or a list of messages like [{{'role': 'user', "
            f"'content': 'Hi'}}], got {type(prompt).__name__}{hint}"
        )


def check_text(value: object, where: str) -> None:
    """No string anywhere in `value` (nested mappings and sequences) holds a lone surrogate.

    A lone surrogate (for example from `"\\ud83d"` or bytes decoded with `surrogateescape`)
    cannot be encoded as UTF-8, so the request could not be sent.

    Raises:
        ConfigurationError: naming the place, e.g. `messages[1].content`.
    """
    path = _find_surrogate(value, where)
    if path is not None:
        raise ConfigurationError(
            f"{path} holds a lone surrogate (an unpaired UTF-16 half such as '\\ud83d'), which "
            "cannot be sent as UTF-8: fix how the text was decoded (decode bytes with "
            "errors='replace', or encode/decode with 'surrogatepass' to rebuild the pair)"
        )


def _find_surrogate(value: object, where: str) -> str | None:
    if isinstance(value, str):
        if value.isascii() or _SURROGATE.search(value) is None:
            return None
        return where
    if isinstance(value, Mapping):
        for key, item in value.items():
            found = _find_surrogate(key, f"{where} key") or _find_surrogate(
                item, f"{where}.{key}" if isinstance(key, str) else f"{where}[{key!r}]"
            )
            if found:
                return found
        return None
    if isinstance(value, list | tuple):
        for i, item in enumerate(value):
            found = _find_surrogate(item, f"{where}[{i}]")
            if found:
                return found
        return None
    fields = getattr(value, "__dataclass_fields__", None)  # a Tool, a ToolCall
    if fields is not None:
        for name in fields:
            found = _find_surrogate(getattr(value, name), f"{where}.{name}")
            if found:
                return found
    return None


def check_headers(headers: object, where: str) -> dict[str, str]:
    """Extra HTTP headers as a dict of ASCII strings.

    Raises:
        ConfigurationError: not a mapping, or a name or value that is not an ASCII str.
    """
    if headers is None:
        return {}
    if not isinstance(headers, Mapping):
        raise ConfigurationError(
            f"{where} must be a mapping of header name to value, like "
            f"{{'X-Request-Source': 'batch'}}, got {type(headers).__name__}"
        )
    out: dict[str, str] = {}
    for name, value in headers.items():
        if not isinstance(name, str) or not isinstance(value, str):
            raise ConfigurationError(
                f"{where}: header names and values must be str, got "
                f"{type(name).__name__}: {type(value).__name__} for {name!r}"
            )
        if not (name.isascii() and value.isascii()) or "\n" in value or "\r" in value:
            raise ConfigurationError(
                f"{where}: header {name!r} must be ASCII on one line (HTTP headers cannot "
                "carry other text): percent-encode or base64 the value"
            )
        out[name] = value
    return out


def _positive_int(name: str, value: object) -> None:
    if not _is_int(value) or value <= 0:  # type: ignore[operator]
        raise ConfigurationError(
            f"{name} must be a positive int (tokens), like {name}=256; got {value!r}"
        )


def check_option_values(options: Mapping[str, Any]) -> None:
    """Types and ranges of the call options that providers would otherwise reject late.

    Raises:
        ConfigurationError: naming the option, the value given and what it takes.
    """
    _check_sampling(options)
    _check_containers(options)
    for name in ("max_tokens", "expected_output_tokens"):
        if options.get(name) is not None:
            _positive_int(name, options[name])
    for name in ("system", "model", "schema_name", "task_type"):
        value = options.get(name)
        if value is not None and not isinstance(value, str):
            raise ConfigurationError(f"{name} must be a str, got {type(value).__name__}")


def _check_sampling(options: Mapping[str, Any]) -> None:
    value = options.get("temperature")
    if value is not None and (not _is_number(value) or value < 0):
        raise ConfigurationError(f"temperature must be a number >= 0, like 0.7; got {value!r}")
    value = options.get("top_p")
    if value is not None and (not _is_number(value) or not 0 <= value <= 1):
        raise ConfigurationError(f"top_p must be a number from 0 to 1, like 0.9; got {value!r}")
    value = options.get("top_k")
    if value is not None:
        _positive_int("top_k", value)
    value = options.get("seed")
    if value is not None and not _is_int(value):
        raise ConfigurationError(f"seed must be an int, like seed=42; got {value!r}")
    for name in ("presence_penalty", "frequency_penalty"):
        value = options.get(name)
        if value is not None and not _is_number(value):
            raise ConfigurationError(f"{name} must be a number, like 0.5; got {value!r}")
    stop = options.get("stop")
    if stop is not None:
        items = [stop] if isinstance(stop, str) else stop
        if not isinstance(items, list | tuple) or not all(isinstance(s, str) and s for s in items):
            raise ConfigurationError(
                f"stop must be a non-empty str or a list of them, like stop=['\\n\\n']; "
                f"got {stop!r}"
            )


def _check_containers(options: Mapping[str, Any]) -> None:
    schema = options.get("schema")
    # Types Pydantic takes are not all `type`s (list[Person], Person | None, Annotated[...]):
    # `_output.output_spec` checks those when it builds the spec.
    if isinstance(schema, str | bytes | int | float | list | tuple):
        raise ConfigurationError(
            f"schema must be a JSON Schema mapping (like {{'type': 'object', 'properties': "
            f"{{...}}}}) or a type, got {type(schema).__name__}"
            + (": parse the JSON first (json.loads)" if isinstance(schema, str | bytes) else "")
        )
    extra_body = options.get("extra_body")
    if extra_body is not None and not isinstance(extra_body, Mapping):
        raise ConfigurationError(
            f"extra_body must be a mapping of request fields, got {type(extra_body).__name__}"
        )
    tools = options.get("tools")
    if tools is not None and (
        isinstance(tools, str | bytes | Mapping) or not isinstance(tools, Sequence)
    ):
        raise ConfigurationError(
            f"tools must be a list of Tool objects or tool dicts, got {type(tools).__name__}"
        )
    for name, cls in (("timeouts", Timeouts), ("retry", RetryPolicy)):
        value = options.get(name)
        if value is not None and not isinstance(value, cls):
            raise ConfigurationError(
                f"{name} must be a {cls.__name__}, like {cls.__name__}(...); "
                f"got {type(value).__name__}"
            )
