"""FSDP2 training-step throughput and peak memory of a ~1.2B-parameter JetMoE on N GPUs.

    torchrun --nproc-per-node 1 benchmarks/bench_fsdp_gpu.py --no-fsdp   # one GPU, plain model
    torchrun --nproc-per-node 1 benchmarks/bench_fsdp_gpu.py             # one GPU, FSDP2
    torchrun --nproc-per-node 2 benchmarks/bench_fsdp_gpu.py             # two GPUs, FSDP2

Every rank runs the same per-GPU batch (weak scaling), so the speed-up of N GPUs is
``tokens_per_s(N) / tokens_per_s(1)``. The forward includes the router losses
(``output_router_logits=True``). The loop, options and CSV row are
``tensor_utils_dev.bench.fsdp_train_bench``; rows go to ``results/fsdp_gpu.csv``.
"""

from __future__ import annotations

from jetmoe_model import JetMoEConfig, JetMoEForCausalLM
from jetmoe_model.distributed import shard_model

from tensor_utils_dev.bench import fsdp_train_bench

# ~1.21B parameters: 12 blocks, 8 experts of top-2 in both the attention (MoA) and the MLP (MoE)
PRESET_1B = dict(
    vocab_size=32000,
    hidden_size=1536,
    num_hidden_layers=12,
    intermediate_size=2048,
    num_local_experts=8,
    num_experts_per_tok=2,
    kv_channels=128,
    num_key_value_heads=6,
)


def build(layers: int) -> JetMoEForCausalLM:
    return JetMoEForCausalLM(JetMoEConfig(**{**PRESET_1B, "num_hidden_layers": layers}))


def forward(model, ids):
    return model(ids, labels=ids, output_router_logits=True)


if __name__ == "__main__":
    raise SystemExit(
        fsdp_train_bench(
            build,
            forward,
            script=__file__,
            package="jetmoe-model",
            model_name="jetmoe",
            layers=PRESET_1B["num_hidden_layers"],
            seq=2048,
            shard=shard_model,
        )
    )
