"""The Gurobi backend: the big-M MILP of ``parplan.solve.milp`` solved by gurobipy, when licensed.

gurobipy is optional and imported only inside ``solve``. The free pip licence stops at 2000
variables and 2000 constraints; a model above that (or no licence at all) raises
``SolverUnavailableError`` saying so, instead of a Gurobi traceback.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

from parplan.errors import InternalError, SolverUnavailableError
from parplan.solve.backend import BackendResult, Progress
from parplan.solve.milp import MilpBackendBase
from parplan.solve.model import check_assignment

#: Integer objective: a gap below one unit proves optimality (see ``parplan.solve.highs``).
ABS_GAP = 1.0 - 1e-6
#: Gurobi error codes: no licence, and model too large for a size-limited licence.
NO_LICENSE, SIZE_LIMIT_EXCEEDED = 10009, 10010
#: Limits of the size-limited licence that ships with the gurobipy wheel.
PIP_LICENSE_LIMIT = 2000


def import_gurobipy() -> Any:
    """gurobipy, or SolverUnavailableError when it is not installed."""
    try:
        import gurobipy
    except ImportError as exc:
        raise SolverUnavailableError(
            "backend 'gurobi': gurobipy is not installed (pip install gurobipy, plus a licence for "
            f"models above {PIP_LICENSE_LIMIT} variables); use --backend cpsat or highs"
        ) from exc
    return gurobipy


class GurobiBackend(MilpBackendBase):
    """gurobipy solving the MILP formulation of a ``TaskModel`` (see module docstring)."""

    name = "gurobi"

    def _unavailable(self, exc: Exception) -> SolverUnavailableError:
        cols, rows = len(self.form.columns), len(self.form.rows)
        errno = getattr(exc, "errno", None)
        if errno == SIZE_LIMIT_EXCEEDED or "size-limited" in str(exc).lower():
            return SolverUnavailableError(
                f"backend 'gurobi': the model has {cols} variables and {rows} constraints, above the "
                f"size-limited licence ({PIP_LICENSE_LIMIT} of each); install a full Gurobi licence or "
                "use --backend cpsat or highs"
            )
        return SolverUnavailableError(
            f"backend 'gurobi': no usable licence ({exc}); use --backend cpsat or highs"
        )

    def _build(self, gp: Any, env: Any) -> tuple[Any, list[Any]]:
        """The formulation as a gurobipy model (one Var per column, one LinExpr row per row)."""
        GRB = gp.GRB
        mdl = gp.Model(self.m.name or "parplan", env=env)
        cols = [
            mdl.addVar(
                lb=c.lower,
                ub=c.upper if math.isfinite(c.upper) else GRB.INFINITY,
                obj=c.cost,
                vtype=GRB.BINARY
                if c.integer and c.lower >= 0 and c.upper <= 1
                else (GRB.INTEGER if c.integer else GRB.CONTINUOUS),
                name=c.name,
            )
            for c in self.form.columns
        ]
        for r in self.form.rows:
            expr = gp.LinExpr(list(r.value), [cols[i] for i in r.index])
            if r.lower == r.upper:
                mdl.addLConstr(expr, GRB.EQUAL, r.lower, name=r.name)
                continue
            if math.isfinite(r.lower):
                mdl.addLConstr(expr, GRB.GREATER_EQUAL, r.lower, name=r.name)
            if math.isfinite(r.upper):
                mdl.addLConstr(
                    expr, GRB.LESS_EQUAL, r.upper, name=r.name + ("~" if math.isfinite(r.lower) else "")
                )
        mdl.ModelSense = GRB.MINIMIZE
        return mdl, cols

    def solve(
        self,
        *,
        time_limit_s: float,
        workers: int = 2,
        deterministic: bool = False,
        progress: Callable[[Progress], None] | None = None,
    ) -> BackendResult:
        """Run Gurobi; statuses map to optimal / feasible / infeasible / unknown."""
        gp = import_gurobipy()
        GRB = gp.GRB
        try:
            env = gp.Env(empty=True)
            env.setParam("OutputFlag", 0)
            env.start()
        except gp.GurobiError as exc:
            raise self._unavailable(exc) from exc
        mdl, cols = self._build(gp, env)
        mdl.Params.TimeLimit = float(max(0.01, time_limit_s))
        mdl.Params.Threads = 1 if deterministic else max(1, int(workers))
        mdl.Params.Seed = 0
        mdl.Params.MIPGap = 0.0
        mdl.Params.MIPGapAbs = ABS_GAP
        if self._hint is not None:
            for var, value in zip(cols, self.form.values(self._hint), strict=True):
                var.Start = value
        t0 = time.perf_counter()
        scale = (
            self.m.tick
            if self.opt.objective == "makespan"
            else (self.m.mem_quantum if self.opt.objective == "memory" else 1.0)
        )

        def callback(model: Any, where: int) -> None:
            if progress is None or where != GRB.Callback.MIPSOL:
                return
            obj = model.cbGet(GRB.Callback.MIPSOL_OBJ)
            bound = model.cbGet(GRB.Callback.MIPSOL_OBJBND)
            progress(
                Progress(
                    incumbent=obj * scale,
                    bound=bound * scale,
                    gap=max(0.0, (obj - bound) / obj) if obj > 0 else 0.0,
                    elapsed_s=time.perf_counter() - t0,
                )
            )

        try:
            mdl.optimize(callback)
        except gp.GurobiError as exc:
            if (
                getattr(exc, "errno", None) in (NO_LICENSE, SIZE_LIMIT_EXCEEDED)
                or "licen" in str(exc).lower()
            ):
                raise self._unavailable(exc) from exc
            raise InternalError(f"Gurobi failed on the MILP of {self.m.name or 'the model'}: {exc}") from exc
        elapsed = time.perf_counter() - t0
        status = mdl.Status
        if status in (GRB.INFEASIBLE, GRB.INF_OR_UNBD):
            return BackendResult(
                status="infeasible", assignment=None, objective=None, bound=None, time_s=elapsed
            )
        if mdl.SolCount == 0:
            return BackendResult(
                status="unknown", assignment=None, objective=None, bound=None, time_s=elapsed
            )
        sol = self.form.assignment([v.X for v in cols])
        objective = self.form.objective_of(sol)
        if self._hint is not None and not check_assignment(self.m, self._hint):
            hinted = self.form.objective_of(self._hint)
            if hinted < objective:
                sol, objective = self._hint, hinted
        bound = mdl.ObjBound
        bound_int = math.ceil(bound - 1e-6) if math.isfinite(bound) else None
        optimal = status == GRB.OPTIMAL or (bound_int is not None and bound_int >= objective)
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
