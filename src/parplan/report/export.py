"""Export plans as torch.distributed.pipelining's compute-only CSV schedule, and read it back.

Format (torch 2.13, ``_PipelineScheduleRuntime._load_csv(path, format="compute_only")``): row r is
the ordered action list of pipeline rank r; each cell is ``_Action.from_str`` text: ``{stage}{kind}
{microbatch}`` with kind F, I, W or B (``0F3``, ``2I1``, ``1W0``, ``0B2``), or an overlapped pair
``({a};{b})OVERLAP_F_B`` whose sub-actions the runtime runs in order. Stage s must feed stage s + 1
and every micro-batch must pass every stage: the runtime adds sends and receives by that rule.
This module does not import torch.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from parplan.errors import InvalidInputError
from parplan.plan import Plan
from parplan.schedule.ir import Action, Schedule

#: torch's computation-type name for an overlapped forward/backward pair.
OVERLAP_F_B = "OVERLAP_F_B"
FUSED_MODES = ("overlap", "split")


def _chain_problem(plan: Plan) -> str | None:
    """Why the pipelining runtime cannot run this plan's stage graph, or None when it can."""
    problem = plan.problem
    n = problem.num_stages
    everything = tuple(range(n))
    for mb in problem.microbatches:
        if tuple(sorted(mb.stages)) != everything:
            return (
                f"micro-batch {mb.index} passes only stages {list(mb.stages)} of 0..{n - 1} "
                f"(placement {problem.placement})"
            )
    for e in problem.edges:
        if e.dst != e.src + 1:
            return f"edge {e.src}->{e.dst} does not join stage s to stage s+1"
    if len(problem.edges) != n - 1:
        return f"{len(problem.edges)} edges for {n} stages (a chain has {n - 1})"
    return None


def _cell(action: Action) -> str:
    if action.is_fused:
        return "(" + ";".join(str(p) for p in action.parts) + ")" + OVERLAP_F_B
    return str(action)


def device_orders(plan: Plan) -> list[list[Action]]:
    """Per device, its actions in execution order (by start time, then end time)."""
    by_device: list[list[tuple[float, float, Action]]] = [[] for _ in plan.problem.devices]
    for t in plan.timed:
        by_device[t.device].append((t.start, t.end, t.action))
    return [[a for _, _, a in sorted(items, key=lambda x: (x[0], x[1]))] for items in by_device]


def to_pipelining_csv(plan: Plan, *, fused: str = "overlap") -> str:
    """The plan as torch.distributed.pipelining's compute-only CSV text.

    One row per device (device d = pipeline rank d), its actions in execution order, cells like
    ``0F3``, ``2I1``, ``1W0``, ``0B2``.

    Parameters
    ----------
    plan
        A chain plan: stage s feeds stage s + 1 and every micro-batch passes every stage (linear,
        interleaved and V placements; any device placement of the stages).
    fused
        How a fused FB action is written. ``"overlap"`` (default) writes torch's overlapped
        action ``(0F3;5B1)OVERLAP_F_B`` (the compute-only format accepts it; torch runs the two
        sub-actions one after the other in that order); ``"split"`` writes its two parts as two
        cells in order, for runtimes older than OVERLAP_F_B.

    Returns
    -------
    str
        CSV text with ``\\n`` line ends; a device without actions gives an empty row.

    Raises
    ------
    InvalidInputError
        When the plan's stage graph is not such a chain (a DAG, or a bidirectional plan where each
        micro-batch passes only half the stages): the pipelining runtime runs chains only.
    """
    if fused not in FUSED_MODES:
        raise InvalidInputError(f"fused: must be one of {', '.join(FUSED_MODES)}, got {fused!r}")
    reason = _chain_problem(plan)
    if reason is not None:
        raise InvalidInputError(
            f"pipelining CSV of plan {plan.name or plan.problem.name!r}: the torch.distributed.pipelining "
            f"runtime runs chains only (stage s feeds stage s+1, every micro-batch passes every stage), "
            f"but {reason}; run this plan with parplan's own executor instead"
        )
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    for order in device_orders(plan):
        row: list[str] = []
        for action in order:
            if action.is_fused and fused == "split":
                row.extend(str(p) for p in action.parts)
            else:
                row.append(_cell(action))
        writer.writerow(row)
    return buf.getvalue()


def write_pipelining_csv(plan: Plan, path: str | Path, *, fused: str = "overlap") -> Path:
    """Write :func:`to_pipelining_csv` of ``plan`` to ``path`` (parent folders are created).

    Parameters
    ----------
    plan, fused
        As in :func:`to_pipelining_csv`.
    path
        Output file, to be loaded with ``_PipelineScheduleRuntime._load_csv(path)``.

    Returns
    -------
    Path
        The written file.
    """
    text = to_pipelining_csv(plan, fused=fused)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _parse_cell(cell: str, where: str) -> Action:
    text = cell.strip()
    if text.startswith("("):
        inner, sep, kind = text[1:].partition(")")
        if not sep or kind != OVERLAP_F_B:
            raise InvalidInputError(
                f"{where}: {cell!r} is not an overlapped action like (0F3;5B1){OVERLAP_F_B}"
            )
        halves = [h for h in inner.split(";") if h.strip()]
        if len(halves) != 2:
            raise InvalidInputError(f"{where}: {cell!r} must overlap exactly two actions, has {len(halves)}")
        return Action.fused(_parse_cell(halves[0], where), _parse_cell(halves[1], where))
    try:
        return Action.parse(text)
    except InvalidInputError:
        raise InvalidInputError(
            f"{where}: {cell!r} is not a compute action like 2F0 (kinds F, I, W, B); "
            "communication actions (SEND_F, RECV_B, UNSHARD, ...) do not belong in a compute-only CSV"
        ) from None


def from_pipelining_csv(text: str, *, name: str = "pipelining-csv") -> Schedule:
    """Read a compute-only pipelining CSV back into per-device orders (the inverse of the export).

    Parameters
    ----------
    text
        CSV text, one row per device.
    name
        Name of the returned schedule.

    Returns
    -------
    Schedule
        ``orders[d]`` is row d; overlapped cells become fused FB actions.

    Raises
    ------
    InvalidInputError
        When a cell is not a compute action; the message names its row and column.
    """
    orders = []
    for row_index, row in enumerate(csv.reader(io.StringIO(text))):
        order = [
            _parse_cell(cell, f"pipelining CSV row {row_index} column {col}")
            for col, cell in enumerate(row)
            if cell.strip()
        ]
        orders.append(order)
    return Schedule.of(name, orders)
