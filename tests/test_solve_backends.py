"""Every solver backend on tiny problems with hand-derived optima: one test per constraint family.

Parametrized over the installed backends (cpsat, highs; gurobi only when gurobipy is importable).
``optimum`` calls a backend directly, without warm start or cap, so the family under test alone
decides the answer; ``planned`` goes through ``plan_problem`` (validated plans).
"""

from __future__ import annotations

import importlib.util
import math
import sys
import types
from typing import Any

import pytest

from parplan.errors import InvalidInputError, SolverUnavailableError
from parplan.plan import Plan
from parplan.problem import PipelineProblem
from parplan.solve import plan_problem
from parplan.solve.backend import BackendOptions, BackendResult
from parplan.solve.milp import MilpFormulation
from parplan.solve.model import check_assignment, peak_level, pipeline_model
from parplan.solve.registry import make_backend
from parplan.synthetic import synthetic_problem

HAS_GUROBI = importlib.util.find_spec("gurobipy") is not None
BACKENDS = [
    "cpsat",
    "highs",
    pytest.param("gurobi", marks=pytest.mark.skipif(not HAS_GUROBI, reason="gurobipy not installed")),
]


def optimum(problem: PipelineProblem, backend: str, *, fused: bool = False, **opts: Any) -> BackendResult:
    """The backend's proven optimum (ticks) of ``problem``, from scratch; the answer is checked."""
    model = pipeline_model(problem, fused=fused)
    res = make_backend(backend, model, BackendOptions(**opts)).solve(
        time_limit_s=20, workers=1, deterministic=True
    )
    assert res.status == "optimal", res
    assert res.assignment is not None
    assert check_assignment(model, res.assignment) == []
    assert res.bound == res.objective
    return res


def planned(problem: PipelineProblem, backend: str, **kw: Any) -> Plan:
    plan = plan_problem(problem, backend=backend, deterministic=True, time_limit_s=20, **kw)
    assert plan.validate() == []
    assert plan.solver is not None and plan.solver.backend == backend
    return plan


# ---------------------------------------------------------------------------- exact optima


@pytest.mark.parametrize("backend", BACKENDS)
def test_two_stages_two_microbatches_unsplit(backend: str) -> None:
    # p=2, m=2, F=1, B=2: device 1 starts at 1 (after F of stage 0), does 2 * (1 + 2) = 6 of work,
    # and B of stage 0 (2) follows its last B: 1 + 6 + 2 = 9 = (m + p - 1)(F + B), the 1F1B makespan.
    problem = synthetic_problem(pp=2, microbatches=2, costs="F=1,B=2")
    assert optimum(problem, backend).objective == 9
    plan = planned(problem, backend)
    assert plan.metrics.makespan == 9
    assert plan.solver is not None and plan.solver.status == "optimal"


@pytest.mark.parametrize("backend", BACKENDS)
def test_two_stages_two_microbatches_split(backend: str) -> None:
    # F=I=W=1: device 1 has 6 units of work and cannot start before 1: >= 7, reached by ZB-H1.
    assert optimum(synthetic_problem(pp=2, microbatches=2), backend).objective == 7


# ---------------------------------------------------------------------------- constraint families


@pytest.mark.parametrize("backend", BACKENDS)
def test_no_overlap_alone_changes_the_optimum(backend: str) -> None:
    # one device, 3 micro-batches of F=I=W=1: the critical path is 3, but one device runs one
    # pass at a time, so the optimum is all the work, 9.
    assert optimum(synthetic_problem(pp=1, microbatches=3), backend).objective == 9


@pytest.mark.parametrize("backend", BACKENDS)
def test_comm_delay_counts_only_across_devices(backend: str) -> None:
    # one micro-batch through two stages, F=1, B=2, transfer 1 each way.
    # fixed on two devices: F0 + comm + F1 + B1 + comm + B0 = 1 + 1 + 1 + 2 + 1 + 2 = 8;
    # free placement puts both stages on one device, so no transfer is paid: 6.
    fixed = synthetic_problem(pp=2, microbatches=1, costs="F=1,B=2", comm=1)
    assert optimum(fixed, backend).objective == 8
    free = synthetic_problem(pp=2, microbatches=1, placement="free", costs="F=1,B=2", comm=1)
    res = optimum(free, backend)
    assert res.objective == 6
    assert res.assignment is not None and len(set(res.assignment.device)) == 1


