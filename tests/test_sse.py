"""Our SSE decoder against the WHATWG rules and, where they agree, against httpx-sse."""

from __future__ import annotations

import re
import tracemalloc

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


# -- the WHATWG rules, literally, on arbitrary bytes ------------------------------------------


def reference(body: bytes) -> tuple[list[tuple[str, str]], str, int | None]:
    """The specification's algorithm as written, on the whole body at once: the oracle."""
    text = body.decode("utf-8", "replace")
    if text.startswith("\ufeff"):
        text = text[1:]
    lines = re.split(r"\r\n|\r|\n", text)[:-1]  # the last piece has no line end: discarded
    out: list[tuple[str, str]] = []
    data, event, last_id, retry = "", "", "", None
    for line in lines:
        if line == "":
            if data:
                out.append((event or "message", data[:-1]))
            data, event = "", ""
            continue
        if line.startswith(":"):
            continue
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "event":
            event = value
        elif name == "data":
            data += value + "\n"
        elif name == "id" and "\0" not in value:
            last_id = value
        elif name == "retry" and re.fullmatch(r"[0-9]+", value):
            retry = int(value)
    return out, last_id, retry


fragments = st.sampled_from(
    [b"data", b"data:", b"data: ", b"event:", b"id:", b"retry:", b":", b" ", b"x", b"7",
     b"\r", b"\n", b"\r\n", b"\xef\xbb\xbf", b"\xef", b"\xbb", b"\xff", b"\x00",
     "é".encode(), "☕".encode(), "☕".encode()[:2]]
)  # fmt: skip


@settings(max_examples=500, deadline=None)
@given(
    st.lists(fragments | st.binary(max_size=4), max_size=40),
    st.lists(st.integers(0, 10_000), max_size=12),
)
def test_any_bytes_split_anywhere_decode_as_the_specification_says(
    parts: list[bytes], cuts: list[int]
) -> None:
    body = b"".join(parts)
    decoder = SSEDecoder()
    events: list[tuple[str, str]] = []
    for chunk in split(body, cuts):
        events.extend(decoder.feed(chunk))
    events.extend(decoder.end())
    assert (events, decoder.last_event_id, decoder.retry) == reference(body)


def test_a_long_line_in_tiny_chunks_costs_linear_work() -> None:
    # Re-scanning or re-joining the unfinished line on every chunk makes each 8-byte chunk
    # cost as much as the whole line so far: quadratic. The work is counted as the bytes
    # allocated while feeding (tracemalloc's peak over each feed), not timed.
    size = 2 * 1024 * 1024
    body = b"data: " + b"x" * size + b"\n\n"
    chunks = [body[start : start + 8] for start in range(0, len(body), 8)]
    # A few copies of the line, once (the buffer, the text, the data), and a small constant
    # per call (the list it returns); a quadratic decoder passes this a few KB in.
    budget = 4 * len(body) + 100 * len(chunks)
    decoder = SSEDecoder()
    allocated = 0
    events: list[tuple[str, str]] = []
    tracemalloc.start()
    try:
        for n, chunk in enumerate(chunks):
            before = tracemalloc.get_traced_memory()[0]
            tracemalloc.reset_peak()
            events.extend(decoder.feed(chunk))
            allocated += tracemalloc.get_traced_memory()[1] - before
            assert allocated < budget, f"{allocated:,} bytes allocated by chunk {n:,}"
    finally:
        tracemalloc.stop()
    assert events == [("message", "x" * size)]
    print(f"{allocated / len(body):.2f} bytes allocated per byte of the line")
