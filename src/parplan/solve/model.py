"""The backend-neutral task model: integer-tick tasks, placement groups, arcs, memory lifetimes.

Built once from a ``PipelineProblem`` (``build_model``) or from a flexible job shop (``parplan.solve.
fjsp``); every solver backend and the list-scheduling heuristic read only this. Time is converted to
integer ticks in exactly one place (``choose_quantum``), memory to integer quanta the same way; both
sizes are kept in the model so answers convert back. Imports no solver.
"""

from __future__ import annotations

import itertools
import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from functools import cached_property

from parplan.errors import InvalidInputError
from parplan.numeric import TOL
from parplan.problem import PipelineProblem

#: Durations above this many ticks switch from an exact tick to a rounded one.
MAX_EXACT_TICKS = 100_000
#: With a rounded tick, the longest duration spans this many ticks (relative rounding <= 1e-4).
ROUNDED_TICKS = 10_000
#: Memory values above this many quanta switch to a rounded quantum.
MAX_EXACT_QUANTA = 10_000_000


def choose_quantum(values: Iterable[float], *, max_exact: int, rounded: int) -> tuple[float, bool]:
    """The unit that turns ``values`` into integers, and whether the conversion is exact.

    When every value is a fraction with a small denominator (unit costs, halves, tenths) the unit
    is their greatest common divisor, so conversion is exact; otherwise the largest value spans
    ``rounded`` units and the rest is rounded (durations up, so real plans are never longer).
    """
    vals = [float(v) for v in values if v and v > 0]
    if not vals:
        return 1.0, True
    fracs = [Fraction(v).limit_denominator(1000) for v in vals]
    if all(abs(float(f) - v) <= 1e-12 * max(1.0, v) for f, v in zip(fracs, vals)):
        den = 1
        for f in fracs:
            den = den * f.denominator // math.gcd(den, f.denominator)
        num = 0
        for f in fracs:
            num = math.gcd(num, int(f * den))
        unit = Fraction(num, den)
        if max(vals) / float(unit) <= max_exact:
            return float(unit), True
    return max(vals) / rounded, False


def to_ticks(value: float, tick: float) -> int:
    """Ceil of ``value / tick``, forgiving float noise (3.0000000001 ticks is 3)."""
    x = value / tick
    r = round(x)
    if abs(x - r) <= TOL * max(1.0, abs(x)):
        return int(r)
    return math.ceil(x)


def to_ticks_floor(value: float, tick: float) -> int:
    """Floor of ``value / tick``, forgiving float noise (for lower bounds in rounded models)."""
    return to_quanta_floor(value, tick)


def to_quanta_floor(value: float, quantum: float) -> int:
    """Floor of ``value / quantum``, forgiving float noise (used for limits: never more lenient)."""
    x = value / quantum
    r = round(x)
    if abs(x - r) <= TOL * max(1.0, abs(x)):
        return int(r)
    return math.floor(x)


@dataclass(frozen=True, slots=True, kw_only=True)
class Task:
    """One unit of work: a pass of a stage for a micro-batch, or an operation of a job.

    ``key`` identifies it in the source problem: (stage, kind, microbatch) for pipelines,
    (job, operation, "op") for job shops. ``durations`` lists (device, ticks) alternatives.
    """

    index: int
    key: tuple[int, str, int]
    group: int
    durations: tuple[tuple[int, int], ...]

    @property
    def label(self) -> str:
        s, k, j = self.key
        return f"{s},{j},{k}"

    def duration_on(self, device: int) -> int:
        for d, t in self.durations:
            if d == device:
                return t
        raise KeyError(device)

    @property
    def min_duration(self) -> int:
        return min(t for _, t in self.durations)


@dataclass(frozen=True, slots=True, kw_only=True)
class Group:
    """Tasks that must share one device (a stage: its weights live there; or one job-shop operation).

    ``static_mem`` (quanta) is held by the device the group is placed on for the whole step.
    """

    index: int
    name: str
    devices: tuple[int, ...]
    static_mem: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class Arc:
    """``dst`` starts after ``src`` ends, plus ``delay`` ticks when they run on different devices."""

    src: int
    dst: int
    delay: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class Lifetime:
    """``demand`` memory quanta held on the device from the start of ``first`` to the end of ``last``."""

    first: int
    last: int
    demand: int


