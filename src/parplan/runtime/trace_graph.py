"""Trace a user's own nn.Module into a parplan OpGraph with measured FLOPs, bytes and memory.

``torch.fx.symbolic_trace`` gives the dataflow graph; every ``call_module`` / ``call_function`` /
``call_method`` node becomes an op (standard layers such as ``nn.Linear`` stay whole, as do the
:class:`~parplan.runtime.modules.OpModule` ops of the zoo twins and any class in ``leaf_modules``).
Indexing and attribute nodes (``x[0]``, ``x.shape``) are folded into the node they read, and
parameters read with ``get_attr`` are charged to the op that uses them. Each op is then re-run on
the real intermediate values under ``torch.utils.flop_counter.FlopCounterMode``: the forward, the
input gradient (``autograd.grad`` w.r.t. its inputs) and the weight gradient (w.r.t. its
parameters) give ``fwd_flops``, ``bwd_input_flops`` and ``bwd_weight_flops``; tensors saved for the
backward give ``act_bytes``. The counter sees matrix products and convolutions only, so elementwise
ops show 0 FLOPs (the cost model still charges their memory traffic).
"""

from __future__ import annotations

import operator
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, fx, nn
from torch.utils.flop_counter import FlopCounterMode

from parplan.errors import InvalidInputError
from parplan.graph.ops import Edge, Op, OpGraph
from parplan.runtime.modules import OpModule

_KINDS: tuple[tuple[type[nn.Module], str], ...] = (
    (nn.Linear, "linear"),
    (nn.Conv1d, "conv"),
    (nn.Conv2d, "conv"),
    (nn.Conv3d, "conv"),
    (nn.LayerNorm, "norm"),
    (nn.RMSNorm, "norm"),
    (nn.BatchNorm1d, "norm"),
    (nn.BatchNorm2d, "norm"),
    (nn.GroupNorm, "norm"),
    (nn.Embedding, "embedding"),
    (nn.MultiheadAttention, "attention"),
    (nn.MaxPool2d, "pool"),
    (nn.AvgPool2d, "pool"),
    (nn.AdaptiveAvgPool2d, "pool"),
    (nn.ReLU, "elementwise"),
    (nn.GELU, "elementwise"),
    (nn.SiLU, "elementwise"),
    (nn.Tanh, "elementwise"),
    (nn.Dropout, "elementwise"),
)
_FOLDED = (operator.getitem, getattr)
_FOLDED_METHODS = ("size", "dim")


class _Tracer(fx.Tracer):
    def __init__(self, leaves: tuple[type[nn.Module], ...]) -> None:
        super().__init__()
        self.leaves = leaves

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        if isinstance(m, (OpModule, *self.leaves)):
            return True
        return super().is_leaf_module(m, qualname)


def _nbytes(value: Any) -> int:
    if isinstance(value, Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, tuple | list):
        return sum(_nbytes(v) for v in value)
    if isinstance(value, Mapping):
        return sum(_nbytes(v) for v in value.values())
    return 0


def _tensors(value: Any) -> list[Tensor]:
    if isinstance(value, Tensor):
        return [value]
    if isinstance(value, tuple | list):
        return [t for v in value for t in _tensors(v)]
    if isinstance(value, Mapping):
        return [t for v in value.values() for t in _tensors(v)]
    return []


def _kind(module: nn.Module | None) -> str:
    if module is None:
        return "other"
    if isinstance(module, OpModule):
        return module.kind
    for cls, kind in _KINDS:
        if isinstance(module, cls):
            return kind
    return "other"


def _op_name(node: fx.Node) -> str:
    if node.op == "call_module":
        target = str(node.target)
        # the zoo twins keep their ops in ``ops`` under dot-free keys: give back the op names
        return target.removeprefix("ops.").replace("__", ".") if target.startswith("ops.") else target
    return node.name


def _detach_leaf(value: Any) -> Any:
    if isinstance(value, Tensor):
        t = value.detach()
        if t.is_floating_point():
            t.requires_grad_(True)
        return t
    if isinstance(value, tuple | list):
        return type(value)(_detach_leaf(v) for v in value)
    if isinstance(value, dict):
        return {k: _detach_leaf(v) for k, v in value.items()}
    return value


