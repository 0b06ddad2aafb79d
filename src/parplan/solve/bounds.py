"""Lower bounds on the makespan of a task model: per-device load, the critical path, and the
memory-aware warm-up and drain bound; and a lower bound on the longest device span.

All are in ticks and hold for every backend; the solver's own bound is combined with them by the
caller (``parplan.solve.api``). Imports no solver.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

from parplan.numeric import TOL
from parplan.solve.model import MAX_EXACT_QUANTA, FusablePair, TaskModel

#: The names ``Bounds.binding`` takes, in the order ties are broken.
BOUND_NAMES = ("load", "critical-path", "memory-warmup-drain")

# Relative tolerance of memory comparisons (the validator keeps a peak within it of the limit).
_MEM_TOL = TOL


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
        if p.absorbed is not None:
            out[p.absorbed] = 0  # a W absorbed into its I's chunk takes no time of its own
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


# ---------------------------------------------------------------------------- warm-up and drain


#: The warm-up/drain bound enumerates its memory knapsacks for at most this many stages per device.
MAX_STAGES_PER_DEVICE = 2


@dataclass(frozen=True, slots=True, kw_only=True)
class _Stage:
    """The passes of one stage on a device, by micro-batch: F, its backward (I or B), its W."""

    group: int
    forward: dict[int, int]
    backward: dict[int, int]
    wgrad: dict[int, int]


@dataclass(frozen=True, slots=True, kw_only=True)
class _StageCosts:
    """Per stage of a device: micro-batches, F / backward / W ticks, activation and wgrad quanta."""

    count: int
    f: int
    back: int
    w: int
    act: float
    wgrad: float


def forced_idle(model: TaskModel) -> dict[int, int]:
    """Per device (fixed placement), the idle ticks memory and the round trip through later stages
    force between its own first start and last end; only devices holding one or two stages of a
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
    """Idle ticks that memory and the round trips through other stages force on a device between its
    own first start S_0 and last end, for every device holding one or two stages.

    Each F of stage g holds act_g until its backward (I, or B) ends, wgrad_g of it until its W ends;
    room = limit - static memory; paths are longest paths of one micro-batch, start to start.

    Warm-up: before the device's first backward starts, at S_B, only forwards can run (a W needs
    its I), and every forward started before S_B still holds its activation: at most
    maxF = max sum_g f_g F_g over sum_g f_g act_g <= room, f_g <= m_g. The first backward is
    back_g(j) for some g, j, which starts at least path(F_h(j), back_g(j)) after F_h(j), itself at
    or after S_0, for every forward F_h(j) on the device: S_B - S_0 >= R = min over g, j of the
    longest such path. Idle in [S_0, S_B) >= R - maxF.

    Drain: let F_g*(j*) be the device's last forward, starting at tau and ending at E. Its own
    backward cannot start before E + T(g*) (T = path(F, back) - F), and in [E, E + T) only
    backwards and W's of other (stage, micro-batch) pairs run. Each pair with its backward there held
    its whole activation at tau; each with only its W there held its wgrad part; with the new one:
    act_g* + sum_g n_g act_g + d_g wgrad_g <= room, n_g + d_g <= m_g (- 1 for g*), and the work
    there is at most sum_g n_g (I_g + W_g) + d_g W_g. The last forward's stage g* is one whose
    forward has no later forward of the same micro-batch on the device; the idle is the smallest
    over those of T(g*) - the largest such work.

    When fewer forwards than the device's total fit in memory at once, some forward starts after
    S_B and the two windows are disjoint: both idles add up; otherwise the larger counts. Memory is
    read conservatively: when the model rounded memory to quanta, every demand may be one quantum
    less and the limit one more, plus the validator's tolerance, so no count is below the real one.
    """
    devices: dict[int, list[_Stage]] = {}
    for d, tasks in by_dev.items():
        stages = _device_stages(model, tasks)
        if stages:
            devices[d] = stages
    if not devices:
        return {}
    rounded = _memory_rounded(model)
    lifetimes_of: dict[int, list[tuple[int, int]]] = defaultdict(list)
    for lt in model.lifetimes:
        lifetimes_of[lt.first].append((lt.last, lt.demand))
    paths = _forward_paths(model, devices, weights)
    out: dict[int, int] = {}
    for d, stages in devices.items():
        idle = _device_idle(model, d, stages, dur, paths, lifetimes_of, rounded)
        if idle is not None:
            out[d] = idle
    return out


