"""Export plans as torch.distributed.pipelining's compute-only CSV schedule, and read it back.

Format (torch 2.13, ``_PipelineScheduleRuntime._load_csv(path, format="compute_only")``): row r is
the ordered action list of pipeline rank r; each cell is ``_Action.from_str`` text: ``{stage}{kind}
{microbatch}`` with kind F, I, W or B (``0F3``, ``2I1``, ``1W0``, ``0B2``), or an overlapped pair
``({a};{b})OVERLAP_F_B`` whose sub-actions the runtime runs in order. Stage s must feed stage s + 1
and every micro-batch must pass every stage: the runtime adds sends and receives by that rule.
This module does not import torch.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from parplan.errors import InvalidInputError
from parplan.plan import Plan
from parplan.schedule.ir import Action, Schedule

#: torch's computation-type name for an overlapped forward/backward pair.
OVERLAP_F_B = "OVERLAP_F_B"
FUSED_MODES = ("overlap", "split")


def _chain_problem(plan: Plan) -> str | None:
    """Why the pipelining runtime cannot run this plan's stage graph, or None when it can."""
    problem = plan.problem
    n = problem.num_stages
    everything = tuple(range(n))
    for mb in problem.microbatches:
        if tuple(sorted(mb.stages)) != everything:
            return (
                f"micro-batch {mb.index} passes only stages {list(mb.stages)} of 0..{n - 1} "
                f"(placement {problem.placement})"
            )
    for e in problem.edges:
        if e.dst != e.src + 1:
            return f"edge {e.src}->{e.dst} does not join stage s to stage s+1"
    if len(problem.edges) != n - 1:
        return f"{len(problem.edges)} edges for {n} stages (a chain has {n - 1})"
    return None


def _cell(action: Action) -> str:
    if action.is_fused:
        return "(" + ";".join(str(p) for p in action.parts) + ")" + OVERLAP_F_B
    return str(action)


def device_orders(plan: Plan) -> list[list[Action]]:
    """Per device, its actions in execution order (by start time, then end time)."""
    by_device: list[list[tuple[float, float, Action]]] = [[] for _ in plan.problem.devices]
    for t in plan.timed:
        by_device[t.device].append((t.start, t.end, t.action))
    return [[a for _, _, a in sorted(items, key=lambda x: (x[0], x[1]))] for items in by_device]


def to_pipelining_csv(plan: Plan, *, fused: str = "overlap") -> str:
    """The plan as torch.distributed.pipelining's compute-only CSV text.

    One row per device (device d = pipeline rank d), its actions in execution order, cells like
    ``0F3``, ``2I1``, ``1W0``, ``0B2``.

    Parameters
    ----------
    plan
        A chain plan: stage s feeds stage s + 1 and every micro-batch passes every stage (linear,
        interleaved and V placements; any device placement of the stages).
    fused
        How a fused FB action is written. ``"overlap"`` (default) writes torch's overlapped
        action ``(0F3;5B1)OVERLAP_F_B`` (the compute-only format accepts it; torch runs the two
        sub-actions one after the other in that order); ``"split"`` writes its two parts as two
        cells in order, for runtimes older than OVERLAP_F_B.

    Returns
    -------
    str
        CSV text with ``\\n`` line ends; a device without actions gives an empty row.

    Raises
    ------
    InvalidInputError
        When the plan's stage graph is not such a chain (a DAG, or a bidirectional plan where each
        micro-batch passes only half the stages): the pipelining runtime runs chains only.
    """
    if fused not in FUSED_MODES:
        raise InvalidInputError(f"fused: must be one of {', '.join(FUSED_MODES)}, got {fused!r}")
    reason = _chain_problem(plan)
    if reason is not None:
        raise InvalidInputError(
            f"pipelining CSV of plan {plan.name or plan.problem.name!r}: the torch.distributed.pipelining "
            f"runtime runs chains only (stage s feeds stage s+1, every micro-batch passes every stage), "
            f"but {reason}; run this plan with parplan's own executor instead"
        )
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    for order in device_orders(plan):
        row: list[str] = []
        for action in order:
            if action.is_fused and fused == "split":
                row.extend(str(p) for p in action.parts)
            else:
                row.append(_cell(action))
        writer.writerow(row)
    return buf.getvalue()


