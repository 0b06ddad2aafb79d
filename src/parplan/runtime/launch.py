"""Run a plan on torch.distributed: one process per plan device, results, gradient check, traces.

:func:`run_plan` starts one process per device with ``torch.multiprocessing`` (spawn) on this
machine, joined by a file store, with a timeout on every collective and transfer so that a failure
never hangs: a failed worker's exception text is raised as :class:`RunError`.

Several machines: start the same worker with torchrun, which sets ``RANK``, ``WORLD_SIZE``,
``MASTER_ADDR`` and ``MASTER_PORT``; :func:`worker_main` then joins with ``env://``::

    torchrun --nnodes 2 --nproc-per-node 8 --rdzv-endpoint HOST:29500 \\
        -m parplan.runtime.launch PLAN.json --backend nccl --out results/

(rank r runs plan device r; every rank writes ``results/device{r}.pt``).
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import tempfile
import time
import traceback
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from parplan.errors import InvalidInputError, ParplanError
from parplan.plan import Plan

ENGINES = ("auto", "parplan", "pipelining")
BACKENDS = ("gloo", "nccl")


class RunError(ParplanError):
    """A worker process failed or the run timed out (the message carries the worker's error; exit 5).

    Not exit 1 (our bug) nor 2 (bad input): a worker killed by the system, a lost peer or a transfer
    that timed out is a failure of the run itself, and scripts around ``parplan run`` retry on it.
    """

    exit_code = 5


@dataclass(frozen=True, kw_only=True)
class RunResult:
    """What running a plan measured, next to what the plan predicted.

    ``measured_step_s`` is the median over the measured steps of (last end - first start over all
    devices); ``predicted_step_s`` is the plan's makespan (None for plans in abstract units).
    ``max_grad_abs_err`` and ``ref_loss`` compare with a single-process run of the same model,
    data and seed (None when the check was skipped). Memory is bytes: measured = parameters +
    gradients + peak saved activations (CPU) or ``torch.cuda.max_memory_allocated`` (CUDA).
    """

    measured_step_s: float
    predicted_step_s: float | None
    max_grad_abs_err: float | None
    loss: float
    ref_loss: float | None
    peak_memory_per_device: tuple[float, ...]
    predicted_peak_memory_per_device: tuple[float, ...]
    step_times_s: tuple[float, ...]
    timings: tuple[Any, ...]
    engine: str
    backend: str
    trace_path: str | None = None
    replayed_step_s: float | None = None
    replayed_cpu_step_s: float | None = None
    peak_activation_per_device: tuple[float, ...] = ()
    predicted_peak_activation_per_device: tuple[float, ...] = ()

    @property
    def step_error(self) -> float | None:
        """(measured - predicted) / predicted, or None without a prediction."""
        if not self.predicted_step_s:
            return None
        return (self.measured_step_s - self.predicted_step_s) / self.predicted_step_s

    def to_json(self) -> dict[str, Any]:
        return {
            "measured_step_s": self.measured_step_s,
            "predicted_step_s": self.predicted_step_s,
            "max_grad_abs_err": self.max_grad_abs_err,
            "loss": self.loss,
            "ref_loss": self.ref_loss,
            "step_error": self.step_error,
            "peak_memory_per_device": list(self.peak_memory_per_device),
            "predicted_peak_memory_per_device": list(self.predicted_peak_memory_per_device),
            "step_times_s": list(self.step_times_s),
            "engine": self.engine,
            "backend": self.backend,
            "trace_path": self.trace_path,
            "replayed_step_s": self.replayed_step_s,
            "replayed_cpu_step_s": self.replayed_cpu_step_s,
            "peak_activation_per_device": list(self.peak_activation_per_device),
            "predicted_peak_activation_per_device": list(self.predicted_peak_activation_per_device),
        }


# ------------------------------------------------------------------------------------ worker
def _init_group(rank: int, world: int, backend: str, store_path: str | None, timeout_s: float) -> None:
    import torch.distributed as dist

    timeout = timedelta(seconds=timeout_s)
    if store_path is None:  # torchrun: RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT in the environment
        dist.init_process_group(backend, init_method="env://", timeout=timeout)
    else:
        dist.init_process_group(
            backend, init_method=f"file://{store_path}", rank=rank, world_size=world, timeout=timeout
        )


def _worker(rank: int, job: dict[str, Any]) -> None:
    """Entry point of one device's process: run every plan of the job, save results or the error."""
    out = Path(job["out_dir"])
    try:
        import torch

        torch.set_num_threads(job.get("threads", 1))
        _init_group(rank, job["world"], job["backend"], job.get("store"), job["timeout_s"])
        torch.save(_run_tasks(rank, job), out / f"device{rank}.pt")
    except BaseException as exc:  # the parent reads this file: the worker's error must not be lost
        text = f"{type(exc).__name__}: {exc}"
        (out / f"device{rank}.err").write_text(text + "\n" + traceback.format_exc())
        raise SystemExit(1) from None
    finally:
        try:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()
        except Exception:  # tearing down after a failure must not mask it
            pass


def _run_tasks(rank: int, job: dict[str, Any]) -> list[dict[str, Any]]:
    """Every task of the job on this device; plans for parplan's executor run round-robin.

    Step k of every plan runs next to step k of the others, so that a change of load on the
    machine during the job (other processes) hits all plans alike and their comparison holds.
    """
    import torch

    results: list[dict[str, Any] | None] = [None] * len(job["tasks"])
    runs: dict[int, Any] = {}
    for k, task in enumerate(job["tasks"]):
        if task.get("kind") == "profile" or task["engine"] == "pipelining":
            results[k] = _run_device(rank, job, task)
        else:
            runs[k] = _make_executor(rank, job, task)
    steps: dict[int, list[tuple[float, float]]] = {k: [] for k in runs}
    timings: dict[int, list[Any]] = {k: [] for k in runs}
    cuda_peak: dict[int, int] = dict.fromkeys(runs, 0)
    cuda = job["backend"] == "nccl"
    for _ in range(job["warmup"] + job["steps"]):
        for k, ex in runs.items():
            if cuda:
                torch.cuda.reset_peak_memory_stats()
            start, end, timings[k] = ex.step()
            steps[k].append((start, end))
            if cuda:
                cuda_peak[k] = max(cuda_peak[k], torch.cuda.max_memory_allocated())
    for k, ex in runs.items():
        results[k] = {
            "steps": steps[k][job["warmup"] :],
            "timings": [t.to_json() for t in timings[k]],
            "grads": ex.grads(),
            "losses": dict(ex.losses),
            "peak_memory": float(cuda_peak[k] if cuda else 2 * ex.param_bytes + ex.peak_act),
            "peak_activation": float(ex.peak_act),
        }
    return results  # type: ignore[return-value]


def _make_executor(rank: int, job: dict[str, Any], task: dict[str, Any]) -> Any:
    import torch

    from parplan.runtime.executor import Comm, DeviceExecutor, ModelSpec

    plan = Plan.from_json(task["plan"])
    model, _ = ModelSpec(**task["model"]).build(job["seed"])
    torch_device = "cpu"
    if job["backend"] == "nccl":  # one GPU per device; NCCL transfers need CUDA tensors
        local = int(os.environ.get("LOCAL_RANK", rank)) % max(torch.cuda.device_count(), 1)
        torch.cuda.set_device(local)
        torch_device = f"cuda:{local}"
        model.to(torch_device)
    return DeviceExecutor(
        model, plan, rank, Comm(rank, job["timeout_s"]), seed=job["seed"], torch_device=torch_device
    )


def _run_device(rank: int, job: dict[str, Any], task: dict[str, Any]) -> dict[str, Any]:
    """A profiling task, or a plan for torch's pipelining runtime."""
    import torch.distributed as dist

    from parplan.runtime.executor import ModelSpec

    spec = ModelSpec(**task["model"])
    model, _ = spec.build(job["seed"])
    if task.get("kind") == "profile":
        from parplan.runtime.profile import profile_ops

        dist.barrier()  # every device profiles at the same time: the run's CPU sharing
        ops = profile_ops(
            model,
            repeats=task["repeats"],
            warmup=task["warmup"],
            seed=job["seed"],
            clock=task.get("clock", "wall"),
        )
        return {"ops": {k: v.to_json() for k, v in ops.items()}}
    from parplan.runtime.pipelining_adapter import run_pipelining_device

    plan = Plan.from_json(task["plan"])
    if job["backend"] == "nccl":
        import torch

        local = int(os.environ.get("LOCAL_RANK", rank)) % max(torch.cuda.device_count(), 1)
        torch.cuda.set_device(local)
        model.to(f"cuda:{local}")
    return run_pipelining_device(rank, plan, model, job, task)


# ------------------------------------------------------------------------------------ parent
def _check_options(plan: Plan, backend: str, engine: str, steps: int, timeout_s: float) -> None:
    if backend not in BACKENDS:
        raise InvalidInputError(f"--backend: unknown {backend!r}; use one of {', '.join(BACKENDS)}")
    if engine not in ENGINES:
        raise InvalidInputError(f"--engine: unknown {engine!r}; use one of {', '.join(ENGINES)}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise InvalidInputError(f"--steps: must be an integer >= 1, got {steps!r}")
    if not timeout_s > 0:
        raise InvalidInputError(f"timeout_s: must be > 0 seconds, got {timeout_s}")
    if not plan.problem.is_placed:
        raise InvalidInputError(
            f"plan {plan.name!r}: some stages have no device; run a placed plan (from `parplan plan`)"
        )
    if backend == "nccl":
        import torch

        n = torch.cuda.device_count()
        if n < plan.problem.num_devices:
            raise InvalidInputError(
                f"--backend nccl: the plan needs {plan.problem.num_devices} GPUs, this machine has {n}; "
                "use --backend gloo on CPU or torchrun on several machines"
            )


def _choose_engine(plan: Plan, engine: str, model: Any) -> str:
    if engine in ("parplan", "auto"):
        return "parplan"
    from parplan.runtime.modules import OpGraphModel
    from parplan.runtime.pipelining_adapter import pipelining_unsupported

    reason = (
        pipelining_unsupported(plan, model)
        if isinstance(model, OpGraphModel)
        else "a traced module runs on parplan's executor only"
    )
    if reason is None:
        return "pipelining"
    if engine == "pipelining":
        warnings.warn(
            f"engine pipelining cannot run plan {plan.name!r} ({reason}); using parplan's executor",
            stacklevel=3,
        )
    return "parplan"


def run_plan(
    plan: Plan,
    *,
    backend: str = "gloo",
    engine: str = "auto",
    steps: int = 3,
    warmup: int = 1,
    timeout_s: float = 60.0,
    seed: int = 0,
    model: str | None = None,
    model_options: Mapping[str, Any] | None = None,
    check: bool = True,
    trace: str | Path | None = None,
) -> RunResult:
    """Run ``plan`` for real: one process per device on this machine, then compare with the plan.

    Parameters
    ----------
    plan
        A placed plan whose stages list their ops (plans made from a zoo model with a torch twin:
        ``gpt-tiny``, ``moe-small``, ``multimodal-small``).
    backend
        ``gloo`` (CPU) or ``nccl`` (one GPU per device).
    engine
        ``parplan`` (own executor: any DAG of stages), ``pipelining`` (torch.distributed.pipelining's
        runtime fed with the exported CSV: chain plans; other plans fall back to ``parplan`` with a
        warning), ``auto`` (= ``parplan``).
    steps, warmup
        Measured steps (the median is reported) after ``warmup`` unmeasured ones.
    timeout_s
        Limit on every collective and transfer; the whole run is stopped after
        ``timeout_s * (steps + warmup + 2) + 30`` seconds.
    seed
        Weights and data seed, shared with the single-process reference.
    model, model_options
        Override the model recorded in the plan (see :func:`parplan.runtime.executor.model_spec_of`).
    check
        Compare loss and gradients with a single-process run (fp32).
    trace
        Where to write the measured Chrome trace (JSON); the planned trace goes next to it as
        ``*.planned.json``.

    Returns
    -------
    RunResult

    Raises
    ------
    InvalidInputError
        Bad options, a plan without ops or for a model that does not run.
    RunError
        A worker failed (its exception text is in the message) or the run timed out.
    """
    return run_plans(
        [plan],
        backend=backend,
        engine=engine,
        steps=steps,
        warmup=warmup,
        timeout_s=timeout_s,
        seed=seed,
        model=model,
        model_options=model_options,
        check=check,
        traces=None if trace is None else [trace],
    )[0]


def run_plans(
    plans: list[Plan],
    *,
    backend: str = "gloo",
    engine: str = "auto",
    steps: int = 3,
    warmup: int = 1,
    timeout_s: float = 60.0,
    seed: int = 0,
    model: str | None = None,
    model_options: Mapping[str, Any] | None = None,
    check: bool = True,
    traces: list[str | Path] | None = None,
) -> list[RunResult]:
    """Run several plans with the same number of devices, one after the other, in ONE launch.

    Starting the processes and importing torch costs seconds; comparing schedules in one launch
    pays it once. Options as in :func:`run_plan`; ``traces`` gives one trace path per plan.
    """

    from parplan.runtime.executor import model_spec_of, stage_io

    if not plans:
        return []
    world = plans[0].problem.num_devices
    tasks: list[dict[str, Any]] = []
    refs = []
    for plan in plans:
        _check_options(plan, backend, engine, steps, timeout_s)
        if plan.problem.num_devices != world:
            raise InvalidInputError(
                f"run_plans: plan {plan.name!r} has {plan.problem.num_devices} devices, the first {world}; "
                "run plans of different sizes separately"
            )
        spec = model_spec_of(plan, model, **dict(model_options or {}))
        ref_model, _ = spec.build(seed)
        stage_io(ref_model, plan)  # bad plans fail here, in the parent, with a clear message
        refs.append((ref_model, spec))
        tasks.append(
            {
                "plan": plan.to_json(),
                "model": spec.to_json(),
                "engine": _choose_engine(plan, engine, ref_model),
            }
        )
    with tempfile.TemporaryDirectory(prefix="parplan-run-") as tmp:
        job = {
            "tasks": tasks,
            "world": world,
            "backend": backend,
            "steps": steps,
            "warmup": warmup,
            "timeout_s": timeout_s,
            "seed": seed,
            "out_dir": tmp,
            "store": os.path.join(tmp, "store"),
        }
        results = spawn_devices(
            _worker, (job,), world, tmp, timeout_s * (steps + warmup + 2) * len(plans) + 30
        )
    out = []
    for k, plan in enumerate(plans):
        trace = traces[k] if traces else None
        ref_model, spec = refs[k]
        per_device = [results[r][k] for r in range(world)]
        out.append(
            _summarize(plan, per_device, ref_model, spec, tasks[k]["engine"], backend, check, seed, trace)
        )
    return out


def profile_in_workers(
    name: str,
    *,
    num_devices: int = 2,
    repeats: int = 5,
    warmup: int = 2,
    timeout_s: float = 120.0,
    seed: int = 0,
    **options: Any,
) -> Any:
    """Profile a model's ops in ``num_devices`` worker processes at once, like a run's devices.

    A run's devices share the machine (CPU cores, memory bandwidth); a profile taken in one
    process alone underestimates what each device gets. Every worker profiles the whole model
    simultaneously; each op keeps the median over devices of its median time.

    Parameters
    ----------
    name, options
        Model and options as in :func:`parplan.runtime.profile.profile_model`.
    num_devices
        Processes profiling at once (the plan's device count).

    Returns
    -------
    parplan.cost.profile.Profile
    """
    import torch

    from parplan.cost.profile import OpProfile, Profile
    from parplan.runtime.executor import ModelSpec

    spec = ModelSpec(name=name, **options)
    _, graph = spec.build(seed)
    with tempfile.TemporaryDirectory(prefix="parplan-profile-") as tmp:
        job = {
            "tasks": [{"kind": "profile", "model": spec.to_json(), "repeats": repeats, "warmup": warmup}],
            "world": num_devices,
            "backend": "gloo",
            "steps": 0,
            "warmup": 0,
            "timeout_s": timeout_s,
            "seed": seed,
            "out_dir": tmp,
            "store": os.path.join(tmp, "store"),
        }
        per_device = [r[0]["ops"] for r in spawn_devices(_worker, (job,), num_devices, tmp, timeout_s + 30)]
    ops = {}
    for op in per_device[0]:
        vals = [d[op] for d in per_device]
        ops[op] = OpProfile(
            F=statistics.median(v["F"] for v in vals),
            I=statistics.median(v["I"] for v in vals),
            W=statistics.median(v["W"] for v in vals),
            act_bytes=vals[0].get("act_bytes"),
        )
    meta = graph.meta_dict
    return Profile(
        device="cpu",
        dtype="fp32",
        microbatch_size=spec.microbatch_size,
        seq_len=meta.get("seq_len"),
        ops=tuple(sorted(ops.items())),
        meta=tuple(
            sorted(
                {
                    "model": name,
                    "torch": torch.__version__,
                    "repeats": repeats,
                    "concurrent_processes": num_devices,
                    "threads": 1,
                    "num_layers": meta.get("num_layers"),
                }.items()
            )
        ),
    )


def spawn_devices(
    target: Any, args: tuple[Any, ...], world: int, out_dir: str | Path, limit_s: float
) -> list[Any]:
    """Start ``target(rank, *args)`` in ``world`` spawned processes and collect ``device{rank}.pt``.

    Every device process writes its result (or ``device{rank}.err``) to ``out_dir``; on the first
    failure the others are stopped and its error is raised (:func:`_wait`).
    """
    import torch.multiprocessing as mp

    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=target, args=(r, *args), daemon=True) for r in range(world)]
    for p in procs:
        p.start()
    _wait(procs, Path(out_dir), limit_s)
    return [_load(Path(out_dir) / f"device{r}.pt") for r in range(world)]


