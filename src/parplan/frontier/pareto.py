"""Two-objective Pareto sets (time, memory) with provenance: pruning, epsilon thinning, sums, unions.

A :class:`Front` is a set of non-dominated points kept sorted by time (ascending) and so by memory
(descending). Both objectives are additive in the frontier search, so two sub-results combine by a
Minkowski sum (every pair of points, summed) followed by pruning. Each point remembers where it
comes from (index arrays into the fronts it was built from), so a whole-graph strategy is rebuilt
only for the points that survive (:meth:`Front.choice`). ``err`` bounds the approximation of
epsilon thinning: every point of the exact set is dominated within a factor ``1 + err`` (in both
objectives) by a kept point.

Leaf traces: ``None`` (no choice), ``("c", op, config)`` (operator ``op`` runs ``config``),
``("+", a, b)`` (both), ``("m", scope, t)`` (``t`` names operators by position in ``scope``, a tuple
of operator indices: how one solved layer is reused for many). This module needs numpy only.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

#: Relative tolerance under which two objective values count as equal (float noise from sums).
_REL_TOL = 1e-12
_MASK = np.int64(~((1 << 12) - 1))


class Front:
    """A Pareto set of (time, memory) points with their provenance.

    Parameters
    ----------
    time_s, mem_bytes
        Objective arrays of equal length, already non-dominated and sorted by time.
    origin
        Where the points come from: a list with one trace per point (see the module docstring),
        or, lazily, ``("sum", a, b, ia, ib)`` (point k is ``a[ia[k]] + b[ib[k]]``),
        ``("pick", f, idx)`` (point k is ``f[idx[k]]``) or ``("union", fronts, owner, pos)``.
        Lazy origins keep only index arrays, so traces are built only for the final points.
    err
        Approximation bound: the exact set is covered within a factor ``1 + err``.
    scope
        When not None, operator positions in this front's traces index into ``scope`` (a reused
        block's view).
    """

    __slots__ = ("err", "mem_bytes", "origin", "scope", "time_s")

    def __init__(
        self,
        time_s: np.ndarray,
        mem_bytes: np.ndarray,
        origin: Any,
        err: float = 0.0,
        scope: tuple[int, ...] | None = None,
    ) -> None:
        self.time_s = time_s
        self.mem_bytes = mem_bytes
        self.origin = origin
        self.err = err
        self.scope = scope

    @classmethod
    def point(cls, time_s: float, mem_bytes: float, trace: Any = None) -> Front:
        """A front of one point."""
        return cls(np.array([float(time_s)]), np.array([float(mem_bytes)]), [trace])

    @classmethod
    def empty(cls) -> Front:
        return cls(np.zeros(0), np.zeros(0), [])

    @classmethod
    def from_points(cls, points: Iterable[tuple[float, float, Any]]) -> Front:
        """The Pareto set of arbitrary (time, memory, trace) points (exact, no thinning)."""
        pts = list(points)
        if not pts:
            return cls.empty()
        t = np.array([p[0] for p in pts], dtype=float)
        m = np.array([p[1] for p in pts], dtype=float)
        keep = pareto_indices(t, m)
        return cls(t[keep], m[keep], [pts[i][2] for i in keep])

    def __len__(self) -> int:
        return len(self.time_s)

    @property
    def trivial(self) -> bool:
        """One point without any choice (e.g. a resharding cost): adding it only shifts."""
        return (
            len(self) == 1 and isinstance(self.origin, list) and self.origin[0] is None and self.scope is None
        )

    def with_scope(self, scope: tuple[int, ...]) -> Front:
        """The same points, their operator positions read through ``scope`` (no copy)."""
        if self.scope is not None:
            raise ValueError("Front.with_scope: front already scoped")
        return Front(self.time_s, self.mem_bytes, self.origin, self.err, scope)

    def choice(self, i: int) -> dict[int, str]:
        """Operator index -> configuration name of point ``i`` (iterative: provenance nests deeply)."""
        out: dict[int, str] = {}
        stack: list[tuple[Front, int, tuple[int, ...] | None]] = [(self, i, None)]
        while stack:
            f, k, scope = stack.pop()
            if f.scope is not None:
                scope = f.scope if scope is None else tuple(scope[x] for x in f.scope)
            o = f.origin
            if isinstance(o, list):
                _flatten_into(o[k], scope, out)
            elif o[0] == "sum":
                stack.append((o[1], int(o[3][k]), scope))
                stack.append((o[2], int(o[4][k]), scope))
            elif o[0] == "pick":
                stack.append((o[1], int(o[2][k]), scope))
            else:  # union
                stack.append((o[1][int(o[2][k])], int(o[3][k]), scope))
        return out


def pareto_indices(time_s: np.ndarray, mem_bytes: np.ndarray) -> np.ndarray:
    """Indices of the non-dominated points, sorted by time then memory.

    A point is dropped when another has time <= and memory <= (one of them strictly, or an equal
    point earlier in the order), so duplicates keep one copy.
    """
    n = len(time_s)
    if n <= 1:
        return np.arange(n)
    # times equal up to float noise of different summation orders count as equal: drop the last
    # 12 of 52 mantissa bits (relative 2e-13) before sorting
    coarse = (np.ascontiguousarray(time_s, dtype=np.float64).view(np.int64) & _MASK).view(np.float64)
    order = np.lexsort((mem_bytes, coarse))
    ms = mem_bytes[order]
    cummin = np.minimum.accumulate(ms)
    keep = np.empty(n, dtype=bool)
    keep[0] = True
    keep[1:] = ms[1:] < cummin[:-1] * (1.0 - _REL_TOL) - 1e-300
    return order[keep]


def thin_indices(time_s: np.ndarray, mem_bytes: np.ndarray, eps: float) -> np.ndarray:
    """Positions of a subset of a sorted Pareto set covering it within a factor ``1 + eps``.

    The fastest and the leanest points are always kept. In between, greedily from the fast end:
    the first uncovered point ``q`` is covered by the slowest point ``p`` with
    ``time(p) <= (1+eps) time(q)`` (which has less memory than ``q``); ``p`` then covers every later
    point whose memory is at least ``mem(p) / (1+eps)``. Every dropped point ``q`` thus has a kept
    ``p`` with ``p <= (1+eps) q`` in both objectives.
    """
    n = len(time_s)
    if eps <= 0 or n <= 2:
        return np.arange(n)
    neg_m = -mem_bytes
    keep = [0]
    i = int(np.searchsorted(neg_m, -mem_bytes[0] / (1.0 + eps), side="right"))
    while i < n:
        j = int(np.searchsorted(time_s, time_s[i] * (1.0 + eps), side="right")) - 1
        j = max(j, i)
        keep.append(j)
        k = int(np.searchsorted(neg_m, -mem_bytes[j] / (1.0 + eps), side="right"))
        i = max(k, j + 1)
    if keep[-1] != n - 1:
        keep.append(n - 1)
    return np.array(keep, dtype=np.int64)


def _thin_keep(
    t: np.ndarray, m: np.ndarray, keep: np.ndarray, err: float, eps: float
) -> tuple[np.ndarray, float]:
    if eps > 0 and len(keep) > 2:
        sub = thin_indices(t[keep], m[keep], eps)
        if len(sub) < len(keep):
            return keep[sub], (1.0 + err) * (1.0 + eps) - 1.0
    return keep, err


def minkowski(a: Front, b: Front, eps: float = 0.0) -> Front:
    """Pareto set of all pairwise sums ``a + b`` (then thinned by ``eps``)."""
    na, nb = len(a), len(b)
    if na == 0 or nb == 0:
        return Front.empty()
    # Adding one choice-free point shifts the set: still Pareto, and a cover stays a cover.
    if b.trivial:
        return Front(a.time_s + b.time_s[0], a.mem_bytes + b.mem_bytes[0], a.origin, a.err, a.scope)
    if a.trivial:
        return Front(b.time_s + a.time_s[0], b.mem_bytes + a.mem_bytes[0], b.origin, b.err, b.scope)
    t = (a.time_s[:, None] + b.time_s[None, :]).ravel()
    m = (a.mem_bytes[:, None] + b.mem_bytes[None, :]).ravel()
    if na * nb > _PREFILTER:
        cand = _prefilter(a, b, t, m)
        keep = cand[pareto_indices(t[cand], m[cand])]
    else:
        keep = pareto_indices(t, m)
    keep, err = _thin_keep(t, m, keep, max(a.err, b.err), eps)
    return Front(t[keep], m[keep], ("sum", a, b, keep // nb, keep % nb), err)


#: Outer sums larger than this are first screened against a skeleton front (sorting is the cost).
_PREFILTER = 4096


def _prefilter(a: Front, b: Front, t: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Indices of the pairwise sums not strictly dominated by a skeleton of real sums.

    The skeleton is the Pareto set of the sums of every 8th point of ``a`` and ``b`` (plus their
    ends). Dropping what a real sum strictly dominates is exact, and a binary search per point is
    much cheaper than sorting all of them.
    """
    ia = np.unique(np.r_[np.arange(0, len(a), 8), len(a) - 1])
    ib = np.unique(np.r_[np.arange(0, len(b), 8), len(b) - 1])
    st = (a.time_s[ia][:, None] + b.time_s[ib][None, :]).ravel()
    sm = (a.mem_bytes[ia][:, None] + b.mem_bytes[ib][None, :]).ravel()
    sk = pareto_indices(st, sm)
    st, sm = st[sk], sm[sk]
    pos = np.searchsorted(st, t, side="right") - 1
    best = np.where(pos >= 0, sm[np.maximum(pos, 0)], np.inf)
    return np.nonzero(best >= m)[0]