def _device_idle(
    model: TaskModel,
    device: int,
    stages: list[_Stage],
    dur: tuple[int, ...],
    paths: dict[tuple[int, int], int],
    lifetimes_of: dict[int, list[tuple[int, int]]],
    rounded: bool,
) -> int | None:
    """The forced idle of one device (``_forced_idle``), or None when the argument does not apply."""
    less = 1 if rounded else 0  # a rounded-up demand may hold one quantum less
    costs: list[_StageCosts] = []
    for st in stages:
        for j, f in st.forward.items():
            if any(last not in (st.backward[j], st.wgrad.get(j)) for last, _ in lifetimes_of[f]):
                return None  # memory this argument does not know about
        act = min(sum(max(0, q - less) for _, q in lifetimes_of[f]) for f in st.forward.values())
        wgrad = min(
            sum(max(0, q - less) for last, q in lifetimes_of[f] if last == st.wgrad.get(j))
            for j, f in st.forward.items()
        )
        costs.append(
            _StageCosts(
                count=len(st.forward),
                f=max(dur[f] for f in st.forward.values()),
                back=max(dur[b] for b in st.backward.values()),
                w=max((dur[w] for w in st.wgrad.values()), default=0),
                act=act * (1 - _MEM_TOL),
                wgrad=wgrad * (1 - _MEM_TOL),
            )
        )
    room = _memory_room(model, device, rounded)
    if room is not None and any(c.act > room for c in costs):
        return None  # not even one activation fits: infeasible, reported elsewhere
    reach = 10**18
    for st in stages:
        for j, b in st.backward.items():
            best = max(paths.get((h.forward[j], b), -1) for h in stages if j in h.forward)
            reach = min(reach, max(0, best))
    warmup = max(0, reach - _max_forward_work(costs, room))
    drain: int | None = None
    for g, st in enumerate(stages):
        others = [h for h in stages if h is not st]
        if not any(
            all((f, h.forward[j]) not in paths for h in others if j in h.forward)
            for j, f in st.forward.items()
        ):
            continue  # every forward of this stage has a later forward on the device: never the last
        t = min(max(0, paths.get((f, st.backward[j]), 0) - dur[f]) for j, f in st.forward.items())
        idle = max(0, t - _drain_work(costs, g, room))
        drain = idle if drain is None else min(drain, idle)
    drain = drain or 0
    if _max_forward_count(costs, room) < sum(c.count for c in costs):
        return warmup + drain
    return max(warmup, drain)


def _fits(room: float, weight: float, cap: int) -> int:
    """How many items of ``weight`` (at most ``cap``) fit in ``room``."""
    if weight <= 0:
        return cap
    return max(0, min(cap, math.floor(room / weight)))


def _max_forward_count(costs: list[_StageCosts], room: float | None) -> int:
    """The most forwards whose activations fit at once (smallest activations first: exact)."""
    if room is None:
        return sum(c.count for c in costs)
    total = 0
    for c in sorted(costs, key=lambda c: c.act):
        n = _fits(room, c.act, c.count)
        total += n
        room -= n * c.act
    return total


def _max_forward_work(costs: list[_StageCosts], room: float | None) -> int:
    """max sum_g f_g F_g over sum_g f_g act_g <= room, f_g <= m_g (exact, one or two stages)."""
    if room is None:
        return sum(c.count * c.f for c in costs)
    first, rest = costs[0], costs[1:]
    if first.act <= 0:
        return first.count * first.f + sum(_fits(room, c.act, c.count) * c.f for c in rest)
    best = 0
    for n in range(_fits(room, first.act, first.count) + 1):
        left = room - n * first.act
        best = max(best, n * first.f + sum(_fits(left, c.act, c.count) * c.f for c in rest))
    return best


def _drain_work(costs: list[_StageCosts], last: int, room: float | None) -> int:
    """An upper bound on the backward and W work that fits the drain window after stage ``last``'s
    final forward: max sum_g n_g (I_g + W_g) + d_g W_g over act_last + sum_g n_g act_g + d_g wgrad_g
    <= room and n_g + d_g <= m_g (- 1 for ``last``).

    Exact for one stage (enumerating n). With two, a fractional relaxation: with e_g = n_g + d_g W's
    the work is n_g I_g + e_g W_g and the memory n_g (act_g - wgrad_g) + e_g wgrad_g; dropping
    n_g <= e_g leaves a knapsack of I-items and W-items, each at most m_g (- 1) of them.
    """
    caps = [c.count - (1 if g == last else 0) for g, c in enumerate(costs)]
    if room is None:
        return sum(cap * (c.back + c.w) for cap, c in zip(caps, costs, strict=True))
    room -= costs[last].act
    if len(costs) > 1:
        items = [(c.back, c.act - c.wgrad, cap) for c, cap in zip(costs, caps, strict=True)]
        items += [(c.w, c.wgrad, cap) for c, cap in zip(costs, caps, strict=True)]
        return math.floor(_fractional(items, room) + 1e-6)  # integer work below it; 1e-6: float noise
    c, cap = costs[0], caps[0]
    if c.act <= 0:
        return cap * (c.back + c.w)
    best = 0
    for n in range(_fits(room, c.act, cap) + 1):
        d = _fits(room - n * c.act, c.wgrad, cap - n)
        best = max(best, n * (c.back + c.w) + d * c.w)
    return best


