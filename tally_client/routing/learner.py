"""Step 3 of routing: a contextual bandit that learns, per envelope shape, which model pays.

Context: the envelope's shape, its fields bucketed as the envelope defines them (task type,
structure, context-length bucket, expected-output bucket, tools or not, time-sensitive,
consumer). Arms: the configured models that can serve the call. Each arm keeps a Beta
posterior of its success (0..1 per call: a complete answer is 1; an error, a cut, an
invalid structured output is 0; `feedback(score=)` replaces that with the caller's verdict),
started from a prior: the model's success pooled over every shape once it has 30 outcomes
(an empirical-Bayes prior worth ten observations, so a new or rare shape starts from what
the model does elsewhere), else the static choice's guess (a model of the tier the task
needs starts at 0.8, each tier below at 0.15 less, worth two observations).

The value of an arm is its expected success minus `cost_weight` x its expected cost relative
to the dearest candidate (and, when the call is time-sensitive, minus `latency_weight` x its
expected E2E relative to the slowest). Confidence is the probability that the best arm is
really best, from a normal approximation of the two leading posteriors. The router draws from
the posteriors (Thompson sampling) on every call, or only while confidence is below
`explore_below` when that is set under 1.0: a draw that differs from the best arm is flagged as
exploration, so exploration happens about as often as the posterior doubts the best arm (often
on a new or close shape, almost never on a settled one), and an early wrong verdict is still
revisited. (A cut-off at 0.9 stopped exploring shapes whose early outcomes were misleading: the
policy learned in one pass of the routing benchmark was worse for it.)

State persists in a local SQLite file (stdlib sqlite3, WAL mode): one row per (shape, model)
with its count and summed success, updated by increments in a background thread, so several
processes can write to one file at once. A missing, locked or corrupt store never fails a
call: the learner carries on in memory and logs why.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import math
import os
import random
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .._envelope import Envelope
from ._worker import Worker

if TYPE_CHECKING:
    import sqlite3

__all__ = ["STORE_ENV", "Learner", "Pick", "default_store", "shape_key"]

STORE_ENV = "TALLY_ROUTER_STORE"
PRIOR_WEIGHT = 2.0
"""How many observations the prior is worth."""
POOLED_MIN = 30
"""Outcomes of a model, over all shapes, from which its pooled success replaces the tier prior."""
POOLED_WEIGHT = 10.0
"""How many observations the pooled prior is worth (it is data, so more than the tier guess)."""
EXPLORE_BELOW = 1.0
"""Draw (Thompson) while confidence is below this; 1.0: always draw, so the chance of exploring
is the chance the posterior gives another model of being better, which falls as outcomes come."""
EXPLORE_SCALE = 1.0
"""Thompson draws come from the posterior with every count divided by this: above 1, wider
draws and more exploration (a policy settled sooner, at more cost while learning). On the
routing benchmark 2.0 learned no better a policy in one pass than 1.0 and saved less while
learning (benchmarks/routing.py, tuning seeds), so plain Thompson sampling is the default."""


log = logging.getLogger("tally_client.routing")


def default_store() -> Path:
    """`$TALLY_ROUTER_STORE`, else ~/.cache/tally_client/router.sqlite3."""
    env = os.environ.get(STORE_ENV)
    if env:
        return Path(env)
    return Path.home() / ".cache" / "tally_client" / "router.sqlite3"


def shape_key(envelope: Envelope) -> str:
    """The shape's key: bucketed envelope fields only, never content."""
    return "|".join(
        (
            envelope.task_type or "-",
            envelope.structure_type,
            envelope.context_length,
            envelope.estimated_tokens or "-",
            "tools" if envelope.tools_used else "-",
            "fast" if envelope.time_sensitive else "-",
            envelope.consumer or "-",
        )
    )


@dataclass(frozen=True)
class Pick:
    """The learner's choice: the model's index, confidence, exploration flag, reasons."""

    index: int
    confidence: float
    exploration: bool
    reasons: tuple[str, ...]


