"""The command line: parse options, call the library, render tables or JSON, map errors to exit codes.

Exit codes (DESIGN.md): 0 ok; 2 bad input; 3 infeasible; 4 no solution in time; 1 internal error.
``--json`` prints exactly one JSON document on stdout; everything else (progress, notes) goes to
stderr.
"""

from __future__ import annotations

import json
import math
import re
import sys
import time
from collections.abc import Callable
from dataclasses import fields, replace
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from parplan.errors import InvalidInputError, ParplanError
from parplan.schedule.expert import applicable_schedules
from parplan.spec import ProblemSpec, build_problem, check_num_layers, float8_split


class _Group(typer.core.TyperGroup):
    """The command group; under ``--json`` a usage error (an option typer cannot parse) is a JSON document."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        ctx.meta["parplan_json"] = "--json" in args
        return super().parse_args(ctx, args)  # type: ignore[no-any-return]

    def invoke(self, ctx: Any) -> Any:
        from typer._click.exceptions import UsageError  # typer vendors click

        try:
            return super().invoke(ctx)
        except UsageError as exc:
            if not ctx.meta.get("parplan_json"):
                raise
            param = getattr(exc, "param", None)
            where = param.opts[0] if param is not None and getattr(param, "opts", None) else None
            _emit_json({"error": {"code": exc.exit_code, "message": exc.format_message(), "where": where}})
            raise typer.Exit(exc.exit_code) from None


app = typer.Typer(
    cls=_Group,
    name="parplan",
    help="Plan how a deep-learning model is parallelized across devices, prove how good the plan is, and run it. "
    "plan, compare, frontier and train also read their options from --config job.toml (the command line "
    "wins) and write them with --dump-config FILE.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
out = Console()
if not out.is_terminal:  # piped output: do not squeeze tables into 80 columns
    out = Console(width=150)
err = Console(stderr=True)
_state = {"debug": False}


def _print_version(value: bool) -> None:
    if value:
        from parplan import __version__

        out.print(f"parplan {__version__}", highlight=False)
        raise typer.Exit(0)


@app.callback()
def _root(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks of errors.")] = False,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_print_version, is_eager=True, help="Print the version and exit."),
    ] = False,
) -> None:
    _state["debug"] = debug


# ----------------------------------------------------------------------------- shared options
G_SYN = "Synthetic pipeline"
G_MOD = "Model on a cluster"
G_GR = "Graph"

Pp = Annotated[
    int | None, typer.Option("--pp", help="Pipeline devices (stages per chunk).", rich_help_panel=G_SYN)
]
Mbs = Annotated[
    int | None, typer.Option("--microbatches", "-m", help="Micro-batches per step.", rich_help_panel=G_SYN)
]
Placement = Annotated[
    str | None,
    typer.Option(help="linear | interleaved | v | bidirectional | free.", rich_help_panel=G_SYN),
]
Chunks = Annotated[
    int | None,
    typer.Option(
        "--chunks",
        "--virtual-stages",
        help="Stages per device (interleaved): Megatron's virtual stages per pipeline rank.",
        rich_help_panel=G_SYN,
    ),
]
Costs = Annotated[
    str | None,
    typer.Option(help="Per-stage pass times, e.g. F=1,I=1,W=1[,FB=3] or F=1,B=2.", rich_help_panel=G_SYN),
]
Comm = Annotated[float | None, typer.Option(help="Transfer time between devices.", rich_help_panel=G_SYN)]
ActMem = Annotated[
    float | None, typer.Option(help="Activation memory of one stage and micro-batch.", rich_help_panel=G_SYN)
]
WgradMem = Annotated[
    float | None, typer.Option(help="Part of it kept after I until W.", rich_help_panel=G_SYN)
]
Model = Annotated[str | None, typer.Option(help="Zoo model name or graph JSON file.", rich_help_panel=G_MOD)]
ClusterOpt = Annotated[
    str | None, typer.Option(help="Cluster preset or YAML/JSON file.", rich_help_panel=G_MOD)
]
MbSize = Annotated[int | None, typer.Option(help="Samples per micro-batch.", rich_help_panel=G_MOD)]
SeqLen = Annotated[int | None, typer.Option(help="Tokens per sample.", rich_help_panel=G_MOD)]
NumLayers = Annotated[
    int | None, typer.Option(help="Override the model's layer count.", rich_help_panel=G_MOD)
]
Dtype = Annotated[
    str | None,
    typer.Option(
        help="fp32 | bf16 | fp16 | fp8 (float8 training: the linear layers' GEMMs in fp8, 16-bit storage).",
        rich_help_panel=G_MOD,
    ),
]
DropoutOpt = Annotated[
    bool | None,
    typer.Option(
        "--dropout/--no-dropout",
        help="Transformers: count dropout (masks, traffic) or not (default: the model's own).",
        rich_help_panel=G_MOD,
    ),
]
Profile = Annotated[
    str | None, typer.Option(help="Measured profile JSON (parplan profile).", rich_help_panel=G_MOD)
]
GraphOpt = Annotated[
    str | None, typer.Option("--graph", help="Operator graph JSON file.", rich_help_panel=G_GR)
]
RandomDag = Annotated[
    str | None, typer.Option(help="Random DAG spec, e.g. ops=100,seed=1,width=8.", rich_help_panel=G_GR)
]
Devices = Annotated[int | None, typer.Option(help="Devices to place the graph on.", rich_help_panel=G_GR)]
Groups = Annotated[
    int | None, typer.Option(help="Op groups after merging (default: 2 per device).", rich_help_panel=G_GR)
]
StageCosts = Annotated[
    str | None,
    typer.Option(
        help="Per-stage pass times, one ';'-separated group per stage in stage order, each like --costs "
        "(F, I, W, B, FB) plus A= and Wg= memory; a group lists what differs from --costs, e.g. "
        "';;;F=1.4,W=1.7' for a heavier last of 4 stages.",
        rich_help_panel=G_SYN,
    ),
]
G_FILE = "Problem file"
ProblemFile = Annotated[
    Path | None,
    typer.Option(
        "--problem",
        help="A parplan.plan/1 file (its actions and metrics ignored) or its problem part alone: devices, "
        "stages with their costs and memory, edges, micro-batch routes. Takes no other PROBLEM option; "
        "--memory-limit replaces every device's limit.",
        rich_help_panel=G_FILE,
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")]


def _spec(**kw: Any) -> ProblemSpec:
    return ProblemSpec(**{k: v for k, v in kw.items() if v is not None})


def _fmt(x: float | None, unit: str = "") -> str:
    if x is None:
        return "-"
    if unit == "s":
        if x == 0:
            return "0"
        if abs(x) >= 1:
            return f"{x:.3f} s"
        if abs(x) >= 1e-3:
            return f"{x * 1e3:.3f} ms"
        return f"{x * 1e6:.1f} us"
    if unit == "bytes":  # MiB below 1 GiB: small models would read 0.00 GiB
        return f"{x / 2**30:.2f} GiB" if abs(x) >= 2**30 else f"{x / 2**20:.2f} MiB"
    return f"{x:g}"


def _emit_json(data: object) -> None:
    """Print one strict JSON document on stdout: NaN and infinities become null."""
    sys.stdout.write(json.dumps(_strict(data), indent=1, default=_json_default, allow_nan=False) + "\n")


def _strict(o: object) -> object:
    if isinstance(o, float) and not math.isfinite(o):
        return None
    if isinstance(o, dict):
        return {k: _strict(v) for k, v in o.items()}
    if isinstance(o, list | tuple):
        return [_strict(v) for v in o]
    if hasattr(o, "to_json") and not isinstance(o, type):
        return _strict(o.to_json())
    return o


def _json_default(o: object) -> object:
    if hasattr(o, "to_json"):
        return o.to_json()  # type: ignore[attr-defined]
    if isinstance(o, Path):
        return str(o)
    if isinstance(o, tuple | set | frozenset):
        return list(o)
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


def _json_wanted() -> bool:
    """Whether the running command was given ``--json`` (its error then goes to stdout as JSON)."""
    from typer._click.globals import get_current_context  # typer vendors click

    ctx = get_current_context(silent=True)
    return bool(ctx is not None and ctx.params.get("json_"))


def _fail(code: int, message: str, where: str | None = None, label: str = "error") -> typer.Exit:
    """Print one error line (never read as markup) or, under ``--json``, one error document."""
    if _json_wanted():
        _emit_json({"error": {"code": code, "message": message, "where": where}})
    else:
        err.print(f"[bold red]{label}:[/] {escape(message)}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


_WHERE = (
    re.compile(r"^(--[a-z][\w-]*)"),  # an option: "--costs: ..."
    re.compile(r"^[a-z -]*'([^']+)'"),  # a quoted file: "cluster file 'c.yaml': ..."
    re.compile(r"^(?:invalid plan )?([^\s:]+\.[A-Za-z]\w*)(?::|$)"),  # a path: "p.json: plan.actions[3]: ..."
)


def _where(message: str) -> str | None:
    """The option or file an error message starts with (the ``where`` of a JSON error document)."""
    for pattern in _WHERE:
        m = pattern.match(message)
        if m:
            return m.group(1)
    return None


def _run(fn: Callable[[], None]) -> None:
    """Run a command body; turn every error into one message (or JSON document) and its exit code."""
    try:
        fn()
    except ParplanError as exc:
        if _state["debug"]:
            raise
        raise _fail(exc.exit_code, str(exc), getattr(exc, "where", None) or _where(str(exc))) from None
    except KeyboardInterrupt:
        raise _fail(130, "interrupted") from None
    except UnicodeDecodeError as exc:  # a reader that did not check its encoding: still bad input
        if _state["debug"]:
            raise
        raise _fail(2, f"an input file is not UTF-8 text ({exc.reason} at offset {exc.start})") from None
    except OSError as exc:
        if _state["debug"]:
            raise
        raise _fail(2, str(exc), getattr(exc, "filename", None)) from None
    except typer.Exit:
        raise
    except Exception as exc:
        if _state["debug"]:
            raise
        raise _fail(
            1,
            f"{type(exc).__name__}: {exc} "
            "(a parplan bug: rerun with `parplan --debug ...` for the traceback and report it)",
            label="internal error",
        ) from None


# ----------------------------------------------------------------------------- listings
@app.command()
def schedules(json_: JsonOpt = False) -> None:
    """List the built-in expert schedules."""

    def body() -> None:
        from parplan.schedule.expert import SCHEDULES

        rows: list[dict[str, Any]] = [spec.to_json() for spec in SCHEDULES.values()]
        if json_:
            _emit_json({"schedules": rows})
            return
        t = Table("name", "placement", "backward", "description", title="built-in schedules")
        for r in rows:
            t.add_row(r["name"], r["placement"], "I+W" if r["split_backward"] else "B", r["description"])
        out.print(t)

    _run(body)


@app.command()
def models(json_: JsonOpt = False) -> None:
    """List the built-in model zoo."""

    def body() -> None:
        from parplan.graph.zoo import list_models

        infos = list_models()
        rows: list[dict[str, Any]] = [
            {"name": m.name, "family": m.family, "num_params": m.num_params, "description": m.description}
            for m in infos
        ]
        if json_:
            _emit_json({"models": rows})
            return
        t = Table("name", "family", "parameters", "description", title="model zoo")
        for r in rows:
            t.add_row(
                r["name"],
                r["family"],
                f"{r['num_params'] / 1e9:.3g} B"
                if r["num_params"] >= 1e8
                else f"{r['num_params'] / 1e6:.3g} M",
                r["description"],
            )
        out.print(t)

    _run(body)


@app.command()
def clusters(json_: JsonOpt = False) -> None:
    """List the cluster presets."""

    def body() -> None:
        from parplan.cluster_io import PRESET_PATTERNS, cluster_to_json, list_clusters, load_cluster

        rows: list[dict[str, Any]] = []
        for name, desc in list_clusters():
            c = load_cluster(name)
            rows.append(
                {
                    "name": name,
                    "description": desc,
                    "num_devices": c.num_devices,
                    "cluster": cluster_to_json(c),
                }
            )
        patterns = [{"pattern": k, "description": v} for k, v in PRESET_PATTERNS.items()]
        if json_:
            _emit_json({"clusters": rows, "patterns": patterns})
            return
        t = Table("name", "devices", "description", title="cluster presets")
        for r in rows:
            t.add_row(r["name"], str(r["num_devices"]), r["description"])
        for pat in patterns:
            t.add_row(pat["pattern"], "-", pat["description"])
        out.print(t)

    _run(body)


# ----------------------------------------------------------------------------- compare
def _metrics_table(plans: list[Any], unit: str, mem_unit: str, title: str) -> Table:
    t = Table(
        "schedule",
        "makespan",
        "bubble",
        "max span idle",
        "peak mem (max dev)",
        "peak mem dev0",
        "lower bound",
        "valid",
        title=title,
    )
    for p in plans:
        m = p.metrics
        problems = p.validate()
        bound = "-"
        if m.lower_bound is not None:
            bound = _fmt(m.lower_bound, unit) + (f" ({p.solver.status})" if p.solver else "")
        t.add_row(
            p.name,
            _fmt(m.makespan, unit),
            f"{m.bubble_ratio:.2%}",
            _fmt(max(m.span_idle_per_device), unit),
            _fmt(max(m.peak_memory_per_device), mem_unit),
            _fmt(m.peak_memory_per_device[0], mem_unit),
            bound,
            "yes" if not problems else f"[red]no: {problems[0]}[/]",
        )
    return t


def _write_pictures(
    plan: Any, gantt: Path | None, trace: Path | None, memory: Path | None = None
) -> list[Path]:
    from parplan.report import write_chrome_trace, write_gantt, write_memory_plot

    written = []
    if gantt is not None:
        written.append(write_gantt(plan, gantt))
    if trace is not None:
        written.append(write_chrome_trace(plan, trace))
    if memory is not None:
        written.append(write_memory_plot(plan, memory))
    return written


@app.command()
def compare(
    schedules_: Annotated[
        str | None,
        typer.Option("--schedules", help="Comma-separated schedule names (default: all applicable)."),
    ] = None,
    with_plan: Annotated[bool, typer.Option("--with-plan", help="Also solve with the planner.")] = False,
    time_limit: Annotated[
        float, typer.Option(help="Planner time limit in seconds (with --with-plan).")
    ] = 30.0,
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="Write DIR/NAME.json plan files.")
    ] = None,
    gantt: Annotated[Path | None, typer.Option(help="Write DIR/NAME.png Gantt charts.")] = None,
    trace: Annotated[Path | None, typer.Option(help="Write DIR/NAME.trace.json Chrome traces.")] = None,
    json_: JsonOpt = False,
    pp: Pp = None,
    microbatches: Mbs = None,
    placement: Placement = None,
    chunks: Chunks = None,
    costs: Costs = None,
    stage_costs: StageCosts = None,
    comm: Comm = None,
    act_mem: ActMem = None,
    wgrad_mem: WgradMem = None,
    model: Model = None,
    cluster: ClusterOpt = None,
    microbatch_size: MbSize = None,
    seq_len: SeqLen = None,
    num_layers: NumLayers = None,
    dropout: DropoutOpt = None,
    dtype: Dtype = None,
    profile: Profile = None,
    graph: GraphOpt = None,
    random_dag: RandomDag = None,
    devices: Devices = None,
    groups: Groups = None,
    problem_file: ProblemFile = None,
    memory_limit: Annotated[
        str | None,
        typer.Option(help="Per-device memory limit: bytes with a unit (40GB, 32GiB) or plain units."),
    ] = None,
) -> None:
    """Run expert schedules (and optionally the planner) on one PROBLEM and compare them."""

    def body() -> None:
        from parplan.plan import Plan, plans_table
        from parplan.schedule.expert import SCHEDULES, build_schedule

        spec = _spec(**_problem_kwargs(locals_))
        # A model can be cut for any placement: without --placement, each schedule gets its own.
        auto = placement is None and spec.kind == "model"
        problems: dict[str | None, Any] = {}

        def problem_for(name: str | None) -> Any:
            key = SCHEDULES[name].placement if (auto and name in SCHEDULES) else None
            if key not in problems:
                problems[key] = build_problem(replace(spec, placement=key) if key else spec)
            return problems[key]

        if with_plan:
            _check_solver_options(time_limit)
        if schedules_ is not None and not schedules_.strip(", "):
            raise InvalidInputError(
                "--schedules: empty; give names like gpipe,1f1b or drop the option for all"
            )
        base = problem_for(None)
        _unit_memory_limit(memory_limit, base)
        if with_plan:
            _size_guard(base)
        skipped: list[str] = []
        if schedules_:
            from parplan.schedule.expert import canonical_schedule_name

            names = [canonical_schedule_name(s.strip()) for s in schedules_.split(",") if s.strip()]
            for n in names:
                build_schedule(n, problem_for(n) if n in SCHEDULES else base)  # unknown/precondition
        else:
            names = []
            for n in SCHEDULES:
                try:
                    problem_for(n)
                except ParplanError as exc:
                    skipped.append(f"{n}: {exc}")
                    continue
                why = dict(applicable_schedules(problem_for(n)))[n]
                if why is None:
                    names.append(n)
                else:
                    skipped.append(why)
        plans = [Plan.from_schedule(problem_for(n), build_schedule(n, problem_for(n))) for n in names]
        if with_plan:
            from parplan.solve.api import plan_problem

            same = [p for p in plans if p.problem is base]
            limit = _mem(memory_limit)
            if limit is None and same:
                best = min(same, key=lambda p: p.metrics.makespan)
                limit = max(best.metrics.peak_memory_per_device)
            plans.append(
                plan_problem(base, memory_limit=limit, time_limit_s=time_limit, progress=_progress(json_))
            )
        if not plans:
            raise InvalidInputError(f"compare: no schedule applies to this problem ({'; '.join(skipped)})")
        if not json_:  # notes of a successful comparison (an error above says them in its one line)
            for why in skipped:
                err.print(f"[dim]skipped {escape(why)}[/]", highlight=False)
        _outputs(plans, output, gantt, trace)
        if json_:
            _emit_json({"schedules": plans_table(plans)})
            return
        title = base.name or "compare"
        if auto:
            title = title.replace(f" {base.placement}", "") + " (each schedule on its own placement)"
        out.print(_metrics_table(plans, base.time_unit, base.memory_unit, title))

    locals_ = locals()
    _run(body)


_PROBLEM_KEYS = tuple(f.name for f in fields(ProblemSpec))


def _problem_kwargs(values: dict[str, Any]) -> dict[str, Any]:
    kw = {k: values.get(k) for k in _PROBLEM_KEYS}
    kw["memory_limit"] = _mem(kw["memory_limit"])
    path = values.get("problem_file")
    kw["problem"] = None if path is None else str(path)
    return kw


def _mem(text: str | None, where: str = "--memory-limit") -> float | None:
    """A memory limit: bytes with a unit (40GB, 32GiB) or a plain number (problem units)."""
    from parplan.cluster_io import parse_quantity

    return None if text is None else parse_quantity(text, where, "bytes")


def _check_solver_options(
    time_limit: float | None = None, workers: int | None = None, deterministic: bool = False
) -> None:
    """Refuse nonsense solver options before any work: the limit and thread count the user typed."""
    if time_limit is not None and not 0 < time_limit < math.inf:
        raise InvalidInputError(
            f"--time-limit: must be a positive, finite number of seconds, got {time_limit}"
        )
    if workers is not None and workers < 1:
        raise InvalidInputError(f"--workers: must be >= 1, got {workers}")
    if deterministic and workers not in (None, 1, 2):  # 2 is the default: --deterministic alone means 1
        raise InvalidInputError(
            f"--deterministic runs one worker: drop --workers {workers} or --deterministic"
        )


def _size_guard(problem: Any) -> None:
    """Refuse at once what the planner would refuse after building the problem (same ceiling)."""
    from parplan.solve.api import MAX_TASKS, problem_size

    tasks = problem_size(problem)
    if tasks > MAX_TASKS:
        raise InvalidInputError(
            f"plan: {tasks:,} tasks (stages x micro-batches x passes), beyond the planner's ceiling of "
            f"{MAX_TASKS:,}; use fewer stages or micro-batches (`parplan compare` runs the built-in "
            "schedules)"
        )


def _unit_memory_limit(text: str | None, problem: Any) -> None:
    """``--memory-limit 40GB`` on a problem whose memory is in abstract units is a mistake, not 40e9 units."""
    if text is not None and problem.memory_unit == "unit" and any(c.isalpha() for c in text.strip()):
        raise InvalidInputError(
            f"--memory-limit {text}: this problem counts memory in units of one stage's activation, "
            "not bytes; give a plain number like 4"
        )


def _outputs(plans: list[Any], output: Path | None, gantt: Path | None, trace: Path | None) -> None:
    for p in plans:
        safe = p.name.replace("/", "_") or "plan"
        if output is not None:
            p.write(output / f"{safe}.json")
        _write_pictures(
            p,
            gantt / f"{safe}.png" if gantt is not None else None,
            trace / f"{safe}.trace.json" if trace is not None else None,
        )
    for d, what in ((output, "plans"), (gantt, "Gantt charts"), (trace, "traces")):
        if d is not None:
            err.print(f"wrote {len(plans)} {what} to {d}/", highlight=False)


# ----------------------------------------------------------------------------- plan
def _progress(quiet: bool) -> Callable[..., None] | None:
    """A solver progress callback that prints incumbent, bound, gap and elapsed time to stderr."""
    if quiet or not err.is_terminal:
        return None
    last = {"t": 0.0}

    def show(info: Any = None, *args: Any) -> None:
        now = time.monotonic()
        if now - last["t"] < 0.5:
            return
        last["t"] = now
        if hasattr(info, "incumbent"):
            err.print(
                f"  incumbent {info.incumbent:g}  bound {info.bound:g}  gap {info.gap:.2%}  "
                f"elapsed {info.elapsed_s:.1f}s",
                highlight=False,
            )
        else:
            err.print("  " + " ".join(str(a) for a in (info, *args)), highlight=False)

    return show


@app.command()
def plan(
    objective: Annotated[
        str,
        typer.Option(
            help="makespan | memory | span (longest device span, the Zero Bubble paper's cost) | "
            "utilization (busy / span), alone or comma-separated (lexicographic, e.g. span,makespan) "
            "| weighted."
        ),
    ] = "makespan",
    memory_limit: Annotated[
        str | None,
        typer.Option(help="Per-device memory limit: bytes with a unit (40GB, 32GiB) or plain units."),
    ] = None,
    time_limit: Annotated[float, typer.Option(help="Time limit of the whole command in seconds.")] = 30.0,
    backend: Annotated[str, typer.Option(help="cpsat | highs | gurobi.")] = "cpsat",
    workers: Annotated[int, typer.Option(help="Solver threads.")] = 2,
    fused: Annotated[bool, typer.Option("--fused", help="Allow DualPipe-style fused F&B tasks.")] = False,
    contiguous: Annotated[
        bool,
        typer.Option("--contiguous", help="With --placement free: stages of a chain on devices in order."),
    ] = False,
    devices_per_stage: Annotated[
        int | None,
        typer.Option(
            help="With --model: spread every stage over K devices and choose each stage's intra-operator "
            "strategy (data / tensor / ZeRO / recompute, from the frontier) together with the schedule."
        ),
    ] = None,
    deterministic: Annotated[
        bool, typer.Option(help="One worker, fixed seed: reproducible answers.")
    ] = False,
    output: Annotated[Path | None, typer.Option("-o", "--output", help="Write the plan file.")] = None,
    gantt: Annotated[Path | None, typer.Option(help="Write a Gantt chart (.png or .svg).")] = None,
    trace: Annotated[Path | None, typer.Option(help="Write a Chrome trace (.json).")] = None,
    json_: JsonOpt = False,
    pp: Pp = None,
    microbatches: Mbs = None,
    placement: Placement = None,
    chunks: Chunks = None,
    costs: Costs = None,
    stage_costs: StageCosts = None,
    comm: Comm = None,
    act_mem: ActMem = None,
    wgrad_mem: WgradMem = None,
    model: Model = None,
    cluster: ClusterOpt = None,
    microbatch_size: MbSize = None,
    seq_len: SeqLen = None,
    num_layers: NumLayers = None,
    dropout: DropoutOpt = None,
    dtype: Dtype = None,
    profile: Profile = None,
    graph: GraphOpt = None,
    random_dag: RandomDag = None,
    devices: Devices = None,
    groups: Groups = None,
    problem_file: ProblemFile = None,
) -> None:
    """Solve a PROBLEM with the planner (MIP); never worse than the best applicable expert schedule."""

    def body() -> None:
        from parplan.solve.api import plan_measures, plan_problem

        _check_solver_options(time_limit, workers, deterministic)
        kw = _problem_kwargs(locals_)
        kw["memory_limit"] = None  # applied by the planner so the message can name the limit
        spec = _spec(**kw)
        if devices_per_stage is not None:
            result = _joint(
                spec, devices_per_stage, _mem(memory_limit), time_limit, workers, deterministic, json_
            )
        else:
            problem = build_problem(spec)
            _unit_memory_limit(memory_limit, problem)
            _size_guard(problem)
            if not json_ and err.is_terminal:  # a progress note, like the solver's progress lines
                err.print(
                    f"planning {problem.name}: {problem.num_stages} stages, "
                    f"{problem.num_microbatches} micro-batches, {problem.num_devices} devices",
                    highlight=False,
                )
            result = plan_problem(
                problem,
                objective=objective,
                memory_limit=_mem(memory_limit),
                time_limit_s=time_limit,
                backend=backend,
                workers=workers,
                deterministic=deterministic,
                fused=fused,
                contiguous=contiguous,
                progress=_progress(json_),
            )
        problem = result.problem
        if output is not None:
            result.write(output)
        _write_pictures(result, gantt, trace)
        m = result.metrics
        info = result.solver
        baseline = result.source.get("baseline") if isinstance(result.source, dict) else None
        measures = plan_measures(result)
        doc = {
            "status": info.status if info else "heuristic",
            "makespan": m.makespan,
            "lower_bound": m.lower_bound,
            "gap": m.gap,
            "bubble_ratio": m.bubble_ratio,
            "peak_memory_per_device": list(m.peak_memory_per_device),
            "solve_time_s": info.time_s if info else 0.0,
            "backend": info.backend if info else backend,
            "baseline": baseline,
            "objective": objective,
            "objective_value": info.objective if info else None,
            "objective_bound": info.bound if info else None,
            "longest_span": measures["span"],
            "utilization": measures["utilization"],
        }
        stage_modes = (result.intra_op or {}).get("stages") or []
        if stage_modes:
            doc["stage_strategies"] = [mode.get("family") for mode in stage_modes]
        if json_:
            _emit_json(doc)
            return
        unit, mu = problem.time_unit, problem.memory_unit
        t = Table("", "value", title=f"plan: {problem.name}")
        t.add_row("status", str(doc["status"]))
        t.add_row("makespan", _fmt(m.makespan, unit))
        t.add_row("lower bound", _fmt(m.lower_bound, unit))
        t.add_row("gap", "-" if m.gap is None else f"{m.gap:.2%}")
        t.add_row("bubble ratio", f"{m.bubble_ratio:.2%}")
        t.add_row("longest device span", _fmt(measures["span"], unit))
        t.add_row("utilization (busy / span)", f"{measures['utilization']:.2%}")
        if info is not None and objective not in ("makespan",):
            bound = "" if info.bound is None else f" (bound {info.bound:.6g})"
            t.add_row(f"objective {objective}", f"{info.objective:.6g}{bound}")
        t.add_row("peak memory (max device)", _fmt(max(m.peak_memory_per_device), mu))
        if isinstance(baseline, dict):
            t.add_row(f"baseline ({baseline.get('name')})", _fmt(baseline.get("makespan"), unit))  # type: ignore[arg-type]
        t.add_row("solve time", f"{doc['solve_time_s']:.2f} s ({doc['backend']})")
        for mode in stage_modes:
            t.add_row(f"stage {mode.get('stage')} strategy", str(mode.get("family")))
        out.print(t)
        for path in (output, gantt, trace):
            if path is not None:
                err.print(f"wrote {path}", highlight=False)

    locals_ = locals()
    _run(body)


def _joint(  # type: ignore[no-untyped-def]
    spec: ProblemSpec, devices_per_stage: int, memory_limit, time_limit, workers, deterministic, quiet
):
    """``plan --devices-per-stage``: stage strategies from the frontier, chosen with the schedule."""
    from parplan.cluster_io import load_cluster
    from parplan.graph.zoo import resolve_model
    from parplan.joint import joint_plan

    if spec.kind != "model" or spec.pp is None or spec.microbatches is None or spec.cluster is None:
        raise InvalidInputError(
            "--devices-per-stage: needs a model problem: --model NAME --cluster NAME --pp P --microbatches M"
        )
    if spec.placement not in (None, "linear"):
        raise InvalidInputError("--devices-per-stage: works with --placement linear only")
    profile = None
    if spec.profile:
        from parplan.cost.profile import read_profile

        profile = read_profile(spec.profile)
    options = {k: getattr(spec, k) for k in ("microbatch_size", "seq_len", "num_layers")}
    options["dtype"], gemm_dtype = float8_split(spec.dtype, storage="bf16")
    if options["dtype"] is None and profile is not None:
        options["dtype"] = profile.dtype  # a profile's times hold for the dtype it was measured in
    graph = resolve_model(spec.model or "", **{k: v for k, v in options.items() if v is not None})
    cluster = load_cluster(spec.cluster)
    if not quiet:
        err.print(
            f"planning {graph.name}: {spec.pp} stages x {devices_per_stage} devices, {spec.microbatches} "
            "micro-batches, stage strategies and schedule together",
            highlight=False,
        )
    return joint_plan(
        graph,
        cluster,
        profile=profile,
        pp=spec.pp,
        devices_per_stage=devices_per_stage,
        microbatches=spec.microbatches,
        memory_limit=memory_limit,
        time_limit_s=time_limit,
        dtype=options["dtype"] or "bf16",
        workers=workers,
        deterministic=deterministic,
        gemm_dtype=gemm_dtype,
    )


# ----------------------------------------------------------------------------- check / show
@app.command()
def check(
    plan_file: Annotated[Path, typer.Argument(metavar="PLAN.json", help="A parplan.plan/1 file.")],
    problem_file: Annotated[
        Path | None,
        typer.Option(
            "--problem",
            help="Check the plan's actions against this problem file instead of the plan's own problem "
            "(durations, precedence with communication, memory limits; the plan's claimed metrics are "
            "not compared, they describe its own problem).",
        ),
    ] = None,
    json_: JsonOpt = False,
) -> None:
    """Validate a plan file independently and print its metrics (exit 2 when invalid)."""

    def body() -> None:
        from parplan.plan import read_plan
        from parplan.simulate import compute_metrics, validate

        p = read_plan(plan_file)
        problem, differences = p.problem, []
        if problem_file is None:
            errors = p.validate()
        else:
            from parplan.problem_file import problem_differences, read_problem

            problem = read_problem(problem_file)
            differences = problem_differences(p.problem, problem)
            errors = [str(v) for v in validate(problem, p.timed)]
        real = compute_metrics(problem, p.timed) if not _mismatched(problem, p) else None
        if json_:
            doc: dict[str, Any] = {
                "valid": not errors,
                "errors": errors,
                "makespan": real.makespan if real else None,
                "bubble_ratio": real.bubble_ratio if real else None,
                "peak_memory_per_device": list(real.peak_memory_per_device) if real else None,
            }
            if problem_file is not None:
                doc["problem"] = str(problem_file)
                doc["problem_differences"] = differences
            if errors:
                doc["error"] = {"code": 2, "message": _invalid(plan_file, errors), "where": str(plan_file)}
            _emit_json(doc)
        else:
            if problem_file is not None:
                against = f"against {problem_file}" + (
                    f", which differs from the plan's own problem in: {'; '.join(differences)}"
                    if differences
                    else " (the same problem as the plan's own)"
                )
                err.print(f"checking {plan_file} {against}", highlight=False, markup=False)
            if errors:
                err.print(
                    f"[bold red]error:[/] {escape(_invalid(plan_file, errors))}",
                    highlight=False,
                    soft_wrap=True,
                )
            else:
                out.print(f"[green]valid[/] {escape(str(plan_file))}", highlight=False)
            unit, mu = problem.time_unit, problem.memory_unit
            if real is not None and not errors:
                out.print(
                    f"makespan {_fmt(real.makespan, unit)}, bubble ratio {real.bubble_ratio:.2%}, "
                    f"peak memory per device: {', '.join(_fmt(x, mu) for x in real.peak_memory_per_device)}",
                    highlight=False,
                )
        if errors:
            raise typer.Exit(2)  # an invalid plan is bad input

    _run(body)


def _invalid(plan_file: Path, errors: list[str]) -> str:
    """One line for an invalid plan: its first error and how many follow."""
    more = f" (and {len(errors) - 1} more; --json lists them all)" if len(errors) > 1 else ""
    return f"invalid plan {plan_file}: {errors[0]}{more}"


def _valid_or_refuse(p: Any, plan_file: Path, force: bool = False) -> None:
    """``show`` and ``run`` work on checked plans only: refuse an invalid one with its first error."""
    errors = p.validate()
    if errors and not force:
        raise InvalidInputError(_invalid(plan_file, errors) + "; `parplan check` shows every error")


def _mismatched(problem: Any, plan: Any) -> bool:
    """Whether the plan's actions name devices, stages or micro-batches the problem lacks (no metrics)."""
    return any(
        not 0 <= t.device < problem.num_devices
        or any(
            not (0 <= a.stage < problem.num_stages and 0 <= a.microbatch < problem.num_microbatches)
            for a in t.action.plain()
        )
        for t in plan.timed
    )


