"""Step time, memory and MFU of one whole-model strategy (pp x dp x tp, ZeRO, recompute) on a cluster.

This is the strategy-level estimate: every repeated block runs the same :class:`~parplan.strategy.Strategy`,
as Megatron-LM, torchtitan and DeepSpeed run them, and the estimate adds up the terms such a run pays.
It works on any operator graph (zoo models, Hugging Face configs, traced modules): per-operator
FLOPs, bytes and stored activations come from the graph; the strategy decides how each operator is
divided. One training step of ``global_batch`` samples is ``m = global_batch / (dp * b)`` micro-batches
of ``b`` samples (the graph's ``microbatch_size``) on every data-parallel rank.

Terms of the step time (each is a key of :attr:`StrategyEstimate.terms`)
-----------------------------------------------------------------------------
compute
    Every operator pass on its device, roofline ``max(flops / (peak * eff), bytes / (bw * eff_mem))``
    per pass (:mod:`parplan.cost.compute`), with the efficiencies of :class:`KernelEfficiency`:
    GEMMs at ``gemm`` times their wave-quantization utilization (NVIDIA, "Matrix Multiplication
    Background User's Guide": a GEMM of ``ceil(M/128) ceil(N/128)`` output tiles on ``S`` SMs runs
    ``ceil(tiles / S)`` waves); fused (flash) attention at ``flash``; causal attention
    (``attrs.causal``) does half of the ``s^2`` work with a fused kernel (Dao 2023) and all of it
    without. Tensor-parallel operators run ``1/t`` of the work; norms, residual adds and dropout
    without sequence parallelism are replicated (Korthikanti et al. 2022, section 4.2.2).
recompute
    Activation checkpointing's extra forward: ``full`` runs every layer's forward again in its
    backward (the whole-layer recompute of Narayanan et al. 2021, section 3.5), ``selective`` only
    core attention (Korthikanti et al. 2022, section 5).
tp_comm
    Tensor parallelism's collectives on the critical path (Megatron-LM does not overlap them):
    per layer and micro-batch two all-reduces of ``b s h`` in the forward and two in the backward
    (sequence parallelism: all-gathers + reduce-scatters of the same volume, Korthikanti section
    4.2.2), the forward ones again under full recompute, plus the vocabulary-parallel embedding's
    all-reduce.
pp_bubble, pp_p2p
    The pipeline: the stage pass times (compute, recompute and TP collectives of each stage) are
    scheduled by the named expert schedule (:mod:`parplan.schedule`) and simulated; ``pp_bubble`` is
    the makespan less one stage's busy time (the bubble of the schedule on these costs, e.g.
    ``(p - 1) (F + B)`` for 1F1B), ``pp_p2p`` the activation sends (``b s h`` bytes, ``/ t`` with
    Megatron's scatter-gather) between stage devices on their link.
dp_comm
    Gradient synchronisation over the dp group (``grad_reduce_dtype`` bytes per gradient): an
    all-reduce (ZeRO-0), reduce-scatter + parameter all-gather (ZeRO-1/2, the same volume), and for
    ZeRO-3 two parameter all-gathers and one reduce-scatter per micro-batch. With
    ``overlap_grad_reduce`` the ZeRO-0..2 reduction is bucketed and overlapped with the last
    micro-batch's backward, leaving the last bucket (the first layer's gradients) exposed; ZeRO-3
    gathers are prefetched under the compute of the layer before. Only the exposed part is charged.
optimizer
    The optimizer step, memory-bound (AdamW reads the fp32 master weights, the gradient and both
    moments and writes the master weights, the moments and the 16-bit parameters: ``26 + grad``
    bytes per parameter with 16-bit parameters, Rajbhandari et al. 2020's state; fp32 training has no
    master copy) over the parameters the device updates; on a calibrated cluster, the measured
    AdamW step per parameter (``meta.measured.runtime.adamw_s_per_param``) times the processes'
    slowdown instead.

Memory per device (the most loaded pipeline stage)
---------------------------------------------------
Training state: 16-bit parameters, gradients in ``grad_dtype`` and fp32 master weights plus AdamW
moments (2 + 2 + 12 bytes per parameter; fp32 gradients: Megatron's 2 + 4 + 12, and with ZeRO-1 its
distributed optimizer's ``6 + 12/d``), ZeRO-sharded over dp; fp32 training has no master copy,
except that ZeRO-2 (FSDP2 without resharding after the forward) holds the fp32 shards the optimizer
updates beside the gathered parameters, ``4 + 4/d``. Activations: the operators' stored
activations with the tensor-parallel division above, times the micro-batches in flight on that
stage under the schedule (1F1B: ``min(p - s, m)`` on stage ``s``). Full recompute keeps each layer's
input and one layer's activations (while it is recomputed); selective (Megatron's) drops core
attention's saved scores; torchtitan's op-level selective checkpointing (``every-other-matmul``:
per layer, every odd matmul in forward order and the fused attention are saved, everything else
recomputed; a fused QKV projection counts as its q, k and v matmuls, a gated up projection as gate
and up, torchtitan's separate ``wq wk wv wo w1 w3 w2``) keeps each layer's input plus those outputs
(and attention's fp32 log-sum-exp). Buffers, the transients at the peak beside the stored
activations: the larger of one layer's activations while it is recomputed and the loss backward's
two fp32 tensors of the logits' size (eager ``cross_entropy`` on fp32 logits: the NLL gradient and
the log-softmax gradient, beside its saved output), plus ZeRO-3's two gathered layers (the current
one and the prefetched one).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from parplan.cluster import DTYPE_BYTES, Cluster, DeviceSpec
from parplan.cost.calibration import RuntimeCalibration, runtime_calibration
from parplan.cost.comm import collective_time
from parplan.cost.compute import (
    GEMM_KINDS,
    KernelEfficiency,
    check_gemm_dtype,
    kernel_efficiency,
    op_tokens,
    pass_seconds,
)
from parplan.cost.memory import MemoryBreakdown
from parplan.cost.profile import Profile
from parplan.errors import InvalidInputError
from parplan.graph.ops import Op, OpGraph
from parplan.strategy import Strategy

#: Terms of the step time, in display order.
TIME_TERMS = (
    "compute",
    "recompute",
    "tp_comm",
    "pp_bubble",
    "pp_p2p",
    "dp_comm",
    "optimizer",
    "tp_grad_sync",
    "step_sync",
)

#: What ``recompute=selective`` recomputes (see :func:`estimate_strategy`).
SELECTIVE_POLICIES = ("attention", "every-other-matmul")


@dataclass(frozen=True, slots=True, kw_only=True)
class StrategyEstimate:
    """The estimate of one strategy: step time with its terms, memory of the worst device, MFU.

    ``model_flops`` counts a step's operator FLOPs once (no recompute, the full attention square),
    the way model FLOP utilization is published; ``mfu`` is ``model_flops / (step_s * devices * peak)``.
    ``stage_memory`` lists every pipeline stage's memory (the same on every dp x tp rank of it).
    """

    strategy: Strategy
    microbatches: int
    step_s: float
    terms: Mapping[str, float]
    memory: MemoryBreakdown
    stage_memory: tuple[MemoryBreakdown, ...]
    model_flops: float
    tokens_per_step: int
    mfu: float
    fits: bool
    notes: tuple[str, ...] = field(default=())
    #: pp > 1: the pipeline problem the estimate timed (one stage per rank; per-micro-batch F, I, W
    #: of each stage, its activation memory, the send time), for a planner to schedule
    #: (``estimate_strategy(pipeline_schedule=...)`` prices the schedule it finds)
    pipeline_problem: Any = field(default=None, repr=False, compare=False)

    @property
    def tokens_per_s_per_device(self) -> float:
        return self.tokens_per_step / self.step_s / self.strategy.num_devices

    def to_json(self) -> dict[str, object]:
        return {
            "strategy": self.strategy.to_json(),
            "microbatches": self.microbatches,
            "step_s": self.step_s,
            "terms_s": dict(self.terms),
            "memory_bytes": self.memory.total,
            "memory_breakdown": self.memory.to_json(),
            "stage_memory_bytes": [m.to_json() for m in self.stage_memory],
            "model_flops": self.model_flops,
            "tokens_per_step": self.tokens_per_step,
            "tokens_per_s_per_device": self.tokens_per_s_per_device,
            "mfu": self.mfu,
            "fits": self.fits,
            "notes": list(self.notes),
        }


# ------------------------------------------------------------------------ per-operator division
@dataclass(frozen=True, slots=True)
class _Div:
    """How tensor parallelism divides one op: its work, parameters and stored activations.

    ``act_split`` bytes are divided by ``t``; ``act_rep`` bytes are replicated over the group
    unless sequence parallelism splits them.
    """

    work: int
    params: int
    act_split: float
    act_rep: float

    def act(self, t: int, sp: bool) -> float:
        return self.act_split / t + (self.act_rep / t if sp else self.act_rep)


def _linear_input_bytes(op: Op) -> float:
    """Bytes of a linear's stored input (the rest of its ``act_bytes`` is a dropout mask)."""
    width = int(op.attr.get("in_features", 0))
    out_width = int(op.attr.get("out_features", 0))
    tokens = op_tokens(op)
    if not (width and out_width and tokens and op.out_bytes):
        return op.act_bytes
    elem = op.out_bytes / (tokens * out_width)
    return min(op.act_bytes, tokens * width * elem)


