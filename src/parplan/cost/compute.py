"""Compute costs: the time of every operator pass on a device, and the ``CostModel`` entry point.

One rule prices a pass everywhere (the planner's per-op times, the per-operator frontier and the
whole-model estimate of :mod:`parplan.cost.strategy`): :func:`pass_seconds`, a roofline with
efficiencies by kernel class and device kind (:class:`KernelEfficiency`, :data:`KERNEL_EFFICIENCY`):

- linears, expert GEMMs, fusions, convolutions and routers:
  ``max(flops / (peak * gemm * waves), bytes / (bandwidth * memory))``, where ``waves`` is the
  share of the GPU's SMs the GEMM's 128 x 128 output tiles keep busy (wave quantization,
  :func:`wave_utilization`; 1 on devices without an SM count);
- fused attention (``flash``): ``max(share * flops / (peak * flash), bytes / ...)``, where a causal
  kernel executes half of the full-square FLOPs the graph records (:func:`executed_share`);
  unfused attention: its batched GEMMs, then a softmax streaming the scores (the two added);
- everything else: ``max(flops / (peak * other), bytes / (bandwidth * memory))``.

Float8 training (``gemm_dtype="fp8"``, as torchao runs it) prices the linear layers' GEMMs at the
device's fp8 peak and adds the casts of their operands as memory traffic (:func:`fp8_cast_seconds`);
parameters, activations and the other ops stay in ``dtype``. A measured
:class:`~parplan.cost.profile.Profile` replaces these times for the ops it lists. This module
imports neither torch nor a solver.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from parplan.cluster import DTYPE_BYTES, DTYPES, Cluster, DeviceSpec
from parplan.cost import comm
from parplan.errors import InvalidInputError
from parplan.graph.ops import Op
from parplan.problem import PassTimes

if TYPE_CHECKING:
    from parplan.cost.profile import OpProfile, Profile

#: Op kinds whose GEMMs float8 training runs in fp8 (torchao converts ``nn.Linear`` and grouped
#: expert GEMMs; attention, norms and the rest stay 16-bit).
FP8_KINDS = frozenset({"linear", "moe_experts"})

#: torchao's float8 training casts each GEMM's two operands to fp8 (dynamic per-tensor scaling: an
#: amax reduction, then the cast): read 16-bit, write 8-bit, per operand and pass.
FP8_CAST_BYTES_PER_ELEMENT = 3

#: Passes :func:`op_time` understands: forward, backward-input, backward-weight, full backward.
PASS_KINDS = ("F", "I", "W", "B")


@dataclass(frozen=True, slots=True, kw_only=True)
class KernelEfficiency:
    """Achieved fractions of peak by kernel class.

    ``gemm``: large 16-bit GEMMs (cuBLAS reaches ~80% of dense peak on A100, ~70% on H100 SXM);
    ``flash``: fused attention (FlashAttention-2 reaches ~60% of A100 peak forward + backward and
    ~35% of H100's, which it runs without Hopper's warp-group instructions, Dao 2023 and Shah et al.
    2024); ``other``: vector-unit FLOPs of norms and element-wise ops, far below tensor-core peak
    (they are usually bandwidth-bound anyway); ``memory``: streaming kernels against memory peak
    (80-90% of HBM). Defaults (0.6, 0.6, 0.3, 0.8) serve device kinds without their own entry.
    """

    gemm: float = 0.6
    flash: float = 0.6
    other: float = 0.3
    memory: float = 0.8

    def __post_init__(self) -> None:
        for name in ("gemm", "flash", "other", "memory"):
            value = getattr(self, name)
            if not 0 < value <= 1:
                raise InvalidInputError(f"efficiency.{name}: must be in (0, 1], got {value}")


#: Defaults per device kind (see :class:`KernelEfficiency` for the sources); other kinds (CPUs)
#: use the class defaults.
KERNEL_EFFICIENCY: Mapping[str, KernelEfficiency] = {
    "a100": KernelEfficiency(gemm=0.8, flash=0.6, other=0.3, memory=0.8),
    "h100": KernelEfficiency(gemm=0.7, flash=0.35, other=0.3, memory=0.8),
}

#: Streaming multiprocessors per GPU kind (NVIDIA A100 and H100 SXM datasheets).
SM_COUNT: Mapping[str, int] = {"a100": 108, "h100": 132}

#: The output tile of a tensor-core GEMM kernel, for wave quantization.
GEMM_TILE = 128

#: Op kinds priced as GEMMs (with wave quantization).
GEMM_KINDS = frozenset({"linear", "moe_experts", "fusion", "conv", "moe_router"})


def kernel_efficiency(device: DeviceSpec) -> KernelEfficiency:
    """The efficiencies for ``device``'s kind (the class defaults for unknown kinds)."""
    return KERNEL_EFFICIENCY.get(device.kind, KernelEfficiency())


