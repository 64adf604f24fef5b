"""What every section shares: the pool settings both sides use, and one way to print a line.

A section prints its lines through `check()`, which records whether the target was met; the
runner (`python -m benchmarks`) prints the summary and sets the exit status from them.
"""

from __future__ import annotations

import math
import os
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

import httpx

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
"""The directory holding `benchmarks/`: child processes run `python -m benchmarks.x` from it."""

QUICK = os.environ.get("BENCH_QUICK") == "1"
"""Smaller runs (set by `python -m benchmarks --quick`): for trying a change, not for numbers."""


def pool_limits() -> httpx.Limits:
    """The pool settings tally_client's own clients use; the raw baselines use the same."""
    from tally_client import _client

    make, size = getattr(_client, "_limits", None), getattr(_client, "MAX_CONNECTIONS", None)
    limits = make(size) if callable(make) and isinstance(size, int) else None
    limits = limits or getattr(_client, "POOL_LIMITS", None)  # before max_connections= existed
    if isinstance(limits, httpx.Limits):
        return limits
    return httpx.Limits(max_connections=1000, max_keepalive_connections=100)


@dataclass(frozen=True)
class Result:
    """One measured line: its name, the ratio (or difference) and whether it meets its target."""

    section: str
    name: str
    value: float
    target: str
    met: bool
    verdict: str


RESULTS: list[Result] = []


def check(
    section: str,
    name: str,
    base: tuple[str, float],
    ours: tuple[str, float],
    *,
    unit: str,
    scale: float = 1.0,
    most: float | None = None,
    least: float | None = None,
    added_under: float | None = None,
) -> bool:
    """Print one line and record it.

    Args:
        section: the section's name.
        name: what the line measures.
        base: (label, value) of the baseline.
        ours: (label, value) of what is measured against it.
        unit: the printed unit of the values after `scale`.
        scale: multiplier from the measured unit to the printed one (1e6 for seconds -> us).
        most: target: ours / base at most this.
        least: target: ours / base at least this.
        added_under: target: ours - base under this (in the measured unit).
        With no target the line is for information (always "met").
    """
    b, o = base[1], ours[1]
    values = f"{base[0]} {b * scale:,.2f} {unit} | {ours[0]} {o * scale:,.2f} {unit}"
    if added_under is not None:
        value = o - b
        met = value < added_under
        verdict = f"added {value * scale:+,.2f} {unit} (target < {added_under * scale:g} {unit})"
        target = f"< {added_under * scale:g} {unit}"
    else:
        value = o / b if b else math.inf
        if most is not None:
            met = value <= most
            target = f"<= {most:g}x"
        elif least is not None:
            met = value >= least
            target = f">= {least:g}x"
        else:
            met, target = True, "none"
        verdict = f"ratio {value:.2f}x (target {target})"
    status = "info" if target == "none" else "met" if met else "NOT MET"
    print(f"  {name:<30} {values}  {verdict}  {status}", flush=True)
    RESULTS.append(Result(section, name, value, target, met, verdict))
    return met


def percentile(samples: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100), linear between closest ranks."""
    return statistics.quantiles(samples, n=100, method="inclusive")[round(q) - 1]
