"""map(): adaptive limit, per-item failures, order, checkpoint and resume, on both twins."""

from __future__ import annotations

import errno
import json
import math
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import anyio
import pytest

from tally_client import (
    AdaptiveLimit,
    AsyncClient,
    BadRequestError,
    CallInfo,
    CallObserver,
    CheckpointError,
    Client,
    ConfigurationError,
    Observer,
    RateLimitError,
    Response,
    RetryPolicy,
)
from tally_client._errors import status_error
from tally_client._map import error_from_dict, error_to_dict, response_from_dict, response_to_dict
from tally_client.testing import ReplayServer, Reply, Scenario

RECORDINGS = Path(__file__).parent / "recordings"
FAST = RetryPolicy(max_attempts=4, initial_delay=0.001, max_delay=0.01)


def chat_reply(text: str, prompt_tokens: int = 3, completion_tokens: int = 2) -> Reply:
    body = json.loads((RECORDINGS / "openai_chat" / "text.json").read_text())
    body["choices"][0]["message"]["content"] = text
    body["usage"] = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }
    return Reply.json(body)


RATE_LIMITED = Reply.error(
    429, {"error": {"message": "slow down", "type": "rate_limit_error"}}, {"retry-after-ms": "5"}
)


@pytest.fixture
def server() -> Iterator[ReplayServer]:
    with ReplayServer() as s:
        yield s


def served_texts(server: ReplayServer, url: str, replies: list[Reply]) -> dict[str, str]:
    """prompt -> the text of the last 200 reply the server sent for it."""
    out: dict[str, str] = {}
    for request in server.requests(url):
        reply = replies[min(request.attempt, len(replies) - 1)]
        if reply.status == 200:
            prompt = request.json()["messages"][-1]["content"]
            out[prompt] = json.loads(reply.body)["choices"][0]["message"]["content"]
    return out


# -- the limiter ------------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def rate_limit(retry_after: float | None = None) -> RateLimitError:
    error = status_error(429, "slow down", retry_after=retry_after)
    assert isinstance(error, RateLimitError)
    return error


