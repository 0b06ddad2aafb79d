"""``parplan train``: real training steps on a whole-model strategy, checked against one process.

One process per device, a ``(dp, tp)`` DeviceMesh (``init_device_mesh``; gloo on CPU, NCCL on GPU,
the same code), and inside it the libraries practitioners run:

============== ===========================================================================
strategy        what runs
============== ===========================================================================
tp > 1          DTensor tensor parallelism, ``parallelize_module``: the fused QKV and MLP-up
                linears ``ColwiseParallel`` (their rows regrouped so each rank holds its own
                heads' Q, K and V), attention output and MLP-down ``RowwiseParallel``, the head
                ``ColwiseParallel`` with vocabulary-parallel logits and the loss over them under
                ``loss_parallel`` (no rank gathers the full logits)
sp (tp > 1)     Megatron sequence parallelism: norms ``SequenceParallel``, the embedding output
                sharded on the sequence, row-parallel outputs reduce-scattered (Shard(1))
zero=0          ``DistributedDataParallel`` (tp = 1); with tp > 1 (DDP does not take DTensor
                parameters) the same averaged gradients by one all-reduce per parameter after
                the backward
zero=1          ``DistributedDataParallel`` + ``ZeroRedundancyOptimizer`` (AdamW state sharded;
                tp = 1 only)
zero=2, 3       FSDP2 ``fully_shard`` per layer and at the root on the dp mesh dimension,
                ``reshard_after_forward=False`` (2: parameters stay gathered from the forward to
                the backward, gradients and optimizer state sharded) or ``True`` (3)
recompute       ``torch.utils.checkpoint`` (non-reentrant) around every layer (``full``) or
                around core attention (``selective``, Korthikanti et al. 2022)
============== ===========================================================================

Pipeline parallelism (``pp > 1``): one ``torch.distributed.pipelining.PipelineStage`` per rank of
the mesh's pp dimension, run by ``_PipelineScheduleRuntime`` from the schedule's CSV (a named
schedule, or the planner's with ``schedule=plan``). A user's own module (``FILE.py:FACTORY``) runs
with dp, ZeRO 0-3 and ``recompute=full`` (each repeated block checkpointed); its pipelines run as
plans under ``parplan run``.

Memory is measured by tensor accounting, the same on CPU and GPU: parameters, gradients and
optimizer state are the bytes of the tensors each process holds (local shards of DTensors; under
ZeRO-2 also the gathered parameters FSDP2 holds from the forward to the backward), and activations
the bytes of the distinct tensors autograd saves during the first step's forwards
(``torch.autograd.graph.saved_tensors_hooks``), leaving out parameters and views of them (the
transposed weight a linear saves). On CUDA the allocator's peak
(``torch.cuda.max_memory_allocated``) is reported beside it.

Records that cross process boundaries are frozen dataclasses (:class:`TrainJob`,
:class:`DeviceReport`).
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Iterable, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from parplan.cost.strategy import stage_layers
from parplan.errors import InvalidInputError
from parplan.runtime.modules import (
    TORCH_MODELS,
    Attention,
    OpGraphModel,
    OpModule,
    Value,
    _key,
    build_torch_model,
    twin_notes,
)
from parplan.strategy import Strategy

#: Models ``train`` runs: the torch twins of the zoo whose layers pass one tensor to the next.
TRAIN_MODELS = ("gpt-tiny", "moe-small")
#: ... and those with a tensor-parallel plan (MoE experts have none yet: their tp would be expert
#: parallelism).
TP_MODELS = ("gpt-tiny",)
BACKENDS = ("gloo", "nccl")


# ------------------------------------------------------------------------------------ records
@dataclass(frozen=True, slots=True, kw_only=True)
class TrainJob:
    """Everything a device process needs; pickled to every worker."""

    model: str
    model_options: tuple[tuple[str, Any], ...]
    strategy: Strategy
    steps: int
    microbatches: int  # per data-parallel rank and step
    lr: float
    seed: int
    backend: str
    timeout_s: float
    out_dir: str
    store: str | None
    threads: int
    collect_grads: bool
    progress: bool
    #: pp > 1: torch.distributed.pipelining's compute-only CSV of the schedule to run (the named
    #: schedule's, or the planner's for ``schedule=plan``)
    schedule_csv: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceReport:
    """What one device measured."""

    rank: int
    coords: tuple[int, int, int]  # (pp, dp, tp)
    losses: tuple[float, ...]
    step_s: tuple[float, ...]
    #: per step, seconds spent in each phase: ``compute`` (forwards and backwards; a pipeline's
    #: whole schedule with its sends, receives and waits; DDP's and FSDP's overlapped collectives),
    #: ``grad_sync`` (all-reduce after the backward), ``optimizer`` (its step, ZeRO-1's broadcast),
    #: ``other`` (the loss reduction and the step's closing barrier)
    phase_s: tuple[Mapping[str, float], ...]
    memory: Mapping[str, float]
    cuda_peak_bytes: float | None
    grads: Mapping[str, Tensor] | None = field(default=None, repr=False)


# ------------------------------------------------------------------------------------ the model
class Segment(nn.Module):
    """Some ops of an :class:`OpGraphModel` (a layer, or the ops before / after the layers) as one module.

    ``forward(values, data)`` runs them in graph order; inputs from outside come from ``values``;
    it returns only its outputs that ops outside the segment read (internal values and the inputs
    stay inside: FSDP hooks every tensor a wrapped module returns, and warns about views).
    ``checkpoint`` recomputes the whole segment in the backward; ``selective`` only its core
    attention.
    """

    def __init__(self, model: OpGraphModel, names: list[str], *, checkpoint: bool, selective: bool) -> None:
        super().__init__()
        self.names = names
        self.ops = nn.ModuleDict({_key(n): model.op(n) for n in names})
        self._inputs = {n: model.input_names(n) for n in names}
        inside = set(names)
        g = model.graph
        self.exports = [
            n
            for n in names
            if any(g.ops[j].name not in inside for j in g.succs[g.index[n]]) or not g.succs[g.index[n]]
        ]
        self.checkpoint = checkpoint
        self.selective = selective

    def _run(self, values: dict[str, Value], data: Mapping[str, Tensor]) -> dict[str, Value]:
        from torch.utils.checkpoint import checkpoint

        out = dict(values)
        for name in self.names:
            module: OpModule = self.ops[_key(name)]  # type: ignore[assignment]
            args = [out[s] for s in self._inputs[name]]
            if self.selective and isinstance(module, Attention):
                out[name] = checkpoint(module, *args, data=data, use_reentrant=False)
            else:
                out[name] = module(*args, data=data)
        return {n: out[n] for n in self.exports}

    def forward(self, values: dict[str, Value], data: Mapping[str, Tensor]) -> dict[str, Value]:
        if self.checkpoint and torch.is_grad_enabled():
            from torch.utils.checkpoint import checkpoint

            return checkpoint(self._run, values, data, use_reentrant=False)  # type: ignore[no-any-return]
        return self._run(values, data)


class TrainModel(nn.Module):
    """The model as ``pre`` (embedding), one :class:`Segment` per layer, and ``post`` (norm, head, loss)."""

    def __init__(self, model: OpGraphModel, recompute: str = "none") -> None:
        super().__init__()
        g = model.graph
        order = [g.ops[i] for i in g.topo_order]
        layers = sorted({op.layer for op in order if op.layer is not None})
        first = next(k for k, op in enumerate(order) if op.layer is not None)
        pre = [op.name for op in order[:first] if op.layer is None]
        post = [op.name for op in order[first:] if op.layer is None]
        self.pre = Segment(model, pre, checkpoint=False, selective=False)
        self.layers = nn.ModuleList(
            Segment(
                model,
                [op.name for op in order if op.layer == i],
                checkpoint=recompute == "full",
                selective=recompute == "selective",
            )
            for i in layers
        )
        self.post = Segment(model, post, checkpoint=False, selective=False)
        self.loss_name = post[-1]
        self.heads = next(m.heads for m in model.modules() if isinstance(m, Attention))

    def forward(self, data: Mapping[str, Tensor]) -> Tensor:
        values: dict[str, Value] = {}
        for segment in (self.pre, *self.layers, self.post):
            values.update(segment(values, data))
        return values[self.loss_name]  # type: ignore[return-value]


def is_user_model(spec: str) -> bool:
    """``FILE.py:FACTORY``: the user's own module (``parplan trace``'s factories)."""
    from parplan.runtime.user_model import is_factory_spec

    return is_factory_spec(spec)


class UserTrainModel(nn.Module):
    """A user's module and its loss (``FILE.py:FACTORY``) as train runs it: ``forward(data)`` takes
    the factory's example inputs as ``input0, input1, ...`` and returns the loss. ``layers`` are its
    direct children that hold parameters (FSDP2 shards each, then the root). ``recompute="full"``
    checkpoints each repeated block (``trace_graph.repeated_blocks``, the layers of ``parplan trace``)."""

    def __init__(self, spec: str, seed: int, recompute: str = "none") -> None:
        from parplan.runtime.user_model import load_factory

        super().__init__()
        torch.manual_seed(seed)  # the same weights in every process and in the --check run
        user = load_factory(spec)
        self.model = user.module
        self.loss_fn = user.loss_fn
        self.example = tuple(t.detach() for t in user.inputs)
        self.layers = [m for m in self.model.children() if any(True for _ in m.parameters())]
        if recompute == "full":
            from parplan.runtime.trace_graph import repeated_blocks

            blocks = repeated_blocks(self.model)
            if not blocks:
                raise InvalidInputError(
                    f"strategy recompute=full: {spec} has no repeated blocks to checkpoint (children of an "
                    "nn.ModuleList or nn.Sequential, the layers `parplan trace` finds); use recompute=none"
                )
            for block in blocks.values():
                _checkpoint_forward(block)

    def forward(self, data: Mapping[str, Tensor]) -> Tensor:
        inputs = tuple(data[f"input{i}"] for i in range(len(self.example)))
        out = self.model(*inputs)
        loss = self.loss_fn(out, inputs) if self.loss_fn is not None else out.float().mean()
        return loss  # type: ignore[no-any-return]

    def make_batch(self, microbatch: int, seed: int = 0) -> dict[str, Tensor]:
        """Micro-batch ``microbatch``: the factory's example inputs, floating-point ones scaled by
        ``1 + microbatch / 8`` so that data-parallel ranks reduce different gradients (integer
        inputs, e.g. token ids, as given)."""
        scale = 1 + microbatch / 8
        return {f"input{i}": t * scale if t.is_floating_point() else t for i, t in enumerate(self.example)}


def _checkpoint_forward(block: nn.Module) -> None:
    """Run ``block``'s forward under non-reentrant ``torch.utils.checkpoint`` (its parameter names
    unchanged, so gradients compare with the one-process run name by name)."""
    from torch.utils.checkpoint import checkpoint

    inner = block.forward

    def forward(*args: Any, **kwargs: Any) -> Any:
        if not torch.is_grad_enabled():
            return inner(*args, **kwargs)
        return checkpoint(inner, *args, use_reentrant=False, **kwargs)

    block.forward = forward  # type: ignore[method-assign]


def user_graph(spec: str, seed: int = 0) -> Any:
    """The traced graph (``parplan trace``) of a user's module with its loss: what train predicts."""
    from parplan.runtime.user_model import load_factory, trace_user_model

    torch.manual_seed(seed)
    return trace_user_model(load_factory(spec))


