"""Measured per-operator profiles (file format ``parplan.profile/1``) that override analytic op times.

A profile is written by ``parplan profile`` (torch, in the runtime package) and read here without
torch. File layout::

    {"format": "parplan.profile/1", "device": "cpu", "dtype": "fp32", "microbatch_size": 1,
     "seq_len": 128, "ops": {"layer0.attn.qkv": {"F": 1.2e-4, "I": 1.1e-4, "W": 1.0e-4,
                                                 "act_bytes": 65536}}, "meta": {...}}

Times are seconds for one micro-batch. An op may give ``B`` (full backward) instead of ``I`` and
``W``; the cost model then splits ``B`` in the analytic I:W ratio. ``act_bytes`` is optional.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from parplan.errors import InvalidInputError
from parplan.inputs import read_text

PROFILE_FORMAT = "parplan.profile/1"


def _time(value: object, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
        raise InvalidInputError(f"{where}: must be a time >= 0 in seconds, got {value!r}")
    return float(value)


@dataclass(frozen=True, slots=True, kw_only=True)
class OpProfile:
    """Measured seconds of one op's passes for one micro-batch (``B`` given when I/W are not)."""

    F: float
    I: float | None = None
    W: float | None = None
    B: float | None = None
    act_bytes: float | None = None

    def __post_init__(self) -> None:
        if (self.I is None) != (self.W is None):
            raise InvalidInputError("profile op: give both I and W or neither")
        if self.I is None and self.B is None:
            raise InvalidInputError("profile op: give I and W, or B")

    @property
    def backward_s(self) -> float:
        """The full backward: I + W, or B."""
        if self.I is not None and self.W is not None:
            return self.I + self.W
        assert self.B is not None  # guaranteed by __post_init__
        return self.B

    def to_json(self) -> dict[str, float]:
        out = {"F": self.F}
        for key in ("I", "W", "B", "act_bytes"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        return out

    @staticmethod
    def from_json(data: object, where: str) -> OpProfile:
        if not isinstance(data, dict):
            raise InvalidInputError(f"{where}: must be an object like {{'F': 1e-4, 'I': 1e-4, 'W': 1e-4}}")
        unknown = set(data) - {"F", "I", "W", "B", "act_bytes"}
        if unknown:
            raise InvalidInputError(f"{where}: unknown key(s) {sorted(unknown)}; use F, I, W, B, act_bytes")
        if "F" not in data:
            raise InvalidInputError(f"{where}.F: missing")
        vals = {k: _time(v, f"{where}.{k}") for k, v in data.items()}
        try:
            return OpProfile(**vals)
        except InvalidInputError as exc:
            raise InvalidInputError(f"{where}: {str(exc).removeprefix('profile op: ')}") from None


@dataclass(frozen=True, slots=True, kw_only=True)
class Profile:
    """Measured op times of one model configuration on one device type.

    Parameters
    ----------
    device
        Device kind measured on (matched against ``DeviceSpec.kind`` on heterogeneous clusters).
    dtype
        Compute dtype of the measurement.
    microbatch_size, seq_len
        The shapes measured; times are only valid for the same shapes.
    ops
        Sorted (op name, measurement) pairs.
    meta
        Free-form facts (torch version, repeats, ...), sorted (key, value) pairs.
    """

    device: str
    dtype: str
    microbatch_size: int
    seq_len: int | None
    ops: tuple[tuple[str, OpProfile], ...]
    meta: tuple[tuple[str, Any], ...] = ()

    @property
    def op_map(self) -> Mapping[str, OpProfile]:
        return dict(self.ops)

    @property
    def pass_scale(self) -> float:
        """Measured whole forward and backward (``meta.whole_pass_s``) over the sum of the op
        times: what runs between ops, which op-by-op timing misses. 1 when not measured."""
        whole = dict(self.meta).get("whole_pass_s")
        total = sum(m.F + (m.I if m.I is not None else m.backward_s) + (m.W or 0.0) for _, m in self.ops)
        if not isinstance(whole, int | float) or whole <= 0 or total <= 0:
            return 1.0
        return float(whole) / total

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "format": PROFILE_FORMAT,
            "device": self.device,
            "dtype": self.dtype,
            "microbatch_size": self.microbatch_size,
            "seq_len": self.seq_len,
            "ops": {name: m.to_json() for name, m in self.ops},
        }
        if self.meta:
            out["meta"] = dict(self.meta)
        return out

    @staticmethod
    def from_json(data: object, where: str = "profile") -> Profile:
        """Read a profile document; errors name the path of the bad field."""
        if not isinstance(data, dict):
            raise InvalidInputError(f"{where}: must be a JSON object")
        fmt = data.get("format")
        if fmt != PROFILE_FORMAT:
            raise InvalidInputError(f"{where}.format: expected {PROFILE_FORMAT!r}, got {fmt!r}")
        device = data.get("device")
        if not isinstance(device, str) or not device:
            raise InvalidInputError(f"{where}.device: must be a non-empty string, got {device!r}")
        dtype = data.get("dtype")
        if not isinstance(dtype, str):
            raise InvalidInputError(f"{where}.dtype: must be a string like 'bf16', got {dtype!r}")
        mbs = data.get("microbatch_size")
        if isinstance(mbs, bool) or not isinstance(mbs, int) or mbs < 1:
            raise InvalidInputError(f"{where}.microbatch_size: must be an integer >= 1, got {mbs!r}")
        seq = data.get("seq_len")
        if seq is not None and (isinstance(seq, bool) or not isinstance(seq, int) or seq < 1):
            raise InvalidInputError(f"{where}.seq_len: must be an integer >= 1 or null, got {seq!r}")
        ops = data.get("ops")
        if not isinstance(ops, dict):
            raise InvalidInputError(f"{where}.ops: must be an object mapping op names to times")
        meta = data.get("meta", {})
        if not isinstance(meta, dict):
            raise InvalidInputError(f"{where}.meta: must be an object")
        return Profile(
            device=device,
            dtype=dtype,
            microbatch_size=mbs,
            seq_len=seq,
            ops=tuple(sorted((str(k), OpProfile.from_json(v, f"{where}.ops.{k}")) for k, v in ops.items())),
            meta=tuple(sorted(meta.items())),
        )


def read_profile(path: str | Path) -> Profile:
    """Read a ``parplan.profile/1`` JSON file.

    Raises
    ------
    InvalidInputError
        When the file is missing, is not JSON (the message gives the line), or a field is bad.
    """
    p = Path(path)
    text = read_text(p, "profile")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidInputError(
            f"profile {str(p)!r}: not valid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
        ) from None
    return Profile.from_json(data, where=f"profile {p.name}")


def write_profile(profile: Profile, path: str | Path) -> None:
    """Write ``profile`` as indented JSON."""
    Path(path).write_text(json.dumps(profile.to_json(), indent=2) + "\n")
