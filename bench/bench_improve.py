"""The improvement search on the Zero Bubble paper's twelve profiled rows (Qi et al., ICLR 2024).

Each input (ZB-H1, ZB-H2, 1F1B, the best list heuristic) is handed to ``improve_schedule`` with a
fixed budget: at memory p for the makespan, at 2p for the longest device span. Reported: the input's
and the result's value, the published ZB-1p / ZB-2p cost, and the time used. Not in ``SUITES`` yet.
"""

from __future__ import annotations

import time

from parplan.plan import Plan
from parplan.schedule.expert import build_schedule
from parplan.solve.api import to_schedule
from parplan.solve.heuristics import best_heuristic
from parplan.solve.improve import improve_schedule
from parplan.solve.model import pipeline_model
from parplan.synthetic import synthetic_problem

#: model, p, m, F, I, W, comm, w (= M_W / M_B), ZB-1p cost, ZB-2p cost (Tables 5 and 6)
ROWS = [
    ("1.5B", 8, 24, 18.522, 18.086, 9.337, 0.601, 0.36641, 1310.37, 1152.59),
    ("1.5B", 8, 32, 18.513, 18.086, 9.331, 0.626, 0.36641, 1678.19, 1475.51),
    ("1.5B", 8, 64, 18.546, 18.097, 9.321, 0.762, 0.36641, 3154.30, 2949.36),
    ("6.2B", 8, 24, 29.718, 29.444, 19.927, 0.527, 0.43243, 2187.55, 1903.66),
    ("6.2B", 8, 32, 29.802, 29.428, 19.530, 0.577, 0.43243, 2814.43, 2525.88),
    ("6.2B", 8, 64, 29.935, 29.621, 19.388, 0.535, 0.43243, 5348.74, 5057.47),
    ("14.6B", 16, 48, 11.347, 11.248, 8.132, 0.377, 0.43243, 1714.40, 1484.69),
    ("14.6B", 16, 64, 11.307, 11.254, 8.101, 0.379, 0.43243, 2201.94, 1973.02),
    ("14.6B", 16, 128, 11.325, 11.308, 8.109, 0.378, 0.43243, 4175.48, 3946.02),
    ("28.3B", 32, 96, 10.419, 10.207, 7.715, 0.408, 0.43243, 3171.39, 2731.11),
    ("28.3B", 32, 128, 10.408, 10.204, 7.703, 0.408, 0.43243, 4075.02, 3634.86),
    ("28.3B", 32, 256, 10.402, 10.248, 7.698, 0.460, 0.43243, 7715.38, 7270.17),
]


def _span(plan: Plan) -> float:
    lo: dict[int, float] = {}
    hi: dict[int, float] = {}
    for t in plan.timed:
        lo[t.device] = min(lo.get(t.device, t.start), t.start)
        hi[t.device] = max(hi.get(t.device, t.end), t.end)
    return max(hi[d] - lo[d] for d in hi)


def run(quick: bool) -> list[dict[str, object]]:
    budget = 2.0 if quick else 10.0
    rows = ROWS[:3] if quick else ROWS
    out: list[dict[str, object]] = []
    for model_name, p, m, f, i, w, comm, wg, zb1, zb2 in rows:
        for objective, mult, published in (("makespan", 1, zb1), ("span", 2, zb2)):
            problem = synthetic_problem(
                pp=p,
                microbatches=m,
                costs=f"F={f},I={i},W={w}",
                comm=comm,
                act_mem=1,
                wgrad_mem=wg,
                memory_limit=mult * p,
            )
            inputs = []
            for name in ("zb-h1", "zb-h2", "1f1b"):
                schedule = build_schedule(name, problem)
                if not Plan.from_schedule(problem, schedule).validate():
                    inputs.append((name, schedule))
            model = pipeline_model(problem)
            best = best_heuristic(model)
            if best is not None:
                inputs.append((f"list-{best[0]}", to_schedule(model, best[1], "list")))
            for name, schedule in inputs:
                measure = (lambda pl: pl.metrics.makespan) if objective == "makespan" else _span
                before = measure(Plan.from_schedule(problem, schedule))
                t0 = time.perf_counter()
                result = improve_schedule(problem, schedule, objective=objective, deadline=t0 + budget)
                used = time.perf_counter() - t0
                after = measure(Plan.from_schedule(problem, result))
                out.append(
                    {
                        "model": model_name, "p": p, "m": m, "objective": objective,
                        "memory": mult * p, "input": name, "before": before, "after": after,
                        "published": published, "time_s": used,
                    }
                )  # fmt: skip
    return out


def markdown(rows: list[dict[str, object]]) -> str:
    lines = [
        "| model | p | m | objective | memory | input | input value | improved | change | ZB published | vs ZB | time (s) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        before, after, pub = float(r["before"]), float(r["after"]), float(r["published"])  # type: ignore[arg-type]
        lines.append(
            f"| {r['model']} | {r['p']} | {r['m']} | {r['objective']} | {r['memory']} | {r['input']} | "
            f"{before:.2f} | {after:.2f} | {(after - before) / before:+.2%} | {pub:.2f} | "
            f"{(after - pub) / pub:+.2%} | {float(r['time_s']):.1f} |"  # type: ignore[arg-type]
        )
    return "\n".join(lines)
