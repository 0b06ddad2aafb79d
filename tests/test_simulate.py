"""The simulator (timing, memory, deadlocks) and the independent validator on hand-broken plans."""

from __future__ import annotations

import itertools
from dataclasses import replace

import pytest

from parplan.errors import InvalidInputError
from parplan.problem import PipelineProblem
from parplan.schedule.expert import build_schedule
from parplan.schedule.ir import Action, B, F, I, Schedule, W
from parplan.simulate import (
    DeadlockError,
    TimedAction,
    compute_metrics,
    memory_curves,
    simulate,
    simulate_shared,
    validate,
)
from parplan.synthetic import synthetic_problem


def _timed(problem: PipelineProblem, name: str) -> list[TimedAction]:
    return list(simulate(problem, build_schedule(name, problem)))


def _find(timed: list[TimedAction], text: str) -> int:
    return next(k for k, t in enumerate(timed) if str(t.action) == text)


@pytest.fixture
def tiny() -> PipelineProblem:
    """Two devices, two micro-batches, F=1, B=2: 1F1B runs 0F0 0F1 0B0 0B1 | 1F0 1B0 1F1 1B1."""
    return synthetic_problem(pp=2, microbatches=2, costs="F=1,B=2")


# ---------------------------------------------------------------------------- simulation


def test_simulate_times_a_chain_with_communication() -> None:
    # 0F0 [0,1) -> +0.5 -> 1F0 [1.5,2.5) -> 1B0 [2.5,4.5) -> +0.5 -> 0B0 [5,7)
    problem = synthetic_problem(pp=2, microbatches=1, costs="F=1,B=2", comm=0.5)
    timed = simulate(problem, Schedule.of("x", [[F(0, 0), B(0, 0)], [F(1, 0), B(1, 0)]]))
    assert [(str(t.action), t.start, t.end) for t in timed] == [
        ("0F0", 0, 1),
        ("1F0", 1.5, 2.5),
        ("1B0", 2.5, 4.5),
        ("0B0", 5, 7),
    ]
    metrics = compute_metrics(problem, timed)
    assert metrics.makespan == 7
    assert metrics.idle_per_device == (4, 4)
    assert metrics.span_idle_per_device == (4, 0)
    assert metrics.bubble_ratio == pytest.approx(1 - 6 / 14)


def test_fused_action_waits_for_both_parts_inputs() -> None:
    # Device 0 overlaps 0F1 with 0B0; 0B0 needs 1B0, which ends at 1+1+2 = 4.
    problem = synthetic_problem(pp=2, microbatches=2, costs="F=1,B=2,FB=2.5")
    fused = Action.fused(F(0, 1), B(0, 0))
    timed = simulate(
        problem, Schedule.of("x", [[F(0, 0), fused, B(0, 1)], [F(1, 0), B(1, 0), F(1, 1), B(1, 1)]])
    )
    t = next(t for t in timed if t.action == fused)
    assert (t.start, t.end) == (4, 6.5)
    assert validate(problem, timed) == []


def test_deadlock_names_the_waiting_actions(tiny: PipelineProblem) -> None:
    orders = [[B(0, 0), F(0, 0), F(0, 1), B(0, 1)], [F(1, 0), B(1, 0), F(1, 1), B(1, 1)]]
    with pytest.raises(DeadlockError) as err:
        simulate(tiny, Schedule.of("broken", orders))
    text = str(err.value)
    assert text.startswith("schedule 'broken' deadlocks:")
    assert "device 0 waits at 0B0 for 0F0" in text
    assert "device 1 waits at 1F0 for 0F0" in text


def test_cross_device_deadlock() -> None:
    # Each device wants the other's backward before its own forward.
    problem = synthetic_problem(pp=2, microbatches=2, costs="F=1,B=2")
    orders = [[F(0, 0), B(0, 0), F(0, 1), B(0, 1)], [F(1, 1), F(1, 0), B(1, 0), B(1, 1)]]
    with pytest.raises(
        DeadlockError, match=r"device 0 waits at 0B0 for 1I0/1B0.*device 1 waits at 1F1 for 0F1"
    ):
        simulate(problem, Schedule.of("x", orders))


def test_simulate_rejects_incomplete_and_misplaced(tiny: PipelineProblem) -> None:
    with pytest.raises(InvalidInputError, match=r"action 1B1: missing"):
        simulate(tiny, Schedule.of("x", [[F(0, 0), F(0, 1), B(0, 0), B(0, 1)], [F(1, 0), B(1, 0), F(1, 1)]]))
    with pytest.raises(InvalidInputError, match="stage 1 is placed on device 1"):
        simulate(
            tiny,
            Schedule.of("x", [[F(0, 0), F(0, 1), B(0, 0), B(0, 1), F(1, 0)], [B(1, 0), F(1, 1), B(1, 1)]]),
        )
    with pytest.raises(InvalidInputError, match="has no split backward"):
        simulate(
            tiny,
            Schedule.of(
                "x", [[F(0, 0), F(0, 1), B(0, 0), I(0, 1), W(0, 1)], [F(1, 0), B(1, 0), F(1, 1), B(1, 1)]]
            ),
        )