def test_limit_admits_up_to_its_ceiling_then_waits_for_a_release() -> None:
    limit = AdaptiveLimit(3, clock=FakeClock())
    assert [limit.admit() for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limit.admit() == math.inf
    limit.release(True, 0.1)
    assert limit.admit() == 0.0
    assert limit.in_flight == 3


def test_a_429_halves_the_limit_once_per_round_trip_and_successes_grow_it_back() -> None:
    clock = FakeClock()
    limit = AdaptiveLimit(64, clock=clock)
    limit.admit()
    limit.release(True, 0.2)  # round trip estimate: 0.2 s
    assert limit.overloaded(rate_limit())
    assert limit.limit == 32
    limit.overloaded(rate_limit())  # same burst: no second cut
    assert limit.limit == 32
    clock.now += 0.25
    limit.overloaded(rate_limit())
    assert limit.limit == 16
    for _ in range(17):  # one round of `limit` successes adds one
        limit.admit()
        limit.release(True, 0.2)
    assert limit.limit == 17
    assert [c.reason for c in limit.trace] == ["start", "decrease", "decrease", "increase"]
    assert not limit.overloaded(BadRequestError("bad", status_code=400))


def test_the_limit_never_goes_below_its_floor_nor_above_its_ceiling() -> None:
    clock = FakeClock()
    limit = AdaptiveLimit(4, minimum=2, clock=clock)
    for _ in range(5):
        clock.now += 1
        limit.overloaded(rate_limit())
    assert limit.limit == 2
    for _ in range(100):
        limit.admit()
        limit.release(True, 0.01)
    assert limit.limit == 4


def test_retry_after_holds_new_calls_back_until_it_passes() -> None:
    clock = FakeClock()
    limit = AdaptiveLimit(8, clock=clock)
    limit.overloaded(rate_limit(retry_after=2.0))
    assert limit.admit() == pytest.approx(2.0)
    clock.now = 1.5
    assert limit.admit() == pytest.approx(0.5)
    clock.now = 2.0
    assert limit.admit() == 0.0
    assert limit.trace[-1].reason == "pause"
    assert limit.trace[-1].pause == pytest.approx(2.0)


def test_bad_limits_are_configuration_errors() -> None:
    with pytest.raises(ConfigurationError, match="concurrency"):
        AdaptiveLimit(0)
    with pytest.raises(ConfigurationError, match="backoff"):
        AdaptiveLimit(4, backoff=1.5)
    with pytest.raises(ConfigurationError, match="trace_size"):
        AdaptiveLimit(4, trace_size=-1)


def test_the_trace_keeps_only_the_latest_changes() -> None:
    # A long pipeline that keeps hitting 429s must not grow the trace without bound.
    clock = FakeClock()
    limit = AdaptiveLimit(4, clock=clock, trace_size=8)
    for _ in range(1000):
        clock.now += 1
        limit.overloaded(rate_limit(retry_after=0.5))  # a decrease and a pause
        for _ in range(20):
            limit.admit()
            limit.release(True, 0.01)  # increases back to 4
    assert len(limit.trace) == 8
    assert limit.changes > 3000  # every change was counted, the dropped ones too
    assert [c.at for c in limit.trace] == sorted(c.at for c in limit.trace)
    assert limit.trace[-1].at == pytest.approx(clock.now)  # the newest are the ones kept
    assert len(AdaptiveLimit(4).trace) == 1  # the default keeps 1,000; "start" is the first


# -- serialisation ------------------------------------------------------------------------


def test_a_response_survives_the_checkpoint_round_trip(server: ReplayServer) -> None:
    url = server.add(
        Scenario(RATE_LIMITED, Reply.from_file(RECORDINGS / "openai_chat" / "tool_call.json"))
    )
    with Client(base_url=url + "/v1", retry=FAST) as client:
        response = client.complete("hi", tools=[{"name": "get_weather"}])
    back = response_from_dict(json.loads(json.dumps(response_to_dict(response))))
    assert back.tool_calls == response.tool_calls
    assert back.usage == response.usage
    assert back.finish_reason == response.finish_reason
    assert back.metrics == response.metrics
    assert len(back.attempts) == 2
    assert [a.usage for a in back.attempts] == [a.usage for a in response.attempts]
    assert [a.price for a in back.attempts] == [a.price for a in response.attempts]
    assert back.cost == response.cost
    assert isinstance(back.attempts[0].error, RateLimitError)
    assert back.attempts[0].error.status_code == 429
    assert str(back.attempts[0].error) == str(response.attempts[0].error)
    again = error_from_dict(error_to_dict(ValueError("boom")))
    assert "ValueError: boom" in str(again)


# -- map() over the replay server --------------------------------------------------------------


def test_map_returns_responses_in_input_order_and_sums_usage(server: ReplayServer) -> None:
    replies = [chat_reply(f"answer {k}") for k in range(60)]
    url = server.add(Scenario(*replies))
    prompts = [f"prompt {i}" for i in range(60)]
    with Client(base_url=url + "/v1", retry=FAST) as client:
        result = client.map(prompts, concurrency=8, max_tokens=4)
    got = served_texts(server, url, replies)
    assert [r.text for r in result.responses if r] == [got[p] for p in prompts]
    assert result.errors == []
    assert result.usage.input_tokens == 3 * 60
    assert result.usage.output_tokens == 2 * 60
    assert result.cost is None
    assert all(r.json()["max_tokens"] == 4 for r in server.requests(url))


def test_map_collects_failures_per_item_and_goes_on(server: ReplayServer) -> None:
    bad = Reply.error(400, {"error": {"message": "no", "type": "invalid_request_error"}})
    replies = [chat_reply("ok")] * 5 + [bad] + [chat_reply("ok")] * 10
    url = server.add(Scenario(*replies))
    with Client(base_url=url + "/v1", retry=FAST) as client:
        result = client.map([f"p{i}" for i in range(15)], concurrency=1)
    assert len(result.errors) == 1
    assert result.errors[0].index == 5
    assert isinstance(result.errors[0].error, BadRequestError)
    assert result[5] is None
    assert sum(r is not None for r in result) == 14
    assert not result.ok


def test_map_retries_429s_and_resets_and_the_limit_backs_off(server: ReplayServer) -> None:
    reset = chat_reply("cut").replace(cut_after=20, cut="reset")
    replies: list[Reply] = []
    for k in range(200):  # 5% 429s and 5% connection resets, in arrival order
        replies.append(RATE_LIMITED if k % 20 == 3 else reset if k % 20 == 11 else chat_reply("ok"))
    url = server.add(Scenario(*replies))
    patient = RetryPolicy(max_attempts=8, initial_delay=0.001, max_delay=0.01)
    with Client(base_url=url + "/v1", retry=patient) as client:
        result = client.map([f"p{i}" for i in range(150)], concurrency=16)
    assert result.errors == []
    assert all(r is not None and r.text == "ok" for r in result)
    reasons = [c.reason for c in result.limit_trace]
    assert "decrease" in reasons
    assert "pause" in reasons
    assert min(c.limit for c in result.limit_trace) < 16
    retried = [r for r in result if r is not None and len(r.attempts) > 1]
    assert retried


def test_map_checkpoint_resumes_without_calling_done_items_again(
    server: ReplayServer, tmp_path: Path
) -> None:
    bad = Reply.error(500, {"error": {"message": "down", "type": "server_error"}})
    first = server.add(Scenario(*[chat_reply(f"a{k}") for k in range(6)], bad))
    checkpoint = tmp_path / "run.jsonl"
    prompts = [f"p{i}" for i in range(10)]
    with Client(base_url=first + "/v1", retry=RetryPolicy(1)) as client:
        one = client.map(prompts, concurrency=1, checkpoint=checkpoint)
    assert len(one.errors) == 4
    assert [r.text if r else None for r in one] == [f"a{k}" for k in range(6)] + [None] * 4
    second = server.add(Scenario(*[chat_reply(f"b{k}") for k in range(4)]))
    with Client(base_url=second + "/v1", retry=RetryPolicy(1)) as client:
        two = client.map(prompts, concurrency=1, checkpoint=checkpoint)
    assert [r.json()["messages"][-1]["content"] for r in server.requests(second)] == prompts[6:]
    assert two.resumed == 6
    assert two.errors == []
    assert [r.text if r else None for r in two] == [f"a{k}" for k in range(6)] + [
        f"b{k}" for k in range(4)
    ]
    assert two.usage.input_tokens == 3 * 10
    # A changed prompt (or changed options) is a different item: it runs again.
    third = server.add(chat_reply("c"))
    with Client(base_url=third + "/v1", retry=RetryPolicy(1)) as client:
        changed = client.map([*prompts[:9], "new"], concurrency=1, checkpoint=checkpoint)
        opts = client.map(prompts[:2], concurrency=1, checkpoint=checkpoint, max_tokens=9)
    assert changed[9] is not None and changed[9].text == "c"
    assert changed.resumed == 9
    assert opts.resumed == 0
    assert len(server.requests(third)) == 3


def test_a_cut_last_line_is_dropped_and_rerun(server: ReplayServer, tmp_path: Path) -> None:
    url = server.add(chat_reply("x"))
    checkpoint = tmp_path / "run.jsonl"
    with Client(base_url=url + "/v1") as client:
        client.map(["a", "b"], checkpoint=checkpoint)
        data = checkpoint.read_bytes()
        checkpoint.write_bytes(data[: len(data) - 10])  # a crash mid-write
        result = client.map(["a", "b"], checkpoint=checkpoint)
    assert result.resumed == 1
    assert len(server.requests(url)) == 3
    lines = checkpoint.read_bytes().splitlines()
    assert all(json.loads(line) for line in lines)  # the cut line is gone
    assert len(lines) == 3


def test_a_file_that_is_not_a_checkpoint_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "notes.jsonl"
    path.write_text('{"hello": 1}\n')
    with (
        Client(base_url="http://127.0.0.1:9/v1") as client,
        pytest.raises(ConfigurationError, match="not a map"),
    ):
        client.map(["a"], checkpoint=path)
    assert path.read_text() == '{"hello": 1}\n'


def test_a_configuration_error_ends_the_run(server: ReplayServer) -> None:
    url = server.add(chat_reply("x"))
    with (
        Client(base_url=url + "/v1") as client,
        pytest.raises(ConfigurationError, match="messages"),
    ):
        client.map(["a", []], concurrency=1)  # an empty message list


def test_one_string_is_refused() -> None:
    with (
        Client(base_url="http://127.0.0.1:9/v1") as client,
        pytest.raises(ConfigurationError, match="list of prompts"),
    ):
        client.map("just one")


def test_progress_bar_shows_tokens(
    server: ReplayServer, capsys: pytest.CaptureFixture[str]
) -> None:
    url = server.add(chat_reply("x"))
    with Client(base_url=url + "/v1") as client:
        client.map(["a", "b", "c"], progress=True)
    err = capsys.readouterr().err
    assert "3/3" in err
    assert "in=9 out=6 tokens" in err


@pytest.mark.parametrize("phase", ["headers", "body"])
def test_ctrl_c_stops_new_calls_closes_open_ones_and_keeps_the_checkpoint(
    server: ReplayServer, tmp_path: Path, phase: str
) -> None:
    late = chat_reply("late")
    slow = (
        late.replace(headers_delay=30.0)
        if phase == "headers"
        else late.replace(stall_after=10, stall_seconds=30.0)
    )
    url = server.add(Scenario(*[chat_reply(f"a{k}") for k in range(5)], slow))
    checkpoint = tmp_path / "run.jsonl"
    prompts = [f"p{i}" for i in range(50)]
    timer = threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGINT))  # a real Ctrl-C
    timer.start()
    with Client(base_url=url + "/v1") as client:
        started = time.monotonic()
        with pytest.raises(KeyboardInterrupt):
            client.map(prompts, concurrency=4, checkpoint=checkpoint)
        assert time.monotonic() - started < 10  # not the 30 s the open calls would take
        server.wait_for_idle(timeout=5)  # their connections are closed, the pool's too
    assert len(server.requests(url)) == 5 + 4  # the slow ones held every slot
    lines = [json.loads(line) for line in checkpoint.read_text().splitlines()]
    done = sorted(line["i"] for line in lines[1:])
    assert len(done) == 5  # the five answered items, whichever the workers sent first
    assert all("response" in line for line in lines[1:])  # no cancelled call recorded
    again = server.add(chat_reply("b"))
    with Client(base_url=again + "/v1") as client:
        result = client.map(prompts, concurrency=4, checkpoint=checkpoint)
    assert result.resumed == 5
    sent = {r.json()["messages"][-1]["content"] for r in server.requests(again)}
    assert sent == {p for i, p in enumerate(prompts) if i not in done}
    assert result.errors == []


