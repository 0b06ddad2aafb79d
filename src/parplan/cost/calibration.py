"""How a training runtime behaves on a machine besides the model's ops and collectives, as measured.

An op-level cost model prices the ops, the collectives and the pipeline's bubbles; a real runtime
also pays for its own machinery, and on small models or CPU devices that is not small:

* ``pipeline_action_s``: host CPU time of one forward or backward action of a pipeline stage in
  ``torch.distributed.pipelining`` (argument checks, detaching the stage inputs, the send and
  receive bookkeeping), beyond the stage's ops;
* ``step_sync_s``: the step's closing loss all-reduce and barrier (wall time, every step);
* ``fsdp_unit_s`` and ``fsdp_s_per_byte``: FSDP2's host time per step per sharded module (its
  hooks) and per byte of unsharded parameters (the copy-in and copy-out around its all-gathers
  and reduce-scatters, the gradient division), beyond the collectives' own time;
* ``tp_linear_s``: DTensor's host time per tensor-parallel linear per forward and backward
  (sharding propagation and redistribution bookkeeping), beyond the GEMM and its collective;
* ``adamw_s_per_param``: the optimizer step (``torch.optim.AdamW``, multi-tensor) per parameter
  it updates, in place of the estimate's memory-bandwidth price when measured.

and, for processes sharing a machine's cores:

* ``slowdown``: how much slower each busy process runs (against one process alone) when ``k`` of
  them are busy at once, for ``k = 1 .. N`` (a small MLP's training step: caches, hardware threads
  and memory bandwidth shared make it differ from ``k / cores``).

``parplan calibrate`` measures them with small benchmarks of the same runtime pieces (not of the
model being planned) and writes them into the cluster file (``meta.measured.runtime``);
:func:`runtime_calibration` reads them back. Clusters without them (the presets) price no overhead.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from parplan.cluster import Cluster
from parplan.errors import InvalidInputError


@dataclass(frozen=True, slots=True, kw_only=True)
class RuntimeCalibration:
    """Measured runtime overheads (module doc); CPU work on a core of its own, except
    ``step_sync_s`` (wall time)."""

    pipeline_action_s: float = 0.0
    step_sync_s: float = 0.0
    fsdp_unit_s: float = 0.0
    fsdp_s_per_byte: float = 0.0
    tp_linear_s: float = 0.0
    adamw_s_per_param: float = 0.0
    slowdown: tuple[float, ...] = ()

    def to_json(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["slowdown"] = list(self.slowdown)
        return out

    def slowdown_at(self, busy: int, cores: int) -> float:
        """Slowdown of each process with ``busy`` processes running: measured, else fair sharing
        of ``cores`` (``max(1, busy / cores)``)."""
        if busy < 1:
            return 1.0
        if self.slowdown:
            n = len(self.slowdown)  # beyond the measured: that, shared fairly among more
            return self.slowdown[busy - 1] if busy <= n else self.slowdown[-1] * busy / n
        return max(1.0, busy / cores)

    @staticmethod
    def from_json(doc: Any, where: str = "meta.measured.runtime") -> RuntimeCalibration:
        if not isinstance(doc, dict):
            raise InvalidInputError(f"{where}: must be a mapping of overheads, got {type(doc).__name__}")
        known = {f.name for f in fields(RuntimeCalibration)}
        unknown = sorted(set(doc) - known)
        if unknown:
            raise InvalidInputError(
                f"{where}: unknown {', '.join(unknown)}; known: {', '.join(sorted(known))}"
            )
        values: dict[str, Any] = {}
        for key, value in doc.items():
            if key == "slowdown":
                if not isinstance(value, list) or not all(
                    isinstance(v, int | float) and not isinstance(v, bool) and v > 0 for v in value
                ):
                    raise InvalidInputError(f"{where}.slowdown: must be a list of numbers > 0, got {value!r}")
                values[key] = tuple(float(v) for v in value)
                continue
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise InvalidInputError(f"{where}.{key}: must be a number >= 0, got {value!r}")
            values[key] = float(value)
        return RuntimeCalibration(**values)


NONE = RuntimeCalibration()


def runtime_calibration(cluster: Cluster) -> RuntimeCalibration:
    """The overheads ``parplan calibrate`` measured for ``cluster`` (none for other clusters)."""
    measured = dict(cluster.meta).get("measured")
    if not isinstance(measured, dict) or "runtime" not in measured:
        return NONE
    return RuntimeCalibration.from_json(
        measured["runtime"], where=f"cluster {cluster.name!r}: meta.measured.runtime"
    )
