"""`make demo`: the main job on built-in defaults, writing its pictures to one folder.

1. llama-7b on 8 H100s, 4 pipeline stages, 16 micro-batches: every applicable expert schedule and
   parplan's plan, side by side, with Gantt charts, memory curves and Chrome traces.
2. DualPipe's own setting (8 devices, 20 micro-batches, F=I=W=1, F&B=3): DualPipe against the
   planner under DualPipe's peak memory.
3. The time-memory frontier of llama-7b's intra-operator strategies on 8 H100s.
4. The frontier of its whole-model strategies (pp x dp x tp, ZeRO, recompute), estimated term by
   term: what ``parplan train`` runs.

Usage: python -m parplan.demo [OUT_DIR] [--time-limit S]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from parplan.numeric import within_limit

console = Console()


def _row(table: Table, name: str, m, unit: str, mem_unit: str) -> None:  # type: ignore[no-untyped-def]
    from parplan.cli import _fmt

    table.add_row(
        name,
        _fmt(m.makespan, unit),
        f"{m.bubble_ratio:.1%}",
        _fmt(max(m.peak_memory_per_device), mem_unit),
        "-" if m.lower_bound is None else _fmt(m.lower_bound, unit),
    )


def _pictures(plan, out: Path, stem: str) -> None:  # type: ignore[no-untyped-def]
    from parplan.report import write_chrome_trace, write_gantt, write_memory_plot

    write_gantt(plan, out / f"{stem}.gantt.png")
    write_memory_plot(plan, out / f"{stem}.memory.png")
    write_chrome_trace(plan, out / f"{stem}.trace.json")
    plan.write(out / f"{stem}.plan.json")


def _pipeline_case(  # type: ignore[no-untyped-def]
    title: str, problem, names, out: Path, stem: str, time_limit: float, memory_of: str
) -> None:
    """Expert schedules side by side, then the planner under ``memory_of``'s peak memory."""
    from parplan.plan import Plan
    from parplan.schedule.expert import build_schedule
    from parplan.solve.api import plan_problem

    table = Table("schedule", "makespan", "bubble", "peak memory", "lower bound", title=title)
    plans = {n: Plan.from_schedule(problem, build_schedule(n, problem)) for n in names}
    for n, p in plans.items():
        _row(table, n, p.metrics, problem.time_unit, problem.memory_unit)
        _pictures(p, out, f"{stem}-{n}")
    ref = plans[memory_of]
    limit = max(ref.metrics.peak_memory_per_device)
    t0 = time.perf_counter()
    planned = plan_problem(problem, memory_limit=limit, time_limit_s=time_limit)
    solve_s = time.perf_counter() - t0
    _row(table, f"parplan (memory <= {ref.name})", planned.metrics, problem.time_unit, problem.memory_unit)
    _pictures(planned, out, f"{stem}-parplan")
    console.print(table)
    same_memory = [p for p in plans.values() if within_limit(max(p.metrics.peak_memory_per_device), limit)]
    best = min(same_memory, key=lambda p: p.metrics.makespan)
    status = planned.solver.status if planned.solver else "heuristic"
    console.print(
        f"  planner: {status} in {solve_s:.1f} s; bubble {planned.metrics.bubble_ratio:.1%} against "
        f"{best.metrics.bubble_ratio:.1%} for the best expert schedule within the same memory ({best.name})",
        highlight=False,
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="parplan demo")
    ap.add_argument("out", nargs="?", default="out/demo")
    ap.add_argument("--time-limit", type=float, default=10.0, help="planner seconds per case")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()

    from parplan.cluster_io import load_cluster
    from parplan.cost.pipeline import model_problem
    from parplan.frontier import frontier
    from parplan.graph.zoo import build_model
    from parplan.report.pareto_plot import write_pareto_plot
    from parplan.synthetic import synthetic_problem

    # 1. a realistic model: the linear-placement schedules, then the planner within 1F1B's memory
    cluster = load_cluster("8xh100")
    problem = model_problem(build_model("llama-7b", seq_len=4096), cluster, pp=4, microbatches=16)
    _pipeline_case(
        "llama-7b (seq 4096), 4 x H100, 16 micro-batches",
        problem,
        ["gpipe", "1f1b", "zb-h1", "zb-h2"],
        out,
        "llama7b",
        args.time_limit,
        "1f1b",
    )

    # 2. DualPipe's own setting, within DualPipe's memory
    dp = synthetic_problem(pp=8, microbatches=20, placement="bidirectional", costs="F=1,I=1,W=1,FB=3")
    _pipeline_case(
        "DualPipe's setting: 8 devices, 20 micro-batches, F=I=W=1, F&B=3",
        dp,
        ["dualpipe"],
        out,
        "dualpipe",
        args.time_limit,
        "dualpipe",
    )

    # 3. the time-memory frontier of intra-operator strategies
    t0 = time.perf_counter()
    f = frontier(build_model("llama-7b", microbatch_size=8), cluster, devices=8, microbatches=4)
    chosen = f.fastest_under(40e9)
    write_pareto_plot(f, out / "llama7b.frontier.png", chosen=chosen, memory_limit=40e9)
    fast, lean = f.fastest, f.least_memory
    console.print(
        f"frontier: llama-7b on 8 x H100, 4 micro-batches of 8 ({time.perf_counter() - t0:.1f} s): "
        f"{len(f.points)} Pareto points from {fast.family} ({fast.time_s * 1e3:.0f} ms, "
        f"{fast.memory_bytes / 2**30:.1f} GiB) to {lean.family} ({lean.time_s * 1e3:.0f} ms, "
        f"{lean.memory_bytes / 2**30:.1f} GiB); fastest under 40 GB: {chosen.family}",
        highlight=False,
    )
    # 4. the frontier of whole-model strategies (pp x dp x tp, ZeRO, recompute), what train runs
    from parplan.frontier.grid import grid_frontier

    t0 = time.perf_counter()
    g = grid_frontier(build_model("llama-7b"), cluster, 8, global_batch=64)
    pick = g.fastest_under(40e9)
    write_pareto_plot(
        g.as_frontier(),
        out / "llama7b.grid.png",
        chosen=g.point(pick),
        memory_limit=40e9,
        title="llama-7b: whole-model strategies on 8 x h100",
    )
    console.print(
        f"strategy frontier: llama-7b on 8 x H100, global batch 64 ({time.perf_counter() - t0:.1f} s): "
        f"{len(g.points)} of {len(g.evaluated)} strategies, from {g.fastest.strategy.label()} "
        f"({g.fastest.step_s:.2f} s/step, {g.fastest.memory.total / 2**30:.1f} GiB) to "
        f"{g.least_memory.strategy.label()} ({g.least_memory.step_s:.2f} s, "
        f"{g.least_memory.memory.total / 2**30:.1f} GiB); fastest under 40 GB: {pick.strategy.label()}",
        highlight=False,
    )
    console.print(f"[green]demo done in {time.perf_counter() - t_start:.0f} s[/]; pictures in {out}/")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
