"""Clusters: devices (peak FLOP/s per dtype, memory, bandwidth), nodes, and the links between them.

Devices on the same node talk over the node's intra-node link (NVLink, shared memory); devices on
different nodes over the inter-node link (InfiniBand, Ethernet). Heterogeneous devices are allowed.
Presets and the YAML/JSON reader live in ``parplan.cluster_io``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from parplan.errors import InvalidInputError

DTYPES = ("fp32", "tf32", "bf16", "fp16", "fp8")
DTYPE_BYTES = {"fp32": 4, "tf32": 4, "bf16": 2, "fp16": 2, "fp8": 1}


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceSpec:
    """One accelerator (or CPU core group) of a cluster.

    Parameters
    ----------
    peak_flops
        Sorted (dtype, peak FLOP/s) pairs; dense, without sparsity.
    memory_bytes
        Memory capacity.
    memory_bandwidth_Bps
        Peak memory bandwidth in bytes per second.
    node
        Index of the node (machine) the device sits in.
    """

    index: int
    name: str
    kind: str
    node: int
    peak_flops: tuple[tuple[str, float], ...]
    memory_bytes: float
    memory_bandwidth_Bps: float

    def __post_init__(self) -> None:
        where = f"cluster.devices[{self.index}]"
        if self.memory_bytes <= 0:
            raise InvalidInputError(f"{where}.memory_bytes: must be > 0, got {self.memory_bytes}")
        if self.memory_bandwidth_Bps <= 0:
            raise InvalidInputError(
                f"{where}.memory_bandwidth_Bps: must be > 0, got {self.memory_bandwidth_Bps}"
            )
        if not self.peak_flops:
            raise InvalidInputError(f"{where}.peak_flops: give at least one dtype, e.g. bf16: 989e12")
        for dtype, flops in self.peak_flops:
            if dtype not in DTYPES:
                raise InvalidInputError(
                    f"{where}.peak_flops: unknown dtype {dtype!r}; use one of {', '.join(DTYPES)}"
                )
            if flops <= 0:
                raise InvalidInputError(f"{where}.peak_flops.{dtype}: must be > 0, got {flops}")
        if self.node < 0:
            raise InvalidInputError(f"{where}.node: must be >= 0, got {self.node}")

    def flops(self, dtype: str) -> float:
        """Peak FLOP/s for ``dtype``; falls back to the closest wider dtype the device lists."""
        table = dict(self.peak_flops)
        if dtype in table:
            return table[dtype]
        for alt in ("bf16", "fp16", "tf32", "fp32"):
            if alt in table:
                return table[alt]
        return next(iter(table.values()))


@dataclass(frozen=True, slots=True, kw_only=True)
class Link:
    """A link class: ``latency_s`` (alpha) and ``bandwidth_Bps`` (1/beta) per direction."""

    bandwidth_Bps: float
    latency_s: float = 0.0

    def __post_init__(self) -> None:
        if self.bandwidth_Bps <= 0:
            raise InvalidInputError(f"link.bandwidth_Bps: must be > 0, got {self.bandwidth_Bps}")
        if self.latency_s < 0:
            raise InvalidInputError(f"link.latency_s: must be >= 0, got {self.latency_s}")

    def time(self, num_bytes: float) -> float:
        """Alpha-beta time of one message of ``num_bytes``."""
        return self.latency_s + num_bytes / self.bandwidth_Bps


@dataclass(frozen=True, kw_only=True)
class Cluster:
    """Devices plus the intra-node and inter-node link classes."""

    name: str
    devices: tuple[DeviceSpec, ...]
    intra_node: Link
    inter_node: Link
    meta: tuple[tuple[str, Any], ...] = field(default=())

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        if not self.devices:
            raise InvalidInputError(f"cluster {self.name!r}: has no devices")
        for i, d in enumerate(self.devices):
            if d.index != i:
                raise InvalidInputError(f"cluster.devices[{i}].index: must be {i}, got {d.index}")

    @property
    def num_devices(self) -> int:
        return len(self.devices)

    @cached_property
    def nodes(self) -> Mapping[int, tuple[int, ...]]:
        out: dict[int, list[int]] = {}
        for d in self.devices:
            out.setdefault(d.node, []).append(d.index)
        return {k: tuple(v) for k, v in sorted(out.items())}

    @property
    def num_nodes(self) -> int:
        return len(self.nodes)

    @property
    def devices_per_node(self) -> int:
        return max(len(v) for v in self.nodes.values())

    @property
    def is_homogeneous(self) -> bool:
        first = self.devices[0]
        return all(
            (d.peak_flops, d.memory_bytes, d.memory_bandwidth_Bps)
            == (first.peak_flops, first.memory_bytes, first.memory_bandwidth_Bps)
            for d in self.devices
        )

    def link(self, a: int, b: int) -> Link:
        """The link class between devices ``a`` and ``b``."""
        return self.intra_node if self.devices[a].node == self.devices[b].node else self.inter_node

    def group_link(self, group: Sequence[int]) -> Link:
        """The slowest link class inside a device group (the bottleneck of its collectives)."""
        nodes = {self.devices[d].node for d in group}
        return self.intra_node if len(nodes) <= 1 else self.inter_node

    def subset(self, count: int) -> Cluster:
        """The first ``count`` devices as a cluster of their own."""
        if not 1 <= count <= self.num_devices:
            raise InvalidInputError(
                f"cluster {self.name!r}: asked for {count} devices, it has {self.num_devices}"
            )
        return Cluster(
            name=f"{self.name}[:{count}]",
            devices=self.devices[:count],
            intra_node=self.intra_node,
            inter_node=self.inter_node,
            meta=self.meta,
        )
