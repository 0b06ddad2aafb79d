"""The Strategy record: parsing Megatron-style text, defaults, refusals, round trips."""

from __future__ import annotations

import pytest

from parplan.errors import InvalidInputError
from parplan.strategy import Strategy, parse_strategy


def test_parse_defaults_and_round_trip() -> None:
    s = parse_strategy("pp=2,dp=2,zero=3,recompute=full")
    assert (s.pp, s.dp, s.tp, s.zero, s.recompute) == (2, 2, 1, 3, "full")
    assert s.schedule == "1f1b" and s.sequence_parallel is False
    assert s.num_devices == 4 and s.mesh_shape == (2, 2, 1)
    assert parse_strategy(s.to_text()) == s
    assert Strategy.from_json(s.to_json()) == s


def test_tp_turns_sequence_parallel_on_unless_told() -> None:
    assert parse_strategy("dp=2,tp=2").sequence_parallel is True
    s = parse_strategy("tp=2,sp=0")
    assert s.sequence_parallel is False and parse_strategy(s.to_text()) == s
    assert parse_strategy("pp=2,tp=2,schedule=zb-h1").label() == "PP2xTP2+SP+zb-h1"


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("", "empty"),
        ("pp=0", "pp"),
        ("dp=two", "not an integer"),
        ("zero=1", "dp=1"),
        ("dp=2,zero=4", "0, 1, 2 or 3"),
        ("recompute=some", "none, selective, full"),
        ("sp=1", "tp > 1"),
        ("schedule=1f1b", "pp > 1"),
        ("pp=2,pp=2", "twice"),
        ("ep=2", "unknown key"),
        ("pp", "KEY=VALUE"),
    ],
)
def test_bad_strategies_name_the_key(text: str, needle: str) -> None:
    with pytest.raises(InvalidInputError, match=needle):
        parse_strategy(text)


def test_from_json_names_the_path() -> None:
    with pytest.raises(InvalidInputError, match=r"plan.strategy.pp"):
        Strategy.from_json({"pp": -1}, where="plan.strategy")
    with pytest.raises(InvalidInputError, match="unknown key 'ep'"):
        Strategy.from_json({"ep": 2})
