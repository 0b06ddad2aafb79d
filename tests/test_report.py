"""Pictures and exports of plans: Gantt charts, memory plots, Chrome traces, pipelining CSV."""

from __future__ import annotations

import csv
import dataclasses
import gzip
import io
import itertools
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from parplan.errors import InvalidInputError
from parplan.plan import Plan, read_plan
from parplan.problem import Device, Microbatch, PassTimes, PipelineProblem, Stage, StageEdge
from parplan.report import (
    from_pipelining_csv,
    plan_to_chrome_trace,
    to_pipelining_csv,
    write_chrome_trace,
    write_gantt,
    write_memory_plot,
    write_pipelining_csv,
)
from parplan.report.export import device_orders
from parplan.report.gantt import format_memory, route_directions, stage_chunks, time_scale
from parplan.report.trace import communication_events
from parplan.schedule.expert import build_schedule
from parplan.schedule.ir import Action, B, F, I, Schedule, W
from parplan.simulate import memory_curves
from parplan.synthetic import synthetic_problem

# ---------------------------------------------------------------------------- test plans


def one_f_one_b(problem: PipelineProblem) -> Schedule:
    """1F1B on a linear chain, written here so the tests do not depend on the expert generators."""
    p, m = problem.num_devices, problem.num_microbatches
    orders = []
    for d in range(p):
        warmup = min(p - 1 - d, m)
        order = [F(d, j) for j in range(warmup)]
        fwd = warmup
        for bwd in range(m):
            if fwd < m:
                order.append(F(d, fwd))
                fwd += 1
            order += [I(d, bwd), W(d, bwd)] if problem.split_backward else [B(d, bwd)]
        orders.append(order)
    return Schedule.of("1f1b", orders)


def gpipe_any(problem: PipelineProblem) -> Schedule:
    """All forwards in micro-batch order, then all backwards: deadlock-free on any placed DAG."""
    orders = []
    for d in range(problem.num_devices):
        here = [(j, s) for j in range(problem.num_microbatches) for s in problem.topo_order]
        here = [(j, s) for j, s in here if problem.stages[s].device == d and problem.passes(j, s)]
        order = [F(s, j) for j, s in here]
        order += [B(s, j) for j, s in sorted(here, key=lambda x: (x[0], -problem.topo_order.index(x[1])))]
        orders.append(order)
    return Schedule.of("gpipe", orders)


@pytest.fixture
def plan_1f1b() -> Plan:
    # p=4, m=8, F=1, B=2: 1F1B's makespan is (m+p-1)(F+B) = 33 and its bubble ratio
    # (p-1)(F+B)/33 = 9/33; device 0 holds p=4 activations at its peak.
    problem = synthetic_problem(pp=4, microbatches=8, costs="F=1,B=2", memory_limit=6)
    return Plan.from_schedule(problem, one_f_one_b(problem))


@pytest.fixture
def plan_comm() -> Plan:
    # Split backward and communication 0.5 on every edge, so transfers show in traces.
    problem = synthetic_problem(pp=4, microbatches=8, costs="F=1,I=1,W=1", comm=0.5)
    return Plan.from_schedule(problem, one_f_one_b(problem))


@pytest.fixture
def plan_dualpipev() -> Plan:
    problem = synthetic_problem(pp=4, microbatches=8, placement="v", costs="F=1,I=1,W=1,FB=2.5")
    return Plan.from_schedule(problem, build_schedule("dualpipev", problem))


@pytest.fixture
def plan_dualpipe() -> Plan:
    problem = synthetic_problem(pp=4, microbatches=8, placement="bidirectional", costs="F=1,I=1,W=1,FB=2.5")
    return Plan.from_schedule(problem, build_schedule("dualpipe", problem))


