"""Reward models as transformers folders, in and out, in two layouts.

- `LlamaForSequenceClassification` (the default, below).
- `LlamaForCausalLM` with the reward in one output-layer row, as NVIDIA stores
  Llama-3.3-Nemotron-70B-Select and Llama-3.1-Nemotron-70B-Reward-HF: the score is the logit of
  vocabulary index `logit_index` (0 for them) at the last position. `load_reward_model(path,
  logit_index=0)` reads only that row, as the head of a one-output reward model, so scoring never
  computes the [B, T, V] logits; `save_reward_model(..., layout="causal_lm")` writes the layout
  (the other rows zero) so NVIDIA's Quick Start code scores a model trained here. The folder's
  config.json then records `reward_logit_index`, which later loads read by themselves.

A folder holds config.json (`architectures: ["LlamaForSequenceClassification"]`, the output names
in `id2label`, and `pad_token_id`), the trunk's `model.*` tensors and `score.weight [O, D]`. The
same class serves the scalar head of Bradley-Terry / Select reward models (O = 1) and the
multi-attribute regression heads of HelpSteer (O = 9) and HelpSteer2 (O = 5); a scalar reward of
the latter is a fixed weighted sum of the attributes (`attribute_weights`, `weighted_reward`).

Loading streams tensor by tensor onto the target sharding, as for causal LMs.

transformers scores the last token that is not `pad_token_id` (the rightmost one, so both left
and right padding work); the model here scores the last position of `input_mask`. The two agree
when the pad id never occurs as a real token at the end of a sequence, so an export never writes
an end-of-turn token as the pad id (`safe_pad_token`).
"""

from __future__ import annotations

import copy
import json
import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from helpsteer_jax import storage
from helpsteer_jax.checkpoints.hf import (
  SafetensorsFolder,
  read_config,
  write_model_tensors,
)
from helpsteer_jax.checkpoints.param_map import (
  LM_HEAD_TENSOR,
  SCORE_TENSOR,
  reward_logit_mapping,
  reward_tensor_mappings,
)
from helpsteer_jax.checkpoints.safetensors_io import CheckpointError
from helpsteer_jax.checkpoints.streaming import build_model
from helpsteer_jax.checkpoints.tokenizers import load_tokenizer, save_tokenizer, stop_token_ids
from helpsteer_jax.models.config import LlamaConfig, to_hf_dict
from helpsteer_jax.models.heads import RewardModel
from helpsteer_jax.parallel.partitioning import ShardingContext

log = logging.getLogger(__name__)

ARCHITECTURE = "LlamaForSequenceClassification"
CAUSAL_ARCHITECTURE = "LlamaForCausalLM"
LAYOUTS = ("sequence_classification", "causal_lm")
# config.json key of a causal-LM reward folder written here: the vocabulary index of the reward.
LOGIT_INDEX_KEY = "reward_logit_index"

# The 9 SteerLM (HelpSteer) attributes and the 5 of HelpSteer2, in their head order.
STEERLM_ATTRIBUTES = (
  "quality",
  "toxicity",
  "humor",
  "creativity",
  "helpfulness",
  "correctness",
  "coherence",
  "complexity",
  "verbosity",
)
HELPSTEER2_ATTRIBUTES = ("helpfulness", "correctness", "coherence", "complexity", "verbosity")
# HelpSteer2's scalar reward: a fixed weighting of the attributes, by name.
HELPSTEER2_WEIGHTS: Mapping[str, float] = {
  "helpfulness": 0.65,
  "correctness": 0.8,
  "coherence": 0.45,
  "complexity": 0.55,
  "verbosity": -0.4,
}
# The same weights laid out over the 9 SteerLM slots and over the 5 HelpSteer2 slots.
STEERLM_REWARD_WEIGHTS = (0.0, 0.0, 0.0, 0.0, 0.65, 0.8, 0.45, 0.55, -0.4)
HELPSTEER2_REWARD_WEIGHTS = (0.65, 0.8, 0.45, 0.55, -0.4)


