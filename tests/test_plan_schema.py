"""The shipped JSON Schema of parplan.plan/1: every plan parplan writes conforms, broken ones do not."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import jsonschema
import pytest

from parplan.plan import Plan, plan_schema
from parplan.schedule.expert import applicable_schedules, build_schedule
from parplan.solve import plan_problem
from parplan.synthetic import synthetic_problem

SETTINGS = [
    dict(pp=4, microbatches=8, placement="linear", costs="F=1,I=1,W=1"),
    dict(pp=4, microbatches=8, placement="linear", costs="F=1,B=2"),
    dict(pp=4, microbatches=8, placement="interleaved", costs="F=1,I=1,W=1"),
    dict(pp=4, microbatches=8, placement="v", costs="F=1,I=1,W=1"),
    dict(pp=4, microbatches=8, placement="bidirectional", costs="F=1,I=1,W=1,FB=2.5"),
]


def _validator() -> jsonschema.Draft202012Validator:
    schema = plan_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def _written(plan: Plan, tmp_path: Path) -> dict[str, object]:
    doc: dict[str, object] = json.loads(plan.write(tmp_path / "p.json").read_text())
    return doc


@pytest.mark.parametrize("kw", SETTINGS, ids=lambda kw: f"{kw['placement']}-{kw['costs']}")
def test_every_built_in_schedule_and_the_planner_write_conforming_plans(
    kw: dict[str, object], tmp_path: Path
) -> None:
    validator = _validator()
    problem = synthetic_problem(**kw)  # type: ignore[arg-type]
    plans = [
        Plan.from_schedule(problem, build_schedule(name, problem))
        for name, reason in applicable_schedules(problem)
        if reason is None
    ]
    plans.append(plan_problem(problem, time_limit_s=2, deterministic=True, fused="FB" in str(kw["costs"])))
    assert len(plans) >= 2
    for plan in plans:
        errors = sorted(validator.iter_errors(_written(plan, tmp_path)), key=str)
        assert not errors, f"{plan.name}: {errors[0].message} at {list(errors[0].absolute_path)}"


def test_broken_plans_do_not_conform(tmp_path: Path) -> None:
    validator = _validator()
    problem = synthetic_problem(pp=2, microbatches=4, placement="bidirectional", costs="F=1,I=1,W=1")
    good = _written(Plan.from_schedule(problem, build_schedule("dualpipe", problem)), tmp_path)
    assert validator.is_valid(good)
    fused = next(i for i, a in enumerate(good["actions"]) if a["kind"] == "FB")  # type: ignore[index,union-attr]

    def broken(edit):  # type: ignore[no-untyped-def]
        doc = copy.deepcopy(good)
        edit(doc)
        return doc

    cases = {
        "no actions": lambda d: d.pop("actions"),
        "other format": lambda d: d.update(format="parplan.plan/2"),
        "unknown kind": lambda d: d["actions"][0].update(kind="X"),
        "fused without parts": lambda d: d["actions"][fused].pop("parts"),
        "negative cost": lambda d: d["stages"][0]["cost"].update(F=-1.0),
        "no backward cost": lambda d: d["stages"][0].update(cost={"F": 1.0}),
        "memory limit as text": lambda d: d["devices"][0].update(memory_limit="40GB"),
    }
    for name, edit in cases.items():
        assert not validator.is_valid(broken(edit)), name
