"""Our model -> `save_hf_model` -> transformers and back: same logits, bit-identical parameters."""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
from flax import nnx

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from helpsteer_jax.checkpoints.hf import INDEX_NAME, SINGLE_NAME, load_hf_model, read_config, save_hf_model
from helpsteer_jax.checkpoints.safetensors_io import SafetensorsFile
from helpsteer_jax.models.config import LlamaConfig, RopeScaling
from helpsteer_jax.models.llama import Llama

# Compiles whole models (seconds a test): outside the smoke suite.
pytestmark = pytest.mark.entry

TOL = 1e-5

CONFIG = LlamaConfig(
  vocab_size=96,
  hidden_size=48,
  intermediate_size=80,
  num_layers=2,
  num_heads=6,
  num_kv_heads=2,
  head_dim=12,
  rope_theta=5000.0,
  max_position_embeddings=64,
  bos_token_id=1,
  eos_token_id=(2, 3),
  rope_scaling=RopeScaling(factor=4.0, low_freq_factor=1.0, high_freq_factor=4.0, original_max_position_embeddings=16),
)


def _random_model(config: LlamaConfig, seed: int = 0) -> Llama:
  """Weights ~ N(0, 1/fan_in) (embeddings 1/hidden, so tied logits are O(1)), norm scales 1 + N(0, 0.3).

  Drawn with numpy into the abstract model: initialising eagerly would compile one random kernel
  per parameter shape, which takes longer than the whole test.
  """
  graphdef, state = nnx.split(nnx.eval_shape(lambda: Llama(config, rngs=nnx.Rngs(0))))
  rng = np.random.default_rng(seed)
  fan_in = {"o_proj": config.num_heads * config.head_dim, "down_proj": config.intermediate_size}

  def draw(path, x):
    names = [str(getattr(k, "key", getattr(k, "name", k))) for k in path]
    if "scale" in names:
      value = 1.0 + 0.3 * rng.standard_normal(x.shape)
    else:
      fan = next((fan_in[n] for n in names if n in fan_in), config.hidden_size)
      value = rng.standard_normal(x.shape) / np.sqrt(fan)
    return jnp.asarray(value, x.dtype)

  return nnx.merge(graphdef, jax.tree_util.tree_map_with_path(draw, state))


def _params(model: Llama) -> dict[str, np.ndarray]:
  leaves = jax.tree_util.tree_leaves_with_path(nnx.state(model, nnx.Param))
  return {jax.tree_util.keystr(path): np.asarray(x) for path, x in leaves}


def _logits(model: Llama, ids: np.ndarray) -> np.ndarray:
  graphdef, state = nnx.split(model)
  fn = lambda state, ids: nnx.merge(graphdef, state)(ids)
  compiled = jax.jit(fn).lower(state, ids).compile(compiler_options={"xla_backend_optimization_level": 0})
  return np.asarray(compiled(state, ids))


def _transformers_logits(folder: str, ids: np.ndarray) -> np.ndarray:
  model, info = transformers.LlamaForCausalLM.from_pretrained(folder, dtype=torch.float32, output_loading_info=True)
  assert not info["missing_keys"] and not info["unexpected_keys"], info
  assert not info["mismatched_keys"], info
  with torch.no_grad():
    return model.eval()(torch.tensor(ids.astype(np.int64))).logits.numpy()


def _ids(config: LlamaConfig) -> np.ndarray:
  return np.random.default_rng(1).integers(0, config.vocab_size, (2, 40)).astype(np.int32)


def _tensors(folder: str) -> dict[str, np.ndarray]:
  out = {}
  for name in sorted(os.listdir(folder)):
    if name.endswith(".safetensors"):
      file = SafetensorsFile(os.path.join(folder, name))
      out.update({key: file.read(key) for key in file.keys()})
  return out


