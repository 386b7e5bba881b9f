"""Deterministic iteration: a saved state resumes with identical batches (also across epochs and
process counts), seeded per-epoch shuffling covers every example once, process shards partition
the global batch, and the config entry point reports its counts."""

import collections

import numpy as np
import pytest

from helpsteer_jax.data.batching import PackedBatcher, PaddedBatcher
from helpsteer_jax.data.chat_encoding import ChatEncoder
from helpsteer_jax.data.examples import BuildStats, DataError
from helpsteer_jax.data.helpsteer2 import AttributeConditionedSFTBuilder
from helpsteer_jax.data.helpsteer3 import EditBuilder, FeedbackBuilder
from helpsteer_jax.data.iterator import DataIterator, epoch_order
from helpsteer_jax.data.pipeline import default_data_config, make_iterator
from helpsteer_jax.testing.helpsteer_rows import helpsteer_file, helpsteer_rows

# Compiles whole models (seconds a test): outside the smoke suite.
pytestmark = pytest.mark.entry

SEQ_LEN = 2048


@pytest.fixture(scope="module")
def examples(bundled_data):
  """13 real SFT examples: 6 feedback, 6 edit orders, 1 SteerLM."""
  stats = BuildStats()
  out = FeedbackBuilder()(helpsteer_rows(bundled_data, "helpsteer3_feedback")[0], "f", stats)
  out += EditBuilder()(helpsteer_rows(bundled_data, "helpsteer3_edit")[0], "e", stats)
  out += AttributeConditionedSFTBuilder()(helpsteer_rows(bundled_data, "helpsteer2_default")[0], "s", stats)
  return out


def _iterator(examples, tokenizer, *, rows=2, packed=True, process_index=0, process_count=1, **kw):
  encoder = ChatEncoder(tokenizer, 1024, truncation="left")  # edits (3880 tokens) cut to 1024
  cls = PackedBatcher if packed else PaddedBatcher
  return DataIterator(
    examples,
    encoder,
    cls(rows, SEQ_LEN if packed else 1024, 2),
    process_index=process_index,
    process_count=process_count,
    lookahead=4,
    **kw,
  )


def _take(iterator, n):
  batches, states = [], []
  for _ in range(n):
    batches.append(next(iterator))
    states.append(iterator.get_state())
  return batches, states


def _same(a, b):
  return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_resume_gives_identical_batches(examples, smol_tokenizer):
  reference, states = _take(_iterator(examples, smol_tokenizer, seed=3), 12)
  epochs = [s["epoch"] for s in states]
  assert epochs[0] == 0 and epochs[-1] >= 2  # the run crosses epoch boundaries
  for k in (0, 3, 5, 8):
    resumed = _iterator(examples, smol_tokenizer, seed=0)  # the seed comes from the state
    resumed.set_state(dict(states[k]))
    again, again_states = _take(resumed, len(reference) - k - 1)
    assert all(_same(x, y) for x, y in zip(again, reference[k + 1 :]))
    assert again_states == states[k + 1 :]
  assert set(states[0]) == {"epoch", "position", "seed", "num_examples"}
  assert all(isinstance(v, int) for v in states[0].values())


def test_state_from_other_data_is_rejected(examples, smol_tokenizer):
  it = _iterator(examples, smol_tokenizer)
  next(it)
  other = _iterator(examples[:-1], smol_tokenizer)
  with pytest.raises(ValueError, match="saved over 13 examples; this data has 12"):
    other.set_state(it.get_state())
  with pytest.raises(ValueError, match="lacks"):
    other.set_state({"epoch": 0})


