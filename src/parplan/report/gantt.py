"""Gantt charts of plans (PNG or SVG): one row per device, one colour per pass kind.

matplotlib is imported inside the functions (Agg backend), so importing this module stays light.
Bars are drawn as one PolyCollection per colour, not one patch per bar, so that charts with tens of
thousands of actions still render in a few seconds.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from parplan.errors import InvalidInputError
from parplan.plan import Plan
from parplan.schedule.ir import Action

#: Bar colours per pass kind (colour-blind safe hues from the Okabe-Ito palette).
KIND_COLOURS = {
    "F": "#0072B2",  # blue
    "I": "#E69F00",  # orange
    "W": "#009E73",  # green
    "B": "#D55E00",  # vermilion
}
KIND_NAMES = {"F": "F forward", "I": "I backward-input", "W": "W backward-weight", "B": "B full backward"}
#: Background of a device row: the gaps between bars (idle time) show in this colour.
IDLE_COLOUR = "#E6E6E6"
GANTT_SUFFIXES = (".png", ".svg")
DPI = 120
_BAR_HEIGHT = 0.8
# Above this many labels a chart is unreadable anyway and text drawing dominates render time.
_MAX_LABELS = 3000


def time_scale(time_unit: str, span: float) -> tuple[float, str]:
    """Factor to multiply plan times by for display, and the axis unit text.

    Seconds are shown as ms or µs when the whole plan is shorter than a second or a millisecond.
    """
    if time_unit == "s":
        if 0 < span < 1e-3:
            return 1e6, "µs"
        if 0 < span < 1.0:
            return 1e3, "ms"
        return 1.0, "s"
    return 1.0, "time units"


def format_memory(value: float, memory_unit: str) -> str:
    """A memory amount for display: GiB (or MiB below 1 GiB) for byte plans, else units."""
    if memory_unit == "bytes":
        gib = value / 2**30
        if abs(gib) >= 1 or value == 0:
            return f"{gib:.2f} GiB"
        return f"{value / 2**20:.1f} MiB"
    return f"{value:g} units"


def check_suffix(path: Path, allowed: Sequence[str], what: str) -> None:
    """Raise InvalidInputError unless ``path`` ends with one of ``allowed`` suffixes."""
    if path.suffix.lower() not in allowed:
        raise InvalidInputError(
            f"{what} {str(path)!r}: unknown file type {path.suffix or '(none)'!r}; "
            f"use a name ending in {' or '.join(allowed)}"
        )


def plan_label(plan: Plan) -> str:
    """The display name of a plan: its name, else its problem's name, else "plan"."""
    return plan.name or plan.problem.name or "plan"


def route_directions(plan: Plan) -> list[int]:
    """Per micro-batch, 0 or 1: which direction of a bidirectional plan it flows in.

    Micro-batches are grouped by the stages they pass; the route of micro-batch 0 is direction 0 and
    any other route direction 1, so single-route plans are all direction 0.
    """
    routes = [mb.stages for mb in plan.problem.microbatches]
    first = routes[0] if routes else ()
    return [0 if r == first else 1 for r in routes]


def _lighten(colour: str, amount: float) -> tuple[float, float, float]:
    from matplotlib.colors import to_rgb

    r, g, b = to_rgb(colour)
    return (r + (1 - r) * amount, g + (1 - g) * amount, b + (1 - b) * amount)


def _darken(colour: str, amount: float) -> tuple[float, float, float]:
    from matplotlib.colors import to_rgb

    r, g, b = to_rgb(colour)
    return (r * (1 - amount), g * (1 - amount), b * (1 - amount))


def stage_chunks(plan: Plan) -> dict[int, int]:
    """Per stage, its rank among the stages its device runs (0 for the device's first stage).

    Interleaved and V placements put several stages (chunks) on one device; the Gantt chart draws
    the later chunks darker so that they can be told apart.
    """
    on_device: dict[int, set[int]] = {}
    for t in plan.timed:
        for p in t.action.plain():
            on_device.setdefault(t.device, set()).add(p.stage)
    return {s: k for stages in on_device.values() for k, s in enumerate(sorted(stages))}


def _text_colour(rgb: tuple[float, float, float]) -> str:
    # Relative luminance decides between black and white text, so labels stay readable.
    lum = 0.2126 * rgb[0] + 0.7152 * rgb[1] + 0.0722 * rgb[2]
    return "black" if lum > 0.55 else "white"


