"""GaLore optimizers: gradient low-rank projection for memory-efficient training.

from galore_optim import GaLoreAdamW, galore_param_groups

groups = galore_param_groups(model, target_modules=["attn", "mlp"], rank=128)
optimizer = GaLoreAdamW(groups, lr=1e-3)
"""

from tensor_utils.version import package_version

from .adafactor import GaLoreAdafactor
from .adamw import GaLoreAdamW
from .adamw8bit import GaLoreAdamW8bit
from .base import GALORE_DEFAULTS, GaLoreOptimizer, is_galore_group
from .layerwise import LayerwiseGaLore
from .param_groups import galore_param_groups, galore_target_names
from .projector import GaLoreProjector

__version__ = package_version("galore-optim", __file__)

__all__ = [
    "GALORE_DEFAULTS",
    "GaLoreAdafactor",
    "GaLoreAdamW",
    "GaLoreAdamW8bit",
    "GaLoreOptimizer",
    "GaLoreProjector",
    "LayerwiseGaLore",
    "__version__",
    "galore_param_groups",
    "galore_target_names",
    "is_galore_group",
]
