"""Lower bounds on the makespan of a task model: per-device load and the critical path.

Both are in ticks and hold for every backend; the solver's own bound is combined with them by the
caller (``parplan.solve.api``). Imports no solver.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

from parplan.solve.model import FusablePair, TaskModel


@dataclass(frozen=True, slots=True, kw_only=True)
class Bounds:
    """Makespan lower bounds in ticks: ``load`` (busiest device), ``critical_path``, and ``best``."""

    load: int
    critical_path: int
    heads: tuple[int, ...]
    tails: tuple[int, ...]

    @property
    def best(self) -> int:
        return max(self.load, self.critical_path)


def _delay(model: TaskModel, arc_src: int, arc_dst: int, delay: int) -> int:
    """An arc's delay counts in a bound only when its two tasks can never share a device."""
    a = {d for d, _ in model.tasks[arc_src].durations}
    b = {d for d, _ in model.tasks[arc_dst].durations}
    return delay if not (a & b) else 0


def min_durations(model: TaskModel) -> tuple[int, ...]:
    """Each task's shortest possible duration (on any device, alone or inside a fused pair)."""
    out = [t.min_duration for t in model.tasks]
    for p in model.fusable:
        out[p.forward] = min(out[p.forward], p.ticks)
        out[p.backward] = min(out[p.backward], p.ticks)
        if p.absorbed is not None:
            out[p.absorbed] = 0  # a W absorbed into its I's chunk takes no time of its own
    return tuple(out)


def heads_and_tails(model: TaskModel) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Earliest start (head) and minimal time after the end (tail) of every task, ignoring resources."""
    n = len(model.tasks)
    dur = min_durations(model)
    head = [0] * n
    tail = [0] * n
    order = model.topo_order
    for t in order:
        for a in model.preds[t]:
            head[t] = max(head[t], head[a.src] + dur[a.src] + _delay(model, a.src, t, a.delay))
    for t in reversed(order):
        for a in model.succs[t]:
            tail[t] = max(tail[t], tail[a.dst] + dur[a.dst] + _delay(model, t, a.dst, a.delay))
    return tuple(head), tuple(tail)


def lower_bounds(model: TaskModel) -> Bounds:
    """Load and critical-path bounds.

    Critical path: max over tasks of head + duration + tail. Load: with fixed placement, for every
    device d, min head + sum of durations + min tail over its tasks (nothing runs on d before the
    earliest head, and after its last task ends some tail remains); with free placement, the summed
    minimal work divided among all devices (rounded up), and the largest single group's minimal work.
    """
    heads, tails = heads_and_tails(model)
    dur = min_durations(model)
    cp = max((heads[t.index] + dur[t.index] + tails[t.index] for t in model.tasks), default=0)
    load = 0
    if model.is_fixed:
        by_dev: dict[int, list[int]] = {}
        for t in model.tasks:
            by_dev.setdefault(t.durations[0][0], []).append(t.index)
        for tasks in by_dev.values():
            work = sum(model.tasks[t].min_duration for t in tasks) - _max_fusion_saving(model, tasks)
            load = max(load, min(heads[t] for t in tasks) + work + min(tails[t] for t in tasks))
            if model.fusable:
                load = max(load, _fused_load(model, tasks, heads, tails))
    else:
        total = 0
        for g in model.groups:
            members = model.tasks_of_group[g.index]
            work = min(sum(model.tasks[t].duration_on(d) for t in members) for d in g.devices)
            total += work
            load = max(load, work)
        load = max(load, -(-total // model.num_devices))
    return Bounds(load=load, critical_path=cp, heads=heads, tails=tails)


def _max_fusion_saving(model: TaskModel, tasks: list[int]) -> int:
    """An upper bound on the time fused pairs can save among ``tasks`` (each task fuses at most
    once): the best pair's saving (F + B - FB, B = I + W when W is absorbed) times the most pairs
    that can run at once (distinct forwards and distinct backwards)."""
    mine = set(tasks)
    pairs = [p for p in model.fusable if p.forward in mine]
    if not pairs:
        return 0

    def apart(p: FusablePair) -> int:
        w = model.tasks[p.absorbed].min_duration if p.absorbed is not None else 0
        return model.tasks[p.forward].min_duration + model.tasks[p.backward].min_duration + w

    best = max(apart(p) - p.ticks for p in pairs)
    count = min(len({p.forward for p in pairs}), len({p.backward for p in pairs}))
    return max(0, best) * count


def _fused_load(model: TaskModel, tasks: list[int], heads: Sequence[int], tails: Sequence[int]) -> int:
    """The load bound of one device with fused chunks, counting that none starts before E.

    E is the earliest head of a backward that can fuse. With W the device's unfused work, s the
    best saving of one chunk, t the least tail: the busy time a in [h, E) is at most E - h, and
    all but X of it (the work of other tasks that may start before E) runs pairable forwards
    that then fuse with nothing, so at most n = min(#backwards, #forwards - (a - X)+ / Fmax)
    chunks remain, and C >= E + (W - a - s n) + t. The bound is the least C over a.
    """
    mine = set(tasks)
    pairs = [p for p in model.fusable if p.forward in mine]
    if not pairs:
        return 0
    dur = [model.tasks[t].min_duration for t in range(len(model.tasks))]
    forwards = {p.forward for p in pairs}
    backwards = {p.backward for p in pairs}
    saving = _max_fusion_saving(model, tasks) // max(1, min(len(forwards), len(backwards)))
    h = min(heads[t] for t in tasks)
    tail = min(tails[t] for t in tasks)
    e = min(heads[b] for b in backwards)
    other = sum(dur[t] for t in tasks if t not in forwards and heads[t] < e)
    f_max = max(dur[f] for f in forwards)
    work = sum(dur[t] for t in tasks)

    def spared(a: Fraction) -> Fraction:  # busy time before E plus the saving still possible after
        lost = max(Fraction(0), a - other) / max(1, f_max)
        return a + saving * min(Fraction(len(backwards)), len(forwards) - lost)

    # spared is concave and piecewise linear in a: its maximum is at an end or at a kink
    hi = Fraction(max(0, e - h))
    kinks = [Fraction(0), hi, min(hi, Fraction(other))]
    kinks.append(min(hi, other + Fraction(f_max * (len(forwards) - len(backwards)))))
    best = max(spared(max(Fraction(0), a)) for a in kinks)
    return math.ceil(e + work - best + tail)
