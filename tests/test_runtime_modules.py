"""The torch twins of the zoo models: same ops and edges as the analytic graphs, matching FLOPs."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from parplan.errors import InvalidInputError  # noqa: E402
from parplan.runtime.modules import TORCH_MODELS, build_torch_model  # noqa: E402

SMALL = {
    "gpt-tiny": {"microbatch_size": 2, "seq_len": 16},
    "moe-small": {"microbatch_size": 2, "seq_len": 16, "num_layers": 2},
    "multimodal-small": {"microbatch_size": 1, "seq_len": 8, "num_layers": 1, "image_size": 32},
}


@pytest.mark.parametrize("name", TORCH_MODELS)
def test_same_ops_edges_and_parameters(name: str) -> None:
    model, graph = build_torch_model(name, **SMALL[name])
    assert [op.name for op in graph.ops] == [k.replace("__", ".") for k in model.ops]
    for op in graph.ops:  # edges, in order, are the module's inputs
        assert model.input_names(op.name) == tuple(
            graph.ops[j].name for j in graph.preds[graph.index[op.name]]
        )
        n_params = sum(p.numel() for p in model.op_params(op.name))
        assert n_params * 4 == op.param_bytes, op.name


@pytest.mark.parametrize("name", TORCH_MODELS)
def test_matmul_flops_match_the_analytic_graph(name: str) -> None:
    """FlopCounterMode counts matmuls and convolutions (not elementwise ops): for every op where it
    counts something, the analytic forward FLOPs agree within 3% (the analytic MoE experts add a
    small elementwise term)."""
    model, graph = build_torch_model(name, **SMALL[name])
    data = model.make_batch(0)
    values: dict = {}
    counted = 0
    for i in graph.topo_order:
        op = graph.ops[i]
        with FlopCounterMode(display=False) as fc:
            values.update(model.run_ops([op.name], values, data))
        flops = fc.get_total_flops()
        if flops:
            counted += 1
            assert flops == pytest.approx(op.fwd_flops, rel=0.03), op.name
        if op.kind in ("linear", "attention", "conv", "moe_experts", "moe_router"):
            assert flops > 0, op.name
    assert counted >= 5


def test_linear_backward_flops_are_input_plus_weight() -> None:
    model, graph = build_torch_model("gpt-tiny", **SMALL["gpt-tiny"])
    op = graph.ops[graph.index["layer0.mlp.up"]]
    x = torch.randn(2, 16, 256, requires_grad=True)
    y = model.op("layer0.mlp.up")(x, data={})
    with FlopCounterMode(display=False) as fc:
        y.backward(torch.ones_like(y))
    assert fc.get_total_flops() == op.bwd_input_flops + op.bwd_weight_flops


def test_stages_run_separately_equal_the_whole_model() -> None:
    model, graph = build_torch_model("gpt-tiny", **SMALL["gpt-tiny"])
    data = model.make_batch(3)
    names = [op.name for op in graph.ops]
    cut = names.index("layer1.ln1")
    first = model.run_ops(names[:cut], {}, data)
    second = model.run_ops(names[cut:], first, data)
    assert torch.equal(second["loss"], model(data))


def test_run_ops_names_a_missing_input() -> None:
    model, _ = build_torch_model("gpt-tiny", **SMALL["gpt-tiny"])
    with pytest.raises(InvalidInputError, match=r"layer0.ln1.*needs the output of 'embed'"):
        model.run_ops(["layer0.ln1"], {}, model.make_batch(0))


def test_model_without_torch_twin_lists_those_that_run() -> None:
    with pytest.raises(
        InvalidInputError, match=r"no torch implementation.*gpt-tiny, moe-small, multimodal-small"
    ):
        build_torch_model("llama-7b")


def test_same_seed_same_weights() -> None:
    a, _ = build_torch_model("gpt-tiny", seed=3, **SMALL["gpt-tiny"])
    b, _ = build_torch_model("gpt-tiny", seed=3, **SMALL["gpt-tiny"])
    c, _ = build_torch_model("gpt-tiny", seed=4, **SMALL["gpt-tiny"])
    pa, pb, pc = (dict(m.named_parameters())["ops.head.linear.weight"] for m in (a, b, c))
    assert torch.equal(pa, pb) and not torch.equal(pa, pc)
