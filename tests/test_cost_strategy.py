"""The strategy-level estimate: each step-time term against its closed form, and published runs."""

from __future__ import annotations

from dataclasses import replace

import pytest

from parplan.cluster_io import load_cluster
from parplan.cost.comm import collective_time
from parplan.cost.compute import wave_utilization
from parplan.cost.published import megatron_runs, scale_peak, torchtitan_peak_scale, torchtitan_runs
from parplan.cost.strategy import TIME_TERMS, estimate_strategy
from parplan.errors import InvalidInputError
from parplan.graph.ops import Op, OpGraph, make_attrs
from parplan.graph.zoo import build_model
from parplan.strategy import Strategy, parse_strategy

H100 = load_cluster("8xh100")


def _chain(layers: int, flops: float = 1e12) -> OpGraph:
    """``layers`` identical linear layers and nothing else: equal pipeline stages."""
    ops = tuple(
        Op(
            name=f"layer{i}.fc",
            kind="linear",
            fwd_flops=flops,
            bwd_input_flops=flops,
            bwd_weight_flops=flops,
            param_bytes=2 * 4096 * 4096,
            act_bytes=2 * 4096 * 4096,
            out_bytes=2 * 4096 * 4096,
            layer=i,
            attrs=make_attrs(batch=1, seq=4096, in_features=4096, out_features=4096),
        )
        for i in range(layers)
    )
    from parplan.graph.ops import Edge

    edges = tuple(Edge(src=i, dst=i + 1, bytes=ops[i].out_bytes) for i in range(layers - 1))
    return OpGraph(
        name="chain",
        ops=ops,
        edges=edges,
        meta=(("dtype", "bf16"), ("microbatch_size", 1), ("seq_len", 4096)),
    )


def test_terms_add_up_to_the_step() -> None:
    g = build_model("llama-7b", microbatch_size=1, num_layers=4)
    for text in (
        "dp=8",
        "dp=2,tp=4,zero=1",
        "pp=2,dp=2,tp=2,zero=3,recompute=full",
        "tp=8,recompute=selective",
    ):
        e = estimate_strategy(g, parse_strategy(text), H100, global_batch=8)
        assert set(e.terms) == set(TIME_TERMS)
        assert sum(e.terms.values()) == pytest.approx(e.step_s, rel=1e-9), text
        assert all(v >= 0 for v in e.terms.values())


def test_1f1b_bubble_is_p_minus_1_stage_times() -> None:
    # equal stages, no comm: the 1F1B makespan is (m + p - 1)(F + B), the bubble (p - 1)(F + B)
    g = _chain(8)
    single = estimate_strategy(g, Strategy(), H100)
    per_mb = single.terms["compute"] / 4  # one of 4 stages, one micro-batch
    e = estimate_strategy(g, Strategy(pp=4, schedule="1f1b"), H100, global_batch=16)
    assert e.microbatches == 16
    assert e.terms["compute"] == pytest.approx(16 * per_mb, rel=1e-9)
    assert e.terms["pp_bubble"] == pytest.approx(3 * per_mb, rel=1e-9)
    gpipe = estimate_strategy(g, Strategy(pp=4, schedule="gpipe"), H100, global_batch=16)
    assert gpipe.terms["pp_bubble"] == pytest.approx(3 * per_mb, rel=1e-9)
    # GPipe keeps every micro-batch's activations, 1F1B at most p on the first stage
    assert gpipe.memory.activations == pytest.approx(16 / 4 * e.memory.activations, rel=1e-9)


def test_tensor_parallel_collectives_are_four_all_reduces_per_layer() -> None:
    layers = 4
    g = build_model("llama-7b", microbatch_size=1, num_layers=layers)
    sbh = 2048 * 4096 * 2  # s b h in bf16 (llama-7b: s = 2048, h = 4096)
    ar = collective_time(H100, "all_reduce", sbh, list(range(8)))
    for recompute, per_layer in (("none", 4), ("full", 6)):  # full recompute repeats the forward two
        e = estimate_strategy(g, Strategy(tp=8, recompute=recompute), H100)
        # + the vocabulary-parallel embedding's forward all-reduce and the head's input gradient
        assert e.terms["tp_comm"] == pytest.approx((per_layer * layers + 2) * ar, rel=1e-9), recompute