def _load(path: Path) -> Any:
    import torch

    return torch.load(path, weights_only=False)


def _exit_reason(code: int | None) -> str:
    """Why a worker ended without writing its error file: the signal that killed it, or its exit code."""
    if code is not None and code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        hint = " (out of memory? see dmesg)" if name == "SIGKILL" else ""
        return f"killed by {name}{hint}; the other devices were stopped"
    return f"exited with code {code} without a message"


def _wait(procs: list[Any], out: Path, limit_s: float) -> None:
    """Wait for every worker; on the first failure stop the others and raise its error."""
    deadline = time.monotonic() + limit_s
    while True:
        codes = [p.exitcode for p in procs]
        failed = [r for r, c in enumerate(codes) if c not in (None, 0)]
        if failed or time.monotonic() > deadline:
            for p in procs:
                if p.is_alive():
                    p.terminate()
            for p in procs:
                p.join(5)
            if not failed:
                raise RunError(
                    f"run: timed out after {limit_s:.0f} s waiting for devices "
                    f"{[r for r, c in enumerate(codes) if c is None]}; raise timeout_s or check the plan"
                )
            msgs = []
            for r in failed:
                err = out / f"device{r}.err"
                first = err.read_text().splitlines()[0] if err.exists() else _exit_reason(codes[r])
                msgs.append(f"device {r}: {first}")
            # A device that fails makes its peers fail on transfers: report the root cause first.
            msgs.sort(key=lambda m: ("Timeout" in m or "Connection" in m or "closed" in m, m))
            raise RunError("run failed: " + "; ".join(msgs))
        if all(c == 0 for c in codes):
            return
        time.sleep(0.02)


