"""Issue 12, item 6: property tests over every reader, through the command line.

For each file format (plan, problem, graph, cluster, profile, job shops, config) hypothesis draws
random bytes, and valid documents with one field (or one token) replaced by a random value: inf,
nan, huge, negative, zero, booleans, strings with markup, null, lists, objects. Whatever it draws,
the command must end like a user-facing program: exit 0 (the mutation was harmless), 2, 3 or 4,
never an uncaught exception or exit 1 (our own bug), never a traceback, at most one message line.

The default run draws a bounded number of examples per reader (derandomized, so a failure
reproduces); ``pytest -m slow`` runs the same properties with many more.
"""

from __future__ import annotations

import copy
import json
import math
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from parplan.cli import app
from parplan.cluster_io import cluster_to_json, preset_cluster
from test_bad_inputs import GRAPH, PROFILE, _message_lines, _plan_doc

runner = CliRunner()

FAST = settings(
    max_examples=20,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
MANY = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# Values a user (or a broken tool) may put into any field.
NUMBERS = st.one_of(
    st.sampled_from(
        [math.inf, -math.inf, math.nan, 1e999, -1e999, 1e308, -1.0, 0.0, -0.0, 1e-320, 2**63, -(2**63)]
    ),
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(2**70), max_value=2**70),
)
SCALARS = st.one_of(
    NUMBERS,
    st.booleans(),
    st.none(),
    st.sampled_from(
        ["", "[/x]", "[bold]x[/bold]", "nan", "inf", "1e999", "-1", "\x00", "caf\u00e9", "8xh100"]
    ),
    st.text(max_size=12),
)
VALUES = st.one_of(
    SCALARS, st.lists(SCALARS, max_size=3), st.dictionaries(st.text(max_size=5), SCALARS, max_size=2)
)


def _paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path to a field of a JSON document (containers included)."""
    out = [prefix] if prefix else []
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += _paths(v, (*prefix, i))
    return out


def _replace(doc: Any, path: tuple[Any, ...], value: Any) -> Any:
    out = copy.deepcopy(doc)
    node = out
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return out


def _dumps(doc: Any) -> str:
    # Python's json writes NaN/Infinity literals: readers must refuse those too, so keep them.
    return json.dumps(doc, allow_nan=True)


def _problem_doc() -> dict[str, Any]:
    doc = _plan_doc()
    doc.pop("actions")
    return doc


def _cluster_doc() -> dict[str, Any]:
    return cluster_to_json(preset_cluster("8xh100").subset(2))


MODEL = ["--model", "gpt-tiny", "--pp", "2", "-m", "2", "--schedules", "1f1b"]

# reader -> (valid document, command with {f} for the file)
JSON_READERS: dict[str, tuple[Any, list[str]]] = {
    "plan": (_plan_doc(), ["check", "{f}"]),
    "problem": (_problem_doc(), ["compare", "--problem", "{f}", "--schedules", "1f1b"]),
    "graph": (
        GRAPH,
        ["compare", "--graph", "{f}", "--devices", "2", "--cluster", "8xh100", "--schedules", "1f1b"],
    ),
    "cluster": (_cluster_doc(), ["compare", *MODEL, "--cluster", "{f}"]),
    "profile": (PROFILE, ["compare", *MODEL, "--cluster", "local", "--profile", "{f}"]),
}
FJS = "2 2 1\n2 2 1 3 2 2 1 2 2\n2 1 1 3 2 1 1 2 2\n"
ORLIB = "2 2\n0 3 1 2\n1 2 0 4\n"
CONFIG = 'pp = 2\nmicrobatches = 4\ncosts = "F=1,I=1,W=1"\nschedules = ["1f1b"]\n'
TEXT_READERS: dict[str, tuple[str, str, list[str]]] = {
    "fjs": (FJS, ".fjs", ["fjsp", "{f}", "--time-limit", "2", "--workers", "1"]),
    "orlib": (ORLIB, ".txt", ["fjsp", "{f}", "--time-limit", "2", "--workers", "1"]),
    "config": (CONFIG, ".toml", ["compare", "--config", "{f}"]),
}
SUFFIX = {"plan": ".json", "problem": ".json", "graph": ".json", "cluster": ".json", "profile": ".json"}


def _invoke(command: list[str], content: str | bytes, suffix: str) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / f"input{suffix}"
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8", errors="surrogatepass")
        argv = [a.replace("{f}", str(path)) for a in command]
        result = runner.invoke(app, argv)
        _assert_user_facing(argv, result, one_line=True)
        if result.exit_code != 0:
            result = runner.invoke(app, [*argv, "--json"])
            _assert_user_facing(argv, result, one_line=False)
            doc = json.loads(result.stdout, parse_constant=_refuse)
            assert "error" in doc, result.stdout


def _refuse(constant: str) -> Any:
    raise AssertionError(f"non-strict JSON constant {constant}")


def _assert_user_facing(argv: list[str], result: Any, *, one_line: bool) -> None:
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        argv,
        repr(result.exception),
    )
    assert result.exit_code in (0, 2, 3, 4), (argv, result.exit_code, result.output)
    assert "Traceback" not in result.output, result.output
    if result.exit_code and one_line:
        assert _message_lines(result.output) <= 1, result.output


def _field_property(reader: str) -> Any:
    doc, command = JSON_READERS[reader]
    paths = _paths(doc)

    @given(path=st.sampled_from(paths), value=VALUES)
    def prop(path: tuple[Any, ...], value: Any) -> None:
        _invoke(command, _dumps(_replace(doc, path, value)), SUFFIX[reader])

    return prop


def _bytes_property(command: list[str], suffix: str) -> Any:
    @given(
        data=st.one_of(
            st.binary(max_size=300), st.text(max_size=200).map(lambda s: s.encode("utf-8", "replace"))
        )
    )
    def prop(data: bytes) -> None:
        _invoke(command, data, suffix)

    return prop


def _token_property(text: str, suffix: str, command: list[str]) -> Any:
    tokens = text.replace("\n", " \n ").split(" ")
    places = [i for i, t in enumerate(tokens) if t.strip()]

    @given(where=st.sampled_from(places), value=SCALARS)
    def prop(where: int, value: Any) -> None:
        changed = list(tokens)
        changed[where] = str(value).replace("\n", " ")
        _invoke(command, " ".join(changed).replace(" \n ", "\n"), suffix)

    return prop


@pytest.mark.parametrize("reader", sorted(JSON_READERS))
def test_random_field_values_never_crash(reader: str) -> None:
    FAST(_field_property(reader))()


@pytest.mark.parametrize("reader", sorted(JSON_READERS) + sorted(TEXT_READERS))
def test_random_bytes_never_crash(reader: str) -> None:
    if reader in JSON_READERS:
        command, suffix = JSON_READERS[reader][1], SUFFIX[reader]
    else:
        _, suffix, command = TEXT_READERS[reader]
    FAST(_bytes_property(command, suffix))()


@pytest.mark.parametrize("reader", sorted(TEXT_READERS))
def test_random_tokens_never_crash(reader: str) -> None:
    text, suffix, command = TEXT_READERS[reader]
    FAST(_token_property(text, suffix, command))()


@pytest.mark.slow
@pytest.mark.parametrize("reader", sorted(JSON_READERS))
def test_many_random_field_values_never_crash(reader: str) -> None:
    MANY(_field_property(reader))()


@pytest.mark.slow
@pytest.mark.parametrize("reader", sorted(TEXT_READERS))
def test_many_random_tokens_never_crash(reader: str) -> None:
    text, suffix, command = TEXT_READERS[reader]
    MANY(_token_property(text, suffix, command))()
