"""Random layered operator DAGs for scheduling experiments, deterministic per seed.

The shape follows the random task-graph generators of the scheduling literature (layer by layer,
bounded width, fan-in and fan-out): one source ``op0``, middle levels of ``width`` operators, and
one sink (the last op) when ``ops >= 2``. Every operator lies on a path from the source to the sink,
so the graph is connected. Costs are a base value times a log-uniform factor in
[1, ``cost_spread``], drawn independently per quantity, so ``cost_spread=1`` gives equal costs.
"""

from __future__ import annotations

import difflib
import math
import random
from typing import Any

from parplan.errors import InvalidInputError
from parplan.graph.ops import Edge, Op, OpGraph, make_attrs


def _check(name: str, value: Any, *, low: float, integer: bool) -> None:
    kind = "an integer" if integer else "a number"
    ok_type = isinstance(value, int) if integer else isinstance(value, int | float)
    if isinstance(value, bool) or not ok_type or not math.isfinite(value) or value < low:
        raise InvalidInputError(f"random-dag {name}: must be {kind} >= {low:g}, got {value!r}")


def random_dag(
    *,
    ops: int,
    seed: int = 0,
    width: int = 4,
    fan_in: int = 2,
    fan_out: int = 2,
    cost_spread: float = 4.0,
    flops: float = 1e9,
    param_bytes: float = 1e6,
    act_bytes: float = 1e6,
    out_bytes: float = 1e6,
) -> OpGraph:
    """A random connected layered DAG of ``ops`` operators.

    Parameters
    ----------
    ops
        Number of operators (>= 1).
    seed
        Random seed; the same arguments give the same graph.
    width
        Operators per middle level.
    fan_in
        Maximum predecessors of an operator (each draws 1..fan_in), exceeded only where a level is
        too narrow to give every operator above it a successor (the sink, a short last level).
    fan_out
        Maximum successors, exceeded only where a level is wider than the one above can feed
        (e.g. the single source feeds the whole first level).
    cost_spread
        Ratio between the largest and the smallest possible draw of each cost (>= 1).
    flops, param_bytes, act_bytes, out_bytes
        Base values. Forward FLOPs are ``flops`` x factor; backward-input and backward-weight equal
        the forward (a linear-like operator); memory traffic is ``out_bytes``-sized reads and writes.

    Returns
    -------
    OpGraph
        Operators ``op0..op{ops-1}`` of kind ``"linear"`` with ``layer`` = their level; edges carry
        the producer's ``out_bytes``. ``meta`` records the arguments.

    Raises
    ------
    InvalidInputError
        A count below 1 or a spread below 1.
    """
    for name, value, low in (
        ("ops", ops, 1),
        ("width", width, 1),
        ("fan_in", fan_in, 1),
        ("fan_out", fan_out, 1),
    ):
        _check(name, value, low=low, integer=True)
    _check("seed", seed, low=0, integer=True)
    _check("cost_spread", cost_spread, low=1, integer=False)
    for fname, fvalue in (
        ("flops", flops),
        ("param_bytes", param_bytes),
        ("act_bytes", act_bytes),
        ("out_bytes", out_bytes),
    ):
        _check(fname, fvalue, low=0, integer=False)

    rng = random.Random(seed)
    log_spread = math.log(cost_spread)

    def draw(base: float) -> float:
        return base * math.exp(rng.random() * log_spread)

    # Levels: source, middle levels of `width`, sink.
    levels: list[list[int]] = [[0]]
    middle = max(0, ops - 2)
    nxt = 1
    while middle > 0:
        w = min(width, middle)
        levels.append(list(range(nxt, nxt + w)))
        nxt += w
        middle -= w
    if ops >= 2:
        levels.append([ops - 1])

    out_deg = [0] * ops
    edges: set[tuple[int, int]] = set()

    def link(p: int, v: int) -> None:
        edges.add((p, v))
        out_deg[p] += 1
        preds[v].append(p)

    for lv in range(1, len(levels)):
        prev, cur = levels[lv - 1], levels[lv]
        preds: dict[int, list[int]] = {v: [] for v in cur}
        cap = min(fan_in, len(prev))
        target = {v: rng.randint(1, cap) for v in cur}
        # Every op of `prev` needs a successor: raise targets (beyond fan_in only if `cur` is too
        # narrow to take them all otherwise, e.g. the sink or a short last level).
        short = len(prev) - sum(target.values())
        for v in rng.sample(cur, len(cur)):
            if short <= 0:
                break
            more = min(short, cap - target[v])
            target[v] += more
            short -= more
        while short > 0:
            for v in cur[:short]:
                target[v] += 1
            short -= min(short, len(cur))
        # Cover `prev` first (one successor each, into the op with the most room left), ...
        for p in rng.sample(prev, len(prev)):
            v = max(cur, key=lambda x: (target[x] - len(preds[x]), rng.random()))
            link(p, v)
        # ... then fill the remaining in-edges from ops under fan_out; every op needs one.
        for v in cur:
            want = target[v] - len(preds[v])
            if want <= 0:
                continue
            free = [p for p in prev if out_deg[p] < fan_out and (p, v) not in edges]
            for p in rng.sample(free, min(want, len(free))):
                link(p, v)
            if not preds[v]:
                link(rng.choice(prev), v)  # a level wider than fan_out allows: exceed fan_out

    level_of = [0] * ops
    for lv, members in enumerate(levels):
        for v in members:
            level_of[v] = lv
    op_list = []
    for i in range(ops):
        f = draw(flops)
        ob = draw(out_bytes)
        op_list.append(
            Op(
                name=f"op{i}",
                kind="linear",
                fwd_flops=f,
                bwd_input_flops=f,
                bwd_weight_flops=f,
                fwd_bytes=2 * ob,
                bwd_input_bytes=2 * ob,
                bwd_weight_bytes=2 * ob,
                param_bytes=draw(param_bytes),
                act_bytes=draw(act_bytes),
                out_bytes=ob,
                layer=level_of[i],
                attrs=make_attrs(batch=1),
            )
        )
    meta = {
        "model": "random-dag",
        "ops": ops,
        "seed": seed,
        "width": width,
        "fan_in": fan_in,
        "fan_out": fan_out,
        "cost_spread": cost_spread,
    }
    return OpGraph(
        name=f"random-dag-{ops}-{seed}",
        ops=tuple(op_list),
        edges=tuple(Edge(src=s, dst=t, bytes=op_list[s].out_bytes) for s, t in sorted(edges)),
        meta=tuple(sorted(meta.items())),
    )