def write_pipelining_csv(plan: Plan, path: str | Path, *, fused: str = "overlap") -> Path:
    """Write :func:`to_pipelining_csv` of ``plan`` to ``path`` (parent folders are created).

    Parameters
    ----------
    plan, fused
        As in :func:`to_pipelining_csv`.
    path
        Output file, to be loaded with ``_PipelineScheduleRuntime._load_csv(path)``.

    Returns
    -------
    Path
        The written file.
    """
    text = to_pipelining_csv(plan, fused=fused)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _parse_cell(cell: str, where: str) -> Action:
    text = cell.strip()
    if text.startswith("("):
        inner, sep, kind = text[1:].partition(")")
        if not sep or kind != OVERLAP_F_B:
            raise InvalidInputError(
                f"{where}: {cell!r} is not an overlapped action like (0F3;5B1){OVERLAP_F_B}"
            )
        halves = [h for h in inner.split(";") if h.strip()]
        if len(halves) != 2:
            raise InvalidInputError(f"{where}: {cell!r} must overlap exactly two actions, has {len(halves)}")
        return Action.fused(_parse_cell(halves[0], where), _parse_cell(halves[1], where))
    try:
        return Action.parse(text)
    except InvalidInputError:
        raise InvalidInputError(
            f"{where}: {cell!r} is not a compute action like 2F0 (kinds F, I, W, B); "
            "communication actions (SEND_F, RECV_B, UNSHARD, ...) do not belong in a compute-only CSV"
        ) from None


def from_pipelining_csv(text: str, *, name: str = "pipelining-csv") -> Schedule:
    """Read a compute-only pipelining CSV back into per-device orders (the inverse of the export).

    Parameters
    ----------
    text
        CSV text, one row per device.
    name
        Name of the returned schedule.

    Returns
    -------
    Schedule
        ``orders[d]`` is row d; overlapped cells become fused FB actions.

    Raises
    ------
    InvalidInputError
        When a cell is not a compute action; the message names its row and column.
    """
    orders = []
    for row_index, row in enumerate(csv.reader(io.StringIO(text))):
        order = [
            _parse_cell(cell, f"pipelining CSV row {row_index} column {col}")
            for col, cell in enumerate(row)
            if cell.strip()
        ]
        orders.append(order)
    return Schedule.of(name, orders)


# ============================================================================ framework configurations
#: Frameworks ``export_plan`` writes configurations for.
TARGETS = ("torchtitan", "megatron", "deepspeed")
#: The schedule CSV written beside ``torchtitan.toml``.
TORCHTITAN_CSV = "torchtitan_schedule.csv"
#: torchtitan's module names of the zoo's non-layer operators (its llama-style decoders).
_TITAN_FQN = {"embed": "tok_embeddings", "ln_f": "norm", "head": "output"}
_LAYER = re.compile(r"^layer(\d+)(\.|$)")


@dataclass(frozen=True, slots=True, kw_only=True)
class Parallelism:
    """The intra-operator strategy a framework applies to every stage alike."""

    dp: int = 1
    tp: int = 1
    sequence_parallel: bool = False
    zero: int = 0
    recompute: str = "none"  # none | selective (some operators recomputed)


@dataclass(frozen=True, slots=True, kw_only=True)
class ExportResult:
    """Files written by :func:`export_plan` and what the target cannot express (one line each)."""

    target: str
    files: tuple[Path, ...]
    unsupported: tuple[str, ...]


