"""Flexible job-shop instances (``.fjs`` and OR-Library job-shop files) solved with the planner's model.

A job shop is the same ``TaskModel`` as a pipeline: every operation is a task in its own placement
group (its alternative machines are the devices), consecutive operations of a job are arcs, and
there is no memory. ``parplan fjsp`` calls ``solve_fjsp``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

from parplan.errors import InvalidInputError, NoSolutionError
from parplan.solve.backend import BackendOptions, Progress
from parplan.solve.bounds import lower_bounds
from parplan.solve.heuristics import best_heuristic
from parplan.solve.model import Arc, Assignment, Group, Task, TaskModel


@dataclass(frozen=True, slots=True, kw_only=True)
class FjspInstance:
    """Jobs of operations; each operation lists its (machine, time) alternatives (0-based machines)."""

    name: str
    num_machines: int
    jobs: tuple[tuple[tuple[tuple[int, int], ...], ...], ...]

    @property
    def num_operations(self) -> int:
        return sum(len(job) for job in self.jobs)


@dataclass(frozen=True, slots=True, kw_only=True)
class ScheduledOperation:
    job: int
    operation: int
    machine: int
    start: int
    end: int


@dataclass(frozen=True, slots=True, kw_only=True)
class FjspResult:
    """Best makespan found, the proven lower bound, optimal/feasible, solve time and the schedule."""

    makespan: int
    lower_bound: int
    status: str
    time_s: float
    assignment: tuple[ScheduledOperation, ...]

    @property
    def gap(self) -> float:
        return (self.makespan - self.lower_bound) / self.makespan if self.makespan else 0.0

    def to_json(self) -> dict[str, object]:
        return {
            "makespan": self.makespan,
            "lower_bound": self.lower_bound,
            "gap": self.gap,
            "status": self.status,
            "time_s": self.time_s,
            "assignment": [
                {"job": o.job, "operation": o.operation, "machine": o.machine, "start": o.start, "end": o.end}
                for o in self.assignment
            ],
        }


# ---------------------------------------------------------------------------- readers


def _numbers(path: str, lineno: int, line: str) -> list[int]:
    out = []
    for token in line.split():
        try:
            value = float(token)
        except ValueError:
            raise InvalidInputError(f"{path}:{lineno}: {token!r} is not a number") from None
        if value != int(value) or value < 0:
            raise InvalidInputError(f"{path}:{lineno}: {token!r} must be a non-negative integer")
        out.append(int(value))
    return out


#: Size guards of the job-shop readers: more machines or a longer operation than these is a typo
#: (OR-Library's largest instances have 100 machines and times below 10^4), and would overflow
#: CP-SAT's 64-bit horizon or build millions of empty machine resources.
MAX_MACHINES = 10_000
MAX_DURATION = 10**12


def _header(name: str, lineno: int, n_jobs: int, n_machines: int, num_lines: int) -> None:
    """The header's counts are positive, within the size guards and agree with the job lines."""
    if n_jobs < 1 or n_machines < 1:
        raise InvalidInputError(
            f"{name}:{lineno}: header announces {n_jobs} jobs on {n_machines} machines; both must be >= 1"
        )
    if n_machines > MAX_MACHINES:
        raise InvalidInputError(
            f"{name}:{lineno}: header announces {n_machines} machines, more than the {MAX_MACHINES} "
            "this reader accepts; check the header (jobs first, then machines)"
        )
    if num_lines != n_jobs:
        what = "but only" if num_lines < n_jobs else "but"
        raise InvalidInputError(
            f"{name}:{lineno}: header announces {n_jobs} jobs {what} {num_lines} job lines follow; "
            "fix the header's job count or the job lines"
        )


def _check_duration(name: str, lineno: int, duration: int) -> int:
    if duration > MAX_DURATION:
        raise InvalidInputError(
            f"{name}:{lineno}: operation time {duration} is beyond {MAX_DURATION:.0e}; rescale the times"
        )
    return duration


def _data_lines(text: str) -> list[tuple[int, str]]:
    """Non-empty lines that are not comments (#), with their 1-based line numbers."""
    return [
        (i + 1, ln)
        for i, ln in enumerate(text.splitlines())
        if ln.strip() and not ln.lstrip().startswith("#")
    ]


