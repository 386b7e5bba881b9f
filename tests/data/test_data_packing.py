"""Packing and batch formats: packed rows hold each example intact with next-token targets and
loss weights inside its own segment; attention built from segment ids never crosses examples;
a tiny Llama gives each packed example the logits it gets alone; padded, pair and regression
batches have the documented keys, shapes and dtypes."""

import numpy as np
import pytest

from helpsteer_jax.data.batching import (
  PackedBatcher,
  PaddedBatcher,
  PairBatcher,
  RegressionBatcher,
  attention_mask,
)
from helpsteer_jax.data.chat_encoding import ChatEncoder
from helpsteer_jax.data.examples import MISSING_LABEL, PAIR_KINDS, BuildStats
from helpsteer_jax.data.helpsteer2 import (
  STEERLM_ATTRIBUTES,
  AttributeConditionedSFTBuilder,
  AttributeRegressionBuilder,
)
from helpsteer_jax.data.helpsteer3 import EditQualityBuilder, FeedbackBuilder, PreferenceBuilder
from helpsteer_jax.testing.helpsteer_rows import helpsteer_rows

# Compiles whole models (seconds a test): outside the smoke suite.
pytestmark = pytest.mark.entry

SEQ_LEN = 2048
PAD = 2


@pytest.fixture(scope="module")
def feedback_examples(bundled_data):
  """The 6 feedback examples of the real feedback row and the SteerLM example of HelpSteer2's."""
  rows = helpsteer_rows(bundled_data, "helpsteer3_feedback")
  examples = FeedbackBuilder()(rows[0], "row", BuildStats())
  return examples + AttributeConditionedSFTBuilder()(
    helpsteer_rows(bundled_data, "helpsteer2_default")[0], "r", BuildStats()
  )


@pytest.fixture(scope="module")
def feedback_tokens(feedback_examples, smol_tokenizer):
  return ChatEncoder(smol_tokenizer, SEQ_LEN).encode_many(feedback_examples)


def _pack(batcher, examples):
  plan = batcher.start()
  placed = 0
  for example in examples:
    if not batcher.add(plan, example):
      break
    placed += 1
  return plan, placed


def test_packed_rows_hold_each_example_intact(feedback_tokens, smol_tokenizer):
  batcher = PackedBatcher(rows=3, seq_len=SEQ_LEN, pad_id=PAD)
  plan, placed = _pack(batcher, feedback_tokens)
  assert placed == len(feedback_tokens) == 7  # 7 examples of 174-982 tokens in 3 rows of 2048
  batch = batcher.build(plan, slice(None))
  assert {k: (v.shape, v.dtype.name) for k, v in batch.items()} == {
    "input_ids": ((3, SEQ_LEN), "int32"),
    "targets": ((3, SEQ_LEN), "int32"),
    "loss_weights": ((3, SEQ_LEN), "float32"),
    "segment_ids": ((3, SEQ_LEN), "int32"),
    "positions": ((3, SEQ_LEN), "int32"),
  }
  seen = []
  for r, row in enumerate(plan.rows):
    seg = batch["segment_ids"][r]
    assert list(np.unique(seg[seg > 0])) == list(range(1, len(row) + 1))
    for s, example in enumerate(row, 1):
      (where,) = np.nonzero(seg == s)
      n = len(example)
      assert where.tolist() == list(range(where[0], where[0] + n))  # contiguous
      assert batch["input_ids"][r, where].tolist() == example.input_ids.tolist()
      assert batch["positions"][r, where].tolist() == list(range(n))
      assert batch["targets"][r, where[:-1]].tolist() == example.input_ids[1:].tolist()
      weights = batch["loss_weights"][r, where]
      assert weights[-1] == 0  # nothing to predict after an example's last token
      assert weights[:-1].tolist() == example.loss_mask[1:].astype(np.float32).tolist()
      # The weighted targets decode to the assistant output and its end-of-turn token.
      learned = batch["targets"][r, where][weights > 0]
      assert smol_tokenizer.decode(learned.tolist()).endswith("<|im_end|>")
      seen.append(example.source)
    pad = seg == 0
    assert (batch["input_ids"][r, pad] == PAD).all() and not batch["loss_weights"][r, pad].any()
    assert not batch["positions"][r, pad].any()
  assert sorted(seen) == sorted(e.source for e in feedback_tokens)
  total_loss_tokens = sum(int(e.loss_mask.sum()) for e in feedback_tokens)
  assert batch["loss_weights"].sum() == total_loss_tokens


