"""Local search on per-device orders: a feasible schedule in, a better one (or the same) out.

``improve_schedule`` keeps a schedule as the action order of each device, re-timed as soon as
possible exactly as ``parplan.simulate`` does, and tries moves that change one device's order:
swapping two adjacent actions on a critical path, moving an action a few places earlier or later,
moving a deferred weight-gradient pass W into an idle gap (or out of a critical stretch), and
shifting a device's warm-up by one forward. A move is kept when every device's peak memory stays
within its limit (the curve depends on the order alone) and the state gets better: a lower
objective (makespan, or the longest device span); at equal objective less flow (summed ends of the
F, I and B passes: critical work earlier, W passes pushed into gaps); then the sorted vector of
per-device ends or spans. At a local optimum, a few random moves near the critical path kick the
best state and the descent restarts (iterated local search). Re-timing after a move restarts from
the earliest start the move can change, so late moves are cheap. A full backward B of a split stage
is run as its I then its W (never later). Imports no solver.
"""

from __future__ import annotations

import bisect
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass

from parplan.errors import InvalidInputError
from parplan.numeric import close, lt, slack, within_limit
from parplan.plan import Plan
from parplan.problem import PipelineProblem
from parplan.schedule.ir import Action, Schedule
from parplan.simulate import dependencies, duration, static_memory

#: Objectives ``improve_schedule`` minimizes.
IMPROVE_OBJECTIVES = ("makespan", "span")
#: Relative tolerance for time and memory comparisons (the project's one TOL).
#: How many places an action is moved at most by one insertion move.
_REACH = 3


@dataclass(slots=True)
class _Tasks:
    """Every action of a schedule as an integer task: device, duration, predecessors, memory."""

    actions: list[Action]
    device: list[int]
    dur: list[float]
    preds: list[tuple[tuple[int, float], ...]]  # (producer task, communication delay)
    alloc: list[float]  # activation memory taken at the start
    release: list[float]  # activation memory given back at the end
    is_w: list[bool]
    is_f: list[bool]
    critical: list[int]  # every task but W (the ones others wait for)
    static: list[float]
    limit: list[float | None]


def _index(problem: PipelineProblem, schedule: Schedule) -> tuple[_Tasks, list[list[int]]]:
    """Tasks and per-device task orders of ``schedule`` on ``problem``."""
    actions: list[Action] = []
    device: list[int] = []
    orders: list[list[int]] = []
    for d, order in enumerate(schedule.orders):
        seq = []
        for action in order:
            split = action.kind == "B" and problem.stages[action.stage].cost.is_split
            # a full backward on a split stage becomes its I then its W: never later, same memory
            parts = (
                [Action(stage=action.stage, kind=k, microbatch=action.microbatch) for k in "IW"]
                if split
                else [action]
            )
            for a in parts:
                seq.append(len(actions))
                actions.append(a)
                device.append(d)
        orders.append(seq)
    kinds = ("F", "I", "W") if problem.split_backward else ("F", "B")
    want = {(s, k, mb.index) for mb in problem.microbatches for s in mb.stages for k in kinds}
    have = {(a.stage, a.kind, a.microbatch) for a in actions}
    if have != want or len(actions) != len(want):
        odd = sorted(want - have) or sorted(have - want)
        what = f"e.g. pass {odd[0][0]}{odd[0][1]}{odd[0][2]}" if odd else "a pass appears twice"
        raise InvalidInputError(f"schedule {schedule.name!r}: incomplete or duplicated, {what}")
    done_by: dict[tuple[str, int, int], int] = {}
    for t, a in enumerate(actions):
        if a.kind == "F":
            done_by[("F", a.stage, a.microbatch)] = t
        elif a.kind == "B":
            done_by[("Bin", a.stage, a.microbatch)] = t
        elif a.kind == "I":
            done_by[("Bin", a.stage, a.microbatch)] = t
            done_by[("I", a.stage, a.microbatch)] = t
    preds: list[tuple[tuple[int, float], ...]] = []
    alloc: list[float] = []
    release: list[float] = []
    for t, a in enumerate(actions):
        ps = []
        for key, comm, _src in dependencies(problem, a):
            src = done_by.get(key)
            if src is None:
                raise InvalidInputError(
                    f"schedule {schedule.name!r}: incomplete, {a} waits for a pass it never runs"
                )
            ps.append((src, comm if device[src] != device[t] else 0.0))
        preds.append(tuple(ps))
        st = problem.stages[a.stage]
        alloc.append(st.act_mem if a.kind == "F" else 0.0)
        release.append({"F": 0.0, "I": st.act_mem - st.wgrad_mem, "W": st.wgrad_mem, "B": st.act_mem}[a.kind])
    tasks = _Tasks(
        actions=actions,
        device=device,
        dur=[duration(problem, device[t], a) for t, a in enumerate(actions)],
        preds=preds,
        alloc=alloc,
        release=release,
        is_w=[a.kind == "W" for a in actions],
        is_f=[a.kind == "F" for a in actions],
        critical=[t for t, a in enumerate(actions) if a.kind != "W"],
        static=[static_memory(problem, d) for d in range(problem.num_devices)],
        limit=[dev.memory_limit for dev in problem.devices],
    )
    return tasks, orders


