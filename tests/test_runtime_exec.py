"""Running plans on torch.distributed (gloo, CPU): loss and gradients equal a single-process run."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")

from parplan.cluster_io import load_cluster  # noqa: E402
from parplan.cost.pipeline import model_problem  # noqa: E402
from parplan.errors import InvalidInputError  # noqa: E402
from parplan.graph.zoo import build_model  # noqa: E402
from parplan.plan import Plan  # noqa: E402
from parplan.runtime.launch import RunError, run_plan, run_plans  # noqa: E402
from parplan.schedule.expert import build_schedule  # noqa: E402
from parplan.schedule.ir import Schedule  # noqa: E402
from parplan.synthetic import synthetic_problem  # noqa: E402

#: fp32 gradients of the same arithmetic in another order: rounding only.
TOL = 1e-4


def gpt_plan(schedule: str, *, pp: int = 2, microbatches: int = 4, num_layers: int = 4, **kw) -> Plan:
    placement = "v" if schedule in ("zb-v", "dualpipev") else "linear"
    graph = build_model("gpt-tiny", microbatch_size=2, seq_len=16, num_layers=num_layers, dtype="fp32")
    problem = model_problem(
        graph,
        load_cluster("local" if pp <= 2 else "8xh100"),
        pp=pp,
        microbatches=microbatches,
        dtype="fp32",
        placement=placement,
        **kw,
    )
    return Plan.from_schedule(problem, build_schedule(schedule, problem))


def test_one_f_one_b_matches_single_process(tmp_path) -> None:
    plan = gpt_plan("1f1b")
    result = run_plan(plan, steps=1, warmup=0, trace=tmp_path / "run.json")
    assert result.max_grad_abs_err < TOL
    assert result.loss == pytest.approx(result.ref_loss, abs=1e-5)
    assert result.predicted_step_s == plan.metrics.makespan
    assert result.measured_step_s > 0 and len(result.step_times_s) == 1
    # every planned action ran once, on its device
    ran = sorted((t["device"], t["action"]) for t in result.timings)
    assert ran == sorted((t.device, str(t.action)) for t in plan.timed)
    trace = json.loads((tmp_path / "run.json").read_text())
    pids = {e["pid"] for e in trace["traceEvents"] if e["ph"] == "X" and e.get("tid") == 0}
    assert pids == {0, 1}
    assert (tmp_path / "run.planned.json").exists()


@pytest.mark.slow
def test_expert_schedules_match_single_process() -> None:
    names = ["gpipe", "1f1b", "zb-h1", "zb-v", "dualpipev"]
    results = run_plans([gpt_plan(n) for n in names], steps=1, warmup=0)
    for name, r in zip(names, results, strict=True):
        assert r.max_grad_abs_err < TOL, name
        assert r.loss == pytest.approx(r.ref_loss, abs=1e-5), name


@pytest.mark.slow
def test_four_devices_interleaved_and_zero_bubble() -> None:
    plans = [
        gpt_plan("zb-h1", pp=4, microbatches=8, num_layers=4),
        gpt_plan("zb-v", pp=4, microbatches=8, num_layers=8),
    ]
    for r in run_plans(plans, steps=1, warmup=0):
        assert r.max_grad_abs_err < TOL


@pytest.mark.slow
def test_a_broken_order_times_out_with_a_clear_error() -> None:
    plan = gpt_plan("1f1b")
    orders = [list(o) for o in plan.schedule.orders]
    # device 1 waits for micro-batch 3 first, device 0 for its gradient of micro-batch 0: a cycle
    orders[1].insert(0, orders[1].pop(next(i for i, a in enumerate(orders[1]) if str(a) == "1F3")))
    broken = Plan(
        problem=plan.problem,
        timed=tuple(t for t in plan.timed),
        metrics=plan.metrics,
        name="broken",
        source=plan.source,
    )
    bad = Schedule.of("broken", orders)
    broken = _with_orders(broken, bad)
    with pytest.raises(RunError, match="device"):
        run_plan(broken, steps=1, warmup=0, timeout_s=3, check=False)


def _with_orders(plan: Plan, schedule: Schedule) -> Plan:
    from parplan.simulate import TimedAction

    timed = tuple(
        TimedAction(device=d, action=a, start=float(k), end=float(k) + 0.5)
        for d, order in enumerate(schedule.orders)
        for k, a in enumerate(order)
    )
    return Plan(problem=plan.problem, timed=timed, metrics=plan.metrics, name=plan.name, source=plan.source)


def test_plan_without_model_says_which_models_run() -> None:
    problem = synthetic_problem(pp=2, microbatches=2)
    plan = Plan.from_schedule(problem, build_schedule("1f1b", problem))
    with pytest.raises(InvalidInputError, match="gpt-tiny, moe-small, multimodal-small"):
        run_plan(plan)


def test_bad_options_are_named() -> None:
    plan = gpt_plan("1f1b")
    with pytest.raises(InvalidInputError, match="--backend: unknown 'mpi'"):
        run_plan(plan, backend="mpi")
    with pytest.raises(InvalidInputError, match="--steps: must be an integer >= 1, got 0"):
        run_plan(plan, steps=0)
    with pytest.raises(InvalidInputError, match="not ops of model"):
        run_plan(plan, model="gpt-tiny", model_options={"num_layers": 2})
