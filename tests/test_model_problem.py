"""Pipeline problems from a model graph + cluster: optimal partition, roofline stage costs, memory, comm."""

from __future__ import annotations

import itertools
import random

import pytest

from parplan.cluster import Cluster, DeviceSpec, Link
from parplan.cluster_io import load_cluster
from parplan.cost import (
    OpProfile,
    Profile,
    balanced_partition,
    model_problem,
    partition_units,
    training_state_bytes,
)
from parplan.errors import InvalidInputError
from parplan.graph.ops import Edge, Op, OpGraph

INTRA = Link(bandwidth_Bps=100e9, latency_s=1e-6)
INTER = Link(bandwidth_Bps=10e9, latency_s=10e-6)


def _cluster(nodes: int = 1, per_node: int = 4, flops: tuple[float, ...] = ()) -> Cluster:
    n = nodes * per_node
    flops = flops or (100e12,) * n
    devs = tuple(
        DeviceSpec(
            index=i,
            name=f"g{i}",
            kind="gpu",
            node=i // per_node,
            peak_flops=(("bf16", flops[i]),),
            memory_bytes=64e9,
            memory_bandwidth_Bps=1e12,
        )
        for i in range(n)
    )
    return Cluster(name="toy", devices=devs, intra_node=INTRA, inter_node=INTER)


def _chain(layer_tflops: list[float], *, head: bool = True, act: float = 1e6, out: float = 4e6) -> OpGraph:
    """embed -> layer i (a linear of layer_tflops[i] TFLOP per pass + a norm) -> head.

    On a 100 TFLOP/s device at 60% efficiency a linear of x TFLOP per pass takes x/60 s per pass.
    """
    ops = [Op(name="embed", kind="embedding", param_bytes=2e6, act_bytes=1e3, out_bytes=out)]
    for i, tf in enumerate(layer_tflops):
        ops.append(
            Op(
                name=f"layer{i}.mm",
                kind="linear",
                layer=i,
                fwd_flops=tf * 1e12,
                bwd_input_flops=tf * 1e12,
                bwd_weight_flops=tf * 1e12,
                param_bytes=2e8,
                act_bytes=act,
                out_bytes=out,
            )
        )
        ops.append(Op(name=f"layer{i}.norm", kind="norm", layer=i, act_bytes=act, out_bytes=out))
    if head:
        ops.append(Op(name="head", kind="linear", fwd_flops=6e11, bwd_input_flops=6e11, param_bytes=2e6))
    edges = tuple(Edge(src=i, dst=i + 1, bytes=out) for i in range(len(ops) - 1))
    return OpGraph(name="toy", ops=tuple(ops), edges=edges)


# --------------------------------------------------------------------------- exact partition
def _brute_force(rows: list[list[float]]) -> float:
    parts, n = len(rows), len(rows[0])
    best = float("inf")
    for cuts in itertools.combinations(range(1, n), parts - 1):
        b = (0, *cuts, n)
        best = min(best, max(sum(rows[j][b[j] : b[j + 1]]) for j in range(parts)))
    return best


def _value(rows: list[list[float]], bounds: tuple[int, ...]) -> float:
    return max(sum(rows[j][bounds[j] : bounds[j + 1]]) for j in range(len(rows)))


@pytest.mark.parametrize("seed", range(40))
def test_partition_is_optimal_against_brute_force(seed):
    rng = random.Random(seed)
    n = rng.randint(1, 10)
    parts = rng.randint(1, n)
    costs = [rng.choice([0.0, rng.uniform(0, 10), float(rng.randint(1, 5))]) for _ in range(n)]
    if seed % 2:  # heterogeneous: each part on a device of its own speed
        rows = [[c * rng.choice([1.0, 2.0, 0.5]) for c in costs] for _ in range(parts)]
    else:
        rows = [costs] * parts
    bounds = balanced_partition(rows)
    assert bounds[0] == 0 and bounds[-1] == n and len(bounds) == parts + 1
    assert all(bounds[j] < bounds[j + 1] for j in range(parts))  # no empty part
    assert _value(rows, bounds) == pytest.approx(_brute_force(rows))


def test_partition_known_optimum():
    # [1,2,3,4,5,6,7,8,9] in 3 parts: 1..5 | 6,7 | 8,9 -> max(15, 13, 17) = 17 is optimal
    rows = [[float(x) for x in range(1, 10)]] * 3
    bounds = balanced_partition(rows)
    assert _value(rows, bounds) == 17.0


