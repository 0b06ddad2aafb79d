"""Problem files (``--problem FILE.json``): a parplan.plan/1 plan file, or its problem part alone.

The problem part of a plan file is ``devices``, ``stages`` (device, per-stage cost, memory),
``edges`` and ``microbatches`` (routes), plus ``time_unit``, ``memory_unit``, ``split_backward``,
``placement`` and ``chunks``. A plan file's own parts (``actions``, ``metrics``, ``solver``,
``source``, ``intra_op``, its ``name``) are accepted and ignored. Unlike ``read_plan``, the reader
is strict, because these files are written by hand or by scripts from real profiles: an unknown key
is refused with its path, non-finite numbers are refused, and a ``placement`` that the stages,
edges and routes do not follow is refused (without ``placement`` it is inferred from them).
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterable
from pathlib import Path

from parplan.errors import InvalidInputError
from parplan.inputs import read_text
from parplan.placement import chains, expected_devices, routes
from parplan.problem import PipelineProblem

PLAN_FORMAT = "parplan.plan/1"

#: Keys of the problem part, at the top of the file.
PROBLEM_KEYS = frozenset(
    {
        "format",
        "name",
        "time_unit",
        "memory_unit",
        "split_backward",
        "placement",
        "chunks",
        "devices",
        "stages",
        "edges",
        "microbatches",
    }
)
#: Keys only a plan file has; ignored here (``name`` is then the plan's, ``problem_name`` the problem's).
PLAN_ONLY_KEYS = frozenset({"problem_name", "actions", "metrics", "solver", "source", "intra_op"})
_DEVICE_KEYS = frozenset({"index", "name", "memory_limit"})
_STAGE_KEYS = frozenset(
    {"index", "device", "name", "ops", "cost", "act_mem", "wgrad_mem", "param_mem", "device_costs"}
)
_COST_KEYS = frozenset({"F", "I", "W", "B", "FB"})
_EDGE_KEYS = frozenset({"src", "dst", "comm", "bytes"})
_MICROBATCH_KEYS = frozenset({"index", "stages"})
_REQUIRED = ("devices", "stages", "edges", "microbatches")

#: Other parplan formats someone may pass to --problem, and what to do with them instead.
_OTHER_FORMATS = {
    "parplan.graph/1": "an operator graph: give it as --graph FILE --devices N",
    "parplan.profile/1": "a measured profile: give it as --model NAME --cluster local --profile FILE",
}
_FIXED_PLACEMENTS = ("linear", "interleaved", "v", "bidirectional")


def problem_from_json(
    data: object, source: dict[str, object] | None = None, default_name: str = ""
) -> PipelineProblem:
    """Read a problem object (a plan file or its problem part); errors name the path of the field.

    ``source`` becomes the problem's provenance; ``default_name`` its name when the file has none.

    Raises
    ------
    InvalidInputError
        Unknown keys, a plan of another format, missing or bad fields, a ``placement`` the stages
        do not follow; the message starts with the path, e.g. ``stages[3].cost.F: must be >= 0``.
    """
    if not isinstance(data, dict):
        raise InvalidInputError(
            "must be a JSON object with devices, stages, edges and microbatches (a parplan.plan/1 file)"
        )
    fmt = data.get("format")
    if fmt is not None and fmt != PLAN_FORMAT:
        what = _OTHER_FORMATS.get(str(fmt), "not a problem file")
        raise InvalidInputError(
            f"format: {fmt!r} is {what}; --problem reads {PLAN_FORMAT!r} plan files or their "
            "problem part (devices, stages, edges, microbatches)"
        )
    _refuse_unknown(data)
    for key in _REQUIRED:
        if key not in data:
            hint = " (give [] for stages that exchange no data)" if key == "edges" else ""
            raise InvalidInputError(f"{key}: missing{hint}")
    problem_data = {k: v for k, v in data.items() if k in PROBLEM_KEYS and k != "format"}
    problem_data.pop("name", None)
    problem_data["name"] = _problem_name(data) or default_name
    given_placement = problem_data.pop("placement", None)
    given_chunks = problem_data.pop("chunks", None)
    problem = PipelineProblem.from_json(problem_data, "")
    if "split_backward" not in data:
        _refuse_mixed_backward(problem)
    placement, chunks = _placement(problem, given_placement, given_chunks)
    return PipelineProblem(
        devices=problem.devices,
        stages=problem.stages,
        edges=problem.edges,
        microbatches=problem.microbatches,
        split_backward=problem.split_backward,
        placement=placement,
        chunks=chunks,
        time_unit=problem.time_unit,
        memory_unit=problem.memory_unit,
        name=problem.name,
        source=dict(source or {"kind": "file"}),
    )


def read_problem(path: str | Path) -> PipelineProblem:
    """Read ``--problem FILE.json``; every error is ``FILE: path.to.field: what is wrong``."""
    path = Path(path)
    if not path.exists():
        raise InvalidInputError(f"{path}: no such problem file")
    if path.is_dir():
        raise InvalidInputError(f"{path}: is a directory, not a problem file")
    try:
        data = json.loads(read_text(path, "problem file"), parse_constant=_refuse_constant)
    except json.JSONDecodeError as exc:
        raise InvalidInputError(
            f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})"
        ) from None
    except InvalidInputError as exc:
        raise InvalidInputError(f"{path}: {exc}") from None
    except UnicodeDecodeError:
        raise InvalidInputError(f"{path}: not a text file (JSON expected)") from None
    try:
        problem = problem_from_json(data, {"kind": "file", "path": str(path)}, default_name=path.stem)
    except InvalidInputError as exc:
        raise InvalidInputError(f"{path}: {exc}") from None
    return problem


def problem_to_json(problem: PipelineProblem) -> dict[str, object]:
    """The problem part of a plan file, with its format: what ``read_problem`` reads back exactly."""
    return {"format": PLAN_FORMAT, **problem.to_json()}


def write_problem(problem: PipelineProblem, path: str | Path) -> Path:
    """Write ``problem`` as a problem file (a plan file without actions)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(problem_to_json(problem), indent=1) + "\n")
    return path


