"""`map()`: many calls under an adaptive limit, with per-item failures, progress and a checkpoint.

Everything here that is not I/O is shared by the two drivers at the bottom: `map_sync` (a
thread pool; the calling thread admits, records and writes) and `map_async` (an anyio task
group; one coordinator admits). Both ask the same `AdaptiveLimit` and record through the same
`_Run`, which owns the checkpoint file, the running totals and the progress bar.

Checkpoint format (JSON Lines, one object per line, appended and flushed as items finish):

    {"format": "tally_client.map", "version": 1}
    {"i": 0, "key": "9f2c...", "response": {...}}
    {"i": 1, "key": "03ab...", "error": {"type": "RateLimitError", "message": "...", ...}}

`key` hashes the item's prompt and the options that shape its result (not `retry` or
`timeouts`). A rerun skips every index whose last line is a response with the same key, so a
done item is never paid for twice; failed items and items whose prompt or options changed are
run again. A line cut by a crash is ignored (and cut off before appending).

A checkpoint that cannot be written (a full disk, a lost mount) stops the run like Ctrl-C
does (no new call, the open ones closed), then raises `CheckpointError`; nothing more is
written after the first failure, so the file stays resumable.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import threading
import time
from array import array
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, overload

from ._decision import Price
from ._errors import (
    APIStatusError,
    CheckpointError,
    ConfigurationError,
    ProviderError,
    StructuredOutputError,
    TallyError,
)
from ._limiter import AdaptiveLimit, LimitChange
from ._request import Message
from ._response import Attempt, Metrics, Response, ToolCall, Usage
from ._retry import RetryPolicy

if TYPE_CHECKING:
    from concurrent.futures import Future

    from tqdm import tqdm

    from ._client import AsyncClient, CallOptions, Client
    from ._stream import Stream

__all__ = ["ItemError", "MapResult"]

Prompt = str | Sequence[Message]
_FORMAT = {"format": "tally_client.map", "version": 1}
_NOT_IN_KEY = frozenset({"retry", "timeouts"})  # they change how a call is made, not its result


# -- results ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ItemError:
    """One item that failed after the retries its policy allows.

    Attributes:
        index: the item's position in the input (0-based).
        error: what ended it: a `ProviderError` (its `.partial` and `.attempts` set when it
            came from this run), a `StructuredOutputError`, ... Errors read back from a
            checkpoint are rebuilt as the same class with the same message and status.
    """

    index: int
    error: BaseException


class MapResult(Sequence["Response | None"]):
    """The outcome of `map()`, in input order.

    Indexing and iterating give each item's Response, or None where the item failed (its
    error is in `errors`). With a checkpoint, Responses are read from the file on access
    (memory stays flat for any number of items); without one they are kept in memory.

    Attributes:
        errors: the failed items, by index.
        usage: token counts summed over the items' Responses (`reported` False if none
            reported any); resumed items included.
        cost: the summed cost in USD, or None when no Response carries a cost.
        resumed: how many items were taken from the checkpoint instead of being called.
        limit_trace: how the adaptive concurrency limit moved during this run.
    """

    def __init__(
        self,
        responses: Sequence[Response | None],
        errors: list[ItemError],
        usage: Usage,
        cost: float | None,
        resumed: int,
        limit_trace: Sequence[LimitChange],
    ) -> None:
        self._responses = responses
        self.errors = errors
        self.usage = usage
        self.cost = cost
        self.resumed = resumed
        self.limit_trace = tuple(limit_trace)

    @property
    def responses(self) -> Sequence[Response | None]:
        """Each item's Response in input order, None where it failed."""
        return self._responses

    @property
    def ok(self) -> bool:
        """True when every item has a Response."""
        return not self.errors

    def __len__(self) -> int:
        return len(self._responses)

    @overload
    def __getitem__(self, index: int) -> Response | None: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[Response | None]: ...
    def __getitem__(self, index: int | slice) -> Response | Sequence[Response | None] | None:
        return self._responses[index]

    def __iter__(self) -> Iterator[Response | None]:
        return iter(self._responses)

    def __repr__(self) -> str:
        return (
            f"MapResult(items={len(self)}, errors={len(self.errors)}, resumed={self.resumed}, "
            f"usage={self.usage})"
        )