def test_memory_curves_gpipe() -> None:
    # GPipe device 0: +1 at the start of each forward, -1 at the end of each backward.
    problem = synthetic_problem(pp=2, microbatches=2, costs="F=1,B=2", param_mem=3)
    curves = memory_curves(problem, _timed(problem, "gpipe"))
    assert curves[0] == [(0.0, 4.0), (1.0, 5.0), (7.0, 4.0), (9.0, 3.0)]


def test_split_backward_releases_activation_at_i_and_wgrad_at_w() -> None:
    # One stage, one micro-batch: F [0,1) holds 1, I [1,2) leaves the 0.25 kept for W [2,3).
    problem = synthetic_problem(pp=1, microbatches=1, costs="F=1,I=1,W=1", wgrad_mem=0.25)
    curves = memory_curves(problem, simulate(problem, Schedule.of("x", [[F(0, 0), I(0, 0), W(0, 0)]])))
    assert curves[0] == [(0.0, 1.0), (2.0, 0.25), (3.0, 0.0)]


# ---------------------------------------------------------------------------- validator


def _rules(violations) -> set[tuple[str, str]]:  # type: ignore[no-untyped-def]
    return {(v.rule, v.action) for v in violations}


def test_validator_accepts_simulated_plans(tiny: PipelineProblem) -> None:
    timed = _timed(tiny, "1f1b")
    assert validate(tiny, timed, compute_metrics(tiny, timed)) == []


def test_validator_missing_action(tiny: PipelineProblem) -> None:
    timed = _timed(tiny, "1f1b")
    del timed[_find(timed, "1B1")]
    violations = validate(tiny, timed)
    assert ("complete", "1B1") in _rules(violations)
    assert "missing" in str(violations[0])


def test_validator_violated_dependency(tiny: PipelineProblem) -> None:
    timed = _timed(tiny, "1f1b")
    k = _find(timed, "1F0")  # [1,2) -> [0.5,1.5): before 0F0 ends at 1
    timed[k] = replace(timed[k], start=0.5, end=1.5)
    violations = [v for v in validate(tiny, timed) if v.rule == "precedence"]
    assert [(v.action, v.message) for v in violations] == [
        ("1F0", "starts at 0.5 before 0F0 is available at 1")
    ]


def test_validator_dependency_includes_communication() -> None:
    problem = synthetic_problem(pp=2, microbatches=1, costs="F=1,B=2", comm=0.5)
    timed = list(simulate(problem, build_schedule("1f1b", problem)))
    k = _find(timed, "1F0")  # needs 0F0 (ends 1) + 0.5
    timed[k] = replace(timed[k], start=1.25, end=2.25)
    messages = [str(v) for v in validate(problem, timed) if v.rule == "precedence"]
    assert (
        "[precedence] 1F0: starts at 1.25 before 0F0 is available at 1.5 (ends 1 + communication 0.5)"
        in messages
    )


def test_validator_overlap_on_a_device(tiny: PipelineProblem) -> None:
    timed = _timed(tiny, "gpipe")
    k = _find(timed, "0F1")  # [1,2) -> [0.5,1.5) overlaps 0F0 [0,1)
    timed[k] = replace(timed[k], start=0.5, end=1.5)
    violations = [v for v in validate(tiny, timed) if v.rule == "overlap"]
    assert len(violations) == 1
    assert violations[0].action == "0F1"
    assert "while 0F0 runs until 1" in violations[0].message


def test_validator_memory_limit(tiny: PipelineProblem) -> None:
    limited = tiny.with_memory_limit(1.5)
    timed = _timed(limited, "1f1b")  # device 0 holds 0F0 and 0F1: 2 > 1.5
    violations = validate(limited, timed)
    assert _rules(violations) == {("memory", "0F1")}
    assert violations[0].message == "device 0 reaches 2 > memory limit 1.5"


def test_validator_wrong_duration(tiny: PipelineProblem) -> None:
    timed = _timed(tiny, "1f1b")
    k = len(timed) - 1  # the last action: 0B1, shortened to 1
    timed[k] = replace(timed[k], end=timed[k].start + 1)
    violations = [v for v in validate(tiny, timed) if v.rule == "duration"]
    assert [(v.action, v.message) for v in violations] == [("0B1", "lasts 1 but its cost on device 0 is 2")]


def test_validator_wrong_claimed_metrics(tiny: PipelineProblem) -> None:
    timed = _timed(tiny, "1f1b")
    real = compute_metrics(tiny, timed)
    lying = replace(real, makespan=real.makespan - 1)
    assert [str(v) for v in validate(tiny, timed, lying)] == [
        f"[metrics] plan: claims makespan {real.makespan - 1:g}, is {real.makespan:g}"
    ]
    lying = replace(real, peak_memory_per_device=(1.0, 1.0))
    assert [v.message for v in validate(tiny, timed, lying)] == ["claims peak memory 1 on device 0, is 2"]
    assert validate(tiny, timed, real.with_bound(real.makespan + 1))[0].message.startswith(
        "claims lower bound"
    )


