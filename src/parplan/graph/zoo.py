"""Built-in model zoo: operator graphs built analytically from a configuration, without weights.

Every graph describes ONE micro-batch (``microbatch_size`` samples) of a training step. Nothing is
allocated: FLOPs, bytes and memory come from closed forms.

Op naming scheme (the torch twin of ``gpt-tiny`` uses exactly these names and edges)
------------------------------------------------------------------------------------
Transformer language models (``gpt-*``, ``llama-*``, ``moe-small``, ``deepseek-v3``)::

    embed                                   token (+ learned position) embedding, a source
    layer{i}.ln1          norm              input: the layer input x
    layer{i}.attn.qkv     linear tp=column  fused Q, K, V projection
    layer{i}.attn.core    attention         softmax(QK^T)V
    layer{i}.attn.out     linear tp=row     output projection
    layer{i}.attn.add     elementwise       residual: attn.out + x (edge from the layer input x)
    layer{i}.ln2          norm
    layer{i}.mlp.up       linear tp=column  up projection (gate and up fused for SwiGLU)
    layer{i}.mlp.act      elementwise       GELU, or SiLU(gate) * up for SwiGLU
    layer{i}.mlp.down     linear tp=row
    layer{i}.mlp.add      elementwise       residual: mlp.down + attn.add (the layer output)
    ln_f, head (linear tp=column), loss

The layer input x is ``embed`` for layer 0 and ``layer{i-1}.mlp.add`` afterwards. Mixture-of-experts
layers replace ``mlp.up/act/down`` by::

    layer{i}.moe.router     moe_router     gate logits (from ln2)
    layer{i}.moe.dispatch   all_to_all     sends each token to its top-k experts (from ln2, router)
    layer{i}.moe.experts    moe_experts    the routed SwiGLU experts, attrs experts / top_k
    layer{i}.moe.combine    all_to_all     brings expert outputs back, weighted by the gates
    layer{i}.moe.shared.up / .act / .down  the shared expert(s): a parallel branch from ln2
    layer{i}.mlp.add                       residual: combine + shared.down + attn.add

The multimodal model has a vision branch ``vision.patch_embed`` -> ``vision.layer{j}.*`` ->
``vision.ln_f`` -> ``vision.proj`` and a language branch ``embed`` -> ``text.layer{j}.*``, joined by
``fusion`` (concatenation of image and text tokens), then ``layer{i}.*``, ``ln_f``, ``head``, ``loss``.
``Op.layer`` numbers all transformer blocks of the model in order (vision, text, then fused
decoder), so for the language-only models ``Op.layer == i`` of ``layer{i}``.

CNNs: ResNet-50 uses ``stem.conv`` (conv+BN+ReLU), ``stem.pool``, ``stage{s}.block{b}.conv1/2/3``
(each conv with its BatchNorm (and ReLU) folded in), ``stage{s}.block{b}.downsample`` (first block of
a stage), ``stage{s}.block{b}.add`` (residual add + ReLU), ``avgpool``, ``fc``, ``loss``. VGG-16 uses
``conv{b}_{k}`` (conv + bias + ReLU), ``pool{b}``, ``avgpool``, ``fc6``, ``fc7``, ``fc8``, ``loss``.

Cost conventions
----------------
* Linear of T tokens with k x n weights: 2Tkn forward, 2Tkn backward-input, 2Tkn backward-weight FLOPs
  (Narayanan et al. 2021, "Efficient large-scale language model training on GPU clusters using
  Megatron-LM"); bias FLOPs are neglected. Core attention: 4 b s^2 h forward (QK^T and score x V,
  full square, no causal halving), twice that for backward-input, no weights.
  Hence a GPT layer (FFN 4h) has 24 b s h^2 + 4 b s^2 h forward FLOPs, and the matmul FLOPs of a
  whole training step are 72 b s L h^2 (1 + s/(6h) + V/(12hL)).
* Convolution: 2 * Cin * Cout * k^2 * Hout * Wout * batch forward FLOPs, the same for each backward
  pass (He et al. 2016; Simonyan & Zisserman 2015). One multiply-add counts as 2 FLOPs, so
  ResNet-50 (v1.5, stride in the 3x3 conv) is ~4.1 G multiply-adds = ~8.2 GFLOP per 224x224 image.
* Stored activations follow Korthikanti et al. 2022 ("Reducing activation recomputation in large
  transformer models"): with 16-bit activations and dropout a GPT layer stores s b h (34 + 5 a s / h)
  bytes, split over the operators that keep them (dropout masks are 1 byte per element). Models
  marked ``flash_attention`` keep Q, K, V and the softmax statistics instead of the s x s score
  matrices (the output, which the backward needs too, is the stored input of ``attn.out``). Norm, activation and loss FLOPs are small per-element estimates.
* Parameters, activations and edges use ``dtype``'s size; token ids are int64; loss logits fp32.
"""

from __future__ import annotations

import difflib
import functools
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from parplan.errors import InvalidInputError
from parplan.graph.ops import Edge, Op, OpGraph, make_attrs

#: Bytes per element of the supported ``dtype`` values.
DTYPE_BYTES: Mapping[str, int] = {"fp32": 4, "bf16": 2, "fp16": 2}

_FAMILIES = ("transformer", "moe", "multimodal", "cnn")


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelInfo:
    """A zoo entry: ``defaults`` lists the options the model takes and their default values."""

    name: str
    family: str
    description: str
    num_params: int
    defaults: Mapping[str, Any] = field(hash=False, compare=True)