@app.command()
def show(
    plan_file: Annotated[Path, typer.Argument(metavar="PLAN.json", help="A parplan.plan/1 file.")],
    gantt: Annotated[Path | None, typer.Option(help="Write a Gantt chart (.png or .svg).")] = None,
    trace: Annotated[Path | None, typer.Option(help="Write a Chrome trace (.json).")] = None,
    memory: Annotated[Path | None, typer.Option(help="Write memory over time (.png or .svg).")] = None,
    csv: Annotated[
        Path | None, typer.Option(help="Write torch.distributed.pipelining's compute-only CSV.")
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Show and export the plan even when the validator rejects it.")
    ] = False,
    json_: JsonOpt = False,
) -> None:
    """Print a plan's per-device orders and write its pictures and exports (valid plans only)."""

    def body() -> None:
        from parplan.plan import read_plan

        p = read_plan(plan_file)
        _valid_or_refuse(p, plan_file, force)
        written = _write_pictures(p, gantt, trace, memory)
        if csv is not None:
            from parplan.report import write_pipelining_csv

            written.append(write_pipelining_csv(p, csv))
        m = p.metrics
        if json_:
            _emit_json(
                {
                    "name": p.name,
                    "metrics": m.to_json(),
                    "orders": [[str(a) for a in order] for order in p.schedule.orders],
                    "written": [str(w) for w in written],
                }
            )
            return
        out.print(
            f"{p.name or plan_file}: makespan {_fmt(m.makespan, p.problem.time_unit)}, "
            f"bubble {m.bubble_ratio:.2%}, {p.problem.num_devices} devices, {len(p.timed)} actions",
            highlight=False,
        )
        text = p.schedule.to_text()
        lines = text.splitlines()
        for line in lines[:64]:
            out.print(line if len(line) < 400 else line[:400] + " ...", highlight=False, markup=False)
        for path in written:
            err.print(f"wrote {path}", highlight=False)

    _run(body)


