"""An incremental, tolerant JSON parser: partial values from a document that is still arriving.

Each character is read once: `PartialJSON.feed(chunk)` continues where the previous chunk
stopped and grows one value tree in place, so following a stream costs time linear in its
length (re-parsing the whole buffer on every delta, what jiter's and pydantic-core's partial
modes offer, costs time quadratic in it; see benchmarks/structured.py).

What a partial value shows, so that it only ever grows (the invariants of rictic/jsonriver):

- an object gains a key once the key is complete and its value has started;
- an array gains an element once the element has started;
- a string grows (materialized when it grew by a quarter, or 32 characters, since it was last
  shown, and when it closes: that keeps a megabyte-long string linear too);
- numbers, `true`, `false` and `null` appear whole, once they are complete (a number at the end
  of the text so far could still gain digits, so it waits for the character after it).

Models do not always send bare JSON: text before the document (prose, a ```json fence line) is
skipped up to the first `{` or `[` (or, when the root may be a scalar, the first character that
starts a JSON value), and whatever follows the document (a closing fence) is ignored.

Malformed input never raises: the parser stops (`failed` becomes True) and keeps the last value
it had. The final, strict reading is `extract_json()` plus a validator (`_output.py`).
"""

from __future__ import annotations

import json
import json.decoder
import re
from collections.abc import Callable
from typing import Any

__all__ = ["PartialJSON", "extract_json", "parse_partial_json"]

_WS = re.compile(r"[ \t\n\r]*")
_STR_RUN = re.compile(r'[^"\\]*')
_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
_NUMBER_CHARS = re.compile(r"[-+0-9.eE]+")
_ROOT_START = re.compile(r"[\[{]")
_ESCAPES = {
    '"': '"',
    "\\": "\\",
    "/": "/",
    "b": "\b",
    "f": "\f",
    "n": "\n",
    "r": "\r",
    "t": "\t",
}
_LITERALS = {"t": ("true", True), "f": ("false", False), "n": ("null", None)}
_SCALAR_START = frozenset('"-0123456789tfn')

# What the parser expects next.
_VALUE = 0  # a value (array element, object value, the root)
_KEY = 1  # a key or `}` (right after `{`)
_KEY_NEXT = 2  # a key (after `,` in an object)
_COLON = 3
_AFTER = 4  # `,` or the container's close
_ELEMENT_OR_CLOSE = 5  # a value or `]` (right after `[`)

_MIN_STEP = 32
_NOTHING: Any = object()


def _no_constant(name: str) -> Any:
    raise ValueError(name)  # NaN, Infinity: not JSON (the character parser refuses them too)


# C scanners for values already complete in the buffer: a whole string or container is read
# at C speed (50x the character loop); an incomplete one fails and the loop takes over. A
# failed try costs a scan of the rest of the buffer and an exception, so containers are tried
# only when at least _WHOLE_MIN characters follow (a burst, or the text of a finished call),
# strings only when a quote follows.
_WHOLE = json.JSONDecoder(parse_constant=_no_constant, strict=False).raw_decode
_scanstring: Callable[[str, int, bool], tuple[str, int]] = json.decoder.scanstring  # type: ignore[attr-defined]
_WHOLE_MIN = 256


