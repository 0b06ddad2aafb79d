"""The whole-model frontier against measurement: every strategy train runs, predicted beside measured.

Suite ``train``: gpt-tiny and moe-small on 4 local processes (gloo, sharing this machine's cores),
global batch 4.
First ``parplan calibrate`` (GEMM, stream, all-reduce under load, send/recv with 4 processes) and
``parplan profile`` (per-op times, one process) measure the machine; then every point of the
runnable strategy frontier (``frontier --grid`` restricted to what ``parplan train`` executes) is
trained for ``STEPS`` steps, twice (every point, then every point again), each pass predicted
from a calibration taken just before it and each run from op times profiled just before it.
Reported per point: median step time (after two warm-up steps, slowest process)
beside the calibrated prediction, peak memory per device (tensor accounting: state + saved
activations) beside the prediction of the same components, the loss check against one process, and
over all points the median time error and the Spearman rank correlation of predicted and measured
times, per model. moe-small runs tp = 1 strategies only (its MoE layers have no tensor-parallel
plan in train yet).

Run alone: ``python bench/bench_train.py``.
"""

from __future__ import annotations

import statistics
import sys
from typing import Any

DEVICES = 4
#: (model, steps): moe-small's steps take seconds each on this machine.
MODELS = (("gpt-tiny", 6), ("moe-small", 4))


def _ranks(values: list[float]) -> list[float]:
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2
        i = j + 1
    return ranks


def spearman(a: list[float], b: list[float]) -> float:
    """Spearman's rank correlation (Pearson correlation of the ranks, ties averaged)."""
    ra, rb = _ranks(a), _ranks(b)
    ma, mb = statistics.fmean(ra), statistics.fmean(rb)
    cov = sum((x - ma) * (y - mb) for x, y in zip(ra, rb, strict=True))
    va = sum((x - ma) ** 2 for x in ra) ** 0.5
    vb = sum((y - mb) ** 2 for y in rb) ** 0.5
    return cov / (va * vb) if va and vb else float("nan")


def run(quick: bool = False) -> list[dict[str, Any]]:
    from parplan.cluster_io import cluster_from_json
    from parplan.runtime.calibrate import calibrated_cluster, measure_local
    from parplan.runtime.profile import profile_model
    from parplan.runtime.train import choose_strategy, train

    def calibrate() -> Any:
        return cluster_from_json(calibrated_cluster(DEVICES, measure_local(DEVICES)), where="calibration")

    rows = []
    for model, steps in MODELS:
        # each pass over the points is predicted from a calibration taken right before it
        # (~25 s): the runtime overheads and the cores' sharing drift with the machine's load too;
        # the first pass's also chooses the frontier
        first_cal = calibrate()
        prof = profile_model(model, repeats=5, warmup=2)
        _, _, frontier = choose_strategy(model, first_cal, DEVICES, profile=prof)
        points = list(frontier.points)[: 3 if quick else None]

        def measure(est: Any, check: bool, on: Any, model: str = model, steps: int = steps) -> Any:
            # this shared machine's speed drifts over minutes: each prediction uses op times
            # profiled seconds before its run (the frontier was chosen with the first profile)
            fresh = profile_model(model, repeats=5, warmup=2)
            return train(model, est.strategy, on, steps=steps, progress=False, profile=fresh, check=check)

        first = [measure(est, True, first_cal) for est in points]
        # a second measurement of every point, after all the first ones: how well the measurement
        # itself ranks the points (the ceiling of any prediction's rank correlation)
        again_cal = calibrate()
        again = [measure(est, False, again_cal) for est in points]
        for est, r, r2 in zip(points, first, again, strict=True):
            rows.append(_row(model, est, r, first_cal, r2))
    return rows


def _row(model: str, est: Any, r: Any, cluster: Any, again_s: Any) -> dict[str, Any]:
    measured = (r.measured_step_s + again_s.measured_step_s) / 2
    predicted = (r.predicted_step_s + again_s.predicted_step_s) / 2
    return {
        "suite": "train",
        "model": model,
        "strategy": est.strategy.label(),
        "strategy_text": est.strategy.to_text(),
        "predicted_s": predicted,
        "frontier_s": est.step_s,  # the prediction the choice was made on (first calibration and profile)
        "measured_first_s": r.measured_step_s,
        "measured_again_s": again_s.measured_step_s,
        "measured_s": measured,
        "time_error": measured / predicted - 1,
        "predicted_mem": max(r.predicted_peak_memory_bytes),
        "measured_mem": max(r.measured_peak_memory_bytes),
        "mem_ratio": max(r.measured_peak_memory_bytes) / max(r.predicted_peak_memory_bytes),
        "loss_rel_err": r.max_loss_rel_err,
        "grad_err": r.max_grad_abs_err,
        "calibration": dict(cluster.meta).get("measured") if cluster.meta else None,
    }


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = [
        "## Frontier against measurement",
        "",
        f"gpt-tiny and moe-small, {DEVICES} local processes (gloo on this machine's cores), global batch "
        f"{DEVICES}, every point of the strategy frontier that `parplan train` runs (moe-small: tp = 1), each "
        f"trained for {', '.join(f'{s} ({m})' for m, s in MODELS)} steps after `parplan calibrate` + "
        "`parplan profile` measured the machine. Time: median step after two warm-up steps (slowest process), "
        "measured twice (every point, then every point again), each pass predicted from a calibration taken just "
        "before it and each run from op times profiled just before it (the machine's speed drifts), the error "
        "taken on the means of the two. `frontier` is the prediction the strategy choice ranks the points by "
        "(one calibration and one profile for all of them). "
        "Memory: tensor accounting (state + peak saved activations) against the prediction of the same "
        "components.",
        "",
        "| model | strategy | frontier | predicted step | measured step (1st, 2nd) | time error | predicted memory | "
        "measured memory | memory ratio | loss rel. err | grad err |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['strategy']} | {r['frontier_s'] * 1e3:.1f} ms | {r['predicted_s'] * 1e3:.1f} ms | "
            f"{r['measured_first_s'] * 1e3:.1f}, {r['measured_again_s'] * 1e3:.1f} ms | "
            f"{r['time_error']:+.0%} | {r['predicted_mem'] / 2**20:.1f} MiB | {r['measured_mem'] / 2**20:.1f} MiB | "
            f"{r['mem_ratio']:.2f} | {r['loss_rel_err']:.1e} | {r['grad_err']:.1e} |"
        )
    lines.append("")
    for model, _ in MODELS:
        sub = [r for r in rows if r["model"] == model]
        if not sub:
            continue
        errs = [abs(r["time_error"]) for r in sub]
        rho = spearman([r["predicted_s"] for r in sub], [r["measured_s"] for r in sub])
        rho_frontier = spearman([r["frontier_s"] for r in sub], [r["measured_s"] for r in sub])
        floor = spearman([r["measured_first_s"] for r in sub], [r["measured_again_s"] for r in sub])
        spread = max(r["predicted_s"] for r in sub) / min(r["predicted_s"] for r in sub) - 1
        lines.append(
            f"- {model}: median |time error| {statistics.median(errs):.0%} (target 25%), Spearman rank correlation "
            f"of predicted and measured step times {rho:.2f} over {len(sub)} points, of the frontier's "
            f"predictions and measured {rho_frontier:.2f} (target 0.8; the two "
            f"measurements rank the points alike at {floor:.2f}; predictions span {spread:.0%}), memory ratios "
            f"{min(r['mem_ratio'] for r in sub):.2f}-{max(r['mem_ratio'] for r in sub):.2f} (target within 1.5x)."
        )
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown(run(quick="--quick" in sys.argv)))
