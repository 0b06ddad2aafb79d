"""Per-component memory of frontier points: it totals memory_bytes, and matches ZeRO's closed forms."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from parplan.cli import app
from parplan.cluster_io import load_cluster
from parplan.cost.memory import MEMORY_COMPONENTS, MemoryBreakdown
from parplan.frontier import Frontier, frontier, memory_breakdown, search_space
from parplan.graph.zoo import build_model


@pytest.fixture(scope="module")
def llama_front() -> Frontier:
    # micro-batch 8 so that every data-parallel grid of 8 devices is legal
    return frontier(build_model("llama-7b", microbatch_size=8), load_cluster("8xh100"), devices=8)


def _close(a: float, b: float) -> bool:
    return abs(a - b) <= 1e-9 * max(abs(a), abs(b)) + 1e-9  # TOL


def test_every_point_of_llama_7b_sums_to_its_memory(llama_front: Frontier) -> None:
    assert len(llama_front.points) >= 2
    for p in llama_front.points:
        bd = p.memory_breakdown
        assert bd is not None
        assert _close(bd.total, p.memory_bytes), (p.family, bd, p.memory_bytes)
        assert _close(sum(bd.to_json().values()), p.memory_bytes)
        assert bd.activations > 0 and bd.parameters > 0 and bd.buffers == 0


def test_frontier_gradients_and_optimizer_follow_zero(llama_front: Frontier) -> None:
    n = build_model("llama-7b").param_bytes / 2
    for p in llama_front.points:
        bd = p.memory_breakdown
        assert bd is not None
        # every point shards optimizer state and gradients over all 8 devices (ZeRO >= 2 over
        # DP4 x TP2 shards): 12 bytes and 2 bytes per parameter / 8
        assert _close(bd.optimizer_state, 12 * n / 8)
        assert _close(bd.gradients, 2 * n / 8)


def test_zero3_data_parallel_closed_form() -> None:
    """DP8 + ZeRO-3 on every weight: 2 + 2 + 12 bytes per parameter / 8, activations / 8."""
    g = build_model("llama-7b", microbatch_size=8, num_layers=2)
    space = search_space(g, load_cluster("8xh100"), devices=8)
    choice = {i: "dp8.tp1.rep.z3" if op.param_bytes > 0 else "dp8.tp1.rep" for i, op in enumerate(g.ops)}
    bd = memory_breakdown(space, choice)
    n = g.param_bytes / 2
    assert _close(bd.parameters, 2 * n / 8)
    assert _close(bd.gradients, 2 * n / 8)
    assert _close(bd.optimizer_state, 12 * n / 8)
    assert _close(bd.activations, sum(op.act_bytes for op in g.ops) / 8)
    from parplan.frontier import evaluate

    assert _close(bd.total, evaluate(space, choice)[1])


def test_json_carries_the_breakdown_and_round_trips(llama_front: Frontier) -> None:
    doc = llama_front.to_json()
    for p in doc["points"]:
        assert set(p["memory_breakdown"]) == set(MEMORY_COMPONENTS)
        assert _close(sum(p["memory_breakdown"].values()), p["memory_bytes"])
    back = Frontier.from_json(json.loads(json.dumps(doc)))
    assert back.points == llama_front.points


def test_bad_breakdown_json_is_path_qualified() -> None:
    with pytest.raises(ValueError, match=r"memory_breakdown\.weights: unknown component"):
        MemoryBreakdown.from_json({"weights": 1.0})


def test_cli_json_and_table() -> None:
    runner = CliRunner()
    args = ["frontier", "--model", "gpt-tiny", "--cluster", "8xh100", "--devices", "2"]
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    for p in json.loads(result.stdout)["points"]:
        assert _close(sum(p["memory_breakdown"].values()), p["memory_bytes"])
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "memory / device by component" in result.output and "optimizer state" in result.output


def test_default_frontier_admits_data_parallelism() -> None:
    """With -m 1 every data-parallel grid was illegal (llama-7b on 8 devices: two TP8 points). The
    default is now one micro-batch per device; --global-batch (samples) sets it like Megatron-LM."""
    import json

    from typer.testing import CliRunner

    from parplan.cli import app

    runner = CliRunner()
    base = [
        "frontier",
        "--model",
        "gpt2-small",
        "--cluster",
        "8xh100",
        "--devices",
        "4",
        "--operators",
        "--json",
    ]
    default = runner.invoke(app, base)
    assert default.exit_code == 0, default.output
    points = json.loads(default.stdout)["points"]
    assert len(points) >= 5
    assert any('"dp4.tp1' in json.dumps(p["strategy"]) for p in points)  # data parallel over all 4
    same = runner.invoke(app, [*base, "--global-batch", "4"])
    assert json.loads(same.stdout)["points"] == points  # 4 samples of micro-batch size 1 = the default
    bad = runner.invoke(app, [*base, "--global-batch", "6", "-m", "4"])
    assert bad.exit_code == 2 and "disagree" in json.loads(bad.stdout)["error"]["message"]