def _stage_parallelism(family: str) -> Parallelism:
    """Parse a frontier family label such as ``DP2xTP2+SP+ZeRO-2+RC``."""
    head, *flags = family.split("+")
    dp = tp = 1
    for part in head.split("x"):
        if part.startswith("DP"):
            dp = int(part[2:])
        elif part.startswith(("TP", "SP")):
            tp = int(part[2:])
    zero = 0
    for f in flags:
        if f.startswith("ZeRO-"):
            zero = int(f[5:])
    return Parallelism(
        dp=dp,
        tp=tp,
        sequence_parallel="SP" in flags or head.startswith("SP") or "xSP" in head,
        zero=zero,
        recompute="selective" if "RC" in flags else "none",
    )


def plan_parallelism(plan: Plan) -> tuple[Parallelism, list[str]]:
    """The one intra-operator strategy a framework can run for ``plan``, and what that loses.

    Frameworks apply one TP / DP degree and one ZeRO stage to every pipeline stage; parplan may
    choose one per stage (``intra_op["stages"]``). When stages differ, the stage with the largest
    TP degree wins (it needs the most memory relief) and each difference is listed.
    """
    intra: dict[str, Any] = dict(plan.intra_op or {})
    stages: list[dict[str, Any]] = [s for s in intra.get("stages") or [] if isinstance(s, dict)]
    strategy: dict[str, Any] = intra.get("strategy") or {}
    if not stages:
        return Parallelism(), []
    per_stage = [
        (int(s.get("stage", i)), _stage_parallelism(str(s.get("family", "")))) for i, s in enumerate(stages)
    ]
    chosen = max(per_stage, key=lambda sp: (sp[1].tp, sp[1].dp))[1]
    zero = max(p.zero for _, p in per_stage)
    recompute = "selective" if any(p.recompute != "none" for _, p in per_stage) else "none"
    sp_any = any(p.sequence_parallel for _, p in per_stage if p.tp > 1)
    notes = []
    for index, p in per_stage:
        if (p.dp, p.tp, p.sequence_parallel) != (chosen.dp, chosen.tp, chosen.sequence_parallel):
            notes.append(
                f"stage {index} runs DP{p.dp}xTP{p.tp}{'+SP' if p.sequence_parallel else ''} in the plan; the "
                f"framework applies one strategy to every stage: exported DP{chosen.dp}xTP{chosen.tp}"
            )
        elif p.zero != zero:
            notes.append(
                f"stage {index} uses ZeRO-{p.zero} in the plan; exported ZeRO-{zero} for every stage"
            )
    if recompute != "none":
        rc = [op for op, cfg in strategy.items() if str(cfg).endswith(".rc")]
        notes.append(
            f"the plan recomputes {len(rc)} chosen operators ({', '.join(rc[:3])}{', ...' if len(rc) > 3 else ''}); "
            "exported as selective recomputation, which recomputes the framework's own choice (core attention)"
        )
    return (
        Parallelism(
            dp=chosen.dp,
            tp=chosen.tp,
            sequence_parallel=sp_any and chosen.tp > 1,
            zero=zero,
            recompute=recompute,
        ),
        notes,
    )


def _meta(plan: Plan) -> dict[str, object]:
    meta = plan.source.get("model_meta") or plan.problem.source.get("model_meta") or {}
    return dict(meta) if isinstance(meta, dict) else {}


def _meta_int(plan: Plan, key: str) -> int | None:
    value = _meta(plan).get(key)
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def stage_layers(plan: Plan) -> tuple[list[list[int]], list[str]]:
    """Transformer layers of each stage (from ``layerK.*`` operator names), and cuts inside a layer.

    A layer whose operators sit on two stages goes to the stage holding most of them (frameworks cut
    between whole layers); each such layer is listed.
    """
    owners: dict[int, dict[int, int]] = {}
    for s in plan.problem.stages:
        for op in s.ops:
            m = _LAYER.match(op)
            if m:
                count = owners.setdefault(int(m.group(1)), {})
                count[s.index] = count.get(s.index, 0) + 1
    layers: list[list[int]] = [[] for _ in plan.problem.stages]
    notes = []
    for layer in sorted(owners):
        count = owners[layer]
        best = max(sorted(count), key=lambda s: count[s])
        layers[best].append(layer)
        if len(count) > 1:
            notes.append(
                f"layer {layer} is cut between stages {sorted(count)}; frameworks cut between whole layers: "
                f"exported on stage {best}"
            )
    return layers, notes


