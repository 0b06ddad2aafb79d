"""`parplan run` on a module of the user's own: traced, planned in stages, run, checked against one process."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from typer.testing import CliRunner  # noqa: E402

from parplan.cli import app  # noqa: E402
from parplan.graph.io import read_graph  # noqa: E402
from parplan.runtime.traced import build_traced_model  # noqa: E402

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "two_tower.py"
runner = CliRunner()

# Token ids in, an embedding, blocks in a ModuleList, a tuple-returning op read by indexing (folded
# into its producer by the trace) and a cross-entropy loss of its own.
LM = """
import torch
from torch import nn

class Block(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.norm = nn.LayerNorm(d)
        self.up = nn.Linear(d, 4 * d)
        self.down = nn.Linear(2 * d, d)

    def forward(self, x):
        a, b = self.up(self.norm(x)).chunk(2, dim=-1)
        return x + self.down(a * torch.sigmoid(b))

class TinyLM(nn.Module):
    def __init__(self, vocab=50, d=16, depth=4):
        super().__init__()
        self.emb = nn.Embedding(vocab, d)
        self.blocks = nn.ModuleList(Block(d) for _ in range(depth))
        self.out = nn.Linear(d, vocab)

    def forward(self, ids):
        h = self.emb(ids)
        for blk in self.blocks:
            h = blk(h)
        return self.out(h)

def build():
    ids = torch.randint(50, (2, 8))
    loss = lambda logits, inp: nn.functional.cross_entropy(logits.reshape(-1, 50), inp[0].reshape(-1))
    return TinyLM(), ids, loss
"""


def _trace_and_plan(tmp_path: Path, source: str, pp: int, microbatches: int) -> Path:
    graph, plan = tmp_path / "g.json", tmp_path / "p.json"
    r = runner.invoke(app, ["trace", source, "-o", str(graph)])
    assert r.exit_code == 0, r.output
    args = ["plan", "--model", str(graph), "--cluster", "local", "--pp", str(pp), "-m", str(microbatches)]
    r = runner.invoke(app, [*args, "--time-limit", "10", "-o", str(plan)])
    assert r.exit_code == 0, r.output
    return plan


def test_a_stage_runs_alone_as_in_the_whole_model(tmp_path: Path) -> None:
    (tmp_path / "lm.py").write_text(LM)
    model, graph = build_traced_model(str(tmp_path / "lm.py"), "build", seed=0)
    data = model.make_batch(3, seed=1)
    assert data["input0"].dtype == torch.int64 and int(data["input0"].max()) < 50
    assert torch.equal(data["input0"], model.make_batch(3, seed=1)["input0"])  # deterministic
    names = [op.name for op in graph.ops]
    first, rest = names[: len(names) // 2], names[len(names) // 2 :]
    with torch.no_grad():
        whole = model(data)
        head = model.run_ops(first, {}, data)
        tail = model.run_ops(rest, head, data)
    assert model.loss_name == names[-1]
    assert torch.equal(tail[model.loss_name], whole)
    assert {p for o in names for p in map(id, model.op_params(o))} == {id(p) for p in model.parameters()}


def test_run_a_traced_two_branch_module_matches_one_process(tmp_path: Path) -> None:
    plan = _trace_and_plan(tmp_path, f"{EXAMPLE}:build", pp=2, microbatches=4)
    stages = json.loads(plan.read_text())["stages"]
    graph = read_graph(tmp_path / "g.json")
    stage_of = {o: s["index"] for s in stages for o in s["ops"]}
    blocks: dict[int, set[int]] = {}
    for op in graph.ops:
        if op.layer is not None:
            blocks.setdefault(op.layer, set()).add(stage_of[op.name])
    assert blocks and all(len(s) == 1 for s in blocks.values())  # cuts between whole blocks
    r = runner.invoke(app, ["run", str(plan), "--steps", "2", "--json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["engine"] == "parplan"
    assert doc["max_grad_abs_err"] <= 1e-4
    assert doc["loss"] == pytest.approx(doc["ref_loss"], rel=1e-6)


def test_run_a_traced_language_model_with_token_inputs(tmp_path: Path) -> None:
    (tmp_path / "lm.py").write_text(LM)
    plan = _trace_and_plan(tmp_path, f"{tmp_path / 'lm.py'}:build", pp=2, microbatches=3)
    r = runner.invoke(app, ["run", str(plan), "--steps", "1", "--json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["max_grad_abs_err"] <= 1e-4
    assert doc["loss"] == pytest.approx(doc["ref_loss"], rel=1e-6)
    (tmp_path / "lm.py").unlink()
    r = runner.invoke(app, ["run", str(plan)])
    assert r.exit_code == 2
    assert "lm.py is not there any more" in r.output and "Traceback" not in r.output


def test_tied_weights_across_devices_are_refused(tmp_path: Path) -> None:
    tied = LM.replace("return self.out(h)", "return nn.functional.linear(h, self.emb.weight)")
    (tmp_path / "tied.py").write_text(tied)
    plan = _trace_and_plan(tmp_path, f"{tmp_path / 'tied.py'}:build", pp=2, microbatches=2)
    r = runner.invoke(app, ["run", str(plan)])
    assert r.exit_code == 2, r.output
    assert "share a parameter (tied weights)" in r.output and "Traceback" not in r.output
