"""Cluster presets and cluster files (YAML or JSON), with path-qualified validation.

Presets (``list_clusters``): ``8xh100``, ``8xa100``, ``2x8xh100`` and ``local`` (this machine's CPU
cores). The pattern ``[NODES x]COUNTxKIND`` (e.g. ``4xh100``, ``4x8xa100``) builds any number of
H100 / A100 devices, 8 per node. A file looks like::

    name: my-cluster
    devices:                       # a list of devices, or the shorthand below
      - {name: g0, kind: h100, node: 0, peak_flops: {bf16: 989e12}, memory_bytes: 80e9,
         memory_bandwidth_Bps: 3.35e12}
    # devices: {count: 16, per_node: 8, device: {kind: h100, peak_flops: {...}, ...}}
    intra_node: {bandwidth_Bps: 450e9, latency_s: 3e-6}
    inter_node: {bandwidth_Bps: 50e9, latency_s: 5e-6}

Numbers may carry units: ``80GB``, ``80GiB``, ``450GB/s``, ``400Gb/s`` (bits), ``3us``, ``989T``.
"""

from __future__ import annotations

import difflib
import json
import math
import os
import re
from pathlib import Path
from typing import Any

from parplan.cluster import DTYPES, Cluster, DeviceSpec, Link
from parplan.errors import InvalidInputError
from parplan.inputs import read_text

# --------------------------------------------------------------------------- hardware data
# Dense (no sparsity) peak FLOP/s from the NVIDIA H100 SXM5 and A100 SXM4 80GB datasheets.
# Memory: what an "80GB" part really holds (nvidia-smi reports 81,559 MiB on both) less a runtime
# reserve for the CUDA context, NCCL's buffers and allocator fragmentation, so a plan's peak is
# compared with what the allocator can hand out (77.6 GiB), not with 80e9 bytes.
HBM_80GB_BYTES = 81_559 * 2**20
RUNTIME_RESERVE_BYTES = 2 * 2**30
_H100 = {
    "kind": "h100",
    "peak_flops": {"fp8": 1979e12, "bf16": 989e12, "fp16": 989e12, "tf32": 494e12, "fp32": 67e12},
    "memory_bytes": float(HBM_80GB_BYTES - RUNTIME_RESERVE_BYTES),
    "memory_bandwidth_Bps": 3.35e12,
}
_A100 = {
    "kind": "a100",
    "peak_flops": {"bf16": 312e12, "fp16": 312e12, "tf32": 156e12, "fp32": 19.5e12},
    "memory_bytes": float(HBM_80GB_BYTES - RUNTIME_RESERVE_BYTES),
    "memory_bandwidth_Bps": 2.0e12,
}
# Per direction: NVLink 4 (H100) 900 GB/s bidirectional, NVLink 3 (A100) 600 GB/s bidirectional;
# one InfiniBand NIC per GPU: NDR 400 Gb/s (H100 DGX), HDR 200 Gb/s (A100 DGX).
_LINKS = {
    "h100": ({"bandwidth_Bps": 450e9, "latency_s": 3e-6}, {"bandwidth_Bps": 50e9, "latency_s": 5e-6}),
    "a100": ({"bandwidth_Bps": 300e9, "latency_s": 3e-6}, {"bandwidth_Bps": 25e9, "latency_s": 5e-6}),
}
_GPUS = {"h100": _H100, "a100": _A100}
_GPUS_PER_NODE = 8

# The local machine: estimates, replaced by a measured profile for compute. A core with two
# 256-bit FMA pipes does 2 pipes x 8 fp32 lanes x 2 FLOP = 32 FLOP/cycle, at ~2.5 GHz = 80e9 FLOP/s
# (measured on the 2-core AMD EPYC development VM, torch 2.13, one thread: a 1024^3 fp32 matmul ran
# at 60e9 FLOP/s, a 64 MB torch.mul streamed 18e9 B/s, and a gloo send/recv ping-pong between two
# processes took 140 us one way for 4 bytes and moved 1.4e9 B/s for 16-64 MB messages).
LOCAL_CORE_FP32_FLOPS = 80e9
LOCAL_CORE_MEMORY_BANDWIDTH_BPS = 20e9
LOCAL_LINK = {"bandwidth_Bps": 1.4e9, "latency_s": 140e-6}