# ---------------------------------------------------------------------------------------- configs
@dataclass(frozen=True, slots=True, kw_only=True)
class _TfConfig:
    """A decoder (or encoder) transformer stack."""

    vocab: int
    hidden: int
    num_layers: int
    heads: int
    ffn: int
    seq_len: int
    kv_heads: int | None = None
    head_dim: int | None = None
    gated: bool = False  # SwiGLU: gate and up fused in mlp.up
    bias: bool = False
    qkv_bias: bool = False  # bias on the Q, K, V projection only (Qwen2)
    layernorm: bool = False  # LayerNorm (gamma, beta) instead of RMSNorm (gamma)
    dropout: bool = False
    flash_attention: bool = False
    max_positions: int | None = None  # learned position embedding size, None = rotary
    tied_head: bool = False
    # mixture of experts
    moe_experts: int = 0
    moe_top_k: int = 0
    moe_ffn: int = 0
    moe_shared: int = 0
    first_dense: int = 0
    # multi-head latent attention (DeepSeek-V3), approximated: see _mla_params
    mla: tuple[int, int, int, int, int] | None = None  # q_rank, kv_rank, nope, rope, v_head_dim


@dataclass(frozen=True, slots=True, kw_only=True)
class _MmConfig:
    """A small vision-language model: ViT encoder + projector, text layers, fused decoder."""

    image_size: int
    patch: int
    vision: _TfConfig
    text: _TfConfig  # its num_layers = text-only layers; decoder layers below
    decoder_layers: int


@dataclass(frozen=True, slots=True, kw_only=True)
class _Entry:
    family: str
    description: str
    defaults: Mapping[str, Any]
    build: Callable[..., OpGraph]


# ---------------------------------------------------------------------------------------- builder
class _Builder:
    """Collects ops and edges; edge bytes are the producer's ``out_bytes``."""

    def __init__(self, *, b: int, d: int) -> None:
        self.b = b
        self.d = d
        self.ops: list[Op] = []
        self.edges: list[Edge] = []
        self.index: dict[str, int] = {}

    def add(self, name: str, kind: str, inputs: tuple[str, ...] = (), **fields: Any) -> str:
        i = len(self.ops)
        # Costs are computed in exact integers, stored as floats like every Op.
        for key, value in fields.items():
            if key not in ("layer", "attrs"):
                fields[key] = float(value)
        self.ops.append(Op(name=name, kind=kind, **fields))
        self.index[name] = i
        for src in inputs:
            j = self.index[src]
            self.edges.append(Edge(src=j, dst=i, bytes=self.ops[j].out_bytes))
        return name

    def graph(self, name: str, meta: Mapping[str, Any]) -> OpGraph:
        return OpGraph(
            name=name,
            ops=tuple(self.ops),
            edges=tuple(self.edges),
            meta=tuple(sorted((k, v) for k, v in meta.items() if v is not None)),
        )

    # -- generic operators
    def linear(
        self,
        name: str,
        inputs: tuple[str, ...],
        *,
        tokens: int,
        seq: int,
        k: int,
        n: int,
        tp: str | None,
        layer: int | None,
        bias: bool = False,
        extra_act: float = 0.0,
        weights: int | None = None,
        tied: str | None = None,
        **attrs: Any,
    ) -> str:
        """Linear of ``tokens`` x k by k x n (``weights`` overrides k*n for factorized weights)."""
        d = self.d
        w = k * n if weights is None else weights
        mm = 2 * tokens * w
        params = 0 if tied else (w + (n if bias else 0)) * d
        return self.add(
            name,
            "linear",
            inputs,
            fwd_flops=mm,
            bwd_input_flops=mm,
            bwd_weight_flops=mm,
            fwd_bytes=(tokens * k + w + tokens * n) * d,
            bwd_input_bytes=(tokens * n + w + tokens * k) * d,
            bwd_weight_bytes=(tokens * k + tokens * n + w) * d,
            param_bytes=params,
            act_bytes=tokens * k * d + extra_act,
            out_bytes=tokens * n * d,
            layer=layer,
            attrs=make_attrs(batch=self.b, seq=seq, in_features=k, out_features=n, tp=tp, tied=tied, **attrs),
        )

    def norm(
        self, name: str, inputs: tuple[str, ...], *, tokens: int, h: int, layer: int | None, gamma_beta: bool
    ) -> str:
        d = self.d
        return self.add(
            name,
            "norm",
            inputs,
            fwd_flops=5 * tokens * h,
            bwd_input_flops=8 * tokens * h,
            bwd_weight_flops=2 * tokens * h,
            fwd_bytes=2 * tokens * h * d,
            bwd_input_bytes=3 * tokens * h * d,
            bwd_weight_bytes=2 * tokens * h * d,
            param_bytes=(2 if gamma_beta else 1) * h * d,
            act_bytes=tokens * h * d,
            out_bytes=tokens * h * d,
            layer=layer,
            attrs=make_attrs(batch=self.b, in_features=h, out_features=h),
        )

    def add_residual(
        self, name: str, inputs: tuple[str, ...], *, tokens: int, h: int, layer: int | None
    ) -> str:
        d = self.d
        return self.add(
            name,
            "elementwise",
            inputs,
            fwd_flops=(len(inputs) - 1) * tokens * h,
            fwd_bytes=(len(inputs) + 1) * tokens * h * d,
            bwd_input_bytes=(len(inputs) + 1) * tokens * h * d,
            out_bytes=tokens * h * d,
            layer=layer,
            attrs=make_attrs(batch=self.b, in_features=h, out_features=h),
        )

    def activation(
        self, name: str, inputs: tuple[str, ...], *, tokens: int, f_in: int, f_out: int, layer: int | None
    ) -> str:
        d = self.d
        return self.add(
            name,
            "elementwise",
            inputs,
            fwd_flops=4 * tokens * f_in,
            bwd_input_flops=8 * tokens * f_in,
            fwd_bytes=tokens * (f_in + f_out) * d,
            bwd_input_bytes=tokens * (f_in + f_in + f_out) * d,
            act_bytes=tokens * f_in * d,
            out_bytes=tokens * f_out * d,
            layer=layer,
            attrs=make_attrs(batch=self.b, in_features=f_in, out_features=f_out),
        )


