"""JetMoE in PyTorch: Mixture of Attention heads + MoE MLP, with one expert operator that runs a
readable loop, ``torch._grouped_mm`` or padding-free Triton kernels. Loads the released JetMoE
checkpoints' config and weight names unchanged.

    from jetmoe_model import JetMoEConfig, JetMoEForCausalLM

    config = JetMoEConfig(hidden_size=128, num_hidden_layers=2, num_key_value_heads=2,
                          kv_channels=32, intermediate_size=256, vocab_size=1000)
    model = JetMoEForCausalLM(config)
    out = model(input_ids, labels=input_ids)   # out.loss: transformers' causal-LM loss
    out = model(input_ids, labels=input_ids, output_router_logits=True)
    # out.loss = lm + 0.01 * aux + 0.001 * z

Importing the package changes nothing in transformers: ``model_type="jetmoe"`` stays transformers'
own ``JetMoe*`` port. A saved ``config.json`` carries ``auto_map`` (next to a ``jetmoe_auto.py``
that imports this package), so ``AutoModelForCausalLM.from_pretrained(path,
trust_remote_code=True)`` builds our classes in any process; ``register_auto_classes()`` makes the
Auto classes build ours for every ``jetmoe`` config in this process (an explicit opt-in).
"""

from __future__ import annotations

from tensor_utils.version import package_version

from .configuration import ALIASES, EXPERT_BACKENDS, JetMoEConfig, JetMoEConfigError
from .loading import (
    CheckpointMismatchError,
    check_checkpoint,
    expected_shapes,
    load_checkpoint,
)
from .modeling import (
    JetMoECausalLMOutput,
    JetMoEForCausalLM,
    JetMoEForSequenceClassification,
    JetMoEModel,
    JetMoEPreTrainedModel,
    router_losses,
)
from .ops.experts import expert_linear
from .routing import (
    Routing,
    load_balancing_loss,
    router_z_loss,
    sort_by_expert,
    top_k_route,
)

__version__ = package_version("jetmoe-model", __file__)


def register_auto_classes() -> None:
    """Make ``AutoConfig``/``AutoModel``/``AutoModelForCausalLM``/
    ``AutoModelForSequenceClassification`` build our classes for ``model_type="jetmoe"`` in this
    process, in place of transformers' own port (never called on import)."""
    from transformers import (
        AutoConfig,
        AutoModel,
        AutoModelForCausalLM,
        AutoModelForSequenceClassification,
    )

    AutoConfig.register("jetmoe", JetMoEConfig, exist_ok=True)
    AutoModel.register(JetMoEConfig, JetMoEModel, exist_ok=True)
    AutoModelForCausalLM.register(JetMoEConfig, JetMoEForCausalLM, exist_ok=True)
    AutoModelForSequenceClassification.register(
        JetMoEConfig, JetMoEForSequenceClassification, exist_ok=True
    )


__all__ = [
    "ALIASES",
    "EXPERT_BACKENDS",
    "CheckpointMismatchError",
    "JetMoECausalLMOutput",
    "JetMoEConfig",
    "JetMoEConfigError",
    "JetMoEForCausalLM",
    "JetMoEForSequenceClassification",
    "JetMoEModel",
    "JetMoEPreTrainedModel",
    "Routing",
    "check_checkpoint",
    "expected_shapes",
    "expert_linear",
    "load_balancing_loss",
    "load_checkpoint",
    "register_auto_classes",
    "router_losses",
    "router_z_loss",
    "sort_by_expert",
    "top_k_route",
]