# ---------------------------------------------------------------------------------------------
# Output names and the weighted scalar reward


def default_labels(num_outputs: int) -> tuple[str, ...]:
  """`("reward",)` for a scalar head, the attribute names for 9 or 5 outputs, else `LABEL_i`."""
  if num_outputs == 1:
    return ("reward",)
  if num_outputs == len(STEERLM_ATTRIBUTES):
    return STEERLM_ATTRIBUTES
  if num_outputs == len(HELPSTEER2_ATTRIBUTES):
    return HELPSTEER2_ATTRIBUTES
  return tuple(f"LABEL_{i}" for i in range(num_outputs))


def attribute_weights(labels: Sequence[str], weights_by_name: Mapping[str, float] = HELPSTEER2_WEIGHTS) -> np.ndarray:
  """Weights [O] over a head's outputs named `labels`; outputs without a weight get 0.

  Fails when a weighted attribute is not among the outputs (its term would silently vanish).
  """
  missing = [name for name in weights_by_name if name not in labels]
  if missing:
    raise ValueError(f"the head's outputs {list(labels)} lack the weighted attribute(s) {missing}")
  return np.asarray([float(weights_by_name.get(name, 0.0)) for name in labels], np.float32)


def weighted_reward(scores: jax.Array, weights: Sequence[float] | jax.Array) -> jax.Array:
  """scores [..., O] (attribute predictions), weights [O] -> scalar rewards [...] (fp32)."""
  weights = jnp.asarray(weights, jnp.float32)
  if scores.shape[-1] != weights.shape[0]:
    raise ValueError(f"scores have {scores.shape[-1]} outputs, weights {weights.shape[0]}")
  return jnp.einsum("...O,O->...", jnp.asarray(scores, jnp.float32), weights)


# ---------------------------------------------------------------------------------------------
# Loading


def _read_json(folder: str) -> dict[str, Any]:
  path = storage.join(folder, "config.json")
  with storage.open_file(path) as f:  # read_config has already checked it parses
    return json.load(f)


def _labels_from_config(hf: dict[str, Any], num_outputs: int, where: str) -> tuple[str, ...]:
  id2label = hf.get("id2label")
  if id2label:
    try:
      labels = tuple(str(id2label[str(i)]) for i in range(len(id2label)))
    except (KeyError, TypeError):
      raise CheckpointError(
        f'{where}: id2label {id2label!r} is not a mapping indexed "0".."{len(id2label) - 1}"'
      ) from None
    if len(labels) != num_outputs:
      raise CheckpointError(f"{where}: id2label names {len(labels)} outputs, tensor {SCORE_TENSOR!r} has {num_outputs}")
    if num_outputs == 1 and labels == ("LABEL_0",):
      return default_labels(1)
    return labels
  declared = hf.get("num_labels")
  if declared is not None and declared != num_outputs:
    raise CheckpointError(f"{where}: num_labels={declared}, tensor {SCORE_TENSOR!r} has {num_outputs} outputs")
  return default_labels(num_outputs)


def _check_folder(folder: str) -> None:
  if not storage.is_dir(folder):
    problem = "is a file" if storage.exists(folder) else "no such directory"
    raise CheckpointError(f"{folder}: {problem}; expected an HF {ARCHITECTURE} folder (config.json and *.safetensors)")


