"""Structured output: schema types in, strict validation, native request shapes, partial objects.

Replays (byte-exact recorded streams) and property tests; the live model is in
test_live_structured.py.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, assert_type

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel
from typing_extensions import TypedDict  # pydantic needs it before Python 3.12

from tally_client import (
    AsyncClient,
    Client,
    ConfigurationError,
    ModelSpec,
    PartialJSON,
    RetryPolicy,
    StructuredOutputError,
    parse_partial_json,
)
from tally_client._config import load_provider
from tally_client._output import output_spec, strict_schema
from tally_client._partial import extract_json
from tally_client.testing.replay import ReplayServer, Reply

RECORDINGS = Path(__file__).parent / "recordings"


class Person(BaseModel):
    name: str
    age: int
    city: str


class Pet(BaseModel):
    name: str
    owner: Person | None = None


@dataclasses.dataclass
class Point:
    x: int
    y: int


class Movie(TypedDict):
    title: str
    year: int


PEOPLE = [
    Person(name="Maria López", age=34, city="Seville"),
    Person(name='Kenji "Ken" Sato', age=41, city="Ōsaka"),
    Person(name="Ada Obi", age=29, city="Lagos"),
]


@pytest.fixture(scope="module")
def server() -> Iterator[ReplayServer]:
    with ReplayServer() as srv:
        yield srv


def chat_body(content: str, finish: str = "stop") -> dict[str, Any]:
    body = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": "m",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": finish,
            }
        ],
        "usage": {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12},
    }
    return body


def chat_client(server: ReplayServer, *replies: Reply) -> tuple[Client, str]:
    url = server.add(list(replies))
    return Client(base_url=url + "/v1", retry=RetryPolicy(1)), url


# -- output specs: schema types in, strict validation -----------------------------------------


@pytest.mark.parametrize(
    ("schema", "text", "value"),
    [
        (
            Person,
            '{"name": "Ann", "age": 3, "city": "Oslo"}',
            Person(name="Ann", age=3, city="Oslo"),
        ),
        (Point, '{"x": 1, "y": 2}', Point(1, 2)),
        (Movie, '{"title": "Up", "year": 2009}', {"title": "Up", "year": 2009}),
        (
            list[Person],
            '[{"name": "Ann", "age": 3, "city": "Oslo"}]',
            [Person(name="Ann", age=3, city="Oslo")],
        ),
        (Pet, '{"name": "Rex", "owner": null}', Pet(name="Rex")),
        (Person | None, "null", None),
        ({"type": "object", "required": ["a"]}, '{"a": [1]}', {"a": [1]}),
        ({"type": ["object", "null"]}, "null", None),
        (int, "42", 42),
    ],
)
def test_schemas_validate_their_values(schema: Any, text: str, value: Any) -> None:
    spec = output_spec(schema)
    assert spec.json_schema  # what goes on the wire
    assert spec.validate(text) == (True, value, ())


@pytest.mark.parametrize(
    ("schema", "text", "error"),
    [
        (Person, '{"town": 5}', "name: Field required"),
        (Person, '{"name": "A", "age": "34", "city": "B"}', "age: Input should be a valid integer"),
        ({"type": "object", "required": ["city"]}, '{"town": 5}', "'city' is a required property"),
        ({"type": "object"}, "null", "None is not of type 'object'"),
        (Person, "I cannot answer that.", "no complete JSON document"),
        (Person, '{"name": "A", "age": 3', "no complete JSON document"),
    ],
)
def test_invalid_values_give_readable_errors(schema: Any, text: str, error: str) -> None:
    valid, value, errors = output_spec(schema).validate(text)
    assert not valid and value is None
    assert any(error in e for e in errors), errors


def test_fences_and_prose_around_the_json_are_tolerated() -> None:
    spec = output_spec(Person)
    wrapped = (
        'Sure! Here it is:\n```json\n{"name": "Ann", "age": 3, "city": "Oslo"}\n```\nAnything else?'
    )
    assert spec.validate(wrapped)[1] == Person(name="Ann", age=3, city="Oslo")
    # a digit in the prose does not pass for the document when the root is an object
    assert spec.validate('3 people? No, 1: {"name": "A", "age": 1, "city": "B"}')[0]


def test_bad_schemas_are_configuration_errors() -> None:
    with pytest.raises(ConfigurationError, match="TypeAdapter"):
        output_spec(object())
    with pytest.raises(ConfigurationError, match="not a valid JSON Schema"):
        output_spec({"type": "no-such-type"})


def test_strict_schema_where_the_schema_allows() -> None:
    closed, strict = strict_schema(output_spec(list[Person]).json_schema)
    assert strict
    assert closed["$defs"]["Person"]["additionalProperties"] is False
    _, strict = strict_schema(output_spec(Pet).json_schema)
    assert not strict  # `owner` has a default: not every property is required


# -- native request shapes --------------------------------------------------------------------

SHAPES = {
    "openai-chat": ("/v1", "openai_chat/text.json"),
    "openai-responses": ("/v1", "openai_responses/text.json"),
    "anthropic": ("", "anthropic/text.json"),
    "gemini": ("/v1beta", "gemini/text.json"),
}


@pytest.mark.parametrize("protocol", SHAPES)
def test_each_provider_gets_its_native_shape(server: ReplayServer, protocol: str) -> None:
    path, recording = SHAPES[protocol]
    url = server.add(Reply.from_file(RECORDINGS / recording))
    codec = load_provider(protocol, base_url=url + path, api_key="k")
    client = Client([ModelSpec("m", "p")], providers={"p": codec}, retry=RetryPolicy(1))
    with client, pytest.raises(StructuredOutputError):  # the recorded answer is prose
        client.complete("Ann, 3, Oslo.", schema=Person)
    body = server.requests(url)[0].json()
    closed = {**Person.model_json_schema(), "additionalProperties": False}
    if protocol == "openai-chat":
        assert body["response_format"] == {
            "type": "json_schema",
            "json_schema": {"name": "Person", "schema": closed, "strict": True},
        }
    elif protocol == "openai-responses":
        assert body["text"] == {
            "format": {"type": "json_schema", "name": "Person", "schema": closed, "strict": True}
        }
    elif protocol == "anthropic":
        assert body["output_config"] == {"format": {"type": "json_schema", "schema": closed}}
    else:
        assert body["generationConfig"] == {
            "responseMimeType": "application/json",
            "responseJsonSchema": Person.model_json_schema(),
        }


def test_prompt_fallback_puts_the_schema_in_a_system_message(server: ReplayServer) -> None:
    client, url = chat_client(
        server, Reply.json(chat_body('```json\n{"name": "Ann", "age": 3, "city": "Oslo"}\n```'))
    )
    with client:
        r = client.complete("Ann, 3, Oslo.", schema=Person, schema_mode="prompt")
    assert r.parsed == Person(name="Ann", age=3, city="Oslo")
    body = server.requests(url)[0].json()
    assert "response_format" not in body
    system = body["messages"][0]
    assert (
        system["role"] == "system" and json.dumps(Person.model_json_schema()) in system["content"]
    )


# -- the final value and its failures, over replays --------------------------------------------


def test_atomic_value_is_validated_and_typed(server: ReplayServer) -> None:
    client, _ = chat_client(
        server, Reply.json(chat_body('{"name": "Ann", "age": 3, "city": "Oslo"}'))
    )
    with client:
        r = client.complete("Ann.", schema=Person)
    assert r.parsed == Person(name="Ann", age=3, city="Oslo")
    assert isinstance(r.parsed, Person)
    assert_type(r.parsed, Person)  # checked by mypy: Response is generic in the schema type


def test_a_value_that_fails_validation_raises_with_everything(server: ReplayServer) -> None:
    client, _ = chat_client(server, Reply.json(chat_body('{"town": 5}')))
    with client, pytest.raises(StructuredOutputError) as info:
        client.complete("Ann.", schema={"type": "object", "required": ["city"]})
    err = info.value
    assert err.raw_text == '{"town": 5}' and err.response.text == err.raw_text
    assert err.errors == ("(root): 'city' is a required property",)
    assert not err.truncated and err.partial == {"town": 5}
    assert err.response.usage.output_tokens == 7


def test_json_null_is_a_valid_answer_where_allowed(server: ReplayServer) -> None:
    client, _ = chat_client(server, Reply.json(chat_body("null")))
    with client:
        r = client.complete("Anyone?", schema=Person | None)
    assert r.parsed is None and r.complete


def test_streamed_partial_objects_grow_and_the_final_is_validated(server: ReplayServer) -> None:
    client, _ = chat_client(server, Reply.from_file(RECORDINGS / "openai_chat/structured.sse"))
    with client, client.stream("Three people.", schema=list[Person]) as stream:
        partials = [json.dumps(p) for p in stream.partial_objects()]  # snapshots
    people = stream.final().parsed
    assert_type(people, list[Person])
    assert people == PEOPLE
    assert len(partials) >= 3  # deltas in a burst are parsed together (PartialObjects)
    values = [json.loads(p) for p in partials]
    for before, after in itertools.pairwise(values):
        assert is_prefix(before, after)  # only ever grow
    assert values[-1] == [p.model_dump() for p in PEOPLE]


def test_a_long_burst_costs_few_parses_and_its_values_still_grow(server: ReplayServer) -> None:
    # 2,000 people (about 120 KB) in 8-character deltas, written as fast as the socket takes
    # them: a burst. The amount held grows with the text, so the partial values number a few
    # dozen (not one per 64 characters), each a growing prefix of the final value.
    people = [{"name": f"P{i}", "age": i % 90, "city": 'Lima "centro"'} for i in range(2000)]
    text = json.dumps(people)
    head = '{"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":'
    events = [
        f'data: {head}[{{"index":0,"delta":{{"content":{json.dumps(text[i : i + 8])}}},'
        '"finish_reason":null}]}\n\n'
        for i in range(0, len(text), 8)
    ]
    events.append(f'data: {head}[{{"index":0,"delta":{{}},"finish_reason":"stop"}}]}}\n\n')
    events.append("data: [DONE]\n\n")
    client, _ = chat_client(server, Reply("".join(events).encode()))
    with client, client.stream("People.", schema=list[Person]) as stream:
        partials = [json.dumps(p) for p in stream.partial_objects()]
    assert [p.model_dump() for p in stream.final().parsed] == people
    assert 3 <= len(partials) <= 200  # len(text) / 64 would be about 1,900
    values = [json.loads(p) for p in partials]
    for before, after in itertools.pairwise(values):
        assert is_prefix(before, after)
    assert values[-1] == people


def test_a_length_cut_says_so_and_keeps_the_last_partial(server: ReplayServer) -> None:
    client, _ = chat_client(
        server, Reply.from_file(RECORDINGS / "openai_chat/structured_length.sse")
    )
    with client, client.stream("Three people.", schema=list[Person]) as stream:
        last = None
        for partial in stream.partial_objects():
            last = json.loads(json.dumps(partial))
        with pytest.raises(StructuredOutputError, match="token limit") as info:
            stream.final()
    err = info.value
    assert err.truncated and err.response.finish_reason == "length"
    assert err.partial == [PEOPLE[0].model_dump(), {"name": "Kenj"}]
    assert last is not None and is_prefix(last, err.partial)


def test_partial_objects_start_over_after_a_retry(server: ReplayServer) -> None:
    # The first attempt breaks after some output; the retry's text starts from the beginning,
    # so the parser starts over.
    body = (RECORDINGS / "openai_chat/structured.sse").read_bytes()
    url = server.add([Reply(body, cut_after=len(body) // 2, cut="reset"), Reply(body)])
    with Client(base_url=url + "/v1", retry=RetryPolicy(2, initial_delay=0.01)) as client:
        with client.stream("Three people.", schema=list[Person]) as stream:
            values = [json.loads(json.dumps(p)) for p in stream.partial_objects()]
        assert stream.final().parsed == PEOPLE
    # Both attempts send the same text, so every value is a prefix of the final one; a parser
    # that went on after the Reset would read the retry's `[{"name"...` mid-document and fail.
    final = [p.model_dump() for p in PEOPLE]
    assert all(is_prefix(v, final) for v in values)
    assert values[-1] == final


def test_async_partial_objects(server: ReplayServer) -> None:
    url = server.add(Reply.from_file(RECORDINGS / "openai_chat/structured.sse"))

    async def main() -> tuple[list[Any], list[Person]]:
        async with AsyncClient(base_url=url + "/v1") as client:
            async with client.stream("Three people.", schema=list[Person]) as stream:
                seen = [json.loads(json.dumps(p)) async for p in stream.partial_objects()]
            return seen, (await stream.final()).parsed

    seen, people = anyio.run(main)
    assert people == PEOPLE and len(seen) >= 3
    assert seen[-1] == [p.model_dump() for p in PEOPLE]


# -- the tolerant parser: prefixes of recorded and generated JSON ------------------------------


def is_prefix(partial: Any, final: Any) -> bool:
    """A partial value is a growing prefix of the final one (strings, lists, objects)."""
    if isinstance(final, str):
        return isinstance(partial, str) and final.startswith(partial)
    if isinstance(final, list):
        return (
            isinstance(partial, list)
            and len(partial) <= len(final)
            and all(is_prefix(p, f) for p, f in zip(partial, final, strict=False))
        )
    if isinstance(final, dict):
        return (
            isinstance(partial, dict)
            and set(partial) <= set(final)
            and all(is_prefix(v, final[k]) for k, v in partial.items())
        )
    return bool(partial == final)


def check_every_prefix(text: str, final: Any) -> None:
    for end in range(len(text)):
        parser = PartialJSON()
        parser.feed(text[:end])
        assert not parser.failed
        value = parser.value(exact=True)
        assert not parser.done  # a prefix never passes for the whole document
        assert value is None or is_prefix(value, final), (text[:end], value)
    whole = PartialJSON()
    for i in range(0, len(text), 3):
        whole.feed(text[i : i + 3])
    whole.finish()
    assert whole.done and whole.value() == final == json.loads(text)


def recorded_answers() -> list[str]:
    """JSON the recordings hold: tool-call arguments and structured answers."""
    texts: list[str] = []
    for path in sorted(RECORDINGS.glob("*/*.json")):
        body = json.loads(path.read_text())
        for call in body.get("choices", [{}])[0].get("message", {}).get("tool_calls") or ():
            texts.append(call["function"]["arguments"])
        for item in body.get("output", ()):
            if item.get("type") == "function_call":
                texts.append(item["arguments"])
    # the answer structured.sse streams (inside a fence)
    texts.append(json.dumps([p.model_dump() for p in PEOPLE], ensure_ascii=False, indent=2))
    return texts


@pytest.mark.parametrize("text", recorded_answers())
def test_every_prefix_of_recorded_answers(text: str) -> None:
    check_every_prefix(text, json.loads(text))


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=150, deadline=None)
@given(value=json_values, indent=st.sampled_from([None, 2]), ascii_=st.booleans())
def test_every_prefix_of_generated_json(value: Any, indent: int | None, ascii_: bool) -> None:
    text = json.dumps(value, indent=indent, ensure_ascii=ascii_)
    if not isinstance(value, dict | list):
        text = json.dumps([value], indent=indent, ensure_ascii=ascii_)  # a container root
        value = [value]
    check_every_prefix(text, value)


@settings(max_examples=100, deadline=None)
@given(value=json_values, cuts=st.lists(st.integers(1, 9), min_size=1, max_size=30))
def test_any_split_gives_the_strict_parse(value: Any, cuts: list[int]) -> None:
    text = "```json\n" + json.dumps({"v": value}) + "\n```\n"
    parser = PartialJSON(scalar_root=False)
    i = 0
    for n in cuts * (len(text) // max(1, sum(cuts)) + 1):
        parser.feed(text[i : i + n])
        i += n
        if i >= len(text):
            break
    parser.finish()
    found = extract_json(text)
    assert found is not None and parser.value() == found[0] == {"v": value}


def test_malformed_json_never_raises() -> None:
    parser = PartialJSON()
    assert parser.feed('{"a": [1, 2}') is True  # the value grew before the bad character
    assert parser.failed and parser.value() == {"a": [1, 2]}
    assert parser.feed("more") is False
    assert parse_partial_json("no JSON here") is None
    assert parse_partial_json('{"city": "Paris", "unit"') == {"city": "Paris"}


def test_an_integer_past_pythons_digit_limit_is_malformed_not_raised() -> None:
    # json refuses integers over 4,300 digits (a ValueError); a model stuck repeating digits
    # must not crash partial_objects(): the value so far stays, marked failed.
    digits = "9" * 5_000
    assert parse_partial_json("[" + digits + "]") == []
    parser = PartialJSON()
    parser.feed('{"a": 1, "b": ' + digits + ', "c": 2}')
    assert parser.failed and parser.value() == {"a": 1}
    parser = PartialJSON()
    parser.feed('{"a": 1, "b": ' + digits)  # the number may go on ...
    assert not parser.failed
    parser.finish()  # ... until the text ends
    assert parser.failed and parser.value() == {"a": 1}


def test_nesting_deeper_than_the_c_scanner_never_raises() -> None:
    # Complete containers are read by json's C scanner, which recurses: a document nested
    # past the recursion limit goes back to the character loop (once, not once per level).
    depth = 20_000
    value = parse_partial_json("[" * depth + "1" + "]" * depth)
    for _ in range(depth):
        assert type(value) is list and len(value) == 1
        value = value[0]
    assert value == 1
    parser = PartialJSON()
    parser.feed('{"a": ' + "[" * depth)
    assert parser.value() is not None and not parser.failed


def test_tool_call_arguments_grow_as_they_stream(server: ReplayServer) -> None:
    """Anthropic streams tool input as input_json_delta fragments; the same parser reads them."""
    from tally_client import PartialToolCalls

    url = server.add(Reply.from_file(RECORDINGS / "anthropic/tool_call.sse", split=[7]))
    codec = load_provider("anthropic", base_url=url, api_key="k")
    seen: list[Any] = []
    calls = PartialToolCalls()
    with Client([ModelSpec("m", "p")], providers={"p": codec}) as client:
        with client.stream("Weather?") as stream:
            for event in stream:
                if calls.add(event):
                    seen.append(json.loads(json.dumps(calls.calls[-1].arguments)))
        final = stream.final().tool_calls[0]
    (call,) = calls.calls
    assert (
        (call.id, call.name)
        == (final.id, final.name)
        == ("toolu_01T1x1fJ34qAmk2tNTrN7Up6", "get_weather")
    )
    assert seen[0] is None  # the call appeared before its arguments
    assert {"city": "P"} in seen  # a string grows while it streams
    assert (
        seen[-1]
        == call.arguments
        == final.parsed_arguments()
        == {"city": "Paris", "unit": "celsius"}
    )
    grown = [s for s in seen if s is not None]
    assert all(is_prefix(a, b) for a, b in itertools.pairwise(grown))


def test_the_learner_hears_whether_the_output_matched(server: ReplayServer) -> None:
    """A valid structured answer counts as a success for the router, a mismatch as a failure."""
    from tally_client import EmbeddedRouter

    class Recording(EmbeddedRouter):
        def __init__(self) -> None:
            super().__init__(learning=False)
            self.successes: list[float] = []

        def record(self, decision: Any, outcome: Any, envelope: Any = None) -> None:
            self.successes.append(outcome.success)

    router = Recording()
    url = server.add(
        [
            Reply.json(chat_body('{"name": "Ann", "age": 3, "city": "Oslo"}')),
            Reply.json(chat_body('{"town": 5}')),
        ]
    )
    with Client(base_url=url + "/v1", router=router, retry=RetryPolicy(1)) as client:
        assert client.complete("Ann.", schema=Person).parsed == Person(
            name="Ann", age=3, city="Oslo"
        )
        with pytest.raises(StructuredOutputError):
            client.complete("Ann.", schema=Person)
    assert router.successes == [1.0, 0.0]