@pytest.mark.parametrize("backend", BACKENDS)
def test_free_placement_spreads_stages_when_it_pays(backend: str) -> None:
    # two free stages, two micro-batches, F=1, B=2, no transfer cost: on one device all 12 units
    # run in sequence; on two devices the 1F1B pipeline takes 9 (see the first test).
    problem = synthetic_problem(pp=2, microbatches=2, placement="free", costs="F=1,B=2")
    res = optimum(problem, backend)
    assert res.objective == 9
    plan = planned(problem, backend)
    assert plan.metrics.makespan == 9
    assert sorted(st.device for st in plan.problem.stages) == [0, 1]


@pytest.mark.parametrize("backend", BACKENDS)
def test_memory_limit_alone_changes_the_optimum(backend: str) -> None:
    # p=2, m=3, F=1, B=2. Limit 1 activation: device 0 starts F of micro-batch j+1 only after its B
    # of j, so micro-batches run one by one: 3 * (1 + 1 + 2 + 2) = 18. Limit 2: 1F1B fits, 12.
    problem = synthetic_problem(pp=2, microbatches=3, costs="F=1,B=2")
    assert optimum(problem.with_memory_limit(1), backend).objective == 18
    assert optimum(problem.with_memory_limit(2), backend).objective == 12
    plan = planned(problem, backend, memory_limit=1)
    assert plan.metrics.makespan == 18
    assert max(plan.metrics.peak_memory_per_device) <= 1


@pytest.mark.parametrize("backend", BACKENDS)
def test_weight_gradient_memory_is_held_until_w(backend: str) -> None:
    # p=2, m=2, F=I=W=1, activation 2 of which 1 is kept from I until W. Limit 2 = one whole
    # activation: device 0 must finish F, I and W of micro-batch 0 before the next F, so each
    # micro-batch runs F0 F1 I1 I0 W0 = 5 in sequence: 10. Without the limit ZB-H1 gives 7.
    problem = synthetic_problem(pp=2, microbatches=2, act_mem=2, wgrad_mem=1)
    assert optimum(problem, backend).objective == 7
    assert optimum(problem.with_memory_limit(2), backend).objective == 10


@pytest.mark.parametrize("backend", BACKENDS)
def test_memory_objective_serializes_microbatches(backend: str) -> None:
    # minimizing the peak: one activation (1 unit) at a time is enough and necessary: optimum 1
    problem = synthetic_problem(pp=2, microbatches=3, costs="F=1,B=2")
    res = optimum(problem, backend, objective="memory")
    assert res.objective == 1
    model = pipeline_model(problem)
    assert res.assignment is not None
    assert max(peak_level(model, res.assignment, d) for d in range(2)) == 1


@pytest.mark.parametrize("backend", BACKENDS)
def test_static_memory_forces_stages_apart(backend: str) -> None:
    # two free stages with 3 units of parameters each and a limit of 5: they cannot share a
    # device, so the solver must pay the transfer (1 each way) it would otherwise avoid: 8.
    problem = synthetic_problem(
        pp=2, microbatches=1, placement="free", costs="F=1,B=2", comm=1, param_mem=3
    ).with_memory_limit(5)
    res = optimum(problem, backend)
    assert res.objective == 8
    assert res.assignment is not None and len(set(res.assignment.device)) == 2


# ---------------------------------------------------------------------------- agreement, determinism


AGREEMENT = [
    dict(pp=2, microbatches=3, costs="F=1,I=2,W=1"),
    dict(pp=3, microbatches=2, costs="F=2,B=3", comm=0.5),
    dict(pp=2, microbatches=2, placement="interleaved", costs="F=1,I=1,W=1"),
    dict(pp=2, microbatches=2, placement="free", chunks=2, costs="F=1,B=2", comm=1),
    dict(pp=2, microbatches=3, act_mem=2, wgrad_mem=1, memory_limit=4),
    dict(pp=2, microbatches=3, placement="free", costs="F=1,B=2", comm=0.5, memory_limit=2),
]


@pytest.mark.parametrize("case", AGREEMENT, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()))
def test_backends_agree_on_the_optimum(case: dict[str, Any]) -> None:
    problem = synthetic_problem(**case)
    values = {b: optimum(problem, b).objective for b in ("cpsat", "highs")}
    assert values["cpsat"] == values["highs"], values


