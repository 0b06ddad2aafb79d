"""The JSON operator-graph format ``parplan.graph/1``: lossless writer and path-qualified reader.

Layout::

    {"format": "parplan.graph/1", "name": "...", "meta": {...},
     "ops": [{"name", "kind", "fwd_flops", ..., "layer", "attrs": {...}}, ...],
     "edges": [{"src": "op name", "dst": "op name", "bytes": 123.0}, ...]}

Edges refer to operators by name so that people can edit files by hand. Every numeric op field is
optional on reading (default 0; ``layer`` defaults to null, ``attrs`` to {}), and edge ``bytes``
defaults to the producer's ``out_bytes``.
"""

from __future__ import annotations

import difflib
import json
import math
from pathlib import Path
from typing import Any

from parplan.errors import InvalidInputError
from parplan.graph.ops import NUMERIC_FIELDS, OP_KINDS, Edge, Op, OpGraph

FORMAT = "parplan.graph/1"

_NUMERIC = NUMERIC_FIELDS
_OP_KEYS = ("name", "kind", *_NUMERIC, "layer", "attrs")


def _to_plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _to_record(value: Any) -> Any:
    # JSON arrays come back as tuples so that attrs and meta stay hashable.
    return tuple(_to_record(v) for v in value) if isinstance(value, list) else value


def graph_to_json(g: OpGraph) -> dict[str, Any]:
    """The ``parplan.graph/1`` JSON object of a graph (edges by operator name).

    Parameters
    ----------
    g
        Any operator graph.

    Returns
    -------
    dict
        A JSON-serializable dict; :func:`graph_from_json` gives back an equal graph.
    """
    ops = []
    for op in g.ops:
        d = op.to_json()
        d["attrs"] = {k: _to_plain(v) for k, v in op.attrs}
        ops.append(d)
    return {
        "format": FORMAT,
        "name": g.name,
        "meta": {k: _to_plain(v) for k, v in g.meta},
        "ops": ops,
        "edges": [{"src": g.ops[e.src].name, "dst": g.ops[e.dst].name, "bytes": e.bytes} for e in g.edges],
    }


