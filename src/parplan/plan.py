"""Plans and the parplan.plan/1 file format: a problem, timed actions, metrics and provenance.

A plan file is self-contained (DESIGN.md, "Plan file"): anyone can re-verify it without parplan.
``read_plan`` accepts hand-edited files and reports path-qualified errors; ``check_plan`` runs the
independent validator on them.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from parplan.errors import InternalError, InvalidInputError
from parplan.inputs import finite, read_text
from parplan.problem import PipelineProblem
from parplan.schedule.ir import Action, Schedule
from parplan.simulate import Metrics, TimedAction, compute_metrics, duration, simulate, validate

FORMAT = "parplan.plan/1"


@dataclass(frozen=True, slots=True, kw_only=True)
class SolverInfo:
    """How a solver produced a plan."""

    backend: str
    status: str
    time_s: float
    objective: float | None = None
    bound: float | None = None

    def to_json(self) -> dict[str, object]:
        return {
            "backend": self.backend,
            "status": self.status,
            "time_s": self.time_s,
            "objective": self.objective,
            "bound": self.bound,
        }


@dataclass(frozen=True, kw_only=True)
class Plan:
    """A problem with every action placed in time, its metrics, and where it came from."""

    problem: PipelineProblem
    timed: tuple[TimedAction, ...]
    metrics: Metrics
    name: str = ""
    solver: SolverInfo | None = None
    source: dict[str, object] = field(default_factory=dict)
    intra_op: dict[str, object] | None = None

    @staticmethod
    def from_schedule(problem: PipelineProblem, schedule: Schedule, **extra: object) -> Plan:
        """Simulate ``schedule`` and wrap the result (metrics included) as a plan."""
        timed = simulate(problem, schedule)
        source: dict[str, object] = {"schedule": schedule.name}
        source.update(extra.pop("source", {}) or {})  # type: ignore[arg-type,call-overload]
        return Plan(
            problem=problem,
            timed=timed,
            metrics=compute_metrics(problem, timed),
            name=schedule.name,
            source=source,
            **extra,  # type: ignore[arg-type]
        )

    @property
    def schedule(self) -> Schedule:
        """The per-device orders of this plan (actions sorted by start time)."""
        orders: list[list[Action]] = [[] for _ in self.problem.devices]
        for t in sorted(self.timed, key=lambda t: (t.start, t.end)):
            orders[t.device].append(t.action)
        return Schedule.of(self.name or "plan", orders)

    def validate(self) -> list[str]:
        """Independent validation; a list of human-readable violations (empty when valid)."""
        return [str(v) for v in validate(self.problem, self.timed, self.metrics)]

    def with_lower_bound(self, bound: float | None) -> Plan:
        return Plan(
            problem=self.problem,
            timed=self.timed,
            metrics=self.metrics.with_bound(bound),
            name=self.name,
            solver=self.solver,
            source=self.source,
            intra_op=self.intra_op,
        )

    # ------------------------------------------------------------------ file format
    def to_json(self) -> dict[str, object]:
        p = _explicit_fused_costs(self.problem, self.timed).to_json()
        out: dict[str, object] = {
            "format": FORMAT,
            "name": self.name,
            "time_unit": p.pop("time_unit"),
            "memory_unit": p.pop("memory_unit"),
        }
        # the problem's own name would overwrite the plan's: keep it under its own key
        out["problem_name"] = p.pop("name")
        out.update(p)
        out["actions"] = [_action_json(t) for t in self.timed]
        out["metrics"] = self.metrics.to_json()
        out["solver"] = self.solver.to_json() if self.solver else None
        source = dict(self.source)
        # the model a plan was made for lets `parplan run PLAN.json` rebuild it: keep it in the file,
        # and say when its times assume float8 GEMMs
        for key in ("model", "model_meta", "gemm_dtype"):
            if key in self.problem.source and key not in source:
                source[key] = self.problem.source[key]
        out["source"] = source
        if self.intra_op is not None:
            out["intra_op"] = self.intra_op
        return out

    @staticmethod
    def from_json(data: object) -> Plan:
        if not isinstance(data, dict):
            raise InvalidInputError("plan: must be a JSON object")
        fmt = data.get("format")
        if "actions" not in data and "stages" in data and fmt in (None, FORMAT):
            raise InvalidInputError(
                "plan.actions: missing or not a list: this is a problem file (no schedule); plan it with "
                "`parplan plan --problem FILE`, or check a plan against it with "
                "`parplan check --problem FILE PLAN.json`"
            )
        if fmt != FORMAT:
            raise InvalidInputError(f"plan.format: expected {FORMAT!r}, got {fmt!r}")
        problem_data = dict(data)
        if "problem_name" in data:
            problem_data["name"] = data["problem_name"]
        problem = PipelineProblem.from_json(problem_data, "plan")
        actions = data.get("actions")
        if not isinstance(actions, list):
            raise InvalidInputError("plan.actions: missing or not a list")
        timed = tuple(_timed_from_json(a, f"plan.actions[{i}]", problem) for i, a in enumerate(actions))
        metrics = _metrics_from_json(data.get("metrics"), problem) if data.get("metrics") else None
        if metrics is None:
            metrics = compute_metrics(problem, timed)
        solver = data.get("solver")
        info = None
        if isinstance(solver, dict):
            info = SolverInfo(
                backend=str(solver.get("backend", "")),
                status=str(solver.get("status", "")),
                time_s=float(solver.get("time_s") or 0.0),
                objective=_opt_float(solver.get("objective")),
                bound=_opt_float(solver.get("bound")),
            )
        return Plan(
            problem=problem,
            timed=timed,
            metrics=metrics,
            name=str(data.get("name") or ""),
            solver=info,
            source=dict(data.get("source") or {}),
            intra_op=data.get("intra_op"),
        )

    def write(self, path: str | Path) -> Path:
        path = Path(path)
        try:  # strict JSON: a plan with NaN or infinity is not re-verifiable by anyone else
            text = json.dumps(self.to_json(), indent=1, allow_nan=False)
        except ValueError as exc:
            raise InternalError(
                f"{path}: plan {self.name!r} has a non-finite number; not written ({exc})"
            ) from None
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n")
        return path


def read_plan(path: str | Path) -> Plan:
    """Read a parplan.plan/1 file; bad files raise InvalidInputError naming the field."""
    path = Path(path)
    if not path.exists():
        raise InvalidInputError(f"{path}: no such plan file")
    try:
        data = json.loads(read_text(path, "plan file"))
    except json.JSONDecodeError as exc:
        raise InvalidInputError(
            f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})"
        ) from None
    try:
        return Plan.from_json(data)
    except InvalidInputError as exc:
        raise InvalidInputError(f"{path}: {exc}") from None


def _opt_float(v: object) -> float | None:
    return None if v is None else float(v)  # type: ignore[arg-type]


def _action_json(t: TimedAction) -> dict[str, object]:
    a = t.action
    out: dict[str, object] = {
        "device": t.device,
        "stage": a.stage,
        "kind": a.kind,
        "microbatch": a.microbatch,
        "start": t.start,
        "end": t.end,
    }
    if a.is_fused:
        out["parts"] = [{"stage": p.stage, "kind": p.kind, "microbatch": p.microbatch} for p in a.parts]
    return out


def _whole(p: dict[str, object], key: str, where: str) -> int:
    """An integer field of an action (1.5 or "2" is bad input, not silently 1 or 2)."""
    v = p[key]
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    if not isinstance(v, int) or isinstance(v, bool):
        raise InvalidInputError(f"{where}.{key}: must be an integer, got {v!r}")
    return v


def _timed_from_json(a: object, where: str, problem: PipelineProblem) -> TimedAction:
    if not isinstance(a, dict):
        raise InvalidInputError(f"{where}: must be an object")
    try:
        kind = str(a["kind"])
        if kind == "FB":
            parts = a.get("parts")
            if not isinstance(parts, list) or len(parts) != 2 or not all(isinstance(p, dict) for p in parts):
                raise InvalidInputError(f"{where}.parts: a fused FB action needs two parts")
            first, second = (
                Action(
                    stage=_whole(p, "stage", f"{where}.parts[{k}]"),
                    kind=str(p["kind"]),
                    microbatch=_whole(p, "microbatch", f"{where}.parts[{k}]"),
                )
                for k, p in enumerate(parts)
            )
            action = Action.fused(first, second)
        else:
            action = Action(
                stage=_whole(a, "stage", where), kind=kind, microbatch=_whole(a, "microbatch", where)
            )
        device = _whole(a, "device", where)
        start, end = float(a["start"]), float(a["end"])
    except KeyError as exc:
        raise InvalidInputError(f"{where}.{exc.args[0]}: missing") from None
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"{where}: {exc}") from None
    except InvalidInputError as exc:
        raise InvalidInputError(f"{where}: {exc}" if not str(exc).startswith(where) else str(exc)) from None
    finite(start, f"{where}.start")
    finite(end, f"{where}.end")
    if end < start:
        raise InvalidInputError(f"{where}: ends at {end:g} before it starts at {start:g}")
    if not 0 <= device < problem.num_devices:
        raise InvalidInputError(
            f"{where}.device: {device} is not a device of this plan (it has {problem.num_devices})"
        )
    for part in action.plain():
        if not 0 <= part.stage < problem.num_stages:
            raise InvalidInputError(
                f"{where}.stage: {part.stage} is not a stage of this plan (it has {problem.num_stages})"
            )
        if not 0 <= part.microbatch < problem.num_microbatches:
            raise InvalidInputError(
                f"{where}.microbatch: {part.microbatch} is not a micro-batch of this plan "
                f"(it has {problem.num_microbatches})"
            )
    return TimedAction(device=device, action=action, start=start, end=end)


def _floats(v: object, where: str, n: int) -> tuple[float, ...]:
    if v is None:
        return tuple(0.0 for _ in range(n))
    if not isinstance(v, list):
        raise InvalidInputError(f"{where}: must be a list of numbers")
    try:
        return tuple(float(x) for x in v)
    except (TypeError, ValueError):
        raise InvalidInputError(f"{where}: must be a list of numbers") from None


def _metrics_from_json(m: object, problem: PipelineProblem) -> Metrics:
    if not isinstance(m, dict):
        raise InvalidInputError("plan.metrics: must be an object")
    n = problem.num_devices
    try:
        return Metrics(
            makespan=float(m["makespan"]),
            bubble_ratio=float(m.get("bubble_ratio", 0.0)),
            busy_per_device=_floats(m.get("busy_per_device"), "plan.metrics.busy_per_device", n),
            idle_per_device=_floats(m.get("idle_per_device"), "plan.metrics.idle_per_device", n),
            span_idle_per_device=_floats(
                m.get("span_idle_per_device"), "plan.metrics.span_idle_per_device", n
            ),
            peak_memory_per_device=_floats(
                m.get("peak_memory_per_device"), "plan.metrics.peak_memory_per_device", n
            ),
            lower_bound=_opt_float(m.get("lower_bound")),
            gap=_opt_float(m.get("gap")),
        )
    except KeyError as exc:
        raise InvalidInputError(f"plan.metrics.{exc.args[0]}: missing") from None
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"plan.metrics: {exc}") from None


def check_plan(plan: Plan) -> list[str]:
    """Validate a plan as read from a file (claimed metrics included)."""
    return plan.validate()


def plans_table(plans: Sequence[Plan]) -> list[dict[str, object]]:
    """The `compare --json` rows for a list of plans."""
    rows = []
    for p in plans:
        m = p.metrics
        rows.append(
            {
                "name": p.name,
                "makespan": m.makespan,
                "bubble_ratio": m.bubble_ratio,
                "idle_per_device": list(m.idle_per_device),
                "span_idle_per_device": list(m.span_idle_per_device),
                "peak_memory_per_device": list(m.peak_memory_per_device),
                "valid": not p.validate(),
            }
        )
    return rows


def _explicit_fused_costs(problem: PipelineProblem, timed: Sequence[TimedAction]) -> PipelineProblem:
    """``problem`` with an ``FB`` cost on every stage whose fused actions take an implied duration
    (the sum of their parts when the stage gives no FB), so the file alone re-verifies them; a stage
    whose fused actions would need different FB values keeps none (the sum rule still applies)."""
    implied: dict[int, set[float]] = {}
    for t in timed:
        if not t.action.is_fused:
            continue
        parts = t.action.parts
        fwd = next((a for a in parts if a.kind == "F"), parts[0])
        stage = problem.stages[fwd.stage]
        if stage.cost.FB is None and not stage.device_costs:
            implied.setdefault(fwd.stage, set()).add(duration(problem, t.device, t.action))
    if not implied:
        return problem
    stages = [
        dataclasses.replace(st, cost=dataclasses.replace(st.cost, FB=next(iter(implied[st.index]))))
        if len(implied.get(st.index, ())) == 1
        else st
        for st in problem.stages
    ]
    return problem.with_stages(stages)


def plan_schema() -> dict[str, object]:
    """The JSON Schema of a ``parplan.plan/1`` file (shipped as ``parplan/schemas/plan.schema.json``)."""
    from importlib.resources import files

    schema: dict[str, object] = json.loads(files("parplan").joinpath("schemas/plan.schema.json").read_text())
    return schema