@dataclass(frozen=True, slots=True, kw_only=True)
class FusablePair:
    """A forward task and a backward task of another micro-batch or stage that may run fused for
    ``ticks`` (DualPipe's F&B chunk).

    With a split backward, ``backward`` is the I task and ``absorbed`` the W task of the same stage
    and micro-batch: the chunk overlaps the forward with the whole backward B = I + W. Fused, the
    forward and the I start together and end after ``ticks``; the absorbed W has no interval of its
    own: it lasts zero ticks at the chunk's end (so its arc from I holds as it stands and its
    activation is released when the chunk ends).
    """

    forward: int
    backward: int
    device: int
    ticks: int
    absorbed: int | None = None


@dataclass(frozen=True, kw_only=True)
class TaskModel:
    """A scheduling problem in integer ticks, independent of any solver.

    Parameters
    ----------
    tick
        Real time units per tick; ``exact_time`` says whether every duration converted exactly.
    mem_quantum
        Real memory units per quantum.
    capacity
        Per device, the memory limit in quanta (None = unlimited). Static memory counts against it.
    chains
        Task sequences that may be ordered without losing optimality (identical micro-batches, see
        ``pipeline_model``): start[t_k] <= start[t_k+1] and end[t_k] <= start[t_k+1].
    fusion_complete
        Whether ``fusable`` offers every fusion with a gain (False when ``pipeline_model`` kept
        only a window of them: its bounds then ignore the others).
    interchangeable_devices
        Whether permuting devices maps solutions to solutions of equal cost (device symmetry).
    group_chain
        Groups in chain order, for the contiguous placement option.
    """

    tick: float
    exact_time: bool
    mem_quantum: float
    num_devices: int
    tasks: tuple[Task, ...]
    groups: tuple[Group, ...]
    arcs: tuple[Arc, ...]
    lifetimes: tuple[Lifetime, ...] = ()
    capacity: tuple[int | None, ...] = ()
    chains: tuple[tuple[int, ...], ...] = ()
    fusable: tuple[FusablePair, ...] = ()
    fusion_complete: bool = True
    interchangeable_devices: bool = False
    group_chain: tuple[int, ...] = ()
    name: str = ""

    # ------------------------------------------------------------------ lookups
    @cached_property
    def preds(self) -> tuple[tuple[Arc, ...], ...]:
        out: list[list[Arc]] = [[] for _ in self.tasks]
        for a in self.arcs:
            out[a.dst].append(a)
        return tuple(tuple(x) for x in out)

    @cached_property
    def succs(self) -> tuple[tuple[Arc, ...], ...]:
        out: list[list[Arc]] = [[] for _ in self.tasks]
        for a in self.arcs:
            out[a.src].append(a)
        return tuple(tuple(x) for x in out)

    @cached_property
    def topo_order(self) -> tuple[int, ...]:
        indeg = [len(p) for p in self.preds]
        stack = [t for t in range(len(self.tasks)) if indeg[t] == 0]
        order: list[int] = []
        while stack:
            t = stack.pop()
            order.append(t)
            for a in self.succs[t]:
                indeg[a.dst] -= 1
                if indeg[a.dst] == 0:
                    stack.append(a.dst)
        if len(order) != len(self.tasks):
            raise InvalidInputError("task model: the precedence arcs have a cycle")
        return tuple(order)

    @cached_property
    def tasks_of_group(self) -> tuple[tuple[int, ...], ...]:
        out: list[list[int]] = [[] for _ in self.groups]
        for t in self.tasks:
            out[t.group].append(t.index)
        return tuple(tuple(x) for x in out)

    @cached_property
    def task_of_key(self) -> dict[tuple[int, str, int], int]:
        return {t.key: t.index for t in self.tasks}

    @cached_property
    def pair_ticks(self) -> dict[tuple[int, int], int]:
        """Fused pair durations by (forward, backward)."""
        return {(p.forward, p.backward): p.ticks for p in self.fusable}

    @cached_property
    def pair_of(self) -> dict[tuple[int, int], FusablePair]:
        """Fusable pairs by (forward, backward)."""
        return {(p.forward, p.backward): p for p in self.fusable}

    @property
    def is_fixed(self) -> bool:
        """Whether every group has exactly one possible device."""
        return all(len(g.devices) == 1 for g in self.groups)

    @property
    def has_memory(self) -> bool:
        return bool(self.lifetimes) or any(g.static_mem for g in self.groups)

    def fixed_static(self, device: int) -> int:
        """Static memory of ``device`` from groups that can only run there."""
        return sum(g.static_mem for g in self.groups if g.devices == (device,))

    @cached_property
    def horizon(self) -> int:
        """A makespan no schedule needs to exceed: everything in sequence, with every delay."""
        total = sum(max(t for _, t in task.durations) for task in self.tasks)
        return total + sum(a.delay for a in self.arcs) + 1