# -- the async twin -----------------------------------------------------------------------


@pytest.mark.anyio
async def test_async_map_matches_the_sync_twin(server: ReplayServer, tmp_path: Path) -> None:
    replies: list[Reply] = []
    for k in range(80):
        replies.append(RATE_LIMITED if k % 10 == 4 else chat_reply(f"answer {k}"))
    url = server.add(Scenario(*replies))
    prompts = [f"prompt {i}" for i in range(60)]
    async with AsyncClient(base_url=url + "/v1", retry=FAST) as client:
        result = await client.map(prompts, concurrency=8, checkpoint=tmp_path / "a.jsonl")
    got = served_texts(server, url, replies)
    assert [r.text for r in result if r] == [got[p] for p in prompts]
    assert result.errors == []
    assert "decrease" in [c.reason for c in result.limit_trace]


@pytest.mark.anyio
async def test_async_map_cancelled_keeps_the_checkpoint(
    server: ReplayServer, tmp_path: Path
) -> None:
    slow = chat_reply("late").replace(stall_after=10, stall_seconds=30.0)
    url = server.add(Scenario(*[chat_reply(f"a{k}") for k in range(3)], slow))
    checkpoint = tmp_path / "run.jsonl"
    async with AsyncClient(base_url=url + "/v1") as client:
        with anyio.move_on_after(1.0):
            await client.map([f"p{i}" for i in range(20)], concurrency=3, checkpoint=checkpoint)
        await anyio.to_thread.run_sync(server.wait_for_idle, 5.0)
    assert len(server.requests(url)) == 3 + 3
    lines = [json.loads(line) for line in checkpoint.read_text().splitlines()]
    assert sorted(line["i"] for line in lines[1:]) == [0, 1, 2]


