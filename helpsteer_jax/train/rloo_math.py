"""The arithmetic of RLOO (REINFORCE leave-one-out) for the Edit model (pure jax).

Per sample i of the k samples drawn for one prompt:
  r'_i = RM_i - beta * KL_i                       (KL_i: token mean of an estimator over the response)
  A_i  = r'_i - mean_{j != i} r'_j                (leave-one-out baseline)
  loss = -mean_tokens(A_i * log pi(y_i,t))        (over every response token of the batch)
Samples that never end (no end-of-turn token) follow a rule:
  "exclude_from_baseline" (the default; NeMo-Aligner's REINFORCE, `calculate_rloo_baseline(...,
      mask=is_end)`): they leave every leave-one-out baseline but stay in the policy loss with
      their own advantage, so the policy is pushed away from rambling without rambling samples
      distorting the other samples' baselines;
  "drop": removed from both the baselines and the loss;
  "penalize": their reward r' becomes a fixed penalty, and they count everywhere.

Shapes: B samples (B = P * k when grouped [P, k] by prompt), T response positions, V vocabulary,
D model width. Log-probabilities are fp32.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

KL_ESTIMATORS = ("abs", "k1", "k3")
UNFINISHED_RULES = ("exclude_from_baseline", "drop", "penalize")


# ---------------------------------------------------------------------------------------------
# Log-probabilities of given tokens


def token_log_probs(logits: jax.Array, tokens: jax.Array) -> jax.Array:
  """logits [B, T, V], tokens [B, T] -> log softmax(logits)[tokens] [B, T] (fp32).

  Computed as the gathered logit minus the logsumexp over V, so no log-softmax [B, T, V] is
  materialised next to the logits (the fp32 upcast and the exp fuse into the reduction).
  """
  picked = jnp.take_along_axis(logits, tokens[..., None].astype(jnp.int32), axis=-1)[..., 0]
  return picked.astype(jnp.float32) - jax.nn.logsumexp(logits.astype(jnp.float32), axis=-1)


def chunked_token_log_probs(
  hidden: jax.Array,  # [B, T, D] final hidden states
  tokens: jax.Array,  # [B, T]
  logits_fn: Callable[[jax.Array], jax.Array],  # [B, C, D] -> [B, C, V], e.g. Llama.logits
  chunk_size: int = 256,
) -> jax.Array:
  """`token_log_probs(logits_fn(hidden), tokens)` [B, T] without logits [B, T, V] in memory.

  The positions are processed C = `chunk_size` at a time, and each chunk is rematerialised in the
  backward pass, so forward and backward hold logits of one chunk [B, C, V] at a time.
  """
  b, t, d = hidden.shape
  c = min(chunk_size, t)
  n = -(-t // c)
  pad = n * c - t
  if pad:
    hidden = jnp.pad(hidden, ((0, 0), (0, pad), (0, 0)))
    tokens = jnp.pad(tokens, ((0, 0), (0, pad)))
  hs = hidden.reshape(b, n, c, d).transpose(1, 0, 2, 3)  # [n, B, C, D]
  ts = tokens.reshape(b, n, c).transpose(1, 0, 2)  # [n, B, C]

  @jax.checkpoint
  def chunk(args):
    h, tok = args
    return token_log_probs(logits_fn(h), tok)

  out = jax.lax.map(chunk, (hs, ts))  # [n, B, C]
  return out.transpose(1, 0, 2).reshape(b, n * c)[:, :t]


# ---------------------------------------------------------------------------------------------
# KL between the policy and the frozen reference


def kl_per_token(logp: jax.Array, ref_logp: jax.Array, estimator: str = "abs") -> jax.Array:
  """Per-token KL estimate [B, T] from log pi [B, T] and log pi_ref [B, T] of the sampled tokens.

  abs: |log pi - log pi_ref|   (as NeMo-Aligner; never negative)
  k1:  log pi - log pi_ref     (unbiased, can be negative per token)
  k3:  (r - 1) - log r with r = pi_ref / pi   (unbiased and never negative)
  """
  diff = logp.astype(jnp.float32) - ref_logp.astype(jnp.float32)
  if estimator == "abs":
    return jnp.abs(diff)
  if estimator == "k1":
    return diff
  if estimator == "k3":
    log_r = -diff
    return jnp.expm1(log_r) - log_r
  raise ValueError(f"KL estimator {estimator!r}; expected one of {KL_ESTIMATORS}")


def masked_token_mean(values: jax.Array, mask: jax.Array) -> jax.Array:
  """values [B, T], mask [B, T] -> per-row mean over the masked positions [B] (0 for none)."""
  mask = mask.astype(jnp.float32)
  count = jnp.sum(mask, axis=-1)
  total = jnp.sum(jnp.where(mask > 0, values.astype(jnp.float32), 0.0), axis=-1)
  return jnp.where(count > 0, total / jnp.where(count > 0, count, 1.0), 0.0)


def sequence_kl(logp: jax.Array, ref_logp: jax.Array, mask: jax.Array, estimator: str = "abs") -> jax.Array:
  """Sequence-level KL [B]: the token mean of `kl_per_token` over the response mask [B, T]."""
  return masked_token_mean(kl_per_token(logp, ref_logp, estimator), mask)


def kl_penalized_rewards(rm_scores: jax.Array, seq_kl: jax.Array, beta: float) -> jax.Array:
  """r' = RM - beta * KL, all [B] (or [P, k]); the KL term carries no gradient."""
  return rm_scores.astype(jnp.float32) - beta * jax.lax.stop_gradient(seq_kl.astype(jnp.float32))


