"""Compute costs: a roofline time for every operator pass on a device, and the ``CostModel`` entry point.

The time of pass ``kind`` of an op on a device is the roofline bound

    ``max(flops / (peak_flops(dtype) * eff_compute), bytes / (memory_bandwidth_Bps * eff_memory))``

with ``eff_compute = Efficiency.matmul`` for tensor-core ops (linear, attention, conv, experts,
fusions) and ``Efficiency.other`` for the rest. A measured :class:`~parplan.cost.profile.Profile`
replaces these times for the ops it lists. This module imports neither torch nor a solver.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from parplan.cluster import DTYPES, Cluster, DeviceSpec
from parplan.cost import comm
from parplan.errors import InvalidInputError
from parplan.graph.ops import Op
from parplan.problem import PassTimes

if TYPE_CHECKING:
    from parplan.cost.profile import OpProfile, Profile

#: Op kinds that run as dense matrix products on tensor cores / BLAS.
MATMUL_KINDS = frozenset({"linear", "attention", "conv", "moe_experts", "fusion"})

#: Passes :func:`op_time` understands: forward, backward-input, backward-weight, full backward.
PASS_KINDS = ("F", "I", "W", "B")


@dataclass(frozen=True, slots=True, kw_only=True)
class Efficiency:
    """Achieved fractions of peak used by the roofline.

    Defaults: ``matmul = 0.6`` because large bf16 GEMMs reach 60-75% of dense tensor-core peak and
    well-tuned LLM training runs at 40-55% model FLOP utilization; ``other = 0.3`` because norms,
    softmax and element-wise ops run on vector units far below tensor-core peak (they are usually
    bandwidth-bound anyway); ``memory = 0.8`` because streaming kernels reach 80-90% of HBM peak.
    """

    matmul: float = 0.6
    other: float = 0.3
    memory: float = 0.8

    def __post_init__(self) -> None:
        for name in ("matmul", "other", "memory"):
            value = getattr(self, name)
            if not 0 < value <= 1:
                raise InvalidInputError(f"efficiency.{name}: must be in (0, 1], got {value}")


DEFAULT_EFFICIENCY = Efficiency()


def _check_kind(kind: str) -> None:
    if kind not in PASS_KINDS:
        raise InvalidInputError(f"pass kind: unknown {kind!r}; use one of {', '.join(PASS_KINDS)}")


def _check_dtype(dtype: str) -> None:
    if dtype not in DTYPES:
        raise InvalidInputError(f"dtype: unknown {dtype!r}; use one of {', '.join(DTYPES)}")


def _work(op: Op, kind: str) -> tuple[float, float]:
    """(FLOPs, bytes) of one pass; B is I + W."""
    if kind == "F":
        return op.fwd_flops, op.fwd_bytes
    if kind == "I":
        return op.bwd_input_flops, op.bwd_input_bytes
    if kind == "W":
        return op.bwd_weight_flops, op.bwd_weight_bytes
    return op.bwd_input_flops + op.bwd_weight_flops, op.bwd_input_bytes + op.bwd_weight_bytes


def op_time(
    op: Op,
    device: DeviceSpec,
    kind: str,
    *,
    dtype: str = "bf16",
    efficiency: Efficiency = DEFAULT_EFFICIENCY,
) -> float:
    """Roofline time of one pass of ``op`` on ``device`` for one micro-batch.

    Parameters
    ----------
    op
        The operator (FLOPs and bytes per pass).
    device
        The device it runs on.
    kind
        ``"F"``, ``"I"``, ``"W"`` or ``"B"`` (= I + W, each pass bounded separately).
    dtype
        Compute dtype: selects the peak FLOP/s (``DeviceSpec.flops`` falls back to a wider dtype
        the device lists).
    efficiency
        Achieved fractions of peak.

    Returns
    -------
    float
        Seconds: ``max(flops / (peak * eff), bytes / (bandwidth * eff_memory))``.
    """
    _check_kind(kind)
    _check_dtype(dtype)
    if kind == "B":
        return op_time(op, device, "I", dtype=dtype, efficiency=efficiency) + op_time(
            op, device, "W", dtype=dtype, efficiency=efficiency
        )
    flops, nbytes = _work(op, kind)
    eff = efficiency.matmul if op.kind in MATMUL_KINDS else efficiency.other
    compute_s = flops / (device.flops(dtype) * eff)
    memory_s = nbytes / (device.memory_bandwidth_Bps * efficiency.memory)
    return max(compute_s, memory_s)


def stage_times(
    ops: Iterable[Op],
    device: DeviceSpec,
    *,
    dtype: str = "bf16",
    efficiency: Efficiency = DEFAULT_EFFICIENCY,
    split_backward: bool = True,
) -> PassTimes:
    """Pass times of a group of ops run one after the other on ``device`` (sums of op times).

    Returns split times (``B = I + W``) when ``split_backward``, else only F and B.
    """
    ops = tuple(ops)
    f = sum(op_time(op, device, "F", dtype=dtype, efficiency=efficiency) for op in ops)
    i = sum(op_time(op, device, "I", dtype=dtype, efficiency=efficiency) for op in ops)
    w = sum(op_time(op, device, "W", dtype=dtype, efficiency=efficiency) for op in ops)
    if split_backward:
        return PassTimes.split(F=f, I=i, W=w)
    return PassTimes(F=f, B=i + w)


class CostModel:
    """Times of op passes and transfers on a cluster: the main entry point of ``parplan.cost``.

    Parameters
    ----------
    cluster
        Devices and links.
    dtype
        Compute dtype of the model (selects peak FLOP/s).
    efficiency
        Achieved fractions of peak for the roofline.
    profile
        Measured op times; they replace the roofline for the ops they list, on every device of a
        homogeneous cluster, and on a heterogeneous cluster only on devices whose ``kind`` equals
        ``profile.device`` (all devices when none matches, since a profile names its device
        loosely, e.g. ``"cpu"``).
    """

    def __init__(
        self,
        cluster: Cluster,
        dtype: str = "bf16",
        efficiency: Efficiency = DEFAULT_EFFICIENCY,
        profile: Profile | None = None,
    ) -> None:
        _check_dtype(dtype)
        self.cluster = cluster
        self.dtype = dtype
        self.efficiency = efficiency
        self.profile = profile
        self._measured: dict[str, OpProfile] = dict(profile.ops) if profile is not None else {}
        if profile is None:
            self._profiled_devices: frozenset[int] = frozenset()
        else:
            matching = frozenset(d.index for d in cluster.devices if d.kind == profile.device)
            if cluster.is_homogeneous or not matching:
                matching = frozenset(range(cluster.num_devices))
            self._profiled_devices = matching

    def __repr__(self) -> str:
        prof = f", profile={len(self._measured)} ops" if self.profile is not None else ""
        return f"CostModel({self.cluster.name!r}, dtype={self.dtype!r}{prof})"

    def _device(self, device: int) -> DeviceSpec:
        if (
            isinstance(device, bool)
            or not isinstance(device, int)
            or not 0 <= device < self.cluster.num_devices
        ):
            raise InvalidInputError(
                f"device: {device!r} is not a device of cluster {self.cluster.name!r} "
                f"(0..{self.cluster.num_devices - 1})"
            )
        return self.cluster.devices[device]

    def uses_profile(self, device: int) -> bool:
        """Whether the profile (if any) applies to device index ``device``."""
        return device in self._profiled_devices

    def measured(self, op: Op, device: int) -> OpProfile | None:
        """The profile entry used for ``op`` on ``device``, or None (roofline)."""
        if device in self._profiled_devices:
            return self._measured.get(op.name)
        return None

    def op_time(self, op: Op, device: int, kind: str) -> float:
        """Seconds of pass ``kind`` (F, I, W, B) of ``op`` on device index ``device``."""
        _check_kind(kind)
        spec = self._device(device)
        m = self.measured(op, device)
        if m is None:
            return op_time(op, spec, kind, dtype=self.dtype, efficiency=self.efficiency)
        if kind == "F":
            return m.F
        if kind == "B":
            return m.backward_s
        if m.I is not None and m.W is not None:
            return m.I if kind == "I" else m.W
        # only B measured: split it in the analytic I:W ratio
        i = op_time(op, spec, "I", dtype=self.dtype, efficiency=self.efficiency)
        w = op_time(op, spec, "W", dtype=self.dtype, efficiency=self.efficiency)
        share = (i if kind == "I" else w) / (i + w) if i + w > 0 else (1.0 if kind == "I" else 0.0)
        return m.backward_s * share

    def act_bytes(self, op: Op, device: int = 0) -> float:
        """Stored activation bytes of ``op`` for one micro-batch (measured when profiled)."""
        m = self.measured(op, device)
        if m is not None and m.act_bytes is not None:
            return m.act_bytes
        return op.act_bytes

    def stage_times(self, ops: Iterable[Op], device: int, *, split_backward: bool = True) -> PassTimes:
        """Pass times of ops run one after the other on device index ``device``."""
        ops = tuple(ops)
        f = sum(self.op_time(op, device, "F") for op in ops)
        i = sum(self.op_time(op, device, "I") for op in ops)
        w = sum(self.op_time(op, device, "W") for op in ops)
        if split_backward:
            return PassTimes.split(F=f, I=i, W=w)
        return PassTimes(F=f, B=i + w)

    def p2p_time(self, src: int, dst: int, nbytes: float) -> float:
        """See :func:`parplan.cost.comm.p2p_time`."""
        return comm.p2p_time(self.cluster, src, dst, nbytes)

    def collective_time(self, kind: str, nbytes: float, group: Sequence[int]) -> float:
        """See :func:`parplan.cost.comm.collective_time`."""
        return comm.collective_time(self.cluster, kind, nbytes, group)