def _peak(tasks: _Tasks, order: Sequence[int], device: int) -> float:
    """Peak memory of a device running ``order`` (the curve depends on the order alone: one action
    at a time, releases at an instant before allocations)."""
    level = peak = tasks.static[device]
    for t in order:
        level += tasks.alloc[t]
        if level > peak:
            peak = level
        level -= tasks.release[t]
    return peak


def _fits(tasks: _Tasks, order: Sequence[int], device: int, cap: float | None) -> bool:
    return within_limit(_peak(tasks, order, device), cap)


class _Timing:
    """ASAP start and end of every task for given per-device orders (the simulator's rule)."""

    __slots__ = ("end", "start", "starts_of")

    def __init__(self, start: list[float], end: list[float], starts_of: list[list[float]]) -> None:
        self.start = start
        self.end = end
        self.starts_of = starts_of  # per device, the starts along its order (nondecreasing)


def retime(
    tasks: _Tasks,
    orders: Sequence[Sequence[int]],
    old: _Timing | None = None,
    changed: dict[int, int] | None = None,
) -> _Timing | None:
    """ASAP timing of ``orders``; None on a deadlock.

    With ``old`` (the timing of orders that differ only on the devices of ``changed``, from the
    given position on), every task that started before the earliest start at a changed position
    keeps its time: its inputs all started earlier still, and none of them moved.
    """
    n = len(tasks.dur)
    n_dev = len(orders)
    heads = [0] * n_dev
    free = [0.0] * n_dev
    if old is not None and changed:
        cut = min(
            old.starts_of[d][p] if p < len(old.starts_of[d]) else float("inf") for d, p in changed.items()
        )
        start, end = old.start[:], old.end[:]
        for d in range(n_dev):
            h = bisect.bisect_left(old.starts_of[d], cut)
            if d in changed:
                h = min(h, changed[d])
            heads[d] = h
            order = orders[d]
            free[d] = end[order[h - 1]] if h else 0.0
            for t in order[h:]:
                end[t] = -1.0
    else:
        start, end = [0.0] * n, [-1.0] * n
    dur, preds = tasks.dur, tasks.preds
    waiting: list[list[int] | None] = [None] * n  # devices waiting for a task's end
    stack = list(range(n_dev))
    while stack:
        d = stack.pop()
        order = orders[d]
        h = heads[d]
        size = len(order)
        fr = free[d]
        while h < size:
            t = order[h]
            s = fr
            blocked = -1
            for src, delay in preds[t]:
                e = end[src]
                if e < 0:
                    blocked = src
                    break
                e += delay
                if e > s:
                    s = e
            if blocked >= 0:
                wl = waiting[blocked]
                if wl is None:
                    waiting[blocked] = [d]
                else:
                    wl.append(d)
                break
            start[t] = s
            fr = end[t] = s + dur[t]
            h += 1
            wl = waiting[t]
            if wl is not None:
                stack.extend(wl)
                waiting[t] = None
        heads[d] = h
        free[d] = fr
    if any(heads[d] < len(orders[d]) for d in range(n_dev)):
        return None
    return _Timing(start, end, [[start[t] for t in order] for order in orders])


