"""Random layered DAGs: shape guarantees, cost spread, determinism, spec parsing."""

from __future__ import annotations

import math
import time
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from parplan.errors import InvalidInputError
from parplan.graph import OpGraph, parse_random_dag_spec, random_dag


def _reach(g: OpGraph, start: int, nbrs) -> set[int]:
    seen, stack = {start}, [start]
    while stack:
        for w in nbrs[stack.pop()]:
            if w not in seen:
                seen.add(w)
                stack.append(w)
    return seen


def _check_shape(g: OpGraph, *, ops: int, width: int, fan_in: int) -> None:
    assert g.num_ops == ops
    assert [op.name for op in g.ops] == [f"op{i}" for i in range(ops)]
    sources = [i for i in range(ops) if not g.preds[i]]
    sinks = [i for i in range(ops) if not g.succs[i]]
    assert sources == [0]
    assert sinks == [ops - 1]
    # Connected: everything is reachable from the source and reaches the sink.
    assert _reach(g, 0, g.succs) == set(range(ops))
    assert _reach(g, ops - 1, g.preds) == set(range(ops))
    # Layered: edges go one level down; middle levels hold at most `width` ops.
    for e in g.edges:
        assert g.ops[e.dst].layer == g.ops[e.src].layer + 1
    sizes = Counter(op.layer for op in g.ops)
    assert all(n <= width for lv, n in sizes.items() if 0 < lv < max(sizes) or ops <= 2)
    # fan_in holds unless a level is too narrow to give every op above it a successor.
    for i in range(1, ops):
        lv = g.ops[i].layer
        assert len(g.preds[i]) <= max(fan_in, math.ceil(sizes[lv - 1] / sizes[lv]))
        if sizes[lv - 1] <= sizes[lv]:
            assert len(g.preds[i]) <= fan_in


@settings(max_examples=40, deadline=None)
@given(
    ops=st.integers(1, 120),
    seed=st.integers(0, 10**6),
    width=st.integers(1, 9),
    fan_in=st.integers(1, 4),
    fan_out=st.integers(1, 4),
)
def test_random_dags_are_connected_layered_and_bounded(ops, seed, width, fan_in, fan_out):
    g = random_dag(ops=ops, seed=seed, width=width, fan_in=fan_in, fan_out=fan_out)
    _check_shape(g, ops=ops, width=width, fan_in=fan_in)


def test_fan_out_holds_when_the_next_level_allows_it():
    # Equal-width levels with fan_in = fan_out: each op can always find a successor slot.
    g = random_dag(ops=402, seed=5, width=4, fan_in=2, fan_out=2)
    middle = [i for i, op in enumerate(g.ops) if 0 < op.layer < g.ops[-1].layer - 1]
    assert max(len(g.succs[i]) for i in middle) <= 2
    assert len(g.succs[0]) == 4  # the source feeds the whole first level


def test_same_seed_same_graph_other_seed_other_graph():
    assert random_dag(ops=300, seed=7) == random_dag(ops=300, seed=7)
    assert random_dag(ops=300, seed=7) != random_dag(ops=300, seed=8)


def test_costs_lie_within_the_spread():
    g = random_dag(ops=2000, seed=1, cost_spread=8.0, flops=2e9, act_bytes=5.0)
    f = [op.fwd_flops for op in g.ops]
    assert min(f) >= 2e9 and max(f) <= 16e9
    # Log-uniform draws: both ends of the range are actually reached.
    assert min(f) < 2.2e9 and max(f) > 14.5e9
    assert all(5.0 <= op.act_bytes <= 40.0 for op in g.ops)
    assert all(op.bwd_input_flops == op.fwd_flops == op.bwd_weight_flops for op in g.ops)
    assert all(e.bytes == g.ops[e.src].out_bytes for e in g.edges)
    mean_log = sum(math.log(x / 2e9) for x in f) / len(f)
    assert mean_log == pytest.approx(math.log(8.0) / 2, abs=0.05)


def test_spread_one_gives_equal_costs():
    g = random_dag(ops=50, seed=2, cost_spread=1.0, flops=3.0, param_bytes=7.0)
    assert {op.fwd_flops for op in g.ops} == {3.0}
    assert {op.param_bytes for op in g.ops} == {7.0}


def test_ten_thousand_ops_are_fast():
    t = time.perf_counter()
    g = random_dag(ops=10_000, seed=0, width=16)
    assert time.perf_counter() - t < 2.0
    assert g.num_ops == 10_000 and len(g.topo_order) == 10_000


def test_parse_spec_equals_keyword_call():
    assert parse_random_dag_spec("ops=100,seed=3,width=8") == random_dag(ops=100, seed=3, width=8)
    g = parse_random_dag_spec(" ops=40 , fan-in=3, cost_spread=2.5 ")
    assert g == random_dag(ops=40, fan_in=3, cost_spread=2.5)
    assert g.meta_dict["fan_in"] == 3


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("ops=10,wdth=3", "--random-dag 'ops=10,wdth=3': unknown key 'wdth'; did you mean 'width'?"),
        ("ops=ten", "--random-dag 'ops=ten': ops must be an integer, got 'ten'"),
        (
            "ops=10,cost_spread=big",
            "--random-dag 'ops=10,cost_spread=big': cost_spread must be a number, got 'big'",
        ),
        ("seed=1", "--random-dag 'seed=1': missing ops=N"),
        ("ops=10,seed", "--random-dag 'ops=10,seed': 'seed' is not key=value"),
        ("ops=10,ops=20", "--random-dag 'ops=10,ops=20': key 'ops' given twice"),
        ("ops=0", "random-dag ops: must be an integer >= 1, got 0"),
        ("ops=5,cost_spread=0.5", "random-dag cost_spread: must be a number >= 1, got 0.5"),
    ],
)
def test_bad_specs_raise_clear_errors(spec, message):
    with pytest.raises(InvalidInputError) as info:
        parse_random_dag_spec(spec)
    assert str(info.value).startswith(message)


def test_bad_keyword_values():
    with pytest.raises(InvalidInputError, match=r"random-dag width: must be an integer >= 1, got 0"):
        random_dag(ops=5, width=0)
    with pytest.raises(InvalidInputError, match=r"random-dag fan_in: must be an integer >= 1, got 2\.5"):
        random_dag(ops=5, fan_in=2.5)  # type: ignore[arg-type]