def test_epochs_shuffle_deterministically_and_cover_every_example(examples, smol_tokenizer):
  assert (epoch_order(13, 0, 0) == epoch_order(13, 0, 0)).all()
  orders = {tuple(epoch_order(13, seed, epoch)) for seed in (0, 1) for epoch in (0, 1)}
  assert len(orders) == 4
  assert sorted(epoch_order(13, 5, 7)) == list(range(13))
  # One example per row, one epoch, remainder kept: every example exactly once.
  it = _iterator(examples, smol_tokenizer, rows=4, packed=False, num_epochs=1, drop_remainder=False)
  batches = list(it)
  assert len(batches) == 4  # 13 examples in rows of 4: the last batch has 1 real row
  assert (batches[-1]["segment_ids"][1:] == 0).all()
  encoder = ChatEncoder(smol_tokenizer, 1024, truncation="left")
  expected = collections.Counter(e.input_ids.tobytes() for e in encoder.encode_many(examples))
  seen = collections.Counter(
    row["input_ids"][row["segment_ids"] > 0].astype(np.int32).tobytes()
    for batch in batches
    for row in ({"input_ids": i, "segment_ids": s} for i, s in zip(batch["input_ids"], batch["segment_ids"]))
    if row["segment_ids"].any()
  )
  assert seen == expected
  assert it.get_state()["epoch"] == 1
  with pytest.raises(StopIteration):
    next(it)
  unshuffled = _iterator(examples, smol_tokenizer, rows=4, packed=False, num_epochs=1, shuffle=False)
  first = next(unshuffled)
  assert first["input_ids"][0, :50].tolist() == encoder.encode(examples[0]).input_ids[:50].tolist()


def test_process_shards_partition_the_global_batch(examples, smol_tokenizer):
  whole, _ = _take(_iterator(examples, smol_tokenizer, rows=4, seed=1), 6)
  shards = [
    _take(_iterator(examples, smol_tokenizer, rows=4, seed=1, process_index=p, process_count=2), 6) for p in range(2)
  ]
  assert shards[0][1] == shards[1][1]  # every process holds the same state
  for step, batch in enumerate(whole):
    parts = [shards[p][0][step] for p in range(2)]
    assert parts[0]["input_ids"].shape == (2, SEQ_LEN)
    for key in batch:
      assert np.array_equal(np.concatenate([p[key] for p in parts]), batch[key])
  # A run saved on 2 processes resumes on 1 with the same global batches.
  resumed = _iterator(examples, smol_tokenizer, rows=4)
  resumed.set_state(shards[0][1][2])
  assert all(_same(next(resumed), whole[k]) for k in (3, 4, 5))
  with pytest.raises(ValueError, match="does not split evenly"):
    _iterator(examples, smol_tokenizer, rows=3, process_count=2)


def test_no_batch_possible_is_an_error(examples, smol_tokenizer):
  it = _iterator(examples[:2], smol_tokenizer, rows=4, packed=False)  # 2 examples, batches of 4
  with pytest.raises(DataError, match="fill less than one batch"):
    next(it)


def test_make_iterator_from_config(tmp_path, bundled_data, smol_tokenizer):
  good = helpsteer_file(bundled_data, "helpsteer3_edit").read_text().strip()
  path = tmp_path / "edit.jsonl"
  path.write_text("\n".join([good, '{"context": "not a list"}', good]) + "\n")
  config = default_data_config()
  config.dataset = "helpsteer3_edit"
  config.path = str(path)
  config.on_error = "skip"
  config.seq_len = 2048
  config.max_length = 1024
  config.truncation = "left"
  config.batch_size = 4
  config.lock()
  it = make_iterator(config, smol_tokenizer, process_index=1, process_count=2)
  batch = next(it)
  assert batch["input_ids"].shape == (2, 2048)
  counts = it.stats.counts
  assert counts["rows_read"] == 3 and counts["skipped/malformed_row"] == 1
  assert counts["examples_built"] == 12 and counts["truncated_left"] >= 1
  assert f"{path}:2: field 'context' must be a non-empty list" in it.stats.summary()
  with pytest.raises(AttributeError):
    config.seq_length = 10  # a misspelled override fails on the locked config
