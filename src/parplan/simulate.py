"""Event-driven simulation of any schedule, metrics, memory curves, and the independent validator.

The simulator turns per-device action orders into timed actions: an action starts when its device
is free and all its dependencies have ended (plus the communication time of every cross-device
edge). The validator re-checks any timed plan (ours, a solver's, or a hand-edited file) against the
problem without trusting how it was produced. Neither imports a solver.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from parplan.errors import InvalidInputError
from parplan.numeric import TOL, close, leq, lt
from parplan.problem import PipelineProblem
from parplan.schedule.ir import Action, Schedule

#: Relative tolerance used when comparing times and memory (the project's one tolerance).
EPS = TOL


class DeadlockError(InvalidInputError):
    """A schedule whose devices wait on each other forever."""


@dataclass(frozen=True, slots=True, kw_only=True)
class TimedAction:
    """An action placed in time on a device."""

    device: int
    action: Action
    start: float
    end: float

    def __str__(self) -> str:
        return f"{self.action}@d{self.device}[{self.start:g},{self.end:g})"


@dataclass(frozen=True, slots=True, kw_only=True)
class Metrics:
    """Timing and memory metrics of a timed plan (definitions in DESIGN.md)."""

    makespan: float
    bubble_ratio: float
    busy_per_device: tuple[float, ...]
    idle_per_device: tuple[float, ...]
    span_idle_per_device: tuple[float, ...]
    peak_memory_per_device: tuple[float, ...]
    lower_bound: float | None = None
    gap: float | None = None

    def with_bound(self, lower_bound: float | None) -> Metrics:
        """A copy carrying a lower bound on the makespan and the relative gap to it."""
        gap = None
        if lower_bound is not None and self.makespan > 0:
            gap = max(0.0, (self.makespan - lower_bound) / self.makespan)
        return Metrics(
            makespan=self.makespan,
            bubble_ratio=self.bubble_ratio,
            busy_per_device=self.busy_per_device,
            idle_per_device=self.idle_per_device,
            span_idle_per_device=self.span_idle_per_device,
            peak_memory_per_device=self.peak_memory_per_device,
            lower_bound=lower_bound,
            gap=gap,
        )

    def to_json(self) -> dict[str, object]:
        return {
            "makespan": self.makespan,
            "bubble_ratio": self.bubble_ratio,
            "busy_per_device": list(self.busy_per_device),
            "idle_per_device": list(self.idle_per_device),
            "span_idle_per_device": list(self.span_idle_per_device),
            "peak_memory_per_device": list(self.peak_memory_per_device),
            "lower_bound": self.lower_bound,
            "gap": self.gap,
        }


# ---------------------------------------------------------------------------- durations & deps


def duration(problem: PipelineProblem, device: int, action: Action) -> float:
    """Duration of ``action`` on ``device``; a fused FB action takes the FB time of its forward
    part's stage (or the sum of its parts when that stage gives no FB time)."""
    if not action.is_fused:
        return problem.stages[action.stage].cost_on(device).of(action.kind)
    parts = action.parts
    fwd = next((p for p in parts if p.kind == "F"), parts[0])
    fb = problem.stages[fwd.stage].cost_on(device).FB
    if fb is not None:
        return float(fb)
    return sum(problem.stages[p.stage].cost_on(device).of(p.kind) for p in parts)


# A dependency key names an event: ("F", stage, mb) = forward done; ("Bin", stage, mb) = input
# gradient done (by I or B); ("I", stage, mb) = the I pass done (W needs the I pass itself).
DepKey = tuple[str, int, int]


def _completes(action: Action) -> list[DepKey]:
    keys: list[DepKey] = []
    for p in action.plain():
        if p.kind == "F":
            keys.append(("F", p.stage, p.microbatch))
        elif p.kind == "B":
            keys.append(("Bin", p.stage, p.microbatch))
        elif p.kind == "I":
            keys.append(("Bin", p.stage, p.microbatch))
            keys.append(("I", p.stage, p.microbatch))
    return keys


