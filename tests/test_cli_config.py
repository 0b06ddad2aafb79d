"""`--config job.toml` (options from a file, the command line wins) and `--dump-config FILE`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from parplan.cli import app, main
from parplan.cli_config import expand_argv
from parplan.errors import InvalidInputError

runner = CliRunner()


def _json(args: list[str]) -> dict:
    expanded, dumped = expand_argv(args, app)
    assert dumped is None
    result = runner.invoke(app, expanded)
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def test_config_file_gives_the_options_and_the_command_line_wins(tmp_path: Path) -> None:
    job = tmp_path / "job.toml"
    job.write_text(
        'pp = 2\nmicrobatches = 4\ncosts = "F=1,B=2"\nschedules = ["GPipe", "1F1B"]\n'
        "[plan]\ntime-limit = 5\ndeterministic = true\n"
    )
    # compare reads the shared keys and its own `schedules` (a list becomes a comma-separated value)
    rows = _json(["compare", "--config", str(job), "--json"])["schedules"]
    # p=2, m=4, F=1, B=2: GPipe and 1F1B both take m(F+B) + (p-1)(F+B) = 15
    assert [(r["name"], r["makespan"]) for r in rows] == [("gpipe", 15.0), ("1f1b", 15.0)]
    # plan ignores compare's `schedules`; the command line's --microbatches 6 overrides the file's 4:
    # 6*3 + 3 = 21, the 1F1B optimum with whole backward passes
    assert _json(["plan", "--config", str(job), "--microbatches", "6", "--json"])["makespan"] == 21.0


def test_dump_config_round_trips(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dumped = tmp_path / "out.toml"
    with pytest.raises(SystemExit) as exit_info:
        main(
            [
                "plan",
                "--pp",
                "2",
                "-m",
                "4",
                "--costs",
                "F=1,I=1,W=1",
                "--fused",
                "--dump-config",
                str(dumped),
            ]
        )
    assert exit_info.value.code == 0
    text = dumped.read_text()
    assert "pp = 2" in text and "microbatches = 4" in text and "fused = true" in text
    assert "workers" not in text  # defaults are not written
    assert "wrote" in capsys.readouterr().err
    expanded, _ = expand_argv(["plan", "--config", str(dumped)], app)
    assert expanded[:1] == ["plan"] and "--fused" in expanded and "--pp" in expanded


def test_bad_config_keys_are_refused_with_a_hint(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("pp = 2\n[plan]\nmicrobatchs = 3\n")
    with pytest.raises(
        InvalidInputError, match=r"plan\.microbatchs: not an option .* did you mean 'microbatches'"
    ):
        expand_argv(["plan", "--config", str(bad)], app)
    bad.write_text("nonsense = 1\n")
    with pytest.raises(InvalidInputError, match="nonsense: not an option of `parplan plan`"):
        expand_argv(["plan", "--config", str(bad)], app)
    with pytest.raises(InvalidInputError, match="no such file"):
        expand_argv(["plan", "--config", str(tmp_path / "none.toml")], app)
    bad.write_text("fused = 3\n")
    with pytest.raises(InvalidInputError, match="fused is a switch"):
        expand_argv(["plan", "--config", str(bad)], app)
