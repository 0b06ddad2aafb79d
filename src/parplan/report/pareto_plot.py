"""Pareto plot of a time/memory frontier: points coloured by strategy family, chosen point, memory limit.

matplotlib (Agg) is imported inside :func:`write_pareto_plot` only, so importing this module is cheap.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from parplan.errors import InvalidInputError

if TYPE_CHECKING:
    from parplan.frontier.search import Frontier, FrontierPoint

_FORMATS = (".png", ".svg", ".pdf")


def _family_key(family: str) -> str:
    """A family label without its recompute flag (``"DP4+ZeRO-1+RC"`` -> ``"DP4+ZeRO-1"``).

    Recompute points are drawn hollow instead, so the colours stay few; points whose layers use
    different grids ("17 layers DP8, 15 layers DP4xTP2") share one colour.
    """
    if ", " in family:
        return "mixed per-layer grids"
    return "+".join(p for p in family.split("+") if p != "RC")


def write_pareto_plot(
    frontier: Frontier,
    path: str | Path,
    *,
    chosen: FrontierPoint | None = None,
    memory_limit: float | None = None,
    title: str | None = None,
) -> Path:
    """Draw ``frontier`` as iteration time vs memory per device and save it as PNG, SVG or PDF.

    Parameters
    ----------
    frontier
        The frontier to draw (its points form the step line of the Pareto set).
    path
        Output file; the suffix (case-insensitive) picks the format.
    chosen
        A point to highlight (default: the fastest under ``memory_limit`` when that is given).
    memory_limit
        Per-device memory limit in bytes, drawn as a vertical line with the infeasible side shaded.
    title
        Plot title (default: graph name, device count, number of points).

    Returns
    -------
    Path
        The file written.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in _FORMATS:
        raise InvalidInputError(
            f"pareto plot path {str(path)!r}: unknown format {path.suffix!r}; use .png, .svg or .pdf"
        )
    if not frontier.points:
        raise InvalidInputError("pareto plot: the frontier has no points")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    if chosen is None and memory_limit is not None:
        from parplan.errors import InfeasibleError

        try:
            chosen = frontier.fastest_under(memory_limit)
        except InfeasibleError:
            chosen = None

    pts = frontier.points
    mem_gib = [p.memory_bytes / 2**30 for p in pts]
    time_ms = [p.time_s * 1e3 for p in pts]
    # log axes only when the data spans more than a decade (else they hide the shape)
    log_x = max(mem_gib) / max(min(mem_gib), 1e-12) > 10
    log_y = max(time_ms) / max(min(time_ms), 1e-12) > 10

    fig, ax = plt.subplots(figsize=(7.5, 5.0), dpi=130)
    # the frontier as a staircase: each point rules the region to its upper right
    order = sorted(range(len(pts)), key=lambda i: mem_gib[i])
    ax.step(
        [mem_gib[i] for i in order],
        [time_ms[i] for i in order],
        where="post",
        color="0.75",
        linewidth=1.0,
        zorder=1,
    )
    families: dict[str, list[int]] = {}
    for i, p in enumerate(pts):
        families.setdefault(_family_key(p.family), []).append(i)
    cmap = plt.get_cmap("tab10" if len(families) <= 10 else "tab20")
    markers = "osD^vP*Xh<>"
    for k, (fam, idx) in enumerate(sorted(families.items(), key=lambda kv: -len(kv[1]))):
        color = cmap(k % cmap.N)
        for rc in (False, True):
            sel = [i for i in idx if pts[i].family.endswith("+RC") == rc]
            if not sel:
                continue
            ax.scatter(
                [mem_gib[i] for i in sel],
                [time_ms[i] for i in sel],
                s=36,
                color="white" if rc else color,
                marker=markers[k % len(markers)],
                edgecolors=color if rc else "black",
                linewidths=1.2 if rc else 0.4,
                label=f"{fam} ({len(idx)})" if not rc or len(sel) == len(idx) else None,
                zorder=3,
            )
    # label the two ends of the frontier with their full family name
    for i, ha in ((0, "right"), (len(pts) - 1, "left")):
        ax.annotate(
            pts[i].family,
            (mem_gib[i], time_ms[i]),
            textcoords="offset points",
            xytext=(-8 if ha == "right" else 8, 6),
            ha=ha,
            fontsize=7.5,
            color="0.25",
        )
    if chosen is not None:
        ax.scatter(
            [chosen.memory_bytes / 2**30],
            [chosen.time_s * 1e3],
            s=220,
            facecolors="none",
            edgecolors="crimson",
            linewidths=2.0,
            zorder=4,
            label=f"chosen: {chosen.family}",
        )
    if memory_limit is not None:
        lim = memory_limit / 2**30
        ax.axvline(lim, color="crimson", linestyle="--", linewidth=1.2, zorder=2)
        ax.axvspan(lim, max(max(mem_gib), lim) * 1.05, color="crimson", alpha=0.06, zorder=0)
        ax.annotate(
            f"memory limit {lim:.3g} GiB",
            (lim, 0.5),
            xycoords=("data", "axes fraction"),
            xytext=(-3, 0),
            textcoords="offset points",
            ha="right",
            va="center",
            rotation=90,
            fontsize=8,
            color="crimson",
        )
    if log_x:
        ax.set_xscale("log")
    if log_y:
        ax.set_yscale("log")
    tick = FuncFormatter(lambda v, _: f"{v:,.0f}" if abs(v) >= 100 else f"{v:.3g}")
    ax.xaxis.set_major_formatter(tick)
    ax.yaxis.set_major_formatter(tick)
    ax.set_xlabel("memory per device (GiB)")
    ax.set_ylabel("iteration time (ms)")
    mesh = f", mesh {'x'.join(map(str, frontier.mesh))}" if frontier.mesh else ""
    ax.set_title(
        title
        or f"{frontier.graph_name} on {frontier.devices} devices{mesh}: {len(pts)} Pareto points "
        f"(within {frontier.error_bound:.1%})",
        fontsize=10,
    )
    ax.grid(True, which="both", alpha=0.25)
    if any(p.family.endswith("+RC") for p in pts):
        ax.scatter([], [], s=36, color="white", edgecolors="0.3", linewidths=1.2, label="hollow: + recompute")
    ax.legend(fontsize=8, loc="best", framealpha=0.9, title="strategy family", title_fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format=suffix[1:])
    plt.close(fig)
    return path
