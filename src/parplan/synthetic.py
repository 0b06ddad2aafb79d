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

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from parplan.errors import InvalidInputError
from parplan.numeric import close
from parplan.placement import chains, resolve_chunks, routes, stage_device
from parplan.problem import Device, Microbatch, PassTimes, PipelineProblem, Stage, StageEdge

SYNTHETIC_PLACEMENTS = ("linear", "interleaved", "v", "bidirectional", "free")


COST_KEYS = ("F", "I", "W", "B", "FB")
#: Per-stage memory keys of a --stage-costs group: activation and weight-gradient memory.
MEMORY_KEYS = {"A": "act_mem", "WG": "wgrad_mem"}


def parse_costs(text: str) -> PassTimes:
    """Parse ``F=1,I=1,W=1[,B=..][,FB=..]`` (or ``F=1,B=2``) into pass times."""
    return costs_from_mapping(_pairs(text, "--costs", COST_KEYS))


def _pairs(text: str, where: str, keys: Sequence[str]) -> dict[str, float]:
    """``KEY=value`` pairs separated by commas, keys case-insensitive, values finite and >= 0."""
    values: dict[str, float] = {}
    for item in (x.strip() for x in text.split(",") if x.strip()):
        key, sep, val = item.partition("=")
        key = key.strip().upper()
        if not sep or key not in keys:
            example = "F=1,I=1,W=1[,FB=3]" + (",A=1,Wg=0.5" if "A" in keys else "")
            raise InvalidInputError(
                f"{where}: cannot read {item!r}; write pass=value pairs like {example} "
                f"(keys: {', '.join('Wg' if k == 'WG' else k for k in keys)})"
            )
        if key in values:
            raise InvalidInputError(f"{where}: {key} is given twice")
        try:
            values[key] = float(val)
        except ValueError:
            raise InvalidInputError(f"{where}: {key}={val!r} is not a number") from None
        if not 0 <= values[key] < float("inf"):
            raise InvalidInputError(f"{where}: {key} must be >= 0 and finite, got {val.strip()}")
    return values


def costs_from_mapping(values: Mapping[str, float], where: str = "--costs") -> PassTimes:
    if "F" not in values:
        raise InvalidInputError(f"{where}: F (forward time) is required, e.g. F=1,B=2 or F=1,I=1,W=1")
    has_i, has_w = "I" in values, "W" in values
    if has_i != has_w:
        raise InvalidInputError(f"{where}: give both I and W (split backward) or neither (B only)")
    if has_i:
        b = values.get("B", values["I"] + values["W"])
        if not close(b, values["I"] + values["W"]):
            raise InvalidInputError(f"{where}: B={b:g} must equal I+W={values['I'] + values['W']:g}")
        return PassTimes(F=values["F"], B=b, I=values["I"], W=values["W"], FB=values.get("FB"))
    if "B" not in values:
        raise InvalidInputError(f"{where}: give B (full backward) or both I and W")
    return PassTimes(F=values["F"], B=values["B"], FB=values.get("FB"))


@dataclass(frozen=True, slots=True, kw_only=True)
class StageOverride:
    """One ``--stage-costs`` group: the stage's pass times and, when given, its own memory."""

    cost: PassTimes
    act_mem: float | None = None
    wgrad_mem: float | None = None


