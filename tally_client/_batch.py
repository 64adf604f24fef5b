"""Batch jobs: the providers' Batch APIs as a third delivery mode (after stream and atomic).

The wire shapes live in `providers/_batch.py` as sans-I/O flows; this module runs them over
httpx (`BatchJob` blocking, `AsyncBatchJob` awaited) and turns each result line into the same
`Response` an atomic call gives, decoded by the same provider codec.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx

from ._errors import ConfigurationError, ProviderError, StructuredOutputError
from ._response import Response
from ._retry import RetryPolicy, Timeouts
from ._supervisor import Supervisor, check_structured
from .providers._batch import (
    BatchCodec,
    BatchItemError,
    BatchLine,
    BatchStatus,
    Flow,
    HttpCall,
    HttpReply,
)

if TYPE_CHECKING:
    from ._decision import Price
    from ._output import StructuredCall
    from .providers._base import Provider

__all__ = ["AsyncBatchJob", "BatchItemError", "BatchJob", "BatchResult", "BatchStatus"]

_NO_RETRY = RetryPolicy(max_attempts=1)


@dataclass(frozen=True)
class BatchResult:
    """One request of a batch job, once the job ended.

    Attributes:
        custom_id: the id the request was sent with ("item-<index>" for `client.batch()`).
        index: the request's position in the prompts given to `client.batch()`, or None for
            a custom_id of another shape.
        response: the Response (the same fields as an atomic call's), or None if it failed.
        error: why it failed: a `BatchItemError` (errored, expired, cancelled), an
            `APIStatusError` from the provider's error body, or a `StructuredOutputError`.
    """

    custom_id: str
    index: int | None
    response: Response | None
    error: BaseException | None = None


def _index(custom_id: str) -> int | None:
    prefix, _, number = custom_id.partition("-")
    return int(number) if prefix == "item" and number.isdigit() else None


class _JobBase:
    """What the twins share: the codec, the last status, decoding lines. No I/O."""

    def __init__(
        self,
        codec: BatchCodec,
        status: BatchStatus,
        *,
        model: str,
        structured: StructuredCall | None,
        retry: RetryPolicy,
        price: Price | None = None,
    ) -> None:
        self._codec = codec
        self._status = status
        self.model = model
        self.structured = structured
        self._retry = retry
        self.price = price
        """The price per request at the Batch API's discount (None: unknown, so `cost` is)."""

    @property
    def id(self) -> str:
        """The provider's job id: pass it to `client.batch_job()` to resume elsewhere."""
        return self._status.id

    @property
    def status(self) -> str:
        """The status as last read: validating, in_progress, finalizing, completed, failed,
        expired, cancelling or cancelled (OpenAI's names; the others map onto them)."""
        return self._status.state

    @property
    def info(self) -> BatchStatus:
        """Everything last read about the job (counts, the provider's raw object)."""
        return self._status

    @property
    def provider(self) -> str:
        """The provider's name."""
        return self._codec.provider.label

    def __repr__(self) -> str:
        return f"{type(self).__name__}(id={self.id!r}, status={self.status!r})"

    def _decode(self, line: BatchLine) -> BatchResult:
        index = _index(line.custom_id)
        if line.error is not None:
            return BatchResult(line.custom_id, index, None, line.error)
        sup = Supervisor(
            self._codec.provider,
            self.model,
            stream=False,
            policy=_NO_RETRY,
            timeouts=Timeouts(),
            structured=self.structured,
            price=self.price,
        )
        sup.begin()
        try:
            response = check_structured(sup.atomic_body(line.body), self.structured)
        except (ProviderError, StructuredOutputError) as exc:
            return BatchResult(line.custom_id, index, None, exc)
        return BatchResult(line.custom_id, index, response)

    def _ordered(self, lines: Sequence[BatchLine]) -> list[BatchResult]:
        results = [self._decode(line) for line in lines]
        results.sort(key=lambda r: (r.index is None, r.index or 0, r.custom_id))
        return results


def _next_poll(interval: float, ceiling: float) -> float:
    return min(ceiling, interval * 1.5)


class BatchJob(_JobBase):
    """A provider batch job, driven with blocking calls. From `Client.batch()` or
    `Client.batch_job(id)`.

    Example:
        job = client.batch(prompts, model="gpt-4.1-mini")
        for item in job.wait(progress=True):
            print(item.index, item.response.text if item.response else item.error)
    """

    def __init__(
        self,
        http: httpx.Client,
        codec: BatchCodec,
        status: BatchStatus,
        *,
        model: str,
        structured: StructuredCall | None,
        retry: RetryPolicy,
        price: Price | None = None,
    ) -> None:
        super().__init__(
            codec, status, model=model, structured=structured, retry=retry, price=price
        )
        self._http = http

    def _run(self, flow: Flow) -> Any:
        return drive(self._http, self._codec.provider, flow, self._retry)

    def refresh(self) -> str:
        """Read the job's status from the provider; returns it.

        Raises:
            ProviderError: the provider refused or could not be reached (after retries).
        """
        self._status = self._run(self._codec.get(self.id))
        return self.status

    def cancel(self) -> str:
        """Ask the provider to cancel the job (requests already done keep their results).

        Returns:
            The status after asking: usually "cancelling", then "cancelled".
        """
        self._status = self._run(self._codec.cancel(self.id))
        return self.status

    def results(self) -> list[BatchResult]:
        """The results of an ended job, in input order (for `client.batch()` jobs).

        Raises:
            ConfigurationError: the job has not ended: use `wait()`.
            ProviderError: the job failed as a whole (for example its input was invalid).
        """
        if not self._status.ended:
            raise ConfigurationError(f"batch {self.id} is {self.status}: wait() for it first")
        return self._ordered(self._run(self._codec.results(self._status)))

    def wait(
        self,
        *,
        progress: bool = False,
        poll_interval: float = 5.0,
        max_poll_interval: float = 60.0,
        timeout: float | None = None,
    ) -> Iterator[BatchResult]:
        """Poll until the job ends (backing off from `poll_interval` to `max_poll_interval`
        seconds, x1.5 each time), then yield its results in input order.

        Args:
            progress: show a progress bar (tqdm) of finished requests.
            poll_interval: the first wait between polls, seconds.
            max_poll_interval: the longest wait between polls, seconds.
            timeout: give up after this many seconds (the job goes on at the provider).

        Raises:
            TimeoutError: `timeout` passed before the job ended.
            ProviderError: polling failed after retries, or the job failed as a whole.
        """
        bar = _bar(progress, self._status)
        deadline = None if timeout is None else time.monotonic() + timeout
        interval = poll_interval
        try:
            while not self._status.ended:
                if deadline is not None and time.monotonic() + interval > deadline:
                    raise TimeoutError(f"batch {self.id} is still {self.status} after {timeout} s")
                time.sleep(interval)
                interval = _next_poll(interval, max_poll_interval)
                self.refresh()
                _update(bar, self._status)
        finally:
            if bar is not None:
                bar.close()
        yield from self.results()


class AsyncBatchJob(_JobBase):
    """The async twin of `BatchJob`: `await job.refresh()`, `async for item in job.wait()`."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        codec: BatchCodec,
        status: BatchStatus,
        *,
        model: str,
        structured: StructuredCall | None,
        retry: RetryPolicy,
        price: Price | None = None,
    ) -> None:
        super().__init__(
            codec, status, model=model, structured=structured, retry=retry, price=price
        )
        self._http = http

    async def _run(self, flow: Flow) -> Any:
        return await adrive(self._http, self._codec.provider, flow, self._retry)

    async def refresh(self) -> str:
        """Read the job's status; see `BatchJob.refresh`."""
        self._status = await self._run(self._codec.get(self.id))
        return self.status

    async def cancel(self) -> str:
        """Ask to cancel the job; see `BatchJob.cancel`."""
        self._status = await self._run(self._codec.cancel(self.id))
        return self.status

    async def results(self) -> list[BatchResult]:
        """The results of an ended job; see `BatchJob.results`."""
        if not self._status.ended:
            raise ConfigurationError(f"batch {self.id} is {self.status}: wait() for it first")
        return self._ordered(await self._run(self._codec.results(self._status)))

    async def wait(
        self,
        *,
        progress: bool = False,
        poll_interval: float = 5.0,
        max_poll_interval: float = 60.0,
        timeout: float | None = None,  # noqa: ASYNC109 (the same signature as BatchJob.wait)
    ) -> AsyncIterator[BatchResult]:
        """Poll until the job ends, then yield its results; see `BatchJob.wait`."""
        import anyio

        bar = _bar(progress, self._status)
        deadline = None if timeout is None else time.monotonic() + timeout
        interval = poll_interval
        try:
            while not self._status.ended:
                if deadline is not None and time.monotonic() + interval > deadline:
                    raise TimeoutError(f"batch {self.id} is still {self.status} after {timeout} s")
                await anyio.sleep(interval)
                interval = _next_poll(interval, max_poll_interval)
                await self.refresh()
                _update(bar, self._status)
        finally:
            if bar is not None:
                bar.close()
        for result in await self.results():
            yield result


def _bar(progress: bool, status: BatchStatus) -> Any:
    if not progress:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        raise ConfigurationError(
            "progress=True needs tqdm: pip install 'tally-client[progress]'"
        ) from None
    bar = tqdm(total=status.total, unit="request", desc=f"batch {status.state}")
    _update(bar, status)
    return bar


def _update(bar: Any, status: BatchStatus) -> None:
    if bar is None:
        return
    if status.total is not None:
        bar.total = status.total
    bar.n = (status.succeeded or 0) + (status.failed or 0)
    bar.set_description(f"batch {status.state}", refresh=False)
    bar.refresh()


# -- the drivers of a flow ------------------------------------------------------------------


def _request(http: httpx.Client | httpx.AsyncClient, call: HttpCall) -> httpx.Request:
    return http.build_request(
        call.method,
        call.url,
        headers=dict(call.headers),
        json=call.json,
        files=dict(call.files) if call.files else None,
        data=dict(call.data) if call.data else None,
        timeout=httpx.Timeout(60.0, connect=10.0),
    )


def _reply(response: httpx.Response) -> HttpReply:
    return HttpReply(response.status_code, response.headers, response.content)


def _failed(error: BaseException) -> ProviderError:
    from ._errors import ConnectError, TransportError

    if isinstance(error, httpx.ConnectError):
        return ConnectError(f"could not connect: {error}")
    return TransportError(f"{type(error).__name__}: {error}")


def drive(http: httpx.Client, provider: Provider, flow: Flow, retry: RetryPolicy) -> Any:
    """Run a flow with blocking requests; each request is retried by the policy."""
    try:
        call = next(flow)
        while True:
            attempt = 1
            while True:
                try:
                    reply = _reply(http.send(_request(http, call)))
                    if reply.status >= 400:  # typed, so the policy can decide on a retry
                        raise provider.error_from_response(reply.status, reply.body, reply.headers)
                    break
                except (httpx.HTTPError, ProviderError) as exc:
                    error = _failed(exc) if isinstance(exc, httpx.HTTPError) else exc
                    delay = retry.delay(attempt, error)
                    if delay is None:
                        raise error from exc
                    time.sleep(delay)
                    attempt += 1
            call = flow.send(reply)
    except StopIteration as stop:
        return stop.value


async def adrive(
    http: httpx.AsyncClient, provider: Provider, flow: Flow, retry: RetryPolicy
) -> Any:
    """Run a flow with awaited requests; see `drive`."""
    import anyio

    try:
        call = next(flow)
        while True:
            attempt = 1
            while True:
                try:
                    reply = _reply(await http.send(_request(http, call)))
                    if reply.status >= 400:
                        raise provider.error_from_response(reply.status, reply.body, reply.headers)
                    break
                except (httpx.HTTPError, ProviderError) as exc:
                    error = _failed(exc) if isinstance(exc, httpx.HTTPError) else exc
                    delay = retry.delay(attempt, error)
                    if delay is None:
                        raise error from exc
                    await anyio.sleep(delay)
                    attempt += 1
            call = flow.send(reply)
    except StopIteration as stop:
        return stop.value