PRESETS: dict[str, str] = {
    "8xh100": "one DGX H100 node: 8 x H100 SXM 80GB (989 TFLOP/s bf16), NVLink 450 GB/s",
    "8xa100": "one DGX A100 node: 8 x A100 SXM 80GB (312 TFLOP/s bf16), NVLink 300 GB/s",
    "2x8xh100": "two DGX H100 nodes: 16 x H100, NVLink 450 GB/s inside, InfiniBand 50 GB/s across",
    "local": "this machine: each CPU core a device (estimated fp32 FLOP/s), gloo over loopback",
}

_PATTERN = re.compile(r"^(?:(\d+)x)?(\d+)x(h100|a100)$")
_DGX = re.compile(r"^dgx-(h100|a100):(\d+)$")
_LOCAL = re.compile(r"^local:(\d+)$")

#: Patterns of presets sized by the user, with their descriptions (for ``parplan clusters``).
PRESET_PATTERNS: dict[str, str] = {
    "dgx-a100:N": "N DGX A100 nodes: 8 x A100 80GB each, NVLink 300 GB/s, 8 x 200 Gb/s HDR InfiniBand",
    "dgx-h100:N": "N DGX H100 nodes: 8 x H100 80GB each, NVLink 450 GB/s, 8 x 400 Gb/s NDR InfiniBand",
    "local:N": "this machine as N processes sharing its cores (each device's speed scaled to its share)",
    "NODESxCOUNTxKIND": "e.g. 4x8xh100: NODES nodes of COUNT GPUs (h100 or a100)",
}


def list_clusters() -> list[tuple[str, str]]:
    """Built-in cluster presets as (name, description) pairs (sized patterns: ``PRESET_PATTERNS``)."""
    return list(PRESETS.items())


def _gpu_cluster(name: str, kind: str, count: int, per_node: int) -> Cluster:
    intra, inter = _LINKS[kind]
    data = {
        "name": name,
        "devices": {"count": count, "per_node": per_node, "device": _GPUS[kind]},
        "intra_node": intra,
        "inter_node": inter,
        "meta": {"description": PRESETS.get(name, f"{count} x {kind.upper()}"), "preset": name},
    }
    return cluster_from_json(data, where=f"preset {name}")


def _total_ram_bytes() -> float:
    try:
        return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):  # not POSIX: assume 8 GB
        return 8e9


def local_cluster(count: int | None = None) -> Cluster:
    """This machine as ``count`` devices (default ``os.cpu_count()``) of one node.

    ``count`` processes share the cores: each device gets ``cores / count`` of a core's speed and
    bandwidth when there are more devices than cores (estimates stated above), and ``1 / count`` of
    the memory.
    """
    cores = os.cpu_count() or 1
    n = cores if count is None else count
    share = min(1.0, cores / n)
    data = {
        "name": "local" if count is None else f"local:{n}",
        "devices": {
            "count": n,
            "per_node": n,
            "device": {
                "kind": "cpu",
                "peak_flops": {"fp32": LOCAL_CORE_FP32_FLOPS * share},
                "memory_bytes": _total_ram_bytes() / n,
                "memory_bandwidth_Bps": LOCAL_CORE_MEMORY_BANDWIDTH_BPS * share,
            },
        },
        "intra_node": LOCAL_LINK,
        "inter_node": LOCAL_LINK,
        "meta": {
            "description": PRESETS["local"],
            "preset": "local",
            "note": "compute and link speeds are estimates; a measured profile overrides compute times",
        },
    }
    return cluster_from_json(data, where="preset local")


def preset_cluster(name: str) -> Cluster:
    """A preset by name (``list_clusters``) or by the pattern ``[NODES x]COUNTxKIND``."""
    key = name.strip().lower()
    if key == "local":
        return local_cluster()
    local = _LOCAL.match(key)
    if local is not None:
        count = int(local.group(1))
        if not 1 <= count <= 64:
            raise InvalidInputError(f"cluster {name!r}: local:N takes 1 to 64 processes, got {count}")
        return local_cluster(count)
    dgx = _DGX.match(key)
    if dgx is not None:
        kind, nodes = dgx.group(1), int(dgx.group(2))
        if nodes < 1:
            raise InvalidInputError(f"cluster {name!r}: the node count must be >= 1")
        return _gpu_cluster(key, kind, nodes * _GPUS_PER_NODE, _GPUS_PER_NODE)
    m = _PATTERN.match(key)
    if m is None:
        raise InvalidInputError(_unknown_message(name))
    nodes_s, count_s, kind = m.groups()
    count = int(count_s)
    if count < 1 or (nodes_s is not None and int(nodes_s) < 1):
        raise InvalidInputError(f"cluster {name!r}: counts must be >= 1")
    if nodes_s is None:
        return _gpu_cluster(key, kind, count, min(count, _GPUS_PER_NODE))
    return _gpu_cluster(key, kind, int(nodes_s) * count, count)