def _values(timing: _Timing, orders: Sequence[Sequence[int]], objective: str) -> list[float]:
    """Per device, what the objective takes the maximum of: its last end (minus the first start of
    all) for makespan, or its own span."""
    if objective == "makespan":
        first = min(timing.start[o[0]] for o in orders if o)
        return [timing.end[o[-1]] - first if o else 0.0 for o in orders]
    return [timing.end[o[-1]] - timing.start[o[0]] if o else 0.0 for o in orders]


def _better(new: _State, old: _State) -> bool:
    """Whether ``new`` beats ``old`` beyond TOL: a lower objective; at equal objective, less flow
    (forward and backward passes end earlier, W passes fill gaps later); then the sorted-descending
    per-device values, compared lexicographically."""
    pairs = [(max(new.values), max(old.values)), (new.flow, old.flow)]
    pairs += zip(sorted(new.values, reverse=True), sorted(old.values, reverse=True), strict=True)
    for a, b in pairs:
        if lt(a, b):
            return True
        if lt(b, a):
            return False
    return False


def _critical_path(
    tasks: _Tasks, orders: Sequence[Sequence[int]], timing: _Timing, values: list[float]
) -> list[int]:
    """Tasks on a longest path ending at the last task of the worst device, last first."""
    d = max(range(len(orders)), key=lambda x: values[x])
    if not orders[d]:
        return []
    pos = {}
    path = []
    t = orders[d][-1]
    while True:
        path.append(t)
        dev = tasks.device[t]
        if dev not in pos:
            pos[dev] = {x: i for i, x in enumerate(orders[dev])}
        i = pos[dev][t]
        s = timing.start[t]
        tol = slack(s)
        nxt = -1
        if i > 0 and abs(timing.end[orders[dev][i - 1]] - s) <= tol:
            nxt = orders[dev][i - 1]
        else:
            for src, delay in tasks.preds[t]:
                if abs(timing.end[src] + delay - s) <= tol:
                    nxt = src
                    break
        if nxt < 0:
            return path
        t = nxt


def _moved(order: list[int], i: int, j: int) -> list[int]:
    """``order`` with the task at position ``i`` moved to position ``j``."""
    out = order[:i] + order[i + 1 :]
    out.insert(j, order[i])
    return out


def _warmup_shift(tasks: _Tasks, order: list[int], step: int) -> list[int] | None:
    """``order`` with every forward after the first backward moved one place earlier (step +1: one
    more forward in flight) or every forward before a backward one place later (step -1)."""
    out = order[:]
    is_f = tasks.is_f
    first_back = next((i for i, t in enumerate(order) if not is_f[t]), None)
    if first_back is None:
        return None
    # the swapped pairs (non-F, F) or (F, non-F) of the original order are disjoint: swap them all
    if step > 0:
        for i in range(first_back + 1, len(order)):
            if is_f[order[i]] and not is_f[order[i - 1]]:
                out[i - 1], out[i] = order[i], order[i - 1]
    else:
        for i in range(first_back - 1, len(order) - 1):
            if is_f[order[i]] and not is_f[order[i + 1]]:
                out[i], out[i + 1] = order[i + 1], order[i]
    return out if out != order else None


