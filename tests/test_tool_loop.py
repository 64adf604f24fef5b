"""run_tools() over byte-exact replays, every provider: atomic tool rounds, a streamed synthesis,
errors given back to the model, the round limit, and continuation data sent back unchanged."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import anyio
import pytest

from tally_client import (
    AsyncClient,
    Client,
    ConfigurationError,
    ModelSpec,
    RetryPolicy,
    TextDelta,
    Tool,
    ToolCallStarted,
    ToolResult,
    tool_from_function,
)
from tally_client._config import load_provider
from tally_client.testing.replay import RecordedRequest, ReplayServer, Reply

RECORDINGS = Path(__file__).parent / "recordings"
TEXT = "Hello! Café au lait — a classic ☕."
PROVIDERS = {
    "openai_chat": ("openai-chat", "/v1"),
    "openai_responses": ("openai-responses", "/v1"),
    "anthropic": ("anthropic", ""),
    "gemini": ("gemini", "/v1beta"),
}
CALL_IDS = {
    "openai_chat": "call_Qm8rT2vXbN5kLp3WzY7dHc1J",
    "openai_responses": "call_Vt3kP9xQm2LwR7nB5yZc8HdJ",
    "anthropic": "toolu_01T1x1fJ34qAmk2tNTrN7Up6",
    "gemini": "call_0",  # the Developer API gives no id: the accumulator names it
}


def get_weather(city: str, unit: Literal["celsius", "fahrenheit"] = "celsius") -> str:
    """Current weather for a city.

    Args:
        city: the city's name.
        unit: the temperature unit.
    """
    return f"{city}: 21 degrees {unit}"


@pytest.fixture(scope="module")
def server() -> Iterator[ReplayServer]:
    with ReplayServer() as srv:
        yield srv


def reply(provider: str, name: str) -> Reply:
    return Reply.from_file(RECORDINGS / provider / name)


def client_for(server: ReplayServer, provider: str, *replies: Reply) -> tuple[Client, str]:
    protocol, path = PROVIDERS[provider]
    url = server.add(list(replies))
    codec = load_provider(protocol, base_url=url + path, api_key="test-key")
    return Client([ModelSpec("m", "p")], providers={"p": codec}, retry=RetryPolicy(1)), url


def streamed(provider: str, request: RecordedRequest) -> bool:
    if provider == "gemini":
        return "streamGenerateContent" in request.path
    return bool(request.json().get("stream"))


def last_result(provider: str, body: dict[str, Any]) -> Any:
    """The tool result the request carries, in the provider's own shape."""
    if provider == "openai_chat":
        return body["messages"][-1]
    if provider == "openai_responses":
        return body["input"][-1]
    if provider == "anthropic":
        return body["messages"][-1]
    return body["contents"][-1]


def expected_result(provider: str, output: str, error: bool = False) -> Any:
    call_id = CALL_IDS[provider]
    if provider == "openai_chat":
        return {"role": "tool", "tool_call_id": call_id, "content": output}
    if provider == "openai_responses":
        return {"type": "function_call_output", "call_id": call_id, "output": output}
    if provider == "anthropic":
        block: dict[str, Any] = {"type": "tool_result", "tool_use_id": call_id, "content": output}
        if error:
            block["is_error"] = True
        return {"role": "user", "content": [block]}
    response = {"error": output} if error else {"result": output}
    return {
        "role": "user",
        "parts": [{"functionResponse": {"name": "get_weather", "response": response}}],
    }


