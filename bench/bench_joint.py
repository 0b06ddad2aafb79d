"""Joint planning benchmarks: stage strategies and schedule chosen together vs one after the other.

Suite ``joint``: ``run(quick)`` returns one row per (case, memory limit), ``markdown(rows)`` renders
them. llama-7b (micro-batch 4 x 2048 tokens, 8 micro-batches) on 8 x H100, cut into ``pp`` stages of
``8 / pp`` devices; each stage's modes are its Frontier-Tracking points (DP / TP+SP / ZeRO / RC).
For each per-device memory limit:

* ``joint``: :func:`parplan.joint.plan_modes`, branch and bound over mode vectors, each scheduled by
  the planner under the limit;
* ``alone``: each stage's fastest mode that fits the limit with one micro-batch of activations,
  then the planner's best schedule (it may have to keep fewer micro-batches in flight);
* ``1f1b``: each stage's fastest mode that fits with 1F1B's in-flight activations (``pp - s`` on
  stage ``s``), then the planner.

Run alone: ``python bench/bench_joint.py [--quick]``.
"""

from __future__ import annotations

import sys
import time
from typing import Any

GB = 1e9

#: (pp, memory limits in GB per device): from loose (every fastest mode fits 1F1B) to tight.
CASES = (
    (2, (80.0, 32.0, 30.0, 27.0, 24.0, 22.0)),
    (4, (80.0, 34.0, 30.0, 26.0, 22.0)),
)
QUICK_CASES = ((2, (80.0, 30.0, 26.0)),)


def _families(plan: Any) -> str:
    return " / ".join(f"{s['family']}#{s['mode']}" for s in plan.intra_op["stages"])


def _summary(plan: Any | None) -> dict[str, Any]:
    if plan is None:
        return {
            "makespan_s": None,
            "lower_bound_s": None,
            "families": "infeasible",
            "peak_gb": None,
            "choice": None,
        }
    return {
        "makespan_s": plan.metrics.makespan,
        "lower_bound_s": plan.metrics.lower_bound,
        "families": _families(plan),
        "peak_gb": [round(x / GB, 2) for x in plan.metrics.peak_memory_per_device],
        "choice": plan.source["joint"]["choice"],
    }


def run(quick: bool = False) -> list[dict[str, Any]]:
    """Run the suite; ``quick`` keeps to pp=2 and three limits (about a minute)."""
    from parplan.cluster_io import load_cluster
    from parplan.errors import InfeasibleError
    from parplan.graph.zoo import build_model
    from parplan.joint import plan_modes, plan_sequential_modes, stage_mode_table

    graph = build_model("llama-7b", microbatch_size=4, seq_len=2048)
    cluster = load_cluster("8xh100")
    microbatches = 8
    budget, per_solve = (20.0, 2.0) if quick else (60.0, 4.0)
    rows: list[dict[str, Any]] = []
    for pp, limits in QUICK_CASES if quick else CASES:
        dps = cluster.num_devices // pp
        t0 = time.perf_counter()
        problem, modes = stage_mode_table(
            graph, cluster, pp=pp, devices_per_stage=dps, microbatches=microbatches
        )
        modes_s = time.perf_counter() - t0
        for limit_gb in limits:
            limit = limit_gb * GB
            row: dict[str, Any] = {
                "suite": "joint",
                "model": "llama-7b",
                "pp": pp,
                "devices_per_stage": dps,
                "microbatches": microbatches,
                "modes_per_stage": [len(ms) for ms in modes],
                "modes_s": round(modes_s, 2),
                "limit_gb": limit_gb,
            }
            for rule in ("alone", "1f1b"):
                try:
                    seq = plan_sequential_modes(
                        problem, modes, memory_limit=limit, rule=rule, time_limit_s=2 * per_solve
                    )
                except InfeasibleError:
                    seq = None
                row[rule] = _summary(seq)
            t1 = time.perf_counter()
            try:
                joint = plan_modes(
                    problem, modes, memory_limit=limit, time_limit_s=budget, solve_time_s=per_solve
                )
            except InfeasibleError:
                joint = None
            row["joint"] = _summary(joint)
            row["joint_s"] = round(time.perf_counter() - t1, 2)
            if joint is not None:
                info = joint.source["joint"]
                row["joint_lower_bound_s"] = joint.metrics.lower_bound
                row["joint_gap"] = joint.metrics.gap
                row["vectors"] = info["vectors"]
                row["unfit"] = info["unfit"]
                row["scheduled"] = info["scheduled"]
                row["pruned"] = info["pruned"]
                row["timed_out"] = info["timed_out"]
            rows.append(row)
    return rows


def _ms(x: float | None) -> str:
    return "-" if x is None else f"{x * 1e3:.1f}"


def _seq(s: dict[str, Any]) -> str:
    if s["makespan_s"] is None:
        return "-"
    return f"{_ms(s['makespan_s'])} ({_ms(s['lower_bound_s'])})"


def _gain(base: float | None, joint: float | None) -> str:
    if base is None or joint is None:
        return "-"
    return f"{(base / joint - 1) * 100:+.1f}%"


def markdown(rows: list[dict[str, Any]]) -> str:
    """One table of makespans per limit, one of the chosen strategy families."""
    out = [
        "### Joint strategy + schedule vs sequential (llama-7b, 8 x H100, 8 micro-batches of 4 x 2048)",
        "",
        "Makespan of one iteration in ms. `alone`: each stage's fastest frontier mode that fits with one",
        "micro-batch of activations, then the best schedule; `1f1b`: fastest mode that fits 1F1B's",
        "in-flight activations, then the best schedule; `joint`: modes and schedule searched together",
        "(branch and bound over mode vectors; `bound` holds over all of them). Gain = sequential / joint - 1.",
        "Sequential makespans are followed by the planner's lower bound for their fixed modes in",
        "brackets: where the two meet, no schedule of those modes does better, however long the search.",
        "",
        "| pp x devices | limit GB | alone | 1f1b | joint | bound | gain vs alone | gain vs 1f1b | vectors (unfit/scheduled/pruned) | joint time |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        j, a, f = r["joint"], r["alone"], r["1f1b"]
        vec = (
            f"{r['vectors']} ({r['unfit']}/{r['scheduled']}/{r['pruned']})"
            + (" timed out" if r.get("timed_out") else "")
            if "vectors" in r
            else "-"
        )
        out.append(
            f"| {r['pp']} x {r['devices_per_stage']} | {r['limit_gb']:.0f} | {_seq(a)} | "
            f"{_seq(f)} | {_ms(j['makespan_s'])} | {_ms(r.get('joint_lower_bound_s'))} | "
            f"{_gain(a['makespan_s'], j['makespan_s'])} | {_gain(f['makespan_s'], j['makespan_s'])} | "
            f"{vec} | {r['joint_s']:.1f} s |"
        )
    out += [
        "",
        "Chosen strategy family per stage, `#k` = k-th point of the stage's frontier (0 = fastest),",
        "and the peak memory per device in GB:",
        "",
        "| pp | limit GB | alone | 1f1b | joint |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        cells = []
        for key in ("alone", "1f1b", "joint"):
            s = r[key]
            cells.append(
                s["families"] + (f" ({', '.join(f'{x:.1f}' for x in s['peak_gb'])})" if s["peak_gb"] else "")
            )
        out.append(f"| {r['pp']} | {r['limit_gb']:.0f} | " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    print(markdown(run(quick="--quick" in sys.argv)))
