"""Running plans on torch.distributed (gloo, CPU): loss and gradients equal a single-process run."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")

from parplan.cluster_io import load_cluster  # noqa: E402
from parplan.cost.pipeline import model_problem  # noqa: E402
from parplan.errors import InvalidInputError  # noqa: E402
from parplan.graph.zoo import build_model  # noqa: E402
from parplan.plan import Plan, read_plan  # noqa: E402
from parplan.problem import Device  # noqa: E402
from parplan.runtime.launch import RunError, run_plan, run_plans  # noqa: E402
from parplan.schedule.expert import build_schedule  # noqa: E402
from parplan.schedule.ir import Schedule  # noqa: E402
from parplan.synthetic import synthetic_problem  # noqa: E402

#: fp32 gradients of the same arithmetic in another order: rounding only.
TOL = 1e-4


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # the machine has 2 cores shared with the worker processes: intra-op threads only spin
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def gpt_plan(schedule: str, *, pp: int = 2, microbatches: int = 4, num_layers: int = 4, **kw) -> Plan:
    placement = {
        "zb-v": "v",
        "dualpipev": "v",
        "interleaved-1f1b": "interleaved",
        "dualpipe": "bidirectional",
    }.get(schedule, "linear")
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


@pytest.mark.slow  # ~8 s: two processes import torch; the in-thread tests cover the logic by default
def test_one_f_one_b_matches_single_process(tmp_path) -> None:
    # through a plan file: it records the model, so `parplan run PLAN.json` can rebuild it
    plan = read_plan(gpt_plan("1f1b").write(tmp_path / "plan.json"))
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


@pytest.mark.slow
def test_pipelining_runtime_runs_the_exported_csv() -> None:
    # linear, interleaved and V placements; F, B, I, W and fused OVERLAP_F_B cells
    names = ["gpipe", "1f1b", "interleaved-1f1b", "zb-h1", "zb-v", "dualpipev"]
    results = run_plans([gpt_plan(n) for n in names], steps=1, warmup=0, engine="pipelining")
    for name, r in zip(names, results, strict=True):
        assert r.engine == "pipelining", name
        assert r.max_grad_abs_err < TOL, name
        assert r.loss == pytest.approx(r.ref_loss, abs=1e-5), name


def test_pipelining_falls_back_on_what_it_cannot_run() -> None:
    from parplan.runtime.launch import _choose_engine
    from parplan.runtime.modules import build_torch_model

    model, _ = build_torch_model("gpt-tiny", microbatch_size=2, seq_len=16)
    assert _choose_engine(gpt_plan("zb-v"), "pipelining", model) == "pipelining"
    assert _choose_engine(gpt_plan("zb-v"), "auto", model) == "parplan"
    dag = multimodal_dag_plan()
    mm, _ = build_torch_model("multimodal-small", microbatch_size=1, seq_len=8, num_layers=1, image_size=32)
    with pytest.warns(UserWarning, match="not the chain"):
        assert _choose_engine(dag, "pipelining", mm) == "parplan"
    with pytest.warns(UserWarning, match="bidirectional"):
        assert _choose_engine(gpt_plan("dualpipe", num_layers=2), "pipelining", model) == "parplan"


def multimodal_dag_plan() -> Plan:
    """Three stages joined as a DAG: the vision branch (device 0) and the text branch (device 1)
    both feed the decoder (device 0); GPipe-like orders with full backward passes."""
    from parplan.problem import Microbatch, PassTimes, PipelineProblem, Stage, StageEdge
    from parplan.schedule.ir import B, F

    graph = build_model(
        "multimodal-small", microbatch_size=1, seq_len=8, num_layers=1, image_size=32, dtype="fp32"
    )
    names = [op.name for op in graph.ops]
    vision = tuple(n for n in names if n.startswith("vision."))
    text = tuple(n for n in names if n == "embed" or n.startswith("text."))
    decoder = tuple(n for n in names if n not in vision and n not in text)
    cost = PassTimes(F=1.0, B=2.0)
    stages = tuple(
        Stage(index=i, name=n, cost=cost, device=d, ops=ops)
        for i, (n, d, ops) in enumerate((("vision", 0, vision), ("text", 1, text), ("decoder", 0, decoder)))
    )
    m = 2
    problem = PipelineProblem(
        devices=tuple(Device(index=d, name=f"d{d}") for d in range(2)),
        stages=stages,
        edges=(StageEdge(src=0, dst=2), StageEdge(src=1, dst=2)),
        microbatches=tuple(Microbatch(index=j, stages=(0, 1, 2)) for j in range(m)),
        split_backward=False,
        placement="graph",
        source={"model": "multimodal-small", "model_meta": graph.meta_dict},
    )
    orders = [
        [F(0, j) for j in range(m)]
        + [F(2, j) for j in range(m)]
        + [B(2, j) for j in range(m)]
        + [B(0, j) for j in range(m)],
        [F(1, j) for j in range(m)] + [B(1, j) for j in range(m)],
    ]
    return Plan.from_schedule(problem, Schedule.of("dag-gpipe", orders))


@pytest.mark.slow
def test_dag_moe_and_planner_plans_match_single_process() -> None:
    from parplan.solve.api import plan_problem

    moe = build_model("moe-small", microbatch_size=1, seq_len=16, num_layers=2, dtype="fp32")
    moe_problem = model_problem(moe, load_cluster("local"), pp=2, microbatches=2, dtype="fp32")
    gpt = build_model("gpt-tiny", microbatch_size=2, seq_len=16, dtype="fp32")
    free = model_problem(
        gpt, load_cluster("local"), pp=2, microbatches=4, dtype="fp32", placement="free", chunks=2
    )
    plans = [
        multimodal_dag_plan(),
        Plan.from_schedule(moe_problem, build_schedule("zb-h1", moe_problem)),
        plan_problem(free, time_limit_s=3, deterministic=True),
        plan_problem(
            model_problem(gpt, load_cluster("local"), pp=2, microbatches=4, dtype="fp32"), time_limit_s=3
        ),
    ]
    for r in run_plans(plans, steps=1, warmup=0):
        assert r.max_grad_abs_err < TOL
        assert r.loss == pytest.approx(r.ref_loss, abs=1e-5)


def test_replaying_the_planned_times_gives_the_planned_makespan() -> None:
    """Feeding the plan's own action times back as 'measurements' reproduces its makespan exactly:
    the replay changes only the stage costs."""
    from parplan.runtime.launch import measured_stage_costs, replay_step_s

    for name in ("1f1b", "zb-h1", "zb-v"):
        plan = gpt_plan(name)
        timings = tuple(
            {
                "stage": t.action.stage,
                "kind": t.action.kind,
                "start_s": t.start,
                "end_s": t.end,
                "recv_wait_s": 0.0,
            }
            for t in plan.timed
        )
        costs = measured_stage_costs(plan, timings)
        assert [c.F for c in costs] == pytest.approx([s.cost.F for s in plan.problem.stages])
        assert replay_step_s(plan, timings) == pytest.approx(plan.metrics.makespan)
        # twice slower stages: twice the makespan (communication is not scaled, so a bit less)
        slow = tuple({**t, "end_s": t["start_s"] + 2 * (t["end_s"] - t["start_s"])} for t in timings)
        assert replay_step_s(plan, slow) == pytest.approx(2 * plan.metrics.makespan, rel=0.02)


def test_measured_trace_layout() -> None:
    from parplan.runtime.launch import measured_trace

    plan = gpt_plan("1f1b")
    timings = (
        {
            "device": 0,
            "action": "0F0",
            "kind": "F",
            "stage": 0,
            "microbatch": 0,
            "start_s": 0.0,
            "end_s": 0.002,
            "recv_wait_s": 0.0,
            "cpu_s": 0.002,
            "live_activation_bytes": 4096.0,
        },
        {
            "device": 1,
            "action": "1F0",
            "kind": "F",
            "stage": 1,
            "microbatch": 0,
            "start_s": 0.002,
            "end_s": 0.005,
            "recv_wait_s": 0.001,
            "cpu_s": 0.002,
        },
    )
    events = measured_trace(plan, timings)["traceEvents"]
    compute = [e for e in events if e["ph"] == "X" and e["tid"] == 0]
    # the planned trace's names (one writer in report/trace.py for both)
    assert [(e["pid"], e["name"], e["ts"], e["dur"]) for e in compute] == [
        (0, "F mb0 stage0", 0.0, 2000.0),
        (1, "F mb0 stage1", 2000.0, 3000.0),
    ]
    from parplan.report.trace import plan_to_chrome_trace

    planned = {e["name"] for e in plan_to_chrome_trace(plan)["traceEvents"] if e.get("cat") == "compute"}
    assert {e["name"] for e in compute} <= planned
    waits = [e for e in events if e["ph"] == "X" and e["tid"] == 1]
    assert [(e["pid"], e["dur"]) for e in waits] == [(1, 1000.0)]
    counters = [e for e in events if e["ph"] == "C"]
    assert [(e["pid"], e["ts"], e["args"]["bytes"]) for e in counters] == [(0, 2000.0, 4096.0)]


@pytest.mark.parametrize(
    "schedule",
    # dualpipe: bidirectional, every device holds both halves; replica gradients add up
    ["gpipe", "1f1b", "interleaved-1f1b", "zb-h1", "zb-h2", "zb-v", "dualpipev", "dualpipe"],
)
def test_executor_logic_in_threads(schedule: str) -> None:
    """The executor's passes, routing and tags, with devices as threads of this process (no
    torch.distributed, no process start): gradients equal the single-process run."""
    from parplan.runtime.executor import model_spec_of, reference_step, run_in_threads

    plan = gpt_plan(schedule, num_layers=4 if schedule in ("zb-v", "dualpipev", "interleaved-1f1b") else 2)
    spec = model_spec_of(plan)
    loss, grads = run_in_threads(plan, spec)
    ref_loss, ref = reference_step(spec.build()[0], plan.problem.num_microbatches)
    assert loss == pytest.approx(ref_loss, abs=1e-5)
    assert set(grads) == set(ref)
    assert max(float((grads[n] - g).abs().max()) for n, g in ref.items()) < TOL


def test_dag_plan_in_threads() -> None:
    from parplan.runtime.executor import model_spec_of, reference_step, run_in_threads

    plan = multimodal_dag_plan()
    spec = model_spec_of(plan)
    loss, grads = run_in_threads(plan, spec)
    ref_loss, ref = reference_step(spec.build()[0], plan.problem.num_microbatches)
    assert loss == pytest.approx(ref_loss, abs=1e-5)
    assert max(float((grads[n] - g).abs().max()) for n, g in ref.items()) < TOL


def test_plan_file_runs_under_torchrun(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """issue 9: the same worker under torchrun --standalone --nproc-per-node 2 (env:// rendezvous)."""
    import os
    import subprocess
    import sys

    import torch

    plan = gpt_plan("1f1b", microbatches=2)
    path = tmp_path / "p.json"
    path.write_text(json.dumps(plan.to_json()))
    out = tmp_path / "out"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        "-m",
        "parplan.runtime.launch",
        str(path),
        "--backend",
        "gloo",
        "--steps",
        "1",
        "--out",
        str(out),
    ]
    p = subprocess.run(
        cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"}
    )
    assert p.returncode == 0, p.stderr[-2000:]
    results = [torch.load(out / f"device{r}.pt", weights_only=False) for r in range(2)]
    assert all(len(r) == 1 and r[0]["steps"] for r in results)  # one task, its measured steps