# ----------------------------------------------------------------------------- export
@app.command()
def export(
    plan_file: Annotated[Path, typer.Argument(metavar="PLAN.json", help="A parplan.plan/1 file.")],
    to: Annotated[str, typer.Option("--to", help="torchtitan | megatron | deepspeed.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Folder to write the files into.")],
    json_: JsonOpt = False,
) -> None:
    """Write a plan as a framework's configuration: torchtitan TOML + schedule CSV, Megatron flags, DeepSpeed JSON.

    What the framework cannot express (a planner order beyond its schedules, per-stage strategies,
    cuts inside a layer, ...) is listed on stderr, one line each.
    """

    def body() -> None:
        from parplan.plan import read_plan
        from parplan.report.export import export_plan

        result = export_plan(read_plan(plan_file), to, output)
        if json_:
            _emit_json(
                {
                    "target": result.target,
                    "written": [str(f) for f in result.files],
                    "unsupported": list(result.unsupported),
                }
            )
        for line in result.unsupported:
            err.print(f"{to} cannot express: {line}", highlight=False, markup=False, soft_wrap=True)
        if not json_:
            for path in result.files:
                err.print(f"wrote {path}", highlight=False)

    _run(body)


# ----------------------------------------------------------------------------- fjsp
@app.command()
def fjsp(
    file: Annotated[
        Path, typer.Argument(metavar="FILE", help="OR-Library job shop or .fjs flexible job shop.")
    ],
    time_limit: Annotated[float, typer.Option(help="Time limit of the whole command in seconds.")] = 30.0,
    workers: Annotated[int, typer.Option(help="Solver threads.")] = 2,
    json_: JsonOpt = False,
) -> None:
    """Solve a standard job-shop benchmark with the planner's core (a public check of the solver)."""

    def body() -> None:
        from parplan.solve.fjsp import solve_fjsp

        _check_solver_options(time_limit, workers)
        _check_job_shop_text(file)
        r = solve_fjsp(file, time_limit_s=time_limit, workers=workers)
        doc = {"makespan": r.makespan, "lower_bound": r.lower_bound, "status": r.status, "time_s": r.time_s}
        if json_:
            _emit_json(doc)
        else:
            out.print(
                f"{file.name}: makespan {r.makespan:g}, lower bound {r.lower_bound:g}, {r.status}, {r.time_s:.2f} s",
                highlight=False,
            )

    _run(body)