@pytest.mark.parametrize("backend", BACKENDS)
def test_fused_pairs_shorten_the_schedule(backend: str) -> None:
    # DualPipe-style fusion: bidirectional placement, p=2, m=4, F=1, B=2 (unsplit). Each device runs
    # 4 F and 4 B (12; the unfused optimum, both backends agree). A forward overlapped with the
    # other direction's backward takes FB = 2 < F + B = 3, saving 1; no backward is ready on a
    # device before its first two forwards ran, so at most two of its four forwards fuse: 10,
    # reached by both backends.
    problem = synthetic_problem(pp=2, microbatches=4, placement="bidirectional", costs="F=1,B=2,FB=2")
    plain = optimum(problem, backend)
    assert plain.objective * pipeline_model(problem).tick == 12
    res = optimum(problem, backend, fused=True)
    assert res.assignment is not None and res.assignment.fused
    assert res.objective * pipeline_model(problem, fused=True).tick == 10


@pytest.mark.parametrize("backend", BACKENDS[1:])
def test_milp_refuses_fused_split_backward(backend: str) -> None:
    # the F & I+W chunk (W absorbed) is modelled by CP-SAT only; the MILP says so instead of
    # silently solving another problem
    problem = synthetic_problem(pp=2, microbatches=4, placement="bidirectional", costs="F=1,I=1,W=1,FB=1.5")
    with pytest.raises(InvalidInputError, match=r"split backward.*--backend cpsat"):
        make_backend(backend, pipeline_model(problem, fused=True), BackendOptions())


@pytest.mark.parametrize("backend", BACKENDS)
def test_deterministic_mode_repeats_the_same_schedule(backend: str) -> None:
    problem = synthetic_problem(pp=2, microbatches=3, placement="free", costs="F=1,B=2")
    model = pipeline_model(problem)
    runs = [
        make_backend(backend, model, BackendOptions()).solve(time_limit_s=20, workers=2, deterministic=True)
        for _ in range(2)
    ]
    assert runs[0].assignment == runs[1].assignment
    assert runs[0].objective == runs[1].objective == 12


@pytest.mark.parametrize("backend", BACKENDS)
def test_warm_start_and_cap_keep_the_answer(backend: str) -> None:
    # hinted with a valid schedule and capped by its makespan, the backend returns a schedule at
    # least as good (here the optimum, 9, which 1F1B already reaches)
    problem = synthetic_problem(pp=2, microbatches=2, costs="F=1,B=2")
    model = pipeline_model(problem)
    first = optimum(problem, backend)
    assert first.assignment is not None
    solver = make_backend(backend, model, BackendOptions(max_makespan=first.objective))
    solver.add_hint(first.assignment)
    res = solver.solve(time_limit_s=20, workers=1, deterministic=True)
    assert res.status == "optimal" and res.objective == 9


# ---------------------------------------------------------------------------- the MILP itself


def test_big_m_values_come_from_the_horizon() -> None:
    # with a warm-start cap H = 12, no coefficient or bound of the MILP exceeds what the data allows:
    # every big-M is at most H plus one tick (the strict "starts after" of the memory events)
    problem = synthetic_problem(pp=2, microbatches=3, placement="free", costs="F=1,B=2", comm=1, act_mem=1)
    model = pipeline_model(problem.with_memory_limit(2))
    form = MilpFormulation(model, BackendOptions(max_makespan=12))
    biggest = max(abs(v) for r in form.rows for v in r.value)
    assert biggest <= 12 + 1
    assert all(c.upper <= 12 for c in form.columns if c.name.startswith("start["))
    names = {c.name.split("[")[0] for c in form.columns}
    assert {"start", "x", "same", "y", "makespan", "alive"} <= names


def test_milp_rows_are_named_by_family() -> None:
    model = pipeline_model(synthetic_problem(pp=2, microbatches=2, comm=1))
    form = MilpFormulation(model, BackendOptions())
    families = {r.name.split("[")[0] for r in form.rows}
    assert {"precedence", "before", "after", "load", "tail"} <= families
    assert "precedence[0,0,F->1,0,F]" in {r.name for r in form.rows}