def trace_module(
    module: nn.Module,
    example_inputs: Sequence[Any],
    *,
    name: str | None = None,
    leaf_modules: tuple[type[nn.Module], ...] = (),
) -> OpGraph:
    """Trace ``module`` on ``example_inputs`` into an OpGraph (one micro-batch = these inputs).

    Parameters
    ----------
    module
        Any module ``torch.fx.symbolic_trace`` can trace (no data-dependent Python control flow).
    example_inputs
        Positional inputs of one micro-batch.
    name
        Graph name (default: the module's class name).
    leaf_modules
        Extra module classes to keep as single ops instead of tracing through them.

    Returns
    -------
    OpGraph
        Ops named after the fx nodes (module paths for layers), with FLOPs per pass, parameter,
        activation and output bytes; edges carry the producer's output bytes.

    Raises
    ------
    InvalidInputError
        When fx cannot trace the module (the message carries fx's reason).
    """
    gm = fx_graph_module(module, leaf_modules)
    modules = dict(gm.named_modules())
    env: dict[fx.Node, Any] = {}
    placeholders = iter(example_inputs)
    producer: dict[fx.Node, fx.Node | None] = {}  # folded node -> the op node it reads (None: an input)
    ops: list[Op] = []
    index: dict[fx.Node, int] = {}
    edges: set[tuple[int, int]] = set()
    counted_params: set[int] = set()
    blocks: dict[str, int] = {}  # repeated-block module path -> layer number, by first appearance

    def arg_nodes(node: fx.Node) -> list[fx.Node]:
        found: list[fx.Node] = []

        def visit(n: fx.Node) -> fx.Node:
            found.append(n)
            return n

        fx.node.map_arg((node.args, node.kwargs), visit)
        return found

    def source(n: fx.Node) -> fx.Node | None:
        while n in producer:
            p = producer[n]
            if p is None:
                return None
            n = p
        return n if n in index else None

    with torch.no_grad():
        for node in gm.graph.nodes:
            if node.op == "placeholder":
                try:
                    env[node] = next(placeholders)
                except StopIteration:
                    raise InvalidInputError(
                        f"trace: {type(module).__name__}.forward takes more inputs than the "
                        f"{len(example_inputs)} example inputs given"
                    ) from None
                producer[node] = None
                continue
            if node.op == "output":
                continue
            args = fx.node.map_arg(node.args, lambda n: env[n])
            kwargs = fx.node.map_arg(node.kwargs, lambda n: env[n])
            if node.op == "get_attr":
                env[node] = fetch(gm, str(node.target))
                producer[node] = None
                continue
            fn = callable_of(gm, modules, node)
            env[node] = fn(*args, **kwargs)
            folded = is_folded(node)
            ins = arg_nodes(node)
            if folded:
                producer[node] = ins[0] if ins else None
                continue
            params = _params_of(gm, modules, node, ins)
            new = [p for p in params if id(p) not in counted_params]
            counted_params.update(id(p) for p in new)
            fwd, bwd_i, bwd_w, act = _measure(fn, args, kwargs, params)
            i = len(ops)
            ops.append(
                Op(
                    name=_op_name(node),
                    kind=_kind(modules.get(str(node.target)) if node.op == "call_module" else None),
                    fwd_flops=fwd,
                    bwd_input_flops=bwd_i,
                    bwd_weight_flops=bwd_w,
                    param_bytes=float(sum(p.numel() * p.element_size() for p in new)),
                    act_bytes=float(act),
                    out_bytes=float(_nbytes(env[node])),
                    layer=_block_of(node, blocks),
                )
            )
            index[node] = i
            for n in ins:
                src = source(n)
                if src is not None and src is not node:
                    edges.add((index[src], i))
    if not ops:
        raise InvalidInputError(f"trace: {type(module).__name__} has no operations to plan")
    edge_list = tuple(Edge(src=a, dst=b, bytes=ops[a].out_bytes) for a, b in sorted(edges))
    return OpGraph(
        name=name or type(module).__name__, ops=tuple(ops), edges=edge_list, meta=(("traced", True),)
    )


def is_folded(node: fx.Node) -> bool:
    """Whether ``node`` is folded into the node it reads (indexing, attributes) instead of an op."""
    return (node.op == "call_function" and node.target in _FOLDED) or (
        node.op == "call_method" and node.target in _FOLDED_METHODS
    )


def fx_graph_module(module: nn.Module, leaf_modules: tuple[type[nn.Module], ...] = ()) -> fx.GraphModule:
    """``module`` traced by the same tracer as :func:`trace_module` (same nodes, same op order)."""
    try:
        graph = _Tracer(tuple(leaf_modules)).trace(module)
    except Exception as exc:  # fx raises many error types; report its reason
        raise InvalidInputError(
            f"trace: torch.fx cannot trace {type(module).__name__} ({type(exc).__name__}: {exc}); "
            "mark the offending submodule as a leaf with leaf_modules=(...)"
        ) from None
    return fx.GraphModule(module, graph)


