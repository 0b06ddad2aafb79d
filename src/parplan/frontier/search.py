"""Frontier Tracking search: the Pareto frontier of whole-graph strategies in (iteration time, memory).

Follows TensorOpt's Frontier Tracking (Cai et al., IEEE TPDS 2022). Each operator has *states*
(its input and output tensor layouts) and, per state, a Pareto front over the configurations with
those layouts (ZeRO stage, recompute). Each edge has a table: for every pair of end states, a front
(initially the one resharding cost). The graph is then reduced, keeping fronts exact up to the
epsilon thinning:

* branch elimination: a node with a single edge is folded into its neighbour's fronts;
* node elimination: a node with one in-edge and one out-edge becomes an edge between its neighbours
  (Minkowski sums over its states, unions over them);
* edge elimination: parallel edges merge into one (their tables summed entry by entry).

Chains, residual blocks and branches (shared experts, multimodal towers) reduce completely. What
does not (the router of a MoE layer feeding both the dispatch and the combine) is solved by dynamic
programming over a topological order whose state is the states of the nodes still connected to the
unprocessed part (exact, exponential only in that cut's width).

Identical repeated blocks (``Op.layer`` groups with one input op and one output op) are reduced
once, as a table from the block's input layout to its output op's states, and reused for every
copy: an 80-layer model costs one layer plus a chain of 80 table lookups.

Time and memory are both sums over operators and edges (see :mod:`parplan.frontier.strategies`),
so every combination is a Minkowski sum. Epsilon thinning keeps, after every reduction step, a
subset covering the exact front within ``1 + eps_step``; ``eps_step`` is chosen so that the
compounded bound over the deepest chain of steps stays within the user's ``epsilon``, and the bound
actually reached is reported in :attr:`Frontier.error_bound`.
"""

from __future__ import annotations

import time as _time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from parplan.cluster import Cluster
from parplan.cost.memory import MemoryBreakdown
from parplan.cost.profile import Profile
from parplan.errors import InfeasibleError, InvalidInputError
from parplan.frontier.pareto import Front, minkowski, thin, union
from parplan.frontier.strategies import Layout, OpConfig, SearchSpace, search_space
from parplan.graph.ops import OpGraph

#: Cap on the cut DP's state combinations (memory and time grow with it; ~1 KB each at least).
_MAX_CUT_STATES = 200_000

#: Share of log(1 + epsilon) spent inside the reduction; the rest thins the final frontier.
_STEP_SHARE = 1.0

# ----------------------------------------------------------------------------- results


@dataclass(frozen=True, slots=True, kw_only=True)
class FrontierPoint:
    """One non-dominated whole-graph strategy.

    ``strategy`` pairs every operator name with its configuration name
    (see :class:`parplan.frontier.strategies.OpConfig`); ``family`` is a short label such as
    ``"DP8"``, ``"TP8+SP"`` or ``"DP2xTP4+ZeRO-1"`` for plots and tables. ``memory_breakdown``
    splits ``memory_bytes`` by component (the sum over operators of each chosen configuration's
    :class:`~parplan.cost.memory.MemoryBreakdown`; its total equals ``memory_bytes`` up to float
    rounding); None on points built without a search space.
    """

    time_s: float
    memory_bytes: float
    strategy: tuple[tuple[str, str], ...]
    family: str
    memory_breakdown: MemoryBreakdown | None = None

    @property
    def strategy_dict(self) -> dict[str, str]:
        return dict(self.strategy)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "time_s": self.time_s,
            "memory_bytes": self.memory_bytes,
            "family": self.family,
            "strategy": dict(self.strategy),
        }
        if self.memory_breakdown is not None:
            out["memory_breakdown"] = self.memory_breakdown.to_json()
        return out