def write_gantt(plan: Plan, path: str | Path, *, title: str | None = None) -> Path:
    """Draw the plan as a Gantt chart and write it as PNG or SVG (chosen by the file suffix).

    One row per device (device 0 at the top) on a light background, so idle gaps stand out; one
    colour per pass kind; a fused F&B action is drawn as two stacked halves in the colours of its
    two parts (they run overlapped); micro-batches of the second direction of a bidirectional plan
    are drawn lighter and hatched, and a later stage (chunk) of a device with several stages darker.
    Micro-batch numbers are written on the bars that are wide enough.

    Parameters
    ----------
    plan
        The plan to draw.
    path
        Output file; its suffix must be ``.png`` or ``.svg``. Parent folders are created.
    title
        First title line; defaults to the plan's name. A second line always gives the makespan,
        bubble ratio and peak memory.

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
    check_suffix(path, GANTT_SUFFIXES, "Gantt chart")

    # A bare Figure with the Agg canvas: no pyplot, so no global figure registry or backend switch.
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.collections import PolyCollection
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    # Real <text> in SVG files: smaller, selectable and searchable.
    with matplotlib.rc_context({"svg.fonttype": "none"}):
        problem = plan.problem
        n_dev = problem.num_devices
        timed = plan.timed
        t0 = min((t.start for t in timed), default=0.0)
        t0 = min(t0, 0.0)
        t1 = max((t.end for t in timed), default=1.0)
        if t1 <= t0:
            t1 = t0 + 1.0
        scale, unit_text = time_scale(problem.time_unit, t1 - t0)
        directions = route_directions(plan)
        bidirectional = any(directions)
        # Variants of a kind's colour: 0 plain, 1 second direction (lighter, hatched), 2 a later
        # chunk of its device (darker). Bidirectional plans shade by direction only, since there
        # a device's second stage is exactly its second-direction stage.
        chunks = {} if bidirectional else stage_chunks(plan)

        width_in = 14.0
        height_in = min(1.9 + 0.42 * n_dev, 60.0)
        fig = Figure(figsize=(width_in, height_in), dpi=DPI, layout="constrained")
        FigureCanvasAgg(fig)
        ax = fig.subplots()
        # Idle background of every row, then the bars on top of it.
        half = _BAR_HEIGHT / 2
        ax.add_collection(
            PolyCollection(
                [
                    [
                        (t0 * scale, d - half),
                        (t1 * scale, d - half),
                        (t1 * scale, d + half),
                        (t0 * scale, d + half),
                    ]
                    for d in range(n_dev)
                ],
                facecolors=IDLE_COLOUR,
                edgecolors="none",
                zorder=1,
            )
        )
        # Group rectangles by (kind, direction) so that each colour is one collection.
        groups: dict[tuple[str, int], list[list[tuple[float, float]]]] = {}
        labels: list[tuple[float, float, float, float, str, tuple[str, int]]] = []
        for t in timed:
            x0, x1 = t.start * scale, t.end * scale
            y = t.device
            parts: Sequence[Action] = t.action.plain()
            if len(parts) == 1:
                slots = [(y - half, y + half)]
            else:
                # Inverted y axis: the first part (usually the forward) is the upper half.
                slots = [(y - half, y), (y, y + half)]
            for p, (ya, yb) in zip(parts, slots):
                if bidirectional:
                    variant = directions[p.microbatch] if p.microbatch < len(directions) else 0
                else:
                    variant = 2 if chunks.get(p.stage, 0) else 0
                key = (p.kind, variant)
                groups.setdefault(key, []).append([(x0, ya), (x1, ya), (x1, yb), (x0, yb)])
                labels.append((x0, x1, ya, yb, str(p.microbatch), key))

        # Thin white edges separate neighbouring bars of one kind, unless bars are only a few
        # pixels wide, where edges would paint the whole row white.
        axes_px = (width_in - 1.8) * DPI
        px_per_time = axes_px / ((t1 - t0) * scale)
        widths = sorted(x1 - x0 for x0, x1, *_ in labels)
        median_px = widths[len(widths) // 2] * px_per_time if widths else 0.0
        edge_width = 0.6 if median_px >= 6 else 0.0

        colours: dict[tuple[str, int], tuple[float, float, float]] = {}
        for (kind, variant), rects in sorted(groups.items()):
            base = KIND_COLOURS[kind]
            if variant == 1:
                rgb = _lighten(base, 0.45)
            elif variant == 2:
                rgb = _darken(base, 0.35)
            else:
                rgb = _lighten(base, 0.0)
            colours[(kind, variant)] = rgb
            ax.add_collection(
                PolyCollection(
                    rects,
                    facecolors=[rgb],
                    edgecolors="white" if edge_width else "none",
                    linewidths=edge_width,
                    hatch="//" if variant == 1 else None,
                    zorder=2,
                )
            )

        _draw_labels(ax, labels, colours, px_per_time, height_in, n_dev)

        ax.set_xlim(t0 * scale, t1 * scale)
        ax.set_ylim(n_dev - 0.5, -0.5)  # device 0 at the top
        ax.set_yticks(range(n_dev))
        tick_size = 9 if n_dev <= 24 else max(4, int(9 * 24 / n_dev))
        ax.set_yticklabels([_device_label(d.index, d.name) for d in problem.devices], fontsize=tick_size)
        ax.set_ylabel("device")
        ax.set_xlabel(f"time ({unit_text})")
        ax.tick_params(axis="y", length=0)
        for side in ("top", "right", "left"):
            ax.spines[side].set_visible(False)
        ax.grid(axis="x", color="#BBBBBB", linewidth=0.5, alpha=0.6, zorder=0)
        ax.set_axisbelow(True)

        m = plan.metrics
        peak = max(m.peak_memory_per_device, default=0.0)
        makespan = m.makespan * scale
        stats = (
            f"makespan {makespan:.4g} {unit_text}   bubble {m.bubble_ratio:.1%}   "
            f"peak memory {format_memory(peak, problem.memory_unit)}"
        )
        if m.lower_bound is not None:
            stats += f"   lower bound {m.lower_bound * scale:.4g}"
        ax.set_title(f"{title or plan_label(plan)}\n{stats}", loc="left", fontsize=11)

        handles = [
            Patch(facecolor=KIND_COLOURS[k], label=KIND_NAMES[k])
            for k in ("F", "I", "W", "B")
            if any(key[0] == k for key in groups)
        ]
        if any(t.action.is_fused for t in timed):
            handles.append(Patch(facecolor="white", edgecolor="#444444", label="stacked halves = fused F&B"))
        if bidirectional:
            handles.append(
                Patch(facecolor=_lighten("#777777", 0.45), hatch="//", label="second direction (lighter)")
            )
        if any(key[1] == 2 for key in groups):
            handles.append(Patch(facecolor=_darken("#777777", 0.35), label="darker: device's later stage"))
        handles.append(Patch(facecolor=IDLE_COLOUR, label="idle"))
        fig.legend(handles=handles, loc="outside lower center", ncol=len(handles), frameon=False, fontsize=9)

        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=DPI, format=path.suffix[1:].lower())
    return path


def _device_label(index: int, name: str) -> str:
    default = (f"d{index}", f"device {index}", str(index), "")
    return f"device {index}" if name in default else f"{index}: {name}"


def _draw_labels(ax, labels, colours, px_per_time, height_in, n_dev) -> None:  # type: ignore[no-untyped-def]
    """Write micro-batch numbers on bars wide and tall enough for them (none on crowded charts)."""
    row_px = (height_in - 1.9) / max(n_dev, 1) * DPI
    chosen = []
    for x0, x1, ya, yb, text, key in labels:
        font = 8.0 if yb - ya >= _BAR_HEIGHT * 0.9 else 6.5
        text_h_px = font * DPI / 72 * 1.05
        text_w_px = len(text) * font * 0.62 * DPI / 72 + 3
        if (x1 - x0) * px_per_time >= text_w_px and (yb - ya) * row_px >= text_h_px:
            chosen.append((x0, x1, ya, yb, text, key, font))
    if len(chosen) > _MAX_LABELS:
        return
    for x0, x1, ya, yb, text, key, font in chosen:
        ax.text(
            (x0 + x1) / 2,
            (ya + yb) / 2,
            text,
            ha="center",
            va="center",
            fontsize=font,
            color=_text_colour(colours[key]),
            zorder=3,
            clip_on=True,
        )
