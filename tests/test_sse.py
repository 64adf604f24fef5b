"""Our SSE decoder against the WHATWG rules and, where they agree, against httpx-sse."""

from __future__ import annotations

import httpx
from httpx_sse import EventSource
from hypothesis import given, settings
from hypothesis import strategies as st

from tally_client._sse import SSEDecoder


def decode(chunks: list[bytes]) -> list[tuple[str, str]]:
    decoder = SSEDecoder()
    out: list[tuple[str, str]] = []
    for chunk in chunks:
        out.extend(decoder.feed(chunk))
    out.extend(decoder.end())
    return out


def split(body: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(body) + 1) for c in cuts})
    pieces, last = [], 0
    for point in points:
        pieces.append(body[last:point])
        last = point
    pieces.append(body[last:])
    return pieces


def test_fields_comments_and_defaults() -> None:
    body = (
        b": keep-alive\n\n"
        b"data: one\n\n"
        b"event: delta\ndata: a\ndata:b\ndata\n\n"
        b"id: 7\nretry: 1500\ndata: x\n\n"
        b"event: lonely\n\n"  # no data line: not dispatched
        b"data: cut off without its blank line"
    )
    decoder = SSEDecoder()
    assert decoder.feed(body) == [("message", "one"), ("delta", "a\nb\n"), ("message", "x")]
    assert decoder.end() == []  # the unfinished event is discarded
    assert decoder.last_event_id == "7"
    assert decoder.retry == 1500


def test_line_endings_bom_and_split_utf8() -> None:
    body = "\ufeffdata: café ☕\r\n\r\ndata: b\r\rdata: c\n\n".encode()
    expected = [("message", "café ☕"), ("message", "b"), ("message", "c")]
    assert decode([body]) == expected
    for cut in range(1, len(body)):  # every split point, inside CRLF and inside a character
        assert decode([body[:cut], body[cut:]]) == expected, cut
    assert decode([bytes([b]) for b in body]) == expected


def test_invalid_utf8_becomes_replacement_characters() -> None:
    assert decode([b"data: \xff\xfe ok\n\n"]) == [("message", "\ufffd\ufffd ok")]


def test_a_final_cr_ends_the_last_line() -> None:
    assert decode([b"data: x\r\r"]) == [("message", "x")]


event_names = st.sampled_from(["", "message", "delta", "content_block_delta", "ping"])
values = st.text(
    alphabet=st.characters(exclude_characters="\r\n", exclude_categories=["Cs"]), max_size=40
)
events = st.tuples(event_names, st.lists(values, min_size=1, max_size=3), st.booleans())
newlines = st.sampled_from(["\n", "\r\n", "\r"])


@settings(max_examples=300, deadline=None)
@given(st.lists(events, max_size=8), newlines, st.lists(st.integers(0, 10_000), max_size=6))
def test_random_streams_and_splits_match_httpx_sse(
    stream: list[tuple[str, list[str], bool]], newline: str, cuts: list[int]
) -> None:
    lines: list[str] = []
    for name, data, comment in stream:
        if comment:
            lines.append(": ping")
        if name:
            lines.append(f"event: {name}")
        lines.extend(f"data: {value}" for value in data)
        lines.append("")
    text = newline.join(lines) + (newline if lines else "")
    ours = decode(split(text.encode(), cuts))

    response = httpx.Response(
        200, headers={"content-type": "text/event-stream"}, content=text.encode()
    )
    theirs = [(sse.event, sse.data) for sse in EventSource(response).iter_sse()]
    assert ours == theirs