def _unknown_message(spec: str) -> str:
    close = difflib.get_close_matches(spec.lower(), list(PRESETS), n=3, cutoff=0.5)
    hint = f"did you mean {' or '.join(close)}? " if close else ""
    return (
        f"cluster {spec!r}: not a preset nor an existing file; {hint}"
        f"presets: {', '.join(PRESETS)} (or COUNTxh100, NODESxCOUNTxa100, dgx-a100:NODES, dgx-h100:NODES)"
    )


def load_cluster(spec: str | Path) -> Cluster:
    """A cluster from a preset name or a YAML / JSON file path.

    Raises
    ------
    InvalidInputError
        Unknown name (with close matches), unreadable or malformed file (with the line), or an
        invalid field (with its path, e.g. ``cluster.devices[3].memory_bytes``).
    """
    text = str(spec)
    path = Path(text)
    if isinstance(spec, Path) or path.suffix.lower() in (".yaml", ".yml", ".json") or os.sep in text:
        if not path.exists():
            raise InvalidInputError(f"cluster file {text!r}: does not exist")
        return read_cluster(path)
    key = text.strip().lower()
    # a preset name wins over a file
    if key in PRESETS or _PATTERN.match(key) or _DGX.match(key) or _LOCAL.match(key) or not path.is_file():
        return preset_cluster(text)
    return read_cluster(path)


def read_cluster(path: str | Path) -> Cluster:
    """Read a cluster file (JSON when the suffix is ``.json``, YAML otherwise)."""
    p = Path(path)
    text = read_text(p, "cluster file")
    if p.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InvalidInputError(
                f"cluster file {str(p)!r}: not valid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
            ) from None
    else:
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            raise InvalidInputError(f"cluster file {str(p)!r}: not valid YAML{where}: {problem}") from None
    if not isinstance(data, dict):
        raise InvalidInputError(f"cluster file {str(p)!r}: must hold a mapping with name, devices, links")
    data.setdefault("name", p.stem)
    return cluster_from_json(data)


def write_cluster(cluster: Cluster, path: str | Path) -> None:
    """Write ``cluster`` as JSON (suffix ``.json``) or YAML (otherwise)."""
    p = Path(path)
    data = cluster_to_json(cluster)
    if p.suffix.lower() == ".json":
        p.write_text(json.dumps(data, indent=2) + "\n")
    else:
        import yaml

        p.write_text(yaml.safe_dump(data, sort_keys=False))


# --------------------------------------------------------------------------- to / from JSON
def _device_body(d: DeviceSpec) -> dict[str, Any]:
    return {
        "kind": d.kind,
        "peak_flops": dict(d.peak_flops),
        "memory_bytes": d.memory_bytes,
        "memory_bandwidth_Bps": d.memory_bandwidth_Bps,
    }


def cluster_to_json(cluster: Cluster) -> dict[str, Any]:
    """The file form of ``cluster``: the ``{count, per_node, device}`` shorthand when the devices
    are identical, named ``KIND:INDEX`` and filled node by node, else the full device list."""
    devs = cluster.devices
    per_node = cluster.devices_per_node
    shorthand = (
        cluster.is_homogeneous
        and all(d.kind == devs[0].kind and d.name == f"{d.kind}:{d.index}" for d in devs)
        and all(d.node == d.index // per_node for d in devs)
    )
    devices: Any
    if shorthand:
        devices = {"count": len(devs), "per_node": per_node, "device": _device_body(devs[0])}
    else:
        devices = [{"name": d.name, "node": d.node, **_device_body(d)} for d in devs]
    out: dict[str, Any] = {
        "name": cluster.name,
        "devices": devices,
        "intra_node": {
            "bandwidth_Bps": cluster.intra_node.bandwidth_Bps,
            "latency_s": cluster.intra_node.latency_s,
        },
        "inter_node": {
            "bandwidth_Bps": cluster.inter_node.bandwidth_Bps,
            "latency_s": cluster.inter_node.latency_s,
        },
    }
    if cluster.meta:
        out["meta"] = dict(cluster.meta)
    return out


_SCALE = {"": 1.0, "k": 1e3, "m": 1e6, "g": 1e9, "t": 1e12, "p": 1e15, "ki": 2**10, "mi": 2**20}
_SCALE |= {"gi": 2**30, "ti": 2**40}
_NUMBER = re.compile(r"^\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*([a-zA-Z/]*)\s*$")
_TIME = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}


