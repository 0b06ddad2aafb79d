"""A whole-model parallelization strategy in Megatron-LM's words: pp x dp x tp, ZeRO, recompute.

This is the unit users name (``--strategy "pp=2,dp=2,tp=1,zero=3,recompute=full"``), the unit the
runtime executes (one DeviceMesh ``pp x dp x tp``, the same configuration in every repeated block),
and the unit the strategy-level cost estimate predicts. It is deliberately coarser than the
frontier's per-operator configurations (:mod:`parplan.frontier.strategies`): every transformer
layer gets the same grid, as torchtitan, Megatron-LM and DeepSpeed run them.

Fields
------
pp, dp, tp
    Pipeline, data and tensor parallel degrees; devices = pp * dp * tp. The mesh's dimension order
    is (pp, dp, tp): tensor-parallel peers are adjacent devices (inside a node first).
zero
    0 = plain data parallel (DDP), 1 = optimizer state sharded, 2 = + gradients sharded,
    3 = + parameters sharded (FSDP / ZeRO-3). Only meaningful with dp > 1 (zero > 0 with dp = 1 is
    refused: it would be silently ignored).
recompute
    ``none``; ``selective`` (Korthikanti et al. 2022: the attention core is recomputed); ``full``
    (layer-level activation checkpointing: each layer keeps its input only).
sequence_parallel
    Megatron's sequence parallelism on the tensor-parallel group (norms and dropout sharded over
    the sequence); on by default when tp > 1, meaningless (and refused) when tp = 1.
schedule
    The pipeline schedule name (a schedule of :mod:`parplan.schedule`, or ``plan`` for the
    planner's own order); None = the default for pp > 1 (``1f1b``), and must be None when pp = 1.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from parplan.errors import InvalidInputError

RECOMPUTE = ("none", "selective", "full")
_INT_KEYS = ("pp", "dp", "tp", "zero")
_KEYS = (*_INT_KEYS, "recompute", "sp", "schedule")


@dataclass(frozen=True, slots=True, kw_only=True)
class Strategy:
    """One executable strategy: see the module docstring for the fields."""

    pp: int = 1
    dp: int = 1
    tp: int = 1
    zero: int = 0
    recompute: str = "none"
    sequence_parallel: bool | None = None
    schedule: str | None = None

    def __post_init__(self) -> None:
        for key in ("pp", "dp", "tp"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidInputError(f"strategy.{key}: must be an integer >= 1, got {value!r}")
        if isinstance(self.zero, bool) or self.zero not in (0, 1, 2, 3):
            raise InvalidInputError(f"strategy.zero: must be 0, 1, 2 or 3, got {self.zero!r}")
        if self.zero > 0 and self.dp == 1:
            raise InvalidInputError(
                f"strategy.zero: ZeRO-{self.zero} shards over data-parallel peers, but dp=1; "
                "use zero=0 or dp > 1"
            )
        if self.recompute not in RECOMPUTE:
            raise InvalidInputError(
                f"strategy.recompute: must be one of {', '.join(RECOMPUTE)}, got {self.recompute!r}"
            )
        if self.sequence_parallel is None:
            object.__setattr__(self, "sequence_parallel", self.tp > 1)
        elif self.sequence_parallel and self.tp == 1:
            raise InvalidInputError("strategy.sp: sequence parallelism needs tp > 1; use sp=0 or tp > 1")
        if self.schedule is not None and self.pp == 1:
            raise InvalidInputError(
                f"strategy.schedule: a pipeline schedule ({self.schedule!r}) needs pp > 1; drop it or set pp"
            )
        if self.schedule is None and self.pp > 1:
            object.__setattr__(self, "schedule", "1f1b")

    @property
    def num_devices(self) -> int:
        return self.pp * self.dp * self.tp

    @property
    def mesh_shape(self) -> tuple[int, int, int]:
        """(pp, dp, tp): the DeviceMesh the runtime builds."""
        return (self.pp, self.dp, self.tp)

    def label(self) -> str:
        """A short name for tables: ``PP2xDP2xTP1+ZeRO-3+RC-full+1f1b`` without the unit parts."""
        parts = [f"{name}{n}" for name, n in (("PP", self.pp), ("DP", self.dp), ("TP", self.tp)) if n > 1]
        text = "x".join(parts) or "single"
        if self.sequence_parallel:
            text += "+SP"
        if self.zero:
            text += f"+ZeRO-{self.zero}"
        if self.recompute != "none":
            text += f"+RC-{self.recompute}"
        if self.schedule is not None:
            text += f"+{self.schedule}"
        return text

    def to_text(self) -> str:
        """The ``--strategy`` text that parses back to this strategy."""
        text = f"pp={self.pp},dp={self.dp},tp={self.tp},zero={self.zero},recompute={self.recompute}"
        if self.tp > 1 and not self.sequence_parallel:
            text += ",sp=0"
        if self.schedule is not None:
            text += f",schedule={self.schedule}"
        return text

    def to_json(self) -> dict[str, Any]:
        return {
            "pp": self.pp,
            "dp": self.dp,
            "tp": self.tp,
            "zero": self.zero,
            "recompute": self.recompute,
            "sequence_parallel": bool(self.sequence_parallel),
            "schedule": self.schedule,
        }

    @classmethod
    def from_json(cls, data: object, where: str = "strategy") -> Strategy:
        if not isinstance(data, dict):
            raise InvalidInputError(f"{where}: must be an object with pp, dp, tp, zero, recompute")
        allowed = {"pp", "dp", "tp", "zero", "recompute", "sequence_parallel", "schedule"}
        unknown = sorted(set(data) - allowed)
        if unknown:
            raise InvalidInputError(
                f"{where}: unknown key {unknown[0]!r}; allowed: {', '.join(sorted(allowed))}"
            )
        try:
            return cls(**data)
        except InvalidInputError as exc:
            raise InvalidInputError(str(exc).replace("strategy.", f"{where}.", 1)) from None
        except TypeError as exc:  # pragma: no cover - keys are checked above
            raise InvalidInputError(f"{where}: {exc}") from None


def parse_strategy(text: str, where: str = "--strategy") -> Strategy:
    """Parse ``"pp=2,dp=2,tp=1,zero=3,recompute=full[,sp=0|1][,schedule=zb-h1]"``.

    Missing keys take their defaults (pp = dp = tp = 1, zero 0, recompute none); every key at most
    once; the message names the key and the accepted values.
    """
    if not isinstance(text, str) or not text.strip():
        raise InvalidInputError(f'{where}: empty; write e.g. "pp=2,dp=2,tp=1,zero=1,recompute=none"')
    values: dict[str, Any] = {}
    for raw in text.split(","):
        item = raw.strip()
        if not item:
            continue
        key, sep, value = item.partition("=")
        key, value = key.strip().lower(), value.strip()
        if not sep or not value:
            raise InvalidInputError(f"{where}: {item!r} is not KEY=VALUE; keys: {', '.join(_KEYS)}")
        if key not in _KEYS:
            raise InvalidInputError(f"{where}: unknown key {key!r}; keys: {', '.join(_KEYS)}")
        if key in values or (key == "sp" and "sequence_parallel" in values):
            raise InvalidInputError(f"{where}: {key} given twice")
        if key in _INT_KEYS:
            try:
                values[key] = int(value)
            except ValueError:
                raise InvalidInputError(f"{where}: {key}={value!r} is not an integer") from None
        elif key == "sp":
            if value not in ("0", "1", "true", "false", "on", "off"):
                raise InvalidInputError(f"{where}: sp={value!r}; use sp=0 or sp=1")
            values["sequence_parallel"] = value in ("1", "true", "on")
        else:
            values[key] = value.lower() if key == "recompute" else value
    try:
        return Strategy(**values)
    except InvalidInputError as exc:
        raise InvalidInputError(str(exc).replace("strategy.", f"{where}: ", 1)) from None
