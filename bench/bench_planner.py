"""Planner benchmark: expert schedules versus parplan's plan under each schedule's own peak memory.

``run(quick)`` returns one row per (setting, expert schedule) plus the headline row (DualPipe's own
setting); ``markdown(rows)`` renders them. Bubble ratio = 1 - busy / (devices * makespan); the
bound's bubble uses the proven lower bound as makespan. Run directly: ``python bench/bench_planner.py
[--full]``.
"""

from __future__ import annotations

import sys
import time

from parplan.plan import Plan
from parplan.problem import Device, PipelineProblem
from parplan.schedule.expert import applicable_schedules, build_schedule
from parplan.solve import plan_problem
from parplan.synthetic import synthetic_problem

HEADLINE = dict(pp=8, microbatches=20, placement="bidirectional", costs="F=1,I=1,W=1,FB=3")
HEADLINE_LIMIT = 9.0


def _settings(quick: bool) -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    pps = (4,) if quick else (4, 8)
    costs = ("F=1,I=1,W=1",) if quick else ("F=1,I=1,W=1", "F=1,I=2,W=1")
    for p in pps:
        ms = (2 * p,) if quick else (2 * p, 3 * p)
        for m in ms:
            for c in costs:
                placements = ("linear",) if quick else ("linear", "v", "bidirectional")
                for placement in placements:
                    out.append(dict(pp=p, microbatches=m, placement=placement, costs=c))
    return out


def _bubble(problem: PipelineProblem, makespan: float | None) -> float | None:
    if not makespan:
        return None
    busy = 0.0
    for mb in problem.microbatches:
        for s in mb.stages:
            cost = problem.stages[s].cost
            busy += cost.F + cost.B
    return 1.0 - busy / (problem.num_devices * makespan)


def _with_peaks(problem: PipelineProblem, peaks: tuple[float, ...]) -> PipelineProblem:
    return problem.with_devices(
        [Device(index=d.index, name=d.name, memory_limit=peak) for d, peak in zip(problem.devices, peaks)]
    )


def _row(
    setting: str, problem: PipelineProblem, expert: Plan, time_limit_s: float, workers: int
) -> dict[str, object]:
    limited = _with_peaks(problem, expert.metrics.peak_memory_per_device)
    t0 = time.perf_counter()
    plan = plan_problem(limited, time_limit_s=time_limit_s, workers=workers)
    elapsed = time.perf_counter() - t0
    lb = plan.metrics.lower_bound
    em, pm = expert.metrics, plan.metrics
    expert_idle = max(em.idle_per_device)
    plan_idle = max(pm.idle_per_device)
    return {
        "setting": setting,
        "schedule": expert.name,
        "expert_makespan": em.makespan,
        "expert_bubble": em.bubble_ratio,
        "expert_peak": max(em.peak_memory_per_device),
        "plan_makespan": pm.makespan,
        "plan_bubble": pm.bubble_ratio,
        "plan_peak": max(pm.peak_memory_per_device),
        "bound_makespan": lb,
        "bound_bubble": _bubble(problem, lb),
        "gap": pm.gap,
        "status": plan.solver.status if plan.solver else "",
        "bubble_vs_expert": (pm.bubble_ratio / em.bubble_ratio) if em.bubble_ratio > 1e-12 else None,
        "idle_vs_expert": (plan_idle / expert_idle) if expert_idle > 1e-12 else None,
        "time_s": elapsed,
    }


def run(quick: bool = True) -> list[dict[str, object]]:
    """The planner suite: one row per setting and applicable expert schedule, then the headline.

    Parameters
    ----------
    quick
        A small subset (p=4, m=8, unit costs, linear placement; 10 s per solve; ft06, mk01) instead of
        the full grid (p in 4, 8; m in 2p, 3p; F/I/W 1/1/1 and 1/2/1; linear, v, bidirectional;
        60 s per solve; ft06, mk01 and ft10). The headline always gets 60 s.
    """
    time_limit_s = 10.0 if quick else 60.0
    rows: list[dict[str, object]] = []
    for kw in _settings(quick):
        problem = synthetic_problem(**kw)  # type: ignore[arg-type]
        setting = f"p={kw['pp']} m={kw['microbatches']} {kw['placement']} {kw['costs']}"
        for name, reason in applicable_schedules(problem):
            if reason is not None:
                continue
            expert = Plan.from_schedule(problem, build_schedule(name, problem))
            rows.append(_row(setting, problem, expert, time_limit_s, workers=2))
    rows.append(headline(time_limit_s=60.0))
    rows += fjsp_rows(
        ("ft06.txt", "mk01.fjs") if quick else ("ft06.txt", "mk01.fjs", "ft10.txt"), time_limit_s=time_limit_s
    )
    return rows