def _check_job_shop_text(path: Path) -> None:
    """A job-shop file must be UTF-8 text of finite numbers (the reader takes them as integers)."""
    from parplan.inputs import read_text

    text = read_text(path, "job-shop file")
    for lineno, line in enumerate(text.splitlines(), 1):
        for token in line.split():
            try:
                value = float(token)
            except ValueError:
                continue  # words (an OR-Library comment line): the reader reports them
            if not math.isfinite(value):
                raise InvalidInputError(f"{path}:{lineno}: {token!r} is not a finite number")


# ----------------------------------------------------------------------------- frontier
def _frontier_microbatches(
    graph: Any, microbatches: int | None, global_batch: int | None, devices: int
) -> int:
    """Micro-batches per iteration from -m or --global-batch (samples); default one per device.

    As in Megatron-LM: the global batch is samples per iteration, the micro-batch size is the
    model's (``--microbatch-size``), and data parallelism over ``d`` devices splits the micro-batches.
    With one micro-batch per iteration no data-parallel grid would be legal.
    """
    size = int(graph.meta_dict.get("microbatch_size") or 1)
    if microbatches is not None and microbatches < 1:
        raise InvalidInputError(f"--microbatches: must be >= 1, got {microbatches}")
    if global_batch is None:
        return microbatches if microbatches is not None else max(1, devices)
    if global_batch < 1 or global_batch % size:
        raise InvalidInputError(
            f"--global-batch: {global_batch} samples is not a positive multiple of the micro-batch size {size}"
        )
    if microbatches is not None and microbatches * size != global_batch:
        raise InvalidInputError(
            f"--global-batch {global_batch} and --microbatches {microbatches}: with micro-batch size {size} "
            f"they disagree ({microbatches} x {size} = {microbatches * size}); give one of them"
        )
    return global_batch // size