class StageModule(nn.Module):
    """Pipeline stage ``stage`` of ``stages``: its layers (and the embedding first, the head last).

    ``forward(x)``: the token ids on the first stage, else the previous stage's hidden state;
    returns the hidden state, or the logits on the last stage (the loss is the schedule's).
    """

    def __init__(self, model: TrainModel, layers: range, *, first: bool, last: bool) -> None:
        super().__init__()
        self.pre = model.pre if first else None
        self.layers = nn.ModuleList(model.layers[i] for i in layers)
        self.post = model.post if last else None
        segments: list[Segment] = list(model.layers)  # type: ignore[arg-type]
        self.in_name: str | None = None if first else segments[layers.start - 1].names[-1]
        self.out_name: str = model.post.names[-2] if last else segments[layers.stop - 1].names[-1]
        if self.post is not None:
            self.post.names = self.post.names[:-1]  # the loss runs as the schedule's loss_fn
            self.post.exports = [self.out_name]

    def forward(self, x: Tensor) -> Tensor:
        values: dict[str, Value]
        if self.pre is not None:
            values = self.pre({}, {"tokens": x})
        else:
            assert self.in_name is not None
            values = {self.in_name: x}
        for layer in self.layers:
            values.update(layer(values, {}))
        if self.post is not None:
            values.update(self.post(values, {}))
        return values[self.out_name]  # type: ignore[return-value]


def _loss_fn(output: Tensor, target: Tensor, tp_mesh: Any = None) -> Tensor:
    """Cross-entropy of the logits; with ``tp_mesh``, of this rank's vocabulary shard of them
    (``loss_parallel``, which must be active around the forward and the backward)."""
    import torch.nn.functional as F  # noqa: N812

    if tp_mesh is not None:
        from torch.distributed.tensor import DTensor, Shard

        output = DTensor.from_local(output, tp_mesh, [Shard(-1)], run_check=False)
    return F.cross_entropy(output.reshape(-1, output.shape[-1]), target.reshape(-1))


class VocabParallelLoss(nn.Module):
    """The graph's loss op under tensor parallelism: cross-entropy over the vocabulary-parallel
    logits each rank holds (Megatron-LM's and torchtitan's loss parallelism), so no rank gathers or
    keeps the full logits."""

    kind = "loss"

    def __init__(self, tp_mesh: Any) -> None:
        super().__init__()
        self.tp_mesh = tp_mesh

    def forward(self, logits: Tensor, *, data: Mapping[str, Tensor]) -> Tensor:
        return _loss_fn(logits, data["labels"], self.tp_mesh)


def _loss_context(strategy: Strategy) -> Any:
    """``loss_parallel`` with tensor parallelism (around forwards and backwards), else nothing."""
    if strategy.tp > 1:
        from torch.distributed.tensor.parallel import loss_parallel

        return loss_parallel()
    return nullcontext()


