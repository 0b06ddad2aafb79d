"""Calibration: measure this machine's devices and links with N processes and write a cluster file.

``parplan calibrate --devices N`` (and ``parplan train --calibrate``) starts N processes the way
``train`` does (gloo on CPU, one process per device sharing the cores) and measures, all processes
at once so that they compete as they will in training (like nccl-tests and a GEMM benchmark):

* compute: an ``m x k x n`` fp32 matrix product repeated back to back (FLOP/s per process);
* memory bandwidth: a streaming ``y = x + 1`` over 64 MiB (bytes read + written per second);
* collectives: ``all_reduce`` over all N processes at 4 B and at 32 MiB (a DDP bucket), and ``all_gather`` and
  ``reduce_scatter`` at 4 B per process, each issued after a short GEMM as in tensor-parallel
  training and timed as the loop's time less the GEMM's (processes sharing cores wait to
  be scheduled for every ring step, which an idle benchmark loop hides); the ring model of
  :mod:`parplan.cost.comm` is fitted by :func:`fit_link`: the latency ``alpha`` from the small
  messages, the bandwidth ``bw`` from the large all-reduce;
* point to point: a 4 B and a 4 MiB send/recv between processes 0 and 1 (reported beside).

The cluster written has N devices on one node with the measured numbers: peak FLOP/s and memory
bandwidth are the measured ones divided by the estimate's efficiencies
(:class:`parplan.cost.compute.KernelEfficiency` defaults), so an estimate reproduces what was
measured, and the intra-node link is the fitted collective link.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from parplan.errors import InvalidInputError

#: The GEMM timed (rows, inner, columns): a transformer MLP's shape at CPU scale.
GEMM_SHAPE = (512, 512, 2048)
SMALL, LARGE = 4, 32 * 2**20
#: The short GEMM issued before every timed collective (a tensor-parallel layer's work between two
#: collectives at the scale train runs on a CPU).
LOAD_SHAPE = (128, 256, 768)
#: The slowdown curve's workload: an MLP (hidden, ffn) training step on this many tokens.
CURVE_MLP = (256, 1024, 128)
#: Seconds of wall time each busy process steps the MLP for, per point of the slowdown curve.
CURVE_WINDOW_S = 0.6


@dataclass(frozen=True, slots=True, kw_only=True)
class CalibrationJob:
    devices: int
    threads: int
    repeats: int
    out_dir: str
    store: str
    timeout_s: float


@dataclass(frozen=True, slots=True, kw_only=True)
class Measured:
    """One process's measurements (seconds per operation)."""

    gemm_s: float
    stream_s: float
    allreduce_small_s: float
    allreduce_large_s: float
    allgather_small_s: float
    reducescatter_small_s: float
    p2p_small_s: float | None
    p2p_large_s: float | None
    runtime: dict[str, float]
    #: per number of busy processes k = 1..N: this process's seconds per MLP training step while
    #: ranks 0..k-1 ran it at once, or None while it waited
    busy: tuple[float | None, ...] = ()


def _loop_time(fn: Any, repeats: int, clock: Any = time.perf_counter) -> float:
    """Seconds (of ``clock``) per call of ``fn`` run ``repeats`` times back to back, every process
    at once."""
    import torch.distributed as dist

    fn()
    dist.barrier()
    t0 = clock()
    for _ in range(repeats):
        fn()
    elapsed = clock() - t0
    dist.barrier()
    return elapsed / repeats


def _all_gather(out: torch.Tensor, x: torch.Tensor) -> None:
    import torch.distributed as dist

    fn = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor
    fn(out, x)


def _reduce_scatter(out: torch.Tensor, x: torch.Tensor) -> None:
    import torch.distributed as dist

    fn = getattr(dist, "reduce_scatter_single", None) or dist.reduce_scatter_tensor
    fn(out, x)


