"""Per-op profiles of the torch twins: complete, well-formed, and accepted by the cost model."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from parplan.cluster_io import load_cluster  # noqa: E402
from parplan.cost.pipeline import model_problem  # noqa: E402
from parplan.cost.profile import read_profile, write_profile  # noqa: E402
from parplan.errors import InvalidInputError  # noqa: E402
from parplan.graph.zoo import build_model  # noqa: E402
from parplan.runtime.profile import profile_model  # noqa: E402


@pytest.fixture(scope="module")
def prof():
    return profile_model("gpt-tiny", microbatch_size=1, seq_len=16, num_layers=2, repeats=2, warmup=1)


def test_every_op_measured_with_the_right_passes(prof) -> None:
    graph = build_model("gpt-tiny", microbatch_size=1, seq_len=16, num_layers=2, dtype="fp32")
    ops = prof.op_map
    assert set(ops) == {op.name for op in graph.ops}
    for op in graph.ops:
        m = ops[op.name]
        assert m.F > 0, op.name
        assert (m.W > 0) == (op.param_bytes > 0), op.name  # only ops with weights have a W pass
    assert ops["embed"].I == 0  # token ids need no gradient
    assert ops["layer0.attn.qkv"].I > 0
    # saved activations: a linear keeps its input, b*s*h fp32 values
    assert ops["layer0.mlp.up"].act_bytes == 1 * 16 * 256 * 4


def test_round_trip_and_plans_use_it(prof, tmp_path) -> None:
    path = tmp_path / "p.json"
    write_profile(prof, path)
    back = read_profile(path)
    assert back == prof
    graph = build_model("gpt-tiny", microbatch_size=1, seq_len=16, num_layers=2, dtype="fp32")
    problem = model_problem(graph, load_cluster("local"), pp=2, microbatches=2, dtype="fp32", profile=back)
    ops = back.op_map
    for stage in problem.stages:  # stage times are sums of the measured op times
        assert pytest.approx(sum(ops[o].F for o in stage.ops)) == stage.cost.F
        assert pytest.approx(sum(ops[o].W for o in stage.ops)) == stage.cost.W


def test_bad_options() -> None:
    with pytest.raises(InvalidInputError, match="--repeats: must be an integer >= 1, got 0"):
        profile_model("gpt-tiny", repeats=0)
    with pytest.raises(InvalidInputError, match="no torch implementation"):
        profile_model("resnet50")


def test_cpu_clock_profile() -> None:
    cpu = profile_model(
        "gpt-tiny", microbatch_size=1, seq_len=8, num_layers=1, repeats=1, warmup=0, clock="cpu"
    )
    assert dict(cpu.meta)["clock"] == "cpu"
    assert all(m.F > 0 for _, m in cpu.ops)
    with pytest.raises(InvalidInputError, match="clock: use 'wall', or 'cpu'"):
        profile_model("gpt-tiny", seq_len=8, num_layers=1, repeats=1, clock="gpu-ticks")


def test_the_hint_printed_by_profile_works_when_followed(tmp_path) -> None:
    """`parplan profile` ends with "use it with --cluster local --profile F": that command must plan
    (the profile's dtype is taken when --dtype is not given), and a contradicting --dtype is refused."""
    from typer.testing import CliRunner

    from parplan.cli import app

    runner = CliRunner()
    out = tmp_path / "prof.json"
    r = runner.invoke(app, ["profile", "--model", "gpt-tiny", "-o", str(out)])
    assert r.exit_code == 0, r.output
    assert f"--cluster local --profile {out}" in " ".join(r.output.split())  # rich may wrap it
    plan = [
        "plan",
        "--model",
        "gpt-tiny",
        "--cluster",
        "local",
        "--profile",
        str(out),
        "--pp",
        "2",
        "-m",
        "4",
    ]
    r = runner.invoke(app, [*plan, "--time-limit", "5", "--json"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, [*plan, "--dtype", "bf16"])
    assert r.exit_code == 2 and "profile.dtype" in r.output


def test_moe_small_profiles_every_op() -> None:
    # the combine op's router input reaches the output through integer expert ids too: its input
    # gradient is partly unused, which must not stop the profile
    prof = profile_model("moe-small", seq_len=16, num_layers=2, repeats=1, warmup=0)
    ops = prof.op_map
    assert "layer1.moe.combine" in ops and ops["layer1.moe.combine"].I is not None
    assert all(m.F > 0 for m in ops.values())