def pipeline_csv(strategy: Strategy, microbatches: int) -> str:
    """The strategy's schedule on ``pp`` equal stages as torch.distributed.pipelining's compute-only CSV."""
    from parplan.plan import Plan
    from parplan.problem import PassTimes
    from parplan.report.export import to_pipelining_csv
    from parplan.schedule.expert import build_schedule, linear_schedule_spec
    from parplan.synthetic import synthetic_problem

    spec = linear_schedule_spec(strategy.schedule)
    name = spec.name
    costs = PassTimes.split(F=1.0, I=1.0, W=1.0) if spec.needs_split_backward else PassTimes(F=1.0, B=2.0)
    problem = synthetic_problem(pp=strategy.pp, microbatches=microbatches, costs=costs)
    return to_pipelining_csv(Plan.from_schedule(problem, build_schedule(name, problem)), fused="split")


def check_model(name: str) -> None:
    """Refuse a model ``train`` has no torch twin for, naming the ones it runs."""
    from parplan.runtime.modules import hf_twin

    if name in TRAIN_MODELS or is_user_model(name) or hf_twin(name) is not None:
        return
    runs = ", ".join(TRAIN_MODELS)
    extra = f" ({name} runs under `parplan run` as a pipeline plan)" if name in TORCH_MODELS else ""
    raise InvalidInputError(
        f"--model {name!r}: train runs {runs}, Hugging Face config.json files of decoders and your own "
        f"module as FILE.py:FACTORY{extra}"
    )


def _tp_refusal(model: str) -> str | None:
    """Why ``model`` has no tensor-parallel plan in train, or None when it has one."""
    from parplan.runtime.modules import hf_twin

    if model in TP_MODELS:
        return None
    twin = hf_twin(model)
    if twin is None or twin[0].experts:
        return "its experts would need expert parallelism"
    if twin[0].gated:
        return "its fused gate and up projection would need regrouping, as QKV has"
    return None


def build_train_model(
    name: str, options: Mapping[str, Any], seed: int, recompute: str = "none"
) -> tuple[Any, Any]:
    """The torch twin of zoo model ``name`` as a :class:`TrainModel`, and its OpGraphModel (for
    data); a user's ``FILE.py:FACTORY`` as a :class:`UserTrainModel`, twice."""
    if is_user_model(name):
        if options:
            raise InvalidInputError(
                f"{', '.join('--' + k.replace('_', '-') for k in options)}: {name} is your module, its "
                "shapes are the factory's example inputs; drop the option"
            )
        user = UserTrainModel(name, seed, recompute)
        return user, user
    check_model(name)
    # dropout is priced (twin_graph), not run: the twin trains without it (see twin_notes)
    torch_options = {k: v for k, v in options.items() if k != "dropout"}
    graph_model, _ = build_torch_model(name, seed=seed, **torch_options)
    return TrainModel(graph_model, recompute), graph_model


# ------------------------------------------------------------------------ tensor parallelism
def _qkv_order(out_features: int, tp: int, parts: int) -> Tensor:
    """Row order that makes contiguous shard r hold rank r's slice of each of the ``parts`` blocks."""
    block = out_features // parts
    per = block // tp
    idx = [p * block + r * per + k for r in range(tp) for p in range(parts) for k in range(per)]
    return torch.tensor(idx)


def _regroup_rows(linear: nn.Linear, order: Tensor) -> None:
    with torch.no_grad():
        linear.weight.copy_(linear.weight[order])
        if linear.bias is not None:
            linear.bias.copy_(linear.bias[order])


def apply_tensor_parallel(model: TrainModel, tp_mesh: Any, sequence_parallel: bool) -> dict[str, Tensor]:
    """DTensor TP (+ SP) on every layer and the head; returns the row orders applied (for un-doing)."""
    from torch.distributed.tensor import Replicate, Shard
    from torch.distributed.tensor.parallel import (
        ColwiseParallel,
        PrepareModuleOutput,
        RowwiseParallel,
        SequenceParallel,
        parallelize_module,
    )

    tp = tp_mesh.size()
    if model.heads % tp:
        raise InvalidInputError(
            f"strategy.tp: {tp} does not divide the model's {model.heads} attention heads"
        )
    seq_in = Shard(1) if sequence_parallel else Replicate()
    orders: dict[str, Tensor] = {}
    for seg in (model.pre, *model.layers, model.post):
        plan: dict[str, Any] = {}
        for name in seg.names:
            key = _key(name)
            module = seg.ops[key]
            if name.endswith(("attn.qkv", "mlp.up")):
                lin = module.linear
                # fused Q|K|V rows regrouped per rank; a gated MLP's gate|up would be 2 parts
                parts = 3 if name.endswith("attn.qkv") else 1
                if parts > 1:
                    order = _qkv_order(lin.out_features, tp, parts)
                    _regroup_rows(lin, order)
                    orders[name] = order
                plan[f"ops.{key}.linear"] = ColwiseParallel(input_layouts=seq_in)
            elif name.endswith(("attn.out", "mlp.down")):
                plan[f"ops.{key}.linear"] = RowwiseParallel(output_layouts=seq_in)
            elif isinstance(module, Attention):
                module.heads = model.heads // tp
            elif name == "head":
                # vocabulary-parallel logits: each rank keeps its shard, the loss is loss_parallel's
                plan[f"ops.{key}.linear"] = ColwiseParallel(input_layouts=seq_in, output_layouts=Shard(-1))
            elif name == model.loss_name:
                seg.ops[key] = VocabParallelLoss(tp_mesh)
            elif sequence_parallel and module.kind == "norm":
                plan[f"ops.{key}.norm"] = SequenceParallel(use_local_output=True)
            elif module.kind == "embedding":
                # vocabulary-parallel token table (Megatron-LM); positions, if any, replicated
                plan[f"ops.{key}.tok"] = RowwiseParallel(
                    input_layouts=Replicate(), output_layouts=Replicate()
                )
                if sequence_parallel:
                    plan[f"ops.{key}"] = PrepareModuleOutput(
                        output_layouts=Replicate(), desired_output_layouts=Shard(1), use_local_output=True
                    )
        if plan:
            parallelize_module(seg, tp_mesh, plan)
    return orders


# ------------------------------------------------------------------------------ accounting
def _local(t: Tensor) -> Tensor:
    return t.to_local() if hasattr(t, "to_local") else t


def _tensor_bytes(tensors: Iterable[Tensor]) -> float:
    seen: set[int] = set()
    total = 0.0
    for t in tensors:
        t = _local(t)
        if not isinstance(t, Tensor) or t.device.type == "meta":
            continue
        ptr = t.untyped_storage().data_ptr()
        if ptr in seen:
            continue
        seen.add(ptr)
        total += t.untyped_storage().nbytes()
    return total


def _is_parameter(t: Tensor) -> bool:
    """A parameter or a view of one (``weight.t()``, which ``F.linear`` saves): memory the model
    holds anyway, not an activation."""
    for x in (t, _local(t)):
        if isinstance(x, nn.Parameter) or isinstance(getattr(x, "_base", None), nn.Parameter):
            return True
    return False


