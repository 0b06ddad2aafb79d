"""Pipeline problems in the papers' synthetic unit-cost setting (``--pp --microbatches --placement``).

Costs are per stage (one chunk of the model) and per micro-batch; memory is in units of one stage's
activation for one micro-batch. Placements:

- ``linear``: p stages in a chain, stage s on device s (GPipe, 1F1B, ZB-H1/H2);
- ``interleaved``: p*V stages in a chain, stage s on device s mod p (interleaved 1F1B);
- ``v``: 2p stages in a chain, stage s on device s for s < p and on 2p-1-s after (ZB-V, DualPipeV);
- ``bidirectional``: two chains of p stages each, one per direction (DualPipe): stage s < p on
  device s, stage p+k on device p-1-k; the first half of the micro-batches flows down, the rest up.
  Every device holds two copies-worth of parameters;
- ``free``: p*V stages in a chain with no device yet (the planner places them).
"""

from __future__ import annotations

from collections.abc import Mapping

from parplan.errors import InvalidInputError
from parplan.problem import Device, Microbatch, PassTimes, PipelineProblem, Stage, StageEdge

SYNTHETIC_PLACEMENTS = ("linear", "interleaved", "v", "bidirectional", "free")


def parse_costs(text: str) -> PassTimes:
    """Parse ``F=1,I=1,W=1[,B=..][,FB=..]`` (or ``F=1,B=2``) into pass times."""
    values: dict[str, float] = {}
    for item in (x.strip() for x in text.split(",") if x.strip()):
        key, sep, val = item.partition("=")
        key = key.strip().upper()
        if not sep or key not in ("F", "I", "W", "B", "FB"):
            raise InvalidInputError(
                f"--costs: cannot read {item!r}; write pass=value pairs like F=1,I=1,W=1[,FB=3]"
            )
        if key in values:
            raise InvalidInputError(f"--costs: {key} is given twice")
        try:
            values[key] = float(val)
        except ValueError:
            raise InvalidInputError(f"--costs: {key}={val!r} is not a number") from None
        if values[key] < 0 or values[key] != values[key]:
            raise InvalidInputError(f"--costs: {key} must be >= 0, got {val}")
    return costs_from_mapping(values)


def costs_from_mapping(values: Mapping[str, float]) -> PassTimes:
    if "F" not in values:
        raise InvalidInputError("--costs: F (forward time) is required, e.g. F=1,B=2 or F=1,I=1,W=1")
    has_i, has_w = "I" in values, "W" in values
    if has_i != has_w:
        raise InvalidInputError("--costs: give both I and W (split backward) or neither (B only)")
    if has_i:
        b = values.get("B", values["I"] + values["W"])
        if abs(b - (values["I"] + values["W"])) > 1e-9:
            raise InvalidInputError(f"--costs: B={b:g} must equal I+W={values['I'] + values['W']:g}")
        return PassTimes(F=values["F"], B=b, I=values["I"], W=values["W"], FB=values.get("FB"))
    if "B" not in values:
        raise InvalidInputError("--costs: give B (full backward) or both I and W")
    return PassTimes(F=values["F"], B=values["B"], FB=values.get("FB"))