def test_partition_slow_device_gets_less_work():
    # four equal units, device 1 twice as slow: best is 3 units on device 0 and 1 on device 1? no:
    # (3, 1) -> max(3, 2) = 3; (2, 2) -> max(2, 4) = 4. Optimum 3 with the slow device holding 1.
    rows = [[1.0] * 4, [2.0] * 4]
    assert balanced_partition(rows) == (0, 3, 4)


def test_partition_errors():
    with pytest.raises(InvalidInputError, match="3 parts need at least 3 units, got 2"):
        balanced_partition([[1.0, 1.0]] * 3)


# --------------------------------------------------------------------------- units
def test_units_are_layers_with_embedding_and_head_attached():
    g = _chain([1, 1, 1])
    units, kind = partition_units(g)
    names = [[g.ops[i].name for i in u] for u in units]
    assert kind == "layer"
    assert names == [
        ["embed", "layer0.mm", "layer0.norm"],
        ["layer1.mm", "layer1.norm"],
        ["layer2.mm", "layer2.norm", "head"],
    ]


def test_units_keep_layers_together_on_a_branching_graph():
    # layer 0's two branches a, b, then layer 1; ops are listed out of order on purpose
    ops = (
        Op(name="l1", kind="linear", layer=1),
        Op(name="l0.b", kind="linear", layer=0),
        Op(name="l0.a", kind="linear", layer=0),
        Op(name="in", kind="embedding"),
    )
    edges = (Edge(src=3, dst=1), Edge(src=3, dst=2), Edge(src=1, dst=0), Edge(src=2, dst=0))
    units, kind = partition_units(OpGraph(name="b", ops=ops, edges=edges))
    assert kind == "layer" and [sorted(u) for u in units] == [[1, 2, 3], [0]]


def test_units_fall_back_to_ops_without_layers_or_with_split_layers():
    g = OpGraph(name="flat", ops=tuple(Op(name=f"o{i}", kind="linear") for i in range(3)), edges=())
    assert partition_units(g) == (((0,), (1,), (2,)), "op")
    # layer 0 needs layer 1's output: layer 0 cannot be contiguous
    ops = (
        Op(name="a", kind="linear", layer=0),
        Op(name="b", kind="linear", layer=1),
        Op(name="c", kind="linear", layer=0),
    )
    g = OpGraph(name="split", ops=ops, edges=(Edge(src=0, dst=1), Edge(src=1, dst=2)))
    assert partition_units(g) == (((0,), (1,), (2,)), "op")


# --------------------------------------------------------------------------- problems
def _stage_index(problem, graph):
    return {name: s.index for s in problem.stages for name in s.ops}


def test_linear_stages_cover_every_op_once_in_topological_order():
    g = _chain([1, 2, 3, 4, 5, 6])
    p = model_problem(g, _cluster(), pp=4, microbatches=8)
    names = [name for s in p.stages for name in s.ops]
    assert sorted(names) == sorted(op.name for op in g.ops) and len(names) == g.num_ops
    where = _stage_index(p, g)
    assert all(where[g.ops[e.src].name] <= where[g.ops[e.dst].name] for e in g.edges)
    assert [s.device for s in p.stages] == [0, 1, 2, 3]
    assert p.time_unit == "s" and p.memory_unit == "bytes" and p.split_backward
    assert [mb.stages for mb in p.microbatches] == [(0, 1, 2, 3)] * 8


