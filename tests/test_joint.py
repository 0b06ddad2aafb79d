"""Joint choice of stage modes and schedule: brute force equality, wins over the sequential baseline."""

from __future__ import annotations

import itertools

import pytest

from parplan.errors import InfeasibleError, InvalidInputError
from parplan.joint import (
    StageMode,
    memory_bound,
    mode_lower_bound,
    plan_modes,
    plan_sequential_modes,
    sequential_modes,
    with_modes,
)
from parplan.plan import Plan
from parplan.problem import PassTimes
from parplan.synthetic import synthetic_problem

LIMIT = 4.0


def _mode(stage: int, index: int, fiw: tuple[int, int, int], *, act: float = 1.0, param: float) -> StageMode:
    return StageMode(stage=stage, index=index, cost=PassTimes.split(*fiw), act_mem=act, param_mem=param)


def _case(lean0: tuple[int, int, int]) -> list[list[StageMode]]:
    """2 stages x 2 modes, memory limit 4 per device, 4 micro-batches of unit activations.

    Mode 0 of each stage is fast (F=I=W=1) but holds 3 units of state: with the limit 4 only one
    micro-batch is in flight per device, so the stages barely overlap (best schedule: 17). Mode 1
    holds 1 unit of state (three micro-batches fit) at the cost ``lean0`` on stage 0, or (1, 1, 2)
    on stage 1.
    """
    return [
        [_mode(0, 0, (1, 1, 1), param=3), _mode(0, 1, lean0, param=1)],
        [_mode(1, 0, (1, 1, 1), param=3), _mode(1, 1, (1, 1, 2), param=1)],
    ]


# lean0 = (1, 1, 2): stage 0 lean pipelines freely; its load 4 x (1+1+2) = 16 is the optimum (the
# W passes fill the bubbles), one better than the fast modes' 17. "alone" keeps the fast mode.
WIN_ALONE = (1, 1, 2)
# lean0 = (2, 2, 1): the lean stage 0 is too slow (20 with 1F1B); the fast modes' 17 is best, but the
# "1f1b" rule, reserving two micro-batches of activations on stage 0, rejects the fast mode.
WIN_1F1B = (2, 2, 1)


@pytest.fixture(scope="module")
def problem():
    return synthetic_problem(pp=2, microbatches=4)


def _brute_force(problem, modes) -> float:
    """Best makespan over every mode vector, each scheduled exactly by the planner."""
    from parplan.solve.api import plan_problem

    best = float("inf")
    for idx in itertools.product(*(range(len(ms)) for ms in modes)):
        choice = [modes[s][k] for s, k in enumerate(idx)]
        try:
            plan = plan_problem(with_modes(problem, choice), memory_limit=LIMIT, deterministic=True)
        except InfeasibleError:
            continue
        assert plan.solver is not None and plan.solver.status == "optimal"
        # the bounds that order the search never exceed a vector's optimum
        assert mode_lower_bound(problem, choice, memory_limit=LIMIT) <= plan.metrics.makespan
        best = min(best, plan.metrics.makespan)
    return best


@pytest.mark.parametrize("lean0", [WIN_ALONE, WIN_1F1B])
def test_joint_equals_brute_force(problem, lean0):
    modes = _case(lean0)
    plan = plan_modes(problem, modes, memory_limit=LIMIT, deterministic=True, time_limit_s=20)
    assert plan.metrics.makespan == _brute_force(problem, modes)
    assert plan.validate() == []
    assert max(plan.metrics.peak_memory_per_device) <= LIMIT
    joint = plan.source["joint"]
    assert joint["proven"] is True
    assert plan.metrics.lower_bound == plan.metrics.makespan  # exact ticks: a closed search
    # the plan's stages carry the chosen modes' costs and memory
    for st, s_mode in zip(plan.problem.stages, joint["choice"]):
        assert st.cost == modes[st.index][s_mode].cost
        assert st.param_mem == modes[st.index][s_mode].param_mem
    assert [s["mode"] for s in plan.intra_op["stages"]] == joint["choice"]


def test_joint_beats_sequential_alone(problem):
    modes = _case(WIN_ALONE)
    joint = plan_modes(problem, modes, memory_limit=LIMIT, deterministic=True)
    seq = plan_sequential_modes(problem, modes, memory_limit=LIMIT, rule="alone", deterministic=True)
    assert seq.source["joint"]["choice"] == [0, 0]  # fast modes fit alone: 3 + 1 <= 4
    assert (joint.metrics.makespan, seq.metrics.makespan) == (16.0, 17.0)
    assert joint.source["joint"]["choice"] == [1, 0]
    assert seq.validate() == []
    assert seq.metrics.lower_bound == 17.0  # the planner closed it: no schedule of its modes does better