class _FileResponses(Sequence["Response | None"]):
    """Responses read back from a checkpoint file by line offset: one int per item in memory."""

    def __init__(self, path: Path, offsets: array[int]) -> None:
        self._path = path
        self._offsets = offsets

    def __len__(self) -> int:
        return len(self._offsets)

    @overload
    def __getitem__(self, index: int) -> Response | None: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[Response | None]: ...
    def __getitem__(self, index: int | slice) -> Response | Sequence[Response | None] | None:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        offset = self._offsets[index]
        if offset < 0:
            return None
        with self._path.open("rb") as f:
            f.seek(offset)
            return response_from_dict(json.loads(f.readline())["response"])

    def __iter__(self) -> Iterator[Response | None]:
        with self._path.open("rb") as f:
            for offset in self._offsets:
                if offset < 0:
                    yield None
                    continue
                f.seek(offset)
                yield response_from_dict(json.loads(f.readline())["response"])


# -- serialisation of a Response (the checkpoint's line) ----------------------------------


def response_to_dict(response: Response) -> dict[str, Any]:
    """A JSON-ready dict of a Response; `response_from_dict` reverses it.

    The routing decision is not kept, and `parsed` comes back as its JSON value (a dict,
    not the model class of a typed schema); each attempt keeps its usage and price (so `cost`
    survives) and its error's class, message and status.
    """
    out: dict[str, Any] = {
        "text": response.text,
        "state": response.state,
        "finish_reason": response.finish_reason,
        "model": response.model,
        "provider": response.provider,
        "usage": asdict(response.usage),
        "metrics": asdict(response.metrics),
        "attempts": [
            {
                "number": a.number,
                "error": None if a.error is None else error_to_dict(a.error),
                "text_chars": a.text_chars,
                "wait": a.wait,
                "usage": asdict(a.usage),
                "price": None if a.price is None else asdict(a.price),
            }
            for a in response.attempts
        ],
    }
    if response.tool_calls:
        out["tool_calls"] = [asdict(c) for c in response.tool_calls]
    if response.thinking:
        out["thinking"] = response.thinking
    if response.raw_finish_reason is not None:
        out["raw_finish_reason"] = response.raw_finish_reason
    if response.parsed is not None:
        parsed = response.parsed
        dump = getattr(parsed, "model_dump", None)  # a Pydantic model from a typed schema
        out["parsed"] = dump(mode="json") if callable(dump) else parsed
    if response.response_id is not None:
        out["response_id"] = response.response_id
    return out


def response_from_dict(data: Mapping[str, Any]) -> Response:
    """The Response a `response_to_dict` dict describes."""
    return Response(
        text=data["text"],
        tool_calls=tuple(ToolCall(**c) for c in data.get("tool_calls", ())),
        usage=Usage(**data["usage"]),
        finish_reason=data.get("finish_reason"),
        state=data["state"],
        model=data.get("model"),
        provider=data.get("provider"),
        metrics=Metrics(**data["metrics"]),
        attempts=tuple(
            Attempt(
                a["number"],
                None if a["error"] is None else error_from_dict(a["error"]),
                a["text_chars"],
                a["wait"],
                Usage(**a["usage"]) if "usage" in a else Usage(),
                None if a.get("price") is None else Price(**a["price"]),
            )
            for a in data.get("attempts", ())
        ),
        thinking=data.get("thinking", ""),
        raw_finish_reason=data.get("raw_finish_reason"),
        parsed=data.get("parsed"),
        response_id=data.get("response_id"),
    )


def error_to_dict(error: BaseException) -> dict[str, Any]:
    """Class name, message and the status fields of an error, JSON-ready."""
    out: dict[str, Any] = {"type": type(error).__name__, "message": str(error)}
    if isinstance(error, ProviderError):
        out["provider"] = error.provider
        out["retryable"] = error.retryable
    if isinstance(error, APIStatusError):
        out["status_code"] = error.status_code
        out["error_type"] = error.error_type
        out["retry_after"] = error.retry_after
    return out


def error_from_dict(data: Mapping[str, Any]) -> BaseException:
    """Rebuild an error saved by `error_to_dict`: the same tally_client class when it is one
    (a `TallyError` with the message otherwise), without calling its constructor."""
    cls = _error_classes().get(data.get("type", ""))
    if cls is None:
        return TallyError(f"{data.get('type')}: {data.get('message')}")
    error = cls.__new__(cls)
    Exception.__init__(error, data.get("message", ""))
    if isinstance(error, ProviderError):
        error.provider = data.get("provider")
        error.partial = None
        error.attempts = ()
        error.retryable = bool(data.get("retryable", error.retryable))
    if isinstance(error, APIStatusError):
        error.status_code = int(data.get("status_code", 0))
        error.error_type = data.get("error_type")
        error.retry_after = data.get("retry_after")
        error.body = None
        error.request_id = None
        error.in_stream = False
    if isinstance(error, StructuredOutputError):
        error.response = None  # type: ignore[assignment]
    return error


