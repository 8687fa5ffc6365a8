"""PERL: parameter-efficient RLHF. LoRA reward models and LoRA RL with every role -- policy,
value, reward and the reference -- on one frozen base model."""

from tensor_utils.version import package_version

from .errors import PerlError
from .lora import LoraSpec
from .model import PerlModel, load_base
from .policy import PolicyConfig, PolicyResult, PolicyTrainer, plot_log, train_policy, write_log
from .reward import (
    RewardConfig,
    RewardResult,
    evaluate_reward_model,
    score,
    train_reward_model,
)
from .rules import WordBand, contains_number

__version__ = package_version("perl-rlhf", __file__)

__all__ = [
    "LoraSpec",
    "PerlError",
    "PerlModel",
    "PolicyConfig",
    "PolicyResult",
    "PolicyTrainer",
    "RewardConfig",
    "RewardResult",
    "WordBand",
    "__version__",
    "contains_number",
    "evaluate_reward_model",
    "load_base",
    "plot_log",
    "score",
    "train_policy",
    "train_reward_model",
    "write_log",
]