# ----------------------------------------------------------------------------- checks
def _refuse_constant(name: str) -> float:
    raise InvalidInputError(f"{name} is not allowed: every number must be finite (null: no memory limit)")


def _problem_name(data: dict[str, object]) -> object:
    # a plan file keeps the problem's name under problem_name (its own name is the plan's)
    if "problem_name" in data or "actions" in data:
        return data.get("problem_name", "")
    return data.get("name", "")


def _unknown(
    obj: object, allowed: frozenset[str], where: str, what: str, shown: frozenset[str] | None = None
) -> None:
    if not isinstance(obj, dict):
        return  # the parser reports the wrong type with its path
    for key in obj:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), allowed, n=1, cutoff=0.6)
            hint = f"did you mean {close[0]!r}? " if close else ""
            path = f"{where}.{key}" if where else str(key)
            raise InvalidInputError(
                f"{path}: unknown key; {hint}{what} has {', '.join(sorted(shown or allowed))}"
            )


def _items(obj: object, key: str) -> Iterable[tuple[int, object]]:
    value = obj.get(key) if isinstance(obj, dict) else None
    return enumerate(value) if isinstance(value, list) else ()


def _refuse_unknown(data: dict[str, object]) -> None:
    """Every key at every level is one the format defines (a typo would otherwise be ignored)."""
    _unknown(
        data,
        PROBLEM_KEYS | PLAN_ONLY_KEYS,
        "",
        f"a problem file (plan files also have {', '.join(sorted(PLAN_ONLY_KEYS))}, ignored here)",
        PROBLEM_KEYS,
    )
    for i, d in _items(data, "devices"):
        _unknown(d, _DEVICE_KEYS, f"devices[{i}]", "a device")
    for i, s in _items(data, "stages"):
        where = f"stages[{i}]"
        _unknown(s, _STAGE_KEYS, where, "a stage")
        if isinstance(s, dict):
            _unknown(s.get("cost"), _COST_KEYS, f"{where}.cost", "a cost")
            for k, c in _items(s, "device_costs"):
                _unknown(c, _COST_KEYS, f"{where}.device_costs[{k}]", "a cost")
    for k, e in _items(data, "edges"):
        _unknown(e, _EDGE_KEYS, f"edges[{k}]", "an edge")
    for k, m in _items(data, "microbatches"):
        _unknown(m, _MICROBATCH_KEYS, f"microbatches[{k}]", "a micro-batch")


def _refuse_mixed_backward(problem: PipelineProblem) -> None:
    """Without ``split_backward``, stages with I and W beside B-only ones would lose their I and W."""
    split = [s.index for s in problem.stages if s.cost.is_split]
    if split and len(split) != problem.num_stages:
        whole = [s.index for s in problem.stages if not s.cost.is_split]
        raise InvalidInputError(
            f"stages[{whole[0]}].cost: only B, but stage(s) {', '.join(map(str, split[:6]))} have I and W; "
            "give every stage I and W, or set split_backward: false to schedule B everywhere"
        )


def _layout_error(problem: PipelineProblem, placement: str) -> str | None:
    """Why the stages, edges and routes are not ``placement``'s layout, or None when they are."""
    p, n = problem.num_devices, problem.num_stages
    want = expected_devices(placement, n, p)
    if want is None:
        return f"{n} stages on {p} devices do not fit it"
    for s, stage in enumerate(problem.stages):
        if stage.device != want[s]:
            return f"stages[{s}].device is {stage.device}, {placement} puts stage {s} on device {want[s]}"
    chain_list = chains(placement, n, p)
    route_list = routes(placement, n, p, problem.num_microbatches)
    edges = {(e.src, e.dst) for e in problem.edges}
    chain_edges = {(c[k], c[k + 1]) for c in chain_list for k in range(len(c) - 1)}
    if edges != chain_edges:
        extra = sorted(edges - chain_edges) or sorted(chain_edges - edges)
        return f"its edges are not the {placement} chain (first difference: {extra[0][0]}->{extra[0][1]})"
    for j, mb in enumerate(problem.microbatches):
        if mb.stages != route_list[j]:
            return f"microbatches[{j}].stages is {list(mb.stages)}, {placement} routes it through {list(route_list[j])}"
    return None


