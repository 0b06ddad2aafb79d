"""Checks shared by every reader and option: text files that really are UTF-8, finite numbers.

Each raises :class:`~parplan.errors.InvalidInputError` with the file path or option name first, so
the CLI prints one line that says where the bad input is.
"""

from __future__ import annotations

import math
from pathlib import Path

from parplan.errors import InvalidInputError


def read_text(path: str | Path, what: str = "file") -> str:
    """The UTF-8 text of ``path``; a missing, unreadable or binary file is bad input naming the path."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except FileNotFoundError:
        raise InvalidInputError(f"{what} {str(p)!r}: no such file") from None
    except IsADirectoryError:
        raise InvalidInputError(f"{what} {str(p)!r}: is a directory, not a file") from None
    except OSError as exc:
        raise InvalidInputError(f"{what} {str(p)!r}: cannot read ({exc.strerror})") from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInputError(
            f"{what} {str(p)!r}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start})"
        ) from None


def finite(value: float, where: str) -> float:
    """``value`` when it is a finite number; inf or nan is bad input at ``where``."""
    if not math.isfinite(value):
        raise InvalidInputError(f"{where}: must be a finite number, got {value}")
    return value