def diamond_plan() -> Plan:
    # Stage 0 feeds 1 and 2, both feed 3: a DAG, not a chain.
    cost = PassTimes(F=1.0, B=2.0)
    problem = PipelineProblem(
        devices=tuple(Device(index=d, name=f"d{d}") for d in range(4)),
        stages=tuple(Stage(index=s, name=f"s{s}", cost=cost, device=s) for s in range(4)),
        edges=(
            StageEdge(src=0, dst=1, comm=0.25),
            StageEdge(src=0, dst=2, comm=0.25),
            StageEdge(src=1, dst=3, comm=0.25),
            StageEdge(src=2, dst=3, comm=0.25),
        ),
        microbatches=tuple(Microbatch(index=j, stages=(0, 1, 2, 3)) for j in range(2)),
        split_backward=False,
        placement="graph",
        name="diamond",
    )
    return Plan.from_schedule(problem, gpipe_any(problem))


def seconds_bytes_plan() -> Plan:
    # The 1F1B plan with times in seconds (0.01 s per unit) and memory in bytes (1 GiB per
    # activation, 0.5 GiB of parameters per stage).
    problem = synthetic_problem(
        pp=4,
        microbatches=8,
        costs="F=0.01,B=0.02",
        act_mem=2.0**30,
        param_mem=2.0**29,
        memory_limit=6 * 2.0**30,
    )
    problem = dataclasses.replace(problem, time_unit="s", memory_unit="bytes")
    return Plan.from_schedule(problem, one_f_one_b(problem))


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


# ---------------------------------------------------------------------------- light imports


def test_importing_report_loads_neither_matplotlib_nor_torch() -> None:
    code = "import sys, parplan.report; print(sorted(m for m in ('matplotlib', 'torch') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# ---------------------------------------------------------------------------- helpers


def test_units_for_display() -> None:
    assert time_scale("unit", 500.0) == (1.0, "time units")
    assert time_scale("s", 12.0) == (1.0, "s")
    assert time_scale("s", 0.33) == (1e3, "ms")
    assert time_scale("s", 2e-4) == (1e6, "µs")
    assert format_memory(3 * 2**30, "bytes") == "3.00 GiB"
    assert format_memory(5 * 2**20, "bytes") == "5.0 MiB"
    assert format_memory(4.0, "unit") == "4 units"


def test_route_directions(plan_dualpipe: Plan, plan_1f1b: Plan) -> None:
    # DualPipe: micro-batches 0..3 flow down (stages 0..3), 4..7 up (stages 4..7).
    assert route_directions(plan_dualpipe) == [0, 0, 0, 0, 1, 1, 1, 1]
    assert route_directions(plan_1f1b) == [0] * 8


# ---------------------------------------------------------------------------- Gantt


def test_gantt_png_size_grows_with_devices(tmp_path: Path, plan_1f1b: Plan) -> None:
    out = write_gantt(plan_1f1b, tmp_path / "sub" / "g.png")
    assert out == tmp_path / "sub" / "g.png"
    w4, h4 = _png_size(out)
    assert w4 == 14 * 120  # 14 inches at 120 dpi
    problem = synthetic_problem(pp=8, microbatches=8, costs="F=1,B=2")
    w8, h8 = _png_size(write_gantt(Plan.from_schedule(problem, one_f_one_b(problem)), tmp_path / "g8.png"))
    assert w8 == w4
    # 0.42 inch more per device row.
    assert h8 - h4 == pytest.approx(4 * 0.42 * 120, abs=2)


def test_gantt_svg_title_labels_and_legend(tmp_path: Path, plan_1f1b: Plan) -> None:
    svg = write_gantt(plan_1f1b, tmp_path / "g.svg", title="my plan").read_text()
    assert "my plan" in svg
    assert "makespan 33 time units" in svg
    assert "bubble 27.3%" in svg  # 9/33
    assert "peak memory 4 units" in svg
    assert "time (time units)" in svg
    assert "F forward" in svg and "B full backward" in svg and "idle" in svg
    assert "I backward-input" not in svg  # no I pass in this plan
    assert all(f"device {d}" in svg for d in range(4))
    # Every bar (64 actions, each 1 or 2 units = 140 px or more wide) carries its micro-batch number.
    labels = [t for t in svg.split("<text") if ">7<" in t or ">7\n" in t]
    assert len(labels) == 8  # micro-batch 7: F and B on each of 4 devices


