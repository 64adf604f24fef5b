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

Linear in the body, however it is split: line ends are searched for in the new bytes only, and
an unfinished line waits as bytes in one growing buffer, so a multi-megabyte line arriving in
tiny chunks costs no more than arriving whole. Splitting on bytes is safe because CR and LF
never occur inside a UTF-8 sequence; each complete stretch of lines is decoded once (invalid
bytes give the same U+FFFD as decoding the whole stream would, since a sequence cut by a line
end is invalid either way).
"""

from __future__ import annotations

__all__ = ["SSEDecoder"]

_BOM = b"\xef\xbb\xbf"


class SSEDecoder:
    """Decodes one event stream, chunk by chunk.

    Attributes:
        last_event_id: the last `id:` field seen ("" before any).
        retry: the last valid `retry:` field, in milliseconds, or None.
    """

    __slots__ = ("_cr", "_data", "_event", "_line", "_start", "last_event_id", "retry")

    def __init__(self) -> None:
        self._line = bytearray()  # an unfinished line carried over from earlier chunks
        self._cr = False  # the last line ended with a CR: an LF starting the next chunk is its
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
        if self._cr and chunk:
            self._cr = False
            if chunk[0] == 10:  # the LF of a CRLF split between chunks
                chunk = chunk[1:]
        # The last line end in the new bytes; the bytes after it wait for the next chunk.
        lf = chunk.rfind(b"\n")
        cr = chunk.rfind(b"\r")
        end = lf if lf > cr else cr
        if end < 0:
            self._line += chunk
            return []
        size = len(chunk)
        cut = size - 1 - end  # bytes after the last line end
        complete: bytes | bytearray
        if self._line:  # the unfinished line ends now: decoded once, from where it waited
            complete = self._line
            complete += chunk
            if cut:
                self._line = complete[-cut:]
                del complete[-cut:]
            else:
                self._line = bytearray()
        else:
            complete = chunk[: end + 1] if cut else chunk
            if cut:
                self._line += chunk[end + 1 :]
        self._cr = cr == size - 1  # a CR ends the chunk: the next may start with its LF
        if self._start:
            self._start = False
            if complete.startswith(_BOM):
                complete = complete[3:]
        text = complete.decode("utf-8", "replace")
        if cr >= 0:  # an unfinished line holds no line end, so the new bytes tell
            text = text.replace("\r\n", "\n").replace("\r", "\n")
        lines = text.split("\n")
        lines.pop()  # "": the text ends with its last line end
        return self._lines(lines)

    def end(self) -> list[tuple[str, str]]:
        """The body ended: the unfinished line and event are discarded, as the specification
        says (a final CR already ended its line when it arrived)."""
        self._line.clear()
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
