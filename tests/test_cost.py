"""Cost model: alpha-beta p2p and collectives, roofline op times, training memory, measured profiles."""

from __future__ import annotations

import dataclasses
import json

import pytest

from parplan.cluster import Cluster, DeviceSpec, Link
from parplan.cluster_io import load_cluster
from parplan.cost import (
    COLLECTIVES,
    CostModel,
    KernelEfficiency,
    OpProfile,
    Profile,
    StateBytes,
    collective_time,
    kernel_efficiency,
    op_time,
    p2p_time,
    pass_seconds,
    read_profile,
    sharded_state_bytes,
    stage_times,
    training_state_bytes,
    write_profile,
)
from parplan.errors import InvalidInputError
from parplan.graph.ops import Op, make_attrs

# Round numbers so every expected time is a hand calculation.
INTRA = Link(bandwidth_Bps=100e9, latency_s=1e-6)
INTER = Link(bandwidth_Bps=10e9, latency_s=10e-6)


def _device(i: int, node: int, *, flops: float = 100e12, bw: float = 1e12, kind: str = "gpu") -> DeviceSpec:
    return DeviceSpec(
        index=i,
        name=f"g{i}",
        kind=kind,
        node=node,
        peak_flops=(("bf16", flops), ("fp32", flops / 10)),
        memory_bytes=64e9,
        memory_bandwidth_Bps=bw,
    )


def _cluster(nodes: int = 2, per_node: int = 4) -> Cluster:
    devs = tuple(_device(i, i // per_node) for i in range(nodes * per_node))
    return Cluster(name="toy", devices=devs, intra_node=INTRA, inter_node=INTER)


# --------------------------------------------------------------------------- p2p
def test_p2p_same_device_is_free():
    c = _cluster()
    assert p2p_time(c, 3, 3, 1e9) == 0.0
    assert p2p_time(c, 0, 1, 0) == 0.0


def test_p2p_intra_and_inter_node():
    c = _cluster()
    assert p2p_time(c, 0, 3, 1e9) == pytest.approx(1e-6 + 1e9 / 100e9)  # same node: 10.001 ms
    assert p2p_time(c, 3, 4, 1e9) == pytest.approx(10e-6 + 1e9 / 10e9)  # across nodes: 100.01 ms


def test_p2p_errors():
    c = _cluster()
    with pytest.raises(InvalidInputError, match=r"p2p dst: 8 is not a device of cluster 'toy' \(0\.\.7\)"):
        p2p_time(c, 0, 8, 1.0)
    with pytest.raises(InvalidInputError, match="p2p nbytes: must be >= 0 bytes, got -1"):
        p2p_time(c, 0, 1, -1)


# --------------------------------------------------------------------------- collectives
N = 8e9  # bytes: large enough that latency terms are visible but small


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        # ring on 4 devices of one node: 2(n-1) alpha + 2(n-1)/n N/bw
        ("all_reduce", 6 * 1e-6 + 1.5 * N / 100e9),
        # (n-1) alpha + (n-1)/n N/bw
        ("all_gather", 3 * 1e-6 + 0.75 * N / 100e9),
        ("reduce_scatter", 3 * 1e-6 + 0.75 * N / 100e9),
        ("all_to_all", 3 * 1e-6 + 0.75 * N / 100e9),
    ],
)
def test_collectives_in_one_node(kind, expected):
    assert collective_time(_cluster(), kind, N, [0, 1, 2, 3]) == pytest.approx(expected)


def test_group_of_one_and_empty_buffer_cost_nothing():
    c = _cluster()
    for kind in COLLECTIVES:
        assert collective_time(c, kind, N, [5]) == 0.0
        assert collective_time(c, kind, 0, [0, 1, 4]) == 0.0


def test_one_device_per_node_is_a_flat_ring_on_the_slow_link():
    c = _cluster()
    # devices 0 and 4 sit on different nodes: g = 1, k = 2
    assert collective_time(c, "all_reduce", N, [0, 4]) == pytest.approx(2 * 10e-6 + N / 10e9)
    assert collective_time(c, "all_gather", N, [0, 4]) == pytest.approx(10e-6 + 0.5 * N / 10e9)


