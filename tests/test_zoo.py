"""Model zoo: published parameter counts, closed-form FLOPs and activations, structure, options."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import time

import pytest

from parplan.errors import InvalidInputError
from parplan.graph import build_model, list_models, resolve_model, write_graph
from parplan.graph.zoo import DTYPE_BYTES

# Published totals (embeddings included; gpt2-small ties its head to the embedding).
PUBLISHED_PARAMS = {
    "gpt2-small": 124e6,
    "llama-7b": 6.7e9,
    "llama-13b": 13.0e9,
    "llama-70b": 69e9,
    "deepseek-v3": 671e9,
    "resnet50": 25.6e6,
    "vgg16": 138e6,
}


def _params(g) -> float:
    return g.param_bytes / DTYPE_BYTES[g.meta_dict["dtype"]]


@pytest.mark.parametrize("name", sorted(PUBLISHED_PARAMS))
def test_parameter_counts_match_published(name):
    n = _params(build_model(name))
    assert n == pytest.approx(PUBLISHED_PARAMS[name], rel=0.02)


def test_exact_parameter_counts_of_reference_implementations():
    # torchvision / Hugging Face report these exact numbers.
    assert _params(build_model("resnet50")) == 25_557_032
    assert _params(build_model("vgg16")) == 138_357_544
    assert _params(build_model("gpt2-small")) == 124_439_808


def test_gpt_tiny_is_a_few_million_parameters():
    assert 1e6 < _params(build_model("gpt-tiny")) < 10e6


def test_list_models_matches_built_graphs():
    infos = {m.name: m for m in list_models()}
    assert set(infos) == {
        "gpt-tiny",
        "gpt2-small",
        "llama-7b",
        "llama-13b",
        "llama-70b",
        "moe-small",
        "deepseek-v3",
        "multimodal-small",
        "resnet50",
        "vgg16",
    }
    assert {m.family for m in infos.values()} == {"transformer", "moe", "multimodal", "cnn"}
    assert infos["deepseek-v3"].family == "moe"
    assert infos["resnet50"].defaults == {"image_size": 224}
    assert infos["multimodal-small"].defaults == {"seq_len": 128, "num_layers": 4, "image_size": 224}
    for name in ("gpt-tiny", "resnet50", "moe-small"):
        assert infos[name].num_params == round(_params(build_model(name)))


def test_gpt2_matmul_flops_match_narayanan_closed_form():
    # Narayanan et al. 2021: a training step's matmul FLOPs are 72 b s L h^2 (1 + s/6h + V/12hL).
    b, s, L, h, V = 2, 512, 12, 768, 50257
    g = build_model("gpt2-small", microbatch_size=b, seq_len=s)
    mm = sum(op.total_flops for op in g.ops if op.kind in ("linear", "attention"))
    assert mm == pytest.approx(72 * b * s * L * h * h * (1 + s / (6 * h) + V / (12 * h * L)), rel=1e-12)
    fwd_layer0 = sum(op.fwd_flops for op in g.ops if op.layer == 0 and op.kind in ("linear", "attention"))
    assert fwd_layer0 == 24 * b * s * h * h + 4 * b * s * s * h


def test_llama_forward_flops_are_two_params_per_token_plus_attention():
    b, s = 1, 1024
    g = build_model("llama-7b", microbatch_size=b, seq_len=s)
    T = b * s
    lin = [op for op in g.ops if op.kind == "linear"]
    linear_params = sum(op.param_bytes for op in lin) / 2  # bf16, no biases
    assert sum(op.fwd_flops for op in lin) == 2 * T * linear_params
    att = sum(op.fwd_flops for op in g.ops if op.kind == "attention")
    assert att == 32 * 4 * b * s * s * 4096
    # All parameters except the embedding table are linear weights (up to the norms' gammas).
    assert linear_params == pytest.approx(_params(g) - 32000 * 4096, rel=1e-4)


def test_gpt2_activation_memory_matches_korthikanti():
    # Korthikanti et al. 2022: s b h (34 + 5 a s / h) bytes per layer, 16-bit, with dropout.
    b, s, h, a = 2, 1024, 768, 12
    g = build_model("gpt2-small", microbatch_size=b, seq_len=s)
    for layer in (0, 11):
        act = sum(op.act_bytes for op in g.ops if op.layer == layer)
        assert act == s * b * h * (34 + 5 * a * s / h)


def test_resnet50_flops_per_image():
    # Convention: 1 multiply-add = 2 FLOPs; ResNet-50 v1.5 is 4.09 GMACs = 8.18 GFLOP per 224^2 image.
    g = build_model("resnet50")
    convs = [op for op in g.ops if op.kind == "conv"]
    macs2 = sum(
        2 * a["channels_in"] * a["channels_out"] * a["kernel"] ** 2 * a["spatial"]
        for a in (op.attr for op in convs)
    )
    assert macs2 == pytest.approx(8.17e9, rel=0.01)
    fwd = sum(op.fwd_flops for op in g.ops)
    assert fwd == pytest.approx(8.2e9, rel=0.03)  # + BatchNorm, ReLU, pooling, fc
    g4 = build_model("resnet50", microbatch_size=4)
    assert sum(op.fwd_flops for op in g4.ops) == pytest.approx(4 * fwd, rel=1e-12)


def test_vgg16_flops_per_image():
    g = build_model("vgg16")
    mm = sum(op.fwd_flops for op in g.ops if op.kind in ("conv", "linear"))
    assert mm == pytest.approx(2 * 15.47e9, rel=0.01)  # 15.47 GMACs


def test_conv_flops_closed_form_on_stem():
    g = build_model("resnet50", microbatch_size=3)
    stem = g.ops[g.index["stem.conv"]]
    conv = 2 * 3 * 64 * 7 * 7 * 112 * 112 * 3
    assert stem.bwd_input_flops - stem.fwd_flops == 8 * 64 * 112 * 112 * 3  # the BN part only
    assert stem.fwd_flops - 8 * 64 * 112 * 112 * 3 == conv


GPT_LAYER_OPS = (
    "ln1",
    "attn.qkv",
    "attn.core",
    "attn.out",
    "attn.add",
    "ln2",
    "mlp.up",
    "mlp.act",
    "mlp.down",
    "mlp.add",
)


def test_gpt_tiny_naming_scheme_and_edges():
    g = build_model("gpt-tiny")
    expected = ["embed"]
    for i in range(4):
        expected += [f"layer{i}.{s}" for s in GPT_LAYER_OPS]
    expected += ["ln_f", "head", "loss"]
    assert [op.name for op in g.ops] == expected
    name = {i: op.name for i, op in enumerate(g.ops)}
    edges = {(name[e.src], name[e.dst]) for e in g.edges}
    for i in range(4):
        x = "embed" if i == 0 else f"layer{i - 1}.mlp.add"
        chain = [x] + [f"layer{i}.{s}" for s in GPT_LAYER_OPS]
        for a, b in itertools.pairwise(chain[1:6]):
            assert (a, b) in edges
        assert (x, f"layer{i}.ln1") in edges
        assert (x, f"layer{i}.attn.add") in edges  # residual
        assert (f"layer{i}.attn.add", f"layer{i}.mlp.add") in edges  # residual
        assert (f"layer{i}.mlp.down", f"layer{i}.mlp.add") in edges
    assert len(edges) == 1 + 4 * 12 + 2
    for op in g.ops:
        assert op.layer == (int(op.name.split(".")[0][5:]) if op.name.startswith("layer") else None)
    qkv = g.ops[g.index["layer0.attn.qkv"]].attr
    assert (qkv["tp"], qkv["in_features"], qkv["out_features"], qkv["heads"]) == ("column", 256, 768, 4)
    assert g.ops[g.index["layer0.mlp.down"]].attr["tp"] == "row"
    # Edge bytes are the producer's output: b s h in bf16.
    e = next(e for e in g.edges if name[e.src] == "embed" and name[e.dst] == "layer0.ln1")
    assert e.bytes == 1 * 128 * 256 * 2


def test_moe_layers_branch_and_have_all_to_all():
    g = build_model("moe-small")
    assert "layer0.mlp.up" in g.index and "layer0.moe.router" not in g.index  # first layer dense
    idx = g.index
    succ = {g.ops[j].name for j in g.succs[idx["layer1.ln2"]]}
    assert succ == {"layer1.moe.router", "layer1.moe.dispatch", "layer1.moe.shared.up"}
    preds = {g.ops[j].name for j in g.preds[idx["layer1.mlp.add"]]}
    assert preds == {"layer1.moe.combine", "layer1.moe.shared.down", "layer1.attn.add"}
    assert g.ops[idx["layer1.moe.dispatch"]].kind == "all_to_all"
    assert g.ops[idx["layer1.moe.combine"]].kind == "all_to_all"
    assert g.ops[idx["layer1.moe.router"]].kind == "moe_router"
    assert not g.is_chain()


def test_deepseek_v3_structure_and_active_flops():
    g = build_model("deepseek-v3", seq_len=1024)
    assert sum(1 for op in g.ops if op.kind == "moe_experts") == 61 - 3
    assert "layer2.mlp.up" in g.index and "layer3.moe.experts" in g.index
    ex = g.ops[g.index["layer3.moe.experts"]]
    assert (ex.attr["experts"], ex.attr["top_k"]) == (256, 8)
    assert ex.param_bytes == 256 * 3 * 7168 * 2048 * 2
    T = 1024
    mm = 2 * T * 8 * 3 * 7168 * 2048  # each token runs its 8 experts
    assert ex.bwd_weight_flops == mm
    assert mm < ex.fwd_flops < 1.01 * mm
    dense = g.ops[g.index["layer0.mlp.up"]]
    assert dense.attr["out_features"] == 2 * 18432
    assert g.ops[g.index["head"]].attr["out_features"] == 129280


def test_llama70b_uses_gqa():
    g = build_model("llama-70b", num_layers=1)
    qkv = g.ops[g.index["layer0.attn.qkv"]]
    assert qkv.attr["kv_heads"] == 8
    assert qkv.attr["out_features"] == (64 + 2 * 8) * 128
    assert g.ops[g.index["layer0.mlp.down"]].attr["in_features"] == 28672


def test_multimodal_has_two_branches_joined_by_fusion():
    g = build_model("multimodal-small")
    idx = g.index
    sources = {g.ops[i].name for i in range(g.num_ops) if not g.preds[i]}
    assert sources == {"vision.patch_embed", "embed"}
    fusion = g.ops[idx["fusion"]]
    assert fusion.kind == "fusion"
    assert {g.ops[j].name for j in g.preds[idx["fusion"]]} == {"vision.proj", "text.layer1.mlp.add"}
    assert (g.ops[g.index["layer0.attn.core"]].attr["seq"]) == 196 + 128
    assert {g.ops[i].name for i in range(g.num_ops) if not g.succs[i]} == {"loss"}
    layers = [op.layer for op in g.ops if op.layer is not None]
    assert sorted(set(layers)) == list(range(4 + 2 + 4))  # vision, text, decoder blocks


def test_num_layers_and_seq_len_options():
    g2 = build_model("gpt-tiny", num_layers=2)
    assert sum(1 for op in g2.ops if op.name.startswith("layer")) == 2 * 10
    assert g2.meta_dict["num_layers"] == 2
    assert not any(op.kind == "moe_experts" for op in build_model("deepseek-v3", num_layers=3).ops)
    a = build_model("llama-7b", seq_len=512, num_layers=1)
    b = build_model("llama-7b", seq_len=1024, num_layers=1)
    lin = lambda g: sum(op.fwd_flops for op in g.ops if op.kind == "linear")  # noqa: E731
    assert lin(b) == 2 * lin(a)
    assert build_model("gpt-tiny", dtype="fp32").param_bytes == 2 * build_model("gpt-tiny").param_bytes


def test_building_is_deterministic():
    assert build_model("moe-small") == build_model("moe-small")
    assert build_model("resnet50", microbatch_size=2) == build_model("resnet50", microbatch_size=2)


def test_large_models_build_fast():
    for name in ("llama-70b", "deepseek-v3"):
        t = time.perf_counter()
        build_model(name)
        assert time.perf_counter() - t < 0.5


@pytest.mark.parametrize(
    ("name", "options", "message"),
    [
        ("llama-7", {}, "model: unknown 'llama-7'; did you mean llama-7b"),
        ("gpt-tiny", {"num_layers": 0}, "num_layers: must be an integer >= 1, got 0"),
        ("resnet50", {"seq_len": 128}, "seq_len: model 'resnet50' does not take this option"),
        ("gpt2-small", {"image_size": 224}, "image_size: model 'gpt2-small' does not take"),
        (
            "gpt2-small",
            {"seq_len": 2048},
            "seq_len: model 'gpt2-small' has 1024 learned positions, got 2048; use --seq-len <= 1024",
        ),
        ("gpt-tiny", {"dtype": "int3"}, "dtype: unknown 'int3'"),
        ("gpt-tiny", {"microbatch_size": 0}, "microbatch_size: must be an integer >= 1, got 0"),
        ("resnet50", {"image_size": 100}, "image_size: model 'resnet50' needs a multiple of 32, got 100"),
        (
            "multimodal-small",
            {"image_size": 200},
            "image_size: model 'multimodal-small' needs a multiple of its patch size 16, got 200; use e.g. --image-size 192",
        ),
    ],
)
def test_bad_options_raise_clear_errors(name, options, message):
    with pytest.raises(InvalidInputError, match="^" + message.replace("(", r"\(")) as info:
        build_model(name, **options)
    assert "\n" not in str(info.value)


def test_resolve_model_name_and_file(tmp_path):
    assert resolve_model("gpt-tiny", num_layers=1, seq_len=None) == build_model("gpt-tiny", num_layers=1)
    g = build_model("gpt-tiny", num_layers=1)
    path = tmp_path / "tiny.json"
    write_graph(g, path)
    assert resolve_model(str(path)) == g
    assert resolve_model(str(path), microbatch_size=1, seq_len=None, num_layers=1) == g
    with pytest.raises(InvalidInputError, match="seq_len: cannot apply seq_len=64 to the graph file"):
        resolve_model(str(path), seq_len=64)
    with pytest.raises(InvalidInputError, match="no such graph file"):
        resolve_model(str(tmp_path / "missing.json"))
    with pytest.raises(InvalidInputError, match="did you mean gpt-tiny"):
        resolve_model("gpt-tin")
    with pytest.raises(
        InvalidInputError, match=r"^layers: not a model option; model options: microbatch_size"
    ):
        resolve_model("gpt-tiny", layers=2)
    json.loads(path.read_text())  # the file is plain JSON


def test_import_pulls_no_heavy_modules():
    code = (
        "import sys, parplan.graph; "
        "print([m for m in ('torch', 'matplotlib', 'ortools', 'highspy') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_resnet50_bottlenecks_have_residual_edges_and_vgg16_is_a_chain():
    g = build_model("resnet50")
    prev = "stem.pool"
    blocks = 0
    for s, n in enumerate((3, 4, 6, 3)):
        for j in range(n):
            p = f"stage{s}.block{j}"
            skip = f"{p}.downsample" if j == 0 else prev
            preds = {g.ops[k].name for k in g.preds[g.index[f"{p}.add"]]}
            assert preds == {f"{p}.conv3", skip}
            assert {g.ops[k].name for k in g.preds[g.index[f"{p}.conv1"]]} == {prev}
            assert g.ops[g.index[f"{p}.conv2"]].layer == blocks
            prev, blocks = f"{p}.add", blocks + 1
    assert g.ops[g.index["stage1.block0.conv2"]].attr["stride"] == 2  # v1.5: stride in the 3x3
    assert g.ops[g.index["stage3.block2.conv3"]].attr["spatial"] == 7 * 7
    v = build_model("vgg16")
    assert v.is_chain() and len(v.edges) == v.num_ops - 1
    assert [op.kind for op in v.ops].count("conv") == 13


def test_dropout_is_its_own_option() -> None:
    # Llama style (flash attention, no dropout by default): dropout adds the two 1-byte residual
    # masks per layer (after attn.out and mlp.down), s * b * h bytes each; flash attention keeps no
    # attention-probability mask
    off = build_model("llama-7b", num_layers=2)
    on = build_model("llama-7b", num_layers=2, dropout=True)
    tokens, h = 2048, 4096
    assert sum(op.act_bytes for op in on.ops) - sum(op.act_bytes for op in off.ops) == 2 * 2 * tokens * h
    assert on.meta_dict["dropout"] is True and off.meta_dict["dropout"] is False
    # GPT-2 style has it by default; --no-dropout removes it, also from a config.json
    assert build_model("gpt2-small").meta_dict["dropout"] is True
    assert build_model("gpt2-small", dropout=False).meta_dict["dropout"] is False
    from parplan.graph.zoo import resolve_model

    assert resolve_model("tests/data/gpt2-config.json", dropout=False).meta_dict["dropout"] is False
    with pytest.raises(InvalidInputError, match="does not take this option"):
        build_model("resnet50", dropout=True)
