"""The routing benchmark's arithmetic: it compares at the same quality loss as hindsight."""

from __future__ import annotations

import random

import pytest

from benchmarks.routing import TARGET_LOSS, at_loss, hindsight, load, mixture, one_pass


def test_the_saving_at_a_loss_is_the_mixture_of_the_two_policies_either_side() -> None:
    curve = [(0.0, 0.0), (0.01, 0.2), (0.03, 0.4), (0.05, 0.5)]
    assert at_loss(curve, 0.02) == pytest.approx(0.3)
    i, j, p = mixture(curve, 0.02)
    assert (i, j) == (1, 2) and p == pytest.approx(0.5)
    # the mixture's loss and saving are the target loss and at_loss's saving
    assert (1 - p) * curve[i][0] + p * curve[j][0] == pytest.approx(0.02)
    assert (1 - p) * curve[i][1] + p * curve[j][1] == pytest.approx(at_loss(curve, 0.02))


def test_hindsight_on_the_real_outcomes_is_the_issues_figure() -> None:
    h = hindsight(load(), TARGET_LOSS)["overall"]
    assert h.lost <= TARGET_LOSS
    assert h.saved == pytest.approx(0.367, abs=0.0005)


def test_a_learning_pass_is_deterministic_for_a_seed_and_learns_from_what_it_chose() -> None:
    rows = load()
    order = random.Random(1000).sample(range(len(rows)), 3000)
    a = one_pass(rows, order, 0.1, 1000, 2.0, time_it=False)
    b = one_pass(rows, order, 0.1, 1000, 2.0, time_it=False)
    assert a.policy["overall"].__dict__ == b.policy["overall"].__dict__
    assert a.regret == b.regret and len(a.regret) == 10
    assert a.during["overall"].calls == 3000 and a.policy["overall"].calls == len(rows)
    # after 3,000 calls the policy already tells categories apart: neither all weak nor all strong
    assert 0.2 < a.policy["overall"].share < 0.95