def _tp_split_params(op: Op) -> float:
    """Parameters tensor parallelism splits in a row-parallel linear or an embedding: the
    ``in x out`` weight (Megatron-LM's vocabulary-parallel token table); the rest (the linear's bias,
    learned positions) stays whole on every rank. 0 for other ops and when the op does not record
    its widths (then all of its parameters are split)."""
    if op.kind != "embedding" and not (op.kind == "linear" and op.attr.get("tp") == "row"):
        return 0.0  # (a column-parallel linear splits its bias with its output)
    return float(op.attr.get("in_features", 0)) * float(op.attr.get("out_features", 0))


def _divide(op: Op, t: int, sp: bool, inputs: int) -> _Div:
    """Megatron-LM's division of ``op`` over a tensor-parallel group of ``t`` (module docstring)."""
    if t == 1:
        return _Div(1, 1, op.act_bytes, 0.0)
    rep_work = t if sp else 1
    split = op.attr.get("tp")
    if op.kind == "linear" and split in ("column", "row"):
        x = _linear_input_bytes(op)
        if split == "column":  # input replicated (split with SP), output split
            return _Div(t, t, 0.0, op.act_bytes)
        return _Div(t, t, x, op.act_bytes - x)  # row: input split; output and its dropout replicated
    if op.kind == "norm" or (op.kind == "elementwise" and inputs > 1):
        # norms and residual adds run on the full hidden state of every token
        return _Div(rep_work, 1, 0.0, op.act_bytes)
    if op.kind == "moe_router":
        return _Div(rep_work, 1, 0.0, op.act_bytes)
    return _Div(t, t, op.act_bytes, 0.0)


