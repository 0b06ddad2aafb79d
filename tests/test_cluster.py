"""Cluster presets, cluster files (YAML / JSON round trips) and their path-qualified errors."""

from __future__ import annotations

import json
import os

import pytest

from parplan.cluster import Cluster, DeviceSpec, Link
from parplan.cluster_io import (
    LOCAL_CORE_FP32_FLOPS,
    cluster_from_json,
    cluster_to_json,
    list_clusters,
    load_cluster,
    read_cluster,
    write_cluster,
)
from parplan.errors import InvalidInputError


def test_presets_listed_and_loadable():
    names = [name for name, _ in list_clusters()]
    assert names == ["8xh100", "8xa100", "2x8xh100", "local"]
    for name, description in list_clusters():
        assert description
        assert load_cluster(name).name == name


def test_h100_preset_numbers():
    c = load_cluster("8xh100")
    assert c.num_devices == 8 and c.num_nodes == 1 and c.is_homogeneous
    d = c.devices[3]
    assert d.flops("bf16") == 989e12
    assert d.flops("fp8") == 1979e12
    assert d.flops("tf32") == 494e12
    assert d.flops("fp32") == 67e12
    # an 80GB part holds 81,559 MiB (nvidia-smi); 2 GiB stay with the CUDA context, NCCL and the allocator
    assert d.memory_bytes == 81_559 * 2**20 - 2 * 2**30 and d.memory_bandwidth_Bps == 3.35e12
    assert c.intra_node == Link(bandwidth_Bps=450e9, latency_s=3e-6)
    assert c.inter_node == Link(bandwidth_Bps=50e9, latency_s=5e-6)


def test_a100_preset_numbers():
    c = load_cluster("8xa100")
    d = c.devices[0]
    assert (d.flops("bf16"), d.flops("tf32"), d.flops("fp32")) == (312e12, 156e12, 19.5e12)
    # fp8 is not an A100 format: falls back to bf16 tensor cores
    assert d.flops("fp8") == 312e12
    assert d.memory_bandwidth_Bps == 2.0e12
    assert c.intra_node.bandwidth_Bps == 300e9


def test_two_node_preset_has_eight_devices_per_node():
    c = load_cluster("2x8xh100")
    assert c.num_devices == 16 and c.num_nodes == 2
    assert c.nodes == {0: tuple(range(8)), 1: tuple(range(8, 16))}
    assert c.link(0, 7) is c.intra_node and c.link(7, 8) is c.inter_node


def test_pattern_presets():
    c = load_cluster("4xh100")
    assert c.num_devices == 4 and c.num_nodes == 1
    c = load_cluster("16xa100")
    assert c.num_nodes == 2 and c.devices_per_node == 8
    c = load_cluster("3x4xh100")
    assert c.num_devices == 12 and c.num_nodes == 3 and c.devices_per_node == 4


def test_local_preset_uses_this_machine():
    c = load_cluster("local")
    cores = os.cpu_count() or 1
    assert c.num_devices == cores and c.num_nodes == 1
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    assert c.devices[0].memory_bytes == pytest.approx(ram / cores)
    assert c.devices[0].flops("fp32") == LOCAL_CORE_FP32_FLOPS
    assert c.devices[0].flops("bf16") == LOCAL_CORE_FP32_FLOPS  # no bf16 units listed: fp32 fallback
    assert c.devices[0].kind == "cpu"


def test_unknown_preset_suggests_close_names():
    with pytest.raises(InvalidInputError, match=r"'8xh10'.*did you mean 8xh100"):
        load_cluster("8xh10")
    with pytest.raises(InvalidInputError, match="presets: 8xh100, 8xa100, 2x8xh100, local"):
        load_cluster("tpu-pod")


def test_missing_file():
    with pytest.raises(InvalidInputError, match="does not exist"):
        load_cluster("no/such/cluster.yaml")