def _built_in_match(plan: Plan, names: Sequence[str], framework: str) -> tuple[str | None, list[str]]:
    """The first of ``names`` whose built-in order equals the plan's, else None and a note comparing them.

    ``names`` are the built-in schedules ``framework`` runs; the note gives their simulated makespans
    on the plan's own stages, so the user sees what running the framework's schedule costs.
    """
    from parplan.schedule.expert import build_schedule
    from parplan.simulate import compute_metrics, simulate

    mine = plan.schedule.orders
    tried = []
    for name in names:
        try:
            built = build_schedule(name, plan.problem)
        except InvalidInputError:
            continue
        if built.orders == mine:
            return name, []
        makespan = compute_metrics(plan.problem, simulate(plan.problem, built)).makespan
        tried.append((name, makespan))
    unit = plan.problem.time_unit
    theirs = ", ".join(f"{n} {t:.6g} {unit}" for n, t in tried) or "none applies to this problem"
    return None, [
        f"the plan's order ({plan.source.get('schedule') or plan.name or 'solver'}, makespan "
        f"{plan.metrics.makespan:.6g} {unit}) is beyond {framework}'s built-in schedules "
        f"({', '.join(names)}), which it runs instead; their makespan on the same stages: {theirs}"
    ]


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML form for {type(value).__name__}")


def _toml(sections: dict[str, dict[str, object]], header: str) -> str:
    lines = [f"# {line}" for line in header.splitlines()]
    for name, keys in sections.items():
        lines += ["", f"[{name}]"]
        lines += [f"{k} = {_toml_value(v)}" for k, v in keys.items() if v is not None]
    return "\n".join(lines) + "\n"


def _titan_style(plan: Plan) -> tuple[str, str | None]:
    """torchtitan's schedule name for this placement, and why its stage-to-rank rule differs, if it does."""
    problem = plan.problem
    p, n = problem.num_devices, problem.num_stages
    device = [s.device for s in problem.stages]
    loop = [s % p for s in range(n)]
    vee = [s if s < p else 2 * p - 1 - s for s in range(n)]
    if n == p:
        name, want = "1F1B", loop
    elif problem.placement == "v" or (n == 2 * p and device == vee):
        # both names give torchtitan's V stage-to-rank rule; DualPipeV says the plan fuses F&B
        fused = any(t.action.is_fused for t in plan.timed)
        name, want = ("DualPipeV" if fused else "ZBVZeroBubble"), vee
    else:
        name, want = "Interleaved1F1B", loop
    if device != want:
        return name, (
            f"stages sit on devices {device}, but torchtitan places stage s on rank {'s % pp' if want is loop else 'by the V rule'} "
            f"({want}); the CSV rows follow the plan's devices, so rank r must hold the stages of row r"
        )
    return name, None


def _titan_fqns(plan: Plan, layers: list[list[int]]) -> tuple[list[list[str]], list[str]]:
    fqns: list[list[str]] = []
    unknown: list[str] = []
    for s, stage_layers_ in zip(plan.problem.stages, layers, strict=True):
        names: list[str] = []
        for op in s.ops:
            if _LAYER.match(op) or op == "loss":
                continue
            if op in _TITAN_FQN:
                names.append(_TITAN_FQN[op])
            else:
                unknown.append(op)
                names.append(op)
        first = [n for n in names if n == "tok_embeddings"]
        rest = [n for n in names if n != "tok_embeddings"]
        fqns.append(first + [f"layers.{k}" for k in stage_layers_] + rest)
    notes = []
    if unknown:
        notes.append(
            f"{len(unknown)} operators have no torchtitan module name ({', '.join(unknown[:4])}"
            f"{', ...' if len(unknown) > 4 else ''}); listed under their parplan names in module_fqns_per_model_part"
        )
    return fqns, notes


