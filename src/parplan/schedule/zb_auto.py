"""The Zero Bubble automatic scheduler (Qi et al., ICLR 2024, section 3.1) for a linear pipeline.

A greedy that places passes on each device in order while tracking, per device, the time it is free,
the activation memory it holds and the bubble (idle time) it has accumulated:

1. warm-up: as many forwards per device as memory allows and as fit before the first backward-input
   (I) pass can come back from the next device;
2. steady state: one forward then one I per device (1F1B), with weight passes (W) put before a pass
   whose input has not arrived yet when they fit in the gap, or when the gap is larger than the
   worst bubble seen so far (so the bubble is spread), or when memory needs one released;
3. cool-down: the pending W passes.

Each variant of the paper's three switches (see ``_Options``) is run and the one with the shortest
longest device span (the paper's schedule cost) is kept; the greedy's times are exactly the
simulator's as-soon-as-possible times of the orders it emits. Costs may differ per stage and every
edge has its own communication time. The memory limit is the device's activation budget: its
``memory_limit`` minus its static memory, or 1F1B's peak (p activations) when it has none.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from parplan.errors import InternalError, InvalidInputError
from parplan.numeric import leq
from parplan.problem import PipelineProblem
from parplan.schedule.ir import Action, F, I, W

Orders = list[list[Action]]

_KINDS = ("F", "I", "W")
_MAKE = (F, I, W)


def _within(value: float, limit: float) -> bool:
    return leq(value, limit)


@dataclass(frozen=True, slots=True, kw_only=True)
class _Options:
    """The paper's switches: ``tight_warmup`` stops the warm-up before a forward would delay the
    first I; ``skip_forward`` lets a device skip its forward when its downstream neighbour is 2+
    forwards behind and waiting costs less than the worst bubble; ``fill_gaps`` puts a W into a gap
    shorter than it when the gap is no larger than the worst bubble (otherwise only larger gaps)."""

    tight_warmup: bool
    skip_forward: bool
    fill_gaps: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class _Chain:
    """Per-stage data of a linear pipeline (stage s on device s): pass times, the communication
    time of edge s -> s+1, activation memory, the part kept for W, and the activation budget."""

    cost: tuple[tuple[float, float, float], ...]
    comm: tuple[float, ...]
    act: tuple[float, ...]
    wgrad: tuple[float, ...]
    budget: tuple[float, ...]
    num_microbatches: int

    @property
    def num_stages(self) -> int:
        return len(self.cost)


class _Greedy:
    """The state of one greedy run: counts, ends, memory and bubble per stage, and the orders."""

    def __init__(self, chain: _Chain, options: _Options) -> None:
        n, m = chain.num_stages, chain.num_microbatches
        self.chain, self.options = chain, options
        self.done = [[0] * n for _ in _KINDS]  # done[kind][stage]: passes of that kind placed
        self.ends = [[[0.0] * m for _ in range(n)] for _ in _KINDS]  # ends[kind][stage][microbatch]
        self.free_at = [0.0] * n
        self.first_start = [0.0] * n
        self.mem = [0.0] * n
        self.idle = [0.0] * n
        self.worst_idle = 0.0
        self.orders: Orders = [[] for _ in range(n)]

    # ------------------------------------------------------------------ primitives
    def ready_at(self, stage: int, kind: int) -> float:
        """When the input of the next ``kind`` pass of ``stage`` is on its device."""
        chain, j = self.chain, self.done[kind][stage]
        if kind == 0 and stage > 0:
            return self.ends[0][stage - 1][j] + chain.comm[stage - 1]
        if kind == 1 and stage < chain.num_stages - 1:
            return self.ends[1][stage + 1][j] + chain.comm[stage]
        return 0.0  # the other inputs are on the same device, already done

    def put(self, stage: int, kind: int) -> None:
        j = self.done[kind][stage]
        cost = self.chain.cost[stage][kind]
        start = max(self.free_at[stage], self.ready_at(stage, kind))
        if self.done[0][stage] > 0:
            self.idle[stage] += start - self.free_at[stage]
            self.worst_idle = max(self.worst_idle, self.idle[stage])
        else:
            self.first_start[stage] = start
        self.free_at[stage] = self.ends[kind][stage][j] = start + cost
        act, wgrad = self.chain.act[stage], self.chain.wgrad[stage]
        self.mem[stage] += (act, -(act - wgrad), -wgrad)[kind]
        self.done[kind][stage] = j + 1
        self.orders[stage].append(_MAKE[kind](stage, j))

    def pending_w(self, stage: int) -> bool:
        return self.done[2][stage] < self.done[1][stage]

    def make_room(self, stage: int) -> None:
        """Put W passes until one more forward fits in the activation budget."""
        chain = self.chain
        while not _within(self.mem[stage] + chain.act[stage], chain.budget[stage]):
            if not self.pending_w(stage):
                raise _OutOfMemoryError(stage)
            self.put(stage, 2)

    def fill_gap(self, stage: int, ready: float) -> None:
        """Put W passes into the wait for an input that arrives at ``ready``."""
        w_cost = self.chain.cost[stage][2]
        while self.pending_w(stage) and _within(self.free_at[stage] + w_cost, ready):
            self.put(stage, 2)
        gap = ready - self.free_at[stage]
        if self.pending_w(stage) and gap > 0:
            tolerable = gap <= self.worst_idle - self.idle[stage]
            if not tolerable or self.options.fill_gaps:
                self.put(stage, 2)

    # ------------------------------------------------------------------ phases
    def warmup_forwards(self) -> list[int]:
        """Extra forwards per stage before the first I (after every stage ran forward 0)."""
        chain, n, m = self.chain, self.chain.num_stages, self.chain.num_microbatches
        extra = [0] * n
        back = self.ends[0][n - 1][0] + chain.cost[n - 1][1]  # when the last stage's I0 ends
        for s in range(n - 2, -1, -1):
            f_cost = chain.cost[s][0]
            mem, t, arrive = self.mem[s], self.free_at[s], back + chain.comm[s]
            while self.done[0][s] + extra[s] < m and _within(mem + chain.act[s], chain.budget[s]):
                late = t + f_cost > arrive if self.options.tight_warmup else t >= arrive
                if late:
                    break
                mem, t, extra[s] = mem + chain.act[s], t + f_cost, extra[s] + 1
            back = max(t, arrive) + chain.cost[s][1]
        # fewer extra forwards downstream, so a device never waits on its upstream neighbour
        for s in range(1, n):
            while extra[s] > 0 and extra[s] >= extra[s - 1] and self.done[0][s] + extra[s] < m:
                extra[s] -= 1
        return extra

    def wants_forward(self, stage: int) -> bool:
        chain, n = self.chain, self.chain.num_stages
        if self.done[0][stage] >= chain.num_microbatches:
            return False
        nxt = stage + 1
        if not (self.options.skip_forward and nxt < n and self.done[0][stage] >= self.done[0][nxt] + 2):
            return True
        # the next stage's forward then I, and the I's way back here
        back = self.free_at[nxt] + chain.cost[nxt][0] + chain.cost[nxt][1] + chain.comm[stage]
        if self.free_at[stage] >= back:
            return False
        w_cost, mem, k = 0.0, self.mem[stage] + chain.act[stage], self.done[2][stage]
        while not _within(mem, chain.budget[stage]) and k < self.done[1][stage]:
            w_cost, mem, k = w_cost + chain.cost[stage][2], mem - chain.wgrad[stage], k + 1
        if _within(self.free_at[stage] + chain.cost[stage][0] + w_cost, back):
            return True
        return back - self.free_at[stage] > self.worst_idle - self.idle[stage]

    def run(self) -> Orders:
        n, m = self.chain.num_stages, self.chain.num_microbatches
        for s in range(n):
            self.make_room(s)
            self.put(s, 0)
        for s, k in enumerate(self.warmup_forwards()):
            for _ in range(k):
                self.make_room(s)
                self.put(s, 0)
        for s in range(n - 1, -1, -1):
            self.put(s, 1)
        for j in range(1, m):
            want = [self.wants_forward(s) for s in range(n)]
            for s in range(n - 2, -1, -1):
                want[s] = want[s] and want[s + 1]
            for s in range(n):
                if want[s]:
                    self.make_room(s)
                    if s > 0:
                        self.fill_gap(s, self.ready_at(s, 0))
                    self.put(s, 0)
            for s in range(n - 1, -1, -1):
                if self.done[1][s] != j:
                    raise InternalError(f"zb-auto: stage {s} is at I{self.done[1][s]}, expected I{j}")
                if s < n - 1:
                    self.fill_gap(s, self.ready_at(s, 1))
                if s == 0 and self.done[0][0] == m:
                    while self.pending_w(0):  # nothing upstream waits for device 0's I
                        self.put(0, 2)
                self.put(s, 1)
        for s in range(n):
            while self.pending_w(s):
                self.put(s, 2)
        return self.orders

    def longest_span(self) -> float:
        return max(end - start for end, start in zip(self.free_at, self.first_start))


class _OutOfMemoryError(Exception):
    """Raised inside a greedy run when a forward cannot fit and no W is left to free memory."""

    def __init__(self, stage: int) -> None:
        super().__init__(stage)
        self.stage = stage


# ---------------------------------------------------------------------------- problem -> chain


def _static_memory(problem: PipelineProblem, device: int) -> float:
    """The ``param_mem`` of the stages on ``device`` (as ``parplan.simulate``, not imported here)."""
    return sum(problem.stages[s].param_mem for s in problem.stages_on(device))


def _chain(problem: PipelineProblem, memory_limit: float | None) -> _Chain:
    """The chain data of a linear-placement problem, with every device's activation budget."""
    p, stages = problem.num_devices, problem.stages
    comm = {(e.src, e.dst): e.comm for e in problem.edges}
    for s, st in enumerate(stages):
        if st.device != s or (s + 1 < p and (s, s + 1) not in comm):
            raise InvalidInputError(
                f"zb-auto: needs the chain stage 0 -> ... -> {p - 1} with stage s on device s; "
                f"stage {s} is on device {st.device}"
            )
    least = max(_static_memory(problem, d) + stages[d].act_mem for d in range(p))
    budgets = []
    for d in range(p):
        limit = memory_limit if memory_limit is not None else problem.devices[d].memory_limit
        static, act = _static_memory(problem, d), stages[d].act_mem
        budget = p * act if limit is None else limit - static
        if not _within(act, budget):
            raise InvalidInputError(
                f"zb-auto: device {d} needs memory {static + act:g} for one activation, its limit is "
                f"{limit:g}; the smallest limit zb-auto works with is {least:g}"
            )
        budgets.append(budget)
    return _Chain(
        cost=tuple(
            (st.cost_on(s).of("F"), st.cost_on(s).of("I"), st.cost_on(s).of("W"))
            for s, st in enumerate(stages)
        ),
        comm=tuple(comm[(s, s + 1)] for s in range(p - 1)),
        act=tuple(st.act_mem for st in stages),
        wgrad=tuple(st.wgrad_mem for st in stages),
        budget=tuple(budgets),
        num_microbatches=problem.num_microbatches,
    )