@pytest.mark.parametrize("preset", ["8xh100", "8xa100", "2x8xh100", "local"])
@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_round_trip_presets(tmp_path, preset, suffix):
    c = load_cluster(preset)
    path = tmp_path / f"c{suffix}"
    write_cluster(c, path)
    back = load_cluster(str(path))
    assert back == c
    assert cluster_from_json(cluster_to_json(c)) == c


def _hetero() -> Cluster:
    devs = (
        DeviceSpec(
            index=0,
            name="big",
            kind="h100",
            node=0,
            peak_flops=(("bf16", 989e12), ("fp32", 67e12)),
            memory_bytes=80e9,
            memory_bandwidth_Bps=3.35e12,
        ),
        DeviceSpec(
            index=1,
            name="small",
            kind="a100",
            node=1,
            peak_flops=(("bf16", 312e12),),
            memory_bytes=40e9,
            memory_bandwidth_Bps=1.6e12,
        ),
    )
    return Cluster(
        name="mixed",
        devices=devs,
        intra_node=Link(bandwidth_Bps=300e9, latency_s=2e-6),
        inter_node=Link(bandwidth_Bps=25e9, latency_s=8e-6),
        meta=(("site", "lab"),),
    )


def test_heterogeneous_round_trip_uses_device_list(tmp_path):
    c = _hetero()
    data = cluster_to_json(c)
    assert isinstance(data["devices"], list) and data["devices"][1]["name"] == "small"
    assert cluster_from_json(json.loads(json.dumps(data))) == c
    write_cluster(c, tmp_path / "m.yml")
    assert read_cluster(tmp_path / "m.yml") == c


def test_shorthand_and_units(tmp_path):
    path = tmp_path / "two.yaml"
    # PyYAML reads 80e9 (no dot) as a string: such strings must still parse as numbers.
    path.write_text(
        "name: two-nodes\n"
        "devices:\n"
        "  count: 4\n"
        "  per_node: 2\n"
        "  device: {kind: h100, peak_flops: {bf16: 989e12, fp8: 1979T}, memory_bytes: 80GB,\n"
        "           memory_bandwidth_Bps: 3.35TB/s}\n"
        "intra_node: {bandwidth_Bps: 450GB/s, latency_s: 3us}\n"
        "inter_node: {bandwidth_Bps: 400Gb/s, latency_s: 5e-6}\n"
    )
    c = load_cluster(str(path))
    assert c.name == "two-nodes" and c.num_devices == 4
    assert [d.node for d in c.devices] == [0, 0, 1, 1]
    assert [d.name for d in c.devices] == ["h100:0", "h100:1", "h100:2", "h100:3"]
    assert c.devices[0].flops("bf16") == 989e12 and c.devices[0].flops("fp8") == 1979e12
    assert c.devices[2].memory_bytes == 80e9
    assert c.devices[2].memory_bandwidth_Bps == pytest.approx(3.35e12)
    assert c.intra_node.bandwidth_Bps == 450e9 and c.intra_node.latency_s == pytest.approx(3e-6)
    assert c.inter_node.bandwidth_Bps == 50e9  # 400 Gbit/s = 50 GB/s


def test_binary_units_and_single_node_default_inter_link():
    c = cluster_from_json(
        {
            "name": "one",
            "devices": [
                {
                    "name": "g",
                    "kind": "gpu",
                    "node": 0,
                    "peak_flops": {"fp32": 1e12},
                    "memory_bytes": "16GiB",
                    "memory_bandwidth_Bps": 1e12,
                }
            ],
            "intra_node": {"bandwidth_Bps": 1e9},
        }
    )
    assert c.devices[0].memory_bytes == 16 * 2**30
    assert c.inter_node == c.intra_node and c.intra_node.latency_s == 0.0


BASE = {
    "name": "x",
    "devices": [
        {
            "name": f"g{i}",
            "kind": "h100",
            "node": i // 2,
            "peak_flops": {"bf16": 1e15},
            "memory_bytes": 8e10,
            "memory_bandwidth_Bps": 3e12,
        }
        for i in range(4)
    ],
    "intra_node": {"bandwidth_Bps": 4.5e11, "latency_s": 3e-6},
    "inter_node": {"bandwidth_Bps": 5e10, "latency_s": 5e-6},
}


