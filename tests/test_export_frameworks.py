"""`parplan export --to torchtitan|megatron|deepspeed`: files the frameworks read, checked against real torch."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest
from typer.testing import CliRunner

from parplan.cli import app
from parplan.plan import read_plan
from parplan.report.export import export_plan, stage_layers

runner = CliRunner()


def _invoke(*args: str, code: int = 0) -> tuple[str, str]:
    result = runner.invoke(app, list(args))
    assert result.exit_code == code, (result.stdout, result.stderr)
    return result.stdout, result.stderr


@pytest.fixture(scope="module")
def gpt2_plan(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The acceptance plan: gpt2-small on 2 A100s, 4 micro-batches (a 0.3 s CP-SAT solve)."""
    path = tmp_path_factory.mktemp("plan") / "p.json"
    _invoke(
        "plan", "--model", "gpt2-small", "--cluster", "8xa100", "--pp", "2", "--microbatches", "4",
        "--deterministic", "--time-limit", "10", "-o", str(path),
    )  # fmt: skip
    return path


@pytest.fixture(scope="module")
def synthetic_plans(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """DualPipeV (V placement, fused F&B) on 2 devices and DualPipe (bidirectional) on 4."""
    out = tmp_path_factory.mktemp("synthetic")
    costs = ("--costs", "F=1,I=1,W=1,FB=2.5")
    _invoke(
        "compare",
        "--pp",
        "2",
        "-m",
        "4",
        "--placement",
        "v",
        *costs,
        "--schedules",
        "dualpipev",
        "-o",
        str(out),
    )
    _invoke(
        "compare", "--pp", "4", "-m", "8", "--placement", "bidirectional", *costs, "--schedules", "dualpipe",
        "-o", str(out),
    )  # fmt: skip
    return out


def test_torchtitan_toml_names_the_csv_and_torch_loads_it(gpt2_plan: Path, tmp_path: Path) -> None:
    pytest.importorskip("torch")
    from parplan.runtime.pipelining_adapter import load_csv_into_runtime

    _invoke("export", str(gpt2_plan), "--to", "torchtitan", "-o", str(tmp_path / "d"))
    config = tomllib.loads((tmp_path / "d" / "torchtitan.toml").read_text())
    par = config["parallelism"]
    assert par["pipeline_parallel_degree"] == 2
    assert par["pipeline_parallel_schedule"] == "1F1B"  # one stage per rank: torchtitan's loop placement
    csv_path = Path(par["pipeline_parallel_schedule_csv"])
    assert csv_path.parent == (tmp_path / "d").resolve() and csv_path.is_file()
    assert par["tensor_parallel_degree"] == 1 and par["data_parallel_shard_degree"] == 1
    assert config["training"]["local_batch_size"] == 4  # 4 micro-batches of 1 sample
    assert config["training"]["seq_len"] == 1024
    # module FQNs: torchtitan's decoder names, every layer exactly once, in order
    parts = par["module_fqns_per_model_part"]
    assert len(parts) == 2 and parts[0][0] == "tok_embeddings" and parts[-1][-2:] == ["norm", "output"]
    layers = [name for part in parts for name in part if name.startswith("layers.")]
    assert layers == [f"layers.{k}" for k in range(12)]
    plan = read_plan(gpt2_plan)
    assert [len([n for n in part if n.startswith("layers.")]) for part in parts] == [
        len(ls) for ls in stage_layers(plan)[0]
    ]
    # torch's own runtime validates the CSV and lowers it: each rank's 4 F, 4 I, 4 W plus its transfers
    lowered = load_csv_into_runtime(csv_path, plan)
    for rank in (0, 1):
        compute = [a for a in lowered[rank] if a[1] in "FIW" and a[1:2].isalpha() and len(a) == 3]
        assert sorted(compute) == sorted(f"{rank}{k}{j}" for k in "FIW" for j in range(4))
    assert sum(a.startswith("0SEND_F") for a in lowered[0]) == 4
    assert sum(a.startswith("1SEND_B") for a in lowered[1]) == 4


def test_megatron_flags(gpt2_plan: Path, tmp_path: Path) -> None:
    _, stderr = _invoke("export", str(gpt2_plan), "--to", "megatron", "-o", str(tmp_path))
    lines = (tmp_path / "megatron.args").read_text().splitlines()
    assert "--pipeline-model-parallel-size 2" in lines
    assert "--tensor-model-parallel-size 1" in lines
    assert "--micro-batch-size 1" in lines and "--global-batch-size 4" in lines
    counts = [len(ls) for ls in stage_layers(read_plan(gpt2_plan))[0]]
    assert sum(counts) == 12
    if counts[0] != counts[1]:  # uneven stages: Megatron's first/last stage flags carry them
        assert f"--decoder-first-pipeline-num-layers {counts[0]}" in lines
        assert f"--decoder-last-pipeline-num-layers {counts[1]}" in lines
    assert all(line.startswith("--") for line in lines)
    # the planner's zero-bubble order splits backward passes: Megatron cannot express that
    assert "megatron cannot express: the plan splits backward passes" in stderr


def test_deepspeed_json(gpt2_plan: Path, tmp_path: Path) -> None:
    _invoke("export", str(gpt2_plan), "--to", "deepspeed", "-o", str(tmp_path))
    config = json.loads((tmp_path / "deepspeed.json").read_text())
    assert config["train_micro_batch_size_per_gpu"] == 1
    assert config["gradient_accumulation_steps"] == 4
    assert config["train_batch_size"] == 4
    assert config["zero_optimization"] == {"stage": 0}
    assert config["pipeline"]["stages"] == 2
    assert config["bf16"] == {"enabled": True}


def test_joint_plan_strategies_reach_the_flags(tmp_path: Path) -> None:
    """Per-stage DP/TP/ZeRO from --devices-per-stage: one strategy exported, the differences listed."""
    plan_path = tmp_path / "pj.json"
    _invoke(
        "plan", "--model", "gpt2-small", "--cluster", "8xa100", "--pp", "2", "--microbatches", "4",
        "--devices-per-stage", "4", "--deterministic", "--time-limit", "20", "-o", str(plan_path),
    )  # fmt: skip
    plan = read_plan(plan_path)
    families = [s["family"] for s in plan.intra_op["stages"]]  # type: ignore[index]
    result = export_plan(plan, "megatron", tmp_path)
    lines = (tmp_path / "megatron.args").read_text().splitlines()
    tp = max(int(f.split("TP")[1].split("+")[0]) if "TP" in f else 1 for f in families)
    assert f"--tensor-model-parallel-size {tp}" in lines
    assert ("--use-distributed-optimizer" in lines) == any("ZeRO" in f for f in families)
    if len(set(families)) > 1:
        assert any("applies one strategy to every stage" in n for n in result.unsupported)


def test_dualpipev_exports_to_torch_and_dualpipe_is_refused(synthetic_plans: Path, tmp_path: Path) -> None:
    pytest.importorskip("torch")
    from parplan.runtime.pipelining_adapter import load_csv_into_runtime

    vplan = read_plan(synthetic_plans / "dualpipev.json")
    result = export_plan(vplan, "torchtitan", tmp_path / "v")
    par = tomllib.loads((tmp_path / "v" / "torchtitan.toml").read_text())["parallelism"]
    assert par["pipeline_parallel_schedule"] == "DualPipeV"  # torchtitan's V stage-to-rank rule
    assert any("OVERLAP_F_B" in n for n in result.unsupported)
    csv_text = Path(par["pipeline_parallel_schedule_csv"]).read_text()
    assert "OVERLAP_F_B" in csv_text
    lowered = load_csv_into_runtime(par["pipeline_parallel_schedule_csv"], vplan)
    assert any("OVERLAP_F_B" in a for a in lowered[0])
    # bidirectional DualPipe: torch's runtime cannot run it, and the message says why (exit 2)
    bi = synthetic_plans / "dualpipe.json"
    _, stderr = _invoke("export", str(bi), "--to", "torchtitan", "-o", str(tmp_path / "bi"), code=2)
    assert "runs chains only" in stderr and "passes only stages" in stderr
    _, stderr = _invoke("export", str(bi), "--to", "megatron", "-o", str(tmp_path / "bi"))
    assert "Megatron pipelines a chain of layers" in stderr


def test_invalid_plan_refused(gpt2_plan: Path, tmp_path: Path) -> None:
    data = json.loads(gpt2_plan.read_text())
    first = min((a for a in data["actions"] if a["device"] == 0), key=lambda a: a["start"])
    second = sorted((a for a in data["actions"] if a["device"] == 0), key=lambda a: a["start"])[1]
    second["start"] = first["start"]  # two actions at once on device 0
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(data))
    _, stderr = _invoke("export", str(bad), "--to", "deepspeed", "-o", str(tmp_path / "o"), code=2)
    assert "invalid" in stderr and "parplan check" in stderr
    assert not (tmp_path / "o").exists()


