"""Pipeline problems from a model graph and a cluster: balanced stage partition, costs, memory, comm.

The graph's operators are laid out in a topological order and cut into contiguous parts, one per
stage, so that the largest stage time (F + B on the stage's device) is as small as possible; an
exact dynamic program finds the optimum. When the graph has layers (``Op.layer``), cuts fall only
between whole layers: operators outside any layer join their neighbour (embeddings the first layer,
the final norm, head and loss the last one). Stage placement and micro-batch routes are those of
``parplan.synthetic`` (linear, interleaved, v, bidirectional, free).
"""

from __future__ import annotations

import bisect
import dataclasses
import heapq
import itertools
from collections.abc import Sequence
from typing import Any

from parplan.cluster import DTYPES, Cluster
from parplan.cost.compute import CostModel, KernelEfficiency, kernel_efficiency
from parplan.cost.memory import training_state_bytes
from parplan.cost.profile import Profile
from parplan.errors import InvalidInputError
from parplan.graph.ops import OpGraph
from parplan.placement import chains, resolve_chunks, routes, stage_device
from parplan.problem import Device, Microbatch, PipelineProblem, Stage, StageEdge

MODEL_PLACEMENTS = ("linear", "interleaved", "v", "bidirectional", "free")


# --------------------------------------------------------------------------- partition
def balanced_partition(part_costs: Sequence[Sequence[float]]) -> tuple[int, ...]:
    """Cut a sequence of units into contiguous, non-empty parts minimizing the largest part cost.

    Part ``j`` placed on its own device costs ``sum(part_costs[j][u] for u in its units)``, so
    heterogeneous devices are handled exactly. Dynamic program over prefix sums:
    ``best[j][i] = min_t max(best[j-1][t], cost_j(t..i))``; since ``best[j-1][t]`` rises and
    ``cost_j(t..i)`` falls with ``t``, the optimal ``t`` sits where the two cross and is found by
    bisection: ``O(parts * units * log units)``. With different rows (devices of different speeds)
    ``best[j-1]`` need not rise, and every ``t`` is scanned: ``O(parts * units^2)``.

    Parameters
    ----------
    part_costs
        One row per part, each with one non-negative cost per unit (all rows the same length).

    Returns
    -------
    tuple[int, ...]
        Boundaries ``b`` of length ``parts + 1``: part ``j`` holds units ``b[j]:b[j+1]``.
    """
    parts = len(part_costs)
    if parts < 1:
        raise InvalidInputError("partition: needs at least one part")
    n = len(part_costs[0])
    if any(len(row) != n for row in part_costs):
        raise InvalidInputError("partition: every part needs one cost per unit")
    if n < parts:
        raise InvalidInputError(f"partition: {parts} parts need at least {parts} units, got {n}")
    prefix = []
    for row in part_costs:
        acc = [0.0]
        for c in row:
            if not c >= 0:
                raise InvalidInputError(f"partition: unit costs must be >= 0, got {c}")
            acc.append(acc[-1] + c)
        prefix.append(acc)
    # The bisection needs best[j-1][t] to rise with t. That holds when every part costs the same
    # (an emptied last part can be refilled by splitting another at no cost), not across devices
    # of different speeds, where we scan every t: O(parts * units^2).
    same_rows = all(row == prefix[0] for row in prefix)
    if not same_rows:
        import numpy as np
    inf = float("inf")
    # best[i]: optimum for the first i units in j+1 parts; choice[j][i]: start of part j.
    best = [inf] * (n + 1)
    for i in range(1, n + 1):
        best[i] = prefix[0][i]
    choice: list[list[int]] = [[0] * (n + 1)]
    for j in range(1, parts):
        pj = prefix[j]
        if not same_rows:
            best_np, pj_np = np.asarray(best), np.asarray(pj)
        new = [inf] * (n + 1)
        ch = [0] * (n + 1)
        for i in range(j + 1, n + 1):
            lo, hi = j, i - 1  # part j holds units t..i-1, t in [j, i-1]

            def seg(t: int, pj: list[float] = pj, i: int = i) -> float:
                return pj[i] - pj[t]

            if same_rows:
                # smallest t with best[t] >= seg(t): the crossing point
                t_star = lo + bisect.bisect_left(range(lo, hi + 1), True, key=lambda t: best[t] >= seg(t))
                cands = range(max(lo, t_star - 1), min(hi, t_star) + 1)
                value, t_best = min((max(best[t], seg(t)), t) for t in cands)
            else:  # vectorized scan of every t in [lo, hi]
                vals = np.maximum(best_np[lo:i], pj_np[i] - pj_np[lo:i])
                k = int(np.argmin(vals))
                value, t_best = float(vals[k]), lo + k
            new[i], ch[i] = value, t_best
        best = new
        choice.append(ch)
    bounds = [n]
    i = n
    for j in range(parts - 1, 0, -1):
        i = choice[j][i]
        bounds.append(i)
    bounds.append(0)
    return tuple(reversed(bounds))


