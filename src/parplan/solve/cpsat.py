"""The OR-Tools CP-SAT backend: interval variables, no-overlap, cumulative memory, optional placement.

One private method per constraint family, each with its formula; variables are named like
``start[s,j,k]`` (stage s, micro-batch j, kind k). This module imports OR-Tools at module level and
is itself imported only when the backend is used.
"""

from __future__ import annotations

import itertools
import math
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from fractions import Fraction

from ortools.sat.python import cp_model

from parplan.errors import InvalidInputError
from parplan.solve.backend import OBJECTIVES, BackendOptions, BackendResult, Progress
from parplan.solve.bounds import _max_fusion_saving, lower_bounds
from parplan.solve.model import Assignment, TaskModel, canonical, fifo_chains

#: Above this many tasks the memory precedences are left out: with 3000 tasks CP-SAT's root
#: propagation of them against the cumulative ran 17 s past a 5 s time limit (no better bound).
MEMFIFO_MAX_TASKS = 2000


#: Above this many tasks CP-SAT's own time limit is set to a share of the budget (see ``solve``).
LARGE_MODEL_TASKS = 5_000
LARGE_MODEL_TIME_SHARE = 0.9


class _Callback(cp_model.CpSolverSolutionCallback):
    """Reports each new incumbent with the bound and the gap, in real units."""

    def __init__(self, report: Callable[[Progress], None], scale: float, t0: float) -> None:
        super().__init__()
        self._report = report
        self._scale = scale
        self._t0 = t0

    def on_solution_callback(self) -> None:
        obj = self.objective_value
        bound = self.best_objective_bound
        gap = (obj - bound) / obj if obj > 0 else 0.0
        self._report(
            Progress(
                incumbent=obj * self._scale,
                bound=bound * self._scale,
                gap=max(0.0, gap),
                elapsed_s=time.perf_counter() - self._t0,
            )
        )


