"""Per-operator configurations: closed-form times and memory of DP, TP, ZeRO, recompute, resharding."""

from __future__ import annotations

import pytest

from parplan.cluster import Cluster, DeviceSpec, Link
from parplan.frontier import frontier, search_space
from parplan.graph.ops import Edge, Op, OpGraph, make_attrs


def _cluster(n: int = 4, per_node: int = 4) -> Cluster:
    """Toy devices: 100 TFLOP/s bf16, 2 TB/s memory; 100 GB/s links without latency."""
    spec = {
        "kind": "toy",
        "peak_flops": (("bf16", 100e12),),
        "memory_bytes": 80e9,
        "memory_bandwidth_Bps": 2e12,
    }
    return Cluster(
        name="toy",
        devices=tuple(DeviceSpec(index=i, name=f"g{i}", node=i // per_node, **spec) for i in range(n)),
        intra_node=Link(bandwidth_Bps=100e9),
        inter_node=Link(bandwidth_Bps=10e9),
    )


B, S, H = 4, 1024, 2048
TOK = B * S
FLOPS = 2 * TOK * H * H
PARAMS = H * H  # parameters of one H x H linear (bf16: 2 bytes each)
IN = TOK * H * 2
PEAK = 100e12 * 0.6  # toy device: 100 TFLOP/s at the roofline's matmul efficiency
BW = 100e9  # toy intra-node link, no latency


def _linear_graph(tp: str | None = "column", act: float = IN) -> OpGraph:
    x = Op(name="x", kind="elementwise", out_bytes=IN, attrs=make_attrs(batch=B, seq=S))
    lin = Op(
        name="lin",
        kind="linear",
        fwd_flops=FLOPS,
        bwd_input_flops=FLOPS,
        bwd_weight_flops=FLOPS,
        param_bytes=2 * PARAMS,
        act_bytes=act,
        out_bytes=IN,
        attrs=make_attrs(batch=B, seq=S, in_features=H, out_features=H, tp=tp),
    )
    return OpGraph(
        name="lin", ops=(x, lin), edges=(Edge(src=0, dst=1, bytes=IN),), meta=(("microbatch_size", B),)
    )


def _cfg(space, name):
    return {c.name: c for c in space.configs[1]}[name]


def test_column_parallel_linear_closed_form():
    space = search_space(_linear_graph(), _cluster(), devices=2)
    c = _cfg(space, "dp1.tp2.col")
    assert c.in_layout == (1, "R") and c.out_layout == (1, "H")
    assert c.compute_s == pytest.approx(3 * FLOPS / 2 / PEAK)
    # backward all-reduce of the input gradient on 2 devices: 2 (n-1)/n N / bw = N / bw
    assert c.comm_s == pytest.approx(IN / BW)
    # half the weights (16 bytes per parameter) and the whole replicated input saved
    assert c.mem_bytes == pytest.approx(16 * PARAMS / 2 + IN)
    sp = _cfg(space, "dp1.tp2.col.sp")
    # SP: all-gather forward, all-gather again + reduce-scatter backward, each N/2 / bw
    assert sp.comm_s == pytest.approx(3 * IN / 2 / BW)
    assert sp.mem_bytes == pytest.approx(16 * PARAMS / 2 + IN / 2)


def test_data_parallel_and_zero_stages_closed_form():
    space = search_space(_linear_graph(), _cluster(), devices=2)
    grads = 2 * PARAMS
    z0 = _cfg(space, "dp2.tp1.rep")
    assert z0.compute_s == pytest.approx(3 * FLOPS / 2 / PEAK)
    assert z0.comm_s == pytest.approx(grads / BW)  # gradient all-reduce once per iteration
    assert z0.mem_bytes == pytest.approx(16 * PARAMS + IN / 2)
    z1 = _cfg(space, "dp2.tp1.rep.z1")  # fp32 master + Adam (12 B/param) sharded
    assert z1.comm_s == pytest.approx(z0.comm_s)
    assert z1.mem_bytes == pytest.approx(4 * PARAMS + 12 * PARAMS / 2 + IN / 2)
    z2 = _cfg(space, "dp2.tp1.rep.z2")
    assert z2.mem_bytes == pytest.approx(2 * PARAMS + 14 * PARAMS / 2 + IN / 2)
    z3 = _cfg(space, "dp2.tp1.rep.z3")
    # two parameter all-gathers and one gradient reduce-scatter, each N/2 / bw
    assert z3.comm_s == pytest.approx((2 * 2 * PARAMS / 2 + grads / 2) / BW)
    assert z3.mem_bytes == pytest.approx(16 * PARAMS / 2 + IN / 2)


def test_more_microbatches_split_zero_costs_per_step():
    space = search_space(_linear_graph(), _cluster(), devices=2, microbatches=4)
    z1, z2 = _cfg(space, "dp2.tp1.rep.z1"), _cfg(space, "dp2.tp1.rep.z2")
    grads = 2 * PARAMS
    assert z1.comm_s == pytest.approx(grads / BW)  # once per iteration
    # reduce-scatter per micro-batch + one parameter all-gather
    assert z2.comm_s == pytest.approx(4 * grads / 2 / BW + 2 * PARAMS / 2 / BW)
    assert z1.compute_s == pytest.approx(4 * 3 * FLOPS / 2 / PEAK)


def test_recompute_is_offered_only_when_it_saves_memory():
    plain = search_space(_linear_graph(act=IN), _cluster(), devices=1)
    assert not any(c.recompute for c in plain.configs[1])
    big = search_space(_linear_graph(act=3 * IN), _cluster(), devices=1)
    keep, rc = _cfg(big, "dp1.tp1.rep"), _cfg(big, "dp1.tp1.rep.rc")
    assert rc.mem_bytes == pytest.approx(keep.mem_bytes - 2 * IN)
    assert rc.compute_s == pytest.approx(keep.compute_s * 4 / 3)  # one more forward


def test_resharding_closed_forms():
    space = search_space(_linear_graph(), _cluster(), devices=2)
    assert space.reshard_time((1, "S"), (1, "S"), IN) == 0.0
    assert space.reshard_time((1, "S"), (1, "R"), IN) == pytest.approx(IN / 2 / BW)  # all-gather
    assert space.reshard_time((1, "R"), (1, "H"), IN) == pytest.approx(IN / 2 / BW)  # grad all-gather
    # S <-> H: an all-to-all each way, each device sends half its shard
    assert space.reshard_time((1, "S"), (1, "H"), IN) == pytest.approx(2 * (IN / 2) / 2 / BW)


def test_grids_follow_batch_microbatches_and_mesh():
    g = _linear_graph()
    c = _cluster()
    assert search_space(g, c, devices=4).grids == ((4, 1), (2, 2), (1, 4))
    assert search_space(g, c, devices=4, mesh=(4,)).grids == ((1, 4), (4, 1))
    # batch 4 cannot split 8 ways, but 8 micro-batches can
    big = _cluster(8, per_node=8)
    assert (8, 1) not in search_space(g, big, devices=8).grids
    assert (8, 1) in search_space(g, big, devices=8, microbatches=8).grids
    f = frontier(g, big, devices=8, microbatches=8, epsilon=0.0)
    assert all(p.time_s > 0 for p in f.points)