def _summarize(
    plan: Plan,
    results: list[dict[str, Any]],
    ref_model: Any,
    spec: Any,
    engine: str,
    backend: str,
    check: bool,
    seed: int,
    trace: str | Path | None,
) -> RunResult:
    from parplan.runtime.executor import reference_step
    from parplan.simulate import static_memory

    num_steps = len(results[0]["steps"])
    step_times = tuple(
        max(r["steps"][k][1] for r in results) - min(r["steps"][k][0] for r in results)
        for k in range(num_steps)
    )
    losses: dict[int, float] = {}
    for r in results:
        losses.update(r["losses"])
    m = plan.problem.num_microbatches
    loss = sum(losses.values()) / m
    grads: dict[str, Any] = {}
    for r in results:  # replicated stages (bidirectional plans) add up, like a gradient all-reduce
        for name, g in r["grads"].items():
            grads[name] = grads[name] + g if name in grads else g
    max_err = ref_loss = None
    if check:
        ref_loss, ref = reference_step(ref_model, m, seed)
        missing = sorted(set(ref) - set(grads))
        if missing:
            from parplan.errors import InternalError

            raise InternalError(
                f"run: no gradient came back for {len(missing)} parameters, e.g. {missing[:3]}"
            )
        max_err = max(float((grads[n] - g).abs().max()) for n, g in ref.items())
    timings = tuple(t for r in results for t in r["timings"])
    trace_path = None
    if trace is not None:
        trace_path = str(write_measured_trace(plan, timings, trace))
    predicted = plan.metrics.makespan if plan.problem.time_unit == "s" else None
    replayed = replay_step_s(plan, timings) if timings else None
    return RunResult(
        measured_step_s=statistics.median(step_times),
        predicted_step_s=predicted,
        max_grad_abs_err=max_err,
        loss=loss,
        ref_loss=ref_loss,
        peak_memory_per_device=tuple(r["peak_memory"] for r in results),
        predicted_peak_memory_per_device=tuple(plan.metrics.peak_memory_per_device),
        step_times_s=step_times,
        timings=timings,
        engine=engine,
        backend=backend,
        trace_path=trace_path,
        replayed_step_s=replayed,
        replayed_cpu_step_s=replay_step_s(plan, timings, "cpu") if timings else None,
        peak_activation_per_device=tuple(r.get("peak_activation", 0.0) for r in results),
        predicted_peak_activation_per_device=tuple(
            peak - static_memory(plan.problem, d)
            for d, peak in enumerate(plan.metrics.peak_memory_per_device)
        ),
    )