def test_packing_stops_at_first_example_that_does_not_fit(feedback_tokens):
  batcher = PackedBatcher(rows=2, seq_len=SEQ_LEN, pad_id=PAD)
  plan, placed = _pack(batcher, feedback_tokens)
  assert placed == 4  # 717+751 | 775+948; 928 fits neither row: it opens the next batch
  assert [len(r) for r in plan.rows] == [2, 2]
  assert batcher.build(plan, slice(1, 2))["input_ids"].shape == (1, SEQ_LEN)
  with pytest.raises(ValueError, match="do not fit a row of 512"):
    PackedBatcher(rows=1, seq_len=512, pad_id=PAD).add(PackedBatcher(1, 512, PAD).start(), feedback_tokens[0])


def test_attention_from_segment_ids_never_crosses_examples(feedback_tokens):
  batcher = PackedBatcher(rows=3, seq_len=SEQ_LEN, pad_id=PAD)
  plan, _ = _pack(batcher, feedback_tokens)
  seg = batcher.build(plan, slice(None))["segment_ids"]
  mask = attention_mask(seg)
  q_seg = np.broadcast_to(seg[:, :, None], mask.shape)
  k_seg = np.broadcast_to(seg[:, None, :], mask.shape)
  assert not (mask & (q_seg != k_seg)).any()  # no query sees another example's key
  assert not (mask & (k_seg == 0)).any()  # nor padding
  # Within an example, exactly its causal triangle.
  for r in range(seg.shape[0]):
    for s in range(1, seg[r].max() + 1):
      idx = np.nonzero(seg[r] == s)[0]
      block = mask[r][np.ix_(idx, idx)]
      assert (block == np.tril(np.ones((len(idx), len(idx)), bool))).all()


def test_packed_logits_equal_each_example_alone(feedback_examples, smol_tokenizer):
  """The model's own segment handling: a packed row's logits per segment == the example run alone."""
  import jax
  import jax.numpy as jnp
  from flax import nnx

  from helpsteer_jax.models.config import get_preset
  from helpsteer_jax.models.llama import Llama

  # SmolLM2's vocabulary, untied head (logits of order 1, so 1e-5 is a tight bound).
  model = Llama(get_preset("tiny", vocab_size=49152, max_position_embeddings=4096), rngs=nnx.Rngs(0))
  graphdef, state = nnx.split(model)

  @jax.jit
  def packed(state, ids, positions, segment_ids):
    return nnx.merge(graphdef, state)(ids, positions=positions, segment_ids=segment_ids)

  @jax.jit
  def alone(state, ids):
    return nnx.merge(graphdef, state)(ids)

  # Real examples cut to 256 tokens (left truncation) and the 181-token SteerLM one: 7 examples
  # in 2 rows of 1024, at offsets 0, 256, 512, 768 and 0, 256, 512; two compiled shapes alone.
  encoder = ChatEncoder(smol_tokenizer, 256, truncation="left")
  examples = encoder.encode_many(feedback_examples)
  assert sorted(len(e) for e in examples) == [181] + [256] * 6
  batcher = PackedBatcher(rows=2, seq_len=1024, pad_id=PAD)
  plan, placed = _pack(batcher, examples)
  assert placed == 7 and [len(r) for r in plan.rows] == [4, 3]
  batch = batcher.build(plan, slice(None))
  logits = np.asarray(
    packed(state, jnp.asarray(batch["input_ids"]), jnp.asarray(batch["positions"]), jnp.asarray(batch["segment_ids"]))
  )
  worst = scale = 0.0
  for r, row in enumerate(plan.rows):
    for s, example in enumerate(row, 1):
      where = np.nonzero(batch["segment_ids"][r] == s)[0]
      single = np.asarray(alone(state, jnp.asarray(example.input_ids[None])))[0]
      worst = max(worst, float(np.abs(logits[r, where[0] : where[-1] + 1] - single).max()))
      scale = max(scale, float(np.abs(single).max()))
  print(f"packed vs alone: max |logit diff| {worst:.2e}, max |logit| {scale:.2f}")
  assert worst < 1e-5, worst


