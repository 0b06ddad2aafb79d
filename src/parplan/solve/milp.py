"""The big-M MILP formulation of a task model, shared by the HiGHS and Gurobi backends.

Continuous start times, binary placement ``x[g,d]``, binary order ``y[a|b]`` for every pair of tasks
that may share a device and are not already ordered by precedence, ``same[g,h]`` (groups g and h on
one device) to switch communication delays and disjunctions on and off, and event-based memory:
the level of a device is checked at every allocation (the start of a lifetime's first task), which is
where a peak can occur. Every big-M is the largest slack the constraint can have inside the horizon
(the warm start's makespan when there is one). The formulation is built once as plain sparse rows
(``MilpFormulation.columns`` / ``rows``) that a backend hands to its solver; it imports no solver.

Ticks are integers, and once the binaries are fixed every constraint is a difference constraint
``v - u >= c`` with integer ``c``; flooring all times keeps them satisfied, so a continuous optimum
always rounds to an integer-tick schedule of the same makespan (``assignment``).
"""

from __future__ import annotations

import itertools
import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from fractions import Fraction

from parplan.errors import InternalError, InvalidInputError
from parplan.solve.backend import BackendOptions
from parplan.solve.bounds import lower_bounds, min_durations
from parplan.solve.model import Assignment, TaskModel, check_assignment, peak_level, retime

#: A linear expression: coefficients by column, and a constant.
Terms = dict[int, float]


@dataclass(frozen=True, slots=True, kw_only=True)
class Column:
    """One variable: ``name`` like ``start[s,j,k]``, bounds, integrality, objective coefficient."""

    name: str
    lower: float
    upper: float
    integer: bool
    cost: float = 0.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Row:
    """One constraint ``lower <= sum coef * column <= upper`` named like ``precedence[a->b]``."""

    name: str
    index: tuple[int, ...]
    value: tuple[float, ...]
    lower: float
    upper: float


