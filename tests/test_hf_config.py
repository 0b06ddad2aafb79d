"""Hugging Face config.json as --model: zoo-identical graphs, published parameter counts, bad configs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from parplan.cli import app
from parplan.errors import InvalidInputError
from parplan.graph.hf_config import build_hf_model
from parplan.graph.zoo import build_model, resolve_model

DATA = Path(__file__).parent / "data"
LLAMA2 = DATA / "llama-2-7b-config.json"


def _params(g) -> int:  # type: ignore[no-untyped-def]
    return round(g.param_bytes / 2)  # bf16


def _flops(g) -> float:  # type: ignore[no-untyped-def]
    return sum(op.total_flops for op in g.ops)


@pytest.mark.parametrize("seq_len", [2048, 4096])
def test_llama2_7b_config_is_the_zoo_llama_7b(seq_len: int) -> None:
    hf = resolve_model(str(LLAMA2), seq_len=seq_len, microbatch_size=2)
    zoo = build_model("llama-7b", seq_len=seq_len, microbatch_size=2)
    assert hf.ops == zoo.ops and hf.edges == zoo.edges
    assert _params(hf) == _params(zoo) == 6_738_415_616  # Llama-2-7b as counted by transformers
    assert _flops(hf) == _flops(zoo)


def test_llama2_default_seq_len_is_its_4096_context() -> None:
    hf = resolve_model(str(LLAMA2))
    assert hf.meta_dict["seq_len"] == 4096 and hf.name == "llama-2-7b"
    assert hf.ops == build_model("llama-7b", seq_len=4096).ops


def test_gpt2_config_is_the_zoo_gpt2_small() -> None:
    hf = resolve_model(str(DATA / "gpt2-config.json"))
    zoo = build_model("gpt2-small")
    assert hf.ops == zoo.ops and hf.edges == zoo.edges
    assert _params(hf) == 124_439_808  # GPT-2 124M, tied head


def test_deepseek_v3_config_is_the_zoo_model_and_671b() -> None:
    hf = resolve_model(str(DATA / "deepseek-v3-config.json"), num_layers=5)
    assert hf.ops == build_model("deepseek-v3", num_layers=5).ops
    full = resolve_model(str(DATA / "deepseek-v3-config.json"))
    n = _params(full)
    assert n == build_model("deepseek-v3").param_bytes / 2
    assert abs(n / 671e9 - 1) < 0.01  # published total 671B (excludes the 14B MTP module)


def test_mixtral_8x7b_is_46_7b() -> None:
    g = resolve_model(str(DATA / "mixtral-8x7b-config.json"), num_layers=32)
    n = _params(g)
    # 32 x (attention 41.9M + 8 experts x 3 x 4096 x 14336 + router) + 2 x 131M embeddings
    assert n == 46_702_792_704
    assert abs(n / 46.7e9 - 1) < 0.01  # published 46.7B total
    layer0 = next(op for op in g.ops if op.name == "layer0.moe.experts")
    assert layer0.attr["experts"] == 8 and layer0.attr["top_k"] == 2
    assert g.meta_dict["seq_len"] == 4096  # 32k context capped


def _write(tmp_path: Path, name: str = "config.json", **fields: object) -> Path:
    base = json.loads(LLAMA2.read_text())
    base.update(fields)
    for k, v in list(base.items()):
        if v is ...:
            del base[k]
    p = tmp_path / name
    p.write_text(json.dumps(base))
    return p


def test_gqa_qwen2_biases_and_tied_embeddings(tmp_path: Path) -> None:
    p = _write(
        tmp_path, model_type="qwen2", num_key_value_heads=8, tie_word_embeddings=True, num_hidden_layers=1
    )
    g = resolve_model(str(p))
    qkv = next(op for op in g.ops if op.name == "layer0.attn.qkv")
    # Q 4096 + K, V 2 x 1024 outputs, with their biases
    assert qkv.param_bytes == (4096 * 6144 + 6144) * 2
    assert next(op for op in g.ops if op.name == "head").param_bytes == 0  # tied
    assert g.name == tmp_path.name  # "config.json" is named after its directory


def test_deepseek_v2_lite_full_rank_query(tmp_path: Path) -> None:
    p = _write(
        tmp_path,
        model_type="deepseek_v2",
        hidden_size=2048,
        num_attention_heads=16,
        num_key_value_heads=16,
        num_hidden_layers=1,
        q_lora_rank=None,
        kv_lora_rank=512,
        qk_nope_head_dim=128,
        qk_rope_head_dim=64,
        v_head_dim=128,
    )
    qkv = next(op for op in resolve_model(str(p)).ops if op.name == "layer0.attn.qkv")
    # W_Q 2048 x 16*192 + W_DKV 2048 x (512+64) + W_UKV 512 x 16*(128+128)
    assert qkv.param_bytes == (2048 * 3072 + 2048 * 576 + 512 * 4096) * 2


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (
            {"num_attention_heads": 30},
            "config.json: num_attention_heads: must divide hidden_size 4096, got 30",
        ),
        (
            {"num_key_value_heads": 5},
            "config.json: num_key_value_heads: must divide num_attention_heads 32, got 5",
        ),
        ({"hidden_size": -1}, "config.json: hidden_size: must be an integer >= 1, got -1"),
        ({"intermediate_size": ...}, "config.json: intermediate_size: missing"),
        ({"tie_word_embeddings": "no"}, "config.json: tie_word_embeddings: must be true or false"),
        (
            {"model_type": "bert"},
            "config.json: model_type: unsupported 'bert'; supported model types: gpt2, llama, mistral",
        ),
        (
            {"model_type": "mixtral", "num_local_experts": 8, "num_experts_per_tok": 9},
            "num_experts_per_tok: must be <= num_local_experts 8, got 9",
        ),
    ],
)
def test_bad_configs_name_the_field(tmp_path: Path, fields: dict, message: str) -> None:
    p = _write(tmp_path, **fields)
    with pytest.raises(InvalidInputError) as exc:
        build_hf_model(p)
    assert message.removeprefix("config.json") in str(exc.value)
    assert str(exc.value).startswith(str(p) + ": ")


def test_architectures_detects_the_family_without_model_type(tmp_path: Path) -> None:
    p = _write(tmp_path, model_type=..., num_hidden_layers=2)
    assert resolve_model(str(p)).num_ops == build_model("llama-7b", num_layers=2, seq_len=4096).num_ops


def test_cli_frontier_and_bad_config_exit_2(tmp_path: Path) -> None:
    runner = CliRunner()
    p = _write(tmp_path, num_hidden_layers=2)
    ok = runner.invoke(app, ["frontier", "--model", str(p), "--devices", "2", "--seq-len", "512", "--json"])
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.stdout)["points"]
    bad = _write(tmp_path, "bad.json", num_attention_heads=30)
    result = runner.invoke(app, ["frontier", "--model", str(bad), "--devices", "2"])
    assert result.exit_code == 2
    assert "num_attention_heads: must divide hidden_size 4096, got 30" in result.output
    other = _write(tmp_path, "bert.json", model_type="bert")
    result = runner.invoke(app, ["frontier", "--model", str(other), "--devices", "2", "--json"])
    assert result.exit_code == 2
    assert "model_type: unsupported 'bert'; supported model types: gpt2, llama" in result.output
    problem = ["--model", str(p), "--cluster", "8xh100", "--pp", "2", "--microbatches", "4"]
    result = runner.invoke(app, ["compare", *problem, "--json"])
    assert result.exit_code == 0, result.output
    assert all(row["valid"] for row in json.loads(result.stdout)["schedules"])
    result = runner.invoke(app, ["plan", *problem, "--time-limit", "2", "--workers", "1", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["makespan"] > 0


def test_mistral_nemo_head_dim(tmp_path: Path) -> None:
    # Mistral-NeMo: hidden 5120, 32 heads of 128 (not 5120 / 32 = 160), 8 KV heads
    p = _write(
        tmp_path,
        model_type="mistral",
        hidden_size=5120,
        num_attention_heads=32,
        num_key_value_heads=8,
        head_dim=128,
        num_hidden_layers=1,
    )
    ops = {op.name: op for op in resolve_model(str(p)).ops}
    assert ops["layer0.attn.qkv"].param_bytes == 5120 * (32 + 16) * 128 * 2
    assert ops["layer0.attn.out"].param_bytes == 32 * 128 * 5120 * 2


def test_json_that_is_neither_graph_nor_config(tmp_path: Path) -> None:
    p = tmp_path / "m.json"
    p.write_text(json.dumps({"hidden_size": 4096}))
    with pytest.raises(
        InvalidInputError, match=r"neither a parplan.graph/1 file .* nor a Hugging Face config"
    ):
        resolve_model(str(p))