def dependencies(problem: PipelineProblem, action: Action) -> list[tuple[DepKey, float, int]]:
    """What a plain action waits for: (event, communication delay if cross-device, producer stage).

    F(s,j) waits for F(p,j) of every producer p of s; I/B(s,j) for F(s,j) and I/B(c,j) of every
    consumer c; W(s,j) for I(s,j).
    """
    s, j = action.stage, action.microbatch
    if action.kind == "F":
        return [(("F", e.src, j), e.comm, e.src) for e in problem.mb_preds(j, s)]
    if action.kind in ("I", "B"):
        deps: list[tuple[DepKey, float, int]] = [(("F", s, j), 0.0, s)]
        deps += [(("Bin", e.dst, j), e.comm, e.dst) for e in problem.mb_succs(j, s)]
        return deps
    return [(("I", s, j), 0.0, s)]


def _fused_deps(problem: PipelineProblem, action: Action) -> list[tuple[DepKey, float, int]]:
    own = set(_completes(action))
    deps = []
    for p in action.plain():
        deps += [d for d in dependencies(problem, p) if d[0] not in own]
    return deps


def _check_placement(problem: PipelineProblem, schedule: Schedule) -> None:
    if schedule.num_devices != problem.num_devices:
        raise InvalidInputError(
            f"schedule {schedule.name!r}: has {schedule.num_devices} device orders, "
            f"problem has {problem.num_devices} devices"
        )
    for device, action in schedule.actions():
        for p in action.plain():
            if p.stage >= problem.num_stages:
                raise InvalidInputError(f"action {p} on device {device}: no stage {p.stage}")
            if p.microbatch >= problem.num_microbatches:
                raise InvalidInputError(f"action {p} on device {device}: no micro-batch {p.microbatch}")
            where = problem.stages[p.stage].device
            if where is not None and where != device:
                raise InvalidInputError(
                    f"action {p}: stage {p.stage} is placed on device {where}, "
                    f"but the schedule runs it on device {device}"
                )


# ---------------------------------------------------------------------------- simulation


def _check_schedule(problem: PipelineProblem, schedule: Schedule) -> None:
    """Refuse a misplaced, incomplete or duplicated schedule (both simulators start here)."""
    _check_placement(problem, schedule)
    errors = _completeness_errors(problem, [(d, a) for d, a in schedule.actions()])
    if errors:
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise InvalidInputError(f"schedule {schedule.name!r}: {errors[0]}{more}")


def _deps_lookup(problem: PipelineProblem) -> Callable[[Action], list[tuple[DepKey, float, int]]]:
    """``deps_of(action)``: what an action (plain or fused) waits for, computed once per action."""
    cache: dict[Action, list[tuple[DepKey, float, int]]] = {}

    def deps_of(action: Action) -> list[tuple[DepKey, float, int]]:
        if action not in cache:
            cache[action] = _fused_deps(problem, action) if action.is_fused else dependencies(problem, action)
        return cache[action]

    return deps_of


def simulate(problem: PipelineProblem, schedule: Schedule) -> tuple[TimedAction, ...]:
    """Time every action of ``schedule`` on ``problem`` (as-soon-as-possible in each device's order).

    Raises
    ------
    InvalidInputError
        When an action is misplaced or the schedule is incomplete or has duplicates.
    DeadlockError
        When devices wait on each other; the message names the waiting actions and what they wait for.
    """
    _check_schedule(problem, schedule)
    done: dict[DepKey, tuple[float, int]] = {}  # event -> (end time, device)
    heads = [0] * problem.num_devices
    free_at = [0.0] * problem.num_devices
    timed: list[TimedAction] = []
    waiting: dict[DepKey, list[int]] = defaultdict(list)
    ready = list(range(problem.num_devices))
    deps_of = _deps_lookup(problem)

    while ready:
        device = ready.pop()
        order = schedule.orders[device]
        while heads[device] < len(order):
            action = order[heads[device]]
            start = free_at[device]
            missing = None
            for key, comm, _src_stage in deps_of(action):
                if key not in done:
                    missing = key
                    break
                end, src_dev = done[key]
                # where the producer actually ran (placement may be left to the schedule)
                delay = comm if src_dev != device else 0.0
                start = max(start, end + delay)
            if missing is not None:
                waiting[missing].append(device)
                break
            end = start + duration(problem, device, action)
            timed.append(TimedAction(device=device, action=action, start=start, end=end))
            free_at[device] = end
            heads[device] += 1
            for key in _completes(action):
                done[key] = (end, device)
                ready.extend(waiting.pop(key, ()))
    stuck = [d for d in range(problem.num_devices) if heads[d] < len(schedule.orders[d])]
    if stuck:
        raise DeadlockError(_deadlock_message(problem, schedule, heads, stuck, done, deps_of))
    return tuple(sorted(timed, key=lambda t: (t.start, t.device)))