@dataclass(frozen=True, slots=True, kw_only=True)
class Assignment:
    """A solution in ticks: each task's device and start; ``fused`` pairs (forward, backward)."""

    device: tuple[int, ...]
    start: tuple[int, ...]
    fused: tuple[tuple[int, int], ...] = ()

    def end(self, model: TaskModel, task: int) -> int:
        return self.start[task] + self.duration(model, task)

    def duration(self, model: TaskModel, task: int) -> int:
        """Ticks the task occupies: its own duration, its fused pair's, or 0 when absorbed (a W
        fused with its I: it sits at the pair's end)."""
        if self.fused:
            pairs = model.pair_of
            for fwd, bwd in self.fused:
                p = pairs[fwd, bwd]
                if task in (fwd, bwd):
                    return p.ticks
                if task == p.absorbed:
                    return 0
        return model.tasks[task].duration_on(self.device[task])

    def ends(self, model: TaskModel) -> list[int]:
        """End tick of every task (one pass, for checks over all tasks)."""
        pairs = model.pair_of if self.fused else {}
        dur = [model.tasks[t].duration_on(self.device[t]) for t in range(len(model.tasks))]
        for fwd, bwd in self.fused:
            p = pairs[fwd, bwd]
            dur[fwd] = dur[bwd] = p.ticks
            if p.absorbed is not None:
                dur[p.absorbed] = 0
        return [s + d for s, d in zip(self.start, dur, strict=True)]

    def hidden(self, model: TaskModel) -> set[int]:
        """Tasks that have no device interval of their own: fused backwards and absorbed Ws."""
        out: set[int] = set()
        for fwd, bwd in self.fused:
            out.add(bwd)
            absorbed = model.pair_of[fwd, bwd].absorbed
            if absorbed is not None:
                out.add(absorbed)
        return out

    def makespan(self, model: TaskModel) -> int:
        return max(self.ends(model), default=0)

    def spans(self, model: TaskModel) -> list[int]:
        """Each device's span in ticks: its last end minus its own first start (0 when idle)."""
        first: dict[int, int] = {}
        last: dict[int, int] = {}
        for t, end in enumerate(self.ends(model)):
            d = self.device[t]
            first[d] = min(first.get(d, self.start[t]), self.start[t])
            last[d] = max(last.get(d, end), end)
        return [last[d] - first[d] if d in first else 0 for d in range(model.num_devices)]

    def busy(self, model: TaskModel) -> list[int]:
        """Each device's busy ticks (a fused pair counted once)."""
        out = [0] * model.num_devices
        hidden = self.hidden(model)
        for t in range(len(model.tasks)):
            if t not in hidden:
                out[self.device[t]] += self.duration(model, t)
        return out


# ---------------------------------------------------------------------------- checks


def check_assignment(model: TaskModel, sol: Assignment) -> list[str]:
    """Every rule of the model broken by ``sol`` (empty = feasible), in ticks; backend-independent."""
    out: list[str] = []
    n = len(model.tasks)
    if len(sol.device) != n or len(sol.start) != n:
        return [f"assignment has {len(sol.start)} starts for {n} tasks"]
    ends = sol.ends(model)
    group_dev: dict[int, int] = {}
    for t in model.tasks:
        d = sol.device[t.index]
        if d not in {x for x, _ in t.durations}:
            out.append(f"task {t.label}: device {d} is not allowed")
        if group_dev.setdefault(t.group, d) != d:
            out.append(f"task {t.label}: group {t.group} split over devices {group_dev[t.group]} and {d}")
        if sol.start[t.index] < 0:
            out.append(f"task {t.label}: starts before 0")
    for a in model.arcs:
        delay = a.delay if sol.device[a.src] != sol.device[a.dst] else 0
        if sol.start[a.dst] < ends[a.src] + delay:
            out.append(
                f"arc {model.tasks[a.src].label}->{model.tasks[a.dst].label}: starts "
                f"{sol.start[a.dst]} < {ends[a.src]} + {delay}"
            )
    pairs = model.pair_of
    unknown = [pair for pair in sol.fused if pair not in pairs]
    if unknown:
        return [*out, f"fused pairs {unknown[:3]} are not offered by the model"]
    in_pair = sol.hidden(model)
    seen: set[int] = set()
    for pair in sol.fused:
        p = pairs[pair]
        for member in (p.forward, p.backward, p.absorbed):
            if member is None:
                continue
            if member in seen:
                out.append(f"task {model.tasks[member].label}: in two fused pairs")
            seen.add(member)
    by_dev: dict[int, list[tuple[int, int, int]]] = defaultdict(list)
    for i in range(n):
        if i in in_pair:
            continue
        by_dev[sol.device[i]].append((sol.start[i], ends[i], i))
    for d, items in by_dev.items():
        items.sort()
        for (_s0, e0, t0), (s1, _e1, t1) in itertools.pairwise(items):
            if s1 < e0:
                out.append(
                    f"device {d}: {model.tasks[t1].label} starts {s1} before {model.tasks[t0].label} ends {e0}"
                )
    for fwd, bwd in sol.fused:
        if sol.start[fwd] != sol.start[bwd] or sol.device[fwd] != sol.device[bwd]:
            out.append(f"fused pair {model.tasks[fwd].label}&{model.tasks[bwd].label}: not together")
        w = pairs[fwd, bwd].absorbed
        if w is not None and (sol.start[w] != ends[fwd] or sol.device[w] != sol.device[fwd]):
            out.append(
                f"fused pair {model.tasks[fwd].label}&{model.tasks[bwd].label}: absorbed "
                f"{model.tasks[w].label} starts {sol.start[w]}, not at the pair's end {ends[fwd]}"
            )
    peaks = peak_levels(model, sol) if model.capacity else []
    for d in range(model.num_devices):
        cap = model.capacity[d] if model.capacity else None
        if cap is None:
            continue
        peak = peaks[d]
        if peak > cap:
            out.append(f"device {d}: memory reaches {peak} > capacity {cap} quanta")
    return out