@pytest.mark.parametrize("provider", PROVIDERS)
def test_two_rounds_end_in_a_streamed_synthesis(server: ReplayServer, provider: str) -> None:
    client, url = client_for(
        server, provider, reply(provider, "tool_call.json"), reply(provider, "text.sse")
    )
    with (
        client,
        client.run_tools("Weather in Paris?", tools=[get_weather], consumer="human") as run,
    ):
        events = list(run)
    answer = run.final()
    kinds = [type(e).__name__ for e in events if not isinstance(e, TextDelta)]
    assert kinds[:2] == ["ToolCallStarted", "ToolResult"]
    started, result = events[0], events[1]
    assert isinstance(started, ToolCallStarted) and started.call.name == "get_weather"
    assert json.loads(started.call.arguments) == {"city": "Paris", "unit": "celsius"}
    assert isinstance(result, ToolResult) and result.output == "Paris: 21 degrees celsius"
    assert not result.is_error
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == TEXT
    assert answer.text == TEXT and run.stop_reason == "answered"
    assert [r.number for r in answer.rounds] == [1, 2]
    assert answer.rounds[0].results == (result,)
    assert answer.rounds[1].response.text == TEXT
    # usage: summed on the final Response, each round keeps its own
    first, second = (r.response.usage for r in answer.rounds)
    assert first.input_tokens is not None and second.input_tokens is not None
    assert answer.usage.input_tokens == first.input_tokens + second.input_tokens
    assert answer.usage.output_tokens == (first.output_tokens or 0) + (second.output_tokens or 0)
    assert answer.metrics.chunks == sum(r.response.metrics.chunks for r in answer.rounds)
    # the tool phase went out atomic, the synthesis streamed, with the result in its shape
    requests = server.requests(url)
    assert [streamed(provider, r) for r in requests] == [False, True]
    assert answer.rounds[0].response.decision is not None
    assert answer.rounds[0].response.decision.phases[0].stream is False
    assert last_result(provider, requests[1].json()) == expected_result(
        provider, "Paris: 21 degrees celsius"
    )


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_streamed_round_with_tool_calls_runs_them(server: ReplayServer, provider: str) -> None:
    client, url = client_for(
        server,
        provider,
        reply(provider, "tool_call.json"),
        reply(provider, "tool_call.sse"),
        reply(provider, "text.sse"),
    )
    with client:
        run = client.run_tools("Weather?", tools=[get_weather], consumer="human")
        events = list(run)
    answer = run.final()
    assert sum(isinstance(e, ToolResult) for e in events) == 2
    assert len(answer.rounds) == 3 and answer.text == TEXT
    assert [streamed(provider, r) for r in server.requests(url)] == [False, True, True]
    # the streamed round's tool call came from its deltas, whole
    assert answer.rounds[1].response.tool_calls[0].parsed_arguments() == {
        "city": "Paris",
        "unit": "celsius",
    }


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_tool_that_raises_gives_the_model_an_error(server: ReplayServer, provider: str) -> None:
    def get_weather(city: str, unit: str = "celsius") -> str:
        raise ValueError("station offline")

    client, url = client_for(
        server, provider, reply(provider, "tool_call.json"), reply(provider, "text.sse")
    )
    with client:
        answer = client.run_tools("Weather?", tools=[get_weather]).final()
    (result,) = answer.rounds[0].results
    assert result.is_error and isinstance(result.error, ValueError)
    assert answer.rounds[0].errors == (result.error,)
    assert result.output == "Error: the tool raised ValueError: station offline"
    sent = last_result(provider, server.requests(url)[1].json())
    if provider == "openai_chat":
        assert sent["content"] == result.output and "is_error" not in sent
    else:
        assert sent == expected_result(provider, result.output, error=True)
    assert answer.text == TEXT


@pytest.mark.parametrize("provider", PROVIDERS)
def test_invalid_arguments_are_an_error_result(server: ReplayServer, provider: str) -> None:
    ran: list[str] = []

    def get_weather(city: str, unit: Literal["kelvin"]) -> str:
        ran.append(city)
        return "never"

    client, _url = client_for(
        server, provider, reply(provider, "tool_call.json"), reply(provider, "text.sse")
    )
    with client:
        answer = client.run_tools("Weather?", tools=[get_weather]).final()
    (result,) = answer.rounds[0].results
    assert ran == []  # the function never ran on arguments that failed validation
    assert result.is_error and result.error is not None
    assert result.output.startswith("Error: invalid arguments for get_weather:")
    assert "unit" in result.output and "kelvin" in result.output
    assert answer.text == TEXT