def test_hierarchical_all_reduce_across_nodes():
    c = _cluster()
    g, k = 4, 2
    intra = 2 * ((g - 1) * 1e-6 + (g - 1) / g * N / 100e9)  # reduce-scatter + all-gather in node
    inter = 2 * (k - 1) * 10e-6 + 2 * (k - 1) / k * (N / g) / 10e9  # all-reduce of a 1/g shard
    got = collective_time(c, "all_reduce", N, range(8))
    assert got == pytest.approx(intra + inter)
    # cheaper than a flat ring over the slow link, dearer than a flat ring over the fast one
    flat_slow = 2 * 7 * 10e-6 + 2 * 7 / 8 * N / 10e9
    flat_fast = 2 * 7 * 1e-6 + 2 * 7 / 8 * N / 100e9
    assert flat_fast < got < flat_slow


def test_hierarchical_all_gather_and_all_to_all():
    c = _cluster()
    ag = (4 - 1) * 1e-6 + 0.75 * N / 100e9 + 1 * 10e-6 + 0.5 * (N / 4) / 10e9
    assert collective_time(c, "all_gather", N, range(8)) == pytest.approx(ag)
    assert collective_time(c, "reduce_scatter", N, range(8)) == pytest.approx(ag)
    # all_to_all: 3 local peers get 3/8 of N on the fast link, 4 remote peers 4/8 on the slow one
    a2a = 3 * 1e-6 + 3 / 8 * N / 100e9 + 4 * 10e-6 + 4 / 8 * N / 10e9
    assert collective_time(c, "all_to_all", N, range(8)) == pytest.approx(a2a)


def test_uneven_groups_use_the_largest_node_share():
    c = _cluster()
    # 3 devices on node 0, 1 on node 1: g = 3, g_min = 1: the lone device carries the whole buffer
    got = collective_time(c, "all_reduce", N, [0, 1, 2, 4])
    want = 2 * (2 * 1e-6 + 2 / 3 * N / 100e9) + 2 * 10e-6 + N / 10e9
    assert got == pytest.approx(want)


def test_collective_errors():
    c = _cluster()
    with pytest.raises(InvalidInputError, match="collective kind: unknown 'broadcast'"):
        collective_time(c, "broadcast", 1.0, [0, 1])
    with pytest.raises(InvalidInputError, match=r"all_reduce group: devices repeat in \[0, 1, 0\]"):
        collective_time(c, "all_reduce", 1.0, [0, 1, 0])
    with pytest.raises(InvalidInputError, match=r"all_gather group\[1\]: 9 is not a device"):
        collective_time(c, "all_gather", 1.0, [0, 9])


def test_h100_all_reduce_of_7b_gradients():
    # 7e9 bf16 gradients on one DGX H100: 2*7/8*14e9 / 450e9 = 54.4 ms (+ 14 * 3 us)
    c = load_cluster("8xh100")
    t = collective_time(c, "all_reduce", 14e9, range(8))
    assert t == pytest.approx(2 * 7 / 8 * 14e9 / 450e9 + 14 * 3e-6)


# --------------------------------------------------------------------------- compute roofline
GPU = _device(0, 0, flops=100e12, bw=1e12)


def test_compute_bound_linear():
    op = Op(name="mm", kind="linear", fwd_flops=6e12, fwd_bytes=1e9)
    # 6e12 / (100e12 * 0.6) = 0.1 s  >  1e9 / (1e12 * 0.8) = 1.25 ms
    assert op_time(op, GPU, "F") == pytest.approx(0.1)


def test_memory_bound_elementwise():
    op = Op(name="gelu", kind="elementwise", fwd_flops=1e9, fwd_bytes=8e9)
    # 8e9 / (1e12 * 0.8) = 10 ms  >  1e9 / (100e12 * 0.3) = 0.033 ms
    assert op_time(op, GPU, "F") == pytest.approx(0.01)


def test_other_kinds_use_the_lower_compute_efficiency():
    op = Op(name="n", kind="norm", fwd_flops=3e12)
    assert op_time(op, GPU, "F") == pytest.approx(3e12 / (100e12 * 0.3))


def test_backward_passes_and_b_is_i_plus_w():
    op = Op(
        name="mm",
        kind="linear",
        bwd_input_flops=6e12,
        bwd_weight_flops=1.2e12,
        bwd_weight_bytes=1e12,  # W is memory bound: 1e12 / 0.8e12 = 1.25 s
    )
    assert op_time(op, GPU, "I") == pytest.approx(0.1)
    assert op_time(op, GPU, "W") == pytest.approx(1.25)
    # each pass is bounded on its own, so B is I + W, not the roofline of the summed work
    assert op_time(op, GPU, "B") == pytest.approx(1.35)


