"""The SteerLM loop's annotation step: an attribute model labels rows that attribute-conditioned
SFT then reads; multi-attribute models select with the weighted reward."""

import json

import numpy as np
import pytest
from flax import nnx

from helpsteer_jax.annotate import annotate
from helpsteer_jax.checkpoints.gguf_tokenizer import tokenizer_from_gguf
from helpsteer_jax.checkpoints.reward import HELPSTEER2_WEIGHTS, attribute_weights, load_reward_model, save_reward_model
from helpsteer_jax.data.helpsteer2 import STEERLM_ATTRIBUTES
from helpsteer_jax.models.config import get_preset
from helpsteer_jax.models.heads import RewardModel
from helpsteer_jax.scoring.selectors import RewardModelSelector


@pytest.fixture(scope="module")
def attribute_model(tmp_path_factory, embedded_gguf_path):
  folder = tmp_path_factory.mktemp("attr") / "model"
  rm = RewardModel(get_preset("tiny", vocab_size=49152, max_position_embeddings=4096), 9, rngs=nnx.Rngs(1))
  save_reward_model(
    rm, tokenizer_from_gguf(embedded_gguf_path), str(folder), labels=STEERLM_ATTRIBUTES, show_progress=False
  )
  return str(folder)


def test_annotated_rows_feed_attribute_conditioned_sft(tmp_path, attribute_model, bundled_data):
  source = bundled_data / "helpsteer" / "helpsteer2_default.jsonl"
  stripped = tmp_path / "rows.jsonl"  # the rows without their human labels
  with open(source) as f, open(stripped, "w") as out:
    for line in f:
      row = json.loads(line)
      out.write(json.dumps({"prompt": row["prompt"], "response": row["response"]}) + "\n")
  output = tmp_path / "annotated.jsonl"
  assert annotate(attribute_model, str(stripped), str(output), batch_size=4) >= 1
  rows = [json.loads(l) for l in output.read_text().splitlines()]
  for row in rows:
    assert set(STEERLM_ATTRIBUTES) <= set(row)
    assert all(isinstance(row[a], int) and 0 <= row[a] <= 4 for a in STEERLM_ATTRIBUTES)
  assert annotate(attribute_model, str(stripped), str(output)) == 0  # resumed: nothing left to do

  from helpsteer_jax.data.pipeline import default_data_config, load_examples

  config = default_data_config()
  config.dataset = "helpsteer2_steerlm_sft"
  config.path = str(output)
  examples, _ = load_examples(config)
  system = examples[0].messages[0]
  assert system["role"] == "system" and f"helpfulness:{rows[0]['helpfulness']}" in system["content"]


def test_multi_attribute_selector_uses_the_weighted_reward(attribute_model):
  model, tokenizer = load_reward_model(attribute_model)
  with pytest.raises(ValueError, match="9 outputs"):
    RewardModelSelector(model, tokenizer)
  weights = attribute_weights(STEERLM_ATTRIBUTES, HELPSTEER2_WEIGHTS)
  selector = RewardModelSelector(model, tokenizer, weights=weights)
  items = [([{"role": "user", "content": "Hi"}], "Hello!"), ([{"role": "user", "content": "2+2?"}], "4")]
  np.testing.assert_allclose(selector.score(items), selector.score_all(items) @ weights, rtol=1e-6)
