"""The one exception hierarchy of parplan; the CLI turns these into messages and exit codes."""

from __future__ import annotations


class ParplanError(Exception):
    """Base class of every error parplan raises on purpose."""

    exit_code = 1


class InvalidInputError(ParplanError, ValueError):
    """Bad user input: the message says what, where, the numbers, and how to fix it (exit 2)."""

    exit_code = 2


class InfeasibleError(ParplanError):
    """The problem has no solution under its constraints (exit 3)."""

    exit_code = 3


class NoSolutionError(ParplanError):
    """A solver found no solution within its time limit (exit 4)."""

    exit_code = 4


class SolverUnavailableError(ParplanError):
    """A requested solver backend is not installed or not licensed (exit 2)."""

    exit_code = 2


class InternalError(ParplanError):
    """A bug in parplan, e.g. a solver answer that fails the validator (exit 1)."""

    exit_code = 1
