"""The solver backends by name, imported on first use (so ``parplan.solve`` imports no solver).

Every backend module imports ``parplan.solve.backend`` (the protocol) and never this registry, so
there is no import circle.
"""

from __future__ import annotations

import importlib

from parplan.errors import InvalidInputError
from parplan.solve.backend import Backend, BackendOptions
from parplan.solve.model import TaskModel

#: Backend name -> (module, class); each class implements ``parplan.solve.backend.Backend``.
BACKENDS: dict[str, tuple[str, str]] = {
    "cpsat": ("parplan.solve.cpsat", "CpSatBackend"),
    "highs": ("parplan.solve.highs", "HighsBackend"),
    "gurobi": ("parplan.solve.gurobi", "GurobiBackend"),
}


def make_backend(name: str, model: TaskModel, options: BackendOptions) -> Backend:
    """The backend called ``name`` built for ``model``; unknown or missing ones raise clearly."""
    if name not in BACKENDS:
        raise InvalidInputError(f"backend {name!r}: unknown; choose one of {', '.join(BACKENDS)}")
    module, cls = BACKENDS[name]
    backend: Backend = getattr(importlib.import_module(module), cls)(model, options)
    return backend
