"""The embedded router's learner: deterministic, persistent, safe with several processes."""

from __future__ import annotations

import logging
import multiprocessing
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tally_client import EmbeddedRouter, ModelSpec, build_envelope
from tally_client._decision import Outcome, Price
from tally_client.routing.learner import Learner

CHEAP = ModelSpec("cheap", "p", quality=2, price=Price(0.1, 0.4))
DEAR = ModelSpec("dear", "p", quality=3, price=Price(2.0, 8.0))
MODELS = [CHEAP, DEAR]
QA = build_envelope(task_type="qa-simple", consumer="machine", expected_output_tokens=50)


def run(router: EmbeddedRouter, calls: int, good: dict[str, float]) -> list[str]:
    """`calls` routed calls; a model succeeds when (call index * 0.37) mod 1 < its rate."""
    chosen = []
    for i in range(calls):
        d = router.route(QA, MODELS)
        chosen.append(d.model)
        success = 1.0 if (i * 0.37) % 1.0 < good[d.model] else 0.0
        router.record(d, Outcome(d.id, d.model, success, "complete"))
    return chosen


def test_same_seed_same_decisions(tmp_path: Path) -> None:
    a = run(EmbeddedRouter(store=tmp_path / "a.db", seed=7), 60, {"cheap": 0.9, "dear": 0.95})
    b = run(EmbeddedRouter(store=tmp_path / "b.db", seed=7), 60, {"cheap": 0.9, "dear": 0.95})
    c = run(EmbeddedRouter(store=tmp_path / "c.db", seed=8), 60, {"cheap": 0.9, "dear": 0.95})
    assert a == b
    assert a != c  # the seed matters: exploration draws differ


def test_learns_the_cheap_model_suffices_and_stops_exploring(tmp_path: Path) -> None:
    router = EmbeddedRouter(store=tmp_path / "r.db", seed=1)
    chosen = run(router, 300, {"cheap": 0.95, "dear": 0.96})
    assert chosen[-100:].count("cheap") >= 95
    d = router.route(QA, MODELS)
    assert d.model == "cheap" and not d.exploration
    assert d.confidence.model >= 0.9
    assert "best expected success for its cost" in d.reasons[-1]


def test_learns_the_cheap_model_fails_and_pays_for_the_dear_one(tmp_path: Path) -> None:
    router = EmbeddedRouter(store=tmp_path / "r.db", seed=1)
    chosen = run(router, 300, {"cheap": 0.3, "dear": 0.95})
    assert chosen[-100:].count("dear") >= 95


def test_exploration_is_flagged_and_only_while_unsure(tmp_path: Path) -> None:
    router = EmbeddedRouter(store=tmp_path / "r.db", seed=3)
    first = [router.route(QA, MODELS) for _ in range(40)]
    explored = [d for d in first if d.exploration]
    assert explored, "a new shape must be explored"
    assert all(d.confidence.model < 0.9 for d in explored)
    assert all("exploring" in d.reasons[-1] for d in explored)


RELOAD = """
import sys
from tally_client import EmbeddedRouter, ModelSpec, build_envelope
from tally_client._decision import Price
models = [ModelSpec("cheap", "p", quality=2, price=Price(0.1, 0.4)),
          ModelSpec("dear", "p", quality=3, price=Price(2.0, 8.0))]
env = build_envelope(task_type="qa-simple", consumer="machine", expected_output_tokens=50)
router = EmbeddedRouter(store=sys.argv[1], seed=99)
d = router.route(env, models)
seen = router.learner.observations(d.shape)
print(d.model, d.exploration, int(sum(n for n, _ in seen.values())))
"""


def test_state_persists_and_reloads_in_a_new_process(tmp_path: Path) -> None:
    store = tmp_path / "r.db"
    router = EmbeddedRouter(store=store, seed=1)
    run(router, 200, {"cheap": 0.95, "dear": 0.96})
    router.close()
    out = subprocess.run(
        [sys.executable, "-c", RELOAD, str(store)], capture_output=True, text=True, check=True
    )
    assert out.stdout.split() == ["cheap", "False", "200"]


def test_learners_of_one_store_share_what_they_learn(tmp_path: Path) -> None:
    store = tmp_path / "shared.db"
    a, b = EmbeddedRouter(store=store, seed=1), EmbeddedRouter(store=store, seed=2)
    run(a, 50, {"cheap": 0.95, "dear": 0.96})
    assert b.learner is not None and a.learner is not None
    shape = b.route(QA, MODELS).shape or ""
    assert b.learner.observations(shape) == a.learner.observations(shape)


def _writer(store: str, model: str, n: int) -> None:
    learner = Learner(store)
    for i in range(n):
        learner.record("shape-x", model, 1.0 if i % 2 else 0.0, f"{model}-{i}")
    learner.close()


def test_two_processes_writing_at_once_lose_nothing(tmp_path: Path) -> None:
    store = str(tmp_path / "shared.db")
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(store, m, 400)) for m in ("a", "b", "a")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    rows = dict(
        ((m, (n, s)) for m, n, s in sqlite3.connect(store).execute("SELECT model, n, s FROM arms"))
    )
    assert rows == {"a": (800.0, 400.0), "b": (400.0, 200.0)}


