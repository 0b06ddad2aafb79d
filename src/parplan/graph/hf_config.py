"""Hugging Face ``config.json`` files as zoo models: the same builders, dimensions from the file.

A Hugging Face model directory describes a transformer by its ``config.json``. This module reads
the fields that set the cost of a training step and builds the operator graph with the zoo's own
transformer builder (:mod:`parplan.graph.zoo`), so a config with the dimensions of a zoo model gives
exactly that zoo model (same operators, parameters, FLOPs and memory).

Families (detected from ``model_type``, else from ``architectures``):

``gpt2``
    ``n_layer``, ``n_embd``, ``n_head``, ``n_inner`` (default ``4 n_embd``), ``n_positions``
    (learned positions), ``vocab_size``, ``tie_word_embeddings`` (default true), dropout from
    ``resid_pdrop`` / ``embd_pdrop`` / ``attn_pdrop`` (default 0.1). LayerNorm, biases, GELU, no
    flash attention: the zoo's GPT style.
``llama``, ``mistral``, ``qwen2``
    ``num_hidden_layers``, ``hidden_size``, ``num_attention_heads``, ``num_key_value_heads``
    (default: the heads), ``head_dim`` (default ``hidden / heads``), ``intermediate_size`` (SwiGLU),
    ``vocab_size``, ``max_position_embeddings``, ``tie_word_embeddings`` (default false),
    ``attention_bias`` / ``mlp_bias`` (Llama; Qwen2 always has Q, K, V biases), dropout when
    ``attention_dropout > 0``. RMSNorm, rotary positions, flash attention: the zoo's Llama style.
``mixtral``
    The Llama fields plus ``num_local_experts`` and ``num_experts_per_tok``; every layer is a MoE
    layer of SwiGLU experts of width ``intermediate_size``, no shared expert.
``deepseek_v2``, ``deepseek_v3``
    The Llama fields plus ``n_routed_experts``, ``n_shared_experts``, ``num_experts_per_tok``,
    ``moe_intermediate_size``, ``first_k_dense_replace`` (dense layers first, of width
    ``intermediate_size``) and multi-head latent attention (MLA) from ``q_lora_rank`` (null: a
    full-rank query), ``kv_lora_rank``, ``qk_nope_head_dim``, ``qk_rope_head_dim``, ``v_head_dim``.
    MLA is APPROXIMATED as in the zoo's ``deepseek-v3``: its four low-rank projections form one
    fused ``attn.qkv`` operator with their summed weights and FLOPs, and core attention stores the
    up-projected Q, K, V; the latent norms (``q_a_layernorm``, ``kv_a_layernorm``: 2,048 parameters
    per layer in V3) and the latent KV cache are not modelled. The multi-token-prediction module
    (``num_nextn_predict_layers``) is not built: DeepSeek's 671B total excludes it.

Fields that do not change the cost of a training step (``rope_theta``, ``rope_scaling``,
``rms_norm_eps``, ``torch_dtype``, token ids, ...) are read by nobody. ``sliding_window`` is ignored
too: attention is costed over the whole sequence. Without ``--seq-len`` the sequence length is the
model's context (``n_positions`` / ``max_position_embeddings``) capped at 4,096 tokens, the
pre-training length of Llama 2 and DeepSeek-V3.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from parplan.errors import InvalidInputError
from parplan.graph.ops import OpGraph
from parplan.graph.zoo import _GPT_STYLE, _LLAMA_STYLE, DTYPE_BYTES, _build_lm, _check_int, _TfConfig

#: ``model_type`` values this reader builds.
SUPPORTED_MODEL_TYPES = ("gpt2", "llama", "mistral", "qwen2", "mixtral", "deepseek_v2", "deepseek_v3")

#: ``architectures`` entries -> model_type, for configs without ``model_type``.
_ARCHITECTURES = {
    "GPT2LMHeadModel": "gpt2",
    "GPT2Model": "gpt2",
    "LlamaForCausalLM": "llama",
    "MistralForCausalLM": "mistral",
    "Qwen2ForCausalLM": "qwen2",
    "MixtralForCausalLM": "mixtral",
    "DeepseekV2ForCausalLM": "deepseek_v2",
    "DeepseekV3ForCausalLM": "deepseek_v3",
}

#: Default sequence length cap (tokens) when ``--seq-len`` is not given.
DEFAULT_SEQ_CAP = 4096

_MISSING = object()


def is_hf_config(data: Any) -> bool:
    """True when a parsed JSON value looks like a Hugging Face config rather than a parplan graph."""
    return (
        isinstance(data, dict) and "format" not in data and ("model_type" in data or "architectures" in data)
    )


class _Fields:
    """Typed, path-qualified access to a config's fields."""

    def __init__(self, where: str, data: Mapping[str, Any], family: str) -> None:
        self.where = where
        self.data = data
        self.family = family

    def int(self, key: str, default: Any = _MISSING, *, low: int = 1) -> int:
        value = self.data.get(key, default)
        if value is None and default is not _MISSING:
            value = default
        if value is _MISSING:
            raise InvalidInputError(f"{self.where}: {key}: missing; a {self.family} config needs it")
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise InvalidInputError(f"{self.where}: {key}: must be an integer >= {low}, got {value!r}")
        return value

    def bool(self, key: str, default: bool) -> bool:
        value = self.data.get(key, default)
        if not isinstance(value, bool):
            raise InvalidInputError(f"{self.where}: {key}: must be true or false, got {value!r}")
        return value

    def prob(self, key: str, default: float) -> float:
        value = self.data.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 1:
            raise InvalidInputError(f"{self.where}: {key}: must be a number in [0, 1), got {value!r}")
        return float(value)


