"""build_envelope derives the shape of a call and keeps no content."""

from __future__ import annotations

import json

import pytest

from tally_client import ConfigurationError, build_envelope
from tally_client._envelope import context_bucket

SECRET = "the launch code is 0000-PLUTO"


def test_envelope_holds_no_prompt_text() -> None:
    messages = [
        {"role": "system", "content": "Be terse."},
        {"role": "user", "content": SECRET * 100},
    ]
    envelope = build_envelope(messages, consumer="human")
    wire = json.dumps(envelope.to_wire())
    assert "PLUTO" not in wire and "terse" not in wire and "PLUTO" not in repr(envelope)
    assert envelope.context_tokens == (len("Be terse.") + len(SECRET) * 100) // 4


@pytest.mark.parametrize(
    ("tokens", "bucket"),
    [
        (0, "short"),
        (1_999, "short"),
        (2_000, "medium"),
        (7_999, "medium"),
        (8_000, "long"),
        (32_000, "extended"),
    ],
)
def test_context_buckets(tokens: int, bucket: str) -> None:
    assert context_bucket(tokens) == bucket


def test_derivations() -> None:
    assert build_envelope(schema={"type": "object"}).structure_type == "json"
    assert build_envelope().structure_type == "prose"
    assert build_envelope(max_tokens=300).expected_output_tokens == 300
    assert build_envelope(max_tokens=300, expected_output_tokens=50).expected_output_tokens == 50
    tools = [{"name": "a"}, {"name": "b"}]
    with_tools = build_envelope([{"role": "user", "content": "x"}], tools=tools)
    assert (with_tools.tools_used, with_tools.phase) == (2, "tool")
    assert build_envelope().phase is None


def test_wire_shape_matches_the_hosted_router_fields() -> None:
    wire = build_envelope(
        task_type="qa-simple", expected_output_tokens=3000, tools=[{}], time_sensitive=True
    ).to_wire()
    assert wire["protocol_version"] == "2"
    assert wire["estimated_tokens"] == "2k-8k"
    assert wire["tools_used"] == 1 and wire["time_sensitive"] is True
    assert wire["context_length"] == "short" and wire["structure_type"] == "prose"


def test_bad_values_raise_a_clear_error() -> None:
    with pytest.raises(ConfigurationError, match="structure_type must be one of"):
        build_envelope(structure_type="yaml")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="consumer must be one of"):
        build_envelope(consumer="robot")  # type: ignore[arg-type]