def test_unknown_target(gpt2_plan: Path, tmp_path: Path) -> None:
    _, stderr = _invoke("export", str(gpt2_plan), "--to", "jax", "-o", str(tmp_path), code=2)
    assert "torchtitan, megatron, deepspeed" in stderr


@pytest.mark.parametrize(
    ("torch_name", "placement", "costs", "chunks"),
    [
        ("GPipe", "linear", "F=1,B=2", None),
        ("1F1B", "linear", "F=1,B=2", None),
        ("Interleaved1F1B", "interleaved", "F=1,B=2", 2),
        ("ZBVZeroBubble", "v", "F=1,I=1,W=1", None),
        ("DualPipeV", "v", "F=1,I=1,W=1,FB=2.5", None),
    ],
)
def test_torch_names_are_aliases_of_the_same_schedule(
    torch_name: str, placement: str, costs: str, chunks: int | None
) -> None:
    """Each torch name builds, through parplan's alias, exactly torch's own order on every rank (p=4, m=8)."""
    pytest.importorskip("torch")
    from parplan.plan import Plan
    from parplan.runtime.pipelining_adapter import torch_schedule_orders
    from parplan.schedule.expert import build_schedule
    from parplan.synthetic import synthetic_problem

    problem = synthetic_problem(pp=4, microbatches=8, placement=placement, costs=costs, chunks=chunks)
    plan = Plan.from_schedule(problem, build_schedule(torch_name, problem))
    ours = [row.split(",") for row in export_plan_csv(plan).splitlines()]
    theirs = torch_schedule_orders(torch_name, plan)
    if torch_name == "1F1B":
        # torch 2.13's Schedule1F1B.pipeline_order mislabels the last rank's forward micro-batches
        # (3F1 3B0 3F2 3B1 ... for 3F0 3B0 3F1 3B1 ...; DESIGN.md): same pass sequence, labels shifted
        assert [a[1] for a in theirs[3]] == [a[1] for a in ours[3]]
        del theirs[3]
        ours = ours[:3]
    assert dict(enumerate(ours)) == theirs