def simulate_shared(
    problem: PipelineProblem,
    schedule: Schedule,
    slowdown: Callable[[int], float],
    processes_per_device: int = 1,
) -> tuple[TimedAction, ...]:
    """Time ``schedule`` when its devices are processes sharing one machine's cores.

    Durations are the work of each action for a process running alone. While ``k`` processes run,
    each advances at ``1 / slowdown(k)`` (``max(1, k / cores)`` is the operating system's fair
    share; a measured curve also has hardware threads and memory bandwidth in it), where each busy
    device stands for ``processes_per_device`` processes (a pipeline stage's data- and
    tensor-parallel ranks run alike). A device waiting on a dependency or a transfer uses no core.
    With ``slowdown`` 1 this is :func:`simulate`.
    """
    _check_schedule(problem, schedule)
    n = problem.num_devices
    heads = [0] * n
    done: dict[DepKey, tuple[float, int]] = {}
    running: dict[int, tuple[Action, float, float]] = {}  # device -> (action, start, work left)
    free_at = [0.0] * n
    timed: list[TimedAction] = []
    deps_of = _deps_lookup(problem)
    t = 0.0

    def ready_time(device: int) -> float | None:
        """When the device's next action may start, or None while a dependency is not done."""
        action = schedule.orders[device][heads[device]]
        start = free_at[device]
        for key, comm, _ in deps_of(action):
            if key not in done:
                return None
            end, src = done[key]
            start = max(start, end + (comm if src != device else 0.0))
        return start

    while True:
        wakes = []
        for d in range(n):
            if d in running or heads[d] >= len(schedule.orders[d]):
                continue
            at = ready_time(d)
            if at is None:
                continue
            if at <= t + EPS * max(1.0, abs(t)):
                action = schedule.orders[d][heads[d]]
                running[d] = (action, t, duration(problem, d, action))
            else:
                wakes.append(at)
        if not running and not wakes:
            break
        rate = 1.0 / slowdown(len(running) * processes_per_device) if running else 1.0
        finish = min((left / rate for _, _, left in running.values()), default=float("inf"))
        step = min(finish, min(wakes, default=float("inf")) - t)
        t += step
        for d in list(running):
            action, start, left = running[d]
            left -= step * rate
            if left <= EPS * max(1.0, step * rate):
                del running[d]
                timed.append(TimedAction(device=d, action=action, start=start, end=t))
                free_at[d] = t
                heads[d] += 1
                for key in _completes(action):
                    done[key] = (t, d)
            else:
                running[d] = (action, start, left)
    stuck = [d for d in range(n) if heads[d] < len(schedule.orders[d])]
    if stuck:
        raise DeadlockError(_deadlock_message(problem, schedule, heads, stuck, done, deps_of))
    return tuple(sorted(timed, key=lambda ta: (ta.start, ta.device)))


def _deadlock_message(problem, schedule, heads, stuck, done, deps_of) -> str:  # type: ignore[no-untyped-def]
    parts = []
    for d in stuck:
        action = schedule.orders[d][heads[d]]
        missing = [k for k, _, _ in deps_of(action) if k not in done]
        names = ", ".join(_key_name(k) for k in missing)
        parts.append(f"device {d} waits at {action} for {names}")
    return f"schedule {schedule.name!r} deadlocks: " + "; ".join(parts)