def _mla_params(cfg: _TfConfig) -> tuple[int, int, int]:
    """MLA as one fused projection: (weights, qk head dim, v head dim).

    DeepSeek-V3's multi-head latent attention is APPROXIMATED: its low-rank projections
    W_DQ (h x q_rank), W_UQ (q_rank x a(nope+rope)), W_DKV (h x (kv_rank+rope)) and
    W_UKV (kv_rank x a(nope+v)) are one ``attn.qkv`` op whose weights (and 2T x weights FLOPs) are
    their sum; the latent KV cache and the small latent norms are ignored. ``q_rank == 0`` means a
    full-rank query projection W_Q (h x a(nope+rope)), as in DeepSeek-V2-Lite.
    """
    assert cfg.mla is not None
    q_rank, kv_rank, nope, rope, v_dim = cfg.mla
    h, a = cfg.hidden, cfg.heads
    q_w = h * q_rank + q_rank * a * (nope + rope) if q_rank else h * a * (nope + rope)
    w = q_w + h * (kv_rank + rope) + kv_rank * a * (nope + v_dim)
    return w, nope + rope, v_dim


def _layer(
    g: _Builder,
    cfg: _TfConfig,
    *,
    prefix: str,
    x: str,
    seq: int,
    layer: int,
    moe: bool,
    causal: bool = True,
) -> str:
    """One transformer block; returns the name of its output (``{prefix}.mlp.add``).

    ``causal`` marks decoder self-attention (a causal mask: a fused kernel skips the masked half);
    the FLOPs recorded stay the full square, as published MFU figures count them.
    """
    b, d = g.b, g.d
    T = b * seq
    h, a = cfg.hidden, cfg.heads
    kv = cfg.kv_heads or a
    ln = cfg.layernorm
    mask = T * h if cfg.dropout else 0  # 1-byte dropout mask after attn.out and mlp.down
    p = prefix

    g.norm(f"{p}.ln1", (x,), tokens=T, h=h, layer=layer, gamma_beta=ln)
    if cfg.mla is not None:
        w, dqk, dv = _mla_params(cfg)
        q_w = a * dqk + a * dqk + a * dv
        g.linear(
            f"{p}.attn.qkv",
            (f"{p}.ln1",),
            tokens=T,
            seq=seq,
            k=h,
            n=q_w,
            tp="column",
            layer=layer,
            weights=w,
            heads=a,
            head_dim=dqk,
            kv_heads=a,
        )
        kv_dims = 2 * a * dqk + a * dv  # stored Q, K, V widths
    else:
        dqk = dv = cfg.head_dim or h // a
        q_w = (a + 2 * kv) * dqk
        g.linear(
            f"{p}.attn.qkv",
            (f"{p}.ln1",),
            tokens=T,
            seq=seq,
            k=h,
            n=q_w,
            tp="column",
            layer=layer,
            bias=cfg.bias or cfg.qkv_bias,
            heads=a,
            head_dim=dqk,
            kv_heads=kv,
        )
        kv_dims = q_w
    # Core attention: QK^T (2 b s^2 a dqk) and scores x V (2 b s^2 a dv) -> 4 b s^2 h when dqk = dv.
    att = 2 * b * seq * seq * a * (dqk + dv)
    scores = a * seq * seq * b
    if cfg.flash_attention:
        # Q, K, V and the fp32 logsumexp; the output it also needs is attn.out's stored input (the
        # same tensor, counted there once).
        core_act = T * kv_dims * d + b * a * seq * 4
        core_traffic = T * (kv_dims + a * dv) * d
    else:
        # Korthikanti: softmax output (d) [+ dropout mask (1) + dropout output (d)] per score.
        core_act = T * kv_dims * d + scores * ((2 * d + 1) if cfg.dropout else d)
        # the softmax reads and writes every score; attention dropout reads them again and writes
        # its output and a 1-byte mask (Megatron fuses scale, mask and softmax, not the dropout)
        core_traffic = T * (kv_dims + a * dv) * d + scores * ((4 * d + 1) if cfg.dropout else 2 * d)
    g.add(
        f"{p}.attn.core",
        "attention",
        (f"{p}.attn.qkv",),
        fwd_flops=att,
        bwd_input_flops=2 * att,
        fwd_bytes=core_traffic,
        bwd_input_bytes=2 * core_traffic,
        act_bytes=core_act,
        out_bytes=T * a * dv * d,
        layer=layer,
        attrs=make_attrs(
            batch=b,
            seq=seq,
            heads=a,
            head_dim=dqk,
            kv_heads=kv if cfg.mla is None else a,
            causal=True if causal else None,
            flash=True if cfg.flash_attention else None,
        ),
    )
    g.linear(
        f"{p}.attn.out",
        (f"{p}.attn.core",),
        tokens=T,
        seq=seq,
        k=a * dv,
        n=h,
        tp="row",
        layer=layer,
        bias=cfg.bias,
        extra_act=mask,
    )
    g.add_residual(f"{p}.attn.add", (f"{p}.attn.out", x), tokens=T, h=h, layer=layer)
    g.norm(f"{p}.ln2", (f"{p}.attn.add",), tokens=T, h=h, layer=layer, gamma_beta=ln)
    ln2 = f"{p}.ln2"
    if not moe:
        f = cfg.ffn
        up = 2 * f if cfg.gated else f
        g.linear(f"{p}.mlp.up", (ln2,), tokens=T, seq=seq, k=h, n=up, tp="column", layer=layer, bias=cfg.bias)
        g.activation(f"{p}.mlp.act", (f"{p}.mlp.up",), tokens=T, f_in=up, f_out=f, layer=layer)
        g.linear(
            f"{p}.mlp.down",
            (f"{p}.mlp.act",),
            tokens=T,
            seq=seq,
            k=f,
            n=h,
            tp="row",
            layer=layer,
            bias=cfg.bias,
            extra_act=mask,
        )
        return g.add_residual(f"{p}.mlp.add", (f"{p}.mlp.down", f"{p}.attn.add"), tokens=T, h=h, layer=layer)

    E, k, f = cfg.moe_experts, cfg.moe_top_k, cfg.moe_ffn
    moe_attrs: dict[str, Any] = {"experts": E, "top_k": k}
    g.linear(f"{p}.moe.router", (ln2,), tokens=T, seq=seq, k=h, n=E, tp=None, layer=layer, **moe_attrs)
    g.ops[-1] = replace(g.ops[-1], kind="moe_router")
    routed = T * k  # token copies after top-k routing
    g.add(
        f"{p}.moe.dispatch",
        "all_to_all",
        (ln2, f"{p}.moe.router"),
        fwd_bytes=routed * h * d,
        bwd_input_bytes=routed * h * d,
        out_bytes=routed * h * d,
        layer=layer,
        attrs=make_attrs(batch=b, seq=seq, in_features=h, out_features=h, **moe_attrs),
    )
    w = 3 * h * f  # one SwiGLU expert: gate, up (h x f) and down (f x h)
    mm = 2 * routed * w
    g.add(
        f"{p}.moe.experts",
        "moe_experts",
        (f"{p}.moe.dispatch",),
        fwd_flops=mm + 4 * routed * 2 * f,
        bwd_input_flops=mm + 8 * routed * 2 * f,
        bwd_weight_flops=mm,
        fwd_bytes=(E * w + routed * (h + 3 * f + h)) * d,
        bwd_input_bytes=(E * w + routed * (h + 3 * f + h)) * d,
        bwd_weight_bytes=(E * w + routed * (h + 3 * f + h)) * d,
        param_bytes=E * w * d,
        act_bytes=routed * (h + 2 * f + f) * d,  # expert input, gate/up output, down input
        out_bytes=routed * h * d,
        layer=layer,
        attrs=make_attrs(batch=b, seq=seq, in_features=h, out_features=f, **moe_attrs),
    )
    g.add(
        f"{p}.moe.combine",
        "all_to_all",
        (f"{p}.moe.experts", f"{p}.moe.router"),
        fwd_flops=2 * routed * h,
        bwd_input_flops=4 * routed * h,
        fwd_bytes=routed * h * d,
        bwd_input_bytes=routed * h * d,
        act_bytes=routed * h * d,  # expert outputs, for the gate gradient
        out_bytes=T * h * d,
        layer=layer,
        attrs=make_attrs(batch=b, seq=seq, in_features=h, out_features=h, **moe_attrs),
    )
    inputs = [f"{p}.moe.combine"]
    if cfg.moe_shared:
        fs = cfg.moe_shared * f
        g.linear(f"{p}.moe.shared.up", (ln2,), tokens=T, seq=seq, k=h, n=2 * fs, tp="column", layer=layer)
        g.activation(
            f"{p}.moe.shared.act", (f"{p}.moe.shared.up",), tokens=T, f_in=2 * fs, f_out=fs, layer=layer
        )
        g.linear(
            f"{p}.moe.shared.down",
            (f"{p}.moe.shared.act",),
            tokens=T,
            seq=seq,
            k=fs,
            n=h,
            tp="row",
            layer=layer,
        )
        inputs.append(f"{p}.moe.shared.down")
    inputs.append(f"{p}.attn.add")
    return g.add_residual(f"{p}.mlp.add", tuple(inputs), tokens=T, h=h, layer=layer)


