"""The HiGHS backend: the big-M MILP of ``parplan.solve.milp`` solved by highspy, in a child process.

Same shape as the CP-SAT backend (``add_hint``, ``solve`` -> ``BackendResult`` in ticks). HiGHS runs
in a separate Python process because the highspy and OR-Tools wheels each bundle their own
``libhighs.so.1``: whichever loads first wins the shared name and the other fails with an undefined
symbol, so importing both in one process breaks one of the two backends. The child
(``highs_worker.py``, run as a script) imports only highspy; it receives the model as arrays on stdin
and streams progress and the answer back as JSON lines on stdout.
"""

from __future__ import annotations

import json
import math
import pickle
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from parplan.errors import InternalError, SolverUnavailableError
from parplan.solve.backend import BackendResult, Progress
from parplan.solve.milp import MilpBackendBase
from parplan.solve.model import check_assignment

#: Objective values are integers (ticks, quanta, or their integer-weighted sum): a gap below one
#: unit proves optimality, so HiGHS may stop there instead of closing the last fraction.
ABS_GAP = 1.0 - 1e-6
#: Prefix of the child's protocol lines (anything else on its stdout is ignored); see highs_worker.
_TAG = "@parplan-highs "
#: Seconds the child may take beyond the time limit (start-up, model building) before it is killed.
_GRACE_S = 60.0


class HighsBackend(MilpBackendBase):
    """HiGHS (highspy) solving the MILP formulation of a ``TaskModel`` (see module docstring)."""

    name = "highs"

    def payload(self, *, time_limit_s: float, threads: int) -> dict[str, Any]:
        """The formulation as row-wise arrays plus solver options (what the child process reads)."""
        cols, rows = self.form.columns, self.form.rows
        starts = [0]
        index: list[int] = []
        value: list[float] = []
        for r in rows:
            index.extend(r.index)
            value.extend(r.value)
            starts.append(len(index))
        return {
            "name": self.m.name,
            "col_cost": [c.cost for c in cols],
            "col_lower": [c.lower for c in cols],
            "col_upper": [c.upper for c in cols],
            "col_integer": [c.integer for c in cols],
            "col_names": [c.name for c in cols],
            "row_lower": [r.lower for r in rows],
            "row_upper": [r.upper for r in rows],
            "row_names": [r.name for r in rows],
            "start": starts,
            "index": index,
            "value": value,
            "options": {
                "time_limit": float(max(0.01, time_limit_s)),
                "threads": int(threads),
                "random_seed": 0,
                "mip_rel_gap": 0.0,
                "mip_abs_gap": ABS_GAP,
                # tighter than the default 1e-6: big-M rows multiply integrality noise by M
                "mip_feasibility_tolerance": 1e-7,
            },
            "hint": self.form.values(self._hint) if self._hint is not None else None,
        }

    def solve(
        self,
        *,
        time_limit_s: float,
        workers: int = 2,
        deterministic: bool = False,
        progress: Callable[[Progress], None] | None = None,
    ) -> BackendResult:
        """Run HiGHS; model statuses map to optimal / feasible / infeasible / unknown."""
        threads = 1 if deterministic else max(1, int(workers))
        data = self.payload(time_limit_s=time_limit_s, threads=threads)
        t0 = time.perf_counter()
        scale = self._scale()

        def report(obj: float, bound: float) -> None:
            if progress is None:
                return
            gap = (obj - bound) / obj if obj > 0 else 0.0
            progress(
                Progress(
                    incumbent=obj * scale,
                    bound=bound * scale,
                    gap=max(0.0, gap),
                    elapsed_s=time.perf_counter() - t0,
                )
            )

        out = _run_child(data, report, timeout_s=time_limit_s + _GRACE_S)
        elapsed = time.perf_counter() - t0
        status = out["status"]
        if status == "error" and "No module named 'highspy'" in out["message"]:
            raise SolverUnavailableError(
                "backend 'highs': highspy is not installed; pip install highspy or use --backend cpsat"
            )
        if status == "error":
            raise InternalError(f"HiGHS failed on the MILP of {self.m.name or 'the model'}: {out['message']}")
        if status == "infeasible":
            return BackendResult(
                status="infeasible", assignment=None, objective=None, bound=None, time_s=elapsed
            )
        if out["values"] is None:
            return BackendResult(
                status="unknown", assignment=None, objective=None, bound=None, time_s=elapsed
            )
        sol = self.form.assignment(out["values"])
        objective = self.form.objective_of(sol)
        if self._hint is not None and not check_assignment(self.m, self._hint):
            # HiGHS started from the hint; should tolerance noise make its answer worse, keep the hint
            hinted = self.form.objective_of(self._hint)
            if hinted < objective:
                sol, objective = self._hint, hinted
        bound = out["bound"]
        bound_int = math.ceil(bound - 1e-6) if bound is not None and math.isfinite(bound) else None
        optimal = status == "optimal" or (bound_int is not None and bound_int >= objective)
        if optimal:
            # proven within a gap below one unit of an integer objective (HiGHS may leave its dual
            # bound unset when presolve alone solves the model)
            bound_int = objective
        elif bound_int is not None:
            bound_int = min(bound_int, objective)
        return BackendResult(
            status="optimal" if optimal else "feasible",
            assignment=sol,
            objective=objective,
            bound=bound_int,
            time_s=elapsed,
        )

    def _scale(self) -> float:
        if self.opt.objective == "makespan":
            return self.m.tick
        if self.opt.objective == "memory":
            return self.m.mem_quantum
        return 1.0


# ---------------------------------------------------------------------------- child process


def _run_child(
    data: dict[str, Any], report: Callable[[float, float], None], *, timeout_s: float
) -> dict[str, Any]:
    """Solve ``data`` in a fresh interpreter; relay its progress lines; return its final answer."""
    # run as a script, not as parplan.solve.highs_worker: the child then imports no parplan module
    cmd = [sys.executable, str(Path(__file__).with_name("highs_worker.py"))]
    try:
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    except OSError as exc:  # pragma: no cover - the interpreter itself is missing
        raise SolverUnavailableError(f"backend 'highs': cannot start a Python process: {exc}") from exc
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    deadline = time.monotonic() + timeout_s
    result: dict[str, Any] | None = None
    try:
        proc.stdin.write(pickle.dumps(data, protocol=pickle.HIGHEST_PROTOCOL))
        proc.stdin.close()
        for raw in proc.stdout:
            line = raw.decode("utf-8", "replace")
            if not line.startswith(_TAG):
                continue
            msg = json.loads(line[len(_TAG) :])
            if "progress" in msg:
                report(*msg["progress"])
            elif "result" in msg:
                result = msg["result"]
            if time.monotonic() > deadline:
                break
        proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        pass
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    err = proc.stderr.read().decode("utf-8", "replace").strip()
    if result is None:
        raise InternalError(
            f"HiGHS child process ended without an answer (exit {proc.returncode}): {err[-500:]}"
        )
    return result
