"""``plan_problem``: warm starts, solver, validation and bounds wired into one call returning a Plan.

Flow: build the task model once; collect warm starts (every applicable expert schedule and the
list-scheduling heuristic, each checked by the independent validator); solve with the chosen
backend, hinted with the best warm start and capped by it; convert the answer to per-device orders,
re-time them with ``parplan.simulate`` and validate; never return anything worse than the warm start.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass

from parplan.errors import (
    InfeasibleError,
    InternalError,
    InvalidInputError,
    NoSolutionError,
)
from parplan.numeric import lt
from parplan.plan import Plan, SolverInfo
from parplan.problem import PipelineProblem
from parplan.schedule.ir import Action, Schedule
from parplan.simulate import TimedAction, compute_metrics, validate
from parplan.solve.backend import BackendOptions, BackendResult, Progress, make_backend
from parplan.solve.bounds import lower_bounds
from parplan.solve.heuristics import best_heuristic
from parplan.solve.model import (
    Assignment,
    TaskModel,
    check_assignment,
    check_memory_limits,
    peak_level,
    pipeline_model,
    retime,
)

#: Objective names accepted by ``plan_problem``; "a,b" is lexicographic (a first, then b).
OBJECTIVES = ("makespan", "memory", "makespan,memory", "memory,makespan", "weighted")
#: Backend names (``parplan.solve.backend.make_backend`` builds them).
#: Share of the time limit spent on one-device relaxation bounds before the main solve.
RELAXATION_SHARE = 0.4
BACKENDS = ("cpsat", "highs", "gurobi")


@dataclass(frozen=True, slots=True, kw_only=True)
class WarmStart:
    """A feasible starting point: its name, its assignment in ticks and its plan in real units."""

    name: str
    assignment: Assignment
    plan: Plan


def _check_names(objective: str, backend: str) -> None:
    if objective not in OBJECTIVES:
        raise InvalidInputError(f"objective {objective!r}: unknown; choose one of {', '.join(OBJECTIVES)}")
    if backend not in BACKENDS:
        raise InvalidInputError(f"backend {backend!r}: unknown; choose one of {', '.join(BACKENDS)}")


# ---------------------------------------------------------------------------- conversions


def to_schedule(model: TaskModel, sol: Assignment, name: str = "plan") -> Schedule:
    """Per-device orders of ``sol`` (tasks sorted by start; a fused pair becomes one FB action)."""
    rank = {t: i for i, t in enumerate(model.topo_order)}
    partner = {f: b for f, b in sol.fused}
    hidden = {b for _, b in sol.fused}
    orders: list[list[tuple[int, int, int, Action]]] = [[] for _ in range(model.num_devices)]
    ends = sol.ends(model)
    for t in model.tasks:
        if t.index in hidden:
            continue
        s, k, j = t.key
        action = Action(stage=s, kind=k, microbatch=j)
        if t.index in partner:
            bs, bk, bj = model.tasks[partner[t.index]].key
            action = Action.fused(action, Action(stage=bs, kind=bk, microbatch=bj))
        orders[sol.device[t.index]].append((sol.start[t.index], ends[t.index], rank[t.index], action))
    return Schedule.of(name, [[a for *_, a in sorted(o, key=lambda x: x[:3])] for o in orders])


def from_schedule(model: TaskModel, schedule: Schedule) -> Assignment | None:
    """Tick-space assignment of a schedule's orders (ASAP), or None if it does not fit the model.

    A full backward B of a split stage becomes its I then its W; a fused action becomes its model
    pair when the model offers that fusion, otherwise its parts in sequence.
    """
    key = model.task_of_key
    pairs = {(p.forward, p.backward) for p in model.fusable}
    orders: list[list[int]] = []
    device_of = [-1] * len(model.tasks)
    fused: list[tuple[int, int]] = []
    for d, order in enumerate(schedule.orders):
        seq: list[int] = []
        for action in order:
            tasks: list[list[int]] = []
            for p in action.plain():
                if p.kind == "B" and (p.stage, "B", p.microbatch) not in key:
                    tasks.append([key[(p.stage, "I", p.microbatch)], key[(p.stage, "W", p.microbatch)]])
                elif (p.stage, p.kind, p.microbatch) in key:
                    tasks.append([key[(p.stage, p.kind, p.microbatch)]])
                else:
                    return None
            if action.is_fused and len(tasks[0]) == 1 and (tasks[0][0], tasks[1][0]) in pairs:
                fused.append((tasks[0][0], tasks[1][0]))
                seq.append(tasks[0][0])
                for t in (tasks[0][0], tasks[1][0]):
                    device_of[t] = d
                for t in tasks[1][1:]:
                    seq.append(t)
                    device_of[t] = d
                continue
            for group in tasks:
                for t in group:
                    seq.append(t)
                    device_of[t] = d
        orders.append(seq)
    if any(d < 0 for d in device_of):
        return None
    return retime(model, orders, device_of, fused)


def _timed_from_ticks(problem: PipelineProblem, model: TaskModel, sol: Assignment) -> tuple[TimedAction, ...]:
    """The solver's own timing in real units (used when ASAP re-timing changes memory peaks)."""
    from parplan.simulate import duration

    out = []
    for _d, order in enumerate(to_schedule(model, sol).orders):
        for action in order:
            first = model.task_of_key[
                (action.plain()[0].stage, action.plain()[0].kind, action.plain()[0].microbatch)
            ]
            start = sol.start[first] * model.tick
            dev = sol.device[first]
            out.append(
                TimedAction(
                    device=dev, action=action, start=start, end=start + duration(problem, dev, action)
                )
            )
    return tuple(sorted(out, key=lambda t: (t.start, t.device)))


