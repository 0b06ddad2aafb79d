"""Built-in expert pipeline schedules as pure functions of integers, and their registry.

Every generator here takes only counts (devices, micro-batches, chunks) and returns per-device
action orders in the stage numbering of ``parplan.synthetic``; nothing here knows about time, costs
or runtime objects. Schedules that adapt to the costs and the memory limit (``zb-auto``, in its
own module) are registered with a builder of the whole problem instead. ``build_schedule`` checks a
problem against a schedule's preconditions and returns the schedule; the simulator
(``parplan.simulate``) gives it times.
"""

from __future__ import annotations

import difflib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from parplan.errors import InternalError, InvalidInputError
from parplan.problem import PipelineProblem
from parplan.schedule.ir import Action, B, F, I, Schedule, W
from parplan.schedule.v_shape import v_half, v_min
from parplan.schedule.zb_auto import zb_auto

Orders = list[list[Action]]


# ---------------------------------------------------------------------------- linear placement


def gpipe(num_devices: int, num_microbatches: int) -> Orders:
    """GPipe: every forward, then every full backward, in micro-batch order (stage s on device s)."""
    p, m = num_devices, num_microbatches
    return [[F(d, j) for j in range(m)] + [B(d, j) for j in range(m)] for d in range(p)]


def one_f_one_b(num_devices: int, num_microbatches: int) -> Orders:
    """1F1B: p-d-1 warm-up forwards on device d, then alternate one forward and one full backward."""
    p, m = num_devices, num_microbatches
    orders: Orders = []
    for d in range(p):
        warmup = min(p - d - 1, m)
        order = [F(d, j) for j in range(warmup)]
        fwd, bwd = warmup, 0
        while fwd < m:
            order += [F(d, fwd), B(d, bwd)]
            fwd, bwd = fwd + 1, bwd + 1
        order += [B(d, j) for j in range(bwd, m)]
        orders.append(order)
    return orders