def _measure(rank: int, job: CalibrationJob) -> Measured:
    import torch.distributed as dist

    m, k, n = GEMM_SHAPE
    a, b = torch.randn(m, k), torch.randn(k, n)
    gemm = _loop_time(lambda: a @ b, job.repeats)
    x = torch.randn(16 * 2**20)  # 64 MiB of fp32
    stream = _loop_time(lambda: x + 1, job.repeats)
    small, large = torch.zeros(SMALL // 4), torch.zeros(LARGE // 4)

    # Collectives between compute, as in training: processes that share cores must be woken and
    # scheduled for every ring step, which an idle ping-pong loop never shows.
    sa, sb = torch.randn(*LOAD_SHAPE[:2]), torch.randn(*LOAD_SHAPE[1:])
    small_gemm = _loop_time(lambda: sa @ sb, job.repeats)

    def loaded(t: torch.Tensor) -> float:
        def step() -> None:
            sa @ sb
            dist.all_reduce(t)

        return max(_loop_time(step, job.repeats) - small_gemm, 1e-9)

    ar_small, ar_large = loaded(small), loaded(large)
    n = job.devices
    gathered = torch.zeros(n * small.numel())

    def gather_small() -> None:
        sa @ sb
        _all_gather(gathered, small)

    def scatter_small() -> None:
        sa @ sb
        _reduce_scatter(small, gathered)

    ag_small = max(_loop_time(gather_small, job.repeats) - small_gemm, 1e-9)
    rs_small = max(_loop_time(scatter_small, job.repeats) - small_gemm, 1e-9)
    p2p_small = p2p_large = None
    if job.devices >= 2:

        def ping(t: torch.Tensor) -> None:
            if rank == 0:
                dist.send(t, 1)
                dist.recv(t, 1)
            elif rank == 1:
                dist.recv(t, 0)
                dist.send(t, 0)

        p2p_small = _loop_time(lambda: ping(small), job.repeats) / 2
        p2p_large = _loop_time(lambda: ping(large), job.repeats) / 2
    runtime = _runtime_overheads(rank, job)
    busy = _busy_curve(rank, job)
    return Measured(
        runtime=runtime,
        busy=busy,
        gemm_s=gemm,
        stream_s=stream,
        allreduce_small_s=ar_small,
        allreduce_large_s=ar_large,
        allgather_small_s=ag_small,
        reducescatter_small_s=rs_small,
        p2p_small_s=p2p_small,
        p2p_large_s=p2p_large,
    )


#: The runtime benchmarks' layer: a square linear of this width (small: the overheads are per call).
RUNTIME_WIDTH = 256
RUNTIME_MICROBATCHES = 4


def _cpu_loop(fn: Any, repeats: int) -> float:
    """The calling thread's CPU seconds per call of ``fn`` (every process running it at once)."""
    return _loop_time(fn, repeats, clock=time.thread_time)


def _busy_curve(rank: int, job: CalibrationJob) -> tuple[float | None, ...]:
    """For k = 1..N busy processes: this process's seconds per training step of a small MLP
    (:data:`CURVE_MLP`: GEMMs, an activation, autograd, as a CPU-scale transformer block) while
    ranks 0..k-1 run it at once and the others wait at a barrier (a waiting gloo process uses no
    core), or None while it waits.

    Each busy process steps for :data:`CURVE_WINDOW_S` of wall time, far longer than the
    scheduler's time slices and the ranks' start skew, so the k processes really share the cores
    for the whole measurement (a few back-to-back steps, a few milliseconds, finish before the
    last rank starts: 4 processes on 2 cores then measured 1.5x where they run 2.2x slower)."""
    import torch.distributed as dist
    from torch import nn

    h, f, tokens = CURVE_MLP
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(h, f), nn.GELU(), nn.Linear(f, h))
    x = torch.randn(tokens, h)

    def step() -> None:
        mlp(x).sum().backward()

    out: list[float | None] = []
    for k in range(1, job.devices + 1):
        dist.barrier()
        if rank < k:
            step()
            t0 = time.perf_counter()
            n = 0
            while (elapsed := time.perf_counter() - t0) < CURVE_WINDOW_S or n < 3:
                step()
                n += 1
            out.append(elapsed / n)
        else:
            out.append(None)
        dist.barrier()
    return tuple(out)


def slowdown_curve(measured: list[Measured]) -> list[float]:
    """Per k busy processes, how much slower each runs than one alone (the median over the busy
    processes of :func:`_busy_curve`'s step)."""
    if not measured or not measured[0].busy or measured[0].busy[0] is None:
        return []
    alone = measured[0].busy[0]
    curve = []
    for k in range(len(measured[0].busy)):
        runs = [t for x in measured if (t := x.busy[k]) is not None]
        curve.append(max(1.0, statistics.median(runs) / alone))
    return curve


#: The optimizer benchmark's parameters: this many tensors of this many elements (a few CPU-scale
#: layers' weights: past the caches, as a stage's parameters are).
ADAMW_TENSORS = (8, 2**17)


def _adamw_per_param(repeats: int) -> float:
    """CPU seconds per parameter of one ``torch.optim.AdamW`` step (its default, multi-tensor
    implementation) over :data:`ADAMW_TENSORS`, every process stepping at once. Measured rather
    than priced from the stream bandwidth: the step updates its state in place, where the stream
    benchmark's ``x + 1`` also pays for allocating (and faulting in) its output."""
    count, size = ADAMW_TENSORS
    params = [torch.nn.Parameter(torch.randn(size)) for _ in range(count)]
    for p in params:
        p.grad = torch.randn(size)
    opt = torch.optim.AdamW(params, lr=1e-3)
    return _cpu_loop(opt.step, repeats) / (count * size)


