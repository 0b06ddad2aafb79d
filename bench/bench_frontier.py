"""Frontier Tracking benchmarks: search time on large models and a TensorOpt-style trade-off table.

Suite ``frontier``: ``run(quick)`` returns one row per case, ``markdown(rows)`` renders them.

* ``speed``: llama-7b on 8 x H100 (target < 10 s on 2 cores) and llama-70b with its 80 layers
  (target < 60 s): search time, number of Pareto points, the two ends of the frontier.
* ``tradeoff``: resnet50, vgg16, gpt2-small, llama-7b and deepseek-v3 on 1, 2, 4, 8 and 16 devices
  of 2 x 8 x H100, a fixed global batch per model: fastest time, least memory per device, number of
  frontier points, the fastest strategy that fits in 80 GB (as in the FT paper's analysis).

Run alone: ``python bench/bench_frontier.py [--quick]``.
"""

from __future__ import annotations

import sys
import time
from typing import Any

#: (model, microbatch_size, microbatches): global batch = microbatch_size x microbatches.
TRADEOFF_MODELS = (
    ("resnet50", 32, 8),
    ("vgg16", 32, 8),
    ("gpt2-small", 8, 16),
    ("llama-7b", 4, 16),
    ("deepseek-v3", 1, 16),
)
DEVICE_COUNTS = (1, 2, 4, 8, 16)


def _row(case: str, model: str, devices: int, f: Any, search_s: float, limit: float) -> dict[str, Any]:
    from parplan.errors import InfeasibleError

    try:
        fit = f.fastest_under(limit)
        fit_time, fit_family = fit.time_s, fit.family
    except InfeasibleError:
        fit_time, fit_family = None, "does not fit"
    return {
        "suite": "frontier",
        "case": case,
        "model": model,
        "devices": devices,
        "microbatches": f.microbatches,
        "search_s": round(search_s, 3),
        "points": len(f),
        "error_bound": round(f.error_bound, 4),
        "fastest_time_s": f.fastest.time_s,
        "fastest_memory_gb": f.fastest.memory_bytes / 1e9,
        "fastest_family": f.fastest.family,
        "least_memory_gb": f.least_memory.memory_bytes / 1e9,
        "least_memory_time_s": f.least_memory.time_s,
        "least_memory_family": f.least_memory.family,
        "fits_80gb_time_s": fit_time,
        "fits_80gb_family": fit_family,
        "distinct_families": len({p.family for p in f.points}),
    }


def run(quick: bool = False) -> list[dict[str, Any]]:
    """Run the suite; ``quick`` keeps it to a few seconds (small models, fewer device counts)."""
    from parplan.cluster_io import load_cluster
    from parplan.frontier import frontier
    from parplan.graph.zoo import build_model

    rows: list[dict[str, Any]] = []
    node = load_cluster("8xh100")
    limit = node.devices[0].memory_bytes
    speed = [("llama-7b", None)] if quick else [("llama-7b", None), ("llama-70b", 80)]
    for model, layers in speed:
        g = build_model(model, microbatch_size=8, num_layers=layers if not quick else 8)
        t0 = time.perf_counter()
        f = frontier(g, node, devices=8, microbatches=4)
        rows.append(
            _row(
                "speed", model if not quick else f"{model} (8 layers)", 8, f, time.perf_counter() - t0, limit
            )
        )

    cluster = load_cluster("2x8xh100")
    models = TRADEOFF_MODELS[:3] if quick else TRADEOFF_MODELS
    counts = (1, 8) if quick else DEVICE_COUNTS
    for model, mbs, mb in models:
        g = build_model(model, microbatch_size=mbs)
        for k in counts:
            t0 = time.perf_counter()
            f = frontier(g, cluster, devices=k, microbatches=mb)
            rows.append(_row("tradeoff", model, k, f, time.perf_counter() - t0, limit))
    return rows


def _fmt_t(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x * 1e3:.1f} ms" if x < 1 else f"{x:.2f} s"


def markdown(rows: list[dict[str, Any]]) -> str:
    """Two tables: search speed, and the time/memory trade-off per model and device count."""
    out = ["### Frontier search speed (8 x H100)", ""]
    out.append(
        "| model | devices | search time | points | fastest | its memory | least memory | its time | bound |"
    )
    out.append("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        if r["case"] != "speed":
            continue
        out.append(
            f"| {r['model']} | {r['devices']} | {r['search_s']:.2f} s | {r['points']} | "
            f"{_fmt_t(r['fastest_time_s'])} ({r['fastest_family']}) | {r['fastest_memory_gb']:.1f} GB | "
            f"{r['least_memory_gb']:.1f} GB ({r['least_memory_family']}) | {_fmt_t(r['least_memory_time_s'])} | "
            f"{r['error_bound']:.3f} |"
        )
    out += ["", "### Time/memory trade-off (2 x 8 x H100, memory per device, one iteration)", ""]
    out.append(
        "| model | devices | points | fastest | its memory | least memory | its time | fastest in 80 GB | search |"
    )
    out.append("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        if r["case"] != "tradeoff":
            continue
        fit = (
            f"{_fmt_t(r['fits_80gb_time_s'])} ({r['fits_80gb_family']})"
            if r["fits_80gb_time_s"] is not None
            else "does not fit"
        )
        out.append(
            f"| {r['model']} | {r['devices']} | {r['points']} | {_fmt_t(r['fastest_time_s'])} "
            f"({r['fastest_family']}) | {r['fastest_memory_gb']:.1f} GB | {r['least_memory_gb']:.2f} GB "
            f"({r['least_memory_family']}) | {_fmt_t(r['least_memory_time_s'])} | {fit} | {r['search_s']:.2f} s |"
        )
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    print(markdown(run(quick="--quick" in sys.argv)))
