"""Multi-objective intra-operator strategy search: Pareto frontiers of iteration time vs memory per device.

Frontier Tracking (TensorOpt, Cai et al. 2022) over data, tensor, sequence, context and expert
parallelism, ZeRO sharding and recompute. Imports numpy only (no solver, torch or matplotlib).
"""

from parplan.frontier.query import DeviceChoice, dominant_grid, fewest_devices, stage_modes, subgraph
from parplan.frontier.search import Frontier, FrontierPoint, brute_force, evaluate, frontier, memory_breakdown
from parplan.frontier.strategies import OpConfig, SearchSpace, search_space

__all__ = [
    "DeviceChoice",
    "Frontier",
    "FrontierPoint",
    "OpConfig",
    "SearchSpace",
    "brute_force",
    "dominant_grid",
    "evaluate",
    "fewest_devices",
    "frontier",
    "memory_breakdown",
    "search_space",
    "stage_modes",
    "subgraph",
]
