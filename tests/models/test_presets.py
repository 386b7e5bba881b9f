"""Presets: parameter counts through jax.eval_shape (nothing allocated) and config translation."""

import pytest

from helpsteer_jax.models.config import PRESETS, LlamaConfig, from_hf_dict, get_preset, to_hf_dict
from helpsteer_jax.models.create import count_params

EXPECTED = {
  "llama3_8b": 8_030_261_248,
  "llama3_70b": 70_553_706_496,
  "llama3_405b": 405_853_388_800,
  "smollm2_135m": 134_515_008,
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_parameter_counts(name):
  config = get_preset(name)
  assert count_params(config) == EXPECTED[name]
  assert config.num_params() == EXPECTED[name]


def test_smollm2_is_tied_and_llama3_is_not():
  assert get_preset("smollm2_135m").tie_word_embeddings
  assert not get_preset("llama3_8b").tie_word_embeddings
  assert get_preset("llama3_8b").rope_scaling.factor == 8.0


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_hf_dict_round_trip(name):
  config = get_preset(name)
  back = from_hf_dict(to_hf_dict(config), param_dtype=config.param_dtype, dtype=config.dtype)
  assert back == config


def test_unknown_preset_and_bad_values():
  with pytest.raises(KeyError, match="unknown model preset"):
    get_preset("llama3_9b")
  with pytest.raises(ValueError, match="multiple of num_kv_heads"):
    get_preset("tiny", num_heads=5, num_kv_heads=2)
  with pytest.raises(ValueError, match="remat_policy"):
    get_preset("tiny", remat_policy="sometimes")
  with pytest.raises(ValueError, match="expected a Llama model"):
    from_hf_dict({"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"]}, source="x/config.json")
  with pytest.raises(ValueError, match="rope scaling type 'yarn'"):
    from_hf_dict({**to_hf_dict(get_preset("tiny")), "rope_scaling": {"rope_type": "yarn", "factor": 2}})
  assert isinstance(get_preset("tiny"), LlamaConfig)