def test_joint_beats_sequential_1f1b(problem):
    modes = _case(WIN_1F1B)
    joint = plan_modes(problem, modes, memory_limit=LIMIT, deterministic=True)
    seq = plan_sequential_modes(problem, modes, memory_limit=LIMIT, rule="1f1b", deterministic=True)
    # stage 0 of a 2-stage 1F1B holds 2 micro-batches: 3 + 2 > 4 rejects its fast mode
    assert seq.source["joint"]["choice"] == [1, 0]
    assert (joint.metrics.makespan, seq.metrics.makespan) == (17.0, 20.0)
    assert joint.source["joint"]["choice"] == [0, 0]


def test_unlimited_memory_takes_fastest_without_search(problem):
    modes = _case(WIN_ALONE)
    plan = plan_modes(problem, modes, deterministic=True)
    # fast modes: ZB-H1's bubble (p - 1)(F + I - W) = 1 over the load 12 gives 13, the bound of the
    # first vector, so it is the only one scheduled
    assert plan.metrics.makespan == 13.0
    assert plan.source["joint"]["choice"] == [0, 0]
    assert plan.source["joint"]["scheduled"] == 1


def test_lower_bound_is_stage_load(problem):
    modes = _case(WIN_ALONE)
    # lean stage 0: its load 4 x (1 + 1 + 2) = 16 from time 0, ending with a W (no tail); the
    # critical path of one micro-batch is only 1 + 1 + 1 + 1 + 2 = 6
    assert mode_lower_bound(problem, [modes[0][1], modes[1][0]]) == 16.0
    # fast modes: stage 1 starts after F0 = 1 and ends with W: 1 + 12 = 13 on device 1
    assert mode_lower_bound(problem, [modes[0][0], modes[1][0]]) == 13.0
    # ... but under the limit 4 (state 3 + one activation) device 0 holds one micro-batch at a time,
    # each from F0 to I0: F0 + F1 + I1 + I0 = 4, four of them in sequence: 16 (the optimum is 17)
    assert memory_bound(problem, [modes[0][0], modes[1][0]], [LIMIT, LIMIT]) == 16.0
    assert mode_lower_bound(problem, [modes[0][0], modes[1][0]], memory_limit=LIMIT) == 16.0
    # with room for all four micro-batches the memory adds nothing
    assert memory_bound(problem, [modes[0][0], modes[1][0]], [7.0, 7.0]) == 0.0


def test_unfit_vectors_skipped_and_infeasible_message(problem):
    modes = _case(WIN_ALONE)
    # limit 3: fast modes (3 + 1) never fit, so only the lean vector (1 + 1 each) is scheduled
    plan = plan_modes(problem, modes, memory_limit=3, deterministic=True)
    assert plan.source["joint"]["unfit"] == 3
    assert plan.source["joint"]["choice"] == [1, 1]
    with pytest.raises(InfeasibleError, match="device 0 needs >= 2 with its leanest modes, limit 1"):
        plan_modes(problem, modes, memory_limit=1)


def test_sequential_rules_and_errors(problem):
    modes = _case(WIN_1F1B)
    assert [m.index for m in sequential_modes(problem, modes, memory_limit=LIMIT)] == [0, 0]
    assert [m.index for m in sequential_modes(problem, modes, memory_limit=LIMIT, rule="1f1b")] == [1, 0]
    with pytest.raises(InvalidInputError, match="rule: unknown 'greedy'"):
        sequential_modes(problem, modes, rule="greedy")
    with pytest.raises(InfeasibleError, match="stage 0 has no mode with state \\+ 1 x activations under 1"):
        sequential_modes(problem, modes, memory_limit=1)


