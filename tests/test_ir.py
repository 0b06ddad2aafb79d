"""The schedule IR: actions print as `2F0` / `0F3&5B1` and parse back exactly."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from parplan.errors import InvalidInputError
from parplan.schedule.ir import FUSED, KINDS, Action, B, F, I, Schedule, W

plain_actions = st.builds(
    lambda stage, kind, mb: Action(stage=stage, kind=kind, microbatch=mb),
    st.integers(0, 10_000),
    st.sampled_from(KINDS),
    st.integers(0, 10_000),
)


@given(plain_actions)
def test_plain_round_trip(action: Action) -> None:
    text = str(action)
    assert text == f"{action.stage}{action.kind}{action.microbatch}"
    assert Action.parse(text) == action


@given(plain_actions, plain_actions)
def test_fused_round_trip(first: Action, second: Action) -> None:
    fused = Action.fused(first, second)
    assert fused.kind == FUSED and fused.is_fused
    assert (fused.stage, fused.microbatch) == (first.stage, first.microbatch)
    assert str(fused) == f"{first}&{second}"
    assert Action.parse(str(fused)) == fused
    assert fused.plain() == (first, second)


def test_examples() -> None:
    assert str(F(2, 0)) == "2F0"
    assert Action.parse(" 12W3 ") == W(12, 3)
    assert Action.parse("0F3&5B1") == Action.fused(F(0, 3), B(5, 1))
    assert I(1, 2).plain() == (I(1, 2),)
    assert not I(1, 2).is_fused


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("2X0", "expected STAGE KIND MICROBATCH"),
        ("F0", "expected STAGE KIND MICROBATCH"),
        ("-1F0", "expected STAGE KIND MICROBATCH"),
        ("0F0&1B0&2W0", "exactly two parts"),
        ("0F0&", "expected STAGE KIND MICROBATCH"),
    ],
)
def test_parse_errors(text: str, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        Action.parse(text)


def test_invalid_actions() -> None:
    with pytest.raises(InvalidInputError, match="must be one of F, I, W, B or FB"):
        Action(stage=0, kind="X", microbatch=0)
    with pytest.raises(InvalidInputError, match="needs exactly two plain parts"):
        Action(stage=0, kind=FUSED, microbatch=0, parts=(F(0, 0),))
    with pytest.raises(InvalidInputError, match="needs exactly two plain parts"):
        Action.fused(F(0, 0), Action.fused(F(1, 0), B(1, 0)))
    with pytest.raises(InvalidInputError, match="only a fused FB action has parts"):
        Action(stage=0, kind="F", microbatch=0, parts=(F(0, 0), B(0, 0)))
    with pytest.raises(InvalidInputError, match="must be >= 0"):
        F(-1, 0)


def test_actions_are_hashable_values() -> None:
    assert len({F(0, 0), F(0, 0), Action.parse("0F0"), B(0, 0)}) == 2


def test_schedule_text_and_actions() -> None:
    fused = Action.fused(F(0, 1), B(0, 0))
    schedule = Schedule.of("x", [[F(0, 0), fused], iter([F(1, 0)])])
    assert schedule.num_devices == 2
    assert schedule.to_text() == "d0: 0F0 0F1&0B0\nd1: 1F0"
    assert list(schedule.actions()) == [(0, F(0, 0)), (0, fused), (1, F(1, 0))]
