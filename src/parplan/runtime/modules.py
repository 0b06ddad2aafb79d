"""Real torch models whose operator graphs match the analytic zoo graphs, one module per operator.

``build_torch_model("gpt-tiny" | "moe-small" | "multimodal-small", ...)`` returns an
:class:`OpGraphModel` and the analytic :class:`~parplan.graph.ops.OpGraph` of the same
configuration. The model holds one :class:`OpModule` per analytic op (same name, same input edges in
the same order), so any set of op names (a pipeline stage) can run on its own with
:meth:`OpGraphModel.run_ops`. This module imports torch at module level: it exists only for torch.

Deliberate differences from the analytic graph (they do not change the graph, only the arithmetic):
no dropout (so that distributed and single-process gradients agree exactly), no rotary position
embedding for the Llama-style models (no parameters; it only adds elementwise work), and mixture-of-
experts routing without a capacity limit (every token reaches its top-k experts).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812 - the universal torch idiom
from torch import Tensor, nn

from parplan.errors import InvalidInputError
from parplan.graph.ops import OpGraph

#: Models with a torch implementation (the others in the zoo are analytic only).
TORCH_MODELS = ("gpt-tiny", "moe-small", "multimodal-small")

#: What an op outputs: one tensor, or a tuple of tensors (MoE dispatch: rows and expert ids).
Value = Tensor | tuple[Tensor, ...]


def _key(name: str) -> str:
    # nn.ModuleDict keys may not contain dots.
    return name.replace(".", "__")


@dataclass(frozen=True, slots=True, kw_only=True)
class _Cfg:
    """The facts of a zoo configuration the torch ops need."""

    vocab: int
    hidden: int
    heads: int
    ffn: int
    bias: bool
    layernorm: bool
    gated: bool
    positions: int | None
    experts: int = 0
    top_k: int = 0
    moe_ffn: int = 0
    shared: int = 0


class OpModule(nn.Module):
    """One operator: ``forward(*inputs, data=...)`` takes its predecessors' outputs in edge order.

    ``data`` is the micro-batch (``tokens``, ``labels``, ``images``) for the ops that read it
    (embeddings and the loss).
    """

    kind = "other"

    def forward(self, *inputs: Value, data: Mapping[str, Tensor]) -> Value:  # pragma: no cover
        raise NotImplementedError


class Embedding(OpModule):
    kind = "embedding"

    def __init__(self, vocab: int, hidden: int, positions: int | None) -> None:
        super().__init__()
        self.tok = nn.Embedding(vocab, hidden)
        self.pos = nn.Parameter(torch.randn(positions, hidden) * 0.02) if positions else None

    def forward(self, *inputs: Value, data: Mapping[str, Tensor]) -> Value:
        ids = data["tokens"]
        x = self.tok(ids)
        if self.pos is not None:
            x = x + self.pos[: ids.shape[1]]
        return x


class PatchEmbed(OpModule):
    kind = "conv"

    def __init__(self, hidden: int, patch: int, num_patches: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, hidden, patch, stride=patch)
        self.pos = nn.Parameter(torch.randn(num_patches, hidden) * 0.02)

    def forward(self, *inputs: Value, data: Mapping[str, Tensor]) -> Value:
        x = self.conv(data["images"])  # b, h, H/p, W/p
        return x.flatten(2).transpose(1, 2) + self.pos


class Norm(OpModule):
    kind = "norm"

    def __init__(self, hidden: int, layernorm: bool) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(hidden) if layernorm else nn.RMSNorm(hidden, eps=1e-5)

    def forward(self, x: Value, *, data: Mapping[str, Tensor]) -> Value:  # type: ignore[override]
        return self.norm(x)


class Linear(OpModule):
    kind = "linear"

    def __init__(self, k: int, n: int, bias: bool) -> None:
        super().__init__()
        self.linear = nn.Linear(k, n, bias=bias)

    def forward(self, x: Value, *, data: Mapping[str, Tensor]) -> Value:  # type: ignore[override]
        return self.linear(x)


class Attention(OpModule):
    """softmax(QK^T / sqrt(d)) V with explicit matmuls, so the FLOP counter sees both bmm."""

    kind = "attention"

    def __init__(self, heads: int, causal: bool) -> None:
        super().__init__()
        self.heads = heads
        self.causal = causal

    def forward(self, qkv: Value, *, data: Mapping[str, Tensor]) -> Value:  # type: ignore[override]
        assert isinstance(qkv, Tensor)
        b, s, three_h = qkv.shape
        h = three_h // 3
        d = h // self.heads
        q, k, v = (t.view(b, s, self.heads, d).transpose(1, 2) for t in qkv.split(h, dim=-1))
        scores = (q @ k.transpose(-1, -2)) / math.sqrt(d)
        if self.causal:
            mask = torch.ones(s, s, dtype=torch.bool, device=qkv.device).triu(1)
            scores = scores.masked_fill(mask, float("-inf"))
        out = scores.softmax(dim=-1) @ v
        return out.transpose(1, 2).reshape(b, s, h)


class Add(OpModule):
    kind = "elementwise"

    def forward(self, *inputs: Value, data: Mapping[str, Tensor]) -> Value:
        out = inputs[0]
        for x in inputs[1:]:
            out = out + x  # type: ignore[operator]
        return out


class Act(OpModule):
    """GELU, or SiLU(gate) * up for SwiGLU (gate and up fused in the preceding linear)."""

    kind = "elementwise"

    def __init__(self, gated: bool) -> None:
        super().__init__()
        self.gated = gated

    def forward(self, x: Value, *, data: Mapping[str, Tensor]) -> Value:  # type: ignore[override]
        assert isinstance(x, Tensor)
        if self.gated:
            gate, up = x.chunk(2, dim=-1)
            return F.silu(gate) * up
        return F.gelu(x)


class Loss(OpModule):
    kind = "loss"

    def forward(self, logits: Value, *, data: Mapping[str, Tensor]) -> Value:  # type: ignore[override]
        assert isinstance(logits, Tensor)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), data["labels"].reshape(-1))


class Fusion(OpModule):
    """Image tokens then text tokens along the sequence."""

    kind = "fusion"

    def forward(self, image: Value, text: Value, *, data: Mapping[str, Tensor]) -> Value:  # type: ignore[override]
        return torch.cat([image, text], dim=1)  # type: ignore[list-item]


def _topk(logits: Tensor, k: int) -> tuple[Tensor, Tensor]:
    return logits.softmax(dim=-1).topk(k, dim=-1)


class MoEDispatch(OpModule):
    """Copies every token to its top-k experts: rows (T*k, h), token-major, and their expert ids."""

    kind = "all_to_all"

    def __init__(self, top_k: int) -> None:
        super().__init__()
        self.top_k = top_k

    def forward(self, x: Value, router: Value, *, data: Mapping[str, Tensor]) -> Value:  # type: ignore[override]
        assert isinstance(x, Tensor) and isinstance(router, Tensor)
        _, idx = _topk(router.reshape(-1, router.shape[-1]), self.top_k)
        rows = x.reshape(-1, x.shape[-1]).repeat_interleave(self.top_k, dim=0)
        return rows, idx.reshape(-1)


class MoEExperts(OpModule):
    """The routed SwiGLU experts; weights stacked as (experts, in, out)."""

    kind = "moe_experts"

    def __init__(self, experts: int, hidden: int, ffn: int) -> None:
        super().__init__()
        std = 0.02
        self.gate_up = nn.Parameter(torch.randn(experts, hidden, 2 * ffn) * std)
        self.down = nn.Parameter(torch.randn(experts, ffn, hidden) * std)

    def forward(self, dispatched: Value, *, data: Mapping[str, Tensor]) -> Value:  # type: ignore[override]
        rows, idx = dispatched  # type: ignore[misc]
        out = torch.zeros_like(rows)
        for e in range(self.gate_up.shape[0]):
            sel = (idx == e).nonzero(as_tuple=True)[0]
            if sel.numel() == 0:
                continue
            gate, up = (rows.index_select(0, sel) @ self.gate_up[e]).chunk(2, dim=-1)
            out = out.index_add(0, sel, (F.silu(gate) * up) @ self.down[e])
        return out


class MoECombine(OpModule):
    """Brings expert outputs back to their tokens, weighted by the router's top-k gates."""

    kind = "all_to_all"

    def __init__(self, top_k: int) -> None:
        super().__init__()
        self.top_k = top_k

    def forward(self, rows: Value, router: Value, *, data: Mapping[str, Tensor]) -> Value:  # type: ignore[override]
        assert isinstance(rows, Tensor) and isinstance(router, Tensor)
        gates, _ = _topk(router.reshape(-1, router.shape[-1]), self.top_k)
        h = rows.shape[-1]
        out = (rows.view(-1, self.top_k, h) * gates.unsqueeze(-1)).sum(dim=1)
        return out.view(*router.shape[:-1], h)