class ActivationMeter:
    """Live and peak bytes of the distinct tensors autograd holds for the backward.

    Installed with :meth:`active` around forwards; every saved tensor is wrapped in a holder that
    autograd frees with the graph node, so ``live`` falls as backwards run and ``peak`` is the true
    high-water mark of saved activations (pipelines keep several micro-batches in flight).
    """

    def __init__(self) -> None:
        self.live = 0.0
        self.peak = 0.0
        self._refs: dict[int, int] = {}

    class _Held:
        __slots__ = ("meter", "ptr", "size", "tensor")

        def __init__(self, meter: ActivationMeter, tensor: Tensor) -> None:
            self.tensor = tensor
            self.meter = meter
            self.ptr, self.size = 0, 0.0
            if _is_parameter(tensor):  # a weight (or its transpose) that a linear saves
                return
            local = _local(tensor)
            # hold the values, not the autograd history: a node that saves its own output would
            # otherwise hold itself (node -> holder -> output -> node), a cycle only a full backward
            # breaks; the split backward's input pass retains the graph, so it would never be freed
            self.tensor = tensor.detach()
            try:
                storage = local.untyped_storage()
                self.ptr, self.size = storage.data_ptr(), float(storage.nbytes())
            except (RuntimeError, NotImplementedError):  # tensors without storage
                return
            refs = meter._refs
            refs[self.ptr] = refs.get(self.ptr, 0) + 1
            if refs[self.ptr] == 1:
                meter.live += self.size
                meter.peak = max(meter.peak, meter.live)

        def __del__(self) -> None:
            if not self.size:
                return
            refs = self.meter._refs
            refs[self.ptr] -= 1
            if refs[self.ptr] == 0:
                del refs[self.ptr]
                self.meter.live -= self.size

    @contextmanager
    def active(self, on: bool = True) -> Any:
        """Meter the forwards run inside (``on``). train meters its first step only, whose time the
        median leaves out, so the timed steps run without the hooks' Python overhead."""
        if not on:
            yield self
            return
        with torch.autograd.graph.saved_tensors_hooks(
            lambda t: ActivationMeter._Held(self, t), lambda h: h.tensor
        ):
            yield self


def _param_names_bytes(model: nn.Module) -> float:
    return _tensor_bytes(p for p in model.parameters())


def _optimizer_bytes(opt: Any) -> float:
    inner = getattr(opt, "optim", opt)  # ZeroRedundancyOptimizer keeps the local optimizer in .optim
    return _tensor_bytes(v for state in inner.state.values() for v in state.values() if isinstance(v, Tensor))


# ------------------------------------------------------------------------------------ worker
def _full_grads(model: nn.Module, orders: Mapping[str, Tensor], keep: nn.Module) -> dict[str, Tensor]:
    """Full gradients of ``keep``'s parameters, named as in ``model`` (collective: every rank of a
    stage calls it), TP row order undone."""
    import logging

    # gathering a (dp, tp)-sharded gradient for the check takes two all-gathers; torch logs that it
    # is "suboptimal" once per parameter, which is noise for a one-off comparison
    logging.getLogger("torch.distributed.tensor._redistribute").setLevel(logging.ERROR)
    out = {}
    mine = {id(p) for p in keep.parameters()}
    for name, p in model.named_parameters():
        if id(p) not in mine:
            continue
        g = p.grad
        if g is None:
            continue
        full = g.full_tensor() if hasattr(g, "full_tensor") else g
        full = full.detach().clone()
        for op, order in orders.items():
            if f"ops.{_key(op)}.linear." in name:
                inv = torch.empty_like(order)
                inv[order] = torch.arange(order.numel())
                full = full[inv]
        out[name] = full  # the unwrapped model's names: FSDP2 and DTensor keep them
    return out


def _batch(graph_model: Any, dp_rank: int, j: int, job: TrainJob) -> dict[str, Tensor]:
    """Micro-batch ``j`` of data-parallel rank ``dp_rank``: a fixed synthetic dataset of one global
    batch, seen again every step (random tokens carry nothing to learn, so a falling loss shows the
    model fitting the batch)."""
    return graph_model.make_batch(dp_rank * job.microbatches + j, job.seed)  # type: ignore[no-any-return]


#: Gradient bucket size of the all-reduce after the backward (DDP's default, 25 MiB).
BUCKET_BYTES = 25 * 2**20


def _param_groups(params: Sequence[nn.Parameter]) -> list[dict[str, Any]]:
    """DTensor parameters and plain ones in separate optimizer groups: a multi-tensor (foreach)
    step takes one kind of tensor at a time."""
    from torch.distributed.tensor import DTensor

    kinds = [[p for p in params if isinstance(p, DTensor)], [p for p in params if not isinstance(p, DTensor)]]
    return [{"params": k} for k in kinds if k]


def all_reduce_buckets(grads: Sequence[Tensor], group: Any, dp: int) -> None:
    """Average ``grads`` over ``group`` in place, as DDP does: flattened into buckets of
    :data:`BUCKET_BYTES`, one all-reduce per bucket (one per tensor would pay the collective's
    latency for every parameter)."""
    import torch.distributed as dist

    bucket: list[Tensor] = []
    size = 0

    def flush() -> None:
        if not bucket:
            return
        flat = torch.cat([g.reshape(-1) for g in bucket])
        dist.all_reduce(flat, group=group)
        flat /= dp
        offset = 0
        for g in bucket:
            g.copy_(flat[offset : offset + g.numel()].view_as(g))
            offset += g.numel()
        bucket.clear()

    for g in grads:
        if bucket and (g.dtype != bucket[0].dtype or size + g.numel() * g.element_size() > BUCKET_BYTES):
            flush()
            size = 0
        bucket.append(g)
        size += g.numel() * g.element_size()
    flush()


