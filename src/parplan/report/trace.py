"""Chrome trace JSON of plans and of measured runs, to open in Perfetto (ui.perfetto.dev) or chrome://tracing.

The planned trace (:func:`plan_to_chrome_trace`) and the measured one (:func:`measured_chrome_trace`,
from the timings ``parplan run`` records) share one layout, one event naming (``F mb0 stage1``; a
fused action ``F mb3 stage0 & B mb1 stage5``) and one unit, so the two open side by side.

Layout: one process (pid) per device named "device N"; thread 0 holds the compute actions, threads
1, 2, ... the incoming transfers (a second lane only when transfers into a device overlap, because
trace viewers need the slices of one thread to nest); a "C" counter track per device holds its
memory. Timestamps are microseconds: seconds * 1e6 for plans in seconds, and 1 unit = 1000 us for
plans in abstract units (recorded in ``otherData.us_per_time_unit``).
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

from parplan.errors import InvalidInputError
from parplan.plan import Plan
from parplan.schedule.ir import Action
from parplan.simulate import TimedAction, dependencies, memory_curves

#: Microseconds per time unit of a plan in abstract units ("unit").
US_PER_UNIT = 1000.0
COMPUTE_TID = 0
COMM_TID = 1
TRACE_SUFFIXES = (".json", ".json.gz")


def us_per_time_unit(time_unit: str) -> float:
    """Trace microseconds per plan time unit: 1e6 for seconds, ``US_PER_UNIT`` for abstract units."""
    return 1e6 if time_unit == "s" else US_PER_UNIT


def _ts(value: float, us: float) -> float:
    # Round to nanoseconds: keeps the file small and the timestamps free of float noise.
    return round(value * us, 3)


def _part_name(p: Action) -> str:
    return f"{p.kind} mb{p.microbatch} stage{p.stage}"


def _compute_event(t: TimedAction, us: float) -> dict[str, object]:
    a = t.action
    args: dict[str, object] = {
        "action": str(a),
        "kind": a.kind,
        "stage": a.stage,
        "microbatch": a.microbatch,
        "start": t.start,
        "end": t.end,
    }
    if a.is_fused:
        args["parts"] = [{"stage": p.stage, "kind": p.kind, "microbatch": p.microbatch} for p in a.parts]
    return {
        "name": " & ".join(_part_name(p) for p in a.plain()),
        "cat": "compute",
        "ph": "X",
        "ts": _ts(t.start, us),
        "dur": _ts(t.end - t.start, us),
        "pid": t.device,
        "tid": COMPUTE_TID,
        "args": args,
    }


def communication_events(plan: Plan) -> list[tuple[int, float, float, dict[str, object]]]:
    """Every cross-device transfer of the plan as (receiving device, start, end, details).

    A transfer starts when its producer action ends and lasts the edge's communication time; only
    dependencies between different devices with a positive communication time are transfers.
    Details name the micro-batch, the two stages and devices, and whether it carries activations
    (forward) or gradients (backward).
    """
    problem = plan.problem
    # Which timed action produced each plain pass, to find the producer's end and device.
    made_by: dict[tuple[int, str, int], TimedAction] = {}
    for t in plan.timed:
        for p in t.action.plain():
            made_by[(p.stage, p.kind, p.microbatch)] = t
    out = []
    for t in plan.timed:
        for p in t.action.plain():
            for (kind, stage, mb), comm, _src in dependencies(problem, p):
                if comm <= 0:
                    continue
                if kind == "Bin":
                    producer = made_by.get((stage, "I", mb)) or made_by.get((stage, "B", mb))
                else:
                    producer = made_by.get((stage, kind, mb))
                if producer is None or producer.device == t.device:
                    continue
                what = "activation" if kind == "F" else "gradient"
                details: dict[str, object] = {
                    "what": what,
                    "microbatch": mb,
                    "src_stage": stage,
                    "dst_stage": p.stage,
                    "src_device": producer.device,
                    "dst_device": t.device,
                    "comm": comm,
                }
                out.append((t.device, producer.end, producer.end + comm, details))
    out.sort(key=lambda e: (e[0], e[1], e[2]))
    return out


def plan_to_chrome_trace(plan: Plan) -> dict[str, object]:
    """The plan as a Chrome trace event document (a JSON object with ``traceEvents``).

    Parameters
    ----------
    plan
        The plan to convert.

    Returns
    -------
    dict
        ``{"traceEvents": [...], "displayTimeUnit": "ms", "otherData": {...}}``: metadata events
        first, then compute ("X" on tid 0), communication ("X" on tid 1 and up) and memory ("C")
        events sorted by timestamp. Compute events are named like ``F mb3 stage2`` (fused actions
        join their parts with ``&``) and carry ``stage``, ``microbatch`` and ``kind`` in ``args``.
    """
    problem = plan.problem
    us = us_per_time_unit(problem.time_unit)
    meta: list[dict[str, object]] = []
    events: list[dict[str, object]] = []

    for t in plan.timed:
        events.append(_compute_event(t, us))

    # Greedy lane assignment per device: a transfer goes to the first lane free at its start.
    lanes_used = [1] * problem.num_devices
    lane_free: dict[int, list[float]] = {}
    for device, start, end, details in communication_events(plan):
        free = lane_free.setdefault(device, [])
        lane = next((k for k, f in enumerate(free) if f <= start + 1e-12), len(free))
        if lane == len(free):
            free.append(end)
        else:
            free[lane] = end
        lanes_used[device] = max(lanes_used[device], lane + 1)
        arrow = f"stage{details['src_stage']}→stage{details['dst_stage']}"
        kind = "F" if details["what"] == "activation" else "grad"
        events.append(
            {
                "name": f"recv {kind} mb{details['microbatch']} {arrow}",
                "cat": "communication",
                "ph": "X",
                "ts": _ts(start, us),
                "dur": _ts(end - start, us),
                "pid": device,
                "tid": COMM_TID + lane,
                "args": details,
            }
        )

    if problem.memory_unit == "bytes":
        series, mem_scale = "GiB", 1 / 2**30
    else:
        series, mem_scale = "units", 1.0
    for device, curve in enumerate(memory_curves(problem, plan.timed)):
        for time, level in curve:
            events.append(
                {
                    "name": "memory",
                    "ph": "C",
                    "ts": _ts(time, us),
                    "pid": device,
                    "args": {series: level * mem_scale},
                }
            )

    for d in problem.devices:
        meta.append(
            {
                "name": "process_name",
                "ph": "M",
                "pid": d.index,
                "tid": 0,
                "args": {"name": f"device {d.index}"},
            }
        )
        meta.append(
            {
                "name": "process_sort_index",
                "ph": "M",
                "pid": d.index,
                "tid": 0,
                "args": {"sort_index": d.index},
            }
        )
        meta.append(
            {
                "name": "thread_name",
                "ph": "M",
                "pid": d.index,
                "tid": COMPUTE_TID,
                "args": {"name": "compute"},
            }
        )
        for lane in range(lanes_used[d.index]):
            name = "communication" if lane == 0 else f"communication {lane + 1}"
            meta.append(
                {
                    "name": "thread_name",
                    "ph": "M",
                    "pid": d.index,
                    "tid": COMM_TID + lane,
                    "args": {"name": name},
                }
            )

    # Stable sort: at equal timestamps compute comes before transfers and counters, as emitted.
    events.sort(key=lambda e: e["ts"])  # type: ignore[arg-type, return-value]
    m = plan.metrics
    return {
        "traceEvents": meta + events,
        "displayTimeUnit": "ms",
        "otherData": {
            "generator": "parplan",
            "plan": plan.name or problem.name,
            "time_unit": problem.time_unit,
            "us_per_time_unit": us,
            "memory_unit": problem.memory_unit,
            "memory_counter_unit": series,
            "makespan": m.makespan,
            "bubble_ratio": m.bubble_ratio,
        },
    }


def write_chrome_trace(plan: Plan, path: str | Path) -> Path:
    """Write the plan's Chrome trace (see :func:`plan_to_chrome_trace`) to ``path``.

    Parameters
    ----------
    plan
        The plan to write.
    path
        Output file ending in ``.json``, or ``.json.gz`` for a gzip-compressed trace (Perfetto
        opens both). Parent folders are created.

    Returns
    -------
    Path
        The written file.

    Raises
    ------
    InvalidInputError
        When the file name ends neither in ``.json`` nor ``.json.gz``.
    """
    path = Path(path)
    if not path.name.lower().endswith(TRACE_SUFFIXES):
        raise InvalidInputError(
            f"Chrome trace {str(path)!r}: unknown file type {path.suffix or '(none)'!r}; "
            "use a name ending in .json or .json.gz"
        )
    text = json.dumps(plan_to_chrome_trace(plan), separators=(",", ":"))
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.name.lower().endswith(".gz"):
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text + "\n")
    return path


def _device_tracks(num_devices: int, second: str) -> list[dict[str, object]]:
    """Metadata naming every device's process and its compute and ``second`` threads."""
    events: list[dict[str, object]] = []
    for d in range(num_devices):
        events.append({"name": "process_name", "ph": "M", "pid": d, "args": {"name": f"device {d}"}})
        events.append(
            {"name": "thread_name", "ph": "M", "pid": d, "tid": COMPUTE_TID, "args": {"name": "compute"}}
        )
        events.append({"name": "thread_name", "ph": "M", "pid": d, "tid": COMM_TID, "args": {"name": second}})
    return events