@pytest.mark.parametrize("provider", PROVIDERS)
def test_the_round_limit_ends_the_loop(server: ReplayServer, provider: str) -> None:
    calls: list[str] = []

    def get_weather(city: str, unit: str = "celsius") -> str:
        calls.append(city)
        return "sunny"

    client, url = client_for(
        server, provider, reply(provider, "tool_call.json"), reply(provider, "tool_call.sse")
    )
    with client:
        run = client.run_tools("Weather?", tools=[get_weather], max_rounds=2, consumer="human")
        answer = run.final()
    assert run.stop_reason == "max_rounds"
    assert len(answer.rounds) == 2 and calls == ["Paris"]  # round 2's call did not run
    assert answer.finish_reason == "tool_calls" and answer.tool_calls
    assert len(server.requests(url)) == 2


SIGNATURES = {
    ("anthropic", "thinking_tool_call.json"): ("content", 0, "signature"),
    ("anthropic", "thinking_tool_call.sse"): ("content", 0, "signature"),
    ("gemini", "tool_call_signature.json"): ("parts", 0, "thoughtSignature"),
    ("openai_responses", "reasoning_tool_call.json"): ("items", 0, "encrypted_content"),
}


def recorded_turn(provider: str, name: str) -> list[Any]:
    """The assistant turn as the recording holds it (the blocks, parts or output items)."""
    if name.endswith(".sse"):
        name = name.replace(".sse", ".json")
    body = json.loads((RECORDINGS / provider / name).read_text())
    if provider == "anthropic":
        return list(body["content"])
    if provider == "gemini":
        return list(body["candidates"][0]["content"]["parts"])
    return list(body["output"])


@pytest.mark.parametrize(("provider", "name"), list(SIGNATURES))
def test_continuation_data_goes_back_byte_identical(
    server: ReplayServer, provider: str, name: str
) -> None:
    # A streamed tool round is a round after tool results (the synthesis plan streams it).
    replies = [reply(provider, name), reply(provider, "text.sse")]
    if name.endswith(".sse"):
        replies.insert(0, reply(provider, "tool_call.json"))
    client, url = client_for(server, provider, *replies)
    with client:
        answer = client.run_tools("Weather?", tools=[get_weather], consumer="human").final()
    turn = recorded_turn(provider, name)
    key, index, field = SIGNATURES[(provider, name)]
    secret = turn[index][field]
    signed = answer.rounds[-2].response
    assert signed.continuation is not None and signed.continuation[key] == turn
    body = server.requests(url)[-1]
    # the signature travels as the same bytes (json.dumps escapes '/' never, '+' and '=' never)
    assert json.dumps(secret).encode() in body.body
    sent = body.json()
    if provider == "anthropic":
        assert sent["messages"][-2] == {"role": "assistant", "content": turn}
    elif provider == "gemini":
        assert sent["contents"][-2] == {"role": "model", "parts": turn}
    else:
        assert sent["input"][-3:-1] == turn


def test_a_streamed_anthropic_turn_rebuilds_its_blocks() -> None:
    """The thinking text and signature of a streamed turn equal the atomic body's."""
    from tally_client.providers.anthropic import MessagesStreamDecoder

    decoder = MessagesStreamDecoder("anthropic")
    raw = (RECORDINGS / "anthropic" / "thinking_tool_call.sse").read_text()
    for block in raw.strip().split("\n\n"):
        event, data = (line.split(": ", 1)[1] for line in block.split("\n"))
        decoder.feed(event, data)
    assert decoder.continuation == {
        "protocol": "anthropic",
        "content": recorded_turn("anthropic", "thinking_tool_call.json"),
    }


