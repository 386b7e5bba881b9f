"""Llama-3 architecture config (frozen, hashable) and the named presets.

Presets describe architectures only; experiments pick one and override what they change.
`from_hf_dict` / `to_hf_dict` translate to and from a transformers `config.json`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional

import jax.numpy as jnp

REMAT_POLICIES = ("none", "full", "dots", "dots_no_batch", "dots_no_batch_attention", "save_qkv_proj")


@dataclasses.dataclass(frozen=True)
class RopeScaling:
  """Llama-3.1 `llama3` frequency rescaling of RoPE (smooth interpolation between two bands)."""

  factor: float = 8.0
  low_freq_factor: float = 1.0
  high_freq_factor: float = 4.0
  original_max_position_embeddings: int = 8192


@dataclasses.dataclass(frozen=True)
class LlamaConfig:
  vocab_size: int
  hidden_size: int  # D
  intermediate_size: int  # F
  num_layers: int  # L
  num_heads: int  # N
  num_kv_heads: int  # K
  head_dim: int  # H
  rms_norm_eps: float = 1e-5
  rope_theta: float = 500000.0
  rope_scaling: Optional[RopeScaling] = None
  max_position_embeddings: int = 8192
  tie_word_embeddings: bool = False
  # Token ids the checkpoint declares; generation stop ids come from the tokenizer side.
  bos_token_id: Optional[int] = None
  eos_token_id: Optional[tuple[int, ...]] = None
  # Numerics and execution.
  dtype: str = "float32"  # compute dtype of activations
  param_dtype: str = "float32"  # storage dtype of parameters (fp32 master weights for training)
  scan_layers: bool = True  # stack layer parameters and run them with lax.scan
  # With scan_layers=False: decode steps and prefill chunks run the layer list as one scanned body
  # whose products switch on the layer, reading each layer's arrays in place (models/decode/layer_switch.py).
  switch_layers: bool = False
  remat_policy: str = "none"  # see REMAT_POLICIES
  attention_impl: str = "auto"  # auto | xla | cudnn | pallas (models/attention_kernels.py)
  decode_attention_impl: str = "auto"  # auto | xla | per_slot | paged (models/decode/paged_decode.py)

  def __post_init__(self):
    if self.num_heads % self.num_kv_heads:
      raise ValueError(f"num_heads={self.num_heads} must be a multiple of num_kv_heads={self.num_kv_heads}")
    if self.head_dim % 2:
      raise ValueError(f"head_dim={self.head_dim} must be even for RoPE")
    if self.attention_impl not in ("auto", "xla", "cudnn", "pallas"):
      raise ValueError(f"attention_impl={self.attention_impl!r}; expected auto, xla, cudnn or pallas")
    if self.decode_attention_impl not in ("auto", "xla", "per_slot", "paged"):
      raise ValueError(f"decode_attention_impl={self.decode_attention_impl!r}; expected auto, xla, per_slot or paged")
    if self.remat_policy not in REMAT_POLICIES:
      raise ValueError(f"remat_policy={self.remat_policy!r}; expected one of {REMAT_POLICIES}")
    for name in ("dtype", "param_dtype"):
      if getattr(self, name) not in ("float32", "bfloat16", "float16"):
        raise ValueError(f"{name}={getattr(self, name)!r}; expected float32, bfloat16 or float16")

  @property
  def compute_dtype(self) -> jnp.dtype:
    return jnp.dtype(self.dtype)

  @property
  def weight_dtype(self) -> jnp.dtype:
    return jnp.dtype(self.param_dtype)

  def replace(self, **changes: Any) -> "LlamaConfig":
    return dataclasses.replace(self, **changes)

  def num_params(self) -> int:
    """Closed-form parameter count (checked against `jax.eval_shape` in the tests)."""
    d, f, h = self.hidden_size, self.intermediate_size, self.head_dim
    attn = d * h * (2 * self.num_heads + 2 * self.num_kv_heads)
    layer = attn + 3 * d * f + 2 * d
    head = 0 if self.tie_word_embeddings else self.vocab_size * d
    return self.vocab_size * d + self.num_layers * layer + d + head


_LLAMA31_ROPE = RopeScaling(
  factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0, original_max_position_embeddings=8192
)
_LLAMA3_COMMON: dict[str, Any] = dict(
  vocab_size=128256,
  head_dim=128,
  num_kv_heads=8,
  rms_norm_eps=1e-5,
  rope_theta=500000.0,
  rope_scaling=_LLAMA31_ROPE,
  max_position_embeddings=131072,
  tie_word_embeddings=False,
  bos_token_id=128000,
  eos_token_id=(128001, 128008, 128009),
)

PRESETS: dict[str, LlamaConfig] = {
  # A few hundred thousand parameters: tests and CPU smoke runs.
  "tiny": LlamaConfig(
    vocab_size=512,
    hidden_size=64,
    intermediate_size=160,
    num_layers=2,
    num_heads=4,
    num_kv_heads=2,
    head_dim=16,
    rope_theta=10000.0,
    max_position_embeddings=512,
  ),
  # HuggingFaceTB/SmolLM2-135M(-Instruct).
  "smollm2_135m": LlamaConfig(
    vocab_size=49152,
    hidden_size=576,
    intermediate_size=1536,
    num_layers=30,
    num_heads=9,
    num_kv_heads=3,
    head_dim=64,
    rms_norm_eps=1e-5,
    rope_theta=100000.0,
    max_position_embeddings=8192,
    tie_word_embeddings=True,
    bos_token_id=1,
    eos_token_id=(2,),
  ),
  # Llama-3.1 family (llama3 RoPE scaling, 128K context).
  "llama3_8b": LlamaConfig(hidden_size=4096, intermediate_size=14336, num_layers=32, num_heads=32, **_LLAMA3_COMMON),
  "llama3_70b": LlamaConfig(hidden_size=8192, intermediate_size=28672, num_layers=80, num_heads=64, **_LLAMA3_COMMON),
  "llama3_405b": LlamaConfig(
    hidden_size=16384, intermediate_size=53248, num_layers=126, num_heads=128, **_LLAMA3_COMMON
  ),
}


def get_preset(name: str, **overrides: Any) -> LlamaConfig:
  if name not in PRESETS:
    raise KeyError(f"unknown model preset {name!r}; known: {sorted(PRESETS)}")
  return PRESETS[name].replace(**overrides)


# ---------------------------------------------------------------------------------------------
# transformers config.json <-> LlamaConfig

_HF_DTYPES = {"float32": "float32", "bfloat16": "bfloat16", "float16": "float16"}


def from_hf_dict(hf: dict[str, Any], source: str = "config.json", **overrides: Any) -> LlamaConfig:
  """Builds a config from a transformers Llama `config.json` dict; errors name `source`."""
  model_type = hf.get("model_type")
  archs = hf.get("architectures") or []
  if model_type != "llama" and not any(a.startswith("Llama") for a in archs):
    raise ValueError(
      f"{source}: model_type={model_type!r}, architectures={archs}; expected a Llama model "
      "(model_type 'llama', e.g. LlamaForCausalLM)"
    )
  required = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")
  missing = [k for k in required if k not in hf]
  if missing:
    raise ValueError(f"{source}: missing required keys {missing}")
  if hf.get("attention_bias") or hf.get("mlp_bias"):
    raise ValueError(f"{source}: attention_bias/mlp_bias are not supported (Llama-3 has no biases)")
  act = hf.get("hidden_act", "silu")
  if act != "silu":
    raise ValueError(f"{source}: hidden_act={act!r}; expected 'silu' (the Llama SwiGLU MLP)")
  heads = hf["num_attention_heads"]
  rope = _rope_scaling_from_hf(hf, source)
  eos = hf.get("eos_token_id")
  if isinstance(eos, int):
    eos = (eos,)
  elif eos is not None:
    eos = tuple(eos)
  kwargs = dict(
    vocab_size=hf["vocab_size"],
    hidden_size=hf["hidden_size"],
    intermediate_size=hf["intermediate_size"],
    num_layers=hf["num_hidden_layers"],
    num_heads=heads,
    num_kv_heads=hf.get("num_key_value_heads") or heads,
    head_dim=hf.get("head_dim") or hf["hidden_size"] // heads,
    rms_norm_eps=hf.get("rms_norm_eps", 1e-6),
    rope_theta=float(_rope_theta_from_hf(hf)),
    rope_scaling=rope,
    max_position_embeddings=hf.get("max_position_embeddings", 2048),
    tie_word_embeddings=bool(hf.get("tie_word_embeddings", False)),
    bos_token_id=hf.get("bos_token_id"),
    eos_token_id=eos,
  )
  kwargs.update(overrides)
  return LlamaConfig(**kwargs)


def _rope_theta_from_hf(hf: dict[str, Any]) -> float:
  if "rope_theta" in hf:
    return hf["rope_theta"]
  params = hf.get("rope_parameters") or {}
  return params.get("rope_theta", 10000.0)


def _rope_scaling_from_hf(hf: dict[str, Any], source: str) -> Optional[RopeScaling]:
  scaling = hf.get("rope_scaling") or hf.get("rope_parameters")
  if not scaling:
    return None
  kind = scaling.get("rope_type", scaling.get("type", "default"))
  if kind == "default":
    return None
  if kind != "llama3":
    raise ValueError(f"{source}: rope scaling type {kind!r} is not supported; expected 'llama3' or none")
  fields = ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings")
  missing = [k for k in fields if k not in scaling]
  if missing:
    raise ValueError(f"{source}: llama3 rope scaling lacks {missing}; expected all of {list(fields)}")
  return RopeScaling(
    factor=float(scaling["factor"]),
    low_freq_factor=float(scaling["low_freq_factor"]),
    high_freq_factor=float(scaling["high_freq_factor"]),
    original_max_position_embeddings=int(scaling["original_max_position_embeddings"]),
  )


def to_hf_dict(config: LlamaConfig, torch_dtype: Optional[str] = None) -> dict[str, Any]:
  """A transformers `LlamaConfig`-compatible dict."""
  eos = config.eos_token_id
  hf: dict[str, Any] = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "vocab_size": config.vocab_size,
    "hidden_size": config.hidden_size,
    "intermediate_size": config.intermediate_size,
    "num_hidden_layers": config.num_layers,
    "num_attention_heads": config.num_heads,
    "num_key_value_heads": config.num_kv_heads,
    "head_dim": config.head_dim,
    "hidden_act": "silu",
    "rms_norm_eps": config.rms_norm_eps,
    "rope_theta": config.rope_theta,
    "max_position_embeddings": config.max_position_embeddings,
    "tie_word_embeddings": config.tie_word_embeddings,
    "attention_bias": False,
    "mlp_bias": False,
    "attention_dropout": 0.0,
    "initializer_range": 0.02,
    "pretraining_tp": 1,
    "use_cache": True,
    "bos_token_id": config.bos_token_id,
    "eos_token_id": None if eos is None else (eos[0] if len(eos) == 1 else list(eos)),
    "torch_dtype": _HF_DTYPES[torch_dtype or config.param_dtype],
  }
  if config.rope_scaling is None:
    hf["rope_scaling"] = None
  else:
    hf["rope_scaling"] = {"rope_type": "llama3", **dataclasses.asdict(config.rope_scaling)}
  return hf
