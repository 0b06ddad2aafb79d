"""The first level of the bi-level method: merge a model's operators into op groups.

An operator DAG of thousands of nodes times micro-batches times three passes is far too large for an
exact solver. The merging heuristic coarsens it into a few op groups that become the stages of a
free-placement scheduling problem, which the second level (``parplan.solve``) solves exactly:

1. lay the operators out in a locality-preserving topological order (after an op, its ready
   successors come first, so chains and branches stay together and few edges are cut);
2. cut that order into contiguous groups minimizing the largest group work (exact dynamic program,
   ``parplan.cost.pipeline.balanced_partition``): contiguous segments of a topological order always
   form an acyclic quotient graph, so the coarse problem is again a DAG;
3. add groups while one does not fit a device's memory (parameters, gradients, optimizer state and
   one micro-batch's activations).

The quotient edges carry the bytes of every producer whose output crosses the cut; with free
placement their transfer time counts only when the solver puts the two groups on different devices.
"""

from __future__ import annotations

from collections.abc import Sequence

from parplan.cluster import Cluster
from parplan.cost.compute import CostModel
from parplan.cost.memory import training_state_bytes
from parplan.cost.pipeline import balanced_partition, stage_from_ops
from parplan.errors import InfeasibleError, InvalidInputError
from parplan.graph.ops import OpGraph
from parplan.problem import Device, Microbatch, PipelineProblem, StageEdge


def group_label(names: Sequence[str]) -> str:
    """A group's name from its ops' module paths: their common prefix (``user.layers.0``), else the
    top-level modules it spans (``user+item``), else its first op (``add_3..``) for fx-made names."""
    if len(names) == 1:
        return names[0]
    paths = [n.split(".") for n in names if "." in n]
    if not paths:
        return f"{names[0]}.."
    common: list[str] = []
    for parts in zip(*paths, strict=False):
        if len(set(parts)) != 1:
            break
        common.append(parts[0])
    if common:
        return ".".join(common)
    tops = list(dict.fromkeys(p[0] for p in paths))
    return "+".join(tops) if len(tops) <= 3 else f"{tops[0]}..{tops[-1]}"


def locality_order(graph: OpGraph) -> tuple[int, ...]:
    """A topological order that keeps each op's ready successors right after it (DFS-like Kahn)."""
    indeg = [len(p) for p in graph.preds]
    stack = [i for i in reversed(range(graph.num_ops)) if indeg[i] == 0]
    order: list[int] = []
    while stack:
        i = stack.pop()
        order.append(i)
        for j in reversed(graph.succs[i]):
            indeg[j] -= 1
            if indeg[j] == 0:
                stack.append(j)
    return tuple(order)


def merge_ops(graph: OpGraph, work: Sequence[float], num_groups: int) -> tuple[tuple[int, ...], ...]:
    """Coarsen ``graph`` into ``num_groups`` op groups of balanced ``work`` (one value per op).

    Returns the groups as tuples of op indices; group ``g`` only feeds groups ``> g``.
    """
    n = graph.num_ops
    if not 1 <= num_groups <= n:
        raise InvalidInputError(f"--groups: must be between 1 and the {n} operators, got {num_groups}")
    if len(work) != n:
        raise InvalidInputError(f"merge: {len(work)} work values for {n} operators")
    order = locality_order(graph)
    row = [float(work[i]) for i in order]
    bounds = balanced_partition([row] * num_groups)
    return tuple(tuple(order[bounds[g] : bounds[g + 1]]) for g in range(num_groups))


def _default_cluster(devices: int) -> Cluster:
    from parplan.cluster_io import load_cluster

    for name in ("8xh100", "2x8xh100"):
        c = load_cluster(name)
        if devices <= c.num_devices:
            return c.subset(devices)
    raise InvalidInputError(f"--devices {devices}: more than the largest preset; give --cluster FILE")