def test_dtype_selects_peak_and_falls_back():
    op = Op(name="mm", kind="linear", fwd_flops=6e12)
    assert op_time(op, GPU, "F", dtype="fp32") == pytest.approx(1.0)  # 10 TFLOP/s fp32
    assert op_time(op, GPU, "F", dtype="fp16") == pytest.approx(0.1)  # no fp16 entry: bf16
    with pytest.raises(InvalidInputError, match="dtype: unknown 'int8'"):
        op_time(op, GPU, "F", dtype="int8")


FP8_GPU = dataclasses.replace(_device(0, 0, kind="gpu8"), peak_flops=(("bf16", 100e12), ("fp8", 200e12)))


def test_fp8_runs_linear_gemms_at_the_fp8_peak_and_pays_the_casts():
    mm = Op(name="mm", kind="linear", fwd_flops=6e12, fwd_bytes=2e9)
    # 6e12 / (200e12 * 0.6) = 50 ms, then casting 2e9 / 2 bf16 elements at 3 bytes each:
    # 3e9 / (1e12 * 0.8) = 3.75 ms
    assert op_time(mm, FP8_GPU, "F", gemm_dtype="fp8") == pytest.approx(0.05 + 3.75e-3)
    assert op_time(mm, FP8_GPU, "F") == pytest.approx(0.1)
    # attention and everything but linears and experts stay in the storage dtype
    for kind in ("attention", "norm", "elementwise"):
        op = Op(name="x", kind=kind, fwd_flops=6e12, fwd_bytes=2e9)
        assert op_time(op, FP8_GPU, "F", gemm_dtype="fp8") == op_time(op, FP8_GPU, "F")
    experts = Op(name="e", kind="moe_experts", bwd_input_flops=6e12, bwd_weight_flops=6e12)
    assert op_time(experts, FP8_GPU, "B", gemm_dtype="fp8") == pytest.approx(0.1)


def test_fp8_cost_model_refuses_devices_without_fp8_and_profiles():
    fp8_cluster = Cluster(name="f8", devices=(FP8_GPU,), intra_node=INTRA, inter_node=INTER)
    mm = Op(name="mm", kind="linear", fwd_flops=6e12)
    assert CostModel(fp8_cluster, gemm_dtype="fp8").op_time(mm, 0, "F") == pytest.approx(0.05)
    with pytest.raises(InvalidInputError, match=r"--dtype fp8: gpu devices of cluster 'toy' list no fp8 peak"):
        CostModel(_cluster(), gemm_dtype="fp8")
    prof = Profile(device="gpu8", dtype="bf16", microbatch_size=1, seq_len=None, ops=(("mm", OpProfile(F=1.0, B=2.0)),))
    with pytest.raises(InvalidInputError, match="drop --profile"):
        CostModel(fp8_cluster, profile=prof, gemm_dtype="fp8")
    with pytest.raises(InvalidInputError, match="only fp8"):
        CostModel(fp8_cluster, gemm_dtype="int4")


def test_custom_efficiency():
    op = Op(name="mm", kind="linear", fwd_flops=6e12)
    assert op_time(op, GPU, "F", efficiency=KernelEfficiency(gemm=1.0)) == pytest.approx(0.06)
    with pytest.raises(InvalidInputError, match=r"efficiency.memory: must be in \(0, 1\], got 1.5"):
        KernelEfficiency(memory=1.5)


def test_unknown_pass_kind():
    with pytest.raises(InvalidInputError, match="pass kind: unknown 'X'; use one of F, I, W, B"):
        op_time(Op(name="a", kind="linear"), GPU, "X")


def test_stage_times_sum_ops():
    ops = [
        Op(name="a", kind="linear", fwd_flops=6e12, bwd_input_flops=6e12, bwd_weight_flops=6e12),
        Op(name="b", kind="elementwise", fwd_bytes=8e9, bwd_input_bytes=8e9),
    ]
    t = stage_times(ops, GPU)
    assert pytest.approx((0.11, 0.11, 0.1, 0.21)) == (t.F, t.I, t.W, t.B)
    t = stage_times(ops, GPU, split_backward=False)
    assert t.I is None and pytest.approx(0.21) == t.B


