"""The child-process side of the HiGHS backend: run as a script, it imports only the standard library
and highspy (never OR-Tools, whose bundled libhighs clashes with highspy's; see ``highs.py``).

Protocol: a pickled payload (``HighsBackend.payload``) on stdin; JSON lines prefixed by ``TAG`` on
stdout: ``{"progress": [objective, bound]}`` per improving solution, then ``{"result": {...}}``.
"""

from __future__ import annotations

import json
import math
import pickle
import sys
from collections.abc import Callable
from typing import Any

#: Must equal ``parplan.solve.highs._TAG``.
TAG = "@parplan-highs "


def main() -> None:
    """Entry point of the child: read the pickled payload on stdin, solve, write JSON lines."""
    data = pickle.loads(sys.stdin.buffer.read())

    def emit(msg: dict[str, Any]) -> None:
        sys.stdout.write(TAG + json.dumps(msg) + "\n")
        sys.stdout.flush()

    try:
        result = _solve_in_process(data, lambda obj, bound: emit({"progress": [obj, bound]}))
    except Exception as exc:  # report every failure to the parent, which raises InternalError
        result = {"status": "error", "message": f"{type(exc).__name__}: {exc}", "values": None, "bound": None}
    emit({"result": result})


def _solve_in_process(data: dict[str, Any], report: Callable[[float, float], None]) -> dict[str, Any]:
    """Build the HighsLp, solve it, and return status, column values and the dual bound."""
    import highspy

    inf = highspy.kHighsInf
    h = highspy.Highs()
    h.setOptionValue("output_flag", False)
    lp = highspy.HighsLp()
    n, r = len(data["col_cost"]), len(data["row_lower"])
    lp.num_col_, lp.num_row_ = n, r
    lp.col_cost_ = data["col_cost"]
    lp.col_lower_ = data["col_lower"]
    lp.col_upper_ = [u if math.isfinite(u) else inf for u in data["col_upper"]]
    lp.row_lower_ = [lo if math.isfinite(lo) else -inf for lo in data["row_lower"]]
    lp.row_upper_ = [u if math.isfinite(u) else inf for u in data["row_upper"]]
    integer, continuous = highspy.HighsVarType.kInteger, highspy.HighsVarType.kContinuous
    lp.integrality_ = [integer if i else continuous for i in data["col_integer"]]
    lp.a_matrix_.format_ = highspy.MatrixFormat.kRowwise
    lp.a_matrix_.num_col_, lp.a_matrix_.num_row_ = n, r
    lp.a_matrix_.start_ = data["start"]
    lp.a_matrix_.index_ = data["index"]
    lp.a_matrix_.value_ = data["value"]
    lp.col_names_ = data["col_names"]
    lp.row_names_ = data["row_names"]
    if h.passModel(lp) == highspy.HighsStatus.kError:
        return {"status": "error", "message": "passModel rejected the model", "values": None, "bound": None}
    for key, value in data["options"].items():
        h.setOptionValue(key, value)
    if data["hint"] is not None:
        sol = highspy.HighsSolution()
        sol.col_value = data["hint"]
        sol.value_valid = True
        h.setSolution(sol)
    h.cbMipImprovingSolution.subscribe(
        lambda e: report(e.data_out.objective_function_value, e.data_out.mip_dual_bound)
    )
    h.run()
    S = highspy.HighsModelStatus
    status = h.getModelStatus()
    info = h.getInfo()
    if status == S.kInfeasible:
        return {"status": "infeasible", "values": None, "bound": None}
    if status in (S.kModelError, S.kLoadError, S.kPresolveError, S.kSolveError, S.kPostsolveError):
        return {"status": "error", "message": h.modelStatusToString(status), "values": None, "bound": None}
    has_solution = info.primal_solution_status == 2  # kSolutionStatusFeasible
    bound = info.mip_dual_bound
    return {
        "status": "optimal" if status == S.kOptimal else "feasible",
        "values": list(h.getSolution().col_value) if has_solution else None,
        "bound": bound if math.isfinite(bound) else None,
    }


if __name__ == "__main__":
    main()