def synthetic_problem(
    *,
    pp: int,
    microbatches: int,
    placement: str = "linear",
    costs: PassTimes | str = "F=1,I=1,W=1",
    chunks: int | None = None,
    comm: float = 0.0,
    act_mem: float = 1.0,
    wgrad_mem: float = 0.0,
    param_mem: float = 0.0,
    memory_limit: float | None = None,
) -> PipelineProblem:
    """Build the papers' synthetic pipeline problem.

    Parameters
    ----------
    pp
        Number of devices (pipeline ranks).
    microbatches
        Number of micro-batches per step.
    placement
        One of ``SYNTHETIC_PLACEMENTS``.
    costs
        Per-stage pass times, or their ``F=..,I=..,W=..`` text.
    chunks
        Stages per device for ``interleaved`` (default 2) and ``free`` (default 1); fixed to 2 by
        ``v`` and ``bidirectional``.
    comm
        Transfer time of every edge between stages on different devices.
    act_mem, wgrad_mem, param_mem
        Activation memory of one stage and micro-batch, the part of it kept after I until W, and
        the static memory of one stage.
    """
    if isinstance(costs, str):
        costs = parse_costs(costs)
    if pp < 1:
        raise InvalidInputError(f"--pp: must be >= 1, got {pp}")
    if microbatches < 1:
        raise InvalidInputError(f"--microbatches: must be >= 1, got {microbatches}")
    if comm < 0:
        raise InvalidInputError(f"--comm: must be >= 0, got {comm}")
    if act_mem < 0 or wgrad_mem < 0:
        raise InvalidInputError("--act-mem/--wgrad-mem: must be >= 0")
    if wgrad_mem > act_mem:
        raise InvalidInputError(f"--wgrad-mem {wgrad_mem:g} cannot exceed --act-mem {act_mem:g}")
    if placement not in SYNTHETIC_PLACEMENTS:
        raise InvalidInputError(
            f"--placement: unknown {placement!r}; choose one of {', '.join(SYNTHETIC_PLACEMENTS)}"
        )
    if placement in ("v", "bidirectional"):
        if chunks not in (None, 2):
            raise InvalidInputError(f"--chunks: placement {placement} always has 2 stages per device")
        chunks = 2
    elif placement == "interleaved":
        chunks = 2 if chunks is None else chunks
        if chunks < 2:
            raise InvalidInputError(f"--chunks: interleaved placement needs >= 2 chunks, got {chunks}")
    else:
        chunks = 1 if chunks is None else chunks
        if chunks < 1:
            raise InvalidInputError(f"--chunks: must be >= 1, got {chunks}")
        if placement == "linear" and chunks != 1:
            raise InvalidInputError("--chunks: linear placement has one stage per device; use interleaved")

    num_stages = pp * chunks
    split = costs.is_split

    def device_of(s: int) -> int | None:
        if placement == "linear":
            return s
        if placement == "interleaved":
            return s % pp
        if placement == "v":
            return s if s < pp else 2 * pp - 1 - s
        if placement == "bidirectional":
            return s if s < pp else 2 * pp - 1 - s
        return None

    stages = tuple(
        Stage(
            index=s,
            name=f"stage{s}",
            device=device_of(s),
            cost=costs,
            act_mem=act_mem,
            wgrad_mem=wgrad_mem if split else 0.0,
            param_mem=param_mem,
        )
        for s in range(num_stages)
    )
    if placement == "bidirectional":
        if microbatches % 2:
            raise InvalidInputError(
                f"--microbatches: bidirectional placement splits micro-batches between two directions; "
                f"{microbatches} is odd, use an even number"
            )
        down = tuple(range(pp))
        up = tuple(range(pp, 2 * pp))
        edges = tuple(StageEdge(src=s, dst=s + 1, comm=comm) for s in down[:-1]) + tuple(
            StageEdge(src=s, dst=s + 1, comm=comm) for s in up[:-1]
        )
        half = microbatches // 2
        mbs = tuple(Microbatch(index=j, stages=down if j < half else up) for j in range(microbatches))
    else:
        edges = tuple(StageEdge(src=s, dst=s + 1, comm=comm) for s in range(num_stages - 1))
        everything = tuple(range(num_stages))
        mbs = tuple(Microbatch(index=j, stages=everything) for j in range(microbatches))
    return PipelineProblem(
        devices=tuple(Device(index=d, name=f"d{d}", memory_limit=memory_limit) for d in range(pp)),
        stages=stages,
        edges=edges,
        microbatches=mbs,
        split_backward=split,
        placement=placement,
        chunks=chunks,
        time_unit="unit",
        memory_unit="unit",
        name=f"synthetic pp={pp} m={microbatches} {placement}",
        source={
            "kind": "synthetic",
            "pp": pp,
            "microbatches": microbatches,
            "placement": placement,
            "chunks": chunks,
            "costs": costs.to_json(),
            "comm": comm,
            "act_mem": act_mem,
            "wgrad_mem": wgrad_mem,
        },
    )
