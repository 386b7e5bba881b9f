"""How transformers' Llama tensor names and layouts map onto this package's parameters.

HF stores a linear layer as `weight [out, in]`; here kernels are `[in, out]` with heads split out:
q `[D, N, H]`, k/v `[D, K, H]`, o `[N, H, D]`, gate/up `[D, F]`, down `[F, D]`, lm_head `[D, V]`.
Both conventions rotate the two halves of each head (no permutation of q/k rows is needed).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Optional

import numpy as np

from helpsteer_jax.models.config import LlamaConfig

Path = tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class TensorMapping:
  hf_name: str
  path: Path  # path of the parameter in the model's nnx.State, without the layer index
  layer: Optional[int]  # layer index for per-layer tensors
  hf_shape: tuple[int, ...]
  to_model: Callable[[np.ndarray], np.ndarray]  # HF layout -> model layout
  to_hf: Callable[[np.ndarray], np.ndarray]  # model layout -> HF layout
  layer_at: int = 1  # where the layer index goes in `path` when layers are unrolled (a list)

  def variable_path(self, scan_layers: bool) -> tuple[str | int, ...]:
    """The parameter's path in the model's nnx.State: `path` itself for stacked (scanned) layers
    and global tensors, with the layer index inserted at `layer_at` for unrolled layers."""
    if self.layer is None or scan_layers:
      return self.path
    return self.path[: self.layer_at] + (self.layer,) + self.path[self.layer_at :]


def with_prefix(mappings: list[TensorMapping], prefix: Path) -> list[TensorMapping]:
  """The same tensors for a model that holds the Llama under `prefix` (e.g. `("trunk",)`)."""
  return [dataclasses.replace(m, path=tuple(prefix) + m.path, layer_at=m.layer_at + len(prefix)) for m in mappings]


def _identity(x: np.ndarray) -> np.ndarray:
  return x


def _linear(in_shape: tuple[int, ...], out_shape: tuple[int, ...]):
  """HF `[prod(out), prod(in)]` <-> model `in_shape + out_shape`."""
  n_in, n_out = int(np.prod(in_shape)), int(np.prod(out_shape))

  def to_model(w: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(w.T).reshape(in_shape + out_shape)

  def to_hf(w: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(w.reshape(n_in, n_out).T)

  return to_model, to_hf


def llama_tensor_mappings(config: LlamaConfig) -> list[TensorMapping]:
  """Every tensor of a transformers `LlamaForCausalLM` checkpoint, in file order."""
  d, f = config.hidden_size, config.intermediate_size
  n, k, h, v = config.num_heads, config.num_kv_heads, config.head_dim, config.vocab_size
  out: list[TensorMapping] = [
    TensorMapping("model.embed_tokens.weight", ("embed",), None, (v, d), _identity, _identity)
  ]
  per_layer = [
    ("input_layernorm.weight", ("input_norm", "scale"), (d,), (_identity, _identity)),
    ("self_attn.q_proj.weight", ("attn", "q_proj"), (n * h, d), _linear((d,), (n, h))),
    ("self_attn.k_proj.weight", ("attn", "k_proj"), (k * h, d), _linear((d,), (k, h))),
    ("self_attn.v_proj.weight", ("attn", "v_proj"), (k * h, d), _linear((d,), (k, h))),
    ("self_attn.o_proj.weight", ("attn", "o_proj"), (d, n * h), _linear((n, h), (d,))),
    ("post_attention_layernorm.weight", ("post_attention_norm", "scale"), (d,), (_identity, _identity)),
    ("mlp.gate_proj.weight", ("mlp", "gate_proj"), (f, d), _linear((d,), (f,))),
    ("mlp.up_proj.weight", ("mlp", "up_proj"), (f, d), _linear((d,), (f,))),
    ("mlp.down_proj.weight", ("mlp", "down_proj"), (d, f), _linear((f,), (d,))),
  ]
  for layer in range(config.num_layers):
    for suffix, path, shape, (to_model, to_hf) in per_layer:
      out.append(TensorMapping(f"model.layers.{layer}.{suffix}", ("layers",) + path, layer, shape, to_model, to_hf))
  out.append(TensorMapping("model.norm.weight", ("final_norm", "scale"), None, (d,), _identity, _identity))
  if not config.tie_word_embeddings:
    to_model, to_hf = _linear((d,), (v,))
    out.append(TensorMapping("lm_head.weight", ("lm_head",), None, (v, d), to_model, to_hf))
  return out


SCORE_TENSOR = "score.weight"
LM_HEAD_TENSOR = "lm_head.weight"


def reward_tensor_mappings(config: LlamaConfig, num_outputs: int, with_score: bool = True) -> list[TensorMapping]:
  """Every tensor of a transformers `LlamaForSequenceClassification` checkpoint, in file order.

  The trunk's `model.*` tensors map under `trunk` of a `RewardModel`; `score.weight [O, D]` is
  its head `[D, O]`. The classifier has no output layer, whatever `tie_word_embeddings` says.
  `with_score=False` lists the trunk only (a reward model started from a causal LM).
  """
  trunk = [m for m in llama_tensor_mappings(config) if m.hf_name != LM_HEAD_TENSOR]
  out = with_prefix(trunk, ("trunk",))
  if with_score:
    to_model, to_hf = _linear((config.hidden_size,), (num_outputs,))
    out.append(TensorMapping(SCORE_TENSOR, ("head",), None, (num_outputs, config.hidden_size), to_model, to_hf))
  return out


def reward_logit_mapping(config: LlamaConfig, logit_index: int, hf_name: str = "") -> TensorMapping:
  """The head [D, 1] of a reward model stored as a causal LM, as NVIDIA stores Select and
  Reward-HF: the reward is the logit of vocabulary index `logit_index` at the last position, so
  the head is that row of the output layer `[V, D]` (of the embedding when they are tied).

  Reading keeps only the row; writing fills the other rows with zeros (their logits carry
  nothing). `hf_name` defaults to the tensor that holds the output layer under `config`.
  """
  v, d = config.vocab_size, config.hidden_size
  if not 0 <= logit_index < v:
    raise ValueError(f"logit_index={logit_index}; expected a vocabulary index in [0, {v})")
  if not hf_name:
    hf_name = "model.embed_tokens.weight" if config.tie_word_embeddings else LM_HEAD_TENSOR

  def to_model(w: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(w[logit_index][:, None])

  def to_hf(head: np.ndarray) -> np.ndarray:
    out = np.zeros((v, d), head.dtype)
    out[logit_index] = head[:, 0]
    return out

  return TensorMapping(hf_name, ("head",), None, (v, d), to_model, to_hf)


# Tensors some exporters write that carry no information (recomputed from the config).
IGNORED_HF_TENSOR_SUFFIXES = ("rotary_emb.inv_freq",)