# ---------------------------------------------------------------------------------------------
# Samples that never end, leave-one-out advantages


def apply_unfinished_rule(
  rewards: jax.Array, finished: jax.Array, rule: str, penalty: float = 0.0
) -> tuple[jax.Array, jax.Array]:
  """rewards r' and finished flags of the same shape -> (rewards, valid).

  "drop": rewards unchanged, valid = finished (the caller's baselines and loss skip the rest).
  "penalize": an unfinished sample's reward becomes `penalty` (KL term included), all valid.
  "exclude_from_baseline" is not a per-sample change of reward: see `rule_advantages`.
  """
  finished = finished.astype(bool)
  if rule == "drop":
    return rewards.astype(jnp.float32), finished
  if rule == "penalize":
    return jnp.where(finished, rewards.astype(jnp.float32), penalty), jnp.ones_like(finished)
  raise ValueError(f"rule for samples that never end {rule!r}; expected one of {UNFINISHED_RULES}")


def leave_one_out_advantages(rewards: jax.Array, valid: Optional[jax.Array] = None) -> jax.Array:
  """rewards [P, k] grouped by prompt -> A [P, k], A_i = r_i - mean_{j != i, j valid} r_j.

  Invalid samples get A = 0 and are left out of every baseline; a valid sample with no other
  valid sample in its group has no baseline and also gets A = 0 (no learning signal).
  """
  if rewards.ndim != 2:
    raise ValueError(f"expected rewards grouped [prompts, samples], got shape {rewards.shape}")
  rewards = rewards.astype(jnp.float32)
  valid = jnp.ones(rewards.shape, bool) if valid is None else valid.astype(bool)
  r = jnp.where(valid, rewards, 0.0)
  n = jnp.sum(valid, axis=1, keepdims=True).astype(jnp.float32)
  others = n - 1.0
  baseline = (jnp.sum(r, axis=1, keepdims=True) - r) / jnp.where(others > 0, others, 1.0)
  return jnp.where(valid & (others > 0), rewards - baseline, 0.0)


def baseline_excluded_advantages(rewards: jax.Array, in_baseline: jax.Array) -> jax.Array:
  """rewards [P, k], in_baseline [P, k] -> A [P, k] as NeMo-Aligner's `calculate_rloo_baseline`.

  With n samples of a group in the baseline (n >= 2), sample i's baseline is
  `sum_{j != i, j in} r_j / (n - 1)`: for a sample in the baseline the mean of the others in it,
  for one left out the sum over all n divided by n - 1 (NeMo-Aligner's arithmetic, kept so the
  published runs are reproduced; it pushes an unfinished sample down a little more than the
  plain mean would). With n <= 1 the group has no baseline: every baseline is the sample's own
  reward and every advantage 0.
  """
  if rewards.ndim != 2:
    raise ValueError(f"expected rewards grouped [prompts, samples], got shape {rewards.shape}")
  rewards = rewards.astype(jnp.float32)
  m = in_baseline.astype(jnp.float32)
  n = jnp.sum(m, axis=1, keepdims=True)
  others = jnp.sum(rewards * m, axis=1, keepdims=True) - rewards * m
  baseline = jnp.where(n > 1, others / jnp.where(n > 1, n - 1.0, 1.0), rewards)
  return rewards - baseline