def test_optimizer_step_is_memory_bound_over_the_updated_shard() -> None:
    g = build_model("llama-7b", microbatch_size=1, num_layers=2)
    n = g.param_bytes / 2
    bw = H100.devices[0].memory_bandwidth_Bps * 0.8
    assert estimate_strategy(g, Strategy(dp=8), H100, global_batch=8).terms["optimizer"] == pytest.approx(
        n * 28 / bw, rel=1e-9
    )
    z1 = estimate_strategy(g, Strategy(dp=8, zero=1), H100, global_batch=8, grad_dtype="fp32")
    assert z1.terms["optimizer"] == pytest.approx(n / 8 * 30 / bw, rel=1e-9)
    assert z1.memory.gradients == pytest.approx(4 * n)  # Megatron's distributed optimizer: 6 + 12/d
    assert z1.memory.parameters + z1.memory.optimizer_state == pytest.approx((2 + 12 / 8) * n)


def test_gradient_all_reduce_overlap() -> None:
    g = build_model("llama-7b", microbatch_size=1, num_layers=4)
    cl = load_cluster("dgx-h100:2")
    s = Strategy(dp=16)
    group = list(range(16))
    total = collective_time(cl, "all_reduce", g.param_bytes, group)  # bf16 gradients
    plain = estimate_strategy(g, s, cl, global_batch=16, overlap_grad_reduce=False)
    assert plain.terms["dp_comm"] == pytest.approx(total, rel=1e-9)
    over = estimate_strategy(g, s, cl, global_batch=16)
    backward = over.terms["compute"] * 2 / 3  # I + W of the one micro-batch (F = I = W per op here)
    assert over.terms["dp_comm"] < plain.terms["dp_comm"]
    assert over.terms["dp_comm"] >= total / 4 - 1e-12  # the last bucket (one layer) stays exposed
    assert over.terms["dp_comm"] <= max(total / 4, total - backward * 0.5) + 1e-12


def test_causal_flash_attention_does_half_the_square() -> None:
    g = build_model("llama-7b", microbatch_size=1, num_layers=1)
    full = OpGraph(
        name=g.name,
        ops=tuple(
            replace(op, attrs=tuple((k, v) for k, v in op.attrs if k != "causal"))
            if op.kind == "attention"
            else op
            for op in g.ops
        ),
        edges=g.edges,
        meta=g.meta,
    )
    core = next(op for op in g.ops if op.kind == "attention")
    peak_eff = 989e12 * 0.35
    saved = (
        estimate_strategy(full, Strategy(), H100).terms["compute"]
        - estimate_strategy(g, Strategy(), H100).terms["compute"]
    )
    assert saved == pytest.approx(0.5 * (core.fwd_flops + core.bwd_input_flops) / peak_eff, rel=1e-6)


def test_wave_quantization() -> None:
    assert wave_utilization(128, 128 * 108, 108) == 1.0
    assert wave_utilization(128, 128 * 109, 108) == pytest.approx(109 / 216)
    assert wave_utilization(1, 1, None) == 1.0


def test_zero3_buffers_hold_two_gathered_layers() -> None:
    g = build_model("llama-7b", microbatch_size=1)
    e = estimate_strategy(g, Strategy(dp=8, zero=3), H100, global_batch=8)
    layer = sum(op.param_bytes for op in g.ops if op.layer == 0)
    # beside the loss backward's two fp32 tensors of the logits' size (s = 2048, V = 32,000)
    assert e.memory.buffers == pytest.approx(2 * layer + 2 * 4 * 2048 * 32000)


def test_loss_backward_transient_is_two_fp32_logits_and_tp_splits_it() -> None:
    g = build_model("llama-7b", microbatch_size=2)
    logits = 4 * 2 * 2048 * 32000  # fp32, b = 2
    assert estimate_strategy(g, Strategy(dp=8), H100, global_batch=16).memory.buffers == pytest.approx(2 * logits)
    tp = estimate_strategy(g, Strategy(dp=2, tp=4, sequence_parallel=True), H100, global_batch=4)
    assert tp.memory.buffers == pytest.approx(2 * logits / 4)  # vocabulary-parallel logits
    # with full recompute the larger of it and one layer's activations (recomputed later) counts
    full = estimate_strategy(g, Strategy(dp=8, recompute="full"), H100, global_batch=16)
    layer = sum(op.act_bytes for op in g.ops if op.layer == 0)
    assert full.memory.buffers == pytest.approx(max(layer, 2 * logits))