def _unit_factor(unit: str, quantity: str) -> float | None:
    """Multiplier of a unit suffix for a quantity (bytes, Bps, flops, s), or None when unknown."""
    if quantity == "s":
        return _TIME.get(unit.lower() if unit else "s")
    if quantity == "bytes":
        m = re.fullmatch(r"([kmgtp]i?)?b?", unit.lower())
        return None if m is None else _SCALE[m.group(1) or ""]
    if quantity == "Bps":
        m = re.fullmatch(r"([kKmMgGtT]i?)?([Bb])(?:/s|ps)", unit)
        if unit == "":
            return 1.0
        if m is None:
            return None
        bits = m.group(2) == "b"
        return _SCALE[(m.group(1) or "").lower()] / (8.0 if bits else 1.0)
    m = re.fullmatch(r"([kmgtp])?(?:flops?(?:/s)?)?", unit.lower())  # flops
    return None if m is None else _SCALE[m.group(1) or ""]


def _quantity(value: object, where: str, quantity: str, *, positive: bool = True) -> float:
    """A number, or a string with a unit suffix, checked to be > 0 (or >= 0)."""
    if isinstance(value, bool) or value is None:
        raise InvalidInputError(f"{where}: must be a number, got {value!r}")
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str):
        m = _NUMBER.match(value)
        factor = None if m is None else _unit_factor(m.group(2), quantity)
        if m is None or factor is None:
            raise InvalidInputError(
                f"{where}: cannot read {value!r} as {quantity}; write a number like 80e9"
                + {"bytes": " or 80GB", "Bps": " or 450GB/s / 400Gb/s", "s": " or 3us"}.get(quantity, "")
            )
        number = float(m.group(1)) * factor
    else:
        raise InvalidInputError(f"{where}: must be a number, got {value!r}")
    if not math.isfinite(number):
        raise InvalidInputError(f"{where}: must be a finite number, got {value!r}")
    if positive and not number > 0:
        raise InvalidInputError(f"{where}: must be > 0, got {value!r}")
    if not positive and not number >= 0:
        raise InvalidInputError(f"{where}: must be >= 0, got {value!r}")
    return number


