"""transformers' ConfigTester and ModelTesterMixin on Megalodon's classes (see conftest.py)."""

from __future__ import annotations

import unittest

import pytest

hf = pytest.importorskip("hf_tests.test_modeling_common")
from hf_tests.generation.test_utils import GenerationTesterMixin  # noqa: E402
from hf_tests.test_configuration_common import ConfigTester  # noqa: E402
from hf_tests.test_modeling_common import ModelTesterMixin, ids_tensor  # noqa: E402
from megalodon_model import MegalodonConfig, MegalodonForCausalLM, MegalodonModel  # noqa: E402
from transformers.models.auto.modeling_auto import (  # noqa: E402
    MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
    MODEL_MAPPING_NAMES,
)

# what a model native to transformers has: its names in the Auto mappings the mixin reads (which
# classes are base models, which get causal-LM labels); `import megalodon_model` registers the
# classes themselves with the Auto classes
MODEL_MAPPING_NAMES.setdefault("megalodon", "MegalodonModel")
MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.setdefault("megalodon", "MegalodonForCausalLM")


class MegalodonModelTester:
    def __init__(self, parent, batch_size=2, seq_length=13, is_training=True):
        self.parent = parent
        self.batch_size = batch_size
        self.seq_length = seq_length
        self.is_training = is_training
        self.vocab_size = 99
        self.hidden_size = 32
        self.num_hidden_layers = 2
        self.num_attention_heads = 2
        self.z_dim = 16
        self.value_dim = 48
        self.intermediate_size = 40
        self.chunk_size = 8
        self.norm_num_groups = 4
        self.cema_ndim = 4
        self.use_labels = True

    def get_config(self) -> MegalodonConfig:
        return MegalodonConfig(
            vocab_size=self.vocab_size,
            hidden_size=self.hidden_size,
            num_hidden_layers=self.num_hidden_layers,
            num_attention_heads=self.num_attention_heads,
            z_dim=self.z_dim,
            value_dim=self.value_dim,
            intermediate_size=self.intermediate_size,
            chunk_size=self.chunk_size,
            norm_num_groups=self.norm_num_groups,
            cema_ndim=self.cema_ndim,
            swiglu=True,
            pad_token_id=0,
        )

    def prepare_config_and_inputs(self):
        input_ids = ids_tensor([self.batch_size, self.seq_length], self.vocab_size)
        return self.get_config(), input_ids

    def prepare_config_and_inputs_for_common(self):
        config, input_ids = self.prepare_config_and_inputs()
        return config, {"input_ids": input_ids}


class MegalodonModelTest(ModelTesterMixin, GenerationTesterMixin, unittest.TestCase):
    all_model_classes = (MegalodonModel, MegalodonForCausalLM)
    has_attentions = False  # SDPA inside chunks: no attention weights (refused with one line)
    test_resize_embeddings = True
    test_torch_exportable = False  # the sdist lacks tests/exporters
    test_missing_keys = True

    def setUp(self):
        self.model_tester = MegalodonModelTester(self)
        self.config_tester = ConfigTester(
            self,
            config_class=MegalodonConfig,
            hidden_size=32,
            z_dim=16,
            value_dim=48,
            num_attention_heads=2,
            norm_num_groups=4,
        )

    def test_config(self):
        self.config_tester.run_common_tests()