def test_input_errors(problem):
    modes = _case(WIN_ALONE)
    with pytest.raises(InvalidInputError, match="modes: 1 given for 2 stages"):
        with_modes(problem, [modes[0][0]])
    with pytest.raises(InvalidInputError, match="modes\\[0\\]: belongs to stage 1"):
        with_modes(problem, [modes[1][0], modes[0][0]])
    with pytest.raises(InvalidInputError, match="modes\\[1\\]: empty"):
        plan_modes(problem, [modes[0], []])
    with pytest.raises(InvalidInputError, match=r"modes\[0\]\[1\]\.wgrad_mem: 2 exceeds act_mem 1"):
        StageMode(stage=0, index=1, cost=PassTimes.split(1, 1, 1), act_mem=1, wgrad_mem=2)
    with pytest.raises(InvalidInputError, match="4 mode vectors \\(2x2\\) exceed max_combinations 3"):
        plan_modes(problem, modes, max_combinations=3)


def test_plan_file_round_trip_keeps_modes(problem):
    plan = plan_modes(problem, _case(WIN_ALONE), memory_limit=LIMIT, deterministic=True)
    back = Plan.from_json(plan.to_json())
    assert back.intra_op == plan.intra_op
    assert back.validate() == []


@pytest.mark.slow
def test_model_modes_and_joint_plan_on_gpt2():
    """gpt2-small (2 layers) on 4 x H100, pp=2 x 2 devices: modes add up, joint <= sequential."""
    from parplan.cluster_io import preset_cluster
    from parplan.frontier import frontier, subgraph
    from parplan.graph.zoo import build_model
    from parplan.joint import joint_plan, sequential_plan, stage_mode_table

    graph = build_model("gpt2-small", microbatch_size=4, seq_len=512, num_layers=2)
    cluster = preset_cluster("8xh100")
    problem, modes = stage_mode_table(graph, cluster, pp=2, devices_per_stage=2, microbatches=4)
    for st, ms in zip(problem.stages, modes):
        f = frontier(subgraph(graph, st.ops), cluster, devices=2, microbatches=4, epsilon=0.05)
        assert len(ms) == len(f.points)
        for m, p in zip(ms, f.points):
            assert m.param_mem > 0 and m.act_mem > 0  # both parts present (state = rest checked above)
            assert m.work == pytest.approx(p.time_s / 4, rel=1e-9)
            assert set(m.strategy) == set(p.strategy)
    lean = max(min(m.param_mem + 2 * m.act_mem for m in ms) for ms in modes)
    limit = lean * 1.02
    kw = dict(
        pp=2, devices_per_stage=2, microbatches=4, memory_limit=limit, time_limit_s=20, deterministic=True
    )
    joint = joint_plan(graph, cluster, **kw)
    assert joint.validate() == []
    assert set(joint.intra_op["strategy"]) == {op.name for op in graph.ops}
    assert joint.intra_op["devices_per_stage"] == 2
    for rule in ("alone", "1f1b"):
        seq = sequential_plan(graph, cluster, rule=rule, **kw)
        assert joint.metrics.makespan <= seq.metrics.makespan * (1 + 1e-9)


@pytest.mark.parametrize("lean0", [WIN_ALONE, WIN_1F1B])
def test_joint_equals_brute_force_with_transfers(lean0):
    """Transfers of 1 between the stages lengthen every activation's life (bounds checked inside)."""
    problem = synthetic_problem(pp=2, microbatches=4, comm=1)
    modes = _case(lean0)
    plan = plan_modes(problem, modes, memory_limit=LIMIT, deterministic=True)
    assert plan.metrics.makespan == _brute_force(problem, modes)
    assert plan.source["joint"]["proven"] is True


def test_state_split_of_op_configs():
    """The activation part (memory - state) of a configuration does not depend on its ZeRO stage,
    and without ZeRO the state is the whole training state of the op's parameter shard."""
    from parplan.cluster_io import preset_cluster
    from parplan.cost.memory import training_state_bytes
    from parplan.frontier.strategies import search_space
    from parplan.graph.zoo import build_model

    graph = build_model("gpt2-small", microbatch_size=4, seq_len=256, num_layers=1)
    space = search_space(graph, preset_cluster("8xh100"), devices=4, microbatches=2)
    checked = 0
    for i, cfgs in enumerate(space.configs):
        act: dict[tuple[int, int, str, bool], float] = {}
        for c in cfgs:
            state = c.memory.state  # the split joint planning reads from each frontier point
            rest = act.setdefault((c.dp, c.tp, c.split, c.recompute), c.mem_bytes - state)
            assert c.mem_bytes - state == pytest.approx(rest, rel=1e-9, abs=1e-3)
            if c.zero == 0 and c.tp == 1:
                full = training_state_bytes(graph.ops[i].param_bytes).total
                assert state == pytest.approx(full if graph.ops[i].param_bytes > 0 else 0.0)
            checked += c.zero > 0
    assert checked > 0


