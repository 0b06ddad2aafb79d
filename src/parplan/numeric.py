"""The one tolerance for comparing times and memory, used by the model, the validator, the warm
starts and the bounds alike, so a schedule exactly at a limit is within it everywhere."""

from __future__ import annotations

#: Relative tolerance of every time and memory comparison (absolute below 1.0).
TOL = 1e-9


def slack(*values: float) -> float:
    """The absolute tolerance for comparing ``values`` (relative to the largest, at least ``TOL``)."""
    return TOL * max([1.0, *(abs(v) for v in values)])


def leq(a: float, b: float, scale: float = 0.0) -> bool:
    """``a <= b`` within the tolerance (relative to the larger of ``a``, ``b`` and ``scale``)."""
    return a <= b + slack(a, b, scale)


def lt(a: float, b: float, scale: float = 0.0) -> bool:
    """``a < b`` by more than the tolerance."""
    return a < b - slack(a, b, scale)


def close(a: float, b: float, scale: float = 0.0) -> bool:
    """``a == b`` within the tolerance."""
    return abs(a - b) <= slack(a, b, scale)


def within_limit(value: float, limit: float | None) -> bool:
    """Whether a peak ``value`` meets a ``limit`` (None = no limit); exactly at the limit is within."""
    return limit is None or leq(value, limit)