def test_torchtitan_selective_checkpointing_keeps_the_odd_matmuls_and_attention() -> None:
    # Llama 3.1 8B, 2 x 8192 tokens: torchtitan's wq wk wv wo w1 w3 w2, the odd ones saved (wq,
    # wv, w1, w2: 4096 + 1024 + 14336 + 4096 wide), with the attention output (4096) and its fp32
    # log-sum-exp (32 heads), and the layer input (4096): bf16 per token
    run = torchtitan_runs()[0]
    g = run.graph()
    tokens = 2 * 8192
    per_layer = tokens * 2 * (4096 + 1024 + 14336 + 4096 + 4096 + 4096) + tokens * 4 * 32
    outside = sum(op.act_bytes for op in g.ops if op.layer is None)
    sac = estimate_strategy(g, Strategy(dp=8, zero=3, recompute="selective"), run.cluster(), global_batch=16, selective="every-other-matmul")
    assert sac.memory.activations == pytest.approx(32 * per_layer + outside, rel=1e-9)
    none = estimate_strategy(g, Strategy(dp=8, zero=3), run.cluster(), global_batch=16)
    assert sac.memory.activations < 0.6 * none.memory.activations
    # recomputed: wk, wo and w3 of the matmuls (by width), the norms and element-wise ops
    layer = [op for op in g.ops if op.layer == 0]
    assert [op.name for op in layer if op.kind == "linear"] == [
        "layer0.attn.qkv", "layer0.attn.out", "layer0.mlp.up", "layer0.mlp.down"
    ]


@pytest.mark.parametrize(
    "kwargs, strategy, match",
    [
        ({"global_batch": 12}, "dp=8", "multiple of dp x micro-batch size = 8 x 1"),
        ({}, "pp=8", "8 pipeline stages but the model has 2 layers"),
        ({}, "pp=2,schedule=interleaved-1f1b", "one stage per pipeline rank"),
        ({"selective": "most"}, "dp=2", "selective: unknown 'most'"),
        ({"grad_dtype": "int8"}, "dp=2", "grad_dtype: unknown 'int8'"),
    ],
)
def test_bad_inputs_are_named(kwargs: dict, strategy: str, match: str) -> None:
    g = build_model("llama-7b", microbatch_size=1, num_layers=2)
    with pytest.raises(InvalidInputError, match=match):
        estimate_strategy(g, parse_strategy(strategy), H100, **kwargs)


def test_too_few_devices() -> None:
    g = build_model("llama-7b", microbatch_size=1, num_layers=2)
    with pytest.raises(InvalidInputError, match="needs 16 devices; cluster '8xh100' has 8"):
        estimate_strategy(g, parse_strategy("dp=16"), H100, global_batch=16)


@pytest.mark.parametrize("run", megatron_runs(), ids=lambda r: r.name)
def test_megatron_weak_scaling_within_15_percent(run) -> None:  # type: ignore[no-untyped-def]
    # Narayanan et al. 2021, Table 1: achieved teraFLOP/s per GPU (the paper's FLOP count)
    est = run.estimate()
    assert est.fits
    assert run.predicted(est) == pytest.approx(run.published, rel=0.15)


def test_torchtitan_rows_are_reported_honestly() -> None:
    # With the SXM datasheet peak not within 15% (those H100s run at a 500 W limit); the figure
    # reached is pinned so a change that moves it is seen, and eager stays slower than compiled.
    eager, compiled, float8 = (r.predicted(r.estimate()) for r in torchtitan_runs()[:3])
    assert eager < compiled < float8
    assert eager / 5762 == pytest.approx(1.49, abs=0.05)
    assert compiled / 6667 == pytest.approx(1.45, abs=0.05)
    # the same factor on every row: the gains of compile and of Float8 are predicted as published
    assert float8 / compiled == pytest.approx(8532 / 6667, rel=0.05)


def test_one_fitted_peak_predicts_every_other_torchtitan_row_within_15_percent() -> None:
    # The sustained peak of the power-limited GPUs is fitted on one row (8B, 8 GPUs, eager); the
    # other six (compile, Float8, 128 GPUs over 16 hosts, 70B with TP8) are predictions with it.
    scale = torchtitan_peak_scale()
    assert 0.5 < scale < 0.845  # below the SXM part; the fit sits below torchtitan's NVL bound too
    runs = torchtitan_runs()
    assert runs[0].predicted(runs[0].estimate(scale)) == pytest.approx(runs[0].published, rel=1e-6)
    assert len(runs) == 7
    for run in runs[1:]:
        assert run.predicted(run.estimate(scale)) == pytest.approx(run.published, rel=0.15), run.name