def test_gantt_default_title_is_plan_name(tmp_path: Path, plan_1f1b: Plan) -> None:
    svg = write_gantt(plan_1f1b, tmp_path / "g.svg").read_text()
    assert "1f1b" in svg


def test_gantt_seconds_are_shown_in_ms_and_memory_in_gib(tmp_path: Path) -> None:
    svg = write_gantt(seconds_bytes_plan(), tmp_path / "g.svg").read_text()
    assert "time (ms)" in svg
    assert "makespan 330 ms" in svg
    assert "peak memory 4.50 GiB" in svg  # 4 activations + 0.5 GiB of parameters


def test_gantt_fused_and_bidirectional(tmp_path: Path, plan_dualpipe: Plan) -> None:
    assert any(t.action.is_fused for t in plan_dualpipe.timed)
    svg = write_gantt(plan_dualpipe, tmp_path / "dp.svg").read_text()
    assert "stacked halves = fused F&amp;B" in svg
    assert "second direction (lighter)" in svg
    assert _png_size(write_gantt(plan_dualpipe, tmp_path / "dp.png"))[0] == 1680


def test_gantt_darker_later_chunks(tmp_path: Path, plan_dualpipev: Plan, plan_1f1b: Plan) -> None:
    # V placement: device d runs stages d (chunk 0) and 7-d (chunk 1).
    assert stage_chunks(plan_dualpipev) == {0: 0, 7: 1, 1: 0, 6: 1, 2: 0, 5: 1, 3: 0, 4: 1}
    assert "darker: device" in write_gantt(plan_dualpipev, tmp_path / "v.svg").read_text()
    assert "darker: device" not in write_gantt(plan_1f1b, tmp_path / "l.svg").read_text()


def test_gantt_rejects_other_suffixes(tmp_path: Path, plan_1f1b: Plan) -> None:
    with pytest.raises(InvalidInputError, match=r"g\.pdf.*'\.pdf'.*\.png or \.svg"):
        write_gantt(plan_1f1b, tmp_path / "g.pdf")
    assert not (tmp_path / "g.pdf").exists()
    assert _png_size(write_gantt(plan_1f1b, tmp_path / "G.PNG"))[0] == 1680


def test_gantt_of_a_plan_read_from_file(tmp_path: Path, plan_dualpipev: Plan) -> None:
    plan = read_plan(plan_dualpipev.write(tmp_path / "p.json"))
    assert _png_size(write_gantt(plan, tmp_path / "g.png"))[0] == 1680


def test_gantt_of_20k_actions_is_fast(tmp_path: Path) -> None:
    # 16 stages x 400 micro-batches x (F, I, W) = 19,200 actions: one collection per colour and no
    # labels (bars are under 2 px wide) keep this to about a second.
    problem = synthetic_problem(pp=16, microbatches=400, costs="F=1,I=1,W=1")
    plan = Plan.from_schedule(problem, one_f_one_b(problem))
    assert len(plan.timed) == 19_200
    t0 = time.perf_counter()
    _, height = _png_size(write_gantt(plan, tmp_path / "big.png"))
    assert time.perf_counter() - t0 < 8.0
    assert height == pytest.approx((1.9 + 0.42 * 16) * 120, abs=2)


# ---------------------------------------------------------------------------- memory plot


def test_memory_plot_svg(tmp_path: Path, plan_1f1b: Plan) -> None:
    svg = write_memory_plot(plan_1f1b, tmp_path / "m.svg").read_text()
    assert "1f1b: memory per device" in svg
    assert "device 0: peak 4 units / limit 6 units" in svg
    assert "device 3: peak 1 units / limit 6 units" in svg
    assert "memory (units of one stage" in svg
    assert "dashed: device memory limit" in svg


def test_memory_plot_bytes_in_gib(tmp_path: Path) -> None:
    svg = write_memory_plot(seconds_bytes_plan(), tmp_path / "m.svg").read_text()
    assert "memory (GiB)" in svg
    assert "device 0: peak 4.50 GiB / limit 6.00 GiB" in svg
    assert "time (ms)" in svg


