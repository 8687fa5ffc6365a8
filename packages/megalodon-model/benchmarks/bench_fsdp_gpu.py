"""FSDP2 training-step throughput and peak memory of a ~1.0B-parameter Megalodon on N GPUs.

    torchrun --nproc-per-node 1 benchmarks/bench_fsdp_gpu.py --no-fsdp   # one GPU, plain model
    torchrun --nproc-per-node 1 benchmarks/bench_fsdp_gpu.py             # one GPU, FSDP2
    torchrun --nproc-per-node 2 benchmarks/bench_fsdp_gpu.py             # two GPUs, FSDP2

Every rank runs the same per-GPU batch (weak scaling), so the speed-up of N GPUs is
``tokens_per_s(N) / tokens_per_s(1)``. The loop, options and CSV row are
``tensor_utils_dev.bench.fsdp_train_bench``; rows go to ``results/fsdp_gpu.csv``.
"""

from __future__ import annotations

from megalodon_model import MegalodonConfig, MegalodonForCausalLM
from megalodon_model.distributed import shard_model

from tensor_utils_dev.bench import fsdp_train_bench

# ~0.99B parameters: 16 blocks of width 2048, attention chunks of 2048 tokens
PRESET_1B = dict(
    vocab_size=32000,
    hidden_size=2048,
    num_hidden_layers=16,
    num_attention_heads=4,
    z_dim=512,
    value_dim=4096,
    intermediate_size=5632,
    chunk_size=2048,
    norm_num_groups=32,
)


def build(layers: int) -> MegalodonForCausalLM:
    return MegalodonForCausalLM(MegalodonConfig(**{**PRESET_1B, "num_hidden_layers": layers}))


if __name__ == "__main__":
    raise SystemExit(
        fsdp_train_bench(
            build,
            script=__file__,
            package="megalodon-model",
            model_name="megalodon",
            layers=PRESET_1B["num_hidden_layers"],
            seq=4096,
            seq_help="tokens per sequence (two attention chunks)",
            shard=shard_model,
        )
    )