def _open_reward_folder(
  folder: str, overrides: dict[str, Any], logit_index: Optional[int] = None
) -> tuple[LlamaConfig, tuple[str, ...], SafetensorsFolder, list]:
  """(trunk config, output names, tensors, tensor mappings) of a reward model folder."""
  _check_folder(folder)
  config = read_config(folder, **overrides)
  hf = _read_json(folder)
  source = SafetensorsFolder(folder)
  archs = hf.get("architectures") or []
  if SCORE_TENSOR not in source.names():
    if logit_index is None:
      logit_index = hf.get(LOGIT_INDEX_KEY)
    causal = LM_HEAD_TENSOR in source.names() or any("CausalLM" in a for a in archs)
    if logit_index is None:
      hint = (
        (
          "; a causal LM that stores its reward in one output-layer row, as NVIDIA's Select "
          "and Reward-HF models do, loads with logit_index=0"
        )
        if causal
        else ""
      )
      raise CheckpointError(
        f"{folder}: {'a causal LM' if causal else 'not a reward model'} (architectures={archs}): "
        f"no {SCORE_TENSOR!r} tensor; a reward model folder is an HF {ARCHITECTURE}{hint}; to "
        "start a new reward model from a causal LM use reward_model_from_causal_lm"
      )
    try:
      head = reward_logit_mapping(config, int(logit_index))
    except ValueError as e:
      raise CheckpointError(f"{folder}: {e}") from None
    if head.hf_name not in source.names():
      raise CheckpointError(
        f"{folder}: logit_index={logit_index} needs the output layer {head.hf_name!r}, which the folder does not have"
      )
    trunk = reward_tensor_mappings(config, 1, with_score=False)
    return config, default_labels(1), source, trunk + [head]
  if logit_index is not None:
    raise CheckpointError(
      f"{folder}: has {SCORE_TENSOR!r}, so it is an HF {ARCHITECTURE} that scores with its own "
      f"head; logit_index={logit_index} is for reward models stored as a causal LM"
    )
  shape = source.shape(SCORE_TENSOR)
  if len(shape) != 2 or shape[1] != config.hidden_size or shape[0] < 1:
    raise CheckpointError(
      f"{source.where(SCORE_TENSOR)}: tensor {SCORE_TENSOR!r} has shape {tuple(shape)}, "
      f"expected [num_outputs, hidden_size={config.hidden_size}]"
    )
  labels = _labels_from_config(hf, int(shape[0]), storage.join(folder, "config.json"))
  return config, labels, source, reward_tensor_mappings(config, len(labels))


def read_reward_config(
  folder: str, logit_index: Optional[int] = None, **overrides: Any
) -> tuple[LlamaConfig, tuple[str, ...]]:
  """(trunk config, output names) of a reward model folder, checked against its score tensor."""
  config, labels, _, _ = _open_reward_folder(os.fspath(folder), overrides, logit_index)
  return config, labels


def reward_labels(folder: str, logit_index: Optional[int] = None) -> tuple[str, ...]:
  """The output names of a reward model folder (`id2label`), e.g. the HelpSteer attributes."""
  return read_reward_config(folder, logit_index)[1]


def load_reward_model(
  path: str,
  *,
  logit_index: Optional[int] = None,
  sharding: Optional[ShardingContext] = None,
  show_progress: bool = True,
  **config_overrides: Any,
) -> tuple[RewardModel, Any]:
  """(RewardModel, tokenizer) from an HF `LlamaForSequenceClassification` folder, or from a
  `LlamaForCausalLM` folder whose reward is the logit of vocabulary index `logit_index` at the
  last position (NVIDIA's Select and Reward-HF: `logit_index=0`). The latter loads as a
  one-output model whose head is that output-layer row, so its score equals transformers'
  `logits[0, -1, logit_index]` without computing the other logits.

  The number of outputs comes from `score.weight`; `config_overrides` replace trunk config fields
  (e.g. `param_dtype="bfloat16"`, `scan_layers=False`). The tokenizer is None when the folder has
  no tokenizer files. Output names: `reward_labels(path)`.
  """
  path = os.fspath(path)
  config, labels, source, mappings = _open_reward_folder(path, config_overrides, logit_index)
  num_outputs = len(labels)
  model = build_model(
    config,
    source,
    mappings,
    sharding,
    what=path,
    show_progress=show_progress,
    make_model=lambda: RewardModel(config, num_outputs, rngs=nnx.Rngs(0), sharding=sharding),
  )
  return model, load_tokenizer(path)


