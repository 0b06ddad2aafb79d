"""The planner: pipeline placement and scheduling as an exact optimization problem (CP-SAT by default).

Importing this package imports no solver; backends are loaded when a solve starts.
"""

from __future__ import annotations

from parplan.solve.api import OBJECTIVES, plan_problem
from parplan.solve.backend import Progress
from parplan.solve.bounds import Bounds, lower_bounds
from parplan.solve.fjsp import FjspResult, solve_fjsp
from parplan.solve.model import Assignment, TaskModel, pipeline_model

__all__ = [
    "OBJECTIVES",
    "Assignment",
    "Bounds",
    "FjspResult",
    "Progress",
    "TaskModel",
    "lower_bounds",
    "pipeline_model",
    "plan_problem",
    "solve_fjsp",
]
