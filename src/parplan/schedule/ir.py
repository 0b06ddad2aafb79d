"""The schedule IR: tiny printable actions (`2F0`) and per-device orders of them.

An action is one pass (F, I, W or B) of one stage for one micro-batch. A fused action (kind FB)
overlaps two such passes of stages on the same device (DualPipe's F&B chunk) and prints as
`0F3&5B1`. A schedule is the ordered action list of each device. Nothing here knows about time.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from parplan.errors import InvalidInputError

#: Pass kinds. F forward, I backward-input, W backward-weight, B full backward (I and W together).
KINDS = ("F", "I", "W", "B")
#: The fused kind: two overlapped passes on one device.
FUSED = "FB"

_ACTION_RE = re.compile(r"^(\d+)([FIWB])(\d+)$")


@dataclass(frozen=True, slots=True, kw_only=True)
class Action:
    """One pass of one stage for one micro-batch, or a fused pair of them.

    Parameters
    ----------
    stage, kind, microbatch
        For a plain action. For a fused action (``kind == "FB"``), ``stage`` and ``microbatch`` are
        those of the first part and ``parts`` holds the two plain actions.
    """

    stage: int
    kind: str
    microbatch: int
    parts: tuple[Action, ...] = field(default=())

    def __post_init__(self) -> None:
        if self.kind == FUSED:
            if len(self.parts) != 2 or any(p.kind not in KINDS for p in self.parts):
                raise InvalidInputError(
                    f"fused action {self.kind}: needs exactly two plain parts, got {self.parts!r}"
                )
        elif self.kind not in KINDS:
            raise InvalidInputError(
                f"action kind {self.kind!r}: must be one of {', '.join(KINDS)} or {FUSED}"
            )
        elif self.parts:
            raise InvalidInputError(f"action {self.kind}: only a fused FB action has parts")
        if self.stage < 0 or self.microbatch < 0:
            raise InvalidInputError(f"action stage={self.stage} microbatch={self.microbatch}: must be >= 0")

    @staticmethod
    def fused(first: Action, second: Action) -> Action:
        """The overlapped execution of two plain actions on one device."""
        return Action(stage=first.stage, kind=FUSED, microbatch=first.microbatch, parts=(first, second))

    @property
    def is_fused(self) -> bool:
        return self.kind == FUSED

    def plain(self) -> tuple[Action, ...]:
        """The plain actions this action performs (itself, or its two parts)."""
        return self.parts if self.is_fused else (self,)

    def __str__(self) -> str:
        if self.is_fused:
            return "&".join(str(p) for p in self.parts)
        return f"{self.stage}{self.kind}{self.microbatch}"

    @staticmethod
    def parse(text: str) -> Action:
        """Parse ``2F0`` or ``0F3&5B1`` back into an action (exact inverse of ``str``)."""
        text = text.strip()
        if "&" in text:
            halves = text.split("&")
            if len(halves) != 2:
                raise InvalidInputError(f"action {text!r}: a fused action has exactly two parts")
            return Action.fused(Action.parse(halves[0]), Action.parse(halves[1]))
        m = _ACTION_RE.match(text)
        if m is None:
            raise InvalidInputError(
                f"action {text!r}: expected STAGE KIND MICROBATCH like '2F0' (kinds F, I, W, B)"
            )
        return Action(stage=int(m.group(1)), kind=m.group(2), microbatch=int(m.group(3)))


def F(stage: int, microbatch: int) -> Action:
    return Action(stage=stage, kind="F", microbatch=microbatch)


def I(stage: int, microbatch: int) -> Action:
    return Action(stage=stage, kind="I", microbatch=microbatch)


def W(stage: int, microbatch: int) -> Action:
    return Action(stage=stage, kind="W", microbatch=microbatch)


def B(stage: int, microbatch: int) -> Action:
    return Action(stage=stage, kind="B", microbatch=microbatch)


@dataclass(frozen=True, slots=True, kw_only=True)
class Schedule:
    """Per-device ordered action lists: ``orders[device]`` runs front to back.

    Parameters
    ----------
    name
        Display name (e.g. ``"1f1b"``).
    orders
        One tuple of actions per device.
    """

    name: str
    orders: tuple[tuple[Action, ...], ...]

    @staticmethod
    def of(name: str, orders: Sequence[Iterable[Action]]) -> Schedule:
        return Schedule(name=name, orders=tuple(tuple(o) for o in orders))

    @property
    def num_devices(self) -> int:
        return len(self.orders)

    def actions(self) -> Iterable[tuple[int, Action]]:
        """Every (device, action) pair, device by device."""
        for device, order in enumerate(self.orders):
            for action in order:
                yield device, action

    def to_text(self) -> str:
        """One line per device: ``d0: 0F0 0F1 0B0 ...``."""
        return "\n".join(f"d{d}: " + " ".join(str(a) for a in order) for d, order in enumerate(self.orders))
