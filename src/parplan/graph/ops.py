"""Operator graphs: operators with their FLOPs, memory traffic and memory, and tensor edges.

An OpGraph describes ONE micro-batch of a model's training step (forward, backward-input and
backward-weight work per operator). It is device-independent: the cost model turns it into times on
a cluster. Records refer to each other by integer index; names are for display and files.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from parplan.errors import InvalidInputError

#: Operator kinds the cost model and the frontier understand. ``comm`` kinds (all-to-all dispatch
#: and combine of mixture-of-experts layers) move data between devices instead of computing.
OP_KINDS = (
    "embedding",
    "linear",
    "attention",
    "norm",
    "elementwise",
    "loss",
    "conv",
    "pool",
    "moe_router",
    "moe_experts",
    "all_to_all",
    "fusion",
    "other",
)


#: The non-negative numeric fields of an Op (costs and sizes), in file order.
NUMERIC_FIELDS = (
    "fwd_flops",
    "bwd_input_flops",
    "bwd_weight_flops",
    "fwd_bytes",
    "bwd_input_bytes",
    "bwd_weight_bytes",
    "param_bytes",
    "act_bytes",
    "out_bytes",
)


def _nonneg(where: str, value: float) -> None:
    if not value >= 0:
        raise InvalidInputError(f"{where}: must be >= 0, got {value}")


@dataclass(frozen=True, slots=True, kw_only=True)
class Op:
    """One operator of a model, costed for one micro-batch.

    Parameters
    ----------
    name
        Unique name, e.g. ``"layer3.attn.qkv"``.
    kind
        One of ``OP_KINDS``.
    fwd_flops, bwd_input_flops, bwd_weight_flops
        Floating-point operations of the forward, backward-input and backward-weight passes.
    fwd_bytes, bwd_input_bytes, bwd_weight_bytes
        Memory traffic (bytes read + written) of each pass, for the roofline.
    param_bytes
        Bytes of this operator's parameters (gradients and optimizer state follow from it).
    act_bytes
        Bytes stored by the forward for the backward (freed by the backward).
    out_bytes
        Bytes of the output tensor (what an outgoing edge carries).
    layer
        Index of the repeated block this operator belongs to (None for embeddings, heads, ...).
    attrs
        Shape facts the strategy search needs, as sorted (key, value) pairs. Keys used: ``batch``
        (micro-batch size), ``seq`` (tokens per sample), ``in_features``, ``out_features``,
        ``tp`` (``"column"`` or ``"row"``: which Megatron split fits this linear), ``heads``,
        ``head_dim``, ``kv_heads`` (grouped-query attention), ``experts`` (routed experts),
        ``top_k``, ``channels_in``, ``channels_out``, ``spatial`` (H*W of a conv output),
        ``kernel`` and ``stride`` (conv and pool), ``tied`` (name of the op that owns this op's
        weights, e.g. a head tied to ``embed``: its ``param_bytes`` are 0).
    """

    name: str
    kind: str
    fwd_flops: float = 0.0
    bwd_input_flops: float = 0.0
    bwd_weight_flops: float = 0.0
    fwd_bytes: float = 0.0
    bwd_input_bytes: float = 0.0
    bwd_weight_bytes: float = 0.0
    param_bytes: float = 0.0
    act_bytes: float = 0.0
    out_bytes: float = 0.0
    layer: int | None = None
    attrs: tuple[tuple[str, Any], ...] = ()

    def __post_init__(self) -> None:
        if not self.name:
            raise InvalidInputError("op.name: must not be empty")
        if self.kind not in OP_KINDS:
            raise InvalidInputError(
                f"op {self.name!r}.kind: unknown {self.kind!r}; use one of {', '.join(OP_KINDS)}"
            )
        for f in NUMERIC_FIELDS:
            _nonneg(f"op {self.name!r}.{f}", getattr(self, f))

    @property
    def attr(self) -> Mapping[str, Any]:
        return dict(self.attrs)

    @property
    def total_flops(self) -> float:
        return self.fwd_flops + self.bwd_input_flops + self.bwd_weight_flops

    @property
    def is_comm(self) -> bool:
        return self.kind == "all_to_all"

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "kind": self.kind}
        for f in NUMERIC_FIELDS:
            out[f] = getattr(self, f)
        out["layer"] = self.layer
        out["attrs"] = dict(self.attrs)
        return out


def make_attrs(**kwargs: Any) -> tuple[tuple[str, Any], ...]:
    """Sorted (key, value) pairs for ``Op.attrs`` (None values dropped)."""
    return tuple(sorted((k, v) for k, v in kwargs.items() if v is not None))


@dataclass(frozen=True, slots=True, kw_only=True)
class Edge:
    """A tensor of ``bytes`` flowing from op ``src`` to op ``dst`` (indices into ``OpGraph.ops``)."""

    src: int
    dst: int
    bytes: float = 0.0


@dataclass(frozen=True, kw_only=True)
class OpGraph:
    """A model's operator DAG for one micro-batch.

    ``meta`` records how the graph was built (model name, ``microbatch_size``, ``seq_len``,
    ``dtype``, ``num_layers``, ...), as sorted (key, value) pairs.
    """

    name: str
    ops: tuple[Op, ...]
    edges: tuple[Edge, ...]
    meta: tuple[tuple[str, Any], ...] = field(default=())

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Unique names, edges between existing ops, no self loops or repeats, acyclic."""
        if not self.ops:
            raise InvalidInputError(f"graph {self.name!r}: has no operators")
        names: dict[str, int] = {}
        for i, op in enumerate(self.ops):
            if op.name in names:
                raise InvalidInputError(
                    f"graph {self.name!r}.ops[{i}].name: {op.name!r} repeats ops[{names[op.name]}]"
                )
            names[op.name] = i
        n = len(self.ops)
        seen = set()
        for k, e in enumerate(self.edges):
            if not (0 <= e.src < n and 0 <= e.dst < n):
                raise InvalidInputError(
                    f"graph {self.name!r}.edges[{k}]: {e.src}->{e.dst} names an op outside 0..{n - 1}"
                )
            if e.src == e.dst:
                raise InvalidInputError(
                    f"graph {self.name!r}.edges[{k}]: self loop on {self.ops[e.src].name!r}"
                )
            if (e.src, e.dst) in seen:
                raise InvalidInputError(f"graph {self.name!r}.edges[{k}]: {e.src}->{e.dst} repeated")
            seen.add((e.src, e.dst))
            _nonneg(f"graph {self.name!r}.edges[{k}].bytes", e.bytes)
        _ = self.topo_order

    # ------------------------------------------------------------------ lookups
    @cached_property
    def index(self) -> Mapping[str, int]:
        return {op.name: i for i, op in enumerate(self.ops)}

    @cached_property
    def succs(self) -> tuple[tuple[int, ...], ...]:
        out: list[list[int]] = [[] for _ in self.ops]
        for e in self.edges:
            out[e.src].append(e.dst)
        return tuple(tuple(x) for x in out)

    @cached_property
    def preds(self) -> tuple[tuple[int, ...], ...]:
        out: list[list[int]] = [[] for _ in self.ops]
        for e in self.edges:
            out[e.dst].append(e.src)
        return tuple(tuple(x) for x in out)

    @cached_property
    def edge_bytes(self) -> Mapping[tuple[int, int], float]:
        return {(e.src, e.dst): e.bytes for e in self.edges}

    @cached_property
    def topo_order(self) -> tuple[int, ...]:
        """A topological order (Kahn, smallest index first: stable for chains)."""
        import heapq

        indeg = [0] * len(self.ops)
        for e in self.edges:
            indeg[e.dst] += 1
        heap = [i for i, d in enumerate(indeg) if d == 0]
        heapq.heapify(heap)
        order = []
        succs: list[list[int]] = [[] for _ in self.ops]
        for e in self.edges:
            succs[e.src].append(e.dst)
        while heap:
            i = heapq.heappop(heap)
            order.append(i)
            for j in succs[i]:
                indeg[j] -= 1
                if indeg[j] == 0:
                    heapq.heappush(heap, j)
        if len(order) != len(self.ops):
            cyc = [self.ops[i].name for i, d in enumerate(indeg) if d > 0][:5]
            raise InvalidInputError(f"graph {self.name!r}: has a cycle through {cyc}")
        return tuple(order)

    @property
    def num_ops(self) -> int:
        return len(self.ops)

    @property
    def meta_dict(self) -> Mapping[str, Any]:
        return dict(self.meta)

    @property
    def param_bytes(self) -> float:
        return sum(op.param_bytes for op in self.ops)

    @property
    def total_flops(self) -> float:
        return sum(op.total_flops for op in self.ops)

    def __iter__(self) -> Iterator[Op]:
        return iter(self.ops)

    def is_chain(self) -> bool:
        return all(len(p) <= 1 for p in self.preds) and all(len(s) <= 1 for s in self.succs)
