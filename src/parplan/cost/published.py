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

torchtitan Llama 3.1 8B (torchtitan ``docs/performance.md``, Table 1)
    FSDP (ZeRO-3) over 8 H100 GPUs of a Grand Teton host (96 GB HBM2e at 2.4 TB/s, NVLink; the GPUs
    run at a 500 W power limit, which the estimate does not model), local batch 2 x 8,192 tokens,
    bf16 with fp32 gradient reduction, torchtitan's op-level selective activation checkpointing.
    Published: tokens per second per GPU, eager, with ``torch.compile``, and with ``torch.compile``
    plus torchao Float8 linears (``gemm_dtype="fp8"``).
"""

from __future__ import annotations

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

#: torchtitan docs/performance.md Table 1 (Llama 3.1 8B, FSDP on 8 H100): tokens/s per GPU.
TORCHTITAN_LLAMA31_8B = {"eager": 5762.0, "compiled": 6667.0, "compiled + Float8": 8532.0}
#: ... and its peak memory per GPU (GiB).
TORCHTITAN_LLAMA31_8B_MEMORY_GIB = {"eager": 82.4, "compiled": 77.0, "compiled + Float8": 76.8}
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

    def estimate(self) -> StrategyEstimate:
        return estimate_strategy(
            self.graph(), self.strategy, self.cluster(), global_batch=self.global_batch, **self.options
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


def _grand_teton() -> Cluster:
    from parplan.cluster_io import cluster_from_json

    return cluster_from_json(
        {
            "name": "grand-teton-h100",
            "devices": {
                "count": 8,
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


def torchtitan_runs() -> list[PublishedRun]:
    """torchtitan's Llama 3.1 8B FSDP rows, eager and compiled."""
    return [
        PublishedRun(
            name=f"Llama 3.1 8B ({mode})",
            source="torchtitan docs/performance.md, Table 1",
            setup="8 H100 (Grand Teton), FSDP, local batch 2 x 8192, selective AC",
            metric="tokens/s/GPU",
            published=value,
            graph=_llama31_8b,
            cluster=_grand_teton,
            strategy=Strategy(dp=8, zero=3, recompute="selective"),
            global_batch=16,
            options={
                "grad_reduce_dtype": "fp32",
                "eager": mode == "eager",
                "selective": "every-other-matmul",
                **({"gemm_dtype": "fp8"} if "Float8" in mode else {}),
            },
            published_memory_gib=TORCHTITAN_LLAMA31_8B_MEMORY_GIB[mode],
        )
        for mode, value in TORCHTITAN_LLAMA31_8B.items()
    ]


def published_runs() -> list[PublishedRun]:
    return megatron_runs() + torchtitan_runs()
