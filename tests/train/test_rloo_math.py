"""RLOO arithmetic against numbers worked out by hand (and numpy where noted)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpsteer_jax.train.rloo_math import (
  apply_unfinished_rule,
  chunked_token_log_probs,
  copied,
  copy_rate,
  kl_penalized_rewards,
  kl_per_token,
  leave_one_out_advantages,
  masked_token_mean,
  policy_gradient_loss,
  policy_gradient_terms,
  rloo_advantages,
  rule_advantages,
  sequence_kl,
  token_log_probs,
)

# Compiles whole models (seconds a test): outside the smoke suite.
pytestmark = pytest.mark.entry


def test_token_log_probs():
  logits = jnp.array([[[0.0, 1.0, 2.0], [1.0, 1.0, 1.0]]])  # [1, 2, 3]
  tokens = jnp.array([[2, 0]])
  # log(e^0 + e^1 + e^2) = 2.40760596, so 2 - 2.40760596; uniform over 3: -log 3.
  np.testing.assert_allclose(token_log_probs(logits, tokens), [[-0.40760596, -1.09861229]], rtol=1e-6)
  # bf16 logits: the result is fp32 of the bf16 values.
  out = token_log_probs(logits.astype(jnp.bfloat16), tokens)
  assert out.dtype == jnp.float32
  np.testing.assert_allclose(out, [[-0.40760596, -1.09861229]], rtol=1e-6)

  # Random logits against numpy's log-softmax.
  rng = np.random.default_rng(0)
  x = rng.standard_normal((2, 5, 7)).astype(np.float32) * 3
  t = rng.integers(0, 7, (2, 5))
  shifted = x - x.max(-1, keepdims=True)
  ref = np.take_along_axis(shifted - np.log(np.exp(shifted).sum(-1, keepdims=True)), t[..., None], -1)[..., 0]
  np.testing.assert_allclose(jax.jit(token_log_probs)(x, t), ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("chunk", [4, 5, 16])
def test_chunked_token_log_probs_matches_and_differentiates(chunk):
  rng = np.random.default_rng(1)
  hidden = jnp.asarray(rng.standard_normal((2, 11, 6)), jnp.float32)  # T = 11: a ragged last chunk
  w = jnp.asarray(rng.standard_normal((6, 13)), jnp.float32)
  tokens = jnp.asarray(rng.integers(0, 13, (2, 11)))
  mask = jnp.asarray(rng.random((2, 11)) > 0.3, jnp.float32)

  def full(w, h):
    return jnp.sum(token_log_probs(h @ w, tokens) * mask)

  def chunked(w, h):
    return jnp.sum(chunked_token_log_probs(h, tokens, lambda x: x @ w, chunk_size=chunk) * mask)

  np.testing.assert_allclose(
    chunked_token_log_probs(hidden, tokens, lambda x: x @ w, chunk),
    token_log_probs(hidden @ w, tokens),
    rtol=1e-5,
    atol=1e-6,
  )
  g_full = jax.grad(full, argnums=(0, 1))(w, hidden)
  g_chunk = jax.jit(jax.grad(chunked, argnums=(0, 1)))(w, hidden)
  for a, b in zip(g_chunk, g_full):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


LOGP = jnp.array([[-1.0, -2.0, -0.2]])
REF = jnp.array([[-1.5, -1.0, -0.2]])  # log pi - log pi_ref = [0.5, -1, 0]


def test_kl_estimators():
  np.testing.assert_allclose(kl_per_token(LOGP, REF, "abs"), [[0.5, 1.0, 0.0]])
  np.testing.assert_allclose(kl_per_token(LOGP, REF, "k1"), [[0.5, -1.0, 0.0]])
  # log r = log pi_ref - log pi = [-0.5, 1, 0]; (r - 1) - log r:
  # e^-0.5 - 1 + 0.5 = 0.10653066, e - 1 - 1 = 0.71828183, 0.
  np.testing.assert_allclose(kl_per_token(LOGP, REF, "k3"), [[0.10653066, 0.71828183, 0.0]], rtol=1e-6, atol=1e-8)
  np.testing.assert_allclose(np.exp(-0.5) - 0.5, 0.10653066, rtol=1e-7)  # the constant, by numpy
  with pytest.raises(ValueError, match="expected one of"):
    kl_per_token(LOGP, REF, "k2")


def test_sequence_kl_is_the_token_mean_over_the_mask():
  logp = jnp.concatenate([LOGP, LOGP])
  ref = jnp.concatenate([REF, REF])
  mask = jnp.array([[1, 1, 0], [1, 0, 0]])
  np.testing.assert_allclose(sequence_kl(logp, ref, mask, "abs"), [0.75, 0.5])  # (0.5 + 1) / 2, 0.5
  np.testing.assert_allclose(sequence_kl(logp, ref, mask, "k1"), [-0.25, 0.5])
  np.testing.assert_allclose(sequence_kl(logp, ref, mask, "k3"), [(0.10653066 + 0.71828183) / 2, 0.10653066], rtol=1e-6)
  np.testing.assert_allclose(masked_token_mean(logp, jnp.zeros((2, 3))), [0.0, 0.0])  # empty: 0


def test_kl_penalized_rewards():
  # RM [1, 2], KL [0.5, 1], beta 0.1 -> [0.95, 1.9]; no gradient flows into the KL.
  np.testing.assert_allclose(
    kl_penalized_rewards(jnp.array([1.0, 2.0]), jnp.array([0.5, 1.0]), 0.1), [0.95, 1.9], rtol=1e-6
  )
  grad = jax.grad(lambda kl: jnp.sum(kl_penalized_rewards(jnp.ones(2), kl, 0.1)))(jnp.ones(2))
  np.testing.assert_array_equal(grad, [0.0, 0.0])


REWARDS = jnp.array([[1.0, 2.0, 3.0, 6.0], [0.5, 0.5, 0.5, 0.5]])


def test_leave_one_out():
  # Row 0: the others' means are 11/3, 10/3, 3, 2 -> A = [-8/3, -4/3, 0, 4] (they sum to 0).
  # Row 1: equal rewards -> 0.
  adv = jax.jit(leave_one_out_advantages)(REWARDS)
  np.testing.assert_allclose(adv, [[-8 / 3, -4 / 3, 0.0, 4.0], [0.0, 0.0, 0.0, 0.0]], rtol=1e-6, atol=1e-6)
  # Same as k / (k - 1) * (r_i - mean r), by numpy.
  r = np.asarray(REWARDS)
  np.testing.assert_allclose(adv, 4 / 3 * (r - r.mean(1, keepdims=True)), rtol=1e-6, atol=1e-7)


def test_drop_rule():
  finished = jnp.array([[True, True, False, True], [True, False, False, False]])
  rewards, valid = apply_unfinished_rule(REWARDS, finished, "drop")
  np.testing.assert_array_equal(valid, finished)
  np.testing.assert_allclose(rewards, REWARDS)
  # Row 0 without sample 2: A0 = 1 - (2 + 6) / 2 = -3, A1 = 2 - (1 + 6) / 2 = -1.5, A3 = 6 - 1.5.
  # Row 1: one valid sample has no baseline -> 0.
  adv = leave_one_out_advantages(rewards, valid)
  np.testing.assert_allclose(adv, [[-3.0, -1.5, 0.0, 4.5], [0.0, 0.0, 0.0, 0.0]], rtol=1e-6, atol=1e-6)


def test_penalize_rule():
  finished = jnp.array([[True, True, False, True], [True, True, True, True]])
  rewards, valid = apply_unfinished_rule(REWARDS, finished, "penalize", penalty=-1.0)
  assert bool(jnp.all(valid))
  np.testing.assert_allclose(rewards[0], [1.0, 2.0, -1.0, 6.0])
  # [1, 2, -1, 6]: others' means 7/3, 6/3, 9/3, 2/3 -> A = [-4/3, 0, -4, 16/3].
  np.testing.assert_allclose(
    leave_one_out_advantages(rewards, valid)[0], [-4 / 3, 0.0, -4.0, 16 / 3], rtol=1e-6, atol=1e-6
  )
  with pytest.raises(ValueError, match="never end"):
    apply_unfinished_rule(REWARDS, finished, "ignore")


def test_exclude_from_baseline_rule_as_nemo_aligner():
  """NeMo-Aligner's rule, the default: samples that never end leave the baselines, stay in the loss."""
  finished = jnp.array([[True, True, False, True], [True, False, False, False]])
  adv, rewards, in_loss = jax.jit(rule_advantages, static_argnames="rule")(
    REWARDS, finished, rule="exclude_from_baseline"
  )
  # Row 0 [1, 2, 3, 6], finished {0, 1, 3}: the finished sum 9 over n - 1 = 2 others.
  #   A0 = 1 - (2 + 6) / 2 = -3, A1 = 2 - (1 + 6) / 2 = -1.5, A3 = 6 - (1 + 2) / 2 = 4.5;
  #   unfinished sample 2: baseline 9 / 2 (NeMo-Aligner's divisor), A2 = 3 - 4.5 = -1.5.
  # Row 1: one finished sample, no baseline: every baseline is the sample's reward, A = 0.
  np.testing.assert_allclose(adv, [[-3.0, -1.5, -1.5, 4.5], [0.0, 0.0, 0.0, 0.0]], rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(rewards, REWARDS)
  assert bool(jnp.all(in_loss)), "every sample stays in the policy loss"
  # The rule's advantages reach the loss: the unfinished sample's tokens weigh in with A2.
  logp = jnp.array([[-1.0, -2.0], [-1.0, -1.0], [-3.0, -1.0], [-1.0, -1.0]])
  mask = jnp.ones((4, 2))
  loss = policy_gradient_loss(logp, adv[0], mask, in_loss[0])
  by_hand = -(-3.0 * -3.0 + -1.5 * -2.0 + -1.5 * -4.0 + 4.5 * -2.0) / 8
  np.testing.assert_allclose(loss, by_hand, rtol=1e-6)
  # Against "drop": the same baselines for the finished samples, the unfinished one left out.
  dropped, _, valid = rule_advantages(REWARDS, finished, "drop")
  np.testing.assert_allclose(dropped[0], [-3.0, -1.5, 0.0, 4.5], rtol=1e-6, atol=1e-6)
  assert not bool(valid[0, 2])


def test_rloo_advantages_end_to_end():
  rm = jnp.array([[1.0, 2.0, 3.0]])
  kl = jnp.array([[0.0, 10.0, 0.0]])
  finished = jnp.array([[True, True, False]])
  # beta 0.1: r' = [1, 1, 3]; drop the unfinished third -> A = [1 - 1, 1 - 1, 0] = 0.
  adv, rewards, valid = rloo_advantages(rm, kl, finished, beta=0.1, unfinished_rule="drop")
  np.testing.assert_allclose(rewards, [[1.0, 1.0, 3.0]], rtol=1e-6)
  np.testing.assert_allclose(adv, [[0.0, 0.0, 0.0]], atol=1e-6)
  np.testing.assert_array_equal(valid, finished)
  # Penalize with -2: r' = [1, 1, -2] -> A = [1 - (-0.5), 1.5, -2 - 1] = [1.5, 1.5, -3].
  adv, rewards, _ = rloo_advantages(rm, kl, finished, 0.1, "penalize", penalty=-2.0)
  np.testing.assert_allclose(adv, [[1.5, 1.5, -3.0]], rtol=1e-6)


def test_policy_gradient_loss():
  logp = jnp.array([[-1.0, -2.0, -3.0], [-0.5, -0.5, 0.0]])
  mask = jnp.array([[1, 1, 0], [1, 1, 1]])
  adv = jnp.array([2.0, -1.0])
  # sum A m log pi = 2 (-1 - 2) - (-0.5 - 0.5 + 0) = -5 over 5 tokens -> loss 1.
  np.testing.assert_allclose(jax.jit(policy_gradient_loss)(logp, adv, mask), 1.0, rtol=1e-6)
  # The second sample dropped: -(2 (-3)) / 2 = 3.
  np.testing.assert_allclose(policy_gradient_loss(logp, adv, mask, jnp.array([True, False])), 3.0, rtol=1e-6)
  # d loss / d log pi = -A_i m / 5; advantages are constants.
  grad = jax.grad(policy_gradient_loss)(logp, adv, mask)
  np.testing.assert_allclose(grad, [[-0.4, -0.4, 0.0], [0.2, 0.2, 0.2]], rtol=1e-6)
  np.testing.assert_array_equal(jax.grad(policy_gradient_loss, argnums=1)(logp, adv, mask), [0.0, 0.0])
  # Nothing valid: 0, not NaN.
  assert float(policy_gradient_loss(logp, adv, mask, jnp.array([False, False]))) == 0.0


def test_copy_rate():
  assert copy_rate(["same answer ", "changed", "x"], ["same answer", "original", "x"]) == pytest.approx(2 / 3)
  assert copy_rate(["a "], ["a"], strip=False) == 0.0
  assert copy_rate([[1, 2, 3], [4, 5]], [np.array([1, 2, 3]), [4, 5, 6]]) == 0.5
  assert copy_rate([], []) == 0.0
  with pytest.raises(ValueError, match="2 edits for 1"):
    copy_rate(["a", "b"], ["a"])

  edit = jnp.array([[1, 2, 3, 0], [1, 2, 0, 0], [1, 2, 9, 0]])
  edit_mask = jnp.array([[1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 0]], bool)
  orig = jnp.array([[1, 2, 3, 7], [1, 2, 3, 0], [1, 2, 3, 0]])  # pad values differ in row 0
  orig_mask = jnp.array([[1, 1, 1, 0], [1, 1, 1, 0], [1, 1, 1, 0]], bool)
  np.testing.assert_array_equal(copied(edit, edit_mask, orig, orig_mask), [True, False, False])


def test_policy_gradient_terms_accumulate_exactly():
  """The (sum, weight) the trainer's loss returns: micro-batch sums over their total weight are
  the loss of the whole batch, whatever the micro-batches' token counts."""
  rng = np.random.default_rng(0)
  logp = jnp.asarray(-rng.random((4, 6)), jnp.float32)
  adv = jnp.asarray([1.5, -0.5, 0.25, 2.0], jnp.float32)
  mask = jnp.asarray(rng.random((4, 6)) < 0.6)
  valid = jnp.asarray([True, True, False, True])
  total, weight = policy_gradient_terms(logp, adv, mask, valid)
  want = -sum(float(adv[i]) * float(logp[i, t]) for i in range(4) for t in range(6) if mask[i, t] and valid[i])
  assert float(total) == pytest.approx(want, rel=1e-6)
  assert float(weight) == float(jnp.sum(mask[jnp.asarray(valid)]))
  halves = [policy_gradient_terms(logp[s], adv[s], mask[s], valid[s]) for s in (slice(0, 1), slice(1, 4))]
  accumulated = sum(float(t) for t, _ in halves) / sum(float(w) for _, w in halves)
  assert accumulated == pytest.approx(float(policy_gradient_loss(logp, adv, mask, valid)), rel=1e-6)
