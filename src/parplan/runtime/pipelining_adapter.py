"""Adapter to torch.distributed.pipelining's runtime: the ONLY module touching its private API."""

from __future__ import annotations

from typing import Any

from parplan.plan import Plan


def pipelining_unsupported(plan: Plan) -> str | None:
    """Why torch's pipelining runtime cannot run ``plan`` (None when it can)."""
    return "not implemented yet"


def run_pipelining_device(rank: int, plan: Plan, model: Any, job: dict[str, Any]) -> dict[str, Any]:
    raise NotImplementedError