def _key_name(key: DepKey) -> str:
    kind, stage, mb = key
    return {"F": f"{stage}F{mb}", "Bin": f"{stage}I{mb}/{stage}B{mb}", "I": f"{stage}I{mb}"}[kind]


# ---------------------------------------------------------------------------- memory & metrics


def memory_events(
    problem: PipelineProblem, timed: Iterable[TimedAction]
) -> list[list[tuple[float, float, str]]]:
    """Per device, the (time, delta, action name) activation-memory changes of a timed plan."""
    events: list[list[tuple[float, float, str]]] = [[] for _ in problem.devices]
    for t in timed:
        for p in t.action.plain():
            st = problem.stages[p.stage]
            if p.kind == "F":
                change = (t.start, st.act_mem)
            elif p.kind == "I":
                change = (t.end, -(st.act_mem - st.wgrad_mem))
            elif p.kind == "W":
                change = (t.end, -st.wgrad_mem)
            else:
                change = (t.end, -st.act_mem)
            events[t.device].append((*change, str(p)))
    return events


def static_memory(problem: PipelineProblem, device: int, timed: Iterable[TimedAction] = ()) -> float:
    """Parameters, gradients and optimizer state held by ``device``: its stages' ``param_mem``.

    For unplaced problems, the stages are those the timed actions run on the device."""
    stages = set(problem.stages_on(device))
    stages |= {p.stage for t in timed if t.device == device for p in t.action.plain()}
    return sum(problem.stages[s].param_mem for s in stages)


def memory_curves(problem: PipelineProblem, timed: Sequence[TimedAction]) -> list[list[tuple[float, float]]]:
    """Per device, the step curve [(time, memory after the changes at that time)], static included.

    At equal times releases come before allocations (a buffer freed at t can be reused at t)."""
    curves = []
    for device, evs in enumerate(memory_events(problem, timed)):
        level = static_memory(problem, device, timed)
        curve = [(0.0, level)]
        for time, delta, _ in sorted(evs, key=lambda e: (e[0], e[1])):
            level += delta
            if curve and abs(curve[-1][0] - time) <= EPS * max(1.0, abs(time)):
                curve[-1] = (curve[-1][0], level)
            else:
                curve.append((time, level))
        curves.append(curve)
    return curves


def peak_memory(problem: PipelineProblem, timed: Sequence[TimedAction]) -> tuple[float, ...]:
    """Per device, the highest memory level reached, counting transients within one instant."""
    peaks = []
    for device, evs in enumerate(memory_events(problem, timed)):
        level = static_memory(problem, device, timed)
        peak = level
        for _, delta, _ in sorted(evs, key=lambda e: (e[0], e[1])):
            level += delta
            peak = max(peak, level)
        peaks.append(peak)
    return tuple(peaks)


def compute_metrics(problem: PipelineProblem, timed: Sequence[TimedAction]) -> Metrics:
    """Makespan, bubble ratio, idle and span idle per device, and peak memory per device."""
    n = problem.num_devices
    if not timed:
        zeros = tuple(0.0 for _ in range(n))
        return Metrics(
            makespan=0.0,
            bubble_ratio=0.0,
            busy_per_device=zeros,
            idle_per_device=zeros,
            span_idle_per_device=zeros,
            peak_memory_per_device=peak_memory(problem, timed),
        )
    first = min(t.start for t in timed)
    makespan = max(t.end for t in timed) - first
    busy = [0.0] * n
    lo = [float("inf")] * n
    hi = [float("-inf")] * n
    for t in timed:
        busy[t.device] += t.end - t.start
        lo[t.device] = min(lo[t.device], t.start)
        hi[t.device] = max(hi[t.device], t.end)
    span_idle = tuple((hi[d] - lo[d] - busy[d]) if busy[d] > 0 or hi[d] > lo[d] else 0.0 for d in range(n))
    bubble = 1.0 - sum(busy) / (n * makespan) if makespan > 0 else 0.0
    return Metrics(
        makespan=makespan,
        bubble_ratio=bubble,
        busy_per_device=tuple(busy),
        idle_per_device=tuple(makespan - b for b in busy),
        span_idle_per_device=span_idle,
        peak_memory_per_device=peak_memory(problem, timed),
    )