def peak_level(model: TaskModel, sol: Assignment, device: int) -> int:
    """Peak memory (quanta, static included) of ``device`` under ``sol``; releases before allocations."""
    return peak_levels(model, sol)[device]


def peak_levels(model: TaskModel, sol: Assignment) -> list[int]:
    """Peak memory (quanta, static included) of every device under ``sol``, in one pass."""
    n_dev = model.num_devices
    level = [0] * n_dev
    for g in model.groups:
        for d in {sol.device[t] for t in model.tasks_of_group[g.index]}:
            level[d] += g.static_mem
    events: list[list[tuple[int, int]]] = [[] for _ in range(n_dev)]
    ends = sol.ends(model)
    for lt in model.lifetimes:
        d = sol.device[lt.first]
        events[d].append((sol.start[lt.first], lt.demand))
        events[d].append((ends[lt.last], -lt.demand))
    peaks = level[:]
    for d in range(n_dev):
        cur = level[d]
        for _, delta in sorted(events[d]):
            cur += delta
            if cur > peaks[d]:
                peaks[d] = cur
    return peaks


# ---------------------------------------------------------------------------- pipelines


def pipeline_model(
    problem: PipelineProblem,
    *,
    memory_limit: float | None = None,
    fused: bool = False,
    contiguous: bool = False,
    round_down: bool = False,
) -> TaskModel:
    """The task model of a pipeline problem.

    Parameters
    ----------
    memory_limit
        Overrides every device's memory limit (same units as the problem); None keeps the problem's.
    fused
        Offer DualPipe-style fused pairs: the forward of one micro-batch with the whole backward of
        another (B, or I with its W absorbed when the backward is split) on the same device,
        lasting the forward stage's FB time. Only for fixed placement and stages whose FB time is
        below F + B (see ``_fusable_pairs``).
    contiguous
        For free placement of a chain: devices must not decrease along the chain.
    round_down
        Round real durations down instead of up (a model whose bounds hold for the real problem).

    Notes
    -----
    Symmetry: micro-batches with the same route are identical. Sorting, on every stage and pass
    kind, the passes of such micro-batches by start time (relabeling) keeps a schedule feasible
    with the same makespan and memory: the k-th earliest F of a stage starts after the k-th earliest
    end of each producer's F (it needs k distinct ones), likewise for I/B and W; the set of
    intervals on each device is unchanged, and so is the memory curve (it counts F starts and
    I/W/B ends, whatever their labels). Hence ordering them by micro-batch index cuts no optimum.
    """
    n_dev = problem.num_devices
    limits = [memory_limit if memory_limit is not None else d.memory_limit for d in problem.devices]
    tick, exact, quantum = _units(problem, limits, fused)
    ticks = to_ticks_floor if round_down else to_ticks
    groups = _groups(problem, quantum)
    tasks, key_index = _tasks(problem, groups, tick, ticks)
    arcs = _arcs(problem, key_index, tick, ticks)
    lifetimes = _lifetimes(problem, key_index, quantum)
    chains = _chains(problem, key_index)
    fusable, complete = _fusable_pairs(problem, tasks, key_index, tick, ticks) if fused else ([], True)
    # free placement on identical devices: any permutation of devices is an equivalent solution
    interchangeable = (
        not problem.is_placed
        and all(st.device is None for st in problem.stages)
        and all(not st.device_costs for st in problem.stages)
        and len(set(limits)) == 1
    )
    group_chain = _group_chain(problem) if contiguous else ()

    capacity = tuple(None if x is None else to_quanta_floor(x, quantum) for x in limits)
    return TaskModel(
        tick=tick,
        exact_time=exact,
        mem_quantum=quantum,
        num_devices=n_dev,
        tasks=tuple(tasks),
        groups=groups,
        arcs=tuple(arcs),
        lifetimes=tuple(lifetimes),
        capacity=capacity,
        chains=tuple(chains),
        fusable=tuple(fusable),
        fusion_complete=complete,
        interchangeable_devices=bool(interchangeable),
        group_chain=group_chain,
        name=problem.name,
    )