# ------------------------------------------------------------------------------- pass times
#: Eager PyTorch runs a norm as several kernels over the whole tensor (RMSNorm in fp32: upcast,
#: square, mean, rsqrt, scale, downcast) and a gated activation as two (SiLU, then the product);
#: a compiler (torch.compile, or Megatron's fused kernels) makes each one pass. Factor on the bytes.
EAGER_TRAFFIC = {"norm": 4.0, "elementwise": 2.0}


def _pass_time(
    op: Op,
    kind: str,
    div: _Div,
    device: DeviceSpec,
    dtype: str,
    eff: KernelEfficiency,
    t: int,
    eager: bool,
    gemm_dtype: str | None = None,
) -> float:
    """Seconds of pass ``kind`` (F, I or W) of ``op`` on one device of its tensor-parallel group.

    ``gemm_dtype`` (``fp8``) runs the linear layers' GEMMs at that dtype's peak, with the casts
    of both operands as extra memory traffic; everything else stays in ``dtype``."""
    if kind == "F":
        flops, nbytes = op.fwd_flops, op.fwd_bytes
    elif kind == "I":
        flops, nbytes = op.bwd_input_flops, op.bwd_input_bytes
    else:
        flops, nbytes = op.bwd_weight_flops, op.bwd_weight_bytes
    if op.is_comm:
        flops = 0.0  # the all-to-all's own time is communication (tp_comm)
    flops, nbytes = flops / div.work, nbytes / div.work
    if eager and op.act_bytes > 0:  # residual adds (nothing stored) are one kernel either way
        nbytes *= EAGER_TRAFFIC.get(op.kind, 1.0)
    out = None
    if op.kind in GEMM_KINDS and op.attr.get("tp") == "column":
        out = int(op.attr.get("out_features", 0)) // t
    return pass_seconds(
        op, flops, nbytes, device, dtype=dtype, efficiency=eff, out_features=out, gemm_dtype=gemm_dtype
    )


@dataclass(slots=True)
class _Stage:
    """Per-micro-batch pass times and memory of one pipeline stage on one device."""

    ops: list[int]
    F: float = 0.0
    I: float = 0.0
    W: float = 0.0
    recompute: float = 0.0
    tp_fwd: float = 0.0
    tp_bwd: float = 0.0
    params: float = 0.0  # parameters on one device (count)
    layer_params: float = 0.0  # the largest layer's parameters on one device (count)
    layers: int = 0
    tp_linears: int = 0  # tensor-parallel linears and embeddings (DTensor modules)
    #: sequence parallelism: replicated parameters whose gradients are partial sums over the group
    #: (norm weights, row-parallel biases): their sizes in bytes, one per tensor
    rep_grads: list[float] = field(default_factory=list)
    vocab_table: float = 0.0  # the vocabulary-parallel token table's local parameters (count)
    act: float = 0.0  # stored activations of one micro-batch (bytes)
    wgrad_act: float = 0.0  # the part the weight gradients still need after I
    layer_act_max: float = 0.0  # the largest layer's activations (checkpoint buffer)
    loss_transient: float = 0.0  # the loss backward's fp32 gradients of the logits' size (bytes)


def stage_layers(num_layers: int, pp: int) -> list[range]:
    """Contiguous layer chunks (positions in layer order) of ``pp`` pipeline stages; earlier stages
    take the remainder. The split the estimate prices and ``parplan train`` runs."""
    per, extra = divmod(num_layers, pp)
    out, start = [], 0
    for s in range(pp):
        n = per + (1 if s < extra else 0)
        out.append(range(start, start + n))
        start += n
    return out


def _stage_of_ops(graph: OpGraph, pp: int) -> list[list[int]]:
    """Contiguous layer chunks per stage; ops outside layers join the first or last stage."""
    layers = sorted({op.layer for op in graph.ops if op.layer is not None})
    if pp > max(1, len(layers)):
        raise InvalidInputError(
            f"strategy.pp: {pp} pipeline stages but the model has {len(layers)} layers; use pp <= {len(layers)}"
        )
    stage_of_layer = {layers[k]: s for s, chunk in enumerate(stage_layers(len(layers), pp)) for k in chunk}
    first_layer_op = next((i for i, op in enumerate(graph.ops) if op.layer is not None), len(graph.ops))
    out: list[list[int]] = [[] for _ in range(pp)]
    for i, op in enumerate(graph.ops):
        if op.layer is not None:
            out[stage_of_layer[op.layer]].append(i)
        else:
            out[0 if i < first_layer_op else pp - 1].append(i)
    return out