class CpSatBackend:
    """CP-SAT model of a ``TaskModel``.

    Decision variables: ``start[t]``, ``end[t]`` per task; ``x[g,d]`` group g placed on device d
    (only for groups with several possible devices); ``y[f,b]`` forward f fused with backward b;
    ``makespan``; ``peak[d]`` when memory is an objective.
    """

    name = "cpsat"

    def __init__(self, model: TaskModel, options: BackendOptions | None = None) -> None:
        self.m = model
        self.opt = options or BackendOptions()
        if self.opt.objective not in OBJECTIVES:
            raise InvalidInputError(
                f"objective {self.opt.objective!r}: unknown; use one of {', '.join(OBJECTIVES)}"
            )
        if self._wants_spans() and not model.is_fixed:
            raise InvalidInputError(
                f"objective {self.opt.objective}: needs a placed problem (a device's span is only "
                "known once its stages are); plan the placement with --objective makespan first"
            )
        self.cp = cp_model.CpModel()
        self.bounds = lower_bounds(model)
        self._hinted: set[int] = set()
        self._variables()
        self._placement()
        self._durations()
        self._precedence()
        self._fusion()  # adds the fused FB intervals, so it must come before no_overlap reads them
        self._no_overlap()
        self._memory()
        self._load_cuts()
        self._critical_path()
        if self.opt.symmetry:
            self._microbatch_symmetry()
            self._memory_precedence()
            self._device_symmetry()
        self._contiguous()
        self._spans()
        self._objective()

    # ------------------------------------------------------------------ variables
    def _variables(self) -> None:
        m, cp = self.m, self.cp
        H = self.opt.max_makespan if self.opt.max_makespan is not None else m.horizon
        H = max(H, self.bounds.best)
        self.H = H
        self.start: list[cp_model.IntVar] = []
        self.end: list[cp_model.IntVar] = []
        for t in m.tasks:
            lo = self.bounds.heads[t.index]
            hi = max(lo, H - self.bounds.tails[t.index])
            self.start.append(cp.new_int_var(lo, hi, f"start[{t.label}]"))
            self.end.append(cp.new_int_var(lo, hi, f"end[{t.label}]"))
        self.x: dict[tuple[int, int], cp_model.IntVar] = {}
        for g in m.groups:
            if len(g.devices) > 1:
                for d in g.devices:
                    self.x[g.index, d] = cp.new_bool_var(f"x[{g.index},{d}]")
        self.y: dict[tuple[int, int], cp_model.IntVar] = {}
        for p in m.fusable:
            self.y[p.forward, p.backward] = cp.new_bool_var(
                f"y[{m.tasks[p.forward].label}|{m.tasks[p.backward].label}]"
            )
        low = max(self.bounds.best, self.opt.min_makespan or 0)
        self.makespan = cp.new_int_var(min(low, H), H, "makespan")

    def on(self, group: int, device: int) -> cp_model.IntVar | int:
        """Literal 'group is on device' (the constant 1 or 0 for fixed groups)."""
        g = self.m.groups[group]
        if len(g.devices) == 1:
            return 1 if g.devices[0] == device else 0
        return self.x[group, device]

    # ------------------------------------------------------------------ constraint families
    def _placement(self) -> None:
        """placement[g]: sum_d x[g,d] = 1 (every group on exactly one allowed device)."""
        for g in self.m.groups:
            if len(g.devices) > 1:
                self.cp.add_exactly_one(self.x[g.index, d] for d in g.devices).with_name(
                    f"placement[{g.index}]"
                )

    def _durations(self) -> None:
        """duration[t]: end[t] = start[t] + sum_d dur[t,d] x[g,d] + sum_pairs (FB - dur) y;
        and one interval per mode: on[t,d] (optional on x[g,d] and on 'not fused'). A W that a pair
        may absorb: end[W] = start[W] + dur alone[I] (zero ticks when its I is fused), its interval
        present iff alone[I]."""
        m, cp = self.m, self.cp
        pairs_of: dict[int, list[tuple[int, int]]] = defaultdict(list)
        absorber: dict[int, int] = {}  # absorbed W -> its I
        for p in m.fusable:
            pairs_of[p.forward].append((p.forward, p.backward))
            pairs_of[p.backward].append((p.forward, p.backward))
            if p.absorbed is not None:
                absorber[p.absorbed] = p.backward
        self.pairs_of = pairs_of
        self.alone: dict[int, cp_model.IntVar] = {}
        self.w_alone: dict[int, cp_model.IntVar] = {}  # absorbable W -> alone[I] (not its own var)
        self.intervals: dict[int, list[cp_model.IntervalVar]] = defaultdict(list)
        for i in pairs_of:
            t = m.tasks[i]
            alone = cp.new_bool_var(f"alone[{t.label}]")
            cp.add(alone + sum(self.y[p] for p in pairs_of[i]) == 1).with_name(f"fuse_once[{t.label}]")
            self.alone[i] = alone
        for w, i in absorber.items():
            self.w_alone[w] = self.alone[i]
        for t in m.tasks:
            i = t.index
            if i in self.alone or i in self.w_alone:
                # fusion only exists with fixed placement: one device
                d, dur = t.durations[0]
                alone = self.alone[i] if i in self.alone else self.w_alone[i]
                iv = cp.new_optional_fixed_size_interval_var(self.start[i], dur, alone, f"on[{t.label},{d}]")
                self.intervals[d].append(iv)
                if i in self.w_alone:
                    cp.add(self.end[i] == self.start[i] + dur * alone).with_name(f"duration[{t.label}]")
                    continue
                ticks = {p: m.pair_of[p].ticks for p in pairs_of[i]}
                cp.add(
                    self.end[i]
                    == self.start[i] + dur * alone + sum(ticks[p] * self.y[p] for p in pairs_of[i])
                ).with_name(f"duration[{t.label}]")
                continue
            if len(t.durations) == 1:
                d, dur = t.durations[0]
                cp.add(self.end[i] == self.start[i] + dur).with_name(f"duration[{t.label}]")
                iv = cp.new_fixed_size_interval_var(self.start[i], dur, f"on[{t.label},{d}]")
                self.intervals[d].append(iv)
                continue
            cp.add(
                self.end[i] == self.start[i] + sum(dur * self.x[t.group, d] for d, dur in t.durations)
            ).with_name(f"duration[{t.label}]")
            for d, dur in t.durations:
                iv = cp.new_optional_fixed_size_interval_var(
                    self.start[i], dur, self.x[t.group, d], f"on[{t.label},{d}]"
                )
                self.intervals[d].append(iv)

    def _same_device(self, g: int, h: int) -> cp_model.IntVar | int:
        """same[g,h] = sum_d x[g,d] x[h,d] (linearized with one both[g,h,d] per shared device)."""
        if g == h:
            return 1
        key = (min(g, h), max(g, h))
        if key in self._same:
            return self._same[key]
        G, Hh = self.m.groups[g], self.m.groups[h]
        shared = sorted(set(G.devices) & set(Hh.devices))
        if not shared:
            lit: cp_model.IntVar | int = 0
        elif len(G.devices) == 1 or len(Hh.devices) == 1:
            fixed, other = (G, Hh) if len(G.devices) == 1 else (Hh, G)
            lit = (
                self.on(other.index, fixed.devices[0])
                if len(other.devices) > 1
                else int(G.devices == Hh.devices)
            )
        else:
            lit = self.cp.new_bool_var(f"same[{key[0]},{key[1]}]")
            both = []
            for d in shared:
                b = self.cp.new_bool_var(f"both[{key[0]},{key[1]},{d}]")
                self.cp.add_multiplication_equality(b, [self.x[g, d], self.x[h, d]])
                both.append(b)
            self.cp.add(lit == sum(both))
        self._same[key] = lit
        return lit

    def _precedence(self) -> None:
        """precedence[a->b]: start[b] >= end[a] + delay (1 - same[g_a, g_b])."""
        m, cp = self.m, self.cp
        self._same: dict[tuple[int, int], cp_model.IntVar | int] = {}
        for a in m.arcs:
            src, dst = m.tasks[a.src], m.tasks[a.dst]
            name = f"precedence[{src.label}->{dst.label}]"
            if a.delay == 0:
                cp.add(self.start[a.dst] >= self.end[a.src]).with_name(name)
                continue
            same = self._same_device(src.group, dst.group)
            if isinstance(same, int):
                cp.add(self.start[a.dst] >= self.end[a.src] + a.delay * (1 - same)).with_name(name)
            else:
                cp.add(self.start[a.dst] >= self.end[a.src] + a.delay - a.delay * same).with_name(name)

    def _no_overlap(self) -> None:
        """no_overlap[d]: the intervals on device d (plain and fused) never overlap."""
        for d in range(self.m.num_devices):
            if len(self.intervals[d]) > 1:
                self.cp.add_no_overlap(self.intervals[d]).with_name(f"no_overlap[{d}]")

    def _static(self, device: int) -> cp_model.LinearExpr | int:
        """static[d] = sum_g static_mem[g] x[g,d]."""
        return sum(g.static_mem * self.on(g.index, device) for g in self.m.groups if g.static_mem)

    def _memory(self) -> None:
        """memory[d]: cumulative over lifetimes [start[first], end[last]) with their demands
        <= capacity[d] - static[d] (or <= peak[d] - static[d] when memory is optimized)."""
        m, cp = self.m, self.cp
        wants_peak = self.opt.objective in ("memory", "weighted") or self.opt.max_memory is not None
        self.peak: list[cp_model.IntVar] = []
        self.life: list[tuple[cp_model.IntVar, int, int]] = []  # (size var, first task, last task)
        by_dev: dict[int, list[tuple[cp_model.IntervalVar, int]]] = defaultdict(list)
        for k, lt in enumerate(m.lifetimes):
            f, last = m.tasks[lt.first], m.tasks[lt.last]
            size = cp.new_int_var(0, self.H, f"life[{f.label}->{last.label}]")
            self.life.append((size, lt.first, lt.last))
            g = m.groups[f.group]
            for d in g.devices:
                lit = self.on(g.index, d)
                name = f"alive[{f.label}->{last.label},{d}]#{k}"
                if isinstance(lit, int):
                    iv = cp.new_interval_var(self.start[lt.first], size, self.end[lt.last], name)
                else:
                    iv = cp.new_optional_interval_var(
                        self.start[lt.first], size, self.end[lt.last], lit, name
                    )
                by_dev[d].append((iv, lt.demand))
        caps = m.capacity or tuple(None for _ in range(m.num_devices))
        self._peak_hi = 0
        for d in range(m.num_devices):
            items = by_dev.get(d, [])
            static = self._static(d)
            hi_items = sum(q for _, q in items)
            # a cumulative's capacity must be affine: the static memory of free groups enters as
            # optional intervals over the whole horizon, present iff x[g,d]; fixed groups' is a constant
            fixed_static = m.fixed_static(d)
            for g in m.groups:
                if g.static_mem and len(g.devices) > 1 and d in g.devices:
                    iv = cp.new_optional_fixed_size_interval_var(
                        0, self.H, self.x[g.index, d], f"static[{g.index},{d}]"
                    )
                    items = [*items, (iv, g.static_mem)]
            if wants_peak:
                hi = sum(g.static_mem for g in m.groups if d in g.devices) + hi_items
                cap_d = caps[d]
                if cap_d is not None:
                    hi = min(hi, cap_d)
                peak = cp.new_int_var(0, max(hi, 0), f"peak[{d}]")
                self._peak_hi = max(self._peak_hi, hi)
                self.peak.append(peak)
                cp.add(peak >= static).with_name(f"static_fits[{d}]")
                if items:
                    cp.add_cumulative(
                        [iv for iv, _ in items], [q for _, q in items], peak - fixed_static
                    ).with_name(f"memory[{d}]")
                continue
            cap = caps[d]
            if cap is None:
                continue
            cp.add(static <= cap).with_name(f"static_fits[{d}]")
            if not items:
                continue
            if m.is_fixed and fixed_static + sum(q for _, q in items) <= cap:
                continue  # even all activations at once fit: the cumulative would be redundant
            cp.add_cumulative([iv for iv, _ in items], [q for _, q in items], cap - fixed_static).with_name(
                f"memory[{d}]"
            )

    def _fusion(self) -> None:
        """fused[f,b]: y[f,b] => start[f] = start[b] (and start[W] = start[f] + FB for an absorbed
        W); one FB interval on the device, present iff y."""
        m, cp = self.m, self.cp
        for p in m.fusable:
            y = self.y[p.forward, p.backward]
            cp.add(self.start[p.forward] == self.start[p.backward]).only_enforce_if(y)
            if p.absorbed is not None:
                cp.add(self.start[p.absorbed] == self.start[p.forward] + p.ticks).only_enforce_if(y)
            name = f"fused[{m.tasks[p.forward].label}|{m.tasks[p.backward].label}]"
            self.intervals[p.device].append(
                cp.new_optional_fixed_size_interval_var(self.start[p.forward], p.ticks, y, name)
            )

    def _load_cuts(self) -> None:
        """load[d]: makespan >= min_head[d] + sum of durations on d + min_tail[d] (redundant, helps
        the bound: the solver otherwise proves it only by branching)."""
        if not self.opt.load_cuts:
            return
        m, cp = self.m, self.cp
        heads, tails = self.bounds.heads, self.bounds.tails
        for d in range(m.num_devices):
            tasks = [t for t in m.tasks if any(dd == d for dd, _ in t.durations)]
            if not tasks:
                continue
            head = min(heads[t.index] for t in tasks)
            tail = min(tails[t.index] for t in tasks)
            work: list[cp_model.LinearExpr | int] = []
            for t in tasks:
                dur = t.duration_on(d)
                if t.index in self.alone:
                    work.append(dur * self.alone[t.index])
                elif t.index in self.w_alone:
                    work.append(dur * self.w_alone[t.index])
                elif len(t.durations) == 1:
                    work.append(dur)
                else:
                    work.append(dur * self.x[t.group, d])
            work += [p.ticks * self.y[p.forward, p.backward] for p in m.fusable if p.device == d]
            if m.is_fixed:
                cp.add(self.makespan >= head + sum(work) + tail).with_name(f"load[{d}]")
            else:
                cp.add(self.makespan >= sum(work)).with_name(f"load[{d}]")

    def _critical_path(self) -> None:
        """tail[t]: makespan >= end[t] + tail[t] (tail = shortest possible rest of the path after t);
        the heads are the lower bounds of start[t]."""
        for t in self.m.tasks:
            self.cp.add(self.makespan >= self.end[t.index] + self.bounds.tails[t.index])

    def _microbatch_symmetry(self) -> None:
        """fifo[c,k]: start[c_k+1] >= end[c_k] along every chain of identical micro-batches (valid
        by relabeling, see ``pipeline_model``; with fused pairs only along ``fifo_chains``)."""
        for c, chain in enumerate(fifo_chains(self.m)):
            for a, b in itertools.pairwise(chain):
                self.cp.add(self.start[b] >= self.end[a]).with_name(f"fifo[{c},{a}]")

    def _memory_precedence(self) -> None:
        """memfifo[d,g,k]: memory limits as precedences between FIFO forwards F_k and the passes R_k
        freeing their activations, with C = (capacity - static) // act activations fitting on d.

        Valid with the FIFO chains (releases of a stage come in order). Per stage g on d:
        start[F_(k+C)] >= end[R_k] (when F_(k+C) starts, k+C+1 activations of g were allocated, the
        freed ones are a prefix, at most C may live). Two stages a -> b of one route on d (V shape):
        when F_b(k+x) starts, a and b each allocated k+x+1, and a frees after b, so
        start[F_b(k + C//2)] >= end[R_b(k)] and start[F_b(k + C)] >= end[R_a(k)].
        """
        m = self.m
        if not m.is_fixed or not m.capacity or len(m.tasks) > MEMFIFO_MAX_TASKS:
            return
        chain_of: dict[frozenset[int], tuple[int, ...]] = {frozenset(c): c for c in fifo_chains(m)}
        for d in range(m.num_devices):
            cap = m.capacity[d]
            groups = [g.index for g in m.groups if g.devices == (d,)]
            if cap is None or not groups:
                continue
            room = cap - m.fixed_static(d)
            fifo: dict[int, tuple[tuple[int, ...], tuple[int, ...], int]] = {}
            for g in groups:
                lts = [lt for lt in m.lifetimes if m.tasks[lt.first].group == g]
                firsts = [lt.first for lt in lts]
                if not lts or len(set(firsts)) != len(firsts) or len({lt.demand for lt in lts}) != 1:
                    continue
                fwd = chain_of.get(frozenset(firsts))
                rel = chain_of.get(frozenset(lt.last for lt in lts))
                last_of = {lt.first: lt.last for lt in lts}
                if fwd is None or rel is None or [last_of[f] for f in fwd] != list(rel):
                    continue
                fifo[g] = (fwd, rel, lts[0].demand)
                fit = room // lts[0].demand
                for k in range(max(0, len(fwd) - fit)):
                    self.cp.add(self.start[fwd[k + fit]] >= self.end[rel[k]]).with_name(
                        f"memfifo[{d},{g},{k}]"
                    )
            if len(groups) == 2 and len(fifo) == 2:
                self._memory_precedence_pair(d, room, fifo[groups[0]], fifo[groups[1]])

    def _memory_precedence_pair(
        self,
        device: int,
        room: int,
        first: tuple[tuple[int, ...], tuple[int, ...], int],
        second: tuple[tuple[int, ...], tuple[int, ...], int],
    ) -> None:
        """The V-shape cuts of ``_memory_precedence`` for the two stages of ``device``."""
        m = self.m
        (fa, ra, qa), (fb, rb, qb) = first, second
        if qa != qb or len(fa) != len(fb):
            return
        if [m.tasks[t].key[2] for t in fa] != [m.tasks[t].key[2] for t in fb]:
            return  # not the same micro-batches in the same order
        if self._reaches(fb[0], fa[0]):
            (fa, ra), (fb, rb) = (fb, rb), (fa, ra)
        if not self._reaches(fa[0], fb[0]) or not self._reaches(rb[0], ra[0]):
            return  # a must feed b forward, and b's release must come before a's
        fit = room // qa
        for x, chain in ((fit // 2, rb), (fit, ra)):
            for k in range(max(0, len(fb) - x)):
                self.cp.add(self.start[fb[k + x]] >= self.end[chain[k]]).with_name(
                    f"memfifo2[{device},{k},{x}]"
                )

    def _reaches(self, src: int, dst: int) -> bool:
        """Whether a path of arcs leads from task ``src`` to task ``dst``."""
        seen, stack = {src}, [src]
        while stack:
            t = stack.pop()
            if t == dst:
                return True
            for a in self.m.succs[t]:
                if a.dst not in seen:
                    seen.add(a.dst)
                    stack.append(a.dst)
        return False

    def _device_symmetry(self) -> None:
        """devsym[g,d]: x[g,d] <= sum_{h<g} x[h,d-1] on identical devices (a device is used only after
        the previous one: number devices by the first group they receive)."""
        m = self.m
        if not m.interchangeable_devices:
            return
        groups = [g for g in m.groups if len(g.devices) == m.num_devices]
        for k, g in enumerate(groups):
            for d in range(1, m.num_devices):
                earlier = [self.x[h.index, d - 1] for h in groups[:k]]
                self.cp.add(self.x[g.index, d] <= sum(earlier)).with_name(f"devsym[{g.index},{d}]")

    def _contiguous(self) -> None:
        """contiguous[g]: dev[next(g)] >= dev[g] along the chain, dev[g] = sum_d d x[g,d]."""
        chain = self.m.group_chain
        for g, h in itertools.pairwise(chain):
            dev_g = sum(d * self.on(g, d) for d in self.m.groups[g].devices)
            dev_h = sum(d * self.on(h, d) for d in self.m.groups[h].devices)
            self.cp.add(dev_h >= dev_g).with_name(f"contiguous[{g}]")

    def _wants_spans(self) -> bool:
        return (
            self.opt.objective in ("span", "utilization")
            or self.opt.max_span is not None
            or self.opt.max_span_sum is not None
        )

    def _spans(self) -> None:
        """span[d] = max_{t on d} end[t] - min_{t on d} start[t] (placed problems only);
        span_max >= span[d]; span_sum = sum_d span[d] (utilization = busy / span, busy fixed)."""
        self.span_max: cp_model.IntVar | None = None
        self.span_sum: cp_model.IntVar | None = None
        self.first: dict[int, cp_model.IntVar] = {}
        self.last: dict[int, cp_model.IntVar] = {}
        if not self._wants_spans():
            return
        m, cp = self.m, self.cp
        by_dev: dict[int, list[int]] = defaultdict(list)
        for t in m.tasks:
            by_dev[t.durations[0][0]].append(t.index)
        spans = []
        for d, tasks in sorted(by_dev.items()):
            first = cp.new_int_var(0, self.H, f"first[{d}]")
            last = cp.new_int_var(0, self.H, f"last[{d}]")
            cp.add_min_equality(first, [self.start[t] for t in tasks])
            cp.add_max_equality(last, [self.end[t] for t in tasks])
            busy = sum(m.tasks[t].durations[0][1] for t in tasks) - _max_fusion_saving(m, tasks)
            cp.add(last - first >= busy).with_name(f"span_load[{d}]")
            self.first[d], self.last[d] = first, last
            spans.append(last - first)
        self.span_max = cp.new_int_var(0, self.H, "span_max")
        for d, expr in zip(sorted(by_dev), spans):
            cp.add(self.span_max >= expr).with_name(f"span[{d}]")
        self.span_sum = cp.new_int_var(0, self.H * max(1, len(spans)), "span_sum")
        cp.add(self.span_sum == sum(spans)).with_name("span_sum")
        if self.opt.max_span is not None:
            cp.add(self.span_max <= self.opt.max_span)
        if self.opt.max_span_sum is not None:
            cp.add(self.span_sum <= self.opt.max_span_sum)

    def _objective(self) -> None:
        """minimize makespan | max_d peak[d] | makespan + w * max_d peak[d] | span_max | span_sum;
        optional caps on each."""
        cp, opt = self.cp, self.opt
        if opt.max_makespan is not None:
            cp.add(self.makespan <= opt.max_makespan)
        peak_max = None
        if self.peak:
            peak_max = cp.new_int_var(0, self._peak_hi, "peak_max")
            cp.add_max_equality(peak_max, self.peak)
            if opt.max_memory is not None:
                cp.add(peak_max <= opt.max_memory)
        self.peak_max = peak_max
        if opt.objective == "makespan":
            cp.minimize(self.makespan)
        elif opt.objective == "span":
            assert self.span_max is not None
            cp.minimize(self.span_max)
        elif opt.objective == "utilization":
            assert self.span_sum is not None
            cp.minimize(self.span_sum)
        elif opt.objective == "memory":
            assert peak_max is not None
            cp.minimize(peak_max)
        else:
            assert peak_max is not None
            w = Fraction(opt.memory_weight).limit_denominator(1000)
            cp.minimize(w.denominator * self.makespan + w.numerator * peak_max)

    # ------------------------------------------------------------------ hints and solving
    def add_hint(self, sol: Assignment) -> None:
        """Warm start from ``sol`` (each variable hinted at most once: repeats make CP-SAT reject the
        model as MODEL_INVALID, so a second call is ignored)."""
        if self._hinted:
            return
        m, cp = self.m, self.cp
        if self.opt.symmetry:
            sol = canonical(m, sol)
        fused = set(sol.fused)
        ends = sol.ends(m)
        for t in m.tasks:
            cp.add_hint(self.start[t.index], sol.start[t.index])
            cp.add_hint(self.end[t.index], ends[t.index])
            if t.index in self.alone:
                cp.add_hint(self.alone[t.index], not any(t.index in p for p in fused))
            self._hinted.add(t.index)
        for size, first, last in self.life:
            cp.add_hint(size, max(0, ends[last] - sol.start[first]))
        for (g, d), var in self.x.items():
            dev = sol.device[m.tasks_of_group[g][0]] if m.tasks_of_group[g] else -1
            cp.add_hint(var, dev == d)
        for key, var in self.y.items():
            cp.add_hint(var, key in fused)
        cp.add_hint(self.makespan, max(ends, default=0))
        if self.span_max is not None and self.span_sum is not None:
            spans = sol.spans(m)
            for d in self.first:
                on_d = [t for t in range(len(m.tasks)) if sol.device[t] == d]
                cp.add_hint(self.first[d], min(sol.start[t] for t in on_d))
                cp.add_hint(self.last[d], max(ends[t] for t in on_d))
            cp.add_hint(self.span_max, max(spans, default=0))
            cp.add_hint(self.span_sum, sum(spans[d] for d in self.first))

    def solve(
        self,
        *,
        time_limit_s: float,
        workers: int = 2,
        deterministic: bool = False,
        progress: Callable[[Progress], None] | None = None,
    ) -> BackendResult:
        """Run CP-SAT; statuses map to optimal / feasible / infeasible / unknown."""
        solver = cp_model.CpSolver()
        p = solver.parameters
        p.max_time_in_seconds = float(time_limit_s)
        p.num_workers = 1 if deterministic else max(1, int(workers))
        p.random_seed = 0
        # presolve probing expands the no-overlaps into hundreds of thousands of clauses: seconds
        # on 500-task pipelines for no better bound in our measurements (bench/bench_planner.py)
        p.cp_model_probing_level = 0
        if deterministic:
            p.interleave_search = False
        t0 = time.perf_counter()
        scale = self.m.tick if self.opt.objective in ("makespan", "span", "utilization") else 1.0
        if self.opt.objective == "memory":
            scale = self.m.mem_quantum
        cb = _Callback(progress, scale, t0) if progress is not None else None
        # CP-SAT's own limit is checked between search steps, which take seconds on models of
        # tens of thousands of tasks (measured: 56.6 s for a 44.7 s limit at 24,576 tasks): start
        # it earlier on large models and stop it from a timer at the limit
        if len(self.m.tasks) > LARGE_MODEL_TASKS:
            p.max_time_in_seconds = float(time_limit_s) * LARGE_MODEL_TIME_SHARE
            # presolve (20 s) and the LP worker's first step (37 s) ignore the limit at 24,576
            # tasks and bring nothing there: the LNS workers do the improving
            p.cp_model_presolve = False
            p.linearization_level = 0
        watchdog = threading.Timer(float(time_limit_s), solver.stop_search)
        watchdog.daemon = True
        watchdog.start()
        try:
            status = solver.solve(self.cp, cb)
        finally:
            watchdog.cancel()
        elapsed = time.perf_counter() - t0
        names = {
            cp_model.OPTIMAL: "optimal",
            cp_model.FEASIBLE: "feasible",
            cp_model.INFEASIBLE: "infeasible",
            cp_model.MODEL_INVALID: "invalid",
        }
        name = names.get(status, "unknown")
        if name == "invalid":
            from parplan.errors import InternalError

            raise InternalError(f"CP-SAT rejected the model: {self.cp.validate()}")
        if name not in ("optimal", "feasible"):
            return BackendResult(status=name, assignment=None, objective=None, bound=None, time_s=elapsed)
        m = self.m
        device = []
        for t in m.tasks:
            g = m.groups[t.group]
            device.append(
                g.devices[0]
                if len(g.devices) == 1
                else next(d for d in g.devices if solver.value(self.x[g.index, d]))
            )
        fused = tuple(k for k, v in self.y.items() if solver.value(v))
        sol = Assignment(
            device=tuple(device), start=tuple(int(solver.value(s)) for s in self.start), fused=fused
        )
        return BackendResult(
            status=name,
            assignment=sol,
            objective=round(solver.objective_value),
            bound=math.ceil(solver.best_objective_bound - 1e-6),
            time_s=elapsed,
        )


# ---------------------------------------------------------------------------- one-device relaxation


def _lags_from(model: TaskModel, src: int, device_of: list[int]) -> dict[int, int]:
    """Longest path from the end of ``src`` to the start of each task on its device that is reached
    without passing another task of that device (paths through them are implied by chaining)."""
    device = device_of[src]
    order = model.topo_order
    pos = {t: i for i, t in enumerate(order)}
    ready_at: dict[int, int] = {src: 0}
    out: dict[int, int] = {}
    for t in order[pos[src] :]:
        if t not in ready_at:
            continue
        if t != src and device_of[t] == device:
            out[t] = ready_at[t]
            continue
        end = ready_at[t] if t == src else ready_at[t] + model.tasks[t].durations[0][1]
        for a in model.succs[t]:
            at = end + (a.delay if device_of[t] != device_of[a.dst] else 0)
            if ready_at.get(a.dst, -1) < at:
                ready_at[a.dst] = at
    return out


def device_relaxation_bound(
    model: TaskModel, device: int, *, time_limit_s: float, workers: int = 2, deterministic: bool = False
) -> int:
    """A makespan lower bound (ticks) from the one-device relaxation of a fixed-placement model.

    Only ``device``'s tasks are scheduled: release times (heads), delivery times (tails), start-to-
    start lags between its tasks (longest paths through the other devices), its memory limit and
    the FIFO chains. Every schedule of the full model restricted to this device is feasible here, so
    the relaxation's proven bound bounds the full makespan. The one-machine relaxation is classic
    for job shops; on memory-limited pipelines it closes gaps the full model leaves open (p=8
    bidirectional, ZB memory: 67 -> 69 = the best schedule found).
    """
    if not model.is_fixed or model.fusable:
        return 0
    bounds = lower_bounds(model)
    device_of = [t.durations[0][0] for t in model.tasks]
    mine = [t.index for t in model.tasks if device_of[t.index] == device]
    if not mine:
        return 0
    cp = cp_model.CpModel()
    H = model.horizon
    dur = {t: model.tasks[t].durations[0][1] for t in mine}
    start = {t: cp.new_int_var(bounds.heads[t], H, f"start[{model.tasks[t].label}]") for t in mine}
    makespan = cp.new_int_var(min(bounds.best, H), H, "makespan")
    cp.add_no_overlap(cp.new_fixed_size_interval_var(start[t], dur[t], f"on[{t}]") for t in mine)
    for t in mine:
        cp.add(makespan >= start[t] + dur[t] + bounds.tails[t])
        for v, lag in _lags_from(model, t, device_of).items():
            cp.add(start[v] >= start[t] + dur[t] + lag)
    cap = model.capacity[device] if model.capacity else None
    lts = [lt for lt in model.lifetimes if device_of[lt.first] == device]
    if cap is not None and lts:
        alive = [
            cp.new_interval_var(
                start[lt.first], cp.new_int_var(0, H, ""), start[lt.last] + dur[lt.last], f"alive[{k}]"
            )
            for k, lt in enumerate(lts)
        ]
        cp.add_cumulative(alive, [lt.demand for lt in lts], cap - model.fixed_static(device))
    for chain in model.chains:
        if all(t in start for t in chain):
            for a, b in itertools.pairwise(chain):
                cp.add(start[b] >= start[a] + dur[a])
    cp.minimize(makespan)
    solver = cp_model.CpSolver()
    solver.parameters.max_time_in_seconds = float(time_limit_s)
    solver.parameters.num_workers = 1 if deterministic else max(1, int(workers))
    solver.parameters.random_seed = 0
    solver.parameters.cp_model_probing_level = 0
    status = solver.solve(cp)
    if status == cp_model.OPTIMAL:
        return round(solver.objective_value)
    if status == cp_model.FEASIBLE:
        return math.ceil(solver.best_objective_bound - 1e-6)
    return bounds.best