#: Most fusable pairs ``pipeline_model`` offers in full; beyond, only a window of micro-batches.
MAX_FUSABLE_PAIRS = 40_000
#: The window: a forward fuses with backwards of micro-batches at most this far apart in index.
FUSION_WINDOW = 8


def _fusable_pairs(
    problem: PipelineProblem,
    tasks: Sequence[Task],
    key_index: dict[tuple[int, str, int], int],
    tick: float,
    ticks: Callable[[float, float], int],
) -> tuple[list[FusablePair], bool]:
    """DualPipe's F&B chunks the model offers, and whether that is every one with a gain.

    A forward F(s, j) fuses with the backward of (s', k) on the same device ((s', k) != (s, j)),
    for FB(s) ticks when that is below F + B: with a split backward the pair is F & I(s', k) with
    W(s', k) absorbed (FB is defined for a forward overlapped with a whole backward; F & I alone
    with W later would take the same FB ticks and is dominated). Pairs of one micro-batch whose
    backward depends on the forward (any two stages of one path) never start together: left out.
    Pairs grow as (tasks per device)^2: above ``MAX_FUSABLE_PAIRS`` only micro-batches within
    ``FUSION_WINDOW`` of each other are paired, and the pair set is reported incomplete.
    """
    if not problem.is_placed:
        return [], True
    split = problem.split_backward
    back_kind = "I" if split else "B"
    by_dev: dict[int, list[int]] = defaultdict(list)
    for st in problem.stages:
        assert st.device is not None  # placed
        by_dev[st.device].append(st.index)
    candidates: list[tuple[int, int, int, int, int, int]] = []  # fwd stage, mb, bwd stage, mb, dev, ticks
    for dev, stages in by_dev.items():
        for s in stages:
            fb = problem.stages[s].cost_on(dev).FB
            if fb is None:
                continue
            fb_ticks = ticks(fb, tick)
            for s2 in stages:
                for j in (mb.index for mb in problem.microbatches if problem.passes(mb.index, s)):
                    ft = key_index[(s, "F", j)]
                    for k in (mb.index for mb in problem.microbatches if problem.passes(mb.index, s2)):
                        if k == j and (_downstream(problem, j, s, s2) or _downstream(problem, j, s2, s)):
                            continue  # its own backward, or one that waits for this forward
                        bt = key_index[(s2, back_kind, k)]
                        apart = tasks[ft].durations[0][1] + tasks[bt].durations[0][1]
                        if split:
                            apart += tasks[key_index[(s2, "W", k)]].durations[0][1]
                        if fb_ticks < apart:
                            candidates.append((s, j, s2, k, dev, fb_ticks))
    complete = len(candidates) <= MAX_FUSABLE_PAIRS
    if not complete:
        candidates = [c for c in candidates if abs(c[1] - c[3]) <= FUSION_WINDOW]
    pairs = [
        FusablePair(
            forward=key_index[(s, "F", j)],
            backward=key_index[(s2, back_kind, k)],
            device=dev,
            ticks=fb_ticks,
            absorbed=key_index[(s2, "W", k)] if split else None,
        )
        for s, j, s2, k, dev, fb_ticks in candidates
    ]
    return pairs, complete


def _downstream(problem: PipelineProblem, mb: int, src: int, dst: int) -> bool:
    """Whether micro-batch ``mb``'s route leads from stage ``src`` to stage ``dst`` (dst's backward
    then needs src's forward)."""
    seen, stack = {src}, [src]
    while stack:
        s = stack.pop()
        if s == dst:
            return True
        for e in problem.mb_succs(mb, s):
            if e.dst not in seen:
                seen.add(e.dst)
                stack.append(e.dst)
    return False


_Ticks = Callable[[float, float], int]