def _with(path: tuple, value) -> dict:
    data = json.loads(json.dumps(BASE))
    obj = data
    for key in path[:-1]:
        obj = obj[key]
    if value is KeyError:
        del obj[path[-1]]
    else:
        obj[path[-1]] = value
    return data


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (("devices", 3, "memory_bytes"), -1, r"cluster\.devices\[3\]\.memory_bytes: must be > 0, got -1"),
        (
            ("devices", 1, "memory_bandwidth_Bps"),
            0,
            r"cluster\.devices\[1\]\.memory_bandwidth_Bps: must be > 0",
        ),
        (("devices", 0, "peak_flops"), {"int4": 1e15}, r"devices\[0\]\.peak_flops: unknown dtype 'int4'"),
        (("devices", 0, "peak_flops"), {}, r"devices\[0\]\.peak_flops: give at least one dtype"),
        (("devices", 2, "node"), -1, r"devices\[2\]\.node: must be an integer >= 0, got -1"),
        (("devices", 2, "node"), KeyError, r"devices\[2\]\.node: missing"),
        (("devices", 2, "memory_bytes"), "lots", r"devices\[2\]\.memory_bytes: cannot read 'lots'"),
        (("devices", 0, "colour"), "red", r"devices\[0\]: unknown key\(s\) \['colour'\]"),
        (("intra_node", "bandwidth_Bps"), -1, r"cluster\.intra_node\.bandwidth_Bps: must be > 0, got -1"),
        (("inter_node", "latency_s"), -1e-6, r"cluster\.inter_node\.latency_s: must be >= 0"),
        (("inter_node",), KeyError, r"cluster\.inter_node: missing; the devices sit on 2 nodes"),
        (("devices",), [], r"cluster\.devices: empty"),
        (("devices",), 7, r"cluster\.devices: must be a list of devices or"),
    ],
)
def test_validation_messages(path, value, message):
    with pytest.raises(InvalidInputError, match=message):
        cluster_from_json(_with(path, value))


def test_shorthand_errors():
    with pytest.raises(InvalidInputError, match=r"cluster\.devices\.count: must be an integer >= 1, got 0"):
        cluster_from_json({"devices": {"count": 0, "device": {}}, "intra_node": {"bandwidth_Bps": 1}})
    device = BASE["devices"][0]
    with pytest.raises(InvalidInputError, match=r"devices\.device\.node: nodes follow from per_node"):
        cluster_from_json({"devices": {"count": 2, "device": device}, "intra_node": {"bandwidth_Bps": 1}})


def test_malformed_yaml_reports_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\ndevices:\n  - {kind: h100\nintra_node: {bandwidth_Bps: 1}\n")
    with pytest.raises(InvalidInputError, match=r"not valid YAML at line \d+, column \d+"):
        load_cluster(str(path))


def test_malformed_json_reports_line(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('{\n  "name": "x",\n  "devices": [,]\n}\n')
    with pytest.raises(InvalidInputError, match=r"not valid JSON at line 3, column 15"):
        load_cluster(str(path))


def test_file_must_hold_a_mapping(tmp_path):
    path = tmp_path / "list.yaml"
    path.write_text("- 1\n- 2\n")
    with pytest.raises(InvalidInputError, match="must hold a mapping"):
        load_cluster(str(path))


def test_bare_file_name_in_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_cluster(_hetero(), tmp_path / "tmp.json")
    (tmp_path / "mixed").write_text((tmp_path / "tmp.json").read_text())
    assert load_cluster("mixed") == _hetero()  # no suffix, no slash: still a file
    (tmp_path / "8xh100").write_text("not: a cluster")
    assert load_cluster("8xh100").num_devices == 8  # a preset name wins over a stray file
