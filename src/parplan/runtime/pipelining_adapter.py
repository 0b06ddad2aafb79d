"""Adapter to torch.distributed.pipelining's runtime: the ONLY module touching its private API.

A chain plan is exported as the compute-only CSV (``parplan.report.export.to_pipelining_csv``,
fused FB actions written as torch's ``(0F3;5B1)OVERLAP_F_B`` cells, which torch 2.13 runs) and loaded into ``_PipelineScheduleRuntime`` with
``_load_csv``, which lowers it to sends and receives and infers the stage-to-device mapping from the
rows. Each stage is a ``PipelineStage`` around a thin module that runs the stage's ops of the
:class:`~parplan.runtime.modules.OpGraphModel` (sharing its parameters); the loss op of the last
stage becomes the schedule's ``loss_fn`` (cross-entropy; ``scale_grads=True`` makes it the mean over
micro-batches, as in the reference run). Private API used (torch 2.13, pinned in pyproject's
``runtime`` extra): ``torch.distributed.pipelining.schedules._PipelineScheduleRuntime`` and its
``_load_csv``; for the checks that need no real process group (:func:`load_csv_into_runtime`,
:func:`torch_schedule_orders`), the fake backend of
``torch.testing._internal.distributed.fake_pg.FakeStore``.

What the runtime cannot run, checked by :func:`pipelining_unsupported` (the caller falls back to
parplan's own executor with a warning): stage graphs that are not a chain every micro-batch passes
whole (DAG and bidirectional plans), and models whose stages exchange more than one tensor or read
data beyond the first stage's tokens (the MoE and multimodal twins, and any cut with a skip edge).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F  # noqa: N812 - the universal torch idiom
from torch import Tensor, nn

from parplan.plan import Plan
from parplan.runtime.modules import OpGraphModel, _key


def _chain_reason(plan: Plan) -> str | None:
    problem = plan.problem
    n = problem.num_stages
    everything = tuple(range(n))
    if any(mb.stages != everything for mb in problem.microbatches):
        return "some micro-batches pass only part of the stages (a bidirectional plan)"
    if sorted((e.src, e.dst) for e in problem.edges) != [(s, s + 1) for s in range(n - 1)]:
        return "the stage graph is not the chain 0 -> 1 -> ... (a DAG plan)"
    return None


def pipelining_unsupported(plan: Plan, model: OpGraphModel | None = None) -> str | None:
    """Why torch's pipelining runtime cannot run ``plan`` (None when it can).

    Parameters
    ----------
    plan
        The plan to run.
    model
        Its torch model; when given, the op-level cuts are checked too (one tensor per cut, only the
        first stage reads data).
    """
    reason = _chain_reason(plan)
    if reason is not None or model is None:
        return reason
    from parplan.runtime.executor import stage_io

    io = stage_io(model, plan)
    g = model.graph
    for s in plan.problem.stages:
        ins, outs = io[(s.index, 0)].inputs, io[(s.index, 0)].outputs
        if s.index > 0 and (len(ins) != 1 or ins[0][1] != s.index - 1):
            return f"stage {s.index} receives {len(ins)} tensors ({[o for o, _ in ins][:3]}), not one"
        if s.index < plan.problem.num_stages - 1 and len(outs) != 1:
            return f"stage {s.index} sends {len(outs)} tensors, not one"
        sources = [o for o in s.ops if not g.preds[g.index[o]]]
        if sources and (s.index > 0 or sources != ["embed"]):
            return f"stage {s.index} reads input data through {sources}"
    if plan.problem.stages[-1].ops[-1] != "loss":
        return "the last stage does not end with the loss"
    return None


class _StageModule(nn.Module):
    """The ops of one stage as a module of one tensor in, one tensor out (sharing the parameters)."""

    def __init__(
        self, model: OpGraphModel, ops: tuple[str, ...], input_op: str | None, output_op: str
    ) -> None:
        super().__init__()
        self.ops = nn.ModuleDict({_key(o): model.op(o) for o in ops})
        self.op_names = ops
        self.input_op = input_op
        self.output_op = output_op
        object.__setattr__(self, "_model", model)  # not a submodule: its other parameters stay out

    def forward(self, x: Tensor) -> Tensor:
        model: OpGraphModel = self._model  # type: ignore[assignment]
        if self.input_op is None:  # the first stage: x is the token ids
            values = model.run_ops(self.op_names, {}, {"tokens": x})
        else:
            values = model.run_ops(self.op_names, {self.input_op: x}, {})
        out = values[self.output_op]
        assert isinstance(out, Tensor)
        return out


def _loss_fn(output: Tensor, target: Tensor) -> Tensor:
    return F.cross_entropy(output.reshape(-1, output.shape[-1]), target.reshape(-1))


#: How fused FB actions go into the CSV: "overlap" (torch's OVERLAP_F_B, run as its two parts).
_FUSED = "overlap"


def _csv_text(plan: Plan) -> str:
    from parplan.report.export import to_pipelining_csv

    return to_pipelining_csv(plan, fused=_FUSED)


def run_pipelining_device(
    rank: int, plan: Plan, model: OpGraphModel, job: dict[str, Any], task: dict[str, Any]
) -> dict[str, Any]:
    """One device's share of running ``plan`` with ``_PipelineScheduleRuntime`` (in a worker).

    Returns the same result record as parplan's executor (no per-action timings: the runtime does
    not expose them).
    """
    from torch.distributed.pipelining import PipelineStage
    from torch.distributed.pipelining.schedules import _PipelineScheduleRuntime

    from parplan.runtime.executor import stage_io

    problem = plan.problem
    io = stage_io(model, plan)
    device = (
        torch.device("cpu") if job["backend"] == "gloo" else torch.device("cuda", torch.cuda.current_device())
    )
    stages = []
    my_ops: list[str] = []
    for s in problem.stages:
        if s.device != rank:
            continue
        ops = tuple(o for o in s.ops if o != "loss")
        my_ops += list(s.ops)
        inputs, outputs = io[(s.index, 0)].inputs, io[(s.index, 0)].outputs
        input_op = inputs[0][0] if inputs else None
        output_op = outputs[0][0] if outputs else ops[-1]
        module = _StageModule(model, ops, input_op, output_op)
        stages.append(PipelineStage(module, s.index, problem.num_stages, device))
    m = problem.num_microbatches
    schedule = _PipelineScheduleRuntime(stages, m, loss_fn=_loss_fn, scale_grads=True)
    csv_path = os.path.join(job["out_dir"], f"schedule{rank}.csv")
    with open(csv_path, "w") as fh:
        fh.write(_csv_text(plan))
    schedule._load_csv(csv_path, format="compute_only")
    batches = [model.make_batch(k, job["seed"]) for k in range(m)]
    tokens = torch.cat([b["tokens"] for b in batches]).to(device)
    labels = torch.cat([b["labels"] for b in batches]).to(device)
    has_first = any(st.is_first for st in stages)
    has_last = any(st.is_last for st in stages)
    steps = []
    losses: list[Tensor] = []
    for _ in range(job["warmup"] + job["steps"]):
        for p in model.parameters():
            p.grad = None
        losses = []
        dist.barrier()
        start = time.perf_counter()
        args = (tokens,) if has_first else ()
        schedule.step(*args, target=labels if has_last else None, losses=losses if has_last else None)
        end = time.perf_counter()
        steps.append((start, end))
    names = {_key(o) for o in my_ops}
    grads = {
        n: p.grad.detach().clone()
        for n, p in model.named_parameters()
        if n.split(".")[1] in names and p.grad is not None
    }
    return {
        "steps": steps[job["warmup"] :],
        "timings": [],
        "grads": grads,
        "losses": {k: float(v.detach()) for k, v in enumerate(losses)},
        "peak_memory": float(
            2
            * sum(
                p.numel() * p.element_size() for n, p in model.named_parameters() if n.split(".")[1] in names
            )
        ),
    }


def load_csv_into_runtime(csv_path: str | os.PathLike[str], plan: Plan) -> dict[int, list[str]]:
    """Load a compute-only CSV with torch's own ``_PipelineScheduleRuntime._load_csv``, as every rank.

    For each device d of ``plan`` this joins a single-process fake process group as rank d of
    ``num_devices`` (torch's ``FakeStore`` backend: no communication), builds a placeholder
    ``PipelineStage`` for each stage the plan puts on d, constructs the runtime with the plan's
    micro-batch count and loads the file, which makes torch validate the schedule and lower it to
    sends and receives. This is the check that torchtitan (``pipeline_parallel_schedule_csv``) will
    accept the file. Must be called with no process group initialized; none is left behind.

    Returns
    -------
    dict
        ``rank -> [action, ...]``: torch's lowered order with communication (``0SEND_F0``, ...).

    Raises
    ------
    InvalidInputError
        When torch rejects the file; the message carries torch's.
    """
    from torch.distributed.pipelining.schedules import _PipelineScheduleRuntime

    from parplan.errors import InvalidInputError

    if dist.is_initialized():
        raise InvalidInputError("load_csv_into_runtime: a process group is already initialized")
    problem = plan.problem
    lowered: dict[int, list[str]] = {}
    for rank in range(problem.num_devices):
        with _fake_rank(plan, rank) as stages:
            runtime = _PipelineScheduleRuntime(stages, problem.num_microbatches, loss_fn=_loss_fn)
            try:
                runtime._load_csv(str(csv_path), format="compute_only")
            except (ValueError, AssertionError, RuntimeError, KeyError) as exc:
                raise InvalidInputError(
                    f"{csv_path}: torch's _PipelineScheduleRuntime refuses it as rank {rank}: {exc}"
                ) from None
            lowered[rank] = [str(a) for a in runtime.pipeline_order_with_comms[rank]]
    return lowered


@contextlib.contextmanager
def _fake_rank(plan: Plan, rank: int) -> Iterator[list[Any]]:
    """``rank`` of a fake (single-process) group, with placeholder stages where the plan puts them."""
    from torch.distributed.pipelining import PipelineStage
    from torch.testing._internal.distributed.fake_pg import FakeStore

    problem = plan.problem
    dist.init_process_group("fake", store=FakeStore(), rank=rank, world_size=problem.num_devices)
    try:
        yield [
            PipelineStage(nn.Identity(), s.index, problem.num_stages, torch.device("cpu"))
            for s in problem.stages
            if s.device == rank
        ]
    finally:
        dist.destroy_process_group()


def torch_schedule_orders(torch_name: str, plan: Plan) -> dict[int, list[str]]:
    """torch's own compute order for schedule ``torch_name`` on ``plan``'s stages and micro-batches.

    Builds ``get_schedule_class(torch_name)`` per rank on a fake process group (as
    :func:`load_csv_into_runtime`), with placeholder stages on the devices the plan gives them, and
    returns its ``pipeline_order`` as ``rank -> [cell, ...]`` in the CSV's text (``0F3``,
    ``(0F7;7B3)OVERLAP_F_B``), without the gradient-reduction action torch appends. Used to check
    that parplan's aliases of torch's names build the same schedule.
    """
    from torch.distributed.pipelining.schedules import PipelineScheduleMulti, get_schedule_class

    problem = plan.problem
    cls = get_schedule_class(torch_name)
    orders: dict[int, list[str]] = {}
    for rank in range(problem.num_devices):
        with _fake_rank(plan, rank) as stages:
            multi = issubclass(cls, PipelineScheduleMulti)
            schedule = cls(stages if multi else stages[0], problem.num_microbatches, loss_fn=_loss_fn)
            orders[rank] = [
                str(a) for a in schedule.pipeline_order[rank] if a is not None and "REDUCE_GRAD" not in str(a)
            ]
    return orders