def rule_advantages(
  rewards: jax.Array, finished: jax.Array, rule: str, penalty: float = 0.0
) -> tuple[jax.Array, jax.Array, jax.Array]:
  """rewards r' [P, k], finished [P, k] -> (advantages, rewards after the rule, in_loss) [P, k]
  under a rule of UNFINISHED_RULES for the samples that never end."""
  finished = finished.astype(bool)
  if rule == "exclude_from_baseline":
    rewards = rewards.astype(jnp.float32)
    return baseline_excluded_advantages(rewards, finished), rewards, jnp.ones_like(finished)
  rewards, valid = apply_unfinished_rule(rewards, finished, rule, penalty)
  return leave_one_out_advantages(rewards, valid), rewards, valid


def rloo_advantages(
  rm_scores: jax.Array,  # [P, k]
  seq_kl: jax.Array,  # [P, k]
  finished: jax.Array,  # [P, k] bool
  beta: float,
  unfinished_rule: str = "exclude_from_baseline",
  penalty: float = 0.0,
) -> tuple[jax.Array, jax.Array, jax.Array]:
  """(advantages [P, k], rewards r' [P, k], in the loss [P, k]) for one RLOO batch."""
  rewards = kl_penalized_rewards(rm_scores, seq_kl, beta)
  advantages, rewards, valid = rule_advantages(rewards, finished, unfinished_rule, penalty)
  return jax.lax.stop_gradient(advantages), rewards, valid


def policy_gradient_terms(
  logp: jax.Array,  # [B, T] log pi of the sampled tokens
  advantages: jax.Array,  # [B]
  mask: jax.Array,  # [B, T] response tokens
  valid: Optional[jax.Array] = None,  # [B]; False drops a sample
) -> tuple[jax.Array, jax.Array]:
  """(sum, weight): -sum_{i,t} A_i log pi(y_i,t) m_i,t and sum_{i,t} m_i,t over the valid samples.

  Kept apart so gradient accumulation divides the sums of all micro-batches by their total weight
  (exactly the loss of the whole batch); the advantages are constants.
  """
  mask = mask.astype(jnp.float32)
  if valid is not None:
    mask = mask * valid.astype(jnp.float32)[:, None]
  adv = jax.lax.stop_gradient(advantages.astype(jnp.float32))[:, None]
  total = jnp.sum(jnp.where(mask > 0, adv * logp.astype(jnp.float32), 0.0) * mask)
  return -total, jnp.sum(mask)


def policy_gradient_loss(
  logp: jax.Array,  # [B, T]
  advantages: jax.Array,  # [B]
  mask: jax.Array,  # [B, T]
  valid: Optional[jax.Array] = None,  # [B]
) -> jax.Array:
  """-sum_{i,t} A_i log pi(y_i,t) m_i,t / sum_{i,t} m_i,t over the valid samples (scalar): the mean
  is over every response token of the batch (longer responses weigh more)."""
  total, count = policy_gradient_terms(logp, advantages, mask, valid)
  return jnp.where(count > 0, total / jnp.where(count > 0, count, 1.0), 0.0)


# ---------------------------------------------------------------------------------------------
# Copy rate: how often the edit is the original unchanged


def copied(
  edit_tokens: jax.Array, edit_mask: jax.Array, original_tokens: jax.Array, original_mask: jax.Array
) -> jax.Array:
  """Token arrays [B, T] with masks [B, T], padded the same way -> [B] True where edit == original."""
  same_mask = jnp.all(edit_mask.astype(bool) == original_mask.astype(bool), axis=-1)
  same_tokens = jnp.all((edit_tokens == original_tokens) | ~edit_mask.astype(bool), axis=-1)
  return same_mask & same_tokens


def copy_rate(edits: Sequence, originals: Sequence, strip: bool = True) -> float:
  """Fraction of edits equal to their original: strings (compared after stripping surrounding
  whitespace when `strip`) or token-id sequences (compared exactly). 0 for no pairs."""
  if len(edits) != len(originals):
    raise ValueError(f"{len(edits)} edits for {len(originals)} originals")
  if not edits:
    return 0.0
  same = 0
  for edit, original in zip(edits, originals):
    if isinstance(edit, str) and isinstance(original, str):
      same += (edit.strip() == original.strip()) if strip else (edit == original)
    else:
      a, b = np.asarray(edit).reshape(-1), np.asarray(original).reshape(-1)
      same += a.shape == b.shape and bool(np.all(a == b))
  return same / len(edits)