def _units(
    problem: PipelineProblem, limits: Sequence[float | None], fused: bool
) -> tuple[float, bool, float]:
    """The tick (and whether times convert exactly) and the memory quantum of ``problem``."""
    kinds = ("F", *problem.backward_kinds())
    durations: list[float] = []
    for st in problem.stages:
        devs = [st.device] if st.device is not None else list(range(problem.num_devices))
        for d in devs:
            c = st.cost_on(d)
            durations += [c.of(k) for k in kinds]
            if fused and c.FB is not None:
                durations.append(c.FB)
    durations += [e.comm for e in problem.edges]
    tick, exact = choose_quantum(durations, max_exact=MAX_EXACT_TICKS, rounded=ROUNDED_TICKS)
    mem_values: list[float] = []
    for st in problem.stages:
        mem_values += [st.act_mem, st.wgrad_mem, st.act_mem - st.wgrad_mem, st.param_mem]
    mem_values += [x for x in limits if x is not None]
    quantum, _ = choose_quantum(mem_values, max_exact=MAX_EXACT_QUANTA, rounded=MAX_EXACT_QUANTA)
    return tick, exact, quantum


def _groups(problem: PipelineProblem, quantum: float) -> tuple[Group, ...]:
    """One group per stage: its allowed devices and its static memory in quanta."""
    return tuple(
        Group(
            index=st.index,
            name=st.name or f"stage{st.index}",
            devices=(st.device,) if st.device is not None else tuple(range(problem.num_devices)),
            static_mem=to_ticks(st.param_mem, quantum),
        )
        for st in problem.stages
    )


def _tasks(
    problem: PipelineProblem, groups: Sequence[Group], tick: float, ticks: _Ticks
) -> tuple[list[Task], dict[tuple[int, str, int], int]]:
    """tasks[(stage, kind, microbatch)]: per micro-batch its forwards in stage order, then its
    backward passes in reverse stage order, with a duration per allowed device."""
    tasks: list[Task] = []
    key_index: dict[tuple[int, str, int], int] = {}

    def add(stage: int, kind: str, mb: int) -> None:
        st = problem.stages[stage]
        durs = tuple((d, ticks(st.cost_on(d).of(kind), tick)) for d in groups[stage].devices)
        idx = len(tasks)
        tasks.append(Task(index=idx, key=(stage, kind, mb), group=stage, durations=durs))
        key_index[(stage, kind, mb)] = idx

    for mb in problem.microbatches:
        order = [s for s in problem.topo_order if problem.passes(mb.index, s)]
        for s in order:
            add(s, "F", mb.index)
        for s in reversed(order):
            for k in problem.backward_kinds():
                add(s, k, mb.index)
    return tasks, key_index


def _arcs(
    problem: PipelineProblem, key_index: dict[tuple[int, str, int], int], tick: float, ticks: _Ticks
) -> list[Arc]:
    """precedence per micro-batch j: F(s) after F of each producer (+ comm); back(s) after F(s) and
    after back of each consumer (+ comm); W(s) after I(s)."""
    arcs: list[Arc] = []
    back_kind = "I" if problem.split_backward else "B"
    for mb in problem.microbatches:
        j = mb.index
        for s in (s for s in problem.topo_order if problem.passes(j, s)):
            f = key_index[(s, "F", j)]
            for e in problem.mb_preds(j, s):
                arcs.append(Arc(src=key_index[(e.src, "F", j)], dst=f, delay=ticks(e.comm, tick)))
            back = key_index[(s, back_kind, j)]
            arcs.append(Arc(src=f, dst=back))
            for e in problem.mb_succs(j, s):
                arcs.append(Arc(src=key_index[(e.dst, back_kind, j)], dst=back, delay=ticks(e.comm, tick)))
            if problem.split_backward:
                arcs.append(Arc(src=back, dst=key_index[(s, "W", j)]))
    return arcs


def _lifetimes(
    problem: PipelineProblem, key_index: dict[tuple[int, str, int], int], quantum: float
) -> list[Lifetime]:
    """memory per micro-batch and stage: act from F's start to B's end, or act - wgrad until I's
    end and wgrad until W's end."""
    lifetimes: list[Lifetime] = []
    for mb in problem.microbatches:
        j = mb.index
        for s in (s for s in problem.topo_order if problem.passes(j, s)):
            st = problem.stages[s]
            f = key_index[(s, "F", j)]
            if problem.split_backward:
                # the two parts sum to the rounded activation, so k activations at a limit of k
                # stay within it; each part still rounds up what it holds alone (W's residual)
                wg = to_ticks(st.wgrad_mem, quantum)
                keep = max(0, to_ticks(st.act_mem, quantum) - wg)
                if keep:
                    lifetimes.append(Lifetime(first=f, last=key_index[(s, "I", j)], demand=keep))
                if wg:
                    lifetimes.append(Lifetime(first=f, last=key_index[(s, "W", j)], demand=wg))
            else:
                act = to_ticks(st.act_mem, quantum)
                if act:
                    lifetimes.append(Lifetime(first=f, last=key_index[(s, "B", j)], demand=act))
    return lifetimes


