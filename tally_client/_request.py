"""The provider-neutral description of one call, and the HTTP request a provider makes of it."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ._errors import ConfigurationError

__all__ = ["CallSpec", "Message", "Tool", "WireRequest", "normalize_messages", "normalize_tools"]

Message = Mapping[str, Any]
"""A chat message in the OpenAI Chat Completions shape, the one most code already has:
`{"role": "system" | "user" | "assistant" | "tool", "content": str, ...}`; an assistant turn
may carry `tool_calls` (`ToolCall` objects or OpenAI dicts), a tool turn a `tool_call_id`."""

_ROLES = frozenset({"system", "user", "assistant", "tool", "developer"})


@dataclass(frozen=True)
class Tool:
    """A function the model may call.

    Build one from a Python function with `tool_from_function(f)` (or pass `f` itself as a
    tool): the signature and docstring give the parameters and description.

    Attributes:
        name: the function name.
        description: what it does, for the model.
        parameters: a JSON Schema object for its arguments.
        function: the Python function `run_tools()` calls with the validated arguments (sync
            or async); None for a tool only described to the model.
        arguments_model: the Pydantic model `tool_from_function` built from the signature,
            which validates the arguments; None: `parameters` validates them (jsonschema).
    """

    name: str
    description: str = ""
    parameters: Mapping[str, Any] = field(
        default_factory=lambda: {"type": "object", "properties": {}}
    )
    function: Callable[..., Any] | None = field(default=None, repr=False, compare=False)
    arguments_model: Any = field(default=None, repr=False, compare=False)


@dataclass(frozen=True)
class CallSpec:
    """Everything about a call except the model: what every provider module translates.

    Attributes:
        messages: the conversation, system turns included.
        max_tokens: the output limit in tokens, or None for the provider default.
        temperature: sampling temperature, or None for the provider default.
        schema: a JSON Schema the output must follow (structured output), or None.
        schema_name: the name providers attach to that schema.
        tools: functions the model may call.
        extra_body: provider-specific fields merged into the request body last.
        stop: stop sequences: the output ends before the first one (not included).
        seed: a sampling seed, for repeatable outputs where the provider supports it.
        top_p: nucleus sampling: the probability mass sampled from (0 to 1).
        top_k: sample from the k most likely tokens only.
        presence_penalty: penalize tokens that already appeared (OpenAI, Gemini).
        frequency_penalty: penalize tokens by how often they appeared (OpenAI, Gemini).
    """

    messages: tuple[Message, ...]
    max_tokens: int | None = None
    temperature: float | None = None
    schema: Mapping[str, Any] | None = None
    schema_name: str = "output"
    tools: tuple[Tool, ...] = ()
    extra_body: Mapping[str, Any] = field(default_factory=dict)
    stop: tuple[str, ...] = ()
    seed: int | None = None
    top_p: float | None = None
    top_k: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None

    def sampling_set(self) -> list[str]:
        """The names of the sampling options this call sets (stop, seed, top_p, ...)."""
        names = ["stop"] if self.stop else []
        for name in ("seed", "top_p", "top_k", "presence_penalty", "frequency_penalty"):
            if getattr(self, name) is not None:
                names.append(name)
        return names


@dataclass(frozen=True)
class WireRequest:
    """An HTTP request as a provider module builds it; only the drivers touch httpx.

    `headers` may hold an API key: this class's repr leaves the headers out.
    """

    url: str
    json: Mapping[str, Any]
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)
    method: str = "POST"


def normalize_messages(prompt: str | Sequence[Message], system: str | None) -> tuple[Message, ...]:
    """Turn a prompt string or a message list into a checked message tuple.

    Raises:
        ConfigurationError: a message is not a mapping with a known role, or the list is empty.
    """
    if isinstance(prompt, str):
        messages: list[Message] = [{"role": "user", "content": prompt}]
    else:
        messages = list(prompt)
        if not messages:
            raise ConfigurationError(
                "messages is empty: pass a prompt string or at least one message"
            )
        checked: list[object] = list(messages)  # callers do pass other things at run time
        for i, message in enumerate(checked):
            role = message.get("role") if isinstance(message, Mapping) else None
            if role not in _ROLES:
                raise ConfigurationError(
                    f"messages[{i}] must be a mapping with role in {sorted(_ROLES)}, "
                    f"like {{'role': 'user', 'content': 'Hi'}}; got {type(message).__name__}"
                )
            assert isinstance(message, Mapping)
            _check_message(message, i)
    if system is not None:
        messages.insert(0, {"role": "system", "content": system})
    return tuple(messages)


def _check_message(message: Mapping[str, Any], i: int) -> None:
    """A message's content is text or a list of parts (a tool result: any JSON value), its
    tool calls a list.

    Raises:
        ConfigurationError: naming the message and what it takes.
    """
    content = message.get("content")
    text_or_parts = (
        message.get("role") == "tool"  # a tool result may be any JSON value
        or content is None
        or isinstance(content, str)
        or (
            isinstance(content, list | tuple)
            and all(isinstance(part, Mapping | str) for part in content)
        )
    )
    if not text_or_parts:
        raise ConfigurationError(
            f"messages[{i}].content must be a str or a list of content parts like "
            f"[{{'type': 'text', 'text': 'Hi'}}]; got {type(content).__name__}"
        )
    calls = message.get("tool_calls")
    if calls is not None and (
        not isinstance(calls, list | tuple)
        or not all(isinstance(c, Mapping) or hasattr(c, "arguments") for c in calls)
    ):
        raise ConfigurationError(
            f"messages[{i}].tool_calls must be a list of ToolCall objects or OpenAI tool-call "
            f"dicts; got {type(calls).__name__}"
        )


def normalize_tools(
    tools: Sequence[Tool | Mapping[str, Any] | Callable[..., Any]] | None,
) -> tuple[Tool, ...]:
    """Accept Python functions, `Tool`s, `{"name", "description", "parameters"}` dicts, or
    OpenAI tool dicts.

    Raises:
        ConfigurationError: a tool that is not a function, a Tool or a mapping, has no name,
            has `parameters` that are not a JSON Schema mapping, or is a function that cannot
            be described (see `tool_from_function`).
    """
    if not tools:
        return ()
    out: list[Tool] = []
    for i, tool in enumerate(tools):
        if isinstance(tool, Tool):
            if not isinstance(tool.parameters, Mapping):
                raise ConfigurationError(f"tools[{i}].parameters must be a JSON Schema mapping")
            out.append(tool)
            continue
        if not isinstance(tool, Mapping):
            if not callable(tool):
                raise ConfigurationError(
                    f"tools[{i}] must be a Tool, a function or a dict with "
                    f"name/description/parameters; got {type(tool).__name__}"
                )
            from ._tools import tool_from_function

            out.append(tool_from_function(tool))
            continue
        spec = tool.get("function", tool) if tool.get("type") == "function" else tool
        if not isinstance(spec, Mapping):
            raise ConfigurationError(f"tools[{i}]['function'] must be a mapping")
        name = spec.get("name")
        if not isinstance(name, str) or not name:
            raise ConfigurationError(f"tools[{i}] has no 'name'")
        params = spec.get("parameters") or spec.get("input_schema")
        if params is None:
            params = {"type": "object", "properties": {}}
        if not isinstance(params, Mapping):
            raise ConfigurationError(
                f"tools[{i}] parameters must be a JSON Schema mapping like "
                f"{{'type': 'object', 'properties': {{...}}}}; got {type(params).__name__}"
            )
        out.append(Tool(name, str(spec.get("description", "")), params))
    return tuple(out)
