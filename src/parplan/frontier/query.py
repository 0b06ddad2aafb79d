"""Questions answered from frontiers: fewest devices for a time target, and per-stage modes for the planner.

``Frontier.fastest_under`` / ``Frontier.least_memory_under`` answer the one-group questions; this
module sweeps device counts and mesh shapes, and cuts a graph into pipeline stages.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from parplan.cluster import Cluster
from parplan.errors import InfeasibleError, InvalidInputError
from parplan.frontier.search import Frontier, FrontierPoint, frontier
from parplan.graph.ops import Edge, OpGraph


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceChoice:
    """The answer of :func:`fewest_devices`: device count, its dominant grid, the chosen point.

    ``tried`` lists (devices, grid or None, fastest time) for every count tried.
    """

    devices: int
    mesh: tuple[int, ...] | None
    point: FrontierPoint
    frontier: Frontier
    tried: tuple[tuple[int, tuple[int, ...] | None, float], ...]


def dominant_grid(point: FrontierPoint) -> tuple[int, int]:
    """The (data, model) grid most operators of ``point`` use, read from their configuration names."""
    count: dict[tuple[int, int], int] = {}
    for _, name in point.strategy:
        dp, tp = name.split(".")[:2]
        g = (int(dp[2:]), int(tp[2:]))
        count[g] = count.get(g, 0) + 1
    return max(count, key=lambda g: count[g])


def fewest_devices(
    graph: OpGraph,
    cluster: Cluster,
    time_target_s: float,
    *,
    memory_limit: float | None = None,
    microbatches: int = 1,
    epsilon: float = 0.02,
    dtype: str = "bf16",
    device_counts: Sequence[int] | None = None,
    profile: Any = None,
    gemm_dtype: str | None = None,
) -> DeviceChoice:
    """The fewest devices whose frontier has a point meeting ``time_target_s`` within the memory limit.

    Parameters
    ----------
    graph, cluster
        Model and cluster.
    time_target_s
        Iteration time to meet.
    memory_limit
        Per-device memory limit; default: the cluster's first device's memory.
    microbatches, epsilon, dtype, profile, gemm_dtype
        As for :func:`parplan.frontier.search.frontier`.
    device_counts
        Counts to try; default: every divisor of the cluster size (so groups tile the cluster).

    Returns
    -------
    DeviceChoice
        For the first count (ascending) with a point at most ``time_target_s`` and ``memory_limit``:
        the fastest point under the memory limit on that count.

    Raises
    ------
    InfeasibleError
        When no count meets the target.
    """
    if not time_target_s > 0:
        raise InvalidInputError(f"fewest_devices time_target_s: must be > 0, got {time_target_s}")
    limit = cluster.devices[0].memory_bytes if memory_limit is None else float(memory_limit)
    counts = (
        sorted(set(device_counts))
        if device_counts is not None
        else [k for k in range(1, cluster.num_devices + 1) if cluster.num_devices % k == 0]
    )
    tried: list[tuple[int, tuple[int, ...] | None, float]] = []
    least: dict[int, FrontierPoint] = {}
    fitting: dict[int, FrontierPoint] = {}
    for k in counts:
        # mesh=None searches every data x model grid of k devices at once (a superset of each shape)
        f = frontier(
            graph,
            cluster,
            devices=k,
            microbatches=microbatches,
            epsilon=epsilon,
            dtype=dtype,
            profile=profile,
            gemm_dtype=gemm_dtype,
        )
        least[k] = f.least_memory
        with contextlib.suppress(InfeasibleError):
            fitting[k] = f.fastest_under(limit)
        try:
            p = f.least_memory_under(time_target_s)
        except InfeasibleError:
            tried.append((k, None, f.fastest.time_s))
            continue
        if p.memory_bytes > limit:
            tried.append((k, None, f.fastest.time_s))
            continue
        p = f.fastest_under(limit)
        tried.append((k, dominant_grid(p), p.time_s))
        return DeviceChoice(devices=k, mesh=dominant_grid(p), point=p, frontier=f, tried=tuple(tried))
    top = max(least)
    best = min(fitting.items(), key=lambda kv: kv[1].time_s) if fitting else None
    raise InfeasibleError(
        time_target_failure(
            cluster.name,
            time_target_s,
            limit,
            top_devices=top,
            least=(least[top].memory_bytes, least[top].family),
            fastest_fit=None if best is None else (best[1].time_s, best[0], best[1].family),
            memory_fixes="layer checkpointing (--checkpointing with --devices), or a smaller --microbatch-size",
        )
    )


def time_target_failure(
    cluster: str,
    target_s: float,
    limit: float,
    *,
    top_devices: int,
    least: tuple[float, str],
    fastest_fit: tuple[float, int, str] | None,
    memory_fixes: str,
) -> str:
    """Why no device count meets a time target: the constraint that fails and the smallest change.

    ``least`` is (memory bytes, label) of the leanest strategy on the most devices tried;
    ``fastest_fit`` (seconds, devices, label) of the fastest one within ``limit``, None when
    nothing fits. ``memory_fixes`` lists the search's own ways to need less memory.
    """
    gib = 2**30
    head = f"--time-target {target_s:.4g} s on cluster {cluster!r}: "
    if fastest_fit is None:
        need, label = least
        more = int(-(-top_devices * need // limit))  # devices if memory fell linearly with the count
        return (
            head + f"memory is what fails, not time: no strategy on up to {top_devices} devices fits "
            f"{limit / gib:.3g} GiB per device (the least memory, on {top_devices} devices, is "
            f"{need / gib:.3g} GiB: {label}). Smallest changes: about {more} devices (a larger cluster), "
            + memory_fixes
        )
    best_s, best_k, label = fastest_fit
    return (
        head + f"time is what fails: the fastest strategy that fits {limit / gib:.3g} GiB per device takes "
        f"{best_s:.4g} s on {best_k} devices ({label}), {best_s / target_s:.2f}x the target. "
        f"Smallest changes: a target of {best_s:.4g} s or more, or a larger cluster"
    )


def subgraph(graph: OpGraph, ops: Sequence[str | int], *, name: str | None = None) -> OpGraph:
    """The operators ``ops`` (names or indices) and the edges among them, as a graph of their own."""
    idx = []
    for x in ops:
        if isinstance(x, str):
            if x not in graph.index:
                raise InvalidInputError(f"stage ops: {x!r} is not an operator of graph {graph.name!r}")
            idx.append(graph.index[x])
        else:
            if not 0 <= int(x) < graph.num_ops:
                raise InvalidInputError(f"stage ops: index {x} outside 0..{graph.num_ops - 1}")
            idx.append(int(x))
    if not idx:
        raise InvalidInputError("stage ops: empty; give at least one operator")
    keep = sorted(set(idx))
    new = {v: k for k, v in enumerate(keep)}
    edges = tuple(
        Edge(src=new[e.src], dst=new[e.dst], bytes=e.bytes)
        for e in graph.edges
        if e.src in new and e.dst in new
    )
    return OpGraph(
        name=name or f"{graph.name}[{len(keep)} ops]",
        ops=tuple(graph.ops[v] for v in keep),
        edges=edges,
        meta=graph.meta,
    )


def stage_modes(
    graph: OpGraph,
    cluster: Cluster,
    stage_ops: Sequence[str | int],
    devices_per_stage: int,
    *,
    microbatches: int = 1,
    epsilon: float = 0.02,
    dtype: str = "bf16",
    memory_limit: float | None = None,
) -> list[tuple[float, float, dict[str, str]]]:
    """Alternative (time, memory) modes of one pipeline stage, for a scheduler choosing per stage.

    The stage's operators are solved as a graph of their own on ``devices_per_stage`` devices. With
    ``microbatches=1`` the time is the stage's F+I+W time of one micro-batch plus its collectives
    (the gradient synchronisation included, which a pipeline pays once per iteration: an
    over-estimate per micro-batch); the memory counts one micro-batch of activations plus the
    stage's training state.

    Returns
    -------
    list of (time_s, memory_bytes, strategy)
        Fastest first; ``strategy`` maps operator name to configuration name. Points above
        ``memory_limit`` are dropped.
    """
    sub = subgraph(graph, stage_ops)
    f = frontier(
        sub, cluster, devices=devices_per_stage, microbatches=microbatches, epsilon=epsilon, dtype=dtype
    )
    return [
        (p.time_s, p.memory_bytes, p.strategy_dict)
        for p in f.points
        if memory_limit is None or p.memory_bytes <= memory_limit
    ]
