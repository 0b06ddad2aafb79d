"""Layer-level (full) activation checkpointing in the frontier: closed forms, brute force, the CLI."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from parplan.cli import app
from parplan.cluster_io import load_cluster
from parplan.cost.compute import op_time
from parplan.errors import InvalidInputError
from parplan.frontier import brute_force, evaluate, frontier, memory_breakdown, search_space
from parplan.frontier.search import _blocks
from parplan.frontier.strategies import _scaled
from parplan.graph.zoo import build_model

sys.path.insert(0, str(Path(__file__).parent))
from test_frontier import ACT, _cluster, _same, layered


def _close(a: float, b: float) -> bool:
    return abs(a - b) <= 1e-9 * max(abs(a), abs(b)) + 1e-9  # TOL


def _ckpt_space(g, cluster, devices):  # type: ignore[no-untyped-def]
    return search_space(g, cluster, devices=devices, checkpoint_layers=[ops for _, ops, _ in _blocks(g)])


@pytest.mark.parametrize("reuse", [True, False])
def test_three_layers_match_brute_force_and_closed_form(reuse: bool) -> None:
    # x (1 ACT) + 3 layers of ln, up, down, add (1 ACT each): 13 ACT stored without checkpointing.
    # Checkpointing k layers stores their inputs (k ACT) instead of 4k ACT, plus one layer (4 ACT)
    # alive while it is recomputed: k = 1 totals 10 + 4 = 14 > 13 (dominated), k = 2 totals
    # 7 + 4 = 11, k = 3 totals 4 + 4 = 8, each slower by the layers' extra forwards.
    g = layered(3)
    c = _cluster()
    exact = brute_force(_ckpt_space(g, c, 1))
    f = frontier(g, c, devices=1, epsilon=0.0, checkpointing=True, reuse_blocks=reuse)
    assert _same([(p.time_s, p.memory_bytes) for p in f.points], exact)
    mib = [(p.memory_breakdown.activations / ACT, p.memory_breakdown.buffers / ACT) for p in f.points]
    assert mib == [(13.0, 0.0), (7.0, 4.0), (4.0, 4.0)]  # k = 0, 2, 3 layers checkpointed
    assert [p.family for p in f.points] == ["single", "single+AC", "single+AC"]


def test_llama_7b_dp8_zero3_full_checkpointing_closed_form() -> None:
    """Korthikanti et al. 2022, full recompute: each layer keeps its input, 2 s b h bytes."""
    g = build_model("llama-7b", microbatch_size=8, num_layers=4)
    cl = load_cluster("8xh100")
    space = _ckpt_space(g, cl, 8)
    in_layer = {v for ops in space.checkpoint_layers for v in ops}
    assert len(space.checkpoint_layers) == 4

    def name(i: int, ckpt: bool) -> str:
        base = "dp8.tp1.rep" + (".z3" if g.ops[i].param_bytes > 0 else "")
        return base + (".ckpt" if ckpt and i in in_layer else "")

    plain = {i: name(i, False) for i in range(g.num_ops)}
    full = {i: name(i, True) for i in range(g.num_ops)}
    bd0, bd = memory_breakdown(space, plain), memory_breakdown(space, full)
    s, h, b = 2048, 4096, 1  # one sample per device
    outside = sum(op.act_bytes for i, op in enumerate(g.ops) if i not in in_layer) / 8
    layer0 = sum(g.ops[i].act_bytes for i in space.checkpoint_layers[0]) / 8
    assert _close(bd.activations, outside + 4 * 2 * s * b * h)
    assert _close(bd.buffers, layer0)
    assert _close(bd0.activations, outside + 4 * layer0) and bd0.buffers == 0
    assert bd.state == bd0.state
    # the extra forward: one more F of every layer op (no collectives at tp = 1)
    extra = sum(op_time(_scaled(g.ops[i], 1 / 8), cl.devices[0], "F", dtype="bf16") for i in in_layer)
    assert _close(evaluate(space, full)[0] - evaluate(space, plain)[0], extra)
    assert _close(evaluate(space, full)[1], bd.total)


def test_a_layer_is_checkpointed_whole_or_not_at_all() -> None:
    g = build_model("gpt-tiny", microbatch_size=2, num_layers=1)
    space = _ckpt_space(g, load_cluster("8xh100"), 2)
    (ops,) = space.checkpoint_layers
    choice = {i: space.configs[i][0].name for i in range(g.num_ops)}
    first = ops[0]
    choice[first] = next(c.name for c in space.configs[first] if c.checkpoint)
    with pytest.raises(InvalidInputError, match="checkpoints only some of its ops"):
        memory_breakdown(space, choice)


def test_llama_7b_frontier_ends_fully_checkpointed() -> None:
    g = build_model("llama-7b", microbatch_size=8, num_layers=8)
    cl = load_cluster("8xh100")
    plain = frontier(g, cl, devices=8)
    f = frontier(g, cl, devices=8, checkpointing=True)
    lean = f.least_memory
    assert lean.memory_bytes < plain.least_memory.memory_bytes
    assert lean.family.endswith("+AC") and lean.memory_breakdown is not None
    assert all(v.endswith(".ckpt") for k, v in lean.strategy if k.startswith("layer"))
    assert _close(lean.memory_breakdown.total, lean.memory_bytes)
    assert f.fastest.time_s == pytest.approx(plain.fastest.time_s, rel=0.03)


def test_cli_checkpointing_option() -> None:
    args = ["frontier", "--model", "gpt-tiny", "--devices", "2", "--microbatch-size", "2", "--checkpointing"]
    result = CliRunner().invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["stats"]["checkpointing"] is True
    assert any(p["family"].endswith("+AC") for p in doc["points"])
    result = CliRunner().invoke(
        app, ["frontier", "--model", "gpt-tiny", "--checkpointing", "--time-target", "1s"]
    )
    assert result.exit_code == 2 and "--checkpointing" in result.output
