"""Issue 12: a table of bad inputs over every command and file format, each answered with one message.

Every row must end with exit 2, 3 or 4 (never 1, our own bugs), print no traceback, print at most one
message line (typer's usage box counted as one), and, with ``--json``, print one strict JSON document
on stdout holding ``error``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from parplan.cli import app

runner = CliRunner()

SYN = ["--pp", "2", "-m", "2", "--costs", "F=1,I=1,W=1"]


def _plan_doc() -> dict[str, Any]:
    """A valid two-device 1F1B plan (F, B actions), built by hand so the table needs no solver."""
    stage = {"cost": {"F": 1.0, "B": 2.0}, "act_mem": 1.0, "wgrad_mem": 0.0, "param_mem": 0.0, "ops": []}
    acts = []
    t = {0: 0.0, 1: 0.0}
    # device 0: F0 F1 .. B0 B1 ; device 1: F0 B0 F1 B1, times computed for a chain of 2 stages
    seq = [
        (0, 0, "F", 0, 0, 1),
        (0, 0, "F", 1, 1, 2),
        (1, 1, "F", 0, 1, 2),
        (1, 1, "B", 0, 2, 4),
        (1, 1, "F", 1, 4, 5),
        (0, 0, "B", 0, 4, 6),
        (1, 1, "B", 1, 5, 7),
        (0, 0, "B", 1, 7, 9),
    ]
    del t
    for dev, st, kind, mb, s, e in seq:
        acts.append({"device": dev, "stage": st, "kind": kind, "microbatch": mb, "start": s, "end": e})
    return {
        "format": "parplan.plan/1",
        "name": "hand",
        "time_unit": "unit",
        "memory_unit": "unit",
        "split_backward": False,
        "placement": "linear",
        "chunks": 1,
        "devices": [{"index": i, "name": f"d{i}", "memory_limit": None} for i in range(2)],
        "stages": [{**stage, "index": i, "device": i, "name": f"s{i}"} for i in range(2)],
        "edges": [{"src": 0, "dst": 1, "comm": 0.0}],
        "microbatches": [{"index": j, "stages": [0, 1]} for j in range(2)],
        "actions": acts,
    }


def _plan_variant(fn: Any) -> str:
    d = _plan_doc()
    fn(d)
    return json.dumps(d)


def _set(path: tuple[Any, ...], value: Any) -> Any:
    def fn(d: Any) -> None:
        for k in path[:-1]:
            d = d[k]
        d[path[-1]] = value

    return fn


GRAPH = {
    "format": "parplan.graph/1",
    "name": "tiny",
    "ops": [
        {"name": "a", "kind": "linear", "fwd_flops": 1e9, "out_bytes": 8},
        {"name": "b", "kind": "linear", "fwd_flops": 2e9},
        {"name": "c", "kind": "loss"},
    ],
    "edges": [{"src": "a", "dst": "b"}, {"src": "b", "dst": "c"}],
}
CLUSTER_YAML = (
    "name: two\ndevices:\n  count: 2\n  device: {{kind: h100, peak_flops: {{bf16: 989e12}}, "
    "memory_bytes: {mem}, memory_bandwidth_Bps: 3.35TB/s}}\nintra_node: {{bandwidth_Bps: 450GB/s, latency_s: 3us}}\n"
)
PROFILE = {
    "format": "parplan.profile/1",
    "device": "cpu",
    "dtype": "fp32",
    "ops": {"a": {"F": 1e-3, "B": 2e-3}},
}
BINARY = bytes(range(256)) * 8
LATIN1 = '{"format": "parplan.plan/1", "name": "caf\u00e9"}'.encode("latin-1")

# name -> file content (str: written as UTF-8 text, bytes: written raw)
FILES: dict[str, str | bytes] = {
    "binary.json": BINARY,
    "latin1.json": LATIN1,
    "empty.json": "",
    "broken.json": '{"format": ',
    "list.json": "[1, 2]",
    "null.json": "null",
    "brackets[x].json": '{"name": "[/x]"}',
    "binary.yaml": BINARY,
    "latin1.yaml": "name: caf\u00e9\n".encode("latin-1"),
    "mem_inf.yaml": CLUSTER_YAML.format(mem=".inf"),
    "mem_nan.yaml": CLUSTER_YAML.format(mem=".nan"),
    "mem_neg.yaml": CLUSTER_YAML.format(mem="-1"),
    "mem_huge.yaml": CLUSTER_YAML.format(mem="1e999"),
    "mem_text.yaml": CLUSTER_YAML.format(mem="lots"),
    "mem_bracket.yaml": CLUSTER_YAML.format(mem="'[/x]'"),
    "list.yaml": "- 1\n- 2\n",
    "broken.yaml": "name: [\n",
    "binary.fjs": BINARY,
    "latin1.fjs": "2 2 1\n\xe9\n".encode("latin-1"),
    "empty.fjs": "",
    "inf.fjs": "2 2 1\n2 2 1 1e999 2 3 1 2 2\n2 1 1 3 2 1 1 2 2\n",
    "nan.fjs": "2 2 1\n2 2 1 nan 2 3 1 2 2\n2 1 1 3 2 1 1 2 2\n",
    "neg.fjs": "2 2 1\n2 2 1 -2 2 3 1 2 2\n2 1 1 3 2 1 1 2 2\n",
    "machine9.fjs": "2 2 1\n2 1 9 2 1 2 2\n2 1 1 3 1 2 2\n",
    "short.fjs": "2 2 1\n2 2 1 2\n",
    "words.fjs": "two jobs\nand machines\n",
    "header.txt": "3 2\n0 1 1 2\n",
    "inf.txt": "1 2\n0 1e999 1 2\n",
    "nan.txt": "1 2\n0 nan 1 2\n",
    "binary.txt": BINARY,
    "graph_inf.json": json.dumps(
        {**GRAPH, "ops": [{**GRAPH["ops"][0], "fwd_flops": float("inf")}, *GRAPH["ops"][1:]]}
    ),
    "graph_neg.json": json.dumps({**GRAPH, "ops": [{**GRAPH["ops"][0], "fwd_flops": -5}, *GRAPH["ops"][1:]]}),
    "graph_kind.json": json.dumps({**GRAPH, "ops": [{**GRAPH["ops"][0], "kind": "[/x]"}, *GRAPH["ops"][1:]]}),
    "graph_cycle.json": json.dumps({**GRAPH, "edges": [*GRAPH["edges"], {"src": "c", "dst": "a"}]}),
    "graph_edge.json": json.dumps({**GRAPH, "edges": [{"src": "a", "dst": "zz"}]}),
    "profile_nan.json": json.dumps({**PROFILE, "ops": {"a": {"F": float("nan"), "B": 1}}}),
    "profile_neg.json": json.dumps({**PROFILE, "ops": {"a": {"F": -1, "B": 1}}}),
    "profile_fmt.json": json.dumps({**PROFILE, "format": "x"}),
    "plan_ok.json": json.dumps(_plan_doc()),
    "plan_nan.json": _plan_variant(_set(("actions", 0, "start"), float("nan"))),
    "plan_inf.json": _plan_variant(_set(("actions", 7, "end"), float("inf"))),
    "plan_dev17.json": _plan_variant(_set(("actions", 0, "device"), 17)),
    "plan_stage99.json": _plan_variant(_set(("actions", 1, "stage"), 99)),
    "plan_mb99.json": _plan_variant(_set(("actions", 1, "microbatch"), 99)),
    "plan_mb_half.json": _plan_variant(_set(("actions", 1, "microbatch"), 1.5)),
    "plan_mb_neg.json": _plan_variant(_set(("actions", 1, "microbatch"), -1)),
    "plan_kind.json": _plan_variant(_set(("actions", 1, "kind"), "[/x]")),
    "plan_start_text.json": _plan_variant(_set(("actions", 1, "start"), "soon")),
    "plan_overlap.json": _plan_variant(_set(("actions", 1, "start"), 0.5)),
    "plan_missing.json": _plan_variant(lambda d: d["actions"].pop()),
    "plan_format.json": _plan_variant(_set(("format",), "parplan.plan/9")),
    "plan_no_actions.json": _plan_variant(lambda d: d.pop("actions")),
    "plan_cost_nan.json": _plan_variant(_set(("stages", 0, "cost", "F"), float("nan"))),
    "plan_cost_neg.json": _plan_variant(_set(("stages", 0, "cost", "F"), -1)),
    "plan_cost_text.json": _plan_variant(_set(("stages", 0, "cost", "F"), "[/x]")),
    "plan_stage_dev9.json": _plan_variant(_set(("stages", 1, "device"), 9)),
    "plan_mem_nan.json": _plan_variant(_set(("devices", 0, "memory_limit"), float("nan"))),
    "plan_edge_cycle.json": _plan_variant(lambda d: d["edges"].append({"src": 1, "dst": 0, "comm": 0})),
    "plan_comm_inf.json": _plan_variant(_set(("edges", 0, "comm"), float("inf"))),
    "plan_devices_text.json": _plan_variant(_set(("devices",), "two")),
    "plan_route99.json": _plan_variant(_set(("microbatches", 0, "stages"), [0, 99])),
}
PLAN_BAD = [
    "binary.json",
    "latin1.json",
    "empty.json",
    "broken.json",
    "list.json",
    "null.json",
    "brackets[x].json",
    "missing[/x].json",
    *[n for n in FILES if n.startswith("plan_") and n != "plan_ok.json"],
]
PROBLEM_BAD = [
    n
    for n in PLAN_BAD
    if n
    not in (
        "plan_overlap.json",
        "plan_missing.json",
        "plan_nan.json",
        "plan_inf.json",
        "plan_dev17.json",
        "plan_stage99.json",
        "plan_mb99.json",
        "plan_mb_half.json",
        "plan_mb_neg.json",
        "plan_kind.json",
        "plan_start_text.json",
        "plan_no_actions.json",
    )
]
CLUSTER_BAD = ["binary.yaml", "latin1.yaml", "list.yaml", "broken.yaml", "binary.json", "latin1.json"] + [
    n for n in FILES if n.startswith("mem_")
]
FJSP_BAD = [n for n in FILES if n.endswith((".fjs", ".txt"))]
GRAPH_BAD = ["binary.json", "latin1.json", "empty.json", "list.json", "missing[/x].json"] + [
    n for n in FILES if n.startswith("graph_")
]
PROFILE_BAD = ["binary.json", "latin1.json", "empty.json", "list.json"] + [
    n for n in FILES if n.startswith("profile_")
]
MODEL = ["--model", "gpt-tiny", "--pp", "2", "-m", "2"]

# (command args with {f:NAME} placeholders for generated files, whether the command takes --json)
ROWS: list[tuple[list[str], bool]] = []
for name in PLAN_BAD:
    ROWS += [(["check", f"{{f:{name}}}"], True), (["show", f"{{f:{name}}}"], True)]
    ROWS += [(["run", f"{{f:{name}}}", "--timeout", "5"], True)]
for name in [*PLAN_BAD[:8], "plan_overlap.json", "plan_missing.json"]:
    ROWS += [(["show", f"{{f:{name}}}", "--csv", "{d}/o.csv", "--gantt", "{d}/o.png"], True)]
for name in PROBLEM_BAD:
    ROWS += [(["compare", "--problem", f"{{f:{name}}}"], True)]
ROWS += [(["check", "{f:plan_overlap.json}", "--problem", f"{{f:{name}}}"], True) for name in PROBLEM_BAD[:8]]
for name in CLUSTER_BAD:
    ROWS += [(["compare", *MODEL, "--cluster", f"{{f:{name}}}"], True)]
    ROWS += [(["frontier", "--model", "gpt-tiny", "--cluster", f"{{f:{name}}}"], True)]
for name in FJSP_BAD:
    ROWS += [(["fjsp", f"{{f:{name}}}", "--time-limit", "2", "--workers", "1"], True)]
for name in GRAPH_BAD:
    ROWS += [(["compare", "--graph", f"{{f:{name}}}", "--devices", "2", "--cluster", "8xh100"], True)]
    ROWS += [(["compare", "--model", f"{{f:{name}}}", "--cluster", "8xh100", "--pp", "2", "-m", "2"], True)]
for name in PROFILE_BAD:
    ROWS += [(["compare", *MODEL, "--cluster", "local", "--profile", f"{{f:{name}}}"], True)]
ROWS += [
    (["run", "--model", "gpt-tiny", "--cluster", "local", "--pp", "2", "--profile", "{f:binary.json}"], True)
]

OPTION_ROWS: list[list[str]] = [
    # costs, comm, memory: non-finite, negative, zero, malformed
    *[
        ["compare", "--pp", "2", "-m", "2", "--costs", c]
        for c in (
            "F=inf,I=1,W=1",
            "F=nan,I=1,W=1",
            "F=1e999,I=1,W=1",
            "F=-1,I=1,W=1",
            "F=0,I=0,W=0",
            "F=0,B=0",
            "F=x,I=1,W=1",
            "",
            "F=1,,W=1",
            "G=1",
            "[/x]",
            "F=1,I=1,W=1,F=2",
            "F=-inf,B=1",
        )
    ],
    *[
        [*["compare", *SYN], opt, v]
        for opt in ("--comm", "--act-mem", "--wgrad-mem")
        for v in ("inf", "nan", "-1")
    ],
    *[
        ["compare", *SYN, "--memory-limit", v, "--with-plan", "--time-limit", "2"]
        for v in (
            "nan",
            "inf",
            "-1",
            "40XB",
            "[/x]",
            "0",
        )
    ],
    *[["compare", *SYN, "--schedules", v] for v in ("", ",", "[/x]", "nope", "gpipe,nope")],
    *[["compare", "--pp", v, "-m", "2", "--costs", "F=1,B=2"] for v in ("0", "-1", "x")],
    *[["compare", "--pp", "2", "-m", v, "--costs", "F=1,B=2"] for v in ("0", "-3", "1.5")],
    ["compare", *SYN, "--placement", "[/x]"],
    ["compare", *SYN, "--placement", "spiral"],
    ["compare", *SYN, "--placement", "interleaved", "--chunks", "0"],
    *[["compare", *SYN, "--stage-costs", v] for v in ("F=inf;", "F=nan;F=1", ";;;;;F=1", "[/x];", "F=-1;")],
    *[
        ["compare", "--random-dag", v, "--devices", "2"]
        for v in ("ops=-1", "ops=x", "[/x]", "ops=0", "seed=nan")
    ],
    ["compare", "--random-dag", "ops=10", "--devices", "0"],
    *[
        ["compare", "--model", v, "--cluster", "8xh100", "--pp", "2", "-m", "2"]
        for v in ("[/x]", "no[/such].json", "nope")
    ],
    ["compare", "--model", "gpt-tiny", "--cluster", "[/x]", "--pp", "2", "-m", "2"],
    ["compare", "--model", "gpt-tiny", "--cluster", "8xh100", "--pp", "2", "-m", "2", "--dtype", "[/x]"],
    ["compare", "--model", "gpt-tiny", "--cluster", "8xh100", "--pp", "2", "-m", "2", "--seq-len", "0"],
    ["compare", *SYN, "--model", "gpt-tiny"],
    ["compare"],
    # plan: limits, workers, contradictory options
    *[["plan", *SYN, "--time-limit", v] for v in ("0", "-1", "nan", "inf")],
    *[["plan", *SYN, "--workers", v, "--time-limit", "2"] for v in ("0", "-4")],
    ["plan", *SYN, "--deterministic", "--workers", "4", "--time-limit", "2"],
    ["plan", *SYN, "--objective", "[/x]", "--time-limit", "2"],
    ["plan", *SYN, "--objective", "speed", "--time-limit", "2"],
    ["plan", *SYN, "--backend", "[/x]", "--time-limit", "2"],
    ["plan", *SYN, "--memory-limit", "0.5", "--time-limit", "2"],
    ["plan", *SYN, "--memory-limit", "40GB", "--time-limit", "2"],
    ["plan", "--pp", "2", "-m", "2", "--costs", "F=0,I=0,W=0", "--time-limit", "2"],
    ["plan", "--pp", "2", "-m", "2", "--costs", "F=inf,I=1,W=1", "--time-limit", "2"],
    ["plan", "--pp", "2", "-m", "2", "--costs", "F=1,I=1,W=1", "--comm", "nan", "--time-limit", "2"],
    ["plan", *SYN, "--devices-per-stage", "2", "--time-limit", "2"],
    ["plan", "--pp", "1000", "--microbatches", "10000", "--time-limit", "5"],
    ["compare", "--pp", "1000", "--microbatches", "10000", "--with-plan", "--schedules", "gpipe"],
    ["compare", *SYN, "--memory-limit", "4GB"],
    ["plan", "--random-dag", "ops=10000000", "--devices", "2", "--time-limit", "5"],
    [
        "plan",
        "--model",
        "gpt-tiny",
        "--cluster",
        "8xh100",
        "--pp",
        "2",
        "-m",
        "2",
        "--num-layers",
        "10000000",
    ],
    ["frontier", "--model", "gpt-tiny", "--cluster", "8xh100", "--num-layers", "10000000"],
    # fjsp options
    *[["fjsp", "{data}/tiny.fjs", "--time-limit", v] for v in ("-3", "0", "-1", "nan", "inf")],
    *[["fjsp", "{data}/tiny.fjs", "--time-limit", "2", "--workers", v] for v in ("0", "-4")],
    ["fjsp", "{d}", "--time-limit", "2"],
    ["fjsp", "no[/such].fjs"],
    # frontier options
    [
        "frontier",
        "--model",
        "gpt-tiny",
        "--cluster",
        "8xh100",
        "--memory-limit",
        "40GB",
        "--time-limit",
        "1s",
    ],
    ["frontier", "--model", "gpt-tiny", "--cluster", "8xh100", "--time-limit", "1s", "--time-target", "2s"],
    *[["frontier", "--model", "gpt-tiny", "--cluster", "8xh100", "--devices", v] for v in ("0", "-2", "100")],
    *[
        ["frontier", "--model", "gpt-tiny", "--cluster", "8xh100", "--mesh", v]
        for v in ("[/x]", "0x4", "axb")
    ],
    *[
        ["frontier", "--model", "gpt-tiny", "--cluster", "8xh100", "--epsilon", v]
        for v in ("nan", "-1", "inf")
    ],
    ["frontier", "--model", "gpt-tiny", "--cluster", "8xh100", "--microbatches", "0"],
    ["frontier", "--model", "gpt-tiny", "--cluster", "8xh100", "--memory-limit", "nan"],
    ["frontier", "--model", "gpt-tiny", "--cluster", "8xh100", "--time-limit", "-1s"],
    ["frontier", "--model", "gpt-tiny", "--cluster", "8xh100", "--time-target", "nan"],
    ["frontier", "--model", "[/x]", "--cluster", "8xh100"],
    # check / show / run of missing things
    ["check", "no[/such].json"],
    ["check", "{d}"],
    ["show", "no[/such].json"],
    ["run", "no[/such].json"],
    ["run", "{f:plan_overlap.json}", "--pp", "2"],
    ["run", "--model", "[/x]", "--cluster", "local", "--pp", "2", "-m", "2"],
    ["run"],
    *[["run", "{f:plan_ok.json}", opt, v] for opt in ("--steps", "--timeout") for v in ("0", "-1")],
    ["run", "{f:plan_ok.json}", "--timeout", "nan"],
    ["run", "--model", "gpt-tiny", "--cluster", "local", "--pp", "2", "-m", "2", "--time-limit", "-1"],
    ["profile", "--model", "[/x]"],
    ["profile", "--model", "gpt-tiny", "--repeats", "0"],
    ["profile", "--model", "gpt-tiny", "--device", "[/x]"],
]
ROWS += [(r, True) for r in OPTION_ROWS]


def _expand(args: list[str], files: Path) -> list[str]:
    data = Path(__file__).parent / "data"
    outv = []
    for a in args:
        a = a.replace("{d}", str(files)).replace("{data}", str(data))
        if a.startswith("{f:"):
            a = str(files / a[3:-1])
        outv.append(a)
    return outv


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("bad")
    for name, content in FILES.items():
        if isinstance(content, bytes):
            (d / name).write_bytes(content)
        else:
            (d / name).write_text(content, encoding="utf-8")
    return d


def _strict(text: str) -> Any:
    def refuse(c: str) -> Any:
        raise ValueError(f"non-strict JSON constant {c}")

    return json.loads(text, parse_constant=refuse)


def _message_lines(output: str) -> int:
    lines = [ln for ln in output.splitlines() if ln.strip()]
    if any(ln.startswith("Usage:") for ln in lines):
        return 1  # typer's usage box
    return len(lines)


def _ids() -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for args, _ in ROWS:
        key = " ".join(a.replace("{f:", "").replace("}", "") for a in args)[:70]
        seen[key] = seen.get(key, 0) + 1
        out.append(key if seen[key] == 1 else f"{key}#{seen[key]}")
    return out


def test_table_is_large_enough() -> None:
    assert len(ROWS) >= 150


@pytest.mark.parametrize(("args", "has_json"), ROWS, ids=_ids())
def test_bad_input(args: list[str], has_json: bool, files: Path) -> None:
    argv = _expand(args, files)
    result = runner.invoke(app, argv)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.exit_code in (2, 3, 4), (result.exit_code, result.output)
    assert "Traceback" not in result.output
    assert _message_lines(result.output) <= 1, result.output
    if has_json:
        result = runner.invoke(app, [*argv, "--json"])
        assert result.exit_code in (2, 3, 4), (result.exit_code, result.output)
        doc = _strict(result.stdout)
        assert isinstance(doc, dict) and "error" in doc, result.stdout
        assert doc["error"]["code"] == result.exit_code
        assert isinstance(doc["error"]["message"], str) and doc["error"]["message"]
        assert "where" in doc["error"]


def test_check_json_of_nan_plan_is_strict(files: Path) -> None:
    result = runner.invoke(app, ["check", str(files / "plan_nan.json"), "--json"])
    assert result.exit_code == 2
    doc = _strict(result.stdout)
    assert "error" in doc or doc.get("valid") is False
    assert not any(isinstance(v, float) and not math.isfinite(v) for v in _leaves(doc))


def _leaves(x: Any) -> list[Any]:
    if isinstance(x, dict):
        return [v for y in x.values() for v in _leaves(y)]
    if isinstance(x, list):
        return [v for y in x for v in _leaves(y)]
    return [x]


def _err(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, " ".join(result.output.split())


def test_bracket_text_is_printed_not_read_as_markup() -> None:
    assert _err("check", "no[/such].json") == (2, "error: no[/such].json: no such plan file")
    code, text = _err("compare", "--model", "[/x]", "--cluster", "8xh100", "--pp", "2", "-m", "2")
    assert code == 2 and "'[/x]'" in text


def test_binary_files_are_named_not_utf8(files: Path) -> None:
    for args in (
        ["check", str(files / "binary.json")],
        ["fjsp", str(files / "binary.fjs")],
        ["compare", *MODEL, "--cluster", str(files / "latin1.yaml")],
        ["compare", *MODEL, "--cluster", "local", "--profile", str(files / "binary.json")],
        ["compare", "--problem", str(files / "binary.json")],
        ["compare", "--graph", str(files / "binary.json"), "--devices", "2", "--cluster", "8xh100"],
    ):
        code, text = _err(*args)
        assert code == 2 and "not UTF-8 text" in text and str(files) in text, text


@pytest.mark.parametrize(
    ("args", "where", "needle"),
    [
        (["compare", "--pp", "2", "-m", "2", "--costs", "F=inf,I=1,W=1"], "--costs", "finite"),
        (["compare", *SYN, "--comm", "nan"], "--comm", "finite"),
        (["compare", "--pp", "2", "-m", "2", "--costs", "F=0,I=0,W=0"], "--costs", "zero time"),
        (["compare", *SYN, "--schedules", ""], "--schedules", "empty"),
        (["plan", *SYN, "--time-limit", "0"], "--time-limit", "positive"),
        (["plan", *SYN, "--workers", "-4"], "--workers", ">= 1"),
        (["fjsp", "{data}/tiny.fjs", "--time-limit", "-3"], "--time-limit", "positive"),
        (["plan", *SYN, "--memory-limit", "40GB"], "--memory-limit", "units"),
        (["compare", "--pp", "x"], "--pp", "integer"),
    ],
)
def test_json_error_names_the_option(args: list[str], where: str, needle: str, files: Path) -> None:
    result = runner.invoke(app, [*_expand(args, files), "--json"])
    assert result.exit_code == 2
    err = _strict(result.stdout)["error"]
    assert err["where"] == where and needle in err["message"], err


def test_plan_action_out_of_range_names_the_action(files: Path) -> None:
    code, text = _err("check", str(files / "plan_dev17.json"))
    assert code == 2 and "plan.actions[0].device: 17 is not a device" in text
    code, text = _err("check", str(files / "plan_stage99.json"))
    assert code == 2 and "plan.actions[1].stage: 99 is not a stage" in text
    code, text = _err("check", str(files / "plan_mb_half.json"))
    assert code == 2 and "plan.actions[1].microbatch: must be an integer, got 1.5" in text


def test_show_refuses_invalid_plans_and_writes_nothing(files: Path, tmp_path: Path) -> None:
    csv = tmp_path / "o.csv"
    code, text = _err("show", str(files / "plan_overlap.json"), "--csv", str(csv))
    assert code == 2 and "invalid plan" in text and not csv.exists()
    result = runner.invoke(app, ["show", str(files / "plan_overlap.json"), "--csv", str(csv), "--force"])
    assert result.exit_code == 0 and csv.exists()
    result = runner.invoke(app, ["show", str(files / "plan_ok.json"), "--csv", str(tmp_path / "ok.csv")])
    assert result.exit_code == 0, result.output


def test_run_refuses_an_invalid_plan_before_launching(files: Path) -> None:
    code, text = _err("run", str(files / "plan_missing.json"))
    assert code == 2 and "invalid plan" in text and "running" not in text


def test_check_json_of_an_invalid_plan_keeps_the_contract(files: Path) -> None:
    result = runner.invoke(app, ["check", str(files / "plan_overlap.json"), "--json"])
    doc = _strict(result.stdout)
    assert result.exit_code == 2 and doc["valid"] is False and doc["errors"]
    assert doc["error"]["code"] == 2 and doc["error"]["message"].startswith("invalid plan")
    ok = runner.invoke(app, ["check", str(files / "plan_ok.json"), "--json"])
    assert ok.exit_code == 0 and _strict(ok.stdout)["valid"] is True


def test_oversized_plan_refuses_at_once() -> None:
    import time

    t0 = time.perf_counter()
    code, text = _err("plan", "--pp", "1000", "--microbatches", "10000", "--time-limit", "5")
    assert code == 2 and "30,000,000 tasks" in text and time.perf_counter() - t0 < 8


def test_graph_file_needs_a_cluster(tmp_path: Path) -> None:
    """--graph without --cluster used to plan on H100s silently; now it asks for the devices."""
    path = tmp_path / "g.json"
    path.write_text(json.dumps(GRAPH))
    r = runner.invoke(app, ["compare", "--graph", str(path), "--devices", "2", "--json"])
    assert r.exit_code == 2
    err = json.loads(r.stdout)["error"]
    assert err["where"] == "--graph" and "--cluster" in err["message"]
    ok = runner.invoke(
        app,
        [
            "plan",
            "--graph",
            str(path),
            "--devices",
            "2",
            "--cluster",
            "8xh100",
            "--time-limit",
            "5",
            "--json",
        ],
    )
    assert ok.exit_code == 0, ok.output