# ------------------------------------------------------------------ measured per-op times
def _profile_of(graph, scale: float):  # type: ignore[no-untyped-def]
    """A profile giving every op the same measured times: F = scale, I = W = scale."""
    from parplan.cost.profile import OpProfile, Profile

    meta = graph.meta_dict
    return Profile(
        device="cpu",
        dtype="fp32",
        microbatch_size=int(meta["microbatch_size"]),
        seq_len=meta.get("seq_len"),
        ops=tuple(sorted((op.name, OpProfile(F=scale, I=scale, W=scale, act_bytes=None)) for op in graph.ops)),
    )


def test_a_profile_prices_every_operator_configuration() -> None:
    from parplan.cluster_io import load_cluster
    from parplan.frontier.strategies import search_space
    from parplan.graph.zoo import build_model

    g = build_model("gpt-tiny", dtype="fp32")
    cl = load_cluster("local:4")
    # one device, one micro-batch: a configuration costs exactly the measured F + I + W, and one
    # more F when it recomputes (.rc)
    one = search_space(g, cl, devices=1, dtype="fp32", profile=_profile_of(g, 1e-3))
    for cfgs in one.configs:
        for c in cfgs:
            assert c.time_s == pytest.approx(4e-3 if c.name.endswith(".rc") else 3e-3, rel=1e-12), c.name
    # four tensor-parallel devices: the compute divides by the op's tensor-parallel split (at most
    # 4), collectives come on top, and a 10x profile is more than 4x slower on every configuration
    four = search_space(g, cl, devices=4, dtype="fp32", profile=_profile_of(g, 1e-3))
    ten = search_space(g, cl, devices=4, dtype="fp32", profile=_profile_of(g, 1e-2))
    for a, b in zip(four.configs, ten.configs, strict=True):
        for x, y in zip(a, b, strict=True):
            assert x.time_s >= 3e-3 / 4 * (1 - 1e-12)
            assert y.time_s > 4 * x.time_s or y.time_s - x.time_s >= 27e-3 / 4 * (1 - 1e-9)


def test_joint_plan_uses_the_profile() -> None:
    from parplan.cluster_io import load_cluster
    from parplan.graph.zoo import build_model
    from parplan.joint import joint_plan

    g = build_model("gpt-tiny", dtype="fp32")
    cl = load_cluster("local:4")
    kw = {"pp": 2, "devices_per_stage": 2, "microbatches": 4, "dtype": "fp32", "time_limit_s": 5, "deterministic": True}
    slow = joint_plan(g, cl, profile=_profile_of(g, 1e-2), **kw)
    fast = joint_plan(g, cl, profile=_profile_of(g, 1e-3), **kw)
    # every op's measured time 10x: the planned iteration is about 10x longer (communication aside)
    assert slow.metrics.makespan > 5 * fast.metrics.makespan


def test_fp8_prices_the_linears_in_the_operator_frontier_and_the_joint_plan() -> None:
    from parplan.cluster_io import load_cluster
    from parplan.frontier.strategies import search_space
    from parplan.graph.zoo import build_model
    from parplan.joint import joint_plan

    g = build_model("llama-7b", num_layers=2, seq_len=2048)
    h100 = load_cluster("8xh100")
    bf16 = search_space(g, h100, devices=2)
    fp8 = search_space(g, h100, devices=2, gemm_dtype="fp8")
    for op, a, b in zip(g.ops, bf16.configs, fp8.configs, strict=True):
        for x, y in zip(a, b, strict=True):
            assert y.mem_bytes == x.mem_bytes  # storage stays 16-bit
            if op.kind == "linear":  # these GEMMs are compute-bound: the fp8 peak is 2x
                assert x.time_s / 2 < y.time_s < x.time_s, (op.name, x.name)
            else:
                assert y.time_s == x.time_s, (op.name, x.name)
    kw = {"pp": 2, "devices_per_stage": 2, "microbatches": 4, "time_limit_s": 5, "deterministic": True}
    slow, fast = joint_plan(g, h100, **kw), joint_plan(g, h100, gemm_dtype="fp8", **kw)
    assert fast.metrics.makespan < slow.metrics.makespan
    with pytest.raises(InvalidInputError, match="drop --profile"):
        search_space(g, h100, devices=2, gemm_dtype="fp8", profile=_profile_of(g, 1e-3))
