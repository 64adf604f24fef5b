"""Routing benchmark on real outcomes: does the learning router save money without losing quality?

    make bench     (or: .venv/bin/python -m benchmarks.routing [--shuffles 5] [--quick])

`data/routing/outcomes.csv` (derived from RouteLLM's published evaluations; see its README)
holds, for 15,488 MMLU, GSM8K and MT-Bench questions, the score of a weak model
(Mixtral-8x7B) and a strong one (GPT-4-1106). The benchmark replays it as a stream of calls in
a random order: the envelope holds only what a caller knows (the category as task type, the
prompt size as the context bucket), the router picks a model, and only the chosen model's
score is revealed to it afterwards (bandit feedback), as a call's outcome would be. Prices as
RouteLLM priced the pair: $0.24 and $24.7 per million tokens, so a weak call costs ~1% of a
strong one.

Reported over several shuffles: cost saved against always-strong, quality lost (1 - total
score / the always-strong total score), the share of strong calls, per benchmark and overall;
for the learning router over one pass, its policy at the end of the pass (greedy, no
exploration, applied to every question), and its regret curve against the best per-category
choice in hindsight at the same trade-off. The same for the static rules (no learning) and
for random routing at the learner's share of strong calls. The cost weight (the learner's
trade-off) is swept and the curve printed. Targets: at 2% quality lost, the saving of the
policy learned in one pass is at least 90% of the per-category hindsight saving (36.7%), and
the regret per call flattens. Finally, route() p50 and p99 in microseconds with learning on
(target p50 < 50 us), against the static rules measured in the same run.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import random
import statistics
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from tally_client import EmbeddedRouter, ModelSpec, build_envelope
from tally_client._decision import Outcome, Price
from tally_client._envelope import Envelope

DATA = Path(__file__).parent / "data" / "routing" / "outcomes.csv"
WEAK = ModelSpec("mixtral-8x7b-instruct", "bench", quality=2, price=Price(0.24, 0.24))
STRONG = ModelSpec("gpt-4-1106-preview", "bench", quality=3, price=Price(24.7, 24.7))
MODELS = [WEAK, STRONG]
COST = {WEAK.name: 0.24, STRONG.name: 24.7}  # per call, relative: the same tokens either way
HINDSIGHT = {0.01: 0.27, 0.02: 0.367, 0.05: 0.57}  # from the file, as the issue states
TARGET_LOSS = 0.02
TARGET_SHARE_OF_HINDSIGHT = 0.9
SWEEP = (0.0, 0.02, 0.04, 0.06, 0.07, 0.08, 0.09, 0.1, 0.11, 0.12, 0.15, 0.2, 0.3)


@dataclass(frozen=True)
class Row:
    benchmark: str
    category: str
    weak: float
    strong: float
    envelope: Envelope


def load() -> list[Row]:
    with DATA.open(newline="") as f:
        return [
            Row(
                r["benchmark"],
                r["category"],
                float(r["weak_score"]),
                float(r["strong_score"]),
                build_envelope(task_type=r["category"], context_tokens=int(r["prompt_chars"]) // 4),
            )
            for r in csv.DictReader(f)
        ]


@dataclass
class Tally:
    """Totals for one router over some questions."""

    calls: int = 0
    strong: int = 0
    cost: float = 0.0
    score: float = 0.0
    strong_cost: float = 0.0
    strong_score: float = 0.0

    def add(self, row: Row, chose_strong: bool) -> None:
        self.calls += 1
        self.strong += chose_strong
        self.cost += COST[STRONG.name if chose_strong else WEAK.name]
        self.score += row.strong if chose_strong else row.weak
        self.strong_cost += COST[STRONG.name]
        self.strong_score += row.strong

    @property
    def saved(self) -> float:
        return 1.0 - self.cost / self.strong_cost

    @property
    def lost(self) -> float:
        return 1.0 - self.score / self.strong_score

    @property
    def share(self) -> float:
        return self.strong / self.calls


def by_benchmark(rows: list[Row], strong: list[bool]) -> dict[str, Tally]:
    out: dict[str, Tally] = defaultdict(Tally)
    for row, s in zip(rows, strong, strict=True):
        out[row.benchmark].add(row, s)
        out["overall"].add(row, s)
    return out


def hindsight(rows: list[Row], loss: float) -> dict[str, Tally]:
    """Per category, with hindsight: weak where the quality gap per call is smallest, until
    the total loss reaches `loss`."""
    groups: dict[tuple[str, str], list[Row]] = defaultdict(list)
    for row in rows:
        groups[(row.benchmark, row.category)].append(row)
    total = sum(r.strong for r in rows)
    weak: set[tuple[str, str]] = set()
    spent = 0.0
    for key, group in sorted(
        groups.items(), key=lambda kv: sum(r.strong - r.weak for r in kv[1]) / len(kv[1])
    ):
        gap = sum(r.strong - r.weak for r in group)
        if (spent + gap) / total <= loss:
            spent += gap
            weak.add(key)
    return by_benchmark(rows, [(r.benchmark, r.category) not in weak for r in rows])


@dataclass
class Pass:
    """One shuffled pass of the learning router at one cost weight."""

    cost_weight: float
    during: dict[str, Tally]
    policy: dict[str, Tally]
    regret: list[float]  # cumulative regret per call at each tenth of the pass
    route_ns: list[int]


def one_pass(
    rows: list[Row], order: list[int], cost_weight: float, seed: int, time_it: bool
) -> Pass:
    router = EmbeddedRouter(store=":memory:", seed=seed, cost_weight=cost_weight)
    # The best per-category value in hindsight at this trade-off, for regret.
    sums: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0.0])
    for row in rows:
        s = sums[row.category]
        s[0] += 1
        s[1] += row.weak
        s[2] += row.strong
    value = {
        c: (
            s[1] / s[0] - cost_weight * COST[WEAK.name] / COST[STRONG.name],
            s[2] / s[0] - cost_weight,
        )
        for c, s in sums.items()
    }
    chosen: list[bool] = [False] * len(rows)
    regret, cumulative, checkpoints = [], 0.0, {len(order) * k // 10 for k in range(1, 11)}
    timings: list[int] = []
    clock = time.perf_counter_ns
    for step, i in enumerate(order, 1):
        row = rows[i]
        if time_it:
            t = clock()
            d = router.route(row.envelope, MODELS)
            timings.append(clock() - t)
        else:
            d = router.route(row.envelope, MODELS)
        strong = d.model == STRONG.name
        chosen[i] = strong
        router.record(d, Outcome(d.id, d.model, row.strong if strong else row.weak, "complete"))
        weak_v, strong_v = value[row.category]
        cumulative += max(weak_v, strong_v) - (strong_v if strong else weak_v)
        if step in checkpoints:
            regret.append(cumulative / step)
    during = by_benchmark([rows[i] for i in order], [chosen[i] for i in order])
    assert router.learner is not None
    router.learner.explore_below = 0.0  # the learned policy: greedy, no exploration
    policy = by_benchmark(
        rows, [router.route(r.envelope, MODELS).model == STRONG.name for r in rows]
    )
    return Pass(cost_weight, during, policy, regret, timings)


def at_loss(points: list[tuple[float, float]], loss: float) -> float:
    """The saving at `loss` on a (loss, saving) curve, interpolated linearly."""
    pts = sorted(points)
    for (l0, s0), (l1, s1) in itertools.pairwise(pts):
        if l0 <= loss <= l1:
            return s0 + (s1 - s0) * (loss - l0) / (l1 - l0) if l1 > l0 else max(s0, s1)
    return max((s for lost, s in pts if lost <= loss), default=0.0)


def fmt(t: Tally) -> str:
    return f"saved {t.saved:6.1%}  lost {t.lost:6.2%}  strong {t.share:6.1%}"


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.routing", description=__doc__)
    parser.add_argument("--shuffles", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="fewer cost weights, 2 shuffles")
    args = parser.parse_args()
    shuffles = 2 if args.quick else args.shuffles
    sweep = (0.0, 0.05, 0.1, 0.2) if args.quick else SWEEP
    rows = load()
    orders = []
    for seed in range(shuffles):
        order = list(range(len(rows)))
        random.Random(seed).shuffle(order)
        orders.append(order)

    print(f"routing on real outcomes: {len(rows):,} questions, {shuffles} shuffles, one pass each")
    print("hindsight, best per category (weak where the quality gap is smallest):")
    for loss in sorted(HINDSIGHT):
        h = hindsight(rows, loss)
        print(f"  at {loss:.0%} loss: " + fmt(h["overall"]))
    h2 = hindsight(rows, TARGET_LOSS)

    static = EmbeddedRouter(learning=False)
    static_pick = by_benchmark(
        rows, [static.route(r.envelope, MODELS).model == STRONG.name for r in rows]
    )

    passes: dict[float, list[Pass]] = {}
    for w in sweep:
        passes[w] = [
            one_pass(rows, order, w, seed, time_it=False) for seed, order in enumerate(orders)
        ]

    def mean(ps: list[Pass], attr: str, bench: str, field: str) -> float:
        return statistics.fmean(getattr(getattr(p, attr)[bench], field) for p in ps)

    print("\nsweep of the cost weight (mean over shuffles, overall):")
    print("  weight | during the pass                        | policy at the end of the pass")
    policy_curve, during_curve = [], []
    for w, ps in passes.items():
        d_s, d_l, d_p = (mean(ps, "during", "overall", f) for f in ("saved", "lost", "share"))
        p_s, p_l, p_p = (mean(ps, "policy", "overall", f) for f in ("saved", "lost", "share"))
        policy_curve.append((p_l, p_s))
        during_curve.append((d_l, d_s))
        print(
            f"  {w:6.2f} | saved {d_s:6.1%} lost {d_l:6.2%} strong {d_p:6.1%} "
            f"| saved {p_s:6.1%} lost {p_l:6.2%} strong {p_p:6.1%}"
        )
    policy_at = at_loss(policy_curve, TARGET_LOSS)
    during_at = at_loss(during_curve, TARGET_LOSS)
    target = HINDSIGHT[TARGET_LOSS]
    print(f"\nat {TARGET_LOSS:.0%} quality lost (interpolated on the sweep):")
    print(f"  hindsight per category      saved {target:6.1%}")
    print(
        f"  learned policy, end of pass saved {policy_at:6.1%}  "
        f"({policy_at / target:.0%} of hindsight)"
    )
    print(
        f"  during the pass (learning)  saved {during_at:6.1%}  "
        f"({during_at / target:.0%} of hindsight)"
    )

    # The weight whose policy loses closest to the target, for the per-benchmark table.
    best_w = min(
        passes, key=lambda w: abs(mean(passes[w], "policy", "overall", "lost") - TARGET_LOSS)
    )
    ps = passes[best_w]
    print(f"\nper benchmark at cost weight {best_w} (mean over shuffles):")
    for bench in ("mmlu", "gsm8k", "mt-bench", "overall"):
        share = mean(ps, "during", bench, "share")
        rnd = Tally()
        rng = random.Random(1)
        for row in rows:
            if bench in (row.benchmark, "overall"):
                rnd.add(row, rng.random() < share)
        print(f"  {bench}")
        print(
            f"    learning, during the pass   saved {mean(ps, 'during', bench, 'saved'):6.1%}  "
            f"lost {mean(ps, 'during', bench, 'lost'):6.2%}  strong {share:6.1%}"
        )
        print(
            f"    learned policy, end of pass saved {mean(ps, 'policy', bench, 'saved'):6.1%}  "
            f"lost {mean(ps, 'policy', bench, 'lost'):6.2%}  "
            f"strong {mean(ps, 'policy', bench, 'share'):6.1%}"
        )
        print(f"    hindsight at {TARGET_LOSS:.0%} loss        " + fmt(h2[bench]))
        print("    static rules                " + fmt(static_pick[bench]))
        print("    random at the same share    " + fmt(rnd))

    curve = [statistics.fmean(p.regret[k] for p in ps) for k in range(10)]
    print(f"\nregret per call against the best per-category choice in hindsight (weight {best_w}):")
    print("  " + "  ".join(f"{(k + 1) * 10}%: {r:.4f}" for k, r in enumerate(curve)))
    # Marginal regret per call in each tenth of the pass: flattening means it falls.
    marginal = [curve[0]] + [(curve[k] * (k + 1) - curve[k - 1] * k) for k in range(1, 10)]
    print("  regret per call within each tenth: " + "  ".join(f"{m:.4f}" for m in marginal))
    flattens = marginal[-1] < 0.5 * marginal[0]

    # route() latency, learning on, against the static rules in the same run.
    timed = one_pass(rows, orders[0], best_w, 0, time_it=True).route_ns
    base: list[int] = []
    clock = time.perf_counter_ns
    for i in orders[0]:
        t = clock()
        static.route(rows[i].envelope, MODELS)
        base.append(clock() - t)

    def q(xs: list[int], p: float) -> float:
        return sorted(xs)[int(p * (len(xs) - 1))] / 1000

    p50, p99 = q(timed, 0.5), q(timed, 0.99)
    print(
        f"\nroute() with learning on: p50 {p50:.1f} us, p99 {p99:.1f} us "
        f"(static rules: p50 {q(base, 0.5):.1f} us, p99 {q(base, 0.99):.1f} us; target p50 < 50 us)"
    )

    ok = policy_at >= TARGET_SHARE_OF_HINDSIGHT * target and flattens and p50 < 50
    print("PASS" if ok else "BELOW TARGET")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
