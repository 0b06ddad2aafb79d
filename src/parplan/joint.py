"""Joint planning: each pipeline stage's intra-operator strategy chosen together with the schedule.

A stage *mode* is one point of the stage's time/memory Pareto frontier (``parplan.frontier``) on its
device group, turned into the pipeline's terms: F/I/W times per micro-batch, activation memory per
micro-batch in flight and static memory (parameters, gradients, optimizer state). All micro-batches
of a stage use the same mode. The planner (``parplan.solve.plan_problem``) orders the passes under
the per-device memory limit for one mode vector; :func:`plan_modes` searches the mode vectors by
branch and bound, cheapest lower bound first, and stops once the best makespan found is at most the
next vector's lower bound, so the answer is optimal over the mode space up to the planner's own gap.
The baseline :func:`sequential_plan` picks the modes first (per stage, ignoring the schedule) and
schedules afterwards.

This module sits above ``solve`` and ``frontier`` in the import order and imports no solver at
module level.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from parplan.cluster import Cluster
from parplan.cost.profile import Profile
from parplan.errors import InfeasibleError, InternalError, InvalidInputError, NoSolutionError
from parplan.graph.ops import OpGraph
from parplan.numeric import TOL, leq, within_limit
from parplan.plan import Plan
from parplan.problem import PassTimes, PipelineProblem, Stage

#: Rules of the sequential baseline: how many micro-batches of activations a mode must fit.
SEQUENTIAL_RULES = ("alone", "1f1b")


@dataclass(frozen=True, slots=True, kw_only=True)
class StageMode:
    """One way to run a stage: its pass times per micro-batch and its memory per device.

    ``index`` is the position on the stage's frontier (0 = fastest); ``strategy`` pairs operator
    names with configuration names (empty for hand-made modes); ``family`` is a short label such as
    ``"DP2xTP2+SP+ZeRO-1"``.
    """

    stage: int
    index: int
    cost: PassTimes
    act_mem: float
    wgrad_mem: float = 0.0
    param_mem: float = 0.0
    family: str = ""
    strategy: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        where = f"modes[{self.stage}][{self.index}]"
        for name in ("act_mem", "wgrad_mem", "param_mem"):
            value = getattr(self, name)
            if not value >= 0:
                raise InvalidInputError(f"{where}.{name}: must be >= 0, got {value}")
        if self.wgrad_mem > self.act_mem:
            raise InvalidInputError(
                f"{where}.wgrad_mem: {self.wgrad_mem} exceeds act_mem {self.act_mem}; the weight-gradient "
                "inputs are part of the activations"
            )

    @property
    def work(self) -> float:
        """F + backward time of one micro-batch."""
        return self.cost.F + self.cost.B

    def to_json(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "mode": self.index,
            "family": self.family,
            "cost": self.cost.to_json(),
            "act_mem": self.act_mem,
            "wgrad_mem": self.wgrad_mem,
            "param_mem": self.param_mem,
        }


# --------------------------------------------------------------------------- modes
def stage_mode_table(
    graph: OpGraph,
    cluster: Cluster,
    *,
    pp: int,
    devices_per_stage: int,
    microbatches: int,
    epsilon: float = 0.05,
    dtype: str = "bf16",
    placement: str = "linear",
    split_backward: bool = True,
    profile: Profile | None = None,
    gemm_dtype: str | None = None,
) -> tuple[PipelineProblem, tuple[tuple[StageMode, ...], ...]]:
    """The pipeline problem of ``graph`` and every stage's modes from its Pareto frontier.

    The partition is ``parplan.cost.pipeline.model_problem``'s (pp stages, each stage one pipeline
    "device" standing for a group of ``devices_per_stage`` devices). Each stage's operators get their
    own frontier on ``devices_per_stage`` devices with ``microbatches`` gradient-accumulation steps;
    a point of time ``T`` becomes a mode with ``F + I + W = T / microbatches`` (the per-iteration
    gradient synchronisation spread over the micro-batches), split in the proportions of the stage's
    single-device F, I and W; its memory splits into the training state (``param_mem``) and one
    micro-batch of stored activations (``act_mem``), ``wgrad_mem`` scaled from the stage's.
    ``profile`` (measured per-op times) prices both the stages and their frontiers; ``gemm_dtype``
    ``"fp8"`` (float8 training) both too.

    Returns
    -------
    (PipelineProblem, modes)
        ``modes[s]`` lists stage ``s``'s modes, fastest first.
    """
    from parplan.cost.pipeline import model_problem
    from parplan.frontier.query import subgraph
    from parplan.frontier.search import frontier

    if isinstance(devices_per_stage, bool) or not isinstance(devices_per_stage, int) or devices_per_stage < 1:
        raise InvalidInputError(f"devices_per_stage: must be an integer >= 1, got {devices_per_stage!r}")
    if (
        isinstance(pp, int)
        and not isinstance(pp, bool)
        and pp >= 1
        and pp * devices_per_stage > cluster.num_devices
    ):
        raise InvalidInputError(
            f"pp {pp} x devices_per_stage {devices_per_stage} = {pp * devices_per_stage} devices, but "
            f"cluster {cluster.name!r} has {cluster.num_devices}; lower one of them"
        )
    problem = model_problem(
        graph,
        cluster,
        pp=pp,
        microbatches=microbatches,
        placement=placement,
        dtype=dtype,
        split_backward=split_backward,
        profile=profile,
        gemm_dtype=gemm_dtype,
    )
    table: list[tuple[StageMode, ...]] = []
    for st in problem.stages:
        sub = subgraph(graph, st.ops, name=f"{graph.name}:{st.name}")
        f = frontier(
            sub,
            cluster,
            devices=devices_per_stage,
            microbatches=microbatches,
            epsilon=epsilon,
            dtype=dtype,
            profile=profile,
            gemm_dtype=gemm_dtype,
        )
        base = st.cost
        base_work = base.F + base.B
        modes = []
        for k, p in enumerate(f.points):
            if p.memory_breakdown is None:  # pragma: no cover - frontier() always sets it
                raise InternalError(f"joint: stage {st.index} point {k} has no memory breakdown")
            # the frontier's own split: state stays, activations and buffers are per micro-batch
            state = p.memory_breakdown.state
            act = p.memory_bytes - state
            if act < -1e-6 * max(1.0, p.memory_bytes):
                raise InternalError(
                    f"joint: stage {st.index} point {k} ({p.family}) splits into state {state:.6g} B "
                    f"> memory {p.memory_bytes:.6g} B; the frontier's memory model changed"
                )
            act = max(act, 0.0)
            per_mb = p.time_s / microbatches
            scale = per_mb / base_work if base_work > 0 else 0.0
            cost = base.scaled(scale)
            wgrad = min(act, st.wgrad_mem * (act / st.act_mem)) if st.act_mem > 0 else 0.0
            modes.append(
                StageMode(
                    stage=st.index,
                    index=k,
                    cost=cost,
                    act_mem=act,
                    wgrad_mem=wgrad,
                    param_mem=state,
                    family=p.family,
                    strategy=p.strategy,
                )
            )
        table.append(tuple(modes))
    return problem, tuple(table)


def with_modes(problem: PipelineProblem, choice: Sequence[StageMode]) -> PipelineProblem:
    """A copy of ``problem`` whose stage ``s`` runs in mode ``choice[s]``."""
    if len(choice) != problem.num_stages:
        raise InvalidInputError(
            f"modes: {len(choice)} given for {problem.num_stages} stages; give one per stage"
        )
    stages = []
    for st, m in zip(problem.stages, choice):
        if m.stage != st.index:
            raise InvalidInputError(
                f"modes[{st.index}]: belongs to stage {m.stage}; give modes in stage order"
            )
        stages.append(
            Stage(
                index=st.index,
                name=st.name,
                cost=m.cost,
                device=st.device,
                ops=st.ops,
                act_mem=m.act_mem,
                wgrad_mem=m.wgrad_mem,
                param_mem=m.param_mem,
            )
        )
    return problem.with_stages(stages)


def _limits(problem: PipelineProblem, memory_limit: float | None) -> list[float | None]:
    if memory_limit is not None:
        if not memory_limit >= 0:
            raise InvalidInputError(f"memory_limit: must be >= 0, got {memory_limit}")
        return [float(memory_limit)] * problem.num_devices
    return [d.memory_limit for d in problem.devices]


def _check_table(problem: PipelineProblem, modes: Sequence[Sequence[StageMode]]) -> None:
    if len(modes) != problem.num_stages:
        raise InvalidInputError(
            f"modes: {len(modes)} lists for {problem.num_stages} stages; give one per stage"
        )
    for s, ms in enumerate(modes):
        if not ms:
            raise InvalidInputError(f"modes[{s}]: empty; every stage needs at least one mode")
        for k, m in enumerate(ms):
            if m.stage != s:
                raise InvalidInputError(f"modes[{s}][{k}].stage: is {m.stage}, expected {s}")
        if problem.split_backward and any(not m.cost.is_split for m in ms):
            raise InvalidInputError(f"modes[{s}]: the problem splits the backward; give I and W times")


def _fits_alone(
    problem: PipelineProblem, choice: Sequence[StageMode], limits: Sequence[float | None]
) -> bool:
    """Whether every device can hold its stages' state plus the largest single activation.

    Any schedule runs every stage's F once, so some moment holds the device's static memory and
    that stage's activation: a necessary condition checked without a solver.
    """
    for d, limit in enumerate(limits):
        if limit is None:
            continue
        mine = [choice[s] for s in problem.stages_on(d)]
        if mine and not leq(sum(m.param_mem for m in mine) + max(m.act_mem for m in mine), limit):
            return False
    return True


def mode_lower_bound(
    problem: PipelineProblem, choice: Sequence[StageMode], *, memory_limit: float | None = None
) -> float:
    """A lower bound on the makespan of any schedule of ``problem`` in modes ``choice``.

    The larger of the planner's per-device load and critical-path bounds (on a floor-rounded task
    model, so they hold in real time) and the memory bound of :func:`memory_bound` under the
    per-device limits (``memory_limit`` overrides the problem's devices).
    """
    from parplan.solve.bounds import lower_bounds
    from parplan.solve.model import pipeline_model

    model = pipeline_model(with_modes(problem, choice), round_down=True)
    static = lower_bounds(model).best * model.tick
    return max(static, memory_bound(problem, choice, _limits(problem, memory_limit)))


def memory_bound(
    problem: PipelineProblem, choice: Sequence[StageMode], limits: Sequence[float | None]
) -> float:
    """Makespan lower bound from the micro-batches a device's memory lets it keep in flight.

    On a linear pipeline (one stage per device, every micro-batch through every stage), micro-batch
    ``j`` holds stage ``s``'s ``act_mem`` from the start of its F to the end of its I (B): at least
    ``life = F_s + I_s + sum over later stages of (F + I) + the transfers both ways``. With
    ``k = floor((limit - param_mem) / act_mem)`` at most ``k`` of these intervals overlap, so some
    ``ceil(m / k)`` of them are disjoint (an interval graph of clique size k is k-colourable), and
    all lie after the head (upstream F and transfers) and before the tail (upstream I and transfers):
    ``makespan >= head + ceil(m / k) * life + tail``. Returns 0 for other problems or no limits.
    """
    if not problem.is_placed or not problem.is_chain:
        return 0.0
    everything = set(range(problem.num_stages))
    if any(set(mb.stages) != everything for mb in problem.microbatches):
        return 0.0
    if any(len(problem.stages_on(d)) > 1 for d in range(problem.num_devices)):
        return 0.0
    order = problem.topo_order
    comm = {(e.src, e.dst): e.comm for e in problem.edges}
    back = "I" if problem.split_backward else "B"
    links = [comm.get((a, b), 0.0) for a, b in itertools.pairwise(order)]
    fwd = [choice[s].cost.F for s in order]
    bwd = [choice[s].cost.of(back) for s in order]
    m = problem.num_microbatches
    best = 0.0
    for pos, s in enumerate(order):
        dev = problem.stages[s].device
        limit = limits[dev] if dev is not None else None
        mode = choice[s]
        if limit is None or mode.act_mem <= 0:
            continue
        k = int((limit - mode.param_mem) / mode.act_mem * (1 + TOL))
        if k < 1:
            return float("inf")
        if k >= m:
            continue  # no extra constraint beyond the load and critical-path bounds
        life = sum(fwd[pos:]) + sum(bwd[pos:]) + 2 * sum(links[pos:])
        head = sum(fwd[:pos]) + sum(links[:pos])
        tail = sum(bwd[:pos]) + sum(links[:pos])
        best = max(best, head + (-(-m // k)) * life + tail)
    return best


# --------------------------------------------------------------------------- search
@dataclass(frozen=True, slots=True, kw_only=True)
class _Tried:
    choice: tuple[int, ...]
    bound: float
    status: str  # "planned", "infeasible", "no-solution", "unfit"
    makespan: float | None = None
    plan_bound: float | None = None


def _annotate(plan: Plan, choice: Sequence[StageMode], how: dict[str, Any], lower: float | None) -> Plan:
    strategy: dict[str, str] = {}
    for m in choice:
        strategy.update(dict(m.strategy))
    intra: dict[str, object] = {
        "strategy": strategy,
        "stages": [m.to_json() for m in choice],
    }
    source = dict(plan.source)
    source["joint"] = how
    metrics = plan.metrics if lower is None else plan.metrics.with_bound(min(lower, plan.metrics.makespan))
    out = replace(plan, intra_op=intra, source=source, metrics=metrics)
    violations = out.validate()
    if violations:
        raise InternalError(f"joint plan fails the validator: {violations[:3]}")
    return out


def plan_modes(
    problem: PipelineProblem,
    modes: Sequence[Sequence[StageMode]],
    *,
    memory_limit: float | None = None,
    time_limit_s: float = 30.0,
    solve_time_s: float | None = None,
    workers: int = 2,
    deterministic: bool = False,
    max_combinations: int = 200_000,
) -> Plan:
    """The best schedule over every choice of one mode per stage: modes and schedule decided together.

    Branch and bound over mode vectors: every vector gets the planner's static lower bound
    (:func:`mode_lower_bound`); vectors are scheduled by ``plan_problem`` in increasing bound order,
    and the search stops when the best makespan found is at most the next bound. Vectors whose
    static memory plus one activation exceeds a device's limit are skipped without a solve.

    Parameters
    ----------
    problem
        The pipeline problem (its stages' own costs are replaced by the modes).
    modes
        ``modes[s]``: the alternatives of stage ``s``.
    memory_limit
        Per-device limit overriding the problem's devices (problem memory units).
    time_limit_s
        Wall-clock budget of the whole search; when it runs out the best plan so far is returned
        and its lower bound covers the vectors not yet scheduled.
    solve_time_s
        Planner time limit per vector; default ``max(1, time_limit_s / 5)``, capped by what is left.
    workers, deterministic
        Passed to ``plan_problem``.
    max_combinations
        Refuse more mode vectors than this (prune the frontiers with a larger epsilon).

    Returns
    -------
    Plan
        Validated; ``intra_op`` = {"strategy": operator -> configuration, "stages": chosen modes};
        ``source["joint"]`` records the search (vectors, solved, pruned, proven); ``metrics.lower_bound``
        holds over the whole mode space.

    Raises
    ------
    InfeasibleError
        No mode vector has a schedule under the memory limit.
    NoSolutionError
        No schedule found within the budget.
    """
    from parplan.solve.api import plan_problem

    _check_table(problem, modes)
    if not time_limit_s > 0:
        raise InvalidInputError(f"time_limit_s: must be > 0, got {time_limit_s}")
    limits = _limits(problem, memory_limit)
    count = 1
    for ms in modes:
        count *= len(ms)
    if count > max_combinations:
        sizes = "x".join(str(len(ms)) for ms in modes)
        raise InvalidInputError(
            f"modes: {count} mode vectors ({sizes}) exceed max_combinations {max_combinations}; "
            "raise epsilon to thin the frontiers or raise max_combinations"
        )
    t0 = time.perf_counter()
    per_solve = solve_time_s if solve_time_s is not None else max(1.0, time_limit_s / 5)

    vectors: list[tuple[float, float, tuple[int, ...]]] = []
    unfit = 0
    for idx in itertools.product(*(range(len(ms)) for ms in modes)):
        choice = [modes[s][k] for s, k in enumerate(idx)]
        if not _fits_alone(problem, choice, limits):
            unfit += 1
            continue
        lean = sum(m.param_mem + m.act_mem for m in choice)
        vectors.append((mode_lower_bound(problem, choice, memory_limit=memory_limit), lean, idx))
    if not vectors:
        lean_d = _leanest_message(problem, modes, limits)
        raise InfeasibleError(
            f"joint: no mode vector fits the memory limit ({lean_d}); raise the limit or use more devices per stage"
        )
    vectors.sort()

    best: Plan | None = None
    best_idx: tuple[int, ...] | None = None
    tried: list[_Tried] = []
    frontier_bound: float | None = None  # bound of the first vector not scheduled
    timed_out = False
    for bound, _, idx in vectors:
        if best is not None and leq(best.metrics.makespan, bound):
            frontier_bound = bound
            break
        left = time_limit_s - (time.perf_counter() - t0)
        if left <= 0.05:
            frontier_bound, timed_out = bound, True
            break
        choice = [modes[s][k] for s, k in enumerate(idx)]
        try:
            plan = plan_problem(
                with_modes(problem, choice),
                memory_limit=memory_limit,
                time_limit_s=max(0.1, min(per_solve, left)),
                workers=workers,
                deterministic=deterministic,
            )
        except InfeasibleError:
            tried.append(_Tried(choice=idx, bound=bound, status="infeasible"))
            continue
        except NoSolutionError:
            tried.append(_Tried(choice=idx, bound=bound, status="no-solution"))
            continue
        tried.append(
            _Tried(
                choice=idx,
                bound=bound,
                status="planned",
                makespan=plan.metrics.makespan,
                plan_bound=plan.metrics.lower_bound,
            )
        )
        if best is None or plan.metrics.makespan < best.metrics.makespan:
            best, best_idx = plan, idx
    if best is None or best_idx is None:
        if all(t.status == "infeasible" for t in tried):
            raise InfeasibleError(
                f"joint: none of the {len(tried)} mode vectors that fit alone has a schedule under the "
                "memory limit; raise the limit or use more devices per stage"
            )
        raise NoSolutionError(f"joint: no schedule found in {time_limit_s:g} s; raise time_limit_s")

    # a lower bound over the whole mode space: the smallest among scheduled vectors' own bounds,
    # vectors that found no schedule in time, and the first vector never scheduled
    lows = [best.metrics.makespan]
    for t in tried:
        if t.status == "planned":
            # the planner's bound knows nothing of the memory bound: keep the larger of the two
            lows.append(max(t.bound, t.plan_bound) if t.plan_bound is not None else t.bound)
        elif t.status == "no-solution":
            lows.append(t.bound)
    if frontier_bound is not None:
        lows.append(frontier_bound)
    lower = min(lows)
    how = {
        "search": "branch-and-bound over mode vectors",
        "vectors": count,
        "unfit": unfit,
        "scheduled": sum(1 for t in tried if t.status == "planned"),
        "infeasible": sum(1 for t in tried if t.status == "infeasible"),
        "no_solution": sum(1 for t in tried if t.status == "no-solution"),
        "pruned": len(vectors) - len(tried),
        "timed_out": timed_out,
        # every vector is either closed at or above the best makespan, or provably infeasible
        "proven": leq(best.metrics.makespan, lower),
        "choice": list(best_idx),
        "time_s": time.perf_counter() - t0,
        "tried": [
            {"modes": list(t.choice), "bound": t.bound, "status": t.status, "makespan": t.makespan}
            for t in tried
        ],
    }
    chosen = [modes[s][k] for s, k in enumerate(best_idx)]
    return _annotate(best, chosen, how, lower)


def _leanest_message(
    problem: PipelineProblem, modes: Sequence[Sequence[StageMode]], limits: Sequence[float | None]
) -> str:
    parts = []
    for d, limit in enumerate(limits):
        mine = problem.stages_on(d)
        if limit is None or not mine:
            continue
        need = sum(min(m.param_mem + m.act_mem for m in modes[s]) for s in mine)
        if need > limit:
            parts.append(f"device {d} needs >= {need:.4g} with its leanest modes, limit {limit:.4g}")
    return "; ".join(parts) or "no combination fits every device at once"


# --------------------------------------------------------------------------- baseline
def sequential_modes(
    problem: PipelineProblem,
    modes: Sequence[Sequence[StageMode]],
    *,
    memory_limit: float | None = None,
    rule: str = "alone",
) -> tuple[StageMode, ...]:
    """Each stage's fastest mode that fits its device's limit, decided before any schedule.

    ``rule="alone"``: ``param_mem + act_mem <= limit`` (one micro-batch in flight, the schedule's
    activations ignored). ``rule="1f1b"``: ``param_mem + k * act_mem <= limit`` with ``k`` the
    micro-batches 1F1B keeps in flight on the stage (``min(microbatches, stages - s)`` on a linear
    chain). Stages sharing a device are checked one by one (the rule is per stage).

    Raises
    ------
    InfeasibleError
        A stage without a mode that passes the rule.
    """
    _check_table(problem, modes)
    if rule not in SEQUENTIAL_RULES:
        raise InvalidInputError(f"rule: unknown {rule!r}; use one of {', '.join(SEQUENTIAL_RULES)}")
    limits = _limits(problem, memory_limit)
    out = []
    m_count = problem.num_microbatches
    for s, ms in enumerate(modes):
        dev = problem.stages[s].device
        limit = limits[dev] if dev is not None else min((x for x in limits if x is not None), default=None)
        k = 1 if rule == "alone" else min(m_count, problem.num_stages - s)
        fits = [m for m in ms if within_limit(m.param_mem + k * m.act_mem, limit)]
        if not fits:
            lean = min(ms, key=lambda m: m.param_mem + k * m.act_mem)
            raise InfeasibleError(
                f"sequential: stage {s} has no mode with state + {k} x activations under {limit:.4g} "
                f"(leanest needs {lean.param_mem + k * lean.act_mem:.4g}); raise the limit or use more "
                "devices per stage"
            )
        out.append(min(fits, key=lambda m: (m.work, m.param_mem + m.act_mem)))
    return tuple(out)


def plan_sequential_modes(
    problem: PipelineProblem,
    modes: Sequence[Sequence[StageMode]],
    *,
    memory_limit: float | None = None,
    rule: str = "alone",
    time_limit_s: float = 30.0,
    workers: int = 2,
    deterministic: bool = False,
) -> Plan:
    """The baseline: :func:`sequential_modes` first, then the planner's best schedule for them.

    Returns a validated plan annotated like :func:`plan_modes` (``source["joint"]["search"]`` names
    the rule).
    """
    from parplan.solve.api import plan_problem

    t0 = time.perf_counter()
    choice = sequential_modes(problem, modes, memory_limit=memory_limit, rule=rule)
    plan = plan_problem(
        with_modes(problem, choice),
        memory_limit=memory_limit,
        time_limit_s=time_limit_s,
        workers=workers,
        deterministic=deterministic,
    )
    how = {
        "search": f"sequential ({rule})",
        "choice": [m.index for m in choice],
        "time_s": time.perf_counter() - t0,
    }
    # the memory bound often exceeds the planner's own under tight limits
    lower = mode_lower_bound(problem, choice, memory_limit=memory_limit)
    if plan.metrics.lower_bound is not None:
        lower = max(lower, plan.metrics.lower_bound)
    return _annotate(plan, choice, how, lower)


# --------------------------------------------------------------------------- from a model
def joint_plan(
    graph: OpGraph,
    cluster: Cluster,
    *,
    pp: int,
    devices_per_stage: int,
    microbatches: int,
    memory_limit: float | None = None,
    time_limit_s: float = 30.0,
    epsilon: float = 0.05,
    dtype: str = "bf16",
    solve_time_s: float | None = None,
    workers: int = 2,
    deterministic: bool = False,
    profile: Profile | None = None,
    gemm_dtype: str | None = None,
) -> Plan:
    """Plan ``graph`` on ``pp x devices_per_stage`` devices: stage strategies and schedule together.

    Parameters
    ----------
    graph, cluster
        Model (one micro-batch) and cluster.
    pp
        Pipeline stages (linear placement, one stage per device group).
    devices_per_stage
        Devices of each stage's group, over which its operators are split (data / tensor / ZeRO...).
    microbatches
        Micro-batches per iteration.
    memory_limit
        Bytes per device; default each device's memory.
    time_limit_s, solve_time_s, workers, deterministic
        As for :func:`plan_modes`.
    epsilon, dtype
        Frontier approximation and compute dtype (see ``parplan.frontier.frontier``).
    profile
        Measured per-op times (``parplan profile``) for the stages and their strategies.
    gemm_dtype
        ``"fp8"``: float8 training (the linear layers' GEMMs at the fp8 peak; storage in ``dtype``).

    Returns
    -------
    Plan
        Times in seconds, memory in bytes per device; ``intra_op`` names every operator's
        configuration and each stage's mode.
    """
    problem, modes = stage_mode_table(
        graph,
        cluster,
        pp=pp,
        devices_per_stage=devices_per_stage,
        microbatches=microbatches,
        epsilon=epsilon,
        dtype=dtype,
        profile=profile,
        gemm_dtype=gemm_dtype,
    )
    plan = plan_modes(
        problem,
        modes,
        memory_limit=memory_limit,
        time_limit_s=time_limit_s,
        solve_time_s=solve_time_s,
        workers=workers,
        deterministic=deterministic,
    )
    return _with_group(plan, devices_per_stage)


def sequential_plan(
    graph: OpGraph,
    cluster: Cluster,
    *,
    pp: int,
    devices_per_stage: int,
    microbatches: int,
    memory_limit: float | None = None,
    time_limit_s: float = 30.0,
    epsilon: float = 0.05,
    dtype: str = "bf16",
    rule: str = "alone",
    workers: int = 2,
    deterministic: bool = False,
) -> Plan:
    """The sequential baseline of :func:`joint_plan`: strategies per stage first, then the schedule.

    ``rule`` is that of :func:`sequential_modes`; other arguments as for :func:`joint_plan`.
    """
    problem, modes = stage_mode_table(
        graph,
        cluster,
        pp=pp,
        devices_per_stage=devices_per_stage,
        microbatches=microbatches,
        epsilon=epsilon,
        dtype=dtype,
    )
    plan = plan_sequential_modes(
        problem,
        modes,
        memory_limit=memory_limit,
        rule=rule,
        time_limit_s=time_limit_s,
        workers=workers,
        deterministic=deterministic,
    )
    return _with_group(plan, devices_per_stage)


def _with_group(plan: Plan, devices_per_stage: int) -> Plan:
    intra = dict(plan.intra_op or {})
    intra["devices_per_stage"] = devices_per_stage
    return replace(plan, intra_op=intra)
