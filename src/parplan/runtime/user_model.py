"""A user's own model, given as ``FILE.py:FACTORY``: load it, trace it with its loss, record where it came from.

``FACTORY()`` returns ``(module, example_inputs)`` or ``(module, example_inputs, loss_fn)``;
``example_inputs`` is one tensor or a tuple/list of positional inputs for one micro-batch, and
``loss_fn(output, inputs) -> scalar`` defaults to the mean of the output. The module and its loss are
traced as one graph (the loss is the last op, as in the zoo models), and the graph's ``meta`` records
``dtype`` (of the parameters), ``module`` (the file), ``factory`` and ``module_class``, so that a plan
made from the graph says what it was made from.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from parplan.errors import InvalidInputError
from parplan.graph.ops import OpGraph
from parplan.plan import Plan
from parplan.runtime.trace_graph import trace_module

DTYPE_NAMES = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16", torch.float64: "fp64"}


@dataclasses.dataclass(frozen=True)
class UserModel:
    """What a factory returned: the module, one micro-batch of inputs, the loss, and where it came from."""

    module: nn.Module
    inputs: tuple[Any, ...]
    loss_fn: Callable[[Any, tuple[Any, ...]], torch.Tensor] | None
    source: str  # "FILE.py:FACTORY" as given


def _mean_loss(output: Any, inputs: tuple[Any, ...]) -> torch.Tensor:
    return output.float().mean()


class WithLoss(nn.Module):
    """The user's module followed by its loss, so that one trace holds the whole training step.

    fx cannot trace ``forward(self, *inputs)`` (it would iterate a proxy) and reads ``forward`` from
    the class, so :meth:`of_arity` makes a subclass whose ``forward`` has one named parameter per
    input (``input0, input1, ...``).
    """

    def __init__(
        self, model: nn.Module, loss_fn: Callable[[Any, tuple[Any, ...]], torch.Tensor] | None
    ) -> None:
        super().__init__()
        self.model = model
        self.loss_fn = loss_fn or _mean_loss

    @classmethod
    def of_arity(
        cls, model: nn.Module, loss_fn: Callable[[Any, tuple[Any, ...]], torch.Tensor] | None, arity: int
    ) -> WithLoss:
        sub = type(cls.__name__, (cls,), {"forward": _forward_of_arity(arity)})
        return sub(model, loss_fn)  # type: ignore[no-any-return]

    def step(self, inputs: tuple[Any, ...]) -> torch.Tensor:
        return self.loss_fn(self.model(*inputs), inputs)


def _forward_of_arity(n: int) -> Callable[..., torch.Tensor]:
    """``def forward(self, input0, ..., input{n-1}): return self.step((input0, ...))``."""
    names = ", ".join(f"input{i}" for i in range(n))
    namespace: dict[str, Any] = {}
    exec(f"def forward(self, {names}):\n    return self.step(({names},))\n", namespace)
    return namespace["forward"]  # type: ignore[no-any-return]


def split_factory_spec(spec: str) -> tuple[str, str] | None:
    """``(FILE, FACTORY)`` of ``FILE:FACTORY`` (FACTORY an identifier), or None."""
    path_text, sep, factory = spec.rpartition(":")
    if not sep or not path_text or not factory.isidentifier():
        return None
    return path_text, factory


def is_factory_spec(spec: str) -> bool:
    """Whether ``spec`` names a user's module: ``FILE.py:FACTORY``."""
    parts = split_factory_spec(spec)
    return parts is not None and parts[0].endswith(".py")


def load_factory(spec: str) -> UserModel:
    """Import ``FILE.py`` and call ``FACTORY()``; every way this can go wrong is one clear message."""
    parts = split_factory_spec(spec)
    if parts is None:
        raise InvalidInputError(f"trace: {spec!r}: give FILE.py:FACTORY, e.g. my_model.py:build")
    path_text, factory = parts
    path = Path(path_text)
    if not path.is_file():
        raise InvalidInputError(f"trace: {path}: no such file")
    mod_name = f"parplan_user_{abs(hash(str(path.resolve())))}"
    loader_spec = importlib.util.spec_from_file_location(mod_name, path)
    if loader_spec is None or loader_spec.loader is None:
        raise InvalidInputError(f"trace: {path}: not a Python file")
    module = importlib.util.module_from_spec(loader_spec)
    sys.modules[mod_name] = module
    try:
        loader_spec.loader.exec_module(module)
    except Exception as exc:  # the user's file: report its error as input, not as our bug
        raise InvalidInputError(f"trace: {path}: importing it failed ({type(exc).__name__}: {exc})") from None
    fn = getattr(module, factory, None)
    if not callable(fn):
        raise InvalidInputError(f"trace: {path}: has no function {factory!r}")
    try:
        result = fn()
    except Exception as exc:
        raise InvalidInputError(f"trace: {spec}: {factory}() failed ({type(exc).__name__}: {exc})") from None
    return _check_result(result, spec)


