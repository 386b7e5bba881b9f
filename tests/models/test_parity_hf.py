"""Parity with transformers' `LlamaForCausalLM` on HF checkpoints it writes itself.

Each case is a tiny random Llama saved by transformers (`save_pretrained`, safetensors) and loaded
with `load_hf_model`; logits must match the torch fp32 reference, with layers scanned and unrolled,
with padding, and decoded on a slot cache as the engine decodes. The cases cover GQA ratios 1, 2, 3, 4 and 8, tied and
untied embeddings, `llama3` RoPE scaling on sequences longer than
`original_max_position_embeddings`, several `rope_theta`s and `head_dim`s that are not
`hidden_size / num_heads`. Weights are redrawn so that logits are O(1) and norm scales are away
from 1: a wrong layout or rotation then shows as an O(1) error, not one hidden under transformers'
0.02-std initialisation.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from helpsteer_jax.checkpoints.hf import load_hf_model
from helpsteer_jax.models.decode.decode_layout import decode_layouts
from helpsteer_jax.models.decode.slot_cache import SlotCache
from helpsteer_jax.models.llama import Llama
from helpsteer_jax.sampling.chunked_prefill import ChunkedPrefill

# Compiles whole models (seconds a test): outside the smoke suite.
pytestmark = pytest.mark.entry

SEQ = 48  # longer than original_max_position_embeddings=16 of the llama3-scaled cases
PARITY_TOL = 1e-4  # ours vs transformers (different kernels and summation orders)
CACHE_TOL = 1e-5  # ours decoded on slots vs our full forward


@dataclasses.dataclass(frozen=True)
class Case:
  name: str
  vocab: int
  hidden: int
  heads: int
  kv_heads: int
  layers: int
  intermediate: int
  tie: bool
  theta: float
  head_dim: Optional[int] = None  # None: hidden // heads
  rope_scaling: Optional[dict[str, Any]] = None
  eps: float = 1e-5


def _llama3(factor: float, low: float, high: float) -> dict[str, Any]:
  return {
    "rope_type": "llama3",
    "factor": factor,
    "low_freq_factor": low,
    "high_freq_factor": high,
    "original_max_position_embeddings": 16,
  }


CASES = [
  Case("mha_untied", vocab=101, hidden=32, heads=4, kv_heads=4, layers=2, intermediate=64, tie=False, theta=10000.0),
  Case("gqa2_tied", vocab=96, hidden=32, heads=4, kv_heads=2, layers=2, intermediate=48, tie=True, theta=500000.0),
  Case(
    "gqa3_tied_llama3_headdim12",
    vocab=113,
    hidden=48,
    heads=6,
    kv_heads=2,
    layers=2,
    intermediate=80,
    tie=True,
    theta=5000.0,
    head_dim=12,
    rope_scaling=_llama3(4.0, 1.0, 4.0),
  ),
  Case(
    "mqa8_untied_llama3",
    vocab=128,
    hidden=64,
    heads=8,
    kv_heads=1,
    layers=3,
    intermediate=96,
    tie=False,
    theta=1e6,
    rope_scaling=_llama3(8.0, 1.0, 2.0),
  ),
  Case(
    "gqa4_untied_headdim16",
    vocab=80,
    hidden=64,
    heads=8,
    kv_heads=2,
    layers=2,
    intermediate=72,
    tie=False,
    theta=20000.0,
    head_dim=16,
    eps=1e-6,
  ),
  Case(
    "gqa2_6x3_tied_llama3",
    vocab=90,
    hidden=48,
    heads=6,
    kv_heads=3,
    layers=2,
    intermediate=64,
    tie=True,
    theta=10000.0,
    rope_scaling=_llama3(2.0, 1.0, 4.0),
  ),
]
CASE_BY_NAME = {case.name: case for case in CASES}


def _randomize(model: torch.nn.Module, seed: int) -> None:
  """Weights ~ N(0, 1/fan_in) (embeddings: 1/hidden), norm scales 1 + N(0, 0.3): O(1) logits."""
  g = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, p in model.named_parameters():  # tied weights appear once
      if p.ndim == 1:
        p.copy_(1.0 + 0.3 * torch.randn(p.shape, generator=g))
      else:  # embeddings too: tied ones are the output layer, and real ones are small
        p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(p.shape[1]))


@pytest.fixture(scope="module", params=CASES, ids=lambda c: c.name)
def hf_case(request, tmp_path_factory):
  """(case, checkpoint folder, ids, mask, transformers logits) for one random tiny Llama."""
  case: Case = request.param
  config = transformers.LlamaConfig(
    vocab_size=case.vocab,
    hidden_size=case.hidden,
    intermediate_size=case.intermediate,
    num_hidden_layers=case.layers,
    num_attention_heads=case.heads,
    num_key_value_heads=case.kv_heads,
    head_dim=case.head_dim or case.hidden // case.heads,
    rope_theta=case.theta,
    rope_scaling=case.rope_scaling,
    max_position_embeddings=64,
    tie_word_embeddings=case.tie,
    rms_norm_eps=case.eps,
    attn_implementation="eager",
  )
  seed = CASES.index(case)
  torch.manual_seed(seed)
  model = transformers.LlamaForCausalLM(config).eval()
  _randomize(model, seed)
  folder = tmp_path_factory.mktemp(case.name)
  model.save_pretrained(folder, safe_serialization=True)
  ids, mask = _batch(case.vocab, seed)
  return case, str(folder), ids, mask, _torch_logits(model, ids, mask)


def _batch(vocab: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
  """Random ids [4, SEQ]: a full row, two left-padded rows of different lengths, a right-padded row."""
  ids = np.random.default_rng(seed).integers(0, vocab, (4, SEQ)).astype(np.int32)
  mask = np.ones((4, SEQ), bool)
  mask[1, : SEQ - 37] = False
  mask[2, : SEQ - 30] = False
  mask[3, 29:] = False
  return np.where(mask, ids, 0), mask


def _torch_logits(model, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
  # Positions count real tokens only (as our model and HF generate do): left padding needs them.
  positions = np.maximum(np.cumsum(mask, axis=1) - 1, 0)
  with torch.no_grad():
    out = model(
      torch.tensor(ids.astype(np.int64)),
      attention_mask=torch.tensor(mask.astype(np.int64)),
      position_ids=torch.tensor(positions),
    )
  return out.logits.numpy()


def _compile(fn, *args):
  """Compiled `fn(*args)` with XLA's backend optimisations off: these programs run once, and on
  CPU optimising them costs several times more than running them (numerics are unaffected
  beyond float rounding)."""
  return jax.jit(fn).lower(*args).compile(compiler_options={"xla_backend_optimization_level": 0})


def _forward(model: Llama, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
  graphdef, state = nnx.split(model)
  fn = lambda state, ids, mask: nnx.merge(graphdef, state)(ids, input_mask=mask)
  return np.asarray(_compile(fn, state, ids, mask)(state, ids, mask))


def _slot_logits(
  model: Llama, ids: np.ndarray, mask: np.ndarray, layout: str, kernel: str, prefill: int = 20
) -> np.ndarray:
  """Each row decoded in its own slot of a slot cache, as the engine decodes: the row's first
  `prefill` real tokens prefilled in chunks of 8, then one real token per `decode_slots` step
  (teacher forcing), every slot at its own position, in the decode `layout` with the `kernel`
  decode attention -> logits [B, T, V] by real position (row r's position t at [r, t]; positions
  before prefill - 1 are left 0)."""
  decode_model = decode_layouts.get(model, layout)
  rows = [ids[r][mask[r]].tolist() for r in range(ids.shape[0])]
  chunks = ChunkedPrefill(model, chunk=8, keep_bytes=0, layout=decode_model if layout == "switched" else None)
  cache = SlotCache.init(model.config, len(rows), 64, keys_transposed=model.slot_keys_transposed())
  out = np.zeros(ids.shape + (model.config.vocab_size,), np.float32)
  for r, row in enumerate(rows):
    cache, hidden, _ = chunks.fill(cache, r, row[:prefill])
    out[r, prefill - 1] = np.asarray(chunks.logits(hidden))[0]
  graphdef, state = nnx.split(decode_model)
  step = jax.jit(
    lambda state, tokens, cache, active: nnx.merge(graphdef, state).decode_slots(
      tokens, cache, active, block=8, kernel=kernel
    )
  )
  for t in range(prefill, max(map(len, rows))):
    active = np.asarray([t < len(row) for row in rows])
    tokens = np.asarray([row[t] if t < len(row) else 0 for row in rows], np.int32)
    logits, cache = step(state, jnp.asarray(tokens), cache, jnp.asarray(active))
    out[active, t] = np.asarray(logits)[active]
  np.testing.assert_array_equal(np.asarray(cache.lengths), mask.sum(axis=1))
  return out


def _check_config(config, case: Case) -> None:
  assert (config.num_heads, config.num_kv_heads) == (case.heads, case.kv_heads)
  assert config.head_dim == (case.head_dim or case.hidden // case.heads)
  assert config.tie_word_embeddings == case.tie and config.rope_theta == case.theta
  assert (config.rope_scaling is None) == (case.rope_scaling is None)


@pytest.mark.parametrize("scan_layers", [True, False], ids=["scan", "loop"])
def test_logits_match_transformers(hf_case, scan_layers):
  case, folder, ids, mask, ref = hf_case
  model = load_hf_model(folder, scan_layers=scan_layers, show_progress=False)
  _check_config(model.config, case)
  diff = np.abs(_forward(model, ids, mask) - ref)
  full_err = float(diff[0].max())  # the unpadded row
  pad_err = float(diff[1:][mask[1:]].max())  # real positions of the padded rows
  print(
    f"{case.name} scan={scan_layers}: max|logit| {np.abs(ref).max():.1f}, max|diff| vs "
    f"transformers {full_err:.1e} (unpadded row), {pad_err:.1e} (padded rows)"
  )
  assert full_err <= PARITY_TOL
  assert pad_err <= PARITY_TOL


# Slot decoding on the GQA ratios 1, 3 and 8 (llama3 RoPE past its original length in two), in
# each decode layout the engine runs and with both CPU decode attentions.
SLOT_CASES = [
  ("mha_untied", "model", "xla"),
  ("gqa3_tied_llama3_headdim12", "unrolled", "per_slot"),
  ("gqa3_tied_llama3_headdim12", "switched", "xla"),
  ("mqa8_untied_llama3", "model", "per_slot"),
]


@pytest.mark.parametrize(
  "hf_case,layout,kernel",
  [(CASE_BY_NAME[n], lay, k) for n, lay, k in SLOT_CASES],
  indirect=["hf_case"],
  ids=[f"{n}-{lay}-{k}" for n, lay, k in SLOT_CASES],
)
def test_slot_decoding_matches_full_forward_and_transformers(hf_case, layout, kernel):
  case, folder, ids, mask, ref = hf_case
  model = load_hf_model(folder, scan_layers=True, show_progress=False)
  slots = _slot_logits(model, ids, mask, layout, kernel)
  full = _forward(model, ids, mask)
  cache_err = hf_err = 0.0
  for r in range(ids.shape[0]):
    ours = slots[r, 19 : mask[r].sum()]  # from the prefill's last position on
    cache_err = max(cache_err, float(np.abs(ours - full[r][mask[r]][19:]).max()))
    hf_err = max(hf_err, float(np.abs(ours - ref[r][mask[r]][19:]).max()))
  print(
    f"{case.name} {layout}/{kernel}: slot decoding max|diff| {cache_err:.1e} vs full forward, "
    f"{hf_err:.1e} vs transformers"
  )
  assert cache_err <= CACHE_TOL
  assert hf_err <= PARITY_TOL