_SPEC_TYPES: dict[str, type] = {
    "ops": int,
    "seed": int,
    "width": int,
    "fan_in": int,
    "fan_out": int,
    "cost_spread": float,
    "flops": float,
    "param_bytes": float,
    "act_bytes": float,
    "out_bytes": float,
}


def parse_random_dag_spec(spec: str) -> OpGraph:
    """Build a random DAG from ``"ops=100,seed=3,width=8"`` (the CLI's ``--random-dag``).

    Keys are the keyword arguments of :func:`random_dag` (``fan-in`` is accepted for ``fan_in``);
    ``ops`` is required.

    Raises
    ------
    InvalidInputError
        Unknown keys (with a suggestion), repeated keys, values that are not numbers, bad values.
    """
    where = f"--random-dag {spec!r}"
    values: dict[str, Any] = {}
    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        key, sep, raw = part.partition("=")
        key = key.strip().replace("-", "_")
        if not sep:
            raise InvalidInputError(f"{where}: {part!r} is not key=value; write e.g. ops=100,seed=3")
        if key not in _SPEC_TYPES:
            close = difflib.get_close_matches(key, list(_SPEC_TYPES), n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise InvalidInputError(f"{where}: unknown key {key!r}; {hint}keys: {', '.join(_SPEC_TYPES)}")
        if key in values:
            raise InvalidInputError(f"{where}: key {key!r} given twice")
        typ = _SPEC_TYPES[key]
        try:
            values[key] = typ(raw.strip())
        except ValueError:
            kind = "an integer" if typ is int else "a number"
            raise InvalidInputError(f"{where}: {key} must be {kind}, got {raw.strip()!r}") from None
    if "ops" not in values:
        raise InvalidInputError(f"{where}: missing ops=N (the number of operators)")
    return random_dag(**values)
