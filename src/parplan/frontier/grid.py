"""The frontier over whole-model strategies: every (pp, dp, tp, ZeRO, recompute) grid, estimated and Pareto-filtered.

The operator-level frontier (:mod:`parplan.frontier.search`) lets every operator pick its own
configuration; the strategies practitioners (and ``parplan train``) run give every repeated block
the same one on one ``pp x dp x tp`` mesh. This module enumerates those strategies for a device
count and estimates each with :func:`parplan.cost.strategy.estimate_strategy`, so pipeline
parallelism, with the bubble of its schedule, is part of the trade-off.

Legal strategies: ``pp * dp * tp = devices``; ``tp`` divides the attention heads (and KV heads)
and fits in one node; ``pp`` at most the number of layers; ``dp * b`` divides the global batch;
ZeRO stages only with ``dp > 1``; sequence parallelism whenever ``tp > 1`` (Megatron-LM's
recommendation: same communication, less memory).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from parplan.cluster import Cluster
from parplan.cost.strategy import StrategyEstimate, estimate_strategy
from parplan.errors import InfeasibleError, InvalidInputError
from parplan.frontier.search import Frontier, FrontierPoint
from parplan.graph.ops import OpGraph
from parplan.strategy import RECOMPUTE, Strategy


def _divisors(n: int) -> list[int]:
    return [k for k in range(1, n + 1) if n % k == 0]


def _head_counts(graph: OpGraph) -> list[int]:
    counts = set()
    for op in graph.ops:
        if op.kind == "attention":
            for key in ("heads", "kv_heads"):
                if op.attr.get(key):
                    counts.add(int(op.attr[key]))
    return sorted(counts)


def strategies(
    graph: OpGraph,
    cluster: Cluster,
    devices: int,
    *,
    global_batch: int,
    zero: Sequence[int] = (0, 1, 2, 3),
    recompute: Sequence[str] = RECOMPUTE,
    schedule: str = "1f1b",
    allowed: Callable[[Strategy], bool] | None = None,
) -> list[Strategy]:
    """Every legal strategy on ``devices`` devices (see the module docstring)."""
    if devices < 1:
        raise InvalidInputError(f"--devices: must be >= 1, got {devices}")
    if devices > cluster.num_devices:
        raise InvalidInputError(
            f"--devices {devices}: cluster {cluster.name!r} has {cluster.num_devices} devices"
        )
    b = int(graph.meta_dict.get("microbatch_size", 1))
    layers = len({op.layer for op in graph.ops if op.layer is not None})
    heads = _head_counts(graph)
    per_node = min(sum(1 for d in cluster.devices if d.node == cluster.devices[0].node), devices)
    out = []
    for pp in _divisors(devices):
        if pp > max(1, layers):
            continue
        for tp in _divisors(devices // pp):
            dp = devices // (pp * tp)
            if tp > per_node or any(h % tp for h in heads):
                continue
            if global_batch % (dp * b):
                continue
            for z in zero:
                if z and dp == 1:
                    continue
                for rc in recompute:
                    st = Strategy(
                        pp=pp, dp=dp, tp=tp, zero=z, recompute=rc, schedule=schedule if pp > 1 else None
                    )
                    if allowed is None or allowed(st):
                        out.append(st)
    return out


@dataclass(frozen=True, kw_only=True)
class GridFrontier:
    """Estimated strategies of one device count: ``points`` the Pareto set (fastest first)."""

    graph: str
    cluster: str
    devices: int
    global_batch: int
    points: tuple[StrategyEstimate, ...]
    evaluated: tuple[StrategyEstimate, ...]
    memory_limit: float

    @property
    def fastest(self) -> StrategyEstimate:
        return self.points[0]

    @property
    def least_memory(self) -> StrategyEstimate:
        return self.points[-1]

    def fitting(self, memory_bytes: float | None = None) -> list[StrategyEstimate]:
        limit = self.memory_limit if memory_bytes is None else memory_bytes
        return [e for e in self.points if e.memory.total <= limit]

    def fastest_under(self, memory_bytes: float) -> StrategyEstimate:
        fit = self.fitting(memory_bytes)
        if not fit:
            least = self.least_memory
            raise InfeasibleError(
                f"--memory-limit {memory_bytes / 2**30:.3g} GiB: no strategy on {self.devices} devices fits; the "
                f"least memory is {least.memory.total / 2**30:.3g} GiB per device ({least.strategy.label()}). "
                "Smallest changes: more devices, a smaller --microbatch-size, or a larger limit"
            )
        return fit[0]

    def least_memory_under(self, time_s: float) -> StrategyEstimate:
        fit = [e for e in self.points if e.step_s <= time_s]
        if not fit:
            best = self.fastest
            raise InfeasibleError(
                f"--time-limit {time_s:.4g} s: no strategy on {self.devices} devices is that fast; the fastest "
                f"takes {best.step_s:.4g} s ({best.strategy.label()}). Smallest changes: a limit of "
                f"{best.step_s:.4g} s or more, or more devices"
            )
        return fit[-1]

    def point(self, e: StrategyEstimate) -> FrontierPoint:
        """``e`` as a frontier point (for the Pareto plot and the operator-level tooling)."""
        return FrontierPoint(
            time_s=e.step_s,
            memory_bytes=e.memory.total,
            strategy=(("*", e.strategy.to_text()),),
            family=e.strategy.label().replace("+RC-full", "+RC").replace("+RC-selective", "+RC-sel"),
            memory_breakdown=e.memory,
        )

    def as_frontier(self) -> Frontier:
        """The Pareto set as a :class:`~parplan.frontier.search.Frontier` (exact: ``error_bound`` 0)."""
        return Frontier(
            graph_name=self.graph,
            devices=self.devices,
            mesh=None,
            microbatches=self.points[0].microbatches if self.points else 1,
            epsilon=0.0,
            error_bound=0.0,
            points=tuple(self.point(e) for e in self.points),
            memory_limit_bytes=self.memory_limit,
        )

    def to_json(self, chosen: StrategyEstimate | None = None) -> dict[str, Any]:
        return {
            "kind": "strategy-grid",
            "graph": self.graph,
            "cluster": self.cluster,
            "devices": self.devices,
            "global_batch": self.global_batch,
            "memory_limit_bytes": self.memory_limit,
            "points": [_point_json(e) for e in self.points],
            "evaluated": len(self.evaluated),
            "chosen": None if chosen is None else _point_json(chosen),
        }


def _point_json(e: StrategyEstimate) -> dict[str, Any]:
    """The estimate's document plus the keys of an operator-level point (``frontier --json``'s
    contract: time_s, memory_bytes, family, strategy, memory_breakdown)."""
    doc = e.to_json()
    doc["label"] = e.strategy.label()
    doc["strategy_text"] = e.strategy.to_text()
    doc["time_s"] = e.step_s
    doc["family"] = e.strategy.label()
    return doc


def pareto(estimates: Iterable[StrategyEstimate]) -> tuple[StrategyEstimate, ...]:
    """Non-dominated estimates in (step time, memory per device), fastest first; ties keep the first."""
    ordered = sorted(estimates, key=lambda e: (e.step_s, e.memory.total))
    out: list[StrategyEstimate] = []
    for e in ordered:
        if not out or e.memory.total < out[-1].memory.total:
            out.append(e)
    return tuple(out)


def grid_frontier(
    graph: OpGraph,
    cluster: Cluster,
    devices: int,
    *,
    global_batch: int | None = None,
    memory_limit: float | None = None,
    allowed: Callable[[Strategy], bool] | None = None,
    **options: Any,
) -> GridFrontier:
    """Estimate every legal strategy on ``devices`` devices and keep the Pareto set.

    ``global_batch`` defaults to one micro-batch per device (so every data-parallel degree is
    legal); ``allowed`` keeps only the strategies a runtime executes; ``options`` go to
    :func:`parplan.cost.strategy.estimate_strategy`.
    """
    b = int(graph.meta_dict.get("microbatch_size", 1))
    gb = devices * b if global_batch is None else global_batch
    cands = strategies(graph, cluster, devices, global_batch=gb, allowed=allowed)
    if not cands:
        raise InvalidInputError(
            f"--global-batch {gb}: no strategy on {devices} devices divides it (data parallelism needs "
            f"dp x {b} samples to divide the global batch); use a multiple of {devices * b}"
        )
    evaluated = tuple(estimate_strategy(graph, s, cluster, global_batch=gb, **options) for s in cands)
    limit = cluster.devices[0].memory_bytes if memory_limit is None else float(memory_limit)
    return GridFrontier(
        graph=graph.name,
        cluster=cluster.name,
        devices=devices,
        global_batch=gb,
        points=pareto(evaluated),
        evaluated=evaluated,
        memory_limit=limit,
    )


@dataclass(frozen=True, kw_only=True)
class GridChoice:
    devices: int
    point: StrategyEstimate
    frontier: GridFrontier
    tried: tuple[tuple[int, float | None], ...]  # (devices, fastest fitting step time or None)


def fewest_devices_grid(
    graph: OpGraph,
    cluster: Cluster,
    time_target_s: float,
    *,
    global_batch: int | None = None,
    memory_limit: float | None = None,
    **options: Any,
) -> GridChoice:
    """The fewest devices (powers of two up to the cluster) with a fitting strategy meeting the target.

    ``global_batch`` defaults to one micro-batch per device of the whole cluster, held fixed while
    the device count changes (the question is how to run this job faster, not a bigger one).
    """
    if not time_target_s > 0:
        raise InvalidInputError(f"--time-target: must be > 0 s, got {time_target_s}")
    b = int(graph.meta_dict.get("microbatch_size", 1))
    gb = cluster.num_devices * b if global_batch is None else global_batch
    limit = cluster.devices[0].memory_bytes if memory_limit is None else float(memory_limit)
    counts = sorted(
        {k for k in (2**i for i in range(12)) if k <= cluster.num_devices} | {cluster.num_devices}
    )
    tried: list[tuple[int, float | None]] = []
    last: GridFrontier | None = None
    best_fit: tuple[int, StrategyEstimate] | None = None
    for k in counts:
        try:
            f = grid_frontier(graph, cluster, k, global_batch=gb, memory_limit=limit, **options)
        except InvalidInputError:
            continue
        last = f
        fit = f.fitting()
        tried.append((k, fit[0].step_s if fit else None))
        if fit and (best_fit is None or fit[0].step_s < best_fit[1].step_s):
            best_fit = (k, fit[0])
        meeting = [e for e in fit if e.step_s <= time_target_s]
        if meeting:
            return GridChoice(devices=k, point=meeting[-1], frontier=f, tried=tuple(tried))
    if last is None:
        raise InvalidInputError(
            f"--time-target {time_target_s:.4g} s on cluster {cluster.name!r}: no device count divides the "
            f"global batch {gb}; give --global-batch"
        )
    from parplan.frontier.query import time_target_failure

    lean = last.least_memory
    raise InfeasibleError(
        time_target_failure(
            cluster.name,
            time_target_s,
            limit,
            top_devices=last.devices,
            least=(lean.memory.total, lean.strategy.label()),
            fastest_fit=None
            if best_fit is None
            else (best_fit[1].step_s, best_fit[0], best_fit[1].strategy.label()),
            memory_fixes="or a smaller --microbatch-size",
        )
    )
