"""Schedules: the action IR and the built-in expert pipeline schedules (pure functions of integers)."""

from parplan.schedule.expert import (
    SCHEDULES,
    ScheduleSpec,
    applicable_schedules,
    build_schedule,
    dualpipe,
    dualpipev,
    gpipe,
    interleaved_1f1b,
    one_f_one_b,
    schedule_names,
    zb_h1,
    zb_h2,
    zb_v,
)
from parplan.schedule.ir import FUSED, KINDS, Action, Schedule

__all__ = [
    "FUSED",
    "KINDS",
    "SCHEDULES",
    "Action",
    "Schedule",
    "ScheduleSpec",
    "applicable_schedules",
    "build_schedule",
    "dualpipe",
    "dualpipev",
    "gpipe",
    "interleaved_1f1b",
    "one_f_one_b",
    "schedule_names",
    "zb_h1",
    "zb_h2",
    "zb_v",
]
