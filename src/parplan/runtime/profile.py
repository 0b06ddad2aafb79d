"""Per-op profiling of the torch twins into the cost model's ``parplan.profile/1`` format.

Method (for every op, on inputs produced by a forward of the whole model):

* ``F``: the op's forward with autograd recording, as a pipeline stage runs it.
* ``I`` (backward-input): ``torch.autograd.grad(y, op_inputs, dy, retain_graph=True)``, gradients
  of the op's floating-point inputs only; 0 for ops without such inputs (embeddings).
* ``W`` (backward-weight): ``torch.autograd.grad(y, op_params, dy)``; 0 for ops without weights.
  Autograd computes only what each call asks for, so I + W is one full backward of the op, the
  same split the executor makes.
* ``act_bytes``: bytes of the tensors autograd saves in the forward (parameters excluded).

Each pass is timed ``repeats`` times after ``warmup`` runs and the median is kept. On CUDA every
timing is bracketed by ``torch.cuda.synchronize()``. CPU runs use ``threads`` intra-op threads
(default 1: the ``local`` cluster counts one core per device, like the executor's workers).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from parplan.cost.profile import OpProfile, Profile
from parplan.errors import InvalidInputError
from parplan.runtime.executor import value_tensors
from parplan.runtime.modules import OpGraphModel, Value, build_torch_model


def _timer(device: str, clock: str = "wall") -> Callable[[Callable[[], Any]], tuple[float, Any]]:
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    now = time.thread_time if clock == "cpu" else time.perf_counter

    def run(fn: Callable[[], Any]) -> tuple[float, Any]:
        sync()
        t0 = now()
        out = fn()
        sync()
        return now() - t0, out

    return run


def _float_leaves(value: Value) -> Value:
    out = []
    for t in value_tensors(value):
        t = t.detach()
        if t.is_floating_point():
            t.requires_grad_(True)
        out.append(t)
    return tuple(out) if isinstance(value, tuple) else out[0]


def _measure_once(
    module: torch.nn.Module,
    params: list[torch.nn.Parameter],
    inputs: list[Value],
    data: dict[str, Tensor],
    param_ptrs: set[int],
    timed: Callable[[Callable[[], Any]], tuple[float, Any]],
) -> tuple[float, float, float, int]:
    """One measurement of an op: (F, I, W seconds, saved activation bytes)."""
    saved: dict[int, int] = {}

    def pack(t: Tensor) -> Tensor:
        st = t.untyped_storage()
        if st.data_ptr() not in param_ptrs:
            saved[st.data_ptr()] = st.nbytes()
        return t

    def fwd() -> Value:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            return module(*inputs, data=data)  # type: ignore[no-any-return]

    tf, y = timed(fwd)
    ys = [t for t in value_tensors(y) if t.is_floating_point() and t.requires_grad]
    dys = [torch.ones_like(t) for t in ys]
    xs = [t for v in inputs for t in value_tensors(v) if t.requires_grad]
    ti = tw = 0.0
    if ys and xs:
        # allow_unused: an input may reach the output through integer ops only (MoE expert ids)
        ti, _ = timed(lambda: torch.autograd.grad(ys, xs, dys, retain_graph=True, allow_unused=True))
    if ys and params:
        tw, _ = timed(lambda: torch.autograd.grad(ys, params, dys, allow_unused=True))
    return tf, ti, tw, sum(saved.values())


def profile_ops(
    model: OpGraphModel,
    *,
    repeats: int = 5,
    warmup: int = 2,
    device: str = "cpu",
    seed: int = 0,
    clock: str = "wall",
) -> dict[str, OpProfile]:
    """Measure F, I, W seconds and saved activation bytes of every op of ``model`` (see module doc).

    ``clock="cpu"`` times the calling thread's CPU time instead of wall time (CPU only): other
    processes competing for the cores do not inflate it.

    Returns
    -------
    dict[str, OpProfile]
        By op name, times in seconds for one micro-batch.
    """
    g = model.graph
    if clock not in ("wall", "cpu") or (clock == "cpu" and device != "cpu"):
        raise InvalidInputError(f"clock: use 'wall', or 'cpu' on device cpu; got {clock!r} on {device}")
    timed = _timer(device, clock)
    data = {k: v.to(device) for k, v in model.make_batch(0, seed).items()}
    with torch.no_grad():
        outputs = model.run_ops([op.name for op in g.ops], {}, data)
    param_ptrs = {p.untyped_storage().data_ptr() for p in model.parameters()}
    result: dict[str, OpProfile] = {}
    for i in g.topo_order:
        name = g.ops[i].name
        module = model.op(name)
        params = [p for p in module.parameters() if p.requires_grad]
        f_s, i_s, w_s = [], [], []
        act = 0
        for k in range(warmup + repeats):
            inputs = [_float_leaves(outputs[g.ops[j].name]) for j in g.preds[i]]
            tf, ti, tw, act = _measure_once(module, params, inputs, data, param_ptrs, timed)
            if k >= warmup:
                f_s.append(tf)
                i_s.append(ti)
                w_s.append(tw)
        result[name] = OpProfile(
            F=statistics.median(f_s), I=statistics.median(i_s), W=statistics.median(w_s), act_bytes=float(act)
        )
    return result


def whole_pass_seconds(
    model: OpGraphModel,
    *,
    repeats: int = 5,
    warmup: int = 2,
    device: str = "cpu",
    seed: int = 0,
    clock: str = "wall",
) -> float:
    """Median seconds of one whole forward and backward of a micro-batch (all ops at once).

    Op-by-op times miss what runs between ops (the framework's dispatch, the autograd engine's
    bookkeeping); the estimate scales them so that they add up to this
    (:attr:`parplan.cost.profile.Profile.pass_scale`).
    """
    timed = _timer(device, clock)
    data = {k: v.to(device) for k, v in model.make_batch(0, seed).items()}

    def step() -> None:
        loss = model(data)
        loss.float().sum().backward()
        model.zero_grad(set_to_none=True)

    times = [timed(step)[0] for _ in range(warmup + repeats)]
    return float(statistics.median(times[warmup:]))


def profile_model(
    name: str,
    *,
    microbatch_size: int = 1,
    seq_len: int | None = None,
    num_layers: int | None = None,
    image_size: int | None = None,
    repeats: int = 5,
    warmup: int = 2,
    device: str = "cpu",
    threads: int = 1,
    seed: int = 0,
    clock: str = "wall",
) -> Profile:
    """Profile a zoo model's torch twin, op by op, as a ``parplan.profile/1`` profile (fp32).

    Parameters
    ----------
    name
        A model with a torch twin (``gpt-tiny``, ``moe-small``, ``multimodal-small``).
    microbatch_size, seq_len, num_layers, image_size
        The model configuration; plans using the profile must use the same shapes.
    repeats, warmup
        Timed repetitions per pass (the median is kept) after untimed ones.
    device
        ``"cpu"`` or ``"cuda"`` / ``"cuda:N"``.
    threads
        Intra-op threads on CPU.
    seed
        Weights and data seed.
    clock
        ``"wall"`` (default) or ``"cpu"``: the profiling thread's CPU time, immune to other load on
        the machine (CPU device only).

    Returns
    -------
    Profile
        Write it with :func:`parplan.cost.profile.write_profile`; ``--cluster local --profile
        FILE`` plans then use these times.

    Raises
    ------
    InvalidInputError
        Unknown model or options, bad repeats, or CUDA asked for but absent.
    """
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise InvalidInputError(f"--repeats: must be an integer >= 1, got {repeats!r}")
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise InvalidInputError(f"--warmup: must be an integer >= 0, got {warmup!r}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InvalidInputError(f"--device {device}: CUDA is not available here; use --device cpu")
    if device != "cpu" and not device.startswith("cuda"):
        raise InvalidInputError(f"--device: unknown {device!r}; use cpu or cuda[:N]")
    model, graph = build_torch_model(
        name,
        microbatch_size=microbatch_size,
        seq_len=seq_len,
        num_layers=num_layers,
        image_size=image_size,
        seed=seed,
    )
    model.to(device)
    old_threads = torch.get_num_threads()
    if device == "cpu":
        torch.set_num_threads(threads)
    try:
        ops = profile_ops(model, repeats=repeats, warmup=warmup, device=device, seed=seed, clock=clock)
        whole = whole_pass_seconds(
            model, repeats=repeats, warmup=warmup, device=device, seed=seed, clock=clock
        )
    finally:
        torch.set_num_threads(old_threads)
    meta = graph.meta_dict
    return Profile(
        device="cpu" if device == "cpu" else "gpu",
        dtype="fp32",
        microbatch_size=microbatch_size,
        seq_len=meta.get("seq_len"),
        ops=tuple(sorted(ops.items())),
        meta=tuple(
            sorted(
                {
                    "model": name,
                    "torch": torch.__version__,
                    "repeats": repeats,
                    "warmup": warmup,
                    "threads": threads if device == "cpu" else None,
                    "torch_device": device,
                    "clock": clock,
                    "num_layers": meta.get("num_layers"),
                    "image_size": meta.get("image_size"),
                    "method": "median; I = autograd.grad w.r.t. inputs, W = w.r.t. parameters",
                    "whole_pass_s": whole,
                }.items()
            )
        ),
    )