def _model_type(where: str, data: Mapping[str, Any]) -> str:
    supported = ", ".join(SUPPORTED_MODEL_TYPES)
    mt = data.get("model_type")
    if mt is None:
        archs = data.get("architectures")
        if not isinstance(archs, list) or not archs:
            raise InvalidInputError(
                f"{where}: model_type: missing and no architectures; supported model types: {supported}"
            )
        for arch in archs:
            if arch in _ARCHITECTURES:
                return _ARCHITECTURES[arch]
        raise InvalidInputError(
            f"{where}: architectures: unsupported {archs!r}; supported model types: {supported}"
        )
    if mt not in SUPPORTED_MODEL_TYPES:
        raise InvalidInputError(
            f"{where}: model_type: unsupported {mt!r}; supported model types: {supported}"
        )
    return str(mt)


def _divides(where: str, key: str, value: int, of_key: str, of: int) -> None:
    if of % value:
        raise InvalidInputError(f"{where}: {key}: must divide {of_key} {of}, got {value}")


def _gpt2(f: _Fields) -> tuple[_TfConfig, int]:
    h = f.int("n_embd")
    heads = f.int("n_head")
    _divides(f.where, "n_head", heads, "n_embd", h)
    positions = f.int("n_positions")
    dropout = max(f.prob(k, 0.1) for k in ("resid_pdrop", "embd_pdrop", "attn_pdrop")) > 0
    cfg = _TfConfig(
        vocab=f.int("vocab_size"),
        hidden=h,
        num_layers=f.int("n_layer"),
        heads=heads,
        ffn=f.int("n_inner", 4 * h),
        seq_len=positions,
        max_positions=positions,
        tied_head=f.bool("tie_word_embeddings", True),
        **{**_GPT_STYLE, "dropout": dropout},
    )
    return cfg, min(positions, DEFAULT_SEQ_CAP)


