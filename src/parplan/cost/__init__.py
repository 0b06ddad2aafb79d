"""The cost model: roofline compute times, alpha-beta communication, training memory, measured profiles.

``CostModel`` is the main entry point; the functions below are its building blocks.
"""

from parplan.cost.comm import COLLECTIVES, collective_time, p2p_time, ring_time
from parplan.cost.compute import (
    DEFAULT_EFFICIENCY,
    MATMUL_KINDS,
    CostModel,
    Efficiency,
    op_time,
    stage_times,
)
from parplan.cost.profile import PROFILE_FORMAT, OpProfile, Profile, read_profile, write_profile

__all__ = [
    "COLLECTIVES",
    "DEFAULT_EFFICIENCY",
    "MATMUL_KINDS",
    "PROFILE_FORMAT",
    "CostModel",
    "Efficiency",
    "OpProfile",
    "Profile",
    "collective_time",
    "op_time",
    "p2p_time",
    "read_profile",
    "ring_time",
    "stage_times",
    "write_profile",
]