def _error_classes() -> dict[str, type[TallyError]]:
    """Every TallyError subclass by class name."""
    found: dict[str, type[TallyError]] = {}
    todo: list[type[TallyError]] = [TallyError]
    while todo:
        cls = todo.pop()
        found.setdefault(cls.__name__, cls)
        todo.extend(cls.__subclasses__())
    return found


# -- what the twins share --------------------------------------------------------------------


def add_cost(total: float | None, response: Response) -> float | None:
    """Add a Response's cost (USD) to a running total; None while nothing had a cost."""
    cost = response.cost
    if cost is None:
        return total
    return cost if total is None else total + cost


def _options_digest(options: Mapping[str, Any]) -> bytes:
    shaped = {k: v for k, v in options.items() if k not in _NOT_IN_KEY}
    text = json.dumps(shaped, sort_keys=True, default=repr)
    return hashlib.sha256(text.encode()).digest()


def item_key(prompt: Prompt, options_digest: bytes) -> str:
    """The identity of one item in a checkpoint: 16 hex digits of a SHA-256 of its prompt
    and of the options that shape its result."""
    h = hashlib.sha256(options_digest)
    h.update(json.dumps(prompt, sort_keys=True, default=repr).encode())
    return h.hexdigest()[:16]


class _Observer(RetryPolicy):
    """The caller's retry policy, with every failed attempt reported to the run first.

    The Supervisor asks `delay()` after each failed attempt: the limiter learns of a 429 at
    once, while the call is still in flight, and a stopping run retries nothing more.
    """

    def __init__(self, inner: RetryPolicy, observe: Callable[[BaseException], bool]) -> None:
        super().__init__(
            inner.max_attempts, inner.initial_delay, inner.max_delay, inner.max_retry_after
        )
        object.__setattr__(self, "_inner", inner)
        object.__setattr__(self, "_observe", observe)

    def delay(self, attempt: int, error: BaseException) -> float | None:
        if not self._observe(error):  # type: ignore[attr-defined]
            return None
        return self._inner.delay(attempt, error)  # type: ignore[attr-defined,no-any-return]