class PartialJSON:
    """Incremental tolerant parser for one JSON document (see the module docstring).

    Args:
        scalar_root: whether the document itself may be a string, number or literal. When
            False (a schema whose root is an object or array), leading prose is skipped up to
            the first `{` or `[`, even if it starts with a digit or a quote.

    Attributes:
        done: the root value is complete (whatever follows is ignored).
        failed: the text cannot be JSON from here on; the value stays what it was.
    """

    __slots__ = (
        "_deep",
        "_root",
        "_scalar_root",
        "_shown",
        "_stack",
        "_state",
        "_str",
        "_str_key",
        "_str_len",
        "_tail",
        "_version",
        "done",
        "failed",
    )

    def __init__(self, *, scalar_root: bool = True) -> None:
        self._scalar_root = scalar_root
        self._tail = ""
        # Open containers: [container, key of the value being read (objects) or None].
        self._stack: list[list[Any]] = []
        self._state = _VALUE
        self._root: Any = _NOTHING
        self._str: list[str] | None = None  # pieces of the string being read
        self._str_key = False  # that string is an object key (not shown until complete)
        self._str_len = 0  # its length so far
        self._shown = 0  # its length when last materialized
        self._version = 0  # bumps on every visible change
        self._deep = False  # nested too deep for the C scanner: containers go by the loop
        self.done = False
        self.failed = False

    @property
    def started(self) -> bool:
        """True once the root value has started."""
        return self._root is not _NOTHING

    @property
    def version(self) -> int:
        """A counter that changes whenever the visible value changes."""
        return self._version

    def value(self, *, exact: bool = False) -> Any:
        """The value so far (None before the root starts).

        Containers are the parser's own and keep growing in place after this returns: copy
        one (`copy.deepcopy`) to keep a snapshot. A string still being read shows what was
        last materialized (see the module docstring), or all of it with `exact=True`.
        """
        if self._root is _NOTHING:
            return None
        if exact and self._str is not None and not self._str_key and self._stack:
            self._show_string()
        if not self._stack and self._str is not None and not self.done:
            return "".join(self._str)  # a root string still being read
        return self._root

    def feed(self, chunk: str) -> bool:
        """Read the next piece of the document. Returns True when the value changed."""
        if self.done or self.failed or not chunk:
            return False
        before = self._version
        buf = self._tail + chunk if self._tail else chunk
        try:
            i = self._run(buf)
        except _Malformed:
            self.failed = True
            self._tail = ""
            return self._version != before
        self._tail = buf[i:]
        # Show a growing string when it grew enough: linear in its length overall.
        if (
            self._str is not None
            and not self._str_key
            and self._str_len - self._shown >= max(_MIN_STEP, self._shown >> 2)
        ):
            self._show_string()
        return self._version != before

    def finish(self) -> bool:
        """The text ended: commit a number that was waiting for its next character."""
        if self.done or self.failed or not self._tail:
            return False
        before = self._version
        tail = self._tail.rstrip()
        m = _NUMBER.match(tail)
        if m is not None and m.end() == len(tail) and self._state in (_VALUE, _ELEMENT_OR_CLOSE):
            try:
                self._place(_number(tail))
            except _Malformed:
                self.failed = True
            self._tail = ""
        return self._version != before

    # -- internals ---------------------------------------------------------------------

    def _show_string(self) -> None:
        assert self._str is not None
        text = "".join(self._str)
        self._str = [text]
        self._shown = self._str_len
        if self._stack:
            frame = self._stack[-1]
            container = frame[0]
            if type(container) is dict:
                container[frame[1]] = text
            else:
                container[-1] = text
        self._version += 1

    def _place(self, value: Any) -> None:
        """A new value starts (containers, strings) or arrives whole (atoms)."""
        self._version += 1
        if not self._stack:
            self._root = value
            if type(value) is not dict and type(value) is not list and self._str is None:
                self.done = True
            return
        frame = self._stack[-1]
        container = frame[0]
        if type(container) is dict:
            container[frame[1]] = value
        else:
            container.append(value)
        self._state = _AFTER

    def _place_whole(self, value: Any) -> None:
        """A value that arrived complete (read by the C scanner)."""
        if not self._stack:
            self._version += 1
            self._root = value
            self.done = True
            return
        self._place(value)

    def _run(self, buf: str) -> int:  # noqa: C901 - one state machine reads best as one loop
        i = 0
        n = len(buf)
        stack = self._stack
        while i < n:
            if self._str is not None:
                i = self._string(buf, i, n)
                if self._str is not None:
                    return i  # the string continues in the next chunk
                continue
            i = _WS.match(buf, i).end()  # type: ignore[union-attr]
            if i >= n:
                return i
            c = buf[i]
            state = self._state
            if self._root is _NOTHING:
                j = self._root_start(buf, i, n)
                if j < 0:
                    return i  # wait: a fence line or a literal not yet complete
                if j != i:
                    i = j
                    continue
            if state in (_VALUE, _ELEMENT_OR_CLOSE):
                if (
                    n - i >= _WHOLE_MIN and not self._deep
                    if c == "{" or c == "["
                    else c == '"' and buf.find('"', i + 1) >= 0
                ):
                    # Complete already? Then the C scanner reads it whole.
                    try:
                        whole, end = _WHOLE(buf, i)
                    except (ValueError, StopIteration):
                        pass
                    except RecursionError:  # the C scanner recurses; this document nests
                        self._deep = True  # deeper than it can: the loop reads its containers
                    else:
                        self._place_whole(whole)
                        i = end
                        if self.done:
                            return n
                        continue
                if c == "{":
                    obj: dict[str, Any] = {}
                    self._place(obj)
                    stack.append([obj, None])
                    self._state = _KEY
                    i += 1
                elif c == "[":
                    arr: list[Any] = []
                    self._place(arr)
                    stack.append([arr, None])
                    self._state = _ELEMENT_OR_CLOSE
                    i += 1
                elif c == '"':
                    self._str = []
                    self._str_key = False
                    self._str_len = self._shown = 0
                    self._place("")
                    i += 1
                elif c == "]" and state == _ELEMENT_OR_CLOSE:
                    i = self._close(i)
                elif c in "-0123456789":
                    end = _NUMBER_CHARS.match(buf, i).end()  # type: ignore[union-attr]
                    if end >= n:
                        return i  # the number may go on
                    if _NUMBER.fullmatch(buf, i, end) is None:
                        raise _Malformed
                    self._place(_number(buf[i:end]))
                    i = end
                elif c in _LITERALS:
                    word, value = _LITERALS[c]
                    if n - i < len(word):
                        if word.startswith(buf[i:n]):
                            return i
                        raise _Malformed
                    if not buf.startswith(word, i):
                        raise _Malformed
                    self._place(value)
                    i += len(word)
                else:
                    raise _Malformed
            elif state == _AFTER:
                if c == ",":
                    self._state = _KEY_NEXT if type(stack[-1][0]) is dict else _VALUE
                    i += 1
                elif c == ("}" if type(stack[-1][0]) is dict else "]"):
                    i = self._close(i)
                else:
                    raise _Malformed
            elif state in (_KEY, _KEY_NEXT):
                if c == '"':
                    if buf.find('"', i + 1) >= 0:
                        try:
                            key, end = _scanstring(buf, i + 1, False)
                        except ValueError:
                            pass
                        else:
                            stack[-1][1] = key
                            self._state = _COLON
                            i = end
                            continue
                    self._str = []
                    self._str_key = True
                    self._str_len = 0
                    i += 1
                elif c == "}" and state == _KEY:
                    i = self._close(i)
                else:
                    raise _Malformed
            elif state == _COLON:
                if c != ":":
                    raise _Malformed
                self._state = _VALUE
                i += 1
            if self.done:
                return n  # the document ended: ignore what follows it
        return i

    def _root_start(self, buf: str, i: int, n: int) -> int:
        """Where the root value starts: `i` itself, a later index, or -1 to wait for more."""
        c = buf[i]
        if c == "{" or c == "[":
            return i
        if c == "`":
            newline = buf.find("\n", i)
            return -1 if newline < 0 else newline + 1  # a fence line such as ```json
        if self._scalar_root and c in _SCALAR_START:
            if c in _LITERALS:
                word = _LITERALS[c][0]
                rest = buf[i : i + len(word)]
                if word.startswith(rest):
                    return i if len(rest) == len(word) else -1
            else:
                return i
        m = _ROOT_START.search(buf, i)
        return n if m is None else m.start()  # prose before the document: skip it

    def _close(self, i: int) -> int:
        self._stack.pop()
        if not self._stack:
            self.done = True
        else:
            self._state = _AFTER
        return i + 1

    def _string(self, buf: str, i: int, n: int) -> int:
        parts = self._str
        assert parts is not None
        while i < n:
            j = _STR_RUN.match(buf, i).end()  # type: ignore[union-attr]
            if j > i:
                parts.append(buf[i:j])
                self._str_len += j - i
                i = j
                if i >= n:
                    return i
            c = buf[i]
            if c == '"':
                self._end_string()
                return i + 1
            # a backslash escape
            if i + 1 >= n:
                return i
            e = buf[i + 1]
            if e == "u":
                if i + 6 > n:
                    return i
                code = _hex(buf[i + 2 : i + 6])
                width = 6
                if 0xD800 <= code < 0xDC00:  # a high surrogate: its pair follows
                    if i + 12 > n:
                        return i
                    if buf[i + 6 : i + 8] == "\\u":
                        low = _hex(buf[i + 8 : i + 12])
                        if 0xDC00 <= low < 0xE000:
                            code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)
                            width = 12
                parts.append(chr(code))
                i += width
            else:
                ch = _ESCAPES.get(e)
                if ch is None:
                    raise _Malformed
                parts.append(ch)
                i += 2
            self._str_len += 1
        return i

    def _end_string(self) -> None:
        parts = self._str
        assert parts is not None
        text = "".join(parts)
        self._str = None
        stack = self._stack
        if self._str_key:
            stack[-1][1] = text
            self._state = _COLON
            return
        self._version += 1
        if not stack:
            self._root = text
            self.done = True
            return
        frame = stack[-1]
        container = frame[0]
        if type(container) is dict:
            container[frame[1]] = text
        else:
            container[-1] = text
        self._state = _AFTER