def zb_auto(problem: PipelineProblem, memory_limit: float | None = None) -> Orders:
    """The Zero Bubble automatic schedule of a linear pipeline under a memory limit.

    Parameters
    ----------
    problem
        A chain of p stages with split backward, stage s on device s (``--placement linear``).
    memory_limit
        Per-device limit in the problem's memory unit; default each device's ``memory_limit``, or
        1F1B's peak (p activations plus static memory) when the device has none. ZB-1p is this
        schedule at p activations, ZB-2p at 2p.

    Returns
    -------
    Orders
        Per-device action orders, with the shortest longest device span of the greedy's variants.

    Raises
    ------
    InvalidInputError
        When a device's limit does not hold one activation (the message gives the smallest limit).
    """
    chain = _chain(problem, memory_limit)
    best: tuple[float, Orders] | None = None
    for tight, skip, fill in itertools.product((True, False), repeat=3):
        greedy = _Greedy(chain, _Options(tight_warmup=tight, skip_forward=skip, fill_gaps=fill))
        try:
            orders = greedy.run()
        except _OutOfMemoryError:
            continue
        span = greedy.longest_span()
        if best is None or span < best[0]:
            best = (span, orders)
    if best is None:
        raise InternalError(
            f"zb-auto: no variant fits the memory budgets {chain.budget} (p={chain.num_stages})"
        )
    return best[1]