class _Run:
    """One map() run minus the I/O of calls: checkpoint, totals, progress, limiter.

    The drivers call `record_*` from one thread (or the event loop) only.
    """

    def __init__(
        self,
        prompts: Iterable[Prompt],
        options: Mapping[str, Any],
        default_retry: RetryPolicy,
        concurrency: int,
        progress: bool,
        checkpoint: str | os.PathLike[str] | None,
    ) -> None:
        if isinstance(prompts, str):
            raise ConfigurationError("map() takes a list of prompts; got one string")
        self.limiter = AdaptiveLimit(concurrency)
        self.stopping = False
        self._prompts = prompts
        self._digest = _options_digest(options)
        options = dict(options)
        options.setdefault("consumer", "pipeline")
        self.options = options
        self._retry = options.get("retry") or default_retry
        self.errors: list[ItemError] = []
        self._usage = [0, 0, 0, 0, 0]  # input, output, total, cached, reasoning
        self._usage_seen = [False] * 5
        self._final = True  # every summed usage was a whole call's final count
        self.cost: float | None = None
        self.resumed = 0
        self._count = 0  # items seen in the input
        self._memory: list[Response | None] | None = None
        self._offsets = array("q")
        self._keys = array("Q")  # the key of each index's recorded response, as an int
        self._file: Any = None
        self._broken: CheckpointError | None = None  # the first failed write: write no more
        self._reader: Any = None  # reads resumed items back while the run appends
        self.path = None if checkpoint is None else Path(checkpoint)
        if self.path is None:
            self._memory = []
        else:
            self._open(self.path)
        self._bar: tqdm[Any] | None = None
        if progress:
            self._bar = _progress_bar(prompts)

    # -- per-item options ------------------------------------------------------------------

    def call_options(self, observe: Callable[[BaseException], bool]) -> CallOptions:
        opts: Any = dict(self.options)
        opts["retry"] = _Observer(self._retry, observe)
        return opts  # type: ignore[no-any-return]

    def observe(self, error: BaseException) -> bool:
        """A failed attempt (any item): tell the limiter; False stops retries when stopping."""
        self.limiter.overloaded(error)
        return not self.stopping

    # -- the checkpoint ----------------------------------------------------------------------

    def _open(self, path: Path) -> None:
        try:
            self._open_file(path)
        except OSError as exc:
            if self._file is not None:  # opened, then truncating or the header failed
                self._file.close()
                self._file = None
            raise CheckpointError(
                f"could not open the checkpoint {path}: {exc.strerror or exc}", path
            ) from exc

    def _open_file(self, path: Path) -> None:
        keep = 0
        if path.exists():
            with path.open("rb") as f:
                first = f.readline()
                keep = f.tell()
                try:
                    header = json.loads(first)
                except ValueError:
                    header = None
                if header != _FORMAT:
                    raise ConfigurationError(
                        f"{path} is not a map() checkpoint (its first line is not {_FORMAT}): "
                        "pass another path"
                    )
                while True:
                    offset = f.tell()
                    line = f.readline()
                    if not line:
                        break
                    try:
                        if not line.endswith(b"\n"):
                            raise ValueError("cut line")
                        record = json.loads(line)
                        index = int(record["i"])
                    except (ValueError, KeyError, TypeError):
                        break  # a line cut by a crash: everything after it is dropped
                    keep = f.tell()
                    self._set(index, offset if "response" in record else -1, record["key"])
            self._file = path.open("r+b")
            self._file.truncate(keep)
            self._file.seek(keep)
        else:
            self._file = path.open("wb")
            self._write(_FORMAT)

    def _write(self, record: Mapping[str, Any]) -> int:
        """Append one line; its offset.

        Raises:
            CheckpointError: this write failed, or an earlier one did (after a failure
                nothing more is written: a cut line stays the last one, so a rerun resumes).
        """
        first = self._broken
        if first is not None:
            raise CheckpointError(str(first), first.path) from first.__cause__
        line = json.dumps(record, ensure_ascii=False).encode() + b"\n"
        f = self._file
        try:
            offset: int = f.tell()
            f.write(line)
            f.flush()
        except OSError as exc:
            self._broken = CheckpointError(
                f"could not write to the checkpoint {self.path}: {exc.strerror or exc}. "
                "map() stopped; the results written before are kept in it, and a rerun with "
                "this checkpoint resumes after them",
                self.path or "",
            )
            raise self._broken from exc
        return offset

    def _set(self, index: int, offset: int, key: str) -> None:
        if len(self._offsets) <= index:
            grow = index + 1 - len(self._offsets)
            self._offsets.extend([-1] * grow)
            self._keys.extend([0] * grow)
        self._offsets[index] = offset
        self._keys[index] = int(key, 16) if offset >= 0 else 0

    def _done_before(self, index: int, key: str) -> bool:
        return (
            index < len(self._offsets)
            and self._offsets[index] >= 0
            and self._keys[index] == int(key, 16)
        )

    def pending(self) -> Iterator[tuple[int, Prompt, str]]:
        """The items still to call: (index, prompt, key). Resumed items are counted here."""
        for index, prompt in enumerate(self._prompts):
            self._count = index + 1
            key = item_key(prompt, self._digest)
            if self._memory is not None:
                self._memory.append(None)
            elif self._done_before(index, key):
                self._resume(index)
                continue
            yield index, prompt, key

    def _resume(self, index: int) -> None:
        self.resumed += 1
        assert self.path is not None
        if self._reader is None:
            self._reader = self.path.open("rb")
        self._reader.seek(self._offsets[index])
        self._add(response_from_dict(json.loads(self._reader.readline())["response"]))
        if self._bar is not None:
            self._bar.update(1)

    # -- recording -----------------------------------------------------------------------------

    def record(self, index: int, key: str, response: Response) -> None:
        """An item's call returned its Response."""
        if self._memory is not None:
            self._memory[index] = response
        else:
            offset = self._write({"i": index, "key": key, "response": response_to_dict(response)})
            self._set(index, offset, key)
        self._add(response)
        self._tick()

    def record_error(self, index: int, key: str, error: BaseException) -> None:
        """An item failed after its retries."""
        self.errors.append(ItemError(index, error))
        if self._file is not None:
            self._write({"i": index, "key": key, "error": error_to_dict(error)})
            self._set(index, -1, key)
        self._tick()

    def _add(self, response: Response) -> None:
        u = response.usage
        for n, value in enumerate(
            (
                u.input_tokens,
                u.output_tokens,
                u.total_tokens,
                u.cached_input_tokens,
                u.reasoning_tokens,
            )
        ):
            if value is not None:
                self._usage[n] += value
                self._usage_seen[n] = True
        self._final = self._final and u.final
        self.cost = add_cost(self.cost, response)

    def usage(self) -> Usage:
        values = [
            v if seen else None for v, seen in zip(self._usage, self._usage_seen, strict=True)
        ]
        return Usage(
            input_tokens=values[0],
            output_tokens=values[1],
            total_tokens=values[2],
            cached_input_tokens=values[3],
            reasoning_tokens=values[4],
            final=self._final and any(self._usage_seen),
        )

    def _tick(self) -> None:
        bar = self._bar
        if bar is None:
            return
        u = self._usage
        postfix = f"in={u[0]:,} out={u[1]:,} tokens"
        if self.cost is not None:
            postfix += f" ${self.cost:.4f}"
        if self.errors:
            postfix += f" errors={len(self.errors)}"
        bar.set_postfix_str(postfix, refresh=False)
        bar.update(1)

    def result(self) -> MapResult:
        responses: Sequence[Response | None]
        if self._memory is not None:
            responses = self._memory
        else:
            assert self.path is not None
            offsets = array("q", self._offsets[: self._count])
            offsets.extend([-1] * (self._count - len(offsets)))
            responses = _FileResponses(self.path, offsets)
        self.errors.sort(key=lambda e: e.index)
        return MapResult(
            responses, self.errors, self.usage(), self.cost, self.resumed, self.limiter.trace
        )

    def close(self) -> None:
        try:
            if self._file is not None:
                try:
                    self._file.close()
                except OSError as exc:  # a failed write's bytes were still buffered
                    if self._broken is None:
                        raise CheckpointError(
                            f"could not finish writing the checkpoint {self.path}: "
                            f"{exc.strerror or exc}",
                            self.path or "",
                        ) from exc
        finally:
            if self._reader is not None:
                self._reader.close()
            if self._bar is not None:
                self._bar.close()