def test_partition_minimizes_largest_stage_time():
    # layers of 1..6 TFLOP per pass in 4 stages: layer sums must be cut as [1,2,3] | [4] | [5] | [6]
    g = _chain([1, 2, 3, 4, 5, 6], head=False)
    p = model_problem(g, _cluster(), pp=4, microbatches=4)
    assert [len(s.ops) // 2 for s in p.stages] == [3, 1, 1, 1]
    assert p.source["partition_unit"] == "layer"
    assert p.source["units_per_stage"] == [3, 1, 1, 1]
    # stage time = F + I + W = 3 passes of 6 TFLOP at 60 TFLOP/s
    assert p.source["max_stage_time_s"] == pytest.approx(3 * 6 / 60)


def test_stage_times_follow_the_roofline():
    g = _chain([6, 6], head=False)
    p = model_problem(g, _cluster(), pp=2, microbatches=2)
    # each linear pass: 6e12 / (100e12 * 0.6) = 0.1 s; norms and embedding have no work
    for s in p.stages:
        assert pytest.approx((0.1, 0.1, 0.1, 0.2)) == (s.cost.F, s.cost.I, s.cost.W, s.cost.B)
    p = model_problem(g, _cluster(), pp=2, microbatches=2, dtype="bf16", split_backward=False)
    assert p.stages[0].cost.I is None and pytest.approx(0.2) == p.stages[0].cost.B
    assert p.stages[0].wgrad_mem == 0.0


def test_memory_of_stages():
    g = _chain([1, 1], head=False, act=1e6, out=4e6)
    p = model_problem(g, _cluster(), pp=2, microbatches=2)
    s0, s1 = p.stages
    assert s0.act_mem == pytest.approx(1e3 + 2e6)  # embed + layer0's linear and norm
    # weight-bearing ops: embed (no input) and layer0.mm (input: embed's 4 MB), capped by act_mem
    assert s0.wgrad_mem == pytest.approx(min(4e6, s0.act_mem))
    assert s1.wgrad_mem == pytest.approx(2e6)  # 4e6 input of layer1.mm, capped at act_mem 2e6
    assert s0.param_mem == pytest.approx(training_state_bytes(2e6 + 2e8).total)
    assert s1.param_mem == pytest.approx(16 * 1e8)  # 2e8 bf16 bytes = 1e8 params x 16 bytes
    assert [d.memory_limit for d in p.devices] == [64e9, 64e9]
    p = model_problem(g, _cluster(), pp=2, microbatches=2, memory_limit=1e9)
    assert [d.memory_limit for d in p.devices] == [1e9, 1e9]


def test_comm_on_intra_and_inter_node_links():
    g = _chain([1] * 4, head=False, out=1e9)
    p = model_problem(g, _cluster(nodes=2, per_node=2), pp=4, microbatches=2)
    comms = [e.comm for e in p.edges]
    assert [e.bytes for e in p.edges] == [1e9] * 3
    # devices 0-1 and 2-3 share nodes; the edge 1 -> 2 crosses nodes
    assert comms == pytest.approx([1e-6 + 0.01, 10e-6 + 0.1, 1e-6 + 0.01])


def test_skip_connection_bytes_cross_every_cut_once():
    # a -> b -> c -> d (1 MB each) plus a -> d (2 MB). Cut a|b carries a's tensor once (the larger
    # edge, 2 MB); cuts b|c and c|d carry the 1 MB chain tensor plus the 2 MB skip.
    ops = tuple(Op(name=n, kind="linear", fwd_flops=6e12, out_bytes=1e6) for n in "abcd")
    edges = (Edge(src=0, dst=1), Edge(src=1, dst=2), Edge(src=2, dst=3), Edge(src=0, dst=3, bytes=2e6))
    p = model_problem(OpGraph(name="skip", ops=ops, edges=edges), _cluster(), pp=4, microbatches=1)
    assert p.source["partition_unit"] == "op"
    assert [e.bytes for e in p.edges] == [2e6, 3e6, 3e6]


def test_interleaved_and_v_placements():
    g = _chain([1] * 8, head=False)
    p = model_problem(g, _cluster(), pp=2, microbatches=4, placement="interleaved", chunks=2)
    assert [s.device for s in p.stages] == [0, 1, 0, 1] and p.chunks == 2
    p = model_problem(g, _cluster(), pp=2, microbatches=4, placement="v")
    assert [s.device for s in p.stages] == [0, 1, 1, 0]
    assert p.edges[1].comm == 0.0 and p.edges[0].comm > 0  # stages 1 and 2 share device 1


def test_bidirectional_duplicates_parts_in_both_directions():
    g = _chain([1, 1, 1, 1], head=False)
    p = model_problem(g, _cluster(), pp=2, microbatches=4, placement="bidirectional")
    assert [s.device for s in p.stages] == [0, 1, 1, 0]
    assert p.stages[0].ops == p.stages[2].ops and p.stages[1].ops == p.stages[3].ops
    assert [(e.src, e.dst) for e in p.edges] == [(0, 1), (2, 3)]
    assert [mb.stages for mb in p.microbatches] == [(0, 1), (0, 1), (2, 3), (2, 3)]
    with pytest.raises(InvalidInputError, match="3 is odd, use an even number"):
        model_problem(g, _cluster(), pp=2, microbatches=3, placement="bidirectional")


def test_free_placement_on_heterogeneous_cluster():
    g = _chain([6, 6], head=False)
    c = _cluster(flops=(100e12, 50e12, 100e12, 100e12))
    p = model_problem(g, c, pp=2, microbatches=2, placement="free")
    assert all(s.device is None for s in p.stages)
    assert [t.F for t in p.stages[0].device_costs] == pytest.approx([0.1, 0.2])
    # comm of free stages: the slowest link among the devices (one node here: intra)
    assert p.edges[0].comm == pytest.approx(1e-6 + 4e6 / 100e9)
    homo = model_problem(g, _cluster(), pp=2, microbatches=2, placement="free")
    assert homo.stages[0].device_costs == ()


def test_heterogeneous_linear_balances_on_each_device():
    # device 1 runs at half speed: 4 equal layers split 3 | 1 (0.3 s vs 0.2 s beats 0.2 vs 0.4)
    g = _chain([2, 2, 2, 2], head=False)
    p = model_problem(g, _cluster(flops=(100e12, 50e12, 1e12, 1e12)), pp=2, microbatches=2)
    assert p.source["units_per_stage"] == [3, 1]
    assert pytest.approx(2e12 / 30e12) == p.stages[1].cost.F


def test_profile_replaces_roofline_in_stages():
    g = _chain([6, 6], head=False)
    prof = Profile(
        device="gpu",
        dtype="bf16",
        microbatch_size=1,
        seq_len=None,
        ops=(("layer1.mm", OpProfile(F=1.0, I=2.0, W=3.0, act_bytes=5.0)),),
    )
    p = model_problem(g, _cluster(), pp=2, microbatches=2, profile=prof)
    assert pytest.approx((1.0, 2.0, 3.0)) == (p.stages[1].cost.F, p.stages[1].cost.I, p.stages[1].cost.W)
    assert p.stages[1].act_mem == pytest.approx(5.0 + 1e6)
    assert pytest.approx(0.1) == p.stages[0].cost.F
    assert p.source["profile"] is True


def test_profile_mismatch_errors():
    g = OpGraph(
        name="m",
        ops=(Op(name="a", kind="linear"), Op(name="b", kind="linear")),
        edges=(Edge(src=0, dst=1),),
        meta=(("microbatch_size", 4), ("seq_len", 128)),
    )

    def prof(**kw):
        args = {"device": "gpu", "dtype": "bf16", "microbatch_size": 4, "seq_len": 128, "ops": ()} | kw
        return Profile(**args)

    with pytest.raises(
        InvalidInputError, match=r"profile\.microbatch_size: measured with 2, but the model has"
    ):
        model_problem(g, _cluster(), pp=2, microbatches=1, profile=prof(microbatch_size=2))
    with pytest.raises(InvalidInputError, match=r"profile\.dtype: measured in fp32, but the plan uses bf16"):
        model_problem(g, _cluster(), pp=2, microbatches=1, profile=prof(dtype="fp32"))
    with pytest.raises(InvalidInputError, match=r"profile.ops: 1 op\(s\) not in model 'm', e.g. \['zz'\]"):
        model_problem(g, _cluster(), pp=2, microbatches=1, profile=prof(ops=(("zz", OpProfile(F=1, B=1)),)))


def test_input_errors():
    g = _chain([1] * 6, head=False)
    with pytest.raises(InvalidInputError, match=r"--pp 5: cluster 'toy' has only 4 devices"):
        model_problem(g, _cluster(), pp=5, microbatches=1)
    with pytest.raises(InvalidInputError, match="--pp 4 x chunks 2 = 8 stages but toy has only 6 layers"):
        model_problem(g, _cluster(), pp=4, microbatches=1, placement="interleaved")
    with pytest.raises(InvalidInputError, match="--placement: unknown 'ring'"):
        model_problem(g, _cluster(), pp=2, microbatches=1, placement="ring")
    with pytest.raises(InvalidInputError, match="--microbatches: must be an integer >= 1, got 0"):
        model_problem(g, _cluster(), pp=2, microbatches=0)
    with pytest.raises(InvalidInputError, match="--chunks: linear placement has one stage per device"):
        model_problem(g, _cluster(), pp=2, microbatches=1, chunks=2)
    with pytest.raises(InvalidInputError, match="--memory-limit: must be > 0 bytes, got -1"):
        model_problem(g, _cluster(), pp=2, microbatches=1, memory_limit=-1)


# --------------------------------------------------------------------------- model zoo
zoo = pytest.importorskip("parplan.graph.zoo")


def test_llama_7b_on_8xh100():
    g = zoo.build_model("llama-7b")
    p = model_problem(g, load_cluster("8xh100"), pp=8, microbatches=16)
    assert p.source["units_per_stage"] == [4] * 8  # 32 layers, embedding and head on the ends
    assert p.stages[0].ops[0] == "embed" and p.stages[-1].ops[-1] == "loss"
    # a 4-layer stage: ~0.9 TFLOP per layer forward at 593 TFLOP/s -> F of about 6.5 ms
    assert 5e-3 < p.stages[3].cost.F < 8e-3
    # mixed-precision Adam: 16 bytes per parameter, about 6.7e9 parameters over 8 stages
    assert sum(s.param_mem for s in p.stages) == pytest.approx(16 * g.param_bytes / 2)
    # activations between layers: seq 2048 x hidden 4096 x 2 bytes over NVLink
    assert all(e.bytes == 2048 * 4096 * 2 for e in p.edges)
    assert p.edges[0].comm == pytest.approx(3e-6 + 2048 * 4096 * 2 / 450e9)


def test_llama_7b_too_few_layers_message():
    g = zoo.build_model("llama-7b", num_layers=6)
    with pytest.raises(InvalidInputError) as exc:
        model_problem(g, load_cluster("8xh100"), pp=8, microbatches=16)
    assert str(exc.value) == (
        "--pp 8 x chunks 1 = 8 stages but llama-7b has only 6 layers: reduce --pp or add --num-layers"
    )


def test_gpt2_small_across_two_nodes_runs_1f1b():
    from parplan.plan import Plan
    from parplan.schedule.expert import build_schedule

    g = zoo.build_model("gpt2-small")
    c = load_cluster("2x8xh100")
    # 12 layers on devices 4..7 | 8..11 would cross nodes; with pp=12 edge 7 -> 8 does
    p = model_problem(g, c, pp=12, microbatches=12)
    assert p.edges[7].comm > 5 * p.edges[6].comm  # InfiniBand vs NVLink
    plan = Plan.from_schedule(p, build_schedule("1f1b", p))
    assert plan.metrics.makespan > 12 * max(s.cost.F + s.cost.B for s in p.stages) * 0.99


def test_problem_round_trips_and_source_is_json():
    import json

    from parplan.problem import PipelineProblem

    g = _chain([1, 2, 3, 4], head=False)
    for placement in ("linear", "interleaved", "v", "bidirectional", "free"):
        p = model_problem(
            g, _cluster(flops=(100e12, 50e12, 1e12, 1e12)), pp=2, microbatches=4, placement=placement
        )
        assert PipelineProblem.from_json(json.loads(json.dumps(p.to_json()))) == p
        assert json.loads(json.dumps(p.source))["placement"] == placement


def test_fp8_model_problem_speeds_the_linears_only_and_keeps_the_memory() -> None:
    from parplan.graph.zoo import build_model
    from parplan.spec import ProblemSpec, build_problem

    h100 = load_cluster("8xh100")
    g = build_model("llama-7b")
    bf16 = model_problem(g, h100, pp=4, microbatches=8)
    fp8 = model_problem(g, h100, pp=4, microbatches=8, gemm_dtype="fp8")
    assert fp8.source["gemm_dtype"] == "fp8" and "gemm_dtype" not in bf16.source
    for a, b in zip(bf16.stages, fp8.stages, strict=True):
        assert b.param_mem == a.param_mem and b.act_mem == a.act_mem  # storage stays 16-bit
        # at most twice as fast (the fp8 peak is 2x bf16); attention, norms and casts keep it slower
        assert a.cost.F / 2 < b.cost.F < a.cost.F
    # --dtype fp8 on the command line's problem is this float8 problem
    spec = ProblemSpec(model="llama-7b", cluster="8xh100", pp=4, microbatches=8, dtype="fp8")
    assert build_problem(spec).stages == fp8.stages
    # a plan file of it says so
    from parplan.plan import Plan
    from parplan.schedule.expert import build_schedule

    doc = Plan.from_schedule(fp8, build_schedule("1f1b", fp8)).to_json()
    assert doc["source"]["gemm_dtype"] == "fp8"
    with pytest.raises(InvalidInputError, match=r"a100 devices .* list no fp8 peak"):
        build_problem(ProblemSpec(model="llama-7b", cluster="8xa100", pp=4, microbatches=8, dtype="fp8"))
