"""The merging heuristic: op groups cover the graph, keep it acyclic, balance work, fit memory."""

from __future__ import annotations

import itertools

import pytest

from parplan.errors import InfeasibleError, InvalidInputError
from parplan.graph.ops import Edge, Op, OpGraph
from parplan.graph.random_dag import random_dag
from parplan.graph.zoo import build_model
from parplan.merge import graph_problem, locality_order, merge_ops


def _diamond() -> OpGraph:
    # a -> b -> d, a -> c -> d: a branch that must not be cut into a cycle.
    ops = tuple(Op(name=n, kind="linear", fwd_flops=1e9, param_bytes=1e3, out_bytes=1e3) for n in "abcd")
    edges = (
        Edge(src=0, dst=1, bytes=10),
        Edge(src=0, dst=2, bytes=10),
        Edge(src=1, dst=3, bytes=10),
        Edge(src=2, dst=3, bytes=10),
    )
    return OpGraph(name="diamond", ops=ops, edges=edges)


def test_locality_order_is_topological_and_keeps_chains_together() -> None:
    g = random_dag(ops=200, seed=3, width=6)
    order = locality_order(g)
    pos = {op: k for k, op in enumerate(order)}
    assert sorted(order) == list(range(g.num_ops))
    assert all(pos[e.src] < pos[e.dst] for e in g.edges)


@pytest.mark.parametrize("groups", [1, 2, 3, 4])
def test_groups_cover_every_op_once_and_quotient_is_acyclic(groups: int) -> None:
    g = random_dag(ops=60, seed=groups, width=5)
    parts = merge_ops(g, [1.0] * g.num_ops, groups)
    flat = [i for p in parts for i in p]
    assert sorted(flat) == list(range(g.num_ops))
    group_of = {i: k for k, p in enumerate(parts) for i in p}
    assert all(group_of[e.src] <= group_of[e.dst] for e in g.edges)  # edges only go forward


def test_partition_minimizes_the_largest_group_work() -> None:
    # Over the locality order, the exact DP equals brute force over all cut positions.
    g = random_dag(ops=9, seed=5, width=3)
    work = [float((7 * i) % 5 + 1) for i in range(g.num_ops)]
    order = locality_order(g)
    best = min(
        max(sum(work[order[k]] for k in range(a, b)) for a, b in zip((0, *cuts), (*cuts, g.num_ops)))
        for cuts in itertools.combinations(range(1, g.num_ops), 2)
    )
    parts = merge_ops(g, work, 3)
    assert max(sum(work[i] for i in p) for p in parts) == pytest.approx(best)


def test_graph_problem_free_placement_and_bytes_sent_once() -> None:
    p = graph_problem(_diamond(), devices=2, microbatches=3, groups=2)
    assert p.placement == "free" and all(s.device is None for s in p.stages)
    assert p.num_microbatches == 3 and p.time_unit == "s"
    # 'a' feeds b and c: when both sit in the other group its 10 bytes are sent once, else the
    # crossing edges carry each producer's output once.
    total = sum(e.bytes for e in p.edges)
    assert total in (10.0, 20.0)
    ops = sorted(o for s in p.stages for o in s.ops)
    assert ops == ["a", "b", "c", "d"]


def test_branching_models_become_dag_problems() -> None:
    # the MoE branches survive merging into 12 groups (at 8, H100's wave-quantized costs of these
    # small GEMMs make the balanced grouping a chain)
    p = graph_problem(build_model("moe-small"), devices=4, microbatches=2, groups=12)
    assert p.num_stages == 12
    assert not p.is_chain


def test_memory_adds_groups_and_oversized_op_is_infeasible() -> None:
    g = random_dag(ops=40, seed=1, param_bytes=1e8)
    few = graph_problem(g, devices=2, groups=2)
    fitted = graph_problem(g, devices=2, groups=2, memory_limit=few.stages[0].param_mem * 0.6)
    assert fitted.num_stages > 2
    with pytest.raises(InfeasibleError, match=r"needs .* GiB"):
        graph_problem(g, devices=2, memory_limit=1e6)


def test_bad_options() -> None:
    g = _diamond()
    with pytest.raises(InvalidInputError, match="--groups"):
        graph_problem(g, devices=2, groups=9)
    with pytest.raises(InvalidInputError, match="--devices"):
        graph_problem(g, devices=0)


def test_group_names_come_from_module_paths() -> None:
    from parplan.merge import group_label

    assert group_label(["user.layers.0.0", "user.layers.0.1", "add"]) == "user.layers.0"
    assert group_label(["user.inp", "item.inp"]) == "user+item"  # a group across branches says so
    assert group_label([f"layer{i}.ln1" for i in range(8)]) == "layer0..layer7"
    assert group_label(["add", "cat"]) == "add.."  # fx-made names only
    assert group_label(["head"]) == "head"