def _progress_bar(prompts: Iterable[Prompt]) -> tqdm[Any]:
    try:
        from tqdm.auto import tqdm
    except ImportError:
        raise ConfigurationError(
            "progress=True needs tqdm: pip install 'tally-client[progress]'"
        ) from None
    total = len(prompts) if isinstance(prompts, Sequence) else None
    return tqdm(total=total, unit="call", dynamic_ncols=True)


def _fatal(error: BaseException) -> bool:
    """Errors that end the whole run rather than one item: bad set-up, and bugs."""
    return isinstance(error, ConfigurationError) or not isinstance(error, TallyError)


# -- the sync driver: a thread pool ------------------------------------------------------------


def map_sync(
    client: Client,
    prompts: Iterable[Prompt],
    *,
    concurrency: int,
    progress: bool,
    checkpoint: str | os.PathLike[str] | None,
    options: Mapping[str, Any],
) -> MapResult:
    """See `Client.map`. The calling thread admits items, records results and writes the
    checkpoint; `concurrency` worker threads make the calls."""
    run = _Run(prompts, options, client.retry, concurrency, progress, checkpoint)
    try:
        return _SyncMap(client, run, concurrency).run()
    finally:
        run.close()


class _SyncMap:
    def __init__(self, client: Client, run: _Run, concurrency: int) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self.client = client
        self.run_ = run
        self.lock = threading.Lock()  # guards the limiter and `live` across the workers
        self.opts = run.call_options(self.observe)
        self.live: set[Stream] = set()
        self.futures: dict[Future[Response], tuple[int, str, float]] = {}
        self.pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="tally-map")

    def observe(self, error: BaseException) -> bool:
        with self.lock:
            return self.run_.observe(error)

    def call(self, prompt: Prompt) -> Response:
        stream = self.client.respond(prompt, **self.opts)
        with self.lock:
            if self.run_.stopping:
                raise _Cancelled
            self.live.add(stream)
        try:
            return stream.final()
        finally:
            with self.lock:
                self.live.discard(stream)

    def run(self) -> MapResult:
        run = self.run_
        try:
            for index, prompt, key in run.pending():
                self.admit()
                future = self.pool.submit(self.call, prompt)
                self.futures[future] = (index, key, time.monotonic())
            while self.futures:
                self.settle_some(None)
            return run.result()
        except BaseException as exc:
            failed = self.stop()
            if failed is not None and not isinstance(exc, CheckpointError):
                # Results finished while stopping were lost: that must not vanish behind
                # the Ctrl-C or the error that stopped the run (it stays the __context__).
                raise failed from failed.__cause__
            raise
        finally:
            self.pool.shutdown(wait=True, cancel_futures=True)

    def admit(self) -> None:
        """Wait until the limiter lets one more call start, settling calls that end."""
        while True:
            with self.lock:
                wait_for = self.run_.limiter.admit()
            if wait_for == 0.0:
                return
            timeout = None if wait_for == math.inf else wait_for
            if self.futures:
                self.settle_some(timeout)
            else:
                time.sleep(timeout or 0.0)

    def settle_some(self, timeout: float | None) -> None:
        from concurrent.futures import FIRST_COMPLETED, wait

        # Waking at least once a second lets a KeyboardInterrupt that did not come with a
        # real signal (`_thread.interrupt_main()`) through too.
        timeout = 1.0 if timeout is None else min(timeout, 1.0)
        done, _ = wait(self.futures, timeout=timeout, return_when=FIRST_COMPLETED)
        for future in done:
            self.settle(future)

    def settle(self, future: Future[Response]) -> None:
        run = self.run_
        index, key, started = self.futures.pop(future)
        error = _Cancelled() if future.cancelled() else future.exception()
        with self.lock:
            run.limiter.release(error is None, time.monotonic() - started)
        if error is None:
            response = future.result()
            if response.state != "cancelled":
                run.record(index, key, response)
        elif not isinstance(error, _Cancelled) and not run.stopping:
            if _fatal(error):
                raise error
            run.record_error(index, key, error)

    def stop(self) -> BaseException | None:
        """Ctrl-C (or a fatal error): no new calls, no more retries; close the open ones
        (again while they end, for a call that was between attempts) and keep what is done.

        Returns:
            the first error met while keeping what is done (a `CheckpointError`: a finished
            result could not be written), for the caller to raise once all is stopped.
        """
        from concurrent.futures import FIRST_COMPLETED, wait

        self.run_.stopping = True
        failed: BaseException | None = None
        for future in self.futures:
            future.cancel()
        while self.futures:
            with self.lock:
                streams = list(self.live)
            for stream in streams:
                stream.close()
            done, _ = wait(self.futures, timeout=0.05, return_when=FIRST_COMPLETED)
            for future in done:
                try:
                    self.settle(future)
                except Exception as exc:  # raised by run() once every call has stopped
                    failed = failed or exc
        return failed


