"""parplan's own plan executor: one device's stages, its action order, and point-to-point transfers.

A :class:`DeviceExecutor` runs inside one process of a torch.distributed group (one process per
plan device). It builds the device's stages from the plan (the ops of every stage placed on it),
then for each step executes the device's actions in the plan's order:

* ``F``: receive the stage's inputs, run its ops (:meth:`OpGraphModel.run_ops`), send the outputs
  right away to every stage that consumes them.
* ``I``: receive the output gradients, compute the gradients of the stage's inputs AND of the
  outputs of its weight-bearing ops with one ``torch.autograd.grad(..., retain_graph=True)``, send
  the input gradients.
* ``W``: for every weight-bearing op, ``torch.autograd.grad(op_output, op_params, op_output_grad)``;
  this only walks that op's own autograd nodes, so ``I + W`` costs one backward, not two.
* ``B``: ``I`` and ``W`` in one ``torch.autograd.grad`` call. A fused ``FB`` action runs its parts in
  order.

Transfers follow the op graph, not only the plan's stage edges: an op output consumed by a later
stage that is not the next one (a skip connection across a cut, e.g. the multimodal projector into
the fusion op) goes straight to that stage. Every transfer has a tag derived from (producer op,
consumer stage, micro-batch, direction, tensor), so any order of posted operations matches. Sends are
asynchronous (``isend``) and receives are posted when the action needs them; since the plan is a
valid schedule (each action's inputs come from actions earlier in some device's order), blocking on
a receive can always be resolved and the run never deadlocks. Same-device transfers use a mailbox.
The loss is the mean over micro-batches (each micro-batch's loss scaled by 1/M).
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from parplan.errors import InvalidInputError
from parplan.plan import Plan
from parplan.runtime.modules import TORCH_MODELS, OpGraphModel, Value, build_torch_model
from parplan.schedule.ir import Action

FWD, BWD = 0, 1


# ------------------------------------------------------------------------------------ model spec
@dataclass(frozen=True, slots=True, kw_only=True)
class ModelSpec:
    """Which torch model a plan runs, with the options it was planned for."""

    name: str
    microbatch_size: int = 1
    seq_len: int | None = None
    num_layers: int | None = None
    image_size: int | None = None
    #: A traced user module (``parplan trace``): its file and factory, instead of a zoo twin.
    module: str | None = None
    factory: str | None = None

    def build(self, seed: int = 0) -> tuple[Any, Any]:
        """The torch model (an OpGraphModel, or a TracedModel for a user module) and its graph."""
        if self.module is not None:
            from parplan.runtime.traced import build_traced_model

            return build_traced_model(self.module, self.factory or "", name=self.name, seed=seed)
        return build_torch_model(
            self.name,
            microbatch_size=self.microbatch_size,
            seq_len=self.seq_len,
            num_layers=self.num_layers,
            image_size=self.image_size,
            seed=seed,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "microbatch_size": self.microbatch_size,
            "seq_len": self.seq_len,
            "num_layers": self.num_layers,
            "image_size": self.image_size,
            "module": self.module,
            "factory": self.factory,
        }


def model_spec_of(plan: Plan, model: str | None = None, **options: Any) -> ModelSpec:
    """The model a plan was made for: from ``model``/``options``, else the plan's recorded source.

    ``model_problem`` records ``model`` and ``model_meta`` in the problem's ``source``; plan files
    carry them in the plan's ``source`` (``Plan.from_schedule(problem, schedule,
    source={"model": ..., "model_meta": ...})``).

    Raises
    ------
    InvalidInputError
        When no model is given or recorded, or the model has no torch implementation.
    """
    meta: dict[str, Any] = {}
    name = model
    for src in (plan.problem.source, plan.source):
        if isinstance(src, Mapping) and src.get("model"):
            name = name or str(src["model"])
            recorded = src.get("model_meta")
            if isinstance(recorded, Mapping):
                meta = {**recorded, **meta}
    if not name:
        raise InvalidInputError(
            f"plan {plan.name!r}: says nothing about the model it runs; pass the model "
            f"(one of {', '.join(TORCH_MODELS)}) and its options, or make the plan with --model"
        )
    if meta.get("traced") and meta.get("module") and meta.get("factory") and model in (None, name):
        return _traced_spec(plan, name, str(meta["module"]), str(meta["factory"]))
    if name not in TORCH_MODELS:
        raise InvalidInputError(
            f"plan {plan.name!r}: model {name!r} has no torch implementation; models that run: "
            f"{', '.join(TORCH_MODELS)}, and modules traced with `parplan trace FILE.py:FACTORY`"
        )
    for k, v in options.items():
        if v is not None:
            meta[k] = v
    return ModelSpec(
        name=name,
        microbatch_size=int(meta.get("microbatch_size", 1)),
        seq_len=meta.get("seq_len"),
        num_layers=meta.get("num_layers"),
        image_size=meta.get("image_size") if name == "multimodal-small" else None,
    )


def _traced_spec(plan: Plan, name: str, module: str, factory: str) -> ModelSpec:
    """The spec of a plan made from a ``parplan trace`` graph: the recorded file and factory."""
    import os

    if not os.path.isfile(module):
        raise InvalidInputError(
            f"plan {plan.name!r}: was traced from {module}:{factory}, and {module} is not there any more; "
            "put the file back, or trace the module again and re-plan"
        )
    return ModelSpec(name=name, module=module, factory=factory)


# ------------------------------------------------------------------------------------ routing
@dataclass(frozen=True, slots=True, kw_only=True)
class StageIO:
    """What one stage exchanges for one micro-batch route.

    ``inputs`` are (producer op, producer stage) pairs feeding the stage; ``outputs`` are
    (op, consumer stage) pairs the stage sends.
    """

    inputs: tuple[tuple[str, int], ...]
    outputs: tuple[tuple[str, int], ...]


def _check_no_shared_params(model: Any, plan: Plan) -> None:
    """A parameter read by two ops on different devices (tied weights) would get two gradients."""
    devices_of: dict[str, set[int]] = defaultdict(set)
    for stage in plan.problem.stages:
        for o in stage.ops:
            devices_of[o].add(stage.device if stage.device is not None else -1)
    users: dict[int, list[str]] = defaultdict(list)
    for op in model.graph.ops:
        for p in model.op_params(op.name):
            users[id(p)].append(op.name)
    for ops in users.values():
        if len(ops) > 1 and len({d for o in ops for d in devices_of[o]}) > 1:
            raise InvalidInputError(
                f"plan {plan.name!r}: ops {ops[0]!r} and {ops[1]!r} share a parameter (tied weights) "
                "but run on different devices, which this runtime does not support; untie the weights, "
                "or plan so that both ops share a stage"
            )


def stage_io(model: OpGraphModel, plan: Plan) -> dict[tuple[int, int], StageIO]:
    """(stage, micro-batch) -> its transfers, checking that the plan's stages cover the model.

    Raises
    ------
    InvalidInputError
        When a stage lists an unknown op, or a micro-batch's route misses ops or repeats them.
    """
    problem = plan.problem
    graph = model.graph
    for stage in problem.stages:
        if not stage.ops:
            raise InvalidInputError(
                f"plan.stages[{stage.index}].ops: empty; a plan runs only if every stage lists its "
                "operators (make it from a model with --model)"
            )
        unknown = [o for o in stage.ops if o not in graph.index]
        if unknown:
            raise InvalidInputError(
                f"plan.stages[{stage.index}].ops: {unknown[:3]} are not ops of model {graph.name!r}; "
                "the plan was made for another model or options"
            )
    _check_no_shared_params(model, plan)
    out: dict[tuple[int, int], StageIO] = {}
    routes: dict[tuple[int, ...], dict[int, StageIO]] = {}
    for mb in problem.microbatches:
        if mb.stages not in routes:
            owner: dict[str, int] = {}
            for s in mb.stages:
                for o in problem.stages[s].ops:
                    if o in owner:
                        raise InvalidInputError(
                            f"plan.microbatches[{mb.index}]: op {o!r} is in stages {owner[o]} and {s} "
                            "of the same route"
                        )
                    owner[o] = s
            missing = [op.name for op in graph.ops if op.name not in owner]
            if missing:
                raise InvalidInputError(
                    f"plan.microbatches[{mb.index}]: its stages miss {len(missing)} op(s) of model "
                    f"{graph.name!r}, e.g. {missing[:3]}"
                )
            ins: dict[int, set[tuple[str, int]]] = defaultdict(set)
            outs: dict[int, set[tuple[str, int]]] = defaultdict(set)
            for e in graph.edges:
                a, b = graph.ops[e.src].name, graph.ops[e.dst].name
                sa, sb = owner[a], owner[b]
                if sa != sb:
                    ins[sb].add((a, sa))
                    outs[sa].add((a, sb))
            routes[mb.stages] = {
                s: StageIO(inputs=tuple(sorted(ins[s])), outputs=tuple(sorted(outs[s]))) for s in mb.stages
            }
        for s, io in routes[mb.stages].items():
            out[(s, mb.index)] = io
    return out


def value_tensors(value: Value) -> tuple[Tensor, ...]:
    return value if isinstance(value, tuple) else (value,)


def _pack(tensors: Sequence[Tensor], like: Value) -> Value:
    return tuple(tensors) if isinstance(like, tuple) else tensors[0]


# ------------------------------------------------------------------------------------ comm
class Comm:
    """Tagged point-to-point transfers between plan devices (ranks), plus a same-device mailbox."""

    def __init__(self, device: int, timeout_s: float) -> None:
        self.device = device
        self.timeout = timedelta(seconds=timeout_s)
        self.mailbox: dict[int, Tensor] = {}
        self.pending: list[tuple[Any, Tensor]] = []
        self.wait_s = 0.0

    def send(self, tensor: Tensor, dst: int, tag: int) -> None:
        if dst == self.device:
            self.mailbox[tag] = tensor
            return
        t = tensor.detach().contiguous()
        self.pending.append((dist.isend(t, dst, tag=tag), t))
        if len(self.pending) > 64:
            self.pending = [(w, t) for w, t in self.pending if not w.is_completed()]

    def recv(self, like: Tensor, src: int, tag: int) -> Tensor:
        if src == self.device:
            return self.mailbox.pop(tag)
        buf = torch.empty_like(like)
        t0 = time.perf_counter()
        work = dist.irecv(buf, src, tag=tag)
        assert work is not None  # None only for ranks outside the group
        work.wait(self.timeout)
        self.wait_s += time.perf_counter() - t0
        return buf

    def flush(self) -> None:
        for work, _ in self.pending:
            work.wait(self.timeout)
        self.pending.clear()

    def barrier(self) -> None:
        dist.barrier()


class ThreadComm(Comm):
    """Transfers between executors running as threads of one process (tests, debugging).

    ``hub`` is shared by the devices' ThreadComm objects: a dict of (receiver, tag) -> tensor
    under a condition variable, plus a barrier.
    """

    def __init__(self, device: int, timeout_s: float, hub: dict[str, Any]) -> None:
        super().__init__(device, timeout_s)
        self.hub = hub

    def send(self, tensor: Tensor, dst: int, tag: int) -> None:
        cond = self.hub["cond"]
        with cond:
            self.hub["box"][(dst, tag)] = tensor.detach().clone()
            cond.notify_all()

    def recv(self, like: Tensor, src: int, tag: int) -> Tensor:
        cond = self.hub["cond"]
        key = (self.device, tag)
        t0 = time.perf_counter()
        with cond:
            if not cond.wait_for(lambda: key in self.hub["box"], timeout=self.timeout.total_seconds()):
                raise TimeoutError(f"device {self.device}: nothing from device {src} with tag {tag}")
            got: Tensor = self.hub["box"].pop(key)
        self.wait_s += time.perf_counter() - t0
        return got

    def flush(self) -> None:
        pass

    def barrier(self) -> None:
        self.hub["barrier"].wait(self.timeout.total_seconds())


def run_in_threads(
    plan: Plan, spec: ModelSpec, *, seed: int = 0, timeout_s: float = 30.0
) -> tuple[float, dict[str, Tensor]]:
    """Execute one step of ``plan`` with one thread per device in this process, without torch.distributed.

    Same executor, same transfers (through :class:`ThreadComm`): a fast check of a plan's
    execution logic. Times are meaningless (threads share the interpreter).

    Returns
    -------
    tuple[float, dict[str, Tensor]]
        The mean loss over micro-batches and every parameter gradient (summed over replicas).
    """
    import threading

    n = plan.problem.num_devices
    hub: dict[str, Any] = {"cond": threading.Condition(), "box": {}, "barrier": threading.Barrier(n)}
    executors = []
    for d in range(n):
        model, _ = spec.build(seed)
        executors.append(DeviceExecutor(model, plan, d, ThreadComm(d, timeout_s, hub), seed=seed))
    errors: list[BaseException] = []

    def work(ex: DeviceExecutor) -> None:
        try:
            ex.step()
        except BaseException as exc:  # re-raised in the caller's thread below
            errors.append(exc)
            hub["barrier"].abort()

    threads = [threading.Thread(target=work, args=(ex,)) for ex in executors]
    # intra-op threads of several device threads spin against each other: 1 each is ~8x faster
    old_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        torch.set_num_threads(old_threads)
    if errors:
        raise errors[0]
    losses: dict[int, float] = {}
    grads: dict[str, Tensor] = {}
    for ex in executors:
        losses.update(ex.losses)
        for name, g in ex.grads().items():
            grads[name] = grads[name] + g if name in grads else g
    return sum(losses.values()) / plan.problem.num_microbatches, grads


# ------------------------------------------------------------------------------------ executor
@dataclass(slots=True)
class _Ctx:
    """What a stage's forward of one micro-batch keeps for its backward passes."""

    leaves: dict[str, Value]
    values: dict[str, Value]
    loss: Tensor | None
    saved_bytes: int = 0
    wgrads: dict[str, Tensor] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class ActionTiming:
    """Measured time of one action on one device, seconds from the step's start."""

    device: int
    action: str
    kind: str
    stage: int
    microbatch: int
    start_s: float
    end_s: float
    recv_wait_s: float = 0.0
    cpu_s: float = 0.0
    live_activation_bytes: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "device": self.device,
            "action": self.action,
            "kind": self.kind,
            "stage": self.stage,
            "microbatch": self.microbatch,
            "start_s": self.start_s,
            "end_s": self.end_s,
            "recv_wait_s": self.recv_wait_s,
            "cpu_s": self.cpu_s,
            "live_activation_bytes": self.live_activation_bytes,
        }


