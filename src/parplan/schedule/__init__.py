"""Schedules: the action IR and the built-in expert pipeline schedules (most pure functions of integers)."""

from parplan.schedule.expert import (
    SCHEDULE_ALIASES,
    SCHEDULES,
    ScheduleSpec,
    applicable_schedules,
    build_schedule,
    canonical_schedule_name,
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
from parplan.schedule.v_shape import v_half, v_min
from parplan.schedule.zb_auto import zb_auto

__all__ = [
    "FUSED",
    "KINDS",
    "SCHEDULES",
    "SCHEDULE_ALIASES",
    "Action",
    "Schedule",
    "ScheduleSpec",
    "applicable_schedules",
    "build_schedule",
    "canonical_schedule_name",
    "dualpipe",
    "dualpipev",
    "gpipe",
    "interleaved_1f1b",
    "one_f_one_b",
    "schedule_names",
    "v_half",
    "v_min",
    "zb_auto",
    "zb_h1",
    "zb_h2",
    "zb_v",
]
