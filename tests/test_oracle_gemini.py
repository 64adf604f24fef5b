"""Oracle: for the same recorded bytes, our Gemini parse equals google-genai's.

Every recording in tests/recordings/gemini (and a clean early cut of the text stream) is
served by the ReplayServer twice per API version: once to `google.genai.Client` (streams via
`models.generate_content_stream`, bodies via `models.generate_content`) and once to our public
`Client` with `protocol="gemini"`. Both must see the same text, thinking, tool calls (name and
arguments), usage (input, output, total) and finish reason (our normalized value against the
SDK's raw enum), and must call the same URL path. For the in-stream error event both sides
must fail: the SDK with `google.genai.errors.ServerError` (code 503), we with
`OverloadedError` (status 503, retryable), after the same text.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tally_client import Client, OverloadedError, RetryPolicy
from tally_client.testing import ReplayServer, Reply

REC = Path(__file__).parent / "recordings" / "gemini"
MODEL = "gemini-2.5-flash"
VERSIONS = ("v1", "v1beta")


def _cut_text() -> Reply:
    reply = Reply.from_file(REC / "text.sse")
    return reply.replace(cut_after=reply.offset_after_event(2), cut="clean")


CASES: dict[str, Reply] = {p.name: Reply.from_file(p) for p in sorted(REC.glob("*.*"))}
CASES["text.sse (cut after 2 events)"] = _cut_text()

# Our normalization of the raw reasons these recordings carry, written out independently of
# the module's table: STOP after a function call means tool_calls (Gemini has no tool reason).
NORMALIZED = {"STOP": "stop", "MAX_TOKENS": "length", "SAFETY": "content_filter"}


@dataclass
class Parse:
    """What one side made of a recording."""

    text: str = ""
    thinking: str = ""
    calls: list[tuple[str, Any]] = field(default_factory=list)
    input_tokens: int | None = None
    output_tokens: int | None = None
    total_tokens: int | None = None
    raw_finish: str | None = None
    error_code: int | None = None


def test_every_recording_is_covered() -> None:
    names = {p.name for p in REC.iterdir()}
    assert names <= set(CASES)
    assert {"text.sse", "text.json", "tool_call.sse", "tool_call.json", "error_event.sse"} <= names


@pytest.fixture(scope="module")
def server() -> Iterator[ReplayServer]:
    with ReplayServer() as srv:
        yield srv


def sdk_parse(url: str, version: str, streamed: bool) -> Parse:
    from google import genai
    from google.genai import errors, types

    client = genai.Client(
        api_key="test",
        http_options=types.HttpOptions(base_url=url + "/", api_version=version, timeout=5000),
    )
    out = Parse()
    chunks: list[Any] = []
    try:
        if streamed:
            for chunk in client.models.generate_content_stream(model=MODEL, contents="Hi"):
                chunks.append(chunk)
        else:
            chunks.append(client.models.generate_content(model=MODEL, contents="Hi"))
    except errors.APIError as exc:
        out.error_code = exc.code
    for chunk in chunks:
        if chunk.candidates:
            candidate = chunk.candidates[0]
            for part in (candidate.content.parts if candidate.content else None) or ():
                if part.text and part.thought:
                    out.thinking += part.text
                elif part.text:
                    out.text += part.text
                if part.function_call is not None:
                    out.calls.append((part.function_call.name, part.function_call.args or {}))
            if candidate.finish_reason is not None:
                out.raw_finish = candidate.finish_reason.value
        elif chunk.prompt_feedback is not None and chunk.prompt_feedback.block_reason:
            out.raw_finish = chunk.prompt_feedback.block_reason.value
        usage = chunk.usage_metadata
        if usage is not None:  # a running total: the last one wins
            prompt, tool_prompt = usage.prompt_token_count, usage.tool_use_prompt_token_count
            out.input_tokens = None if prompt is None else prompt + (tool_prompt or 0)
            outputs = [usage.candidates_token_count, usage.thoughts_token_count]
            present = [n for n in outputs if n is not None]
            out.output_tokens = sum(present) if present else None
            out.total_tokens = usage.total_token_count
    return out


def our_parse(url: str, version: str, streamed: bool) -> tuple[Parse, str]:
    out = Parse()
    failure: OverloadedError | None = None
    with Client(
        base_url=f"{url}/{version}",
        api_key="test",
        protocol="gemini",
        model=MODEL,
        retry=RetryPolicy(max_attempts=1),
    ) as client:
        try:
            response = client.stream("Hi").final() if streamed else client.complete("Hi")
        except OverloadedError as exc:
            failure = exc
    if failure is not None:
        assert failure.retryable and failure.in_stream
        assert failure.partial is not None
        response = failure.partial
        out.error_code = failure.status_code
    out.text = response.text
    out.thinking = response.thinking
    out.calls = [(c.name, c.parsed_arguments()) for c in response.tool_calls]
    out.input_tokens = response.usage.input_tokens
    out.output_tokens = response.usage.output_tokens
    out.total_tokens = response.usage.total_tokens
    out.raw_finish = response.raw_finish_reason
    return out, response.finish_reason or "none"


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("case", list(CASES))
def test_same_parse_as_google_genai(server: ReplayServer, case: str, version: str) -> None:
    reply = CASES[case]
    streamed = reply.resolved_content_type == "text/event-stream"
    sdk_url = server.add(reply)
    our_url = server.add(reply)

    theirs = sdk_parse(sdk_url, version, streamed)
    ours, normalized = our_parse(our_url, version, streamed)

    assert ours == theirs
    # Our normalized finish reason against the SDK's raw one.
    if theirs.raw_finish is None:
        assert normalized == "none"  # no finish chunk: partial (or failed) on both sides
    elif theirs.calls and theirs.raw_finish == "STOP":
        assert normalized == "tool_calls"
    else:
        assert normalized == NORMALIZED[theirs.raw_finish]
    if case == "error_event.sse":
        assert theirs.error_code == 503 and theirs.text == "The answer is"
    # Both called the same endpoint on the chosen API version.
    (sdk_request,) = server.requests(sdk_url)
    (our_request,) = server.requests(our_url)
    assert our_request.path == sdk_request.path
    assert our_request.path.startswith(f"/{version}/models/{MODEL}:")
    assert (our_request.query == "alt=sse") is streamed
    assert sdk_request.query == our_request.query


def test_sdk_and_we_send_the_same_request_shape(server: ReplayServer) -> None:
    """Our request body for a system prompt + schema matches the fields google-genai sends."""
    from google import genai
    from google.genai import types

    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    body = {
        "candidates": [{"content": {"parts": [{"text": '{"a": "x"}'}]}, "finishReason": "STOP"}]
    }
    sdk_url = server.add(Reply.json(body))
    our_url = server.add(Reply.json(body))
    sdk = genai.Client(  # keep a reference: a collected Client closes its HTTP pool
        api_key="test",
        http_options=types.HttpOptions(base_url=sdk_url + "/", api_version="v1beta", timeout=5000),
    )
    sdk.models.generate_content(
        model=MODEL,
        contents="Hi",
        config=types.GenerateContentConfig(
            system_instruction="Be brief.",
            max_output_tokens=20,
            temperature=0.5,
            response_mime_type="application/json",
            response_json_schema=schema,
        ),
    )
    with Client(
        base_url=f"{our_url}/v1beta", api_key="test", protocol="gemini", model=MODEL
    ) as client:
        response = client.complete(
            "Hi", system="Be brief.", max_tokens=20, temperature=0.5, schema=schema
        )
    assert response.parsed == {"a": "x"}
    theirs = json.loads(server.requests(sdk_url)[0].body)
    ours = json.loads(server.requests(our_url)[0].body)
    assert ours["contents"] == theirs["contents"]
    assert ours["generationConfig"] == theirs["generationConfig"]
    assert ours["systemInstruction"]["parts"] == theirs["systemInstruction"]["parts"]