def is_block_path(path: str) -> bool:
    """A module path ending in an index (``layers.3``, ``blocks.0``): a child of an ``nn.ModuleList``
    or ``nn.Sequential``, a repeated block."""
    return path.rsplit(".", 1)[-1].isdigit()


def repeated_blocks(module: nn.Module) -> dict[str, nn.Module]:
    """The outermost repeated blocks of ``module`` (:func:`is_block_path`), by path: the modules
    whose ops a trace numbers as layers."""
    out: dict[str, nn.Module] = {}
    for name, sub in module.named_modules():
        if name and is_block_path(name) and not any(name.startswith(b + ".") for b in out):
            out[name] = sub
    return out


def _block_of(node: fx.Node, blocks: dict[str, int]) -> int | None:
    """The layer number of the repeated block ``node`` runs in, or None outside any block.

    A block is the outermost module on the node's ``nn_module_stack`` whose path ends in an index
    (a child of an ``nn.ModuleList`` / ``nn.Sequential``: ``layers.3``, ``blocks.0``), so that
    pipeline cuts fall between whole blocks (``cost.pipeline`` cuts only between layers), and two
    branches with blocks of their own (``user.layers.0``, ``item.layers.0``) stay apart.
    """
    stack = node.meta.get("nn_module_stack") or {}
    for entry in stack.values():
        path = entry[0] if isinstance(entry, tuple) else str(entry)
        if is_block_path(path):
            return blocks.setdefault(path, len(blocks))
    if node.op == "call_module":  # a leaf module that is itself a block
        target = str(node.target)
        if is_block_path(target):
            return blocks.setdefault(target, len(blocks))
    return None


def fetch(gm: fx.GraphModule, target: str) -> Any:
    obj: Any = gm
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


def callable_of(gm: fx.GraphModule, modules: Mapping[str, nn.Module], node: fx.Node) -> Any:
    if node.op == "call_module":
        return modules[str(node.target)]
    if node.op == "call_function":
        return node.target
    method = str(node.target)
    return lambda self, *a, **k: getattr(self, method)(*a, **k)


def _params_of(
    gm: fx.GraphModule, modules: Mapping[str, nn.Module], node: fx.Node, ins: list[fx.Node]
) -> list[nn.Parameter]:
    if node.op == "call_module":
        return [p for p in modules[str(node.target)].parameters() if p.requires_grad]
    out = []
    for n in ins:
        if n.op == "get_attr":
            value = fetch(gm, str(n.target))
            if isinstance(value, nn.Parameter) and value.requires_grad:
                out.append(value)
    return out


def _measure(fn: Any, args: Any, kwargs: Any, params: list[nn.Parameter]) -> tuple[float, float, float, int]:
    """FLOPs of forward, input gradient and weight gradient of one call, and its saved bytes."""
    leaf_args = _detach_leaf(args)
    leaf_kwargs = _detach_leaf(kwargs)
    xs = [t for t in _tensors((leaf_args, leaf_kwargs)) if t.requires_grad]
    param_ptrs = {p.untyped_storage().data_ptr() for p in params}
    saved: dict[int, int] = {}

    def pack(t: Tensor) -> Tensor:
        st = t.untyped_storage()
        if st.data_ptr() not in param_ptrs:  # weights are not activations
            saved[st.data_ptr()] = st.nbytes()
        return t

    with torch.enable_grad():
        with (
            FlopCounterMode(display=False) as fc,
            torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t),
        ):
            out = fn(*leaf_args, **leaf_kwargs)
        fwd = fc.get_total_flops()
        ys = [t for t in _tensors(out) if t.requires_grad]
        bwd_i = bwd_w = 0
        if ys and xs:
            with FlopCounterMode(display=False) as fc:
                torch.autograd.grad(
                    ys, xs, [torch.ones_like(y) for y in ys], retain_graph=True, allow_unused=True
                )
            bwd_i = fc.get_total_flops()
        if ys and params:
            with FlopCounterMode(display=False) as fc:
                torch.autograd.grad(ys, params, [torch.ones_like(y) for y in ys], allow_unused=True)
            bwd_w = fc.get_total_flops()
    return float(fwd), float(bwd_i), float(bwd_w), sum(saved.values())