def torchtitan_config(plan: Plan, csv_path: str) -> tuple[str, list[str]]:
    """torchtitan's ``[parallelism]`` (and ``[training]``) TOML for ``plan``, and what it cannot express.

    The schedule itself is the compute-only CSV at ``csv_path`` (``pipeline_parallel_schedule_csv``):
    torchtitan then runs ``_PipelineScheduleRuntime`` with it; ``pipeline_parallel_schedule`` still
    decides how torchtitan maps stages to ranks (loop or V) and must match the plan's placement.
    """
    reason = _chain_problem(plan)
    if reason is not None:
        raise InvalidInputError(
            f"torchtitan: its pipeline runtime (torch.distributed.pipelining) runs chains only, but {reason}; "
            "torch cannot run this plan (a bidirectional DualPipe plan keeps two copies of the weights and sends "
            "micro-batches both ways): plan it with --placement v (DualPipeV) to export it, or export --to megatron"
        )
    problem = plan.problem
    parallel, notes = plan_parallelism(plan)
    layers, layer_notes = stage_layers(plan)
    notes += layer_notes
    schedule, style_note = _titan_style(plan)
    if style_note:
        notes.append(style_note)
    fqns, fqn_notes = _titan_fqns(plan, layers)
    notes += fqn_notes
    if any(t.action.is_fused for t in plan.timed):
        notes.append(
            "fused F&B actions are written as torch's OVERLAP_F_B cells; without an overlap callback "
            "registered on the schedule torch runs their two halves one after the other, slower than planned"
        )
    mbs = _meta_int(plan, "microbatch_size") or 1
    seq = _meta_int(plan, "seq_len")
    m = problem.num_microbatches
    shard = parallel.dp if parallel.zero > 0 else 1
    replicate = 1 if parallel.zero > 0 else parallel.dp
    if parallel.zero in (1, 2):
        notes.append(
            f'ZeRO-{parallel.zero} exported as FSDP with fsdp_reshard_after_forward = "never" (parameters stay '
            "gathered between forward and backward), which shards parameters too"
        )
    if parallel.tp > 1 and not parallel.sequence_parallel:
        notes.append(
            "torchtitan's tensor parallelism always shards norms over the sequence (SP); the plan has no SP"
        )
    parallelism: dict[str, object] = {
        "pipeline_parallel_degree": problem.num_devices,
        "pipeline_parallel_schedule": schedule,
        "pipeline_parallel_schedule_csv": csv_path,
        "pipeline_parallel_microbatch_size": mbs,
        "module_fqns_per_model_part": fqns,
        "tensor_parallel_degree": parallel.tp,
        "data_parallel_replicate_degree": replicate,
        "data_parallel_shard_degree": shard,
    }
    if parallel.zero in (1, 2):
        parallelism["fsdp_reshard_after_forward"] = "never"
    elif parallel.zero == 3:
        parallelism["fsdp_reshard_after_forward"] = "always"
    training: dict[str, object] = {"local_batch_size": m * mbs, "seq_len": seq}
    sections = {"parallelism": parallelism, "training": training}
    if parallel.recompute != "none":
        sections["activation_checkpoint"] = {"mode": parallel.recompute}
    header = (
        f"torchtitan configuration exported by parplan from plan {plan.name or problem.name!r}\n"
        f"{problem.num_devices} pipeline ranks, {problem.num_stages} stages, {m} micro-batches of {mbs}; "
        f"predicted step {plan.metrics.makespan:.6g} {problem.time_unit}\n"
        "merge these sections into your job's TOML (model, optimizer, ... stay yours)"
    )
    return _toml(sections, header), notes


