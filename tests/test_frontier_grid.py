"""The whole-model strategy frontier (frontier --grid): legal grids, Pareto set, the questions it answers."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from parplan.cli import app
from parplan.cluster_io import load_cluster
from parplan.errors import InfeasibleError
from parplan.frontier.grid import fewest_devices_grid, grid_frontier, pareto, strategies
from parplan.graph.zoo import build_model

H100 = load_cluster("8xh100")


def test_legal_strategies_respect_heads_layers_and_batch() -> None:
    g = build_model("llama-7b", num_layers=2)  # 32 heads, 2 layers
    got = strategies(g, H100, 8, global_batch=8, zero=(0,), recompute=("none",))
    assert {(s.pp, s.dp, s.tp) for s in got} == {
        (1, 8, 1),
        (1, 4, 2),
        (1, 2, 4),
        (1, 1, 8),
        (2, 4, 1),
        (2, 2, 2),
        (2, 1, 4),
    }
    # a global batch of 2 samples allows dp <= 2 only
    assert max(s.dp for s in strategies(g, H100, 8, global_batch=2)) == 2
    # ZeRO needs data parallelism
    assert all(s.dp > 1 for s in strategies(g, H100, 8, global_batch=8) if s.zero)


def test_llama_7b_grid_frontier_is_what_practitioners_run() -> None:
    g = build_model("llama-7b")
    f = grid_frontier(g, H100, 8)
    assert len(f.points) >= 5
    assert f.fastest.strategy.dp == 8 and f.fastest.strategy.zero > 0  # data parallel + ZeRO at the fast end
    assert f.least_memory.strategy.recompute == "full"  # checkpointing at the small-memory end
    times = [e.step_s for e in f.points]
    mems = [e.memory.total for e in f.points]
    assert times == sorted(times) and mems == sorted(mems, reverse=True)
    # Pareto: nothing evaluated dominates a point
    for p in f.points:
        assert not any(
            (e.step_s <= p.step_s and e.memory.total < p.memory.total)
            or (e.step_s < p.step_s and e.memory.total <= p.memory.total)
            for e in f.evaluated
        )
    assert pareto(f.evaluated) == f.points


def test_llama_70b_needs_pipeline_parallelism_on_16_h100() -> None:
    # issue 10: TP8 x PP2 is how practice runs llama-70b on two DGX H100 nodes for least memory
    g = build_model("llama-70b")
    f = grid_frontier(g, load_cluster("dgx-h100:2"), 16, global_batch=16)
    least = f.least_memory.strategy
    assert (least.pp, least.tp, least.recompute) == (2, 8, "full")
    assert f.least_memory.fits
    assert any(e.strategy.pp > 1 for e in f.fitting())


def test_time_target_names_the_failing_constraint() -> None:
    g = build_model("llama-70b")
    with pytest.raises(InfeasibleError, match="memory is what fails, not time"):
        fewest_devices_grid(g, H100, 2.0, global_batch=8)
    small = build_model("llama-7b", num_layers=4)
    with pytest.raises(InfeasibleError, match="time is what fails: the fastest strategy that fits"):
        fewest_devices_grid(small, H100, 1e-6)
    ok = fewest_devices_grid(small, H100, 10.0)
    assert ok.devices == 1  # one device already meets 10 s: the fewest


def test_cli_grid_json_and_chosen_point(tmp_path) -> None:  # type: ignore[no-untyped-def]
    runner = CliRunner()
    r = runner.invoke(
        app,
        [
            "frontier",
            "--model",
            "llama-7b",
            "--cluster",
            "8xh100",
            "--grid",
            "--memory-limit",
            "20GiB",
            "--json",
        ],
    )
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["kind"] == "strategy-grid" and doc["devices"] == 8
    assert doc["chosen"]["memory_bytes"] <= 20 * 2**30
    assert doc["chosen"]["step_s"] == min(
        p["step_s"] for p in doc["points"] if p["memory_bytes"] <= 20 * 2**30
    )
    # the operator-level frontier's point keys keep working
    assert {"time_s", "memory_bytes", "family", "strategy", "memory_breakdown"} <= set(doc["points"][0])
    plot = tmp_path / "grid.png"
    r = runner.invoke(app, ["frontier", "--model", "llama-7b", "--grid", "--plot", str(plot)])
    assert r.exit_code == 0, r.output
    assert plot.stat().st_size > 1000


def test_default_space_is_the_grid_for_transformers_and_operators_on_request() -> None:
    runner = CliRunner()
    grid = json.loads(runner.invoke(app, ["frontier", "--model", "llama-7b", "--json"]).stdout)
    assert grid["kind"] == "strategy-grid" and len(grid["points"]) >= 5
    assert grid["points"][0]["family"].startswith("DP8+ZeRO")  # data parallel + ZeRO at the fast end
    assert "RC-full" in grid["points"][-1]["family"]  # checkpointing at the small-memory end
    ops = json.loads(runner.invoke(app, ["frontier", "--model", "llama-7b", "--operators", "--json"]).stdout)
    assert ops.get("kind") != "strategy-grid" and "error_bound" in ops
    mesh = json.loads(
        runner.invoke(app, ["frontier", "--model", "llama-7b", "--mesh", "2x4", "--json"]).stdout
    )
    assert mesh.get("kind") != "strategy-grid"  # an operator-level option selects that search


def test_cli_grid_refuses_operator_options_and_says_why() -> None:
    r = CliRunner().invoke(app, ["frontier", "--model", "llama-7b", "--grid", "--mesh", "2x4"])
    assert r.exit_code == 2
    assert "--mesh: an operator-level option" in r.output


def test_cli_grid_time_target_memory_message() -> None:
    r = CliRunner().invoke(
        app, ["frontier", "--model", "llama-70b", "--cluster", "8xh100", "--grid", "--time-target", "2s"]
    )
    assert r.exit_code != 0
    assert "memory is what fails, not time" in r.output


def test_cli_fp8_is_float8_training_on_the_grid() -> None:
    runner = CliRunner()
    fp8 = json.loads(
        runner.invoke(app, ["frontier", "--model", "llama-7b", "--dtype", "fp8", "--json"]).stdout
    )
    bf16 = json.loads(runner.invoke(app, ["frontier", "--model", "llama-7b", "--json"]).stdout)
    assert fp8["points"][0]["step_s"] < bf16["points"][0]["step_s"]
    # the per-operator frontier prices float8 the same way
    ops = ["frontier", "--model", "llama-7b", "--num-layers", "2", "--operators", "--json"]
    fp8_ops = json.loads(runner.invoke(app, [*ops, "--dtype", "fp8"]).stdout)
    bf16_ops = json.loads(runner.invoke(app, ops).stdout)
    assert fp8_ops["points"][0]["time_s"] < bf16_ops["points"][0]["time_s"]


@pytest.mark.parametrize("space", ["--grid", "--operators"])
def test_idle_devices_are_said(space: str) -> None:
    r = CliRunner().invoke(
        app, ["frontier", "--model", "gpt-tiny", "--cluster", "8xh100", "--devices", "4", space]
    )
    assert r.exit_code == 0, r.output
    assert "4 of the cluster's 8 devices are left idle" in r.output