class _Malformed(Exception):
    """Internal: the text cannot continue as JSON."""


def _number(text: str) -> Any:
    """A complete JSON number; one json refuses (an integer over Python's 4,300-digit limit)
    is malformed here, never a raised ValueError."""
    try:
        return json.loads(text)
    except ValueError:
        raise _Malformed from None


def _hex(digits: str) -> int:
    try:
        return int(digits, 16)
    except ValueError:
        raise _Malformed from None


def parse_partial_json(text: str) -> Any:
    """The partial value of an incomplete JSON document (tolerant; see `PartialJSON`).

    For showing structured output or tool-call arguments while they stream; the final check is
    strict (`Response.parsed`, `ToolCall.parsed_arguments`). Never raises: returns None
    when no JSON value has started (empty text, prose only), and the value as far as it was
    well-formed when the text turns malformed.
    """
    parser = PartialJSON()
    parser.feed(text)
    parser.finish()
    return parser.value(exact=True)


_DECODER = json.JSONDecoder()


def extract_json(text: str, *, scalar_root: bool = True) -> tuple[Any, str] | None:
    """The first complete JSON document in `text` (strict), and its source text.

    Tolerates what models wrap around JSON: leading prose, a ```json fence, text after the
    document. Returns None when no complete document is found.
    """
    stripped = text.strip()
    if stripped.startswith("```"):
        newline = stripped.find("\n")
        stripped = stripped[newline + 1 :] if newline >= 0 else ""
    i = _WS.match(stripped).end()  # type: ignore[union-attr]
    candidates: list[int] = []
    if i < len(stripped) and (
        stripped[i] in "{[" or (scalar_root and stripped[i] in _SCALAR_START)
    ):
        candidates.append(i)
    candidates.extend(
        m.start() for m, _ in zip(_ROOT_START.finditer(stripped, i), range(20), strict=False)
    )
    for start in dict.fromkeys(candidates):
        try:
            value, end = _DECODER.raw_decode(stripped, start)
        except ValueError:
            continue
        return value, stripped[start:end]
    try:  # the whole text is a scalar (`null` for an object schema): let validation say so
        return json.loads(stripped), stripped
    except ValueError:
        return None