@pytest.mark.parametrize("tie", [False, True], ids=["untied", "tied"])
def test_sharded_save_loads_in_transformers_and_back(tmp_path, tie):
  config = CONFIG.replace(tie_word_embeddings=tie)
  model = _random_model(config)
  folder = str(tmp_path / "sharded")
  save_hf_model(model, folder, max_shard_size="40KB", show_progress=False)

  shards = sorted(n for n in os.listdir(folder) if n.endswith(".safetensors"))
  assert len(shards) >= 3 and not os.path.exists(os.path.join(folder, SINGLE_NAME))
  with open(os.path.join(folder, INDEX_NAME)) as f:
    index = json.load(f)
  assert sorted(set(index["weight_map"].values())) == shards
  assert ("lm_head.weight" in index["weight_map"]) == (not tie)
  tensors = _tensors(folder)
  assert set(tensors) == set(index["weight_map"])
  assert index["metadata"]["total_size"] == sum(t.nbytes for t in tensors.values())

  ids = _ids(config)
  ours = _logits(model, ids)
  err = float(np.abs(_transformers_logits(folder, ids) - ours).max())
  print(
    f"tie={tie}: {len(shards)} shards, transformers vs ours max|diff| {err:.1e} (max|logit| {np.abs(ours).max():.1f})"
  )
  assert err <= TOL

  reloaded = load_hf_model(folder, show_progress=False)
  assert reloaded.config == config
  original = _params(model)
  for name, value in _params(reloaded).items():
    np.testing.assert_array_equal(value, original[name], err_msg=name)  # bit-identical

  # Unrolled layers load the same tensors, and write them back out byte for byte.
  unrolled = load_hf_model(folder, scan_layers=False, show_progress=False)
  again = str(tmp_path / "again")
  save_hf_model(unrolled, again, show_progress=False)
  assert os.listdir(again).count(SINGLE_NAME) == 1
  rewritten = _tensors(again)
  assert set(rewritten) == set(tensors)
  for name, value in rewritten.items():
    assert value.dtype == tensors[name].dtype and value.tobytes() == tensors[name].tobytes(), name


def test_single_file_save(tmp_path):
  model = _random_model(CONFIG, seed=2)
  folder = str(tmp_path / "single")
  save_hf_model(model, folder, show_progress=False)
  assert sorted(os.listdir(folder)) == ["config.json", "generation_config.json", SINGLE_NAME]
  ids = _ids(CONFIG)
  err = float(np.abs(_transformers_logits(folder, ids) - _logits(model, ids)).max())
  print(f"single file: transformers vs ours max|diff| {err:.1e}")
  assert err <= TOL
  original = _params(model)
  for name, value in _params(load_hf_model(folder, show_progress=False)).items():
    np.testing.assert_array_equal(value, original[name], err_msg=name)


def test_bfloat16_save(tmp_path):
  model = _random_model(CONFIG, seed=3)
  folder = str(tmp_path / "bf16")
  save_hf_model(model, folder, max_shard_size="60KB", dtype="bfloat16", show_progress=False)
  with open(os.path.join(folder, "config.json")) as f:
    assert json.load(f)["torch_dtype"] == "bfloat16"
  assert {t.dtype for t in _tensors(folder).values()} == {np.dtype(ml_dtypes.bfloat16)}

  # By default the stored dtype becomes the parameter dtype: exactly the rounded originals.
  reloaded = load_hf_model(folder, show_progress=False)
  assert reloaded.config.param_dtype == "bfloat16"
  original = _params(model)
  for name, value in _params(reloaded).items():
    assert value.dtype == ml_dtypes.bfloat16, name
    np.testing.assert_array_equal(value, original[name].astype(ml_dtypes.bfloat16), err_msg=name)

  # Upcast on load, ours and transformers compute the same fp32 function of the bf16 weights.
  upcast = load_hf_model(folder, param_dtype="float32", dtype="float32", show_progress=False)
  ids = _ids(CONFIG)
  err = float(np.abs(_transformers_logits(folder, ids) - _logits(upcast, ids)).max())
  print(f"bfloat16 file: transformers vs ours (fp32 compute) max|diff| {err:.1e}")
  assert err <= TOL


@pytest.mark.parametrize("tie", [False, True], ids=["untied", "tied"])
def test_config_survives(tmp_path, tie):
  config = CONFIG.replace(tie_word_embeddings=tie)
  folder = str(tmp_path / "cfg")
  save_hf_model(_random_model(config), folder, show_progress=False)

  with open(os.path.join(folder, "config.json")) as f:
    written = json.load(f)
  assert written["rope_scaling"] == {
    "rope_type": "llama3",
    "factor": 4.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 16,
  }
  assert written["tie_word_embeddings"] is tie and written["head_dim"] == 12
  assert read_config(folder) == config

  hf = transformers.AutoConfig.from_pretrained(folder)
  assert hf.model_type == "llama" and hf.tie_word_embeddings is tie
  rope = getattr(hf, "rope_parameters", None) or hf.rope_scaling
  assert rope["rope_type"] == "llama3" and rope["factor"] == 4.0
  assert rope["original_max_position_embeddings"] == 16
  assert rope.get("rope_theta", getattr(hf, "rope_theta", None)) == 5000.0
  assert (hf.num_key_value_heads, hf.head_dim) == (2, 12)
  assert (hf.bos_token_id, hf.eos_token_id) == (1, [2, 3])
  generation = transformers.GenerationConfig.from_pretrained(folder)
  assert generation.eos_token_id == [2, 3]

  # And what transformers writes back reads as the same config.
  again = tmp_path / "again"
  hf.save_pretrained(again)
  assert read_config(str(again)) == config