def export_plan_csv(plan: object) -> str:
    from parplan.report.export import to_pipelining_csv

    return to_pipelining_csv(plan)  # type: ignore[arg-type]


def test_alias_names_in_the_cli() -> None:
    from parplan.schedule.expert import canonical_schedule_name

    assert canonical_schedule_name("ZB-H1") == "zb-h1"
    assert canonical_schedule_name("ScheduleZBVZeroBubble") == "zb-v"
    assert canonical_schedule_name("vpp") == "interleaved-1f1b"
    out, _ = _invoke("compare", "--pp", "2", "-m", "4", "--placement", "interleaved", "--virtual-stages", "2",
                     "--costs", "F=1,B=2", "--schedules", "Interleaved1F1B", "--json")  # fmt: skip
    (row,) = json.loads(out)["schedules"]
    # interleaved 1F1B, p=2, v=2, m=4, F=1, B=2 per chunk: each device busy 4*2*3 = 24 plus the bubble
    # (p-1)(F+B) = 3 per chunk, i.e. (p-1)(F+B)/v of a device's whole pass times (2 and 4)
    assert row["name"] == "interleaved-1f1b" and row["makespan"] == pytest.approx(27.0)
    _, stderr = _invoke(
        "compare", "--pp", "2", "-m", "4", "--costs", "F=1,B=2", "--schedules", "LoopedBFS", code=2
    )
    assert "unknown" in stderr and "Interleaved1F1B" in stderr
    out, _ = _invoke("--version")
    assert out.strip().startswith("parplan 0.")


def test_built_in_orders_export_without_schedule_notes(tmp_path: Path) -> None:
    """A plan that IS Megatron's interleaved 1F1B (whole backward passes) exports with nothing lost."""
    costs = ("--costs", "F=1,B=2")
    _invoke("compare", "--pp", "2", "-m", "4", "--placement", "interleaved", "--virtual-stages", "2", *costs,
            "--schedules", "interleaved-1f1b", "-o", str(tmp_path))  # fmt: skip
    plan = read_plan(tmp_path / "interleaved-1f1b.json")
    result = export_plan(plan, "megatron", tmp_path / "m")
    lines = (tmp_path / "m" / "megatron.args").read_text().splitlines()
    assert lines[:2] == ["--pipeline-model-parallel-size 2", "--num-virtual-stages-per-pipeline-rank 2"]
    # synthetic stages carry no micro-batch size: only that is listed
    assert len(result.unsupported) == 1 and "micro-batch size" in result.unsupported[0]
    par = tomllib.loads((export_plan(plan, "torchtitan", tmp_path / "t").files[0]).read_text())["parallelism"]
    assert par["pipeline_parallel_schedule"] == "Interleaved1F1B"  # looped: stage s on rank s % 2
    # the same stages under the planner's order (not a Megatron schedule) do get the note
    gp = tmp_path / "gpipe"
    _invoke(
        "compare",
        "--pp",
        "2",
        "-m",
        "4",
        "--placement",
        "linear",
        *costs,
        "--schedules",
        "GPipe",
        "-o",
        str(gp),
    )
    _, stderr = _invoke("export", str(gp / "gpipe.json"), "--to", "megatron", "-o", str(gp))
    assert "beyond Megatron's built-in schedules (1f1b)" in stderr and "1f1b 15 unit" in stderr