def partition_units(graph: OpGraph) -> tuple[tuple[tuple[int, ...], ...], str]:
    """Group the graph's operators into the units stages are made of, in a topological order.

    Returns (units as tuples of op indices, ``"layer"`` or ``"op"``). With layers, every unit is one
    layer plus the layer-less ops next to it; when the layers are not contiguous in any order this
    finds (or the graph has no layers), every op is its own unit.
    """
    ops = graph.ops
    eff: dict[int, int] = {}
    for i in graph.topo_order:
        layer = ops[i].layer
        eff[i] = layer if layer is not None else max((eff[p] for p in graph.preds[i]), default=-1)
    # Kahn's algorithm preferring lower layers, so that each layer's ops come out together.
    indeg = [len(p) for p in graph.preds]
    heap = [(eff[i], i) for i in range(len(ops)) if indeg[i] == 0]
    heapq.heapify(heap)
    order: list[int] = []
    while heap:
        _, i = heapq.heappop(heap)
        order.append(i)
        for j in graph.succs[i]:
            indeg[j] -= 1
            if indeg[j] == 0:
                heapq.heappush(heap, (eff[j], j))
    has_layers = any(op.layer is not None for op in ops)
    if has_layers:
        groups: list[list[int]] = []
        keys: list[int] = []
        for i in order:
            if keys and keys[-1] == eff[i]:
                groups[-1].append(i)
            else:
                groups.append([i])
                keys.append(eff[i])
        if len(set(keys)) == len(keys):  # every layer contiguous
            if len(groups) > 1 and keys[0] == -1:  # leading layer-less ops join the first layer
                groups[1] = groups[0] + groups[1]
                groups.pop(0)
            return tuple(tuple(g) for g in groups), "layer"
    return tuple((i,) for i in order), "op"


# --------------------------------------------------------------------------- problem
def _check_int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InvalidInputError(f"--{name}: must be an integer >= {minimum}, got {value!r}")
    return value


def check_profile(profile: Profile, graph: OpGraph, dtype: str) -> None:
    """Refuse a profile measured on other shapes, in another dtype, or of another model."""
    meta = graph.meta_dict
    for key in ("microbatch_size", "seq_len"):
        want = meta.get(key)
        got = getattr(profile, key)
        if want is not None and got is not None and want != got:
            raise InvalidInputError(
                f"profile.{key}: measured with {got}, but the model has {key} {want}; "
                f"re-run parplan profile with the same --{key.replace('_', '-')}"
            )
    if profile.dtype != dtype:
        raise InvalidInputError(
            f"profile.dtype: measured in {profile.dtype}, but the plan uses {dtype}; "
            f"use --dtype {profile.dtype} or re-profile"
        )
    unknown = [name for name, _ in profile.ops if name not in graph.index]
    if unknown:
        raise InvalidInputError(
            f"profile.ops: {len(unknown)} op(s) not in model {graph.name!r}, e.g. {unknown[:3]}; "
            "the profile belongs to another model"
        )