def _embed(g: _Builder, cfg: _TfConfig, *, name: str, seq: int, inputs: tuple[str, ...] = ()) -> str:
    b, d, h = g.b, g.d, cfg.hidden
    T = b * seq
    params = cfg.vocab * h + (cfg.max_positions or 0) * h
    return g.add(
        name,
        "embedding",
        inputs,
        fwd_flops=T * h if cfg.max_positions else 0,  # adding the position embedding
        bwd_weight_flops=T * h,  # scatter-add of the output gradient
        fwd_bytes=T * 8 + 2 * T * h * d,
        bwd_weight_bytes=T * 8 + 2 * T * h * d,
        param_bytes=params * d,
        act_bytes=T * 8,  # int64 token ids
        out_bytes=T * h * d,
        attrs=make_attrs(batch=b, seq=seq, in_features=cfg.vocab, out_features=h),
    )


def _head_loss(g: _Builder, cfg: _TfConfig, *, x: str, seq: int, embed: str) -> None:
    b, h, V = g.b, cfg.hidden, cfg.vocab
    T = b * seq
    g.norm("ln_f", (x,), tokens=T, h=h, layer=None, gamma_beta=cfg.layernorm)
    g.linear(
        "head",
        ("ln_f",),
        tokens=T,
        seq=seq,
        k=h,
        n=V,
        tp="column",
        layer=None,
        tied=embed if cfg.tied_head else None,
    )
    g.add(
        "loss",
        "loss",
        ("head",),
        fwd_flops=5 * T * V,
        bwd_input_flops=2 * T * V,
        fwd_bytes=T * V * (g.d + 4),
        bwd_input_bytes=T * V * (4 + g.d),
        act_bytes=T * V * 4,  # fp32 softmax kept for the gradient
        out_bytes=4,
        attrs=make_attrs(batch=b, seq=seq, in_features=V),
    )


def _meta(model: str, b: int, dtype: str, **kw: Any) -> dict[str, Any]:
    return {"model": model, "microbatch_size": b, "dtype": dtype, **kw}


def _build_lm(name: str, cfg: _TfConfig, *, b: int, dtype: str, seq_len: int, num_layers: int) -> OpGraph:
    if cfg.max_positions is not None and seq_len > cfg.max_positions:
        raise InvalidInputError(
            f"seq_len: model {name!r} has {cfg.max_positions} learned positions, got {seq_len}; "
            f"use --seq-len <= {cfg.max_positions}"
        )
    g = _Builder(b=b, d=DTYPE_BYTES[dtype])
    x = _embed(g, cfg, name="embed", seq=seq_len)
    for i in range(num_layers):
        moe = cfg.moe_experts > 0 and i >= cfg.first_dense
        x = _layer(g, cfg, prefix=f"layer{i}", x=x, seq=seq_len, layer=i, moe=moe)
    _head_loss(g, cfg, x=x, seq=seq_len, embed="embed")
    return g.graph(name, _meta(name, b, dtype, seq_len=seq_len, num_layers=num_layers, dropout=cfg.dropout))