class MilpFormulation:
    """The MILP of a ``TaskModel`` as sparse columns and rows (see module docstring).

    Variables: ``start[t]`` (continuous, ticks); ``x[g,d]`` placement of free groups; ``same[g,h]``;
    ``y[a|b]`` = 1 when a runs before b; ``fuse[f|b]`` forward f fused with backward b;
    ``started[k@l]``, ``open[k@l]`` (binary) and ``alive[k@l]`` (continuous) = lifetime k holds memory
    when lifetime l allocates; ``makespan``; ``peak[d]``, ``peak_max`` when memory is optimized.
    """

    def __init__(self, model: TaskModel, options: BackendOptions | None = None) -> None:
        self.m = model
        self.opt = options or BackendOptions()
        if self.opt.objective in ("span", "utilization") or self.opt.max_span or self.opt.max_span_sum:
            raise InvalidInputError(
                f"objective {self.opt.objective}: the MILP backends model makespan, memory and "
                "weighted only; use --backend cpsat for span and utilization"
            )
        if self.opt.objective not in ("makespan", "memory", "weighted"):
            raise InvalidInputError(
                f"objective {self.opt.objective!r}: unknown; use makespan, memory or weighted"
            )
        if any(p.absorbed is not None for p in model.fusable):
            raise InvalidInputError(
                "fused F&B on stages with a split backward (I, W): modelled by --backend cpsat only; "
                "drop --fused or use --backend cpsat"
            )
        self.columns: list[Column] = []
        self.rows: list[Row] = []
        self.bounds = lower_bounds(model)
        self.min_dur = min_durations(model)
        self._reach = self._reachability()
        self._variables()
        self._placement()
        self._same_device()
        self._precedence()
        self._fusion()
        self._no_overlap()
        self._memory()
        self._load_cuts()
        self._critical_path()
        if self.opt.symmetry:
            self._device_symmetry()
        self._contiguous()
        self._objective()

    # ------------------------------------------------------------------ building blocks
    def var(self, name: str, lower: float, upper: float, *, integer: bool = False) -> int:
        """Add a column and return its index."""
        self.columns.append(Column(name=name, lower=lower, upper=upper, integer=integer))
        return len(self.columns) - 1

    def row(
        self,
        name: str,
        terms: Terms,
        const: float = 0.0,
        *,
        lower: float = -math.inf,
        upper: float = math.inf,
    ) -> None:
        """Add ``lower <= terms + const <= upper`` (the constant moves to the bounds)."""
        items = [(c, v) for c, v in terms.items() if v != 0]
        if not items:
            if not (lower - 1e-9 <= const <= upper + 1e-9):
                raise InternalError(f"MILP row {name}: constant {const} outside [{lower}, {upper}]")
            return
        self.rows.append(
            Row(
                name=name,
                index=tuple(c for c, _ in items),
                value=tuple(float(v) for _, v in items),
                lower=lower - const,
                upper=upper - const,
            )
        )

    @staticmethod
    def add(*parts: tuple[Terms, float] | tuple[Terms, float, float]) -> tuple[Terms, float]:
        """Sum of (terms, const[, factor]) expressions."""
        out: Terms = defaultdict(float)
        const = 0.0
        for part in parts:
            terms, c = part[0], part[1]
            f = part[2] if len(part) == 3 else 1.0  # type: ignore[misc]
            for k, v in terms.items():
                out[k] += f * v
            const += f * c
        return dict(out), const

    def on(self, group: int, device: int) -> tuple[Terms, float]:
        """'group is on device' as an expression (a constant for fixed groups)."""
        g = self.m.groups[group]
        if len(g.devices) == 1:
            return {}, float(g.devices[0] == device)
        if device not in g.devices:
            return {}, 0.0
        return {self.x[group, device]: 1.0}, 0.0

    def end(self, task: int) -> tuple[Terms, float]:
        """end[t] = start[t] + sum_d dur[t,d] x[g,d] + sum_pairs (FB - dur[t]) fuse[pair]."""
        t = self.m.tasks[task]
        terms: Terms = {self.start[task]: 1.0}
        const = 0.0
        if len(t.durations) == 1:
            const += t.durations[0][1]
        else:
            for d, dur in t.durations:
                terms[self.x[t.group, d]] = terms.get(self.x[t.group, d], 0.0) + dur
        for key in self.pairs_of.get(task, ()):
            p = self.fusable[key]
            terms[self.fuse[key]] = p.ticks - t.durations[0][1]
        return terms, const

    def same(self, g: int, h: int) -> tuple[Terms, float]:
        """same[g,h] as an expression: 1 for one group, a constant when both are fixed."""
        if g == h:
            return {}, 1.0
        key = (min(g, h), max(g, h))
        if key in self._same:
            return {self._same[key]: 1.0}, 0.0
        G, Hh = self.m.groups[g], self.m.groups[h]
        if not set(G.devices) & set(Hh.devices):
            return {}, 0.0
        if len(G.devices) == 1 and len(Hh.devices) == 1:
            return {}, 1.0
        if len(G.devices) == 1 or len(Hh.devices) == 1:
            fixed, other = (G, Hh) if len(G.devices) == 1 else (Hh, G)
            return self.on(other.index, fixed.devices[0])
        self._same[key] = self.var(f"same[{key[0]},{key[1]}]", 0, 1, integer=True)
        return {self._same[key]: 1.0}, 0.0

    def _reachability(self) -> list[int]:
        """reach[t]: bitset of tasks that cannot start before t ends (arcs, and FIFO chains when
        they are imposed), so pairs they order need no disjunction."""
        m = self.m
        succ: list[set[int]] = [{a.dst for a in m.succs[t]} for t in range(len(m.tasks))]
        self.fifo = self.opt.symmetry and not m.fusable
        if self.fifo:
            for chain in m.chains:
                for a, b in itertools.pairwise(chain):
                    succ[a].add(b)
        order = _topo(len(m.tasks), succ)
        reach = [0] * len(m.tasks)
        for t in reversed(order):
            bits = 0
            for s in succ[t]:
                bits |= (1 << s) | reach[s]
            reach[t] = bits
        self._succ = succ
        return reach

    def before(self, a: int, b: int) -> bool:
        """Whether b cannot start before a ends, whatever the solution."""
        return bool(self._reach[a] >> b & 1)

    # ------------------------------------------------------------------ variables
    def _variables(self) -> None:
        m, opt = self.m, self.opt
        H = opt.max_makespan if opt.max_makespan is not None else m.horizon
        self.H = max(H, self.bounds.best)
        heads, tails = self.bounds.heads, self.bounds.tails
        self.start = [
            self.var(
                f"start[{t.label}]",
                heads[t.index],
                max(heads[t.index], self.H - tails[t.index] - self.min_dur[t.index]),
            )
            for t in m.tasks
        ]
        self.x: dict[tuple[int, int], int] = {}
        for g in m.groups:
            if len(g.devices) > 1:
                for d in g.devices:
                    self.x[g.index, d] = self.var(f"x[{g.index},{d}]", 0, 1, integer=True)
        self.fusable = {(p.forward, p.backward): p for p in m.fusable}
        self.fuse: dict[tuple[int, int], int] = {}
        self.pairs_of: dict[int, list[tuple[int, int]]] = defaultdict(list)
        for key in self.fusable:
            f, b = key
            self.fuse[key] = self.var(f"fuse[{m.tasks[f].label}|{m.tasks[b].label}]", 0, 1, integer=True)
            self.pairs_of[f].append(key)
            self.pairs_of[b].append(key)
        self.makespan = self.var("makespan", self.bounds.best, self.H)
        self._same: dict[tuple[int, int], int] = {}

    def ub_start(self, t: int) -> float:
        return self.columns[self.start[t]].upper

    def ub_end(self, t: int) -> float:
        return self.H - self.bounds.tails[t]

    # ------------------------------------------------------------------ constraint families
    def _placement(self) -> None:
        """placement[g]: sum_d x[g,d] = 1."""
        for g in self.m.groups:
            if len(g.devices) > 1:
                self.row(
                    f"placement[{g.index}]", {self.x[g.index, d]: 1.0 for d in g.devices}, lower=1, upper=1
                )

    def _same_device(self) -> None:
        """same[g,h] = sum_d x[g,d] x[h,d], linearized exactly (only for pairs that use it):
        same >= x[g,d] + x[h,d] - 1 and same <= 1 - x[g,d] + x[h,d] for every device d."""
        m = self.m
        needed: set[tuple[int, int]] = set()
        for a in m.arcs:
            if a.delay:
                needed.add((m.tasks[a.src].group, m.tasks[a.dst].group))
        for ga in range(len(m.groups)):
            if len(m.groups[ga].devices) > 1:
                for gb in range(ga + 1, len(m.groups)):
                    if len(m.groups[gb].devices) > 1:
                        needed.add((ga, gb))
        for g, h in sorted({(min(p), max(p)) for p in needed if p[0] != p[1]}):
            terms, _ = self.same(g, h)
            if (g, h) not in self._same:
                continue
            for d in sorted(set(m.groups[g].devices) | set(m.groups[h].devices)):
                xg, cg = self.on(g, d)
                xh, ch = self.on(h, d)
                lo, c = self.add((terms, 0.0), (xg, cg, -1.0), (xh, ch, -1.0))
                self.row(f"same_lo[{g},{h},{d}]", lo, c, lower=-1)
                hi, c = self.add((terms, 0.0), (xg, cg), (xh, ch, -1.0))
                self.row(f"same_hi[{g},{h},{d}]", hi, c, upper=1)

    def _precedence(self) -> None:
        """precedence[a->b]: start[b] >= end[a] + delay (1 - same[g_a, g_b]); fifo[a->b]:
        start[b] >= end[a] along chains of identical micro-batches (see ``pipeline_model``)."""
        m = self.m
        arcs = [(a.src, a.dst, a.delay, "precedence") for a in m.arcs]
        if self.fifo:
            arcs += [(a, b, 0, "fifo") for chain in m.chains for a, b in itertools.pairwise(chain)]
        for src, dst, delay, family in arcs:
            name = f"{family}[{m.tasks[src].label}->{m.tasks[dst].label}]"
            parts: list[tuple[Terms, float] | tuple[Terms, float, float]] = [
                ({self.start[dst]: 1.0}, 0.0),
                (*self.end(src), -1.0),
            ]
            if delay:
                same = self.same(m.tasks[src].group, m.tasks[dst].group)
                parts += [({}, -float(delay)), (same[0], same[1], float(delay))]
            terms, c = self.add(*parts)
            self.row(name, terms, c, lower=0)

    def _fusion(self) -> None:
        """fuse_once[t]: sum of fuse over t's pairs <= 1; fused[f|b]: fuse => start[f] = start[b]
        (|start[f] - start[b]| <= M (1 - fuse), M the larger start range)."""
        m = self.m
        for t, keys in self.pairs_of.items():
            if len(keys) > 1:
                self.row(f"fuse_once[{m.tasks[t].label}]", {self.fuse[k]: 1.0 for k in keys}, upper=1)
        for (f, b), col in self.fuse.items():
            M = max(self.ub_start(f), self.ub_start(b))
            label = f"{m.tasks[f].label}|{m.tasks[b].label}"
            self.row(f"fused_lo[{label}]", {self.start[f]: 1.0, self.start[b]: -1.0, col: M}, upper=M)
            self.row(f"fused_hi[{label}]", {self.start[b]: 1.0, self.start[f]: -1.0, col: M}, upper=M)

    def _no_overlap(self) -> None:
        """before[a|b], after[a|b] for tasks a < b that may share a device and that no precedence
        orders (y[a|b] = 1: a runs first):
        start[b] >= end[a] - M (1 - y) - M (1 - same) - M fuse[a|b],
        start[a] >= end[b] - M y - M (1 - same) - M fuse[a|b],
        with M = the largest end of one minus the smallest start of the other."""
        m = self.m
        self.y: dict[tuple[int, int], int] = {}
        devs = [frozenset(d for d, _ in t.durations) for t in m.tasks]
        by_dev: dict[int, list[int]] = defaultdict(list)
        for t in m.tasks:
            for d in devs[t.index]:
                by_dev[d].append(t.index)
        pairs: set[tuple[int, int]] = set()
        for tasks in by_dev.values():
            for i, a in enumerate(tasks):
                for b in tasks[i + 1 :]:
                    pairs.add((min(a, b), max(a, b)))
        heads = self.bounds.heads
        for a, b in sorted(pairs):
            if self.before(a, b) or self.before(b, a):
                continue
            label = f"{m.tasks[a].label}|{m.tasks[b].label}"
            y = self.var(f"y[{label}]", 0, 1, integer=True)
            self.y[a, b] = y
            same_t, same_c = self.same(m.tasks[a].group, m.tasks[b].group)
            fuse = {self.fuse[a, b]: 1.0} if (a, b) in self.fuse else {}
            fuse.update({self.fuse[b, a]: 1.0} if (b, a) in self.fuse else {})
            for first, second, lit in ((a, b, 1.0), (b, a, 0.0)):
                M = max(0.0, self.ub_end(first) - heads[second])
                # start[second] - end[first] + M(1 - same) + M fuse + M * (1 - y if lit else y) >= 0
                y_part = ({y: -M}, M) if lit else ({y: M}, 0.0)
                terms, c = self.add(
                    ({self.start[second]: 1.0}, 0.0),
                    (*self.end(first), -1.0),
                    ({}, M),
                    (same_t, same_c, -M),
                    (fuse, 0.0, M),
                    y_part,
                )
                name = "before" if lit else "after"
                self.row(f"{name}[{label}]", terms, c, lower=0)

    def _static(self, device: int) -> tuple[Terms, float]:
        """static[d] = sum_g static_mem[g] x[g,d]."""
        parts = [(*self.on(g.index, device), float(g.static_mem)) for g in self.m.groups if g.static_mem]
        return self.add(*parts) if parts else ({}, 0.0)

    def _memory(self) -> None:
        """memory[l,d]: at the allocation of lifetime l on device d,
        static[d] + demand[l] + sum_k demand[k] alive[k@l] <= capacity[d] + M (1 - x[g_l,d])
        (<= peak[d] when memory is optimized), where alive[k@l] >= started + open + same - 2,
        started[k@l] = 0 => start[first_k] >= start[first_l] + 1 (integer ticks), and
        open[k@l] = 0 => end[last_k] <= start[first_l] (a release at that instant comes first)."""
        m, opt = self.m, self.opt
        self.wants_peak = opt.objective in ("memory", "weighted") or opt.max_memory is not None
        self.peak: list[int] = []
        self.alive: dict[tuple[int, int], tuple[int | None, int | None, int]] = {}
        caps = m.capacity or tuple(None for _ in range(m.num_devices))
        if not m.has_memory:
            if self.wants_peak:
                self.peak = [self.var(f"peak[{d}]", 0, 0) for d in range(m.num_devices)]
            return
        group_devs = [set(g.devices) for g in m.groups]
        life_devs = [group_devs[m.tasks[lt.first].group] for lt in m.lifetimes]
        # upper bound of each device's level: every group and lifetime that may go there
        level_hi = [
            sum(g.static_mem for g in m.groups if d in g.devices)
            + sum(lt.demand for k, lt in enumerate(m.lifetimes) if d in life_devs[k])
            for d in range(m.num_devices)
        ]
        limit = [math.inf if c is None else float(c) for c in caps]
        active = [self.wants_peak or level_hi[d] > limit[d] for d in range(m.num_devices)]
        if self.wants_peak:
            self.peak = [self.var(f"peak[{d}]", 0, min(level_hi[d], limit[d])) for d in range(m.num_devices)]
        for d in range(m.num_devices):
            static_t, static_c = self._static(d)
            if self.wants_peak:
                terms, c = self.add((static_t, static_c), ({self.peak[d]: 1.0}, 0.0, -1.0))
                self.row(f"static_peak[{d}]", terms, c, upper=0)
            if math.isfinite(limit[d]):
                self.row(f"static_fits[{d}]", static_t, static_c, upper=limit[d])
        if not any(active):
            return
        dur_pos = [d >= 1 for d in self.min_dur]
        static_hi = [sum(g.static_mem for g in m.groups if d in g.devices) for d in range(m.num_devices)]
        for li, l in enumerate(m.lifetimes):
            devices = [d for d in life_devs[li] if active[d]]
            if not devices:
                continue
            fl = l.first
            g_l = m.tasks[fl].group
            contrib: list[tuple[Terms, float] | tuple[Terms, float, float]] = [({}, float(l.demand))]
            level_max = l.demand  # the largest level this row can see, on whatever device l is
            for ki, k in enumerate(m.lifetimes):
                if ki == li or not (life_devs[ki] & life_devs[li]):
                    continue
                # started: start[first_k] <= start[first_l]; open: end[last_k] > start[first_l]
                if k.first == fl:
                    started: int | None = None  # same instant
                elif self.before(fl, k.first) and dur_pos[fl]:
                    continue  # k allocates strictly after l
                elif self.before(k.first, fl):
                    started = None
                else:
                    started = -1
                if self.before(k.last, fl):
                    continue  # k released before l allocates
                if (k.last == fl or self.before(fl, k.last)) and dur_pos[k.last]:
                    opened: int | None = None
                else:
                    opened = -1
                label = f"{ki}@{li}"
                same_t, same_c = self.same(m.tasks[k.first].group, g_l)
                if started is not None:
                    started = self.var(f"started[{label}]", 0, 1, integer=True)
                    M = 1 + self.ub_start(fl) - self.bounds.heads[k.first]
                    # start[first_k] - start[first_l] >= 1 - M started
                    self.row(
                        f"started_def[{label}]",
                        {self.start[k.first]: 1.0, self.start[fl]: -1.0, started: M},
                        lower=1,
                    )
                if opened is not None:
                    opened = self.var(f"open[{label}]", 0, 1, integer=True)
                    M = self.ub_end(k.last) - self.bounds.heads[fl]
                    # end[last_k] - start[first_l] <= M open
                    terms, c = self.add(
                        (*self.end(k.last), 1.0), ({self.start[fl]: -1.0}, 0.0), ({opened: -M}, 0.0)
                    )
                    self.row(f"open_def[{label}]", terms, c, upper=0)
                level_max += k.demand
                if started is None and opened is None and not same_t:
                    if same_c:
                        contrib.append(({}, float(k.demand)))
                    continue
                alive = self.var(f"alive[{label}]", 0, 1)
                self.alive[ki, li] = (started, opened, alive)
                # alive - started - open - same >= -2 (constants 1 where the event is certain)
                parts: list[tuple[Terms, float] | tuple[Terms, float, float]] = [({alive: 1.0}, 0.0)]
                parts.append(({started: -1.0}, 0.0) if started is not None else ({}, -1.0))
                parts.append(({opened: -1.0}, 0.0) if opened is not None else ({}, -1.0))
                parts.append((same_t, same_c, -1.0))
                terms, c = self.add(*parts)
                self.row(f"alive_def[{label}]", terms, c, lower=-2)
                contrib.append(({alive: float(k.demand)}, 0.0))
            level_t, level_c = self.add(*contrib)
            for d in devices:
                static_t, static_c = self._static(d)
                on_t, on_c = self.on(g_l, d)
                M = level_max + static_hi[d]
                # level + static[d] - limit <= M (1 - on)
                bound: tuple[Terms, float] = ({self.peak[d]: 1.0}, 0.0) if self.wants_peak else ({}, limit[d])
                terms, c = self.add(
                    (level_t, level_c), (static_t, static_c), (*bound, -1.0), (on_t, on_c, M), ({}, -M)
                )
                self.row(f"memory[{li},{d}]", terms, c, upper=0)

    def _load_cuts(self) -> None:
        """load[d]: makespan >= min_head[d] + work[d] + min_tail[d] with fixed placement, and
        makespan >= sum_t dur[t,d] x[g_t,d] with free placement (fused pairs save their overlap)."""
        if not self.opt.load_cuts:
            return
        m = self.m
        heads, tails = self.bounds.heads, self.bounds.tails
        for d in range(m.num_devices):
            tasks = [t for t in m.tasks if any(dd == d for dd, _ in t.durations)]
            if not tasks:
                continue
            parts: list[tuple[Terms, float] | tuple[Terms, float, float]] = [({self.makespan: 1.0}, 0.0)]
            for t in tasks:
                parts.append((*self.on(t.group, d), -float(t.duration_on(d))))
            for key, p in self.fusable.items():
                if p.device == d:
                    saving = m.tasks[p.forward].duration_on(d) + m.tasks[p.backward].duration_on(d) - p.ticks
                    parts.append(({self.fuse[key]: float(saving)}, 0.0))
            terms, c = self.add(*parts)
            lower = 0.0
            if m.is_fixed:
                lower = min(heads[t.index] for t in tasks) + min(tails[t.index] for t in tasks)
            self.row(f"load[{d}]", terms, c, lower=lower)

    def _critical_path(self) -> None:
        """tail[t]: makespan >= end[t] + tail[t] (the heads are the lower bounds of start[t])."""
        for t in self.m.tasks:
            terms, c = self.add(({self.makespan: 1.0}, 0.0), (*self.end(t.index), -1.0))
            self.row(f"tail[{t.label}]", terms, c, lower=self.bounds.tails[t.index])

    def _device_symmetry(self) -> None:
        """devsym[g,d]: x[g,d] <= sum_{h<g} x[h,d-1] on identical devices."""
        m = self.m
        if not m.interchangeable_devices:
            return
        groups = [g for g in m.groups if len(g.devices) == m.num_devices]
        for k, g in enumerate(groups):
            for d in range(1, m.num_devices):
                terms = {self.x[g.index, d]: 1.0}
                for h in groups[:k]:
                    terms[self.x[h.index, d - 1]] = -1.0
                self.row(f"devsym[{g.index},{d}]", terms, upper=0)

    def _contiguous(self) -> None:
        """contiguous[g]: sum_d d x[next(g),d] >= sum_d d x[g,d] along the chain."""
        chain = self.m.group_chain
        for g, h in itertools.pairwise(chain):
            parts = [(*self.on(h, d), float(d)) for d in self.m.groups[h].devices]
            parts += [(*self.on(g, d), -float(d)) for d in self.m.groups[g].devices]
            terms, c = self.add(*parts)
            self.row(f"contiguous[{g}]", terms, c, lower=0)

    def _objective(self) -> None:
        """minimize makespan | peak_max | den * makespan + num * peak_max (weight num/den)."""
        opt = self.opt
        self.peak_max: int | None = None
        if self.peak:
            hi = max(self.columns[p].upper for p in self.peak)
            if opt.max_memory is not None:
                hi = min(hi, opt.max_memory)
            self.peak_max = self.var("peak_max", 0, max(hi, 0))
            for d, p in enumerate(self.peak):
                self.row(f"peak_max[{d}]", {self.peak_max: 1.0, p: -1.0}, lower=0)
        self.weight = Fraction(opt.memory_weight).limit_denominator(1000)
        if opt.objective == "makespan":
            self.cost = {self.makespan: 1.0}
        elif opt.objective == "memory":
            assert self.peak_max is not None
            self.cost = {self.peak_max: 1.0}
        else:
            assert self.peak_max is not None
            self.cost = {
                self.makespan: float(self.weight.denominator),
                self.peak_max: float(self.weight.numerator),
            }
        for c, v in self.cost.items():
            col = self.columns[c]
            self.columns[c] = Column(
                name=col.name, lower=col.lower, upper=col.upper, integer=col.integer, cost=v
            )

    # ------------------------------------------------------------------ solutions
    def objective_of(self, sol: Assignment) -> int:
        """The objective value of ``sol`` in the model's integer units."""
        ms = sol.makespan(self.m)
        if self.opt.objective == "makespan":
            return ms
        peak = max((peak_level(self.m, sol, d) for d in range(self.m.num_devices)), default=0)
        if self.opt.objective == "memory":
            return peak
        return self.weight.denominator * ms + self.weight.numerator * peak

    def values(self, sol: Assignment) -> list[float]:
        """A full column vector for warm starts: every variable consistent with ``sol``."""
        m = self.m
        v = [0.0] * len(self.columns)
        end = [sol.end(m, t) for t in range(len(m.tasks))]
        for t, col in enumerate(self.start):
            v[col] = float(sol.start[t])
        dev_of_group = {g.index: g.devices[0] for g in m.groups}  # groups without tasks: anywhere
        dev_of_group.update({m.tasks[t].group: sol.device[t] for t in range(len(m.tasks))})
        for (g, d), col in self.x.items():
            v[col] = float(dev_of_group.get(g) == d)
        for (g, h), col in self._same.items():
            v[col] = float(dev_of_group.get(g) == dev_of_group.get(h))
        fused = set(sol.fused)
        for key, col in self.fuse.items():
            v[col] = float(key in fused)
        for (a, b), col in self.y.items():
            v[col] = float(
                end[a] <= sol.start[b] if sol.device[a] == sol.device[b] else sol.start[a] <= sol.start[b]
            )
        for (ki, li), (started, opened, alive) in self.alive.items():
            k, l = m.lifetimes[ki], m.lifetimes[li]
            s_l = sol.start[l.first]
            st = sol.start[k.first] <= s_l
            op = end[k.last] > s_l
            if started is not None:
                v[started] = float(st)
            if opened is not None:
                v[opened] = float(op)
            v[alive] = float(st and op and sol.device[k.first] == sol.device[l.first])
        ms = sol.makespan(m)
        v[self.makespan] = float(max(ms, self.bounds.best))
        if self.peak:
            peaks = [peak_level(m, sol, d) for d in range(m.num_devices)]
            for d, col in enumerate(self.peak):
                v[col] = float(peaks[d])
            assert self.peak_max is not None
            v[self.peak_max] = float(max(peaks))
        return v

    def assignment(self, values: Sequence[float]) -> Assignment:
        """The integer-tick assignment of a solver's column values (floored times, see module
        docstring; re-timed in the solver's device orders if rounding noise broke a rule)."""
        m = self.m
        device = []
        for t in m.tasks:
            g = m.groups[t.group]
            if len(g.devices) == 1:
                device.append(g.devices[0])
            else:
                device.append(max(g.devices, key=lambda d: values[self.x[g.index, d]]))
        fused = tuple(k for k, col in self.fuse.items() if values[col] > 0.5)
        starts = tuple(_floor(values[c]) for c in self.start)
        sol = Assignment(device=tuple(device), start=starts, fused=fused)
        if not check_assignment(m, sol):
            return sol
        hidden = {b for _, b in fused}
        orders: list[list[int]] = [[] for _ in range(m.num_devices)]
        for i in sorted(range(len(m.tasks)), key=lambda i: (values[self.start[i]], i)):
            if i not in hidden:
                orders[device[i]].append(i)
        again = retime(m, orders, device, fused)
        if again is None or check_assignment(m, again):
            problems = check_assignment(m, sol)
            raise InternalError(f"MILP answer of {m.name or 'model'} breaks the model: {problems[:3]}")
        return again