def _fractional(items: list[tuple[int, float, int]], room: float) -> float:
    """The fractional knapsack optimum over (value, weight, count) items: an upper bound."""
    total = 0.0
    for value, weight, count in sorted(items, key=lambda x: -(x[0] / x[1]) if x[1] > 0 else -math.inf):
        if count <= 0 or value <= 0:
            continue
        if weight <= 0:
            total += value * count
            continue
        take = min(float(count), max(0.0, room) / weight)
        total += take * value
        room -= take * weight
    return total


def _memory_room(model: TaskModel, device: int, rounded: bool) -> float | None:
    """Quanta the device's activations may use at most (limit minus static memory, read leniently)."""
    cap = model.capacity[device] if model.capacity else None
    if cap is None:
        return None
    static = model.fixed_static(device)
    if rounded:
        cap, static = cap + 1, max(0, static - len([g for g in model.groups if g.devices == (device,)]))
    # the validator keeps a peak within TOL * max(1, limit) of the limit (real units)
    cap_hi = cap + 2 * _MEM_TOL * max(1.0 / model.mem_quantum, cap)
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


def _device_stages(model: TaskModel, tasks: list[int]) -> list[_Stage] | None:
    """The device's stages when it holds one or two stages of a pipeline model (F, I, W or F, B per
    micro-batch, with the arcs F -> I -> W), else None."""
    by_group: dict[int, list[int]] = defaultdict(list)
    for t in tasks:
        by_group[model.tasks[t].group].append(t)
    if len(by_group) > MAX_STAGES_PER_DEVICE:
        return None
    out: list[_Stage] = []
    for group, members in sorted(by_group.items()):
        by_kind: dict[str, dict[int, int]] = {"F": {}, "I": {}, "W": {}, "B": {}}
        for t in members:
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
        out.append(_Stage(group=group, forward=fwd, backward=back, wgrad=wgrad))
    return out


def _forward_paths(
    model: TaskModel,
    devices: dict[int, list[_Stage]],
    weights: tuple[tuple[tuple[int, int], ...], ...],
) -> dict[tuple[int, int], int]:
    """Longest paths (ticks, start to start) from every forward on the given devices to the
    forwards and backwards of the same micro-batch on the same device that it reaches, through that
    micro-batch's tasks only (a lower bound on the true longest path). Micro-batches with the same
    tasks and arcs share one computation."""
    by_mb: dict[int, list[int]] = defaultdict(list)
    for t in model.topo_order:
        by_mb[model.tasks[t].key[2]].append(t)
    wanted: dict[int, list[tuple[int, list[int]]]] = defaultdict(list)
    for stages in devices.values():
        mine: dict[int, list[int]] = defaultdict(list)
        for st in stages:
            for j, f in st.forward.items():
                mine[j] += [f, st.backward[j]]
        for st in stages:
            for j, f in st.forward.items():
                wanted[j].append((f, mine[j]))
    sig_ids: dict[tuple[object, ...], int] = {}  # a tuple's hash is not cached: hash each once
    cache: dict[tuple[int, int], list[int]] = {}
    out: dict[tuple[int, int], int] = {}
    for j, pairs in wanted.items():
        members = by_mb[j]
        local = {t: i for i, t in enumerate(members)}
        preds = [tuple((local[u], w) for u, w in weights[t] if u in local) for t in members]
        sig = (tuple(model.tasks[t].key[:2] for t in members), tuple(preds))
        sig_id = sig_ids.setdefault(sig, len(sig_ids))
        for f, targets in pairs:
            key = (sig_id, local[f])
            if key not in cache:
                cache[key] = _longest_from(preds, local[f])
            dist = cache[key]
            for x in targets:
                if x != f and dist[local[x]] >= 0:
                    out[f, x] = dist[local[x]]
    return out


def _longest_from(preds: list[tuple[tuple[int, int], ...]], src: int) -> list[int]:
    """Longest path from ``src`` to every task (start to start; -1 where unreachable), tasks in
    topological order."""
    dist = [-1] * len(preds)
    dist[src] = 0
    for v in range(src + 1, len(preds)):
        best = -1
        for u, w in preds[v]:
            if dist[u] >= 0 and dist[u] + w > best:
                best = dist[u] + w
        dist[v] = best
    return dist


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