@app.command()
def frontier(
    model: Annotated[str, typer.Option(help="Zoo model name or graph JSON file.")] = "gpt2-small",
    cluster: Annotated[str, typer.Option(help="Cluster preset or YAML/JSON file.")] = "8xh100",
    devices: Annotated[
        int | None, typer.Option(help="Devices every operator is spread over (default: the whole cluster).")
    ] = None,
    mesh: Annotated[
        str | None, typer.Option(help="Device grid DATAxMODEL, e.g. 2x4 (default: try every grid).")
    ] = None,
    memory_limit: Annotated[
        str | None,
        typer.Option(help="Per-device memory limit, e.g. 40GB: choose the fastest point under it."),
    ] = None,
    time_limit: Annotated[
        str | None,
        typer.Option(help="Iteration time limit, e.g. 0.5s: choose the point with least memory under it."),
    ] = None,
    time_target: Annotated[
        str | None,
        typer.Option(help="Iteration time target, e.g. 2s: find the fewest devices that meet it."),
    ] = None,
    microbatches: Annotated[
        int | None,
        typer.Option(
            "--microbatches",
            "-m",
            help="Micro-batches per iteration (default: global batch / micro-batch size).",
        ),
    ] = None,
    global_batch: Annotated[
        int | None,
        typer.Option(
            help="Samples per iteration (default: one micro-batch per device, so data parallelism is legal)."
        ),
    ] = None,
    epsilon: Annotated[
        float, typer.Option(help="Approximation: every strategy is within 1+eps of a returned point.")
    ] = 0.02,
    checkpointing: Annotated[
        bool, typer.Option(help="Also offer layer-level (full) activation checkpointing per layer.")
    ] = False,
    grid: Annotated[
        bool | None,
        typer.Option(
            "--grid/--operators",
            help="--grid: whole-model strategies (pp x dp x tp, ZeRO, recompute; one per repeated block), what "
            "Megatron-LM, torchtitan and parplan train run. --operators: per-operator strategies (Frontier "
            "Tracking). Default: --grid for transformers unless --mesh, --checkpointing or --epsilon is given.",
        ),
    ] = None,
    profile_: Annotated[
        Path | None,
        typer.Option(
            "--profile",
            help="Measured per-op times (parplan profile) for the estimate (--grid and --operators).",
        ),
    ] = None,
    microbatch_size: MbSize = None,
    seq_len: SeqLen = None,
    num_layers: NumLayers = None,
    dropout: DropoutOpt = None,
    dtype: Dtype = None,
    output: Annotated[Path | None, typer.Option("-o", "--output", help="Write the frontier JSON.")] = None,
    plot: Annotated[Path | None, typer.Option(help="Write the Pareto plot (.png or .svg).")] = None,
    json_: JsonOpt = False,
) -> None:
    """The Pareto frontier of intra-operator strategies: iteration time versus memory per device."""

    def body() -> None:
        from parplan.cluster_io import load_cluster, parse_quantity
        from parplan.frontier import fewest_devices
        from parplan.frontier import frontier as ft
        from parplan.graph.zoo import resolve_model

        storage, gemm_dtype = float8_split(dtype, storage="bf16")
        opts = {
            k: v
            for k, v in {
                "microbatch_size": microbatch_size,
                "seq_len": seq_len,
                "num_layers": num_layers,
                "dtype": storage,
                "dropout": dropout,
            }.items()
            if v is not None
        }
        check_num_layers(num_layers)
        graph = resolve_model(model, **opts)
        cl = load_cluster(cluster)
        mem_limit = _mem(memory_limit)
        if sum(x is not None for x in (time_limit, time_target)) > 1:
            raise InvalidInputError("--time-limit and --time-target: give one of them")
        if memory_limit is not None and time_limit is not None:
            raise InvalidInputError(
                "--memory-limit and --time-limit: each picks one point (fastest under the memory, or least "
                "memory under the time); give one of them"
            )
        mesh_ = _mesh(mesh)
        span = cl.num_devices if time_target is not None or devices is None else devices
        microbatches_ = _frontier_microbatches(graph, microbatches, global_batch, span)
        operator_only = [
            flag
            for flag, given in (
                ("--mesh", mesh is not None),
                ("--checkpointing", checkpointing),
                ("--epsilon", epsilon != 0.02),
            )
            if given
        ]
        use_grid = grid
        if use_grid is None:
            use_grid = not operator_only and any(op.kind == "attention" for op in graph.ops)
        if use_grid:
            if operator_only:
                raise InvalidInputError(
                    f"{operator_only[0]}: an operator-level option; --grid searches meshes and full/selective "
                    "recompute itself. Drop one of them, or give --operators"
                )
            prof = None
            if profile_ is not None:
                from parplan.cost.profile import read_profile

                prof = read_profile(profile_)
            _grid_frontier_command(
                graph,
                cl,
                devices,
                microbatches_,
                mem_limit,
                time_limit,
                time_target,
                output,
                plot,
                json_,
                prof,
                note="whole-model strategies (--grid, what train runs); --operators searches per-operator ones"
                if grid is None
                else None,
                gemm_dtype=gemm_dtype,
            )
            return
        op_profile = None
        if profile_ is not None:
            from parplan.cost.pipeline import check_profile
            from parplan.cost.profile import read_profile

            op_profile = read_profile(profile_)
            check_profile(op_profile, graph, storage or "bf16")  # its times hold for its shapes and dtype
        t0 = time.perf_counter()
        if time_target is not None:
            if devices is not None or mesh_ is not None:
                raise InvalidInputError("--time-target: searches device counts itself; drop --devices/--mesh")
            if checkpointing:
                raise InvalidInputError(
                    "--checkpointing: not searched with --time-target yet; drop one of them"
                )
            target = parse_quantity(time_target, "--time-target", "s")
            choice = fewest_devices(
                graph,
                cl,
                target,
                memory_limit=mem_limit,
                microbatches=microbatches_,
                epsilon=epsilon,
                dtype=storage or "bf16",
                profile=op_profile,
                gemm_dtype=gemm_dtype,
            )
            f, chosen = choice.frontier, choice.point
            if not json_:
                for k, g, best_s in choice.tried:
                    err.print(
                        f"  {k} devices: fastest {_fmt(best_s, 's')}" + (f" (grid {g})" if g else ""),
                        highlight=False,
                    )
        else:
            count = devices if devices is not None else cl.num_devices
            if count > cl.num_devices:
                raise InvalidInputError(
                    f"--devices {count}: cluster {cl.name!r} has only {cl.num_devices} devices"
                )
            f = ft(
                graph,
                cl,
                devices=count,
                microbatches=microbatches_,
                epsilon=epsilon,
                mesh=mesh_,
                dtype=storage or "bf16",
                memory_limit=mem_limit,
                checkpointing=checkpointing,
                profile=op_profile,
                gemm_dtype=gemm_dtype,
            )
            chosen = None
            if mem_limit is not None:
                chosen = f.fastest_under(mem_limit)
            elif time_limit is not None:
                chosen = f.least_memory_under(parse_quantity(time_limit, "--time-limit", "s"))
        elapsed = time.perf_counter() - t0
        if time_target is None and f.devices < cl.num_devices and not json_:
            err.print(
                f"note: {cl.num_devices - f.devices} of the cluster's {cl.num_devices} devices are left idle "
                f"(--devices {f.devices})",
                highlight=False,
            )
        doc = f.to_json(chosen=chosen)
        doc["search_time_s"] = elapsed
        if output is not None:
            output.parent.mkdir(parents=True, exist_ok=True)
            output.write_text(
                json.dumps(_strict(doc), indent=1, default=_json_default, allow_nan=False) + "\n"
            )
        if plot is not None:
            from parplan.report.pareto_plot import write_pareto_plot

            write_pareto_plot(f, plot, chosen=chosen, memory_limit=mem_limit)
        if json_:
            _emit_json(doc)
            return
        t = Table(
            "#",
            "time / iteration",
            "memory / device",
            "strategy family",
            title=f"frontier: {graph.name} on {f.devices} x {cl.devices[0].kind} "
            f"({len(f.points)} points, within {f.error_bound:.1%}, {elapsed:.2f} s)",
        )
        for i, pt in enumerate(f.points):
            mark = "  [bold green]<- chosen[/]" if chosen is not None and pt == chosen else ""
            t.add_row(str(i), _fmt(pt.time_s, "s"), _fmt(pt.memory_bytes, "bytes"), pt.family + mark)
        out.print(t)
        from parplan.cost.memory import MEMORY_COMPONENTS

        mt = Table(
            "#", *(c.replace("_", " ") for c in MEMORY_COMPONENTS), title="memory / device by component"
        )
        for i, pt in enumerate(f.points):
            parts = pt.memory_breakdown.to_json() if pt.memory_breakdown is not None else {}
            mt.add_row(str(i), *(_fmt(parts[c], "bytes") if c in parts else "-" for c in MEMORY_COMPONENTS))
        out.print(mt)
        for path in (output, plot):
            if path is not None:
                err.print(f"wrote {path}", highlight=False)

    _run(body)