def _floor(value: float) -> int:
    """Floor, forgiving solver tolerances (4.9999997 is 5)."""
    r = round(value)
    return int(r) if abs(value - r) <= 1e-4 else math.floor(value)


def _topo(n: int, succ: Sequence[Iterable[int]]) -> list[int]:
    indeg = [0] * n
    for t in range(n):
        for s in succ[t]:
            indeg[s] += 1
    stack = [t for t in range(n) if indeg[t] == 0]
    order: list[int] = []
    while stack:
        t = stack.pop()
        order.append(t)
        for s in succ[t]:
            indeg[s] -= 1
            if indeg[s] == 0:
                stack.append(s)
    if len(order) != n:
        raise InvalidInputError("task model: the precedence arcs and micro-batch chains form a cycle")
    return order


class MilpBackendBase:
    """What the MILP backends share: the formulation built once, and the first warm-start hint."""

    name = "milp"

    def __init__(self, model: TaskModel, options: BackendOptions | None = None) -> None:
        self.m = model
        self.opt = options or BackendOptions()
        self.form = MilpFormulation(model, self.opt)
        self._hint: Assignment | None = None

    def add_hint(self, sol: Assignment) -> None:
        """Warm start from ``sol`` (the first hint wins, as in the CP-SAT backend)."""
        if self._hint is None:
            self._hint = sol
