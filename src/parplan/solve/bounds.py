"""Lower bounds on the makespan of a task model: per-device load, the critical path, and the
memory-aware warm-up and drain bound; and a lower bound on the longest device span.

All are in ticks and hold for every backend; the solver's own bound is combined with them by the
caller (``parplan.solve.api``). Imports no solver.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass

from parplan.solve.model import MAX_EXACT_QUANTA, TaskModel

#: The names ``Bounds.binding`` takes, in the order ties are broken.
BOUND_NAMES = ("load", "critical-path", "memory-warmup-drain")

# Relative tolerance of memory comparisons (the validator keeps a peak within it of the limit).
_MEM_TOL = 1e-9  # TOL


@dataclass(frozen=True, slots=True, kw_only=True)
class Bounds:
    """Lower bounds in ticks.

    ``load`` (busiest device, with its start offset and tail), ``critical_path``, and
    ``memory_warmup_drain`` (load plus the idle time memory forces before a device's first backward
    and after its last forward; 0 where it does not apply) bound the makespan; ``best`` is their
    maximum and ``binding`` names it. ``span`` bounds the longest device span (a device's last end
    minus its own first start).
    """

    load: int
    critical_path: int
    heads: tuple[int, ...]
    tails: tuple[int, ...]
    memory_warmup_drain: int = 0
    span: int = 0

    @property
    def best(self) -> int:
        return max(self.load, self.critical_path, self.memory_warmup_drain)

    @property
    def binding(self) -> str:
        """Which bound is ``best``: "load", "critical-path" or "memory-warmup-drain" (first on ties)."""
        values = (self.load, self.critical_path, self.memory_warmup_drain)
        return BOUND_NAMES[values.index(max(values))]


def _arc_weights(model: TaskModel, dur: tuple[int, ...]) -> tuple[tuple[tuple[int, int], ...], ...]:
    """Per task, (predecessor, its duration + the arc's delay); a delay counts in a bound only when
    the two tasks can never share a device."""
    devices = [frozenset(d for d, _ in t.durations) for t in model.tasks]
    return tuple(
        tuple(
            (a.src, dur[a.src] + (a.delay if a.delay and devices[a.src].isdisjoint(devices[t]) else 0))
            for a in arcs
        )
        for t, arcs in enumerate(model.preds)
    )


def min_durations(model: TaskModel) -> tuple[int, ...]:
    """Each task's shortest possible duration (on any device, alone or inside a fused pair)."""
    out = [t.min_duration for t in model.tasks]
    for p in model.fusable:
        out[p.forward] = min(out[p.forward], p.ticks)
        out[p.backward] = min(out[p.backward], p.ticks)
    return tuple(out)


def heads_and_tails(model: TaskModel) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Earliest start (head) and minimal time after the end (tail) of every task, ignoring resources."""
    dur = min_durations(model)
    return _heads_and_tails(model, dur, _arc_weights(model, dur))


def _heads_and_tails(
    model: TaskModel, dur: tuple[int, ...], weights: tuple[tuple[tuple[int, int], ...], ...]
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    n = len(model.tasks)
    head = [0] * n
    tail = [0] * n
    order = model.topo_order
    for t in order:
        h = 0
        for src, w in weights[t]:
            if head[src] + w > h:
                h = head[src] + w
        head[t] = h
    for t in reversed(order):
        # tail[src] >= dur[t] + tail[t] + delay = (w - dur[src]) + dur[t] + tail[t]
        for src, w in weights[t]:
            v = tail[t] + dur[t] + w - dur[src]
            if v > tail[src]:
                tail[src] = v
    return tuple(head), tuple(tail)


def lower_bounds(model: TaskModel) -> Bounds:
    """Load, critical-path and memory-aware warm-up/drain bounds on the makespan; a span bound.

    Critical path: max over tasks of head + duration + tail. Load: with fixed placement, for every
    device d, min head + sum of durations + min tail over its tasks (nothing runs on d before the
    earliest head, and after its last task ends some tail remains); with free placement, the summed
    minimal work divided among all devices (rounded up), and the largest single group's minimal work.
    Memory warm-up/drain: the load bound of a device plus the idle time its memory limit forces
    (``forced_idle``). Span: per device, its work plus that forced idle (no head, no tail).
    """
    dur = min_durations(model)
    weights = _arc_weights(model, dur)
    heads, tails = _heads_and_tails(model, dur, weights)
    cp = max((heads[t.index] + dur[t.index] + tails[t.index] for t in model.tasks), default=0)
    load = span = warmup_drain = 0
    if model.is_fixed:
        by_dev: dict[int, list[int]] = {}
        for t in model.tasks:
            by_dev.setdefault(t.durations[0][0], []).append(t.index)
        idle = _forced_idle(model, by_dev, dur, weights) if not model.fusable else {}
        for d, tasks in by_dev.items():
            work = sum(model.tasks[t].min_duration for t in tasks) - _max_fusion_saving(model, tasks)
            head = min(heads[t] for t in tasks)
            tail = min(tails[t] for t in tasks)
            load = max(load, head + work + tail)
            span = max(span, work + idle.get(d, 0))
            if d in idle:
                warmup_drain = max(warmup_drain, head + work + idle[d] + tail)
    else:
        total = 0
        for g in model.groups:
            members = model.tasks_of_group[g.index]
            work = min(sum(model.tasks[t].duration_on(d) for t in members) for d in g.devices)
            total += work
            load = max(load, work)
        load = max(load, -(-total // model.num_devices))
        span = load
    return Bounds(
        load=load,
        critical_path=cp,
        heads=heads,
        tails=tails,
        memory_warmup_drain=warmup_drain,
        span=span,
    )


def _max_fusion_saving(model: TaskModel, tasks: list[int]) -> int:
    """An upper bound on the time fused pairs can save among ``tasks`` (each task fuses at most once)."""
    mine = set(tasks)
    pairs = [p for p in model.fusable if p.forward in mine]
    if not pairs:
        return 0
    best = max(
        model.tasks[p.forward].min_duration + model.tasks[p.backward].min_duration - p.ticks for p in pairs
    )
    count = min(len({p.forward for p in pairs}), len({p.backward for p in pairs}))
    return max(0, best) * count


# ---------------------------------------------------------------------------- warm-up and drain


@dataclass(frozen=True, slots=True, kw_only=True)
class _StageDevice:
    """The passes of the one stage a device holds, by micro-batch: F, its backward (I or B), its W."""

    device: int
    group: int
    forward: dict[int, int]
    backward: dict[int, int]
    wgrad: dict[int, int]


def forced_idle(model: TaskModel) -> dict[int, int]:
    """Per device (fixed placement), the idle ticks memory and the round trip through later stages
    force between its own first start and last end; only devices holding exactly one stage of a
    pipeline model without fusion are listed (see ``_forced_idle``)."""
    if not model.is_fixed or model.fusable:
        return {}
    by_dev: dict[int, list[int]] = {}
    for t in model.tasks:
        by_dev.setdefault(t.durations[0][0], []).append(t.index)
    dur = min_durations(model)
    return _forced_idle(model, by_dev, dur, _arc_weights(model, dur))


def _forced_idle(
    model: TaskModel,
    by_dev: dict[int, list[int]],
    dur: tuple[int, ...],
    weights: tuple[tuple[tuple[int, int], ...], ...],
) -> dict[int, int]:
    """Idle ticks that memory and the round trip through later stages force on a device between its
    own first start and last end, for every device holding exactly one stage (linear placements).

    Let the device hold stage s with m forwards of duration F, backwards (I, or B) of duration I and
    weight passes of duration W (0 without a split backward); R = the longest path from the start of
    an F to the start of its own I (through every later stage and back, communication included),
    T = R - F. Let k be the most activations its memory can hold at once (static + k act <= limit).

    Warm-up: before the device's first I starts, at S_I >= S_0 + R (S_0 its first start), only
    forwards can run (W needs its I), and every forward started before S_I still holds its
    activation, so at most min(k, m) of them: idle in [S_0, S_I) >= R - min(k, m) F.

    Drain: let F(j*) be the last forward, starting at tau and ending at E. I(j*) cannot start
    before E + T, and in [E, E + T) only I and W of other micro-batches run. Each with its I in
    the window held its whole activation at tau; each with only its W there held its wgrad part;
    with j*'s own activation: static + (1 + n) act + d wgrad <= limit, and the work there is at
    most n (I + W) + d W (n + d <= m - 1): idle >= T - the largest such work.

    When k < m some forward starts after S_I, so the windows are disjoint and both idles add up;
    otherwise the larger counts. Memory is read conservatively: when the model rounded memory to
    quanta, every demand may be one quantum less and the limit one more than its quanta, plus the
    validator's tolerance, so k is never below the real count.
    """
    stages = [sd for d, tasks in by_dev.items() if (sd := _stage_device(model, d, tasks)) is not None]
    if not stages:
        return {}
    rounded = _memory_rounded(model)
    to_back = _start_to_backward(model, stages, dur, weights)
    lifetimes_of: dict[int, list[tuple[int, int]]] = defaultdict(list)
    for lt in model.lifetimes:
        lifetimes_of[lt.first].append((lt.last, lt.demand))
    out: dict[int, int] = {}
    for sd in stages:
        fwd = sd.forward
        if any(
            last not in (sd.backward[j], sd.wgrad.get(j))
            for j, f in fwd.items()
            for last, _ in lifetimes_of[f]
        ):
            continue  # memory this argument does not know about
        less = 1 if rounded else 0  # a rounded-up demand may hold one quantum less
        act_quanta = min(sum(max(0, q - less) for _, q in lifetimes_of[f]) for f in fwd.values())
        wg_quanta = min(
            sum(max(0, q - less) for last, q in lifetimes_of[f] if last == sd.wgrad.get(j))
            for j, f in fwd.items()
        )
        act = act_quanta * (1 - _MEM_TOL)  # TOL
        wg = wg_quanta * (1 - _MEM_TOL)  # TOL
        m = len(fwd)
        room = _memory_room(model, sd, rounded)
        if room is None or act <= 0:
            k = m
        else:
            k = min(m, math.floor(room / act))
            if k < 1:
                continue  # not even one activation fits: infeasible, reported elsewhere
        f_ticks = max(dur[f] for f in fwd.values())
        i_ticks = max(dur[b] for b in sd.backward.values())
        w_ticks = max((dur[w] for w in sd.wgrad.values()), default=0)
        r = min(to_back[f] for f in fwd.values())
        t = min(to_back[f] - dur[f] for f in fwd.values())
        warmup = max(0, r - k * f_ticks)
        drain = max(0, t - _drain_work(m, k, act, wg, room, i_ticks, w_ticks))
        out[sd.device] = warmup + drain if k < m else max(warmup, drain)
    return out


def _drain_work(m: int, k: int, act: float, wg: float, room: float | None, i_ticks: int, w_ticks: int) -> int:
    """The most I/W work that can fill the drain window: max n (I + W) + d W over n + d <= m - 1
    and (1 + n) act + d wg <= room (n in flight with their I there, d with only a deferred W)."""
    others = m - 1
    best = 0
    for n in range(min(others, k - 1) + 1):
        if room is None or wg <= 0:
            d = others - n
        else:
            d = max(0, min(others - n, math.floor((room - (1 + n) * act) / wg)))
        best = max(best, n * (i_ticks + w_ticks) + d * w_ticks)
    return best


def _memory_room(model: TaskModel, sd: _StageDevice, rounded: bool) -> float | None:
    """Quanta the device's activations may use at most (limit minus static memory, read leniently)."""
    cap = model.capacity[sd.device] if model.capacity else None
    if cap is None:
        return None
    static = model.groups[sd.group].static_mem
    if rounded:
        cap, static = cap + 1, max(0, static - 1)
    # the validator keeps a peak within TOL * max(1, limit) of the limit (real units)
    cap_hi = cap + 2 * _MEM_TOL * max(1.0 / model.mem_quantum, cap)  # TOL
    return cap_hi - static


def _memory_rounded(model: TaskModel) -> bool:
    """Whether memory may have been rounded to quanta: some value reached the rounded scale (an
    exact conversion at that scale is treated as rounded too, which only weakens the bound)."""
    per_forward: dict[int, int] = defaultdict(int)
    for lt in model.lifetimes:
        per_forward[lt.first] += lt.demand
    values = [c for c in model.capacity if c is not None]
    values += [g.static_mem for g in model.groups]
    values += list(per_forward.values())
    return max(values, default=0) >= MAX_EXACT_QUANTA - 1


def _stage_device(model: TaskModel, device: int, tasks: list[int]) -> _StageDevice | None:
    """The device's passes when it holds exactly one stage of a pipeline model (F, I, W or F, B per
    micro-batch, with the arcs F -> I -> W), else None."""
    groups = {model.tasks[t].group for t in tasks}
    if len(groups) != 1:
        return None
    by_kind: dict[str, dict[int, int]] = {"F": {}, "I": {}, "W": {}, "B": {}}
    for t in tasks:
        _, kind, mb = model.tasks[t].key
        if kind not in by_kind or mb in by_kind[kind]:
            return None
        by_kind[kind][mb] = t
    fwd = by_kind["F"]
    split = bool(by_kind["I"])
    back, wgrad = (by_kind["I"], by_kind["W"]) if split else (by_kind["B"], {})
    if not fwd or (split and by_kind["B"]) or set(back) != set(fwd) or (split and set(wgrad) != set(fwd)):
        return None
    for j, f in fwd.items():
        if not any(a.src == f for a in model.preds[back[j]]):
            return None
        if split and not any(a.src == back[j] for a in model.preds[wgrad[j]]):
            return None
    return _StageDevice(device=device, group=groups.pop(), forward=fwd, backward=back, wgrad=wgrad)


def _start_to_backward(
    model: TaskModel,
    stages: list[_StageDevice],
    dur: tuple[int, ...],
    weights: tuple[tuple[tuple[int, int], ...], ...],
) -> dict[int, int]:
    """For the forward of every stage device: the longest path (ticks) from its start to the start
    of its own backward, through its micro-batch's tasks only (a lower bound on the true longest
    path). Micro-batches with the same tasks and arcs share one computation."""
    by_mb: dict[int, list[int]] = defaultdict(list)
    for t in model.topo_order:
        by_mb[model.tasks[t].key[2]].append(t)
    wanted: dict[int, list[tuple[int, int]]] = defaultdict(list)
    for sd in stages:
        for j, f in sd.forward.items():
            wanted[j].append((f, sd.backward[j]))
    cache: dict[tuple[object, ...], dict[tuple[int, int], int]] = {}
    out: dict[int, int] = {}
    for j, pairs in wanted.items():
        members = by_mb[j]
        local = {t: i for i, t in enumerate(members)}
        preds = [tuple((local[u], w) for u, w in weights[t] if u in local) for t in members]
        sig = (tuple((model.tasks[t].key[:2], dur[t]) for t in members), tuple(preds))
        known = cache.setdefault(sig, {})
        for f, b in pairs:
            key = (local[f], local[b])
            if key not in known:
                known[key] = _longest(preds, *key)
            out[f] = known[key]
    return out


def _longest(preds: list[tuple[tuple[int, int], ...]], src: int, dst: int) -> int:
    """Longest path from ``src`` to ``dst`` (start to start) over tasks in topological order."""
    unreached = -1
    dist = [unreached] * len(preds)
    dist[src] = 0
    for v in range(src + 1, dst + 1):
        best = unreached
        for u, w in preds[v]:
            if dist[u] != unreached and dist[u] + w > best:
                best = dist[u] + w
        dist[v] = best
    return max(dist[dst], 0)