def measured_stage_costs(plan: Plan, timings: tuple[dict[str, Any], ...], clock: str = "wall") -> list[Any]:
    """Each stage's pass times as measured: the median per pass kind of each action's compute time.

    ``clock="wall"``: wall time minus receive waits; ``clock="cpu"``: the worker thread's CPU time,
    which other load on the machine does not inflate. Fused actions are skipped (their stages keep
    the plan's times for the passes never run alone).
    """
    from parplan.problem import PassTimes

    problem = plan.problem
    samples: dict[tuple[int, str], list[float]] = {}
    for t in timings:
        if clock == "cpu":
            compute = t["cpu_s"]
        else:
            compute = max(0.0, t["end_s"] - t["start_s"] - t["recv_wait_s"])
        if t["kind"] == "FB":
            continue
        samples.setdefault((t["stage"], t["kind"]), []).append(compute)
    out = []
    for s in problem.stages:
        old = s.cost

        def med(kind: str, old: PassTimes = old, s: Any = s) -> float | None:
            got = samples.get((s.index, kind))
            if got:
                return statistics.median(got)
            return getattr(old, kind)

        F, B, I, W = med("F"), med("B"), med("I"), med("W")
        if I is not None and W is not None and (s.index, "B") not in samples:
            B = I + W
        out.append(PassTimes(F=F or 0.0, B=B or 0.0, I=I, W=W, FB=old.FB))
    return out


