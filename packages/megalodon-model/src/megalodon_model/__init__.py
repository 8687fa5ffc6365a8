"""Megalodon (complex EMA, timestep normalization, normalized chunked attention) as a
transformers model, with chunked-scan and timestep-norm Triton kernels and constant-memory
decoding.

    from megalodon_model import MegalodonConfig, MegalodonForCausalLM

    config = MegalodonConfig(vocab_size=1000, hidden_size=128, num_hidden_layers=2, z_dim=32,
                             value_dim=256, intermediate_size=256, chunk_size=64,
                             norm_num_groups=8)
    model = MegalodonForCausalLM(config)
    out = model(input_ids, labels=input_ids)
    model.generate(input_ids, max_new_tokens=100)      # cache: MegalodonCache, constant size

Importing the package registers the classes with ``AutoConfig``/``AutoModel``/
``AutoModelForCausalLM`` under ``model_type="megalodon"``.
"""

from __future__ import annotations

from tensor_utils.version import package_version

from .cache import MegalodonCache, NormState
from .configuration import MegalodonConfig, MegalodonConfigError
from .convert import convert_reference_state_dict, load_reference_checkpoint
from .modeling import (
    MegalodonBlock,
    MegalodonCausalLMOutput,
    MegalodonForCausalLM,
    MegalodonModel,
    MegalodonPreTrainedModel,
)
from .ops import cema, cema_step, timestep_norm

__version__ = package_version("megalodon-model", __file__)


def register_auto_classes() -> None:
    """Make the Auto classes build our classes for ``model_type="megalodon"`` (on import)."""
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

    AutoConfig.register("megalodon", MegalodonConfig, exist_ok=True)
    AutoModel.register(MegalodonConfig, MegalodonModel, exist_ok=True)
    AutoModelForCausalLM.register(MegalodonConfig, MegalodonForCausalLM, exist_ok=True)


register_auto_classes()

__all__ = [
    "MegalodonBlock",
    "MegalodonCache",
    "MegalodonCausalLMOutput",
    "MegalodonConfig",
    "MegalodonConfigError",
    "MegalodonForCausalLM",
    "MegalodonModel",
    "MegalodonPreTrainedModel",
    "NormState",
    "cema",
    "cema_step",
    "convert_reference_state_dict",
    "load_reference_checkpoint",
    "register_auto_classes",
    "timestep_norm",
]