class OpGraphModel(nn.Module):
    """A model as a graph of :class:`OpModule`, one per analytic op, in the graph's op order.

    Parameters
    ----------
    graph
        The analytic graph; its ops and edges define which module feeds which.
    ops
        One module per op of ``graph`` (keyed by op name).
    data_spec
        Shapes of the micro-batch inputs (see :meth:`make_batch`).
    """

    def __init__(self, graph: OpGraph, ops: Mapping[str, OpModule], data_spec: Mapping[str, Any]) -> None:
        super().__init__()
        missing = [op.name for op in graph.ops if op.name not in ops]
        if missing:
            raise InvalidInputError(f"torch model {graph.name!r}: no module for ops {missing[:5]}")
        self.graph = graph
        self.data_spec = dict(data_spec)
        self.ops = nn.ModuleDict({_key(op.name): ops[op.name] for op in graph.ops})

    #: The op whose output is the micro-batch's loss.
    loss_name = "loss"

    def op(self, name: str) -> OpModule:
        """The module of op ``name``."""
        return self.ops[_key(name)]  # type: ignore[return-value]

    def op_params(self, name: str) -> list[nn.Parameter]:
        return list(self.op(name).parameters())

    def input_names(self, name: str) -> tuple[str, ...]:
        """Names of the ops feeding ``name``, in edge order."""
        g = self.graph
        return tuple(g.ops[j].name for j in g.preds[g.index[name]])

    def make_batch(self, microbatch: int, seed: int = 0) -> dict[str, Tensor]:
        """Deterministic synthetic data of micro-batch ``microbatch``: tokens, labels (and images)."""
        spec = self.data_spec
        gen = torch.Generator().manual_seed(seed * 1_000_003 + microbatch)
        b, s, vocab = spec["batch"], spec["seq_len"], spec["vocab"]
        out = {"tokens": torch.randint(vocab, (b, s), generator=gen)}
        out["labels"] = torch.randint(vocab, (b, spec["label_len"]), generator=gen)
        if "image_size" in spec:
            n = spec["image_size"]
            out["images"] = torch.randn(b, 3, n, n, generator=gen)
        return out

    def run_ops(
        self,
        op_names: Iterable[str],
        inputs: Mapping[str, Value],
        data: Mapping[str, Tensor],
    ) -> dict[str, Value]:
        """Run ``op_names`` in graph order; outputs of ops outside the set come from ``inputs``.

        Parameters
        ----------
        op_names
            The ops to run (e.g. a stage's ops).
        inputs
            Outputs of the ops outside ``op_names`` that feed them.
        data
            The micro-batch (``make_batch``).

        Returns
        -------
        dict[str, Value]
            The output of every op run.
        """
        wanted = set(op_names)
        g = self.graph
        values: dict[str, Value] = {}
        for i in g.topo_order:
            name = g.ops[i].name
            if name not in wanted:
                continue
            args = []
            for j in g.preds[i]:
                src = g.ops[j].name
                if src in values:
                    args.append(values[src])
                elif src in inputs:
                    args.append(inputs[src])
                else:
                    raise InvalidInputError(
                        f"run_ops: op {name!r} needs the output of {src!r}, which is neither run nor given"
                    )
            values[name] = self.op(name)(*args, data=data)
        return values

    def forward(self, data: Mapping[str, Tensor]) -> Tensor:
        """The loss of one micro-batch (all ops)."""
        values = self.run_ops((op.name for op in self.graph.ops), {}, data)
        return values[self.graph.ops[self.graph.topo_order[-1]].name]  # type: ignore[return-value]