def _build_mm(
    name: str, mm: _MmConfig, *, b: int, dtype: str, seq_len: int, num_layers: int, image_size: int
) -> OpGraph:
    if image_size % mm.patch or image_size < mm.patch:
        raise InvalidInputError(
            f"image_size: model {name!r} needs a multiple of its patch size {mm.patch}, got "
            f"{image_size}; use e.g. --image-size {max(mm.patch, image_size // mm.patch * mm.patch)}"
        )
    g = _Builder(b=b, d=DTYPE_BYTES[dtype])
    d = g.d
    v, t = mm.vision, mm.text
    P = (image_size // mm.patch) ** 2
    hv = v.hidden
    # Patch embedding: a conv with kernel = stride = patch, plus learned positions for P patches.
    k2 = mm.patch * mm.patch
    conv = 2 * 3 * hv * k2 * P * b
    g.add(
        "vision.patch_embed",
        "conv",
        (),
        fwd_flops=conv,
        bwd_weight_flops=conv,  # the image needs no gradient
        fwd_bytes=(3 * image_size * image_size * b + 3 * hv * k2 + P * hv * b) * d,
        bwd_weight_bytes=(3 * image_size * image_size * b + 3 * hv * k2 + P * hv * b) * d,
        param_bytes=(3 * hv * k2 + hv + P * hv) * d,
        act_bytes=3 * image_size * image_size * b * d,
        out_bytes=P * hv * b * d,
        attrs=make_attrs(
            batch=b, channels_in=3, channels_out=hv, spatial=P, kernel=mm.patch, stride=mm.patch
        ),
    )
    x = "vision.patch_embed"
    block = 0
    for j in range(v.num_layers):
        x = _layer(g, v, prefix=f"vision.layer{j}", x=x, seq=P, layer=block, moe=False, causal=False)
        block += 1
    g.norm("vision.ln_f", (x,), tokens=b * P, h=hv, layer=None, gamma_beta=v.layernorm)
    g.linear(
        "vision.proj", ("vision.ln_f",), tokens=b * P, seq=P, k=hv, n=t.hidden, tp=None, layer=None, bias=True
    )
    y = _embed(g, t, name="embed", seq=seq_len)
    for j in range(t.num_layers):
        y = _layer(g, t, prefix=f"text.layer{j}", x=y, seq=seq_len, layer=block, moe=False)
        block += 1
    S = P + seq_len
    h = t.hidden
    g.add(
        "fusion",
        "fusion",
        ("vision.proj", y),
        fwd_bytes=2 * b * S * h * d,
        bwd_input_bytes=2 * b * S * h * d,
        out_bytes=b * S * h * d,
        attrs=make_attrs(batch=b, seq=S, in_features=h, out_features=h),
    )
    x = "fusion"
    for i in range(num_layers):
        x = _layer(g, t, prefix=f"layer{i}", x=x, seq=S, layer=block, moe=False)
        block += 1
    _head_loss(g, t, x=x, seq=S, embed="embed")
    meta = _meta(name, b, dtype, seq_len=seq_len, num_layers=num_layers, image_size=image_size)
    return g.graph(name, meta)


# ------------------------------------------------------------------------------------------- CNNs
def _conv(
    g: _Builder,
    name: str,
    inputs: tuple[str, ...],
    *,
    cin: int,
    cout: int,
    k: int,
    stride: int,
    hw_in: int,
    layer: int | None,
    bias: bool,
    bn: bool,
) -> tuple[str, int]:
    """Conv (+ folded BatchNorm and ReLU); returns (name, output side)."""
    b, d = g.b, g.d
    hw_out = (hw_in + stride - 1) // stride  # "same" padding
    out = cout * hw_out * hw_out * b
    inp = cin * hw_in * hw_in * b
    w = cin * cout * k * k
    flops = 2 * cin * cout * k * k * hw_out * hw_out * b
    extra = 8 * out if bn else out  # BN statistics, scale and ReLU per output element
    g.add(
        name,
        "conv",
        inputs,
        fwd_flops=flops + extra,
        bwd_input_flops=flops + 2 * extra,
        bwd_weight_flops=flops + (2 * out if bn else 0),
        fwd_bytes=(inp + w + out) * d,
        bwd_input_bytes=(out + w + inp) * d,
        bwd_weight_bytes=(inp + out + w) * d,
        param_bytes=(w + (2 * cout if bn else 0) + (cout if bias else 0)) * d,
        act_bytes=(inp + (out if bn else 0)) * d,  # conv input, and BN input when BN is folded in
        out_bytes=out * d,
        layer=layer,
        attrs=make_attrs(
            batch=b, channels_in=cin, channels_out=cout, spatial=hw_out * hw_out, kernel=k, stride=stride
        ),
    )
    return name, hw_out


def _pool(
    g: _Builder, name: str, x: str, *, c: int, k: int, hw_in: int, hw_out: int, layer: int | None
) -> str:
    b, d = g.b, g.d
    out = c * hw_out * hw_out * b
    inp = c * hw_in * hw_in * b
    g.add(
        name,
        "pool",
        (x,),
        fwd_flops=k * k * out,
        bwd_input_flops=k * k * out,
        fwd_bytes=(inp + out) * d,
        bwd_input_bytes=(inp + out) * d,
        act_bytes=inp * d,
        out_bytes=out * d,
        layer=layer,
        attrs=make_attrs(batch=b, channels_in=c, channels_out=c, spatial=hw_out * hw_out, kernel=k),
    )
    return name


def _fc_loss(g: _Builder, x: str, *, dims: tuple[tuple[str, int, int], ...], layer0: int | None) -> None:
    b = g.b
    for n, (name, k, out) in enumerate(dims):
        layer = None if layer0 is None else layer0 + n
        g.linear(name, (x,), tokens=b, seq=1, k=k, n=out, tp=None, layer=layer, bias=True)
        x = name
    V = dims[-1][2]
    g.add(
        "loss",
        "loss",
        (x,),
        fwd_flops=5 * b * V,
        bwd_input_flops=2 * b * V,
        fwd_bytes=b * V * (g.d + 4),
        bwd_input_bytes=b * V * (g.d + 4),
        act_bytes=b * V * 4,
        out_bytes=4,
        attrs=make_attrs(batch=b, in_features=V),
    )


def _build_resnet50(name: str, *, b: int, dtype: str, image_size: int) -> OpGraph:
    """ResNet-50 v1.5 (He et al. 2016; stride-2 in the 3x3 conv as in torchvision), 1000 classes."""
    g = _Builder(b=b, d=DTYPE_BYTES[dtype])
    x, hw = _conv(
        g, "stem.conv", (), cin=3, cout=64, k=7, stride=2, hw_in=image_size, layer=None, bias=False, bn=True
    )
    hw_p = (hw + 1) // 2
    x = _pool(g, "stem.pool", x, c=64, k=3, hw_in=hw, hw_out=hw_p, layer=None)
    hw = hw_p
    cin = 64
    block = 0
    for s, (width, blocks) in enumerate(((64, 3), (128, 4), (256, 6), (512, 3))):
        for j in range(blocks):
            p = f"stage{s}.block{j}"
            stride = 2 if (j == 0 and s > 0) else 1
            cout = 4 * width
            a, _ = _conv(
                g,
                f"{p}.conv1",
                (x,),
                cin=cin,
                cout=width,
                k=1,
                stride=1,
                hw_in=hw,
                layer=block,
                bias=False,
                bn=True,
            )
            c2, hw2 = _conv(
                g,
                f"{p}.conv2",
                (a,),
                cin=width,
                cout=width,
                k=3,
                stride=stride,
                hw_in=hw,
                layer=block,
                bias=False,
                bn=True,
            )
            c3, _ = _conv(
                g,
                f"{p}.conv3",
                (c2,),
                cin=width,
                cout=cout,
                k=1,
                stride=1,
                hw_in=hw2,
                layer=block,
                bias=False,
                bn=True,
            )
            skip = x
            if j == 0:
                skip, _ = _conv(
                    g,
                    f"{p}.downsample",
                    (x,),
                    cin=cin,
                    cout=cout,
                    k=1,
                    stride=stride,
                    hw_in=hw,
                    layer=block,
                    bias=False,
                    bn=True,
                )
            out = cout * hw2 * hw2 * b
            g.add(
                f"{p}.add",
                "elementwise",
                (c3, skip),
                fwd_flops=2 * out,  # add + ReLU
                bwd_input_flops=out,
                fwd_bytes=3 * out * g.d,
                bwd_input_bytes=3 * out * g.d,
                act_bytes=out // 8,  # ReLU sign bits
                out_bytes=out * g.d,
                layer=block,
                attrs=make_attrs(batch=b, channels_in=cout, channels_out=cout, spatial=hw2 * hw2),
            )
            x, hw, cin = f"{p}.add", hw2, cout
            block += 1
    x = _pool(g, "avgpool", x, c=cin, k=hw, hw_in=hw, hw_out=1, layer=None)
    _fc_loss(g, x, dims=(("fc", cin, 1000),), layer0=None)
    return g.graph(name, _meta(name, b, dtype, image_size=image_size))


_VGG16 = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))