def graph_problem(
    graph: OpGraph,
    *,
    devices: int,
    microbatches: int = 1,
    cluster: str | Cluster | None = None,
    dtype: str = "bf16",
    groups: int | None = None,
    memory_limit: float | None = None,
    split_backward: bool = True,
    gemm_dtype: str | None = None,
) -> PipelineProblem:
    """A free-placement scheduling problem from any operator DAG, after merging ops into groups.

    Parameters
    ----------
    graph
        Any operator DAG (MoE and multimodal models branch).
    devices
        Devices the groups may be placed on (the first ``devices`` of the cluster).
    microbatches
        Micro-batches per step.
    cluster
        Preset name, file, or Cluster; default H100s (8 per node).
    groups
        Op groups after merging; default ``min(ops, 2 * devices)``. ``groups == ops`` is no merging.
    memory_limit
        Bytes per device; default each device's memory.
    gemm_dtype
        ``"fp8"``: float8 training (the linear layers' GEMMs at the fp8 peak, see
        :class:`parplan.cost.compute.CostModel`).

    Raises
    ------
    InfeasibleError
        When an operator alone does not fit a device.
    """
    from parplan.cluster_io import load_cluster

    if devices < 1:
        raise InvalidInputError(f"--devices: must be >= 1, got {devices}")
    if microbatches < 1:
        raise InvalidInputError(f"--microbatches: must be >= 1, got {microbatches}")
    if isinstance(cluster, Cluster):
        cl = cluster
    elif cluster is None:
        cl = _default_cluster(devices)
    else:
        cl = load_cluster(cluster)
    if devices > cl.num_devices:
        raise InvalidInputError(f"--devices {devices}: cluster {cl.name!r} has only {cl.num_devices}")
    cl = cl.subset(devices) if devices < cl.num_devices else cl
    model = CostModel(cl, dtype, gemm_dtype=gemm_dtype)
    work = [sum(model.op_time(op, 0, k) for k in ("F", "I", "W")) for op in graph.ops]
    num_groups = groups if groups is not None else min(graph.num_ops, 2 * devices)
    capacity = memory_limit if memory_limit is not None else min(d.memory_bytes for d in cl.devices)

    def need(ops: Sequence[int]) -> float:
        params = sum(graph.ops[i].param_bytes for i in ops)
        acts = sum(graph.ops[i].act_bytes for i in ops)
        return training_state_bytes(params, dtype=dtype).total + acts

    for i, op in enumerate(graph.ops):
        if need([i]) > capacity:
            raise InfeasibleError(
                f"operator {op.name!r} needs {need([i]) / 2**30:.2f} GiB (state + one micro-batch of "
                f"activations) but a device holds {capacity / 2**30:.2f} GiB: shard it first "
                "(parplan frontier) or raise --memory-limit"
            )
    while True:
        parts = merge_ops(graph, work, num_groups)
        if all(need(p) <= capacity for p in parts) or num_groups == graph.num_ops:
            break
        num_groups = min(graph.num_ops, num_groups + max(1, num_groups // 4))
    group_of = {i: g for g, p in enumerate(parts) for i in p}

    hetero = not cl.is_homogeneous
    stages = [
        stage_from_ops(
            graph,
            part,
            model,
            index=g,
            device=None,
            name=f"g{g}[{group_label([graph.ops[i].name for i in part])}]",
            num_devices=devices if hetero else 0,
            split_backward=split_backward,
            dtype=dtype,
        )
        for g, part in enumerate(parts)
    ]
    # A producer's output crosses to another group once, however many ops there consume it.
    sent: dict[tuple[int, int], float] = {}
    for i, op in enumerate(graph.ops):
        for j in graph.succs[i]:
            b = group_of[j]
            if b != group_of[i]:
                nbytes = graph.edge_bytes[(i, j)] or op.out_bytes
                sent[(i, b)] = max(sent.get((i, b), 0.0), nbytes)
    crossing: dict[tuple[int, int], float] = {}
    for (i, b), nbytes in sent.items():
        key = (group_of[i], b)
        crossing[key] = crossing.get(key, 0.0) + nbytes
    link = cl.group_link(range(devices))
    edges = tuple(
        StageEdge(src=a, dst=b, comm=link.time(nbytes) if nbytes > 0 else 0.0, bytes=nbytes)
        for (a, b), nbytes in sorted(crossing.items())
    )
    everything = tuple(range(len(parts)))
    return PipelineProblem(
        devices=tuple(
            Device(index=d, name=cl.devices[d].name, memory_limit=memory_limit or cl.devices[d].memory_bytes)
            for d in range(devices)
        ),
        stages=tuple(stages),
        edges=edges,
        microbatches=tuple(Microbatch(index=j, stages=everything) for j in range(microbatches)),
        split_backward=split_backward,
        placement="free",
        time_unit="s",
        memory_unit="bytes",
        name=f"{graph.name} ({graph.num_ops} ops -> {len(parts)} groups) on {devices} devices m={microbatches}",
        source={
            "kind": "graph",
            "graph": graph.name,
            "num_ops": graph.num_ops,
            "groups": len(parts),
            "cluster": cl.name,
            "devices": devices,
            "microbatches": microbatches,
            **({"gemm_dtype": gemm_dtype} if gemm_dtype is not None else {}),
        },
    )