class DeviceExecutor:
    """Runs one device's share of a plan; see the module docstring for the passes.

    Parameters
    ----------
    model
        The full model (every process builds it from the same seed; only this device's ops run).
    plan
        The plan; its per-device orders are executed as given.
    device
        This process's plan device (= torch.distributed rank).
    comm
        The transfer layer.
    seed
        Seeds the synthetic micro-batches (the same data as the single-process reference).
    """

    def __init__(
        self,
        model: OpGraphModel,
        plan: Plan,
        device: int,
        comm: Comm,
        seed: int = 0,
        torch_device: str = "cpu",
    ) -> None:
        self.model = model
        self.plan = plan
        self.device = device
        self.comm = comm
        problem = plan.problem
        self.num_microbatches = problem.num_microbatches
        self.io = stage_io(model, plan)
        self.order: tuple[Action, ...] = plan.schedule.orders[device]
        self.stage_ops = {s.index: s.ops for s in problem.stages}
        self.my_ops = sorted({o for s in problem.stages if s.device == device for o in s.ops})
        mine = {id(p) for o in self.my_ops for p in model.op_params(o)}
        self.params = {n: p for n, p in model.named_parameters() if id(p) in mine}
        self.weighted = {o for o in model.graph.index if model.op_params(o)}
        self.batches = [
            {k: v.to(torch_device) for k, v in model.make_batch(m, seed).items()}
            for m in range(self.num_microbatches)
        ]
        self._param_ptrs = {p.untyped_storage().data_ptr() for p in model.parameters()}
        g = model.graph
        self.n_stages = problem.num_stages
        self.n_ops = g.num_ops
        with torch.no_grad():  # output shapes and dtypes of every op, for the receive buffers
            self.like: dict[str, Value] = model.run_ops([o.name for o in g.ops], {}, self.batches[0])
        self.ctx: dict[tuple[int, int], _Ctx] = {}
        self.losses: dict[int, float] = {}
        self.live_act = 0
        self.peak_act = 0

    # -- tags and transfers
    def _tag(self, op: str, consumer: int, microbatch: int, direction: int, k: int) -> int:
        i = self.model.graph.index[op]
        return (
            (((i * self.n_stages + consumer) * self.num_microbatches + microbatch) * 2 + direction) * 4
        ) + k

    def _stage_device(self, stage: int) -> int:
        d = self.plan.problem.stages[stage].device
        assert d is not None
        return d

    def _send_value(
        self, value: Value, op: str, consumer: int, dst_dev: int, mb: int, direction: int
    ) -> None:
        for k, t in enumerate(value_tensors(value)):
            self.comm.send(t, dst_dev, self._tag(op, consumer, mb, direction, k))

    def _recv_value(self, op: str, consumer: int, src_dev: int, mb: int, direction: int) -> Value:
        like = self.like[op]
        got = [
            self.comm.recv(t, src_dev, self._tag(op, consumer, mb, direction, k))
            for k, t in enumerate(value_tensors(like))
        ]
        return _pack(got, like)

    # -- passes
    def forward(self, stage: int, mb: int) -> None:
        io = self.io[(stage, mb)]
        leaves: dict[str, Value] = {}
        for op, src in io.inputs:
            v = self._recv_value(op, stage, self._stage_device(src), mb, FWD)
            for t in value_tensors(v):
                if t.is_floating_point():
                    t.requires_grad_(True)
            leaves[op] = v
        saved: dict[int, int] = {}
        param_ptrs = self._param_ptrs

        def pack(t: Tensor) -> Tensor:
            st = t.untyped_storage()
            ptr = st.data_ptr()
            if ptr not in param_ptrs:
                saved[ptr] = st.nbytes()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            values = self.model.run_ops(self.stage_ops[stage], leaves, self.batches[mb])
        loss_name = self.model.loss_name
        loss = values.get(loss_name) if loss_name in self.stage_ops[stage] else None
        if loss is not None:
            self.losses[mb] = float(loss.detach())  # type: ignore[union-attr]
        ctx = _Ctx(leaves=leaves, values=values, loss=loss, saved_bytes=sum(saved.values()))  # type: ignore[arg-type]
        self.ctx[(stage, mb)] = ctx
        self.live_act += ctx.saved_bytes
        self.peak_act = max(self.peak_act, self.live_act)
        for op, dst in io.outputs:
            sent = _pack([t.detach() for t in value_tensors(values[op])], values[op])
            self._send_value(sent, op, dst, self._stage_device(dst), mb, FWD)

    def _roots(self, stage: int, mb: int, ctx: _Ctx) -> tuple[list[Tensor], list[Tensor]]:
        roots: list[Tensor] = []
        grads: list[Tensor] = []
        if ctx.loss is not None:
            roots.append(ctx.loss)
            grads.append(torch.full_like(ctx.loss, 1.0 / self.num_microbatches))
        acc: dict[tuple[str, int], Tensor] = {}
        for op, dst in self.io[(stage, mb)].outputs:
            g = self._recv_value(op, dst, self._stage_device(dst), mb, BWD)
            for k, (t, gt) in enumerate(zip(value_tensors(ctx.values[op]), value_tensors(g), strict=True)):
                if t.is_floating_point() and t.requires_grad:
                    acc[(op, k)] = acc[(op, k)] + gt if (op, k) in acc else gt
        for (op, k), gt in acc.items():
            roots.append(value_tensors(ctx.values[op])[k])
            grads.append(gt)
        return roots, grads

    def _send_input_grads(self, stage: int, mb: int, ctx: _Ctx, grads: Mapping[int, Tensor | None]) -> None:
        for op, src in self.io[(stage, mb)].inputs:
            out = []
            for t in value_tensors(ctx.leaves[op]):
                g = grads.get(id(t))
                out.append(g if g is not None else torch.zeros_like(t))
            self._send_value(_pack(out, ctx.leaves[op]), op, stage, self._stage_device(src), mb, BWD)

    def _leaf_list(self, ctx: _Ctx) -> list[Tensor]:
        return [t for v in ctx.leaves.values() for t in value_tensors(v) if t.requires_grad]

    def backward(self, stage: int, mb: int, kind: str) -> None:
        ctx = self.ctx[(stage, mb)]
        roots, grads = self._roots(stage, mb, ctx)
        leaves = self._leaf_list(ctx)
        if kind == "I":
            wops = [o for o in self.stage_ops[stage] if o in self.weighted]
            ys = [value_tensors(ctx.values[o])[0] for o in wops]
            inputs = leaves + ys
            got = (
                torch.autograd.grad(roots, inputs, grads, retain_graph=True, allow_unused=True)
                if roots
                else [None] * len(inputs)
            )
            self._send_input_grads(stage, mb, ctx, {id(t): g for t, g in zip(leaves, got[: len(leaves)])})
            ctx.wgrads = {o: g for o, g in zip(wops, got[len(leaves) :]) if g is not None}  # type: ignore[misc]
            return
        # B: input and weight gradients together
        params: list[Tensor] = [p for o in self.stage_ops[stage] for p in self.model.op_params(o)]
        inputs = leaves + params
        got = torch.autograd.grad(roots, inputs, grads, allow_unused=True) if roots else [None] * len(inputs)
        self._send_input_grads(stage, mb, ctx, {id(t): g for t, g in zip(leaves, got[: len(leaves)])})
        self._accumulate(params, got[len(leaves) :])
        self._release(stage, mb)

    def weight(self, stage: int, mb: int) -> None:
        ctx = self.ctx[(stage, mb)]
        for op, gy in ctx.wgrads.items():
            params = self.model.op_params(op)
            y = ctx.values[op]
            assert isinstance(y, Tensor)
            self._accumulate(params, torch.autograd.grad(y, params, gy, allow_unused=True))
        self._release(stage, mb)

    def _accumulate(self, params: Sequence[Tensor], grads: Sequence[Tensor | None]) -> None:
        for p, g in zip(params, grads, strict=True):
            if g is None:
                continue
            if p.grad is None:
                p.grad = g.detach().clone()
            else:
                p.grad.add_(g)

    def _release(self, stage: int, mb: int) -> None:
        ctx = self.ctx.pop((stage, mb))
        self.live_act -= ctx.saved_bytes

    # -- a step
    def run_action(self, action: Action) -> None:
        for p in action.plain():
            if p.kind == "F":
                self.forward(p.stage, p.microbatch)
            elif p.kind in ("I", "B"):
                self.backward(p.stage, p.microbatch, p.kind)
            else:
                self.weight(p.stage, p.microbatch)

    def zero_grad(self) -> None:
        for p in self.model.parameters():
            p.grad = None

    def step(self) -> tuple[float, float, list[ActionTiming]]:
        """One training step (no optimizer update); returns (start, end, per-action timings).

        ``start`` and ``end`` are ``time.perf_counter`` values (CLOCK_MONOTONIC on Linux, shared by
        the processes of one machine); the timings are relative to ``start``.
        """
        self.zero_grad()
        self.losses.clear()
        self.live_act = self.peak_act = 0
        self.comm.barrier()
        start = time.perf_counter()
        timings = []
        for action in self.order:
            w0 = self.comm.wait_s
            c0 = time.thread_time()
            t0 = time.perf_counter()
            self.run_action(action)
            t1 = time.perf_counter()
            c1 = time.thread_time()
            timings.append(
                ActionTiming(
                    device=self.device,
                    action=str(action),
                    kind=action.kind,
                    stage=action.stage,
                    microbatch=action.microbatch,
                    start_s=t0 - start,
                    end_s=t1 - start,
                    recv_wait_s=self.comm.wait_s - w0,
                    cpu_s=c1 - c0,
                    live_activation_bytes=float(self.live_act),
                )
            )
        self.comm.flush()
        end = time.perf_counter()
        if self.ctx:
            from parplan.errors import InternalError

            left = sorted(self.ctx)[:4]
            raise InternalError(
                f"device {self.device}: plan left (stage, microbatch) {left} without backward"
            )
        return start, end, timings

    def grads(self) -> dict[str, Tensor]:
        """This device's parameter gradients, by parameter name."""
        return {n: p.grad.detach().clone() for n, p in self.params.items() if p.grad is not None}

    @property
    def param_bytes(self) -> int:
        return sum(p.numel() * p.element_size() for p in self.params.values())


def reference_step(
    model: OpGraphModel, num_microbatches: int, seed: int = 0
) -> tuple[float, dict[str, Tensor]]:
    """Single-process reference: mean loss over micro-batches and every parameter's gradient.

    Returns
    -------
    tuple[float, dict[str, Tensor]]
        The mean loss and the gradients by parameter name.
    """
    model.zero_grad(set_to_none=True)
    total = 0.0
    for m in range(num_microbatches):
        loss = model(model.make_batch(m, seed)) / num_microbatches
        loss.backward()
        total += float(loss.detach())
    return total, {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