def test_memory_plot_many_devices_png(tmp_path: Path) -> None:
    problem = synthetic_problem(pp=20, microbatches=24, costs="F=1,B=2")
    plan = Plan.from_schedule(problem, one_f_one_b(problem))
    assert _png_size(write_memory_plot(plan, tmp_path / "m.png")) == (1680, 840)


def test_memory_plot_rejects_other_suffixes(tmp_path: Path, plan_1f1b: Plan) -> None:
    with pytest.raises(InvalidInputError, match=r"memory plot .*\.png or \.svg"):
        write_memory_plot(plan_1f1b, tmp_path / "m.jpg")


# ---------------------------------------------------------------------------- Chrome trace


def _split(trace: dict) -> tuple[list[dict], list[dict]]:
    events = trace["traceEvents"]
    meta = [e for e in events if e["ph"] == "M"]
    rest = [e for e in events if e["ph"] != "M"]
    assert events[: len(meta)] == meta  # metadata first
    return meta, rest


def test_trace_structure_and_counts(tmp_path: Path, plan_comm: Plan) -> None:
    path = write_chrome_trace(plan_comm, tmp_path / "t.json")
    trace = json.loads(path.read_text())
    assert trace == json.loads(json.dumps(plan_to_chrome_trace(plan_comm)))
    meta, rest = _split(trace)
    names = {(e["pid"], e["args"]["name"]) for e in meta if e["name"] == "process_name"}
    assert names == {(d, f"device {d}") for d in range(4)}
    compute = [e for e in rest if e["ph"] == "X" and e["tid"] == 0]
    comm = [e for e in rest if e["ph"] == "X" and e["tid"] >= 1]
    counters = [e for e in rest if e["ph"] == "C"]
    assert len(compute) == len(plan_comm.timed) == 4 * 8 * 3
    # A chain of 4 stages: 3 activation and 3 gradient transfers per micro-batch.
    assert len(comm) == 2 * 3 * 8
    curves = memory_curves(plan_comm.problem, plan_comm.timed)
    assert len(counters) == sum(len(c) for c in curves)
    ts = [e["ts"] for e in rest]
    assert ts == sorted(ts)
    assert trace["otherData"]["us_per_time_unit"] == 1000.0
    assert trace["otherData"]["time_unit"] == "unit"


def test_trace_compute_events_match_the_plan(plan_comm: Plan) -> None:
    _, rest = _split(plan_to_chrome_trace(plan_comm))
    compute = {e["name"]: e for e in rest if e["ph"] == "X" and e["tid"] == 0}
    by_action = {str(t.action): t for t in plan_comm.timed}
    e = compute["F mb3 stage2"]
    t = by_action["2F3"]
    assert (e["pid"], e["ts"], e["dur"]) == (2, t.start * 1000, (t.end - t.start) * 1000)
    assert e["args"]["stage"] == 2 and e["args"]["microbatch"] == 3 and e["args"]["kind"] == "F"
    assert "W mb0 stage0" in compute and "I mb7 stage3" in compute


def test_trace_transfers_start_at_producer_end(plan_comm: Plan) -> None:
    _, rest = _split(plan_to_chrome_trace(plan_comm))
    by_action = {str(t.action): t for t in plan_comm.timed}
    comm = {e["name"]: e for e in rest if e["ph"] == "X" and e["tid"] >= 1}
    # Micro-batch 0's activation leaves stage 0 when 0F0 ends (t=1) and takes 0.5: 1F0 starts at 1.5.
    e = comm["recv F mb0 stage0→stage1"]
    assert (e["pid"], e["ts"], e["dur"]) == (1, 1000.0, 500.0)
    assert by_action["1F0"].start == 1.5
    e = comm["recv grad mb5 stage3→stage2"]
    assert e["pid"] == 2 and e["ts"] == by_action["3I5"].end * 1000
    assert e["args"]["what"] == "gradient" and e["args"]["src_device"] == 3
    # Every transfer arrives before its consumer starts.
    for dev, start, end, d in communication_events(plan_comm):
        kind = "F" if d["what"] == "activation" else "I"
        assert end <= by_action[f"{d['dst_stage']}{kind}{d['microbatch']}"].start + 1e-9
        assert dev == d["dst_device"] and start < end