# ---------------------------------------------------------------------------- validator


@dataclass(frozen=True, slots=True, kw_only=True)
class Violation:
    """One broken rule, naming the action involved."""

    rule: str
    action: str
    message: str

    def __str__(self) -> str:
        return f"[{self.rule}] {self.action}: {self.message}"


def _close(a: float, b: float, scale: float = 1.0) -> bool:
    return close(a, b, scale)


def _completeness_errors(problem: PipelineProblem, actions: Sequence[tuple[int, Action]]) -> list[str]:
    seen: dict[tuple[int, str, int], int] = defaultdict(int)
    errors = []
    for _, a in actions:
        for p in a.plain():
            seen[(p.stage, p.kind, p.microbatch)] += 1
            if not problem.passes(p.microbatch, p.stage):
                errors.append(f"action {p}: micro-batch {p.microbatch} does not pass stage {p.stage}")
            if p.kind in ("I", "W") and not problem.stages[p.stage].cost.is_split:
                errors.append(f"action {p}: stage {p.stage} has no split backward (use B)")
    for key, count in seen.items():
        if count > 1:
            errors.append(f"action {key[0]}{key[1]}{key[2]}: appears {count} times")
    for mb in problem.microbatches:
        for s in mb.stages:
            j = mb.index
            if not seen.get((s, "F", j)):
                errors.append(f"action {s}F{j}: missing")
            b, i, w = seen.get((s, "B", j), 0), seen.get((s, "I", j), 0), seen.get((s, "W", j), 0)
            if b and (i or w):
                errors.append(f"action {s}B{j}: stage {s} micro-batch {j} has both B and I/W")
            elif not b:
                if not i:
                    errors.append(f"action {s}{'I' if problem.split_backward else 'B'}{j}: missing")
                if i and not w:
                    errors.append(f"action {s}W{j}: missing")
                if w and not i:
                    errors.append(f"action {s}I{j}: missing")
    return errors


