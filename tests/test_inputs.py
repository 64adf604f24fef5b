"""Inputs are checked before they leave (issue 7, part 3).

Every bad input is a `ConfigurationError` that says what to do, raised before any request
(the replay server counts none); sampling options reach each provider under its own field
name, or fail by the provider's name where it has no such field; extra headers per client and
per call arrive on the wire.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import anyio
import pytest

from tally_client import (
    AsyncClient,
    Client,
    ConfigurationError,
    ConnectError,
    RetryPolicy,
    Timeouts,
    Tool,
)
from tally_client._config import default_setup
from tally_client.testing.replay import ReplayServer, Reply

NO_RETRY = RetryPolicy(max_attempts=1)
CHAT_BODY = {
    "id": "c1",
    "model": "m",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"},
                 "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
}  # fmt: skip


@dataclass(frozen=True)
class Wire:
    protocol: str
    path: str
    model: str
    atomic_body: dict[str, Any]


WIRES = [
    Wire("openai-chat", "/v1", "gpt-4o-mini", CHAT_BODY),
    Wire(
        "openai-responses",
        "/v1",
        "gpt-5",
        {"id": "r", "status": "completed", "output": [], "model": "gpt-5"},
    ),
    Wire(
        "anthropic",
        "",
        "claude-sonnet-4-5",
        {"id": "m", "type": "message", "content": [], "stop_reason": "end_turn"},
    ),
    Wire(
        "gemini",
        "",
        "gemini-2.5-flash",
        {"candidates": [{"content": {"parts": [{"text": "ok"}]}, "finishReason": "STOP"}]},
    ),
]


@pytest.fixture(scope="module")
def server() -> Iterator[ReplayServer]:
    with ReplayServer() as srv:
        yield srv


def client_for(url: str, wire: Wire, **kwargs: Any) -> Client:
    return Client(
        base_url=url + wire.path,
        api_key="test-key-0000",
        protocol=wire.protocol,
        model=wire.model,
        retry=NO_RETRY,
        **kwargs,
    )


# -- unknown options ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("typo", "meant"),
    [("max_token", "max_tokens"), ("temprature", "temperature"), ("top_P", "top_p"),
     ("stop_sequences", "stop"), ("extra_header", "extra_headers")],
)  # fmt: skip
def test_an_unknown_option_names_the_closest_one(
    server: ReplayServer, typo: str, meant: str
) -> None:
    url = server.add(Reply.json(CHAT_BODY))
    with client_for(url, WIRES[0]) as client:
        options: dict[str, Any] = {typo: 1}
        for call in (client.complete, client.stream, client.respond, client.route):
            with pytest.raises(ConfigurationError, match=rf"{typo}=: did you mean {meant}=\?"):
                call("hi", **options)
    assert server.requests(url) == []


def test_an_unknown_option_fails_on_the_async_client_too(server: ReplayServer) -> None:
    url = server.add(Reply.json(CHAT_BODY))

    async def main() -> None:
        async with AsyncClient(base_url=url + "/v1", retry=NO_RETRY) as client:
            with pytest.raises(ConfigurationError, match="did you mean max_tokens="):
                await client.complete("hi", max_token=5)  # type: ignore[call-overload]
            with pytest.raises(ConfigurationError, match="did you mean temperature="):
                client.stream("hi", temprature=0.2)  # type: ignore[call-overload]

    anyio.run(main)
    assert server.requests(url) == []


# -- sampling options --------------------------------------------------------------------------

SAMPLING: dict[str, Any] = {
    "stop": ["END", "\n\n"],
    "seed": 7,
    "top_p": 0.9,
    "top_k": 40,
    "presence_penalty": 0.5,
    "frequency_penalty": -0.25,
}
EXPECTED_FIELDS: dict[str, dict[str, tuple[str, ...]]] = {
    # protocol -> option -> path of the field in the request body
    "openai-chat": {
        "stop": ("stop",),
        "seed": ("seed",),
        "top_p": ("top_p",),
        "top_k": ("top_k",),  # the replay server is not api.openai.com: a compatible server
        "presence_penalty": ("presence_penalty",),
        "frequency_penalty": ("frequency_penalty",),
    },
    "openai-responses": {"top_p": ("top_p",)},
    "anthropic": {"stop": ("stop_sequences",), "top_p": ("top_p",), "top_k": ("top_k",)},
    "gemini": {
        "stop": ("generationConfig", "stopSequences"),
        "seed": ("generationConfig", "seed"),
        "top_p": ("generationConfig", "topP"),
        "top_k": ("generationConfig", "topK"),
        "presence_penalty": ("generationConfig", "presencePenalty"),
        "frequency_penalty": ("generationConfig", "frequencyPenalty"),
    },
}


def _field(body: dict[str, Any], path: tuple[str, ...]) -> Any:
    for key in path:
        body = body[key]
    return body


@pytest.mark.parametrize("wire", WIRES, ids=lambda w: w.protocol)
@pytest.mark.parametrize("option", sorted(SAMPLING))
def test_sampling_options_reach_the_wire_or_fail_by_provider_name(
    server: ReplayServer, wire: Wire, option: str
) -> None:
    url = server.add(Reply.json(wire.atomic_body))
    value = SAMPLING[option]
    with client_for(url, wire) as client:
        supported = EXPECTED_FIELDS[wire.protocol]
        if option not in supported:
            label = client.providers[next(iter(client.providers))].label
            with pytest.raises(ConfigurationError, match=rf"{label} \({wire.protocol}\) has no"):
                client.complete("hi", **{option: value})
            assert server.requests(url) == []  # refused before any request
            return
        assert client.complete("hi", **{option: value}).complete
    (request,) = server.requests(url)
    assert _field(request.json(), supported[option]) == value


def test_a_single_stop_string_is_sent_as_a_list(server: ReplayServer) -> None:
    url = server.add(Reply.json(CHAT_BODY))
    with client_for(url, WIRES[0]) as client:
        client.complete("hi", stop="END")
    assert server.requests(url)[0].json()["stop"] == ["END"]


def test_top_k_is_refused_for_the_official_openai_host() -> None:
    from tally_client._request import CallSpec
    from tally_client.providers.openai_chat import OpenAIChatProvider

    provider = OpenAIChatProvider(api_key="sk-test-0000")
    spec = CallSpec(messages=({"role": "user", "content": "hi"},), top_k=5)
    with pytest.raises(ConfigurationError, match=r"openai \(openai-chat\) has no top_k"):
        provider.build_request(spec, "gpt-4.1", stream=False)
    seeded = CallSpec(messages=spec.messages, seed=3, stop=("x",))
    body = provider.build_request(seeded, "gpt-4.1", stream=False).json
    assert (body["seed"], body["stop"]) == (3, ["x"])


@pytest.mark.parametrize(
    ("option", "value"),
    [("top_p", 1.5), ("top_p", "0.9"), ("top_k", 0), ("top_k", 2.5), ("seed", 1.0),
     ("seed", True), ("stop", ""), ("stop", ["ok", 3]), ("stop", 5),
     ("presence_penalty", "high"), ("temperature", -1), ("temperature", "hot")],
)  # fmt: skip
def test_bad_sampling_values_are_configuration_errors(
    server: ReplayServer, option: str, value: Any
) -> None:
    url = server.add(Reply.json(CHAT_BODY))
    with client_for(url, WIRES[0]) as client, pytest.raises(ConfigurationError, match=option):
        client.complete("hi", **{option: value})
    assert server.requests(url) == []


# -- extra headers -----------------------------------------------------------------------------


@pytest.mark.parametrize("wire", WIRES, ids=lambda w: w.protocol)
def test_extra_headers_per_client_and_per_call(server: ReplayServer, wire: Wire) -> None:
    url = server.add(Reply.json(wire.atomic_body))
    client_headers = {"X-Team": "search", "X-Trace": "client"}
    with client_for(url, wire, extra_headers=client_headers) as client:
        client.complete("one")
        client.complete("two", extra_headers={"X-Trace": "call", "X-Call": "2"})
    first, second = server.requests(url)
    assert (first.headers["x-team"], first.headers["x-trace"]) == ("search", "client")
    assert "x-call" not in first.headers
    assert (second.headers["x-team"], second.headers["x-trace"]) == ("search", "call")
    assert second.headers["x-call"] == "2"


def test_extra_headers_on_the_async_client(server: ReplayServer) -> None:
    url = server.add(Reply.json(CHAT_BODY))

    async def main() -> None:
        async with AsyncClient(
            base_url=url + "/v1", retry=NO_RETRY, extra_headers={"X-Team": "a"}
        ) as client:
            await client.complete("hi", extra_headers={"X-Call": "b"})

    anyio.run(main)
    (request,) = server.requests(url)
    assert (request.headers["x-team"], request.headers["x-call"]) == ("a", "b")


@pytest.mark.parametrize(
    "headers", [{"X-Name": "Zoë"}, {"X-Bad": "a\r\nInjected: 1"}, {"X-N": 3}, ["X-A"]]
)
def test_bad_extra_headers_are_configuration_errors(server: ReplayServer, headers: Any) -> None:
    url = server.add(Reply.json(CHAT_BODY))
    with pytest.raises(ConfigurationError, match="extra_headers"):
        Client(base_url=url + "/v1", extra_headers=headers)
    with client_for(url, WIRES[0]) as client, pytest.raises(ConfigurationError):
        client.complete("hi", extra_headers=headers)
    assert server.requests(url) == []


# -- prompts, text, limits, schema -------------------------------------------------------------


@pytest.mark.parametrize(
    ("prompt", "advice"),
    [(None, "pass the text to send"), (42, "must be a str or a list of messages"),
     (b"hi", r"decode it first"), ({"role": "user", "content": "hi"}, "wrap it in a list")],
)  # fmt: skip
def test_a_prompt_that_is_not_text_or_messages(
    server: ReplayServer, prompt: Any, advice: str
) -> None:
    url = server.add(Reply.json(CHAT_BODY))
    with client_for(url, WIRES[0]) as client:
        for call in (client.complete, client.stream, client.respond):
            with pytest.raises(ConfigurationError, match=advice):
                call(prompt)
    assert server.requests(url) == []


LONE = "broken \ud83d emoji"


@pytest.mark.parametrize(
    ("prompt", "options", "where"),
    [
        (LONE, {}, r"^prompt holds a lone surrogate"),
        ([{"role": "user", "content": "ok"}, {"role": "user", "content": LONE}], {},
         r"messages\[1\]\.content"),
        ([{"role": "user", "content": [{"type": "text", "text": LONE}]}], {},
         r"messages\[0\]\.content\[0\]\.text"),
        ("hi", {"system": LONE}, r"^system holds"),
        ("hi", {"tools": [Tool("f", description=LONE)]}, r"tools\[0\]\.description"),
        ("hi", {"tools": [{"name": "f", "parameters": {"type": "object",
                 "properties": {"q": {"type": "string", "description": LONE}}}}]},
         r"tools\[0\]\.parameters\.properties\.q\.description"),
        ("hi", {"stop": [LONE]}, r"stop\[0\]"),
        ("hi", {"extra_body": {"user": LONE}}, r"extra_body\.user"),
    ],
)  # fmt: skip
def test_a_lone_surrogate_anywhere_is_named(
    server: ReplayServer, prompt: Any, options: dict[str, Any], where: str
) -> None:
    url = server.add(Reply.json(CHAT_BODY))
    with client_for(url, WIRES[0]) as client, pytest.raises(ConfigurationError, match=where):
        client.complete(prompt, **options)
    assert server.requests(url) == []


def test_a_surrogate_pair_is_fine(server: ReplayServer) -> None:
    url = server.add(Reply.json(CHAT_BODY))
    with client_for(url, WIRES[0]) as client:
        client.complete("smile 😀")
    assert server.requests(url)[0].json()["messages"][0]["content"] == "smile 😀"


@pytest.mark.parametrize("value", [0, -5, True, "100", 1.5, None.__class__])
def test_max_tokens_must_be_a_positive_int(server: ReplayServer, value: Any) -> None:
    url = server.add(Reply.json(CHAT_BODY))
    with client_for(url, WIRES[0]) as client:
        with pytest.raises(ConfigurationError, match="max_tokens must be a positive int"):
            client.complete("hi", max_tokens=value)
        with pytest.raises(ConfigurationError, match="max_tokens must be a positive int"):
            client.route("hi", max_tokens=value)
    assert server.requests(url) == []


@pytest.mark.parametrize(
    "kwargs",
    [{"idle": 0}, {"total": -1}, {"connect": "5"}, {"first_token": True},
     {"idle": float("nan")}],
)  # fmt: skip
def test_time_limits_must_be_positive(kwargs: dict[str, Any]) -> None:
    name = next(iter(kwargs))
    with pytest.raises(ConfigurationError, match=rf"Timeouts\.{name} must be a number"):
        Timeouts(**kwargs)


@pytest.mark.parametrize(
    "kwargs",
    [{"max_attempts": 0}, {"max_attempts": 2.0}, {"max_attempts": True},
     {"initial_delay": -1}, {"max_delay": float("inf")}, {"max_retry_after": "60"}],
)  # fmt: skip
def test_retry_policy_values_are_checked(kwargs: dict[str, Any]) -> None:
    name = next(iter(kwargs))
    with pytest.raises(ConfigurationError, match=rf"RetryPolicy\.{name}"):
        RetryPolicy(**kwargs)


def test_timeouts_and_retry_must_be_their_types(server: ReplayServer) -> None:
    url = server.add(Reply.json(CHAT_BODY))
    with client_for(url, WIRES[0]) as client:
        with pytest.raises(ConfigurationError, match="timeouts must be a Timeouts"):
            client.complete("hi", timeouts=30)  # type: ignore[call-overload]
        with pytest.raises(ConfigurationError, match="retry must be a RetryPolicy"):
            client.complete("hi", retry=3)  # type: ignore[call-overload]
    with pytest.raises(ConfigurationError, match="timeouts must be a Timeouts"):
        Client(base_url=url + "/v1", timeouts=30)  # type: ignore[arg-type]
    assert server.requests(url) == []


@pytest.mark.parametrize(
    ("schema", "advice"),
    [('{"type": "object"}', "json.loads"), (["type", "object"], "got list"), (3, "got int")],
)
def test_a_schema_must_be_a_mapping(server: ReplayServer, schema: Any, advice: str) -> None:
    url = server.add(Reply.json(CHAT_BODY))
    expected = rf"schema must be a JSON Schema.*{advice}"
    with client_for(url, WIRES[0]) as client, pytest.raises(ConfigurationError, match=expected):
        client.complete("hi", schema=schema)
    assert server.requests(url) == []


# -- closed clients ----------------------------------------------------------------------------


def test_a_call_on_a_closed_client(server: ReplayServer) -> None:
    url = server.add(Reply.json(CHAT_BODY))
    client = client_for(url, WIRES[0])
    made_before = client.stream("hi")
    client.close()
    with pytest.raises(ConfigurationError, match=r"closed.*create a new client"):
        client.complete("hi")
    with pytest.raises(ConfigurationError, match="closed"):
        made_before.final()
    assert server.requests(url) == []


def test_a_call_on_a_closed_async_client(server: ReplayServer) -> None:
    url = server.add(Reply.json(CHAT_BODY))

    async def main() -> None:
        async with AsyncClient(base_url=url + "/v1", retry=NO_RETRY) as client:
            made_before = client.stream("hi")
        with pytest.raises(ConfigurationError, match=r"closed.*create a new client"):
            await client.complete("hi")
        with pytest.raises(ConfigurationError, match="closed"):
            await made_before.final()

    anyio.run(main)
    assert server.requests(url) == []


# -- nothing listening at the default local endpoint -------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
def test_refused_default_endpoint_says_how_to_start_a_server(
    monkeypatch: pytest.MonkeyPatch, use_async: bool
) -> None:
    for var in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY", "GOOGLE_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    base_url = f"http://127.0.0.1:{_free_port()}/v1"
    monkeypatch.setenv("TALLY_LOCAL_BASE_URL", base_url)
    if use_async:

        async def main() -> None:
            async with AsyncClient(retry=NO_RETRY) as client:
                await client.complete("hi")

        with pytest.raises(ConnectError) as info:
            anyio.run(main)
    else:
        with Client(retry=NO_RETRY) as client, pytest.raises(ConnectError) as info:
            client.complete("hi")
    message = str(info.value)
    assert f"No server answers at {base_url}" in message
    assert "python -m tally_client.testing.llama serve" in message
    for key in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY", "GOOGLE_API_KEY"):
        assert key in message


def test_configured_providers_carry_no_local_hint() -> None:
    providers, _ = default_setup({"OPENAI_API_KEY": "sk-test-0000"})
    assert providers["openai"].connect_hint == ""
    local, _ = default_setup({})
    assert "llama serve" in local["local"].connect_hint


@pytest.mark.parametrize("wire", WIRES, ids=lambda w: w.protocol)
@pytest.mark.parametrize(
    ("prompt", "options", "where"),
    [
        ([{"role": "user", "content": 5}], {}, r"messages\[0\]\.content must be"),
        ([{"role": "user", "content": [5]}], {}, r"messages\[0\]\.content must be"),
        ([{"role": "assistant", "content": "x", "tool_calls": 5}], {}, r"tool_calls must be"),
        ("hi", {"tools": [42]}, r"tools\[0\] must be a Tool"),
        ("hi", {"tools": [{"name": "f", "parameters": "x"}]}, r"parameters must be"),
        ("hi", {"tools": [Tool("f", parameters="x")]}, r"parameters must be"),  # type: ignore[arg-type]
    ],
)  # fmt: skip
def test_messages_and_tools_of_the_wrong_shape(
    server: ReplayServer, wire: Wire, prompt: Any, options: dict[str, Any], where: str
) -> None:
    url = server.add(Reply.json(wire.atomic_body))
    with client_for(url, wire) as client, pytest.raises(ConfigurationError, match=where):
        client.complete(prompt, **options)
    assert server.requests(url) == []


def test_a_tool_result_may_be_any_json_value(server: ReplayServer) -> None:
    url = server.add(Reply.json(WIRES[2].atomic_body))
    messages: list[dict[str, Any]] = [
        {"role": "user", "content": "Weather?"},
        {"role": "assistant", "content": "", "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "w", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": {"temp": 20}},
    ]  # fmt: skip
    with client_for(url, WIRES[2]) as client:
        assert client.complete(messages).complete
    sent = server.requests(url)[0].json()["messages"][-1]["content"][0]
    assert sent["type"] == "tool_result" and '"temp": 20' in sent["content"]