def _chains(problem: PipelineProblem, key_index: dict[tuple[int, str, int], int]) -> list[tuple[int, ...]]:
    """FIFO chains of identical micro-batches (same route), per stage and kind (see Notes)."""
    kinds = ("F", *problem.backward_kinds())
    by_route: dict[tuple[int, ...], list[int]] = defaultdict(list)
    for mb in problem.microbatches:
        by_route[tuple(sorted(mb.stages))].append(mb.index)
    chains: list[tuple[int, ...]] = []
    for route, mbs in by_route.items():
        if len(mbs) < 2:
            continue
        for s in route:
            for k in kinds:
                chains.append(tuple(key_index[(s, k, j)] for j in sorted(mbs)))
    return chains


def _group_chain(problem: PipelineProblem) -> tuple[int, ...]:
    """contiguous placement: the stage chain whose devices must not decrease."""
    if problem.is_placed:
        raise InvalidInputError(
            "contiguous: only for free placement (the problem's stages are already placed)"
        )
    if not _is_stage_chain(problem):
        raise InvalidInputError("contiguous: needs the stages to form one chain (stage k feeds stage k+1)")
    return tuple(problem.topo_order)


def _is_stage_chain(problem: PipelineProblem) -> bool:
    order = problem.topo_order
    edges = {(e.src, e.dst) for e in problem.edges}
    return len(edges) == len(order) - 1 and all((a, b) in edges for a, b in itertools.pairwise(order))


def check_memory_limits(problem: PipelineProblem, model: TaskModel) -> list[str]:
    """Necessary conditions on memory: per device, static memory plus the activations one micro-batch
    must hold at once on that device fit the limit.

    Returns one message per device that cannot fit, naming the numbers and the smallest limit that
    passes this check.
    """
    msgs: list[str] = []
    q = model.mem_quantum
    if model.is_fixed:
        # full activation (act) per forward task, in quanta
        is_chain = problem.is_chain  # a property that walks every micro-batch: once
        act_of: dict[int, int] = defaultdict(int)
        for lt in model.lifetimes:
            act_of[lt.first] += lt.demand
        for d in range(model.num_devices):
            cap = model.capacity[d]
            if cap is None:
                continue
            static = model.fixed_static(d)
            # A micro-batch's activations on the stages of d it passes are all alive at the start of
            # its last forward there when those stages lie on one path (chain problems): an upstream
            # stage frees memory only at its I/W, after every downstream I. Otherwise one activation.
            worst, worst_mb = 0, -1
            worst_stages: tuple[int, ...] = ()
            for mb in problem.microbatches:
                mine = [s for s in mb.stages if problem.stages[s].device == d]
                if not mine:
                    continue
                acts = [act_of[model.task_of_key[(s, "F", mb.index)]] for s in mine]
                need = sum(acts) if is_chain else max(acts)
                if need > worst:
                    worst, worst_mb, worst_stages = need, mb.index, tuple(mine)
            if static + worst > cap:
                what = (
                    f"one activation {worst * q:g}"
                    if len(worst_stages) == 1 or not is_chain
                    else f"micro-batch {worst_mb}'s activations on stages {list(worst_stages)} {worst * q:g}"
                )
                msgs.append(
                    f"device {d}: static memory {static * q:g} + {what} = {(static + worst) * q:g} > limit {cap * q:g}"
                )
    else:
        caps = [c for c in model.capacity if c is not None]
        if len(caps) == model.num_devices:
            need = max(
                (
                    g.static_mem
                    + max(
                        (lt.demand for lt in model.lifetimes if model.tasks[lt.first].group == g.index),
                        default=0,
                    )
                )
                for g in model.groups
            )
            if need > max(caps):
                msgs.append(
                    f"every device: one stage's static memory plus one activation needs {need * q:g} > "
                    f"largest limit {max(caps) * q:g}"
                )
    return msgs