@pytest.mark.anyio
async def test_async_map_failures_are_per_item(server: ReplayServer) -> None:
    bad = Reply.error(400, {"error": {"message": "no", "type": "invalid_request_error"}})
    url = server.add(Scenario(chat_reply("ok"), bad, chat_reply("ok")))
    async with AsyncClient(base_url=url + "/v1") as client:
        result = await client.map(["a", "b", "c", "d"], concurrency=1)
    assert [e.index for e in result.errors] == [1]
    assert [r is not None for r in result] == [True, False, True, True]


@pytest.mark.anyio
async def test_async_map_configuration_error_ends_the_run(server: ReplayServer) -> None:
    url = server.add(chat_reply("x"))
    async with AsyncClient(base_url=url + "/v1") as client:
        with pytest.raises(ConfigurationError, match="messages"):
            await client.map(["a", []], concurrency=1)


def test_map_sums_cost_and_keeps_it_through_the_checkpoint(
    server: ReplayServer, tmp_path: Path
) -> None:
    from tally_client import ModelSpec
    from tally_client._decision import Price
    from tally_client.providers.openai_chat import OpenAIChatProvider

    url = server.add(chat_reply("x", prompt_tokens=1000, completion_tokens=500))
    providers = {"p": OpenAIChatProvider(base_url=url + "/v1", name="p")}
    models = [ModelSpec("m", "p", price=Price(input=2.0, output=8.0))]
    checkpoint = tmp_path / "run.jsonl"
    with Client(models, providers=providers) as client:
        first = client.map(["a", "b"], checkpoint=checkpoint)
        again = client.map(["a", "b"], checkpoint=checkpoint)
    each = (1000 * 2.0 + 500 * 8.0) / 1_000_000
    assert first.cost == pytest.approx(2 * each)
    assert again.resumed == 2
    assert again.cost == pytest.approx(2 * each)
    assert [r.cost for r in again if r] == [pytest.approx(each)] * 2


