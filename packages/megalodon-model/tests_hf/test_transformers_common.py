"""transformers' common suites on Megalodon's classes (see conftest.py): ``CausalLMModelTest``
(ModelTesterMixin + GenerationTesterMixin + PipelineTesterMixin, with ConfigTester) when the
transformers ``tests/`` files the sdist lacks are overlaid (``TRANSFORMERS_TESTS_DIR``), else
ConfigTester + ModelTesterMixin from the sdist alone.

Megalodon keeps no attention cache over the whole context: ``MegalodonCache`` holds per layer the
current chunk's K/V, the CEMA state and the TimestepNorm statistics. The mixins' cache checks that
assume a K/V entry per token are replaced below by checks of that state. What cannot apply to
such a cache (StaticCache, quantized caches, assisted decoding that rewinds the cache, 4D masks,
attention weights) is skipped by the mixins themselves, each with its reason.
"""

from __future__ import annotations

import importlib.util
import unittest
from unittest import mock

import pytest
import torch

hf = pytest.importorskip("hf_tests.test_modeling_common")
from hf_tests.test_configuration_common import ConfigTester  # noqa: E402
from hf_tests.test_modeling_common import ModelTesterMixin, ids_tensor  # noqa: E402
from megalodon_model import (  # noqa: E402
    MegalodonCache,
    MegalodonConfig,
    MegalodonForCausalLM,
    MegalodonModel,
)
from transformers.models.auto.modeling_auto import (  # noqa: E402
    MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
    MODEL_MAPPING_NAMES,
)

# what a model native to transformers has: its names in the Auto mappings the mixins read (which
# classes are base models, which get causal-LM labels); `import megalodon_model` registers the
# classes themselves with the Auto classes
MODEL_MAPPING_NAMES.setdefault("megalodon", "MegalodonModel")
MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.setdefault("megalodon", "MegalodonForCausalLM")

OVERLAID = importlib.util.find_spec("hf_tests.causal_lm_tester") is not None

# the tiny shape every suite uses (7 tokens, chunk 4: two chunks, the last one short)
TINY = dict(
    vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, z_dim=16,
    value_dim=48, intermediate_size=40, chunk_size=4, norm_num_groups=4, cema_ndim=4,
    swiglu=True,
)  # fmt: skip


def _config(**overrides) -> MegalodonConfig:
    return MegalodonConfig(**{**TINY, "pad_token_id": 0, **overrides})