def wave_utilization(m: float, n: float, sm_count: int | None) -> float:
    """Fraction of SM time a GEMM with an ``m x n`` output keeps busy (1.0 without an SM count)."""
    if not sm_count or m <= 0 or n <= 0:
        return 1.0
    tiles = math.ceil(m / GEMM_TILE) * math.ceil(n / GEMM_TILE)
    waves = math.ceil(tiles / sm_count)
    return tiles / (waves * sm_count)


def op_tokens(op: Op) -> int:
    """Rows of the op's GEMMs: ``batch x seq`` from its attributes (1 when it records neither)."""
    attr = op.attr
    return int(attr.get("batch", 1)) * int(attr.get("seq", 1))


def _check_kind(kind: str) -> None:
    if kind not in PASS_KINDS:
        raise InvalidInputError(f"pass kind: unknown {kind!r}; use one of {', '.join(PASS_KINDS)}")


def _check_dtype(dtype: str) -> None:
    if dtype not in DTYPES:
        raise InvalidInputError(f"dtype: unknown {dtype!r}; use one of {', '.join(DTYPES)}")


def check_gemm_dtype(gemm_dtype: str | None, cluster: Cluster, profile: Profile | None = None) -> None:
    """Refuse a GEMM dtype other than fp8, fp8 on devices that list no fp8 peak, or fp8 with a
    profile (its times were measured in the storage dtype, not with fp8 GEMMs)."""
    if gemm_dtype not in (None, "fp8"):
        raise InvalidInputError(f"gemm_dtype: only fp8 runs GEMMs apart from the dtype, got {gemm_dtype!r}")
    if gemm_dtype is None:
        return
    if profile is not None:
        raise InvalidInputError(
            f"--dtype {gemm_dtype} with --profile: the profile's op times were measured in {profile.dtype}, "
            f"not with {gemm_dtype} GEMMs; drop --profile (the roofline prices {gemm_dtype}) or plan in "
            "the profile's dtype"
        )
    for device in cluster.devices:
        listed = [d for d, _ in device.peak_flops]
        if gemm_dtype not in listed:
            raise InvalidInputError(
                f"--dtype {gemm_dtype}: {device.kind} devices of cluster {cluster.name!r} list no {gemm_dtype} "
                f"peak (they list {', '.join(listed)}); use bf16, or a cluster whose devices have fp8 "
                "tensor cores (h100)"
            )


def fp8_cast_seconds(nbytes: float, dtype: str, device: DeviceSpec, memory_efficiency: float) -> float:
    """Seconds of casting a float8 GEMM pass's operands: ``nbytes`` (its inputs, weights and output
    in ``dtype``) as elements, :data:`FP8_CAST_BYTES_PER_ELEMENT` bytes of traffic each."""
    elements = nbytes / DTYPE_BYTES.get(dtype, 2)
    return elements * FP8_CAST_BYTES_PER_ELEMENT / (device.memory_bandwidth_Bps * memory_efficiency)


def executed_share(op: Op) -> float:
    """The share of an op's recorded FLOPs its kernel executes: the graph records attention's full
    square (as MFU counts it), a fused causal kernel skips the masked half (Dao 2023)."""
    return 0.5 if op.kind == "attention" and op.attr.get("flash") and op.attr.get("causal") else 1.0


def _work(op: Op, kind: str) -> tuple[float, float]:
    """(FLOPs, bytes) of one pass; B is I + W."""
    if kind == "F":
        return op.fwd_flops, op.fwd_bytes
    if kind == "I":
        return op.bwd_input_flops, op.bwd_input_bytes
    if kind == "W":
        return op.bwd_weight_flops, op.bwd_weight_bytes
    return op.bwd_input_flops + op.bwd_weight_flops, op.bwd_input_bytes + op.bwd_weight_bytes