def union(fronts: Sequence[Front], eps: float = 0.0) -> Front:
    """Pareto set of the union of ``fronts`` (then thinned by ``eps``)."""
    fronts = [f for f in fronts if len(f)]
    if not fronts:
        return Front.empty()
    if len(fronts) == 1:
        return thin(fronts[0], eps)
    t = np.concatenate([f.time_s for f in fronts])
    m = np.concatenate([f.mem_bytes for f in fronts])
    owner = np.concatenate([np.full(len(f), k) for k, f in enumerate(fronts)])
    pos = np.concatenate([np.arange(len(f)) for f in fronts])
    keep, err = _thin_keep(t, m, pareto_indices(t, m), max(f.err for f in fronts), eps)
    own = owner[keep]
    used = np.unique(own)
    # keep references only to the fronts that still contribute a point
    remap = np.full(len(fronts), -1)
    remap[used] = np.arange(len(used))
    return Front(t[keep], m[keep], ("union", [fronts[int(u)] for u in used], remap[own], pos[keep]), err)


def thin(front: Front, eps: float) -> Front:
    """``front`` thinned to a cover within ``1 + eps`` (the same front when nothing drops)."""
    if eps <= 0 or len(front) <= 2:
        return front
    sub = thin_indices(front.time_s, front.mem_bytes, eps)
    if len(sub) == len(front):
        return front
    return Front(
        front.time_s[sub],
        front.mem_bytes[sub],
        ("pick", front, sub),
        (1.0 + front.err) * (1.0 + eps) - 1.0,
    )