def _train_device(rank: int, world: int, job: TrainJob) -> DeviceReport:
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh

    s = job.strategy
    device_type = "cuda" if job.backend == "nccl" else "cpu"
    device = (
        torch.device(device_type, torch.cuda.current_device())
        if device_type == "cuda"
        else torch.device("cpu")
    )
    mesh = init_device_mesh(device_type, (s.pp, s.dp, s.tp), mesh_dim_names=("pp", "dp", "tp"))
    pp_rank, dp_rank, tp_rank = (mesh[d].get_local_rank() for d in ("pp", "dp", "tp"))
    model, graph_model = build_train_model(job.model, dict(job.model_options), job.seed, s.recompute)
    if device_type == "cuda":
        model = model.cuda()
    orders: dict[str, Tensor] = {}
    if s.tp > 1:
        orders = apply_tensor_parallel(model, mesh["tp"], bool(s.sequence_parallel))
    dp_group = mesh["dp"].get_group()
    root: nn.Module = model
    if s.pp > 1:
        chunk = stage_layers(len(model.layers), s.pp)[pp_rank]
        root = StageModule(model, chunk, first=pp_rank == 0, last=pp_rank == s.pp - 1)
    wrapped: nn.Module = root
    manual_allreduce = False
    if s.zero >= 2:
        from torch.distributed.fsdp import fully_shard

        for layer in root.layers:  # type: ignore[union-attr]
            fully_shard(layer, mesh=mesh["dp"], reshard_after_forward=s.zero == 3)
        fully_shard(root, mesh=mesh["dp"], reshard_after_forward=s.zero == 3)
    elif s.dp > 1 and s.tp == 1 and s.pp == 1:
        from torch.nn.parallel import DistributedDataParallel

        wrapped = DistributedDataParallel(root, process_group=dp_group)
    elif s.dp > 1:
        manual_allreduce = _manual_allreduce(s)
    params = list(root.parameters())
    groups = _param_groups(params)
    meter_on = [False]  # the first step only, as the activation meter
    unsharded = [0.0]  # ZeRO-2: the gathered parameters held from the forward to the backward
    if s.zero == 2:

        def held_gathered(module: nn.Module, args: Any, output: Any) -> None:
            if meter_on[0]:  # FSDP2 registers the unsharded parameters for that span
                unsharded[0] = max(unsharded[0], _tensor_bytes(module.parameters()))

        root.register_forward_hook(held_gathered)
    if s.zero == 1:
        from torch.distributed.optim import ZeroRedundancyOptimizer

        # bucket views: the updated shards are broadcast a bucket at a time, not a parameter at a time
        opt: Any = ZeroRedundancyOptimizer(
            params,
            optimizer_class=torch.optim.AdamW,
            lr=job.lr,
            process_group=dp_group,
            parameters_as_bucket_view=s.tp == 1,  # bucket views would flatten DTensors
            foreach=s.tp > 1,
        )
    else:
        # DTensor parameters: the multi-tensor AdamW dispatches a few ops per step, not a few per
        # parameter (each DTensor op pays its sharding propagation)
        opt = torch.optim.AdamW(groups, lr=job.lr, foreach=s.tp > 1)
    schedule = None
    if s.pp > 1:
        from torch.distributed.pipelining import PipelineStage
        from torch.distributed.pipelining.schedules import _PipelineScheduleRuntime

        stage = PipelineStage(root, pp_rank, s.pp, device, group=mesh["pp"].get_group())
        # The losses are read inside loss_fn: a losses list would keep every micro-batch's graph alive
        # (and with it, under a split backward, every saved activation) until the step ends.
        seen_losses: list[float] = []

        tp_loss_mesh = mesh["tp"] if s.tp > 1 else None

        def loss_fn(output: Tensor, target: Tensor) -> Tensor:
            loss = _loss_fn(output, target, tp_loss_mesh)
            local = _local(loss).detach()
            if local.device.type != "meta":  # the runtime's shape inference runs on meta tensors
                seen_losses.append(float(local))
            return loss

        schedule = _PipelineScheduleRuntime([stage], job.microbatches, loss_fn=loss_fn, scale_grads=True)
        csv_path = Path(job.out_dir) / f"schedule{rank}.csv"
        csv_path.write_text(job.schedule_csv or pipeline_csv(s, job.microbatches))
        schedule._load_csv(str(csv_path), format="compute_only")
    meter = ActivationMeter()
    losses: list[float] = []
    times: list[float] = []
    phases: list[dict[str, float]] = []
    grads: dict[str, Tensor] | None = None
    grad_bytes = 0.0
    t_start = time.perf_counter()
    batches = [_batch(graph_model, dp_rank, j, job) for j in range(job.microbatches)]
    if device_type == "cuda":
        batches = [{k: v.cuda() for k, v in b.items()} for b in batches]
    for step in range(job.steps):
        meter_on[0] = step == 0
        dist.barrier()
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        total = torch.zeros((), dtype=torch.float64)
        if schedule is not None:
            tokens = torch.cat([b["tokens"] for b in batches])
            labels = torch.cat([b["labels"] for b in batches])
            first, last = pp_rank == 0, pp_rank == s.pp - 1
            seen_losses.clear()
            with meter.active(step == 0), _loss_context(s):
                schedule.step(
                    *((tokens,) if first else ()), target=labels if last else None, return_outputs=False
                )
            if last:
                if len(seen_losses) < job.microbatches:
                    raise RuntimeError(
                        f"pipeline step {step}: {len(seen_losses)} losses for {job.microbatches} micro-batches"
                    )
                total += sum(seen_losses[-job.microbatches :]) / job.microbatches
        else:
            for data in batches:
                with _loss_context(s):
                    with meter.active(step == 0):
                        loss = wrapped(data) / job.microbatches
                    loss.backward()
                total += float(_local(loss).detach())
        t_compute = time.perf_counter()
        if manual_allreduce:
            all_reduce_buckets([_local(p.grad) for p in params if p.grad is not None], dp_group, s.dp)
        grad_bytes = max(grad_bytes, _tensor_bytes(p.grad for p in params if p.grad is not None))
        t_sync = time.perf_counter()
        if step == 0 and job.collect_grads:  # the first step is left out of the timings
            grads = _full_grads(model, orders, root)
        t_step = time.perf_counter()
        opt.step()
        t_opt = time.perf_counter()
        loss_t = total.clone()
        dist.all_reduce(loss_t)  # the last stage's dp ranks hold the losses (tp ranks alike)
        losses.append(float(loss_t) / (s.dp * s.tp))
        dist.barrier()
        t_end = time.perf_counter()
        times.append(t_end - t0)
        phases.append(
            {
                "compute": t_compute - t0,
                "grad_sync": t_sync - t_compute,
                "optimizer": t_opt - t_step,
                "other": t_end - t_opt,
            }
        )
        if job.progress and rank == 0:
            print(
                f"[train] step {step + 1}/{job.steps}  loss {losses[-1]:.5f}  {times[-1]:.2f} s/step  "
                f"elapsed {time.perf_counter() - t_start:.1f} s",
                file=sys.stderr,
                flush=True,
            )
    memory = {
        "parameters": _param_names_bytes(root) + unsharded[0],  # the shards, and ZeRO-2's gathered copy
        "gradients": grad_bytes,
        "optimizer_state": _optimizer_bytes(opt),
        "activations": meter.peak,
        "buffers": 0.0,
    }
    memory["total"] = sum(memory.values())
    cuda_peak = float(torch.cuda.max_memory_allocated()) if device_type == "cuda" else None
    return DeviceReport(
        rank=rank,
        coords=(pp_rank, dp_rank, tp_rank),
        losses=tuple(losses),
        step_s=tuple(times),
        phase_s=tuple(phases),
        memory=memory,
        cuda_peak_bytes=cuda_peak,
        grads=grads if dp_rank == 0 and tp_rank == 0 else None,
    )


def _worker(rank: int, world: int, job: TrainJob) -> None:
    from parplan.runtime.launch import _init_group

    out = Path(job.out_dir)
    done = False
    try:
        torch.set_num_threads(job.threads)
        if job.backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", rank)))
        _init_group(rank, world, job.backend, job.store, job.timeout_s)
        torch.save(_train_device(rank, world, job), out / f"device{rank}.pt")
        done = True
    except BaseException as exc:  # the parent reads this file: the worker's error must not be lost
        (out / f"device{rank}.err").write_text(f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}")
        raise SystemExit(1) from None
    finally:
        import torch.distributed as dist

        if dist.is_initialized():
            if done:  # no rank tears the group down while a peer still talks on it
                dist.barrier()
            dist.destroy_process_group()


def _spawned_worker(rank: int, world: int, job: TrainJob) -> None:
    """:func:`_worker` in a process spawned by train: once its report is written, leave without
    running the interpreter's and C++ libraries' exit-time destructors, where a gloo or FSDP2
    thread still being torn down can abort a finished process (``terminate called without an
    active exception``, seen once in a few hundred runs)."""
    _worker(rank, world, job)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


