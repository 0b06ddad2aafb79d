"""Parallel configurations of one operator on a device group, with their time and memory per device.

The device group is the first ``devices`` devices of a cluster, seen as a data-parallel x model-
parallel grid ``d x t = devices``: the model-parallel groups are ``t`` consecutive devices (inside a
node when ``t`` fits one, so tensor-parallel collectives use the fast link), the data-parallel groups
are strided. Every operator runs on the whole group (SPMD); it picks a grid ``(d, t)`` and a split:

========== ============ ============ =========================================================
split       input        output       meaning (t > 1)
========== ============ ============ =========================================================
``rep``     R            R            replicated over the t group (redundant compute)
``seq``     S            S            sequence (token) split: Megatron sequence parallelism
``hid``     H            H            hidden / channel split of an element-wise op
``col``     R / S        H            column-parallel linear (S input: all-gather, SP variant)
``row``     H            R / S        row-parallel linear, all-reduce (or reduce-scatter, SP)
``heads``   H            H            attention heads split (tensor parallel)
``cp``      S            S            context-parallel attention (K/V all-gathered)
``vocab``   R            R / S        vocabulary-parallel embedding
``ep``      E            E            expert parallel (experts spread over the t group)
``a2a``     R/S <-> E                 all-to-all dispatch / combine of a MoE layer
========== ============ ============ =========================================================

A tensor *layout* is ``(d, kind)``: its batch split ``d`` ways and, inside each group of
``t = devices / d``, replicated (``R``), split on hidden/heads/channels (``H``), on the sequence
(``S``) or by expert (``E``). Layouts of adjacent operators that differ cost a resharding
(:func:`reshard_time`). On top of the split, ZeRO stage 0-3 shards training state over the
gradient-synchronisation group and ``rc`` recomputes the forward instead of storing activations.

Cost model (per training iteration; stated once here, used everywhere in the frontier search):

* Compute: ``steps x (F + I + W)`` from :func:`parplan.cost.compute.op_time` on the op scaled to the
  device's share. With ``d``-way data parallelism the batch of every micro-batch is split when
  ``batch % d == 0`` (``steps = microbatches``, activations ``/ d``); otherwise the micro-batches are
  split when ``microbatches % d == 0`` (``steps = microbatches / d``, whole micro-batch activations).
* Communication, with :func:`parplan.cost.comm.collective_time` on the group's links: tensor-parallel
  collectives per micro-batch; gradient all-reduce once per iteration (ZeRO 0/1); ZeRO-2
  reduce-scatter per micro-batch + parameter all-gather per iteration; ZeRO-3 two parameter
  all-gathers (forward, backward) + a reduce-scatter per micro-batch. No overlap with compute.
* Memory per device: parameters, gradients and optimizer state
  (:func:`parplan.cost.memory.training_state_bytes`, Adam, mixed precision) after the split and
  ZeRO sharding, plus the stored activations of ONE micro-batch (micro-batches run one after the
  other: gradient accumulation, no pipelining). The graph's memory is the sum over its operators:
  an upper bound of the peak (every op's state and saved activations alive at the end of the last
  forward), as in TensorOpt. Transient buffers (ZeRO-3 gathers, collective scratch) are ignored.
* Recompute (``rc``) stores the op's input shard instead of its saved activations and runs the
  forward (with its collectives) again in the backward; offered only when that saves memory.
* Layer-level (full) activation checkpointing (``ckpt``, Korthikanti et al. 2022 section 4; only
  for the ``checkpoint_layers`` of :func:`search_space`): every op of the layer runs its forward
  again in the backward and stores nothing, except the layer's entry op, which keeps the layer
  input (2 s b h bytes in 16 bits, split like that op's input); the layer's own activations
  (``recompute_act``) are alive only while it is recomputed, counted once per strategy as
  ``buffers`` (the largest checkpointed layer) by :func:`parplan.frontier.search.memory_breakdown`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any

from parplan.cluster import Cluster
from parplan.cost.compute import check_gemm_dtype
from parplan.cost.memory import MemoryBreakdown
from parplan.cost.profile import OpProfile, Profile
from parplan.errors import InvalidInputError
from parplan.graph.ops import Op, OpGraph

#: Tensor layout kinds inside a model-parallel group (see the module docstring).
LAYOUT_KINDS = ("R", "H", "S", "E")

Layout = tuple[int, str]


def layout_name(layout: Layout) -> str:
    """``"d4.S"`` for a batch split 4 ways, sequence-split in each group."""
    return f"d{layout[0]}.{layout[1]}"


@dataclass(frozen=True, slots=True, kw_only=True)
class OpConfig:
    """One parallel configuration of one operator, costed per iteration on the device group.

    ``name`` reads ``dp{d}.tp{t}.{split}[.z{stage}][.rc]`` (e.g. ``dp2.tp4.col.z1``); ``time_s`` is
    compute plus the op's own collectives, ``mem_bytes`` its training state plus stored activations
    per device (``memory`` splits it by component and totals it exactly); ``in_layout`` /
    ``out_layout`` are the tensor layouts it consumes and produces. ``checkpoint`` marks layer-level
    (full) activation checkpointing: the op stores nothing (its layer's entry op stores the layer
    input), runs its forward again in the backward, and holds ``recompute_act`` bytes meanwhile.
    """

    name: str
    dp: int
    tp: int
    split: str
    zero: int
    recompute: bool
    in_layout: Layout
    out_layout: Layout
    time_s: float
    mem_bytes: float
    compute_s: float
    comm_s: float
    memory: MemoryBreakdown
    checkpoint: bool = False
    recompute_act: float = 0.0


@dataclass(frozen=True, slots=True, kw_only=True)
class _Split:
    """How one split divides the op on a t group and which collectives it needs per micro-batch."""

    name: str
    in_kind: str
    out_kind: str
    compute_div: int
    act_div: int
    param_div: int
    fwd_comm: tuple[tuple[str, float], ...] = ()  # (collective, full bytes per micro-batch)
    bwd_comm: tuple[tuple[str, float], ...] = ()


def _grids(devices: int, mesh: tuple[int, ...] | None) -> tuple[tuple[int, int], ...]:
    if mesh is None:
        return tuple((devices // t, t) for t in range(1, devices + 1) if devices % t == 0)
    if len(mesh) == 1:
        return tuple(sorted({(devices, 1), (1, devices)}))
    a, b = mesh
    return tuple(sorted({(devices, 1), (a, b), (1, devices)}))


@dataclass(frozen=True, kw_only=True)
class SearchSpace:
    """Everything the frontier search needs about one (graph, cluster, device group) instance.

    Build it with :func:`search_space`; ``configs[i]`` lists operator ``i``'s configurations.
    """

    graph: OpGraph
    cluster: Cluster
    devices: int
    microbatches: int
    mesh: tuple[int, ...] | None
    dtype: str
    optimizer: str
    grids: tuple[tuple[int, int], ...]
    batch: int
    configs: tuple[tuple[OpConfig, ...], ...] = field(default=())
    #: Layer-level checkpointing: the op groups (layers) that may be checkpointed as a whole.
    checkpoint_layers: tuple[tuple[int, ...], ...] = ()
    #: Measured per-op times (``parplan profile``) replacing the roofline for the ops they list.
    profile: Profile | None = None
    #: ``"fp8"``: float8 training, the linears' GEMMs at the fp8 peak (:func:`parplan.cost.compute.op_time`).
    gemm_dtype: str | None = None

    @cached_property
    def measured(self) -> dict[str, OpProfile]:
        return dict(self.profile.ops) if self.profile is not None else {}

    @cached_property
    def checkpoint_entry(self) -> dict[int, bool]:
        """Ops of a checkpointable layer -> whether the op stores the layer input (its first reader)."""
        out: dict[int, bool] = {}
        for ops in self.checkpoint_layers:
            members = set(ops)
            entry = next((v for v in ops if any(p not in members for p in self.graph.preds[v])), ops[0])
            for v in ops:
                out[v] = v == entry
        return out

    @cached_property
    def layouts(self) -> tuple[Layout, ...]:
        """Every layout any configuration of this space can produce."""
        out = set()
        for cfgs in self.configs:
            for c in cfgs:
                out.add(c.in_layout)
                out.add(c.out_layout)
        return tuple(sorted(out))

    def split_mode(self, d: int) -> tuple[float, int] | None:
        """(share of each micro-batch a device holds, micro-batch steps per iteration) for dp ``d``."""
        return _split_mode(self.batch, self.microbatches, d)

    def reshard_time(self, src: Layout, dst: Layout, nbytes: float) -> float:
        """Seconds per iteration to turn a tensor of ``nbytes`` (whole micro-batch) from ``src`` to ``dst``.

        Same batch split: gather to ``R`` costs one all-gather in the forward; slicing ``R`` costs one
        all-gather of the gradient in the backward; switching between split kinds costs an
        all-to-all each way. A different batch split costs an all-to-all each way over all devices.
        """
        if src == dst or nbytes <= 0:
            return 0.0
        from parplan.cost.comm import collective_time

        (d1, k1), (d2, k2) = src, dst
        if d1 == d2:
            mode = self.split_mode(d1)
            assert mode is not None  # layouts only come from legal grids
            frac, steps = mode
            t = self.devices // d1
            group = tuple(range(t))
            full = nbytes * frac
            if k1 == "R" or k2 == "R":
                return steps * collective_time(self.cluster, "all_gather", full, group)
            return 2 * steps * collective_time(self.cluster, "all_to_all", full / t, group)
        m1, m2 = self.split_mode(d1), self.split_mode(d2)
        assert m1 is not None and m2 is not None
        frac = max(m1[0], m2[0])
        steps = max(m1[1], m2[1])
        group = tuple(range(self.devices))
        return 2 * steps * collective_time(self.cluster, "all_to_all", nbytes * frac, group)


def _split_mode(batch: int, microbatches: int, d: int) -> tuple[float, int] | None:
    if batch % d == 0:
        return 1.0 / d, microbatches
    if microbatches % d == 0:
        return 1.0, microbatches // d
    return None


def _in_bytes(graph: OpGraph, i: int) -> float:
    op = graph.ops[i]
    b = sum(graph.edge_bytes[(p, i)] for p in graph.preds[i])
    if b > 0:
        return b
    a = op.attr
    if "in_features" in a and "seq" in a and "batch" in a and op.kind != "embedding":
        return float(a["batch"] * a["seq"] * a["in_features"] * 2)
    return op.out_bytes


def _divisible(op: Op, key: str, t: int) -> bool:
    v = op.attr.get(key)
    return v is None or (isinstance(v, int) and v % t == 0)


def _splits(graph: OpGraph, i: int, t: int) -> list[_Split]:
    """The model-parallel splits legal for op ``i`` on a group of ``t`` devices."""
    op = graph.ops[i]
    if t == 1:
        return [_Split(name="rep", in_kind="R", out_kind="R", compute_div=1, act_div=1, param_div=1)]
    x_in, x_out = _in_bytes(graph, i), op.out_bytes
    rep = _Split(name="rep", in_kind="R", out_kind="R", compute_div=1, act_div=1, param_div=1)
    seq = _Split(name="seq", in_kind="S", out_kind="S", compute_div=t, act_div=t, param_div=1)
    hid = _Split(name="hid", in_kind="H", out_kind="H", compute_div=t, act_div=t, param_div=1)
    attrs = op.attr
    kind = op.kind
    out: list[_Split] = []
    if kind in ("linear", "conv"):
        tp = attrs.get("tp")
        col_ok = _divisible(op, "out_features", t) and _divisible(op, "channels_out", t)
        row_ok = _divisible(op, "in_features", t) and _divisible(op, "channels_in", t)
        if tp in (None, "column") and col_ok:
            out.append(
                _Split(
                    name="col",
                    in_kind="R",
                    out_kind="H",
                    compute_div=t,
                    act_div=1,
                    param_div=t,
                    bwd_comm=(("all_reduce", x_in),),
                )
            )
            if kind == "linear":
                out.append(
                    _Split(
                        name="col.sp",
                        in_kind="S",
                        out_kind="H",
                        compute_div=t,
                        act_div=t,
                        param_div=t,
                        fwd_comm=(("all_gather", x_in),),
                        # re-gather the saved input shard, reduce-scatter the input gradient
                        bwd_comm=(("all_gather", x_in), ("reduce_scatter", x_in)),
                    )
                )
        if tp in (None, "row") and row_ok:
            out.append(
                _Split(
                    name="row",
                    in_kind="H",
                    out_kind="R",
                    compute_div=t,
                    act_div=t,
                    param_div=t,
                    fwd_comm=(("all_reduce", x_out),),
                )
            )
            if kind == "linear":
                out.append(
                    _Split(
                        name="row.sp",
                        in_kind="H",
                        out_kind="S",
                        compute_div=t,
                        act_div=t,
                        param_div=t,
                        fwd_comm=(("reduce_scatter", x_out),),
                        bwd_comm=(("all_gather", x_out),),
                    )
                )
        if tp is None and kind == "linear":
            out.append(seq)
        if not out:
            out.append(rep)
    elif kind == "attention":
        if _divisible(op, "heads", t) and _divisible(op, "kv_heads", t):
            out.append(replace(hid, name="heads"))
        # context parallelism: every device gathers the K/V of the whole sequence (2/3 of QKV)
        kv = x_in * 2.0 / 3.0
        out.append(
            replace(
                seq,
                name="cp",
                fwd_comm=(("all_gather", kv),),
                bwd_comm=(("all_gather", kv), ("reduce_scatter", kv)),
            )
        )
    elif kind in ("norm",):
        out += [rep, seq]
        if "channels_out" in attrs or "channels_in" in attrs:
            out.append(hid)  # batch norm is per channel
    elif kind in ("elementwise", "pool", "fusion", "other"):
        out += [rep, seq, hid]
    elif kind == "embedding":
        out.append(rep)
        out.append(seq)  # token ids are tiny: slicing them is free
        if _divisible(op, "in_features", t):
            out.append(
                _Split(
                    name="vocab",
                    in_kind="R",
                    out_kind="R",
                    compute_div=t,
                    act_div=1,
                    param_div=t,
                    fwd_comm=(("all_reduce", x_out),),
                )
            )
            out.append(
                _Split(
                    name="vocab.sp",
                    in_kind="R",
                    out_kind="S",
                    compute_div=t,
                    act_div=1,
                    param_div=t,
                    fwd_comm=(("reduce_scatter", x_out),),
                )
            )
    elif kind == "loss":
        out += [rep, seq]
        # vocabulary-parallel cross-entropy: max, sum-exp and target logit all-reduced per token
        tokens = float(attrs.get("batch", 1) * attrs.get("seq", 1))
        out.append(replace(hid, fwd_comm=(("all_reduce", 3 * 4 * tokens),)))
    elif kind == "moe_router":
        out += [rep, seq]
    elif kind == "moe_experts":
        if _divisible(op, "experts", t):
            out.append(_Split(name="ep", in_kind="E", out_kind="E", compute_div=t, act_div=t, param_div=t))
        out.append(
            _Split(
                name="etp",
                in_kind="R",
                out_kind="R",
                compute_div=t,
                act_div=t,
                param_div=t,
                fwd_comm=(("all_reduce", x_out),),
                bwd_comm=(("all_reduce", x_in),),
            )
        )
        out.append(seq)
    elif kind == "all_to_all":
        out += [rep, seq, hid, replace(seq, name="ep", in_kind="E", out_kind="E")]
        # the all-to-all proper: each device sends its 1/t share of the routed tokens
        send = x_out / t
        for src_kind in ("R", "S"):
            out.append(
                _Split(
                    name=f"a2a.{src_kind}E",
                    in_kind=src_kind,
                    out_kind="E",
                    compute_div=t,
                    act_div=t,
                    param_div=1,
                    fwd_comm=(("all_to_all", send),),
                    bwd_comm=(("all_to_all", send),),
                )
            )
            out.append(
                _Split(
                    name=f"a2a.E{src_kind}",
                    in_kind="E",
                    out_kind=src_kind,
                    compute_div=t,
                    act_div=t,
                    param_div=1,
                    fwd_comm=(("all_to_all", send),),
                    bwd_comm=(("all_to_all", send),),
                )
            )
    else:  # pragma: no cover - OP_KINDS is closed
        out.append(rep)
    return out


def _scaled(op: Op, factor: float) -> Op:
    if factor == 1.0:
        return op
    return replace(
        op,
        fwd_flops=op.fwd_flops * factor,
        bwd_input_flops=op.bwd_input_flops * factor,
        bwd_weight_flops=op.bwd_weight_flops * factor,
        fwd_bytes=op.fwd_bytes * factor,
        bwd_input_bytes=op.bwd_input_bytes * factor,
        bwd_weight_bytes=op.bwd_weight_bytes * factor,
    )


def _op_configs(space: SearchSpace, i: int) -> tuple[OpConfig, ...]:
    from parplan.cost.comm import collective_time
    from parplan.cost.compute import op_time
    from parplan.cost.memory import sharded_state_bytes, training_state_bytes

    graph, cluster = space.graph, space.cluster
    op = graph.ops[i]
    device = cluster.devices[0]
    k = space.devices
    x_in = _in_bytes(graph, i)
    has_preds = bool(graph.preds[i])
    out: list[OpConfig] = []
    for d, t in space.grids:
        mode = space.split_mode(d)
        if mode is None:
            continue
        frac, steps = mode
        tp_group = tuple(range(t))
        measured = space.measured.get(op.name)
        for sp in _splits(graph, i, t):
            if measured is not None:  # one micro-batch on one device: split like the work
                fwd_s = measured.F * frac / sp.compute_div
                bwd_s = measured.backward_s * frac / sp.compute_div
            else:
                scaled = _scaled(op, frac / sp.compute_div)
                gemm = space.gemm_dtype
                fwd_s = op_time(scaled, device, "F", dtype=space.dtype, gemm_dtype=gemm)
                bwd_s = op_time(scaled, device, "I", dtype=space.dtype, gemm_dtype=gemm) + op_time(
                    scaled, device, "W", dtype=space.dtype, gemm_dtype=gemm
                )
            fwd_comm = sum(collective_time(cluster, c, b * frac, tp_group) for c, b in sp.fwd_comm)
            bwd_comm = sum(collective_time(cluster, c, b * frac, tp_group) for c, b in sp.bwd_comm)
            # gradient synchronisation group: everyone holding the same weight shard
            sync = d if sp.param_div == t else d * t
            sync_group = tuple(range(0, k, k // sync)) if sync > 1 else (0,)
            state = training_state_bytes(
                op.param_bytes / sp.param_div, dtype=space.dtype, optimizer=space.optimizer
            )
            act = op.act_bytes * frac / sp.act_div
            in_div = 1 if sp.in_kind == "R" else t
            saved_input = x_in * frac / in_div
            rc_options = [False]
            if has_preds and op.act_bytes > 0 and saved_input < act * 0.999:
                rc_options.append(True)
            zeros = [0, 1, 2, 3] if (sync > 1 and op.param_bytes > 0) else [0]
            for z in zeros:
                st = sharded_state_bytes(state, sync, z)
                if z <= 1:
                    zcomm = (
                        collective_time(cluster, "all_reduce", state.grads, sync_group) if sync > 1 else 0.0
                    )
                elif z == 2:
                    zcomm = steps * collective_time(
                        cluster, "reduce_scatter", state.grads, sync_group
                    ) + collective_time(cluster, "all_gather", state.params, sync_group)
                else:
                    zcomm = steps * (
                        2 * collective_time(cluster, "all_gather", state.params, sync_group)
                        + collective_time(cluster, "reduce_scatter", state.grads, sync_group)
                    )
                modes = [(rc, False) for rc in rc_options]
                if i in space.checkpoint_entry:
                    modes.append((False, True))
                for rc, ckpt in modes:
                    again = rc or ckpt  # the forward runs again in the backward
                    compute = steps * (fwd_s + bwd_s + (fwd_s if again else 0.0))
                    comm = steps * (fwd_comm + bwd_comm + (fwd_comm if again else 0.0)) + zcomm
                    if ckpt:
                        # the layer keeps its input (once, at its entry op); the rest lives only
                        # while the layer is recomputed (``recompute_act``)
                        stored = saved_input if space.checkpoint_entry[i] else 0.0
                        memory = MemoryBreakdown.of(st, stored)
                    else:
                        memory = MemoryBreakdown.of(st, saved_input if rc else act)
                    name = f"dp{d}.tp{t}.{sp.name}"
                    if z:
                        name += f".z{z}"
                    if rc:
                        name += ".rc"
                    if ckpt:
                        name += ".ckpt"
                    out.append(
                        OpConfig(
                            name=name,
                            dp=d,
                            tp=t,
                            split=sp.name,
                            zero=z,
                            recompute=rc,
                            in_layout=(d, sp.in_kind if t > 1 else "R"),
                            out_layout=(d, sp.out_kind if t > 1 else "R"),
                            time_s=compute + comm,
                            mem_bytes=memory.total,
                            compute_s=compute,
                            comm_s=comm,
                            memory=memory,
                            checkpoint=ckpt,
                            recompute_act=act if ckpt else 0.0,
                        )
                    )
    return tuple(out)


def _graph_batch(graph: OpGraph) -> int:
    meta = graph.meta_dict
    b = meta.get("microbatch_size")
    if isinstance(b, int) and b >= 1:
        return b
    for op in graph.ops:
        v = op.attr.get("batch")
        if isinstance(v, int) and v >= 1:
            return v
    return 1


def search_space(
    graph: OpGraph,
    cluster: Cluster,
    *,
    devices: int,
    microbatches: int = 1,
    mesh: Sequence[int] | None = None,
    dtype: str = "bf16",
    optimizer: str = "adam",
    checkpoint_layers: Sequence[Sequence[int]] = (),
    profile: Profile | None = None,
    gemm_dtype: str | None = None,
) -> SearchSpace:
    """Enumerate and cost every operator's configurations on the first ``devices`` devices.

    Parameters
    ----------
    graph
        The model, one micro-batch.
    cluster
        Devices and links; the group is ``cluster.devices[:devices]`` (costed on device 0's spec).
    devices
        Size of the device group.
    microbatches
        Micro-batches per iteration (gradient accumulation steps).
    mesh
        None: every grid ``d x t = devices``; ``(k,)``: pure data or pure model parallel;
        ``(a, b)``: data parallel over ``a`` x model parallel over ``b`` (plus the two pure grids).
    dtype, optimizer
        Compute dtype and optimizer (for peak FLOP/s and training-state bytes).
    checkpoint_layers
        Op groups (transformer layers, each with one input tensor) that may use layer-level
        activation checkpointing: their ops get ``.ckpt`` configurations, which a strategy must
        pick for all or none of a layer's ops (the frontier search and :func:`brute_force` do).
    profile
        Measured per-op times (``parplan profile``, one micro-batch on one device) for the ops it
        lists, split like the op's work (data share, tensor-parallel division).
    gemm_dtype
        ``"fp8"``: float8 training (the linear layers' GEMMs at the fp8 peak plus their operand
        casts; storage stays ``dtype``); not with ``profile``, measured in ``dtype``.

    Returns
    -------
    SearchSpace
        With ``configs[i]`` for every operator ``i``.
    """
    if isinstance(devices, bool) or not isinstance(devices, int) or devices < 1:
        raise InvalidInputError(f"frontier devices: must be an integer >= 1, got {devices!r}")
    if devices > cluster.num_devices:
        raise InvalidInputError(
            f"frontier devices: {devices} requested but cluster {cluster.name!r} has "
            f"{cluster.num_devices}; lower --devices or use a larger cluster"
        )
    if isinstance(microbatches, bool) or not isinstance(microbatches, int) or microbatches < 1:
        raise InvalidInputError(f"frontier microbatches: must be an integer >= 1, got {microbatches!r}")
    mesh_t: tuple[int, ...] | None = None
    if mesh is not None:
        mesh_t = tuple(int(x) for x in mesh)
        prod = 1
        for x in mesh_t:
            prod *= x
        if len(mesh_t) not in (1, 2) or prod != devices or min(mesh_t) < 1:
            raise InvalidInputError(
                f"frontier mesh: {mesh_t} must be 1-D (devices,) or 2-D (a, b) with a*b == devices "
                f"({devices})"
            )
    check_gemm_dtype(gemm_dtype, cluster, profile)
    batch = _graph_batch(graph)
    grids = tuple(g for g in _grids(devices, mesh_t) if _split_mode(batch, microbatches, g[0]) is not None)
    space = SearchSpace(
        graph=graph,
        cluster=cluster,
        devices=devices,
        microbatches=microbatches,
        mesh=mesh_t,
        dtype=dtype,
        optimizer=optimizer,
        grids=grids,
        batch=batch,
        checkpoint_layers=tuple(tuple(int(v) for v in ops) for ops in checkpoint_layers),
        profile=profile,
        gemm_dtype=gemm_dtype,
    )
    configs = tuple(_op_configs(space, i) for i in range(graph.num_ops))
    for i, cfgs in enumerate(configs):
        if not cfgs:  # pragma: no cover - "rep" on the (1, devices) grid is always legal
            raise InvalidInputError(f"graph {graph.name!r}.ops[{i}]: no legal configuration")
    object.__setattr__(space, "configs", configs)
    return space


def describe(config: OpConfig) -> dict[str, Any]:
    """A JSON-ready summary of one configuration."""
    return {
        "name": config.name,
        "dp": config.dp,
        "tp": config.tp,
        "split": config.split,
        "zero": config.zero,
        "recompute": config.recompute,
        "in_layout": layout_name(config.in_layout),
        "out_layout": layout_name(config.out_layout),
        "time_s": config.time_s,
        "mem_bytes": config.mem_bytes,
    }
