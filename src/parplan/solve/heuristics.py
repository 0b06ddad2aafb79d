"""Memory-aware list scheduling on a task model: quick feasible answers used as warm starts.

The scheduler dispatches, over and over, the ready task that can start earliest (ties broken by a
priority rule), never letting a forward pass allocate activations beyond a device's memory. It
works on any ``TaskModel`` (pipelines and job shops alike) and imports no solver.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable, Sequence

from parplan.errors import InvalidInputError
from parplan.solve.bounds import heads_and_tails
from parplan.solve.model import Assignment, TaskModel, check_assignment

#: Priority rules: smaller sorts first among tasks that can start at the same time.
RULES = ("backward-first", "eager-weight", "critical-path", "forward-first", "serial")

_KIND_RANK = {
    "backward-first": {"I": 0, "B": 0, "F": 1, "W": 2},
    "eager-weight": {"I": 0, "B": 0, "W": 1, "F": 2},
    "forward-first": {"F": 0, "I": 1, "B": 1, "W": 2},
    "critical-path": {},
    "serial": {"F": 0, "I": 0, "B": 0, "W": 0},
}


def default_placement(model: TaskModel) -> list[int | None]:
    """A device per multi-task group: contiguous blocks of groups, in precedence order, of balanced
    minimal work (single-task groups, as in job shops, are placed when dispatched)."""
    place: list[int | None] = [g.devices[0] if len(g.devices) == 1 else None for g in model.groups]
    free = [g.index for g in model.groups if len(g.devices) > 1 and len(model.tasks_of_group[g.index]) > 1]
    if not free:
        return place
    heads, _ = heads_and_tails(model)
    free.sort(key=lambda g: min(heads[t] for t in model.tasks_of_group[g]))
    work = {g: sum(model.tasks[t].min_duration for t in model.tasks_of_group[g]) for g in free}
    total = sum(work.values())
    devices = sorted({d for g in free for d in model.groups[g].devices})
    target = total / len(devices)
    acc = 0.0
    for g in free:
        block = min(int((acc + work[g] / 2) // target) if target > 0 else 0, len(devices) - 1)
        d = devices[block]
        place[g] = d if d in model.groups[g].devices else model.groups[g].devices[0]
        acc += work[g]
    return place


def list_schedule(
    model: TaskModel, *, rule: str = "backward-first", placement: Sequence[int | None] | None = None
) -> Assignment | None:
    """A feasible assignment built greedily, or None when the greedy run gets stuck on memory.

    Parameters
    ----------
    rule
        One of ``RULES``: which pass kind wins a tie (``critical-path`` prefers the task with the
        longest remaining path, the classic rule for job shops). ``serial`` runs one micro-batch
        (the third field of a task key) at a time: slow, but it needs the least memory, so it is
        the fallback that works whenever any schedule does with fixed placement.
    placement
        Device per group (None entries are chosen per task at dispatch); default ``default_placement``.

    Notes
    -----
    Each step dispatches the (task, device) pair of least key (earliest start, rule priority,
    earliest end, device) among ready tasks whose activations fit. Per device, ready tasks wait in
    two heaps: those whose inputs arrive after the device is free (by arrival, then priority) and
    those already available (by priority: they all start when the device is free); a task that does
    not fit memory is parked until that device's memory level drops. A step costs O(devices + log n)
    instead of a scan over every ready task; the result is the same as the scan's.
    """
    if rule not in _KIND_RANK:
        raise InvalidInputError(f"list-scheduling rule {rule!r}: unknown; choose one of {', '.join(RULES)}")
    n = len(model.tasks)
    place = list(placement) if placement is not None else default_placement(model)
    _, tails = heads_and_tails(model)
    ranks = _KIND_RANK[rule]
    prio: list[tuple[int, ...]] = []
    for task in model.tasks:
        s, k, j = task.key
        prio.append((ranks.get(k, 0), -tails[task.index], j, s))

    opens = [0] * n
    closes: list[list[int]] = [[] for _ in range(n)]
    for lt in model.lifetimes:
        opens[lt.first] += lt.demand
        closes[lt.last].append(lt.demand)

    n_dev = model.num_devices
    caps = list(model.capacity) if model.capacity else [None] * n_dev
    level = [0] * n_dev
    holds_group = [False] * len(model.groups)
    for g, d in enumerate(place):
        if d is not None and len(model.tasks_of_group[g]) > 0:
            level[d] += model.groups[g].static_mem
            holds_group[g] = True
    groups = [task.group for task in model.tasks]
    static = [grp.static_mem for grp in model.groups]
    preds = model.preds
    missing = [len(preds[t]) for t in range(n)]
    start = [-1] * n
    end = [-1] * n
    device = [-1] * n
    free = [0] * n_dev
    scheduled = [False] * n

    def blocked(t: int, d: int) -> bool:
        need = opens[t] + (static[groups[t]] if not holds_group[groups[t]] else 0)
        cap = caps[d]
        return bool(need) and cap is not None and level[d] + need > cap

    def arrival(t: int, d: int) -> int:
        at = 0
        for a in preds[t]:
            at = max(at, end[a.src] + (a.delay if device[a.src] != d else 0))
        return at

    def options(t: int) -> list[int]:
        d = place[groups[t]]
        return [d] if d is not None else [x for x, _ in model.tasks[t].durations]

    serial = rule == "serial"
    # serial: the ready tasks of each micro-batch (only the lowest unfinished one may run)
    ready_of_mb: dict[int, set[int]] = {}
    left_in_mb: dict[int, int] = {}
    for task in model.tasks:
        left_in_mb[task.key[2]] = left_in_mb.get(task.key[2], 0) + 1
    # heap path: per device, pending (arrival, *priority, ticks, task), available (*priority, ticks,
    # task), parked (over memory), and the device's current best key (None = recompute)
    pending: list[list[tuple[int, ...]]] = [[] for _ in range(n_dev)]
    available: list[list[tuple[int, ...]]] = [[] for _ in range(n_dev)]
    parked: list[list[tuple[int, ...]]] = [[] for _ in range(n_dev)]
    best_of: list[tuple[int, ...] | None] = [None] * n_dev
    dirty = [True] * n_dev

    def make_ready(t: int) -> None:
        if serial:
            ready_of_mb.setdefault(model.tasks[t].key[2], set()).add(t)
            return
        for d in options(t):
            heapq.heappush(pending[d], (arrival(t, d), *prio[t], model.tasks[t].duration_on(d), t))
            dirty[d] = True

    def stale(t: int, d: int) -> bool:
        placed = place[groups[t]]
        return scheduled[t] or (placed is not None and placed != d)

    def device_best(d: int) -> tuple[int, ...] | None:
        """Least key (start, *priority, end, device, task) of a task that fits on device ``d``."""
        fr = free[d]
        pend, avail = pending[d], available[d]
        while pend and pend[0][0] <= fr:
            heapq.heappush(avail, heapq.heappop(pend)[1:])
        while avail:
            e = avail[0]
            t = e[-1]
            if stale(t, d):
                heapq.heappop(avail)
            elif blocked(t, d):
                parked[d].append((0, *heapq.heappop(avail)))
            else:
                return (fr, *e[:-2], fr + e[-2], d, t)
        while pend:
            e = pend[0]
            t = e[-1]
            if stale(t, d):
                heapq.heappop(pend)
            elif blocked(t, d):
                parked[d].append(heapq.heappop(pend))
            else:
                return (e[0], *e[1:-2], e[0] + e[-2], d, t)
        return None

    def scan_best() -> tuple[int, ...] | None:
        """Least key among the ready tasks of the lowest unfinished micro-batch (serial rule)."""
        best: tuple[int, ...] | None = None
        for t in ready_of_mb.get(min(left_in_mb), ()):
            for d in options(t):
                if blocked(t, d):
                    continue
                est = max(free[d], arrival(t, d))
                key = (est, *prio[t], est + model.tasks[t].duration_on(d), d, t)
                if best is None or key < best:
                    best = key
        return best

    for t in range(n):
        if missing[t] == 0:
            make_ready(t)
    for _ in range(n):
        if serial:
            best = scan_best()
        else:
            for d in range(n_dev):
                if dirty[d]:
                    best_of[d] = device_best(d)
                    dirty[d] = False
            best = min((b for b in best_of if b is not None), default=None)
        if best is None:
            return None  # every ready task waits for memory that only blocked tasks would free
        est, d, t = best[0], best[-2], best[-1]
        g = groups[t]
        if not holds_group[g]:
            holds_group[g] = True
            place[g] = d
            level[d] += static[g]
            dirty = [True] * n_dev  # the group's other ready tasks may only run on d now
        start[t], device[t] = est, d
        end[t] = est + model.tasks[t].duration_on(d)
        free[d] = end[t]
        scheduled[t] = True
        level[d] += opens[t]
        if closes[t]:
            level[d] -= sum(closes[t])
            for e in parked[d]:
                heapq.heappush(pending[d], e)
            parked[d].clear()
        dirty[d] = True
        if serial:
            j = model.tasks[t].key[2]
            ready_of_mb[j].discard(t)
            left_in_mb[j] -= 1
            if not left_in_mb[j]:
                del left_in_mb[j]
        else:
            for x in options(t):
                dirty[x] = True
        for a in model.succs[t]:
            missing[a.dst] -= 1
            if missing[a.dst] == 0:
                make_ready(a.dst)
    return Assignment(device=tuple(device), start=tuple(start))


def best_heuristic(
    model: TaskModel,
    rules: Sequence[str] = RULES,
    on_each: Callable[[str, Assignment], None] | None = None,
    *,
    deadline: float | None = None,
) -> tuple[str, Assignment] | None:
    """The shortest feasible assignment over ``rules`` (name, assignment), or None if all get stuck.

    ``deadline`` (a ``time.perf_counter()`` value): no further rule is started once it has passed,
    unless no rule has given a feasible assignment yet (then rules are tried until one does).
    """
    best: tuple[str, Assignment] | None = None
    for rule in rules:
        if best is not None and deadline is not None and time.perf_counter() >= deadline:
            break
        sol = list_schedule(model, rule=rule)
        if sol is None or check_assignment(model, sol):
            continue
        if on_each is not None:
            on_each(rule, sol)
        if best is None or sol.makespan(model) < best[1].makespan(model):
            best = (rule, sol)
    return best
