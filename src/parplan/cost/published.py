"""Published training runs the strategy estimate is checked against, with their exact setups.

Each :class:`PublishedRun` rebuilds the run's model, cluster and strategy and says what was
published and how it was counted, so ``bench/bench_cost.py`` and the tests compare like with like.

Megatron-LM weak scaling (Narayanan et al. 2021, "Efficient Large-Scale Language Model Training on
GPU Clusters Using Megatron-LM", Table 1)
    GPT models of 1.7B to 1T parameters on 32 to 3,072 A100 80GB GPUs (DGX A100 nodes, NVLink inside,
    8 x 200 Gb/s HDR InfiniBand per node), vocabulary 51,200, sequence 2,048, fp16, full activation
    recompute, tensor parallelism inside a node, data parallelism over the rest. Published: achieved
    teraFLOP/s per GPU, counted with the paper's formula (its equation 3),
    ``96 B s l h^2 (1 + s / (6 h) + V / (16 l h))`` FLOPs per iteration (the recompute forward
    included). Setup assumed where the table is silent: micro-batch size 1, the 1F1B schedule (the
    estimate runs one stage per device; the paper's interleaved schedule would shrink the bubble),
    fp32 gradient accumulation and all-reduce, no overlap of the gradient all-reduce with the
    backward (Megatron-LM in 2021), no sequence parallelism (published a year later).

torchtitan Llama 3.1 (torchtitan ``docs/performance.md`` at its December 2024 versions)
    Grand Teton hosts: 8 H100 GPUs each (96 GB HBM2e at 2.4 TB/s, NVLink), 400 Gb/s RDMA per GPU
    between hosts. The GPUs run at their default 500 W power limit (the part is rated 700 W); the
    page says their peak lies "between SXM and NVL" and is not known exactly, so the estimate with
    the SXM datasheet peak is one figure, and :func:`fit_peak_scale` fits the sustained fraction of
    that peak on one row (Table 1, FSDP eager) and predicts every other row with it.
    Table 1 and Table 3: Llama 3.1 8B, FSDP (ZeRO-3) over 8 and 128 GPUs, local batch 2 x 8,192
    tokens, bf16 with fp32 gradient reduction, torchtitan's op-level selective activation
    checkpointing; eager, with ``torch.compile``, and with ``torch.compile`` plus torchao Float8
    linears (``gemm_dtype="fp8"``). Table 4, first row: Llama 3.1 70B, FSDP 32 x TP 8 (sequence
    parallel) on 256 GPUs, local batch 16, full checkpointing, compiled with Float8 (its AsyncTP row
    is not modelled). Published: tokens per second per GPU, read at the 90th iteration, and peak
    memory. Not rebuilt: Tables 2 and 6 (context parallelism, not modelled) and Table 5 (405B over
    PP 8, whose micro-batch count is not published).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from parplan.cluster import Cluster
from parplan.cost.strategy import StrategyEstimate, estimate_strategy
from parplan.graph.ops import OpGraph
from parplan.strategy import Strategy

#: Narayanan et al. 2021, Table 1: (billions of parameters, heads, hidden, layers, tensor parallel,
#: pipeline parallel, GPUs, batch size, achieved teraFLOP/s per GPU).
MEGATRON_TABLE1: tuple[tuple[float, int, int, int, int, int, int, int, float], ...] = (
    (1.7, 24, 2304, 24, 1, 1, 32, 512, 137),
    (3.6, 32, 3072, 30, 2, 1, 64, 512, 138),
    (7.5, 32, 4096, 36, 4, 1, 128, 512, 142),
    (18.4, 48, 6144, 40, 8, 1, 256, 1024, 135),
    (39.1, 64, 8192, 48, 8, 2, 512, 1536, 138),
    (76.1, 80, 10240, 60, 8, 4, 1024, 1792, 140),
    (145.6, 96, 12288, 80, 8, 8, 1536, 2304, 148),
    (310.1, 128, 16384, 96, 8, 16, 1920, 2160, 155),
    (529.6, 128, 20480, 105, 8, 35, 2520, 2520, 163),
    (1008.0, 160, 25600, 128, 8, 64, 3072, 3072, 163),
)
MEGATRON_VOCAB, MEGATRON_SEQ = 51_200, 2048

#: torchtitan docs/performance.md, Llama 3.1 8B with FSDP, by GPU count (Table 1: 8, Table 3: 128)
#: and mode: (tokens/s per GPU, peak memory per GPU in GiB).
TORCHTITAN_LLAMA31_8B: dict[int, dict[str, tuple[float, float]]] = {
    8: {"eager": (5762.0, 82.4), "compiled": (6667.0, 77.0), "compiled + Float8": (8532.0, 76.8)},
    128: {"eager": (5605.0, 67.0), "compiled": (6514.0, 62.0), "compiled + Float8": (8380.0, 61.8)},
}
#: ... Table 4, first row: Llama 3.1 70B, FSDP 32 x TP 8, compiled + Float8, full checkpointing.
TORCHTITAN_LLAMA31_70B_2D = (829.0, 71.9)
LLAMA31_70B_CONFIG = {
    "model_type": "llama",
    "hidden_size": 8192,
    "num_hidden_layers": 80,
    "num_attention_heads": 64,
    "num_key_value_heads": 8,
    "intermediate_size": 28672,
    "vocab_size": 128256,
    "max_position_embeddings": 131072,
}
LLAMA31_8B_CONFIG = {
    "model_type": "llama",
    "hidden_size": 4096,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "intermediate_size": 14336,
    "vocab_size": 128256,
    "max_position_embeddings": 131072,
}


@dataclass(frozen=True, kw_only=True)
class PublishedRun:
    """One published measurement and how to rebuild its setup."""

    name: str
    source: str
    setup: str
    metric: str  # "TFLOP/s/GPU" or "tokens/s/GPU"
    published: float
    graph: Callable[[], OpGraph]
    cluster: Callable[[], Cluster]
    strategy: Strategy
    global_batch: int
    options: dict[str, Any] = field(default_factory=dict)
    flops_per_step: float | None = None  # the paper's count, for TFLOP/s
    published_memory_gib: float | None = None
    machine: str = ""  # "grand-teton": the rows whose peak torchtitan_peak_scale fits

    def estimate(self, peak_scale: float = 1.0) -> StrategyEstimate:
        """The estimate of this run; ``peak_scale`` multiplies every device's peak FLOP/s."""
        cluster = self.cluster()
        if peak_scale != 1.0:
            cluster = scale_peak(cluster, peak_scale)
        return estimate_strategy(
            self.graph(), self.strategy, cluster, global_batch=self.global_batch, **self.options
        )

    def predicted(self, est: StrategyEstimate) -> float:
        """The estimate in the published metric, counted the way the source counts it."""
        if self.metric == "TFLOP/s/GPU":
            assert self.flops_per_step is not None
            return self.flops_per_step / (est.step_s * self.strategy.num_devices) / 1e12
        return est.tokens_per_s_per_device