def retime(
    model: TaskModel,
    orders: Sequence[Sequence[int]],
    device_of: Sequence[int],
    fused: Sequence[tuple[int, int]] = (),
) -> Assignment | None:
    """ASAP start ticks of tasks run in the given per-device orders; None on a deadlock.

    A fused pair appears in the order as its forward task; its backward starts with it and its
    absorbed W (not in the order) sits at its end.
    """
    n = len(model.tasks)
    partner = {f: b for f, b in fused}
    pair_ticks = model.pair_ticks
    absorbed = {f: model.pair_of[f, b].absorbed for f, b in fused}
    start = [-1] * n
    end = [-1] * n
    heads = [0] * len(orders)
    free = [0] * len(orders)
    progress = True
    while progress:
        progress = False
        for d, order in enumerate(orders):
            while heads[d] < len(order):
                t = order[heads[d]]
                members = [t] + ([partner[t]] if t in partner else [])
                ready = free[d]
                ok = True
                for m in members:
                    for a in model.preds[m]:
                        if a.src in members:
                            continue
                        if end[a.src] < 0:
                            ok = False
                            break
                        delay = a.delay if device_of[a.src] != d else 0
                        ready = max(ready, end[a.src] + delay)
                    if not ok:
                        break
                if not ok:
                    break
                dur = pair_ticks[(t, partner[t])] if t in partner else model.tasks[t].duration_on(d)
                for m in members:
                    start[m] = ready
                    end[m] = ready + dur
                w = absorbed.get(t)
                if w is not None:
                    start[w] = end[w] = ready + dur
                free[d] = ready + dur
                heads[d] += 1
                progress = True
    if any(s < 0 for s in start):
        return None
    return Assignment(device=tuple(device_of), start=tuple(start), fused=tuple(fused))


def canonical(model: TaskModel, sol: Assignment) -> Assignment:
    """``sol`` relabeled into the symmetry-broken form the solver expects (same cost, still feasible).

    Along every chain of identical micro-batches the start times are sorted (the relabeling argument
    of ``pipeline_model``); on interchangeable devices, devices are renumbered in the order in which
    groups (by index) first use them. With fused pairs, see ``_canonical_fused``.
    """
    if sol.fused:
        return _canonical_fused(model, sol)
    start = list(sol.start)
    for chain in model.chains:
        times = sorted(start[t] for t in chain)
        for t, s in zip(chain, times, strict=True):
            start[t] = s
    device = list(sol.device)
    if model.interchangeable_devices:
        rename: dict[int, int] = {}
        for g in model.groups:
            members = model.tasks_of_group[g.index]
            if members and sol.device[members[0]] not in rename:
                rename[sol.device[members[0]]] = len(rename)
        for d in range(model.num_devices):
            if d not in rename:
                rename[d] = len(rename)
        device = [rename[d] for d in device]
    return Assignment(device=tuple(device), start=tuple(start))


def fifo_chains(model: TaskModel) -> tuple[tuple[int, ...], ...]:
    """The chains along which some optimal solution is in FIFO order.

    All of ``model.chains`` without fusion. With fused pairs the relabeling argument of
    ``pipeline_model`` still holds for F and I (or B) passes: tasks of one stage and kind share a
    device and never overlap (alone or in a chunk), so their starts and ends sort alike. It fails
    for W when pairs absorb it: a W follows its own I into a chunk, so W's are relabeled with
    their I and left unordered.
    """
    if not any(p.absorbed is not None for p in model.fusable):
        return model.chains
    return tuple(c for c in model.chains if model.tasks[c[0]].key[1] != "W")


def _canonical_fused(model: TaskModel, sol: Assignment) -> Assignment:
    """``sol`` relabeled along the ``fifo_chains`` (start order, ends break ties); each W takes
    the label of its I, and fused pairs follow their members."""
    ends = sol.ends(model)
    rename = list(range(len(model.tasks)))
    for chain in fifo_chains(model):
        ranked = sorted(chain, key=lambda t: (sol.start[t], ends[t], t))
        for new, old in zip(chain, ranked, strict=True):
            rename[old] = new
    absorbs = any(p.absorbed is not None for p in model.fusable)
    if absorbs:
        key = model.task_of_key
        for t in model.tasks:
            s, k, j = t.key
            if k == "I" and (s, "W", j) in key:
                _, _, new_j = model.tasks[rename[t.index]].key
                rename[key[(s, "W", j)]] = key[(s, "W", new_j)]
    start = [0] * len(model.tasks)
    for old, new in enumerate(rename):
        start[new] = sol.start[old]
    fused = tuple((rename[f], rename[b]) for f, b in sol.fused)
    if any(pair not in model.pair_of for pair in fused):
        return sol  # a relabeled pair the model does not offer: keep the solution as it is
    return Assignment(device=sol.device, start=tuple(start), fused=fused)
