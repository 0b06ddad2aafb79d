"""Shared fixtures: simulate a built-in schedule on a synthetic problem in one call."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from parplan.plan import Plan
from parplan.schedule.expert import build_schedule
from parplan.synthetic import synthetic_problem

RunSchedule = Callable[..., Plan]


@pytest.fixture
def run_schedule() -> RunSchedule:
    """``run_schedule(name, pp=.., microbatches=.., **synthetic options)`` -> simulated Plan."""

    def run(name: str, **options: object) -> Plan:
        problem = synthetic_problem(**options)  # type: ignore[arg-type]
        return Plan.from_schedule(problem, build_schedule(name, problem))

    return run