def stage_from_ops(
    graph: OpGraph,
    op_indices: Sequence[int],
    model: CostModel,
    *,
    index: int,
    name: str,
    device: int | None,
    num_devices: int = 0,
    split_backward: bool = True,
    dtype: str = "bf16",
    optimizer: str = "adam",
) -> Stage:
    """The stage (op group) running ``op_indices`` of ``graph``: pass times, memory, op names.

    Times are those on ``device`` (device 0 when unplaced); ``num_devices > 0`` adds the times on
    each of the first ``num_devices`` devices (heterogeneous free placement). ``act_mem`` is the
    stored activations of one micro-batch, ``wgrad_mem`` the inputs of its weight-bearing ops (kept
    from I until W, capped at ``act_mem``), ``param_mem`` parameters + gradients + optimizer state.
    """
    ops = [graph.ops[i] for i in op_indices]
    where = 0 if device is None else device
    device_costs = tuple(model.stage_times(ops, d, split_backward=split_backward) for d in range(num_devices))
    act = sum(model.act_bytes(op, where) for op in ops)
    wgrad = 0.0
    if split_backward:
        inputs = sum(
            graph.edge_bytes[(p, i)] or graph.ops[p].out_bytes
            for i in op_indices
            if graph.ops[i].param_bytes > 0
            for p in graph.preds[i]
        )
        wgrad = min(act, inputs)
    params = sum(op.param_bytes for op in ops)
    return Stage(
        index=index,
        name=name,
        cost=model.stage_times(ops, where, split_backward=split_backward),
        device=device,
        ops=tuple(op.name for op in ops),
        act_mem=act,
        wgrad_mem=wgrad,
        param_mem=training_state_bytes(params, dtype=dtype, optimizer=optimizer).total,
        device_costs=device_costs,
    )