def reward_model_from_causal_lm(
  path: str,
  num_outputs: int = 1,
  *,
  seed: int = 0,
  sharding: Optional[ShardingContext] = None,
  show_progress: bool = True,
  **config_overrides: Any,
) -> tuple[RewardModel, Any]:
  """A new reward model on the trunk of an HF causal LM folder (e.g. an SFT policy).

  The output layer is dropped; the head [D, O] is drawn from N(0, 1 / (D + 1)) with `seed`.
  """
  path = os.fspath(path)
  _check_folder(path)
  config = read_config(path, **config_overrides)
  source = SafetensorsFolder(path)
  if SCORE_TENSOR in source.names():
    raise CheckpointError(
      f"{path}: has {SCORE_TENSOR!r}, so it is a reward model already; load it with load_reward_model"
    )

  def fresh_head(shape: tuple[int, ...]) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape) / np.sqrt(config.hidden_size + 1)

  model = build_model(
    config,
    source,
    reward_tensor_mappings(config, num_outputs, with_score=False),
    sharding,
    what=path,
    show_progress=show_progress,
    make_model=lambda: RewardModel(config, num_outputs, rngs=nnx.Rngs(0), sharding=sharding),
    initial_values={("head",): fresh_head},
    ignore=(LM_HEAD_TENSOR,),
  )
  return model, load_tokenizer(path)


# ---------------------------------------------------------------------------------------------
# Saving


def safe_pad_token(tokenizer: Any) -> Optional[tuple[str, int]]:
  """(token, id) of a special token that never ends a text: not a stop, BOS or EOS token and not
  written by the chat template; the highest such id, or None. transformers scores the last token
  that is not the pad id, so a pad id that ends turns would make it score the token before."""
  excluded = set(stop_token_ids(tokenizer)) | {tokenizer.bos_token_id, tokenizer.eos_token_id}
  template = getattr(tokenizer, "chat_template", None) or ""
  added: dict[str, int] = getattr(tokenizer, "get_added_vocab", dict)()
  candidates = [(i, t) for t, i in added.items() if i not in excluded and t not in template]
  if not candidates:
    return None
  token_id, token = max(candidates)
  return token, int(token_id)


def _export_tokenizer_and_pad(tokenizer: Any, pad_token_id: Optional[int]) -> tuple[Any, int]:
  """The tokenizer to save and the pad id to write: a pad id that ends turns is replaced by
  `safe_pad_token` (in a copy of the tokenizer, whose pad token becomes it)."""
  if pad_token_id is None and tokenizer is not None:
    pad_token_id = getattr(tokenizer, "pad_token_id", None)
  if pad_token_id is None:
    raise ValueError(
      "a reward model folder needs a pad_token_id (transformers scores the last token that is "
      "not the pad id, and refuses batches without one): pass pad_token_id= or a tokenizer "
      "with a pad token"
    )
  if tokenizer is None:
    return None, int(pad_token_id)
  if int(pad_token_id) not in stop_token_ids(tokenizer):
    return tokenizer, int(pad_token_id)
  safe = safe_pad_token(tokenizer)
  if safe is None:
    raise ValueError(
      f"pad_token_id={pad_token_id} also ends turns, and the tokenizer has no other special token "
      "to pad with: transformers would score the token before a final end-of-turn; pass "
      "pad_token_id= of a token that never ends a text"
    )
  token, safe_id = safe
  log.info(
    "reward export: pad id %d also ends turns; padding with %r (id %d) instead, so "
    "transformers scores the last real token",
    pad_token_id,
    token,
    safe_id,
  )
  exported = copy.deepcopy(tokenizer)
  exported.pad_token = token
  return exported, safe_id


