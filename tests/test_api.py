"""The public API: light to import, and one end-to-end path through the data flow."""

from __future__ import annotations

import subprocess
import sys

import parplan


def test_import_parplan_loads_no_heavy_dependency() -> None:
    code = (
        "import sys, parplan; "
        "print(','.join(m for m in ('torch', 'matplotlib', 'ortools', 'highspy') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_everything_in_all_resolves() -> None:
    for name in parplan.__all__:
        assert getattr(parplan, name) is not None, name


def test_model_to_validated_plan() -> None:
    # graph -> cluster -> cost model -> problem -> expert schedule and planner -> validated plans
    graph = parplan.build_model("gpt2-small", num_layers=4)
    problem = parplan.model_problem(graph, parplan.load_cluster("8xh100"), pp=2, microbatches=4)
    expert = parplan.Plan.from_schedule(problem, parplan.build_schedule("1f1b", problem))
    planned = parplan.plan_problem(problem, time_limit_s=10, deterministic=True)
    assert expert.validate() == [] and planned.validate() == []
    assert planned.metrics.makespan <= expert.metrics.makespan * (1 + 1e-9)
    assert planned.metrics.lower_bound is not None
    assert planned.metrics.lower_bound <= planned.metrics.makespan * (1 + 1e-9)