def placed_problem(problem: PipelineProblem, model: TaskModel, sol: Assignment) -> PipelineProblem:
    """``problem`` with every unplaced stage on the device ``sol`` chose (a plan file names devices)."""
    if problem.is_placed:
        return problem
    stages = []
    for st in problem.stages:
        members = model.tasks_of_group[st.index]
        device = sol.device[members[0]] if members else 0
        stages.append(st if st.device is not None else dataclasses.replace(st, device=device))
    return problem.with_stages(stages)


def assignment_plan(problem: PipelineProblem, model: TaskModel, sol: Assignment, name: str) -> Plan:
    """A validated plan from a tick assignment: ASAP re-timing by the simulator, or the solver's own
    timing if re-timing breaks a memory limit; InternalError if neither validates."""
    problems = check_assignment(model, sol)
    if problems:
        raise InternalError(f"{name}: solver answer breaks the model: {problems[:3]}")
    problem = placed_problem(problem, model, sol)
    schedule = to_schedule(model, sol, name)
    plan = Plan.from_schedule(problem, schedule)
    if not plan.validate():
        return plan
    timed = _timed_from_ticks(problem, model, sol)
    violations = [str(v) for v in validate(problem, timed)]
    if violations:
        raise InternalError(
            f"{name}: the solver's schedule fails the validator ({len(violations)} violations, first: "
            f"{violations[0]}); orders:\n{schedule.to_text()}"
        )
    return Plan(
        problem=problem,
        timed=timed,
        metrics=compute_metrics(problem, timed),
        name=name,
        source={"schedule": name},
    )


# ---------------------------------------------------------------------------- warm starts


def warm_starts(problem: PipelineProblem, model: TaskModel) -> list[WarmStart]:
    """Every valid warm start: applicable expert schedules and the heuristic, each validated."""
    out: list[WarmStart] = []
    try:
        from parplan.schedule.expert import applicable_schedules, build_schedule
    except ImportError:  # expert schedules are optional for the planner
        applicable = []
    else:
        applicable = [name for name, reason in applicable_schedules(problem) if reason is None]
    for name in applicable:
        try:
            schedule = build_schedule(name, problem)
            plan = Plan.from_schedule(problem, schedule)
        except InvalidInputError:
            continue
        if plan.validate():
            continue  # e.g. over the memory limit
        sol = from_schedule(model, schedule)
        if sol is None or check_assignment(model, sol):
            continue
        out.append(WarmStart(name=name, assignment=sol, plan=plan))
    best = best_heuristic(model)
    if best is not None:
        rule, sol = best
        plan = assignment_plan(problem, model, sol, f"list-{rule}")
        if not plan.validate():
            out.append(WarmStart(name=f"list-{rule}", assignment=sol, plan=plan))
    return out


def _peak(model: TaskModel, sol: Assignment) -> int:
    return max(peak_level(model, sol, d) for d in range(model.num_devices))


# ---------------------------------------------------------------------------- entry point