def replay_step_s(plan: Plan, timings: tuple[dict[str, Any], ...], clock: str = "wall") -> float:
    """The plan's makespan simulated with the measured stage times instead of the predicted ones.

    With wall times, its distance to the measured step isolates the schedule and communication
    model from the compute-cost model (the profile). With CPU times (``clock="cpu"``), it is the
    step an unloaded machine would take, to compare with the profile's prediction.
    """
    from dataclasses import replace

    from parplan.simulate import compute_metrics, simulate

    problem = plan.problem
    costs = measured_stage_costs(plan, timings, clock)
    stages = [replace(s, cost=c, device_costs=()) for s, c in zip(problem.stages, costs, strict=True)]
    measured = problem.with_stages(stages)
    return compute_metrics(measured, simulate(measured, plan.schedule)).makespan


def measured_trace(plan: Plan, timings: tuple[dict[str, Any], ...]) -> dict[str, Any]:
    """Chrome trace of measured actions: :func:`parplan.report.trace.measured_chrome_trace`."""
    from parplan.report.trace import measured_chrome_trace

    return measured_chrome_trace(plan, timings)


def write_measured_trace(plan: Plan, timings: tuple[dict[str, Any], ...], path: str | Path) -> Path:
    """Write the measured trace to ``path`` and the plan's own trace to ``*.planned.json`` beside it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(measured_trace(plan, timings)))
    try:
        from parplan.report.trace import write_chrome_trace
    except ImportError:  # the report package is optional for running
        return path
    write_chrome_trace(plan, path.with_name(path.name.removesuffix(".json") + ".planned.json"))
    return path


def worker_main(argv: list[str] | None = None) -> int:
    """torchrun entry: ``python -m parplan.runtime.launch PLAN.json [--backend B] [--out DIR]``."""
    import argparse

    from parplan.plan import read_plan
    from parplan.runtime.executor import model_spec_of

    ap = argparse.ArgumentParser(prog="parplan.runtime.launch")
    ap.add_argument("plan")
    ap.add_argument("--backend", default="nccl", choices=BACKENDS)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--timeout", type=float, default=300.0)
    ap.add_argument("--out", default="parplan-run")
    args = ap.parse_args(argv)
    plan = read_plan(args.plan)
    rank = int(os.environ["RANK"])
    if args.backend == "nccl":
        import torch

        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    Path(args.out).mkdir(parents=True, exist_ok=True)
    job = {
        "tasks": [{"plan": plan.to_json(), "model": model_spec_of(plan).to_json(), "engine": "parplan"}],
        "world": int(os.environ["WORLD_SIZE"]),
        "backend": args.backend,
        "steps": args.steps,
        "warmup": 1,
        "timeout_s": args.timeout,
        "seed": 0,
        "out_dir": args.out,
        "store": None,
    }
    _worker(rank, job)
    return 0


if __name__ == "__main__":
    raise SystemExit(worker_main())