def interleaved_1f1b(num_devices: int, num_microbatches: int, chunks: int) -> Orders:
    """Megatron's interleaved 1F1B: V chunks per device, stage c*p+d on device d.

    Micro-batches go through the chunks in groups of p (Megatron needs m to be a multiple of p);
    device d warms up with (p-d-1)*2 + (V-1)*p forwards, then alternates one forward and one
    full backward. Bubble (p-1)(F+B)/V per device.
    """
    p, m, v = num_devices, num_microbatches, chunks
    total = m * v

    def fwd_task(d: int, k: int) -> Action:
        chunk = (k // p) % v
        return F(chunk * p + d, (k // (p * v)) * p + k % p)

    def bwd_task(d: int, k: int) -> Action:
        chunk = v - 1 - (k // p) % v
        return B(chunk * p + d, (k // (p * v)) * p + k % p)

    orders: Orders = []
    for d in range(p):
        warmup = min((p - d - 1) * 2 + (v - 1) * p, total)
        order = [fwd_task(d, k) for k in range(warmup)]
        fwd, bwd = warmup, 0
        while fwd < total:
            order += [fwd_task(d, fwd), bwd_task(d, bwd)]
            fwd, bwd = fwd + 1, bwd + 1
        order += [bwd_task(d, k) for k in range(bwd, total)]
        orders.append(order)
    return orders


def zb_h1(num_devices: int, num_microbatches: int) -> Orders:
    """ZB-H1 (Qi et al. 2024): 1F1B with the backward split into I and W, W deferred into bubbles.

    Device d keeps at most d weight passes pending in the steady phase, so its in-flight activations
    stay at p (as 1F1B) while the cool-down bubbles are filled with W: idle (p-1)(F+I-W).
    """
    p, m = num_devices, num_microbatches
    orders: Orders = []
    for d in range(p):
        warmup = min(p - d - 1, m)
        order = [F(d, j) for j in range(warmup)]
        pending: deque[int] = deque()
        fwd, bwd = warmup, 0
        while fwd < m:
            order += [F(d, fwd), I(d, bwd)]
            pending.append(bwd)
            fwd, bwd = fwd + 1, bwd + 1
            if len(pending) > d:
                order.append(W(d, pending.popleft()))
        while bwd < m:
            order.append(I(d, bwd))
            pending.append(bwd)
            bwd += 1
            if pending:
                order.append(W(d, pending.popleft()))
        order += [W(d, j) for j in pending]
        orders.append(order)
    return orders


def zb_h2(num_devices: int, num_microbatches: int) -> Orders:
    """ZB-H2 (Qi et al. 2024): 2p-1 activations on device 0, W passes pushed into the tail.

    Built by the unit-time list schedule of the paper's heuristic with a budget of 2p-1 in-flight
    micro-batches per device (a ready I first, then F under budget, else the oldest W): device d
    warms up with 2(p-d)-1 forwards. Span idle (p-1)(F+I-2W) per device when F+I >= 2W.
    """
    p, m = num_devices, num_microbatches
    return _greedy_chain(p, m, list(range(p)), budget=2 * p - 1)


# ---------------------------------------------------------------------------- V placement


def zb_v(num_devices: int, num_microbatches: int) -> Orders:
    """ZB-V (Qi et al., "Pipeline parallelism with controllable memory"): V placement, 1F1B memory.

    Device d holds stage d (chunk 0) and stage 2p-1-d (chunk 1). Warm-up: 2(p-d)-1 forwards of
    chunk 0, then d pairs (F1, F0), then p-d triples (F1, I1, W1). Steady: F0, I0, W0, F1, I1, W1.
    Cool-down: d pairs (I0, I1), p-d pairs (I0, W0), then the pending W of chunk 1 and chunk 0.
    Needs m >= 2p-1; peak 2p stage activations (1F1B's p full-model ones), idle (p-1)max(F, I)
    per device.
    """
    p, m = num_devices, num_microbatches
    return [_zb_v_device(p, m, d) for d in range(p)]


def _zb_v_device(p: int, m: int, d: int) -> list[Action]:
    """The ZB-V order of device ``d``; ``run("F0", ...)`` appends the next pass of a chunk."""
    stage = (d, 2 * p - 1 - d)
    nxt = {"F0": 0, "F1": 0, "I0": 0, "I1": 0, "W0": 0, "W1": 0}
    order: list[Action] = []
    make = {"F": F, "I": I, "W": W}

    def run(*names: str) -> None:
        for name in names:
            order.append(make[name[0]](stage[int(name[1])], nxt[name]))
            nxt[name] += 1

    for _ in range(2 * (p - d) - 1):
        run("F0")
    for _ in range(d):
        run("F1", "F0")
    for _ in range(p - d):
        run("F1", "I1", "W1")
    while nxt["F1"] < nxt["F0"] or nxt["F0"] < m:
        if nxt["F0"] < m:
            run("F0")
        run("I0", "W0", "F1", "I1", "W1")
    for _ in range(d):
        run("I0", "I1")
    for _ in range(p - d):
        run("I0", "W0")
    while nxt["W1"] < nxt["I1"]:
        run("W1")
    while nxt["W0"] < nxt["I0"]:
        run("W0")
    return order


def _greedy_chain(p: int, m: int, device_of: list[int], *, budget: int) -> Orders:
    """Unit-time greedy list schedule of a chain of stages (one action per device per tick)."""
    n = len(device_of)
    own = [sorted((s for s in range(n) if device_of[s] == d), reverse=True) for d in range(p)]
    f_done: dict[tuple[int, int], int] = {}  # (stage, mb) -> tick it ends
    i_done: dict[tuple[int, int], int] = {}
    next_f = [0] * n  # next micro-batch to forward per stage
    next_i = [0] * n
    pending_w: list[deque[tuple[int, int]]] = [deque() for _ in range(p)]
    held = [0] * p  # activations held (F done, W not done) per device
    orders: Orders = [[] for _ in range(p)]
    remaining = 3 * n * m
    tick = 0
    while remaining:
        picks: list[tuple[int, Action]] = []
        for d in range(p):
            choice: Action | None = None
            # a ready backward-input first, the later stage first (it is on the critical path)
            for s in own[d]:
                j = next_i[s]
                forward_done = j < m and f_done.get((s, j), tick + 1) <= tick
                if forward_done and (s == n - 1 or i_done.get((s + 1, j), tick + 1) <= tick):
                    choice = I(s, j)
                    break
            if choice is None and held[d] < budget:
                for s in own[d]:
                    j = next_f[s]
                    if j < m and (s == 0 or f_done.get((s - 1, j), tick + 1) <= tick):
                        choice = F(s, j)
                        break
            if choice is None and pending_w[d]:
                s, j = pending_w[d].popleft()
                choice = W(s, j)
            if choice is not None:
                picks.append((d, choice))
        if not picks:
            raise InternalError(f"greedy schedule stuck at tick {tick} (p={p}, m={m}, budget={budget})")
        for d, a in picks:
            orders[d].append(a)
            remaining -= 1
            if a.kind == "F":
                f_done[(a.stage, a.microbatch)] = tick + 1
                next_f[a.stage] += 1
                held[d] += 1
            elif a.kind == "I":
                i_done[(a.stage, a.microbatch)] = tick + 1
                next_i[a.stage] += 1
                pending_w[d].append((a.stage, a.microbatch))
            else:
                held[d] -= 1
        tick += 1
    return orders


# ---------------------------------------------------------------------------- DualPipe family


class _Phases:
    """Per-device FIFO bookkeeping of DualPipe's two phases (forward, backward and W queues)."""

    def __init__(self, phases: tuple[tuple[int, list[int]], tuple[int, list[int]]]) -> None:
        self.stage = (phases[0][0], phases[1][0])
        self.fwd = [deque(phases[0][1]), deque(phases[1][1])]
        self.bwd = [deque(phases[0][1]), deque(phases[1][1])]
        self.weights: deque[Action] = deque()
        self.order: list[Action] = []

    def f(self, phase: int) -> Action:
        return F(self.stage[phase], self.fwd[phase].popleft())

    def b(self, phase: int, zero_bubble: bool = False) -> Action:
        j = self.bwd[phase].popleft()
        if zero_bubble:
            self.weights.append(W(self.stage[phase], j))
            return I(self.stage[phase], j)
        return B(self.stage[phase], j)

    def w(self) -> Action:
        return self.weights.popleft()

    def run(self, *actions: Action) -> None:
        self.order.extend(actions)

    def fused(self, f_phase: int, b_phase: int) -> None:
        fwd = self.f(f_phase)
        self.order.append(Action.fused(fwd, self.b(b_phase)))


def _dualpipe_steps(
    ph: _Phases, *, n_pre: int, n_post: int, n_main: int, unfused_first: bool, zb_parity: int
) -> None:
    """The eight steps shared by DualPipe and DualPipeV (DeepSeek's reference order).

    ``n_pre`` is the count of steps 1 (doubled), 3, 5, 7; ``n_post`` of steps 2, 6, 8.
    """
    for _ in range(2 * n_pre):  # step 1: F0
        ph.run(ph.f(0))
    for _ in range(n_post):  # step 2: F0 F1
        ph.run(ph.f(0))
        ph.run(ph.f(1))
    for _ in range(n_pre):  # step 3: I1 W F1 (zero bubble)
        ph.run(ph.b(1, zero_bubble=True))
        ph.run(ph.w())
        ph.run(ph.f(1))
    for i in range(n_main):  # step 4: F0&B1 F1&B0
        if i == 0 and unfused_first:
            # the reference does not overlap this pair on the turning ranks: it shortens the bubble
            ph.run(ph.f(0))
            ph.run(ph.b(1))
        else:
            ph.fused(0, 1)
        ph.fused(1, 0)
    for _ in range(n_pre):  # step 5: B1 F1&B0
        ph.run(ph.b(1))
        ph.fused(1, 0)
    zb = False
    for i in range(n_post):  # step 6: B1 B0, the second half with zero bubble
        if i == n_post // 2 and zb_parity % 2 == 1:
            zb = True
        ph.run(ph.b(1, zero_bubble=zb))
        if i == n_post // 2 and zb_parity % 2 == 0:
            zb = True
        ph.run(ph.b(0, zero_bubble=zb))
    for _ in range(n_pre):  # step 7: W I0
        ph.run(ph.w())
        ph.run(ph.b(0, zero_bubble=True))
    while ph.weights:  # step 8: W
        ph.run(ph.w())


def dualpipe(num_devices: int, num_microbatches: int) -> Orders:
    """DualPipe (DeepSeek-V3): two opposite pipelines, forward of one overlapped with backward of
    the other.

    Bidirectional placement: stage d (down) and stage 2p-1-d (up) on device d; micro-batches
    0..m/2-1 flow down, the rest up. On device r, phase 0 is the direction whose first stage is on
    the nearer end. Needs p even and m >= 2p, m even. Idle (p/2-1)(F&B+B-3W) on the worst (middle)
    devices, peak p+1 activations per device.
    """
    p, m = num_devices, num_microbatches
    half_p, half_m = p // 2, m // 2
    down = list(range(half_m))
    up = list(range(half_m, m))
    orders: Orders = []
    for r in range(p):
        half_rank = min(r, p - 1 - r)
        near = (r, down) if r < half_p else (2 * p - 1 - r, up)
        far = (2 * p - 1 - r, up) if r < half_p else (r, down)
        ph = _Phases((near, far))
        _dualpipe_steps(
            ph,
            n_pre=half_p - half_rank - 1,
            n_post=half_rank + 1,
            n_main=half_m - p + half_rank + 1,
            unfused_first=r in (half_p - 1, half_p),
            zb_parity=half_rank,
        )
        orders.append(ph.order)
    return orders


def dualpipev(num_devices: int, num_microbatches: int) -> Orders:
    """DualPipeV: DualPipe cut in half, V placement (stages d and 2p-1-d on device d).

    Phase 0 is stage d, phase 1 stage 2p-1-d; all m micro-batches pass all 2p stages. Needs
    m >= 2p. With P = 2p stages: idle (P/2-1)(F&B+B-3W) on the worst device, peak P+1 stage
    activations per device.
    """
    p, m = num_devices, num_microbatches
    everything = list(range(m))
    orders: Orders = []
    for r in range(p):
        ph = _Phases(((r, everything), (2 * p - 1 - r, everything)))
        _dualpipe_steps(
            ph,
            n_pre=p - r - 1,
            n_post=r + 1,
            n_main=m - 2 * p + r + 1,
            unfused_first=r == p - 1,
            zb_parity=r,
        )
        orders.append(ph.order)
    return orders


# ---------------------------------------------------------------------------- registry


@dataclass(frozen=True, slots=True, kw_only=True)
class ScheduleSpec:
    """A built-in schedule: what it is, which placement it needs, and whether it splits backward.

    ``build`` makes the orders from (devices, micro-batches, chunks); a schedule that depends on
    the costs or the memory limit gives ``build_for`` (the whole problem) instead.
    """

    name: str
    description: str
    placement: str
    needs_split_backward: bool
    build: Callable[[int, int, int], Orders] | None = None
    build_for: Callable[[PipelineProblem], Orders] | None = None
    min_microbatches: Callable[[int, int], int] = lambda p, v: 1
    needs_even_devices: bool = False

    def __post_init__(self) -> None:
        if (self.build is None) == (self.build_for is None):
            raise InternalError(f"schedule {self.name}: give exactly one of build and build_for")

    def orders(self, problem: PipelineProblem) -> Orders:
        """The per-device orders of this schedule for ``problem`` (preconditions already checked)."""
        if self.build_for is not None:
            return self.build_for(problem)
        if self.build is None:
            raise InternalError(f"schedule {self.name}: has no builder")
        return self.build(problem.num_devices, problem.num_microbatches, problem.chunks)

    def to_json(self) -> dict[str, object]:
        """The ``parplan schedules --json`` row."""
        return {
            "name": self.name,
            "description": self.description,
            "placement": self.placement,
            "split_backward": self.needs_split_backward,
        }


SCHEDULES: dict[str, ScheduleSpec] = {
    spec.name: spec
    for spec in (
        ScheduleSpec(
            name="gpipe",
            description="all forwards, then all backwards (GPipe)",
            placement="linear",
            needs_split_backward=False,
            build=lambda p, m, v: gpipe(p, m),
        ),
        ScheduleSpec(
            name="1f1b",
            description="one forward one backward after a warm-up (PipeDream-flush / Megatron)",
            placement="linear",
            needs_split_backward=False,
            build=lambda p, m, v: one_f_one_b(p, m),
        ),
        ScheduleSpec(
            name="interleaved-1f1b",
            description="Megatron's interleaved 1F1B, V chunks per device",
            placement="interleaved",
            needs_split_backward=False,
            build=interleaved_1f1b,
        ),
        ScheduleSpec(
            name="zb-h1",
            description="zero-bubble H1: 1F1B memory, W deferred into bubbles (Qi et al. 2024)",
            placement="linear",
            needs_split_backward=True,
            build=lambda p, m, v: zb_h1(p, m),
        ),
        ScheduleSpec(
            name="zb-h2",
            description="zero-bubble H2: 2p-1 activations, almost no bubble (Qi et al. 2024)",
            placement="linear",
            needs_split_backward=True,
            build=lambda p, m, v: zb_h2(p, m),
        ),
        ScheduleSpec(
            name="zb-auto",
            description="zero-bubble automatic greedy for the costs and memory limit (Qi et al. 2024)",
            placement="linear",
            needs_split_backward=True,
            build_for=zb_auto,
        ),
        ScheduleSpec(
            name="zb-v",
            description="zero-bubble V: V placement, 1F1B memory (Qi et al., controllable memory)",
            placement="v",
            needs_split_backward=True,
            build=lambda p, m, v: zb_v(p, m),
            min_microbatches=lambda p, v: 2 * p - 1,
        ),
        ScheduleSpec(
            name="v-min",
            description="V-shape block, about 1/3 of 1F1B's activations (Qi et al., controllable memory)",
            placement="v",
            needs_split_backward=True,
            build=lambda p, m, v: v_min(p, m),
        ),
        ScheduleSpec(
            name="v-half",
            description="V-shape block, about 1/2 of 1F1B's activations (Qi et al., controllable memory)",
            placement="v",
            needs_split_backward=True,
            build=lambda p, m, v: v_half(p, m),
        ),
        ScheduleSpec(
            name="dualpipe",
            description="DeepSeek-V3's bidirectional pipeline with overlapped F&B chunks",
            placement="bidirectional",
            needs_split_backward=True,
            build=lambda p, m, v: dualpipe(p, m),
            min_microbatches=lambda p, v: 2 * p,
            needs_even_devices=True,
        ),
        ScheduleSpec(
            name="dualpipev",
            description="DualPipe cut in half: V placement, overlapped F&B chunks",
            placement="v",
            needs_split_backward=True,
            build=lambda p, m, v: dualpipev(p, m),
            min_microbatches=lambda p, v: 2 * p,
        ),
    )
}


def schedule_names() -> list[str]:
    """Names of the built-in schedules, in registry order."""
    return list(SCHEDULES)


#: Names users know from torch.distributed.pipelining (``get_schedule_class`` keys and class names),
#: Megatron-LM, DeepSpeed and the Zero Bubble paper's code, for built-ins that are the same schedule.
#: Matched after lower-casing and dropping ``-``, ``_`` and spaces (so ``ZB-H1``, ``zb_h1`` work too).
#: Not aliased: torch's InterleavedZeroBubble (ZB-H1 on an interleaved placement) and LoopedBFS
#: (breadth-first over chunks) have no built-in equivalent.
SCHEDULE_ALIASES: dict[str, str] = {
    "schedulegpipe": "gpipe",
    "schedule1f1b": "1f1b",
    "trainschedule": "1f1b",  # DeepSpeed's pipeline schedule
    "scheduleinterleaved1f1b": "interleaved-1f1b",
    "interleaved": "interleaved-1f1b",  # Megatron's virtual pipeline (VPP)
    "vpp": "interleaved-1f1b",
    "1f1binterleaved": "interleaved-1f1b",
    "zb1p": "zb-h1",  # the Zero Bubble paper's code names ZB-H1 / ZB-H2 "ZB-1p" / "ZB-2p"
    "zb2p": "zb-h2",
    "zbvzerobubble": "zb-v",
    "schedulezbvzerobubble": "zb-v",
    "zbv": "zb-v",
    "scheduledualpipev": "dualpipev",
}


def linear_schedule_spec(name: str | None, where: str = "strategy.schedule") -> ScheduleSpec:
    """The built-in schedule ``name`` (default 1f1b) if it runs one stage per device (linear placement).

    Whole-model strategies (the strategy estimate, ``parplan train``) run one pipeline stage per
    rank; interleaved and V schedules need several, and are refused naming the ones that fit.
    """
    canonical = canonical_schedule_name(name or "1f1b")
    spec = SCHEDULES.get(canonical)
    if spec is None or spec.placement != "linear":
        linear = sorted(n for n, sp in SCHEDULES.items() if sp.placement == "linear")
        needs = f"needs the {spec.placement} placement" if spec else "is not a built-in schedule"
        raise InvalidInputError(
            f"{where}: {name!r} {needs}; one stage per pipeline rank runs one of {', '.join(linear)}"
        )
    return spec


def _squash(name: str) -> str:
    return "".join(c for c in name.lower() if c not in "-_ ")


def canonical_schedule_name(name: str) -> str:
    """The built-in schedule ``name`` means: itself, or the built-in of a torch / Megatron alias.

    Raises
    ------
    InvalidInputError
        For a name that is neither, listing the built-ins and the closest names.
    """
    if name in SCHEDULES:
        return name
    key = _squash(name)
    for builtin in SCHEDULES:
        if _squash(builtin) == key:
            return builtin
    if key in SCHEDULE_ALIASES:
        return SCHEDULE_ALIASES[key]
    close = difflib.get_close_matches(name.lower(), SCHEDULES, n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise InvalidInputError(
        f"schedule {name!r}: unknown; choose one of {', '.join(SCHEDULES)} (or a torch / Megatron name "
        f"such as Interleaved1F1B, ZBVZeroBubble, DualPipeV){hint}"
    )


def _spec(name: str) -> ScheduleSpec:
    return SCHEDULES[canonical_schedule_name(name)]


def _precondition_error(spec: ScheduleSpec, problem: PipelineProblem) -> str | None:
    """Why ``spec`` cannot run on ``problem`` (a message saying how to fix it), or None."""
    name, p, m = spec.name, problem.num_devices, problem.num_microbatches
    if problem.placement != spec.placement:
        return f"{name}: needs --placement {spec.placement}, got --placement {problem.placement}"
    if not problem.is_chain:
        return f"{name}: needs a chain of stages per micro-batch (a classic pipeline)"
    v = problem.chunks
    want_stages = {"linear": p, "interleaved": p * v, "v": 2 * p, "bidirectional": 2 * p}[spec.placement]
    if problem.num_stages != want_stages:
        return f"{name}: needs {want_stages} stages for {p} devices, got {problem.num_stages}"
    if spec.needs_split_backward and not all(s.cost.is_split for s in problem.stages):
        return f"{name}: needs split backward costs; give I and W in --costs"
    if spec.needs_even_devices and p % 2:
        return f"{name}: needs an even number of devices, got --pp {p}"
    if spec.placement == "bidirectional" and m % 2:
        return f"{name}: needs an even number of micro-batches, got --microbatches {m}"
    least = spec.min_microbatches(p, v)
    if m < least:
        rule = {2 * p: "2*pp", 2 * p - 1: "2*pp-1"}.get(least, str(least))
        return f"{name}: needs --microbatches >= {rule} ({least}), got {m}"
    if name == "interleaved-1f1b" and m % p:
        return f"{name}: needs --microbatches a multiple of --pp {p}, got {m}"
    return None


def applicable_schedules(problem: PipelineProblem) -> list[tuple[str, str | None]]:
    """Every built-in schedule with None when it applies to ``problem``, else the reason why not."""
    return [(name, _precondition_error(spec, problem)) for name, spec in SCHEDULES.items()]


def build_schedule(name: str, problem: PipelineProblem) -> Schedule:
    """The built-in schedule ``name`` for ``problem``.

    Parameters
    ----------
    name
        One of ``SCHEDULES``.
    problem
        A placed chain problem whose placement matches the schedule (see ``synthetic_problem``).

    Raises
    ------
    InvalidInputError
        For an unknown name (listing the valid ones) or a failed precondition (saying how to fix it).
    """
    spec = _spec(name)
    reason = _precondition_error(spec, problem)
    if reason is not None:
        raise InvalidInputError(reason)
    return Schedule.of(spec.name, spec.orders(problem))