def plan_problem(
    problem: PipelineProblem,
    *,
    objective: str = "makespan",
    memory_limit: float | None = None,
    time_limit_s: float = 30.0,
    backend: str = "cpsat",
    workers: int = 2,
    deterministic: bool = False,
    warm_start: bool = True,
    fused: bool = False,
    progress: Callable[[Progress], None] | None = None,
    contiguous: bool = False,
    memory_weight: float = 1.0,
) -> Plan:
    """Plan a pipeline problem: placement (when free) and the order of every pass, solved exactly.

    Parameters
    ----------
    problem
        The pipeline problem (placed, or with ``placement == "free"`` stages without devices).
    objective
        ``makespan`` (default), ``memory`` (the largest per-device peak), ``makespan,memory`` or
        ``memory,makespan`` (lexicographic: the second is optimized with the first held at its
        best found value), or ``weighted`` (makespan + ``memory_weight`` * peak, in real units).
    memory_limit
        Per-device memory limit overriding the problem's devices (problem memory units).
    time_limit_s
        Wall-clock limit of the solver (split in two for lexicographic objectives).
    backend
        ``cpsat`` (default), ``highs`` or ``gurobi`` (the MILP formulation; SolverUnavailableError
        when the solver is not installed or licensed).
    workers, deterministic
        CP-SAT worker threads; deterministic uses 1 worker and a fixed seed (tests).
    warm_start
        Hint the solver with the best expert or heuristic schedule, and return that schedule if
        the solver finds nothing better.
    fused
        Offer DualPipe-style fused forward+backward pairs (see ``pipeline_model``).
    progress
        Called with a ``Progress`` (incumbent, bound, gap, elapsed) at every new solution.
    contiguous
        Free placement of a chain: stages on non-decreasing devices.

    Returns
    -------
    Plan
        Validated plan with ``solver`` (backend, optimal/feasible status, time, objective, bound),
        ``metrics.lower_bound`` and ``gap`` (makespan), and ``source`` {"planner", "baseline"}.

    Raises
    ------
    InvalidInputError
        Unknown objective or backend name.
    SolverUnavailableError
        A backend that is not available.
    InfeasibleError
        The memory limit cannot be met; the message says where and the smallest limit known to work.
    NoSolutionError
        No schedule found within the time limit.
    """
    _check_names(objective, backend)
    t0 = time.perf_counter()
    if memory_limit is not None:
        if not memory_limit >= 0:
            raise InvalidInputError(f"memory_limit: must be >= 0, got {memory_limit}")
        problem = problem.with_memory_limit(memory_limit)
    model = pipeline_model(problem, fused=fused, contiguous=contiguous)
    reasons = check_memory_limits(problem, model)
    if reasons:
        raise InfeasibleError(
            _infeasible_message(problem, reasons, _smallest_limit(problem, fused, time_limit_s))
        )

    starts = warm_starts(problem, model) if warm_start else []
    first = objective.split(",")[0]

    def key(w: WarmStart) -> tuple[float, float]:
        return _plan_score(w.plan, first, memory_weight)

    baseline = min(starts, key=key) if starts else None
    expert = [w for w in starts if not w.name.startswith("list-")]
    best_expert = min(expert, key=key) if expert else None
    bounds = lower_bounds(model)
    static_bound = bounds.best
    relaxed = 0
    warm_ticks = baseline.assignment.makespan(model) if baseline else None
    if (
        first == "makespan"
        and backend == "cpsat"
        and model.is_fixed
        and not model.fusable
        and (warm_ticks is None or warm_ticks > static_bound)
    ):
        relaxed = _relaxation_bound(
            model, RELAXATION_SHARE * time_limit_s, workers, deterministic, warm_ticks
        )
        time_limit_s -= min(time_limit_s / 2, time.perf_counter() - t0)

    phases = [objective] if "," not in objective else objective.split(",")
    budget = time_limit_s / len(phases)
    result: BackendResult | None = None
    caps: dict[str, int] = {}
    sol: Assignment | None = baseline.assignment if baseline else None
    # makespan_s + memory_weight * peak, divided by the tick: ticks + (w * quantum / tick) quanta
    weight = memory_weight * model.mem_quantum / model.tick
    proven = True
    solver_bound: int | None = None
    for phase in phases:
        opts = BackendOptions(
            objective=phase,
            memory_weight=weight,
            max_makespan=caps.get("makespan"),
            max_memory=caps.get("memory"),
        )
        if sol is not None and phase == "makespan" and "makespan" not in caps:
            opts = BackendOptions(
                objective=phase,
                memory_weight=weight,
                max_makespan=sol.makespan(model),
                max_memory=caps.get("memory"),
                min_makespan=relaxed or None,
            )
        solver = make_backend(backend, model, opts)  # also raises early for a missing solver
        if phase == "makespan" and sol is not None and sol.makespan(model) <= max(bounds.best, relaxed):
            # the warm start meets the lower bound: optimal without a search
            ms = sol.makespan(model)
            result = BackendResult(status="optimal", assignment=sol, objective=ms, bound=ms, time_s=0.0)
        else:
            # the one-micro-batch-at-a-time fallback is a poor hint: CP-SAT stays near it (measured:
            # 99 instead of 58 on a free-placement problem); it still caps the search and is returned
            # if nothing better is found
            if sol is not None and not (
                baseline is not None and sol is baseline.assignment and baseline.name == "list-serial"
            ):
                solver.add_hint(sol)
            result = solver.solve(
                time_limit_s=max(0.1, budget), workers=workers, deterministic=deterministic, progress=progress
            )
        if result.status == "infeasible" and sol is None:
            raise InfeasibleError(
                _infeasible_message(
                    problem,
                    ["no schedule meets the memory limits"],
                    _smallest_limit(problem, fused, time_limit_s),
                )
            )
        if result.assignment is not None:
            cand = result.assignment
            if sol is None or _sol_score(model, cand, phase, memory_weight) < _sol_score(
                model, sol, phase, memory_weight
            ):
                sol = cand
        if result.status != "optimal":
            proven = False
        if sol is None:
            raise NoSolutionError(
                f"no schedule found in {time_limit_s:g} s ({len(model.tasks)} tasks); raise --time-limit"
            )
        value = sol.makespan(model) if phase == "makespan" else _peak(model, sol)
        caps[phase] = value
        if phase == objective.split(",")[0] and result.bound is not None:
            solver_bound = result.bound

    assert sol is not None and result is not None
    plan = assignment_plan(problem, model, sol, "parplan")
    if baseline is not None and _plan_score(baseline.plan, first, memory_weight) < _plan_score(
        plan, first, memory_weight
    ):
        plan, proven = baseline.plan, False  # the solver's answer rounds worse than its warm start
    ms_bound_ticks = max(bounds.best, relaxed)
    if objective in ("makespan", "makespan,memory") and solver_bound is not None:
        ms_bound_ticks = max(ms_bound_ticks, solver_bound)
    lower: float | None
    if model.exact_time:
        lower = ms_bound_ticks * model.tick
    else:
        # ceil-rounded ticks overestimate; bounds of a floor-rounded model hold in real time, and so
        # does the solver's bound minus one tick per rounded duration or delay on any path (re-timing
        # a real schedule with rounded-up values delays it by at most that much)
        floor_model = pipeline_model(problem, fused=fused, contiguous=contiguous, round_down=True)
        lower = lower_bounds(floor_model).best * floor_model.tick
        if objective in ("makespan", "makespan,memory") and solver_bound is not None:
            slack = len(model.tasks) + sum(1 for a in model.arcs if a.delay)
            lower = max(lower, (solver_bound - slack) * model.tick)
        proven = False  # optimal in ticks, not necessarily in real time
    lower = min(lower, plan.metrics.makespan)
    if not _model_covers_fusion(problem, fused):
        # fused F&B actions (built-in schedules may use them) can beat every schedule of this model,
        # so neither its bounds nor its optimality hold for the problem
        lower, proven = None, False
    status = "optimal" if proven else "feasible"
    peak = max(plan.metrics.peak_memory_per_device)
    objective_value = {"makespan": plan.metrics.makespan, "memory": peak}.get(
        first, plan.metrics.makespan + memory_weight * peak
    )
    bound_value = None
    if solver_bound is not None and first == "makespan" and model.exact_time and lower is not None:
        bound_value = solver_bound * model.tick
    elif solver_bound is not None and first == "memory":
        bound_value = solver_bound * model.mem_quantum
    info = SolverInfo(
        backend=backend,
        status=status,
        time_s=time.perf_counter() - t0,
        objective=objective_value,
        bound=bound_value,
    )
    source: dict[str, object] = {
        "planner": {
            "backend": backend,
            "objective": objective,
            "tick": model.tick,
            "exact_time": model.exact_time,
            "tasks": len(model.tasks),
            "warm_start": baseline.name if baseline else None,
            "solver_status": result.status,
        },
        "baseline": (
            {"name": best_expert.name, "makespan": best_expert.plan.metrics.makespan}
            if best_expert
            else ({"name": baseline.name, "makespan": baseline.plan.metrics.makespan} if baseline else None)
        ),
    }
    out = Plan(
        problem=plan.problem,
        timed=plan.timed,
        metrics=plan.metrics.with_bound(lower),
        name="parplan",
        solver=info,
        source=source,
    )
    violations = out.validate()
    if violations:
        raise InternalError(f"planned schedule fails the validator: {violations[:3]}")
    return out