def _candidates(
    tasks: _Tasks,
    orders: list[list[int]],
    timing: _Timing,
    values: list[float],
    rng: random.Random,
) -> list[tuple[int, int, int]]:
    """Moves (device, from position, to position) worth trying now, the promising ones first."""
    path = _critical_path(tasks, orders, timing, values)
    on_path = set(path)
    where: dict[int, tuple[int, int]] = {}
    for d, order in enumerate(orders):
        for i, t in enumerate(order):
            if t in on_path:
                where[t] = (d, i)
    first: list[tuple[int, int, int]] = []
    rest: list[tuple[int, int, int]] = []
    for t in path:
        d, i = where[t]
        order = orders[d]
        # the device arc into t is critical: put t before its predecessor, or the predecessor after t
        if i > 0 and close(timing.end[order[i - 1]], timing.start[t]):
            first.append((d, i, i - 1))
            if tasks.is_w[order[i - 1]]:
                for k in range(1, _REACH + 1):
                    if i - 1 + k < len(order):
                        first.append((d, i - 1, i - 1 + k))
        for k in range(2, _REACH + 1):
            if i - k >= 0:
                rest.append((d, i, i - k))
            if i + k < len(order):
                rest.append((d, i, i + k))
    # fill idle gaps with a later weight-gradient pass of the same device
    for d, order in enumerate(orders):
        st = timing.starts_of[d]
        for i in range(1, len(order)):
            gap = st[i] - timing.end[order[i - 1]]
            if gap <= slack(st[i]):
                continue
            for j in range(i + 1, min(len(order), i + 4 * _REACH)):
                if tasks.is_w[order[j]]:
                    rest.append((d, j, i))
                    break
    rng.shuffle(first)
    rng.shuffle(rest)
    return first + rest


@dataclass(frozen=True, slots=True)
class _State:
    """Per-device orders, their timing and their per-device objective values."""

    orders: list[list[int]]
    timing: _Timing
    values: list[float]
    flow: float  # summed end of every F, I and B: lower = critical work done earlier


class _Search:
    """Iterated local search: first-improvement descent, then a random kick from the best state."""

    def __init__(self, tasks: _Tasks, objective: str, rng: random.Random, stop: float) -> None:
        self.tasks = tasks
        self.objective = objective
        self.rng = rng
        self.stop = stop
        self.evaluations = 0

    def apply(self, state: _State, move: tuple[int, int, int]) -> _State | None:
        """The state after ``move`` (device, from, to; from -1 = warm-up shift by ``to``), or None
        when it breaks memory or deadlocks."""
        d, i, j = move
        old = state.orders[d]
        if i < 0:
            new_order = _warmup_shift(self.tasks, old, j)
            if new_order is None:
                return None
            lo = next(k for k, (a, b) in enumerate(zip(new_order, old, strict=True)) if a != b)
        else:
            new_order = _moved(old, i, j)
            lo = min(i, j)
        if not _fits(self.tasks, new_order, d, self.tasks.limit[d]):
            return None
        trial = state.orders[:]
        trial[d] = new_order
        self.evaluations += 1
        timing = retime(self.tasks, trial, state.timing, {d: lo})
        if timing is None:
            return None
        return self.state(trial, timing)

    def state(self, orders: list[list[int]], timing: _Timing) -> _State:
        end = timing.end
        flow = sum([end[t] for t in self.tasks.critical])
        return _State(orders, timing, _values(timing, orders, self.objective), flow)

    def moves(self, state: _State) -> list[tuple[int, int, int]]:
        out = _candidates(self.tasks, state.orders, state.timing, state.values, self.rng)
        for d in self.rng.sample(range(len(state.orders)), len(state.orders)):
            out += [(d, -1, 1), (d, -1, -1)]
        return out

    def descend(self, state: _State) -> _State:
        """Apply improving moves until none is left (or time is up)."""
        while time.perf_counter() < self.stop:
            for move in self.moves(state):
                if time.perf_counter() >= self.stop:
                    return state
                nxt = self.apply(state, move)
                if nxt is not None and _better(nxt, state):
                    state = nxt
                    break
            else:
                return state
        return state

    def kick(self, state: _State) -> _State:
        """A few random feasible insertions near the critical path (accepted whatever they cost)."""
        moves = self.moves(state)
        for _ in range(self.rng.randint(1, 3)):
            for _try in range(20):
                nxt = self.apply(state, moves[self.rng.randrange(len(moves))])
                if nxt is not None:
                    state = nxt
                    break
        return state

    def run(self, state: _State, patience: int | None = None) -> _State:
        """Descend, then kick and descend again until the stop time, or until ``patience`` kicks
        in a row found nothing better."""
        best = state = self.descend(state)
        stalled = 0
        while time.perf_counter() < self.stop and (patience is None or stalled < patience):
            state = self.descend(self.kick(best))
            if _better(state, best):
                best, stalled = state, 0
            else:
                stalled += 1
        return best


