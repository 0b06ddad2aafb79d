"""The shape every solver backend has: build from a task model, take hints, solve, return ticks.

A backend is constructed from a ``TaskModel`` and an objective, accepts warm-start hints as an
``Assignment``, and ``solve`` returns a ``BackendResult`` in ticks. CP-SAT is built in; a MILP
backend (HiGHS, Gurobi) plugs in by implementing the same protocol and registering in
``parplan.solve.registry.BACKENDS``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from parplan.solve.model import Assignment

#: Objectives every backend understands. Lexicographic ones are run as two solves by the caller.
OBJECTIVES = ("makespan", "memory", "weighted", "span", "utilization")


@dataclass(frozen=True, slots=True, kw_only=True)
class Progress:
    """One report during a solve: the best objective so far, the proven bound, in real units."""

    incumbent: float
    bound: float
    gap: float
    elapsed_s: float


@dataclass(frozen=True, slots=True, kw_only=True)
class BackendResult:
    """What a solve returned: ``status`` is optimal, feasible, infeasible or unknown (no answer)."""

    status: str
    assignment: Assignment | None
    objective: int | None
    bound: int | None
    time_s: float


class Backend(Protocol):
    """A solver for a task model (see module docstring)."""

    name: str

    def add_hint(self, sol: Assignment) -> None: ...

    def solve(
        self,
        *,
        time_limit_s: float,
        workers: int,
        deterministic: bool,
        progress: Callable[[Progress], None] | None = None,
    ) -> BackendResult: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class BackendOptions:
    """Model options shared by backends.

    ``objective`` is one of ``OBJECTIVES``; ``memory_weight`` is the weight of one memory quantum
    against one tick (a ratio; backends may round it to a fraction) in the weighted objective; ``max_makespan`` / ``max_memory`` cap the two
    objectives (ticks, quanta), used for lexicographic solves and to cut above a warm start;
    ``min_makespan`` is a proven lower bound (ticks) found outside the model (one-device relaxations);
    ``max_span`` / ``max_span_sum`` cap the longest device span and the sum of spans (ticks).
    """

    objective: str = "makespan"
    memory_weight: float = 1.0
    max_makespan: int | None = None
    max_memory: int | None = None
    min_makespan: int | None = None
    max_span: int | None = None
    max_span_sum: int | None = None
    load_cuts: bool = True
    symmetry: bool = True
