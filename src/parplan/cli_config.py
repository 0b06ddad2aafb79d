"""``--config job.toml`` and ``--dump-config FILE`` for the commands with many options.

A configuration file holds the same keys as the options (``pp = 2``, ``time-limit = 10`` or
``time_limit = 10``, ``fused = true``, ``schedules = ["gpipe", "1f1b"]``): top-level keys, plus an
optional table per command (``[plan]``, ``[compare]``) whose keys win over the top level. It works
by rewriting the command line before typer parses it: the file's options go right after the
command name, so any option also given on the command line (later) overrides the file's value.
``--dump-config FILE`` writes the options in effect (file and command line, not the defaults) and
exits without running the command.
"""

from __future__ import annotations

import difflib
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from parplan.errors import InvalidInputError

#: Commands that take ``--config`` and ``--dump-config``.
CONFIG_COMMANDS = ("plan", "compare", "frontier", "train")


def _take(args: list[str], flag: str) -> tuple[list[str], str | None]:
    """``args`` without ``flag VALUE`` / ``flag=VALUE``, and VALUE (None when absent)."""
    for i, a in enumerate(args):
        if a == flag:
            if i + 1 >= len(args):
                raise InvalidInputError(f"{flag}: needs a file name")
            return args[:i] + args[i + 2 :], args[i + 1]
        if a.startswith(flag + "="):
            return args[:i] + args[i + 1 :], a.split("=", 1)[1]
    return args, None


def _options(command: Any) -> dict[str, Any]:
    """The command's options by key (``time_limit`` for ``--time-limit``), arguments left out."""
    out: dict[str, Any] = {}
    for p in command.params:
        for opt in getattr(p, "opts", None) or ():
            if opt.startswith("--"):
                out[opt[2:].replace("-", "_")] = p
    return out


def _unknown(where: str, key: str, command_name: str, options: dict[str, Any]) -> InvalidInputError:
    names = sorted({o.replace("_", "-") for o in options} - {"help"})
    close = difflib.get_close_matches(key.replace("_", "-"), names, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return InvalidInputError(
        f"{where}: not an option of `parplan {command_name}`; {hint}its options: {', '.join(names)}"
    )


def _tokens(key: str, value: object, param: Any, where: str) -> list[str]:
    opt = max(param.opts, key=len)
    if getattr(param, "is_flag", False):
        if not isinstance(value, bool):
            raise InvalidInputError(f"{where}: {key} is a switch: give true or false, got {value!r}")
        if value:
            return [opt]
        return [max(param.secondary_opts, key=len)] if param.secondary_opts else []
    if isinstance(value, dict):
        raise InvalidInputError(f"{where}: {key} must be a value, not a table")
    if isinstance(value, list):
        value = ",".join(str(v) for v in value)
    elif isinstance(value, bool):
        value = "true" if value else "false"
    return [opt, str(value)]


def _config_tokens(path: str, command_name: str, command: Any, known_elsewhere: set[str]) -> list[str]:
    file = Path(path)
    if not file.is_file():
        raise InvalidInputError(f"--config {path}: no such file")
    try:
        data = tomllib.loads(file.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise InvalidInputError(f"--config {path}: not valid TOML ({exc})") from None
    options = _options(command)
    merged: dict[str, tuple[object, str]] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            continue
        name = key.replace("-", "_")
        if name not in options:
            if name in known_elsewhere or key in CONFIG_COMMANDS:
                continue  # an option of another command: the same file serves several
            raise _unknown(f"{path}: {key}", key, command_name, options)
        merged[name] = (value, f"{path}: {key}")
    section = data.get(command_name, {})
    if not isinstance(section, dict):
        raise InvalidInputError(f"{path}: {command_name} must be a table of options")
    for key, value in section.items():
        name = key.replace("-", "_")
        if name not in options:
            raise _unknown(f"{path}: {command_name}.{key}", key, command_name, options)
        merged[name] = (value, f"{path}: [{command_name}].{key}")
    tokens: list[str] = []
    seen: set[int] = set()
    for name, (value, where) in merged.items():
        if id(options[name]) in seen:
            raise InvalidInputError(f"{where}: the same option as another key of the file")
        seen.add(id(options[name]))
        tokens += _tokens(name, value, options[name], where)
    return tokens


def _toml_scalar(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def _dump(path: str, command_name: str, command: Any, args: list[str]) -> None:
    from typer._click.core import ParameterSource  # typer's own click, as get_command returns

    ctx = command.make_context(command_name, list(args))
    lines = [f"# parplan {command_name} options (parplan {command_name} --config {Path(path).name})"]
    for param in {id(p): p for p in _options(command).values()}.values():
        name = param.name
        if name == "help" or ctx.get_parameter_source(name) in (ParameterSource.DEFAULT, None):
            continue
        value = ctx.params.get(name)
        if value is None:
            continue
        lines.append(f"{max(param.opts, key=len)[2:]} = {_toml_scalar(value)}")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text("\n".join(lines) + "\n")


def expand_argv(argv: Sequence[str], app: Any) -> tuple[list[str], str | None]:
    """The command line with ``--config FILE`` replaced by the file's options.

    Returns the new arguments and, when ``--dump-config FILE`` was given, the file written (the
    caller then exits without running the command).

    Raises
    ------
    InvalidInputError
        For a missing or malformed file, or a key that is not an option of the command.
    """
    import typer.main

    args = list(argv)
    index = next((i for i, a in enumerate(args) if not a.startswith("-")), None)
    if index is None or args[index] not in CONFIG_COMMANDS:
        return args, None
    group = typer.main.get_command(app)
    commands = getattr(group, "commands", {})
    command_name = args[index]
    command = commands.get(command_name)
    if command is None:
        return args, None
    head, rest = args[: index + 1], args[index + 1 :]
    rest, config = _take(rest, "--config")
    rest, dump = _take(rest, "--dump-config")
    if config is not None:
        elsewhere = {n for c in CONFIG_COMMANDS if c in commands for n in _options(commands[c])}
        rest = _config_tokens(config, command_name, command, elsewhere) + rest
    if dump is not None:
        _dump(dump, command_name, command, rest)
    return head + rest, dump
