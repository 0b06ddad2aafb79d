"""Multi-objective intra-operator strategy search: Pareto frontiers of iteration time vs memory per device.

Frontier Tracking (TensorOpt, Cai et al. 2022) over data, tensor, sequence, context and expert
parallelism, ZeRO sharding and recompute; and the whole-model strategy grid (pp x dp x tp, ZeRO,
recompute: ``grid``) that runtimes execute. Imports numpy only (no solver, torch or matplotlib).
"""

from parplan.frontier.grid import GridFrontier, fewest_devices_grid, grid_frontier
from parplan.frontier.query import DeviceChoice, dominant_grid, fewest_devices, stage_modes, subgraph
from parplan.frontier.search import Frontier, FrontierPoint, brute_force, evaluate, frontier, memory_breakdown
from parplan.frontier.strategies import OpConfig, SearchSpace, search_space

__all__ = [
    "DeviceChoice",
    "Frontier",
    "FrontierPoint",
    "GridFrontier",
    "OpConfig",
    "SearchSpace",
    "brute_force",
    "dominant_grid",
    "evaluate",
    "fewest_devices",
    "fewest_devices_grid",
    "frontier",
    "grid_frontier",
    "memory_breakdown",
    "search_space",
    "stage_modes",
    "subgraph",
]