def _runtime_overheads(rank: int, job: CalibrationJob) -> dict[str, float]:
    """The runtime pieces train uses, timed on a small layer against the same work run plainly
    (:class:`parplan.cost.overheads.RuntimeOverheads`): the step's closing loss all-reduce and
    barrier; a pipeline of one small linear per process (torch.distributed.pipelining, 1F1B);
    FSDP2 over all processes; a DTensor column- and row-parallel pair over all processes."""
    import torch.distributed as dist
    from torch import nn

    n, reps, w, mbs = job.devices, max(3, job.repeats // 2), RUNTIME_WIDTH, RUNTIME_MICROBATCHES
    loss = torch.zeros((), dtype=torch.float64)

    def sync() -> None:
        dist.all_reduce(loss)
        dist.barrier()

    out = {"step_sync_s": _loop_time(sync, reps), "adamw_s_per_param": _adamw_per_param(reps)}
    if n < 2:
        return out
    torch.manual_seed(0)
    x = torch.randn(8, w)

    def plain(module: nn.Module) -> float:
        def step() -> None:
            module(x).sum().backward()

        return _cpu_loop(step, reps)

    # pipeline: one linear per stage; the actions' CPU time less the linear's own
    from torch.distributed.pipelining import PipelineStage
    from torch.distributed.pipelining.schedules import Schedule1F1B

    layer = nn.Linear(w, w)
    alone = plain(layer)
    stage = PipelineStage(layer, rank, n, torch.device("cpu"))
    sched = Schedule1F1B(stage, mbs, loss_fn=lambda y, t: (y - t).pow(2).mean())
    batch, target = torch.randn(8 * mbs, w), torch.randn(8 * mbs, w)

    def pipe() -> None:
        if rank == 0:
            sched.step(batch)
        elif rank == n - 1:
            sched.step(target=target)
        else:
            sched.step()

    out["pipeline_action_s"] = max(0.0, (_cpu_loop(pipe, reps) - mbs * alone) / (2 * mbs))

    # FSDP2: two linears, each and the root sharded over all processes, at two widths, so that a
    # cost per sharded module and a cost per byte can be told apart
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh("cpu", (n,))
    extra, sizes = [], []
    for width in (w, 4 * w):
        xw = torch.randn(8, width)

        def run(module: nn.Module, xw: torch.Tensor = xw) -> float:
            return _cpu_loop(lambda: module(xw).sum().backward(), reps)

        two = nn.Sequential(nn.Linear(width, width), nn.Linear(width, width))
        sharded = nn.Sequential(nn.Linear(width, width), nn.Linear(width, width))
        for sub in sharded:
            fully_shard(sub, mesh=mesh)
        fully_shard(sharded, mesh=mesh)
        extra.append(max(0.0, run(sharded) - run(two)))
        sizes.append(float(sum(p.numel() * p.element_size() for p in two.parameters())))
    per_byte = max(0.0, (extra[1] - extra[0]) / (sizes[1] - sizes[0]))
    out["fsdp_s_per_byte"] = per_byte
    out["fsdp_unit_s"] = max(0.0, extra[0] - per_byte * sizes[0]) / 3  # two linears and the root

    # DTensor tensor and sequence parallelism as train runs it (Megatron-SP): a norm on the
    # sequence shard, then a column- and a row-parallel linear (an MLP) whose input is gathered
    # and whose output is reduce-scattered on the sequence, against the local shard's own work
    from torch.distributed.tensor import Shard
    from torch.distributed.tensor.parallel import (
        ColwiseParallel,
        RowwiseParallel,
        SequenceParallel,
        parallelize_module,
    )

    tokens = 8 * n
    xs = torch.randn(1, tokens, w)
    shard = nn.Sequential(nn.LayerNorm(w), nn.Linear(w, w // n), nn.Linear(w // n, w))
    alone = _cpu_loop(lambda: shard(xs).sum().backward(), reps)
    mlp = nn.Sequential(nn.LayerNorm(w), nn.Linear(w, w), nn.Linear(w, w))
    parallelize_module(
        mlp,
        mesh,
        {
            "0": SequenceParallel(),
            "1": ColwiseParallel(input_layouts=Shard(1)),
            "2": RowwiseParallel(output_layouts=Shard(1)),
        },
    )
    local = xs.chunk(n, dim=1)[rank].contiguous()
    from torch.distributed.tensor import DTensor

    def tp_step() -> None:
        y = mlp(DTensor.from_local(local, mesh, [Shard(1)]))
        (y.to_local() if isinstance(y, DTensor) else y).sum().backward()

    out["tp_linear_s"] = max(0.0, _cpu_loop(tp_step, reps) - alone) / 2
    return out


def _worker(rank: int, job: CalibrationJob) -> None:
    from parplan.runtime.launch import _init_group

    out = Path(job.out_dir)
    try:
        torch.set_num_threads(job.threads)
        _init_group(rank, job.devices, "gloo", job.store, job.timeout_s)
        torch.save(_measure(rank, job), out / f"device{rank}.pt")
    except BaseException as exc:
        (out / f"device{rank}.err").write_text(f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}")
        raise SystemExit(1) from None
    finally:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


def measure_local(devices: int, *, repeats: int = 20, timeout_s: float = 60.0) -> list[Measured]:
    """Run the measurements in ``devices`` processes at once; one record per process."""
    from parplan.runtime.launch import spawn_devices

    if not 1 <= devices <= 64:
        raise InvalidInputError(f"--devices: calibrate takes 1 to 64 processes, got {devices}")
    if repeats < 1:
        raise InvalidInputError(f"--repeats: must be >= 1, got {repeats}")
    threads = max(1, (os.cpu_count() or 1) // devices)
    with tempfile.TemporaryDirectory(prefix="parplan-calibrate-") as tmp:
        job = CalibrationJob(
            devices=devices,
            threads=threads,
            repeats=repeats,
            out_dir=tmp,
            store=os.path.join(tmp, "store"),
            timeout_s=timeout_s,
        )
        return spawn_devices(_worker, (job,), devices, tmp, timeout_s * 4 + 60)  # type: ignore[no-any-return]


def fit_link(
    n: int, small_s: float, large_s: float, gather_s: float, scatter_s: float
) -> tuple[float, float]:
    """(latency_s, bandwidth_Bps) of the ring model (:mod:`parplan.cost.comm`).

    The latency is the median per-step latency of the small all-reduce (``2 (n - 1)`` steps),
    all-gather and reduce-scatter (``n - 1`` steps each), the collectives data and tensor
    parallelism issue; the bandwidth fits the large all-reduce once that latency is paid.
    """
    if n < 2:
        return 0.0, 1e12
    steps = 2 * (n - 1)
    alpha = statistics.median([small_s / steps, gather_s / (n - 1), scatter_s / (n - 1)])
    rest = max(large_s - steps * alpha, 1e-9)
    return alpha, steps / n * LARGE / rest


def calibrated_cluster(devices: int, measured: list[Measured]) -> dict[str, Any]:
    """The cluster document (``parplan.cluster`` JSON/YAML) of the measurements."""
    from parplan.cluster_io import _total_ram_bytes
    from parplan.cost.compute import KernelEfficiency

    eff = KernelEfficiency()
    m, k, n = GEMM_SHAPE
    gemm = statistics.median(x.gemm_s for x in measured)
    stream = statistics.median(x.stream_s for x in measured)
    flops = 2 * m * k * n / gemm
    bandwidth = 2 * 64 * 2**20 / stream
    latency, link_bw = fit_link(
        devices,
        statistics.median(x.allreduce_small_s for x in measured),
        statistics.median(x.allreduce_large_s for x in measured),
        statistics.median(x.allgather_small_s for x in measured),
        statistics.median(x.reducescatter_small_s for x in measured),
    )
    p2p = [x for x in measured if x.p2p_small_s is not None]
    meta: dict[str, Any] = {
        "description": f"this machine as {devices} processes, calibrated by parplan calibrate",
        "measured": {
            "gemm_flops_per_process": flops,
            "stream_Bps_per_process": bandwidth,
            "allreduce_latency_s": latency,
            "allreduce_bandwidth_Bps": link_bw,
            "gemm_shape": list(GEMM_SHAPE),
        },
    }
    if p2p:
        meta["measured"]["p2p_latency_s"] = p2p[0].p2p_small_s
        meta["measured"]["p2p_bandwidth_Bps"] = LARGE / max(p2p[0].p2p_large_s - p2p[0].p2p_small_s, 1e-9)  # type: ignore[operator]
    runtime: dict[str, Any] = {
        k: statistics.median(x.runtime[k] for x in measured if k in x.runtime) for k in measured[0].runtime
    }
    runtime["slowdown"] = slowdown_curve(measured)
    meta["measured"]["runtime"] = runtime
    link = {"bandwidth_Bps": link_bw, "latency_s": latency}
    return {
        "name": f"local:{devices}-calibrated",
        "devices": {
            "count": devices,
            "per_node": devices,
            "device": {
                "kind": "cpu",
                "peak_flops": {"fp32": flops / eff.gemm},
                "memory_bytes": _total_ram_bytes() / devices,
                "memory_bandwidth_Bps": bandwidth / eff.memory,
            },
        },
        "intra_node": link,
        "inter_node": link,
        "meta": meta,
    }