# ----------------------------------------------------------------------------------- reference
def reference_run(job: TrainJob) -> tuple[list[float], dict[str, Tensor]]:
    """The same steps in one process, no parallelism: per-step losses and the first step's gradients."""
    s = job.strategy
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    model, graph_model = build_train_model(job.model, dict(job.model_options), job.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=job.lr)
    losses, grads = [], {}
    n = s.dp * job.microbatches
    for step in range(job.steps):
        opt.zero_grad(set_to_none=True)
        total = 0.0
        for r in range(s.dp):
            for j in range(job.microbatches):
                loss = model(_batch(graph_model, r, j, job)) / n
                loss.backward()
                total += float(loss.detach())
        if step == 0:
            grads = {
                name: p.grad.detach().clone() for name, p in model.named_parameters() if p.grad is not None
            }
        opt.step()
        losses.append(total)
    return losses, grads


# ------------------------------------------------------------------------------------ launcher
@dataclass(frozen=True, slots=True, kw_only=True)
class TrainResult:
    """The measured run beside its prediction (``to_json`` is the ``train --json`` contract)."""

    strategy: Strategy
    steps: int
    losses: tuple[float, ...]
    ref_losses: tuple[float, ...] | None
    max_grad_abs_err: float | None
    max_loss_rel_err: float | None
    measured_step_s: float
    step_times_s: tuple[float, ...]
    predicted_step_s: float
    measured_peak_memory_bytes: tuple[float, ...]
    predicted_peak_memory_bytes: tuple[float, ...]
    measured_memory: tuple[Mapping[str, float], ...]
    predicted_memory: Mapping[str, float]
    #: median seconds per phase (:attr:`DeviceReport.phase_s`) of the slowest device, beside the
    #: prediction's terms gathered into the same phases (:func:`predicted_phases`)
    measured_phase_s: Mapping[str, float]
    predicted_phase_s: Mapping[str, float]
    cluster: str
    memory_method: str
    chosen_by: str
    notes: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "strategy": self.strategy.to_json(),
            "strategy_text": self.strategy.to_text(),
            "chosen_by": self.chosen_by,
            "cluster": self.cluster,
            "steps": self.steps,
            "losses": list(self.losses),
            "ref_losses": None if self.ref_losses is None else list(self.ref_losses),
            "max_grad_abs_err": self.max_grad_abs_err,
            "max_loss_rel_err": self.max_loss_rel_err,
            "measured_step_s": self.measured_step_s,
            "step_times_s": list(self.step_times_s),
            "predicted_step_s": self.predicted_step_s,
            "measured_peak_memory_bytes": list(self.measured_peak_memory_bytes),
            "predicted_peak_memory_bytes": list(self.predicted_peak_memory_bytes),
            "measured_memory_bytes": [dict(m) for m in self.measured_memory],
            "predicted_memory_bytes": dict(self.predicted_memory),
            "measured_phase_s": dict(self.measured_phase_s),
            "predicted_phase_s": dict(self.predicted_phase_s),
            "memory_method": self.memory_method,
            "notes": list(self.notes),
        }


def warmup_steps(steps: int) -> int:
    """Steps left out of the timings: the first (lazy initialisation, the pipeline runtime's shape
    inference, the memory meter) and, from 4 steps on, the second too (the allocator and the
    caches settle over two steps on this machine)."""
    return 0 if steps == 1 else 1 if steps < 4 else 2


PHASES = ("compute", "grad_sync", "optimizer", "other")


def _manual_allreduce(s: Strategy) -> bool:
    """Gradients all-reduced after the backward: data parallelism that neither DDP (which takes
    neither DTensor parameters nor a pipeline's backwards) nor FSDP2 (ZeRO-2/3) runs."""
    return s.dp > 1 and s.zero < 2 and (s.tp > 1 or s.pp > 1)


def predicted_phases(strategy: Strategy, terms: Mapping[str, float]) -> dict[str, float]:
    """The estimate's terms gathered into train's measured phases: DDP and FSDP2 reduce inside
    the backward, so their ``dp_comm`` is part of ``compute``; the manual all-reduce is its own
    ``grad_sync``."""
    inside = ("compute", "recompute", "tp_comm", "pp_bubble", "pp_p2p")
    sync = terms.get("dp_comm", 0.0) if _manual_allreduce(strategy) else 0.0
    return {
        "compute": sum(terms.get(k, 0.0) for k in inside) + terms.get("dp_comm", 0.0) - sync,
        "grad_sync": sync,
        # DTensor reduces the replicated parameters' partial gradients when the optimizer reads them
        "optimizer": terms.get("optimizer", 0.0) + terms.get("tp_grad_sync", 0.0),
        "other": terms.get("step_sync", 0.0),
    }


def prediction_options(devices: int, profile: Any = None, cluster: Any = None) -> dict[str, Any]:
    """How the estimate models this runtime: torch's split backward keeps the graph until W, the
    processes share this machine's cores (so a pipeline's idle stages speed up the busy ones), and
    a profile measured by one process alone is slowed as ``devices`` busy processes slow each
    other (the cluster's calibrated slowdown, else fair sharing of the cores)."""
    from parplan.cost.calibration import RuntimeCalibration, runtime_calibration

    cores = os.cpu_count() or 1
    opts: dict[str, Any] = {
        "w_keeps_graph": True,
        "shared_cores": cores,
        "bucket_copies": True,
        "per_tensor_grad_sync": True,
        "dtensor_embedding_grad": True,
    }
    if profile is not None:
        cal = RuntimeCalibration() if cluster is None else runtime_calibration(cluster)
        opts["profile"] = profile
        opts["profile_scale"] = cal.slowdown_at(devices, cores)
    return opts


def _stage_mem(est: Any, stage: int) -> Any:
    return est.stage_memory[stage] if stage < len(est.stage_memory) else est.memory


def check_strategy(strategy: Strategy, model: str = "gpt-tiny") -> None:
    """Refuse what this runtime does not execute, saying what to do instead."""
    if is_user_model(model):
        refuse = []
        if strategy.pp > 1:
            refuse.append(
                "pipeline stages (plan them with `parplan plan --graph` and run with `parplan run`)"
            )
        if strategy.tp > 1:
            refuse.append("a tensor-parallel plan (that needs your module's own DTensor plan)")
        if strategy.recompute == "selective":
            refuse.append(
                "recompute=selective (it recomputes core attention, which train cannot find in your module; "
                "recompute=full checkpoints each repeated block)"
            )
        if refuse:
            raise InvalidInputError(
                f"strategy {strategy.to_text()!r}: train runs your module {model} with data parallelism, "
                f"ZeRO 0-3 and recompute=full, not {'; not '.join(refuse)}"
            )
        return
    why = _tp_refusal(model) if strategy.tp > 1 else None
    if why:
        raise InvalidInputError(
            f"strategy {strategy.to_text()!r}: {model} has no tensor-parallel plan in train ({why}); "
            f"use tp=1 with dp, zero, recompute and pp"
        )
    if strategy.pp > 1 and strategy.schedule != PLANNED:
        pipeline_csv(strategy, strategy.pp)  # a schedule that is not one stage per rank is refused here
    if strategy.zero == 1 and strategy.tp > 1:
        raise InvalidInputError(
            f"strategy {strategy.to_text()!r}: ZeRO-1 (ZeroRedundancyOptimizer) does not take tensor-parallel "
            "DTensor parameters; use zero=2 (FSDP2, parameters gathered from forward to backward) or tp=1"
        )


def runnable(strategy: Strategy, model: str = "gpt-tiny") -> bool:
    """Whether this runtime executes ``strategy`` on ``model`` (see :func:`check_strategy`)."""
    try:
        check_strategy(strategy, model)
    except InvalidInputError:
        return False
    return True


