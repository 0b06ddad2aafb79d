"""Frontier Tracking: exact agreement with brute force, eliminations, reuse, epsilon bound, queries."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from parplan.cluster import Cluster, DeviceSpec, Link
from parplan.cluster_io import load_cluster
from parplan.errors import InfeasibleError, InvalidInputError
from parplan.frontier import (
    Frontier,
    brute_force,
    evaluate,
    fewest_devices,
    frontier,
    search_space,
    stage_modes,
    subgraph,
)
from parplan.frontier.pareto import is_pareto
from parplan.graph.ops import Edge, Op, OpGraph, make_attrs
from parplan.graph.zoo import build_model

GB = 1e9


def _cluster(n: int = 4, per_node: int = 4) -> Cluster:
    devices = tuple(
        DeviceSpec(
            index=i,
            name=f"g{i}",
            kind="toy",
            node=i // per_node,
            peak_flops=(("bf16", 100e12),),
            memory_bytes=80 * GB,
            memory_bandwidth_Bps=2e12,
        )
        for i in range(n)
    )
    return Cluster(
        name="toy",
        devices=devices,
        intra_node=Link(bandwidth_Bps=100e9, latency_s=0.0),
        inter_node=Link(bandwidth_Bps=10e9, latency_s=0.0),
    )


B, S, H = 4, 1024, 2048  # batch, sequence, hidden
TOK = B * S
ACT = TOK * H * 2  # one bf16 activation tensor


def _lin(name: str, tp: str | None, fin: int = H, fout: int = H, *, layer: int | None = None) -> Op:
    return Op(
        name=name,
        kind="linear",
        fwd_flops=2 * TOK * fin * fout,
        bwd_input_flops=2 * TOK * fin * fout,
        bwd_weight_flops=2 * TOK * fin * fout,
        param_bytes=2 * fin * fout,
        act_bytes=TOK * fin * 2,
        out_bytes=TOK * fout * 2,
        layer=layer,
        attrs=make_attrs(batch=B, seq=S, in_features=fin, out_features=fout, tp=tp),
    )


def _elem(name: str, kind: str = "elementwise", *, layer: int | None = None, params: float = 0.0) -> Op:
    return Op(
        name=name,
        kind=kind,
        fwd_flops=TOK * H * 4,
        bwd_input_flops=TOK * H * 4,
        fwd_bytes=3 * ACT,
        bwd_input_bytes=3 * ACT,
        param_bytes=params,
        act_bytes=ACT,
        out_bytes=ACT,
        layer=layer,
        attrs=make_attrs(batch=B, seq=S, in_features=H, out_features=H),
    )


def _graph(name: str, ops: list[Op], edges: list[tuple[str, str]]) -> OpGraph:
    idx = {op.name: i for i, op in enumerate(ops)}
    return OpGraph(
        name=name,
        ops=tuple(ops),
        edges=tuple(Edge(src=idx[a], dst=idx[b], bytes=ops[idx[a]].out_bytes) for a, b in edges),
        meta=(("microbatch_size", B),),
    )


def chain() -> OpGraph:
    """act -> column linear -> gelu -> row linear: the Megatron MLP pair."""
    ops = [_elem("x"), _lin("up", "column"), _elem("act"), _lin("down", "row")]
    return _graph("chain", ops, [("x", "up"), ("up", "act"), ("act", "down")])


def residual() -> OpGraph:
    """x -> ln -> up -> down -> add, plus the residual edge x -> add."""
    ops = [
        _elem("x"),
        _elem("ln", "norm", params=2 * H),
        _lin("up", "column"),
        _lin("down", "row"),
        _elem("add"),
    ]
    return _graph("residual", ops, [("x", "ln"), ("ln", "up"), ("up", "down"), ("down", "add"), ("x", "add")])


def moe() -> OpGraph:
    """A MoE block whose router feeds both the dispatch and the combine: not series-parallel."""
    router = Op(
        name="router",
        kind="moe_router",
        fwd_flops=2 * TOK * H * 8,
        bwd_input_flops=2 * TOK * H * 8,
        bwd_weight_flops=2 * TOK * H * 8,
        param_bytes=2 * H * 8,
        act_bytes=ACT,
        out_bytes=TOK * 8 * 2,
        attrs=make_attrs(batch=B, seq=S, experts=8, top_k=2),
    )
    a2a = dict(
        kind="all_to_all", act_bytes=0.0, out_bytes=2 * ACT, attrs=make_attrs(batch=B, seq=S, experts=8)
    )
    experts = Op(
        name="experts",
        kind="moe_experts",
        fwd_flops=2 * 2 * TOK * H * 4 * H,
        bwd_input_flops=2 * 2 * TOK * H * 4 * H,
        bwd_weight_flops=2 * 2 * TOK * H * 4 * H,
        param_bytes=8 * 2 * 2 * H * H,
        act_bytes=2 * ACT,
        out_bytes=2 * ACT,
        attrs=make_attrs(batch=B, seq=S, experts=8, top_k=2),
    )
    ops = [_elem("ln", "norm"), router, Op(name="dispatch", **a2a), experts, Op(name="combine", **a2a)]
    return _graph(
        "moe",
        ops,
        [
            ("ln", "router"),
            ("ln", "dispatch"),
            ("router", "dispatch"),
            ("router", "combine"),
            ("dispatch", "experts"),
            ("experts", "combine"),
        ],
    )


def tournament(n: int = 5) -> OpGraph:
    """Every edge i -> j for i < j: no elimination or contraction applies, the cut DP must."""
    ops = [_elem(f"n{i}") for i in range(n)]
    return _graph("tournament", ops, [(f"n{i}", f"n{j}") for i in range(n) for j in range(i + 1, n)])


def layered(n: int) -> OpGraph:
    """``n`` identical residual blocks (ln, up, down, add) after an input op."""
    ops = [_elem("x")]
    edges = []
    prev = "x"
    for i in range(n):
        ops += [
            _elem(f"l{i}.ln", "norm", layer=i),
            _lin(f"l{i}.up", "column", layer=i),
            _lin(f"l{i}.down", "row", layer=i),
            _elem(f"l{i}.add", layer=i),
        ]
        edges += [(prev, f"l{i}.ln"), (f"l{i}.ln", f"l{i}.up"), (f"l{i}.up", f"l{i}.down")]
        edges += [(f"l{i}.down", f"l{i}.add"), (prev, f"l{i}.add")]
        prev = f"l{i}.add"
    return _graph(f"layered{n}", ops, edges)


def _same(points_a, points_b) -> bool:
    if len(points_a) != len(points_b):
        return False
    return all(
        np.isclose(ta, tb, rtol=1e-9) and np.isclose(ma, mb, rtol=1e-9)
        for (ta, ma), (tb, mb) in zip(sorted(points_a), sorted(points_b))
    )


# ----------------------------------------------------------------------------- exactness


@pytest.mark.parametrize(
    "build",
    [chain, residual, moe, tournament],
    ids=["chain", "residual", "moe-contract", "tournament-cut-dp"],
)
def test_exact_frontier_equals_brute_force(build):
    g = build()
    c = _cluster()
    space = search_space(g, c, devices=2)
    exact = brute_force(space)
    f = frontier(g, c, devices=2, epsilon=0.0)
    assert f.error_bound == 0.0
    assert _same([(p.time_s, p.memory_bytes) for p in f.points], exact)
    # every returned strategy re-evaluates to its point
    for p in f.points:
        choice = {g.index[k]: v for k, v in p.strategy}
        t, m = evaluate(space, choice)
        assert np.isclose(t, p.time_s, rtol=1e-9) and np.isclose(m, p.memory_bytes, rtol=1e-9)


@given(
    st.integers(min_value=2, max_value=5).flatmap(
        lambda n: st.tuples(
            st.just(n),
            st.lists(st.sampled_from(["elementwise", "norm", "column", "row"]), min_size=n, max_size=n),
            st.sets(st.tuples(st.integers(0, n - 1), st.integers(0, n - 1)).filter(lambda e: e[0] < e[1])),
        )
    )
)
@settings(max_examples=15, deadline=None)
def test_random_dags_match_brute_force(case):
    # any DAG: series-parallel parts, contractions and the cut DP must all stay exact
    _n, kinds, edges = case
    ops = [
        _elem(f"o{i}", "norm" if k == "norm" else "elementwise")
        if k in ("elementwise", "norm")
        else _lin(f"o{i}", k)
        for i, k in enumerate(kinds)
    ]
    g = _graph("random", ops, [(f"o{a}", f"o{b}") for a, b in sorted(edges)])
    c = _cluster()
    f = frontier(g, c, devices=2, epsilon=0.0)
    exact = brute_force(search_space(g, c, devices=2))
    assert _same([(p.time_s, p.memory_bytes) for p in f.points], exact)
    # and with thinning: the reported bound holds and stays within epsilon
    approx = frontier(g, c, devices=2, epsilon=0.1)
    assert approx.error_bound <= 0.1 + 1e-12
    bound = 1 + approx.error_bound + 1e-12
    for t, m in exact:
        assert any(p.time_s <= bound * t and p.memory_bytes <= bound * m for p in approx.points)


def test_disconnected_parts_add_up():
    g = _graph("pair", [_elem("a"), _lin("b", None)], [])
    c = _cluster()
    f = frontier(g, c, devices=2, epsilon=0.0)
    assert _same([(p.time_s, p.memory_bytes) for p in f.points], brute_force(search_space(g, c, devices=2)))


def test_reductions_used():
    # a MoE router feeds dispatch and combine: contracted into the dispatch, then series-parallel
    assert dict(frontier(moe(), _cluster(), devices=2, epsilon=0.0).stats)["cut_dp_fallback"] is False
    assert dict(frontier(residual(), _cluster(), devices=2, epsilon=0.0).stats)["cut_dp_fallback"] is False
    assert dict(frontier(tournament(), _cluster(), devices=2, epsilon=0.0).stats)["cut_dp_fallback"] is True


def test_four_device_chain_matches_brute_force():
    g = chain()
    c = _cluster()
    space = search_space(g, c, devices=4, mesh=(2, 2))
    f = frontier(g, c, devices=4, mesh=(2, 2), epsilon=0.0)
    assert _same([(p.time_s, p.memory_bytes) for p in f.points], brute_force(space))


def test_repeated_blocks_are_solved_once_with_the_same_answer():
    g = layered(3)
    c = _cluster()
    reused = frontier(g, c, devices=2, epsilon=0.0)
    plain = frontier(g, c, devices=2, epsilon=0.0, reuse_blocks=False)
    assert dict(reused.stats)["blocks"] == 3 and dict(reused.stats)["distinct_blocks"] == 1
    assert dict(plain.stats)["blocks"] == 0
    assert _same(
        [(p.time_s, p.memory_bytes) for p in reused.points],
        [(p.time_s, p.memory_bytes) for p in plain.points],
    )
    # strategies of reused blocks name the right operators
    space = search_space(g, c, devices=2)
    for p in reused.points:
        t, m = evaluate(space, {g.index[k]: v for k, v in p.strategy})
        assert np.isclose(t, p.time_s) and np.isclose(m, p.memory_bytes)


def test_single_op_single_device_closed_form():
    # One linear on one device: no split, no ZeRO, no recompute gain (it saves only its input).
    g = _graph("one", [_lin("up", None)], [])
    c = _cluster()
    f = frontier(g, c, devices=1, epsilon=0.0)
    assert len(f) == 1
    p = f.points[0]
    flops = 2 * TOK * H * H
    assert p.time_s == pytest.approx(3 * flops / (100e12 * 0.6))
    # 16 bytes per parameter (bf16 weights + grads, fp32 master + Adam) plus the saved input
    assert p.memory_bytes == pytest.approx(16 * H * H + TOK * H * 2)
    assert p.strategy == (("up", "dp1.tp1.rep"),)


# ----------------------------------------------------------------------------- textbook behaviour


def _param_heavy() -> OpGraph:
    """Big weights, 64 tokens: training state dominates memory."""
    tok = 64

    def lin(name: str, tp: str, fin: int, fout: int) -> Op:
        return Op(
            name=name,
            kind="linear",
            fwd_flops=2 * tok * fin * fout,
            bwd_input_flops=2 * tok * fin * fout,
            bwd_weight_flops=2 * tok * fin * fout,
            fwd_bytes=2 * fin * fout,
            bwd_input_bytes=2 * fin * fout,
            bwd_weight_bytes=2 * fin * fout,
            param_bytes=2 * fin * fout,
            act_bytes=tok * fin * 2,
            out_bytes=tok * fout * 2,
            attrs=make_attrs(batch=B, seq=tok // B, in_features=fin, out_features=fout, tp=tp),
        )

    ops = [lin("a", "column", H, 4 * H), lin("b", "row", 4 * H, H)]
    return _graph("heavy", ops, [("a", "b")])


def test_data_parallel_is_fastest_when_memory_is_plentiful():
    # activation-heavy chain: tensor parallelism pays an all-reduce per micro-batch, DP only the
    # (small) gradients once
    f = frontier(residual(), _cluster(), devices=4, epsilon=0.0)
    assert f.fastest.family.startswith("DP4")
    assert all(name.startswith("dp4.tp1") for _, name in f.fastest.strategy)


def test_sharding_and_tensor_parallel_appear_as_memory_shrinks():
    # 4 micro-batches: ZeRO-0/1 reduce gradients once per iteration, ZeRO-2/3 once per micro-batch
    f = frontier(layered(2), _cluster(), devices=4, microbatches=4, epsilon=0.0)
    assert is_pareto([(p.time_s, p.memory_bytes) for p in f.points])
    fams = [p.family for p in f.points]
    # fastest: plain data parallel with the free optimizer-state sharding (ZeRO-1 costs no time)
    assert fams[0] == "DP4+ZeRO-1"
    assert all(".z2" not in n and ".z3" not in n for _, n in f.fastest.strategy)
    # then gradient sharding, then tensor (+ sequence) parallel, ending with ZeRO-3
    assert "DP4+ZeRO-2" in fams
    assert fams.index("DP4+ZeRO-2") < fams.index("DP2xTP2+SP+ZeRO-1")
    assert fams[-1] == "DP2xTP2+SP+ZeRO-3"
    lean = f.least_memory
    assert all(".tp2." in n for _, n in lean.strategy)


def test_tensor_parallel_wins_for_weight_heavy_small_batches():
    # 64 tokens, 16M-parameter linears: DP's gradient all-reduce dwarfs TP's activation all-reduce
    f = frontier(_param_heavy(), _cluster(), devices=4, epsilon=0.0)
    assert f.fastest.family.startswith("TP4")
    state = 16 * _param_heavy().param_bytes / 2
    assert f.least_memory.memory_bytes < state / 4 * 1.1


def test_points_are_sorted_and_non_dominated():
    f = frontier(moe(), _cluster(), devices=4, epsilon=0.0)
    pts = [(p.time_s, p.memory_bytes) for p in f.points]
    assert is_pareto(pts)
    assert [p[0] for p in pts] == sorted(p[0] for p in pts)
    assert [p[1] for p in pts] == sorted((p[1] for p in pts), reverse=True)


# ----------------------------------------------------------------------------- epsilon


@pytest.mark.parametrize("eps", [0.01, 0.05, 0.2])
def test_epsilon_bound_is_respected(eps):
    g = layered(4)
    c = _cluster()
    exact = frontier(g, c, devices=4, epsilon=0.0)
    approx = frontier(g, c, devices=4, epsilon=eps)
    assert approx.error_bound <= eps + 1e-12
    assert len(approx) <= len(exact)
    assert approx.fastest.time_s == pytest.approx(exact.fastest.time_s)
    for q in exact.points:
        assert any(
            p.time_s <= (1 + approx.error_bound) * q.time_s * (1 + 1e-12)
            and p.memory_bytes <= (1 + approx.error_bound) * q.memory_bytes * (1 + 1e-12)
            for p in approx.points
        )
    # every approximate point is a real strategy: it is dominated-or-equal by nothing better than exact
    for p in approx.points:
        assert not any(
            q.time_s < p.time_s * (1 - 1e-9) and q.memory_bytes < p.memory_bytes * (1 - 1e-9)
            for q in approx.points
        )


# ----------------------------------------------------------------------------- queries and files


def test_queries_pick_the_right_points():
    f = frontier(layered(2), _cluster(), devices=4, microbatches=4, epsilon=0.0)
    assert len(f) >= 3
    for p in f.points:
        assert f.fastest_under(p.memory_bytes) == p
        assert f.least_memory_under(p.time_s) == p
    with pytest.raises(InfeasibleError, match="fastest strategy takes"):
        f.least_memory_under(f.fastest.time_s * 0.5)
    with pytest.raises(InfeasibleError, match="leanest strategy needs"):
        f.fastest_under(f.least_memory.memory_bytes * 0.5)


def test_json_round_trip_and_chosen():
    f = frontier(residual(), _cluster(), devices=2, epsilon=0.0, memory_limit=80 * GB)
    doc = json.loads(json.dumps(f.to_json()))
    assert set(doc["points"][0]) >= {"time_s", "memory_bytes", "strategy"}
    assert doc["chosen"]["time_s"] == f.fastest.time_s
    back = Frontier.from_json(doc)
    assert back.points == f.points and back.devices == 2 and back.error_bound == f.error_bound
    with pytest.raises(InvalidInputError, match="frontier JSON"):
        Frontier.from_json({"points": [{"time_s": 1}]})


def test_fewest_devices_meets_the_target():
    g = residual()
    c = _cluster()
    one = frontier(g, c, devices=1, epsilon=0.0).fastest.time_s
    two = frontier(g, c, devices=2, epsilon=0.0).fastest.time_s
    assert two < one
    ans = fewest_devices(g, c, (one + two) / 2, epsilon=0.0)
    assert ans.devices == 2 and ans.point.time_s <= (one + two) / 2
    assert fewest_devices(g, c, one * 1.01, epsilon=0.0).devices == 1
    with pytest.raises(InfeasibleError, match="time is what fails: the fastest strategy that fits"):
        fewest_devices(g, c, two * 1e-3, epsilon=0.0)
    with pytest.raises(
        InfeasibleError, match="memory is what fails, not time: no strategy on up to 4 devices"
    ):
        fewest_devices(g, c, one * 1.01, epsilon=0.0, memory_limit=1.0)


def test_time_target_names_memory_when_memory_fails() -> None:
    # issue 10: llama-70b's state (70B x 16 B) cannot fit 8 x 80 GB whatever the time target
    g = build_model("llama-70b", num_layers=4)
    c = load_cluster("8xh100")
    limit = frontier(g, c, devices=8).least_memory.memory_bytes * 0.5
    with pytest.raises(InfeasibleError, match="memory is what fails, not time") as exc:
        fewest_devices(g, c, 1e3, memory_limit=limit)
    assert "devices (a larger cluster)" in str(exc.value)


def test_stage_modes_solve_a_stage_on_its_own():
    g = layered(2)
    ops = ["l1.ln", "l1.up", "l1.down", "l1.add"]
    modes = stage_modes(g, _cluster(), ops, 2, epsilon=0.0)
    sub = subgraph(g, ops)
    assert sub.num_ops == 4 and len(sub.edges) == 3  # the residual edge from l0.add is cut
    assert modes and all(set(s) == set(ops) for _, _, s in modes)
    times = [t for t, _, _ in modes]
    assert times == sorted(times)
    with pytest.raises(InvalidInputError, match="not an operator"):
        stage_modes(g, _cluster(), ["nope"], 2)


def test_bad_input_messages():
    c = _cluster()
    with pytest.raises(InvalidInputError, match=r"frontier devices: 8 requested but cluster 'toy' has 4"):
        frontier(chain(), c, devices=8)
    with pytest.raises(InvalidInputError, match=r"frontier mesh: \(3, 2\)"):
        frontier(chain(), c, devices=4, mesh=(3, 2))
    with pytest.raises(InvalidInputError, match="epsilon"):
        frontier(chain(), c, devices=2, epsilon=-1)


# ----------------------------------------------------------------------------- zoo models


@pytest.mark.parametrize("model", ["gpt-tiny", "moe-small"])
def test_zoo_models_on_a_preset_cluster(model):
    from parplan.cluster_io import load_cluster
    from parplan.graph.zoo import build_model

    g = build_model(model, microbatch_size=4)
    c = load_cluster("8xh100")
    f = frontier(g, c, devices=4, microbatches=2)
    stats = dict(f.stats)
    assert stats["blocks"] >= 2 and stats["distinct_blocks"] < stats["blocks"]  # layers reused
    assert f.error_bound <= 0.02 + 1e-12
    assert is_pareto([(p.time_s, p.memory_bytes) for p in f.points])
    space = search_space(g, c, devices=4, microbatches=2)
    for p in (f.fastest, f.least_memory):
        assert [name for name, _ in p.strategy] == [op.name for op in g.ops]
        t, m = evaluate(space, {g.index[k]: v for k, v in p.strategy})
        assert t == pytest.approx(p.time_s) and m == pytest.approx(p.memory_bytes)


def test_cut_dp_refuses_a_too_wide_graph(monkeypatch):
    import parplan.frontier.search as search

    monkeypatch.setattr(search, "_MAX_CUT_STATES", 10)
    with pytest.raises(
        InvalidInputError,
        match=r"does not reduce .* state combinations over 2 operators at 'n1' \(limit 10\)",
    ):
        frontier(tournament(), _cluster(), devices=2, epsilon=0.0)