def test_trace_lanes_never_overlap() -> None:
    # Transfers of 2.5 after forwards of 1: device 1 receives 0F1's output while 0F0's is in flight.
    problem = synthetic_problem(pp=4, microbatches=8, costs="F=1,I=1,W=1", comm=2.5)
    plan = Plan.from_schedule(problem, one_f_one_b(problem))
    meta, rest = _split(plan_to_chrome_trace(plan))
    lanes: dict[tuple[int, int], list[tuple[float, float]]] = {}
    for e in rest:
        if e["ph"] == "X":
            lanes.setdefault((e["pid"], e["tid"]), []).append((e["ts"], e["ts"] + e["dur"]))
    for spans in lanes.values():
        spans.sort()
        assert all(a[1] <= b[0] + 1e-6 for a, b in itertools.pairwise(spans))
    assert (1, 2) in lanes
    assert sum(len(v) for k, v in lanes.items() if k[1] >= 1) == 2 * 3 * 8
    threads = {(e["pid"], e["tid"]): e["args"]["name"] for e in meta if e["name"] == "thread_name"}
    assert threads[(1, 0)] == "compute" and threads[(1, 1)] == "communication"
    assert threads[(1, 2)] == "communication 2"


def test_trace_without_communication_has_no_transfers(plan_1f1b: Plan) -> None:
    _, rest = _split(plan_to_chrome_trace(plan_1f1b))
    assert not [e for e in rest if e["ph"] == "X" and e["tid"] >= 1]


def test_trace_seconds_and_bytes() -> None:
    plan = seconds_bytes_plan()
    trace = plan_to_chrome_trace(plan)
    _, rest = _split(trace)
    last = max(e["ts"] + e["dur"] for e in rest if e["ph"] == "X")
    assert last == pytest.approx(0.33 * 1e6)  # 330 ms in microseconds
    assert trace["otherData"]["us_per_time_unit"] == 1e6
    peak = max(e["args"]["GiB"] for e in rest if e["ph"] == "C" and e["pid"] == 0)
    assert peak == pytest.approx(4.5)


def test_trace_fused_actions(plan_dualpipev: Plan) -> None:
    _, rest = _split(plan_to_chrome_trace(plan_dualpipev))
    fused = [e for e in rest if e["ph"] == "X" and e["tid"] == 0 and e["args"]["kind"] == "FB"]
    assert len(fused) == sum(t.action.is_fused for t in plan_dualpipev.timed) > 0
    e = next(x for x in fused if x["args"]["action"] == "0F7&7B3")
    assert e["name"] == "F mb7 stage0 & B mb3 stage7"
    assert e["args"]["parts"] == [
        {"stage": 0, "kind": "F", "microbatch": 7},
        {"stage": 7, "kind": "B", "microbatch": 3},
    ]


def test_trace_gzip_and_bad_suffix(tmp_path: Path, plan_1f1b: Plan) -> None:
    path = write_chrome_trace(plan_1f1b, tmp_path / "t.json.gz")
    assert json.loads(gzip.decompress(path.read_bytes())) == json.loads(
        json.dumps(plan_to_chrome_trace(plan_1f1b))
    )
    with pytest.raises(InvalidInputError, match=r"\.json or \.json\.gz"):
        write_chrome_trace(plan_1f1b, tmp_path / "t.txt")


# ---------------------------------------------------------------------------- pipelining CSV


def test_csv_exact_text_for_tiny_1f1b() -> None:
    # p=2, m=2 1F1B: device 0 runs 0F0 0F1 0B0 0B1, device 1 alternates 1F0 1B0 1F1 1B1.
    problem = synthetic_problem(pp=2, microbatches=2, costs="F=1,B=2")
    plan = Plan.from_schedule(problem, one_f_one_b(problem))
    assert to_pipelining_csv(plan) == "0F0,0F1,0B0,0B1\n1F0,1B0,1F1,1B1\n"


