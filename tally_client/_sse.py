"""A Server-Sent Events decoder: bytes in, `(event, data)` pairs out. Pure, no I/O.

It follows the WHATWG HTML specification's event stream interpretation
(https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation):
the stream is UTF-8 (invalid bytes become U+FFFD), a leading BOM is dropped, lines end at CRLF,
LF or CR, a line starting with ":" is a comment (a keep-alive), `data:` lines of one event are
joined with "\\n", a blank line dispatches the event, an event with no `data:` line is not
dispatched, the event type defaults to "message", and bytes after the last blank line (an event
cut off by the end of the stream) are discarded.

It is ours rather than httpx-sse's because it sits on the hot path of every stream: it takes the
network chunks as they arrive (any split, even inside a UTF-8 character or between CR and LF)
and does one split per chunk instead of one call per line.
"""

from __future__ import annotations

import codecs

__all__ = ["SSEDecoder"]

_BOM = "\ufeff"


class SSEDecoder:
    """Decodes one event stream, chunk by chunk.

    Attributes:
        last_event_id: the last `id:` field seen ("" before any).
        retry: the last valid `retry:` field, in milliseconds, or None.
    """

    __slots__ = ("_data", "_event", "_line", "_start", "_utf8", "last_event_id", "retry")

    def __init__(self) -> None:
        self._utf8 = codecs.getincrementaldecoder("utf-8")("replace")
        self._line = ""  # an unfinished line carried over from the previous chunk
        self._data: list[str] = []
        self._event = ""
        self._start = True  # the BOM check is still due
        self.last_event_id = ""
        self.retry: int | None = None

    def feed(self, chunk: bytes) -> list[tuple[str, str]]:
        """Decode a chunk of the body, split anywhere; return the events it completed.

        Returns:
            `(event type, data)` per dispatched event, in order; often empty.
        """
        text = self._utf8.decode(chunk)
        if self._start:
            if not text:
                return []
            self._start = False
            if text[0] == _BOM:
                text = text[1:]
        if self._line:
            text = self._line + text
        if "\r" in text:
            # A CR at the very end may be the first half of a CRLF: keep it for the next chunk.
            held = text[-1] == "\r"
            if held:
                text = text[:-1]
            text = text.replace("\r\n", "\n").replace("\r", "\n")
            lines = text.split("\n")
            self._line = lines.pop() + ("\r" if held else "")
        else:
            lines = text.split("\n")
            self._line = lines.pop()
        return self._lines(lines) if lines else []

    def end(self) -> list[tuple[str, str]]:
        """The body ended: decode what is left (a final CR ends a line; an unfinished event is
        discarded, as the specification says)."""
        tail = self._line + self._utf8.decode(b"", final=True)
        self._line = ""
        if tail.endswith("\r"):
            return self._lines(tail[:-1].replace("\r\n", "\n").replace("\r", "\n").split("\n"))
        return []

    def _lines(self, lines: list[str]) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        data = self._data
        for line in lines:
            if not line:  # a blank line dispatches
                if data:
                    out.append((self._event or "message", "\n".join(data)))
                    data.clear()
                self._event = ""
                continue
            if line.startswith("data:"):
                data.append(line[6:] if line.startswith("data: ") else line[5:])
                continue
            if line[0] == ":":
                continue  # a comment: keep-alive
            name, colon, value = line.partition(":")
            if colon and value.startswith(" "):
                value = value[1:]
            if name == "event":
                self._event = value
            elif name == "data":  # "data" with no colon: an empty data line
                data.append(value)
            elif name == "id":
                if "\0" not in value:
                    self.last_event_id = value
            elif name == "retry" and value.isascii() and value.isdigit():
                self.retry = int(value)
        return out