def parse_jobshop(text: str, name: str = "<text>") -> FjspInstance:
    """OR-Library job shop: ``jobs machines``, then one line per job of ``machine time`` pairs
    (machines 0-based, every job visits the machines in the order given)."""
    lines = _data_lines(text)
    if not lines:
        raise InvalidInputError(f"{name}: empty file; expected a first line 'jobs machines'")
    lineno, head = lines[0]
    nums = _numbers(name, lineno, head)
    if len(nums) < 2:
        raise InvalidInputError(f"{name}:{lineno}: first line must be 'jobs machines', got {head.strip()!r}")
    n_jobs, n_machines = nums[0], nums[1]
    if len(nums) > 2:
        raise InvalidInputError(
            f"{name}:{lineno}: first line must be 'jobs machines', got {len(nums)} numbers {head.strip()!r}"
        )
    _header(name, lineno, n_jobs, n_machines, len(lines) - 1)
    jobs = []
    for j in range(n_jobs):
        lineno, line = lines[1 + j]
        vals = _numbers(name, lineno, line)
        if len(vals) % 2:
            raise InvalidInputError(
                f"{name}:{lineno}: job {j} has an odd count of numbers ({len(vals)}); expected machine time pairs"
            )
        ops = []
        for k in range(0, len(vals), 2):
            machine, duration = vals[k], _check_duration(name, lineno, vals[k + 1])
            if machine >= n_machines:
                raise InvalidInputError(
                    f"{name}:{lineno}: job {j} uses machine {machine}, but machines are 0..{n_machines - 1}"
                )
            ops.append(((machine, duration),))
        jobs.append(tuple(ops))
    return FjspInstance(name=name, num_machines=n_machines, jobs=tuple(jobs))


def parse_fjs(text: str, name: str = "<text>") -> FjspInstance:
    """Flexible job shop (.fjs): ``jobs machines [average flexibility]``, then per job: the count of
    operations and, per operation, the count of eligible machines followed by 1-based machine and
    time pairs."""
    lines = _data_lines(text)
    if not lines:
        raise InvalidInputError(f"{name}: empty file; expected a first line 'jobs machines flexibility'")
    lineno, head = lines[0]
    try:
        fields = [float(x) for x in head.split()]
    except ValueError:
        raise InvalidInputError(
            f"{name}:{lineno}: first line must be 'jobs machines [flexibility]'"
        ) from None
    if len(fields) < 2 or fields[0] != int(fields[0]) or fields[1] != int(fields[1]):
        raise InvalidInputError(
            f"{name}:{lineno}: first line must be 'jobs machines [flexibility]', got {head.strip()!r}"
        )
    if not all(math.isfinite(f) for f in fields):
        raise InvalidInputError(f"{name}:{lineno}: first line must hold finite numbers, got {head.strip()!r}")
    n_jobs, n_machines = int(fields[0]), int(fields[1])
    _header(name, lineno, n_jobs, n_machines, len(lines) - 1)
    jobs = []
    for j in range(n_jobs):
        lineno, line = lines[1 + j]
        vals = _numbers(name, lineno, line)
        pos = 0

        def take(what: str, j: int = j, lineno: int = lineno, vals: list[int] = vals) -> int:
            nonlocal pos
            if pos >= len(vals):
                raise InvalidInputError(f"{name}:{lineno}: job {j} ends early, expected {what}")
            pos += 1
            return vals[pos - 1]

        n_ops = take("the number of operations")
        ops = []
        for o in range(n_ops):
            k = take(f"the machine count of operation {o}")
            if k == 0:
                raise InvalidInputError(f"{name}:{lineno}: job {j} operation {o} has no eligible machine")
            alts = []
            for _ in range(k):
                machine = take(f"a machine of operation {o}")
                duration = _check_duration(
                    name, lineno, take(f"the time of operation {o} on machine {machine}")
                )
                if not 1 <= machine <= n_machines:
                    raise InvalidInputError(
                        f"{name}:{lineno}: job {j} operation {o} uses machine {machine}, machines are 1..{n_machines}"
                    )
                alts.append((machine - 1, duration))
            ops.append(tuple(alts))
        if pos != len(vals):
            raise InvalidInputError(
                f"{name}:{lineno}: job {j} has {len(vals) - pos} extra numbers after its {n_ops} operations"
            )
        jobs.append(tuple(ops))
    return FjspInstance(name=name, num_machines=n_machines, jobs=tuple(jobs))


