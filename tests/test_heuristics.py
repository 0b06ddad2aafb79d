"""The heap-based list scheduler gives exactly the assignments of the plain scan it replaced."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from parplan.solve.bounds import heads_and_tails
from parplan.solve.fjsp import fjsp_model, read_instance
from parplan.solve.heuristics import _KIND_RANK, RULES, best_heuristic, default_placement, list_schedule
from parplan.solve.model import Assignment, TaskModel, pipeline_model
from parplan.synthetic import synthetic_problem

DATA = Path(__file__).parent / "data"


def scan_schedule(model: TaskModel, rule: str) -> Assignment | None:
    """The reference: scan every ready (task, device) each step for the least key (quadratic)."""
    n = len(model.tasks)
    place = default_placement(model)
    _, tails = heads_and_tails(model)
    ranks = _KIND_RANK[rule]
    opens = [0] * n
    closes = [0] * n
    for lt in model.lifetimes:
        opens[lt.first] += lt.demand
        closes[lt.last] += lt.demand
    caps = list(model.capacity) if model.capacity else [None] * model.num_devices
    level = [0] * model.num_devices
    held: set[int] = set()
    for g, d in enumerate(place):
        if d is not None and model.tasks_of_group[g]:
            level[d] += model.groups[g].static_mem
            held.add(g)
    missing = [len(model.preds[t]) for t in range(n)]
    ready = {t for t in range(n) if not missing[t]}
    start, end, device, free = [-1] * n, [-1] * n, [-1] * n, [0] * model.num_devices
    left: dict[int, int] = {}
    for task in model.tasks:
        left[task.key[2]] = left.get(task.key[2], 0) + 1
    for _ in range(n):
        best = None
        for t in ready:
            s, k, j = model.tasks[t].key
            if rule == "serial" and j != min(left):
                continue
            g = model.tasks[t].group
            for d in [place[g]] if place[g] is not None else [x for x, _ in model.tasks[t].durations]:
                est = max(
                    [free[d]] + [end[a.src] + (a.delay if device[a.src] != d else 0) for a in model.preds[t]]
                )
                need = opens[t] + (model.groups[g].static_mem if g not in held else 0)
                if need and caps[d] is not None and level[d] + need > caps[d]:
                    continue
                key = (est, ranks.get(k, 0), -tails[t], j, s, est + model.tasks[t].duration_on(d), d)
                if best is None or key < best[0]:
                    best = (key, t, d)
        if best is None:
            return None
        (est, *_), t, d = best
        g = model.tasks[t].group
        if g not in held:
            held.add(g)
            place[g] = d
            level[d] += model.groups[g].static_mem
        start[t], device[t] = est, d
        end[t] = free[d] = est + model.tasks[t].duration_on(d)
        level[d] += opens[t] - closes[t]
        ready.discard(t)
        left[model.tasks[t].key[2]] -= 1
        if not left[model.tasks[t].key[2]]:
            del left[model.tasks[t].key[2]]
        for a in model.succs[t]:
            missing[a.dst] -= 1
            if not missing[a.dst]:
                ready.add(a.dst)
    return Assignment(device=tuple(device), start=tuple(start))


MODELS = [
    dict(pp=4, microbatches=8, memory_limit=4),
    dict(pp=4, microbatches=12, costs="F=1.3,I=1.1,W=0.7", comm=0.2, wgrad_mem=0.4, memory_limit=5),
    dict(pp=3, microbatches=6, costs="F=1,I=2,W=1", act_mem=2, wgrad_mem=1, memory_limit=5),
    dict(pp=2, microbatches=4, placement="bidirectional", memory_limit=3),
    dict(pp=3, microbatches=4, placement="v", memory_limit=4),
    dict(pp=3, microbatches=4, placement="free", chunks=2, comm=1, param_mem=1, memory_limit=6),
    dict(pp=2, microbatches=3, costs="F=1,B=2", memory_limit=1),
]


@pytest.mark.parametrize("kw", MODELS)
def test_heap_list_schedule_equals_the_scan(kw: dict[str, object]) -> None:
    model = pipeline_model(synthetic_problem(**kw))  # type: ignore[arg-type]
    for rule in RULES:
        assert list_schedule(model, rule=rule) == scan_schedule(model, rule), rule


def test_heap_list_schedule_equals_the_scan_on_a_flexible_job_shop() -> None:
    model = fjsp_model(read_instance(DATA / "mk01.fjs"))
    for rule in ("critical-path", "serial"):
        assert list_schedule(model, rule=rule) == scan_schedule(model, rule)


def test_best_heuristic_stops_at_its_deadline_but_returns_one_answer() -> None:
    model = pipeline_model(synthetic_problem(pp=4, microbatches=8, memory_limit=4))
    seen: list[str] = []
    best = best_heuristic(model, on_each=lambda rule, _sol: seen.append(rule), deadline=time.perf_counter())
    assert best is not None and seen == [RULES[0]]
    assert len(best_heuristic(model, on_each=lambda r, _s: seen.append(r)) or ()) == 2
    assert seen[1:] == list(RULES)
