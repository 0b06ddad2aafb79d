"""`parplan trace FILE.py:FACTORY`: a user's own two-branch module becomes a graph file that plans."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch")

from typer.testing import CliRunner

from parplan.cli import app
from parplan.graph.io import read_graph

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "two_tower.py"
runner = CliRunner()


def test_trace_records_the_model_and_plans(tmp_path: Path) -> None:
    out = tmp_path / "g.json"
    r = runner.invoke(app, ["trace", f"{EXAMPLE}:build", "-o", str(out), "--json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    graph = read_graph(out)
    meta = graph.meta_dict
    assert meta["dtype"] == "fp32" and meta["factory"] == "build" and meta["module_class"] == "TwoTower"
    assert Path(meta["module"]) == EXAMPLE
    names = [op.name for op in graph.ops]
    assert "user.inp" in names and "item.layers.1.0" in names and "head" in names  # no wrapper prefix
    assert names[-1] == "mean"  # the loss is traced as the last op
    # parameters: two towers (32->64, 48->64, 4 x 64->64) and the head (128->1), fp32
    n_params = (32 * 64 + 64) + (48 * 64 + 64) + 4 * (64 * 64 + 64) + (128 + 1)
    assert doc["param_bytes"] == 4 * n_params == sum(op.param_bytes for op in graph.ops)
    r = runner.invoke(
        app,
        ["plan", "--graph", str(out), "--cluster", "local", "--devices", "2", "--time-limit", "5", "--json"],
    )
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["makespan"] > 0


@pytest.mark.parametrize(
    "source, needle",
    [
        ("no_colon.py", "give FILE.py:FACTORY"),
        ("missing.py:build", "no such file"),
        ("{dir}/m.py:nothing", "has no function 'nothing'"),
        ("{dir}/m.py:bad_return", "must return (module, example_inputs[, loss_fn])"),
        ("{dir}/m.py:not_module", "must be a torch.nn.Module"),
        ("{dir}/m.py:raises", "raises() failed (RuntimeError: boom)"),
        ("{dir}/broken.py:build", "importing it failed"),
        ("{dir}/m.py:wrong_shape", "fails on its example inputs"),
    ],
)
def test_bad_factories_are_one_clear_message(tmp_path: Path, source: str, needle: str) -> None:
    (tmp_path / "m.py").write_text(
        "import torch\n"
        "def bad_return():\n    return 3\n"
        "def not_module():\n    return 1, torch.zeros(1)\n"
        "def raises():\n    raise RuntimeError('boom')\n"
        "def wrong_shape():\n    return torch.nn.Linear(3, 2), torch.zeros(4, 5)\n"
    )
    (tmp_path / "broken.py").write_text("import no_such_module_anywhere\n")
    r = runner.invoke(app, ["trace", source.format(dir=tmp_path), "-o", str(tmp_path / "g.json")])
    assert r.exit_code == 2, r.output
    assert needle in " ".join(r.output.split()) and "Traceback" not in r.output
    assert not (tmp_path / "g.json").exists()


_WAYS = {
    "--graph": ["--graph", "{g}", "--devices", "2"],  # merged op groups, free placement
    "--model": ["--model", "{g}", "--pp", "2", "-m", "2"],  # the pipeline cut
}


def _plan_traced(tmp_path: Path, way: str, *extra: str) -> Any:
    """Trace the example, then plan it the given way with ``extra`` options (--json)."""
    out = tmp_path / "g.json"
    if not out.exists():
        assert runner.invoke(app, ["trace", f"{EXAMPLE}:build", "-o", str(out)]).exit_code == 0
    args = [a.format(g=out) for a in _WAYS[way]]
    return runner.invoke(app, ["plan", *args, "--cluster", "local", "--time-limit", "5", "--json", *extra])


@pytest.mark.parametrize("how", ["--graph", "--model"])
def test_traced_dtype_is_the_default_and_a_mismatch_is_refused(tmp_path: Path, how: str) -> None:
    """An fp32 trace planned at bf16 counted its parameters in the wrong width; now fp32 is the
    default, and a differing --dtype is refused in the same words for --graph and --model."""
    default, explicit = (
        _plan_traced(tmp_path, how),
        _plan_traced(tmp_path, how, "--dtype", "fp32"),
    )
    assert default.exit_code == explicit.exit_code == 0, default.output
    key = "peak_memory_per_device"
    assert json.loads(default.stdout)[key] == json.loads(explicit.stdout)[key]
    bad = _plan_traced(tmp_path, how, "--dtype", "bf16")
    assert bad.exit_code == 2
    assert "traced in fp32" in json.loads(bad.stdout)["error"]["message"]


BLOCKS = """
import torch
from torch import nn