def fjsp_rows(files: tuple[str, ...], time_limit_s: float) -> list[dict[str, object]]:
    """Classic job shops (tests/data) through ``parplan fjsp``'s solver: makespan, bound, gap."""
    from pathlib import Path

    from parplan.solve.fjsp import solve_fjsp

    data = Path(__file__).resolve().parent.parent / "tests" / "data"
    rows: list[dict[str, object]] = []
    for name in files:
        result = solve_fjsp(data / name, time_limit_s=time_limit_s, workers=2)
        rows.append(
            {
                "setting": f"job shop {name.split('.')[0]}",
                "schedule": "-",
                "plan_makespan": float(result.makespan),
                "bound_makespan": float(result.lower_bound),
                "gap": result.gap,
                "status": result.status,
                "time_s": result.time_s,
            }
        )
    return rows


def headline(time_limit_s: float = 60.0) -> dict[str, object]:
    """DualPipe's own setting: p=8, m=20, bidirectional, F=I=W=1, F&B=3, 9 activations per device."""
    problem = synthetic_problem(**HEADLINE, memory_limit=HEADLINE_LIMIT)  # type: ignore[arg-type]
    expert = Plan.from_schedule(problem, build_schedule("dualpipe", problem))
    row = _row("headline: DualPipe setting, limit 9", problem, expert, time_limit_s, workers=2)
    row["schedule"] = "dualpipe"
    return row


def _fmt(v: object) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def markdown(rows: list[dict[str, object]]) -> str:
    """A markdown table of ``run`` rows."""
    cols = [
        ("setting", "setting"),
        ("schedule", "expert"),
        ("expert_makespan", "expert makespan"),
        ("expert_bubble", "expert bubble"),
        ("expert_peak", "peak mem"),
        ("plan_makespan", "parplan makespan"),
        ("plan_bubble", "parplan bubble"),
        ("bound_bubble", "bound bubble"),
        ("bound_makespan", "bound"),
        ("gap", "gap"),
        ("status", "status"),
        ("idle_vs_expert", "idle / expert idle"),
        ("time_s", "time s"),
    ]
    pipeline = [r for r in rows if r.get("schedule") not in (None, "-")]
    optimal = sum(1 for r in pipeline if r.get("status") == "optimal")
    worse = sum(1 for r in pipeline if float(r["plan_makespan"]) > float(r["expert_makespan"]) + 1e-9)  # type: ignore[arg-type]
    better = sum(1 for r in pipeline if float(r["plan_makespan"]) < float(r["expert_makespan"]) - 1e-9)  # type: ignore[arg-type]
    lines = [
        "## Planner against the expert schedules (bench_planner)",
        "",
        "Synthetic settings of the papers: for every expert schedule, parplan plans the same problem under",
        "that schedule's own peak memory per device (*peak mem*, in activations). *bound* is the proven lower",
        "bound on the makespan, *gap* = (makespan - bound) / makespan, *idle / expert idle* compares the",
        "summed idle time with the expert schedule's. The headline row is DualPipe's own setting; the job",
        "shops are the OR-Library ft06 / ft10 and Brandimarte's Mk01 (known optima 55, 930, 40).",
        "",
        f"Summary: {len(pipeline)} pipeline runs, {optimal} proven optimal, {better} strictly better than the",
        f"expert schedule, {worse} worse.",
        "",
        "| " + " | ".join(title for _, title in cols) + " |",
        "|" + "|".join("---" for _ in cols) + "|",
    ]
    for r in rows:
        lines.append("| " + " | ".join(_fmt(r.get(key)) for key, _ in cols) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown(run(quick="--full" not in sys.argv)))