def _int(value: object, where: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InvalidInputError(f"{where}: must be an integer >= {minimum}, got {value!r}")
    return value


def _mapping(value: object, where: str, example: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InvalidInputError(f"{where}: must be a mapping like {example}, got {value!r}")
    return value


def _check_keys(obj: dict[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(obj) - allowed)
    if unknown:
        raise InvalidInputError(f"{where}: unknown key(s) {unknown}; allowed: {', '.join(sorted(allowed))}")


def _device(obj: object, where: str, index: int, default_node: int | None, default_name: str) -> DeviceSpec:
    d = _mapping(obj, where, "{kind: h100, peak_flops: {bf16: 989e12}, memory_bytes: 80e9, ...}")
    _check_keys(d, {"name", "kind", "node", "peak_flops", "memory_bytes", "memory_bandwidth_Bps"}, where)
    for key in ("peak_flops", "memory_bytes", "memory_bandwidth_Bps"):
        if key not in d:
            raise InvalidInputError(f"{where}.{key}: missing")
    kind = d.get("kind", "gpu")
    if not isinstance(kind, str) or not kind:
        raise InvalidInputError(f"{where}.kind: must be a non-empty string, got {kind!r}")
    name = d.get("name", default_name.replace("{kind}", kind))
    if not isinstance(name, str) or not name:
        raise InvalidInputError(f"{where}.name: must be a non-empty string, got {name!r}")
    if "node" in d:
        node = _int(d["node"], f"{where}.node", 0)
    elif default_node is not None:
        node = default_node
    else:
        raise InvalidInputError(f"{where}.node: missing (index of the machine the device sits in)")
    flops_map = _mapping(d["peak_flops"], f"{where}.peak_flops", "{bf16: 989e12}")
    if not flops_map:
        raise InvalidInputError(f"{where}.peak_flops: give at least one dtype, e.g. bf16: 989e12")
    peak = []
    for dtype, value in flops_map.items():
        if dtype not in DTYPES:
            raise InvalidInputError(
                f"{where}.peak_flops: unknown dtype {dtype!r}; use one of {', '.join(DTYPES)}"
            )
        peak.append((dtype, _quantity(value, f"{where}.peak_flops.{dtype}", "flops")))
    return DeviceSpec(
        index=index,
        name=name,
        kind=kind,
        node=node,
        peak_flops=tuple(sorted(peak)),
        memory_bytes=_quantity(d["memory_bytes"], f"{where}.memory_bytes", "bytes"),
        memory_bandwidth_Bps=_quantity(d["memory_bandwidth_Bps"], f"{where}.memory_bandwidth_Bps", "Bps"),
    )


def _link(obj: object, where: str) -> Link:
    d = _mapping(obj, where, "{bandwidth_Bps: 450e9, latency_s: 3e-6}")
    _check_keys(d, {"bandwidth_Bps", "latency_s"}, where)
    if "bandwidth_Bps" not in d:
        raise InvalidInputError(f"{where}.bandwidth_Bps: missing")
    return Link(
        bandwidth_Bps=_quantity(d["bandwidth_Bps"], f"{where}.bandwidth_Bps", "Bps"),
        latency_s=_quantity(d.get("latency_s", 0.0), f"{where}.latency_s", "s", positive=False),
    )


def cluster_from_json(data: object, where: str = "cluster") -> Cluster:
    """Build a cluster from its file form (see the module docstring); errors name the field path.

    ``inter_node`` may be omitted for a single-node cluster (it then equals ``intra_node``).
    """
    d = _mapping(data, where, "{name: .., devices: [..], intra_node: {..}, inter_node: {..}}")
    _check_keys(d, {"name", "devices", "intra_node", "inter_node", "meta"}, where)
    name = d.get("name", "cluster")
    if not isinstance(name, str) or not name:
        raise InvalidInputError(f"{where}.name: must be a non-empty string, got {name!r}")
    if "devices" not in d:
        raise InvalidInputError(f"{where}.devices: missing (a list, or {{count, per_node, device}})")
    raw = d["devices"]
    devices: list[DeviceSpec] = []
    if isinstance(raw, list):
        if not raw:
            raise InvalidInputError(f"{where}.devices: empty; give at least one device")
        for i, item in enumerate(raw):
            devices.append(_device(item, f"{where}.devices[{i}]", i, None, f"{{kind}}:{i}"))
    elif isinstance(raw, dict):
        _check_keys(raw, {"count", "per_node", "device"}, f"{where}.devices")
        count = _int(raw.get("count"), f"{where}.devices.count", 1)
        per_node = _int(raw.get("per_node", count), f"{where}.devices.per_node", 1)
        if "device" not in raw:
            raise InvalidInputError(f"{where}.devices.device: missing (the spec every device shares)")
        if isinstance(raw["device"], dict) and "node" in raw["device"]:
            raise InvalidInputError(f"{where}.devices.device.node: nodes follow from per_node; remove it")
        for i in range(count):
            dev = _device(raw["device"], f"{where}.devices.device", i, i // per_node, f"{{kind}}:{i}")
            devices.append(dev)
    else:
        raise InvalidInputError(
            f"{where}.devices: must be a list of devices or {{count, per_node, device}}, got {raw!r}"
        )
    if "intra_node" not in d:
        raise InvalidInputError(
            f"{where}.intra_node: missing, e.g. {{bandwidth_Bps: 450e9, latency_s: 3e-6}}"
        )
    intra = _link(d["intra_node"], f"{where}.intra_node")
    nodes = {dev.node for dev in devices}
    if "inter_node" in d:
        inter = _link(d["inter_node"], f"{where}.inter_node")
    elif len(nodes) > 1:
        raise InvalidInputError(
            f"{where}.inter_node: missing; the devices sit on {len(nodes)} nodes, so give the link "
            "between nodes, e.g. {bandwidth_Bps: 50e9, latency_s: 5e-6}"
        )
    else:
        inter = intra
    meta = d.get("meta", {})
    meta = _mapping(meta, f"{where}.meta", "{description: ...}")
    return Cluster(
        name=name,
        devices=tuple(devices),
        intra_node=intra,
        inter_node=inter,
        meta=tuple(sorted((str(k), v) for k, v in meta.items())),
    )


def parse_quantity(text: str | float, where: str, quantity: str = "bytes") -> float:
    """Read a user-given quantity such as ``80GB``, ``16GiB``, ``9`` (bytes) or ``500ms`` (s).

    ``quantity`` is one of ``bytes``, ``Bps``, ``s``, ``flops``; a bare number is taken as is
    (plans in abstract units pass plain numbers). Raises InvalidInputError naming ``where``.
    """
    return _quantity(text, where, quantity)