class Learner:
    """Per-shape Beta posteriors over the candidate models, persisted in SQLite.

    Args:
        store: the SQLite file; None for `default_store()`; ":memory:" keeps nothing.
        seed: seeds the exploration draws (same seed, same outcomes: same decisions).
        cost_weight: how much a model's relative cost counts against its expected success
            (0: quality only; 1: a model twice as dear must be much better). The trade-off knob.
        latency_weight: the same for relative E2E, on time-sensitive calls.
        explore_below: explore (Thompson draw) only while confidence is below this (default
            1.0: draw on every call, so the learner explores as often as its posterior doubts
            the best model, and a wrong early verdict is still corrected later).
        explore_scale: draws come from the posterior with its counts divided by this
            (default 1.0; above 1, more exploration). Must be > 0.
        prior_weight: how many observations the tier prior is worth.
        pooled_prior: start a shape from the model's success pooled over every shape.

    Raises:
        ValueError: `explore_scale` is not > 0.
    """

    def __init__(
        self,
        store: str | os.PathLike[str] | None = None,
        *,
        seed: int | None = None,
        cost_weight: float = 0.1,
        latency_weight: float = 0.3,
        explore_below: float = EXPLORE_BELOW,
        explore_scale: float = EXPLORE_SCALE,
        prior_weight: float = PRIOR_WEIGHT,
        pooled_prior: bool = True,
    ) -> None:
        if explore_scale <= 0:
            raise ValueError(f"explore_scale must be > 0, not {explore_scale!r}")
        self.explore_scale = explore_scale
        self.prior_weight = prior_weight
        self.pooled_prior = pooled_prior
        self.path = str(default_store() if store is None else store)
        self.cost_weight = cost_weight
        self.latency_weight = latency_weight
        self.explore_below = explore_below
        self._rng = random.Random(seed)
        # What is learned lives in one _Store per file, shared by every Learner of this
        # process that names it: one connection, one writer thread, one memory of outcomes.
        self._store = _store_for(self.path)
        self._stats = self._store.stats
        self._pooled = self._store.pooled
        self._recorded = self._store.recorded
        self._load = self._store.load

    def flush(self, timeout: float = 5.0) -> bool:
        """Write what was learned to the store; False if it did not finish in `timeout` s."""
        return self._store.writer.flush(timeout)

    def close(self, timeout: float = 5.0) -> None:
        """Write what was learned to the store (the file stays open for the process's other
        learners; it is flushed again at exit)."""
        self.flush(timeout)

    def reset(self) -> None:
        """Forget everything learned, in this process and in the store (a corrupt store is
        recreated)."""
        self._store.reset()

    # -- learning --------------------------------------------------------------------------

    def observations(self, shape: str) -> Mapping[str, tuple[float, float]]:
        """model -> (outcomes seen, summed success) for a shape."""
        arms = self._stats.get(shape)
        if arms is None:
            arms = self._load(shape)
        return {m: (v[0], v[1]) for m, v in arms.items()}

    def record(self, shape: str, model: str, success: float, decision_id: str = "") -> None:
        """Learn one outcome (success 0..1) of `model` on `shape`.

        A second record for the same decision id (a `feedback()` after the automatic one)
        replaces the first instead of counting twice.
        """
        success = min(1.0, max(0.0, float(success)))
        dn, ds = 1.0, success
        if decision_id:
            previous = self._recorded.pop(decision_id, None)
            if previous is not None:
                dn, ds = 0.0, success - previous
            self._recorded[decision_id] = success
            if len(self._recorded) > 10_000:
                self._recorded.popitem(last=False)
        arms = self._stats.get(shape)
        if arms is None:
            arms = self._load(shape)
        arm = arms.setdefault(model, [0.0, 0.0])
        arm[0] += dn
        arm[1] += ds
        pool = self._pooled.setdefault(model, [0.0, 0.0])
        pool[0] += dn
        pool[1] += ds
        if self.path != ":memory:":
            self._store.writer.submit((shape, model, dn, ds))

    def choose(
        self,
        shape: str,
        names: Sequence[str],
        priors: Sequence[float],
        costs: Sequence[float],
        latencies: Sequence[float] | None = None,
    ) -> Pick:
        """Pick among `names` (at least two) for `shape`.

        Args:
            priors: each model's prior success 0..1.
            costs: each model's expected USD for this call.
            latencies: each model's expected E2E seconds, for time-sensitive calls.
        """
        arms = self._stats.get(shape)
        if arms is None:
            arms = self._load(shape)
        top_cost = max(costs) or 1.0
        top_time = max(latencies) if latencies else 0.0
        means: list[float] = []
        values: list[float] = []
        variances: list[float] = []
        alphas: list[float] = []
        betas: list[float] = []
        penalties: list[float] = []
        seen = 0.0
        for i, name in enumerate(names):
            n, s = arms.get(name, (0.0, 0.0))
            seen += n
            prior, weight = priors[i], self.prior_weight
            pooled = self._pooled.get(name) if self.pooled_prior else None
            if pooled is not None and pooled[0] >= POOLED_MIN:
                prior = min(0.99, max(0.01, pooled[1] / pooled[0]))
                weight = POOLED_WEIGHT
            a = s + prior * weight
            b = (n - s) + (1.0 - prior) * weight
            mean = a / (a + b)
            penalty = self.cost_weight * costs[i] / top_cost
            if latencies and top_time > 0:
                penalty += self.latency_weight * latencies[i] / top_time
            means.append(mean)
            penalties.append(penalty)
            values.append(mean - penalty)
            variances.append(mean * (1.0 - mean) / (a + b + 1.0))
            alphas.append(max(a, 1e-3))
            betas.append(max(b, 1e-3))
        order = sorted(range(len(names)), key=lambda i: -values[i])
        best, second = order[0], order[1]
        spread = math.sqrt(variances[best] + variances[second]) or 1e-9
        z = (values[best] - values[second]) / spread
        confidence = round(0.5 * (1.0 + math.erf(z / math.sqrt(2.0))), 3)
        pick, explored = best, False
        if confidence < self.explore_below:
            k = self.explore_scale
            draws = [
                self._rng.betavariate(max(alphas[i] / k, 1e-3), max(betas[i] / k, 1e-3))
                - penalties[i]
                for i in range(len(names))
            ]
            pick = max(range(len(names)), key=draws.__getitem__)
            explored = pick != best
        n_pick = arms.get(names[pick], (0.0, 0.0))[0]
        if explored:
            reasons: tuple[str, ...] = (
                f"{names[pick]}: exploring (confidence {confidence:.2f} is low): the best "
                f"estimate is {names[best]}, but {names[pick]} has {n_pick:.0f} outcome(s) on "
                "this task shape and may be as good for less",
            )
        elif seen == 0:
            reasons = (
                f"{names[pick]}: nothing learned yet on this task shape; the prior from the "
                f"catalog favours it (expected success {means[pick]:.2f} for its cost)",
            )
        else:
            other = names[second]
            reasons = (
                f"{names[pick]}: the best expected success for its cost on this task shape "
                f"({means[pick]:.2f} from {n_pick:.0f} outcome(s), against {other} "
                f"{means[second]:.2f}; cost weight {self.cost_weight})",
            )
        return Pick(pick, confidence, explored, reasons)


