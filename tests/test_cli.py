"""The command line: the acceptance commands of the foundation issue, JSON contracts, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from parplan.cli import app

runner = CliRunner()


def _run(*args: str, code: int = 0) -> str:
    result = runner.invoke(app, list(args))
    assert result.exit_code == code, (result.exit_code, result.output)
    return result.output


def _json(*args: str) -> dict:
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, (result.exit_code, result.output)
    return json.loads(result.stdout)


def _by_name(doc: dict) -> dict[str, dict]:
    return {row["name"]: row for row in doc["schedules"]}


def test_gpipe_and_1f1b_makespan_and_memory() -> None:
    doc = _json(
        "compare",
        "--pp",
        "4",
        "--microbatches",
        "8",
        "--placement",
        "linear",
        "--costs",
        "F=1,B=2",
        "--schedules",
        "gpipe,1f1b",
    )
    rows = _by_name(doc)
    assert rows["gpipe"]["makespan"] == 33 and rows["1f1b"]["makespan"] == 33
    assert rows["gpipe"]["peak_memory_per_device"][0] == 8
    assert rows["1f1b"]["peak_memory_per_device"][0] == 4
    assert all(r["valid"] for r in rows.values())


def test_zero_bubble_and_dualpipe_numbers() -> None:
    zb = _by_name(
        _json("compare", "--pp", "4", "--microbatches", "8", "--costs", "F=1,I=1,W=1", "--schedules", "zb-h1")
    )
    assert zb["zb-h1"]["makespan"] == 27
    dp = _by_name(
        _json(
            "compare",
            "--pp",
            "8",
            "--microbatches",
            "20",
            "--placement",
            "bidirectional",
            "--costs",
            "F=1,I=1,W=1,FB=3",
            "--schedules",
            "dualpipe",
        )
    )
    assert dp["dualpipe"]["makespan"] == 66
    assert max(dp["dualpipe"]["peak_memory_per_device"]) == 9
    dv = _by_name(
        _json(
            "compare",
            "--pp",
            "4",
            "--microbatches",
            "10",
            "--placement",
            "v",
            "--costs",
            "F=1,I=1,W=1,FB=3",
            "--schedules",
            "dualpipev",
        )
    )
    assert dv["dualpipev"]["makespan"] == 66


def test_compare_writes_plans_that_check_accepts(tmp_path: Path) -> None:
    _run("compare", "--pp", "4", "--microbatches", "8", "--costs", "F=1,I=1,W=1", "-o", str(tmp_path))
    files = sorted(tmp_path.glob("*.json"))
    assert {f.stem for f in files} >= {"gpipe", "1f1b", "zb-h1", "zb-h2"}
    for f in files:
        doc = _json("check", str(f))
        assert doc["valid"] and doc["errors"] == []


def _broken(tmp_path: Path, how: str) -> Path:
    _run(
        "compare",
        "--pp",
        "4",
        "--microbatches",
        "8",
        "--costs",
        "F=1,I=1,W=1",
        "--schedules",
        "1f1b",
        "-o",
        str(tmp_path),
    )
    path = tmp_path / "1f1b.json"
    plan = json.loads(path.read_text())
    acts = plan["actions"]
    if how == "missing":
        victim = next(a for a in acts if (a["stage"], a["kind"], a["microbatch"]) == (2, "F", 5))
        acts.remove(victim)
    elif how == "dependency":
        a = next(a for a in acts if (a["stage"], a["kind"], a["microbatch"]) == (3, "F", 0))
        a["start"], a["end"] = 0.0, 1.0  # before its producer 2F0 has finished
    elif how == "overlap":
        a = next(a for a in acts if (a["stage"], a["kind"], a["microbatch"]) == (0, "F", 2))
        a["start"], a["end"] = a["start"] - 0.5, a["end"] - 0.5
    elif how == "memory":
        for d in plan["devices"]:
            d["memory_limit"] = 2
    out = tmp_path / f"broken-{how}.json"
    out.write_text(json.dumps(plan))
    return out


@pytest.mark.parametrize(
    ("how", "needle"),
    [("missing", "2F5"), ("dependency", "3F0"), ("overlap", "0F2"), ("memory", "memory limit 2")],
)
def test_check_rejects_hand_broken_plans(tmp_path: Path, how: str, needle: str) -> None:
    result = runner.invoke(app, ["check", str(_broken(tmp_path, how)), "--json"])
    assert result.exit_code == 2
    doc = json.loads(result.stdout)
    assert not doc["valid"]
    assert any(needle in e for e in doc["errors"]), doc["errors"]


def test_model_compare_table_and_pictures(tmp_path: Path) -> None:
    out = _run(
        "compare",
        "--model",
        "llama-7b",
        "--cluster",
        "8xh100",
        "--pp",
        "4",
        "--microbatches",
        "16",
        "--gantt",
        str(tmp_path / "g"),
        "--trace",
        str(tmp_path / "t"),
    )
    for name in ("1f1b", "zb-h1", "dualpipe", "zb-v"):
        assert name in out
    assert (tmp_path / "g" / "1f1b.png").stat().st_size > 10_000
    trace = json.loads((tmp_path / "t" / "1f1b.trace.json").read_text())
    assert trace["traceEvents"]


def test_listings_json() -> None:
    assert {r["name"] for r in _json("schedules")["schedules"]} == {
        "gpipe",
        "1f1b",
        "interleaved-1f1b",
        "zb-h1",
        "zb-h2",
        "zb-auto",
        "zb-v",
        "v-min",
        "v-half",
        "dualpipe",
        "dualpipev",
    }
    assert "llama-7b" in {r["name"] for r in _json("models")["models"]}
    assert {"8xh100", "8xa100", "2x8xh100", "local"} <= {r["name"] for r in _json("clusters")["clusters"]}


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["compare", "--pp", "4", "--microbatches", "8", "--schedules", "zb-h9"], "unknown"),
        (
            ["compare", "--model", "llama-8b", "--cluster", "8xh100", "--pp", "4", "--microbatches", "8"],
            "llama",
        ),
        (
            [
                "compare",
                "--pp",
                "3",
                "--microbatches",
                "8",
                "--placement",
                "bidirectional",
                "--costs",
                "F=1,I=1,W=1",
                "--schedules",
                "dualpipe",
            ],
            "even number of devices",
        ),
        (
            [
                "compare",
                "--pp",
                "4",
                "--microbatches",
                "6",
                "--placement",
                "bidirectional",
                "--costs",
                "F=1,I=1,W=1",
                "--schedules",
                "dualpipe",
            ],
            "--microbatches >= 2*pp",
        ),
        (["compare", "--pp", "4", "--microbatches", "8", "--costs", "F=-1,B=2"], "must be >= 0"),
        (["compare", "--pp", "4", "--microbatches", "8", "--costs", "F=1,X=2"], "--costs"),
        (["compare", "--pp", "4", "--microbatches", "8", "--cluster", "8xh100"], "--cluster"),
        (["compare", "--microbatches", "8"], "--pp"),
        (
            ["compare", "--model", "gpt-tiny", "--cluster", "local", "--pp", "2", "--microbatches", "4",
             "--dtype", "fp8"],
            "list no fp8 peak",
        ),
        (
            ["frontier", "--model", "gpt-tiny", "--cluster", "local", "--devices", "2", "--operators",
             "--dtype", "fp8"],
            "list no fp8 peak",
        ),
    ],
)
def test_bad_input_one_message_exit_2(args: list[str], needle: str) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert needle in result.output
    assert "Traceback" not in result.output


def test_malformed_files_exit_2(tmp_path: Path) -> None:
    bad_yaml = tmp_path / "c.yaml"
    bad_yaml.write_text("name: x\ndevices: [\n")
    result = runner.invoke(
        app,
        ["compare", "--model", "gpt-tiny", "--cluster", str(bad_yaml), "--pp", "2", "--microbatches", "4"],
    )
    assert result.exit_code == 2 and "line" in result.output
    bad_json = tmp_path / "p.json"
    bad_json.write_text("{not json")
    result = runner.invoke(app, ["check", str(bad_json)])
    assert result.exit_code == 2 and "not valid JSON" in result.output


DATA = Path(__file__).parent / "data"


def test_plan_json_contract_and_dualpipe_headline(tmp_path: Path) -> None:
    doc = _json(
        "plan",
        "--pp",
        "8",
        "--microbatches",
        "20",
        "--placement",
        "bidirectional",
        "--costs",
        "F=1,I=1,W=1,FB=3",
        "--memory-limit",
        "9",
        "--time-limit",
        "30",
        "-o",
        str(tmp_path / "p.json"),
    )
    assert set(doc) >= {
        "status",
        "makespan",
        "lower_bound",
        "gap",
        "bubble_ratio",
        "peak_memory_per_device",
        "solve_time_s",
        "backend",
        "baseline",
    }
    assert doc["baseline"] == {"name": "dualpipe", "makespan": 66.0}
    # half of DualPipe's bubble: 3 idle units per device instead of 6, proven optimal
    assert doc["makespan"] == 63 and doc["lower_bound"] == 63 and doc["status"] == "optimal"
    assert max(doc["peak_memory_per_device"]) <= 9
    assert _json("check", str(tmp_path / "p.json"))["valid"]


def test_compare_with_plan_adds_the_planner_row() -> None:
    rows = _by_name(
        _json(
            "compare",
            "--pp",
            "4",
            "--microbatches",
            "8",
            "--costs",
            "F=1,B=2",
            "--with-plan",
            "--time-limit",
            "10",
        )
    )
    assert rows["parplan"]["makespan"] <= min(r["makespan"] for r in rows.values())
    assert rows["parplan"]["valid"]


def test_infeasible_memory_limit_exits_3_with_the_reason() -> None:
    result = runner.invoke(
        app, ["plan", "--pp", "4", "--microbatches", "8", "--costs", "F=1,B=2", "--memory-limit", "0.5"]
    )
    assert result.exit_code == 3, result.output
    assert "device" in result.output and "limit" in result.output


def test_fjsp_ft06_reaches_its_known_optimum() -> None:
    doc = _json("fjsp", str(DATA / "ft06.txt"), "--time-limit", "20")
    assert doc["makespan"] == 55 and doc["lower_bound"] == 55 and doc["status"] == "optimal"


def test_frontier_json_and_plot(tmp_path: Path) -> None:
    doc = _json(
        "frontier",
        "--model",
        "gpt-tiny",
        "--devices",
        "4",
        "--microbatch-size",
        "4",
        "--memory-limit",
        "80GB",
        "--plot",
        str(tmp_path / "f.png"),
    )
    assert doc["points"] and doc["chosen"] is not None
    assert {"time_s", "memory_bytes", "strategy"} <= set(doc["points"][0])
    times = [p["time_s"] for p in doc["points"]]
    mems = [p["memory_bytes"] for p in doc["points"]]
    assert times == sorted(times) and mems == sorted(mems, reverse=True)  # a Pareto frontier
    assert (tmp_path / "f.png").stat().st_size > 10_000


def test_show_json_and_csv_export(tmp_path: Path) -> None:
    _run(
        "compare",
        "--pp",
        "2",
        "--microbatches",
        "4",
        "--costs",
        "F=1,I=1,W=1",
        "--schedules",
        "zb-h1",
        "-o",
        str(tmp_path),
    )
    doc = _json("show", str(tmp_path / "zb-h1.json"), "--csv", str(tmp_path / "p.csv"))
    assert doc["orders"][0][:2] == ["0F0", "0F1"] and doc["metrics"]["makespan"] > 0
    rows = (tmp_path / "p.csv").read_text().strip().splitlines()
    assert len(rows) == 2 and rows[0].split(",")[0] == "0F0"


def test_plan_then_run_on_gloo_matches_single_process_gradients(tmp_path: Path) -> None:
    # The runtime acceptance command: two real processes on gloo, gradients as a single process.
    plan = tmp_path / "p.json"
    _run(
        "plan",
        "--model",
        "gpt-tiny",
        "--cluster",
        "local",
        "--pp",
        "2",
        "--microbatches",
        "4",
        "--seq-len",
        "32",
        "--time-limit",
        "5",
        "-o",
        str(plan),
    )
    doc = _json("run", str(plan), "--steps", "1")
    assert doc["max_grad_abs_err"] < 1e-4
    assert abs(doc["loss"] - doc["ref_loss"]) < 1e-5
    assert doc["measured_step_s"] > 0 and doc["predicted_step_s"] > 0


def test_plan_chooses_stage_strategies_with_the_schedule() -> None:
    # 30 GB per device: the fastest strategy (DP4+ZeRO-1) on both stages leaves room for too few
    # activations in flight; the joint plan mixes strategies across stages.
    doc = _json(
        "plan",
        "--model",
        "llama-7b",
        "--cluster",
        "8xh100",
        "--pp",
        "2",
        "--devices-per-stage",
        "4",
        "--microbatches",
        "8",
        "--microbatch-size",
        "4",
        "--seq-len",
        "2048",
        "--memory-limit",
        "30GB",
        "--time-limit",
        "30",
        "--deterministic",
    )
    assert len(doc["stage_strategies"]) == 2
    assert max(doc["peak_memory_per_device"]) <= 30e9
    assert doc["lower_bound"] <= doc["makespan"]
