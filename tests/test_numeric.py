"""The one tolerance: a schedule exactly at a memory limit is within it in every layer."""

from __future__ import annotations

import pytest

from parplan.numeric import close, leq, lt, within_limit
from parplan.plan import Plan
from parplan.problem import PipelineProblem
from parplan.schedule.expert import build_schedule
from parplan.solve import pipeline_model
from parplan.solve.api import warm_starts
from parplan.synthetic import synthetic_problem


# Zero Bubble paper, 1.5B model, p = 8, m = 24 (Qi et al. 2024, Table 5): W still needs 36.641 % of
# a stage's activation, so ZB-H1 peaks at exactly p = 8 activations on device 0 as sums of floats.
def _zb_row(limit: float) -> PipelineProblem:
    return synthetic_problem(
        pp=8,
        microbatches=24,
        costs="F=18.522,I=18.086,W=9.337",
        comm=0.601,
        act_mem=1.0,
        wgrad_mem=0.36641,
        memory_limit=limit,
    )


def test_comparisons_forgive_float_noise_only() -> None:
    assert leq(8.000000000001, 8.0) and not leq(8.0001, 8.0)
    assert lt(1.0, 1.001) and not lt(1.0, 1.0 + 1e-13)
    assert close(0.1 + 0.2, 0.3) and not close(0.3, 0.31)
    assert within_limit(5.0, None) and within_limit(1.0 + 1e-12, 1.0) and not within_limit(1.01, 1.0)


def test_zb_h1_at_exactly_the_memory_limit_is_a_warm_start() -> None:
    problem = _zb_row(8.0)
    plan = Plan.from_schedule(problem, build_schedule("zb-h1", problem))
    assert plan.validate() == []
    assert max(plan.metrics.peak_memory_per_device) == pytest.approx(8.0)
    names = {w.name: w.plan.metrics.makespan for w in warm_starts(problem, pipeline_model(problem))}
    assert "zb-h1" in names
    assert names["zb-h1"] == pytest.approx(1310.405, abs=1e-6)