def model_problem(
    graph: OpGraph,
    cluster: Cluster,
    *,
    pp: int,
    microbatches: int,
    chunks: int | None = None,
    placement: str = "linear",
    dtype: str = "bf16",
    profile: Profile | None = None,
    split_backward: bool = True,
    memory_limit: float | None = None,
    efficiency: KernelEfficiency | None = None,
    optimizer: str = "adam",
    gemm_dtype: str | None = None,
) -> PipelineProblem:
    """Build the pipeline problem of training ``graph`` on the first ``pp`` devices of ``cluster``.

    Parameters
    ----------
    graph
        The model's operator graph for one micro-batch.
    cluster
        Devices and links; stages go on devices ``0 .. pp-1``.
    pp
        Pipeline devices.
    microbatches
        Micro-batches per training step.
    chunks
        Stages per device: default 1 (linear, free), 2 (interleaved); v and bidirectional always 2.
    placement
        ``linear`` (pp stages, stage s on device s), ``interleaved`` (pp*chunks stages, device s mod
        pp), ``v`` (2pp stages, s on device s then 2pp-1-s), ``bidirectional`` (the model cut into
        pp parts run as two chains, down on devices 0..pp-1 and up on pp-1..0, half the
        micro-batches each: every device holds two parts' parameters) or ``free`` (pp*chunks stages
        without a device; ``device_costs`` per device on heterogeneous clusters).
    dtype
        Compute dtype (peak FLOP/s and training-state bytes).
    profile
        Measured op times that replace the roofline for the ops they list.
    split_backward
        Give stages I and W times (zero-bubble schedules) or only B.
    memory_limit
        Bytes per device; default each device's memory.
    efficiency
        Fractions of peak for the roofline.
    optimizer
        Optimizer whose state counts in ``param_mem`` (see ``parplan.cost.memory``).
    gemm_dtype
        ``"fp8"``: float8 training, the linear layers' GEMMs at the fp8 peak with their casts
        (:class:`parplan.cost.compute.CostModel`); ``dtype`` stays the storage and other ops' dtype.

    Returns
    -------
    PipelineProblem
        Times in seconds, memory in bytes. Per stage: ``act_mem`` = stored activations of one
        micro-batch, ``wgrad_mem`` = inputs of its weight-bearing ops (kept from I until W, capped at
        ``act_mem``), ``param_mem`` = parameters + gradients + optimizer state. Edge ``comm`` = p2p
        time of the bytes crossing the cut on the link between the two devices (for ``free``: on the
        slowest link among the pp devices). ``source`` records the partition.
    """
    pp = _check_int("pp", pp, 1)
    microbatches = _check_int("microbatches", microbatches, 1)
    if placement not in MODEL_PLACEMENTS:
        raise InvalidInputError(
            f"--placement: unknown {placement!r}; choose one of {', '.join(MODEL_PLACEMENTS)}"
        )
    if dtype not in DTYPES:
        raise InvalidInputError(f"--dtype: unknown {dtype!r}; use one of {', '.join(DTYPES)}")
    if pp > cluster.num_devices:
        raise InvalidInputError(
            f"--pp {pp}: cluster {cluster.name!r} has only {cluster.num_devices} devices; "
            "reduce --pp or use a bigger cluster (e.g. 2x8xh100)"
        )
    if memory_limit is not None and not memory_limit > 0:
        raise InvalidInputError(f"--memory-limit: must be > 0 bytes, got {memory_limit}")
    if placement == "bidirectional" and microbatches % 2:
        raise InvalidInputError(
            f"--microbatches: bidirectional placement splits micro-batches between two directions; "
            f"{microbatches} is odd, use an even number"
        )
    chunks = resolve_chunks(placement, chunks)
    if profile is not None:
        check_profile(profile, graph, dtype)
    model = CostModel(cluster, dtype, efficiency, profile, gemm_dtype)

    num_parts = pp if placement == "bidirectional" else pp * chunks
    units, unit_kind = partition_units(graph)
    if len(units) < num_parts:
        what = "layers" if unit_kind == "layer" else "operators"
        stages_text = (
            f"--pp {pp} = {num_parts} stages per direction"
            if placement == "bidirectional"
            else f"--pp {pp} x chunks {chunks} = {num_parts} stages"
        )
        fix = "reduce --pp" + (" or --chunks" if chunks > 1 and placement == "interleaved" else "")
        fix += " or add --num-layers" if unit_kind == "layer" else ""
        raise InvalidInputError(f"{stages_text} but {graph.name} has only {len(units)} {what}: {fix}")

    # Devices each part runs on (the partition balances the worst of them).
    def part_devices(j: int) -> tuple[int, ...]:
        if placement == "free":
            return tuple(range(pp))
        # bidirectional: part j runs down on stage j and up on stage pp + j
        stages_of_part = (j, pp + j) if placement == "bidirectional" else (j,)
        return tuple(sorted({stage_device(placement, pp, s) or 0 for s in stages_of_part}))

    # Unit costs F + B per device, computed once per distinct device type.
    cache: dict[Any, list[float]] = {}
    unit_cost: dict[int, list[float]] = {}
    for d in range(pp):
        spec = cluster.devices[d]
        key = (spec.peak_flops, spec.memory_bandwidth_Bps, model.uses_profile(d))
        if key not in cache:
            cache[key] = [
                sum(model.op_time(graph.ops[i], d, k) for i in unit for k in ("F", "I", "W"))
                for unit in units
            ]
        unit_cost[d] = cache[key]
    rows = []
    for j in range(num_parts):
        devs = part_devices(j)
        if placement == "free":
            rows.append([sum(unit_cost[d][u] for d in devs) / len(devs) for u in range(len(units))])
        else:
            rows.append([max(unit_cost[d][u] for d in devs) for u in range(len(units))])
    bounds = balanced_partition(rows)
    part_ops = [tuple(i for unit in units[bounds[j] : bounds[j + 1]] for i in unit) for j in range(num_parts)]
    part_of = {i: j for j, ops_ in enumerate(part_ops) for i in ops_}

    # Bytes crossing each cut: every producer before the cut with a consumer after it sends its
    # output tensor once (the largest of its crossing edges).
    cut_bytes = [0.0] * max(num_parts - 1, 0)
    for i, op in enumerate(graph.ops):
        out = {v: graph.edge_bytes[(i, v)] or op.out_bytes for v in graph.succs[i]}
        if not out:
            continue
        for c in range(part_of[i], max(part_of[v] for v in out)):
            cut_bytes[c] += max(b for v, b in out.items() if part_of[v] > c)

    # Stages.
    stage_part = list(range(pp)) * 2 if placement == "bidirectional" else list(range(num_parts))
    stage_device_of = [stage_device(placement, pp, s) for s in range(len(stage_part))]
    stages = []
    hetero = not cluster.subset(pp).is_homogeneous
    for s, (j, dev) in enumerate(zip(stage_part, stage_device_of)):
        first, last = graph.ops[part_ops[j][0]], graph.ops[part_ops[j][-1]]
        stages.append(
            stage_from_ops(
                graph,
                part_ops[j],
                model,
                index=s,
                device=dev,
                name=f"stage{s}[{first.name}..{last.name}]"
                if first is not last
                else f"stage{s}[{first.name}]",
                num_devices=pp if hetero else 0,
                split_backward=split_backward,
                dtype=dtype,
                optimizer=optimizer,
            )
        )

    # Edges and micro-batch routes.
    slow = cluster.group_link(range(pp))

    def comm(src: int, dst: int, nbytes: float) -> float:
        a, b = stage_device_of[src], stage_device_of[dst]
        if a is None or b is None:
            return slow.time(nbytes) if nbytes > 0 else 0.0
        return model.p2p_time(a, b, nbytes)

    num_stages = len(stage_part)
    edges = sorted(
        (
            StageEdge(src=a, dst=b, comm=comm(a, b, cut_bytes[stage_part[a]]), bytes=cut_bytes[stage_part[a]])
            for chain in chains(placement, num_stages, pp)
            for a, b in itertools.pairwise(chain)
        ),
        key=lambda e: e.src,
    )
    mbs = tuple(
        Microbatch(index=m, stages=route)
        for m, route in enumerate(routes(placement, num_stages, pp, microbatches))
    )

    devices = tuple(
        Device(
            index=d,
            name=cluster.devices[d].name,
            memory_limit=memory_limit if memory_limit is not None else cluster.devices[d].memory_bytes,
        )
        for d in range(pp)
    )
    part_times = [sum(rows[j][u] for u in range(bounds[j], bounds[j + 1])) for j in range(num_parts)]
    return PipelineProblem(
        devices=devices,
        stages=tuple(stages),
        edges=tuple(edges),
        microbatches=mbs,
        split_backward=split_backward,
        placement=placement,
        chunks=chunks,
        time_unit="s",
        memory_unit="bytes",
        name=f"{graph.name} on {cluster.name} pp={pp} m={microbatches} {placement}",
        source={
            "kind": "model",
            "model": graph.name,
            "model_meta": graph.meta_dict,
            "cluster": cluster.name,
            "pp": pp,
            "microbatches": microbatches,
            "placement": placement,
            "chunks": chunks,
            "dtype": dtype,
            **({"gemm_dtype": gemm_dtype} if gemm_dtype is not None else {}),
            "optimizer": optimizer,
            "profile": profile is not None,
            "partition_unit": unit_kind,
            "units_per_stage": [bounds[j + 1] - bounds[j] for j in range(num_parts)],
            "max_stage_time_s": max(part_times),
            "efficiency": dataclasses.asdict(efficiency or kernel_efficiency(cluster.devices[0])),
        },
    )
