"""Checkpoints in and out never destroy or mix intact work, and a mismatched tokenizer is refused
at load: `convert` into a folder holding files, and a tokenizer with more ids than the model's
embedding rows."""

from __future__ import annotations

import json

import pytest

import helpsteer_jax as hj
from helpsteer_jax.checkpoints.safetensors_io import CheckpointError
from helpsteer_jax.convert import DestinationNotEmpty, convert_checkpoint
from helpsteer_jax.testing.tiny_models import smollm2_tokenizer, tiny_chat_model

# Compiles whole models (seconds a test): outside the smoke suite.
pytestmark = pytest.mark.entry


def _sharded_export(folder) -> None:
  """An old export in two shards, as `save_pretrained(max_shard_size=...)` leaves it."""
  hj.save_pretrained(
    tiny_chat_model(seed=3), smollm2_tokenizer(), str(folder), show_progress=False, max_shard_size="2MB"
  )
  assert (folder / "model.safetensors.index.json").is_file()


def test_convert_refuses_a_folder_that_holds_files_before_loading(model_dir, tmp_path, monkeypatch):
  dst = tmp_path / "export"
  _sharded_export(dst)
  before = sorted(p.name for p in dst.iterdir())
  monkeypatch.setattr(hj, "load_pretrained", lambda *a, **k: pytest.fail("loaded before the check"))
  with pytest.raises(DestinationNotEmpty, match=rf"{dst} already holds files .* pass --overwrite"):
    convert_checkpoint(model_dir, str(dst))
  assert sorted(p.name for p in dst.iterdir()) == before


def test_convert_overwrite_replaces_the_old_export_whole(model_dir, tmp_path):
  import numpy as np

  dst = tmp_path / "export"
  _sharded_export(dst)
  (tmp_path / ".export.partial-999").mkdir()  # left by a conversion killed before its rename
  convert_checkpoint(model_dir, str(dst), overwrite=True)
  names = sorted(p.name for p in dst.iterdir())
  assert "model.safetensors.index.json" not in names and "model.safetensors" in names
  assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]  # no partial or old folder left
  new, _ = hj.load_pretrained(str(dst), show_progress=False)
  src, _ = hj.load_pretrained(model_dir, show_progress=False)
  np.testing.assert_array_equal(np.asarray(new.embed[...]), np.asarray(src.embed[...]))


def test_convert_into_a_new_folder_needs_no_flag(model_dir, tmp_path):
  convert_checkpoint(model_dir, str(tmp_path / "fresh" / "export"))
  assert (tmp_path / "fresh" / "export" / "config.json").is_file()


def test_a_tokenizer_with_more_ids_than_embedding_rows_is_refused_at_load(model_dir, tmp_path):
  from flax import nnx

  from helpsteer_jax.models.config import get_preset
  from helpsteer_jax.models.llama import Llama

  folder = tmp_path / "mismatched"  # a 1,000-row model saved with SmolLM2's 49,152-id tokenizer
  small = Llama(get_preset("tiny", vocab_size=1000, bos_token_id=1, eos_token_id=(2,)), rngs=nnx.Rngs(0))
  hj.save_pretrained(small, smollm2_tokenizer(), str(folder), show_progress=False)
  assert json.loads((folder / "config.json").read_text())["vocab_size"] == 1000
  with pytest.raises(
    CheckpointError,
    match=r"the tokenizer has 49152 ids but the model's embedding "
    r"has 1000 rows .* ids 1000 to 49151 have no row",
  ):
    hj.load_pretrained(str(folder), show_progress=False)
  from helpsteer_jax.checkpoints.model_pool import ModelPool

  with pytest.raises(CheckpointError, match="has 1000 rows"):  # the staged search's tokenizer-only read
    ModelPool().tokenizer(str(folder))