def read_instance(path: str | Path) -> FjspInstance:
    """Read ``.fjs`` files as flexible job shops and anything else as OR-Library job shops."""
    path = Path(path)
    if not path.exists():
        raise InvalidInputError(f"{path}: no such file")
    text = path.read_text()
    if path.suffix.lower() == ".fjs":
        return parse_fjs(text, str(path))
    return parse_jobshop(text, str(path))


# ---------------------------------------------------------------------------- model and solve


def fjsp_model(instance: FjspInstance) -> TaskModel:
    """The task model of a job shop: one task and one placement group per operation."""
    tasks: list[Task] = []
    groups: list[Group] = []
    arcs: list[Arc] = []
    for j, job in enumerate(instance.jobs):
        prev = None
        for o, alts in enumerate(job):
            idx = len(tasks)
            # alternatives on the same machine: keep the fastest
            best: dict[int, int] = {}
            for m, t in alts:
                best[m] = min(t, best.get(m, t))
            durs = tuple(sorted(best.items()))
            groups.append(Group(index=idx, name=f"J{j}O{o}", devices=tuple(m for m, _ in durs)))
            tasks.append(Task(index=idx, key=(j, "O", o), group=idx, durations=durs))
            if prev is not None:
                arcs.append(Arc(src=prev, dst=idx))
            prev = idx
    return TaskModel(
        tick=1.0,
        exact_time=True,
        mem_quantum=1.0,
        num_devices=instance.num_machines,
        tasks=tuple(tasks),
        groups=tuple(groups),
        arcs=tuple(arcs),
        capacity=tuple(None for _ in range(instance.num_machines)),
        name=instance.name,
    )


def solve_instance(
    instance: FjspInstance,
    *,
    time_limit_s: float = 30.0,
    workers: int = 2,
    deterministic: bool = False,
    progress: object | None = None,
) -> FjspResult:
    """Solve a job-shop instance with CP-SAT, warm-started by list scheduling."""
    from parplan.solve.cpsat import CpSatBackend

    t0 = time.perf_counter()
    model = fjsp_model(instance)
    if not model.tasks:
        return FjspResult(makespan=0, lower_bound=0, status="optimal", time_s=0.0, assignment=())
    warm = best_heuristic(model, rules=("critical-path",))
    cap = warm[1].makespan(model) if warm else None
    backend = CpSatBackend(model, BackendOptions(max_makespan=cap))
    if warm is not None:
        backend.add_hint(warm[1])
    res = backend.solve(
        time_limit_s=time_limit_s,
        workers=workers,
        deterministic=deterministic,
        progress=progress,  # type: ignore[arg-type]
    )
    sol: Assignment | None = res.assignment
    if sol is None or (warm is not None and warm[1].makespan(model) < sol.makespan(model)):
        sol = warm[1] if warm else None
    if sol is None:
        raise NoSolutionError(
            f"{instance.name}: no schedule found in {time_limit_s:g} s ({len(model.tasks)} operations); raise --time-limit"
        )
    bound = max(lower_bounds(model).best, res.bound or 0)
    makespan = sol.makespan(model)
    ops = tuple(
        ScheduledOperation(
            job=t.key[0],
            operation=t.key[2],
            machine=sol.device[t.index],
            start=sol.start[t.index],
            end=sol.end(model, t.index),
        )
        for t in model.tasks
    )
    return FjspResult(
        makespan=makespan,
        lower_bound=min(bound, makespan),
        status="optimal" if res.status == "optimal" or bound >= makespan else "feasible",
        time_s=time.perf_counter() - t0,
        assignment=ops,
    )


def solve_fjsp(
    path: str | Path,
    *,
    time_limit_s: float = 30.0,
    workers: int = 2,
    deterministic: bool = False,
    progress: object | None = None,
) -> FjspResult:
    """Read and solve a job-shop file (``.fjs`` or OR-Library format).

    Parameters
    ----------
    path
        The instance file.
    time_limit_s, workers, deterministic
        CP-SAT limits; deterministic runs one worker with a fixed seed.
    progress
        Optional callable receiving ``Progress`` reports.
    """
    return solve_instance(
        read_instance(path),
        time_limit_s=time_limit_s,
        workers=workers,
        deterministic=deterministic,
        progress=progress,
    )


__all__ = ["FjspInstance", "FjspResult", "Progress", "ScheduledOperation", "read_instance", "solve_fjsp"]