def _grid_frontier_command(
    graph: Any,
    cl: Any,
    devices: int | None,
    microbatches: int,
    mem_limit: float | None,
    time_limit: str | None,
    time_target: str | None,
    output: Path | None,
    plot: Path | None,
    json_: bool,
    profile: Any = None,
    note: str | None = None,
    gemm_dtype: str | None = None,
) -> None:
    """``frontier --grid``: the whole-model strategy frontier (parplan.frontier.grid)."""
    extra: dict[str, Any] = {"profile": profile}
    if gemm_dtype is not None:
        extra["gemm_dtype"] = gemm_dtype
    from parplan.cluster_io import parse_quantity
    from parplan.cost.memory import MEMORY_COMPONENTS
    from parplan.frontier.grid import fewest_devices_grid, grid_frontier

    b = int(graph.meta_dict.get("microbatch_size") or 1)
    gb = microbatches * b
    t0 = time.perf_counter()
    chosen = None
    if time_target is not None:
        if devices is not None:
            raise InvalidInputError("--time-target: searches device counts itself; drop --devices")
        choice = fewest_devices_grid(
            graph,
            cl,
            parse_quantity(time_target, "--time-target", "s"),
            global_batch=gb,
            memory_limit=mem_limit,
            **extra,
        )
        f, chosen = choice.frontier, choice.point
        if not json_:
            for k, best in choice.tried:
                err.print(
                    f"  {k} devices: fastest fitting {_fmt(best, 's') if best else 'none fits'}",
                    highlight=False,
                )
    else:
        count = devices if devices is not None else cl.num_devices
        f = grid_frontier(graph, cl, count, global_batch=gb, memory_limit=mem_limit, **extra)
        if mem_limit is not None:
            chosen = f.fastest_under(mem_limit)
        elif time_limit is not None:
            chosen = f.least_memory_under(parse_quantity(time_limit, "--time-limit", "s"))
    elapsed = time.perf_counter() - t0
    if note and not json_:
        err.print(note, highlight=False)
    idle = cl.num_devices - f.devices
    if idle and time_target is None and not json_:
        err.print(
            f"note: {idle} of the cluster's {cl.num_devices} devices are left idle (--devices {f.devices})",
            highlight=False,
        )
    doc = f.to_json(chosen=chosen)
    doc["search_time_s"] = elapsed
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(_strict(doc), indent=1, default=_json_default, allow_nan=False) + "\n")
    if plot is not None:
        from parplan.report.pareto_plot import write_pareto_plot

        write_pareto_plot(
            f.as_frontier(),
            plot,
            chosen=f.point(chosen) if chosen is not None else None,
            memory_limit=mem_limit,
            title=f"{graph.name}: whole-model strategies on {f.devices} x {cl.devices[0].kind}",
        )
    if json_:
        _emit_json(doc)
        return
    t = Table(
        "#",
        "strategy",
        "step time",
        "memory / device",
        "MFU",
        "tokens/s/device",
        "fits",
        title=f"strategy frontier: {graph.name} on {f.devices} x {cl.devices[0].kind}, global batch "
        f"{f.global_batch} ({len(f.points)} points of {len(f.evaluated)} strategies, {elapsed:.2f} s)",
    )
    for i, e in enumerate(f.points):
        mark = "  [bold green]<- chosen[/]" if chosen is not None and e is chosen else ""
        t.add_row(
            str(i),
            e.strategy.label() + mark,
            _fmt(e.step_s, "s"),
            _fmt(e.memory.total, "bytes"),
            f"{e.mfu:.0%}",
            f"{e.tokens_per_s_per_device:,.0f}",
            "yes" if e.memory.total <= f.memory_limit else "no",
        )
    out.print(t)
    mt = Table("#", *(c.replace("_", " ") for c in MEMORY_COMPONENTS), title="memory / device by component")
    for i, e in enumerate(f.points):
        parts = e.memory.to_json()
        mt.add_row(str(i), *(_fmt(parts[c], "bytes") for c in MEMORY_COMPONENTS))
    out.print(mt)
    for path in (output, plot):
        if path is not None:
            err.print(f"wrote {path}", highlight=False)


def _mesh(text: str | None) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        dims = tuple(int(x) for x in text.lower().split("x"))
    except ValueError:
        dims = ()
    if not dims or any(d < 1 for d in dims):
        raise InvalidInputError(f"--mesh: cannot read {text!r}; write DATAxMODEL like 2x4")
    return dims


