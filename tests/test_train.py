"""parplan train: strategies run for real on 4 CPU processes, equal to one process, beside their prediction."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from parplan.cli import app
from parplan.cluster_io import load_cluster
from parplan.cost.strategy import estimate_strategy, stage_layers
from parplan.errors import InvalidInputError
from parplan.graph.zoo import build_model
from parplan.runtime.modules import build_torch_model
from parplan.runtime.train import (
    ActivationMeter,
    TrainModel,
    _qkv_order,
    check_strategy,
    choose_strategy,
    pipeline_csv,
    torchrun_command,
    train,
)
from parplan.strategy import parse_strategy

LOCAL4 = load_cluster("local:4")


def test_qkv_rows_regrouped_per_rank() -> None:
    # 3 blocks (Q, K, V) of 4 rows over tp = 2: rank 0 gets Q0 Q1 K0 K1 V0 V1, rank 1 the rest
    order = _qkv_order(12, 2, 3).tolist()
    assert order == [0, 1, 4, 5, 8, 9, 2, 3, 6, 7, 10, 11]


def test_stage_layers_and_schedule_csv() -> None:
    assert stage_layers(5, 2) == [range(0, 3), range(3, 5)]
    csv = pipeline_csv(parse_strategy("pp=2,schedule=zb-h1"), 4).splitlines()
    assert csv[1].startswith("1F0,1I0,1F1,1I1,1W0")
    with pytest.raises(InvalidInputError, match="one stage per pipeline rank"):
        pipeline_csv(parse_strategy("pp=2,schedule=interleaved-1f1b"), 4)


def test_unsupported_strategy_is_refused_with_the_alternative() -> None:
    with pytest.raises(InvalidInputError, match="use zero=2"):
        check_strategy(parse_strategy("dp=2,tp=2,zero=1"))


def test_train_model_is_the_op_graph_model() -> None:
    graph_model, _ = build_torch_model("gpt-tiny", seed=3)
    data = graph_model.make_batch(0, 3)
    want = graph_model(data)
    for recompute in ("none", "selective", "full"):
        got = TrainModel(graph_model, recompute)(data)
        assert torch.equal(got, want), recompute


def test_activation_meter_sees_saves_and_frees() -> None:
    meter = ActivationMeter()
    w = torch.randn(64, 64, requires_grad=True)
    x = torch.randn(32, 64)
    with meter.active():
        y = torch.tanh(x @ w)  # saves x (8 KiB) and tanh's output (8 KiB); w is a leaf that needs grad
        loss = y.sum()
    assert meter.live >= 2 * 32 * 64 * 4
    loss.backward()
    del y, loss
    assert meter.live == 0 and meter.peak >= 2 * 32 * 64 * 4


def test_meter_counts_a_linear_s_input_not_its_weight() -> None:
    # F.linear saves its input and the transposed weight, a view of the parameter: memory the model
    # holds anyway (counted once, as a parameter), not an activation
    meter = ActivationMeter()
    layer = torch.nn.Linear(64, 64, bias=False)
    x = torch.randn(16, 64)
    with meter.active():
        loss = layer(x).sum()
    assert meter.peak == 16 * 64 * 4
    loss.backward()


def test_meter_frees_what_a_retained_input_pass_saved() -> None:
    # split backward: the input pass retains the graph, W never runs here; exp saves its own output,
    # so a meter holding that output's autograd history would keep the node (and itself) alive
    meter = ActivationMeter()
    w = torch.randn(64, 64, requires_grad=True)
    x = torch.randn(32, 64, requires_grad=True)
    with meter.active():
        y = torch.exp(x @ w)
        loss = y.sum()
    torch.autograd.grad(loss, [x], retain_graph=True)
    assert meter.live >= 2 * 32 * 64 * 4
    del y, loss
    assert meter.live == 0


def test_choice_under_a_memory_limit_is_predicted_under_it() -> None:
    s, how, f = choose_strategy("gpt-tiny", LOCAL4, 4, memory_limit=40 * 2**20)
    est = next(e for e in f.points if e.strategy == s)
    assert est.memory.total <= 40 * 2**20 and "fastest under" in how
    assert s.pp * s.dp * s.tp == 4


ACCEPTANCE = ["dp=2,tp=2", "pp=2,dp=2,zero=3,recompute=full", "pp=2,tp=2,schedule=zb-h1", "dp=4,zero=1"]


@pytest.mark.parametrize("text", ACCEPTANCE)
def test_acceptance_strategies_equal_one_process(text: str) -> None:
    r = train("gpt-tiny", parse_strategy(text), LOCAL4, steps=3, progress=False)
    assert r.ref_losses is not None and r.max_grad_abs_err is not None
    for got, want in zip(r.losses, r.ref_losses, strict=True):
        assert got == pytest.approx(want, rel=1e-4)
    assert r.max_grad_abs_err <= 1e-4
    assert r.losses[-1] < r.losses[0]  # the loss falls
    assert len(r.measured_peak_memory_bytes) == 4
    ratios = [m / p for m, p in zip(r.measured_peak_memory_bytes, r.predicted_peak_memory_bytes, strict=True)]
    limit = 1.5
    assert all(1 / limit <= x <= limit for x in ratios), ratios


def test_cli_train_json_contract_and_memory_limit_choice() -> None:
    limit = 40 * 2**20
    r = CliRunner().invoke(app, ["train", "--memory-limit", f"{limit}", "--steps", "2", "--json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    for key in (
        "strategy",
        "steps",
        "losses",
        "ref_losses",
        "max_grad_abs_err",
        "measured_step_s",
        "predicted_step_s",
        "measured_peak_memory_bytes",
        "predicted_peak_memory_bytes",
    ):
        assert key in doc, key
    assert set(doc["strategy"]) >= {"pp", "dp", "tp", "zero", "recompute", "schedule"}
    assert max(doc["predicted_peak_memory_bytes"]) <= limit
    assert max(doc["measured_peak_memory_bytes"]) <= 1.5 * limit
    assert doc["steps"] == 2 and len(doc["losses"]) == 2


@pytest.mark.parametrize(
    "args, match",
    [
        (["--strategy", "dp=2,tp=2,zero=1"], "use zero=2"),
        (["--strategy", "pp=2,schedule=interleaved-1f1b"], "one stage per pipeline rank"),
        (["--strategy", "dp=2", "--memory-limit", "1GiB"], "give one of them"),
        (["--strategy", "dp=2", "--devices", "4"], "uses 2 devices"),
        (["--strategy", "dp=8"], "needs 8 devices; cluster 'local:4' has 4"),
        (["--model", "llama-7b"], "train runs gpt-tiny"),
        (["--strategy", "dp=2", "--global-batch", "3"], "multiple of dp x micro-batch size"),
    ],
)
def test_cli_train_bad_inputs(args: list[str], match: str) -> None:
    r = CliRunner().invoke(app, ["train", "--no-check", *args])
    assert r.exit_code == 2, r.output
    assert match in r.output


def test_print_torchrun() -> None:
    one = torchrun_command("gpt-tiny", parse_strategy("dp=2,tp=2"), LOCAL4)
    assert one.startswith("torchrun --standalone --nproc-per-node 4 -m parplan.runtime.train")
    assert '--strategy "pp=1,dp=2,tp=2,zero=0,recompute=none"' in one and "--backend gloo" in one
    two = torchrun_command("gpt-tiny", parse_strategy("dp=16"), load_cluster("dgx-h100:2"))
    assert "--nnodes 2 --nproc-per-node 8" in two and "--rdzv-endpoint $MASTER_ADDR:29500" in two
    assert "--backend nccl" in two


def test_worker_runs_under_torchrun(tmp_path) -> None:  # type: ignore[no-untyped-def]
    torchrun = [sys.executable, "-m", "torch.distributed.run"]
    cmd = [
        *torchrun,
        "--standalone",
        "--nproc-per-node",
        "2",
        "-m",
        "parplan.runtime.train",
        "--strategy",
        "dp=2",
        "--backend",
        "gloo",
        "--steps",
        "2",
        "--out",
        str(tmp_path),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert p.returncode == 0, p.stderr[-2000:]
    doc = json.loads(p.stdout.strip().splitlines()[-1])
    ref = train("gpt-tiny", parse_strategy("dp=2"), load_cluster("local:2"), steps=2, progress=False)
    assert doc["losses"] == pytest.approx(list(ref.losses), rel=1e-5)


def test_fit_link_inverts_the_ring_model() -> None:
    from parplan.cluster import Link
    from parplan.cost.comm import ring_time
    from parplan.runtime.calibrate import LARGE, fit_link

    link = Link(bandwidth_Bps=2e9, latency_s=300e-6)
    n = 4
    ar_small, ar_large = ring_time("all_reduce", n, 4, link), ring_time("all_reduce", n, LARGE, link)
    ag, rs = ring_time("all_gather", n, 4 * n, link), ring_time("reduce_scatter", n, 4 * n, link)
    alpha, bw = fit_link(n, ar_small, ar_large, ag, rs)
    assert alpha == pytest.approx(300e-6, rel=1e-3)
    assert bw == pytest.approx(2e9, rel=1e-2)


def test_calibrate_writes_a_cluster_the_estimate_reads(tmp_path) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "cal.json"
    r = CliRunner().invoke(app, ["calibrate", "--devices", "2", "--repeats", "3", "-o", str(out), "--json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    measured = doc["meta"]["measured"]
    assert measured["gemm_flops_per_process"] > 1e8 and measured["allreduce_latency_s"] > 0
    cl = load_cluster(str(out))
    assert cl.num_devices == 2 and cl.devices[0].kind == "cpu"
    # the estimate's GEMM efficiency is divided back out: peak x 0.6 = what was measured
    assert cl.devices[0].flops("fp32") * 0.6 == pytest.approx(measured["gemm_flops_per_process"], rel=1e-9)
    # the runtime's own costs, each measured, and read back by the estimate
    from parplan.cost.calibration import runtime_calibration

    cal = runtime_calibration(cl)
    assert cal.step_sync_s > 0 and cal.pipeline_action_s >= 0 and cal.tp_linear_s >= 0
    assert cal.fsdp_unit_s >= 0 and cal.fsdp_s_per_byte >= 0
    assert 1e-11 < cal.adamw_s_per_param < 1e-6  # seconds per parameter: ~3 ns on this machine
    assert len(cal.slowdown) == 2 and cal.slowdown[0] == 1.0 and cal.slowdown[1] >= 1.0
    plain = estimate_strategy(build_model("gpt-tiny", dtype="fp32"), parse_strategy("pp=2"), cl, calibration=None)
    assert plain.terms["step_sync"] == cal.step_sync_s


def test_moe_small_trains_without_tensor_parallelism() -> None:
    with pytest.raises(InvalidInputError, match="moe-small has no tensor-parallel plan"):
        check_strategy(parse_strategy("dp=2,tp=2"), "moe-small")
    chosen, _, f = choose_strategy("moe-small", LOCAL4, 4)
    assert chosen.tp == 1 and all(e.strategy.tp == 1 for e in f.evaluated)


@pytest.mark.slow
def test_moe_small_pipeline_equals_one_process() -> None:
    r = train("moe-small", parse_strategy("pp=2,dp=2,recompute=full"), LOCAL4, steps=2, progress=False)
    assert r.max_grad_abs_err is not None and r.max_grad_abs_err <= 1e-4
    assert r.ref_losses is not None and r.losses == pytest.approx(r.ref_losses, rel=1e-4)


CONFIGS = Path(__file__).resolve().parents[1] / "examples" / "configs"


def test_a_config_json_trains_like_one_process() -> None:
    # a GPT-2 config with tensor parallelism, a Llama config (gated MLP) with a pipeline and ZeRO-1
    gpt2, llama = str(CONFIGS / "tiny-gpt2-config.json"), str(CONFIGS / "tiny-llama-config.json")
    for model, text in ((gpt2, "dp=2,tp=2"), (llama, "pp=2,dp=2,zero=1")):
        r = train(model, parse_strategy(text), LOCAL4, steps=2, progress=False)
        assert r.ref_losses is not None and r.max_grad_abs_err is not None
        assert r.losses == pytest.approx(r.ref_losses, rel=1e-4)
        assert r.max_grad_abs_err <= 1e-4
    # what the twin changes is said, not hidden
    assert not any("untied head" in n for n in r.notes)  # the Llama config is untied
    assert any("rotary" in n for n in r.notes)
    r = train(gpt2, parse_strategy("dp=4"), LOCAL4, steps=1, progress=False, check=False)
    assert any("untied head" in n for n in r.notes)


def test_config_json_features_the_twin_lacks_are_refused(tmp_path: Path) -> None:
    cfg = json.loads((CONFIGS / "tiny-llama-config.json").read_text())
    cfg["num_key_value_heads"] = 2
    path = tmp_path / "gqa-config.json"
    path.write_text(json.dumps(cfg))
    with pytest.raises(InvalidInputError, match="no grouped-query attention"):
        train(str(path), parse_strategy("dp=4"), LOCAL4, steps=1, progress=False)
    with pytest.raises(InvalidInputError, match="fused gate and up projection"):
        train(str(CONFIGS / "tiny-llama-config.json"), parse_strategy("tp=2"), LOCAL4, steps=1, progress=False)
    r = CliRunner().invoke(app, ["train", "--model", str(path), "--strategy", "dp=4", "--steps", "1"])
    assert r.exit_code == 2 and "Traceback" not in r.output


TWO_TOWER = str(Path(__file__).resolve().parents[1] / "examples" / "two_tower.py") + ":build"


@pytest.mark.parametrize(
    "text", ["dp=4", "dp=2,zero=1", "dp=4,zero=2", "dp=4,zero=3", "dp=2,recompute=full", "dp=4,zero=3,recompute=full"]
)
def test_your_own_module_trains_like_one_process(text: str) -> None:
    r = train(TWO_TOWER, parse_strategy(text), LOCAL4, steps=3, progress=False)
    assert r.ref_losses is not None and r.max_grad_abs_err is not None
    assert r.losses == pytest.approx(r.ref_losses, rel=1e-4)
    assert r.max_grad_abs_err <= 1e-4
    assert r.losses[-1] < r.losses[0]
    ratios = [m / p for m, p in zip(r.measured_peak_memory_bytes, r.predicted_peak_memory_bytes, strict=True)]
    assert all(1 / 1.5 <= x <= 1.5 for x in ratios), ratios
    # saved activations as traced: the inputs of the linears and the ReLUs' outputs, or with
    # recompute=full each block's input only (the four blocks' two saves each become one)
    measured = {m["activations"] for m in r.to_json()["measured_memory_bytes"]}
    assert measured == {r.to_json()["predicted_memory_bytes"]["activations"]}
    assert measured == {46144.0 if "recompute" not in text else 46144.0 - 4 * 16 * 64 * 4}


def test_your_own_module_checkpoints_its_repeated_blocks() -> None:
    from parplan.runtime.trace_graph import repeated_blocks
    from parplan.runtime.train import UserTrainModel

    m = UserTrainModel(TWO_TOWER, seed=0)
    assert list(repeated_blocks(m.model)) == ["user.layers.0", "user.layers.1", "item.layers.0", "item.layers.1"]
    plain, ckpt = UserTrainModel(TWO_TOWER, seed=0), UserTrainModel(TWO_TOWER, seed=0, recompute="full")
    data = plain.make_batch(0)
    a, b = plain(data), ckpt(data)
    a.backward()
    b.backward()
    assert torch.equal(a, b)
    for (name, p), q in zip(plain.named_parameters(), ckpt.parameters(), strict=True):
        assert torch.allclose(p.grad, q.grad, atol=1e-7), name


def test_your_own_module_sees_a_different_micro_batch_per_rank() -> None:
    from parplan.runtime.train import UserTrainModel

    m = UserTrainModel(TWO_TOWER, seed=0)
    a, b = m.make_batch(0), m.make_batch(1)
    assert any(not torch.equal(a[k], b[k]) for k in a)
    assert float(m(a).detach()) != float(m(b).detach())


def test_recompute_of_a_module_without_blocks_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "flat.py"
    path.write_text(
        "import torch\nfrom torch import nn\n\ndef build():\n"
        "    return nn.Linear(4, 1), (torch.randn(2, 4),)\n"
    )
    with pytest.raises(InvalidInputError, match="no repeated blocks to checkpoint"):
        train(f"{path}:build", parse_strategy("dp=2,recompute=full"), LOCAL4, steps=1, progress=False)
    r = CliRunner().invoke(app, ["train", "--model", f"{path}:build", "--strategy", "dp=2,recompute=full"])
    assert r.exit_code == 2 and "no repeated blocks" in r.output and "Traceback" not in r.output
    # chosen, not given: the frontier offers it no recompute at all
    _, _, frontier = choose_strategy(f"{path}:build", LOCAL4, 4)
    assert frontier.points and all(p.strategy.recompute == "none" for p in frontier.points)
    _, _, frontier = choose_strategy(TWO_TOWER, LOCAL4, 4)
    assert any(p.strategy.recompute == "full" for p in frontier.points)


def test_your_own_module_refuses_what_train_cannot_split() -> None:
    with pytest.raises(InvalidInputError, match=r"not pipeline stages .*parplan run"):
        train(TWO_TOWER, parse_strategy("pp=2"), LOCAL4, steps=1, progress=False)
    with pytest.raises(InvalidInputError, match="tensor-parallel plan"):
        train(TWO_TOWER, parse_strategy("tp=2"), LOCAL4, steps=1, progress=False)
    with pytest.raises(InvalidInputError, match=r"recompute=selective .* recompute=full checkpoints"):
        train(TWO_TOWER, parse_strategy("dp=2,recompute=selective"), LOCAL4, steps=1, progress=False)
    with pytest.raises(InvalidInputError, match=r"--seq-len: .* drop the option"):
        train(TWO_TOWER, parse_strategy("dp=2"), LOCAL4, steps=1, progress=False, model_options={"seq_len": 8})


def test_planned_pipeline_schedule_runs_and_is_never_worse_than_its_baseline() -> None:
    from parplan.cost.strategy import estimate_strategy
    from parplan.graph.zoo import build_model
    from parplan.runtime.train import PLAN_BASELINE, planned_pipeline

    # uneven stages (the last holds the head), on GPUs: the planner may only improve on zb-h1
    g = build_model("llama-7b", num_layers=6)
    h100 = load_cluster("8xh100")
    s = parse_strategy("pp=4,dp=2,schedule=plan")
    est, csv = planned_pipeline(g, s, h100, 32, {"w_keeps_graph": True}, time_limit_s=3)
    base = estimate_strategy(
        g, parse_strategy(f"pp=4,dp=2,schedule={PLAN_BASELINE}"), h100, global_batch=32, w_keeps_graph=True
    )
    assert est.strategy.schedule == "plan"
    assert est.step_s <= base.step_s * (1 + 1e-9)
    assert est.memory.activations <= base.memory.activations * (1 + 1e-6)
    assert len(csv.splitlines()) == 4 and "W" in csv
    # and it trains like one process
    r = train("gpt-tiny", parse_strategy("pp=2,dp=2,schedule=plan"), LOCAL4, steps=2, progress=False)
    assert r.ref_losses is not None and r.max_grad_abs_err is not None
    assert r.losses == pytest.approx(r.ref_losses, rel=1e-4)
    assert r.max_grad_abs_err <= 1e-4
