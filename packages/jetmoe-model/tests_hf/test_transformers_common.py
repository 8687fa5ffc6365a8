"""transformers' ConfigTester and ModelTesterMixin on JetMoE's classes (see conftest.py), with a
tester shaped like transformers' own JetMoe tester (tiny config, same kwargs).

``JETMOE_HF_TESTS_CLASSES=transformers`` runs the same tests on transformers' own ``JetMoe*``
classes (the baseline: what passes there must pass for ours)."""

from __future__ import annotations

import importlib.util
import os
import unittest

import pytest

hf = pytest.importorskip("hf_tests.test_modeling_common")
if importlib.util.find_spec("hf_tests.models") is not None:  # TRANSFORMERS_TESTS_DIR is set
    pytest.skip(
        "transformers' own JetMoe test file runs instead (test_transformers_jetmoe.py)",
        allow_module_level=True,
    )
from hf_tests.generation.test_utils import GenerationTesterMixin  # noqa: E402
from hf_tests.test_configuration_common import ConfigTester  # noqa: E402
from hf_tests.test_modeling_common import ModelTesterMixin, ids_tensor  # noqa: E402
from jetmoe_model import (  # noqa: E402
    JetMoEConfig,
    JetMoEForCausalLM,
    JetMoEForSequenceClassification,
    JetMoEModel,
    register_auto_classes,
)
from transformers.models.auto.modeling_auto import (  # noqa: E402
    MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
    MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES,
    MODEL_MAPPING_NAMES,
)

# the Auto classes build ours for `jetmoe` configs here (the documented opt-in), and the mixin's
# name lookups (which classes are base models, which get causal-LM / classification labels) see
# our class names next to transformers' own
if os.environ.get("JETMOE_HF_TESTS_CLASSES") == "transformers":
    from transformers import JetMoeConfig as JetMoEConfig  # type: ignore[assignment]
    from transformers import JetMoeForCausalLM as JetMoEForCausalLM  # type: ignore[assignment]
    from transformers import (  # type: ignore[assignment]
        JetMoeForSequenceClassification as JetMoEForSequenceClassification,
    )
    from transformers import JetMoeModel as JetMoEModel  # type: ignore[assignment]
else:
    register_auto_classes()
MODEL_MAPPING_NAMES.setdefault("jetmoe_model", "JetMoEModel")
MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.setdefault("jetmoe_model", "JetMoEForCausalLM")
MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES.setdefault(
    "jetmoe_model", "JetMoEForSequenceClassification"
)


class JetMoEModelTester:
    def __init__(self, parent, batch_size=13, seq_length=7, is_training=True):
        self.parent = parent
        self.batch_size = batch_size
        self.seq_length = seq_length
        self.is_training = is_training
        self.use_input_mask = True
        self.use_labels = True
        self.vocab_size = 99
        self.hidden_size = 32
        self.num_hidden_layers = 2
        self.num_key_value_heads = 2
        self.kv_channels = 8
        self.num_experts_per_tok = 2
        self.num_attention_heads = self.num_key_value_heads * self.num_experts_per_tok
        self.head_dim = self.kv_channels
        self.intermediate_size = 37
        self.num_local_experts = 4
        self.type_sequence_label_size = 2
        self.num_labels = 3
        self.pad_token_id = 0

    def get_config(self) -> JetMoEConfig:
        return JetMoEConfig(
            vocab_size=self.vocab_size,
            hidden_size=self.hidden_size,
            num_hidden_layers=self.num_hidden_layers,
            num_key_value_heads=self.num_key_value_heads,
            kv_channels=self.kv_channels,
            intermediate_size=self.intermediate_size,
            num_local_experts=self.num_local_experts,
            num_experts_per_tok=self.num_experts_per_tok,
            num_labels=self.num_labels,
            pad_token_id=self.pad_token_id,
        )

    def prepare_config_and_inputs(self):
        input_ids = ids_tensor([self.batch_size, self.seq_length], self.vocab_size)
        mask = ids_tensor([self.batch_size, self.seq_length], 2)
        mask[:, -1] = 1  # every row has a real last token (left padding)
        return self.get_config(), input_ids, mask

    def prepare_config_and_inputs_for_common(self):
        config, input_ids, mask = self.prepare_config_and_inputs()
        return config, {"input_ids": input_ids, "attention_mask": mask}


class JetMoEModelTest(ModelTesterMixin, GenerationTesterMixin, unittest.TestCase):
    all_model_classes = (JetMoEModel, JetMoEForCausalLM, JetMoEForSequenceClassification)
    test_torch_exportable = False  # the sdist lacks tests/exporters
    test_missing_keys = True

    def setUp(self):
        self.model_tester = JetMoEModelTester(self)
        self.config_tester = ConfigTester(
            self,
            config_class=JetMoEConfig,
            hidden_size=32,
            num_key_value_heads=2,
            kv_channels=8,
        )

    def test_config(self):
        self.config_tester.run_common_tests()