# ----------------------------------------------------------------------------- profile / run
@app.command()
def profile(
    model: Annotated[
        str, typer.Option(help="A zoo model with a torch twin: gpt-tiny, moe-small, multimodal-small.")
    ] = "gpt-tiny",
    microbatch_size: Annotated[int, typer.Option(help="Samples per micro-batch.")] = 1,
    seq_len: SeqLen = None,
    num_layers: NumLayers = None,
    repeats: Annotated[int, typer.Option(help="Timed repetitions per pass (the median is kept).")] = 5,
    warmup: Annotated[int, typer.Option(help="Untimed repetitions first.")] = 2,
    device: Annotated[str, typer.Option(help="cpu or cuda[:N].")] = "cpu",
    output: Annotated[Path, typer.Option("-o", "--output", help="Profile JSON to write.")] = Path(
        "profile.json"
    ),
    json_: JsonOpt = False,
) -> None:
    """Measure per-operator F, I, W times and activation memory with torch; plans use it via --profile."""

    def body() -> None:
        from parplan.cost.profile import write_profile
        from parplan.runtime.profile import profile_model

        t0 = time.perf_counter()
        prof = profile_model(
            model,
            microbatch_size=microbatch_size,
            seq_len=seq_len,
            num_layers=num_layers,
            repeats=repeats,
            warmup=warmup,
            device=device,
        )
        write_profile(prof, output)
        doc = prof.to_json()
        if json_:
            _emit_json(doc)
            return
        ops = dict(prof.ops)
        total = {k: sum(getattr(o, k) or 0.0 for o in ops.values()) for k in ("F", "I", "W")}
        out.print(
            f"profiled {len(ops)} ops of {model} on {device} in {time.perf_counter() - t0:.1f} s: "
            f"F {_fmt(total['F'], 's')}, I {_fmt(total['I'], 's')}, W {_fmt(total['W'], 's')} per micro-batch",
            highlight=False,
        )
        err.print(f"wrote {output} (use it with --cluster local --profile {output})", highlight=False)

    _run(body)


@app.command()
def trace(
    factory: Annotated[
        str, typer.Argument(metavar="FILE.py:FACTORY", help="FACTORY() -> (module, inputs[, loss_fn]).")
    ],
    output: Annotated[Path, typer.Option("-o", "--output", help="Graph JSON to write.")] = Path("graph.json"),
    name: Annotated[str | None, typer.Option(help="Graph name (default: the module's class).")] = None,
    json_: JsonOpt = False,
) -> None:
    """Trace your own PyTorch module (with its loss) into a graph file that plan/compare/frontier read."""

    def body() -> None:
        from parplan.graph.io import write_graph
        from parplan.runtime.user_model import load_factory, trace_user_model

        t0 = time.perf_counter()
        graph = trace_user_model(load_factory(factory), name=name)
        write_graph(graph, output)
        meta = graph.meta_dict
        params = sum(op.param_bytes for op in graph.ops)
        doc = {"graph": str(output), "name": graph.name, "ops": graph.num_ops, "edges": len(graph.edges)}
        doc |= {"param_bytes": params, "dtype": meta.get("dtype"), "trace_s": time.perf_counter() - t0}
        if json_:
            _emit_json(doc)
            return
        out.print(
            f"traced {graph.name}: {graph.num_ops} ops, {len(graph.edges)} edges, "
            f"{_fmt(params, 'bytes')} of {meta.get('dtype')} parameters in {doc['trace_s']:.1f} s",
            highlight=False,
        )
        err.print(
            f"wrote {output} (plan it with --graph {output} --cluster local --devices N)", highlight=False
        )

    _run(body)


@app.command()
def run(
    plan_file: Annotated[
        Path | None, typer.Argument(metavar="[PLAN.json]", help="A plan file (or give a PROBLEM).")
    ] = None,
    schedule: Annotated[
        str | None, typer.Option(help="With a PROBLEM: run this expert schedule instead of the planner.")
    ] = None,
    backend: Annotated[str, typer.Option(help="gloo (CPU) or nccl (GPU).")] = "gloo",
    engine: Annotated[str, typer.Option(help="auto | parplan | pipelining.")] = "auto",
    steps: Annotated[int, typer.Option(help="Measured steps (median reported).")] = 3,
    timeout: Annotated[float, typer.Option(help="Seconds allowed for every transfer and collective.")] = 60.0,
    time_limit: Annotated[float, typer.Option(help="Planner time limit when planning a PROBLEM.")] = 10.0,
    trace: Annotated[Path | None, typer.Option(help="Write the measured Chrome trace (.json).")] = None,
    json_: JsonOpt = False,
    pp: Pp = None,
    microbatches: Mbs = None,
    placement: Placement = None,
    chunks: Chunks = None,
    model: Model = None,
    cluster: ClusterOpt = None,
    microbatch_size: MbSize = None,
    seq_len: SeqLen = None,
    num_layers: NumLayers = None,
    profile_: Annotated[
        str | None, typer.Option("--profile", help="Measured profile JSON.", rich_help_panel=G_MOD)
    ] = None,
) -> None:
    """Run a plan for real on torch.distributed (one process per device) and compare with its prediction."""

    def body() -> None:
        from parplan.plan import Plan, read_plan
        from parplan.runtime import run_plan

        if steps < 1:
            raise InvalidInputError(f"--steps: must be >= 1, got {steps}")
        if not 0 < timeout < math.inf:
            raise InvalidInputError(f"--timeout: must be a positive, finite number of seconds, got {timeout}")
        if plan_file is None:
            _check_solver_options(time_limit)
        if plan_file is not None:
            given = [k for k, v in problem_opts.items() if v is not None] + (["schedule"] if schedule else [])
            if given:
                raise InvalidInputError(
                    f"{', '.join('--' + g.replace('_', '-') for g in given)}: not used with a plan file; "
                    "give either PLAN.json or a PROBLEM"
                )
            p = read_plan(plan_file)
            _valid_or_refuse(p, plan_file)
        else:
            if model is None:
                raise InvalidInputError(
                    "run: give PLAN.json, or a PROBLEM like --model gpt-tiny --cluster local --pp 2 --microbatches 4"
                )
            spec = _spec(**{**problem_opts, "profile": profile_})
            problem = build_problem(spec)
            if schedule:
                from parplan.schedule.expert import build_schedule

                p = Plan.from_schedule(problem, build_schedule(schedule, problem))
            else:
                from parplan.solve.api import plan_problem

                _size_guard(problem)
                p = plan_problem(problem, time_limit_s=time_limit, progress=_progress(json_))
        if not json_:
            err.print(
                f"running {p.name or 'plan'} on {p.problem.num_devices} processes ({backend}) ...",
                highlight=False,
            )
        r = run_plan(p, backend=backend, engine=engine, steps=steps, timeout_s=timeout, trace=trace)
        if json_:
            _emit_json(r.to_json())
            return
        t = Table("", "value", title=f"run: {p.name or plan_file} ({r.engine} engine, {r.backend})")
        t.add_row("measured step (median)", _fmt(r.measured_step_s, "s"))
        t.add_row(
            "predicted step",
            _fmt(r.predicted_step_s, "s") if p.problem.time_unit == "s" else "- (unit costs)",
        )
        if r.step_error is not None and p.problem.time_unit == "s":
            t.add_row("prediction error", f"{r.step_error:+.1%}")
        t.add_row(
            "loss / single-process loss",
            f"{r.loss:.6f} / {r.ref_loss:.6f}" if r.ref_loss is not None else f"{r.loss:.6f}",
        )
        t.add_row(
            "max |grad - reference grad|", "-" if r.max_grad_abs_err is None else f"{r.max_grad_abs_err:.2e}"
        )
        t.add_row("peak memory per device", ", ".join(_fmt(x, "bytes") for x in r.peak_memory_per_device))
        out.print(t)
        if r.trace_path:
            err.print(f"wrote {r.trace_path}", highlight=False)

    problem_opts = {
        "pp": pp,
        "microbatches": microbatches,
        "placement": placement,
        "chunks": chunks,
        "model": model,
        "cluster": cluster,
        "microbatch_size": microbatch_size,
        "seq_len": seq_len,
        "num_layers": num_layers,
    }
    _run(body)


@app.command()
def calibrate(
    devices: Annotated[int, typer.Option(help="Processes to measure with (as train runs them).")] = 4,
    repeats: Annotated[int, typer.Option(help="Repetitions per measurement (timed back to back).")] = 20,
    output: Annotated[
        Path, typer.Option("-o", "--output", help="Cluster file to write (.json or .yaml).")
    ] = Path("cluster.json"),
    json_: JsonOpt = False,
) -> None:
    """Measure this machine with N processes (GEMM, memory bandwidth, all-reduce, send/recv) into a cluster file."""

    def body() -> None:
        from parplan.cluster_io import cluster_from_json, write_cluster
        from parplan.runtime.calibrate import calibrated_cluster, measure_local

        doc = calibrated_cluster(devices, measure_local(devices, repeats=repeats))
        write_cluster(cluster_from_json(doc, where="calibration"), output)
        if json_:
            _emit_json(doc)
            return
        m = doc["meta"]["measured"]
        t = Table("measured (per process, all at once)", "value", title=f"calibration: {devices} processes")
        t.add_row(
            "GEMM fp32 " + "x".join(map(str, m["gemm_shape"])),
            f"{m['gemm_flops_per_process'] / 1e9:.2f} GFLOP/s",
        )
        t.add_row("memory stream", f"{m['stream_Bps_per_process'] / 1e9:.2f} GB/s")
        t.add_row("all-reduce latency (ring step)", _fmt(m["allreduce_latency_s"], "s"))
        t.add_row("all-reduce bandwidth", f"{m['allreduce_bandwidth_Bps'] / 1e9:.2f} GB/s")
        if "p2p_latency_s" in m:
            t.add_row("send/recv latency", _fmt(m["p2p_latency_s"], "s"))
            t.add_row("send/recv bandwidth", f"{m['p2p_bandwidth_Bps'] / 1e9:.2f} GB/s")
        out.print(t)
        err.print(f"wrote {output} (use it with --cluster {output})", highlight=False)

    _run(body)