def _device(stage: int, dp_rank: int, tp_rank: int, strategy: Strategy) -> int:
    """Rank on the (pp, dp, tp) mesh: tensor-parallel peers adjacent."""
    return (stage * strategy.dp + dp_rank) * strategy.tp + tp_rank


def _matmul_widths(graph: OpGraph, i: int) -> tuple[int, ...]:
    """Output widths of the matmuls a linear op stands for, in forward order: a fused QKV
    projection is q, k and v; an up projection feeding an element-wise op of half its width
    (SwiGLU) is gate and up; any other linear is one matmul."""
    op = graph.ops[i]
    out = int(op.attr.get("out_features", 0))
    heads, kv, hd = (int(op.attr.get(k, 0)) for k in ("heads", "kv_heads", "head_dim"))
    if heads and kv and hd and heads * hd + 2 * kv * hd == out:
        return (heads * hd, kv * hd, kv * hd)
    if out and any(
        graph.ops[j].kind == "elementwise" and 2 * int(graph.ops[j].attr.get("out_features", 0)) == out
        for j in graph.succs[i]
    ):
        return (out // 2, out // 2)
    return (out,) if out else (1,)


def _output_bytes(op: Op, t: int, sp: bool) -> float:
    """Bytes of ``op``'s output on one device of its tensor-parallel group: column-parallel
    outputs are split, row-parallel ones replicated (split with sequence parallelism)."""
    if t == 1:
        return op.out_bytes
    split = op.attr.get("tp")
    if op.kind == "linear" and split == "row":
        return op.out_bytes / t if sp else op.out_bytes
    return op.out_bytes / t


def _build_stage(
    graph: OpGraph,
    ops: Sequence[int],
    strategy: Strategy,
    cluster: Cluster,
    device: DeviceSpec,
    dtype: str,
    eff: KernelEfficiency,
    tp_group: Sequence[int],
    *,
    eager: bool,
    selective: str,
    profile: Mapping[str, Any] | None = None,
    profile_scale: float = 1.0,
    gemm_dtype: str | None = None,
) -> _Stage:
    t, sp = strategy.tp, bool(strategy.sequence_parallel)
    matmuls_seen: dict[int, int] = {}
    st = _Stage(ops=list(ops))
    in_degree = [0] * len(graph.ops)
    for e in graph.edges:
        in_degree[e.dst] += 1
    elem = DTYPE_BYTES.get(dtype, 2)
    layer_params: dict[int, float] = {}
    layer_act: dict[int, float] = {}
    layer_input: dict[int, float] = {}
    ar = lambda nbytes: collective_time(cluster, "all_reduce", nbytes, tp_group)  # noqa: E731
    for i in ops:
        op = graph.ops[i]
        div = _divide(op, t, sp, in_degree[i])
        measured = profile.get(op.name) if profile else None
        if measured is not None:  # measured on one device: split like the work, slowed by sharing
            i_s = measured.I if measured.I is not None else measured.backward_s
            w_s = measured.W if measured.W is not None else 0.0
            f = measured.F * profile_scale / div.work
            st.I += i_s * profile_scale / div.work
            st.W += w_s * profile_scale / div.work
        else:
            f = _pass_time(op, "F", div, device, dtype, eff, t, eager, gemm_dtype)
            st.I += _pass_time(op, "I", div, device, dtype, eff, t, eager, gemm_dtype)
            st.W += _pass_time(op, "W", div, device, dtype, eff, t, eager, gemm_dtype)
        st.F += f
        n_params = op.param_bytes / elem / div.params
        if t > 1 and div.params == t:  # kept whole on every rank: positions, row-parallel biases
            table = _tp_split_params(op)
            if 0 < table < op.param_bytes / elem:
                n_params = table / t + (op.param_bytes / elem - table)
            if op.kind == "embedding" and table:
                st.vocab_table += table / t
        st.params += n_params
        act = div.act(t, sp)
        if op.kind == "linear":
            st.wgrad_act += act
        fwd_comm = bwd_comm = 0.0
        if t > 1:
            split = op.attr.get("tp")
            if (op.kind == "linear" and split in ("row", "column")) or op.kind == "embedding":
                st.tp_linears += 1
            if sp and op.kind == "norm" and op.param_bytes > 0:
                width = float(op.attr.get("out_features") or op.attr.get("in_features") or 0)
                count = max(1, round(op.param_bytes / (width * elem))) if width else 1
                st.rep_grads += [op.param_bytes / count] * count
            elif sp and op.kind == "linear" and split == "row":
                weights = float(op.attr.get("in_features", 0)) * float(op.attr.get("out_features", 0)) * elem
                if op.param_bytes > weights > 0:
                    st.rep_grads.append(op.param_bytes - weights)  # the bias, replicated
            if op.kind == "linear" and split == "row":
                fwd_comm = ar(op.out_bytes)
            elif op.kind == "linear" and split == "column":
                bwd_comm = ar(_linear_input_bytes(op) if op.act_bytes else op.out_bytes)
            elif op.kind == "embedding":
                fwd_comm = ar(op.out_bytes)
            elif op.is_comm:
                fwd_comm = bwd_comm = collective_time(cluster, "all_to_all", op.out_bytes / t, tp_group)
        st.tp_fwd += fwd_comm
        st.tp_bwd += bwd_comm
        if op.kind == "loss":
            st.loss_transient = max(st.loss_transient, 2 * act)
        if op.layer is None:
            st.act += act
            continue
        layer_params[op.layer] = layer_params.get(op.layer, 0.0) + n_params
        layer_act[op.layer] = layer_act.get(op.layer, 0.0) + act
        if op.layer not in layer_input:  # the layer's entry op stores the layer input
            layer_input[op.layer] = op.act_bytes / t if sp else op.act_bytes
        if strategy.recompute == "full":
            st.recompute += f
            st.tp_bwd += fwd_comm
        elif strategy.recompute == "selective" and selective == "every-other-matmul":
            # torchtitan's policy: each layer's odd matmuls and its fused attention keep their
            # outputs, everything else is recomputed and stores nothing (the layer input is kept)
            if op.kind == "linear":
                widths = _matmul_widths(graph, i)
                kept = 0
                for w in widths:
                    matmuls_seen[op.layer] = matmuls_seen.get(op.layer, 0) + 1
                    kept += w if matmuls_seen[op.layer] % 2 else 0
                share = kept / sum(widths)
                st.recompute += f * (1 - share)
                act = _output_bytes(op, t, sp) * share
            elif op.kind == "attention":
                lse = 4 * op_tokens(op) * int(op.attr.get("heads", 0)) / t  # fp32 log-sum-exp per head
                act = _output_bytes(op, t, sp) + lse
            elif op.kind in ("norm", "elementwise"):
                st.recompute += f
                act = 0.0
        elif strategy.recompute == "selective" and op.kind == "attention":
            st.recompute += f
            inputs_bytes = sum(graph.ops[e.src].out_bytes for e in graph.edges if e.dst == i)
            act = max(0.0, act - inputs_bytes / div.work)
            layer_act[op.layer] -= div.act(t, sp) - act
        if strategy.recompute != "full":
            st.act += act
    st.layers = len(layer_params)
    st.layer_params = max(layer_params.values(), default=0.0)
    if strategy.recompute == "full" or (
        strategy.recompute == "selective" and selective == "every-other-matmul"
    ):
        st.act += sum(layer_input.values())
        st.layer_act_max = max(layer_act.values(), default=0.0)
    return st


# ------------------------------------------------------------------------------------ estimate
def _splits_backward(strategy: Strategy) -> bool:
    from parplan.schedule.expert import linear_schedule_spec

    return linear_schedule_spec(strategy.schedule).needs_split_backward


def _pipeline_makespans(
    stages: Sequence[_Stage],
    strategy: Strategy,
    m: int,
    p2p_s: float,
    w_keeps_graph: bool,
    shared_cores: int | None = None,
    calibration: RuntimeCalibration | None = None,
    schedule: Any = None,
) -> tuple[float, float, tuple[float, ...], tuple[float, ...], Any]:
    """(makespan with sends, makespan without, peak in-flight activation bytes per stage, each
    stage's time running without sends, the problem timed with sends).

    ``schedule`` (per-device orders, e.g. a planner's) is timed instead of the strategy's named one.
    With ``shared_cores`` the stage times, given with every process busy, are turned into one
    process's work alone and the schedule is simulated with the cores shared
    (:func:`parplan.simulate.simulate_shared`): each busy process runs at the speed measured with
    that many busy (``calibration.slowdown``, else fair sharing of the cores), so a stage waiting
    in a bubble leaves its share to the busy ones.
    """
    from parplan.problem import PassTimes
    from parplan.schedule.expert import build_schedule, linear_schedule_spec
    from parplan.simulate import compute_metrics, simulate, simulate_shared
    from parplan.synthetic import StageOverride, synthetic_problem

    name = "" if schedule is not None else linear_schedule_spec(strategy.schedule).name
    n = strategy.num_devices
    cal = calibration or RuntimeCalibration()
    shared = shared_cores is not None
    cores = shared_cores or 1
    scale = 1.0 / cal.slowdown_at(n, cores) if shared else 1.0

    def passes(st: _Stage) -> PassTimes:
        return PassTimes.split(
            F=(st.F + st.tp_fwd) * scale, I=(st.I + st.recompute + st.tp_bwd) * scale, W=st.W * scale
        )

    overrides = [
        StageOverride(
            cost=passes(st), act_mem=st.act, wgrad_mem=st.act if w_keeps_graph else min(st.wgrad_act, st.act)
        )
        for st in stages
    ]
    out = []
    peaks: tuple[float, ...] = ()
    running: tuple[float, ...] = ()
    problems = []
    for comm in (p2p_s, 0.0):
        problem = synthetic_problem(
            pp=strategy.pp, microbatches=m, costs=overrides[0].cost, stage_costs=overrides, comm=comm
        )
        problems.append(problem)
        orders = schedule if schedule is not None else build_schedule(name, problem)
        timed = (
            simulate_shared(
                problem, orders, lambda busy: cal.slowdown_at(busy, cores), strategy.dp * strategy.tp
            )
            if shared
            else simulate(problem, orders)
        )
        metrics = compute_metrics(problem, timed)
        out.append(metrics.makespan)
        peaks = metrics.peak_memory_per_device
        busy = [0.0] * strategy.pp
        for ta in timed:
            busy[ta.device] += ta.end - ta.start
        running = tuple(busy)
    return out[0], out[1], peaks, running, problems[0]


def estimate_strategy(
    graph: OpGraph,
    strategy: Strategy,
    cluster: Cluster,
    *,
    global_batch: int | None = None,
    dtype: str | None = None,
    grad_dtype: str = "bf16",
    grad_reduce_dtype: str | None = None,
    overlap_grad_reduce: bool | None = None,
    eager: bool = False,
    selective: str = "attention",
    w_keeps_graph: bool = False,
    efficiency: KernelEfficiency | None = None,
    profile: Profile | None = None,
    profile_scale: float = 1.0,
    gemm_dtype: str | None = None,
    shared_cores: int | None = None,
    calibration: RuntimeCalibration | None = None,
    bucket_copies: bool = False,
    pipeline_schedule: Any = None,
    per_tensor_grad_sync: bool = False,
    dtensor_embedding_grad: bool = False,
) -> StrategyEstimate:
    """Estimate one training step of ``graph`` under ``strategy`` on the first devices of ``cluster``.

    Parameters
    ----------
    graph
        One micro-batch of ``b = meta.microbatch_size`` samples on one data-parallel rank.
    strategy
        The whole-model strategy; ``strategy.num_devices`` devices of ``cluster`` are used.
    global_batch
        Samples per step over all data-parallel ranks; default ``dp * b`` (one micro-batch each).
        Must be a multiple of ``dp * b``.
    dtype
        Compute dtype (default: the graph's ``meta.dtype``).
    grad_dtype, grad_reduce_dtype
        The gradients' dtype in memory (``bf16`` or ``fp32``: Megatron's fp32 main gradients) and
        on the wire (default: ``grad_dtype``).
    overlap_grad_reduce
        Bucket the gradient reduction and overlap it with the backward (DDP, FSDP, Megatron's
        ``--overlap-grad-reduce``); False charges all of it after the backward (Megatron-LM 2021).
        Default: True on accelerators, False on CPU devices, whose collectives (gloo) run on the
        same cores as the compute.
    eager
        Element-wise work runs as eager PyTorch kernels (:data:`EAGER_TRAFFIC`), not fused.
    selective
        What ``recompute=selective`` recomputes: ``attention`` (Megatron-LM, Korthikanti et al.
        2022: core attention) or ``every-other-matmul`` (torchtitan's op-level selective
        checkpointing: every second linear of a layer and every norm and element-wise op; its
        memory is counted as without recompute, an upper bound).
    w_keeps_graph
        A split backward keeps the stage's whole autograd graph from I until W (torch.distributed.
        pipelining's ``stage_backward_input`` retains it), not only the linears' inputs W needs (the
        Zero Bubble paper's implementation).
    efficiency
        Kernel efficiencies (default: :data:`KERNEL_EFFICIENCY` of the device kind).
    gemm_dtype
        ``fp8``: float8 training as torchao runs it: the linear layers' GEMMs at the device's fp8
        peak, both operands cast per pass (:data:`parplan.cost.compute.FP8_CAST_BYTES_PER_ELEMENT`), parameters,
        activations and optimizer state unchanged in ``dtype``.
    calibration
        The runtime's measured overheads and the cores' slowdown (:mod:`parplan.cost.calibration`;
        default: what ``parplan calibrate`` wrote into the cluster file, else none).
    pipeline_schedule
        pp > 1: per-device orders (a :class:`parplan.schedule.ir.Schedule`, e.g. a planner's for
        :attr:`StrategyEstimate.pipeline_problem`) timed instead of ``strategy.schedule``.
    per_tensor_grad_sync
        With sequence parallelism the replicated parameters (norms, row-parallel biases) get partial
        gradients, all-reduced over the tensor-parallel group (term ``tp_grad_sync``): Megatron-LM
        coalesces them into one all-reduce (False); DTensor reduces each tensor on its own when
        the optimizer reads it (train's runtime, True).
    dtensor_embedding_grad
        The vocabulary-parallel token table's gradient is held whole on every tensor-parallel rank
        (torch 2.13's DTensor embedding backward returns it replicated; train's runtime, True), not
        sharded like the table (Megatron-LM, False); ZeRO-2/3 shard gradients either way.
    bucket_copies
        The data-parallel gradients are copied into flat buckets for the all-reduce and back (torch
        DDP without ``gradient_as_bucket_view``, train's all-reduce); Megatron-LM's contiguous
        gradient buffers are the buckets (False).
    shared_cores
        The devices are processes sharing this many CPU cores, their speeds given with every
        process busy. A pipeline's devices idle in its bubbles, which leaves their cores to the busy
        ones: the compute is scaled to the average number of busy processes per core (at least one
        core each) and the schedule simulated again.
    profile, profile_scale
        Measured per-op pass times (``parplan profile``) replacing the roofline for the ops they
        list, divided like the op's work over the tensor-parallel group and multiplied by
        ``profile_scale`` (e.g. ``N / cores`` when N processes share the cores measured alone), and
        by the profile's :attr:`~parplan.cost.profile.Profile.pass_scale` (the measured whole pass
        over the sum of its ops).

    Raises
    ------
    InvalidInputError
        Too few devices, a batch that does not divide, more stages than layers, a schedule that is
        not one stage per device, or an unknown dtype.
    """
    meta = graph.meta_dict
    b = int(meta.get("microbatch_size", 1))
    seq = int(meta.get("seq_len", 1))
    dtype = dtype or str(meta.get("dtype", "bf16"))
    for name, value in (
        ("dtype", dtype),
        ("grad_dtype", grad_dtype),
        ("grad_reduce_dtype", grad_reduce_dtype),
    ):
        if value is not None and value not in DTYPE_BYTES:
            raise InvalidInputError(f"{name}: unknown {value!r}; use one of {', '.join(DTYPE_BYTES)}")
    check_gemm_dtype(gemm_dtype, cluster)
    if selective not in SELECTIVE_POLICIES:
        raise InvalidInputError(
            f"selective: unknown {selective!r}; use one of {', '.join(SELECTIVE_POLICIES)}"
        )
    n = strategy.num_devices
    if n > cluster.num_devices:
        raise InvalidInputError(
            f"strategy {strategy.to_text()!r} needs {n} devices; cluster {cluster.name!r} has {cluster.num_devices}"
        )
    per_step = strategy.dp * b
    global_batch = per_step if global_batch is None else global_batch
    if global_batch < per_step or global_batch % per_step:
        raise InvalidInputError(
            f"global batch {global_batch}: must be a multiple of dp x micro-batch size = "
            f"{strategy.dp} x {b} = {per_step}"
        )
    m = global_batch // per_step
    device = cluster.devices[0]
    eff = efficiency or kernel_efficiency(device)
    if overlap_grad_reduce is None:
        overlap_grad_reduce = device.kind != "cpu"
    if DTYPE_BYTES[dtype] == 4 and grad_dtype == "bf16":
        grad_dtype = dtype  # fp32 training: fp32 gradients
    g_bytes = DTYPE_BYTES[grad_dtype]
    wire = DTYPE_BYTES[grad_reduce_dtype or grad_dtype]
    elem = DTYPE_BYTES[dtype]
    stage_ops = _stage_of_ops(graph, strategy.pp)
    stages = [
        _build_stage(
            graph,
            ops,
            strategy,
            cluster,
            cluster.devices[_device(s, 0, 0, strategy)],
            dtype,
            eff,
            [_device(s, 0, k, strategy) for k in range(strategy.tp)],
            eager=eager,
            selective=selective,
            profile=None if profile is None else profile.op_map,
            profile_scale=profile_scale * (1.0 if profile is None else profile.pass_scale),
            gemm_dtype=gemm_dtype,
        )
        for s, ops in enumerate(stage_ops)
    ]
    # the runtime's own machinery (measured by parplan calibrate; none for the presets), given as one
    # core's work and slowed like the compute when the processes share the cores
    ovh = runtime_calibration(cluster) if calibration is None else calibration
    contention = ovh.slowdown_at(n, shared_cores) if shared_cores is not None else 1.0
    split_backward = strategy.pp > 1 and _splits_backward(strategy)
    for st in stages:
        if strategy.pp > 1:
            action = ovh.pipeline_action_s * contention
            st.F += action
            st.I += action
            st.W += action if split_backward else 0.0
        if strategy.tp > 1:
            st.tp_fwd += ovh.tp_linear_s / 2 * contention * st.tp_linears
            st.tp_bwd += ovh.tp_linear_s / 2 * contention * st.tp_linears
    # pipeline (or plain gradient accumulation)
    if strategy.pp > 1:
        boundary = [i for i in stage_ops[0] if graph.ops[i].layer is not None][-1]
        send = graph.ops[boundary].out_bytes / (strategy.tp if strategy.tp > 1 else 1)
        p2p = cluster.link(_device(0, 0, 0, strategy), _device(1, 0, 0, strategy)).time(send)
        makespan, makespan0, act_peaks, running, pipeline_problem = _pipeline_makespans(
            stages, strategy, m, p2p, w_keeps_graph, shared_cores, ovh, pipeline_schedule
        )
        for st, wall in zip(stages, running, strict=True):
            # the time each stage's work took as it shared the cores (it is given at full contention)
            work = m * (st.F + st.tp_fwd + st.I + st.recompute + st.tp_bwd + st.W)
            factor = wall / work if work > 0 else 1.0
            st.F, st.I, st.W, st.recompute = (
                st.F * factor,
                st.I * factor,
                st.W * factor,
                st.recompute * factor,
            )
            st.tp_fwd, st.tp_bwd = st.tp_fwd * factor, st.tp_bwd * factor
    else:
        st = stages[0]
        makespan = makespan0 = m * (st.F + st.tp_fwd + st.I + st.recompute + st.tp_bwd + st.W)
        act_peaks = (st.act,)
        pipeline_problem = None
    busy = [m * (st.F + st.tp_fwd + st.I + st.recompute + st.tp_bwd + st.W) for st in stages]
    worst = max(range(len(stages)), key=lambda s: busy[s])
    ws = stages[worst]
    # data parallelism and the optimizer, on the worst stage
    dp_group = [_device(worst, d, 0, strategy) for d in range(strategy.dp)]
    dp_s = 0.0
    if strategy.dp > 1:
        grads = ws.params * wire
        backward = ws.I + ws.recompute + ws.tp_bwd + ws.W
        if strategy.zero == 3:
            gather = collective_time(cluster, "all_gather", ws.params * elem, dp_group)
            scatter = collective_time(cluster, "reduce_scatter", grads, dp_group)
            if overlap_grad_reduce:
                first = gather / max(1, ws.layers)
                per_mb = max(0.0, gather - ws.F) + max(0.0, gather + scatter - backward) + first
            else:
                per_mb = 2 * gather + scatter
            dp_s = m * per_mb
        else:
            if strategy.zero == 0:
                total = collective_time(cluster, "all_reduce", grads, dp_group)
            else:
                total = collective_time(cluster, "reduce_scatter", grads, dp_group) + collective_time(
                    cluster, "all_gather", ws.params * elem, dp_group
                )
            last_bucket = total / max(1, ws.layers)
            dp_s = max(last_bucket, total - backward) if overlap_grad_reduce else total
        if bucket_copies and strategy.zero < 2:  # into the flat buckets and back: read + write twice
            dp_s += 4 * ws.params * g_bytes / (device.memory_bandwidth_Bps * eff.memory)
        if strategy.zero >= 2:  # FSDP2's copies around its collectives, once per step
            units = ws.layers + 1  # one per layer and the stage's root
            dp_s += (ovh.fsdp_unit_s * units + ovh.fsdp_s_per_byte * ws.params * elem) * contention
    # fp32 training keeps no master copy (Rajbhandari et al. 2020: 16-bit training adds 4 bytes)
    master = 0 if elem == 4 else 4
    updated = ws.params / (strategy.dp if strategy.zero >= 1 else 1)
    if ovh.adamw_s_per_param > 0:  # measured by parplan calibrate on this runtime
        optimizer_s = updated * ovh.adamw_s_per_param * contention
    else:
        optimizer_s = (
            updated * (2 * master + 16 + elem + g_bytes) / (device.memory_bandwidth_Bps * eff.memory)
        )
    tp_group = [_device(worst, 0, k, strategy) for k in range(strategy.tp)]
    if not ws.rep_grads:
        tp_sync_s = 0.0
    elif per_tensor_grad_sync:
        tp_sync_s = sum(collective_time(cluster, "all_reduce", b, tp_group) for b in ws.rep_grads)
    else:
        tp_sync_s = collective_time(cluster, "all_reduce", sum(ws.rep_grads), tp_group)
    step_s = makespan + dp_s + optimizer_s + tp_sync_s + ovh.step_sync_s
    terms = {
        "compute": m * (ws.F + ws.I + ws.W),
        "recompute": m * ws.recompute,
        "tp_comm": m * (ws.tp_fwd + ws.tp_bwd),
        "pp_bubble": max(0.0, makespan0 - busy[worst]),
        "pp_p2p": max(0.0, makespan - makespan0),
        "dp_comm": dp_s,
        "optimizer": optimizer_s,
        "tp_grad_sync": tp_sync_s,
        "step_sync": ovh.step_sync_s,
    }
    # memory per stage
    d, z = strategy.dp, strategy.zero
    mems = []
    for s, st in enumerate(stages):
        params = st.params * elem / (d if z >= 3 else 1)
        if z == 2 and not master:  # fp32 under FSDP2: the shards beside the gathered copy
            params += st.params * elem / d
        grads_b = st.params * g_bytes / (d if z >= 2 else 1)
        if dtensor_embedding_grad and z < 2:
            grads_b += st.vocab_table * (strategy.tp - 1) * g_bytes
        opt = st.params * (master + 8) / (d if z >= 1 else 1)
        # a layer's recompute and the loss backward happen at different times: the larger counts
        buffers = max(st.layer_act_max, st.loss_transient) + (2 * st.layer_params * elem if z == 3 else 0.0)
        mems.append(
            MemoryBreakdown(
                parameters=params,
                gradients=grads_b,
                optimizer_state=opt,
                activations=act_peaks[s] if s < len(act_peaks) else st.act,
                buffers=buffers,
            )
        )
    memory = max(mems, key=lambda mb: mb.total)
    model_flops = sum(op.total_flops for op in graph.ops) * m * strategy.dp
    peak = device.flops(dtype)
    notes = []
    if n < cluster.num_devices:
        notes.append(f"{cluster.num_devices - n} of the cluster's {cluster.num_devices} devices are unused")
    return StrategyEstimate(
        strategy=strategy,
        microbatches=m,
        step_s=step_s,
        terms=terms,
        memory=memory,
        stage_memory=tuple(mems),
        model_flops=model_flops,
        tokens_per_step=global_batch * seq,
        mfu=model_flops / (step_s * n * peak),
        fits=all(
            mb.total <= cluster.devices[_device(s, 0, 0, strategy)].memory_bytes for s, mb in enumerate(mems)
        ),
        notes=tuple(notes),
        pipeline_problem=pipeline_problem,
    )
