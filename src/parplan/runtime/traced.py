"""A traced user module that runs stage by stage: the runtime's view of ``parplan trace``'s graphs.

:class:`TracedModel` has the interface of :class:`~parplan.runtime.modules.OpGraphModel` that the
executor uses (``graph``, ``op``, ``op_params``, ``make_batch``, ``run_ops``, ``forward``,
``loss_name``), built from the same torch.fx trace that made the graph, so that every op of a plan
is one fx node and any set of ops (a stage) runs on its own. Indexing and attribute nodes that the
graph folds into their producer are re-evaluated on the consumer's side, from the value it received.

A micro-batch is made of random tensors shaped like the factory's example inputs (integer inputs,
such as token ids, drawn below the example's largest value plus one), keyed ``input0``,
``input1``, ...; the same seed gives the same batches in every process.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import Tensor, fx, nn

from parplan.errors import InternalError, InvalidInputError
from parplan.graph.ops import OpGraph
from parplan.runtime.modules import Value
from parplan.runtime.trace_graph import callable_of, fetch, fx_graph_module, is_folded
from parplan.runtime.user_model import WithLoss, load_factory, trace_user_model


class TracedModel(nn.Module):
    """A user's module and loss as one fx graph, runnable one op set at a time.

    Parameters
    ----------
    graph
        The OpGraph :func:`~parplan.runtime.user_model.trace_user_model` made of ``wrapped``.
    wrapped
        The module with its loss (:class:`~parplan.runtime.user_model.WithLoss`).
    inputs
        The factory's example inputs (shapes, dtypes and ranges of the micro-batches).
    """

    def __init__(self, graph: OpGraph, wrapped: WithLoss, inputs: tuple[Tensor, ...]) -> None:
        super().__init__()
        self.gm = fx_graph_module(wrapped)
        self.graph = graph
        self.examples = inputs
        nodes = [
            n
            for n in self.gm.graph.nodes
            if n.op not in ("placeholder", "output", "get_attr") and not is_folded(n)
        ]
        if len(nodes) != graph.num_ops:
            raise InternalError(
                f"traced model {graph.name!r}: {len(nodes)} fx ops for {graph.num_ops} graph ops"
            )
        self._node = {op.name: n for op, n in zip(graph.ops, nodes, strict=True)}
        self._name = {n: name for name, n in self._node.items()}
        self._modules_by_path = dict(self.gm.named_modules())
        self._placeholders = {
            n: i for i, n in enumerate(x for x in self.gm.graph.nodes if x.op == "placeholder")
        }
        out = next(n for n in self.gm.graph.nodes if n.op == "output")
        loss_node = out.args[0]
        if not isinstance(loss_node, fx.Node) or loss_node not in self._name:
            raise InvalidInputError(f"traced model {graph.name!r}: its loss is not the output of an op")
        self.loss_name = self._name[loss_node]

    def op(self, name: str) -> fx.Node:
        """The fx node of op ``name``."""
        return self._node[name]

    def op_params(self, name: str) -> list[nn.Parameter]:
        """The trainable parameters op ``name`` reads (a module's own, or ``get_attr`` ones)."""
        node = self._node[name]
        if node.op == "call_module":
            return [p for p in self._modules_by_path[str(node.target)].parameters() if p.requires_grad]
        found: list[nn.Parameter] = []

        def visit(n: fx.Node) -> fx.Node:
            if n.op == "get_attr":
                value = fetch(self.gm, str(n.target))
                if isinstance(value, nn.Parameter) and value.requires_grad:
                    found.append(value)
            return n

        fx.node.map_arg((node.args, node.kwargs), visit)
        return found

    def input_names(self, name: str) -> tuple[str, ...]:
        g = self.graph
        return tuple(g.ops[j].name for j in g.preds[g.index[name]])

    def make_batch(self, microbatch: int, seed: int = 0) -> dict[str, Tensor]:
        """Deterministic random inputs of micro-batch ``microbatch``, shaped like the example inputs."""
        gen = torch.Generator().manual_seed(seed * 1_000_003 + microbatch)
        out: dict[str, Tensor] = {}
        for i, x in enumerate(self.examples):
            if x.is_floating_point():
                out[f"input{i}"] = torch.randn(x.shape, generator=gen).to(x.dtype)
            elif x.dtype == torch.bool:
                out[f"input{i}"] = torch.randint(2, x.shape, generator=gen).bool()
            else:
                high = max(int(x.max()) + 1, 1) if x.numel() else 1
                out[f"input{i}"] = torch.randint(high, x.shape, generator=gen).to(x.dtype)
        return out

    def run_ops(
        self, op_names: Iterable[str], inputs: Mapping[str, Value], data: Mapping[str, Tensor]
    ) -> dict[str, Value]:
        """Run ``op_names`` in graph order; outputs of ops outside the set come from ``inputs``."""
        wanted = set(op_names)
        values: dict[str, Value] = {}
        folded: dict[fx.Node, Any] = {}

        def value_of(n: fx.Node) -> Any:
            if n in self._placeholders:
                return data[f"input{self._placeholders[n]}"]
            if n.op == "get_attr":
                return fetch(self.gm, str(n.target))
            name = self._name.get(n)
            if name is not None:
                if name in values:
                    return values[name]
                if name in inputs:
                    return inputs[name]
                raise InvalidInputError(
                    f"run_ops: an op needs the output of {name!r}, which is neither run nor given"
                )
            if n not in folded:  # indexing/attribute node: evaluate it on its input
                args = fx.node.map_arg(n.args, value_of)
                kwargs = fx.node.map_arg(n.kwargs, value_of)
                folded[n] = callable_of(self.gm, self._modules_by_path, n)(*args, **kwargs)
            return folded[n]

        for op in self.graph.ops:  # ops are in fx order, a topological order
            if op.name not in wanted:
                continue
            node = self._node[op.name]
            args = fx.node.map_arg(node.args, value_of)
            kwargs = fx.node.map_arg(node.kwargs, value_of)
            values[op.name] = callable_of(self.gm, self._modules_by_path, node)(*args, **kwargs)
        return values

    def forward(self, data: Mapping[str, Tensor]) -> Tensor:
        """The loss of one micro-batch (all ops)."""
        values = self.run_ops((op.name for op in self.graph.ops), {}, data)
        return values[self.loss_name]  # type: ignore[return-value]


def build_traced_model(
    module: str, factory: str, *, name: str | None = None, seed: int = 0
) -> tuple[TracedModel, OpGraph]:
    """Load ``module``'s ``factory`` (seeded), trace it, and return the runnable model and its graph.

    Raises
    ------
    InvalidInputError
        When the factory cannot be loaded or traced (see :func:`~parplan.runtime.user_model.load_factory`).
    """
    torch.manual_seed(seed)
    user = load_factory(f"{module}:{factory}")
    graph = trace_user_model(user, name=name)
    wrapped = WithLoss.of_arity(user.module, user.loss_fn, len(user.inputs))
    return TracedModel(graph, wrapped, user.inputs), graph