def test_validator_misplaced_action(tiny: PipelineProblem) -> None:
    timed = _timed(tiny, "1f1b")
    k = _find(timed, "1B0")
    timed[k] = replace(timed[k], device=0)
    assert ("placement", "1B0") in _rules(validate(tiny, timed))


def test_unplaced_stages_pay_communication_only_across_devices() -> None:
    # Free placement: the schedule decides where stages run. Two stages run on one device, so the
    # 5-unit transfer between them costs nothing: 0F0 [0,1), 1F0 [1,2), 1B0 [2,4), 0B0 [4,6).
    from parplan.problem import Device, Microbatch, PassTimes, PipelineProblem, Stage, StageEdge
    from parplan.schedule.ir import B as Bk
    from parplan.schedule.ir import F as Fk
    from parplan.schedule.ir import Schedule as Sched
    from parplan.simulate import compute_metrics as metrics_of
    from parplan.simulate import simulate as sim

    cost = PassTimes(F=1, B=2)
    problem = PipelineProblem(
        devices=(Device(index=0, name="d0"), Device(index=1, name="d1")),
        stages=(Stage(index=0, name="s0", cost=cost), Stage(index=1, name="s1", cost=cost)),
        edges=(StageEdge(src=0, dst=1, comm=5.0),),
        microbatches=(Microbatch(index=0, stages=(0, 1)),),
        split_backward=False,
        placement="free",
    )
    same = Sched.of("same", [[Fk(0, 0), Fk(1, 0), Bk(1, 0), Bk(0, 0)], []])
    assert metrics_of(problem, sim(problem, same)).makespan == 6
    apart = Sched.of("apart", [[Fk(0, 0), Bk(0, 0)], [Fk(1, 0), Bk(1, 0)]])
    assert metrics_of(problem, sim(problem, apart)).makespan == 16  # 1 + 5 + 1 + 2 + 5 + 2


# ---------------------------------------------------------------------------- shared cores
def test_shared_cores_with_cores_to_spare_is_the_plain_simulation() -> None:
    p = synthetic_problem(pp=4, microbatches=8, costs="F=1.3,I=0.7,W=0.9", comm=0.05)
    for name in ("1f1b", "zb-h1", "gpipe"):
        s = build_schedule(name, p)
        plain = compute_metrics(p, simulate(p, s)).makespan
        shared = compute_metrics(p, simulate_shared(p, s, lambda k: max(1.0, k / 4))).makespan
        assert shared == pytest.approx(plain, rel=1e-9), name


def test_one_core_runs_all_the_work_back_to_back() -> None:
    # one core, no transfers: the makespan is the total work, whatever the order
    p = synthetic_problem(pp=4, microbatches=8, costs="F=1,I=1,W=1")
    for name in ("1f1b", "zb-h1"):
        timed = simulate_shared(p, build_schedule(name, p), lambda k: float(k))
        assert compute_metrics(p, timed).makespan == pytest.approx(4 * 8 * 3, rel=1e-9)
        # each action takes at least its work, and a device runs one action at a time
        assert all(t.end - t.start >= 1 - 1e-9 for t in timed)
        for d in range(4):
            mine = sorted((t for t in timed if t.device == d), key=lambda t: t.start)
            assert all(a.end <= b.start + 1e-9 for a, b in itertools.pairwise(mine))


def test_two_cores_for_four_stages_bound_by_half_the_work() -> None:
    # fair sharing of 2 cores: at least half the total work, and slower than 4 cores
    p = synthetic_problem(pp=4, microbatches=8, costs="F=1,I=1,W=1")
    s = build_schedule("1f1b", p)
    two = compute_metrics(p, simulate_shared(p, s, lambda k: max(1.0, k / 2))).makespan
    assert 4 * 8 * 3 / 2 <= two < 4 * 8 * 3
    assert two > compute_metrics(p, simulate(p, s)).makespan


def test_processes_per_device_share_like_more_devices() -> None:
    # a device standing for 2 processes on 2 cores runs as one process on 1 core: the same timeline
    p = synthetic_problem(pp=2, microbatches=4, costs="F=1,B=2")
    s = build_schedule("gpipe", p)
    two = simulate_shared(p, s, lambda k: max(1.0, k / 2), processes_per_device=2)
    one = simulate_shared(p, s, lambda k: max(1.0, k / 1))
    ends = {(t.device, str(t.action)): t.end for t in one}
    assert len(two) == len(one)
    for t in two:
        assert t.end == pytest.approx(ends[(t.device, str(t.action))], rel=1e-12)
    # and slower than devices of their own whenever both stages are busy at once
    assert compute_metrics(p, two).makespan > compute_metrics(p, simulate(p, s)).makespan