@dataclass(frozen=True, kw_only=True)
class Frontier:
    """The time/memory Pareto frontier of one model on one device group.

    ``points`` are sorted by time (fastest first, so memory decreases). ``error_bound`` is the
    approximation reached: every strategy of the search space is dominated within a factor
    ``1 + error_bound`` in both time and memory by a returned point; every returned point is a real
    strategy with exact costs. ``stats`` records search sizes and times.
    """

    graph_name: str
    devices: int
    mesh: tuple[int, ...] | None
    microbatches: int
    epsilon: float
    error_bound: float
    points: tuple[FrontierPoint, ...]
    memory_limit_bytes: float | None = None
    stats: tuple[tuple[str, Any], ...] = field(default=())

    def __len__(self) -> int:
        return len(self.points)

    @property
    def fastest(self) -> FrontierPoint:
        return self.points[0]

    @property
    def least_memory(self) -> FrontierPoint:
        return self.points[-1]

    def fastest_under(self, memory_bytes: float) -> FrontierPoint:
        """The fastest point using at most ``memory_bytes`` per device.

        Raises
        ------
        InfeasibleError
            When even the leanest point needs more memory.
        """
        for p in self.points:
            if p.memory_bytes <= memory_bytes:
                return p
        raise InfeasibleError(
            f"frontier of {self.graph_name!r} on {self.devices} devices: the leanest strategy needs "
            f"{self.points[-1].memory_bytes / 2**30:.3g} GiB per device, more than the limit "
            f"{memory_bytes / 2**30:.3g} GiB; add devices or micro-batches, or shrink the model"
        )

    def least_memory_under(self, time_s: float) -> FrontierPoint:
        """The point with the least memory per device whose iteration time is at most ``time_s``.

        Raises
        ------
        InfeasibleError
            When even the fastest point is slower.
        """
        for p in reversed(self.points):
            if p.time_s <= time_s:
                return p
        raise InfeasibleError(
            f"frontier of {self.graph_name!r} on {self.devices} devices: the fastest strategy takes "
            f"{self.points[0].time_s:.4g} s per iteration, more than the target {time_s:.4g} s; "
            "add devices or relax the target"
        )

    def to_json(self, chosen: FrontierPoint | None = None) -> dict[str, Any]:
        """``{"points": [{"time_s", "memory_bytes", "strategy", "family"}], "chosen", ...}``.

        ``chosen`` defaults to the fastest point under ``memory_limit_bytes`` (when set and
        feasible), else None.
        """
        if chosen is None and self.memory_limit_bytes is not None:
            try:
                chosen = self.fastest_under(self.memory_limit_bytes)
            except InfeasibleError:
                chosen = None
        return {
            "graph": self.graph_name,
            "devices": self.devices,
            "mesh": list(self.mesh) if self.mesh is not None else None,
            "microbatches": self.microbatches,
            "epsilon": self.epsilon,
            "error_bound": self.error_bound,
            "memory_limit_bytes": self.memory_limit_bytes,
            "points": [p.to_json() for p in self.points],
            "chosen": chosen.to_json() if chosen is not None else None,
            "stats": dict(self.stats),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Frontier:
        """Read back :meth:`to_json` output."""
        try:
            points = tuple(
                FrontierPoint(
                    time_s=float(p["time_s"]),
                    memory_bytes=float(p["memory_bytes"]),
                    strategy=tuple((str(k), str(v)) for k, v in p["strategy"].items()),
                    family=str(p.get("family", "")),
                    memory_breakdown=(
                        MemoryBreakdown.from_json(
                            p["memory_breakdown"], f"frontier.points[{k}].memory_breakdown"
                        )
                        if p.get("memory_breakdown") is not None
                        else None
                    ),
                )
                for k, p in enumerate(data["points"])
            )
            mesh = data.get("mesh")
            return cls(
                graph_name=str(data.get("graph", "")),
                devices=int(data["devices"]),
                mesh=tuple(mesh) if mesh is not None else None,
                microbatches=int(data.get("microbatches", 1)),
                epsilon=float(data.get("epsilon", 0.0)),
                error_bound=float(data.get("error_bound", 0.0)),
                points=points,
                memory_limit_bytes=data.get("memory_limit_bytes"),
                stats=tuple(sorted(dict(data.get("stats", {})).items())),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise InvalidInputError(
                f"frontier JSON: malformed ({exc}); expected Frontier.to_json output"
            ) from exc


# ----------------------------------------------------------------------------- reduction engine


class _Net:
    """A reduced graph: nodes with per-state fronts, edges with per-state-pair front tables."""

    def __init__(self, eps_step: float) -> None:
        self.eps = eps_step
        self.states: dict[Any, list[tuple[Layout, Layout]]] = {}
        self.node: dict[Any, list[Front]] = {}
        self.edge: dict[tuple[Any, Any], list[list[Front]]] = {}
        self.succ: dict[Any, set[Any]] = {}
        self.pred: dict[Any, set[Any]] = {}
        self.pinned: set[Any] = set()
        self.steps = 0
        self.names: dict[Any, str] = {}  # node -> operator name, for messages

    def add_node(self, v: Any, states: list[tuple[Layout, Layout]], fronts: list[Front]) -> None:
        self.states[v] = states
        self.node[v] = fronts
        self.succ[v] = set()
        self.pred[v] = set()

    def add_edge(self, u: Any, v: Any, table: list[list[Front]]) -> None:
        if (u, v) in self.edge:
            old = self.edge[(u, v)]
            # exact: the next elimination step using this edge thins it
            table = [
                [minkowski(old[a][b], table[a][b]) for b in range(len(table[a]))] for a in range(len(table))
            ]
        self.edge[(u, v)] = table
        self.succ[u].add(v)
        self.pred[v].add(u)

    def _remove(self, v: Any) -> None:
        for u in self.pred.pop(v):
            self.succ[u].discard(v)
            del self.edge[(u, v)]
        for w in self.succ.pop(v):
            self.pred[w].discard(v)
            del self.edge[(v, w)]
        del self.states[v]
        del self.node[v]

    def degree(self, v: Any) -> int:
        return len(self.pred[v]) + len(self.succ[v])

    def _branch(self, v: Any) -> None:
        """Fold a node with a single edge into its neighbour."""
        if self.pred[v]:
            (u,) = self.pred[v]
            table = self.edge[(u, v)]

            def entry(a: int, b: int) -> Front:
                return table[a][b]
        else:
            (u,) = self.succ[v]
            table = self.edge[(v, u)]

            def entry(a: int, b: int) -> Front:
                return table[b][a]

        nv = self.node[v]
        new = []
        for a, fu in enumerate(self.node[u]):
            # thin once per step (the error bound counts steps): at the union when adding ``fu``
            # only shifts, else at the final sum
            best = union(
                [minkowski(entry(a, b), nv[b]) for b in range(len(nv))], self.eps if fu.trivial else 0.0
            )
            new.append(minkowski(fu, best, 0.0 if fu.trivial else self.eps))
        self.node[u] = new
        self._remove(v)
        self.steps += 1

    def _series(self, v: Any) -> None:
        """Replace u -> v -> w by an edge u -> w."""
        (u,) = self.pred[v]
        (w,) = self.succ[v]
        t1, t2, nv = self.edge[(u, v)], self.edge[(v, w)], self.node[v]
        nu, nw = len(self.states[u]), len(self.states[w])
        left = [[minkowski(t1[a][b], nv[b]) for b in range(len(nv))] for a in range(nu)]
        table = [
            [union([minkowski(left[a][b], t2[b][c]) for b in range(len(nv))], self.eps) for c in range(nw)]
            for a in range(nu)
        ]
        self._remove(v)
        self.add_edge(u, w, table)
        self.steps += 1

    def _contract_candidate(self, cap: int) -> tuple[Any, Any] | None:
        """The edge whose contraction leaves the lowest-degree node (ties: fewest merged states).

        Only edges between unpinned nodes, with at most ``cap`` merged states, that create no cycle.
        """
        best: tuple[tuple[int, int, str], tuple[Any, Any]] | None = None
        for u, v in self.edge:
            if u in self.pinned or v in self.pinned:
                continue
            size = len(self.states[u]) * len(self.states[v])
            if size > cap:
                continue
            preds = (self.pred[u] | self.pred[v]) - {u, v}
            succs = (self.succ[u] | self.succ[v]) - {u, v}
            if preds & succs:
                continue  # another path u -> x -> v: merging would close a cycle
            key = (len(preds) + len(succs), size, str((u, v)))
            if best is None or key < best[0]:
                best = (key, (u, v))
        return None if best is None else best[1]

    def _contract(self, u: Any, v: Any) -> None:
        """Merge the ends of edge u -> v into one node whose states are the pairs of theirs."""
        nu, nv = len(self.states[u]), len(self.states[v])
        t_uv = self.edge[(u, v)]
        m = ("merge", u, v)
        states = [(a, b) for a in range(nu) for b in range(nv)]
        fronts = [
            minkowski(minkowski(self.node[u][a], self.node[v][b]), t_uv[a][b], self.eps) for a, b in states
        ]
        ins = [(x, u, self.edge[(x, u)]) for x in self.pred[u]] + [
            (x, v, self.edge[(x, v)]) for x in self.pred[v] if x != u
        ]
        outs = [(y, u, self.edge[(u, y)]) for y in self.succ[u] if y != v] + [
            (y, v, self.edge[(v, y)]) for y in self.succ[v]
        ]
        self._remove(u)
        self._remove(v)
        self.states[m] = states  # type: ignore[assignment]
        self.node[m] = fronts
        self.succ[m] = set()
        self.pred[m] = set()
        for x, end, tab in ins:
            side = 0 if end == u else 1
            self.add_edge(x, m, [[row[s[side]] for s in states] for row in tab])
        for y, end, tab in outs:
            side = 0 if end == u else 1
            self.add_edge(m, y, [tab[s[side]] for s in states])
        self.steps += 1

    def reduce(self, contract_cap: int = 1024) -> None:
        """Apply eliminations (edge merges happen on insertion) until none applies.

        Branch eliminations go first: on a chain they sweep from the ends, a dynamic program whose
        cost is (states)^2 per step, where a node elimination in the middle costs (states)^3. When
        neither applies, two adjacent nodes are contracted into one (states: pairs) if that yields
        a node of degree <= 2 (e.g. a MoE router into its dispatch), which unlocks the others.
        """
        while True:
            live = [v for v in sorted(self.states, key=str) if v not in self.pinned]
            leaf = next((v for v in live if self.degree(v) == 1), None)
            if leaf is not None and len(self.states) > 1:
                self._branch(leaf)
                continue
            mid = next((v for v in live if len(self.pred[v]) == 1 and len(self.succ[v]) == 1), None)
            if mid is not None:
                self._series(mid)
                continue
            cand = self._contract_candidate(contract_cap)
            if cand is not None:
                u, v = cand
                preds = (self.pred[u] | self.pred[v]) - {u, v}
                succs = (self.succ[u] | self.succ[v]) - {u, v}
                if len(preds) + len(succs) <= 2:
                    self._contract(u, v)
                    continue
            return

    def topo(self) -> list[Any]:
        indeg = {v: len(self.pred[v]) for v in self.states}
        ready = sorted((v for v, d in indeg.items() if d == 0), key=str)
        order = []
        while ready:
            v = ready.pop(0)
            order.append(v)
            for w in sorted(self.succ[v], key=str):
                indeg[w] -= 1
                if indeg[w] == 0:
                    ready.append(w)
        return order

    def cut_dp(self, keep: Sequence[Any]) -> dict[tuple[int, ...], Front]:
        """Exact DP over a topological order; returns fronts keyed by the states of ``keep``."""
        order = self.topo()
        done: set[Any] = set()
        cut: list[Any] = []
        dp: dict[tuple[int, ...], Front] = {(): Front.point(0.0, 0.0)}
        for v in order:
            nbrs = [(u, (u, v)) for u in self.pred[v] if u in done] + [
                (w, (v, w)) for w in self.succ[v] if w in done
            ]
            pos = {u: cut.index(u) for u, _ in nbrs}
            new: dict[tuple[int, ...], list[Front]] = {}
            for key, f in dp.items():
                for s, nf in enumerate(self.node[v]):
                    acc = minkowski(f, nf)
                    for u, e in nbrs:
                        su = key[pos[u]]
                        acc = minkowski(acc, self.edge[e][su][s] if e[1] == v else self.edge[e][s][su])
                    new.setdefault((*key, s), []).append(acc)
            if len(new) > _MAX_CUT_STATES:
                raise InvalidInputError(
                    f"frontier: the graph does not reduce to series-parallel parts and its dynamic "
                    f"program needs {len(new)} state combinations over {len(cut) + 1} operators at "
                    f"{self.names.get(v, v)!r} (limit {_MAX_CUT_STATES}); restrict the grids (mesh=(devices,)) or use "
                    "fewer devices"
                )
            cut.append(v)
            done.add(v)
            # drop nodes whose neighbours are all processed (their state no longer matters)
            alive = [
                i
                for i, u in enumerate(cut)
                if u in keep or any(x not in done for x in self.pred[u] | self.succ[u])
            ]
            merged: dict[tuple[int, ...], list[Front]] = {}
            for key, fs in new.items():
                merged.setdefault(tuple(key[i] for i in alive), []).extend(fs)
            dp = {key: union(fs, self.eps) for key, fs in merged.items()}
            cut = [cut[i] for i in alive]
            self.steps += 1
        # reorder keys to follow ``keep``
        idx = [cut.index(u) for u in keep]
        return {tuple(key[i] for i in idx): f for key, f in dp.items()}


def _node_fronts(
    space: SearchSpace, i: int, label: int, checkpoint: bool | None = None
) -> tuple[list[tuple[Layout, Layout]], list[Front]]:
    """Group op ``i``'s configurations by (input, output) layout; a front per group.

    ``checkpoint`` keeps only the configurations with (True) or without (False) layer-level
    checkpointing; None keeps all.
    """
    groups: dict[tuple[Layout, Layout], list[tuple[float, float, Any]]] = {}
    for c in space.configs[i]:
        if checkpoint is not None and c.checkpoint != checkpoint:
            continue
        groups.setdefault((c.in_layout, c.out_layout), []).append(
            (c.time_s, c.mem_bytes, ("c", label, c.name))
        )
    states = sorted(groups)
    return states, [Front.from_points(groups[s]) for s in states]


class _EdgeCache:
    def __init__(self, space: SearchSpace) -> None:
        self.space = space
        self.cache: dict[tuple[Layout, Layout, float], Front] = {}

    def front(self, src: Layout, dst: Layout, nbytes: float) -> Front:
        key = (src, dst, nbytes)
        f = self.cache.get(key)
        if f is None:
            f = Front.point(self.space.reshard_time(src, dst, nbytes), 0.0)
            self.cache[key] = f
        return f

    def table(
        self,
        src_states: Sequence[tuple[Layout, Layout]],
        dst_states: Sequence[tuple[Layout, Layout]],
        nbytes: float,
    ) -> list[list[Front]]:
        return [[self.front(a[1], b[0], nbytes) for b in dst_states] for a in src_states]


def _blocks(graph: OpGraph) -> list[tuple[int, tuple[int, ...], int]]:
    """Repeated blocks: (input op, block ops in index order, output op) for closed ``Op.layer`` groups."""
    groups: dict[int, list[int]] = {}
    for i, op in enumerate(graph.ops):
        if op.layer is not None:
            groups.setdefault(op.layer, []).append(i)
    out = []
    for _, ops in sorted(groups.items()):
        members = set(ops)
        ins = {p for v in ops for p in graph.preds[v] if p not in members}
        exits = {v for v in ops for s in graph.succs[v] if s not in members}
        if len(ins) != 1 or len(exits) > 1 or len(ops) < 2:
            continue
        exit_op = next(iter(exits)) if exits else ops[-1]
        if exits and any(s in members for s in graph.succs[exit_op]):
            continue
        out.append((next(iter(ins)), tuple(ops), exit_op))
    return out


def _block_signature(graph: OpGraph, block: tuple[int, tuple[int, ...], int]) -> Any:
    _src, ops, exit_op = block
    local = {v: k for k, v in enumerate(ops)}
    op_sig = []
    for v in ops:
        op = graph.ops[v]
        op_sig.append(
            (
                op.kind,
                op.fwd_flops,
                op.bwd_input_flops,
                op.bwd_weight_flops,
                op.fwd_bytes,
                op.bwd_input_bytes,
                op.bwd_weight_bytes,
                op.param_bytes,
                op.act_bytes,
                op.out_bytes,
                op.attrs,
            )
        )
    edges = []
    for v in ops:
        for p in graph.preds[v]:
            edges.append((local.get(p, -1), local[v], graph.edge_bytes[(p, v)]))
    return (tuple(op_sig), tuple(sorted(edges)), local[exit_op])


def _solve_block(
    space: SearchSpace,
    block: tuple[int, tuple[int, ...], int],
    eps: float,
    edges: _EdgeCache,
    checkpoint: bool | None = None,
) -> tuple[list[Layout], list[list[Front]], int]:
    """Table [input layout][exit state] of one block (traces name ops by position in the block).

    ``checkpoint``: as in :func:`_node_fronts`, for every op of the block.
    """
    graph = space.graph
    _src, ops, exit_op = block
    local = {v: k for k, v in enumerate(ops)}
    layouts = list(space.layouts)
    net = _Net(eps)
    net.names = {local[v]: graph.ops[v].name for v in ops}
    src_states = [(lay, lay) for lay in layouts]
    net.add_node("src", src_states, [Front.point(0.0, 0.0) for _ in layouts])
    for v in ops:
        states, fronts = _node_fronts(space, v, local[v], checkpoint)
        net.add_node(local[v], states, fronts)
    for v in ops:
        for p in graph.preds[v]:
            a = local.get(p, "src")
            b = local[v]
            net.add_edge(a, b, edges.table(net.states[a], net.states[b], graph.edge_bytes[(p, v)]))
    x = local[exit_op]
    if net.states[x] != _node_fronts(space, exit_op, exit_op)[0]:  # pragma: no cover - a bug
        from parplan.errors import InternalError

        raise InternalError(
            f"frontier: block exit {graph.ops[exit_op].name!r} lost states under {checkpoint=}"
        )
    net.pinned = {"src", x}
    net.reduce()
    if set(net.states) == {"src", x} and ("src", x) in net.edge:
        t = net.edge[("src", x)]
        table = [
            [minkowski(t[a][b], net.node[x][b], eps) for b in range(len(net.states[x]))]
            for a in range(len(layouts))
        ]
    else:
        by_key = net.cut_dp(["src", x])
        table = [[by_key[(a, b)] for b in range(len(net.states[x]))] for a in range(len(layouts))]
    return layouts, table, net.steps


def _grid_label(d: int, t: int, splits: set[str]) -> str:
    if d == 1 and t == 1:
        return "single"
    if t == 1:
        return f"DP{d}"
    if d == 1:
        return f"TP{t}" if splits & {"col", "row", "col.sp", "row.sp", "heads", "etp", "vocab"} else f"SP{t}"
    return f"DP{d}xTP{t}"


def _family(space: SearchSpace, choice: Mapping[int, str]) -> str:
    """A short label of a whole-graph strategy, from its parameter-weighted dominant choices.

    When the repeated layers do not all use the same grid the label says so, layer counts first
    (``"17 layers DP8, 15 layers DP4xTP2+ZeRO-1"``): such a point is not one strategy per block on
    one mesh, which is what frameworks (and ``parplan train``) run.
    """
    by_name = [{c.name: c for c in cfgs} for cfgs in space.configs]
    weight: dict[tuple[int, int], float] = {}
    per_layer: dict[int, dict[tuple[int, int], float]] = {}
    zero: dict[int, float] = {}
    splits: set[str] = set()
    rc = ckpt = False
    for i, name in choice.items():
        c = by_name[i][name]
        op = space.graph.ops[i]
        w = op.param_bytes + 1e-9 * (op.total_flops + 1)
        weight[(c.dp, c.tp)] = weight.get((c.dp, c.tp), 0.0) + w
        if op.layer is not None:
            layer = per_layer.setdefault(op.layer, {})
            layer[(c.dp, c.tp)] = layer.get((c.dp, c.tp), 0.0) + w
        zero[c.zero] = zero.get(c.zero, 0.0) + op.param_bytes
        if c.tp > 1:
            splits.add(c.split)
        rc = rc or c.recompute
        ckpt = ckpt or c.checkpoint
    d, t = max(weight, key=lambda g: weight[g])
    label = _grid_label(d, t, splits)
    counts: dict[tuple[int, int], int] = {}
    for grids in per_layer.values():
        g = max(grids, key=lambda k: grids[k])
        counts[g] = counts.get(g, 0) + 1
    if len(counts) > 1:
        label = ", ".join(
            f"{n} layer{'s' if n > 1 else ''} {_grid_label(gd, gt, splits)}"
            for (gd, gt), n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
        )
    if t > 1 and splits & {"seq", "col.sp", "row.sp", "cp"} and not label.startswith("SP"):
        label += "+SP"
    if splits & {"ep"}:
        label += "+EP"
    z = max(zero, key=lambda s: zero[s]) if any(zero.values()) else 0
    if z:
        label += f"+ZeRO-{z}"
    if rc:
        label += "+RC"
    if ckpt:
        label += "+AC"
    return label


def _solve_block_both(
    space: SearchSpace, block: tuple[int, tuple[int, ...], int], eps: float, edges: _EdgeCache
) -> tuple[list[Layout], list[list[Front]], int]:
    """A block's table when the whole block is checkpointed or not: the union of both solutions."""
    layouts, plain, steps0 = _solve_block(space, block, eps, edges, checkpoint=False)
    layouts1, ckpt, steps1 = _solve_block(space, block, eps, edges, checkpoint=True)
    if layouts1 != layouts:  # pragma: no cover - both come from space.layouts
        from parplan.errors import InternalError

        raise InternalError("frontier: checkpointed block solved over other layouts")
    table = [
        [union([plain[a][b], ckpt[a][b]], eps) for b in range(len(plain[a]))] for a in range(len(layouts))
    ]
    return layouts, table, steps0 + steps1 + 1


def _non_dominated(points: list[FrontierPoint]) -> list[FrontierPoint]:
    """Points sorted by time, without those another point dominates."""
    out: list[FrontierPoint] = []
    for p in sorted(points, key=lambda p: (p.time_s, p.memory_bytes)):
        if not out or p.memory_bytes < out[-1].memory_bytes:
            out.append(p)
    return out


def frontier(
    graph: OpGraph,
    cluster: Cluster,
    *,
    devices: int,
    microbatches: int = 1,
    epsilon: float = 0.02,
    mesh: tuple[int, ...] | None = None,
    dtype: str = "bf16",
    memory_limit: float | None = None,
    reuse_blocks: bool = True,
    checkpointing: bool = False,
    profile: Profile | None = None,
    gemm_dtype: str | None = None,
) -> Frontier:
    """The Pareto frontier of (iteration time, memory per device) over intra-operator strategies.

    Parameters
    ----------
    graph
        The model (one micro-batch), e.g. from ``parplan.graph.zoo.build_model``.
    cluster
        The cluster; the first ``devices`` devices form the group.
    devices
        Number of devices every operator is spread over.
    microbatches
        Micro-batches per iteration (gradient accumulation).
    epsilon
        Approximation target: every strategy is dominated within ``1 + epsilon`` in both time and
        memory by a returned point (0 = exact frontier). The bound reached is ``error_bound``.
    mesh
        Device grid; None tries every ``data x model`` factorisation of ``devices``.
    dtype
        Compute dtype.
    memory_limit
        Optional per-device limit, kept for :meth:`Frontier.to_json`'s ``chosen`` point.
    reuse_blocks
        Solve each distinct repeated block once (disable only to check the reuse).
    checkpointing
        Also offer layer-level (full) activation checkpointing (Korthikanti et al. 2022, section
        4; Chen et al. 2016) for every repeated block (transformer layer): all of a layer's ops
        store nothing but the layer input, and run their forward (with its collectives) again in
        the backward. While one layer is recomputed its activations are alive: each point's
        ``buffers`` is the largest checkpointed layer's ``recompute_act``, added after the search
        (``error_bound`` covers the search; this term is at most one layer's activations).

    profile
        Measured per-op times (``parplan profile``) replacing the roofline for the ops they list
        (:func:`parplan.frontier.strategies.search_space`). Repeated blocks are solved once, with
        the first block's measurements.
    gemm_dtype
        ``"fp8"``: float8 training, the linear layers' GEMMs at the fp8 peak (storage in ``dtype``).

    Returns
    -------
    Frontier
        Points sorted by time.
    """
    if not (isinstance(epsilon, (int, float)) and 0 <= epsilon < 1):
        raise InvalidInputError(f"frontier epsilon: must be in [0, 1), got {epsilon!r}")
    t0 = _time.perf_counter()
    blocks = _blocks(graph) if (reuse_blocks or checkpointing) else []
    space = search_space(
        graph,
        cluster,
        devices=devices,
        microbatches=microbatches,
        mesh=mesh,
        dtype=dtype,
        checkpoint_layers=[ops for _, ops, _ in blocks] if checkpointing else (),
        profile=profile,
        gemm_dtype=gemm_dtype,
    )
    t_space = _time.perf_counter() - t0
    edges = _EdgeCache(space)
    in_block = {v for _, ops, _ in blocks for v in ops}
    n_top = graph.num_ops - len(in_block) + len(blocks)
    block_size = max((len(ops) for _, ops, _ in blocks), default=0)
    # every elimination, contraction or cut-DP step thins at most once along any chain of results,
    # plus the block's last sum and the final union
    depth = n_top + block_size + 2 + (1 if checkpointing else 0)  # + the union of the two block modes
    # the reduction may use the whole (log) budget; what it leaves thins the returned set
    eps_step = (1.0 + epsilon) ** (_STEP_SHARE / depth) - 1.0 if epsilon > 0 else 0.0

    net = _Net(eps_step)
    net.names = {i: op.name for i, op in enumerate(graph.ops)}
    for v in range(graph.num_ops):
        if v in in_block:
            continue
        states, fronts = _node_fronts(space, v, v)
        net.add_node(v, states, fronts)
    solved: dict[Any, tuple[list[Layout], list[list[Front]], int]] = {}
    exit_of_block = set()
    keys = [_block_signature(graph, b) if reuse_blocks else ("block", k) for k, b in enumerate(blocks)]
    for block, sig in zip(blocks, keys, strict=True):
        src, ops, exit_op = block
        if sig not in solved:
            solved[sig] = (
                _solve_block_both(space, block, eps_step, edges)
                if checkpointing
                else _solve_block(space, block, eps_step, edges)
            )
        states, _ = _node_fronts(space, exit_op, exit_op)
        net.add_node(exit_op, states, [Front.point(0.0, 0.0) for _ in states])
        exit_of_block.add(exit_op)
    for block, sig in zip(blocks, keys, strict=True):
        src, ops, exit_op = block
        layouts, table, _ = solved[sig]
        row = {lay: k for k, lay in enumerate(layouts)}
        scoped: dict[int, list[Front]] = {}
        tab = []
        for s in net.states[src]:
            r = row[s[1]]
            if r not in scoped:
                scoped[r] = [f.with_scope(ops) for f in table[r]]
            tab.append(scoped[r])
        net.add_edge(src, exit_op, tab)
    for e in graph.edges:
        if e.src in in_block and e.src not in exit_of_block:
            continue
        if e.dst in in_block:
            continue
        net.add_edge(e.src, e.dst, edges.table(net.states[e.src], net.states[e.dst], e.bytes))

    net.reduce()
    fallback = False
    if len(net.states) == 1:
        (v,) = net.states
        final = union(net.node[v], eps_step)
    elif not net.edge:
        final = Front.point(0.0, 0.0)
        for v in list(net.states):
            final = minkowski(final, union(net.node[v]), eps_step)  # one thinning per part
    else:
        fallback = True
        by_key = net.cut_dp([])
        final = union(list(by_key.values()), eps_step)
    # spend what is left of the budget on the returned set
    if epsilon > 0:
        rest = (1.0 + epsilon) / (1.0 + final.err) - 1.0
        if rest > 1e-9:
            final = thin(final, rest)
    t_search = _time.perf_counter() - t0 - t_space

    points = []
    for k in range(len(final)):
        choice = final.choice(k)
        if len(choice) != graph.num_ops:  # pragma: no cover - a bug in the reduction
            from parplan.errors import InternalError

            raise InternalError(
                f"frontier: point {k} names {len(choice)} of {graph.num_ops} operators of {graph.name!r}"
            )
        breakdown = memory_breakdown(space, choice)
        points.append(
            FrontierPoint(
                time_s=float(final.time_s[k]),
                memory_bytes=float(final.mem_bytes[k]) + breakdown.buffers,
                strategy=tuple((graph.ops[i].name, choice[i]) for i in range(graph.num_ops)),
                family=_family(space, choice),
                memory_breakdown=breakdown,
            )
        )
    if checkpointing:  # the recompute buffers may leave a point dominated
        points = _non_dominated(points)
    stats = {
        "configs": sum(len(c) for c in space.configs),
        "layouts": len(space.layouts),
        "grids": [list(g) for g in space.grids],
        "blocks": len(blocks),
        "distinct_blocks": len(solved),
        "reduction_steps": net.steps + sum(s for _, _, s in solved.values()),
        "cut_dp_fallback": fallback,
        "checkpointing": checkpointing,
        "eps_step": eps_step,
        "space_s": t_space,
        "search_s": t_search,
    }
    return Frontier(
        graph_name=graph.name,
        devices=devices,
        mesh=space.mesh,
        microbatches=microbatches,
        epsilon=float(epsilon),
        error_bound=float(final.err),
        points=tuple(points),
        memory_limit_bytes=memory_limit,
        stats=tuple(sorted(stats.items())),
    )


def _chosen(space: SearchSpace, choice: Mapping[int, str]) -> dict[int, OpConfig]:
    by_name = [{c.name: c for c in cfgs} for cfgs in space.configs]
    cfg: dict[int, OpConfig] = {}
    for i in range(space.graph.num_ops):
        try:
            cfg[i] = by_name[i][choice[i]]
        except KeyError as exc:
            raise InvalidInputError(
                f"strategy: op {space.graph.ops[i].name!r} has no configuration {choice.get(i)!r}"
            ) from exc
    return cfg


def memory_breakdown(space: SearchSpace, choice: Mapping[int, str]) -> MemoryBreakdown:
    """Memory per device of one whole-graph strategy by component, from the chosen configurations.

    ``choice`` maps operator index to configuration name. The components are the ones every
    :class:`OpConfig` carries (edges hold no memory), so the total is the strategy's memory.
    """
    cfg = _chosen(space, choice)
    total = MemoryBreakdown()
    for c in cfg.values():
        total = total + c.memory
    buffers = _recompute_buffer(space, cfg)
    if buffers:
        total = total + MemoryBreakdown(buffers=buffers)
    return total


def _recompute_buffer(space: SearchSpace, cfg: Mapping[int, OpConfig]) -> float:
    """Bytes alive while the largest checkpointed layer is recomputed (0 without checkpointing).

    Raises
    ------
    InvalidInputError
        When a layer checkpoints some of its ops and not others.
    """
    best = 0.0
    for ops in space.checkpoint_layers:
        flags = {cfg[v].checkpoint for v in ops}
        if len(flags) > 1:
            names = ", ".join(space.graph.ops[v].name for v in ops if cfg[v].checkpoint)
            raise InvalidInputError(
                f"strategy: layer of {space.graph.ops[ops[0]].name!r} checkpoints only some of its ops "
                f"({names}); checkpoint all of a layer's ops or none"
            )
        if flags == {True}:
            best = max(best, sum(cfg[v].recompute_act for v in ops))
    return best


def evaluate(space: SearchSpace, choice: Mapping[int, str]) -> tuple[float, float]:
    """(time_s, memory_bytes) of one whole-graph strategy, computed directly (for checks and tests).

    ``choice`` maps operator index to configuration name.
    """
    cfg = _chosen(space, choice)
    t = sum(c.time_s for c in cfg.values())
    m = sum(c.mem_bytes for c in cfg.values()) + _recompute_buffer(space, cfg)
    for e in space.graph.edges:
        t += space.reshard_time(cfg[e.src].out_layout, cfg[e.dst].in_layout, e.bytes)
    return t, m


def brute_force(space: SearchSpace) -> list[tuple[float, float]]:
    """Exact frontier by enumerating every combination of configurations (tiny graphs only)."""
    import itertools

    combos = 1
    for cfgs in space.configs:
        combos *= len(cfgs)
    if combos > 2_000_000:
        raise InvalidInputError(f"brute_force: {combos} combinations is too many; use a smaller graph")
    graph = space.graph
    edges = [(e.src, e.dst, e.bytes) for e in graph.edges]
    reshard: dict[tuple[Any, Any, float], float] = {}
    pts = []
    for combo in itertools.product(*space.configs):
        if any(len({combo[v].checkpoint for v in ops}) > 1 for ops in space.checkpoint_layers):
            continue  # a layer is checkpointed whole or not at all
        t = sum(c.time_s for c in combo)
        m = sum(c.mem_bytes for c in combo) + _recompute_buffer(space, dict(enumerate(combo)))
        for a, b, nbytes in edges:
            key = (combo[a].out_layout, combo[b].in_layout, nbytes)
            r = reshard.get(key)
            if r is None:
                r = reshard[key] = space.reshard_time(*key)
            t += r
        pts.append((t, m))
    from parplan.frontier.pareto import pareto_indices

    ts = np.array([p[0] for p in pts])
    ms = np.array([p[1] for p in pts])
    return [(float(ts[i]), float(ms[i])) for i in pareto_indices(ts, ms)]