def test_parallel_calls_run_at_once_in_threads(server: ReplayServer) -> None:
    barrier = threading.Barrier(2, timeout=10)  # only passes if both calls run together
    seen: list[str] = []

    def get_weather(city: str, unit: str = "celsius") -> str:
        barrier.wait()
        seen.append(threading.current_thread().name)
        return f"{city}: sunny"

    client, url = client_for(
        server,
        "openai_chat",
        reply("openai_chat", "tool_calls_parallel.json"),
        reply("openai_chat", "text.sse"),
    )
    with client:
        answer = client.run_tools("Paris and Rome?", tools=[get_weather]).final()
    outputs = [r.output for r in answer.rounds[0].results]
    assert outputs == ["Paris: sunny", "Rome: sunny"]  # in call order
    assert len(set(seen)) == 2
    messages = server.requests(url)[1].json()["messages"]
    assert [m["tool_call_id"] for m in messages[-2:]] == [
        "call_Qm8rT2vXbN5kLp3WzY7dHc1J",
        "call_Hx2nL7qWc4Vb9RzK3mTy8PdA",
    ]


def test_async_client_awaits_async_tools_and_threads_sync_ones(server: ReplayServer) -> None:
    loop_thread: list[int] = []
    sync_threads: list[int] = []
    both = anyio.Event()
    arrived: list[str] = []

    async def get_weather(city: str, unit: str = "celsius") -> str:
        arrived.append(city)
        if len(arrived) == 2:
            both.set()
        with anyio.fail_after(10):
            await both.wait()  # returns only if both calls run concurrently
        loop_thread.append(threading.get_ident())
        return f"{city}: sunny"

    def get_time(city: str) -> str:
        sync_threads.append(threading.get_ident())
        return "noon"

    async def main() -> Any:
        protocol, path = PROVIDERS["openai_chat"]
        url = server.add(
            [reply("openai_chat", "tool_calls_parallel.json"), reply("openai_chat", "text.sse")]
        )
        codec = load_provider(protocol, base_url=url + path, api_key="k")
        async with AsyncClient([ModelSpec("m", "p")], providers={"p": codec}) as client:
            run = client.run_tools("Paris and Rome?", tools=[get_weather, get_time])
            events = [e async for e in run]
            return events, await run.final(), threading.get_ident()

    events, answer, main_thread = anyio.run(main)
    assert [r.output for r in answer.rounds[0].results] == ["Paris: sunny", "Rome: sunny"]
    assert set(loop_thread) == {main_thread}  # async tools ran as tasks on the loop
    assert answer.text == TEXT and sum(isinstance(e, ToolResult) for e in events) == 2
    assert sync_threads == []  # get_time was never called by these recordings

    def get_weather_sync(city: str, unit: str = "celsius") -> str:
        sync_threads.append(threading.get_ident())
        return "sunny"

    async def sync_tool() -> int:
        url = server.add([reply("openai_chat", "tool_call.json"), reply("openai_chat", "text.sse")])
        codec = load_provider("openai-chat", base_url=url + "/v1", api_key="k")
        tool = tool_from_function(get_weather_sync, name="get_weather")
        async with AsyncClient([ModelSpec("m", "p")], providers={"p": codec}) as client:
            await client.run_tools("Paris?", tools=[tool]).final()
        return threading.get_ident()

    loop_ident = anyio.run(sync_tool)
    assert sync_threads and loop_ident not in sync_threads  # off the event loop


def test_tool_from_function_schema_and_description() -> None:
    tool = tool_from_function(get_weather)
    assert tool.name == "get_weather"
    assert tool.description == "Current weather for a city."
    assert tool.parameters == {
        "type": "object",
        "properties": {
            "city": {"type": "string", "description": "the city's name."},
            "unit": {
                "enum": ["celsius", "fahrenheit"],
                "type": "string",
                "default": "celsius",
                "description": "the temperature unit.",
            },
        },
        "required": ["city"],
        "additionalProperties": False,
    }
    assert tool.function is get_weather