# ------------------------------------------------------------------------------------- builders
def _layer_modules(cfg: _Cfg, prefix: str, *, causal: bool, moe: bool) -> dict[str, OpModule]:
    h = cfg.hidden
    m: dict[str, OpModule] = {
        f"{prefix}.ln1": Norm(h, cfg.layernorm),
        f"{prefix}.attn.qkv": Linear(h, 3 * h, cfg.bias),
        f"{prefix}.attn.core": Attention(cfg.heads, causal),
        f"{prefix}.attn.out": Linear(h, h, cfg.bias),
        f"{prefix}.attn.add": Add(),
        f"{prefix}.ln2": Norm(h, cfg.layernorm),
        f"{prefix}.mlp.add": Add(),
    }
    if not moe:
        up = 2 * cfg.ffn if cfg.gated else cfg.ffn
        m[f"{prefix}.mlp.up"] = Linear(h, up, cfg.bias)
        m[f"{prefix}.mlp.act"] = Act(cfg.gated)
        m[f"{prefix}.mlp.down"] = Linear(cfg.ffn, h, cfg.bias)
        return m
    m[f"{prefix}.moe.router"] = Linear(h, cfg.experts, False)
    m[f"{prefix}.moe.dispatch"] = MoEDispatch(cfg.top_k)
    m[f"{prefix}.moe.experts"] = MoEExperts(cfg.experts, h, cfg.moe_ffn)
    m[f"{prefix}.moe.combine"] = MoECombine(cfg.top_k)
    if cfg.shared:
        fs = cfg.shared * cfg.moe_ffn
        m[f"{prefix}.moe.shared.up"] = Linear(h, 2 * fs, False)
        m[f"{prefix}.moe.shared.act"] = Act(True)
        m[f"{prefix}.moe.shared.down"] = Linear(fs, h, False)
    return m