def test_padded_mode_one_example_per_row(feedback_tokens):
  batcher = PaddedBatcher(rows=4, seq_len=1024, pad_id=PAD)
  plan, placed = _pack(batcher, feedback_tokens)
  assert placed == 4 and batcher.is_full(plan)
  batch = batcher.build(plan, slice(None))
  for r, example in enumerate(feedback_tokens[:4]):
    n = len(example)
    assert batch["segment_ids"][r].tolist() == [1] * n + [0] * (1024 - n)
    assert batch["input_ids"][r, :n].tolist() == example.input_ids.tolist()
    assert batch["loss_weights"][r].sum() == example.loss_mask.sum()


def test_pair_and_regression_batches(bundled_data, smol_tokenizer):
  encoder = ChatEncoder(smol_tokenizer, SEQ_LEN)
  pairs = EditQualityBuilder()(helpsteer_rows(bundled_data, "helpsteer3_edit_quality")[0], "r", BuildStats())
  pairs += PreferenceBuilder()(helpsteer_rows(bundled_data, "helpsteer3_preference")[0], "r", BuildStats())
  tokens = encoder.encode_many(pairs)
  batcher = PairBatcher(rows=4, seq_len=SEQ_LEN, pad_id=PAD)
  plan, placed = _pack(batcher, tokens)
  assert placed == 3
  batch = batcher.build(plan, slice(None))
  assert {k: (v.shape, v.dtype.name) for k, v in batch.items()} == {
    "chosen_input_ids": ((4, SEQ_LEN), "int32"),
    "chosen_input_mask": ((4, SEQ_LEN), "bool"),
    "rejected_input_ids": ((4, SEQ_LEN), "int32"),
    "rejected_input_mask": ((4, SEQ_LEN), "bool"),
    "label_magnitude": ((4,), "float32"),
    "pair_kind": ((4,), "int32"),
    "example_mask": ((4,), "float32"),
  }
  assert batch["label_magnitude"].tolist() == [1.0, 1.0, 2.0, 0.0]
  assert [PAIR_KINDS[k] for k in batch["pair_kind"][:3]] == ["bad_edit", "no_edit", "preference"]
  assert batch["example_mask"].tolist() == [1, 1, 1, 0]
  for r, t in enumerate(tokens):
    assert batch["chosen_input_mask"][r].sum() == len(t.chosen)
    assert batch["chosen_input_ids"][r, : len(t.chosen)].tolist() == t.chosen.tolist()
    assert batch["rejected_input_ids"][r, : len(t.rejected)].tolist() == t.rejected.tolist()

  row = helpsteer_rows(bundled_data, "helpsteer2_default")[0]
  reg = encoder.encode_many(AttributeRegressionBuilder(STEERLM_ATTRIBUTES)(row, "r", BuildStats()))
  batcher = RegressionBatcher(rows=2, seq_len=256, pad_id=PAD, num_outputs=9)
  plan, _ = _pack(batcher, reg)
  batch = batcher.build(plan, slice(None))
  assert batch["targets"].shape == (2, 9) and batch["targets"].dtype == np.float32
  assert batch["targets"][0].tolist() == [MISSING_LABEL] * 4 + [3, 4, 4, 2, 1]
  assert (batch["targets"][1] == MISSING_LABEL).all() and batch["example_mask"].tolist() == [1, 0]
  assert batch["input_mask"].dtype == bool and batch["input_mask"][0].sum() == len(reg[0])