class Block(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.ln, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.attn = nn.MultiheadAttention(d, 2, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))

    def forward(self, x):
        h = self.ln(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.mlp(self.ln2(x))


class Net(nn.Module):
    def __init__(self, d=32, n=4):
        super().__init__()
        self.emb = nn.Linear(8, d)
        self.blocks = nn.ModuleList(Block(d) for _ in range(n))
        self.out = nn.Linear(d, 1)

    def forward(self, x):
        x = self.emb(x)
        for b in self.blocks:
            x = b(x)
        return self.out(x)


def build():
    torch.manual_seed(0)
    return Net(), torch.randn(2, 16, 8)
"""


@pytest.mark.parametrize("pp", [2, 4])
def test_stage_cuts_fall_between_whole_blocks(tmp_path: Path, pp: int) -> None:
    """Ops inside blocks.K (the block's residual adds included) carry layer K; cuts never split one."""
    (tmp_path / "net.py").write_text(BLOCKS)
    graph_file, plan_file = tmp_path / "g.json", tmp_path / "p.json"
    assert runner.invoke(app, ["trace", f"{tmp_path / 'net.py'}:build", "-o", str(graph_file)]).exit_code == 0
    graph = read_graph(graph_file)
    layer = {op.name: op.layer for op in graph.ops}
    assert {layer[n] for n in layer if n.startswith("blocks.")} == {0, 1, 2, 3}
    assert [layer[n] for n in ("emb", "out", "mean")] == [None, None, None]
    adds = [op for op in graph.ops if op.name.startswith("add")]
    assert len(adds) == 8 and all(op.layer is not None for op in adds)  # residuals live in the block
    cmd = ["plan", "--model", str(graph_file), "--cluster", "8xh100", "--pp", str(pp), "-m", "4"]
    r = runner.invoke(app, [*cmd, "--time-limit", "5", "-o", str(plan_file)])
    assert r.exit_code == 0, r.output
    stages = json.loads(plan_file.read_text())["stages"]
    per_stage = [{layer[n] for n in s["ops"]} - {None} for s in stages]
    for a in range(len(per_stage)):
        for b in range(a + 1, len(per_stage)):
            assert not per_stage[a] & per_stage[b], per_stage  # no block is split between stages


def test_branches_keep_their_own_blocks(tmp_path: Path) -> None:
    out = tmp_path / "g.json"
    assert runner.invoke(app, ["trace", f"{EXAMPLE}:build", "-o", str(out)]).exit_code == 0
    layer = {op.name: op.layer for op in read_graph(out).ops}
    user = {layer[n] for n in layer if n.startswith("user.layers.")}
    item = {layer[n] for n in layer if n.startswith("item.layers.")}
    assert len(user) == len(item) == 2 and not user & item


def test_plan_module_from_python() -> None:
    """parplan.plan_module: the same trace and plan without files; the plan validates."""
    import importlib.util

    import parplan

    spec = importlib.util.spec_from_file_location("two_tower_example", EXAMPLE)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    module, inputs, loss = mod.build()
    plan = parplan.plan_module(
        module, inputs, loss_fn=loss, cluster="8xh100", pp=2, microbatches=4, time_limit_s=5
    )
    assert parplan.validate(plan.problem, plan.timed, plan.metrics) == []
    assert plan.problem.num_stages == 2
    names = [set(s.ops) for s in plan.problem.stages]
    assert any("user.inp" in n for n in names) and any("head" in n for n in names)