def _build_vgg16(name: str, *, b: int, dtype: str, image_size: int) -> OpGraph:
    """VGG-16, configuration D of Simonyan & Zisserman 2015, with torchvision's 7x7 adaptive pool."""
    g = _Builder(b=b, d=DTYPE_BYTES[dtype])
    x = ""
    hw, cin, layer = image_size, 3, 0
    for blk, widths in enumerate(_VGG16, start=1):
        for k, cout in enumerate(widths, start=1):
            x, hw = _conv(
                g,
                f"conv{blk}_{k}",
                (x,) if x else (),
                cin=cin,
                cout=cout,
                k=3,
                stride=1,
                hw_in=hw,
                layer=layer,
                bias=True,
                bn=False,
            )
            cin, layer = cout, layer + 1
        x = _pool(g, f"pool{blk}", x, c=cin, k=2, hw_in=hw, hw_out=hw // 2, layer=layer - 1)
        hw //= 2
    x = _pool(g, "avgpool", x, c=cin, k=max(1, math.ceil(hw / 7)), hw_in=hw, hw_out=7, layer=None)
    _fc_loss(g, x, dims=(("fc6", 512 * 7 * 7, 4096), ("fc7", 4096, 4096), ("fc8", 4096, 1000)), layer0=layer)
    return g.graph(name, _meta(name, b, dtype, image_size=image_size))


# -------------------------------------------------------------------------------------- the zoo
_GPT_STYLE: dict[str, Any] = {
    "gated": False,
    "bias": True,
    "layernorm": True,
    "dropout": True,
    "flash_attention": False,
}
_LLAMA_STYLE: dict[str, Any] = {
    "gated": True,
    "bias": False,
    "layernorm": False,
    "dropout": False,
    "flash_attention": True,
}

_LM: dict[str, tuple[str, str, _TfConfig]] = {
    "gpt-tiny": (
        "transformer",
        "GPT-2 style, 4 layers, hidden 256, 4 heads, vocab 2048, untied head: trains on a CPU",
        _TfConfig(
            vocab=2048,
            hidden=256,
            num_layers=4,
            heads=4,
            ffn=1024,
            seq_len=128,
            max_positions=512,
            **_GPT_STYLE,
        ),
    ),
    "gpt2-small": (
        "transformer",
        "GPT-2 124M (Radford et al. 2019): 12 layers, hidden 768, 12 heads, tied head",
        _TfConfig(
            vocab=50257,
            hidden=768,
            num_layers=12,
            heads=12,
            ffn=3072,
            seq_len=1024,
            max_positions=1024,
            tied_head=True,
            **_GPT_STYLE,
        ),
    ),
    "llama-7b": (
        "transformer",
        "LLaMA 7B (Touvron et al. 2023): 32 layers, hidden 4096, SwiGLU 11008, RMSNorm",
        _TfConfig(vocab=32000, hidden=4096, num_layers=32, heads=32, ffn=11008, seq_len=2048, **_LLAMA_STYLE),
    ),
    "llama-13b": (
        "transformer",
        "LLaMA 13B: 40 layers, hidden 5120, 40 heads, SwiGLU 13824",
        _TfConfig(vocab=32000, hidden=5120, num_layers=40, heads=40, ffn=13824, seq_len=2048, **_LLAMA_STYLE),
    ),
    "llama-70b": (
        "transformer",
        "Llama 2 70B: 80 layers, hidden 8192, 64 heads, GQA with 8 KV heads, SwiGLU 28672",
        _TfConfig(
            vocab=32000,
            hidden=8192,
            num_layers=80,
            heads=64,
            kv_heads=8,
            ffn=28672,
            seq_len=4096,
            **_LLAMA_STYLE,
        ),
    ),
    "moe-small": (
        "moe",
        "small MoE: 4 layers (first dense), hidden 512, 8 routed experts top-2 (FFN 1024) + 1 shared",
        _TfConfig(
            vocab=4096,
            hidden=512,
            num_layers=4,
            heads=8,
            ffn=2048,
            seq_len=256,
            moe_experts=8,
            moe_top_k=2,
            moe_ffn=1024,
            moe_shared=1,
            first_dense=1,
            **_LLAMA_STYLE,
        ),
    ),
    "deepseek-v3": (
        "moe",
        "DeepSeek-V3 671B: 61 layers (3 dense), hidden 7168, 256 routed experts top-8 + 1 shared, "
        "MLA approximated as one fused projection",
        _TfConfig(
            vocab=129280,
            hidden=7168,
            num_layers=61,
            heads=128,
            ffn=18432,
            seq_len=4096,
            moe_experts=256,
            moe_top_k=8,
            moe_ffn=2048,
            moe_shared=1,
            first_dense=3,
            mla=(1536, 512, 128, 64, 128),
            **_LLAMA_STYLE,
        ),
    ),
}

_MM = _MmConfig(
    image_size=224,
    patch=16,
    vision=_TfConfig(vocab=0, hidden=384, num_layers=4, heads=6, ffn=1536, seq_len=196, **_GPT_STYLE),
    text=_TfConfig(
        vocab=8192, hidden=512, num_layers=2, heads=8, ffn=2048, seq_len=128, max_positions=2048, **_GPT_STYLE
    ),
    decoder_layers=4,
)


def _lm_entry(name: str) -> _Entry:
    family, desc, cfg = _LM[name]

    def build(*, b: int, dtype: str, seq_len: int, num_layers: int, dropout: bool) -> OpGraph:
        c = cfg if dropout == cfg.dropout else replace(cfg, dropout=dropout)
        return _build_lm(name, c, b=b, dtype=dtype, seq_len=seq_len, num_layers=num_layers)

    return _Entry(
        family=family,
        description=desc,
        defaults={"seq_len": cfg.seq_len, "num_layers": cfg.num_layers, "dropout": cfg.dropout},
        build=build,
    )


def _mm_build(*, b: int, dtype: str, seq_len: int, num_layers: int, image_size: int) -> OpGraph:
    return _build_mm(
        "multimodal-small",
        _MM,
        b=b,
        dtype=dtype,
        seq_len=seq_len,
        num_layers=num_layers,
        image_size=image_size,
    )


_ZOO: dict[str, _Entry] = {name: _lm_entry(name) for name in _LM}
_ZOO["multimodal-small"] = _Entry(
    family="multimodal",
    description="ViT encoder (4 layers, patch 16) + projector, 2 text layers, fusion, 4 decoder layers",
    defaults={"seq_len": _MM.text.seq_len, "num_layers": _MM.decoder_layers, "image_size": _MM.image_size},
    build=_mm_build,
)
_ZOO["resnet50"] = _Entry(
    family="cnn",
    description="ResNet-50 v1.5 (He et al. 2016), 25.6M parameters, 1000 classes",
    defaults={"image_size": 224},
    build=lambda *, b, dtype, image_size: _build_resnet50(
        "resnet50", b=b, dtype=dtype, image_size=image_size
    ),
)
_ZOO["vgg16"] = _Entry(
    family="cnn",
    description="VGG-16 (Simonyan & Zisserman 2015), 138M parameters, 1000 classes",
    defaults={"image_size": 224},
    build=lambda *, b, dtype, image_size: _build_vgg16("vgg16", b=b, dtype=dtype, image_size=image_size),
)


# ------------------------------------------------------------------------------------ public API
def _unknown_model(name: str) -> InvalidInputError:
    close = difflib.get_close_matches(name, list(_ZOO), n=3, cutoff=0.5)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    return InvalidInputError(
        f"model: unknown {name!r}; {hint}built-in models: {', '.join(_ZOO)} (or a path to a .json graph or a Hugging Face config.json)"
    )


@functools.cache
def _num_params(name: str) -> int:
    g = build_model(name, dtype="fp32")
    return round(g.param_bytes / 4)


def list_models() -> list[ModelInfo]:
    """The built-in models, with parameter counts at their default configuration.

    Returns
    -------
    list[ModelInfo]
        One entry per zoo model; ``defaults`` holds the options it takes (``seq_len``,
        ``num_layers``, ``image_size``) and their defaults. Every model also takes
        ``microbatch_size`` and ``dtype``.
    """
    return [
        ModelInfo(
            name=n,
            family=e.family,
            description=e.description,
            num_params=_num_params(n),
            defaults=dict(e.defaults),
        )
        for n, e in _ZOO.items()
    ]


def _check_int(opt: str, value: Any, low: int, fix: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise InvalidInputError(f"{opt}: must be an integer >= {low}, got {value!r}; {fix}")


def build_model(
    name: str,
    *,
    microbatch_size: int = 1,
    seq_len: int | None = None,
    dtype: str = "bf16",
    num_layers: int | None = None,
    image_size: int | None = None,
    dropout: bool | None = None,
) -> OpGraph:
    """Build a zoo model's operator graph for one micro-batch, analytically (no weights).

    Parameters
    ----------
    name
        A name from :func:`list_models`.
    microbatch_size
        Samples per micro-batch; FLOPs, activations and edge bytes scale with it.
    seq_len
        Tokens per sample (language and multimodal models: text tokens).
    dtype
        ``"bf16"``, ``"fp16"`` or ``"fp32"``: the element size of parameters, activations, edges.
    num_layers
        Overrides the number of (decoder) transformer layers.
    image_size
        Input side in pixels (CNNs and the multimodal model).
    dropout
        Transformer language models: with dropout (attention, residual and embedding dropout and
        their 1-byte masks, counted in memory and traffic) or without; default the model's own
        (GPT-2 style with, Llama style without).

    Returns
    -------
    OpGraph
        Operators named as in this module's docstring; ``meta`` records the options used.

    Raises
    ------
    InvalidInputError
        Unknown model (with close matches), an option the model does not take, or a bad value.
    """
    if name not in _ZOO:
        raise _unknown_model(name)
    entry = _ZOO[name]
    _check_int("microbatch_size", microbatch_size, 1, "use --microbatch-size 1 or more")
    if dtype not in DTYPE_BYTES:
        raise InvalidInputError(f"dtype: unknown {dtype!r}; use one of {', '.join(DTYPE_BYTES)}")
    given = {"seq_len": seq_len, "num_layers": num_layers, "image_size": image_size}
    kwargs: dict[str, Any] = {}
    if "dropout" in entry.defaults:
        if dropout is not None and not isinstance(dropout, bool):
            raise InvalidInputError(f"dropout: must be true or false, got {dropout!r}")
        kwargs["dropout"] = entry.defaults["dropout"] if dropout is None else dropout
    elif dropout is not None:
        raise InvalidInputError(
            f"dropout: model {name!r} does not take this option (transformer language models do); remove --dropout"
        )
    for opt, value in given.items():
        if opt not in entry.defaults:
            if value is not None:
                takes = ", ".join(entry.defaults) or "none"
                raise InvalidInputError(
                    f"{opt}: model {name!r} does not take this option (it takes: {takes}); "
                    f"remove --{opt.replace('_', '-')}"
                )
            continue
        v = entry.defaults[opt] if value is None else value
        low = {"seq_len": 1, "num_layers": 1, "image_size": 32}[opt]
        _check_int(
            opt,
            v,
            low,
            f"use --{opt.replace('_', '-')} {entry.defaults[opt]} (the default) or another value >= {low}",
        )
        kwargs[opt] = v
    if name in ("resnet50", "vgg16") and kwargs["image_size"] % 32:
        raise InvalidInputError(
            f"image_size: model {name!r} needs a multiple of 32, got {kwargs['image_size']}; "
            f"use --image-size {max(32, kwargs['image_size'] // 32 * 32)}"
        )
    return entry.build(b=microbatch_size, dtype=dtype, **kwargs)


def resolve_model(spec: str, **options: Any) -> OpGraph:
    """A zoo model by name, an operator graph read from a JSON file, or a Hugging Face config.

    Parameters
    ----------
    spec
        A zoo name (see :func:`list_models`), the path of a ``parplan.graph/1`` JSON file, or the
        path of a Hugging Face ``config.json`` (a JSON object with ``model_type`` or
        ``architectures``; see :mod:`parplan.graph.hf_config`), built with all the options.
    **options
        :func:`build_model` options. For a file, options left at None (or equal to the file's
        ``meta``) are accepted; any other value raises, since a file's costs are fixed.

    Raises
    ------
    InvalidInputError
        Unknown name that is not a file either, or options that a graph file cannot honour.
    """
    known = ("microbatch_size", "seq_len", "dtype", "num_layers", "image_size", "dropout")
    for key in options:
        if key not in known:
            raise InvalidInputError(f"{key}: not a model option; model options: {', '.join(known)}")
    if spec in _ZOO:
        return build_model(spec, **{k: v for k, v in options.items() if v is not None})
    path = Path(spec)
    if path.suffix.lower() == ".json" or path.exists():
        from parplan.graph.hf_config import build_hf_model, is_hf_config
        from parplan.graph.io import read_graph

        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError):
            data = None  # read_graph reports what is wrong with the file
        if is_hf_config(data):
            return build_hf_model(path, data=data, **{k: v for k, v in options.items() if v is not None})
        if isinstance(data, dict) and "format" not in data:
            raise InvalidInputError(
                f'{path}: neither a parplan.graph/1 file (no "format") nor a Hugging Face config.json '
                f'(no "model_type" or "architectures"); add the one it is'
            )
        g = read_graph(path)
        meta = g.meta_dict
        defaults = {"microbatch_size": 1, "dtype": "bf16"}
        for k, v in options.items():
            if v is None or meta.get(k, defaults.get(k)) == v:
                continue
            if k == "dtype":  # the same words as spec.planning_dtype, for --model and --graph alike
                how = "traced" if meta.get("traced") else "built"
                was = meta.get("dtype", defaults["dtype"])
                raise InvalidInputError(
                    f"--dtype {v}: {spec} was {how} in {was} (its byte counts are {was}); "
                    f"drop --dtype, or {'re-trace' if how == 'traced' else 'rebuild'} it in {v}"
                )
            raise InvalidInputError(
                f"{k}: cannot apply {k}={v!r} to the graph file {spec} (its costs are fixed"
                f"{'; it was built with ' + k + '=' + repr(meta[k]) if k in meta else ''}); "
                f"rebuild the file or drop the option"
            )
        return g
    raise _unknown_model(spec)