def choose_strategy(
    model: str,
    cluster: Any,
    devices: int,
    *,
    model_options: Mapping[str, Any] | None = None,
    global_batch: int | None = None,
    memory_limit: float | None = None,
    time_target: float | None = None,
    profile: Any = None,
) -> tuple[Strategy, str, Any]:
    """The strategy ``train`` runs when none is given: from the whole-model frontier of this runtime.

    The fastest point under ``memory_limit`` (default: the device memory), or the least memory
    meeting ``time_target``. Returns (strategy, how it was chosen, the frontier).
    """
    from parplan.errors import InfeasibleError
    from parplan.frontier.grid import grid_frontier
    from parplan.runtime.modules import twin_graph

    graph = user_graph(model) if is_user_model(model) else twin_graph(model, **dict(model_options or {}))
    blocks = any(op.layer is not None for op in graph.ops)  # recompute checkpoints blocks: none, no recompute
    f = grid_frontier(
        graph,
        cluster,
        devices,
        global_batch=global_batch,
        memory_limit=memory_limit,
        allowed=lambda st: runnable(st, model) and (blocks or st.recompute == "none"),
        **prediction_options(devices, profile, cluster),
    )
    if time_target is not None:
        fit = [e for e in f.fitting() if e.step_s <= time_target]
        if not fit:
            best = f.fitting()[0] if f.fitting() else f.fastest
            raise InfeasibleError(
                f"--time-target {time_target:.4g} s: no runnable strategy on {devices} devices meets it within "
                f"{f.memory_limit / 2**30:.3g} GiB; the fastest that fits takes {best.step_s:.4g} s "
                f"({best.strategy.label()}). Smallest change: a target of {best.step_s:.4g} s or more"
            )
        e = fit[-1]
        return (
            e.strategy,
            f"least memory meeting --time-target {time_target:.4g} s (frontier of {len(f.points)})",
            f,
        )
    limit = f.memory_limit
    try:
        e = f.fastest_under(limit)
    except InfeasibleError as exc:
        raise InfeasibleError(
            str(exc).replace("--memory-limit", "memory", 1) if memory_limit is None else str(exc)
        ) from None
    how = f"fastest under {limit / 2**30:.3g} GiB per device" + (
        "" if memory_limit is not None else " (device memory)"
    )
    return e.strategy, how + f" (frontier of {len(f.points)})", f


def launch_train(job: TrainJob) -> list[DeviceReport]:
    """Start one process per device of ``job.strategy`` on this machine and collect their reports."""
    from parplan.runtime.launch import spawn_devices

    world = job.strategy.num_devices
    return spawn_devices(
        _spawned_worker, (world, job), world, job.out_dir, job.timeout_s * (job.steps + 2) + 60
    )


#: ``schedule=plan``: the pipeline order the planner finds for the strategy's own stage costs.
PLANNED = "plan"
#: The expert schedule a planned pipeline starts from and must not do worse than (time and memory).
PLAN_BASELINE = "zb-h1"


def planned_pipeline(
    graph: Any,
    strategy: Strategy,
    cluster: Any,
    global_batch: int,
    opts: Mapping[str, Any],
    time_limit_s: float,
    progress: bool = False,
) -> tuple[Any, str]:
    """The planner's schedule for ``strategy``'s pipeline and its estimate: (estimate, CSV).

    The estimate of the strategy under :data:`PLAN_BASELINE` gives the pipeline problem (each
    stage's F, I, W per micro-batch, its activations, the send time); the planner
    (:func:`parplan.solve.plan_problem`, warm-started by the expert schedules) minimises its
    makespan within the baseline's peak activation memory, and the estimate prices the order found.
    """
    from parplan.cost.strategy import estimate_strategy
    from parplan.report.export import to_pipelining_csv
    from parplan.solve import plan_problem

    base = replace(strategy, schedule=PLAN_BASELINE)
    est0 = estimate_strategy(graph, base, cluster, global_batch=global_batch, **opts)
    # the baseline's peak in-flight activations, as the estimate simulated them (a device's peak
    # depends only on its own order of F, I and W)
    limit = max(m.activations for m in est0.stage_memory)
    if progress:
        print(
            f"[train] planning the pipeline schedule ({time_limit_s:g} s limit)", file=sys.stderr, flush=True
        )
    plan = plan_problem(est0.pipeline_problem, memory_limit=limit, time_limit_s=time_limit_s)
    est = estimate_strategy(
        graph, base, cluster, global_batch=global_batch, pipeline_schedule=plan.schedule, **opts
    )
    return replace(est, strategy=strategy), to_pipelining_csv(plan, fused="split")