def test_feedback_replaces_the_automatic_outcome(tmp_path: Path) -> None:
    learner = Learner(tmp_path / "f.db")
    learner.record("s", "m", 1.0, "d1")
    learner.record("s", "m", 0.25, "d1")  # the caller's verdict on the same call
    assert learner.observations("s")["m"] == (1.0, 0.25)


def test_a_corrupt_store_never_fails_a_call_and_reset_recreates_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = tmp_path / "corrupt.db"
    store.write_bytes(b"this is not a database" * 100)
    router = EmbeddedRouter(store=store, seed=1)
    with caplog.at_level(logging.WARNING, logger="tally_client.routing"):
        d = router.route(QA, MODELS)
        router.record(d, Outcome(d.id, d.model, 1.0, "complete"))
    assert d.model in ("cheap", "dear")
    assert any("unusable" in r.message for r in caplog.records)
    router.reset()
    router.record(d, Outcome("other", d.model, 1.0, "complete"))
    assert router.learner is not None and router.learner.flush()
    assert sqlite3.connect(store).execute("SELECT count(*) FROM arms").fetchone() == (1,)


def test_a_missing_directory_is_created_and_an_unwritable_one_is_survived(tmp_path: Path) -> None:
    router = EmbeddedRouter(store=tmp_path / "deep" / "er" / "r.db")
    d = router.route(QA, MODELS)
    router.record(d, Outcome(d.id, d.model, 1.0, "complete"))
    router.close()
    assert (tmp_path / "deep" / "er" / "r.db").exists()
    blocked = tmp_path / "file"
    blocked.write_text("x")
    router = EmbeddedRouter(store=blocked / "r.db")  # a path under a regular file
    d = router.route(QA, MODELS)
    router.record(d, Outcome(d.id, d.model, 1.0, "complete"))
    assert d.model in ("cheap", "dear")


def test_learning_can_be_turned_off_and_reset(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    off = EmbeddedRouter(learning=False)
    assert off.learner is None
    assert {off.route(QA, MODELS).model for _ in range(20)} == {"cheap"}  # the static choice
    monkeypatch.setenv("TALLY_ROUTER_LEARNING", "0")
    assert EmbeddedRouter().learner is None
    router = EmbeddedRouter(learning=True, store=tmp_path / "r.db", seed=1)
    run(router, 100, {"cheap": 0.95, "dear": 0.96})
    router.reset()
    assert router.learner is not None
    assert router.learner.observations(router.route(QA, MODELS).shape or "") == {}


def _explorations(scale: float, seed: int) -> int:
    """Exploring decisions in 300 calls where the cheap model is nearly as good as the dear one
    (the answer is close at the default cost weight, so the learner stays unsure for long)."""
    router = EmbeddedRouter(store=":memory:", seed=seed, explore_scale=scale)
    explored = 0
    for i in range(300):
        d = router.route(QA, MODELS)
        explored += d.exploration
        rate = {"cheap": 0.86, "dear": 0.95}[d.model]
        router.record(d, Outcome(d.id, d.model, 1.0 if (i * 0.37) % 1.0 < rate else 0.0, "x"))
    return explored


def test_a_wider_exploration_scale_explores_more_and_stays_deterministic() -> None:
    narrow = [_explorations(1.0, seed) for seed in range(5)]
    wide = [_explorations(4.0, seed) for seed in range(5)]
    assert sum(wide) > sum(narrow) > 0
    assert [_explorations(4.0, seed) for seed in range(5)] == wide  # same seed, same draws


def test_exploration_scale_must_be_positive() -> None:
    with pytest.raises(ValueError, match="explore_scale"):
        Learner(":memory:", explore_scale=0.0)


def test_a_confident_learner_below_its_explore_threshold_never_draws() -> None:
    learner = Learner(":memory:", seed=1, explore_below=0.5)
    for i in range(200):
        learner.record("s", "cheap", 1.0 if i % 10 else 0.0)  # 0.9
        learner.record("s", "dear", 1.0 if i % 2 else 0.0)  # 0.5
    picks = [learner.choose("s", ["cheap", "dear"], [0.8, 0.8], [0.1, 1.0]) for _ in range(50)]
    assert {(p.index, p.exploration) for p in picks} == {(0, False)}
    assert picks[0].confidence > 0.99


def test_an_early_wrong_verdict_is_revisited() -> None:
    """The cheap model's first outcomes on a shape are all failures (bad luck): the learner
    still draws on later calls, tries it again and finds it suffices. (With exploration cut
    off at confidence 0.9, seeds 1 and 4 stayed on the dear model for good.)"""
    for seed in range(5):
        router = EmbeddedRouter(store=":memory:", seed=seed)
        d = router.route(QA, MODELS)
        for i in range(6):
            router.record(d, Outcome(f"bad-{i}", "cheap", 0.0, "complete"))
        chosen = run(router, 1500, {"cheap": 0.97, "dear": 0.97})
        assert chosen[-200:].count("cheap") >= 180, seed