def _number(where: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidInputError(f"{where}: must be a number, got {value!r}")
    if not math.isfinite(value):
        raise InvalidInputError(f"{where}: must be finite, got {value!r}")
    if value < 0:
        raise InvalidInputError(f"{where}: must be >= 0, got {value!r}")
    return value


def _object(where: str, value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InvalidInputError(f"{where}: must be a JSON object, got {type(value).__name__}")
    return value


def _list(where: str, value: Any) -> list[Any]:
    if not isinstance(value, list):
        raise InvalidInputError(f"{where}: must be a JSON array, got {type(value).__name__}")
    return value


def _op_from_json(where: str, d: Any) -> Op:
    d = _object(where, d)
    for key in d:
        if key not in _OP_KEYS:
            close = difflib.get_close_matches(key, _OP_KEYS, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise InvalidInputError(f"{where}.{key}: unknown field{hint}; fields: {', '.join(_OP_KEYS)}")
    name = d.get("name")
    if not isinstance(name, str) or not name:
        raise InvalidInputError(f"{where}.name: must be a non-empty string, got {name!r}")
    kind = d.get("kind")
    if kind not in OP_KINDS:
        raise InvalidInputError(f"{where}.kind: unknown {kind!r}; use one of {', '.join(OP_KINDS)}")
    nums = {f: _number(f"{where}.{f}", d[f]) for f in _NUMERIC if f in d}
    layer = d.get("layer")
    if layer is not None and (isinstance(layer, bool) or not isinstance(layer, int) or layer < 0):
        raise InvalidInputError(f"{where}.layer: must be null or an integer >= 0, got {layer!r}")
    attrs = _object(f"{where}.attrs", d.get("attrs", {}))
    return Op(
        name=name,
        kind=kind,
        layer=layer,
        attrs=tuple(sorted((k, _to_record(v)) for k, v in attrs.items())),
        **nums,
    )


def _find_cycle(n: int, edges: list[tuple[int, int]]) -> list[int]:
    """One directed cycle as a list of nodes (iterative DFS), or [] if acyclic."""
    succs: list[list[int]] = [[] for _ in range(n)]
    for s, t in edges:
        succs[s].append(t)
    color = [0] * n  # 0 new, 1 on stack, 2 done
    parent = [-1] * n
    for root in range(n):
        if color[root]:
            continue
        stack = [(root, 0)]
        color[root] = 1
        while stack:
            v, k = stack[-1]
            if k < len(succs[v]):
                stack[-1] = (v, k + 1)
                w = succs[v][k]
                if color[w] == 0:
                    color[w], parent[w] = 1, v
                    stack.append((w, 0))
                elif color[w] == 1:
                    cyc = [v]
                    while cyc[-1] != w:
                        cyc.append(parent[cyc[-1]])
                    return [*reversed(cyc), w]
            else:
                color[v] = 2
                stack.pop()
    return []


def graph_from_json(data: Any, where: str = "graph") -> OpGraph:
    """Read a ``parplan.graph/1`` object, with path-qualified errors.

    Parameters
    ----------
    data
        The parsed JSON value.
    where
        Path prefix for error messages (e.g. the file name).

    Returns
    -------
    OpGraph

    Raises
    ------
    InvalidInputError
        E.g. ``graph.ops[3].fwd_flops: must be >= 0, got -1``, unknown edge endpoints, repeated
        names or edges, cycles (listing one), wrong format tag.
    """
    data = _object(where, data)
    fmt = data.get("format")
    if fmt != FORMAT:
        raise InvalidInputError(f"{where}.format: expected {FORMAT!r}, got {fmt!r}")
    for key in data:
        if key not in ("format", "name", "meta", "ops", "edges"):
            raise InvalidInputError(f"{where}.{key}: unknown field; fields: format, name, meta, ops, edges")
    name = data.get("name", "graph")
    if not isinstance(name, str):
        raise InvalidInputError(f"{where}.name: must be a string, got {name!r}")
    meta = _object(f"{where}.meta", data.get("meta", {}))
    raw_ops = _list(f"{where}.ops", data.get("ops"))
    if not raw_ops:
        raise InvalidInputError(f"{where}.ops: must list at least one operator")
    ops = []
    index: dict[str, int] = {}
    for i, d in enumerate(raw_ops):
        op = _op_from_json(f"{where}.ops[{i}]", d)
        if op.name in index:
            raise InvalidInputError(
                f"{where}.ops[{i}].name: {op.name!r} repeats {where}.ops[{index[op.name]}]; names must be unique"
            )
        index[op.name] = i
        ops.append(op)
    edges = []
    seen: dict[tuple[int, int], int] = {}
    for k, d in enumerate(_list(f"{where}.edges", data.get("edges", []))):
        w = f"{where}.edges[{k}]"
        d = _object(w, d)
        for key in d:
            if key not in ("src", "dst", "bytes"):
                raise InvalidInputError(f"{w}.{key}: unknown field; fields: src, dst, bytes")
        ends = []
        for end in ("src", "dst"):
            op_name = d.get(end)
            if op_name not in index:
                close = difflib.get_close_matches(str(op_name), list(index), n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise InvalidInputError(f"{w}.{end}: unknown op {op_name!r}{hint}")
            ends.append(index[op_name])
        s, t = ends
        if s == t:
            raise InvalidInputError(f"{w}: self loop on {ops[s].name!r}")
        if (s, t) in seen:
            raise InvalidInputError(
                f"{w}: {ops[s].name!r} -> {ops[t].name!r} repeats {where}.edges[{seen[(s, t)]}]"
            )
        seen[(s, t)] = k
        nbytes = _number(f"{w}.bytes", d["bytes"]) if "bytes" in d else ops[s].out_bytes
        edges.append(Edge(src=s, dst=t, bytes=nbytes))
    cyc = _find_cycle(len(ops), [(e.src, e.dst) for e in edges])
    if cyc:
        path = " -> ".join(ops[i].name for i in cyc)
        raise InvalidInputError(f"{where}.edges: cycle {path}; a graph must be acyclic")
    return OpGraph(
        name=name,
        ops=tuple(ops),
        edges=tuple(edges),
        meta=tuple(sorted((k, _to_record(v)) for k, v in meta.items())),
    )


def write_graph(g: OpGraph, path: str | Path) -> None:
    """Write ``g`` as a ``parplan.graph/1`` JSON file (one op or edge per line)."""
    data = graph_to_json(g)
    head = {k: data[k] for k in ("format", "name", "meta")}
    lines = [json.dumps(head)[:-1] + ","]
    for key in ("ops", "edges"):
        items = data[key]
        lines.append(f' "{key}": [')
        lines += [f"  {json.dumps(x)}{',' if j < len(items) - 1 else ''}" for j, x in enumerate(items)]
        lines.append(" ]," if key == "ops" else " ]")
    lines.append("}")
    Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")


def read_graph(path: str | Path) -> OpGraph:
    """Read a ``parplan.graph/1`` JSON file.

    Raises
    ------
    InvalidInputError
        Missing file, malformed JSON (with line and column), or any error of
        :func:`graph_from_json` (prefixed by the file name).
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InvalidInputError(f"{p}: no such graph file") from None
    except UnicodeDecodeError as exc:
        raise InvalidInputError(
            f"{p}: not UTF-8 text (graph JSON expected; {exc.reason} at {exc.start})"
        ) from None
    except OSError as exc:
        raise InvalidInputError(f"{p}: cannot read graph file: {exc}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidInputError(
            f"{p}:{exc.lineno}:{exc.colno}: malformed JSON: {exc.msg}; fix the file"
        ) from None
    return graph_from_json(data, where=f"{p}: graph")
