"""The proxy-buffering signal reads arrival on the wire, not the client's own load.

A busy event loop reads its streams late, but the wire did not deliver them in bursts: 200
concurrent streams paced 10 ms apart must raise no `ProxyBufferingWarning`. A stream that
arrives as one burst after a long silence (a buffering proxy's signature) still does.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import anyio
import pytest

from tally_client import AsyncClient, ProxyBufferingWarning, RetryPolicy, Timeouts
from tally_client.testing import ReplayServer, Reply

RECORDINGS = Path(__file__).parent / "recordings"
DELTAS = 60
STREAMS = 200
PROVIDERS = [
    ("openai_responses", "openai-responses", "/v1", b"response.output_text.delta"),
    ("anthropic", "anthropic", "", b"text_delta"),
    ("openai_chat", "openai-chat", "/v1", b'"content"'),
]


def long_stream(name: str, marker: bytes) -> bytes:
    """The provider's text recording with its first text delta repeated: a long answer."""
    body = (RECORDINGS / name / "text.sse").read_bytes()
    events = [e + b"\n\n" for e in body.split(b"\n\n") if e.strip()]
    first = next(i for i, e in enumerate(events) if marker in e)
    return b"".join(events[:first] + [events[first]] * DELTAS + events[first + 1 :])


@pytest.mark.load
@pytest.mark.parametrize(("name", "protocol", "path", "marker"), PROVIDERS)
def test_200_paced_streams_under_load_are_not_called_buffered(
    name: str, protocol: str, path: str, marker: bytes
) -> None:
    # The model "thinks" for 0.6 s (a long first token is not buffering), then paces deltas.
    paced = Reply(
        body=long_stream(name, marker), chunk_delay=0.01, stall_after=0, stall_seconds=0.6
    )

    async def main(url: str) -> list[bool]:
        async with AsyncClient(
            base_url=url + path, protocol=protocol, model="m", api_key="k",
            retry=RetryPolicy(max_attempts=1), timeouts=Timeouts(total=60),
        ) as client:  # fmt: skip
            flags: list[bool] = []

            async def one() -> None:
                response = await client.stream("hi").final()
                assert response.state == "complete"
                flags.append(response.metrics.buffered)

            async with anyio.create_task_group() as tasks:
                for _ in range(STREAMS):
                    tasks.start_soon(one)
            return flags

    with ReplayServer() as server, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        flags = anyio.run(main, server.add(paced))
    assert len(flags) == STREAMS
    assert sum(flags) == 0, f"{sum(flags)} of {STREAMS} paced streams were called buffered"
    assert not [w for w in caught if issubclass(w.category, ProxyBufferingWarning)]


@pytest.mark.parametrize(("name", "protocol", "path", "marker"), PROVIDERS)
def test_a_burst_after_a_silence_is_still_called_buffered(
    name: str, protocol: str, path: str, marker: bytes
) -> None:
    burst = Reply(body=long_stream(name, marker), stall_after=0, stall_seconds=0.7)
    with ReplayServer() as server:
        url = server.add(burst)

        async def main() -> bool:
            async with AsyncClient(
                base_url=url + path, protocol=protocol, model="m", api_key="k"
            ) as client:
                return (await client.stream("hi").final()).metrics.buffered

        with pytest.warns(ProxyBufferingWarning):
            assert anyio.run(main)
