"""Structured output against a real llama-server (grammar-constrained JSON schemas)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Annotated, Any

import anyio
import pytest
from pydantic import BaseModel, Field

import tally_client
from tally_client import AsyncClient, Client, StructuredOutputError
from tally_client.testing.llama import LlamaServer

pytestmark = pytest.mark.live

PROMPT = "Maria Lopez, 34, lives in Seville. As JSON with name, age and city."


class Person(BaseModel):
    name: str
    age: int
    city: str


@pytest.fixture
def client(llama: LlamaServer) -> Iterator[Client]:
    with Client(base_url=llama.base_url) as c:
        yield c


def test_atomic_person_is_validated(client: Client) -> None:
    r = client.complete(PROMPT, schema=Person, max_tokens=60, temperature=0)
    assert r.complete and isinstance(r.parsed, Person)
    assert r.parsed == Person.model_validate_json(r.text)
    assert r.decision is not None and r.decision.stream is False


def test_streamed_person_grows_then_validates(client: Client) -> None:
    with client.stream(PROMPT, schema=Person, max_tokens=60, temperature=0) as stream:
        partials = [json.loads(json.dumps(p)) for p in stream.partial_objects()]
    person = stream.final().parsed
    assert isinstance(person, Person)
    assert len(partials) >= 2  # the object grew while it streamed
    assert all(isinstance(p, dict) for p in partials)
    assert set(partials[0]) <= set(partials[-1]) <= {"name", "age", "city"}
    assert partials[-1] == person.model_dump()


# A small model repeats list items until max_tokens; `maxItems` (which llama-server's grammar
# enforces) lets the list end. The type is still a list of Person models.
TwoPeople = Annotated[list[Person], Field(min_length=1, max_length=2)]


def test_list_of_people(client: Client) -> None:
    r = client.complete(
        "Two people: Ann, 30, Oslo; Bo, 40, Rome. As a JSON list.",
        schema=TwoPeople,
        max_tokens=120,
        temperature=0,
    )
    assert isinstance(r.parsed, list) and 1 <= len(r.parsed) <= 2
    assert all(isinstance(p, Person) for p in r.parsed)


def test_dict_schema(client: Client) -> None:
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string"}, "country": {"type": "string"}},
        "required": ["city", "country"],
        "additionalProperties": False,
    }
    r = client.complete("Capital of France, as JSON.", schema=schema, max_tokens=60, temperature=0)
    assert isinstance(r.parsed, dict) and set(r.parsed) == {"city", "country"}
    assert all(isinstance(v, str) for v in r.parsed.values())


def test_a_truncated_answer_is_reported_with_its_partial_object(client: Client) -> None:
    with pytest.raises(StructuredOutputError) as info:
        client.complete(PROMPT, schema=Person, max_tokens=6, temperature=0)
    err = info.value
    assert err.truncated and err.response.finish_reason == "length"
    assert err.raw_text and err.raw_text.lstrip().startswith("{")
    assert isinstance(err.partial, dict)  # what the tolerant parser read before the cut
    assert set(err.partial) <= {"name", "age", "city"}


def test_async_streamed_list(llama: LlamaServer) -> None:
    async def main() -> tuple[int, Any]:
        async with AsyncClient(base_url=llama.base_url) as client:
            async with client.stream(
                "Two people as a JSON list.", schema=TwoPeople, max_tokens=120, temperature=0
            ) as stream:
                count = len([p async for p in stream.partial_objects()])
            return count, (await stream.final()).parsed

    count, people = anyio.run(main)
    assert count >= 2 and people and all(isinstance(p, Person) for p in people)


def test_extract_helper(llama: LlamaServer, monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY", "GOOGLE_API_KEY"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("TALLY_LOCAL_BASE_URL", llama.base_url)
    monkeypatch.setattr(tally_client, "_default_client", None)
    person = tally_client.extract(PROMPT, Person, max_tokens=60, temperature=0)
    assert isinstance(person, Person)
    default = tally_client._default_client
    assert default is not None
    default.close()
