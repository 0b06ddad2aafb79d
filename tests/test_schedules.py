"""The built-in expert schedules on the simulator: closed forms, acceptance numbers, preconditions."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from parplan.errors import InvalidInputError
from parplan.schedule import expert
from parplan.schedule.expert import SCHEDULES, applicable_schedules, build_schedule
from parplan.schedule.ir import Schedule
from parplan.synthetic import parse_costs, synthetic_problem

PLACEMENT = {
    "gpipe": "linear",
    "1f1b": "linear",
    "interleaved-1f1b": "interleaved",
    "zb-h1": "linear",
    "zb-h2": "linear",
    "zb-auto": "linear",
    "zb-v": "v",
    "v-min": "v",
    "v-half": "v",
    "dualpipe": "bidirectional",
    "dualpipev": "v",
}


def test_registry_covers_the_design_names() -> None:
    assert list(SCHEDULES) == list(PLACEMENT)
    for name, spec in SCHEDULES.items():
        assert spec.placement == PLACEMENT[name]
        assert spec.description
    assert not SCHEDULES["1f1b"].needs_split_backward
    assert SCHEDULES["zb-h1"].to_json() == {
        "name": "zb-h1",
        "description": SCHEDULES["zb-h1"].description,
        "placement": "linear",
        "split_backward": True,
    }
    assert SCHEDULES["dualpipe"].needs_split_backward


# ---------------------------------------------------------------------------- acceptance numbers


def test_acceptance_gpipe_and_1f1b(run_schedule) -> None:
    for name, peak0 in (("gpipe", 8), ("1f1b", 4)):
        plan = run_schedule(name, pp=4, microbatches=8, costs="F=1,B=2")
        assert plan.metrics.makespan == 33
        assert plan.metrics.peak_memory_per_device[0] == peak0
        assert plan.validate() == []


def test_acceptance_zb_h1(run_schedule) -> None:
    plan = run_schedule("zb-h1", pp=4, microbatches=8, costs="F=1,I=1,W=1")
    assert plan.metrics.makespan == 27
    assert plan.validate() == []


def test_acceptance_dualpipe(run_schedule) -> None:
    plan = run_schedule(
        "dualpipe", pp=8, microbatches=20, placement="bidirectional", costs="F=1,I=1,W=1,FB=3"
    )
    assert plan.metrics.makespan == 66
    assert max(plan.metrics.peak_memory_per_device) == 9  # p + 1
    assert plan.validate() == []


def test_acceptance_dualpipev(run_schedule) -> None:
    plan = run_schedule("dualpipev", pp=4, microbatches=10, placement="v", costs="F=1,I=1,W=1,FB=3")
    assert plan.metrics.makespan == 66
    assert plan.validate() == []


# ---------------------------------------------------------------------------- closed forms

SIZES = [(2, 4), (3, 5), (4, 8), (5, 12)]


@pytest.mark.parametrize(("pp", "m"), SIZES)
@pytest.mark.parametrize("costs", ["F=1,B=2", "F=1.5,B=2.5", "F=1,I=1,W=1"])
def test_gpipe_and_1f1b_closed_forms(run_schedule, pp: int, m: int, costs: str) -> None:
    c = parse_costs(costs)
    for name, peak0 in (("gpipe", m), ("1f1b", min(pp, m))):
        metrics = run_schedule(name, pp=pp, microbatches=m, costs=costs).metrics
        assert metrics.idle_per_device == pytest.approx([(pp - 1) * (c.F + c.B)] * pp)
        assert metrics.peak_memory_per_device[0] == peak0


@pytest.mark.parametrize(("pp", "m", "chunks"), [(2, 4, 2), (4, 8, 2), (3, 6, 3), (4, 12, 3)])
@pytest.mark.parametrize("costs", ["F=1,B=2", "F=2,B=3"])
def test_interleaved_bubble_is_1f1b_over_v(run_schedule, pp: int, m: int, chunks: int, costs: str) -> None:
    # Each of the V chunks costs 1/V of the device's model part (F_dev = V*F per stage), so the
    # bubble (p-1)(F_dev+B_dev)/V is (p-1)(F+B) in per-stage costs, V times smaller than 1F1B's
    # on the same model.
    c = parse_costs(costs)
    plan = run_schedule(
        "interleaved-1f1b", pp=pp, microbatches=m, placement="interleaved", chunks=chunks, costs=costs
    )
    model_f, model_b = chunks * c.F, chunks * c.B
    assert plan.metrics.idle_per_device == pytest.approx([(pp - 1) * (model_f + model_b) / chunks] * pp)
    assert plan.validate() == []


@pytest.mark.parametrize(("pp", "m"), SIZES)
@pytest.mark.parametrize("costs", ["F=1,I=1,W=1", "F=2,I=3,W=1", "F=1,I=2,W=1", "F=1.5,I=1.5,W=1"])
def test_zb_h1_closed_form(run_schedule, pp: int, m: int, costs: str) -> None:
    c = parse_costs(costs)
    metrics = run_schedule("zb-h1", pp=pp, microbatches=m, costs=costs).metrics
    assert metrics.idle_per_device == pytest.approx([(pp - 1) * (c.F + c.I - c.W)] * pp)
    assert max(metrics.peak_memory_per_device) == min(pp, m)


@pytest.mark.parametrize(("pp", "m"), [(2, 4), (3, 6), (4, 8), (4, 12), (6, 12)])
@pytest.mark.parametrize("costs", ["F=1,I=1,W=1", "F=2,I=3,W=1", "F=1,I=2,W=1", "F=1.5,I=1.5,W=1"])
def test_zb_h2_closed_form(run_schedule, pp: int, m: int, costs: str) -> None:
    # (p-1)(F+I-2W) is the span idle of the first device (the paper counts the bubble inside each
    # device's own span); it holds when F+I >= 2W and m >= 2p-1.
    c = parse_costs(costs)
    metrics = run_schedule("zb-h2", pp=pp, microbatches=m, costs=costs).metrics
    assert metrics.span_idle_per_device[0] == pytest.approx((pp - 1) * (c.F + c.I - 2 * c.W))
    assert metrics.peak_memory_per_device[0] == 2 * pp - 1


def test_zb_h2_has_no_span_idle_at_unit_costs(run_schedule) -> None:
    metrics = run_schedule("zb-h2", pp=4, microbatches=8, costs="F=1,I=1,W=1").metrics
    assert metrics.span_idle_per_device == (0, 0, 0, 0)
    assert metrics.makespan == 27


# DualPipe's (P/2-1)(F&B+B-3W) is the idle of the middle devices (the worst ones); the outer
# devices idle a little less when F&B < F+B.
DUALPIPE_COSTS = ["F=1,I=1,W=1,FB=3", "F=1,I=1,W=1,FB=2.5", "F=2,I=2,W=1,FB=4"]


@pytest.mark.parametrize(("pp", "m"), [(2, 4), (4, 8), (4, 12), (6, 12), (8, 16)])
@pytest.mark.parametrize("costs", DUALPIPE_COSTS)
def test_dualpipe_closed_form(run_schedule, pp: int, m: int, costs: str) -> None:
    c = parse_costs(costs)
    assert c.FB is not None
    plan = run_schedule("dualpipe", pp=pp, microbatches=m, placement="bidirectional", costs=costs)
    want = (pp / 2 - 1) * (c.FB + c.B - 3 * c.W)
    assert max(plan.metrics.idle_per_device) == pytest.approx(want)
    assert plan.metrics.peak_memory_per_device == (pp + 1,) * pp


def test_dualpipe_keeps_parameters_twice(run_schedule) -> None:
    plan = run_schedule(
        "dualpipe", pp=4, microbatches=8, placement="bidirectional", costs="F=1,I=1,W=1", param_mem=10
    )
    assert plan.metrics.peak_memory_per_device == (25,) * 4  # two stages' parameters + p+1


@pytest.mark.parametrize(("pp", "m"), [(2, 4), (2, 6), (3, 6), (4, 8), (4, 10)])
@pytest.mark.parametrize("costs", DUALPIPE_COSTS)
def test_dualpipev_closed_form(run_schedule, pp: int, m: int, costs: str) -> None:
    # The table's p counts stages: 2 per device here.
    c = parse_costs(costs)
    assert c.FB is not None
    stages = 2 * pp
    plan = run_schedule("dualpipev", pp=pp, microbatches=m, placement="v", costs=costs)
    want = (stages / 2 - 1) * (c.FB + c.B - 3 * c.W)
    assert max(plan.metrics.idle_per_device) == pytest.approx(want)
    assert plan.metrics.peak_memory_per_device == (stages + 1,) * pp


@pytest.mark.parametrize(("pp", "m"), [(2, 3), (2, 4), (4, 7), (4, 8), (4, 12), (6, 12)])
@pytest.mark.parametrize("costs", ["F=1,I=1,W=1", "F=2,I=2,W=1", "F=1,I=2,W=1", "F=1,I=1,W=0.5"])
def test_zb_v_memory_and_bubble(run_schedule, pp: int, m: int, costs: str) -> None:
    # 1F1B's memory (p micro-batches of the whole model = 2p stage activations) on every device;
    # the idle (p-1)max(F,I) is what the simulator measures for this order (not a published
    # formula): with F=I=W it is a sixth of 1F1B's (p-1)(2F+2B) on the same model.
    c = parse_costs(costs)
    assert c.I is not None
    metrics = run_schedule("zb-v", pp=pp, microbatches=m, placement="v", costs=costs).metrics
    assert metrics.peak_memory_per_device == (2 * pp,) * pp
    assert metrics.idle_per_device == pytest.approx([(pp - 1) * max(c.F, c.I)] * pp)


def test_zb_v_beats_1f1b_on_the_same_model(run_schedule) -> None:
    # Same model, 4 devices: 1F1B with one stage of cost F=2,B=4 per device idles 3*6 = 18.
    zbv = run_schedule("zb-v", pp=4, microbatches=8, placement="v").metrics
    one = run_schedule("1f1b", pp=4, microbatches=8, costs="F=2,B=4").metrics
    assert (zbv.makespan, one.makespan) == (51, 66)
    assert max(zbv.peak_memory_per_device) == 2 * max(one.peak_memory_per_device)  # same bytes


# ---------------------------------------------------------------------------- validity


def _problem_for(name: str, pp: int, m: int, comm: float):
    costs = "F=1,I=1,W=1,FB=2.5" if SCHEDULES[name].needs_split_backward else "F=1,B=2"
    return synthetic_problem(pp=pp, microbatches=m, placement=PLACEMENT[name], costs=costs, comm=comm)


@pytest.mark.parametrize("name", list(SCHEDULES))
@pytest.mark.parametrize(("pp", "m"), [(2, 4), (4, 8), (4, 12), (6, 12)])
@pytest.mark.parametrize("comm", [0.0, 0.5])
def test_every_schedule_validates(name: str, pp: int, m: int, comm: float) -> None:
    from parplan.plan import Plan

    problem = _problem_for(name, pp, m, comm)
    plan = Plan.from_schedule(problem, build_schedule(name, problem))
    assert plan.validate() == []
    busy = sum(plan.metrics.busy_per_device)
    assert plan.metrics.makespan >= busy / pp


@settings(max_examples=60, deadline=None)
@given(
    name=st.sampled_from(list(SCHEDULES)),
    pp=st.integers(1, 6),
    extra=st.integers(0, 6),
    f=st.sampled_from([0.5, 1.0, 2.0]),
    i=st.sampled_from([0.5, 1.0, 3.0]),
    w=st.sampled_from([0.25, 1.0, 2.0]),
    fb=st.sampled_from([None, 1.0, 2.5]),
    comm=st.sampled_from([0.0, 0.3]),
)
def test_property_applicable_schedules_validate(
    name: str, pp: int, extra: int, f: float, i: float, w: float, fb: float | None, comm: float
) -> None:
    # Every schedule whose preconditions hold gives a valid plan, whatever the costs.
    m = 2 * pp + 2 * extra if name == "dualpipe" else pp + extra
    costs = f"F={f},I={i},W={w}" + (f",FB={fb}" if fb else "")
    options = {"chunks": 2} if PLACEMENT[name] == "interleaved" else {}
    problem = synthetic_problem(
        pp=pp, microbatches=m, placement=PLACEMENT[name], costs=costs, comm=comm, **options
    )
    reason = dict(applicable_schedules(problem))[name]
    if reason is not None:
        with pytest.raises(InvalidInputError, match="^" + name):
            build_schedule(name, problem)
        return
    from parplan.plan import Plan

    assert Plan.from_schedule(problem, build_schedule(name, problem)).validate() == []


@pytest.mark.parametrize("name", ["gpipe", "1f1b", "interleaved-1f1b"])
def test_full_backward_schedules_use_b_on_split_costs(name: str) -> None:
    problem = synthetic_problem(pp=2, microbatches=4, placement=PLACEMENT[name], costs="F=1,I=1,W=2")
    schedule = build_schedule(name, problem)
    kinds = {a.kind for _, a in schedule.actions()}
    assert kinds == {"F", "B"}
    from parplan.simulate import compute_metrics, simulate

    metrics = compute_metrics(problem, simulate(problem, schedule))
    assert sum(metrics.busy_per_device) == pytest.approx(problem.num_stages * 4 * (1 + 3))


def test_generators_are_pure_functions_of_integers() -> None:
    assert Schedule.of("1f1b", expert.one_f_one_b(2, 3)).to_text() == (
        "d0: 0F0 0F1 0B0 0F2 0B1 0B2\nd1: 1F0 1B0 1F1 1B1 1F2 1B2"
    )
    # device d keeps up to d weight passes pending
    assert Schedule.of("zb-h1", expert.zb_h1(2, 2)).to_text() == (
        "d0: 0F0 0F1 0I0 0W0 0I1 0W1\nd1: 1F0 1I0 1F1 1I1 1W0 1W1"
    )
    # p=2: both devices are middle ranks, so the first F0&B1 is not fused; step 6 switches to
    # zero bubble before the second B0 (half_rank 0 is even)
    assert Schedule.of("dualpipe", expert.dualpipe(2, 4)).to_text() == (
        "d0: 0F0 3F2 0F1 3B2 3F3&0B0 3B3 0I1 0W1\nd1: 2F2 1F0 2F3 1B0 1F1&2B2 1B1 2I3 2W3"
    )


def test_dualpipe_uses_fused_actions_with_the_fb_cost(run_schedule) -> None:
    plan = run_schedule("dualpipe", pp=4, microbatches=8, placement="bidirectional", costs="F=1,I=1,W=1,FB=2")
    fused = [t for t in plan.timed if t.action.is_fused]
    assert fused
    assert all(t.end - t.start == 2 for t in fused)
    assert {tuple(p.kind for p in t.action.parts) for t in fused} == {("F", "B")}


# ---------------------------------------------------------------------------- preconditions


@pytest.mark.parametrize(
    ("name", "options", "message"),
    [
        (
            "dualpipe",
            {"pp": 3, "microbatches": 8, "placement": "bidirectional"},
            "dualpipe: needs an even number of devices, got --pp 3",
        ),
        (
            "dualpipe",
            {"pp": 8, "microbatches": 10, "placement": "bidirectional"},
            "dualpipe: needs --microbatches >= 2*pp (16), got 10",
        ),
        (
            "zb-h1",
            {"pp": 4, "microbatches": 8, "costs": "F=1,B=2"},
            "zb-h1: needs split backward costs; give I and W in --costs",
        ),
        ("dualpipe", {"pp": 4, "microbatches": 8}, "dualpipe: needs --placement bidirectional"),
        (
            "dualpipev",
            {"pp": 4, "microbatches": 6, "placement": "v"},
            "dualpipev: needs --microbatches >= 2*pp (8), got 6",
        ),
        ("zb-v", {"pp": 4, "microbatches": 8}, "zb-v: needs --placement v, got --placement linear"),
        (
            "zb-v",
            {"pp": 4, "microbatches": 6, "placement": "v"},
            "zb-v: needs --microbatches >= 2*pp-1 (7), got 6",
        ),
        (
            "interleaved-1f1b",
            {"pp": 4, "microbatches": 6, "placement": "interleaved", "costs": "F=1,B=2"},
            "interleaved-1f1b: needs --microbatches a multiple of --pp 4, got 6",
        ),
    ],
)
def test_precondition_messages(name: str, options: dict, message: str) -> None:
    problem = synthetic_problem(**options)
    with pytest.raises(
        InvalidInputError, match="^" + message.replace("*", r"\*").replace("(", r"\(").replace(")", r"\)")
    ):
        build_schedule(name, problem)
    assert dict(applicable_schedules(problem))[name].startswith(message)


def test_unknown_name_lists_the_valid_ones() -> None:
    problem = synthetic_problem(pp=2, microbatches=4)
    with pytest.raises(InvalidInputError) as err:
        build_schedule("dualpip", problem)
    text = str(err.value)
    assert "did you mean dualpipe" in text
    assert all(name in text for name in SCHEDULES)


def test_applicable_schedules_on_a_linear_split_problem() -> None:
    problem = synthetic_problem(pp=4, microbatches=8, costs="F=1,I=1,W=1")
    table = dict(applicable_schedules(problem))
    assert list(table) == list(SCHEDULES)
    assert {n for n, why in table.items() if why is None} == {"gpipe", "1f1b", "zb-h1", "zb-h2", "zb-auto"}
    assert (
        table["interleaved-1f1b"] == "interleaved-1f1b: needs --placement interleaved, got --placement linear"
    )
