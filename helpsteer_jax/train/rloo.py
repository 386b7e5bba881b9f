"""RLOO for the Edit model: rollouts from the current policy, Edit-RM rewards, KL to a frozen reference.

One iteration (`prepare_batch`, then the shared step):
  1. k samples per prompt from the policy with the project's sampler; the sampler reads the train
     state's parameters where they live (no copy through the host);
  2. rewards from the Edit RM on (edit request, sample), or a synthetic reward for tests;
  3. per-sequence KL(pi || pi_ref) with the configured estimator, r' = RM - beta * KL, the rule
     for samples that never end, leave-one-out advantages over the k samples of each prompt;
  4. the step minimises the token-mean policy-gradient loss -mean_t(A_i log pi(y_i,t)).
Metrics: reward mean and spread, KL, copy rate (edit == original), response length, finished
fraction, and the seconds spent sampling, scoring and computing log-probs.

    config.rloo: reward_model ('' with synthetic_reward set for tests), synthetic_reward,
                 num_samples (k), beta, kl_estimator (abs | k1 | k3), unfinished
                 (exclude_from_baseline | drop | penalize | keep), penalty, max_new_tokens, temperature, top_k, top_p, reward_batch_size,
                 max_prompt_tokens (0 = whole prompts; else cut from the left, first token kept)
"""

from __future__ import annotations

import functools
import logging
import time
from typing import Optional

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from helpsteer_jax.checkpoints.pretrained import save_pretrained
from helpsteer_jax.checkpoints.reward import load_reward_model
from helpsteer_jax.data.pipeline import source_spec
from helpsteer_jax.data.rl_prompts import PromptIterator, load_rl_prompts
from helpsteer_jax.models.llama import Llama
from helpsteer_jax.parallel.host_values import to_host
from helpsteer_jax.parallel.partitioning import ShardingContext
from helpsteer_jax.sampling.generate import encode_conversations, sampling_settings
from helpsteer_jax.sampling.sampler import bucket, keep_ends, sample_tokens
from helpsteer_jax.scoring.selectors import RewardModelSelector
from helpsteer_jax.train import model_setup
from helpsteer_jax.train.rloo_math import (
  UNFINISHED_RULES,
  chunked_token_log_probs,
  copy_rate,
  policy_gradient_terms,
  rloo_advantages,
  sequence_kl,
)
from helpsteer_jax.train.step import Batch, LossOutput
from helpsteer_jax.train.task_base import TaskBase

logger = logging.getLogger(__name__)

# A rule of rloo_math.UNFINISHED_RULES, or "keep": treat every sample as finished (tiny runs, whose
# few new tokens rarely reach an end of turn).
UNFINISHED = UNFINISHED_RULES + ("keep",)


# -- synthetic rewards (tests and smoke runs) ---------------------------------------------------------