def _measured_name(timing: dict[str, object]) -> str:
    """The planned trace's name of a measured action (its action text when it does not parse)."""
    try:
        action = Action.parse(str(timing["action"]))
    except (InvalidInputError, ValueError, KeyError):
        return str(timing.get("action", "?"))
    return " & ".join(_part_name(p) for p in action.plain())


def measured_chrome_trace(
    plan: Plan, timings: tuple[dict[str, object], ...] | list[dict[str, object]]
) -> dict[str, object]:
    """Chrome trace of measured actions (``ActionTiming.to_json`` records, seconds from the step's start).

    One pid per device, tid 0 the compute actions (named as in the planned trace), tid 1 the
    receive waits before them, and a "C" counter of the saved activation bytes after each action
    when recorded. Microseconds, like the planned trace of a plan in seconds.
    """
    us = 1e6
    events = _device_tracks(plan.problem.num_devices, "receive wait")
    for t in timings:
        start, end = float(t["start_s"]), float(t["end_s"])  # type: ignore[arg-type]
        device = int(t["device"])  # type: ignore[call-overload]
        events.append(
            {
                "name": _measured_name(t),
                "cat": "compute",
                "ph": "X",
                "ts": _ts(start, us),
                "dur": _ts(end - start, us),
                "pid": device,
                "tid": COMPUTE_TID,
                "args": dict(t),
            }
        )
        if "live_activation_bytes" in t:
            events.append(
                {
                    "name": "activations",
                    "ph": "C",
                    "ts": _ts(end, us),
                    "pid": device,
                    "args": {"bytes": t["live_activation_bytes"]},
                }
            )
        wait = float(t.get("recv_wait_s", 0.0))  # type: ignore[arg-type]
        if wait > 0:
            events.append(
                {
                    "name": f"wait {_measured_name(t)}",
                    "cat": "comm",
                    "ph": "X",
                    "ts": _ts(start, us),
                    "dur": _ts(wait, us),
                    "pid": device,
                    "tid": COMM_TID,
                }
            )
    return {
        "traceEvents": events,
        "displayTimeUnit": "ms",
        "otherData": {"plan": plan.name, "measured": True},
    }
