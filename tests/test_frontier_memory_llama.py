"""Memory per device of llama-7b's standard strategies against hand-computed ZeRO / Korthikanti figures.

Hand figures (bytes per device; Rajbhandari et al. 2020 for the training state, Korthikanti et al.
2022 for activations, adapted to Llama: RMSNorm, SwiGLU with FFN f, flash attention, no dropout).
Per layer and micro-batch of b samples on a device, 16-bit, with tensor parallelism t:
ln1 input, qkv input, ln2 input and up input (2 s b h each, divided by t only with sequence
parallelism), Q/K/V (6 s b h), attn.out input (2 s b h), SwiGLU up output (4 s b f) and its output
(2 s b f), all divided by t, and the fp32 logsumexp (4 b a s / t). The head keeps ln_f's and the
head's inputs (2 s b h each) and fp32 logits (4 s b V / t). Full checkpointing keeps each layer's
input (2 s b h, / t with SP) and one layer's activations while it is recomputed. State: 2 + 2 + 12
bytes per parameter of a tensor-parallel shard (N / t), with ZeRO-1 sharding the 12 optimizer bytes
over d, ZeRO-2 the gradients too, ZeRO-3 the parameters too.
"""

from __future__ import annotations

import pytest

from parplan.cluster_io import load_cluster
from parplan.frontier import memory_breakdown, search_space
from parplan.frontier.search import _blocks
from parplan.graph.zoo import build_model

S, H, A, F, V, L = 2048, 4096, 32, 11008, 32000, 32
BATCH = 8  # samples per micro-batch, split over data parallelism

# Megatron-LM's layouts: (without SP, with SP) per op suffix.
_TP_LAYOUT = {
    "embed": ("vocab", "vocab.sp"),
    "ln1": ("rep", "seq"),
    "attn.qkv": ("col", "col.sp"),
    "attn.core": ("heads", "heads"),
    "attn.out": ("row", "row.sp"),
    "attn.add": ("rep", "seq"),
    "ln2": ("rep", "seq"),
    "mlp.up": ("col", "col.sp"),
    "mlp.act": ("hid", "hid"),
    "mlp.down": ("row", "row.sp"),
    "mlp.add": ("rep", "seq"),
    "ln_f": ("rep", "seq"),
    "head": ("col", "col.sp"),
    "loss": ("hid", "hid"),
}


@pytest.fixture(scope="module")
def llama():  # type: ignore[no-untyped-def]
    g = build_model("llama-7b", microbatch_size=BATCH)
    space = search_space(
        g, load_cluster("8xh100"), devices=8, checkpoint_layers=[ops for _, ops, _ in _blocks(g)]
    )
    return g, space


def _choice(g, space, d: int, t: int, sp: bool, zero: int, ckpt: bool) -> dict[int, str]:  # type: ignore[no-untyped-def]
    in_layer = {v for ops in space.checkpoint_layers for v in ops}
    choice = {}
    for i, op in enumerate(g.ops):
        names = {c.name for c in space.configs[i]}
        key = op.name.split(".", 1)[1] if op.name.startswith("layer") else op.name
        layout = "rep" if t == 1 else _TP_LAYOUT[key][sp]
        name = f"dp{d}.tp{t}.{layout}"
        if zero and op.param_bytes > 0:
            name += f".z{zero}"
        if ckpt and i in in_layer:
            name += ".ckpt"
        assert name in names, (op.name, name, sorted(names)[:8])
        choice[i] = name
    return choice


def _hand_layer(b: float, t: int, sp: bool) -> float:
    """One layer's stored activations (Korthikanti et al. 2022 with flash attention's 4bas)."""
    sbh = S * b * H
    norm_ins = 4 * 2 * sbh / (t if sp else 1)
    split = (6 * sbh + 2 * sbh + 6 * S * b * F) / t + 4 * b * A * S / t
    return norm_ins + split


def _hand(n_params: float, d: int, t: int, sp: bool, zero: int, ckpt: bool) -> float:
    b = BATCH / d
    sbh = S * b * H
    layer = _hand_layer(b, t, sp)
    head = 2 * 2 * sbh / (t if sp else 1) + 4 * S * b * V / t
    acts = L * 2 * sbh / (t if sp else 1) + layer if ckpt else L * layer  # + one layer recomputed
    shard = n_params / t
    state = {
        0: 16 * shard,
        1: (4 + 12 / d) * shard,
        2: (2 + 14 / d) * shard,
        3: 16 / d * shard,
    }[zero]
    return state + acts + head


CASES = [(8, 1, False, z) for z in range(4)] + [
    (1, 8, True, 0),
    (1, 8, False, 0),
    (4, 2, True, 1),
    (4, 2, True, 3),
]


@pytest.mark.parametrize("ckpt", [False, True])
@pytest.mark.parametrize("d, t, sp, zero", CASES)
def test_llama_7b_memory_matches_hand_figures(llama, d: int, t: int, sp: bool, zero: int, ckpt: bool) -> None:  # type: ignore[no-untyped-def]
    g, space = llama
    got = memory_breakdown(space, _choice(g, space, d, t, sp, zero, ckpt)).total
    want = _hand(g.param_bytes / 2, d, t, sp, zero, ckpt)
    assert got == pytest.approx(want, rel=0.05), f"{got / 2**30:.2f} GiB vs hand {want / 2**30:.2f} GiB"


@pytest.mark.parametrize("ckpt", [False, True])
@pytest.mark.parametrize("d, t, sp, zero", CASES)
def test_strategy_estimate_memory_matches_hand_figures(
    d: int, t: int, sp: bool, zero: int, ckpt: bool
) -> None:
    # The strategy-level estimate (one micro-batch of BATCH / d samples per data-parallel rank) gives
    # the same state and activations; its ZeRO-3 gather buffers (two layers) come on top.
    from parplan.cost.strategy import estimate_strategy
    from parplan.strategy import Strategy

    g = build_model("llama-7b", microbatch_size=BATCH // d)
    strategy = Strategy(
        dp=d, tp=t, zero=zero, sequence_parallel=sp if t > 1 else None, recompute="full" if ckpt else "none"
    )
    est = estimate_strategy(g, strategy, load_cluster("8xh100"), global_batch=BATCH)
    gathered = 2 * sum(op.param_bytes for op in g.ops if op.layer == 0) / t if zero == 3 else 0.0
    # its buffers: the larger of the layer recomputed (in the hand figure's activations) and the
    # loss backward's two fp32 tensors of the logits' size (vocabulary-parallel over t)
    b = BATCH / d
    loss_backward = 2 * 4 * S * b * V / t
    layer = _hand_layer(b, t, sp)
    transient = max(layer, loss_backward) - layer if ckpt else loss_backward
    got = est.memory.state + est.memory.activations + est.memory.buffers - gathered
    want = _hand(g.param_bytes / 2, d, t, sp, zero, ckpt) + transient
    assert got == pytest.approx(want, rel=0.001), f"{got / 2**30:.2f} GiB vs hand {want / 2**30:.2f} GiB"
