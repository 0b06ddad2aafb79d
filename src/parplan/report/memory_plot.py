"""Memory over time per device (step curves) with each device's memory limit as a dashed line.

matplotlib is imported inside the function (Agg backend), so importing this module stays light.
"""

from __future__ import annotations

from pathlib import Path

from parplan.plan import Plan
from parplan.report.gantt import DPI, GANTT_SUFFIXES, check_suffix, format_memory, plan_label, time_scale
from parplan.simulate import memory_curves

# Up to this many devices each gets its own small panel; beyond, one panel holds every curve.
_MAX_PANELS = 16


def _memory_scale(memory_unit: str, top: float) -> tuple[float, str]:
    if memory_unit == "bytes":
        if top >= 2**30:
            return 1 / 2**30, "GiB"
        return 1 / 2**20, "MiB"
    return 1.0, "units"


def write_memory_plot(plan: Plan, path: str | Path, *, title: str | None = None) -> Path:
    """Plot each device's memory over time as a step curve and write it as PNG or SVG.

    Memory is the device's static memory (parameters, gradients, optimizer state of its stages)
    plus live activations, as computed by :func:`parplan.simulate.memory_curves`. A device's memory
    limit, when it has one, is a dashed line. Byte plans are shown in GiB (MiB when small).

    Parameters
    ----------
    plan
        The plan to plot.
    path
        Output file ending in ``.png`` or ``.svg``; parent folders are created.
    title
        First title line; defaults to the plan's name.

    Returns
    -------
    Path
        The written file.

    Raises
    ------
    InvalidInputError
        When the suffix is neither ``.png`` nor ``.svg``.
    """
    path = Path(path)
    check_suffix(path, GANTT_SUFFIXES, "memory plot")

    # A bare Figure with the Agg canvas: no pyplot, so no global figure registry or backend switch.
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    # Real <text> in SVG files: smaller, selectable and searchable.
    with matplotlib.rc_context({"svg.fonttype": "none"}):
        problem = plan.problem
        n_dev = problem.num_devices
        curves = memory_curves(problem, plan.timed)
        t1 = max((t.end for t in plan.timed), default=1.0)
        t0 = min(0.0, min((t.start for t in plan.timed), default=0.0))
        tscale, tunit = time_scale(problem.time_unit, t1 - t0)
        limits = [d.memory_limit for d in problem.devices]
        top = max([lvl for c in curves for _, lvl in c] + [x for x in limits if x is not None] + [0.0])
        mscale, munit = _memory_scale(problem.memory_unit, top)
        if problem.memory_unit == "unit":
            ylabel = "memory (units of one stage's activation)"
        else:
            ylabel = f"memory ({munit})"

        panels = n_dev <= _MAX_PANELS
        if panels:
            height = min(1.5 + 1.15 * n_dev, 22.0)
            fig = Figure(figsize=(14, height), dpi=DPI, layout="constrained")
            axes = fig.subplots(n_dev, 1, sharex=True, sharey=True, squeeze=False)
            axs = [row[0] for row in axes]
        else:
            fig = Figure(figsize=(14, 7), dpi=DPI, layout="constrained")
            axs = [fig.subplots()] * n_dev
        FigureCanvasAgg(fig)
        cmap = matplotlib.colormaps["tab10" if panels else "viridis"]
        for d, curve in enumerate(curves):
            ax = axs[d]
            colour = cmap(d % 10) if panels else cmap(d / max(n_dev - 1, 1))
            xs = [t * tscale for t, _ in curve] + [t1 * tscale]
            ys = [lvl * mscale for _, lvl in curve]
            ys.append(ys[-1])
            ax.step(xs, ys, where="post", color=colour, linewidth=1.4 if panels else 1.0)
            if not panels:
                continue
            ax.fill_between(xs, ys, step="post", color=colour, alpha=0.12, linewidth=0)
            limit = limits[d]
            if limit is not None:
                ax.axhline(limit * mscale, color="#C0392B", linestyle="--", linewidth=1.1)
            peaks = plan.metrics.peak_memory_per_device
            peak = peaks[d] if d < len(peaks) else max(lvl for _, lvl in curve)
            note = f"device {d}: peak {format_memory(peak, problem.memory_unit)}"
            if limit is not None:
                note += f" / limit {format_memory(limit, problem.memory_unit)}"
            ax.set_title(note, loc="left", fontsize=8.5, pad=3)
            ax.grid(color="#DDDDDD", linewidth=0.5)
            for side in ("top", "right"):
                ax.spines[side].set_visible(False)
        if not panels:
            # Many devices share one panel: one dashed line per distinct limit, a colour bar for
            # the device index instead of a legend with one entry per device.
            for limit in sorted({x for x in limits if x is not None}):
                axs[0].axhline(limit * mscale, color="#C0392B", linestyle="--", linewidth=1.1)
            from matplotlib.cm import ScalarMappable
            from matplotlib.colors import Normalize

            bar = fig.colorbar(
                ScalarMappable(norm=Normalize(0, n_dev - 1), cmap=cmap),
                ax=axs[0],
                fraction=0.03,
                pad=0.01,
            )
            bar.set_label("device")
            from matplotlib.ticker import MaxNLocator

            bar.ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        axs[0].set_xlim(t0 * tscale, t1 * tscale)
        axs[0].set_ylim(0, top * mscale * 1.12 if top > 0 else 1)
        axs[-1].set_xlabel(f"time ({tunit})")
        if panels:
            fig.supylabel(ylabel, fontsize=10)
        else:
            axs[0].set_ylabel(ylabel)
            axs[0].grid(color="#DDDDDD", linewidth=0.5)
        peak_all = max(plan.metrics.peak_memory_per_device, default=0.0)
        head = f"{title or plan_label(plan)}: memory per device"
        stats = f"peak memory {format_memory(peak_all, problem.memory_unit)}"
        if any(x is not None for x in limits):
            stats += "   dashed: device memory limit"
        if panels:
            fig.suptitle(f"{head}\n{stats}", x=0.01, ha="left", fontsize=11)
        else:
            axs[0].set_title(f"{head}\n{stats}", loc="left", fontsize=11)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=DPI, format=path.suffix[1:].lower())
    return path