def reward_hf_config(
  config: LlamaConfig, labels: Sequence[str], pad_token_id: int, torch_dtype: Optional[str] = None
) -> dict[str, Any]:
  """The config.json dict of a `LlamaForSequenceClassification` with outputs named `labels`."""
  hf = to_hf_dict(config, torch_dtype=torch_dtype)
  hf["architectures"] = [ARCHITECTURE]
  hf["id2label"] = {str(i): name for i, name in enumerate(labels)}
  hf["label2id"] = {name: i for i, name in enumerate(labels)}
  hf["pad_token_id"] = pad_token_id
  if len(labels) > 1:  # attribute regression (transformers' MSE loss), not classification
    hf["problem_type"] = "regression"
  return hf


def causal_lm_reward_hf_config(
  config: LlamaConfig, logit_index: int, pad_token_id: Optional[int] = None, torch_dtype: Optional[str] = None
) -> dict[str, Any]:
  """The config.json dict of a reward model stored as `LlamaForCausalLM` (reward at `logit_index`)."""
  hf = to_hf_dict(config, torch_dtype=torch_dtype)
  hf["architectures"] = [CAUSAL_ARCHITECTURE]
  hf["tie_word_embeddings"] = False  # the output layer is its own tensor: the reward row
  hf[LOGIT_INDEX_KEY] = int(logit_index)
  if pad_token_id is not None:
    hf["pad_token_id"] = int(pad_token_id)
  return hf


def save_reward_model(
  model: RewardModel,
  tokenizer: Any,
  out_dir: str,
  *,
  labels: Optional[Sequence[str]] = None,
  pad_token_id: Optional[int] = None,
  layout: str = "sequence_classification",
  logit_index: int = 0,
  max_shard_size: int | str = "5GB",
  dtype: Optional[str] = None,
  show_progress: bool = True,
) -> None:
  """Writes an HF folder that transformers loads and scores alike.

  `layout="sequence_classification"`: a `LlamaForSequenceClassification`; `labels` name the
  outputs (default: `default_labels(O)`), `pad_token_id` defaults to the tokenizer's; one that
  also ends turns (SmolLM2 pads with `<|im_end|>`) is replaced by another special token
  (`safe_pad_token`), so transformers scores the same last token as this package.
  `layout="causal_lm"`: a `LlamaForCausalLM` whose output layer is zero but for row `logit_index`,
  the head of a one-output model, as NVIDIA stores Select (their Quick Start code scores it).
  Tensors are gathered to the host one at a time; in a multi-process run every process calls
  this (the gathers are collective) and only process 0 writes.
  """
  if layout not in LAYOUTS:
    raise ValueError(f"layout={layout!r}; expected one of {LAYOUTS}")
  config = model.config
  num_outputs = int(model.num_outputs)
  dtype = dtype or config.param_dtype
  if layout == "causal_lm":
    if num_outputs != 1:
      raise ValueError(
        f"layout='causal_lm' stores one reward logit; the model has {num_outputs} "
        "outputs (save multi-attribute models as sequence_classification)"
      )
    if pad_token_id is None and tokenizer is not None:
      pad_token_id = getattr(tokenizer, "pad_token_id", None)
    hf_config = causal_lm_reward_hf_config(config, logit_index, pad_token_id, torch_dtype=dtype)
    mappings = reward_tensor_mappings(config, 1, with_score=False) + [
      reward_logit_mapping(config, logit_index, hf_name=LM_HEAD_TENSOR)
    ]
  else:
    labels = tuple(labels) if labels is not None else default_labels(num_outputs)
    if len(labels) != num_outputs or len(set(labels)) != len(labels):
      raise ValueError(f"labels {list(labels)}: expected {num_outputs} distinct names, one per output")
    tokenizer, pad_token_id = _export_tokenizer_and_pad(tokenizer, pad_token_id)
    hf_config = reward_hf_config(config, labels, pad_token_id, torch_dtype=dtype)
    mappings = reward_tensor_mappings(config, num_outputs)
  write_model_tensors(model, mappings, out_dir, dtype, max_shard_size, show_progress)
  if jax.process_index() != 0:
    return
  storage.write_atomic(storage.join(out_dir, "config.json"), json.dumps(hf_config, indent=2))
  if tokenizer is not None:
    save_tokenizer(tokenizer, out_dir)