def low_token_fraction(response_ids: list[int], vocab_size: int) -> float:
  """Fraction of response tokens in the lower half of the vocabulary: a reward a random policy
  gets about 0.5 of, and that RL can raise by shifting probability mass."""
  if not response_ids:
    return 0.0
  return float(np.mean(np.asarray(response_ids) < vocab_size // 2))


SYNTHETIC_REWARDS = {"low_token_fraction": low_token_fraction}


# -- log-probs of sampled sequences -------------------------------------------------------------------

LOGITS_CHUNK = 256  # positions whose [B, C, V] logits exist at once (long rollouts, big vocabularies)


def next_token_log_probs(model: Llama, ids: jax.Array, mask: jax.Array) -> jax.Array:
  """ids, mask [B, L] -> log pi(ids[:, t+1] | ids[:, :t+1]) [B, L - 1], logits made chunk by chunk."""
  hidden, _ = model.hidden_states(ids, input_mask=mask)
  return chunked_token_log_probs(hidden[:, :-1], ids[:, 1:], model.logits, LOGITS_CHUNK)


@functools.partial(jax.jit, static_argnames=("graphdef", "k", "beta", "estimator", "rule", "penalty"))
def _kl_and_advantages(
  graphdef,
  params,
  reference,
  rest,
  ids,
  mask,
  target_mask,
  rm_scores,
  finished,
  *,
  k: int,
  beta: float,
  estimator: str,
  rule: str,
  penalty: float,
):
  """ids, mask, target_mask [B, L]; rm_scores, finished [B] -> (sequence KL, advantages, valid) [B].

  One program for the policy and reference log-probs and all the reward arithmetic. On a CPU mesh
  XLA runs each device's part of a program on a pool with one thread per device; several
  independent collective programs in flight at once can take every thread and wait on each other.
  """
  logp = jnp.pad(next_token_log_probs(nnx.merge(graphdef, params, rest), ids, mask), ((0, 0), (0, 1)))
  ref_logp = jnp.pad(next_token_log_probs(nnx.merge(graphdef, reference, rest), ids, mask), ((0, 0), (0, 1)))
  seq_kl = sequence_kl(logp, ref_logp, target_mask, estimator)
  advantages, _, valid = rloo_advantages(
    rm_scores.reshape(-1, k), seq_kl.reshape(-1, k), finished.reshape(-1, k), beta, rule, penalty
  )
  return seq_kl, advantages.reshape(-1), valid.reshape(-1)


def rloo_step_loss(model: Llama, batch: Batch, rng: jax.Array) -> LossOutput:
  """batch: input_ids, input_mask, target_mask [B, L]; advantages [B]; valid [B]."""
  del rng
  logp = next_token_log_probs(model, batch["input_ids"], batch["input_mask"])
  total, weight = policy_gradient_terms(logp, batch["advantages"], batch["target_mask"][:, :-1], batch["valid"])
  return LossOutput(total=total, weight=weight)


class RLOOTask(TaskBase):
  def __init__(self, config: ml_collections.ConfigDict):
    super().__init__(config)
    self.rl = config.rloo
    if self.rl.unfinished not in UNFINISHED:
      raise ValueError(f"rloo.unfinished={self.rl.unfinished!r}; expected one of {UNFINISHED}")
    if not self.rl.reward_model and self.rl.synthetic_reward not in SYNTHETIC_REWARDS:
      raise ValueError(
        "rloo.reward_model is empty: set it to an Edit RM folder, or set "
        f"rloo.synthetic_reward to one of {sorted(SYNTHETIC_REWARDS)}"
      )
    if self.rl.num_samples < 2:
      raise ValueError(f"rloo.num_samples={self.rl.num_samples}: leave-one-out needs at least 2")
    self._reference: Optional[nnx.State] = None
    self._reward: Optional[RewardModelSelector] = None

  # -- model and reference ---------------------------------------------------------------------

  def abstract_model(self, sharding: Optional[ShardingContext]) -> Llama:
    config = model_setup.model_config(self.config)
    return nnx.eval_shape(lambda: Llama(config, rngs=nnx.Rngs(0), sharding=sharding))

  def build_model(self, config: ml_collections.ConfigDict, sharding: ShardingContext) -> Llama:
    model = model_setup.build_policy(config, sharding)
    # The frozen reference is the starting policy: a device-side copy on the same shardings.
    self._reference = jax.tree.map(jnp.copy, nnx.state(model, nnx.Param))
    if self.rl.reward_model:
      rm, rm_tokenizer = load_reward_model(self.rl.reward_model, sharding=sharding)
      self.use_reward_model(rm, rm_tokenizer or self.tokenizer)
    return model

  def use_reward_model(self, rm, tokenizer) -> None:
    """Scores rollouts with `rm` (an Edit RM). It reads the conversation cut as the policy's prompt
    was, plus the response and the template's few closing tokens."""
    max_tokens = self.rl.max_prompt_tokens + self.rl.max_new_tokens + 8 if self.rl.max_prompt_tokens > 0 else 0
    self._reward = RewardModelSelector(rm, tokenizer, batch_size=self.rl.reward_batch_size, max_tokens=max_tokens)

  def loss_fn(self):
    return rloo_step_loss

  def batch_spec(self) -> dict[str, jax.ShapeDtypeStruct]:
    b = int(self.config.data.batch_size) * int(self.rl.num_samples)
    length = int(self.config.data.seq_len)
    ids = jax.ShapeDtypeStruct((b, length), jnp.int32)
    mask = jax.ShapeDtypeStruct((b, length), jnp.bool_)
    rows = jax.ShapeDtypeStruct((b,), jnp.float32)
    return {
      "input_ids": ids,
      "input_mask": mask,
      "target_mask": mask,
      "advantages": rows,
      "valid": jax.ShapeDtypeStruct((b,), jnp.bool_),
    }

  def row_length(self, longest: int) -> int:
    """Rollout row length: with prompts cut, one fixed length (one compiled train step) rounded to
    128; otherwise the longest sequence's power-of-2 bucket. Never below `data.seq_len`."""
    if self.rl.max_prompt_tokens > 0:
      bound = self.rl.max_prompt_tokens + self.rl.max_new_tokens + 1
      length = -(-max(bound, longest) // 128) * 128
    else:
      length = bucket(longest)
    return max(int(self.config.data.seq_len), length)

  # -- data --------------------------------------------------------------------------------------

  def train_data(self, process_index: int, process_count: int):
    # Every process iterates the same prompts: the rollouts are sampled SPMD over the global mesh
    # (the decode engine under jax's multi-controller runtime, as the search runs over hosts), and
    # each device then takes its rows of the whole batch.
    data = self.config.data
    prompts = load_rl_prompts(
      source_spec(data), data.dataset, on_error=data.on_error, prompt_format=data.builder.prompt_format
    )
    logger.info(
      "RLOO: %d edit prompts, %d per step, %d samples each",
      len(prompts),
      self.config.data.batch_size,
      self.rl.num_samples,
    )
    return PromptIterator(prompts, int(self.config.data.batch_size), seed=int(self.config.data.seed))

  def eval_data(self, process_index: int, process_count: int):
    return None

  # -- one iteration's rollouts --------------------------------------------------------------------

  def _rewards(self, prompts, texts: list[str], responses: list[list[int]], vocab_size: int) -> np.ndarray:
    if self._reward is not None:
      items = [(p.messages, t) for p, t in zip(prompts, texts)]
      return np.asarray(self._reward.score(items), np.float32)
    fn = SYNTHETIC_REWARDS[self.rl.synthetic_reward]
    return np.asarray([fn(r, vocab_size) for r in responses], np.float32)

  def prepare_batch(self, prompts, state, graphdef, rest, step: int, to_global) -> tuple[Batch, dict[str, float], int]:
    rl, k = self.rl, int(self.rl.num_samples)
    tokenizer = self.tokenizer
    policy = nnx.merge(graphdef, state.params, rest)  # the state's device arrays, no host copy
    vocab = policy.config.vocab_size
    settings = sampling_settings(
      tokenizer,
      max_new_tokens=rl.max_new_tokens,
      temperature=rl.temperature,
      top_k=rl.top_k if rl.top_k > 0 else None,
      top_p=rl.top_p if rl.top_p < 1.0 else None,
    )
    prompt_ids = encode_conversations(tokenizer, [p.messages for p in prompts])
    prompt_ids = [keep_ends(ids, rl.max_prompt_tokens) for ids in prompt_ids]
    started = time.perf_counter()
    # Keys by (seed, step, row): a prompt's samples do not depend on the other prompts of the step.
    samples = sample_tokens(
      policy,
      prompt_ids,
      settings,
      n=k,
      seed=int(self.config.seed),
      names=[f"step{step}/{i}" for i in range(len(prompt_ids))],
    )
    sample_s = time.perf_counter() - started

    flat_prompts = [p for p in prompts for _ in range(k)]
    flat_prompt_ids = [ids for ids in prompt_ids for _ in range(k)]
    responses = [r for per_prompt in samples for r in per_prompt]
    finished = np.asarray([len(r) < rl.max_new_tokens for r in responses])
    texts = [tokenizer.decode(r, skip_special_tokens=True) for r in responses]
    started = time.perf_counter()
    rm_scores = self._rewards(flat_prompts, texts, responses, vocab)
    score_s = time.perf_counter() - started

    # Sequences: prompt + response (+ the stop token when the sample ended), right-padded.
    stop = settings.stop_token_ids[0] if settings.stop_token_ids else None
    sequences, starts = [], []
    for prompt, r, done in zip(flat_prompt_ids, responses, finished):
      sequences.append(list(prompt) + list(r) + ([stop] if done and stop is not None else []))
      starts.append(len(prompt))
    length = self.row_length(max(len(s) for s in sequences))
    b = len(sequences)
    ids = np.full((b, length), settings.pad_id, np.int32)
    mask = np.zeros((b, length), bool)
    target_mask = np.zeros((b, length), bool)  # position t predicts a response token ids[t + 1]
    for i, (seq, start) in enumerate(zip(sequences, starts)):
      ids[i, : len(seq)] = seq
      mask[i, : len(seq)] = True
      target_mask[i, start - 1 : len(seq) - 1] = True

    started = time.perf_counter()
    done = finished if rl.unfinished != "keep" else np.ones(b, bool)
    rule = "drop" if rl.unfinished == "keep" else rl.unfinished
    seq_kl, advantages, valid = (
      to_host(x)
      for x in _kl_and_advantages(
        graphdef,
        state.params,
        self._reference,
        rest,
        ids,
        mask,
        target_mask,
        np.asarray(rm_scores, np.float32),
        done,
        k=k,
        beta=float(rl.beta),
        estimator=rl.kl_estimator,
        rule=rule,
        penalty=float(rl.penalty),
      )
    )
    logprob_s = time.perf_counter() - started

    batch = to_global(
      {
        "input_ids": ids,
        "input_mask": mask,
        "target_mask": target_mask,
        "advantages": np.asarray(advantages, np.float32),
        "valid": np.asarray(valid),
      },
      whole=True,
    )
    metrics = {
      "reward_mean": float(rm_scores.mean()),
      "reward_std": float(rm_scores.reshape(-1, k).std(axis=1).mean()),
      "kl": float(np.mean(seq_kl)),
      "copy_rate": copy_rate(texts, [p.original for p in flat_prompts]),
      "response_length": float(np.mean([len(r) for r in responses])),
      "finished_fraction": float(finished.mean()),
      "sample_s": sample_s,
      "score_s": score_s,
      "logprob_s": logprob_s,
    }
    return batch, metrics, int(np.count_nonzero(mask))  # every process holds every rollout

  def export(self, model: Llama, out_dir: str) -> None:
    save_pretrained(model, self.tokenizer, out_dir, show_progress=self.config.progress)
