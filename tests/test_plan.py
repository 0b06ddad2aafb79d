"""Plan files (parplan.plan/1): round trips for every built-in schedule and path-qualified errors."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from parplan.errors import InvalidInputError
from parplan.plan import FORMAT, Plan, SolverInfo, read_plan
from parplan.schedule.expert import SCHEDULES, build_schedule
from parplan.synthetic import synthetic_problem

OPTIONS = {
    "gpipe": {"placement": "linear", "costs": "F=1,B=2"},
    "1f1b": {"placement": "linear", "costs": "F=1,B=2"},
    "interleaved-1f1b": {"placement": "interleaved", "costs": "F=1,B=2"},
    "zb-h1": {"placement": "linear"},
    "zb-h2": {"placement": "linear"},
    "zb-auto": {"placement": "linear"},
    "zb-v": {"placement": "v"},
    "v-min": {"placement": "v"},
    "v-half": {"placement": "v"},
    "dualpipe": {"placement": "bidirectional", "costs": "F=1,I=1,W=1,FB=2.5"},
    "dualpipev": {"placement": "v", "costs": "F=1,I=1,W=1,FB=2.5"},
}


def _plan(name: str) -> Plan:
    problem = synthetic_problem(pp=4, microbatches=8, comm=0.25, wgrad_mem=0.5, **OPTIONS[name])  # type: ignore[arg-type]
    return Plan.from_schedule(problem, build_schedule(name, problem))


def _same(a: Plan, b: Plan) -> None:
    assert b.problem == a.problem
    assert b.timed == a.timed
    assert b.metrics == a.metrics
    assert b.name == a.name
    assert b.schedule == a.schedule


def test_every_schedule_has_plan_options() -> None:
    assert set(OPTIONS) == set(SCHEDULES)


@pytest.mark.parametrize("name", list(SCHEDULES))
def test_round_trip(name: str, tmp_path: Path) -> None:
    plan = _plan(name)
    data = plan.to_json()
    assert data["format"] == FORMAT
    _same(plan, Plan.from_json(json.loads(json.dumps(data))))
    _same(plan, read_plan(plan.write(tmp_path / "sub" / f"{name}.json")))
    assert read_plan(tmp_path / "sub" / f"{name}.json").validate() == []


def test_fused_actions_survive_the_file(tmp_path: Path) -> None:
    plan = _plan("dualpipe")
    fused = [a for a in plan.to_json()["actions"] if a["kind"] == "FB"]  # type: ignore[union-attr]
    assert fused
    assert fused[0]["parts"][0]["kind"] == "F" and fused[0]["parts"][1]["kind"] == "B"
    again = read_plan(plan.write(tmp_path / "p.json"))
    assert sum(t.action.is_fused for t in again.timed) == len(fused)


def test_solver_info_and_bound_round_trip(tmp_path: Path) -> None:
    plan = _plan("1f1b").with_lower_bound(30.0)
    plan = Plan(
        problem=plan.problem,
        timed=plan.timed,
        metrics=plan.metrics,
        name="solved",
        solver=SolverInfo(backend="cpsat", status="OPTIMAL", time_s=1.5, objective=33.0, bound=30.0),
        source={"kind": "test"},
    )
    again = read_plan(plan.write(tmp_path / "p.json"))
    assert again.solver == plan.solver
    assert again.metrics.lower_bound == 30.0
    assert again.metrics.gap == pytest.approx(plan.metrics.gap)
    assert again.source == {"kind": "test"}


def _write(tmp_path: Path, data: object) -> Path:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    return path


def test_malformed_json(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text('{"format": "parplan.plan/1",\n "devices": [}')
    with pytest.raises(InvalidInputError, match=r"bad.json: not valid JSON \(line 2, column"):
        read_plan(path)
    with pytest.raises(InvalidInputError, match="no such plan file"):
        read_plan(tmp_path / "nope.json")


def test_wrong_format_string(tmp_path: Path) -> None:
    data = _plan("1f1b").to_json()
    data["format"] = "parplan.plan/0"
    with pytest.raises(
        InvalidInputError, match=r"plan.format: expected 'parplan.plan/1', got 'parplan.plan/0'"
    ):
        read_plan(_write(tmp_path, data))
    with pytest.raises(InvalidInputError, match="plan: must be a JSON object"):
        read_plan(_write(tmp_path, [1, 2]))


@pytest.mark.parametrize(
    ("path", "message"),
    [
        (("devices",), "plan.devices: missing"),
        (("stages", 1, "cost"), r"plan.stages\[1\].cost: missing"),
        (("stages", 0, "cost", "F"), r"plan.stages\[0\].cost.F: missing"),
        (("microbatches", 2, "stages"), r"plan.microbatches\[2\].stages: missing"),
        (("edges", 0, "src"), r"plan.edges\[0\].src: missing"),
        (("actions",), "plan.actions: missing or not a list"),
        (("actions", 3, "start"), r"plan.actions\[3\].start: missing"),
        (("actions", 0, "kind"), r"plan.actions\[0\].kind: missing"),
        (("metrics", "makespan"), "plan.metrics.makespan: missing"),
    ],
)
def test_missing_fields(tmp_path: Path, path: tuple, message: str) -> None:
    data = copy.deepcopy(_plan("1f1b").to_json())
    parent: object = data
    for key in path[:-1]:
        parent = parent[key]  # type: ignore[index]
    del parent[path[-1]]  # type: ignore[attr-defined]
    with pytest.raises(InvalidInputError, match=r"bad.json: " + message):
        read_plan(_write(tmp_path, data))


def test_wrong_field_types(tmp_path: Path) -> None:
    data = _plan("1f1b").to_json()
    data["devices"][0]["memory_limit"] = "lots"  # type: ignore[index]
    with pytest.raises(
        InvalidInputError, match=r"plan.devices\[0\].memory_limit: must be a number, got 'lots'"
    ):
        read_plan(_write(tmp_path, data))
    data = _plan("1f1b").to_json()
    data["actions"][0]["end"] = -5  # type: ignore[index]
    with pytest.raises(InvalidInputError, match=r"plan.actions\[0\]: ends at -5 before it starts at 0"):
        read_plan(_write(tmp_path, data))


def test_hand_edited_plan_fails_check(tmp_path: Path) -> None:
    data = _plan("zb-h1").to_json()
    data["metrics"]["makespan"] = 1.0  # type: ignore[index]
    errors = read_plan(_write(tmp_path, data)).validate()
    assert len(errors) == 1 and errors[0].startswith("[metrics] plan: claims makespan 1,")


def test_fused_actions_carry_their_fb_cost_in_the_file(tmp_path: Path) -> None:
    # issue 12: DualPipe's fused F&B actions on stages without an FB cost took F + B implicitly, so
    # the file alone could not re-verify them; now each such stage writes FB = F + B = 3 (F = I = W
    # = 1) and a checker that reads only the file finds every fused action exactly FB long
    from parplan.schedule.expert import build_schedule
    from parplan.synthetic import synthetic_problem

    problem = synthetic_problem(pp=4, microbatches=8, placement="bidirectional", costs="F=1,I=1,W=1")
    plan = Plan.from_schedule(problem, build_schedule("dualpipe", problem))
    path = plan.write(tmp_path / "dualpipe.json")
    doc = json.loads(path.read_text())
    fb = {s["index"]: s["cost"].get("FB") for s in doc["stages"]}
    fused = [a for a in doc["actions"] if a["kind"] == "FB"]
    assert fused, "DualPipe has fused chunks"
    for a in fused:
        forward = next(p for p in a["parts"] if p["kind"] == "F")
        assert a["end"] - a["start"] == fb[forward["stage"]] == 3.0
    again = read_plan(path)
    assert again.validate() == [] and again.metrics.makespan == plan.metrics.makespan


def test_plan_write_refuses_non_finite_numbers(tmp_path, monkeypatch) -> None:
    """Plan files are strict JSON: a NaN would make the file unreadable to other checkers."""
    from parplan.errors import InternalError

    plan = _plan("1f1b")
    assert plan.write(tmp_path / "ok.json").exists()
    doc = plan.to_json()
    doc["metrics"] = {"makespan": float("nan")}
    monkeypatch.setattr(Plan, "to_json", lambda self: doc)
    with pytest.raises(InternalError, match="non-finite"):
        plan.write(tmp_path / "p.json")
    assert not (tmp_path / "p.json").exists()
