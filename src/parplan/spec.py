"""PROBLEM specifications shared by the commands: synthetic pipelines, models on clusters, graphs.

A ``ProblemSpec`` holds what the user asked for (the CLI fills it from options); ``build_problem``
turns it into a PipelineProblem, refusing option combinations that would be silently ignored.
A problem file (``--problem FILE.json``) takes no other PROBLEM option except ``--memory-limit``,
which replaces the memory limit of every device in the file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields
from typing import Any

from parplan.errors import InvalidInputError
from parplan.problem import PipelineProblem


@dataclass(frozen=True, slots=True, kw_only=True)
class ProblemSpec:
    """What a PROBLEM is made of; None means "not given"."""

    # synthetic pipeline
    pp: int | None = None
    microbatches: int | None = None
    placement: str | None = None
    chunks: int | None = None
    costs: str | None = None
    stage_costs: str | None = None
    comm: float | None = None
    act_mem: float | None = None
    wgrad_mem: float | None = None
    # model on a cluster
    model: str | None = None
    cluster: str | None = None
    microbatch_size: int | None = None
    seq_len: int | None = None
    num_layers: int | None = None
    dropout: bool | None = None
    dtype: str | None = None
    profile: str | None = None
    # graphs
    graph: str | None = None
    random_dag: str | None = None
    devices: int | None = None
    groups: int | None = None
    # a problem file (a parplan.plan/1 file or its problem part)
    problem: str | None = None
    # limits
    memory_limit: float | None = None

    def given(self) -> dict[str, object]:
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}

    @property
    def kind(self) -> str:
        if self.problem is not None:
            return "file"
        if self.model is not None:
            return "model"
        if self.graph is not None or self.random_dag is not None:
            return "graph"
        return "synthetic"


_OPTION = {name: "--" + name.replace("_", "-") for name in ProblemSpec.__slots__}  # type: ignore[attr-defined]

_ALLOWED = {
    "synthetic": {
        "pp",
        "microbatches",
        "placement",
        "chunks",
        "costs",
        "stage_costs",
        "comm",
        "act_mem",
        "wgrad_mem",
        "memory_limit",
    },
    "model": {
        "model",
        "cluster",
        "pp",
        "microbatches",
        "placement",
        "chunks",
        "microbatch_size",
        "seq_len",
        "num_layers",
        "dropout",
        "dtype",
        "profile",
        "memory_limit",
    },
    "graph": {
        "graph",
        "random_dag",
        "devices",
        "microbatches",
        "cluster",
        "dtype",
        "groups",
        "memory_limit",
        "comm",
    },
    "file": {"problem", "memory_limit"},
}


def _refuse_ignored(spec: ProblemSpec) -> None:
    allowed = _ALLOWED[spec.kind]
    extra = sorted(set(spec.given()) - allowed)
    if extra:
        what = {
            "synthetic": "a synthetic pipeline",
            "model": "--model",
            "graph": "--graph/--random-dag",
            "file": "--problem (the file gives the whole problem; edit it instead)",
        }[spec.kind]
        raise InvalidInputError(
            f"{', '.join(_OPTION[e] for e in extra)}: not used with {what}; remove "
            f"{'it' if len(extra) == 1 else 'them'} (accepted here: "
            f"{', '.join(_OPTION[a] for a in sorted(allowed))})"
        )


def build_problem(spec: ProblemSpec) -> PipelineProblem:
    """Build the pipeline problem a spec describes.

    Raises
    ------
    InvalidInputError
        For missing or contradictory options, naming the option and how to fix it.
    """
    _refuse_ignored(spec)
    if spec.kind == "synthetic":
        return _synthetic(spec)
    if spec.kind == "model":
        return _model(spec)
    if spec.kind == "file":
        return _file(spec)
    return _graph(spec)


def _file(spec: ProblemSpec) -> PipelineProblem:
    from parplan.problem_file import read_problem

    problem = read_problem(spec.problem or "")
    return problem if spec.memory_limit is None else problem.with_memory_limit(spec.memory_limit)


def _synthetic(spec: ProblemSpec) -> PipelineProblem:
    from parplan.synthetic import synthetic_problem

    if spec.pp is None or spec.microbatches is None:
        raise InvalidInputError(
            "PROBLEM: give --pp P --microbatches M (synthetic pipeline), --model NAME --cluster NAME "
            "--pp P --microbatches M, or --graph FILE / --random-dag ops=N --devices D"
        )
    return synthetic_problem(
        pp=spec.pp,
        microbatches=spec.microbatches,
        placement=spec.placement or "linear",
        costs="F=1,I=1,W=1" if spec.costs is None else spec.costs,
        stage_costs=spec.stage_costs,
        chunks=spec.chunks,
        comm=spec.comm or 0.0,
        act_mem=1.0 if spec.act_mem is None else spec.act_mem,
        wgrad_mem=spec.wgrad_mem or 0.0,
        memory_limit=spec.memory_limit,
    )


#: Size ceilings of the inputs that build graphs (measured on 2 cores: a 30,000-op random DAG merges
#: in 3.7 s, 100,000 ops take over a minute; a 2,000-layer GPT-2 compares in 1.4 s, ~10 ops a layer).
MAX_GRAPH_OPS = 50_000
MAX_NUM_LAYERS = 10_000


def check_num_layers(num_layers: int | None) -> None:
    """Refuse ``--num-layers`` beyond the ceiling before building the graph."""
    if num_layers is not None and num_layers > MAX_NUM_LAYERS:
        raise InvalidInputError(
            f"--num-layers: {num_layers:,} is beyond the ceiling of {MAX_NUM_LAYERS:,} layers "
            f"(about {10 * num_layers:,} operators)"
        )


def float8_split(given: str | None, *, storage: str | None) -> tuple[str | None, str | None]:
    """``--dtype`` as (storage dtype, GEMM dtype): ``fp8`` is float8 training as torchao runs it,
    parameters and activations in ``storage`` (None: the graph's own dtype) and the linear layers'
    GEMMs in fp8; any other dtype is both."""
    if given == "fp8":
        return storage, "fp8"
    return given, None


def planning_dtype(given: str | None, graph: Any, source: object, *, default: str | None = None) -> str:
    """The dtype a graph is planned in: ``--dtype``, else ``default`` (a profile's), else the dtype the
    graph records (a trace's byte counts hold for it only), else bf16. A ``--dtype`` that differs
    from the recorded one is refused: the bytes would be counted in the wrong width."""
    recorded = graph.meta_dict.get("dtype")
    recorded = recorded if isinstance(recorded, str) else None
    if given is not None and recorded is not None and given != recorded:
        how = "traced" if graph.meta_dict.get("traced") else "built"
        raise InvalidInputError(
            f"--dtype {given}: {source} was {how} in {recorded} (its byte counts are {recorded}); "
            f"drop --dtype, or {'re-trace' if how == 'traced' else 'rebuild'} it in {given}"
        )
    return given or default or recorded or "bf16"


def _model(spec: ProblemSpec) -> PipelineProblem:
    from parplan.cluster_io import load_cluster
    from parplan.cost.pipeline import model_problem
    from parplan.cost.profile import read_profile
    from parplan.graph.zoo import resolve_model

    if spec.cluster is None:
        raise InvalidInputError("--model: also give --cluster NAME|FILE (see `parplan clusters`)")
    if spec.pp is None or spec.microbatches is None:
        raise InvalidInputError("--model: also give --pp P (pipeline stages) and --microbatches M")
    check_num_layers(spec.num_layers)
    profile = read_profile(spec.profile) if spec.profile else None
    # fp8: the model's own storage dtype (a zoo model's bf16, a traced graph's recorded one)
    given, gemm_dtype = float8_split(spec.dtype, storage=None)
    # A profile's numbers hold for the dtype it was measured in: without --dtype, plan in that one.
    dtype = given or (profile.dtype if profile is not None and profile.dtype else None)
    options: dict[str, object] = {"dtype": dtype} if dtype is not None else {}
    for name in ("microbatch_size", "seq_len", "num_layers", "dropout"):
        value = getattr(spec, name)
        if value is not None:
            options[name] = value
    graph = resolve_model(spec.model or "", **options)
    cluster = load_cluster(spec.cluster)
    return model_problem(
        graph,
        cluster,
        pp=spec.pp,
        microbatches=spec.microbatches,
        chunks=spec.chunks or (2 if spec.placement in ("interleaved", "v", "bidirectional") else 1),
        placement=spec.placement or "linear",
        dtype=planning_dtype(given, graph, spec.model, default=dtype),
        profile=profile,
        memory_limit=spec.memory_limit,
        gemm_dtype=gemm_dtype,
    )


def _graph(spec: ProblemSpec) -> PipelineProblem:
    from parplan.graph.io import read_graph
    from parplan.graph.random_dag import parse_random_dag_spec
    from parplan.merge import graph_problem

    if spec.graph is not None and spec.random_dag is not None:
        raise InvalidInputError("--graph and --random-dag: give one of them, not both")
    if spec.devices is None:
        raise InvalidInputError("--graph/--random-dag: also give --devices N")
    if spec.random_dag is not None:
        m = re.search(r"(?:^|,)\s*ops\s*=\s*(\d+)\s*(?:,|$)", spec.random_dag)
        if m is not None and int(m.group(1)) > MAX_GRAPH_OPS:
            raise InvalidInputError(
                f"--random-dag: ops={int(m.group(1)):,} is beyond the ceiling of {MAX_GRAPH_OPS:,} operators"
            )
    graph = read_graph(spec.graph) if spec.graph is not None else parse_random_dag_spec(spec.random_dag or "")
    if len(graph.ops) > MAX_GRAPH_OPS:
        raise InvalidInputError(
            f"{spec.graph}: {len(graph.ops):,} operators, beyond the ceiling of {MAX_GRAPH_OPS:,}"
        )
    if spec.graph is not None and spec.cluster is None:  # a real model's costs need real devices
        raise InvalidInputError(
            "--graph: also give --cluster NAME|FILE (the devices it runs on; see `parplan clusters`)"
        )
    given, gemm_dtype = float8_split(spec.dtype, storage=None)
    return graph_problem(
        graph,
        devices=spec.devices,
        microbatches=spec.microbatches or 1,
        cluster=spec.cluster,
        dtype=planning_dtype(given, graph, spec.graph),
        gemm_dtype=gemm_dtype,
        groups=spec.groups,
        memory_limit=spec.memory_limit,
    )