# -- a checkpoint that cannot be written ------------------------------------------------------


def break_writes(path: Path) -> None:
    """Point this process's open descriptors of `path` at /dev/full: every later write to
    them fails with ENOSPC, as on a full disk (the file keeps what was written before)."""
    target = str(path.resolve())
    full = os.open("/dev/full", os.O_WRONLY)
    try:
        for name in os.listdir("/proc/self/fd"):
            try:
                if os.readlink(f"/proc/self/fd/{name}") == target:
                    os.dup2(full, int(name))
            except OSError:  # a descriptor closed meanwhile
                continue
    finally:
        os.close(full)


class Ends(Observer):
    """Counts the calls that ended; `then(n, action)` runs `action` when the n-th ends."""

    def __init__(self) -> None:
        self.count = 0
        self.cond = threading.Condition()
        self.actions: dict[int, Callable[[], None]] = {}

    def start(self, call: CallInfo) -> CallObserver:
        owner = self

        class Watch(CallObserver):
            def finished(self, response: Response) -> None:
                with owner.cond:
                    owner.count += 1
                    action = owner.actions.pop(owner.count, None)
                    owner.cond.notify_all()
                if action is not None:
                    action()

        return Watch()

    def wait(self, n: int) -> None:
        with self.cond:
            assert self.cond.wait_for(lambda: self.count >= n, timeout=10.0)