def validate(
    problem: PipelineProblem,
    timed: Sequence[TimedAction],
    claimed: Metrics | None = None,
) -> list[Violation]:
    """Check a timed plan independently of how it was made; an empty list means valid.

    Rules: ``placement`` (an action runs on its stage's device), ``complete`` (every pass of every
    micro-batch exactly once), ``duration`` (end - start equals the cost), ``precedence`` (data
    dependencies plus communication), ``overlap`` (one action at a time per device), ``memory``
    (peak under the device limit), ``metrics`` (claimed metrics equal recomputed ones).
    """
    out: list[Violation] = []
    scale = max((t.end for t in timed), default=1.0)
    for t in timed:
        if not 0 <= t.device < problem.num_devices:
            out.append(Violation(rule="placement", action=str(t.action), message=f"no device {t.device}"))
            return out
        for p in t.action.plain():
            if not (0 <= p.stage < problem.num_stages and 0 <= p.microbatch < problem.num_microbatches):
                out.append(Violation(rule="complete", action=str(p), message="no such stage or micro-batch"))
                return out
            where = problem.stages[p.stage].device
            if where is not None and where != t.device:
                out.append(
                    Violation(
                        rule="placement",
                        action=str(p),
                        message=f"stage {p.stage} is on device {where}, action runs on device {t.device}",
                    )
                )
    for msg in _completeness_errors(problem, [(t.device, t.action) for t in timed]):
        name, _, rest = msg.partition(": ")
        out.append(Violation(rule="complete", action=name.removeprefix("action "), message=rest))

    # duration
    for t in timed:
        want = duration(problem, t.device, t.action)
        if not _close(t.end - t.start, want, scale):
            out.append(
                Violation(
                    rule="duration",
                    action=str(t.action),
                    message=f"lasts {t.end - t.start:g} but its cost on device {t.device} is {want:g}",
                )
            )
    # precedence
    ends: dict[DepKey, tuple[float, int]] = {}
    for t in timed:
        for key in _completes(t.action):
            ends[key] = (t.end, t.device)
    for t in timed:
        deps = _fused_deps(problem, t.action) if t.action.is_fused else dependencies(problem, t.action)
        for key, comm, _src in deps:
            if key not in ends:
                continue  # reported as incomplete
            end, dev = ends[key]
            ready = end + (comm if dev != t.device else 0.0)
            if lt(t.start, ready, scale):
                out.append(
                    Violation(
                        rule="precedence",
                        action=str(t.action),
                        message=f"starts at {t.start:g} before {_key_name(key)} is available at {ready:g}"
                        + (f" (ends {end:g} + communication {comm:g})" if dev != t.device and comm else ""),
                    )
                )
    # overlap
    by_device: dict[int, list[TimedAction]] = defaultdict(list)
    for t in timed:
        by_device[t.device].append(t)
    for d, items in by_device.items():
        items.sort(key=lambda t: (t.start, t.end))
        for a, b in itertools.pairwise(items):
            if lt(b.start, a.end, scale):
                out.append(
                    Violation(
                        rule="overlap",
                        action=str(b.action),
                        message=f"starts at {b.start:g} on device {d} while {a.action} runs until {a.end:g}",
                    )
                )
    # memory
    peaks = peak_memory(problem, timed)
    for spec, peak in zip(problem.devices, peaks):
        if spec.memory_limit is not None and not leq(peak, spec.memory_limit):
            culprit = _first_over_limit(problem, timed, spec.index, spec.memory_limit)
            out.append(
                Violation(
                    rule="memory",
                    action=culprit,
                    message=f"device {spec.index} reaches {_mem(problem, peak)} > memory limit "
                    f"{_mem(problem, spec.memory_limit)}",
                )
            )
    # claimed metrics
    if claimed is not None and not out:
        real = compute_metrics(problem, timed)
        if not _close(claimed.makespan, real.makespan, scale):
            out.append(
                Violation(
                    rule="metrics",
                    action="plan",
                    message=f"claims makespan {claimed.makespan:g}, is {real.makespan:g}",
                )
            )
        if not _close(claimed.bubble_ratio, real.bubble_ratio):
            out.append(
                Violation(
                    rule="metrics",
                    action="plan",
                    message=f"claims bubble ratio {claimed.bubble_ratio:g}, is {real.bubble_ratio:g}",
                )
            )
        for d, (c, r) in enumerate(zip(claimed.peak_memory_per_device, real.peak_memory_per_device)):
            if not _close(c, r, max(abs(r), 1.0)):
                out.append(
                    Violation(
                        rule="metrics",
                        action="plan",
                        message=f"claims peak memory {c:g} on device {d}, is {r:g}",
                    )
                )
        if claimed.lower_bound is not None and not leq(claimed.lower_bound, real.makespan, scale):
            out.append(
                Violation(
                    rule="metrics",
                    action="plan",
                    message=f"claims lower bound {claimed.lower_bound:g} above its own makespan {real.makespan:g}",
                )
            )
    return out


def _mem(problem: PipelineProblem, value: float) -> str:
    """A memory amount in the problem's unit (GiB for bytes)."""
    return f"{value / 2**30:.2f} GiB" if problem.memory_unit == "bytes" else f"{value:g}"


def _first_over_limit(
    problem: PipelineProblem, timed: Sequence[TimedAction], device: int, limit: float
) -> str:
    """The action whose allocation first pushes ``device`` over ``limit``."""
    level = static_memory(problem, device, timed)
    if level > limit:
        return f"device {device} static memory"
    evs = memory_events(problem, timed)[device]
    for _, delta, name in sorted(evs, key=lambda e: (e[0], e[1])):
        level += delta
        if not leq(level, limit):
            return name
    return f"device {device}"
