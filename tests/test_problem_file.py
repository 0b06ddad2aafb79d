"""--problem FILE.json (problem files: a plan file or its problem part) and --stage-costs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from parplan.cli import app
from parplan.errors import InvalidInputError
from parplan.plan import read_plan
from parplan.problem_file import problem_from_json, problem_to_json, read_problem, write_problem
from parplan.synthetic import parse_stage_costs, synthetic_problem

runner = CliRunner()

# The Zero Bubble paper's 1.5B profile (Qi et al. 2024, Table 5, p = 8 row), cut to 4 stages, with the
# heavier last stage of its own profile (+43% F, +70% W for the LM head), 1F1B's memory (4 devices,
# limit 0.5 parameters + 4 activations, W keeping 0.36641 of one) and its measured communication time.
F, I, W, COMM, WGRAD = 18.522, 18.086, 9.337, 0.601, 0.36641


def _profile() -> dict:
    costs = [{"F": F, "I": I, "W": W} for _ in range(3)] + [{"F": F * 1.43, "I": I, "W": W * 1.7}]
    return {
        "time_unit": "unit",
        "memory_unit": "unit",
        "name": "zb 1.5B profile, 4 stages",
        "devices": [{"index": d, "name": f"gpu{d}", "memory_limit": 4.5} for d in range(4)],
        "stages": [
            {"index": s, "device": s, "cost": c, "act_mem": 1.0, "wgrad_mem": WGRAD, "param_mem": 0.5}
            for s, c in enumerate(costs)
        ],
        "edges": [{"src": s, "dst": s + 1, "comm": COMM} for s in range(3)],
        "microbatches": [{"index": j, "stages": [0, 1, 2, 3]} for j in range(8)],
    }


def _write(tmp_path: Path, data: object, name: str = "problem.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return path


def _invoke(*args: str, code: int = 0) -> str:
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == code, (result.exit_code, result.output)
    # bad input is one message and an exit code, never a traceback
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.output


def _json(*args: str) -> dict:
    result = runner.invoke(app, [*(str(a) for a in args), "--json"])
    assert result.exit_code == 0, (result.exit_code, result.output)
    return json.loads(result.stdout)


def _makespans(doc: dict) -> dict[str, float]:
    return {row["name"]: row["makespan"] for row in doc["schedules"]}


# ----------------------------------------------------------------------------- library round trips
@pytest.mark.parametrize(
    ("placement", "chunks"), [("linear", 1), ("interleaved", 2), ("v", 2), ("bidirectional", 2), ("free", 1)]
)
def test_problem_part_round_trip_keeps_every_record_and_the_placement(placement: str, chunks: int) -> None:
    p = synthetic_problem(
        pp=4, microbatches=8, placement=placement, comm=0.5, act_mem=2.0, wgrad_mem=0.5, memory_limit=7.0
    )
    q = problem_from_json(json.loads(json.dumps(problem_to_json(p))))
    assert (q.devices, q.stages, q.edges, q.microbatches) == (p.devices, p.stages, p.edges, p.microbatches)
    assert (q.placement, q.chunks, q.split_backward) == (placement, chunks, True)


def test_placement_is_inferred_from_the_layout_when_the_file_omits_it(tmp_path: Path) -> None:
    data = problem_to_json(synthetic_problem(pp=4, microbatches=8, placement="v"))
    del data["placement"], data["chunks"]
    q = read_problem(_write(tmp_path, data))
    assert (q.placement, q.chunks) == ("v", 2)
    # the same stages with one device moved follow no expert layout: only the planner applies
    data["stages"][5]["device"] = 0
    assert read_problem(_write(tmp_path, data)).placement == "graph"


def test_an_irregular_placed_problem_is_planned_to_its_optimum(tmp_path: Path) -> None:
    # Stages 0 and 2 on device 0, stage 1 on device 1, F=I=W=1 except stage 1 (F=2, I=2), comm 0.5
    # on 0->1, two micro-batches. Device 0 has 12 units of work, but before the first F of stage 2
    # can start at 1 + 0.5 + 2 = 3.5 it only has the two F of stage 0 (2 units): it idles >= 1.5,
    # so the makespan is >= 13.5, which a schedule meets. No expert schedule knows this layout.
    cost = {"F": 1, "I": 1, "W": 1}
    data = {
        "devices": [{"index": 0}, {"index": 1}],
        "stages": [
            {"index": 0, "device": 0, "cost": cost},
            {"index": 1, "device": 1, "cost": {"F": 2, "I": 2, "W": 1}},
            {"index": 2, "device": 0, "cost": cost},
        ],
        "edges": [{"src": 0, "dst": 1, "comm": 0.5}, {"src": 1, "dst": 2}],
        "microbatches": [{"index": j, "stages": [0, 1, 2]} for j in range(2)],
    }
    path = _write(tmp_path, data, "irregular.json")
    q = read_problem(path)
    assert (q.placement, q.name) == ("graph", "irregular")  # no name in the file: the file's stem
    doc = _json("plan", "--problem", path, "--time-limit", "3", "--deterministic")
    assert doc["makespan"] == 13.5 and doc["lower_bound"] == 13.5


def test_a_placement_the_stages_do_not_follow_is_refused(tmp_path: Path) -> None:
    data = problem_to_json(synthetic_problem(pp=4, microbatches=8, placement="v"))
    data["placement"] = "interleaved"
    data["stages"][5]["device"] = 0
    with pytest.raises(InvalidInputError, match=r"placement: 'interleaved', but stages\[4\]\.device is 3"):
        read_problem(_write(tmp_path, data))


def test_write_problem_then_read_problem_is_exact(tmp_path: Path) -> None:
    q = read_problem(_write(tmp_path, _profile()))
    again = read_problem(write_problem(q, tmp_path / "again.json"))
    assert again == q and again.stages[3].cost.F == F * 1.43


# ----------------------------------------------------------------------------- plan / compare / check
def test_plan_of_a_profile_keeps_its_costs_devices_and_edges_exactly(tmp_path: Path) -> None:
    src = _write(tmp_path, _profile())
    out = tmp_path / "plan.json"
    doc = _json("plan", "--problem", src, "--time-limit", "3", "--deterministic", "-o", out)
    given, planned = read_problem(src), read_plan(out)
    assert planned.problem.stages == given.stages
    assert planned.problem.edges == given.edges
    assert planned.problem.devices == given.devices
    assert planned.problem.microbatches == given.microbatches
    assert max(doc["peak_memory_per_device"]) <= 4.5 * (1 + 1e-9) + 1e-9  # TOL: the file's limit
    # the plan file is itself a problem file that gives back the same problem
    assert read_problem(out) == given
    assert "valid" in _invoke("check", out)


def test_compare_on_a_problem_file_equals_the_same_synthetic_problem(tmp_path: Path) -> None:
    # GPipe on a chain with per-stage costs is two flow shops of identical jobs:
    # sum F + (m-1) max F + sum B + (m-1) max B = 5 + 7*2 + 9 + 7*3 = 49 (4 stages, m = 8, last F=2, B=3)
    synthetic = ["--pp", "4", "-m", "8", "--costs", "F=1,B=2", "--stage-costs", ";;;F=2,B=3"]
    by_options = _makespans(_json("compare", *synthetic, "--schedules", "gpipe,1f1b"))
    assert by_options["gpipe"] == 49
    path = write_problem(
        synthetic_problem(pp=4, microbatches=8, costs="F=1,B=2", stage_costs=";;;F=2,B=3"),
        tmp_path / "p.json",
    )
    assert _makespans(_json("compare", "--problem", path, "--schedules", "gpipe,1f1b")) == by_options


def test_memory_limit_replaces_the_limits_of_the_file(tmp_path: Path) -> None:
    path = _write(tmp_path, _profile())  # limit 4.5: 1F1B (peak 0.5 + 4 on device 0) fits
    rows = {r["name"]: r for r in _json("compare", "--problem", path, "--schedules", "1f1b")["schedules"]}
    assert rows["1f1b"]["valid"] and rows["1f1b"]["peak_memory_per_device"][0] == pytest.approx(4.5)
    tight = _json("compare", "--problem", path, "--schedules", "1f1b", "--memory-limit", "4")
    assert not tight["schedules"][0]["valid"]  # params 0.5 + 4 activations > 4


def test_a_plan_file_is_planned_without_its_actions(tmp_path: Path) -> None:
    _invoke("compare", "--pp", "4", "-m", "8", "--schedules", "zb-h1", "-o", tmp_path / "plans")
    doc = _json(
        "plan", "--problem", tmp_path / "plans" / "zb-h1.json", "--time-limit", "3", "--deterministic"
    )
    assert doc["makespan"] == 27 and doc["lower_bound"] == 27  # ZB-H1 at unit costs, p = 4, m = 8


def test_check_against_another_problem_finds_changed_costs(tmp_path: Path) -> None:
    src = _write(tmp_path, _profile())
    _invoke("compare", "--problem", src, "--schedules", "zb-h1", "-o", tmp_path / "plans")
    plan = tmp_path / "plans" / "zb-h1.json"
    same = _json("check", "--problem", src, plan)
    assert same["valid"] and same["problem_differences"] == []
    slower = _profile()
    slower["stages"][3]["cost"]["W"] = 20.0
    other = _write(tmp_path, slower, "slower.json")
    out = _invoke("check", "--problem", other, plan, code=2)
    assert "stages[3].cost" in out and "20" in out
    assert "lasts 15.8729 but its cost on device 3 is 20" in out  # 9.337 * 1.7


def test_check_against_a_larger_memory_limit_is_valid_and_names_the_difference(tmp_path: Path) -> None:
    src = _write(tmp_path, _profile())
    _invoke("compare", "--problem", src, "--schedules", "1f1b", "-o", tmp_path / "plans")
    roomy = _profile()
    roomy["devices"][2]["memory_limit"] = 8.0
    doc = _json("check", "--problem", _write(tmp_path, roomy, "roomy.json"), tmp_path / "plans" / "1f1b.json")
    assert doc["valid"] and doc["problem_differences"] == ["devices[2].memory_limit 4.5 -> 8.0"]


# ----------------------------------------------------------------------------- bad input
def test_problem_with_problem_options_names_the_conflict(tmp_path: Path) -> None:
    path = _write(tmp_path, _profile())
    out = _invoke("plan", "--problem", path, "--pp", "4", "--costs", "F=1,B=2", code=2)
    assert "--costs, --pp: not used with --problem" in out
    out = _invoke("compare", "--problem", path, "--stage-costs", ";;;F=2", code=2)
    assert "--stage-costs: not used with --problem" in out


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d["stages"][3]["cost"].update(F=-1), "stages[3].cost.F: must be >= 0, got -1"),
        (
            lambda d: d["stages"][1].update(act_mme=1),
            "stages[1].act_mme: unknown key; did you mean 'act_mem'?",
        ),
        (lambda d: d["stages"][2]["cost"].update(Wg=1), "stages[2].cost.Wg: unknown key"),
        (lambda d: d.update(stagez=d.pop("stages")), "stagez: unknown key; did you mean 'stages'?"),
        (lambda d: d["edges"][1].update(comm=-2), "edges[1].comm: must be >= 0, got -2"),
        (lambda d: d["devices"][0].update(memory_limit="lots"), "devices[0].memory_limit: must be"),
        (lambda d: d["stages"][0].update(device=9), "stages[0].device: 9 is not a device"),
        (lambda d: d.pop("edges"), "edges: missing"),
        (
            lambda d: d.update(format="parplan.graph/1"),
            "format: 'parplan.graph/1' is an operator graph: give",
        ),
        (lambda d: d["stages"][2].update(wgrad_mem=2), "stages[2].wgrad_mem: 2.0 exceeds act_mem 1.0"),
        (
            lambda d: d["stages"][2].update(cost={"F": 1, "B": 2}),
            "stages[2].cost: only B, but stage(s) 0, 1, 3 have I and W",
        ),
    ],
)
def test_bad_problem_files_get_path_qualified_messages(tmp_path: Path, edit, message: str) -> None:  # type: ignore[no-untyped-def]
    data = _profile()
    edit(data)
    path = _write(tmp_path, data)
    out = _invoke("plan", "--problem", path, code=2)
    assert f"{path}: {message}" in " ".join(out.split()), out


def test_non_json_and_non_finite_and_missing_files(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"devices": [')
    assert "not valid JSON" in _invoke("compare", "--problem", bad, code=2)
    bad.write_text(json.dumps(_profile()).replace("18.522", "NaN", 1))
    assert "NaN is not allowed" in _invoke("compare", "--problem", bad, code=2)
    assert "no such problem file" in _invoke("plan", "--problem", tmp_path / "none.json", code=2)


def test_check_on_a_problem_file_says_how_to_use_it(tmp_path: Path) -> None:
    out = _invoke("check", _write(tmp_path, _profile()), code=2)
    assert "this is a problem file (no schedule)" in out and "--problem" in out


# ----------------------------------------------------------------------------- --stage-costs
def test_stage_cost_groups_override_costs_and_memory_per_stage() -> None:
    p = synthetic_problem(
        pp=4, microbatches=8, costs="F=1,I=1,W=1", stage_costs=";;;F=1.43,W=1.7,A=2,Wg=0.5", wgrad_mem=0.25
    )
    assert [s.cost.F for s in p.stages] == [1, 1, 1, 1.43]
    assert p.stages[3].cost.I == 1
    assert p.stages[3].cost.B == 1 + 1.7  # B = I + W
    assert [(s.act_mem, s.wgrad_mem) for s in p.stages] == [(1, 0.25)] * 3 + [(2, 0.5)]
    assert p.source["stage_costs"][3] == {"F": 1.43, "B": 1 + 1.7, "I": 1.0, "W": 1.7}


def test_stage_costs_count_follows_the_placement() -> None:
    assert synthetic_problem(pp=4, microbatches=8, placement="v", stage_costs=";" * 7).num_stages == 8
    assert len(parse_stage_costs("F=1;F=2;F=3")) == 3
    with pytest.raises(
        InvalidInputError, match=r"3 group\(s\) for 8 stages \(v placement, --pp 4: 2\*pp = 8\)"
    ):
        synthetic_problem(pp=4, microbatches=8, placement="v", stage_costs="F=1;F=2;F=3")


@pytest.mark.parametrize(
    ("groups", "message"),
    [
        (";;;X=2", "--stage-costs group 4 (stage 3): cannot read 'X=2'"),
        (";;F=-1;", "--stage-costs group 3 (stage 2): F must be >= 0 and finite, got -1"),
        (";;;B=3", "stage(s) 0, 1, 2 have a split backward (I, W) but stage(s) 3 only B"),
        ("I=1,W=1,B=5;;;", "group 1 (stage 0): B=5 must equal I+W=2"),
        (
            ";A=0.1,Wg=0.5;;",
            "group 2 (stage 1): weight-gradient memory Wg=0.5 exceeds activation memory A=0.1",
        ),
    ],
)
def test_bad_stage_costs_are_refused_with_the_group(groups: str, message: str) -> None:
    out = _invoke("plan", "--pp", "4", "-m", "8", "--stage-costs", groups, code=2)
    assert message in " ".join(out.split()), out


def test_stage_costs_are_for_synthetic_problems_only() -> None:
    out = _invoke(
        "plan",
        "--model",
        "gpt-tiny",
        "--cluster",
        "local",
        "--pp",
        "2",
        "-m",
        "4",
        "--stage-costs",
        ";",
        code=2,
    )
    assert "--stage-costs: not used with --model" in out


def test_objective_names_go_to_the_planner_unchanged(tmp_path: Path) -> None:
    doc = _json("plan", "--problem", _write(tmp_path, _profile()), "--objective", "span", "--time-limit", "3")
    assert doc["objective"] == "span"
    assert doc["objective_value"] == doc["longest_span"] <= doc["makespan"]


def test_check_against_a_smaller_problem_reports_no_metrics(tmp_path: Path) -> None:
    _invoke("compare", "--pp", "4", "-m", "8", "--schedules", "zb-h1", "-o", tmp_path / "plans")
    two = write_problem(synthetic_problem(pp=2, microbatches=8), tmp_path / "two.json")
    result = runner.invoke(
        app, ["check", "--problem", str(two), str(tmp_path / "plans" / "zb-h1.json"), "--json"]
    )
    assert result.exit_code == 2
    doc = json.loads(result.stdout)
    assert not doc["valid"] and doc["makespan"] is None
    assert doc["problem_differences"][:3] == ["devices: 4 -> 2", "stages: 4 -> 2", "edge 1->2 removed"]


def test_messages_name_the_field_once_in_plain_words(tmp_path) -> None:
    """A wrong type says "a number", not "int/float"; a stage's own check is not prefixed twice."""
    import copy

    from parplan.plan import Plan as _Plan
    from parplan.plan import read_plan
    from parplan.schedule.expert import build_schedule
    from parplan.synthetic import synthetic_problem

    problem = synthetic_problem(pp=2, microbatches=2)
    doc = _Plan.from_schedule(problem, build_schedule("1f1b", problem)).to_json()
    for field, value, want in (
        ("act_mem", "big", "plan.stages[0].act_mem: must be a number, got 'big'"),
        ("wgrad_mem", 5, "plan.stages[0].wgrad_mem: 5.0 exceeds act_mem"),
    ):
        bad = copy.deepcopy(doc)
        bad["stages"][0][field] = value
        path = tmp_path / f"{field}.json"
        path.write_text(json.dumps(bad))
        with pytest.raises(InvalidInputError) as info:
            read_plan(path)
        assert want in str(info.value) and "plan.plan." not in str(info.value)