@app.command()
def train(
    model: Annotated[
        str,
        typer.Option(
            help="A model train has a torch twin of: gpt-tiny, moe-small (tp = 1), or a Hugging Face "
            "config.json of a decoder (its twin by shape, random weights; tp for non-gated dense ones)."
        ),
    ] = "gpt-tiny",
    cluster: Annotated[
        str, typer.Option(help="Cluster for the prediction and the choice: local:N runs N processes here.")
    ] = "local:4",
    devices: Annotated[
        int | None, typer.Option(help="Devices to train on (default: the strategy's, else the cluster's).")
    ] = None,
    strategy: Annotated[
        str | None,
        typer.Option(
            help='Run this strategy, e.g. "pp=1,dp=2,tp=2,zero=1,recompute=full" or "pp=2,dp=2,schedule=plan" '
            "(the planner's pipeline order); default: chosen from the frontier."
        ),
    ] = None,
    memory_limit: Annotated[
        str | None, typer.Option(help="Choose the fastest strategy predicted under this memory per device.")
    ] = None,
    time_target: Annotated[
        str | None, typer.Option(help="Choose the least-memory strategy predicted to meet this step time.")
    ] = None,
    steps: Annotated[int, typer.Option(help="Training steps (AdamW).")] = 3,
    global_batch: Annotated[
        int | None, typer.Option(help="Samples per step (default: one micro-batch per device).")
    ] = None,
    lr: Annotated[float, typer.Option(help="AdamW learning rate.")] = 1e-3,
    seed: Annotated[int, typer.Option(help="Weights and data seed (shared with the --check run).")] = 0,
    check: Annotated[
        bool, typer.Option(help="Compare losses and gradients with the same steps in one process.")
    ] = True,
    backend: Annotated[str, typer.Option(help="gloo (CPU) or nccl (GPU).")] = "gloo",
    timeout: Annotated[float, typer.Option(help="Seconds allowed for every collective.")] = 120.0,
    print_torchrun: Annotated[
        bool, typer.Option(help="Print the torchrun command that runs this job on the cluster, and exit.")
    ] = False,
    calibrate_: Annotated[
        bool,
        typer.Option(
            "--calibrate",
            help="Measure this machine first (parplan calibrate and parplan profile) and predict with the result.",
        ),
    ] = False,
    profile_: Annotated[
        Path | None,
        typer.Option("--profile", help="Measured per-op times (parplan profile) for the prediction."),
    ] = None,
    microbatch_size: MbSize = None,
    seq_len: SeqLen = None,
    num_layers: NumLayers = None,
    dropout: DropoutOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Train for real on a whole-model strategy (DDP, FSDP2, DTensor TP/SP, checkpointing) and compare with its prediction."""

    def body() -> None:
        from parplan.cluster_io import load_cluster, parse_quantity
        from parplan.runtime.train import check_model, check_strategy, choose_strategy, torchrun_command
        from parplan.runtime.train import train as run_train
        from parplan.strategy import parse_strategy

        check_model(model)

        options = {
            k: v
            for k, v in {
                "microbatch_size": microbatch_size,
                "seq_len": seq_len,
                "num_layers": num_layers,
                "dropout": dropout,
            }.items()
            if v is not None
        }
        check_num_layers(num_layers)
        if not 0 < timeout < math.inf:
            raise InvalidInputError(f"--timeout: must be a positive, finite number of seconds, got {timeout}")
        cl = load_cluster(cluster)
        if calibrate_:
            from parplan.cluster_io import cluster_from_json
            from parplan.runtime.calibrate import calibrated_cluster, measure_local

            if cl.devices[0].kind != "cpu":
                raise InvalidInputError(
                    f"--calibrate: measures this machine; use --cluster local:N, not {cl.name!r}"
                )
            count = (
                parse_strategy(strategy).num_devices if strategy is not None else (devices or cl.num_devices)
            )
            cl = cluster_from_json(calibrated_cluster(count, measure_local(count)), where="calibration")
            if not json_:
                err.print(f"calibrated {cl.name}", highlight=False)
        prof = None
        if profile_ is not None:
            from parplan.cost.profile import read_profile

            prof = read_profile(profile_)
        elif calibrate_:
            from parplan.runtime.profile import profile_model

            prof = profile_model(
                model,
                microbatch_size=microbatch_size or 1,
                seq_len=seq_len,
                num_layers=num_layers,
                repeats=5,
                warmup=2,
            )
        mem = _mem(memory_limit)
        target = parse_quantity(time_target, "--time-target", "s") if time_target is not None else None
        if strategy is not None:
            for flag, given in (("--memory-limit", mem is not None), ("--time-target", target is not None)):
                if given:
                    raise InvalidInputError(
                        f"{flag}: chooses a strategy, but --strategy names one; give one of them"
                    )
            chosen = parse_strategy(strategy)
            check_strategy(chosen, model)
            if devices is not None and devices != chosen.num_devices:
                raise InvalidInputError(
                    f"--devices {devices}: strategy {chosen.to_text()!r} uses {chosen.num_devices} devices"
                )
            how = "--strategy"
        else:
            count = devices if devices is not None else cl.num_devices
            if count > cl.num_devices:
                raise InvalidInputError(
                    f"--devices {count}: cluster {cl.name!r} has {cl.num_devices} devices"
                )
            chosen, how, _ = choose_strategy(
                model,
                cl,
                count,
                model_options=options,
                global_batch=global_batch,
                memory_limit=mem,
                time_target=target,
                profile=prof,
            )
            if not json_:
                err.print(f"chose {chosen.label()} ({chosen.to_text()}): {how}", highlight=False)
        if print_torchrun:
            out.print(
                torchrun_command(model, chosen, cl, options=options, steps=steps, global_batch=global_batch),
                highlight=False,
                soft_wrap=True,
            )
            return
        result = run_train(
            model,
            chosen,
            cl,
            model_options=options,
            steps=steps,
            global_batch=global_batch,
            lr=lr,
            seed=seed,
            backend=backend,
            timeout_s=timeout,
            check=check,
            progress=True,
            chosen_by=how,
            profile=prof,
        )
        doc = result.to_json()
        if json_:
            _emit_json(doc)
            return
        t = Table(
            "step",
            "loss",
            "one-process loss",
            "step time",
            title=f"train {model}: {chosen.label()} on {cl.name}",
        )
        refs = result.ref_losses or [None] * result.steps
        for k, (loss, ref, st) in enumerate(zip(result.losses, refs, result.step_times_s, strict=True)):
            t.add_row(str(k + 1), f"{loss:.6f}", "-" if ref is None else f"{ref:.6f}", _fmt(st, "s"))
        out.print(t)
        cmp_t = Table("", "measured", "predicted", "ratio", title="against the prediction")
        cmp_t.add_row(
            "step time (median)",
            _fmt(result.measured_step_s, "s"),
            _fmt(result.predicted_step_s, "s"),
            f"{result.measured_step_s / result.predicted_step_s:.2f}x",
        )
        for phase in ("compute", "grad_sync", "optimizer", "other"):
            got = result.measured_phase_s[phase]
            want = result.predicted_phase_s[phase]
            cmp_t.add_row(
                f"  {phase.replace('_', ' ')}",
                _fmt(got, "s"),
                _fmt(want, "s"),
                f"{got / want:.2f}x" if want else "-",
            )
        peak = max(result.measured_peak_memory_bytes)
        pred = max(result.predicted_peak_memory_bytes)
        cmp_t.add_row("peak memory / device", _fmt(peak, "bytes"), _fmt(pred, "bytes"), f"{peak / pred:.2f}x")
        for comp in ("parameters", "gradients", "optimizer_state", "activations"):
            got = max(m[comp] for m in result.measured_memory)
            want = result.predicted_memory[comp]
            cmp_t.add_row(
                f"  {comp.replace('_', ' ')}",
                _fmt(got, "bytes"),
                _fmt(want, "bytes"),
                f"{got / want:.2f}x" if want else "-",
            )
        out.print(cmp_t)
        if result.max_grad_abs_err is not None:
            err.print(
                f"check against one process: max |grad error| {result.max_grad_abs_err:.3g}, "
                f"max loss relative error {result.max_loss_rel_err:.3g}",
                highlight=False,
            )
        err.print(f"memory: {result.memory_method}", highlight=False)
        for note in result.notes:
            err.print(f"note: {note}", highlight=False)

    _run(body)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the `parplan` command (``--config`` / ``--dump-config`` are expanded first)."""
    from parplan.cli_config import expand_argv

    try:
        args, dumped = expand_argv(sys.argv[1:] if argv is None else argv, app)
    except ParplanError as exc:
        err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        raise SystemExit(exc.exit_code) from None
    if dumped is not None:
        err.print(f"wrote {dumped}", highlight=False)
        raise SystemExit(0)
    app(args=args)


if __name__ == "__main__":
    main()