def megatron_args(plan: Plan) -> tuple[list[str], list[str]]:
    """Megatron-LM command-line flags for ``plan`` (one per line), and what they cannot express."""
    problem = plan.problem
    p, n = problem.num_devices, problem.num_stages
    parallel, notes = plan_parallelism(plan)
    reason = _chain_problem(plan)
    if reason is not None:
        notes.append(f"Megatron pipelines a chain of layers, but {reason}: only the stage sizes are exported")
    layers, layer_notes = stage_layers(plan)
    notes += layer_notes
    counts = [len(ls) for ls in layers]
    v = n // p if n % p == 0 else 1
    device = [s.device for s in problem.stages]
    if device != [s % p for s in range(n)]:
        notes.append(
            f"stages sit on devices {device}; Megatron places virtual stage s on rank s % pp "
            f"({[s % p for s in range(n)]}) and has no V or free placement"
        )
    if problem.split_backward and any(t.action.kind in ("I", "W") for t in plan.timed):
        notes.append(
            "the plan splits backward passes into input (I) and weight (W) gradients (zero-bubble); "
            "Megatron's schedules run each backward whole"
        )
    if any(t.action.is_fused for t in plan.timed):
        notes.append("fused F&B chunks (DualPipe) have no Megatron flag: Megatron runs them unfused")
    _, order_notes = _built_in_match(plan, ("1f1b",) if v == 1 else ("interleaved-1f1b",), "Megatron")
    notes += order_notes
    args = [f"--pipeline-model-parallel-size {p}"]
    if v > 1:
        args.append(f"--num-virtual-stages-per-pipeline-rank {v}")
    if sum(counts):
        args.append(f"--num-layers {sum(counts)}")
        if len(set(counts)) > 1:
            middle = counts[1:-1]
            if v == 1 and len(set(middle)) <= 1:
                args.append(f"--decoder-first-pipeline-num-layers {counts[0]}")
                args.append(f"--decoder-last-pipeline-num-layers {counts[-1]}")
            elif v == 1:
                notes.append(
                    f"layers per stage {counts}: Megatron sets the first and last stage's layers and splits "
                    "the rest evenly, but these middle stages differ"
                )
            else:
                notes.append(
                    f"layers per virtual stage {counts}: not exported; with virtual stages Megatron splits "
                    f"the layers evenly ({sum(counts)} over {n})"
                )
    args.append(f"--tensor-model-parallel-size {parallel.tp}")
    if parallel.sequence_parallel:
        args.append("--sequence-parallel")
    if parallel.zero >= 1:
        args.append("--use-distributed-optimizer")
        if parallel.zero > 1:
            notes.append(
                f"ZeRO-{parallel.zero}: Megatron's distributed optimizer shards optimizer state only (ZeRO-1)"
            )
    if parallel.recompute != "none":
        args.append(f"--recompute-granularity {parallel.recompute}")
    mbs = _meta_int(plan, "microbatch_size")
    seq = _meta_int(plan, "seq_len")
    if mbs:
        args.append(f"--micro-batch-size {mbs}")
        args.append(f"--global-batch-size {mbs * problem.num_microbatches * parallel.dp}")
    else:
        notes.append(
            f"the plan records no micro-batch size: set --micro-batch-size b and --global-batch-size "
            f"{problem.num_microbatches}*b*dp ({problem.num_microbatches} micro-batches)"
        )
    if seq:
        args.append(f"--seq-length {seq}")
    return args, notes