def test_scale_peak_scales_every_dtype_and_nothing_else() -> None:
    scaled = scale_peak(H100, 0.5)
    assert scaled.devices[0].flops("bf16") == H100.devices[0].flops("bf16") / 2
    assert scaled.devices[0].flops("fp8") == H100.devices[0].flops("fp8") / 2
    assert scaled.devices[0].memory_bandwidth_Bps == H100.devices[0].memory_bandwidth_Bps
    assert scaled.intra_node == H100.intra_node and scaled.num_devices == H100.num_devices


def test_fp8_runs_the_linear_gemms_at_the_fp8_peak_with_casts() -> None:
    g = _chain(1)  # one compute-bound linear: 1e12 FLOPs per pass, a 4096 x 4096 output
    op = g.ops[0]
    traffic = 1e9  # bytes per pass, so that the casts cost something
    g = OpGraph(
        name="one",
        ops=(replace(op, fwd_bytes=traffic, bwd_input_bytes=traffic, bwd_weight_bytes=traffic),),
        edges=(),
        meta=g.meta,
    )
    bf16 = estimate_strategy(g, Strategy(), H100)
    fp8 = estimate_strategy(g, Strategy(), H100, gemm_dtype="fp8")
    util = 1024 / (8 * 132)  # 32 x 32 output tiles of 128 on 132 SMs: 8 waves
    assert bf16.terms["compute"] == pytest.approx(3 * 1e12 / (989e12 * 0.7 * util), rel=1e-9)
    cast = 3 * (traffic / 2) * 3 / (3.35e12 * 0.8)  # 3 passes, 2-byte elements, 3 bytes per cast element
    assert fp8.terms["compute"] == pytest.approx(3 * 1e12 / (1979e12 * 0.7 * util) + cast, rel=1e-9)
    assert fp8.memory == bf16.memory  # storage stays 16-bit
    with pytest.raises(InvalidInputError, match="list no fp8 peak"):
        estimate_strategy(g, Strategy(), load_cluster("8xa100"), gemm_dtype="fp8")


# ------------------------------------------------------------------ calibrated runtime overheads
def test_runtime_overheads_add_their_closed_forms() -> None:
    from parplan.cost.calibration import RuntimeCalibration

    g = _chain(8)
    base = Strategy(pp=4, schedule="1f1b")
    plain = estimate_strategy(g, base, H100, global_batch=16)
    # every F and B action pays x: 1F1B's makespan (m + p - 1)(F + B) grows by (m + p - 1) 2x
    x = 1e-3
    e = estimate_strategy(
        g, base, H100, global_batch=16, calibration=RuntimeCalibration(pipeline_action_s=x, step_sync_s=0.01)
    )
    assert e.step_s - plain.step_s == pytest.approx((16 + 3) * 2 * x + 0.01, rel=1e-6)
    assert e.terms["step_sync"] == 0.01
    assert sum(e.terms.values()) == pytest.approx(e.step_s, rel=1e-9)
    # FSDP2 (ZeRO-2/3) pays per sharded module (the layers and the root) and per parameter byte
    z = Strategy(dp=8, zero=2)
    a, b = 2e-3, 1e-12
    fsdp = estimate_strategy(
        g, z, H100, global_batch=8, calibration=RuntimeCalibration(fsdp_unit_s=a, fsdp_s_per_byte=b)
    )
    bare = estimate_strategy(g, z, H100, global_batch=8)
    params_bytes = sum(op.param_bytes for op in g.ops)
    assert fsdp.terms["dp_comm"] - bare.terms["dp_comm"] == pytest.approx((8 + 1) * a + b * params_bytes, rel=1e-6)
    # a measured AdamW step prices the parameters the device updates (ZeRO-1+: its 1/dp shard)
    y = 3e-9
    for strategy, updated in (
        (Strategy(dp=8, zero=0), 8 * 4096 * 4096),
        (Strategy(dp=8, zero=1), 4096 * 4096),
    ):
        timed = estimate_strategy(
            g, strategy, H100, global_batch=8, calibration=RuntimeCalibration(adamw_s_per_param=y)
        )
        assert timed.terms["optimizer"] == pytest.approx(updated * y, rel=1e-9)
    # ZeRO-1 runs no FSDP2
    z1 = Strategy(dp=8, zero=1)
    assert estimate_strategy(
        g, z1, H100, global_batch=8, calibration=RuntimeCalibration(fsdp_unit_s=a)
    ).step_s == pytest.approx(estimate_strategy(g, z1, H100, global_batch=8).step_s, rel=1e-12)


