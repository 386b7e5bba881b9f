"""Reward models <-> transformers `LlamaForSequenceClassification`: same scores both ways.

Our random reward model is saved with `save_reward_model` and scored by transformers; a random
transformers classifier saved by `save_pretrained` is loaded with `load_reward_model` and scored
by ours. Batches mix an unpadded row, left-padded rows and a right-padded row: transformers finds
the last real token from `pad_token_id` (which never occurs as a real token here), ours from the
mask, and no position ids are passed to transformers (RoPE is relative, so the shift of
left-padded rows does not change the result).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from helpsteer_jax.checkpoints.hf import INDEX_NAME, save_hf_model
from helpsteer_jax.checkpoints.reward import (
  HELPSTEER2_ATTRIBUTES,
  STEERLM_ATTRIBUTES,
  STEERLM_REWARD_WEIGHTS,
  attribute_weights,
  load_reward_model,
  reward_labels,
  reward_model_from_causal_lm,
  save_reward_model,
  weighted_reward,
)
from helpsteer_jax.checkpoints.safetensors_io import CheckpointError, SafetensorsFile
from helpsteer_jax.checkpoints.tokenizers import stop_token_ids
from helpsteer_jax.models.config import LlamaConfig, RopeScaling
from helpsteer_jax.models.heads import RewardModel
from helpsteer_jax.models.llama import Llama
from helpsteer_jax.parallel.mesh import make_mesh
from helpsteer_jax.parallel.partitioning import ShardingContext

# Compiles whole models (seconds a test): outside the smoke suite.
pytestmark = pytest.mark.entry

TOL = 1e-4
PAD = 0
SEQ = 24

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
  eos_token_id=(2,),
  rope_scaling=RopeScaling(factor=4.0, low_freq_factor=1.0, high_freq_factor=4.0, original_max_position_embeddings=16),
)


def _draw_into(abstract: nnx.Module, fan_in: dict[str, int], hidden: int, seed: int) -> nnx.Module:
  """Weights ~ N(0, 1/fan_in), norm scales 1 + N(0, 0.3), drawn with numpy (no per-shape compiles)."""
  graphdef, state = nnx.split(abstract)
  rng = np.random.default_rng(seed)

  def draw(path, x):
    names = [str(getattr(k, "key", getattr(k, "name", k))) for k in path]
    if "scale" in names:
      value = 1.0 + 0.3 * rng.standard_normal(x.shape)
    else:
      fan = next((fan_in[n] for n in names if n in fan_in), hidden)
      value = rng.standard_normal(x.shape) / np.sqrt(fan)
    return jnp.asarray(value, x.dtype)

  return nnx.merge(graphdef, jax.tree_util.tree_map_with_path(draw, state))


def _fan_in(config: LlamaConfig) -> dict[str, int]:
  return {"o_proj": config.num_heads * config.head_dim, "down_proj": config.intermediate_size}


def _random_reward_model(config: LlamaConfig, num_outputs: int, seed: int = 0) -> RewardModel:
  abstract = nnx.eval_shape(lambda: RewardModel(config, num_outputs, rngs=nnx.Rngs(0)))
  return _draw_into(abstract, _fan_in(config), config.hidden_size, seed)


def _batch(vocab: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
  """ids [4, SEQ] without the pad id among real tokens: a full row, two left-padded rows, a
  right-padded row."""
  ids = np.random.default_rng(seed).integers(1, vocab, (4, SEQ)).astype(np.int32)
  mask = np.ones((4, SEQ), bool)
  mask[1, : SEQ - 17] = False
  mask[2, : SEQ - 9] = False
  mask[3, 13:] = False
  return np.where(mask, ids, PAD), mask


def _ours(model: RewardModel, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
  graphdef, state = nnx.split(model)
  fn = lambda state, ids, mask: nnx.merge(graphdef, state)(ids, mask)
  compiled = jax.jit(fn).lower(state, ids, mask).compile(compiler_options={"xla_backend_optimization_level": 0})
  return np.asarray(compiled(state, ids, mask))


def _theirs(model, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
  with torch.no_grad():
    out = model.eval()(torch.tensor(ids.astype(np.int64)), attention_mask=torch.tensor(mask.astype(np.int64)))
  return out.logits.numpy()


def _load_transformers(folder: str):
  model, info = transformers.LlamaForSequenceClassification.from_pretrained(
    folder, dtype=torch.float32, output_loading_info=True
  )
  assert not info["missing_keys"] and not info["unexpected_keys"], info
  assert not info["mismatched_keys"], info
  return model


def _params(model: nnx.Module) -> dict[str, np.ndarray]:
  leaves = jax.tree_util.tree_leaves_with_path(nnx.state(model, nnx.Param))
  return {jax.tree_util.keystr(path): np.asarray(x) for path, x in leaves}


@pytest.mark.parametrize("num_outputs", [1, 9])
def test_export_scores_like_transformers_and_reloads(tmp_path, num_outputs):
  model = _random_reward_model(CONFIG, num_outputs, seed=num_outputs)
  folder = str(tmp_path / "rm")
  save_reward_model(model, None, folder, pad_token_id=PAD, show_progress=False)

  with open(os.path.join(folder, "config.json")) as f:
    written = json.load(f)
  assert written["architectures"] == ["LlamaForSequenceClassification"]
  assert written["pad_token_id"] == PAD
  expected_labels = ("reward",) if num_outputs == 1 else STEERLM_ATTRIBUTES
  assert written["id2label"] == {str(i): n for i, n in enumerate(expected_labels)}
  assert reward_labels(folder) == expected_labels
  hf_config = transformers.AutoConfig.from_pretrained(folder)
  assert hf_config.num_labels == num_outputs and hf_config.pad_token_id == PAD

  ids, mask = _batch(CONFIG.vocab_size, seed=num_outputs)
  ours = _ours(model, ids, mask)
  assert ours.shape == (4, num_outputs)
  theirs = _theirs(_load_transformers(folder), ids, mask)
  err = float(np.abs(theirs - ours).max())
  print(f"O={num_outputs}: transformers vs ours max|diff| {err:.1e} (max|score| {np.abs(ours).max():.2f})")
  assert err <= TOL

  for scan_layers in (True, False):
    reloaded, tokenizer = load_reward_model(folder, scan_layers=scan_layers, show_progress=False)
    assert tokenizer is None and reloaded.num_outputs == num_outputs
    assert reloaded.config == CONFIG.replace(scan_layers=scan_layers)
    again = _ours(reloaded, ids, mask)
    assert float(np.abs(again - ours).max()) <= 1e-5
  reloaded, _ = load_reward_model(folder, show_progress=False)
  original = _params(model)
  for name, value in _params(reloaded).items():
    np.testing.assert_array_equal(value, original[name], err_msg=name)  # bit-identical


def _random_transformers_classifier(num_outputs: int, seed: int):
  config = transformers.LlamaConfig(
    vocab_size=80,
    hidden_size=32,
    intermediate_size=56,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    rope_theta=10000.0,
    max_position_embeddings=64,
    rms_norm_eps=1e-5,
    num_labels=num_outputs,
    pad_token_id=PAD,
    attn_implementation="eager",
    id2label={i: name for i, name in enumerate(HELPSTEER2_ATTRIBUTES[:num_outputs])} if num_outputs > 1 else None,
  )
  torch.manual_seed(seed)
  model = transformers.LlamaForSequenceClassification(config).eval()
  g = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for _, p in model.named_parameters():
      if p.ndim == 1:
        p.copy_(1.0 + 0.3 * torch.randn(p.shape, generator=g))
      else:
        p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(p.shape[1]))
  return model


@pytest.mark.parametrize("num_outputs", [1, 5])
def test_load_transformers_saved_classifier(tmp_path, num_outputs):
  reference = _random_transformers_classifier(num_outputs, seed=10 + num_outputs)
  folder = str(tmp_path / "hf_rm")
  reference.save_pretrained(folder, safe_serialization=True)
  ids, mask = _batch(80, seed=20 + num_outputs)
  theirs = _theirs(reference, ids, mask)

  expected_labels = ("reward",) if num_outputs == 1 else HELPSTEER2_ATTRIBUTES
  assert reward_labels(folder) == expected_labels
  for scan_layers in (True, False):
    model, _ = load_reward_model(folder, scan_layers=scan_layers, show_progress=False)
    assert model.num_outputs == num_outputs and model.config.scan_layers == scan_layers
    err = float(np.abs(_ours(model, ids, mask) - theirs).max())
    print(
      f"O={num_outputs} scan={scan_layers}: ours vs transformers max|diff| {err:.1e} "
      f"(max|score| {np.abs(theirs).max():.2f})"
    )
    assert err <= TOL


def test_sharded_files_and_sharded_placement(tmp_path):
  model = _random_reward_model(CONFIG, 5, seed=3)
  folder = str(tmp_path / "sharded")
  save_reward_model(model, None, folder, pad_token_id=PAD, max_shard_size="40KB", show_progress=False)
  with open(os.path.join(folder, INDEX_NAME)) as f:
    index = json.load(f)
  assert len(set(index["weight_map"].values())) >= 3 and "score.weight" in index["weight_map"]
  assert "lm_head.weight" not in index["weight_map"]
  score_file = SafetensorsFile(os.path.join(folder, index["weight_map"]["score.weight"]))
  np.testing.assert_array_equal(score_file.read("score.weight"), np.asarray(model.head[...]).T)

  sharding = ShardingContext(make_mesh((2, 2, 2)))
  placed, _ = load_reward_model(folder, sharding=sharding, show_progress=False)
  assert len(placed.trunk.embed[...].sharding.device_set) == 8
  ids, mask = _batch(CONFIG.vocab_size, seed=4)
  err = float(np.abs(_ours(placed, ids, mask) - _ours(model, ids, mask)).max())
  assert err <= 1e-5


def test_reward_model_from_causal_lm(tmp_path):
  abstract = nnx.eval_shape(lambda: Llama(CONFIG, rngs=nnx.Rngs(0)))
  lm = _draw_into(abstract, _fan_in(CONFIG), CONFIG.hidden_size, seed=5)
  folder = str(tmp_path / "lm")
  save_hf_model(lm, folder, show_progress=False)

  with pytest.raises(CheckpointError, match="causal LM.*reward_model_from_causal_lm"):
    load_reward_model(folder, show_progress=False)

  rm, _ = reward_model_from_causal_lm(folder, num_outputs=9, seed=1, show_progress=False)
  assert rm.head[...].shape == (CONFIG.hidden_size, 9)
  head = np.asarray(rm.head[...])
  assert 0.05 < head.std() < 0.3  # about 1 / sqrt(D + 1) = 0.14
  lm_params = _params(lm)
  rm_params = _params(rm)
  trunk = {k: v for k, v in rm_params.items() if k.startswith("['trunk']")}
  assert len(trunk) == len(lm_params) - 1  # everything but the output layer
  for name, value in trunk.items():
    np.testing.assert_array_equal(value, lm_params[name[len("['trunk']") :]], err_msg=name)

  with pytest.raises(CheckpointError, match="reward model already"):
    out = str(tmp_path / "rm")
    save_reward_model(rm, None, out, pad_token_id=PAD, show_progress=False)
    reward_model_from_causal_lm(out, show_progress=False)


def test_save_needs_a_pad_id_and_matching_labels(tmp_path):
  model = _random_reward_model(CONFIG, 2)
  with pytest.raises(ValueError, match="pad_token_id"):
    save_reward_model(model, None, str(tmp_path / "a"), show_progress=False)
  with pytest.raises(ValueError, match="2 distinct names"):
    save_reward_model(model, None, str(tmp_path / "b"), labels=["x"], pad_token_id=PAD, show_progress=False)
  save_reward_model(model, None, str(tmp_path / "c"), labels=["better", "safer"], pad_token_id=PAD, show_progress=False)
  assert reward_labels(str(tmp_path / "c")) == ("better", "safer")


def test_weighted_reward():
  np.testing.assert_allclose(attribute_weights(STEERLM_ATTRIBUTES), STEERLM_REWARD_WEIGHTS)
  np.testing.assert_allclose(attribute_weights(HELPSTEER2_ATTRIBUTES), [0.65, 0.8, 0.45, 0.55, -0.4])
  with pytest.raises(ValueError, match="verbosity"):
    attribute_weights(("helpfulness", "correctness", "coherence", "complexity"))
  # 5 HelpSteer2 attributes, two samples: 0.65*h + 0.8*c + 0.45*co + 0.55*cx - 0.4*v by hand.
  scores = np.array([[4.0, 3.0, 4.0, 2.0, 1.0], [1.0, 0.0, 2.0, 3.0, 4.0]], np.float32)
  expected = [2.6 + 2.4 + 1.8 + 1.1 - 0.4, 0.65 + 0.0 + 0.9 + 1.65 - 1.6]
  np.testing.assert_allclose(weighted_reward(scores, attribute_weights(HELPSTEER2_ATTRIBUTES)), expected, rtol=1e-6)
  nine = np.zeros((1, 9), np.float32)
  nine[0, :4] = 100.0  # quality..creativity carry no weight
  nine[0, 4:] = scores[0]
  np.testing.assert_allclose(weighted_reward(nine, STEERLM_REWARD_WEIGHTS), expected[:1], rtol=1e-6)


def test_tokenizer_travels_with_the_model(tmp_path):
  from helpsteer_jax.checkpoints.tokenizers import load_llama3_tokenizer

  try:
    tokenizer = load_llama3_tokenizer()
  except FileNotFoundError as e:
    pytest.skip(str(e))
  from helpsteer_jax.checkpoints.tokenizers import LLAMA3_VOCAB_SIZE

  # A row for every id of the tokenizer: a tokenizer with more ids than rows is refused at load.
  model = _random_reward_model(dataclasses.replace(CONFIG, vocab_size=LLAMA3_VOCAB_SIZE), 1)
  folder = str(tmp_path / "with_tok")
  save_reward_model(model, tokenizer, folder, show_progress=False)
  with open(os.path.join(folder, "config.json")) as f:
    assert json.load(f)["pad_token_id"] == tokenizer.pad_token_id  # <|finetune_right_pad_id|>
  _, loaded = load_reward_model(folder, show_progress=False)
  assert loaded.pad_token_id == tokenizer.pad_token_id and loaded.chat_template

  # A pad id that ends turns would make transformers score another token: the export pads with
  # another special token instead.
  save_reward_model(
    model, tokenizer, str(tmp_path / "eos_pad"), pad_token_id=tokenizer.eos_token_id, show_progress=False
  )
  with open(os.path.join(tmp_path / "eos_pad", "config.json")) as f:
    written = json.load(f)["pad_token_id"]
  assert written != tokenizer.eos_token_id and written not in stop_token_ids(tokenizer)


def test_export_scores_text_ending_in_the_end_of_turn_token_as_transformers(tmp_path, embedded_gguf_path):
  """SmolLM2 pads with <|im_end|>, which also ends every turn: exported as it is, transformers
  would score the token before a final <|im_end|> (1.524 against -0.602 once)."""
  from helpsteer_jax.checkpoints.gguf_tokenizer import tokenizer_from_gguf

  tokenizer = tokenizer_from_gguf(embedded_gguf_path)
  end_of_turn = tokenizer.convert_tokens_to_ids("<|im_end|>")
  assert tokenizer.pad_token_id == end_of_turn
  config = dataclasses.replace(
    CONFIG, vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id, eos_token_id=(end_of_turn,)
  )
  model = _random_reward_model(config, 1, seed=3)
  folder = tmp_path / "smol_rm"
  save_reward_model(model, tokenizer, str(folder), show_progress=False)
  hf_config = json.loads((folder / "config.json").read_text())
  assert hf_config["pad_token_id"] not in stop_token_ids(tokenizer)
  assert transformers.AutoTokenizer.from_pretrained(folder).pad_token_id == hf_config["pad_token_id"]

  text = tokenizer.apply_chat_template(
    [{"role": "user", "content": "Name a prime."}, {"role": "assistant", "content": "Seven."}], tokenize=False
  )
  ids = tokenizer.encode(text.rstrip(), add_special_tokens=False)
  assert ids[-1] == end_of_turn
  ours = float(model(jnp.asarray([ids], jnp.int32))[0, 0])
  hf = transformers.LlamaForSequenceClassification.from_pretrained(folder, attn_implementation="eager").eval()
  with torch.no_grad():
    theirs = float(hf(torch.tensor([ids])).logits[0, 0])
  assert theirs == pytest.approx(ours, abs=TOL)
