"""map() against the real local model: a few hundred items, interrupted, then resumed."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import httpx
import pytest

from tally_client import AsyncClient, Client
from tally_client.testing.llama import LlamaServer

pytestmark = pytest.mark.live

N = 200


def counting_http() -> tuple[httpx.Client, list[str]]:
    sent: list[str] = []

    def hook(request: httpx.Request) -> None:
        sent.append(json.loads(request.content)["messages"][-1]["content"])

    return httpx.Client(timeout=None, event_hooks={"request": [hook]}), sent


def ctrl_c_after(checkpoint: Path, items: int) -> None:
    """Send a real Ctrl-C (SIGINT) once `items` results are in the checkpoint."""
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if checkpoint.exists() and checkpoint.read_bytes().count(b"\n") > items:
            break
        time.sleep(0.05)
    os.kill(os.getpid(), signal.SIGINT)


def test_map_on_the_local_model_resumes_after_ctrl_c(llama: LlamaServer, tmp_path: Path) -> None:
    prompts = [f"Reply with one word about the number {i}." for i in range(N)]
    checkpoint = tmp_path / "labels.jsonl"
    http, first_sent = counting_http()
    threading.Thread(target=ctrl_c_after, args=(checkpoint, 10), daemon=True).start()
    with (
        Client(base_url=llama.base_url, http_client=http) as client,
        pytest.raises(KeyboardInterrupt),
    ):
        client.map(prompts, concurrency=4, checkpoint=checkpoint, max_tokens=3)
    http.close()
    recorded = [json.loads(line) for line in checkpoint.read_text().splitlines()[1:]]
    done = {r["i"] for r in recorded if "response" in r}
    assert 0 < len(done) < N, "the interruption came mid-run"
    assert len(first_sent) < N  # no new calls after Ctrl-C
    before = {r["i"]: r["response"]["text"] for r in recorded if "response" in r}

    http, second_sent = counting_http()
    with Client(base_url=llama.base_url, http_client=http) as client:
        result = client.map(prompts, concurrency=4, checkpoint=checkpoint, max_tokens=3)
    http.close()
    assert result.resumed == len(done)
    assert sorted(second_sent) == sorted(p for i, p in enumerate(prompts) if i not in done)
    assert result.errors == []
    assert len(result) == N
    for i, response in enumerate(result):
        assert response is not None
        assert response.usage.output_tokens is not None and response.usage.output_tokens <= 3
        if i in before:
            assert response.text == before[i]  # read back, not called again
    assert result.usage.output_tokens == sum(r.usage.output_tokens or 0 for r in result if r)


@pytest.mark.anyio
async def test_async_map_on_the_local_model(llama: LlamaServer) -> None:
    prompts = [f"Say {i}." for i in range(40)]
    async with AsyncClient(base_url=llama.base_url) as client:
        result = await client.map(prompts, concurrency=8, max_tokens=3)
    assert result.errors == []
    assert all(r is not None and r.text and r.finish_reason in ("stop", "length") for r in result)
    assert result.usage.input_tokens is not None and result.usage.input_tokens > 40