def _flatten_into(trace: Any, scope: tuple[int, ...] | None, out: dict[int, str]) -> None:
    stack: list[tuple[Any, tuple[int, ...] | None]] = [(trace, scope)]
    while stack:
        tr, sc = stack.pop()
        if tr is None:
            continue
        tag = tr[0]
        if tag == "c":
            out[tr[1] if sc is None else sc[tr[1]]] = tr[2]
        elif tag == "+":
            stack.append((tr[1], sc))
            stack.append((tr[2], sc))
        elif tag == "m":
            stack.append((tr[2], tr[1] if sc is None else tuple(sc[i] for i in tr[1])))
        else:  # pragma: no cover - traces are built only in this package
            raise ValueError(f"trace: unknown tag {tag!r}")


def flatten_trace(trace: Any) -> dict[int, str]:
    """Operator index -> configuration name from a trace tree."""
    out: dict[int, str] = {}
    _flatten_into(trace, None, out)
    return out


def is_pareto(points: Sequence[tuple[float, float]]) -> bool:
    """True when no point of ``points`` is dominated by another (for tests and checks)."""
    for i, (ti, mi) in enumerate(points):
        for j, (tj, mj) in enumerate(points):
            if i != j and tj <= ti and mj <= mi and (tj < ti or mj < mi):
                return False
    return True
