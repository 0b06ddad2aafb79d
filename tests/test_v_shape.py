"""V-Min, V-Half and V-ZB (Qi et al. 2024, "Pipeline Parallelism with Controllable Memory") on the
simulator: the published peak activations and bubbles.

Published (the paper's summary table, F = B = W): activation memory in micro-batches of a device's
whole share of the model, 1F1B p, V-Min (p+4)//3, V-Half (p+2)//2, V-ZB p; bubble rate 1F1B ~p/m,
V-Min ~2p/3m, V-Half ~p/2m, V-ZB 0. On the V placement a stage is half a device's share, so the
memory counts here are twice those, and 1F1B's bubble is (p-1)(F+I+W) of a device's share, i.e.
6(p-1) with unit passes per stage. The paper's memory model is ours with wgrad_mem = act_mem (I
frees nothing, W frees the activation).
"""

from __future__ import annotations

import pytest

from parplan.plan import Plan
from parplan.schedule.expert import build_schedule
from parplan.schedule.ir import Schedule
from parplan.schedule.v_shape import v_half, v_min
from parplan.synthetic import synthetic_problem


def _run(name: str, pp: int, m: int, **options: object) -> Plan:
    options = {"costs": "F=1,I=1,W=1", "wgrad_mem": 1.0, **options}
    problem = synthetic_problem(pp=pp, microbatches=m, placement="v", **options)  # type: ignore[arg-type]
    return Plan.from_schedule(problem, build_schedule(name, problem))


def _bubble(plan: Plan, m: int) -> float:
    """Longest device span minus a device's work (6 unit passes per micro-batch)."""
    metrics = plan.metrics
    return max(b + i for b, i in zip(metrics.busy_per_device, metrics.span_idle_per_device)) - 6 * m


PUBLISHED_MEMORY = {"v-min": lambda p: (p + 4) // 3, "v-half": lambda p: (p + 2) // 2, "zb-v": lambda p: p}


@pytest.mark.parametrize("name", list(PUBLISHED_MEMORY))
@pytest.mark.parametrize("pp", [2, 3, 4, 5, 6, 8, 12, 16])
def test_peak_memory_is_the_published_one(name: str, pp: int) -> None:
    m = max(2 * pp, 4)
    plan = _run(name, pp, m)
    assert plan.validate() == []
    assert max(plan.metrics.peak_memory_per_device) == 2 * PUBLISHED_MEMORY[name](pp)


@pytest.mark.parametrize(("name", "share"), [("v-min", 2 / 3), ("v-half", 1 / 2)])
@pytest.mark.parametrize("pp", [4, 6, 8, 12, 16])
def test_bubble_is_the_published_share_of_1f1b(name: str, share: float, pp: int) -> None:
    # The block repeats without a bubble, so the bubble does not grow with m; it is at most the
    # published share of 1F1B's 6(p-1), and tends to it as p grows (within 5% of 1F1B at p=16).
    ones = 6 * (pp - 1)
    bubbles = {_bubble(_run(name, pp, m), m) for m in (2 * pp, 4 * pp)}
    assert len(bubbles) == 1
    (bubble,) = bubbles
    assert bubble <= share * ones + 1e-9
    if pp == 16:
        assert bubble >= (share - 0.05) * ones


def test_v_zb_is_zb_v_with_no_bubble_at_1f1b_memory() -> None:
    # V-ZB's block is ZB-V's: 1F1B's memory, zero bubble when F = I = W.
    plan = _run("zb-v", 8, 32)
    assert _bubble(plan, 32) == 0
    assert max(plan.metrics.peak_memory_per_device) == 16


def test_lower_memory_costs_bubble_in_the_published_order() -> None:
    pp, m = 8, 32
    runs = {name: _run(name, pp, m) for name in ("v-min", "v-half", "zb-v")}
    peaks = [max(runs[n].metrics.peak_memory_per_device) for n in runs]
    bubbles = [_bubble(runs[n], m) for n in runs]
    assert peaks == sorted(peaks) and bubbles == sorted(bubbles, reverse=True)


@pytest.mark.parametrize("fn", [v_min, v_half])
@pytest.mark.parametrize("pp", [1, 2, 3, 5, 7])
@pytest.mark.parametrize("m", [1, 2, 5, 11])
def test_valid_with_real_costs_and_any_microbatch_count(fn, pp: int, m: int) -> None:
    problem = synthetic_problem(
        pp=pp, microbatches=m, placement="v", costs="F=1,I=1.6,W=0.7", comm=0.3, wgrad_mem=0.4
    )
    plan = Plan.from_schedule(problem, Schedule.of(fn.__name__, fn(pp, m)))
    assert plan.validate() == []