class _Cancelled(Exception):
    """Internal: a call that never ran because the run was stopping."""


# -- the async driver: one task group ----------------------------------------------------------


async def map_async(
    client: AsyncClient,
    prompts: Iterable[Prompt],
    *,
    concurrency: int,
    progress: bool,
    checkpoint: str | os.PathLike[str] | None,
    options: Mapping[str, Any],
) -> MapResult:
    """See `AsyncClient.map`. One coordinator admits items; each call is a task. Cancelling
    the awaiting task (Ctrl-C under `asyncio.run`) cancels every call, which closes its
    connection; what was recorded stays in the checkpoint."""
    import anyio

    run = _Run(prompts, options, client.retry, concurrency, progress, checkpoint)
    opts = run.call_options(run.observe)
    changed = [anyio.Event()]
    fatal: list[BaseException] = []

    async def call(index: int, prompt: Prompt, key: str) -> None:
        started = time.monotonic()
        ended: bool | None = None  # None: cancelled
        try:
            try:
                response = await client.respond(prompt, **opts).final()
            except Exception as error:
                ended = False
                if _fatal(error):
                    fatal.append(error)
                    raise
                run.record_error(index, key, error)
            else:
                ended = True
                run.record(index, key, response)
        except CheckpointError as error:  # ends the run: the task group cancels the rest
            fatal.append(error)
            raise
        finally:
            seconds = None if ended is None else time.monotonic() - started
            run.limiter.release(bool(ended), seconds)
            changed[0].set()
            changed[0] = anyio.Event()

    try:
        async with anyio.create_task_group() as tg:
            for index, prompt, key in run.pending():
                while (wait_for := run.limiter.admit()) > 0.0:
                    event = changed[0]
                    with anyio.move_on_after(None if wait_for == math.inf else wait_for):
                        await event.wait()
                tg.start_soon(call, index, prompt, key)
        return run.result()
    except BaseException as exc:
        run.stopping = True
        if fatal and isinstance(exc, BaseExceptionGroup):
            raise fatal[0] from fatal[0].__cause__
        raise
    finally:
        run.close()
