"""Memory-aware list scheduling on a task model: quick feasible answers used as warm starts.

The scheduler dispatches, over and over, the ready task that can start earliest (ties broken by a
priority rule), never letting a forward pass allocate activations beyond a device's memory. It
works on any ``TaskModel`` (pipelines and job shops alike) and imports no solver.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

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
    """
    n = len(model.tasks)
    place = list(placement) if placement is not None else default_placement(model)
    _, tails = heads_and_tails(model)
    ranks = _KIND_RANK[rule]

    def priority(t: int) -> tuple[int, ...]:
        s, k, j = model.tasks[t].key
        return (ranks.get(k, 0), -tails[t], j, s)

    opens: dict[int, int] = {}
    closes: dict[int, list[int]] = {}
    for i, lt in enumerate(model.lifetimes):
        opens[lt.first] = opens.get(lt.first, 0) + lt.demand
        closes.setdefault(lt.last, []).append(i)
    lt_demand = [lt.demand for lt in model.lifetimes]

    n_dev = model.num_devices
    caps = list(model.capacity) if model.capacity else [None] * n_dev
    level = [0] * n_dev
    holds_group: set[int] = set()
    for g, d in enumerate(place):
        if d is not None and len(model.tasks_of_group[g]) > 0:
            level[d] += model.groups[g].static_mem
            holds_group.add(g)
    missing = [len(model.preds[t]) for t in range(n)]
    ready = {t for t in range(n) if missing[t] == 0}
    start = [-1] * n
    end = [-1] * n
    device = [-1] * n
    free = [0] * n_dev
    done = 0
    left_in_mb: dict[int, int] = {}
    for task in model.tasks:
        left_in_mb[task.key[2]] = left_in_mb.get(task.key[2], 0) + 1
    while done < n:
        best: tuple[tuple[int, ...], int, int, int] | None = None
        current = min(left_in_mb) if rule == "serial" else None
        for t in ready:
            if current is not None and model.tasks[t].key[2] != current:
                continue
            g = model.tasks[t].group
            options = [place[g]] if place[g] is not None else [d for d, _ in model.tasks[t].durations]
            for d in options:
                assert d is not None
                est = free[d]
                for a in model.preds[t]:
                    est = max(est, end[a.src] + (a.delay if device[a.src] != d else 0))
                need = opens.get(t, 0) + (model.groups[g].static_mem if g not in holds_group else 0)
                cap = caps[d]
                if need and cap is not None and level[d] + need > cap:
                    continue
                dur = model.tasks[t].duration_on(d)
                key = (est, *priority(t), est + dur, d)
                if best is None or key < best[0]:
                    best = (key, t, d, est)
        if best is None:
            return None  # every ready task waits for memory that only blocked tasks would free
        _, t, d, est = best
        g = model.tasks[t].group
        if g not in holds_group:
            holds_group.add(g)
            place[g] = d
            level[d] += model.groups[g].static_mem
        start[t], device[t] = est, d
        end[t] = est + model.tasks[t].duration_on(d)
        free[d] = end[t]
        level[d] += opens.get(t, 0)
        for i in closes.get(t, ()):
            level[d] -= lt_demand[i]
        ready.discard(t)
        done += 1
        j = model.tasks[t].key[2]
        left_in_mb[j] -= 1
        if not left_in_mb[j]:
            del left_in_mb[j]
        for a in model.succs[t]:
            missing[a.dst] -= 1
            if missing[a.dst] == 0:
                ready.add(a.dst)
    sol = Assignment(device=tuple(device), start=tuple(start))
    return sol


def best_heuristic(
    model: TaskModel, rules: Sequence[str] = RULES, on_each: Callable[[str, Assignment], None] | None = None
) -> tuple[str, Assignment] | None:
    """The shortest feasible assignment over ``rules`` (name, assignment), or None if all get stuck."""
    best: tuple[str, Assignment] | None = None
    for rule in rules:
        sol = list_schedule(model, rule=rule)
        if sol is None or check_assignment(model, sol):
            continue
        if on_each is not None:
            on_each(rule, sol)
        if best is None or sol.makespan(model) < best[1].makespan(model):
            best = (rule, sol)
    return best
