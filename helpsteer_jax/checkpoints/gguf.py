"""GGUF (llama.cpp) Llama checkpoints in: config from metadata, tensors dequantized one at a time.

A GGUF stores tensors under llama.cpp names (`blk.N.attn_q.weight`, ...) in numpy row-major layout
that already equals the transformers `[out, in]` layout, quantized in blocks. `GGUFSource` presents
them under transformers names, so the same mapping table and streaming loader as for safetensors
build the model. One difference is undone on read: llama.cpp's converter permutes the rows of q and
k of each head from the "two halves" RoPE layout into its interleaved-pairs layout.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Optional, Union

import numpy as np
from gguf import GGMLQuantizationType as QT
from gguf import quants

from helpsteer_jax.checkpoints.embedded import embedded_model_path
from helpsteer_jax.checkpoints.gguf_reader import GGUFFile
from helpsteer_jax.checkpoints.gguf_tokenizer import tokenizer_from_gguf
from helpsteer_jax.checkpoints.param_map import llama_tensor_mappings
from helpsteer_jax.checkpoints.safetensors_io import CheckpointError
from helpsteer_jax.models.config import LlamaConfig, RopeScaling

if TYPE_CHECKING:
  from helpsteer_jax.models.llama import Llama
  from helpsteer_jax.parallel.partitioning import ShardingContext

__all__ = [
  "GGUFFile",
  "GGUFSource",
  "config_from_gguf",
  "embedded_model_path",
  "load_gguf",
  "tokenizer_from_gguf",
]

GGUFLike = Union[GGUFFile, Any, str, os.PathLike]

_GLOBAL_NAMES = {
  "token_embd.weight": "model.embed_tokens.weight",
  "output_norm.weight": "model.norm.weight",
  "output.weight": "lm_head.weight",
}
_LAYER_NAMES = {
  "attn_norm": "input_layernorm",
  "attn_q": "self_attn.q_proj",
  "attn_k": "self_attn.k_proj",
  "attn_v": "self_attn.v_proj",
  "attn_output": "self_attn.o_proj",
  "ffn_norm": "post_attention_layernorm",
  "ffn_gate": "mlp.gate_proj",
  "ffn_up": "mlp.up_proj",
  "ffn_down": "mlp.down_proj",
}
_LAYER_RE = re.compile(r"^blk\.(\d+)\.([a-z_]+)\.weight$")
# Llama-3.1 RoPE scaling travels as a tensor of per-frequency divisors; the config reads it.
ROPE_FREQS = "rope_freqs.weight"


def hf_name(gguf_name: str) -> Optional[str]:
  """The transformers name of a llama.cpp Llama tensor, or None for a name outside the table."""
  if gguf_name in _GLOBAL_NAMES:
    return _GLOBAL_NAMES[gguf_name]
  match = _LAYER_RE.match(gguf_name)
  if match and match.group(2) in _LAYER_NAMES:
    return f"model.layers.{match.group(1)}.{_LAYER_NAMES[match.group(2)]}.weight"
  return None


def unpermute_rope_rows(w: np.ndarray, heads: int) -> np.ndarray:
  """Undoes llama.cpp's q/k row permutation: per head, interleaved (x0, y0, x1, y1, ...) rows back
  to the halves (x0, x1, ..., y0, y1, ...) that transformers and this package rotate."""
  rows = w.shape[0]
  if rows % (2 * heads):
    raise ValueError(f"{rows} rows do not split into {heads} heads of an even size")
  return w.reshape(heads, rows // heads // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


class GGUFSource:
  """The tensors of a llama GGUF under transformers names, in transformers layout, as float32.

  Names the table does not know are listed unchanged, so the loader reports them as unexpected.
  """

  def __init__(self, path: GGUFLike, num_heads: Optional[int] = None, num_kv_heads: Optional[int] = None):
    self.file = GGUFFile.of(path)
    self.path = self.file.path
    arch = self.file.architecture
    self.num_heads = num_heads or int(self.file.metadata(f"{arch}.attention.head_count"))
    self.num_kv_heads = num_kv_heads or int(self.file.metadata(f"{arch}.attention.head_count_kv", self.num_heads))
    self._gguf_names: dict[str, str] = {}
    for name in self.file.tensors:
      if name == ROPE_FREQS:
        continue
      self._gguf_names[hf_name(name) or name] = name

  def names(self) -> Sequence[str]:
    return list(self._gguf_names)

  def gguf_name(self, name: str) -> str:
    return self._gguf_names.get(name, name)

  def where(self, name: str) -> str:
    return f"{self.path} (GGUF tensor {self.gguf_name(name)!r})"

  def shape(self, name: str) -> tuple[int, ...]:
    """The transformers-layout shape, from the tensor index alone (no data read)."""
    return tuple(int(d) for d in reversed(self.file.tensors[self._gguf_names[name]].shape))

  def read(self, name: str) -> np.ndarray:
    if name not in self._gguf_names:
      raise CheckpointError(f"{self.path}: no tensor for {name!r}")
    tensor = self.file.tensors[self._gguf_names[name]]
    out = dequantize(tensor, self.path)
    if name.endswith("self_attn.q_proj.weight"):
      out = self._unpermute(out, self.num_heads, tensor.name)
    elif name.endswith("self_attn.k_proj.weight"):
      out = self._unpermute(out, self.num_kv_heads, tensor.name)
    return out

  def _unpermute(self, w: np.ndarray, heads: int, gguf_name: str) -> np.ndarray:
    try:
      return unpermute_rope_rows(w, heads)
    except ValueError as e:
      raise CheckpointError(f"{self.path}: tensor {gguf_name!r} of shape {w.shape}: {e}") from None


def _unsupported(tensor: Any, path: str) -> CheckpointError:
  return CheckpointError(
    f"{path}: tensor {tensor.name!r} has type {tensor.tensor_type.name}, which the installed "
    "gguf package cannot dequantize (expected F32, F16, BF16 or a block type such as Q8_0, "
    "Q4_0, Q4_1, Q5_K, Q6_K, Q4_K)"
  )


def check_dequantizable(tensor: Any, path: str) -> None:
  """Raises the error `dequantize` would, without touching the data (so a bad type fails early)."""
  traits = getattr(quants, "_type_traits", None)  # the registry of block types gguf can decode
  if traits is None:
    return  # another gguf version: `dequantize` still reports the tensor when it is read
  if tensor.tensor_type not in (QT.F32, QT.F16) and tensor.tensor_type not in traits:
    raise _unsupported(tensor, path)


def dequantize(tensor: Any, path: str) -> np.ndarray:
  """A GGUF tensor as a fresh float32 array in numpy (= transformers) layout."""
  try:
    out = quants.dequantize(tensor.data, tensor.tensor_type)
  except NotImplementedError:
    raise _unsupported(tensor, path) from None
  # ggml lists dimensions fastest-first; numpy wants them slowest-first.
  shape = tuple(int(d) for d in reversed(tensor.shape))
  out = np.asarray(out, dtype=np.float32).reshape(shape)
  if np.may_share_memory(out, tensor.data):
    out = np.array(out)  # F32 tensors come back as a view of the memory-mapped file
  return out


# ---------------------------------------------------------------------------------------------
# config


def config_from_gguf(source: GGUFLike, **overrides: Any) -> LlamaConfig:
  """A `LlamaConfig` from a GGUF's `llama.*` metadata; `overrides` replace fields."""
  f = GGUFFile.of(source)
  arch = f.architecture
  if arch != "llama":
    raise CheckpointError(f"{f.path}: general.architecture is {arch!r}; expected 'llama' (a Llama-architecture model)")
  key = lambda name, *default: f.metadata(f"llama.{name}", *default)  # noqa: E731
  hidden = int(key("embedding_length"))
  heads = int(key("attention.head_count"))
  kv_heads = key("attention.head_count_kv", heads)
  if isinstance(kv_heads, list):  # per-layer counts; Llama has one for all layers
    if len(set(kv_heads)) != 1:
      raise CheckpointError(f"{f.path}: llama.attention.head_count_kv varies per layer ({kv_heads})")
    kv_heads = kv_heads[0]
  head_dim = int(key("attention.key_length", 0) or key("rope.dimension_count", 0) or hidden // heads)
  rope_dims = key("rope.dimension_count", head_dim)
  if int(rope_dims) != head_dim:
    raise CheckpointError(
      f"{f.path}: llama.rope.dimension_count={rope_dims} but head_dim={head_dim}; "
      "partial rotary embeddings are not supported"
    )
  vocab = key("vocab_size", None)
  if vocab is None:
    tokens = f.metadata("tokenizer.ggml.tokens", None)
    vocab = len(tokens) if tokens is not None else _embedding_rows(f)
  theta = _f32(key("rope.freq_base", 10000.0))
  dtype = _stored_dtype(f)
  kwargs: dict[str, Any] = dict(
    vocab_size=int(vocab),
    hidden_size=hidden,
    intermediate_size=int(key("feed_forward_length")),
    num_layers=int(key("block_count")),
    num_heads=heads,
    num_kv_heads=int(kv_heads),
    head_dim=head_dim,
    rms_norm_eps=_f32(key("attention.layer_norm_rms_epsilon", 1e-5)),
    rope_theta=theta,
    rope_scaling=_rope_scaling(f, head_dim, theta),
    max_position_embeddings=int(key("context_length", 2048)),
    tie_word_embeddings="output.weight" not in f.tensors,
    bos_token_id=_opt_int(f.metadata("tokenizer.ggml.bos_token_id", None)),
    eos_token_id=_eos_ids(f),
    dtype=dtype,
    param_dtype=dtype,
  )
  if "param_dtype" in overrides and "dtype" not in overrides:
    overrides["dtype"] = overrides["param_dtype"]
  kwargs.update(overrides)
  try:
    return LlamaConfig(**kwargs)
  except ValueError as e:
    raise CheckpointError(f"{f.path}: metadata gives an invalid config: {e}") from None


def _f32(value: Any) -> float:
  """A float32 metadata value as the decimal it was written from (9.99999974e-06 -> 1e-05)."""
  return float(str(np.float32(value)))


def _opt_int(value: Any) -> Optional[int]:
  return None if value is None else int(value)


def _eos_ids(f: GGUFFile) -> Optional[tuple[int, ...]]:
  # Instruct files often name end-of-turn apart from end-of-text; generation stops at either.
  ids = [f.metadata(f"tokenizer.ggml.{k}_token_id", None) for k in ("eos", "eot", "eom")]
  ids = [int(i) for i in ids if i is not None]
  return tuple(dict.fromkeys(ids)) or None


def _embedding_rows(f: GGUFFile) -> int:
  embed = f.tensors.get("token_embd.weight")
  if embed is None:
    raise CheckpointError(f"{f.path}: no llama.vocab_size, tokenizer or token_embd.weight to size the vocabulary")
  return int(embed.shape[-1])


def _stored_dtype(f: GGUFFile) -> str:
  """bfloat16/float16 when every matrix is stored so; float32 for F32 and quantized files."""
  kinds = {t.tensor_type.name for t in f.tensors.values() if len(t.shape) > 1}
  if kinds == {"BF16"}:
    return "bfloat16"
  if kinds == {"F16"}:
    return "float16"
  return "float32"


def _rope_scaling(f: GGUFFile, head_dim: int, theta: float) -> Optional[RopeScaling]:
  kind = f.metadata("llama.rope.scaling.type", "none")
  if kind not in ("none", "llama3"):
    raise CheckpointError(
      f"{f.path}: llama.rope.scaling.type is {kind!r}; supported: none, or Llama-3.1 'llama3' scaling"
    )
  orig = int(f.metadata("llama.rope.scaling.original_context_length", 8192))
  low = float(f.metadata("llama.rope.scaling.low_freq_factor", 1.0))
  high = float(f.metadata("llama.rope.scaling.high_freq_factor", 4.0))
  factor = f.metadata("llama.rope.scaling.factor", None)
  freqs_tensor = f.tensors.get(ROPE_FREQS)
  if freqs_tensor is None:
    if kind == "llama3" and factor is not None:
      return RopeScaling(float(factor), low, high, orig)
    return None
  # llama.cpp writes no scaling parameters for Llama-3.1, only the divisors they produce; recover
  # them (Meta's band edges, the factor = the largest divisor) and check they reproduce the tensor.
  divisors = dequantize(freqs_tensor, f.path).reshape(-1)
  if divisors.shape != (head_dim // 2,):
    raise CheckpointError(
      f"{f.path}: tensor {ROPE_FREQS!r} has {divisors.size} values, expected head_dim/2 = {head_dim // 2}"
    )
  if np.allclose(divisors, 1.0):
    return None
  scaling = RopeScaling(float(factor) if factor is not None else float(divisors.max()), low, high, orig)
  expected = llama3_rope_divisors(head_dim, theta, scaling)
  if not np.allclose(divisors, expected, rtol=1e-4, atol=1e-6):
    raise CheckpointError(
      f"{f.path}: tensor {ROPE_FREQS!r} does not match Llama-3.1 RoPE scaling with {scaling} "
      f"(first divisors {divisors[:4]}, expected {expected[:4]})"
    )
  return scaling


def llama3_rope_divisors(head_dim: int, theta: float, scaling: RopeScaling) -> np.ndarray:
  """[H/2] per-frequency divisors of Llama-3.1 scaling, as llama.cpp stores them in rope_freqs."""
  inv_freq = 1.0 / theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
  wavelen = 2 * math.pi / inv_freq
  smooth = (scaling.original_max_position_embeddings / wavelen - scaling.low_freq_factor) / (
    scaling.high_freq_factor - scaling.low_freq_factor
  )
  low_wavelen = scaling.original_max_position_embeddings / scaling.low_freq_factor
  high_wavelen = scaling.original_max_position_embeddings / scaling.high_freq_factor
  medium = 1.0 / ((1 - smooth) / scaling.factor + smooth)
  return np.where(wavelen < high_wavelen, 1.0, np.where(wavelen > low_wavelen, scaling.factor, medium)).astype(
    np.float32
  )


# ---------------------------------------------------------------------------------------------
# loading


def check_gguf_tensors(source: GGUFSource, config: LlamaConfig) -> None:
  """Missing or unexpected tensors, named as the GGUF names them (the loader only knows HF names)."""
  expected = [m.hf_name for m in llama_tensor_mappings(config)]
  available = set(source.names())
  missing = [n for n in expected if n not in available]
  if missing:
    shown = ", ".join(f"{gguf_name_of(n)} ({n})" for n in missing[:5])
    raise CheckpointError(
      f"{source.path}: missing {len(missing)} tensor(s) the metadata's config requires, e.g. {shown}"
    )
  for name in expected:
    check_dequantizable(source.file.tensors[source.gguf_name(name)], source.path)
  unexpected = sorted(source.gguf_name(n) for n in available - set(expected))
  if unexpected:
    raise CheckpointError(
      f"{source.path}: {len(unexpected)} tensor(s) a Llama model has no place for, e.g. {unexpected[:5]}"
    )


def gguf_name_of(name: str) -> str:
  """The llama.cpp name of a transformers Llama tensor name (unchanged if it has none)."""
  for g, h in _GLOBAL_NAMES.items():
    if h == name:
      return g
  match = re.match(r"^model\.layers\.(\d+)\.(.+)\.weight$", name)
  if match:
    for g, h in _LAYER_NAMES.items():
      if h == match.group(2):
        return f"blk.{match.group(1)}.{g}.weight"
  return name


def load_gguf(
  path: Union[str, os.PathLike],
  sharding: Optional["ShardingContext"] = None,
  show_progress: bool = True,
  **overrides: Any,
) -> tuple["Llama", Any]:
  """(Llama, tokenizer) from a llama GGUF file; tensors stream onto `sharding` one at a time.

  Quantized files load as float32 (`param_dtype`/`dtype` overrides change that). The tokenizer is
  a `transformers.PreTrainedTokenizerFast` with the file's chat template, or None if it has none.
  """
  from helpsteer_jax.checkpoints.streaming import build_model

  f = GGUFFile.of(path)
  config = config_from_gguf(f, **overrides)
  source = GGUFSource(f, config.num_heads, config.num_kv_heads)
  check_gguf_tensors(source, config)
  model = build_model(config, source, llama_tensor_mappings(config), sharding, what=f.path, show_progress=show_progress)
  return model, tokenizer_from_gguf(f)
