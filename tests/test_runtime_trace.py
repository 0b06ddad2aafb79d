"""Tracing user modules into OpGraphs: ops, edges, FLOPs and bytes of a small MLP and of gpt-tiny."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from torch import nn  # noqa: E402

from parplan.errors import InvalidInputError  # noqa: E402
from parplan.runtime.modules import build_torch_model  # noqa: E402
from parplan.runtime.trace_graph import trace_module  # noqa: E402


def test_mlp_closed_form() -> None:
    # batch 3: Linear(8->16) = 2*3*8*16 = 768 FLOPs per pass, Linear(16->4) = 384; ReLU counts none.
    mlp = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    g = trace_module(mlp, [torch.randn(3, 8)], name="mlp")
    assert [(op.name, op.kind) for op in g.ops] == [("0", "linear"), ("1", "elementwise"), ("2", "linear")]
    assert [(e.src, e.dst) for e in g.edges] == [(0, 1), (1, 2)]
    fc1, relu, fc2 = g.ops
    assert (fc1.fwd_flops, fc1.bwd_input_flops, fc1.bwd_weight_flops) == (768, 768, 768)
    assert (fc2.fwd_flops, fc2.bwd_input_flops, fc2.bwd_weight_flops) == (384, 384, 384)
    assert relu.fwd_flops == 0 and relu.param_bytes == 0
    assert fc1.param_bytes == (8 * 16 + 16) * 4 and fc2.param_bytes == (16 * 4 + 4) * 4
    assert fc1.out_bytes == 3 * 16 * 4 and g.edges[0].bytes == fc1.out_bytes
    assert fc1.act_bytes == 3 * 8 * 4  # a linear keeps its input, not its weight


def test_functional_ops_and_get_attr_parameters() -> None:
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = nn.Parameter(torch.randn(4, 5))

        def forward(self, x):
            h = x @ self.w
            return torch.relu(h).sum()

    g = trace_module(Net(), [torch.randn(2, 4)])
    matmul = g.ops[0]
    assert matmul.param_bytes == 4 * 5 * 4  # the parameter is charged to the op that reads it
    assert matmul.fwd_flops == 2 * 2 * 4 * 5
    assert g.is_chain() and g.num_ops == 3


def test_gpt_tiny_traces_to_the_analytic_graph() -> None:
    model, analytic = build_torch_model("gpt-tiny", microbatch_size=2, seq_len=16, num_layers=2)
    traced = trace_module(model, [model.make_batch(0)])
    assert [op.name for op in traced.ops] == [op.name for op in analytic.ops]

    def named(g):
        return {(g.ops[e.src].name, g.ops[e.dst].name) for e in g.edges}

    assert named(traced) == named(analytic)
    for t, a in zip(traced.ops, analytic.ops, strict=True):
        assert t.param_bytes == a.param_bytes, t.name
        if a.kind in ("linear", "attention"):
            assert t.fwd_flops == pytest.approx(a.fwd_flops, rel=0.01), t.name
        if a.kind == "linear":
            assert t.bwd_weight_flops == pytest.approx(a.bwd_weight_flops, rel=0.01), t.name


def test_untraceable_module_is_reported() -> None:
    class Branchy(nn.Module):
        def forward(self, x):
            return x * 2 if x.sum() > 0 else x

    with pytest.raises(InvalidInputError, match="cannot trace Branchy"):
        trace_module(Branchy(), [torch.randn(2)])
