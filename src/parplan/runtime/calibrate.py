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
(:class:`parplan.cost.strategy.KernelEfficiency` defaults), so an estimate reproduces what was
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


def _loop_time(fn: Any, repeats: int) -> float:
    """Seconds per call of ``fn`` run ``repeats`` times back to back, every process at once."""
    import torch.distributed as dist

    fn()
    dist.barrier()
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    elapsed = time.perf_counter() - t0
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
    return Measured(
        gemm_s=gemm,
        stream_s=stream,
        allreduce_small_s=ar_small,
        allreduce_large_s=ar_large,
        allgather_small_s=ag_small,
        reducescatter_small_s=rs_small,
        p2p_small_s=p2p_small,
        p2p_large_s=p2p_large,
    )


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
    from parplan.cost.strategy import KernelEfficiency

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