def test_function_tools_are_sent_with_their_schema(server: ReplayServer) -> None:
    client, url = client_for(server, "openai_chat", reply("openai_chat", "text.json"))
    with client:
        client.complete("hi", tools=[get_weather, Tool("noop"), {"name": "lookup"}])
    tools = server.requests(url)[0].json()["tools"]
    assert [t["function"]["name"] for t in tools] == ["get_weather", "noop", "lookup"]
    assert tools[0]["function"]["parameters"]["required"] == ["city"]


def test_bad_tool_loop_arguments_are_configuration_errors() -> None:
    client = Client(base_url="http://127.0.0.1:9/v1")

    def variadic(*args: int) -> None: ...

    with client, pytest.raises(ConfigurationError, match="max_rounds"):
        client.run_tools("x", tools=[get_weather], max_rounds=0)
    with pytest.raises(ConfigurationError, match="no function"):
        client.run_tools("x", tools=[Tool("described_only")])
    with pytest.raises(ConfigurationError, match="needs tools"):
        client.run_tools("x")
    with pytest.raises(ConfigurationError, match=r"\*args"):
        client.run_tools("x", tools=[variadic])


def test_continuation_goes_only_to_its_own_provider() -> None:
    """An Anthropic turn sent to another provider: its blocks are ignored there, not leaked."""
    from tally_client._request import CallSpec
    from tally_client.providers.anthropic import AnthropicProvider
    from tally_client.providers.gemini import GeminiProvider
    from tally_client.providers.openai_chat import OpenAIChatProvider
    from tally_client.providers.openai_responses import OpenAIResponsesProvider

    blocks = recorded_turn("anthropic", "thinking_tool_call.json")
    turn = {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "toolu_01A9qWx3Kb7NzR4mYc2Lp8Hv",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
            }
        ],
        "continuation": {"protocol": "anthropic", "content": blocks},
    }
    result = {
        "role": "tool",
        "tool_call_id": "toolu_01A9qWx3Kb7NzR4mYc2Lp8Hv",
        "name": "get_weather",
        "content": "sunny",
        "is_error": True,
    }
    spec = CallSpec(messages=({"role": "user", "content": "Weather?"}, turn, result))
    url = "http://127.0.0.1:9"
    chat = OpenAIChatProvider(base_url=url + "/v1").build_request(spec, "m", stream=False).json
    assert chat["messages"][1] == {k: v for k, v in turn.items() if k != "continuation"}
    assert chat["messages"][2] == {
        "role": "tool",
        "tool_call_id": "toolu_01A9qWx3Kb7NzR4mYc2Lp8Hv",
        "content": "sunny",
    }
    responses = OpenAIResponsesProvider(base_url=url + "/v1").build_request(spec, "m", stream=False)
    assert responses.json["input"][1]["type"] == "function_call"
    gemini = GeminiProvider(base_url=url).build_request(spec, "m", stream=False).json
    assert gemini["contents"][1]["parts"][0]["functionCall"]["name"] == "get_weather"
    assert gemini["contents"][2]["parts"][0]["functionResponse"]["response"] == {"error": "sunny"}
    anthropic = AnthropicProvider(base_url=url).build_request(spec, "m", stream=False).json
    assert anthropic["messages"][1] == {"role": "assistant", "content": blocks}
    assert anthropic["messages"][2]["content"][0]["is_error"] is True


def test_to_message_is_the_chat_shape() -> None:
    from tally_client import Response, ToolCall

    r = Response(text="", tool_calls=(ToolCall("c1", "f", '{"a": 1}'),), continuation={"x": 1})
    assert r.to_message() == {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"a": 1}'}}
        ],
        "continuation": {"x": 1},
    }
    assert Response(text="Hi").to_message() == {"role": "assistant", "content": "Hi"}
