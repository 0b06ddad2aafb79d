"""parplan: plan how a deep-learning model is parallelized across devices, prove how good the plan is,
and run it.

The public API, by stage of the data flow (DESIGN.md)::

    graph    build_model, resolve_model, random_dag, read_graph/write_graph, OpGraph
    cluster  load_cluster, Cluster
    cost     CostModel, model_problem (a model on a cluster -> pipeline problem)
    problem  synthetic_problem, graph_problem (merging heuristic), PipelineProblem
    schedule build_schedule, applicable_schedules, SCHEDULES
    solve    plan_problem (MIP planner; imports OR-Tools on first use), plan_module (a torch module)
    joint    joint_plan (stage strategies from the frontier chosen with the schedule)
    frontier parplan.frontier.frontier, fewest_devices, Frontier (Pareto strategies)
    simulate simulate, validate, compute_metrics; Plan, read_plan

Importing parplan imports neither torch, matplotlib nor a solver: ``plan_problem`` loads OR-Tools
when first called, pictures live in ``parplan.report`` and real runs in ``parplan.runtime``.
"""

from __future__ import annotations

from typing import Any

from parplan.cluster import Cluster
from parplan.cluster_io import list_clusters, load_cluster
from parplan.cost import CostModel
from parplan.cost.pipeline import model_problem
from parplan.errors import (
    InfeasibleError,
    InternalError,
    InvalidInputError,
    NoSolutionError,
    ParplanError,
    SolverUnavailableError,
)
from parplan.frontier import Frontier, fewest_devices
from parplan.graph import (
    OpGraph,
    build_model,
    list_models,
    random_dag,
    read_graph,
    resolve_model,
    write_graph,
)
from parplan.merge import graph_problem
from parplan.plan import Plan, read_plan
from parplan.problem import PipelineProblem
from parplan.schedule import SCHEDULES, Action, Schedule, applicable_schedules, build_schedule
from parplan.simulate import compute_metrics, simulate, validate
from parplan.synthetic import synthetic_problem

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    # The planner imports OR-Tools: load it on first use only.
    if name == "plan_problem":
        from parplan.solve.api import plan_problem

        return plan_problem
    if name == "plan_module":  # imports torch
        from parplan.runtime.user_model import plan_module

        return plan_module
    if name == "joint_plan":
        from parplan.joint import joint_plan

        return joint_plan
    raise AttributeError(f"module 'parplan' has no attribute {name!r}")


__all__ = [
    "SCHEDULES",
    "Action",
    "Cluster",
    "CostModel",
    "Frontier",
    "InfeasibleError",
    "InternalError",
    "InvalidInputError",
    "NoSolutionError",
    "OpGraph",
    "ParplanError",
    "PipelineProblem",
    "Plan",
    "Schedule",
    "SolverUnavailableError",
    "__version__",
    "applicable_schedules",
    "build_model",
    "build_schedule",
    "compute_metrics",
    "fewest_devices",
    "graph_problem",
    "joint_plan",
    "list_clusters",
    "list_models",
    "load_cluster",
    "model_problem",
    "plan_module",
    "plan_problem",
    "random_dag",
    "read_graph",
    "read_plan",
    "resolve_model",
    "simulate",
    "synthetic_problem",
    "validate",
    "write_graph",
]