def test_h100_layer_time():
    # one llama-7b-like matmul, 4096x4096 over 2048 tokens: 2*2048*4096^2 = 68.7 GFLOP at H100's
    # GEMM efficiency (0.7); its shape unknown, no wave quantization
    h100 = load_cluster("8xh100").devices[0]
    op = Op(name="mm", kind="linear", fwd_flops=2 * 2048 * 4096**2, fwd_bytes=2 * (2 * 2048 * 4096 + 4096**2))
    assert op_time(op, h100, "F") == pytest.approx(2 * 2048 * 4096**2 / (989e12 * 0.7))
    # with its shape: 16 x 32 = 512 output tiles of 128 x 128 on 132 SMs take 4 waves (528 slots)
    shaped = dataclasses.replace(op, attrs=make_attrs(batch=1, seq=2048, out_features=4096))
    assert op_time(shaped, h100, "F") == pytest.approx(2 * 2048 * 4096**2 / (989e12 * 0.7 * 512 / 528))
    # the planner's per-op time and the whole-model estimate price an op by the same rule
    assert op_time(shaped, h100, "F") == pytest.approx(
        pass_seconds(shaped, shaped.fwd_flops, shaped.fwd_bytes, h100, dtype="bf16", efficiency=kernel_efficiency(h100))
    )


def test_attention_is_priced_as_flash_or_as_gemms_then_softmax():
    h100 = load_cluster("8xh100").devices[0]
    flops, nbytes = 1e12, 1e9
    flash = Op(name="a", kind="attention", fwd_flops=flops, fwd_bytes=nbytes, attrs=make_attrs(flash=True))
    causal = dataclasses.replace(flash, attrs=make_attrs(flash=True, causal=True))
    unfused = dataclasses.replace(flash, attrs=())
    assert op_time(flash, h100, "F") == pytest.approx(flops / (989e12 * 0.35))
    assert op_time(causal, h100, "F") == pytest.approx(flops / 2 / (989e12 * 0.35))
    assert op_time(unfused, h100, "F") == pytest.approx(flops / (989e12 * 0.7) + nbytes / (3.35e12 * 0.8))


# --------------------------------------------------------------------------- training memory
def test_mixed_precision_adam_is_16_bytes_per_param():
    s = training_state_bytes(2e9, dtype="bf16")  # 1e9 parameters
    assert (s.params, s.grads, s.optimizer) == (2e9, 2e9, 12e9)
    assert s.total == 16e9


def test_fp32_adam_and_other_optimizers():
    s = training_state_bytes(4e9, dtype="fp32")
    assert (s.params, s.grads, s.optimizer) == (4e9, 4e9, 8e9)
    assert training_state_bytes(2e9, optimizer="sgd").total == 2e9 + 2e9 + 8e9  # master + momentum
    assert training_state_bytes(2e9, optimizer="none").total == 4e9
    assert training_state_bytes(1e9, dtype="fp8").total == 1e9 + 2e9 + 12e9


def test_zero_sharding():
    s = StateBytes(params=2.0, grads=2.0, optimizer=12.0)
    assert sharded_state_bytes(s, 4, 0) == s
    assert sharded_state_bytes(s, 4, 1) == StateBytes(params=2.0, grads=2.0, optimizer=3.0)
    assert sharded_state_bytes(s, 4, 2) == StateBytes(params=2.0, grads=0.5, optimizer=3.0)
    assert sharded_state_bytes(s, 4, 3).total == 4.0  # ZeRO-3: 16 bytes / 4 devices
    with pytest.raises(InvalidInputError, match="zero_stage: must be 0, 1, 2 or 3, got 4"):
        sharded_state_bytes(s, 4, 4)
    with pytest.raises(InvalidInputError, match="dp: must be an integer >= 1, got 0"):
        sharded_state_bytes(s, 0, 1)


def test_memory_errors():
    with pytest.raises(InvalidInputError, match="optimizer: unknown 'lion'"):
        training_state_bytes(1.0, optimizer="lion")
    with pytest.raises(InvalidInputError, match="param_bytes: must be >= 0, got -1"):
        training_state_bytes(-1)


# --------------------------------------------------------------------------- profiles
def _profile(**ops: OpProfile) -> Profile:
    return Profile(device="gpu", dtype="bf16", microbatch_size=1, seq_len=128, ops=tuple(sorted(ops.items())))