def _gpt_graph(layers: int, hidden: int, heads: int) -> Callable[[], OpGraph]:
    def build() -> OpGraph:
        from parplan.graph.hf_config import build_hf_model

        config = {
            "model_type": "gpt2",
            "n_layer": layers,
            "n_embd": hidden,
            "n_head": heads,
            "vocab_size": MEGATRON_VOCAB,
            "n_positions": MEGATRON_SEQ,
        }
        return build_hf_model("megatron-gpt/config.json", data=config, seq_len=MEGATRON_SEQ, dtype="fp16")

    return build


def _dgx_a100(nodes: int) -> Callable[[], Cluster]:
    def build() -> Cluster:
        from parplan.cluster_io import load_cluster

        return load_cluster(f"dgx-a100:{nodes}")

    return build


def megatron_runs() -> list[PublishedRun]:
    """The ten rows of Narayanan et al. 2021, Table 1."""
    runs = []
    V, s = MEGATRON_VOCAB, MEGATRON_SEQ
    for params, heads, h, layers, t, p, gpus, batch, tflops in MEGATRON_TABLE1:
        flops = 96 * batch * s * layers * h * h * (1 + s / (6 * h) + V / (16 * layers * h))
        runs.append(
            PublishedRun(
                name=f"GPT {params:g}B",
                source="Narayanan et al. 2021, Table 1",
                setup=f"{gpus} A100, TP{t} PP{p} DP{gpus // (t * p)}, batch {batch}, full recompute",
                metric="TFLOP/s/GPU",
                published=tflops,
                graph=_gpt_graph(layers, h, heads),
                cluster=_dgx_a100(gpus // 8),
                strategy=Strategy(
                    pp=p,
                    dp=gpus // (t * p),
                    tp=t,
                    recompute="full",
                    sequence_parallel=False if t > 1 else None,
                ),
                global_batch=batch,
                options={"grad_dtype": "fp32", "overlap_grad_reduce": False},
                flops_per_step=flops,
            )
        )
    return runs


def scale_peak(cluster: Cluster, scale: float) -> Cluster:
    """``cluster`` with every device's peak FLOP/s (all dtypes) times ``scale``: GPUs whose clocks a
    power limit holds below the datasheet's."""
    devices = tuple(
        dataclasses.replace(d, peak_flops=tuple((k, v * scale) for k, v in d.peak_flops))
        for d in cluster.devices
    )
    return dataclasses.replace(cluster, devices=devices)


def fit_peak_scale(run: PublishedRun, lo: float = 0.1, hi: float = 2.0) -> float:
    """The peak scale at which ``run``'s estimate equals its published figure (bisection; the
    predicted throughput grows with the peak)."""

    def gap(scale: float) -> float:
        return run.predicted(run.estimate(scale)) - run.published

    if gap(lo) > 0 or gap(hi) < 0:
        raise ValueError(f"{run.name}: no peak scale in [{lo}, {hi}] predicts {run.published:g}")
    for _ in range(50):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if gap(mid) < 0 else (lo, mid)
    return (lo + hi) / 2


def _grand_teton(count: int = 8) -> Callable[[], Cluster]:
    def build() -> Cluster:
        return _grand_teton_cluster(count)

    return build


def _grand_teton_cluster(count: int) -> Cluster:
    from parplan.cluster_io import cluster_from_json

    return cluster_from_json(
        {
            "name": f"grand-teton-h100:{count // 8}",
            "devices": {
                "count": count,
                "per_node": 8,
                "device": {
                    "kind": "h100",
                    "peak_flops": {"bf16": 989e12, "fp16": 989e12, "fp8": 1979e12},
                    "memory_bytes": 96 * 2**30 - 2 * 2**30,
                    "memory_bandwidth_Bps": 2.4e12,
                },
            },
            "intra_node": {"bandwidth_Bps": 450e9, "latency_s": 3e-6},
            "inter_node": {"bandwidth_Bps": 50e9, "latency_s": 5e-6},
        },
        where="grand-teton-h100",
    )


def _llama31_8b() -> OpGraph:
    from parplan.graph.hf_config import build_hf_model

    return build_hf_model("llama-3.1-8b/config.json", data=LLAMA31_8B_CONFIG, microbatch_size=2, seq_len=8192)


def _llama31_70b() -> OpGraph:
    from parplan.graph.hf_config import build_hf_model

    return build_hf_model(
        "llama-3.1-70b/config.json", data=LLAMA31_70B_CONFIG, microbatch_size=16, seq_len=8192
    )


def torchtitan_runs() -> list[PublishedRun]:
    """torchtitan's Llama 3.1 rows on Grand Teton H100s: 8B with FSDP on 8 and 128 GPUs (eager,
    compiled, compiled + Float8), and 70B with FSDP x TP on 256 GPUs. The first row is the one
    :func:`torchtitan_peak_scale` fits."""
    runs = []
    for gpus, rows in TORCHTITAN_LLAMA31_8B.items():
        for mode, (value, memory) in rows.items():
            runs.append(
                PublishedRun(
                    name=f"Llama 3.1 8B, {gpus} GPUs ({mode})",
                    source=f"torchtitan docs/performance.md, Table {1 if gpus == 8 else 3}",
                    setup=f"{gpus} H100 (Grand Teton), FSDP, local batch 2 x 8192, selective AC",
                    metric="tokens/s/GPU",
                    published=value,
                    graph=_llama31_8b,
                    cluster=_grand_teton(gpus),
                    strategy=Strategy(dp=gpus, zero=3, recompute="selective"),
                    global_batch=2 * gpus,
                    options={
                        "grad_reduce_dtype": "fp32",
                        "eager": mode == "eager",
                        "selective": "every-other-matmul",
                        **({"gemm_dtype": "fp8"} if "Float8" in mode else {}),
                    },
                    published_memory_gib=memory,
                    machine="grand-teton",
                )
            )
    value, memory = TORCHTITAN_LLAMA31_70B_2D
    runs.append(
        PublishedRun(
            name="Llama 3.1 70B, 256 GPUs (compiled + Float8)",
            source="torchtitan docs/performance.md, Table 4",
            setup="256 H100 (Grand Teton), FSDP32 x TP8 + SP, local batch 16 x 8192, full AC",
            metric="tokens/s/GPU",
            published=value,
            graph=_llama31_70b,
            cluster=_grand_teton(256),
            strategy=Strategy(dp=32, tp=8, zero=3, recompute="full"),
            global_batch=512,
            options={"grad_reduce_dtype": "fp32", "gemm_dtype": "fp8"},
            published_memory_gib=memory,
            machine="grand-teton",
        )
    )
    return runs


def torchtitan_peak_scale() -> float:
    """The Grand Teton H100s' sustained share of the SXM datasheet peak, fitted on torchtitan's
    Table 1 FSDP eager row (8 GPUs): the one number their 500 W limit leaves unknown."""
    return fit_peak_scale(torchtitan_runs()[0])


def published_runs() -> list[PublishedRun]:
    return megatron_runs() + torchtitan_runs()