needs_dev_full = pytest.mark.skipif(
    not (os.path.exists("/dev/full") and os.path.isdir("/proc/self/fd")),
    reason="simulates a full disk with /dev/full and /proc/self/fd (Linux)",
)


@needs_dev_full
def test_a_failed_checkpoint_write_stops_the_run_with_a_typed_error(
    server: ReplayServer, tmp_path: Path
) -> None:
    url = server.add(chat_reply("x"))
    checkpoint = tmp_path / "run.jsonl"
    ends = Ends()

    def prompts() -> Iterator[str]:
        yield "p0"
        yield "p1"  # admitting it (one slot) records p0 first
        ends.wait(2)
        break_writes(checkpoint)  # the disk fills up before p1 is recorded
        yield from ("p2", "p3", "p4")

    with Client(base_url=url + "/v1", observers=[ends]) as client:
        with pytest.raises(CheckpointError, match="No space left on device") as info:
            client.map(prompts(), concurrency=1, checkpoint=checkpoint)
        assert len(server.requests(url)) == 2  # p2 was never sent: the run stopped
    error = info.value
    assert error.path == checkpoint and str(checkpoint) in str(error)
    assert isinstance(error.__cause__, OSError) and error.__cause__.errno == errno.ENOSPC
    lines = checkpoint.read_text().splitlines()
    assert [json.loads(line).get("i") for line in lines] == [None, 0]  # header, p0: intact
    with Client(base_url=url + "/v1") as client:  # the disk has room again: resume
        result = client.map([f"p{i}" for i in range(5)], concurrency=1, checkpoint=checkpoint)
    assert result.resumed == 1 and result.ok


@needs_dev_full
def test_a_checkpoint_failure_while_stopping_is_raised_not_swallowed(
    server: ReplayServer, tmp_path: Path
) -> None:
    # The input breaks while a finished call waits to be recorded: stopping records it, the
    # write fails, and that must reach the caller (the input's error stays the context)
    # instead of a run that seems to have saved everything it finished.
    url = server.add(chat_reply("x"))
    checkpoint = tmp_path / "run.jsonl"
    ends = Ends()

    def prompts() -> Iterator[str]:
        yield "p0"
        ends.wait(1)
        break_writes(checkpoint)
        raise RuntimeError("the input broke")

    with (
        Client(base_url=url + "/v1", observers=[ends]) as client,
        pytest.raises(CheckpointError) as info,
    ):
        client.map(prompts(), concurrency=2, checkpoint=checkpoint)
    assert isinstance(info.value.__context__, RuntimeError)
    assert isinstance(info.value.__cause__, OSError)
    assert len(checkpoint.read_text().splitlines()) == 1  # the header only: p0 was lost


@needs_dev_full
@pytest.mark.anyio
async def test_async_map_raises_a_failed_checkpoint_write_after_stopping(
    server: ReplayServer, tmp_path: Path
) -> None:
    url = server.add(chat_reply("x"))
    checkpoint = tmp_path / "run.jsonl"
    ends = Ends()
    ends.actions[2] = lambda: break_writes(checkpoint)  # before the 2nd result is recorded
    async with AsyncClient(base_url=url + "/v1", observers=[ends]) as client:
        with pytest.raises(CheckpointError, match="No space left on device") as info:
            await client.map([f"p{i}" for i in range(6)], concurrency=1, checkpoint=checkpoint)
    assert isinstance(info.value.__cause__, OSError)
    lines = checkpoint.read_text().splitlines()
    assert [json.loads(line).get("i") for line in lines] == [None, 0]
