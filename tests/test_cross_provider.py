"""The same request gives the same Response fields whichever provider answers it.

Each provider's recordings encode the same answers (see tests/recordings/README.md); through
the public Client they must come out identical where the providers agree, and normalized where
they differ (finish reasons, usage shapes, tool-call ids).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tally_client import Client, ModelSpec, Response, RetryPolicy
from tally_client._config import load_provider
from tally_client.testing.replay import ReplayServer, Reply

RECORDINGS = Path(__file__).parent / "recordings"
TEXT = "Hello! Café au lait — a classic ☕."
# provider directory -> (protocol, path under the scenario URL)
PROVIDERS = {
    "openai_chat": ("openai-chat", "/v1"),
    "openai_responses": ("openai-responses", "/v1"),
    "anthropic": ("anthropic", ""),
    "gemini": ("gemini", "/v1beta"),
}
TOOL_ARGS = {"city": "Paris", "unit": "celsius"}
LENGTH_FILE = {"openai_responses": "incomplete"}


@pytest.fixture(scope="module")
def server() -> Iterator[ReplayServer]:
    with ReplayServer() as srv:
        yield srv


def call(server: ReplayServer, provider: str, recording: str, *, stream: bool) -> Response:
    protocol, path = PROVIDERS[provider]
    url = server.add(Reply.from_file(RECORDINGS / provider / recording))
    codec = load_provider(protocol, base_url=url + path, api_key="test-key")
    client = Client([ModelSpec("m", "p")], providers={"p": codec}, retry=RetryPolicy(1))
    with client:
        return client.stream("hi").final() if stream else client.complete("hi")


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "atomic"])
@pytest.mark.parametrize("provider", PROVIDERS)
def test_text_answer(server: ReplayServer, provider: str, stream: bool) -> None:
    r = call(server, provider, "text.sse" if stream else "text.json", stream=stream)
    assert r.text == TEXT
    assert r.state == "complete"
    assert r.finish_reason == "stop"
    assert r.tool_calls == ()
    assert r.usage.reported
    assert r.usage.input_tokens is not None
    assert r.usage.output_tokens is not None and r.usage.output_tokens > 0
    assert r.usage.total_tokens == r.usage.input_tokens + r.usage.output_tokens
    assert r.provider in ("openai-compatible", "anthropic", "gemini")  # a non-OpenAI host
    assert r.model
    assert len(r.attempts) == 1


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "atomic"])
@pytest.mark.parametrize("provider", PROVIDERS)
def test_tool_call(server: ReplayServer, provider: str, stream: bool) -> None:
    r = call(server, provider, "tool_call.sse" if stream else "tool_call.json", stream=stream)
    assert r.state == "complete"
    assert r.finish_reason == "tool_calls"
    assert [c.name for c in r.tool_calls] == ["get_weather"]
    assert r.tool_calls[0].parsed_arguments() == TOOL_ARGS
    assert r.tool_calls[0].id


@pytest.mark.parametrize("provider", PROVIDERS)
def test_length_stop_is_complete_with_finish_reason_length(
    server: ReplayServer, provider: str
) -> None:
    r = call(server, provider, LENGTH_FILE.get(provider, "length") + ".sse", stream=True)
    assert r.text == "The history of the Roman Empire spans more"
    assert r.finish_reason == "length"
    assert r.state == "complete"  # a length stop is finished, not partial


@pytest.mark.parametrize("provider", PROVIDERS)
def test_clean_cut_is_partial_everywhere(server: ReplayServer, provider: str) -> None:
    protocol, path = PROVIDERS[provider]
    reply = Reply.from_file(RECORDINGS / provider / "text.sse")
    url = server.add(reply.replace(cut_after=reply.offset_after_event(2)))
    codec = load_provider(protocol, base_url=url + path, api_key="test-key")
    with Client([ModelSpec("m", "p")], providers={"p": codec}, retry=RetryPolicy(1)) as client:
        r = client.stream("hi").final()
    assert r.state == "partial"
    assert TEXT.startswith(r.text)
    assert r.finish_reason is None
