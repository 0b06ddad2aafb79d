"""The cost model: roofline compute times, alpha-beta communication, training memory, measured profiles.

``CostModel`` is the main entry point; the functions below are its building blocks.
"""

from parplan.cost.comm import COLLECTIVES, collective_time, p2p_time, ring_time
from parplan.cost.compute import (
    GEMM_KINDS,
    KERNEL_EFFICIENCY,
    CostModel,
    KernelEfficiency,
    kernel_efficiency,
    op_time,
    pass_seconds,
    stage_times,
)
from parplan.cost.memory import (
    MEMORY_COMPONENTS,
    OPTIMIZER_STATES,
    MemoryBreakdown,
    StateBytes,
    sharded_state_bytes,
    training_state_bytes,
)
from parplan.cost.pipeline import MODEL_PLACEMENTS, balanced_partition, model_problem, partition_units
from parplan.cost.profile import PROFILE_FORMAT, OpProfile, Profile, read_profile, write_profile

__all__ = [
    "COLLECTIVES",
    "GEMM_KINDS",
    "KERNEL_EFFICIENCY",
    "MEMORY_COMPONENTS",
    "MODEL_PLACEMENTS",
    "OPTIMIZER_STATES",
    "PROFILE_FORMAT",
    "CostModel",
    "KernelEfficiency",
    "MemoryBreakdown",
    "OpProfile",
    "Profile",
    "StateBytes",
    "balanced_partition",
    "collective_time",
    "kernel_efficiency",
    "model_problem",
    "op_time",
    "p2p_time",
    "partition_units",
    "pass_seconds",
    "read_profile",
    "ring_time",
    "sharded_state_bytes",
    "stage_times",
    "training_state_bytes",
    "write_profile",
]
