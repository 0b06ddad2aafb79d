"""Placement rules, in one place: which device runs each stage, how many stages a placement has, and
which stages every micro-batch passes (linear, interleaved, v, bidirectional; free has no devices).

Used by the synthetic problems, the model pipelines (cost/pipeline.py) and the problem-file reader.
Imports nothing but the errors.
"""

from __future__ import annotations

from parplan.errors import InvalidInputError

#: Placements whose stage devices are fixed by the rule below.
FIXED_PLACEMENTS = ("linear", "interleaved", "v", "bidirectional")


def resolve_chunks(placement: str, chunks: object) -> int:
    """Stages per device: 1 for linear and free unless given, >= 2 (default 2) for interleaved,
    always 2 for v and bidirectional; a clear error for anything else."""
    if chunks is not None and (isinstance(chunks, bool) or not isinstance(chunks, int) or chunks < 1):
        raise InvalidInputError(f"--chunks: must be an integer >= 1, got {chunks!r}")
    if placement in ("v", "bidirectional"):
        if chunks not in (None, 2):
            raise InvalidInputError(f"--chunks: placement {placement} always has 2 stages per device")
        return 2
    if placement == "interleaved":
        value = 2 if chunks is None else int(chunks)  # type: ignore[call-overload]
        if value < 2:
            raise InvalidInputError(f"--chunks: interleaved placement needs >= 2 chunks, got {value}")
        return value
    value = 1 if chunks is None else int(chunks)  # type: ignore[call-overload]
    if placement == "linear" and value != 1:
        raise InvalidInputError("--chunks: linear placement has one stage per device; use interleaved")
    return value


def stage_device(placement: str, num_devices: int, stage: int) -> int | None:
    """The device of ``stage``: s (linear), s mod p (interleaved), s then 2p-1-s (v, and the two
    directions of bidirectional), None (free)."""
    p = num_devices
    if placement == "linear":
        return stage
    if placement == "interleaved":
        return stage % p
    if placement in ("v", "bidirectional"):
        return stage if stage < p else 2 * p - 1 - stage
    return None


def expected_devices(placement: str, num_stages: int, num_devices: int) -> tuple[int, ...] | None:
    """Every stage's device under a fixed placement, or None when the stage count does not fit it."""
    p, n = num_devices, num_stages
    fits = {
        "linear": n == p,
        "interleaved": n % p == 0 and n >= 2 * p,
        "v": n == 2 * p,
        "bidirectional": n == 2 * p,
    }
    if not fits.get(placement, False):
        return None
    return tuple(stage_device(placement, p, s) for s in range(n))  # type: ignore[misc]


def chains(placement: str, num_stages: int, num_devices: int) -> list[tuple[int, ...]]:
    """The stage chains: one over all stages, or the two directions of a bidirectional placement."""
    if placement == "bidirectional":
        return [tuple(range(num_devices)), tuple(range(num_devices, num_stages))]
    return [tuple(range(num_stages))]


def routes(placement: str, num_stages: int, num_devices: int, num_microbatches: int) -> list[tuple[int, ...]]:
    """The stages every micro-batch passes: all of them, or (bidirectional) the first half of the
    micro-batches down the first chain and the second half up the other."""
    cs = chains(placement, num_stages, num_devices)
    if len(cs) == 1:
        return [cs[0]] * num_microbatches
    half = num_microbatches // 2
    return [cs[0] if j < half else cs[1] for j in range(num_microbatches)]