def pass_seconds(
    op: Op,
    flops: float,
    nbytes: float,
    device: DeviceSpec,
    *,
    dtype: str,
    efficiency: KernelEfficiency,
    out_features: int | None = None,
    gemm_dtype: str | None = None,
) -> float:
    """Seconds of one pass of ``op`` doing ``flops`` and moving ``nbytes`` on ``device`` (the rule of
    the module docstring). ``out_features``: the GEMM's output width on this device (default: the
    op's ``out_features``; a column-parallel shard has less)."""
    eff = efficiency
    memory_s = nbytes / (device.memory_bandwidth_Bps * eff.memory)
    peak = device.flops(dtype)
    if op.kind == "attention":
        if op.attr.get("flash"):
            return max(executed_share(op) * flops / (peak * eff.flash), memory_s)
        # unfused: batched GEMMs over the full square, then a softmax kernel streaming the scores
        return flops / (peak * eff.gemm) + memory_s
    if op.kind in GEMM_KINDS:
        out = int(op.attr.get("out_features", 0)) if out_features is None else out_features
        util = wave_utilization(op_tokens(op), out, SM_COUNT.get(device.kind))
        if gemm_dtype is not None and op.kind in FP8_KINDS:
            cast_s = fp8_cast_seconds(nbytes, dtype, device, eff.memory)
            return max(flops / (device.flops(gemm_dtype) * eff.gemm * util), memory_s) + cast_s
        return max(flops / (peak * eff.gemm * util), memory_s)
    return max(flops / (peak * eff.other), memory_s)


def op_time(
    op: Op,
    device: DeviceSpec,
    kind: str,
    *,
    dtype: str = "bf16",
    efficiency: KernelEfficiency | None = None,
    gemm_dtype: str | None = None,
) -> float:
    """Time of one pass of ``op`` on ``device`` for one micro-batch (:func:`pass_seconds`).

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
        Achieved fractions of peak (default: :func:`kernel_efficiency` of the device's kind).
    gemm_dtype
        ``"fp8"``: float8 training; the GEMMs of :data:`FP8_KINDS` ops run at the fp8 peak, plus
        the casts of their operands (:func:`fp8_cast_seconds`).
    """
    _check_kind(kind)
    _check_dtype(dtype)
    if kind == "B":
        return op_time(op, device, "I", dtype=dtype, efficiency=efficiency, gemm_dtype=gemm_dtype) + op_time(
            op, device, "W", dtype=dtype, efficiency=efficiency, gemm_dtype=gemm_dtype
        )
    flops, nbytes = _work(op, kind)
    eff = efficiency or kernel_efficiency(device)
    return pass_seconds(op, flops, nbytes, device, dtype=dtype, efficiency=eff, gemm_dtype=gemm_dtype)


def stage_times(
    ops: Iterable[Op],
    device: DeviceSpec,
    *,
    dtype: str = "bf16",
    efficiency: KernelEfficiency | None = None,
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
        Achieved fractions of peak (default: each device kind's, :data:`KERNEL_EFFICIENCY`).
    profile
        Measured op times; they replace the roofline for the ops they list, on every device of a
        homogeneous cluster, and on a heterogeneous cluster only on devices whose ``kind`` equals
        ``profile.device`` (all devices when none matches, since a profile names its device
        loosely, e.g. ``"cpu"``).
    gemm_dtype
        ``"fp8"``: float8 training (see :func:`op_time`); not with a profile, whose times hold for
        the dtype they were measured in.
    """

    def __init__(
        self,
        cluster: Cluster,
        dtype: str = "bf16",
        efficiency: KernelEfficiency | None = None,
        profile: Profile | None = None,
        gemm_dtype: str | None = None,
    ) -> None:
        _check_dtype(dtype)
        check_gemm_dtype(gemm_dtype, cluster, profile)
        self.cluster = cluster
        self.dtype = dtype
        self.gemm_dtype = gemm_dtype
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
        gemm = f", gemm_dtype={self.gemm_dtype!r}" if self.gemm_dtype is not None else ""
        return f"CostModel({self.cluster.name!r}, dtype={self.dtype!r}{gemm}{prof})"

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
            return op_time(
                op, spec, kind, dtype=self.dtype, efficiency=self.efficiency, gemm_dtype=self.gemm_dtype
            )
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