def _relaxation_bound(
    model: TaskModel, budget_s: float, workers: int, deterministic: bool, target: int | None
) -> int:
    """The best one-device relaxation bound (ticks) within ``budget_s``, devices with the highest
    static bound first (each given half the remaining budget); stops early once the bound reaches
    ``target`` (the warm start)."""
    from parplan.solve.cpsat import device_relaxation_bound

    static = lower_bounds(model)
    heads, tails = static.heads, static.tails
    load: dict[int, int] = {}
    for d in range(model.num_devices):
        tasks = [t for t in model.tasks if t.durations[0][0] == d]
        if tasks:
            load[d] = (
                min(heads[t.index] for t in tasks)
                + sum(t.durations[0][1] for t in tasks)
                + min(tails[t.index] for t in tasks)
            )
    best = 0
    t0 = time.perf_counter()
    devices = sorted(load, key=lambda d: -load[d])
    for k, d in enumerate(devices):
        left = budget_s - (time.perf_counter() - t0)
        if left <= 0.05:
            break
        # the most loaded devices decide the bound: each gets half of what is left
        share = left / 2 if k < len(devices) - 1 else left
        best = max(
            best,
            device_relaxation_bound(
                model, d, time_limit_s=share, workers=workers, deterministic=deterministic
            ),
        )
        if target is not None and best >= target:
            break
    return best