def test_csv_round_trip(tmp_path: Path, plan_comm: Plan) -> None:
    path = write_pipelining_csv(plan_comm, tmp_path / "o" / "s.csv")
    back = from_pipelining_csv(path.read_text())
    assert back.orders == one_f_one_b(plan_comm.problem).orders
    assert [list(o) for o in back.orders] == device_orders(plan_comm)
    # The orders read back simulate to the same plan.
    again = Plan.from_schedule(plan_comm.problem, back)
    assert again.metrics.makespan == plan_comm.metrics.makespan


def test_csv_fused_overlap_and_split(plan_dualpipev: Plan) -> None:
    text = to_pipelining_csv(plan_dualpipev)
    assert "(0F7;7B3)OVERLAP_F_B" in text.splitlines()[0].split(",")
    back = from_pipelining_csv(text)
    assert [list(o) for o in back.orders] == device_orders(plan_dualpipev)
    split = to_pipelining_csv(plan_dualpipev, fused="split")
    assert "OVERLAP" not in split
    rows = list(csv.reader(io.StringIO(split)))
    n_plain = [sum(len(a.plain()) for a in order) for order in device_orders(plan_dualpipev)]
    assert [len(r) for r in rows] == n_plain
    assert "0F7,7B3" in split.splitlines()[0]


def test_csv_rejects_non_chains(plan_dualpipe: Plan) -> None:
    with pytest.raises(InvalidInputError, match=r"runs chains only.*edge 0->2 does not join"):
        to_pipelining_csv(diamond_plan())
    with pytest.raises(
        InvalidInputError, match=r"chains only.*micro-batch 0 passes only stages \[0, 1, 2, 3\] of 0..7"
    ):
        to_pipelining_csv(plan_dualpipe)
    with pytest.raises(InvalidInputError, match=r"fused: must be one of overlap, split, got 'x'"):
        to_pipelining_csv(plan_dualpipe, fused="x")


def test_csv_reader_errors() -> None:
    with pytest.raises(InvalidInputError, match=r"row 1 column 2: '0SEND_F1' is not a compute action"):
        from_pipelining_csv("0F0,0B0\n1F0,1B0,0SEND_F1\n")
    with pytest.raises(InvalidInputError, match=r"must overlap exactly two actions, has 3"):
        from_pipelining_csv("(0F0;1B0;2B0)OVERLAP_F_B\n")
    assert from_pipelining_csv("0F0, 0B0\n\n").orders == ((Action.parse("0F0"), Action.parse("0B0")), ())


def test_csv_parses_with_torch(plan_dualpipev: Plan, plan_comm: Plan) -> None:
    torch_schedules = pytest.importorskip("torch.distributed.pipelining.schedules")
    _Action = torch_schedules._Action
    for plan in (plan_comm, plan_dualpipev):
        problem = plan.problem
        for fused in ("overlap", "split"):
            text = to_pipelining_csv(plan, fused=fused)
            rows = list(csv.reader(io.StringIO(text)))
            assert len(rows) == problem.num_devices
            actions = {rank: [_Action.from_str(cell) for cell in row] for rank, row in enumerate(rows)}
            # torch prints each parsed cell back exactly.
            assert [[repr(a) for a in actions[r]] for r in actions] == rows
            # torch's own validator: complete, F before I/B before W, consistent stage placement.
            stage_to_rank = torch_schedules._validate_schedule(
                actions, problem.num_devices, problem.num_stages, problem.num_microbatches
            )
            assert stage_to_rank == {s.index: s.device for s in problem.stages}
            # torch's lowering adds sends and receives; it fails on orders it cannot serve.
            lowered = torch_schedules._add_send_recv(
                {r: list(a) for r, a in actions.items()}, stage_to_rank.__getitem__, problem.num_stages
            )
            assert sum(len(a) for a in lowered.values()) > sum(len(a) for a in actions.values())