def deepspeed_config(plan: Plan) -> tuple[dict[str, object], list[str]]:
    """A DeepSpeed JSON configuration for ``plan``, and what it cannot express."""
    problem = plan.problem
    p, n = problem.num_devices, problem.num_stages
    parallel, notes = plan_parallelism(plan)
    reason = _chain_problem(plan)
    if reason is not None:
        notes.append(f"DeepSpeed's PipelineModule is a chain of layers, but {reason}")
    if n != p:
        notes.append(f"{n} stages on {p} devices: DeepSpeed runs one stage per pipeline rank")
    layers, layer_notes = stage_layers(plan)
    notes += layer_notes
    counts = [len(ls) for ls in layers]
    if len(set(counts)) > 1:
        notes.append(
            f"layers per stage {counts}: DeepSpeed's JSON has no explicit partition; pass "
            "PipelineModule(partition_method=...) boundaries yourself (this file asks for 'uniform')"
        )
    if parallel.tp > 1:
        notes.append(
            f"tensor parallelism TP{parallel.tp} comes from your model code (an mpu), not from this JSON"
        )
    zero = parallel.zero
    if zero > 1 and p > 1:
        notes.append(f"ZeRO-{zero}: DeepSpeed refuses ZeRO-2/3 with pipeline parallelism; exported stage 1")
        zero = 1
    notes += _built_in_match(plan, ("1f1b",), "DeepSpeed")[1]
    if any(t.action.kind in ("I", "W") for t in plan.timed):
        notes.append("DeepSpeed runs each backward whole: the plan's split I/W passes are not expressible")
    mbs = _meta_int(plan, "microbatch_size") or 1
    m = problem.num_microbatches
    config: dict[str, object] = {
        "train_batch_size": mbs * m * parallel.dp,
        "train_micro_batch_size_per_gpu": mbs,
        "gradient_accumulation_steps": m,
        "zero_optimization": {"stage": zero},
        "pipeline": {
            "stages": p,
            "partition": "uniform",
            "activation_checkpoint_interval": 1 if parallel.recompute != "none" else 0,
        },
    }
    dtype = _meta(plan).get("dtype")
    if dtype in ("bf16", "fp16"):
        config[dtype] = {"enabled": True}
    return config, notes


def export_plan(plan: Plan, target: str, out_dir: str | Path) -> ExportResult:
    """Write ``plan`` as a configuration of ``target`` into ``out_dir``.

    Parameters
    ----------
    plan
        A valid plan (checked with :meth:`Plan.validate` first).
    target
        ``torchtitan`` (``torchtitan.toml`` and the schedule CSV beside it), ``megatron``
        (``megatron.args``, one flag per line) or ``deepspeed`` (``deepspeed.json``).
    out_dir
        Output folder (created).

    Returns
    -------
    ExportResult
        The files written and one line per feature of the plan the target cannot express.

    Raises
    ------
    InvalidInputError
        An unknown target, an invalid plan, or a torchtitan export of a plan torch cannot run.
    """
    if target not in TARGETS:
        raise InvalidInputError(f"--to: must be one of {', '.join(TARGETS)}, got {target!r}")
    violations = plan.validate()
    if violations:
        raise InvalidInputError(
            f"plan {plan.name or plan.problem.name!r} is invalid ({len(violations)} violations, first: "
            f"{violations[0]}); check it with `parplan check`"
        )
    out = Path(out_dir)
    files: list[Path] = []
    if target == "torchtitan":
        csv_file = out / TORCHTITAN_CSV
        text, notes = torchtitan_config(plan, str(csv_file.resolve()))
        out.mkdir(parents=True, exist_ok=True)
        files.append(write_pipelining_csv(plan, csv_file))
        (out / "torchtitan.toml").write_text(text)
        files.insert(0, out / "torchtitan.toml")
    elif target == "megatron":
        args, notes = megatron_args(plan)
        out.mkdir(parents=True, exist_ok=True)
        (out / "megatron.args").write_text("\n".join(args) + "\n")
        files.append(out / "megatron.args")
    else:
        config, notes = deepspeed_config(plan)
        out.mkdir(parents=True, exist_ok=True)
        (out / "deepspeed.json").write_text(json.dumps(config, indent=1) + "\n")
        files.append(out / "deepspeed.json")
    return ExportResult(target=target, files=tuple(files), unsupported=tuple(notes))