def train(
    model: str,
    strategy: Strategy,
    cluster: Any,
    *,
    model_options: Mapping[str, Any] | None = None,
    steps: int = 3,
    global_batch: int | None = None,
    lr: float = 1e-3,
    seed: int = 0,
    backend: str = "gloo",
    timeout_s: float = 120.0,
    check: bool = True,
    progress: bool = True,
    chosen_by: str = "--strategy",
    profile: Any = None,
    plan_time_limit_s: float = 5.0,
) -> TrainResult:
    """Run ``steps`` training steps of ``model`` on ``strategy`` and compare with the prediction.

    ``global_batch`` is samples per step (default: one micro-batch per device); each data-parallel
    rank accumulates ``global_batch / (dp * microbatch_size)`` micro-batches. ``cluster`` gives the
    prediction (``local:N`` on this machine). With ``check`` the same steps run in one process and
    losses and first-step gradients are compared.
    """
    from parplan.cost.strategy import estimate_strategy
    from parplan.runtime.modules import twin_graph

    check_strategy(strategy, model)
    if backend not in BACKENDS:
        raise InvalidInputError(f"--backend: unknown {backend!r}; use {' or '.join(BACKENDS)}")
    if steps < 1:
        raise InvalidInputError(f"--steps: must be >= 1, got {steps}")
    if strategy.num_devices > cluster.num_devices:
        raise InvalidInputError(
            f"strategy {strategy.to_text()!r} needs {strategy.num_devices} devices; cluster {cluster.name!r} has "
            f"{cluster.num_devices} (use --cluster local:{strategy.num_devices})"
        )
    options = dict(model_options or {})
    build_train_model(model, options, seed, strategy.recompute)  # bad input fails here, with its message
    graph = user_graph(model, seed) if is_user_model(model) else twin_graph(model, **options)
    b = int(graph.meta_dict.get("microbatch_size", 1))
    gb = strategy.num_devices * b if global_batch is None else global_batch
    if gb < 1 or gb % (strategy.dp * b):
        raise InvalidInputError(
            f"--global-batch {gb}: must be a multiple of dp x micro-batch size = {strategy.dp} x {b}"
        )
    microbatches = gb // (strategy.dp * b)
    opts = prediction_options(strategy.num_devices, profile, cluster)
    schedule_csv = ""
    if strategy.schedule == PLANNED:
        est, schedule_csv = planned_pipeline(graph, strategy, cluster, gb, opts, plan_time_limit_s, progress)
    else:
        est = estimate_strategy(graph, strategy, cluster, global_batch=gb, **opts)
    threads = max(1, (os.cpu_count() or 1) // strategy.num_devices)
    with tempfile.TemporaryDirectory(prefix="parplan-train-") as tmp:
        job = TrainJob(
            model=model,
            model_options=tuple(sorted(options.items())),
            strategy=strategy,
            steps=steps,
            microbatches=microbatches,
            lr=lr,
            seed=seed,
            backend=backend,
            timeout_s=timeout_s,
            out_dir=tmp,
            store=os.path.join(tmp, "store"),
            threads=threads,
            collect_grads=check,
            progress=progress,
            schedule_csv=schedule_csv,
        )
        reports = launch_train(job)
    losses = reports[0].losses
    ref_losses: list[float] | None = None
    grad_err = loss_err = None
    if check:
        ref_losses, ref_grads = reference_run(job)
        got: dict[str, Tensor] = {}
        for rep in reports:  # one report per pipeline stage carries that stage's gradients
            got.update(rep.grads or {})
        missing = sorted(set(ref_grads) - set(got))
        if missing:
            raise InvalidInputError(
                f"train --check: no distributed gradient for {missing[:3]} (a parplan bug)"
            )
        grad_err = max(float((got[n] - ref_grads[n]).abs().max()) for n in ref_grads)
        loss_err = max(abs(a - r) / max(abs(r), 1e-12) for a, r in zip(losses, ref_losses, strict=True))
    per_step = [max(r.step_s[k] for r in reports) for k in range(steps)]
    timed = slice(warmup_steps(steps), None)
    measured = statistics.median(per_step[timed])
    # the phases of the busiest device (the others wait for it in "other")
    medians = [{ph: statistics.median(p[ph] for p in r.phase_s[timed]) for ph in PHASES} for r in reports]
    phase_s = max(medians, key=lambda ph: ph["compute"] + ph["grad_sync"] + ph["optimizer"])
    notes = twin_notes(model)
    if strategy.num_devices < cluster.num_devices:
        notes.append(f"{cluster.num_devices - strategy.num_devices} of the cluster's devices left idle")
    return TrainResult(
        strategy=strategy,
        steps=steps,
        losses=tuple(losses),
        ref_losses=None if ref_losses is None else tuple(ref_losses),
        max_grad_abs_err=grad_err,
        max_loss_rel_err=loss_err,
        measured_step_s=measured,
        step_times_s=tuple(per_step),
        predicted_step_s=est.step_s,
        measured_peak_memory_bytes=tuple(r.memory["total"] for r in reports),
        # tensor accounting sees the state and the saved activations, not transient buffers (ZeRO-3
        # gathers, a checkpointed layer's recompute): compare like with like, list buffers apart
        predicted_peak_memory_bytes=tuple(
            _stage_mem(est, r.coords[0]).total - _stage_mem(est, r.coords[0]).buffers for r in reports
        ),
        measured_memory=tuple(r.memory for r in reports),
        predicted_memory={**est.memory.to_json(), "total": est.memory.total},
        measured_phase_s=phase_s,
        predicted_phase_s=predicted_phases(strategy, est.terms),
        cluster=cluster.name,
        memory_method=(
            "tensor accounting: parameters, gradients and optimizer state held, peak autograd-saved tensors; "
            "transient buffers (ZeRO-3 gathers, recompute) are predicted (predicted_memory_bytes.buffers) but "
            "not measured, and left out of both peak lists"
        ),
        chosen_by=chosen_by,
        notes=tuple(notes),
    )


# ------------------------------------------------------------------------------------ torchrun
def torchrun_command(
    model: str,
    strategy: Strategy,
    cluster: Any,
    *,
    options: Mapping[str, Any] | None = None,
    steps: int = 3,
    global_batch: int | None = None,
) -> str:
    """The ``torchrun`` command that runs this job on ``cluster``'s machines (one line per node)."""
    n = strategy.num_devices
    nodes = sorted({d.node for d in cluster.devices[:n]})
    per_node = n // len(nodes)
    backend = "gloo" if cluster.devices[0].kind == "cpu" else "nccl"
    args = [
        f"--model {model}",
        f'--strategy "{strategy.to_text()}"',
        f"--steps {steps}",
        f"--backend {backend}",
    ]
    args += [f"--{k.replace('_', '-')} {v}" for k, v in sorted(dict(options or {}).items())]
    if global_batch is not None:
        args.append(f"--global-batch {global_batch}")
    worker = "-m parplan.runtime.train " + " ".join(args)
    if len(nodes) == 1:
        return f"torchrun --standalone --nproc-per-node {per_node} {worker}"
    return (
        f"# on each of the {len(nodes)} nodes (MASTER_ADDR: the first node's address)\n"
        f"torchrun --nnodes {len(nodes)} --nproc-per-node {per_node} --rdzv-backend c10d "
        f"--rdzv-endpoint $MASTER_ADDR:29500 --rdzv-id parplan-train {worker}"
    )


def main(argv: list[str] | None = None) -> int:
    """torchrun entry: ``python -m parplan.runtime.train --model M --strategy S [--steps N] [--out DIR]``.

    Reads RANK / WORLD_SIZE / LOCAL_RANK from torchrun's environment; every rank writes its
    :class:`DeviceReport` to ``--out``; rank 0 prints the losses and step times as one JSON line.
    """
    import argparse
    import json

    from parplan.strategy import parse_strategy

    ap = argparse.ArgumentParser(prog="parplan.runtime.train")
    ap.add_argument("--model", default="gpt-tiny")
    ap.add_argument("--strategy", required=True)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--backend", default="nccl", choices=BACKENDS)
    ap.add_argument("--global-batch", type=int, default=None)
    ap.add_argument("--microbatch-size", type=int, default=None)
    ap.add_argument("--seq-len", type=int, default=None)
    ap.add_argument("--num-layers", type=int, default=None)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--timeout", type=float, default=300.0)
    ap.add_argument("--out", default="parplan-train")
    a = ap.parse_args(argv)
    strategy = parse_strategy(a.strategy)
    check_strategy(strategy, a.model)
    world, rank = int(os.environ["WORLD_SIZE"]), int(os.environ["RANK"])
    if world != strategy.num_devices:
        raise SystemExit(
            f"strategy {a.strategy!r} needs {strategy.num_devices} processes, torchrun started {world}"
        )
    options = {
        k: v
        for k, v in {
            "microbatch_size": a.microbatch_size,
            "seq_len": a.seq_len,
            "num_layers": a.num_layers,
        }.items()
        if v is not None
    }
    b = options.get("microbatch_size", 1)
    gb = a.global_batch if a.global_batch is not None else world * b
    Path(a.out).mkdir(parents=True, exist_ok=True)
    job = TrainJob(
        model=a.model,
        model_options=tuple(sorted(options.items())),
        strategy=strategy,
        steps=a.steps,
        microbatches=gb // (strategy.dp * b),
        lr=a.lr,
        seed=a.seed,
        backend=a.backend,
        timeout_s=a.timeout,
        out_dir=a.out,
        store=None,
        threads=max(1, (os.cpu_count() or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", world))),
        collect_grads=False,
        progress=True,
    )
    _worker(rank, world, job)
    if rank == 0:
        report: DeviceReport = torch.load(Path(a.out) / "device0.pt", weights_only=False)
        doc = {"strategy": strategy.to_json(), "losses": list(report.losses), "step_s": list(report.step_s)}
        print(json.dumps(doc))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
