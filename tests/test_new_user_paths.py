"""What a new user meets first: the embedded model by name, an export that stops at the end of a
turn, a clear hint when data fills no batch, the config fields in `--help`, and TRL's
prompt-completion rows."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import helpsteer_jax as hj
from helpsteer_jax.data.chat_messages import ChatMessagesBuilder
from helpsteer_jax.data.examples import BuildStats, RowError
from helpsteer_jax.testing.tiny_models import smollm2_tokenizer

# Compiles whole models (seconds a test): outside the smoke suite.
pytestmark = pytest.mark.entry


def test_load_pretrained_takes_the_embedded_model_by_name(embedded_gguf_path):
  model, tokenizer = hj.load_pretrained("embedded", show_progress=False)
  assert model.config.vocab_size == 49152 and tokenizer.convert_ids_to_tokens(2) == "<|im_end|>"


def test_an_export_of_a_preset_without_eos_stops_at_the_end_of_a_turn(tmp_path):
  from flax import nnx

  from helpsteer_jax.models.config import get_preset
  from helpsteer_jax.models.llama import Llama

  tokenizer = smollm2_tokenizer()
  model = Llama(get_preset("tiny", vocab_size=49152, bos_token_id=1), rngs=nnx.Rngs(0))
  assert not model.config.eos_token_id
  hj.save_pretrained(model, tokenizer, str(tmp_path), show_progress=False)
  end_of_turn = tokenizer.convert_tokens_to_ids("<|im_end|>")
  for name in ("config.json", "generation_config.json"):
    eos = json.loads((tmp_path / name).read_text())["eos_token_id"]
    assert end_of_turn in (eos if isinstance(eos, list) else [eos]), name


@pytest.mark.entry
def test_train_help_lists_the_config_fields():
  out = subprocess.run(
    [sys.executable, "-m", "helpsteer_jax.train", "--help"], capture_output=True, text=True, timeout=120
  )
  assert out.returncode == 0, out.stderr[-2000:]
  assert "config fields (--config.<name>=value), as the default config sets them:" in out.stdout
  for line in ("--config.optim.learning_rate=", "--config.data.batch_size=", "--config.resume='check'"):
    assert line in out.stdout


@pytest.mark.entry
def test_help_lists_the_fields_of_the_config_file_given():
  out = subprocess.run(
    [
      sys.executable,
      "-m",
      "helpsteer_jax.scale",
      "--help",
      "--config=experiments/scaling/smollm2_self_feedback_edit.py",
    ],
    capture_output=True,
    text=True,
    timeout=120,
  )
  assert out.returncode == 0, out.stderr[-2000:]
  assert "as experiments/scaling/smollm2_self_feedback_edit.py sets them" in out.stdout
  assert "--config.search.num_drafts=" in out.stdout


def test_trl_prompt_completion_rows_learn_the_completion():
  build = ChatMessagesBuilder()
  (plain,) = build({"prompt": "Say hi.", "completion": "Hi!"}, "rows.jsonl:1", BuildStats())
  assert plain.messages == ({"role": "user", "content": "Say hi."}, {"role": "assistant", "content": "Hi!"})
  assert plain.loss_turns == (1,)
  row = {
    "prompt": [
      {"role": "system", "content": "Be brief."},
      {"role": "user", "content": "Say hi."},
      {"role": "assistant", "content": "Hello."},
      {"role": "user", "content": "Again."},
    ],
    "completion": [{"role": "assistant", "content": "Hi!"}],
  }
  (chat,) = build(row, "rows.jsonl:2", BuildStats())
  assert len(chat.messages) == 5 and chat.loss_turns == (4,)  # not the earlier assistant turn
  with pytest.raises(RowError, match="both be strings or both be message lists"):
    build({"prompt": "Say hi.", "completion": [{"role": "assistant", "content": "Hi"}]}, "x", BuildStats())


def test_an_epoch_without_a_batch_says_how_to_get_one(tmp_path):
  from helpsteer_jax.data.examples import DataError
  from helpsteer_jax.data.pipeline import default_data_config, make_iterator

  rows = tmp_path / "rows.jsonl"
  rows.write_text(
    "".join(
      json.dumps({"messages": [{"role": "user", "content": f"Q{i}"}, {"role": "assistant", "content": "A"}]}) + "\n"
      for i in range(3)
    )
  )
  config = default_data_config()
  config.dataset, config.path, config.batch_size, config.seq_len = "chat_messages", str(rows), 8, 64
  config.packing, config.drop_remainder = False, True
  iterator = make_iterator(config, smollm2_tokenizer(), process_index=0, process_count=1)
  with pytest.raises(
    DataError,
    match=r"gave no batch.*--config.data.drop_remainder=False, or lower "
    r"--config.data.batch_size",
  ):
    next(iter(iterator))