class _Store:
    """The learned state of one store file in this process, and its SQLite connection."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.stats: dict[str, dict[str, list[float]]] = {}
        self.pooled: dict[str, list[float]] = {}
        self.recorded: OrderedDict[str, float] = OrderedDict()
        self.lock = threading.Lock()
        self.db: sqlite3.Connection | None = None
        self.failed: str | None = None
        self.writer: Worker[tuple[str, str, float, float]] = Worker(
            self.write, maxsize=10_000, name="tally-router-store"
        )

    def connect(self) -> sqlite3.Connection | None:
        import sqlite3  # on first use: `import tally_client` stays cheap

        if self.db is not None or self.failed is not None or self.path == ":memory:":
            return self.db
        try:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, timeout=5.0, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute(
                "CREATE TABLE IF NOT EXISTS arms (shape TEXT NOT NULL, model TEXT NOT NULL, "
                "n REAL NOT NULL, s REAL NOT NULL, PRIMARY KEY (shape, model))"
            )
            db.commit()
        except (sqlite3.Error, OSError) as exc:
            self.fail(exc)
            return None
        self.db = db
        return db

    def fail(self, exc: BaseException) -> None:
        import sqlite3

        self.failed = f"{type(exc).__name__}: {exc}"
        log.warning(
            "the routing store %s is unusable (%s): learning continues in memory only; "
            "Learner.reset() recreates it",
            self.path,
            self.failed,
        )
        if self.db is not None:
            with contextlib.suppress(sqlite3.Error):
                self.db.close()
            self.db = None

    def load(self, shape: str) -> dict[str, list[float]]:
        import sqlite3

        arms: dict[str, list[float]] = {}
        with self.lock:
            db = self.connect()
            if db is not None:
                try:
                    rows = db.execute(
                        "SELECT model, n, s FROM arms WHERE shape = ?", (shape,)
                    ).fetchall()
                    arms = {m: [float(n), float(s)] for m, n, s in rows}
                    for m, (n, s) in arms.items():
                        pool = self.pooled.setdefault(m, [0.0, 0.0])
                        pool[0] += n
                        pool[1] += s
                except sqlite3.Error as exc:
                    self.fail(exc)
        self.stats[shape] = arms
        return arms

    def write(self, batch: list[tuple[str, str, float, float]]) -> None:
        import sqlite3

        with self.lock:
            db = self.connect()
            if db is None:
                return
            try:
                with db:
                    db.executemany(
                        "INSERT INTO arms (shape, model, n, s) VALUES (?, ?, ?, ?) "
                        "ON CONFLICT (shape, model) DO UPDATE SET n = n + excluded.n, "
                        "s = s + excluded.s",
                        batch,
                    )
            except sqlite3.Error as exc:
                self.fail(exc)

    def reset(self) -> None:
        import sqlite3

        self.writer.flush(5.0)
        with self.lock:
            self.stats.clear()
            self.pooled.clear()
            self.recorded.clear()
            db = self.connect()
            if db is not None:
                try:
                    with db:
                        db.execute("DELETE FROM arms")
                    return
                except sqlite3.Error as exc:
                    self.fail(exc)
            if self.path != ":memory:":
                for suffix in ("", "-wal", "-shm"):
                    with contextlib.suppress(OSError):
                        os.unlink(self.path + suffix)
            self.failed = None
            self.connect()


_stores: dict[str, _Store] = {}
_stores_lock = threading.Lock()


def _store_for(path: str) -> _Store:
    if path == ":memory:":
        return _Store(path)  # nothing to share: each in-memory learner is its own
    key = os.path.abspath(path)
    with _stores_lock:
        store = _stores.get(key)
        if store is None:
            store = _stores[key] = _Store(path)
            atexit.register(store.writer.flush, 2.0)
        return store