def _infer_placement(problem: PipelineProblem) -> tuple[str, int]:
    p, n = problem.num_devices, problem.num_stages
    if not problem.is_placed:
        return "free", n // p if n % p == 0 and n >= p else 1
    for placement in _FIXED_PLACEMENTS:
        if _layout_error(problem, placement) is None:
            return placement, 1 if placement == "linear" else n // p
    return "graph", 1  # placed, but not a layout an expert schedule knows: only the planner applies


def _placement(problem: PipelineProblem, given: object, chunks: object) -> tuple[str, int]:
    """The file's placement if its stages follow it, else an error; inferred when not given."""
    inferred, inferred_chunks = _infer_placement(problem)
    if given is None:
        if chunks is not None and chunks != inferred_chunks and inferred in _FIXED_PLACEMENTS:
            raise InvalidInputError(
                f"chunks: {chunks!r}, but the stages are a {inferred} layout with {inferred_chunks} "
                "per device; remove chunks"
            )
        return inferred, inferred_chunks
    from parplan.problem import PLACEMENTS

    if not isinstance(given, str) or given not in PLACEMENTS:
        raise InvalidInputError(f"placement: must be one of {', '.join(PLACEMENTS)}, got {given!r}")
    if given in _FIXED_PLACEMENTS:
        why = _layout_error(problem, given)
        if why is not None:
            raise InvalidInputError(
                f"placement: {given!r}, but {why}; fix the stages or remove placement "
                f"(parplan then infers {inferred!r})"
            )
        want = 1 if given == "linear" else problem.num_stages // problem.num_devices
        if chunks is not None and chunks != want:
            raise InvalidInputError(
                f"chunks: {given} with {problem.num_stages} stages has {want}, got {chunks!r}"
            )
        return given, want
    if chunks is not None and (not isinstance(chunks, int) or isinstance(chunks, bool) or chunks < 1):
        raise InvalidInputError(f"chunks: must be an integer >= 1, got {chunks!r}")
    return given, int(chunks) if chunks is not None else inferred_chunks  # type: ignore[call-overload]


def problem_differences(own: PipelineProblem, other: PipelineProblem, limit: int = 8) -> list[str]:
    """Where ``other`` differs from ``own`` (a plan's embedded problem), as short paths with values.

    At most ``limit`` entries (then ``...``); the order is devices, stages, edges, micro-batches.
    """
    out: list[str] = []
    for name in ("time_unit", "memory_unit", "split_backward"):
        if getattr(own, name) != getattr(other, name):
            out.append(f"{name} {getattr(own, name)!r} -> {getattr(other, name)!r}")
    for what, a, b in (
        ("devices", own.devices, other.devices),
        ("stages", own.stages, other.stages),
        ("microbatches", own.microbatches, other.microbatches),
    ):
        if len(a) != len(b):
            out.append(f"{what}: {len(a)} -> {len(b)}")
    for d_own, d_other in zip(own.devices, other.devices, strict=False):
        if d_own.memory_limit != d_other.memory_limit:
            out.append(f"devices[{d_own.index}].memory_limit {d_own.memory_limit} -> {d_other.memory_limit}")
    for s_own, s_other in zip(own.stages, other.stages, strict=False):
        for name in ("device", "cost", "act_mem", "wgrad_mem", "param_mem", "device_costs"):
            x, y = getattr(s_own, name), getattr(s_other, name)
            if x != y:
                show = (lambda c: c.to_json()) if name == "cost" else (lambda c: c)
                out.append(f"stages[{s_own.index}].{name} {show(x)} -> {show(y)}")
    edges_own = {(e.src, e.dst): e.comm for e in own.edges}
    edges_other = {(e.src, e.dst): e.comm for e in other.edges}
    for key in sorted(set(edges_own) | set(edges_other)):
        x, y = edges_own.get(key), edges_other.get(key)
        if x != y:
            where = f"edge {key[0]}->{key[1]}"
            out.append(
                f"{where} removed"
                if y is None
                else f"{where} added"
                if x is None
                else f"{where} comm {x} -> {y}"
            )
    for m_own, m_other in zip(own.microbatches, other.microbatches, strict=False):
        if m_own.stages != m_other.stages:
            out.append(f"microbatches[{m_own.index}].stages {list(m_own.stages)} -> {list(m_other.stages)}")
    return out if len(out) <= limit else [*out[:limit], f"... {len(out) - limit} more"]