def improve_schedule(
    problem: PipelineProblem,
    schedule: Schedule,
    *,
    objective: str = "makespan",
    deadline: float,
    memory_limit: float | None = None,
    seed: int = 0,
    patience: int | None = None,
) -> Schedule:
    """A schedule at least as good as ``schedule``, found by local search until ``deadline``.

    Parameters
    ----------
    problem
        A placed problem (every stage has a device); ``schedule`` must be feasible on it.
    objective
        ``makespan`` or ``span`` (the longest device span: a device's last end minus its own first
        start, the Zero Bubble paper's schedule cost).
    deadline
        A ``time.perf_counter()`` value; the search stops before it, leaving time to validate.
    memory_limit
        Overrides every device's memory limit (problem units); None keeps the problem's limits.
    seed
        Seed of the move order and the kicks (results depend on it and on how many moves fit
        before the deadline).
    patience
        Stop early after this many kicks in a row without improvement (None: run to the deadline).

    Returns
    -------
    Schedule
        Validated (``Plan.from_schedule(problem, s).validate() == []`` under the limits) and never
        worse than ``schedule`` on the objective; ``schedule`` itself when nothing better is found.
        Schedules with fused (FB) actions are returned unchanged.

    Raises
    ------
    InvalidInputError
        Unknown objective, an unplaced problem, or an input schedule that deadlocks or breaks a
        memory limit.
    """
    if objective not in IMPROVE_OBJECTIVES:
        raise InvalidInputError(
            f"objective {objective!r}: improve_schedule supports {', '.join(IMPROVE_OBJECTIVES)}"
        )
    if not problem.is_placed:
        raise InvalidInputError("improve_schedule: needs a placed problem (every stage on a device)")
    if memory_limit is not None:
        problem = problem.with_memory_limit(memory_limit)
    if any(a.is_fused for _, a in schedule.actions()):
        return schedule
    t_begin = time.perf_counter()
    tasks, orders = _index(problem, schedule)
    timing = retime(tasks, orders)
    if timing is None:
        raise InvalidInputError(f"schedule {schedule.name!r}: deadlocks, nothing to improve")
    for d, order in enumerate(orders):
        if not _fits(tasks, order, d, tasks.limit[d]):
            raise InvalidInputError(
                f"schedule {schedule.name!r}: device {d} peaks at {_peak(tasks, order, d):g} "
                f"> memory limit {tasks.limit[d]:g}"
            )
    # the final simulation and validation cost about as much per task as indexing did, times 4
    reserve = 4.0 * (time.perf_counter() - t_begin) + 0.02
    stop = deadline - reserve
    search = _Search(tasks, objective, random.Random(seed), stop)
    first = search.state(orders, timing)
    best = search.run(first, patience)
    was_split = len(tasks.actions) != sum(len(o) for o in schedule.orders)
    if (best is first and not was_split) or max(best.values) > max(first.values):
        return schedule
    orders = best.orders
    out = Schedule.of(schedule.name, [[tasks.actions[t] for t in order] for order in orders])
    if Plan.from_schedule(problem, out).validate():
        return schedule  # our bug; never hand back an invalid schedule
    return out