def test_calibration_is_read_from_the_cluster_file_and_checked() -> None:
    from parplan.cluster_io import cluster_from_json, cluster_to_json
    from parplan.cost.calibration import RuntimeCalibration, runtime_calibration

    doc = cluster_to_json(load_cluster("local:4"))
    doc.setdefault("meta", {})["measured"] = {"runtime": {"step_sync_s": 0.002, "slowdown": [1.0, 1.1, 1.6, 2.0]}}
    cal = runtime_calibration(cluster_from_json(doc, where="test"))
    assert cal == RuntimeCalibration(step_sync_s=0.002, slowdown=(1.0, 1.1, 1.6, 2.0))
    assert cal.slowdown_at(3, cores=2) == 1.6
    assert cal.slowdown_at(8, cores=2) == 4.0  # beyond the measured: shared fairly
    assert RuntimeCalibration().slowdown_at(4, cores=2) == 2.0  # unmeasured: fair sharing
    assert runtime_calibration(load_cluster("8xh100")) == RuntimeCalibration()
    doc["meta"]["measured"]["runtime"] = {"step_sync": 1}
    with pytest.raises(InvalidInputError, match="unknown step_sync"):
        runtime_calibration(cluster_from_json(doc, where="test"))
    doc["meta"]["measured"]["runtime"] = {"fsdp_unit_s": -1}
    with pytest.raises(InvalidInputError, match="fsdp_unit_s: must be a number >= 0"):
        runtime_calibration(cluster_from_json(doc, where="test"))


def test_sequence_parallel_reduces_the_replicated_gradients() -> None:
    # llama (RMSNorm, no biases): 2 norms per layer + the final norm, h * 2 bytes each, partial
    # under SP; Megatron coalesces them into one all-reduce, DTensor reduces each on its own
    g = build_model("llama-7b", microbatch_size=1, num_layers=4)
    h = 4096
    tp_group = list(range(8))
    sp = parse_strategy("tp=8")
    coalesced = estimate_strategy(g, sp, H100, global_batch=1)
    each = estimate_strategy(g, sp, H100, global_batch=1, per_tensor_grad_sync=True)
    n = 2 * 4 + 1
    assert coalesced.terms["tp_grad_sync"] == pytest.approx(
        collective_time(H100, "all_reduce", n * h * 2, tp_group), rel=1e-9
    )
    assert each.terms["tp_grad_sync"] == pytest.approx(
        n * collective_time(H100, "all_reduce", h * 2, tp_group), rel=1e-9
    )
    # without sequence parallelism every rank sees every token: nothing to reduce
    no_sp = estimate_strategy(g, parse_strategy("tp=8,sp=0"), H100, global_batch=1)
    assert no_sp.terms["tp_grad_sync"] == 0.0


def test_tensor_parallel_parameters_per_rank_are_the_dtensor_shards() -> None:
    # gpt-tiny at tp=4 as train shards it (DTensor, counted from the shards' local tensors):
    # 1,188,096 of 4,339,200 parameters per rank; whole on every rank: the learned positions
    # (512 x 256), the norms and the row-parallel biases (26 x 256); the vocabulary-parallel token
    # table's gradient comes back whole from DTensor's embedding backward (2048 x 256 more x 3/4)
    from parplan.runtime.modules import twin_graph

    g = twin_graph("gpt-tiny")
    local = load_cluster("local:4")
    est = estimate_strategy(g, parse_strategy("tp=4"), local, dtensor_embedding_grad=True)
    assert est.memory.parameters == 1_188_096 * 4
    assert est.memory.gradients == (1_188_096 + 2048 * 256 * 3 / 4) * 4
    megatron = estimate_strategy(g, parse_strategy("tp=4"), local)
    assert megatron.memory.gradients == megatron.memory.parameters