def _head_modules(cfg: _Cfg) -> dict[str, OpModule]:
    return {
        "ln_f": Norm(cfg.hidden, cfg.layernorm),
        "head": Linear(cfg.hidden, cfg.vocab, False),
        "loss": Loss(),
    }


_GPT = _Cfg(vocab=2048, hidden=256, heads=4, ffn=1024, bias=True, layernorm=True, gated=False, positions=512)
_MOE = _Cfg(
    vocab=4096,
    hidden=512,
    heads=8,
    ffn=2048,
    bias=False,
    layernorm=False,
    gated=True,
    positions=None,
    experts=8,
    top_k=2,
    moe_ffn=1024,
    shared=1,
)
_VISION = _Cfg(vocab=0, hidden=384, heads=6, ffn=1536, bias=True, layernorm=True, gated=False, positions=None)
_TEXT = _Cfg(
    vocab=8192, hidden=512, heads=8, ffn=2048, bias=True, layernorm=True, gated=False, positions=2048
)
_PATCH = 16
_TEXT_LAYERS = 2
_VISION_LAYERS = 4
_FIRST_DENSE = 1


def _lm_ops(cfg: _Cfg, num_layers: int, first_dense: int) -> dict[str, OpModule]:
    ops: dict[str, OpModule] = {"embed": Embedding(cfg.vocab, cfg.hidden, cfg.positions)}
    for i in range(num_layers):
        moe = cfg.experts > 0 and i >= first_dense
        ops.update(_layer_modules(cfg, f"layer{i}", causal=True, moe=moe))
    ops.update(_head_modules(cfg))
    return ops


