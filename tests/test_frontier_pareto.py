"""Pareto machinery: pruning, epsilon thinning (its cover guarantee), Minkowski sums, provenance; the plot."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from parplan.errors import InvalidInputError
from parplan.frontier.pareto import Front, is_pareto, minkowski, pareto_indices, thin, thin_indices, union

# multiples of 1/4: sums are exact, so no two values differ by float noise only (pareto_indices treats
# times within 2e-13 as equal, on purpose)
values = st.integers(min_value=1, max_value=400).map(lambda x: x / 4)
point_lists = st.lists(st.tuples(values, values), min_size=1, max_size=40)


def _front(points, op=0):
    """Point k of ``points`` is operator ``op`` running configuration ``str(k)``."""
    return Front.from_points([(t, m, ("c", op, str(k))) for k, (t, m) in enumerate(points)])


def _dominated(q, pts):
    return any(t <= q[0] and m <= q[1] and (t < q[0] or m < q[1]) for t, m in pts)


def test_pareto_indices_drops_dominated_and_duplicates():
    t = np.array([3.0, 1.0, 2.0, 2.0, 1.0, 4.0])
    m = np.array([1.0, 5.0, 3.0, 3.0, 6.0, 1.0])
    keep = pareto_indices(t, m)
    # (1,5), (2,3) once, (3,1); (1,6) and (4,1) are dominated, the second (2,3) is a duplicate
    assert [(t[i], m[i]) for i in keep] == [(1.0, 5.0), (2.0, 3.0), (3.0, 1.0)]


def test_float_noise_in_time_does_not_keep_a_dominated_point():
    # the same time summed in two orders; the second point has less memory and must win
    a = 0.1 + 0.2 + 0.3
    b = 0.3 + 0.2 + 0.1
    assert a != b
    keep = pareto_indices(np.array([min(a, b), max(a, b)]), np.array([2.0, 1.0]))
    assert list(keep) == [1]


@given(point_lists)
@settings(max_examples=60, deadline=None)
def test_front_is_exactly_the_non_dominated_set(points):
    f = _front(points)
    got = sorted(zip(f.time_s.tolist(), f.mem_bytes.tolist()))
    expect = sorted({p for p in points if not _dominated(p, points)})
    assert got == expect
    assert is_pareto(got)


@given(point_lists, st.sampled_from([0.01, 0.05, 0.3]))
@settings(max_examples=60, deadline=None)
def test_thinning_covers_every_point_within_one_plus_eps(points, eps):
    f = _front(points)
    g = thin(f, eps)
    assert g.err <= eps + 1e-15
    kept = list(zip(g.time_s, g.mem_bytes))
    # fastest and leanest points are kept exactly
    assert kept[0] == (f.time_s[0], f.mem_bytes[0]) and kept[-1] == (f.time_s[-1], f.mem_bytes[-1])
    for q in zip(f.time_s, f.mem_bytes):
        assert any(t <= (1 + eps) * q[0] and m <= (1 + eps) * q[1] for t, m in kept)


def test_thinning_is_greedy_on_a_known_staircase():
    # times 1, 1.01, ..., memories falling 1% per step: with eps=5% one point covers ~5 steps
    t = 1.0 + 0.01 * np.arange(50)
    m = 100.0 * 0.99 ** np.arange(50)
    keep = thin_indices(t, m, 0.05)
    assert keep[0] == 0 and keep[-1] == 49
    # each kept point covers ~5 steps on each side (time on the left, memory on the right)
    assert list(keep) == [0, 10, 20, 31, 42, 49]
    assert len(thin_indices(t, m, 0.0)) == 50


@given(point_lists, point_lists)
@settings(max_examples=40, deadline=None)
def test_minkowski_sum_matches_all_pairs_and_keeps_provenance(a_pts, b_pts):
    a, b = _front(a_pts, op=0), _front(b_pts, op=1)
    s = minkowski(a, b)
    pairs = [(ta + tb, ma + mb) for (ta, ma), (tb, mb) in itertools.product(a_pts, b_pts)]
    expect = sorted({p for p in pairs if not _dominated(p, pairs)})
    got = sorted(zip(s.time_s.tolist(), s.mem_bytes.tolist()))
    assert len(got) == len(expect)
    assert np.allclose(got, expect)
    # the choices of every sum point rebuild it
    for k in range(len(s)):
        choice = s.choice(k)
        (ta, ma), (tb, mb) = a_pts[int(choice[0])], b_pts[int(choice[1])]
        assert np.isclose(ta + tb, s.time_s[k]) and np.isclose(ma + mb, s.mem_bytes[k])


def test_union_and_scoped_choices():
    a = Front.from_points([(1.0, 5.0, ("c", 0, "x")), (3.0, 1.0, ("c", 0, "y"))])
    b = Front.from_points([(2.0, 2.0, ("c", 1, "z"))])
    u = union([a, b])
    assert list(zip(u.time_s, u.mem_bytes)) == [(1.0, 5.0), (2.0, 2.0), (3.0, 1.0)]
    assert [u.choice(k) for k in range(3)] == [{0: "x"}, {1: "z"}, {0: "y"}]
    # a reused block: positions 0, 1 of the block are operators 7 and 9 of the graph
    s = minkowski(a, b).with_scope((7, 9))
    assert s.choice(0) == {7: "x", 9: "z"}


def test_plot_writes_png_and_svg(tmp_path):
    from parplan.frontier.search import Frontier, FrontierPoint
    from parplan.report.pareto_plot import write_pareto_plot

    pts = tuple(
        FrontierPoint(time_s=t, memory_bytes=m * 1e9, strategy=(("a", "dp1.tp1.rep"),), family=fam)
        for t, m, fam in [(0.1, 60, "DP8+ZeRO-1"), (0.12, 30, "DP4xTP2+SP+ZeRO-2"), (0.2, 12, "TP8+SP+RC")]
    )
    f = Frontier(
        graph_name="toy", devices=8, mesh=None, microbatches=1, epsilon=0.02, error_bound=0.0, points=pts
    )
    png = write_pareto_plot(f, tmp_path / "f.PNG", memory_limit=40e9)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    svg = write_pareto_plot(f, tmp_path / "f.svg", chosen=pts[2])
    assert b"<svg" in svg.read_bytes()[:400]
    with pytest.raises(InvalidInputError, match=r"unknown format '\.gif'"):
        write_pareto_plot(f, tmp_path / "f.gif")