def test_pairs_ordered_by_precedence_need_no_order_variable() -> None:
    # one stage, one micro-batch: F -> I -> W is a chain, so no pair needs a disjunction
    model = pipeline_model(synthetic_problem(pp=1, microbatches=1))
    form = MilpFormulation(model, BackendOptions())
    assert not [c for c in form.columns if c.name.startswith("y[")]


# ---------------------------------------------------------------------------- gurobi availability


@pytest.mark.skipif(HAS_GUROBI, reason="gurobipy is installed")
def test_gurobi_missing_is_a_clear_error() -> None:
    problem = synthetic_problem(pp=2, microbatches=2)
    with pytest.raises(SolverUnavailableError, match="gurobipy is not installed"):
        plan_problem(problem, backend="gurobi", warm_start=False)


def _fake_gurobipy(limit: int) -> types.ModuleType:
    """A stand-in gurobipy whose optimize() fails like the size-limited pip licence above ``limit``."""
    mod = types.ModuleType("gurobipy")

    class GurobiError(Exception):
        def __init__(self, errno: int, message: str) -> None:
            super().__init__(message)
            self.errno = errno

    class GRB:
        INFINITY = math.inf
        BINARY, INTEGER, CONTINUOUS = "B", "I", "C"
        EQUAL, GREATER_EQUAL, LESS_EQUAL = "=", ">", "<"
        MINIMIZE = 1

        class Callback:
            MIPSOL = 4

    class Env:
        def __init__(self, empty: bool = False) -> None: ...

        def setParam(self, name: str, value: Any) -> None: ...

        def start(self) -> None: ...

    class Model:
        def __init__(self, name: str, env: Any = None) -> None:
            self.vars: list[Any] = []
            self.rows = 0
            self.Params = types.SimpleNamespace()

        def addVar(self, **kw: Any) -> Any:
            self.vars.append(types.SimpleNamespace(**kw))
            return self.vars[-1]

        def addLConstr(self, *args: Any, **kw: Any) -> None:
            self.rows += 1

        def optimize(self, callback: Any = None) -> None:
            if len(self.vars) > limit or self.rows > limit:
                raise GurobiError(10010, "Model too large for size-limited license")

    mod.GurobiError = GurobiError  # type: ignore[attr-defined]
    mod.GRB = GRB  # type: ignore[attr-defined]
    mod.Env = Env  # type: ignore[attr-defined]
    mod.Model = Model  # type: ignore[attr-defined]
    mod.LinExpr = lambda coeffs, variables: (coeffs, variables)  # type: ignore[attr-defined]
    return mod


def test_gurobi_size_limited_licence_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "gurobipy", _fake_gurobipy(limit=20))
    model = pipeline_model(synthetic_problem(pp=2, microbatches=3))
    solver = make_backend("gurobi", model, BackendOptions())
    with pytest.raises(
        SolverUnavailableError, match=r"variables and \d+ constraints, above the size-limited"
    ):
        solver.solve(time_limit_s=1, workers=1, deterministic=True)


def test_highs_reports_progress_in_real_units() -> None:
    # cold start: every improving solution is reported; the last one is the optimum, 12 ticks of 1
    problem = synthetic_problem(pp=2, microbatches=3, costs="F=1,B=2")
    model = pipeline_model(problem)
    seen: list[Any] = []
    res = make_backend("highs", model, BackendOptions()).solve(
        time_limit_s=20, workers=1, deterministic=True, progress=seen.append
    )
    assert res.objective == 12
    assert seen, "no progress reported"
    assert seen[-1].incumbent == pytest.approx(12.0)
    assert all(p.bound <= p.incumbent + 1e-9 for p in seen)


def test_highs_missing_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    # the HiGHS child runs under sys.executable: an interpreter without highspy must give a
    # SolverUnavailableError naming the fix, not an internal error
    import shutil
    import subprocess

    other = shutil.which("python3", path="/usr/bin")
    if other is None or subprocess.run([other, "-c", "import highspy"], capture_output=True).returncode == 0:
        pytest.skip("no interpreter without highspy to run the child with")
    monkeypatch.setattr(sys, "executable", other)
    model = pipeline_model(synthetic_problem(pp=1, microbatches=1))
    with pytest.raises(SolverUnavailableError, match="highspy is not installed"):
        make_backend("highs", model, BackendOptions()).solve(time_limit_s=5, workers=1, deterministic=True)