def parse_stage_costs(text: str, base: str = "F=1,I=1,W=1") -> tuple[StageOverride, ...]:
    """Parse ``--stage-costs``: one ``;``-separated group per stage, in stage order.

    A group has the keys of ``--costs`` (F, I, W, B, FB) plus ``A`` (activation memory) and ``Wg``
    (weight-gradient memory); it lists only what differs from ``base`` (the ``--costs`` text), so an
    empty group is the ``--costs`` stage and ``F=1.4,W=1.7`` changes two passes of one stage. A
    group's ``I`` or ``W`` drops the base's ``B`` (it is then I + W); a group's ``B`` alone drops the
    base's ``I`` and ``W`` (a B-only stage, which ``synthetic_problem`` refuses beside split ones).
    """
    base_values = _pairs(base, "--costs", COST_KEYS)
    groups = text.split(";")
    out = []
    for k, group in enumerate(groups):
        where = f"--stage-costs group {k + 1} (stage {k})"
        values = _pairs(group, where, (*COST_KEYS, *MEMORY_KEYS))
        merged = dict(base_values)
        split_given = "I" in values or "W" in values
        if "B" in values and not split_given:  # a B-only stage: the base's I and W do not apply
            merged.pop("I", None)
            merged.pop("W", None)
        if split_given and "B" not in values:  # B follows the stage's own I + W
            merged.pop("B", None)
        merged.update({key: v for key, v in values.items() if key in COST_KEYS})
        out.append(
            StageOverride(
                cost=costs_from_mapping(merged, where),
                act_mem=values.get("A"),
                wgrad_mem=values.get("WG"),
            )
        )
    return tuple(out)


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
    stage_costs: Sequence[StageOverride] | str | None = None,
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
    stage_costs
        Per-stage overrides (``--stage-costs``, see ``parse_stage_costs``): exactly one per stage
        in stage order (p linear, p*V interleaved and free, 2p for v and bidirectional). Their
        text is read on top of ``costs``.
    """
    if isinstance(stage_costs, str):
        stage_costs = parse_stage_costs(stage_costs, costs if isinstance(costs, str) else _text(costs))
    if isinstance(costs, str):
        costs = parse_costs(costs)
    if pp < 1:
        raise InvalidInputError(f"--pp: must be >= 1, got {pp}")
    if microbatches < 1:
        raise InvalidInputError(f"--microbatches: must be >= 1, got {microbatches}")
    for name, value in (("--comm", comm), ("--act-mem", act_mem), ("--wgrad-mem", wgrad_mem)):
        if not 0 <= value < math.inf:
            raise InvalidInputError(f"{name}: must be a finite number >= 0, got {value}")
    if costs.F + costs.B + (costs.FB or 0.0) <= 0:
        raise InvalidInputError("--costs: every pass takes zero time; give F or B a positive duration")
    if wgrad_mem > act_mem:
        raise InvalidInputError(f"--wgrad-mem {wgrad_mem:g} cannot exceed --act-mem {act_mem:g}")
    if placement not in SYNTHETIC_PLACEMENTS:
        raise InvalidInputError(
            f"--placement: unknown {placement!r}; choose one of {', '.join(SYNTHETIC_PLACEMENTS)}"
        )
    chunks = resolve_chunks(placement, chunks)

    num_stages = pp * chunks
    overrides = _check_overrides(stage_costs, num_stages, placement, pp, act_mem, wgrad_mem)
    split = all(o.cost.is_split for o in overrides) if overrides else costs.is_split

    def stage(s: int) -> Stage:
        own = overrides[s] if overrides else StageOverride(cost=costs)
        act = act_mem if own.act_mem is None else own.act_mem
        wgrad = wgrad_mem if own.wgrad_mem is None else own.wgrad_mem
        return Stage(
            index=s,
            name=f"stage{s}",
            device=stage_device(placement, pp, s),
            cost=own.cost,
            act_mem=act,
            wgrad_mem=wgrad if split else 0.0,
            param_mem=param_mem,
        )

    stages = tuple(stage(s) for s in range(num_stages))
    if placement == "bidirectional" and microbatches % 2:
        raise InvalidInputError(
            f"--microbatches: bidirectional placement splits micro-batches between two directions; "
            f"{microbatches} is odd, use an even number"
        )
    edges = tuple(
        StageEdge(src=a, dst=b, comm=comm)
        for chain in chains(placement, num_stages, pp)
        for a, b in itertools.pairwise(chain)
    )
    mbs = tuple(
        Microbatch(index=j, stages=route)
        for j, route in enumerate(routes(placement, num_stages, pp, microbatches))
    )
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
        name=f"synthetic pp={pp} m={microbatches} {placement}" + (", per-stage costs" if overrides else ""),
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
            **({"stage_costs": [st.cost.to_json() for st in stages]} if overrides else {}),
        },
    )


def _text(costs: PassTimes) -> str:
    """``costs`` as --costs text (the base of --stage-costs groups)."""
    return ",".join(f"{k}={v!r}" for k, v in costs.to_json().items() if not (k == "B" and costs.is_split))


def _check_overrides(
    overrides: Sequence[StageOverride] | None,
    num_stages: int,
    placement: str,
    pp: int,
    act_mem: float,
    wgrad_mem: float,
) -> tuple[StageOverride, ...]:
    """The per-stage overrides, checked: one per stage, all split or none, Wg <= A per stage."""
    if overrides is None:
        return ()
    overrides = tuple(overrides)
    if len(overrides) != num_stages:
        rule = {"linear": "pp", "interleaved": "pp*chunks", "free": "pp*chunks"}.get(placement, "2*pp")
        raise InvalidInputError(
            f"--stage-costs: {len(overrides)} group(s) for {num_stages} stages ({placement} placement, "
            f"--pp {pp}: {rule} = {num_stages}); give one ';'-separated group per stage, in stage order"
        )
    split = [s for s, o in enumerate(overrides) if o.cost.is_split]
    if split and len(split) != num_stages:
        whole = [s for s, o in enumerate(overrides) if not o.cost.is_split]
        raise InvalidInputError(
            f"--stage-costs: stage(s) {_few(split)} have a split backward (I, W) but stage(s) "
            f"{_few(whole)} only B; give every stage I and W, or every stage B"
        )
    for s, o in enumerate(overrides):
        act = act_mem if o.act_mem is None else o.act_mem
        wgrad = wgrad_mem if o.wgrad_mem is None else o.wgrad_mem
        if split and wgrad > act:
            raise InvalidInputError(
                f"--stage-costs group {s + 1} (stage {s}): weight-gradient memory Wg={wgrad:g} exceeds "
                f"activation memory A={act:g} (Wg is the part of A kept after I until W)"
            )
    return overrides


def _few(items: Sequence[int]) -> str:
    return ", ".join(map(str, items[:6])) + (", ..." if len(items) > 6 else "")