def test_profile_round_trip(tmp_path):
    p = _profile(a=OpProfile(F=1e-3, I=2e-3, W=1e-3, act_bytes=4096.0), b=OpProfile(F=5e-4, B=1e-3))
    p = Profile(
        device=p.device, dtype=p.dtype, microbatch_size=1, seq_len=128, ops=p.ops, meta=(("torch", "2.13.0"),)
    )
    path = tmp_path / "p.json"
    write_profile(p, path)
    data = json.loads(path.read_text())
    assert data["format"] == "parplan.profile/1"
    assert data["ops"]["a"] == {"F": 1e-3, "I": 2e-3, "W": 1e-3, "act_bytes": 4096.0}
    assert read_profile(path) == p


def test_profile_overrides_roofline():
    c = _cluster(1, 2)
    a = Op(
        name="a", kind="linear", fwd_flops=6e12, bwd_input_flops=6e12, bwd_weight_flops=6e12, act_bytes=10.0
    )
    b = Op(name="b", kind="linear", fwd_flops=6e12, bwd_input_flops=6e12, bwd_weight_flops=2e12)
    other = Op(name="c", kind="linear", fwd_flops=6e12)
    model = CostModel(
        c, profile=_profile(a=OpProfile(F=1.0, I=2.0, W=3.0, act_bytes=7.0), b=OpProfile(F=1.0, B=4.0))
    )
    assert [model.op_time(a, 1, k) for k in "FIWB"] == [1.0, 2.0, 3.0, 5.0]
    assert model.act_bytes(a, 0) == 7.0 and model.act_bytes(b, 0) == 0.0
    # only B measured: split 3:1 like the analytic I (0.1 s) : W (1/30 s)
    assert model.op_time(b, 0, "I") == pytest.approx(3.0)
    assert model.op_time(b, 0, "W") == pytest.approx(1.0)
    assert model.op_time(other, 0, "F") == pytest.approx(0.1)  # not profiled: roofline
    assert pytest.approx(1.1) == model.stage_times([a, other], 0).F


def test_profile_applies_to_matching_kind_on_mixed_clusters():
    devs = (_device(0, 0, kind="gpu"), _device(1, 0, kind="other", flops=50e12))
    c = Cluster(name="mixed", devices=devs, intra_node=INTRA, inter_node=INTER)
    op = Op(name="a", kind="linear", fwd_flops=6e12)
    model = CostModel(c, profile=_profile(a=OpProfile(F=1.0, I=0.0, W=0.0)))
    assert model.op_time(op, 0, "F") == 1.0
    assert model.op_time(op, 1, "F") == pytest.approx(0.2)  # roofline on the unprofiled kind


def test_cost_model_wraps_comm():
    model = CostModel(_cluster())
    assert model.p2p_time(0, 4, 1e9) == p2p_time(model.cluster, 0, 4, 1e9)
    assert model.collective_time("all_reduce", N, range(8)) == collective_time(
        model.cluster, "all_reduce", N, range(8)
    )
    with pytest.raises(InvalidInputError, match=r"device: 8 is not a device of cluster 'toy'"):
        model.op_time(Op(name="a", kind="linear"), 8, "F")


def test_profile_errors(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": "parplan.profile/1",\n "ops": {,}}')
    with pytest.raises(InvalidInputError, match="not valid JSON at line 2"):
        read_profile(bad)
    base = {
        "format": "parplan.profile/1",
        "device": "gpu",
        "dtype": "bf16",
        "microbatch_size": 1,
        "seq_len": 8,
    }
    with pytest.raises(InvalidInputError, match=r"profile.format: expected 'parplan.profile/1', got 'x'"):
        Profile.from_json({**base, "format": "x", "ops": {}})
    with pytest.raises(InvalidInputError, match=r"profile.ops.a.I: must be a time >= 0 in seconds, got -1"):
        Profile.from_json({**base, "ops": {"a": {"F": 1, "I": -1, "W": 1}}})
    with pytest.raises(InvalidInputError, match=r"profile.ops.a: give both I and W or neither"):
        Profile.from_json({**base, "ops": {"a": {"F": 1, "I": 1}}})
    with pytest.raises(InvalidInputError, match=r"profile.ops.a.F: missing"):
        Profile.from_json({**base, "ops": {"a": {"I": 1, "W": 1}}})
    with pytest.raises(InvalidInputError, match=r"profile.microbatch_size: must be an integer >= 1"):
        Profile.from_json({**base, "microbatch_size": 0, "ops": {}})