def _check_result(result: Any, spec: str) -> UserModel:
    want = "(module, example_inputs[, loss_fn])"
    if not isinstance(result, Sequence) or len(result) not in (2, 3):
        raise InvalidInputError(f"trace: {spec}: must return {want}, got {type(result).__name__}")
    model, inputs = result[0], result[1]
    loss_fn = result[2] if len(result) == 3 else None
    if not isinstance(model, nn.Module):
        raise InvalidInputError(
            f"trace: {spec}: the first value must be a torch.nn.Module, got {type(model).__name__}"
        )
    inputs = (inputs,) if isinstance(inputs, torch.Tensor) else inputs
    if not isinstance(inputs, Sequence) or not inputs or not all(isinstance(t, torch.Tensor) for t in inputs):
        raise InvalidInputError(f"trace: {spec}: example_inputs must be a tensor or a tuple of tensors")
    if loss_fn is not None and not callable(loss_fn):
        raise InvalidInputError(f"trace: {spec}: loss_fn must be callable (output, inputs) -> scalar")
    return UserModel(module=model, inputs=tuple(inputs), loss_fn=loss_fn, source=spec)


def param_dtype(module: nn.Module) -> str:
    """The dtype of the module's floating-point parameters (fp32 when it has none)."""
    for p in module.parameters():
        if p.is_floating_point():
            return DTYPE_NAMES.get(p.dtype, str(p.dtype).removeprefix("torch."))
    return "fp32"


def trace_user_model(user: UserModel, *, name: str | None = None) -> OpGraph:
    """The graph of ``user``'s module and loss, with the dtype, file and factory in ``meta``."""
    wrapped = WithLoss.of_arity(user.module, user.loss_fn, len(user.inputs))
    with torch.no_grad():
        try:
            loss = wrapped(*user.inputs)
        except Exception as exc:
            raise InvalidInputError(
                f"trace: {user.source}: the module fails on its example inputs ({type(exc).__name__}: {exc})"
            ) from None
    if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
        raise InvalidInputError(f"trace: {user.source}: the loss must be a scalar tensor")
    graph = trace_module(wrapped, user.inputs, name=name or type(user.module).__name__)
    # Names as the user wrote them: "user.layers.0.0", not the wrapper's "model.user.layers.0.0".
    taken = {op.name for op in graph.ops}
    ops = tuple(
        dataclasses.replace(op, name=op.name[len("model.") :])
        if op.name.startswith("model.") and op.name[len("model.") :] not in taken
        else op
        for op in graph.ops
    )
    graph = dataclasses.replace(graph, ops=ops)
    path, _, factory = user.source.rpartition(":")
    meta = dict(graph.meta)
    meta.update(
        dtype=param_dtype(user.module),
        module=str(Path(path).resolve()) if path != "<python>" else path,
        factory=factory,
        module_class=type(user.module).__name__,
    )
    return dataclasses.replace(graph, meta=tuple(sorted(meta.items())))


def plan_module(
    module: nn.Module,
    inputs: Any,
    *,
    cluster: str,
    pp: int,
    microbatches: int,
    loss_fn: Callable[[Any, tuple[Any, ...]], torch.Tensor] | None = None,
    placement: str = "linear",
    time_limit_s: float = 30.0,
    memory_limit: float | None = None,
) -> Plan:
    """Trace ``module`` (with ``loss_fn``, one micro-batch of ``inputs``) and plan its pipeline.

    The Python form of ``parplan trace`` followed by ``parplan plan --model GRAPH --cluster C --pp P
    -m M``: stages are cut between whole blocks, costs come from the traced FLOPs and bytes in the
    module's dtype, and the answer is a validated :class:`~parplan.plan.Plan`.
    """
    from parplan.cluster_io import load_cluster
    from parplan.cost.pipeline import model_problem
    from parplan.solve.api import plan_problem

    user = _check_result((module, inputs, loss_fn) if loss_fn else (module, inputs), "plan_module")
    graph = trace_user_model(dataclasses.replace(user, source=f"<python>:{type(module).__name__}"))
    problem = model_problem(
        graph,
        load_cluster(cluster),
        pp=pp,
        microbatches=microbatches,
        placement=placement,
        dtype=param_dtype(module),
        memory_limit=memory_limit,
    )
    return plan_problem(problem, time_limit_s=time_limit_s)
