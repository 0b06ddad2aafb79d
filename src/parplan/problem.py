"""The pipeline scheduling problem: stages (op groups) on devices, micro-batches and their routes.

This is the common input of the expert schedules, the simulator, the validator and every solver
backend. It is built from the synthetic unit-cost setting of the papers (``parplan.schedule.
synthetic``) or from a model graph, a cluster and a cost model (``parplan.cost.pipeline``).

Memory model (per device, DESIGN.md): the static memory ``param_mem`` of every stage on the device
(parameters, gradients and optimizer state), plus activations: ``+act_mem`` at the start of F,
``-(act_mem - wgrad_mem)`` at the end of I, ``-wgrad_mem`` at the end of W, ``-act_mem`` at the end
of B.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property

from parplan.errors import InvalidInputError
from parplan.inputs import finite

TIME_UNITS = ("s", "unit")
MEMORY_UNITS = ("bytes", "unit")
PLACEMENTS = ("linear", "interleaved", "v", "bidirectional", "free", "graph")


def _check_nonneg(where: str, value: float | None) -> None:
    if value is not None and not value >= 0:
        raise InvalidInputError(f"{where}: must be >= 0, got {value:g}")


@dataclass(frozen=True, slots=True, kw_only=True)
class PassTimes:
    """Durations of one stage's passes for one micro-batch.

    ``B`` is the full backward; when the backward is split, ``I + W`` should equal ``B``.
    ``FB`` is the duration of this stage's forward overlapped with a backward of another stage on
    the same device (DualPipe's F&B chunk); None means no overlap gain (``F + B``).
    """

    F: float
    B: float
    I: float | None = None
    W: float | None = None
    FB: float | None = None

    def __post_init__(self) -> None:
        for name in ("F", "B", "I", "W", "FB"):
            _check_nonneg(f"cost.{name}", getattr(self, name))
        if (self.I is None) != (self.W is None):
            raise InvalidInputError("cost: give both I and W (a split backward) or neither")

    @staticmethod
    def split(F: float, I: float, W: float, FB: float | None = None) -> PassTimes:
        return PassTimes(F=F, B=I + W, I=I, W=W, FB=FB)

    @property
    def is_split(self) -> bool:
        return self.I is not None

    def of(self, kind: str) -> float:
        """Duration of pass ``kind`` (F, I, W or B)."""
        value = getattr(self, kind)
        if value is None:
            raise InvalidInputError(
                f"pass {kind}: this stage has no split backward (only F and B); "
                "give I and W costs or use a schedule without I/W"
            )
        return float(value)

    def scaled(self, factor: float) -> PassTimes:
        def s(v: float | None) -> float | None:
            return None if v is None else v * factor

        return PassTimes(F=self.F * factor, B=self.B * factor, I=s(self.I), W=s(self.W), FB=s(self.FB))

    def to_json(self) -> dict[str, float]:
        out = {"F": self.F, "B": self.B}
        for name in ("I", "W", "FB"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        return out

    @staticmethod
    def from_json(data: dict[str, float], where: str = "cost") -> PassTimes:
        if not isinstance(data, dict):
            raise InvalidInputError(f"{where}: must be an object like {{'F': 1, 'B': 2}}")
        unknown = set(data) - {"F", "B", "I", "W", "FB"}
        if unknown:
            raise InvalidInputError(f"{where}: unknown pass(es) {sorted(unknown)}; use F, B, I, W, FB")
        if "F" not in data:
            raise InvalidInputError(f"{where}.F: missing")
        try:
            vals = {k: float(v) for k, v in data.items()}
        except (TypeError, ValueError) as exc:
            raise InvalidInputError(f"{where}: costs must be numbers ({exc})") from None
        if "B" not in vals:
            if "I" not in vals or "W" not in vals:
                raise InvalidInputError(f"{where}: give B, or both I and W")
            vals["B"] = vals["I"] + vals["W"]
        try:
            return PassTimes(**vals)
        except InvalidInputError as exc:
            # PassTimes names its field "cost.F": keep only the field after the caller's path
            raise InvalidInputError(f"{where}{str(exc).removeprefix('cost')}") from None


@dataclass(frozen=True, slots=True, kw_only=True)
class Device:
    """A device as the scheduler sees it: an index, a display name and a memory limit."""

    index: int
    name: str
    memory_limit: float | None = None

    def __post_init__(self) -> None:
        _check_nonneg(f"devices[{self.index}].memory_limit", self.memory_limit)


@dataclass(frozen=True, slots=True, kw_only=True)
class Stage:
    """An op group; once placed on a device, a pipeline stage.

    ``device`` is None when placement is left to the solver. ``device_costs`` optionally gives the
    pass times on each device (heterogeneous clusters); otherwise ``cost`` holds everywhere.
    """

    index: int
    name: str
    cost: PassTimes
    device: int | None = None
    ops: tuple[str, ...] = ()
    act_mem: float = 1.0
    wgrad_mem: float = 0.0
    param_mem: float = 0.0
    device_costs: tuple[PassTimes, ...] = ()

    def __post_init__(self) -> None:
        where = f"stages[{self.index}]"
        for name in ("act_mem", "wgrad_mem", "param_mem"):
            _check_nonneg(f"{where}.{name}", getattr(self, name))
        if self.wgrad_mem > self.act_mem:
            raise InvalidInputError(
                f"{where}.wgrad_mem: {self.wgrad_mem} exceeds act_mem {self.act_mem}; the memory kept "
                "for the weight gradient is part of the activation memory"
            )

    def cost_on(self, device: int) -> PassTimes:
        return self.device_costs[device] if self.device_costs else self.cost


@dataclass(frozen=True, slots=True, kw_only=True)
class StageEdge:
    """Data flowing from stage ``src`` to stage ``dst``; ``comm`` is the transfer time when the two
    stages are on different devices (zero on the same device)."""

    src: int
    dst: int
    comm: float = 0.0
    bytes: float = 0.0

    def __post_init__(self) -> None:
        _check_nonneg(f"edge {self.src}->{self.dst}.comm", self.comm)


@dataclass(frozen=True, slots=True, kw_only=True)
class Microbatch:
    """A micro-batch and the stages it passes (all stages, or one direction of a bidirectional
    pipeline). Its dependencies are the problem's edges between those stages."""

    index: int
    stages: tuple[int, ...]


@dataclass(frozen=True, kw_only=True)
class PipelineProblem:
    """Stages, their edges, devices and micro-batches; the input of schedules and solvers.

    Parameters
    ----------
    split_backward
        Whether backward passes are split into I and W. When False, schedules use B.
    placement
        How stages were placed (one of ``PLACEMENTS``); informative for schedules that need it.
    chunks
        Stages per device for interleaved / v placements (1 otherwise).
    """

    devices: tuple[Device, ...]
    stages: tuple[Stage, ...]
    edges: tuple[StageEdge, ...]
    microbatches: tuple[Microbatch, ...]
    split_backward: bool = True
    placement: str = "linear"
    chunks: int = 1
    time_unit: str = "unit"
    memory_unit: str = "unit"
    name: str = ""
    source: dict[str, object] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        self.validate()

    # ------------------------------------------------------------------ invariants
    def validate(self) -> None:
        """Cross-record invariants; raises InvalidInputError naming the offending record."""
        if not self.devices:
            raise InvalidInputError("problem: needs at least one device")
        if not self.stages:
            raise InvalidInputError("problem: needs at least one stage")
        if not self.microbatches:
            raise InvalidInputError("problem: needs at least one micro-batch")
        if self.time_unit not in TIME_UNITS:
            raise InvalidInputError(f"time_unit: must be one of {TIME_UNITS}, got {self.time_unit!r}")
        if self.memory_unit not in MEMORY_UNITS:
            raise InvalidInputError(f"memory_unit: must be one of {MEMORY_UNITS}, got {self.memory_unit!r}")
        for i, d in enumerate(self.devices):
            if d.index != i:
                raise InvalidInputError(f"devices[{i}].index: must be {i}, got {d.index}")
        n_dev = len(self.devices)
        for i, s in enumerate(self.stages):
            if s.index != i:
                raise InvalidInputError(f"stages[{i}].index: must be {i}, got {s.index}")
            if s.device is not None and not 0 <= s.device < n_dev:
                raise InvalidInputError(f"stages[{i}].device: {s.device} is not a device (0..{n_dev - 1})")
            if s.device_costs and len(s.device_costs) != n_dev:
                raise InvalidInputError(
                    f"stages[{i}].device_costs: has {len(s.device_costs)} entries for {n_dev} devices"
                )
            if self.split_backward and not s.cost.is_split:
                raise InvalidInputError(f"stages[{i}].cost: split backward needs I and W costs (got only B)")
        n_st = len(self.stages)
        seen = set()
        for k, e in enumerate(self.edges):
            if not (0 <= e.src < n_st and 0 <= e.dst < n_st) or e.src == e.dst:
                raise InvalidInputError(
                    f"edges[{k}]: {e.src}->{e.dst} must join two different stages (0..{n_st - 1})"
                )
            if (e.src, e.dst) in seen:
                raise InvalidInputError(f"edges[{k}]: {e.src}->{e.dst} is repeated")
            seen.add((e.src, e.dst))
        for i, mb in enumerate(self.microbatches):
            if mb.index != i:
                raise InvalidInputError(f"microbatches[{i}].index: must be {i}, got {mb.index}")
            if not mb.stages:
                raise InvalidInputError(f"microbatches[{i}].stages: empty")
            for st in mb.stages:
                if not 0 <= st < n_st:
                    raise InvalidInputError(f"microbatches[{i}].stages: {st} is not a stage")
        # acyclic
        order = self.topo_order  # raises on a cycle
        del order

    # ------------------------------------------------------------------ lookups
    @property
    def num_devices(self) -> int:
        return len(self.devices)

    @property
    def num_stages(self) -> int:
        return len(self.stages)

    @property
    def num_microbatches(self) -> int:
        return len(self.microbatches)

    @cached_property
    def succs(self) -> tuple[tuple[StageEdge, ...], ...]:
        out: list[list[StageEdge]] = [[] for _ in self.stages]
        for e in self.edges:
            out[e.src].append(e)
        return tuple(tuple(x) for x in out)

    @cached_property
    def preds(self) -> tuple[tuple[StageEdge, ...], ...]:
        out: list[list[StageEdge]] = [[] for _ in self.stages]
        for e in self.edges:
            out[e.dst].append(e)
        return tuple(tuple(x) for x in out)

    @cached_property
    def topo_order(self) -> tuple[int, ...]:
        indeg = [len(p) for p in self.preds]
        ready = [s for s in range(self.num_stages) if indeg[s] == 0]
        order: list[int] = []
        while ready:
            s = ready.pop(0)
            order.append(s)
            for e in self.succs[s]:
                indeg[e.dst] -= 1
                if indeg[e.dst] == 0:
                    ready.append(e.dst)
        if len(order) != self.num_stages:
            stuck = sorted(set(range(self.num_stages)) - set(order))
            raise InvalidInputError(f"edges: the stage graph has a cycle through stages {stuck}")
        return tuple(order)

    @cached_property
    def _mb_stage_sets(self) -> tuple[frozenset[int], ...]:
        return tuple(frozenset(mb.stages) for mb in self.microbatches)

    def passes(self, microbatch: int, stage: int) -> bool:
        """Whether micro-batch ``microbatch`` passes stage ``stage``."""
        return stage in self._mb_stage_sets[microbatch]

    def mb_preds(self, microbatch: int, stage: int) -> tuple[StageEdge, ...]:
        """Edges into ``stage`` that micro-batch ``microbatch`` uses."""
        st = self._mb_stage_sets[microbatch]
        return tuple(e for e in self.preds[stage] if e.src in st)

    def mb_succs(self, microbatch: int, stage: int) -> tuple[StageEdge, ...]:
        """Edges out of ``stage`` that micro-batch ``microbatch`` uses."""
        st = self._mb_stage_sets[microbatch]
        return tuple(e for e in self.succs[stage] if e.dst in st)

    def stages_on(self, device: int) -> tuple[int, ...]:
        return tuple(s.index for s in self.stages if s.device == device)

    @property
    def is_placed(self) -> bool:
        return all(s.device is not None for s in self.stages)

    @property
    def is_chain(self) -> bool:
        """True when every micro-batch passes a simple path of stages (a classic pipeline)."""
        for mb in self.microbatches:
            for s in mb.stages:
                if len(self.mb_preds(mb.index, s)) > 1 or len(self.mb_succs(mb.index, s)) > 1:
                    return False
        return True

    def backward_kinds(self) -> tuple[str, ...]:
        return ("I", "W") if self.split_backward else ("B",)

    def with_devices(self, devices: Sequence[Device]) -> PipelineProblem:
        """A copy with other devices (e.g. new memory limits)."""
        return _replace(self, devices=tuple(devices))

    def with_memory_limit(self, limit: float | None) -> PipelineProblem:
        return self.with_devices(
            [Device(index=d.index, name=d.name, memory_limit=limit) for d in self.devices]
        )

    def with_stages(self, stages: Sequence[Stage]) -> PipelineProblem:
        return _replace(self, stages=tuple(stages))

    # ------------------------------------------------------------------ file format
    def to_json(self) -> dict[str, object]:
        return {
            "time_unit": self.time_unit,
            "memory_unit": self.memory_unit,
            "split_backward": self.split_backward,
            "placement": self.placement,
            "chunks": self.chunks,
            "name": self.name,
            "devices": [
                {"index": d.index, "name": d.name, "memory_limit": d.memory_limit} for d in self.devices
            ],
            "stages": [
                {
                    "index": s.index,
                    "device": s.device,
                    "name": s.name,
                    "ops": list(s.ops),
                    "cost": s.cost.to_json(),
                    "act_mem": s.act_mem,
                    "wgrad_mem": s.wgrad_mem,
                    "param_mem": s.param_mem,
                    **({"device_costs": [c.to_json() for c in s.device_costs]} if s.device_costs else {}),
                }
                for s in self.stages
            ],
            "edges": [
                {"src": e.src, "dst": e.dst, "comm": e.comm, **({"bytes": e.bytes} if e.bytes else {})}
                for e in self.edges
            ],
            "microbatches": [{"index": m.index, "stages": list(m.stages)} for m in self.microbatches],
        }

    @staticmethod
    def from_json(data: dict[str, object], where: str = "plan") -> PipelineProblem:
        """Read the problem part of a plan file; errors name the path of the bad field."""
        return _problem_from_json(data, where)


def _replace(problem: PipelineProblem, **changes: object) -> PipelineProblem:
    fields = {
        name: getattr(problem, name)
        for name in (
            "devices",
            "stages",
            "edges",
            "microbatches",
            "split_backward",
            "placement",
            "chunks",
            "time_unit",
            "memory_unit",
            "name",
            "source",
        )
    }
    fields.update(changes)
    return PipelineProblem(**fields)  # type: ignore[arg-type]


def _at(where: str, key: str) -> str:
    """The path of ``key`` inside ``where`` ("" is the top of a file: no leading dot)."""
    return f"{where}.{key}" if where else key


#: Field types in the words of an error message ("must be a number", not "must be int/float").
_KIND_WORDS = {int: "an integer", float: "a number", str: "a string", list: "a list", dict: "an object"}


def _get(obj: object, key: str, where: str, kind: type | tuple[type, ...], default: object = ...) -> object:
    if not isinstance(obj, dict):
        raise InvalidInputError(f"{where or 'problem'}: must be an object")
    if key not in obj:
        if default is ...:
            raise InvalidInputError(f"{_at(where, key)}: missing")
        return default
    value = obj[key]
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if value is not None and not isinstance(value, kind):
        want = "a number" if kind == (int, float) else _KIND_WORDS.get(kind, str(kind))  # type: ignore[arg-type]
        raise InvalidInputError(f"{_at(where, key)}: must be {want}, got {value!r}")
    return value


def _num(obj: object, key: str, where: str, default: object = ...) -> float | None:
    value = _get(obj, key, where, (int, float), default)
    if isinstance(value, bool):
        raise InvalidInputError(f"{_at(where, key)}: must be a number, got {value!r}")
    if value is None:
        return None
    return finite(float(value), _at(where, key))  # type: ignore[arg-type]


def _int(obj: object, key: str, where: str, default: object = ...) -> int | None:
    value = _get(obj, key, where, int, default)
    if isinstance(value, bool):
        raise InvalidInputError(f"{_at(where, key)}: must be an integer, got {value!r}")
    return value  # type: ignore[return-value]


def _list(obj: object, key: str, where: str, default: object = ...) -> list[object]:
    value = _get(obj, key, where, list, default)
    return [] if value is None else value  # type: ignore[return-value]


def _problem_from_json(data: dict[str, object], where: str) -> PipelineProblem:
    if not isinstance(data, dict):
        raise InvalidInputError(f"{where or 'problem'}: must be a JSON object")
    devices = []
    for i, d in enumerate(_list(data, "devices", where)):
        w = _at(where, f"devices[{i}]")
        devices.append(
            Device(
                index=_int(d, "index", w, i) or 0,
                name=str(_get(d, "name", w, str, f"d{i}")),
                memory_limit=_num(d, "memory_limit", w, None),
            )
        )
    stages = []
    for i, s in enumerate(_list(data, "stages", where)):
        w = _at(where, f"stages[{i}]")
        cost = PassTimes.from_json(_get(s, "cost", w, dict), f"{w}.cost")  # type: ignore[arg-type]
        dcosts = tuple(
            PassTimes.from_json(c, f"{w}.device_costs[{k}]")  # type: ignore[arg-type]
            for k, c in enumerate(_list(s, "device_costs", w, []))
        )
        ops = _list(s, "ops", w, [])
        try:
            stages.append(
                Stage(
                    index=_int(s, "index", w, i) or 0,
                    device=_int(s, "device", w, None),
                    name=str(_get(s, "name", w, str, f"s{i}")),
                    ops=tuple(str(o) for o in ops),
                    cost=cost,
                    act_mem=_num(s, "act_mem", w, 1.0) or 0.0,
                    wgrad_mem=_num(s, "wgrad_mem", w, 0.0) or 0.0,
                    param_mem=_num(s, "param_mem", w, 0.0) or 0.0,
                    device_costs=dcosts,
                )
            )
        except InvalidInputError as exc:  # the Stage's own checks name only the field: add the path
            text = str(exc)
            raise InvalidInputError(text if text.startswith(w) else _at(where, text)) from None
    edges = []
    for k, e in enumerate(_list(data, "edges", where, [])):
        w = _at(where, f"edges[{k}]")
        src, dst = _int(e, "src", w) or 0, _int(e, "dst", w) or 0
        comm, nbytes = _num(e, "comm", w, 0.0) or 0.0, _num(e, "bytes", w, 0.0) or 0.0
        for name, value in (("comm", comm), ("bytes", nbytes)):
            _check_nonneg(f"{w}.{name}", value)
        edges.append(StageEdge(src=src, dst=dst, comm=comm, bytes=nbytes))
    mbs = []
    for k, m in enumerate(_list(data, "microbatches", where)):
        w = _at(where, f"microbatches[{k}]")
        st = _list(m, "stages", w)
        if not all(isinstance(x, int) and not isinstance(x, bool) for x in st):
            raise InvalidInputError(f"{w}.stages: must be a list of stage indices")
        mbs.append(Microbatch(index=_int(m, "index", w, k) or 0, stages=tuple(st)))  # type: ignore[arg-type]
    split = _get(data, "split_backward", where, bool, None)
    if split is None:
        split = all(s.cost.is_split for s in stages)
    return PipelineProblem(
        devices=tuple(devices),
        stages=tuple(stages),
        edges=tuple(edges),
        microbatches=tuple(mbs),
        split_backward=bool(split),
        placement=str(_get(data, "placement", where, str, "linear")),
        chunks=_int(data, "chunks", where, 1) or 1,
        time_unit=str(_get(data, "time_unit", where, str, "unit")),
        memory_unit=str(_get(data, "memory_unit", where, str, "unit")),
        name=str(_get(data, "name", where, str, "")),
    )
