"""Training-state memory: parameters, gradients and optimizer state per parameter, and ZeRO sharding.

Bytes per parameter follow Rajbhandari et al. 2020 (ZeRO, section 3.1). Mixed-precision training
(bf16 / fp16 / fp8 compute) keeps 16-bit parameters (2 bytes; fp8 parameters 1 byte), 16-bit
gradients (2) and fp32 optimizer state: a master copy of the parameters (4) plus the optimizer's own
state (Adam: momentum and variance, 4 + 4; SGD with momentum: 4; none: 0). fp32 / tf32 training
keeps fp32 parameters (4) and gradients (4) and no master copy (Adam: 8).
"""

from __future__ import annotations

from dataclasses import dataclass

from parplan.cluster import DTYPE_BYTES
from parplan.errors import InvalidInputError

#: Optimizer name -> fp32 state values per parameter (Adam: momentum + variance).
OPTIMIZER_STATES = {"adam": 2, "adamw": 2, "sgd": 1, "none": 0}


@dataclass(frozen=True, slots=True, kw_only=True)
class StateBytes:
    """Bytes of parameters, gradients and optimizer state (for one device or a whole model)."""

    params: float
    grads: float
    optimizer: float

    def __post_init__(self) -> None:
        for name in ("params", "grads", "optimizer"):
            if not getattr(self, name) >= 0:
                raise InvalidInputError(f"state.{name}: must be >= 0 bytes, got {getattr(self, name)}")

    @property
    def total(self) -> float:
        return self.params + self.grads + self.optimizer


def training_state_bytes(param_bytes: float, *, dtype: str = "bf16", optimizer: str = "adam") -> StateBytes:
    """Static training memory of parameters stored as ``param_bytes`` bytes of ``dtype``.

    Parameters
    ----------
    param_bytes
        Bytes of the parameters in the compute dtype (``num_params * bytes(dtype)``).
    dtype
        Compute dtype; 16/8-bit dtypes mean mixed precision with fp32 master weights.
    optimizer
        One of ``OPTIMIZER_STATES``.

    Returns
    -------
    StateBytes
        E.g. mixed-precision Adam: 2 + 2 + 12 = 16 bytes per parameter; fp32 Adam: 4 + 4 + 8.
    """
    if dtype not in DTYPE_BYTES:
        raise InvalidInputError(f"dtype: unknown {dtype!r}; use one of {', '.join(DTYPE_BYTES)}")
    if optimizer not in OPTIMIZER_STATES:
        raise InvalidInputError(f"optimizer: unknown {optimizer!r}; use one of {', '.join(OPTIMIZER_STATES)}")
    if not param_bytes >= 0:
        raise InvalidInputError(f"param_bytes: must be >= 0, got {param_bytes}")
    num_params = param_bytes / DTYPE_BYTES[dtype]
    states = OPTIMIZER_STATES[optimizer]
    if DTYPE_BYTES[dtype] == 4:
        return StateBytes(params=4 * num_params, grads=4 * num_params, optimizer=4 * states * num_params)
    master = 4 if states else 0  # no optimizer step, no fp32 master copy
    return StateBytes(
        params=param_bytes,
        grads=2 * num_params,
        optimizer=(master + 4 * states) * num_params,
    )


def sharded_state_bytes(state: StateBytes, dp: int, zero_stage: int) -> StateBytes:
    """Per-device share of ``state`` under ZeRO with ``dp`` data-parallel devices.

    Stage 0 replicates everything; stage 1 shards the optimizer state, stage 2 also the gradients,
    stage 3 also the parameters (each sharded part divided by ``dp``).
    """
    if isinstance(dp, bool) or not isinstance(dp, int) or dp < 1:
        raise InvalidInputError(f"dp: must be an integer >= 1, got {dp!r}")
    if zero_stage not in (0, 1, 2, 3):
        raise InvalidInputError(f"zero_stage: must be 0, 1, 2 or 3, got {zero_stage!r}")
    return StateBytes(
        params=state.params / dp if zero_stage >= 3 else state.params,
        grads=state.grads / dp if zero_stage >= 2 else state.grads,
        optimizer=state.optimizer / dp if zero_stage >= 1 else state.optimizer,
    )


#: Components of :class:`MemoryBreakdown`, in display order.
MEMORY_COMPONENTS = ("parameters", "gradients", "optimizer_state", "activations", "buffers")


@dataclass(frozen=True, slots=True, kw_only=True)
class MemoryBreakdown:
    """Bytes per device by component: training state, stored activations and transient buffers.

    ``total`` adds them in the order the frontier's per-operator memory does (state, then
    activations), so an operator's breakdown totals exactly its ``mem_bytes``. ``buffers`` (ZeRO-3
    gather buffers, collective scratch) is 0 while the cost model ignores transient buffers.
    """

    parameters: float = 0.0
    gradients: float = 0.0
    optimizer_state: float = 0.0
    activations: float = 0.0
    buffers: float = 0.0

    def __post_init__(self) -> None:
        for name in MEMORY_COMPONENTS:
            if not getattr(self, name) >= 0:
                raise InvalidInputError(f"memory.{name}: must be >= 0 bytes, got {getattr(self, name)}")

    @classmethod
    def of(cls, state: StateBytes, activations: float, buffers: float = 0.0) -> MemoryBreakdown:
        """The breakdown of ``state`` plus ``activations`` and ``buffers``."""
        return cls(
            parameters=state.params,
            gradients=state.grads,
            optimizer_state=state.optimizer,
            activations=activations,
            buffers=buffers,
        )

    @property
    def state(self) -> float:
        """Parameters, gradients and optimizer state."""
        return self.parameters + self.gradients + self.optimizer_state

    @property
    def total(self) -> float:
        return self.state + self.activations + self.buffers

    def __add__(self, other: MemoryBreakdown) -> MemoryBreakdown:
        return MemoryBreakdown(**{k: getattr(self, k) + getattr(other, k) for k in MEMORY_COMPONENTS})

    def to_json(self) -> dict[str, float]:
        """``{"parameters", "gradients", "optimizer_state", "activations", "buffers"}`` in bytes."""
        return {k: float(getattr(self, k)) for k in MEMORY_COMPONENTS}

    @classmethod
    def from_json(cls, data: dict[str, float], where: str = "memory_breakdown") -> MemoryBreakdown:
        """Read back :meth:`to_json` output (path-qualified errors)."""
        if not isinstance(data, dict):
            raise InvalidInputError(f"{where}: must be a JSON object, got {type(data).__name__}")
        for key in data:
            if key not in MEMORY_COMPONENTS:
                raise InvalidInputError(
                    f"{where}.{key}: unknown component; use {', '.join(MEMORY_COMPONENTS)}"
                )
        values = {}
        for key, v in data.items():
            if isinstance(v, bool) or not isinstance(v, int | float):
                raise InvalidInputError(f"{where}.{key}: must be a number of bytes, got {v!r}")
            values[key] = float(v)
        return cls(**values)