def _model_covers_fusion(problem: PipelineProblem, fused: bool) -> bool:
    """Whether no fused action could beat the model: no stage overlaps a forward with a backward
    faster than running them apart, or the model offers every such pair (fused, unsplit backward)."""
    gains = False
    for st in problem.stages:
        devices = [st.device] if st.device is not None else range(problem.num_devices)
        for d in devices:
            c = st.cost_on(d)
            if c.FB is not None and lt(c.FB, c.F + c.B):
                gains = True
    return not gains or (fused and not problem.split_backward)


def _score(phase: str, makespan: float, peak: float, memory_weight: float) -> tuple[float, float]:
    """What ``phase`` minimizes, then the other measure as tie-break (real units, rounded for ties)."""
    if phase == "memory":
        key = (peak, makespan)
    elif phase == "weighted":
        key = (makespan + memory_weight * peak, makespan)
    else:
        key = (makespan, peak)
    return (round(key[0], 9), round(key[1], 9))


def _sol_score(model: TaskModel, sol: Assignment, phase: str, memory_weight: float) -> tuple[float, float]:
    return _score(
        phase, sol.makespan(model) * model.tick, _peak(model, sol) * model.mem_quantum, memory_weight
    )


def _plan_score(plan: Plan, phase: str, memory_weight: float) -> tuple[float, float]:
    return _score(phase, plan.metrics.makespan, max(plan.metrics.peak_memory_per_device), memory_weight)


# ---------------------------------------------------------------------------- infeasibility


def _smallest_limit(problem: PipelineProblem, fused: bool, time_limit_s: float) -> tuple[float, bool] | None:
    """The smallest per-device peak memory any schedule reaches, and whether it is proven optimal."""
    free = problem.with_memory_limit(None)
    model = pipeline_model(free, fused=fused)
    sol = None
    best = best_heuristic(model)
    solver = make_backend("cpsat", model, BackendOptions(objective="memory"))
    if best is not None:
        sol = best[1]
        solver.add_hint(sol)
    res = solver.solve(time_limit_s=min(10.0, max(1.0, time_limit_s / 2)), workers=2, deterministic=False)
    if res.assignment is None:
        return None
    return res.objective * model.mem_quantum if res.objective is not None else None, res.status == "optimal"  # type: ignore[return-value]


def _infeasible_message(
    problem: PipelineProblem, reasons: list[str], smallest: tuple[float, bool] | None
) -> str:
    msg = "memory limit cannot be met: " + "; ".join(reasons)
    if smallest is not None and smallest[0] is not None:
        value, proven = smallest
        if proven:
            msg += f"; the smallest limit that works is {value:g} (proven: minimum peak memory)"
        else:
            msg += f"; a limit of {value:g} works (best found, maybe not the smallest)"
    return msg + "; raise --memory-limit or use more devices"