def _mm_ops(num_layers: int, image_size: int) -> dict[str, OpModule]:
    v, t = _VISION, _TEXT
    num_patches = (image_size // _PATCH) ** 2
    ops: dict[str, OpModule] = {"vision.patch_embed": PatchEmbed(v.hidden, _PATCH, num_patches)}
    for j in range(_VISION_LAYERS):
        ops.update(_layer_modules(v, f"vision.layer{j}", causal=False, moe=False))
    ops["vision.ln_f"] = Norm(v.hidden, v.layernorm)
    ops["vision.proj"] = Linear(v.hidden, t.hidden, True)
    ops["embed"] = Embedding(t.vocab, t.hidden, t.positions)
    for j in range(_TEXT_LAYERS):
        ops.update(_layer_modules(t, f"text.layer{j}", causal=True, moe=False))
    ops["fusion"] = Fusion()
    for i in range(num_layers):
        ops.update(_layer_modules(t, f"layer{i}", causal=True, moe=False))
    ops.update(_head_modules(t))
    return ops


def build_torch_model(
    name: str,
    *,
    microbatch_size: int = 1,
    seq_len: int | None = None,
    num_layers: int | None = None,
    image_size: int | None = None,
    seed: int = 0,
) -> tuple[OpGraphModel, OpGraph]:
    """A torch model of a zoo entry and its analytic graph (fp32), with identical op names and edges.

    Parameters
    ----------
    name
        One of ``TORCH_MODELS``.
    microbatch_size, seq_len, num_layers, image_size
        As in :func:`parplan.graph.zoo.build_model` (None: the zoo default).
    seed
        Seeds the weight initialization: the same seed gives the same weights in every process.

    Returns
    -------
    tuple[OpGraphModel, OpGraph]
        The model (fp32, on CPU) and ``build_model(name, ..., dtype="fp32")``.

    Raises
    ------
    InvalidInputError
        A model without torch implementation (the message lists those that have one), or bad options.
    """
    from parplan.graph.zoo import build_model

    if name not in TORCH_MODELS:
        twin = hf_twin(name)
        if twin is None:
            raise InvalidInputError(
                f"model {name!r}: no torch implementation to run; models that run: "
                f"{', '.join(TORCH_MODELS)} and Hugging Face config.json files of dense or MoE decoders"
            )
        if image_size is not None:
            raise InvalidInputError(f"image_size: {name} is a language model; drop --image-size")
        cfg, graph = _hf_twin_graph(name, twin, microbatch_size, seq_len, num_layers)
        torch.manual_seed(seed)
        tf = twin[1]
        seq, layers = int(graph.meta_dict["seq_len"]), int(graph.meta_dict["num_layers"])
        model = OpGraphModel(
            graph,
            _lm_ops(cfg, layers, tf.first_dense if tf.moe_experts else 0),
            {"batch": microbatch_size, "seq_len": seq, "label_len": seq, "vocab": cfg.vocab},
        )
        _check_same_graph(model, graph)
        return model, graph
    opts: dict[str, Any] = {"seq_len": seq_len, "num_layers": num_layers}
    if name == "multimodal-small":
        opts["image_size"] = image_size
    elif image_size is not None:
        raise InvalidInputError(f"image_size: model {name!r} takes no images; drop --image-size")
    graph = build_model(name, microbatch_size=microbatch_size, dtype="fp32", **opts)
    meta = graph.meta_dict
    layers, seq = int(meta["num_layers"]), int(meta["seq_len"])
    torch.manual_seed(seed)
    spec: dict[str, Any] = {"batch": microbatch_size, "seq_len": seq, "label_len": seq}
    if name == "gpt-tiny":
        ops = _lm_ops(_GPT, layers, 0)
        spec["vocab"] = _GPT.vocab
    elif name == "moe-small":
        ops = _lm_ops(_MOE, layers, _FIRST_DENSE)
        spec["vocab"] = _MOE.vocab
    else:
        size = int(meta["image_size"])
        ops = _mm_ops(layers, size)
        spec.update(vocab=_TEXT.vocab, image_size=size, label_len=(size // _PATCH) ** 2 + seq)
    model = OpGraphModel(graph, ops, spec)
    _check_same_graph(model, graph)
    return model, graph


def hf_twin(spec: str) -> tuple[_Cfg, Any] | None:
    """The torch twin's configuration of a Hugging Face ``config.json`` (None if ``spec`` is not
    one), refusing what the twin does not implement, with the reason.

    The twin is the same decoder by shape (the zoo's graph of the config, op for op), initialised
    at random: rotary embeddings are left out (they cost no parameters and a few element-wise
    FLOPs), dropout is not applied (the graph still counts its memory) and a tied head is untied
    (the prediction is made for the untied model too: see :func:`twin_graph`).
    """
    import json
    from pathlib import Path

    from parplan.graph.hf_config import hf_transformer_config, is_hf_config

    path = Path(spec)
    if path.suffix.lower() != ".json" or not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    if not is_hf_config(data):
        return None
    _, tf, _ = hf_transformer_config(data, spec)
    refuse = []
    if tf.kv_heads not in (None, tf.heads):
        refuse.append(f"grouped-query attention ({tf.kv_heads} KV heads for {tf.heads})")
    if tf.head_dim not in (None, tf.hidden // tf.heads):
        refuse.append(f"head_dim {tf.head_dim} != hidden / heads")
    if tf.qkv_bias:
        refuse.append("a bias on the Q, K, V projection only")
    if tf.mla is not None:
        refuse.append("multi-head latent attention")
    if refuse:
        raise InvalidInputError(
            f"{spec}: the torch twin train runs has no {'; no '.join(refuse)}; plan it with "
            "frontier/plan/compare, or give a config without it"
        )
    cfg = _Cfg(
        vocab=tf.vocab,
        hidden=tf.hidden,
        heads=tf.heads,
        ffn=tf.ffn,
        bias=tf.bias,
        layernorm=tf.layernorm,
        gated=tf.gated,
        positions=tf.max_positions,
        experts=tf.moe_experts,
        top_k=tf.moe_top_k,
        moe_ffn=tf.moe_ffn,
        shared=tf.moe_shared,
    )
    return cfg, tf


def twin_notes(spec: str) -> list[str]:
    """What the torch twin of a ``config.json`` leaves out or changes, one line each (none for zoo
    models)."""
    twin = hf_twin(spec)
    if twin is None:
        return []
    tf = twin[1]
    notes = []
    if tf.tied_head:
        notes.append(
            f"{spec} ties the head to the embedding; the twin trains an untied head "
            f"(+{tf.vocab * tf.hidden:,} parameters), and the prediction is for that model"
        )
    if tf.max_positions is None:
        notes.append(f"{spec} uses rotary position embeddings; the twin leaves them out (no parameters)")
    if tf.dropout:
        notes.append(
            f"{spec} has dropout; the twin trains without it (the prediction still counts its memory)"
        )
    return notes


def _hf_twin_graph(
    spec: str,
    twin: tuple[_Cfg, Any],
    microbatch_size: int,
    seq_len: int | None,
    num_layers: int | None,
    dropout: bool | None = None,
) -> tuple[_Cfg, OpGraph]:
    from dataclasses import replace
    from pathlib import Path

    from parplan.graph.hf_config import build_hf_model

    cfg, tf = twin
    graph = build_hf_model(
        Path(spec),
        microbatch_size=microbatch_size,
        seq_len=seq_len,
        dtype="fp32",
        num_layers=num_layers,
        dropout=dropout,
    )
    if dropout is not None:
        tf = replace(tf, dropout=dropout)
    if tf.tied_head:  # the twin's head has its own weights: build the graph it runs
        from parplan.graph.zoo import _build_lm

        meta = graph.meta_dict
        graph = _build_lm(
            graph.name,
            replace(tf, tied_head=False),
            b=microbatch_size,
            dtype="fp32",
            seq_len=int(meta["seq_len"]),
            num_layers=int(meta["num_layers"]),
        )
    return cfg, graph


def twin_graph(spec: str, **options: Any) -> OpGraph:
    """The analytic graph (fp32) of the torch twin train runs for ``spec`` (a zoo name or a Hugging
    Face ``config.json``), without building the torch model: what its predictions are made for."""
    from parplan.graph.zoo import build_model

    twin = hf_twin(spec)
    if twin is None:
        return build_model(spec, dtype="fp32", **options)
    opts = {k: options.get(k) for k in ("microbatch_size", "seq_len", "num_layers")}
    if options.get("image_size") is not None:
        raise InvalidInputError(f"image_size: {spec} is a language model; drop --image-size")
    return _hf_twin_graph(
        spec, twin, opts["microbatch_size"] or 1, opts["seq_len"], opts["num_layers"], options.get("dropout")
    )[1]


def _check_same_graph(model: OpGraphModel, graph: OpGraph) -> None:
    """Every analytic op has a module and every module an analytic op (a bug here is ours)."""
    names = {_key(op.name) for op in graph.ops}
    extra = sorted(set(model.ops.keys()) - names)
    if extra:
        from parplan.errors import InternalError

        raise InternalError(f"torch model {graph.name!r} has modules for unknown ops {extra[:5]}")
    have = sum(p.numel() * p.element_size() for p in model.parameters())
    want = sum(op.param_bytes for op in graph.ops)
    if abs(have - want) > 1e-3 * max(want, 1):
        from parplan.errors import InternalError

        raise InternalError(f"torch model {graph.name!r} has {have} parameter bytes, its graph {want:.0f}")


def stage_param_names(model: OpGraphModel, op_names: Sequence[str]) -> list[str]:
    """Fully qualified parameter names (as in ``model.named_parameters()``) of the given ops."""
    keys = {_key(n) for n in op_names}
    return [n for n, _ in model.named_parameters() if n.split(".")[1] in keys]
