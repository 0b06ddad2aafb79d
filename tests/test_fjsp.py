"""Job-shop readers and the shared model/backend on standard and hand-made instances."""

from __future__ import annotations

from pathlib import Path

import pytest

from parplan.errors import InvalidInputError
from parplan.solve.fjsp import fjsp_model, parse_fjs, parse_jobshop, read_instance, solve_fjsp
from parplan.solve.model import Assignment, check_assignment

DATA = Path(__file__).parent / "data"


def test_ft06_reaches_the_known_optimum_55_proven() -> None:
    result = solve_fjsp(DATA / "ft06.txt", time_limit_s=20, deterministic=True)
    assert result.makespan == 55
    assert result.lower_bound == 55
    assert result.status == "optimal"
    assert len(result.assignment) == 36


def test_tiny_fjs_hand_optimum() -> None:
    # J1 must run its 3-unit op on M1 and then its 1-unit op on M1 (M2 takes 2): M1 busy [0,4).
    # J0 then goes to M2: 3 + 2 = 5. Both job chains alone need 4, but they cannot share M1 in time.
    result = solve_fjsp(DATA / "tiny.fjs", time_limit_s=10, deterministic=True)
    assert result.makespan == 5
    assert result.status == "optimal"
    machines = {(o.job, o.operation): o.machine for o in result.assignment}
    assert machines == {(0, 0): 1, (0, 1): 1, (1, 0): 0, (1, 1): 0}


def test_solution_respects_job_order_and_machines() -> None:
    inst = read_instance(DATA / "ft06.txt")
    model = fjsp_model(inst)
    result = solve_fjsp(DATA / "ft06.txt", time_limit_s=20, deterministic=True)
    index = {(t.key[0], t.key[2]): t.index for t in model.tasks}
    device = [0] * len(model.tasks)
    start = [0] * len(model.tasks)
    for o in result.assignment:
        device[index[(o.job, o.operation)]] = o.machine
        start[index[(o.job, o.operation)]] = o.start
    assert check_assignment(model, Assignment(device=tuple(device), start=tuple(start))) == []


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty file"),
        ("2 2 1\n2 2 1 2 2 3 1 2 2\n", "header announces 2 jobs but only 1"),
        ("1 2 1\n2 2 1 2 2 3 1 2\n", ":2: job 0 ends early, expected the time of operation 1 on machine 2"),
        ("1 2 1\n1 1 3 4\n", ":2: job 0 operation 0 uses machine 3, machines are 1..2"),
        ("1 2 1\n1 1 x 4\n", ":2: 'x' is not a number"),
        ("1 2 1\n1 1 1 4 9\n", ":2: job 0 has 1 extra numbers"),
    ],
)
def test_malformed_fjs_names_the_line(text: str, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message.replace("(", r"\(").replace(".", r"\.")):
        parse_fjs(text, "bad.fjs")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("# comment only\n", "empty file"),
        ("2\n", ":1: first line must be 'jobs machines'"),
        ("1 2\n0 3 1\n", ":2: job 0 has an odd count of numbers"),
        ("1 2\n0 3 2 4\n", ":2: job 0 uses machine 2, but machines are 0..1"),
        ("1 2\n0 -3 1 4\n", ":2: '-3' must be a non-negative integer"),
    ],
)
def test_malformed_jobshop_names_the_line(text: str, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message.replace(".", r"\.")):
        parse_jobshop(text, "bad.txt")


def test_missing_file() -> None:
    with pytest.raises(InvalidInputError, match="no such file"):
        read_instance(DATA / "nope.fjs")


def test_brandimarte_mk01_reaches_40_proven() -> None:
    # Mk01 (10 jobs, 6 machines, up to 3 eligible machines per operation): known optimum 40
    inst = read_instance(DATA / "mk01.fjs")
    assert (len(inst.jobs), inst.num_machines, inst.num_operations) == (10, 6, 55)
    result = solve_fjsp(DATA / "mk01.fjs", time_limit_s=20, deterministic=True)
    assert (result.makespan, result.lower_bound, result.status) == (40, 40, "optimal")
