"""``plan_problem``: warm starts, solver, validation and bounds wired into one call returning a Plan.

Flow: build the task model once; collect warm starts (every applicable expert schedule and the
list-scheduling heuristic, each checked by the independent validator); solve with the chosen
backend, hinted with the best warm start and capped by it; convert the answer to per-device orders,
re-time them with ``parplan.simulate`` and validate; never return anything worse than the warm start.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from parplan.errors import (
    InfeasibleError,
    InternalError,
    InvalidInputError,
    NoSolutionError,
)
from parplan.numeric import lt, within_limit
from parplan.plan import Plan, SolverInfo
from parplan.problem import PipelineProblem
from parplan.schedule.ir import Action, Schedule
from parplan.simulate import TimedAction, compute_metrics, validate
from parplan.solve.backend import BackendOptions, BackendResult, Progress
from parplan.solve.bounds import Bounds, lower_bounds
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
from parplan.solve.registry import BACKENDS as _REGISTRY
from parplan.solve.registry import make_backend

#: Measures ``plan_problem`` can minimize; "a,b" is lexicographic (a first, then b held at its best).
MEASURES = ("makespan", "memory", "span", "utilization")
#: Objective names accepted by ``plan_problem``: a measure, two or three of them joined by commas
#: (lexicographic), or ``weighted`` (makespan + memory_weight * peak).
OBJECTIVES = (*MEASURES, "makespan,memory", "memory,makespan", "span,makespan", "span,memory", "weighted")
#: Backend names (``parplan.solve.registry.make_backend`` builds them).
BACKENDS = tuple(_REGISTRY)
#: Share of the time limit the warm starts (expert schedules, list heuristics) may use at most.
WARM_SHARE = 0.15
#: Share of what is left after the warm starts that local search on the best one may use: CP-SAT
#: rarely improves a real-valued warm start above about 600 tasks (measured on the Zero Bubble rows).
SEARCH_SHARE = 0.3
SEARCH_SHARE_LARGE = 0.6
LARGE_TASKS = 600
#: Below this many tasks the search is skipped; it stops after this many fruitless kicks in a row.
SEARCH_MIN_TASKS = 150
SEARCH_PATIENCE = 300
#: Share of what is left that one-device relaxation bounds may use before the main solve.
RELAXATION_SHARE = 0.25
#: Time kept for certifying the answer (re-timing, validation, rounded bounds), seconds per task.
CERTIFY_S_PER_TASK = 1.2e-4


@dataclass(frozen=True, slots=True, kw_only=True)
class WarmStart:
    """A feasible starting point: its name, its assignment in ticks and its plan in real units."""

    name: str
    assignment: Assignment
    plan: Plan


def parse_objective(objective: str) -> tuple[str, ...]:
    """The phases of ``objective`` (``("weighted",)`` or one to three distinct measures)."""
    if objective == "weighted":
        return ("weighted",)
    phases = tuple(p.strip() for p in objective.split(","))
    bad = [p for p in phases if p not in MEASURES]
    if bad or not phases or len(set(phases)) != len(phases) or len(phases) > 3:
        raise InvalidInputError(
            f"objective {objective!r}: use one of {', '.join(MEASURES)}, up to three of them "
            "comma-separated without repeats (lexicographic, e.g. span,makespan), or weighted"
        )
    return phases


def _check_names(objective: str, backend: str) -> tuple[str, ...]:
    if backend not in BACKENDS:
        raise InvalidInputError(f"backend {backend!r}: unknown; choose one of {', '.join(BACKENDS)}")
    phases = parse_objective(objective)
    if backend != "cpsat" and {"span", "utilization"} & set(phases):
        raise InvalidInputError(
            f"objective {objective!r}: span and utilization are modelled by --backend cpsat only"
        )
    return phases


# ---------------------------------------------------------------------------- conversions


def to_schedule(model: TaskModel, sol: Assignment, name: str = "plan") -> Schedule:
    """Per-device orders of ``sol`` (tasks sorted by start; a fused pair becomes one FB action,
    F&B as DualPipe writes it when the pair absorbs the backward's W)."""
    rank = {t: i for i, t in enumerate(model.topo_order)}
    partner = {f: b for f, b in sol.fused}
    hidden = sol.hidden(model)
    orders: list[list[tuple[int, int, int, Action]]] = [[] for _ in range(model.num_devices)]
    ends = sol.ends(model)
    for t in model.tasks:
        if t.index in hidden:
            continue
        s, k, j = t.key
        action = Action(stage=s, kind=k, microbatch=j)
        if t.index in partner:
            bs, bk, bj = model.tasks[partner[t.index]].key
            if model.pair_of[t.index, partner[t.index]].absorbed is not None:
                bk = "B"  # I and its absorbed W: the whole backward
            action = Action.fused(action, Action(stage=bs, kind=bk, microbatch=bj))
        orders[sol.device[t.index]].append((sol.start[t.index], ends[t.index], rank[t.index], action))
    return Schedule.of(name, [[a for *_, a in sorted(o, key=lambda x: x[:3])] for o in orders])


def from_schedule(model: TaskModel, schedule: Schedule) -> Assignment | None:
    """Tick-space assignment of a schedule's orders (ASAP), or None if it does not fit the model.

    A full backward B of a split stage becomes its I then its W; a fused action becomes its model
    pair when the model offers that fusion (DualPipe's F&B on a split stage: the pair F & I with
    the W absorbed), otherwise its parts in sequence.
    """
    key = model.task_of_key
    pairs = model.pair_of
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
            pair = pairs.get((tasks[0][0], tasks[1][0])) if action.is_fused and len(tasks[0]) == 1 else None
            # a pair that absorbs W fits an F&B action only (F&I leaves W to run later: the parts)
            if pair is not None and (pair.absorbed is None) == (len(tasks[1]) == 1):
                fused.append((pair.forward, pair.backward))
                seq.append(pair.forward)
                for t in tasks[0] + tasks[1]:
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


def warm_starts(
    problem: PipelineProblem, model: TaskModel, *, deadline: float | None = None
) -> list[WarmStart]:
    """Every valid warm start: applicable expert schedules and the heuristic, each validated.

    With a ``deadline`` (a ``time.perf_counter()`` value) the collection stops there; the list
    heuristic always gets one run when no expert schedule applies, so the planner has an answer.
    """
    out: list[WarmStart] = []
    try:
        from parplan.schedule.expert import applicable_schedules, build_schedule
    except ImportError:  # expert schedules are optional for the planner
        applicable = []
    else:
        applicable = [name for name, reason in applicable_schedules(problem) if reason is None]
    for name in applicable:
        if deadline is not None and time.perf_counter() > deadline and out:
            break
        try:
            schedule = build_schedule(name, problem)
            plan = Plan.from_schedule(problem, schedule)
        except InvalidInputError:
            continue
        limits = [dev.memory_limit for dev in problem.devices]
        if not all(within_limit(x, lim) for x, lim in zip(plan.metrics.peak_memory_per_device, limits)):
            continue  # over the memory limit (cheap test before the full validation)
        if plan.validate():
            continue
        sol = from_schedule(model, schedule)
        if sol is None or check_assignment(model, sol):
            continue
        out.append(WarmStart(name=name, assignment=sol, plan=plan))
    if deadline is not None and time.perf_counter() > deadline and out:
        return out
    best = _best_heuristic(model, deadline)
    if best is not None:
        rule, sol = best
        plan = assignment_plan(problem, model, sol, f"list-{rule}")
        if not plan.validate():
            out.append(WarmStart(name=f"list-{rule}", assignment=sol, plan=plan))
    return out


def _best_heuristic(model: TaskModel, deadline: float | None) -> tuple[str, Assignment] | None:
    return best_heuristic(model, deadline=deadline)


def improved_start(setup: _Setup, starts: list[WarmStart], deadline: float) -> WarmStart | None:
    """The best warm start improved by local search on its per-device orders until ``deadline``
    (placed problems, makespan or span first), or None when there is nothing to improve."""
    first = setup.phases[0]
    if first not in ("makespan", "span") or not setup.model.is_fixed or not starts:
        return None
    if len(setup.model.tasks) < SEARCH_MIN_TASKS:
        return None  # CP-SAT alone proves these quickly
    best = min(starts, key=lambda w: _plan_key(w.plan, setup.phases, setup.memory_weight))
    floor = _phase_bound(setup.bounds, first, 0)
    if floor is not None and _sol_value(setup.model, best.assignment, first) <= floor:
        return None  # already meets a lower bound
    if any(t.action.is_fused for t in best.plan.timed) or deadline - time.perf_counter() < 0.2:
        return None
    from parplan.solve.improve import improve_schedule

    schedule = improve_schedule(
        setup.problem, best.plan.schedule, objective=first, deadline=deadline, patience=SEARCH_PATIENCE
    )
    plan = Plan.from_schedule(setup.problem, schedule)
    if plan.validate():
        return None
    if _plan_key(plan, setup.phases, setup.memory_weight) >= _plan_key(
        best.plan, setup.phases, setup.memory_weight
    ):
        return None
    sol = from_schedule(setup.model, schedule)
    if sol is None or check_assignment(setup.model, sol):
        return None
    return WarmStart(name=f"{best.name}+search", assignment=sol, plan=plan)


def _peak(model: TaskModel, sol: Assignment) -> int:
    return max(peak_level(model, sol, d) for d in range(model.num_devices))


# ---------------------------------------------------------------------------- entry point


@dataclass(frozen=True, slots=True, kw_only=True)
class _Setup:
    """What every phase reads: the problem (limits applied), its task model, the objective phases,
    the backend options and the clock."""

    problem: PipelineProblem
    model: TaskModel
    phases: tuple[str, ...]
    backend: str
    workers: int
    deterministic: bool
    fused: bool
    contiguous: bool
    memory_weight: float
    t0: float
    deadline: float
    bounds: Bounds

    def left(self) -> float:
        return self.deadline - time.perf_counter()


@dataclass(slots=True, kw_only=True)
class _Solved:
    """The solve phase's answer: the best assignment, whether every phase was proven, the solver's
    bound on the first phase (ticks or quanta), and the last backend status."""

    sol: Assignment
    proven: bool
    solver_bound: int | None
    status: str
    relaxed: int


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

    Runs in three phases: warm starts (expert schedules and list heuristics, each validated), solve
    (the backend, hinted with the best warm start and capped by it), certify (re-time, validate,
    lower bounds). The whole call answers within ``time_limit_s`` plus a small overhead.

    Parameters
    ----------
    problem
        The pipeline problem (placed, or with ``placement == "free"`` stages without devices).
    objective
        ``makespan`` (default), ``memory`` (the largest per-device peak), ``span`` (the longest
        device span: a device's last end minus its own first start, the Zero Bubble paper's cost),
        ``utilization`` (busy / span summed over devices: minimizes the sum of spans), two or three
        of them comma-separated (lexicographic: each next one with the previous held at its best
        found value), or ``weighted`` (makespan + ``memory_weight`` * peak, in real units).
    memory_limit
        Per-device memory limit overriding the problem's devices (problem memory units).
    time_limit_s
        Wall-clock limit of the whole call (warm starts, solver, certification).
    backend
        ``cpsat`` (default), ``highs`` or ``gurobi`` (the MILP formulation; SolverUnavailableError
        when the solver is not installed or licensed; makespan, memory and weighted only).
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
        Unknown objective or backend name, a non-positive time limit, or a problem too large to
        model (the message gives its size and the ceiling).
    SolverUnavailableError
        A backend that is not available.
    InfeasibleError
        The memory limit cannot be met; the message says where and the smallest limit known to work.
    NoSolutionError
        No schedule found within the time limit.
    """
    t0 = time.perf_counter()
    phases = _check_names(objective, backend)
    if not (time_limit_s > 0 and math.isfinite(time_limit_s)):
        raise InvalidInputError(f"time limit: must be a positive number of seconds, got {time_limit_s}")
    setup = _prepare(
        problem,
        phases=phases,
        memory_limit=memory_limit,
        backend=backend,
        workers=workers,
        deterministic=deterministic,
        fused=fused,
        contiguous=contiguous,
        memory_weight=memory_weight,
        t0=t0,
        time_limit_s=time_limit_s,
    )
    starts: list[WarmStart] = []
    if warm_start:
        warm_deadline = t0 + WARM_SHARE * time_limit_s
        starts = warm_starts(setup.problem, setup.model, deadline=warm_deadline)
        share = SEARCH_SHARE_LARGE if len(setup.model.tasks) >= LARGE_TASKS else SEARCH_SHARE
        search = improved_start(setup, starts, time.perf_counter() + share * setup.left())
        if search is not None:
            starts.append(search)
    solved = _solve(setup, starts, progress)
    return _certify(setup, starts, solved)


def _prepare(
    problem: PipelineProblem,
    *,
    phases: tuple[str, ...],
    memory_limit: float | None,
    backend: str,
    workers: int,
    deterministic: bool,
    fused: bool,
    contiguous: bool,
    memory_weight: float,
    t0: float,
    time_limit_s: float,
) -> _Setup:
    """Apply the memory limit, refuse what cannot be modelled, build the task model, and refuse
    limits no schedule meets (with the smallest that works)."""
    if memory_limit is not None:
        if not (memory_limit >= 0 and math.isfinite(memory_limit)):
            raise InvalidInputError(f"memory_limit: must be a finite number >= 0, got {memory_limit}")
        problem = problem.with_memory_limit(memory_limit)
    tasks = problem_size(problem)
    if tasks > MAX_TASKS:
        raise InvalidInputError(
            f"problem too large to plan: {tasks:,} tasks (stages x micro-batches x passes) > "
            f"{MAX_TASKS:,}; use fewer micro-batches (the schedule repeats), or merge stages"
        )
    deadline = t0 + time_limit_s - min(0.3 * time_limit_s, CERTIFY_S_PER_TASK * tasks)
    model = pipeline_model(problem, fused=fused, contiguous=contiguous)
    if {"span", "utilization"} & set(phases) and not model.is_fixed:
        raise InvalidInputError(
            "objective span/utilization: needs a placed problem (a device's span is only known once "
            "its stages are); use --placement linear|interleaved|v|bidirectional"
        )
    setup = _Setup(
        problem=problem,
        model=model,
        phases=phases,
        backend=backend,
        workers=workers,
        deterministic=deterministic,
        fused=fused,
        contiguous=contiguous,
        memory_weight=memory_weight,
        t0=t0,
        deadline=deadline,
        bounds=lower_bounds(model),
    )
    reasons = check_memory_limits(problem, model)
    if reasons:
        raise InfeasibleError(
            _infeasible_message(problem, reasons, _smallest_limit(problem, fused, max(0.5, setup.left())))
        )
    return setup


#: Largest problem ``plan_problem`` models (tasks): 4x the largest size measured to answer within
#: its limit (p=32, m=256: 24,576 tasks, 48-59 s at --time-limit 60); beyond it the model alone
#: outgrows any time limit on a workstation.
MAX_TASKS = 100_000


def problem_size(problem: PipelineProblem) -> int:
    """Tasks of the problem's model: one per stage, micro-batch and pass kind."""
    kinds = 1 + len(problem.backward_kinds())
    return sum(len(mb.stages) for mb in problem.microbatches) * kinds


def _cap_field(phase: str) -> str:
    return {"makespan": "max_makespan", "memory": "max_memory", "span": "max_span"}.get(phase, "max_span_sum")


def _solve(setup: _Setup, starts: list[WarmStart], progress: Callable[[Progress], None] | None) -> _Solved:
    """Run the backend once per objective phase, hinted with and capped by the incumbent."""
    model, phases = setup.model, setup.phases
    first = phases[0]
    baseline = min(starts, key=lambda w: _plan_key(w.plan, phases, setup.memory_weight)) if starts else None
    bounds = setup.bounds
    relaxed = 0
    warm_ticks = baseline.assignment.makespan(model) if baseline else None
    if (
        first == "makespan"
        and setup.backend == "cpsat"
        and model.is_fixed
        and not model.fusable
        and (warm_ticks is None or warm_ticks > bounds.best)
    ):
        relaxed = _relaxation_bound(
            model, bounds, RELAXATION_SHARE * setup.left(), setup.workers, setup.deterministic, warm_ticks
        )
    sol: Assignment | None = baseline.assignment if baseline else None
    # makespan_s + memory_weight * peak, divided by the tick: ticks + (w * quantum / tick) quanta
    weight = setup.memory_weight * model.mem_quantum / model.tick
    proven = True
    status = "unknown"
    solver_bound: int | None = None
    caps: dict[str, int] = {}
    for k, phase in enumerate(phases):
        budget = setup.left() / (len(phases) - k)
        fields: dict[str, int | None] = {_cap_field(p): v for p, v in caps.items()}
        if sol is not None and phase in ("makespan", "span", "utilization"):
            fields[_cap_field(phase)] = _sol_value(model, sol, phase)
        opts = BackendOptions(
            objective=phase,
            memory_weight=weight,
            min_makespan=(relaxed or None) if phase == "makespan" else None,
            **fields,  # type: ignore[arg-type]
        )
        solver = make_backend(setup.backend, model, opts)  # also raises early for a missing solver
        floor = _phase_bound(bounds, phase, relaxed)
        result: BackendResult
        if sol is not None and floor is not None and _sol_value(model, sol, phase) <= floor:
            # the incumbent meets a lower bound: optimal without a search
            v = _sol_value(model, sol, phase)
            result = BackendResult(status="optimal", assignment=sol, objective=v, bound=v, time_s=0.0)
        elif budget < 0.05:
            result = BackendResult(status="skipped", assignment=None, objective=None, bound=None, time_s=0.0)
        else:
            # the one-micro-batch-at-a-time fallback is a poor hint: CP-SAT stays near it (measured:
            # 99 instead of 58 on a free-placement problem); it still caps the search and is returned
            # if nothing better is found
            if sol is not None and not (
                baseline is not None and sol is baseline.assignment and baseline.name == "list-serial"
            ):
                solver.add_hint(sol)
            result = solver.solve(
                # CP-SAT stops a few tenths of a second after its limit on a loaded machine
                time_limit_s=max(0.05, 0.95 * budget - 0.05),
                workers=setup.workers,
                deterministic=setup.deterministic,
                progress=progress,
            )
        status = result.status
        if result.status == "infeasible" and sol is None:
            raise InfeasibleError(
                _infeasible_message(
                    setup.problem,
                    ["no schedule meets the memory limits"],
                    _smallest_limit(setup.problem, setup.fused, max(0.5, setup.left())),
                )
            )
        if result.assignment is not None:
            cand = result.assignment
            if sol is None or _sol_key(model, cand, phases[k:], setup.memory_weight) < _sol_key(
                model, sol, phases[k:], setup.memory_weight
            ):
                sol = cand
        if result.status != "optimal":
            proven = False
        if sol is None:
            raise NoSolutionError(
                f"no schedule found in {time.perf_counter() - setup.t0:.3g} s ({len(model.tasks)} tasks); "
                "raise --time-limit"
            )
        caps[phase] = _sol_value(model, sol, phase)
        if k == 0 and result.bound is not None:
            solver_bound = result.bound
    assert sol is not None
    return _Solved(sol=sol, proven=proven, solver_bound=solver_bound, status=status, relaxed=relaxed)


def _phase_bound(bounds: Bounds, phase: str, relaxed: int) -> int | None:
    """A static lower bound on ``phase`` in the model's units, where one is known."""
    if phase == "makespan":
        return max(bounds.best, relaxed)
    if phase == "span":
        return bounds.span
    return None


def _certify(setup: _Setup, starts: list[WarmStart], solved: _Solved) -> Plan:
    """The validated plan of the best answer, never worse than the best warm start, with its lower
    bound (rounding-safe for real-valued problems) and solver record."""
    problem, model, phases = setup.problem, setup.model, setup.phases
    first = phases[0]
    key = lambda p: _plan_key(p, phases, setup.memory_weight)  # noqa: E731
    baseline = min(starts, key=lambda w: key(w.plan)) if starts else None
    expert = [w for w in starts if not w.name.startswith("list-") and "+search" not in w.name]
    best_expert = min(expert, key=lambda w: key(w.plan)) if expert else None
    # the warm start's own plan is the answer when the solver kept it (saves a re-timing at large
    # sizes), unless the model split its fused or full-backward actions: then the answer differs
    same = (
        baseline is not None
        and solved.sol == baseline.assignment
        and not any(
            t.action.is_fused or (t.action.kind == "B" and problem.split_backward)
            for t in baseline.plan.timed
        )
    )
    plan = (
        baseline.plan
        if same and baseline is not None
        else assignment_plan(problem, model, solved.sol, "parplan")
    )
    proven = solved.proven
    if baseline is not None and key(baseline.plan) < key(plan):
        plan, proven = baseline.plan, False  # the solver's answer rounds worse than its warm start
    solver_bound = solved.solver_bound
    bounds = setup.bounds
    # bounds that hold in real time: the model's when times convert exactly, else those of the
    # floor-rounded model (ceil-rounded ticks overestimate)
    if model.exact_time:
        real_bounds, real_tick = bounds, model.tick
    else:
        floor_model = pipeline_model(problem, fused=setup.fused, contiguous=setup.contiguous, round_down=True)
        real_bounds, real_tick = lower_bounds(floor_model), floor_model.tick
    ms_bound_ticks = max(bounds.best, solved.relaxed)
    makespan_first = first == "makespan"
    if makespan_first and solver_bound is not None:
        ms_bound_ticks = max(ms_bound_ticks, solver_bound)
    lower: float | None
    if model.exact_time:
        lower = ms_bound_ticks * model.tick
    else:
        # so does the solver's bound minus one tick per rounded duration or delay on any path
        # (re-timing a real schedule with rounded-up values delays it by at most that much)
        lower = real_bounds.best * real_tick
        if makespan_first and solver_bound is not None:
            slack = len(model.tasks) + sum(1 for a in model.arcs if a.delay)
            lower = max(lower, (solver_bound - slack) * model.tick)
        proven = False  # optimal in ticks, not necessarily in real time
    lower = min(lower, plan.metrics.makespan)
    if not _model_covers_fusion(problem, model, setup.fused):
        # fused F&B actions (built-in schedules may use them) can beat every schedule of this model,
        # so neither its bounds nor its optimality hold for the problem
        lower, proven = None, False
    measures = plan_measures(plan, setup.memory_weight)
    bound_value = None
    if solver_bound is not None and lower is not None and model.exact_time and first in ("makespan", "span"):
        bound_value = solver_bound * model.tick
    elif solver_bound is not None and first == "memory":
        bound_value = solver_bound * model.mem_quantum
    if first == "span" and _model_covers_fusion(problem, model, setup.fused):
        static_span = real_bounds.span * real_tick
        bound_value = min(max(bound_value or 0.0, static_span), measures["span"])
    info = SolverInfo(
        backend=setup.backend,
        status="optimal" if proven else "feasible",
        time_s=time.perf_counter() - setup.t0,
        objective=measures[first],
        bound=bound_value,
    )
    reference = best_expert or baseline
    source: dict[str, object] = {
        "planner": {
            "backend": setup.backend,
            "objective": ",".join(phases),
            "tick": model.tick,
            "exact_time": model.exact_time,
            "tasks": len(model.tasks),
            "warm_start": baseline.name if baseline else None,
            "solver_status": solved.status,
            "binding_bound": "solver"
            if lower is not None
            and solver_bound is not None
            and makespan_first
            and model.exact_time
            and solver_bound > bounds.best
            else bounds.binding,
        },
        "baseline": (
            {"name": reference.name, "makespan": reference.plan.metrics.makespan} if reference else None
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
    model: TaskModel, static: Bounds, budget_s: float, workers: int, deterministic: bool, target: int | None
) -> int:
    """The best one-device relaxation bound (ticks) within ``budget_s``, devices with the highest
    static bound first (each given half the remaining budget); stops early once the bound reaches
    ``target`` (the warm start)."""
    from parplan.solve.cpsat import device_relaxation_bound

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


def _model_covers_fusion(problem: PipelineProblem, model: TaskModel, fused: bool) -> bool:
    """Whether no fused action could beat the model: no stage overlaps a forward with a backward
    faster than running them apart, or the model offers every such pair.

    The model offers F & B (unsplit) and F & I with W absorbed (split, see ``pipeline_model``);
    that covers F & I with W later (same FB ticks, W later: dominated), but not F & W after an
    earlier I, which gains when FB < F + W.
    """
    gains = uncovered = False
    for st in problem.stages:
        devices = [st.device] if st.device is not None else range(problem.num_devices)
        for d in devices:
            c = st.cost_on(d)
            if c.FB is None:
                continue
            if lt(c.FB, c.F + c.B):
                gains = True
            if c.W is not None and lt(c.FB, c.F + c.W):
                uncovered = True
    if not gains:
        return True
    return fused and problem.is_placed and model.fusion_complete and not uncovered


def plan_measures(plan: Plan, memory_weight: float = 1.0) -> dict[str, float]:
    """Every objective measure of a plan in real units (utilization as busy / span over devices)."""
    m = plan.metrics
    peak = max(m.peak_memory_per_device, default=0.0)
    spans = [b + i for b, i in zip(m.busy_per_device, m.span_idle_per_device, strict=True)]
    total_span = sum(spans)
    return {
        "makespan": m.makespan,
        "memory": peak,
        "span": max(spans, default=0.0),
        "utilization": sum(m.busy_per_device) / total_span if total_span > 0 else 1.0,
        "weighted": m.makespan + memory_weight * peak,
    }


def _key(measures: dict[str, float], phases: tuple[str, ...]) -> tuple[float, ...]:
    """What the phases minimize in order, then makespan and memory as tie-breaks (rounded for ties;
    utilization is maximized)."""
    names = (*phases, "makespan", "memory")
    return tuple(round(-measures[p] if p == "utilization" else measures[p], 9) for p in names)


def _plan_key(plan: Plan, phases: tuple[str, ...], memory_weight: float) -> tuple[float, ...]:
    return _key(plan_measures(plan, memory_weight), phases)


def _sol_value(model: TaskModel, sol: Assignment, phase: str) -> int:
    """A phase's measure of ``sol`` in the model's integer units (ticks, quanta, sum of spans)."""
    if phase == "makespan":
        return sol.makespan(model)
    if phase == "memory":
        return _peak(model, sol)
    spans = sol.spans(model)
    return max(spans, default=0) if phase == "span" else sum(spans)


def _sol_key(
    model: TaskModel, sol: Assignment, phases: tuple[str, ...], memory_weight: float
) -> tuple[float, ...]:
    tick, quantum = model.tick, model.mem_quantum
    spans = sol.spans(model)
    busy = sum(sol.busy(model))
    measures = {
        "makespan": sol.makespan(model) * tick,
        "memory": _peak(model, sol) * quantum,
        "span": max(spans, default=0) * tick,
        "utilization": busy / sum(spans) if sum(spans) else 1.0,
        "weighted": sol.makespan(model) * tick + memory_weight * _peak(model, sol) * quantum,
    }
    return _key(measures, phases)


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