def _check_megalodon_cache(test, batch_size: int, cache, seq_length: int, config) -> None:
    """What a MegalodonCache must hold after ``seq_length`` tokens: per layer the K/V of the
    current chunk only (``seq_length % chunk_size`` tokens, none at a boundary), the CEMA state
    [B, D, N, 2] and the TimestepNorm statistics; the token count is ``seq_length``."""
    test.assertIsInstance(cache, MegalodonCache)
    test.assertEqual(len(cache.layers), config.num_hidden_layers)
    test.assertEqual(cache.get_seq_length(), seq_length)
    held = seq_length % config.chunk_size
    heads = config.num_attention_heads
    for i in range(config.num_hidden_layers):
        layer = cache.layer(i)
        if held:
            test.assertEqual(
                tuple(layer.keys.shape), (batch_size, held, heads, config.z_dim // heads)
            )
            test.assertEqual(
                tuple(layer.values.shape), (batch_size, held, heads, config.value_dim // heads)
            )
        else:
            test.assertIsNone(layer.keys)
        test.assertEqual(
            tuple(layer.ema.shape), (batch_size, config.hidden_size, config.cema_ndim, 2)
        )
        test.assertEqual(tuple(layer.norm.count.shape), (batch_size,))
        test.assertEqual(tuple(layer.norm.mean.shape), (batch_size, config.norm_num_groups))


def _check_caches_equal(cache1, cache2) -> None:
    if not isinstance(cache1, MegalodonCache) or not isinstance(cache2, MegalodonCache):
        raise AssertionError(f"not MegalodonCaches: {type(cache1)}, {type(cache2)}")
    assert cache1.get_seq_length() == cache2.get_seq_length()
    a, b = cache1.tensors(), cache2.tensors()
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        torch.testing.assert_close(x, y)


if OVERLAID:
    from hf_tests.causal_lm_tester import CausalLMModelTest, CausalLMModelTester

    class MegalodonModelTester(CausalLMModelTester):
        base_model_class = MegalodonModel
        config_class = MegalodonConfig
        causal_lm_class = MegalodonForCausalLM

        def get_config(self) -> MegalodonConfig:
            return _config(
                vocab_size=self.vocab_size,
                hidden_size=self.hidden_size,
                num_hidden_layers=self.num_hidden_layers,
                num_attention_heads=self.num_attention_heads,
                initializer_range=self.initializer_range,
                pad_token_id=self.pad_token_id,
                bos_token_id=self.bos_token_id,
                eos_token_id=self.eos_token_id,
                tie_word_embeddings=self.tie_word_embeddings,
            )

    class MegalodonCausalLMTest(CausalLMModelTest, unittest.TestCase):
        model_tester_class = MegalodonModelTester
        has_attentions = False  # SDPA inside chunks: no attention weights (refused, one line)
        test_torch_exportable = False  # the overlay has no tests/exporters
        test_can_init_all_missing_weights_before_2023 = True  # (the check keys on a copyright year)

        def setUp(self):
            super().setUp()
            self.config_tester = ConfigTester(
                self, config_class=MegalodonConfig, hidden_size=32, z_dim=16, value_dim=48,
                num_attention_heads=2, norm_num_groups=4,
            )  # fmt: skip

        def _check_past_key_values_for_generate(
            self, batch_size, past_key_values, seq_length, config
        ):
            _check_megalodon_cache(self, batch_size, past_key_values, seq_length, config)

        def _check_caches_are_equal(self, cache1, cache2):
            _check_caches_equal(cache1, cache2)

        def test_left_padding_compatibility(self):
            # the mixin skips models without attention weights; Megalodon masks padded keys and
            # keeps pads out of the norm statistics and CEMA, so it runs here: the mixin pads by 32
            # tokens, a multiple of chunk_size=4 (other amounts shift the chunks: a warning says so)
            with mock.patch.object(type(self), "has_attentions", True):
                super().test_left_padding_compatibility()

else:

    class MegalodonModelTester:
        def __init__(self, parent, batch_size=2, seq_length=13, is_training=True):
            self.parent = parent
            self.batch_size = batch_size
            self.seq_length = seq_length
            self.is_training = is_training
            self.vocab_size = TINY["vocab_size"]
            self.hidden_size = TINY["hidden_size"]
            self.num_hidden_layers = TINY["num_hidden_layers"]
            self.num_attention_heads = TINY["num_attention_heads"]
            self.use_labels = True

        def get_config(self) -> MegalodonConfig:
            return _config()

        def prepare_config_and_inputs(self):
            input_ids = ids_tensor([self.batch_size, self.seq_length], self.vocab_size)
            return self.get_config(), input_ids

        def prepare_config_and_inputs_for_common(self):
            config, input_ids = self.prepare_config_and_inputs()
            return config, {"input_ids": input_ids}

    from hf_tests.generation.test_utils import GenerationTesterMixin  # the sdist's stand-in

    class MegalodonModelTest(ModelTesterMixin, GenerationTesterMixin, unittest.TestCase):
        all_model_classes = (MegalodonModel, MegalodonForCausalLM)
        has_attentions = False  # SDPA inside chunks: no attention weights (refused, one line)
        test_resize_embeddings = True
        test_torch_exportable = False  # the sdist lacks tests/exporters
        test_missing_keys = True
        test_can_init_all_missing_weights_before_2023 = True  # (the check keys on a copyright year)

        def setUp(self):
            self.model_tester = MegalodonModelTester(self)
            self.config_tester = ConfigTester(
                self, config_class=MegalodonConfig, hidden_size=32, z_dim=16, value_dim=48,
                num_attention_heads=2, norm_num_groups=4,
            )  # fmt: skip

        def test_config(self):
            self.config_tester.run_common_tests()