def _llama_common(f: _Fields, model_type: str) -> dict[str, Any]:
    """The fields every Llama-style family shares, as ``_TfConfig`` keywords."""
    h = f.int("hidden_size")
    heads = f.int("num_attention_heads")
    head_dim = f.data.get("head_dim")
    if head_dim is None or (head_dim == h // heads and h % heads == 0):
        _divides(f.where, "num_attention_heads", heads, "hidden_size", h)
        head_dim = None
    else:
        head_dim = f.int("head_dim")
    kv = f.int("num_key_value_heads", heads)
    _divides(f.where, "num_key_value_heads", kv, "num_attention_heads", heads)
    attention_bias = f.bool("attention_bias", False)
    mlp_bias = f.bool("mlp_bias", False)
    style = dict(_LLAMA_STYLE)
    style["dropout"] = f.prob("attention_dropout", 0.0) > 0
    # Qwen2 always has Q, K, V biases; Llama's attention_bias also biases o_proj (ignored: h values)
    style["bias"] = attention_bias and mlp_bias
    return {
        "vocab": f.int("vocab_size"),
        "hidden": h,
        "num_layers": f.int("num_hidden_layers"),
        "heads": heads,
        "kv_heads": None if kv == heads else kv,
        "head_dim": head_dim,
        "ffn": f.int("intermediate_size"),
        "seq_len": min(f.int("max_position_embeddings"), DEFAULT_SEQ_CAP),
        "tied_head": f.bool("tie_word_embeddings", False),
        "qkv_bias": model_type == "qwen2" or attention_bias,
        **style,
    }


def _llama(f: _Fields, model_type: str) -> tuple[_TfConfig, int]:
    kw = _llama_common(f, model_type)
    return _TfConfig(**kw), kw["seq_len"]


def _top_k(f: _Fields, experts_key: str) -> tuple[int, int]:
    experts = f.int(experts_key)
    top_k = f.int("num_experts_per_tok")
    if top_k > experts:
        raise InvalidInputError(
            f"{f.where}: num_experts_per_tok: must be <= {experts_key} {experts}, got {top_k}"
        )
    return experts, top_k


def _mixtral(f: _Fields, model_type: str) -> tuple[_TfConfig, int]:
    kw = _llama_common(f, model_type)
    experts, top_k = _top_k(f, "num_local_experts")
    cfg = _TfConfig(
        **kw, moe_experts=experts, moe_top_k=top_k, moe_ffn=kw["ffn"], moe_shared=0, first_dense=0
    )
    return cfg, kw["seq_len"]


def _deepseek(f: _Fields, model_type: str) -> tuple[_TfConfig, int]:
    kw = _llama_common(f, model_type)
    kw["head_dim"] = None  # MLA sets its own head dimensions
    kw["kv_heads"] = None
    q_rank = f.int("q_lora_rank", 0, low=0)
    mla = (
        q_rank,
        f.int("kv_lora_rank"),
        f.int("qk_nope_head_dim"),
        f.int("qk_rope_head_dim"),
        f.int("v_head_dim"),
    )
    moe: dict[str, Any] = {}
    if f.data.get("n_routed_experts") is not None:
        if f.int("moe_layer_freq", 1) != 1:
            raise InvalidInputError(
                f"{f.where}: moe_layer_freq: only 1 (every layer after the dense ones) is supported, "
                f"got {f.data['moe_layer_freq']!r}"
            )
        experts, top_k = _top_k(f, "n_routed_experts")
        first_dense = f.int("first_k_dense_replace", 0, low=0)
        if first_dense > kw["num_layers"]:
            raise InvalidInputError(
                f"{f.where}: first_k_dense_replace: must be <= num_hidden_layers {kw['num_layers']}, "
                f"got {first_dense}"
            )
        moe = {
            "moe_experts": experts,
            "moe_top_k": top_k,
            "moe_ffn": f.int("moe_intermediate_size"),
            "moe_shared": f.int("n_shared_experts", 0, low=0),
            "first_dense": first_dense,
        }
    return _TfConfig(**kw, mla=mla, **moe), kw["seq_len"]


def hf_transformer_config(data: Any, where: str = "config.json") -> tuple[str, _TfConfig, int]:
    """(model_type, zoo transformer configuration, default seq_len) of a parsed ``config.json``.

    Raises
    ------
    InvalidInputError
        Path-qualified: ``config.json: num_attention_heads: must divide hidden_size 4096, got 30``;
        an unknown ``model_type`` lists the supported ones.
    """
    if not isinstance(data, dict):
        raise InvalidInputError(f"{where}: must be a JSON object, got {type(data).__name__}")
    mt = _model_type(where, data)
    f = _Fields(where, data, mt)
    if mt == "gpt2":
        cfg, seq = _gpt2(f)
    elif mt in ("llama", "mistral", "qwen2"):
        cfg, seq = _llama(f, mt)
    elif mt == "mixtral":
        cfg, seq = _mixtral(f, mt)
    else:
        cfg, seq = _deepseek(f, mt)
    return mt, cfg, seq


def _read(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InvalidInputError(f"{path}: no such config file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInputError(f"{path}: cannot read config file: {exc}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidInputError(
            f"{path}:{exc.lineno}:{exc.colno}: malformed JSON: {exc.msg}; fix the file"
        ) from None


def _graph_name(path: Path, model_type: str) -> str:
    stem = path.stem
    if stem == "config":
        stem = path.resolve().parent.name or model_type
    return stem.removesuffix("-config").removesuffix("_config") or model_type


def build_hf_model(
    path: str | Path,
    *,
    data: Any = None,
    microbatch_size: int = 1,
    seq_len: int | None = None,
    dtype: str = "bf16",
    num_layers: int | None = None,
    image_size: int | None = None,
    dropout: bool | None = None,
) -> OpGraph:
    """The operator graph of one micro-batch of the model a Hugging Face ``config.json`` describes.

    Parameters
    ----------
    path
        The config file (its name qualifies error messages and names the graph).
    data
        The file's parsed JSON, when already read.
    microbatch_size, dtype, num_layers
        As in :func:`parplan.graph.zoo.build_model`.
    seq_len
        Tokens per sample; default the model's context capped at :data:`DEFAULT_SEQ_CAP`.
    image_size
        Not taken (language models only); must be None.
    dropout
        Overrides the config's dropout (default: on when its dropout probabilities are > 0).

    Returns
    -------
    OpGraph
        Built by the zoo's transformer builder, named after the file (or its directory).

    Raises
    ------
    InvalidInputError
        Bad or missing fields (path-qualified), an unsupported model type, bad options.
    """
    p = Path(path)
    where = str(path)
    if data is None:
        data = _read(p)
    model_type, cfg, default_seq = hf_transformer_config(data, where)
    if image_size is not None:
        raise InvalidInputError(
            f"image_size: the {model_type} model of {where} does not take this option; remove --image-size"
        )
    _check_int("microbatch_size", microbatch_size, 1, "use --microbatch-size 1 or more")
    if dtype not in DTYPE_BYTES:
        raise InvalidInputError(f"dtype: unknown {dtype!r}; use one of {', '.join(DTYPE_BYTES)}")
    seq = default_seq if seq_len is None else seq_len
    _check_int("seq_len", seq, 1, f"use --seq-len {default_seq} (the default) or another value >= 1")
    layers = cfg.num_layers if num_layers is None else num_layers
    _check_int(
        "num_layers", layers, 1, f"use --num-layers {cfg.num_layers} (the config's) or another value >= 1"
    )
    if dropout is not None:
        if not isinstance(dropout, bool):
            raise InvalidInputError(f"dropout: must be true or false, got {dropout!r}")
        cfg = replace(cfg, dropout=dropout)
    return _build_lm(
        _graph_name(p, model_type), cfg, b=microbatch_size, dtype=dtype, seq_len=seq, num_layers=layers
    )
