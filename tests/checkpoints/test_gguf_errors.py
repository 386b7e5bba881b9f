"""GGUF import on tiny files written here: exact round trips, and every broken file named in its error.

Files are written the way llama.cpp's converter writes them (q/k rows permuted for interleaved
RoPE, numpy row-major `[out, in]` matrices), so a load that forgot to undo the permutation, or read a
tensor under the wrong name, shows up as a parameter mismatch.
"""

import gguf
import numpy as np
import pytest
from flax import nnx
from gguf import GGMLQuantizationType as QT

from helpsteer_jax.checkpoints.gguf import (
  ROPE_FREQS,
  config_from_gguf,
  gguf_name_of,
  llama3_rope_divisors,
  load_gguf,
)
from helpsteer_jax.checkpoints.gguf_reader import GGUFFile
from helpsteer_jax.checkpoints.param_map import llama_tensor_mappings
from helpsteer_jax.checkpoints.safetensors_io import CheckpointError
from helpsteer_jax.checkpoints.streaming import variable_paths
from helpsteer_jax.models.config import RopeScaling, get_preset
from helpsteer_jax.models.layers import rope_inverse_frequencies

CONFIG = get_preset("tiny", bos_token_id=1, eos_token_id=(2,))


def permute_like_llama_cpp(w: np.ndarray, heads: int) -> np.ndarray:
  """llama.cpp convert_hf_to_gguf's q/k permutation (halves -> interleaved pairs per head)."""
  return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def permute_back(w: np.ndarray, heads: int) -> np.ndarray:
  """The inverse of `permute_like_llama_cpp`, written independently of the loader's."""
  return w.reshape(heads, w.shape[0] // heads // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def hf_tensors(config, seed: int = 0) -> dict[str, np.ndarray]:
  rng = np.random.default_rng(seed)
  return {m.hf_name: rng.standard_normal(m.hf_shape).astype(np.float32) for m in llama_tensor_mappings(config)}


def write_gguf(
  path, config, tensors, *, arch="llama", types=None, drop=(), extra=None, rope_freqs=None, raw=None, kv=None
):
  """Writes `tensors` (HF names and layout) as a llama GGUF. `types` maps GGUF names to F16/Q8_0."""
  types, extra, raw = types or {}, extra or {}, raw or {}
  w = gguf.GGUFWriter(str(path), arch)
  w.add_context_length(config.max_position_embeddings)
  w.add_embedding_length(config.hidden_size)
  w.add_feed_forward_length(config.intermediate_size)
  w.add_block_count(config.num_layers)
  w.add_head_count(config.num_heads)
  w.add_head_count_kv(config.num_kv_heads)
  w.add_rope_dimension_count(config.head_dim)
  w.add_rope_freq_base(config.rope_theta)
  w.add_layer_norm_rms_eps(config.rms_norm_eps)
  w.add_vocab_size(config.vocab_size)
  w.add_bos_token_id(1)
  w.add_eos_token_id(2)
  for key, value in (kv or {}).items():
    w.add_uint32(key, value)
  for hf, value in tensors.items():
    name = gguf_name_of(hf)
    if name in drop:
      continue
    if hf.endswith("q_proj.weight"):
      value = permute_like_llama_cpp(value, config.num_heads)
    elif hf.endswith("k_proj.weight"):
      value = permute_like_llama_cpp(value, config.num_kv_heads)
    kind = types.get(name, "F32")
    if kind == "F16":
      w.add_tensor(name, value.astype(np.float16))
    elif kind == "F32":
      w.add_tensor(name, value)
    else:
      w.add_tensor(name, gguf.quants.quantize(value, QT[kind]), raw_dtype=QT[kind])
  for name, (data, qtype) in raw.items():
    w.add_tensor(name, data, raw_dtype=qtype)
  for name, value in extra.items():
    w.add_tensor(name, value)
  if rope_freqs is not None:
    w.add_tensor(ROPE_FREQS, rope_freqs.astype(np.float32))
  w.write_header_to_file()
  w.write_kv_data_to_file()
  w.write_tensors_to_file()
  w.close()
  return str(path)


def model_params(model) -> dict:
  return {p: np.asarray(v[...]) for p, v in variable_paths(nnx.state(model)).items()}


def expected_params(config, tensors) -> dict:
  out = {}
  for m in llama_tensor_mappings(config):
    value = m.to_model(tensors[m.hf_name])
    if m.layer is None:
      out[m.path] = value
    else:
      out.setdefault(m.path, [None] * config.num_layers)[m.layer] = value
  return {p: np.stack(v) if isinstance(v, list) else v for p, v in out.items()}


@pytest.fixture(scope="module")
def tensors():
  return hf_tensors(CONFIG)


@pytest.fixture
def good_file(tmp_path, tensors):
  return write_gguf(tmp_path / "tiny.gguf", CONFIG, tensors)


# -- round trips --------------------------------------------------------------------------------


def test_f32_file_loads_exactly(good_file, tensors):
  model, tokenizer = load_gguf(good_file, show_progress=False)
  assert tokenizer is None  # the file has no tokenizer.ggml.* metadata
  for field in (
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_layers",
    "num_heads",
    "num_kv_heads",
    "head_dim",
    "rope_theta",
    "tie_word_embeddings",
  ):
    assert getattr(model.config, field) == getattr(CONFIG, field), field
  assert model.config.rms_norm_eps == pytest.approx(CONFIG.rms_norm_eps)
  assert model.config.bos_token_id == 1 and model.config.eos_token_id == (2,)
  got, want = model_params(model), expected_params(CONFIG, tensors)
  assert set(got) == set(want)
  for path in want:
    np.testing.assert_array_equal(got[path], want[path], err_msg=str(path))


def test_quantized_and_f16_tensors_dequantize(tmp_path, tensors):
  types = {
    "blk.0.attn_q.weight": "Q8_0",
    "blk.1.attn_k.weight": "Q4_0",
    "blk.0.ffn_down.weight": "Q8_0",
    "token_embd.weight": "F16",
    "output.weight": "Q4_1",
  }
  path = write_gguf(tmp_path / "q.gguf", CONFIG, tensors, types=types)
  model, _ = load_gguf(path, show_progress=False)
  assert model.config.param_dtype == "float32"  # a quantized file loads as float32
  got = model_params(model)
  q = np.asarray(got[("layers", "attn", "q_proj")][0]).reshape(CONFIG.hidden_size, -1).T
  # Quantization is applied to the permuted rows; undoing the permutation must follow dequantizing.
  permuted = permute_like_llama_cpp(tensors["model.layers.0.self_attn.q_proj.weight"], CONFIG.num_heads)
  roundtrip = gguf.quants.dequantize(gguf.quants.quantize(permuted, QT.Q8_0), QT.Q8_0)
  np.testing.assert_array_equal(q, permute_back(roundtrip, CONFIG.num_heads))
  err = np.abs(q - tensors["model.layers.0.self_attn.q_proj.weight"]).max()
  assert 0 < err < 0.05  # Q8_0 of unit normals: small but nonzero error
  np.testing.assert_array_equal(
    got[("embed",)], tensors["model.embed_tokens.weight"].astype(np.float16).astype(np.float32)
  )


def test_header_parser_agrees_with_gguf_package(tmp_path, tensors):
  types = {"blk.0.attn_q.weight": "Q8_0", "blk.1.attn_v.weight": "Q5_0", "token_embd.weight": "F16"}
  path = write_gguf(tmp_path / "mixed.gguf", CONFIG, tensors, types=types, kv={"test.extra": 7})
  ours, theirs = GGUFFile(path), gguf.GGUFReader(path)
  for key, field in theirs.fields.items():
    if not key.startswith("GGUF."):
      assert ours.metadata(key) == field.contents(), key
  assert list(ours.tensors) == [t.name for t in theirs.tensors]
  for t in theirs.tensors:
    mine = ours.tensors[t.name]
    assert mine.tensor_type == t.tensor_type and mine.shape == tuple(int(d) for d in t.shape)
    assert mine.data.dtype == t.data.dtype and mine.data.shape == t.data.shape
    np.testing.assert_array_equal(mine.data, t.data, err_msg=t.name)
  assert GGUFFile.of(theirs).path == path


def test_tied_embeddings_when_no_output_tensor(tmp_path):
  config = CONFIG.replace(tie_word_embeddings=True)
  path = write_gguf(tmp_path / "tied.gguf", config, hf_tensors(config))
  model, _ = load_gguf(path, show_progress=False)
  assert model.config.tie_word_embeddings and not hasattr(model, "lm_head")


def test_llama3_rope_scaling_from_rope_freqs(tmp_path, tensors):
  """llama.cpp stores Llama-3.1 scaling only as per-frequency divisors; the config recovers it."""
  meta = RopeScaling(8.0, 1.0, 4.0, 8192)
  divisors = llama3_rope_divisors(CONFIG.head_dim, CONFIG.rope_theta, meta)
  assert divisors.min() == 1.0 and divisors.max() == 8.0 and ((divisors > 1) & (divisors < 8)).any()
  # The divisors are exactly what the model's own RoPE divides the frequencies by.
  base = rope_inverse_frequencies(CONFIG.head_dim, CONFIG.rope_theta, None)
  scaled = rope_inverse_frequencies(CONFIG.head_dim, CONFIG.rope_theta, meta)
  np.testing.assert_allclose(np.asarray(base) / np.asarray(scaled), divisors, rtol=1e-5)
  path = write_gguf(tmp_path / "rope.gguf", CONFIG, tensors, rope_freqs=divisors)
  assert config_from_gguf(path).rope_scaling == meta
  model, _ = load_gguf(path, show_progress=False)  # rope_freqs is consumed, not an unexpected tensor
  assert model.config.rope_scaling == meta
  # Other band edges are read from metadata when the file has them.
  short = RopeScaling(4.0, 1.0, 4.0, 64)
  kv = {"llama.rope.scaling.original_context_length": 64}
  path = write_gguf(
    tmp_path / "rope64.gguf",
    CONFIG,
    tensors,
    kv=kv,
    rope_freqs=llama3_rope_divisors(CONFIG.head_dim, CONFIG.rope_theta, short),
  )
  assert config_from_gguf(path).rope_scaling == short


def test_config_overrides(good_file):
  config = config_from_gguf(good_file, param_dtype="bfloat16", scan_layers=False)
  assert config.param_dtype == "bfloat16" and config.dtype == "bfloat16" and not config.scan_layers
  model, _ = load_gguf(good_file, show_progress=False, scan_layers=False)
  assert len(model.layers) == CONFIG.num_layers


# -- errors -------------------------------------------------------------------------------------


def test_not_a_gguf_file(tmp_path):
  path = tmp_path / "model.gguf"
  path.write_bytes(b'{"not": "a gguf file"}')
  with pytest.raises(CheckpointError, match=r"model\.gguf: not a GGUF file"):
    load_gguf(str(path))
  with pytest.raises(CheckpointError, match="file not found"):
    load_gguf(str(tmp_path / "missing.gguf"))


@pytest.mark.parametrize("keep", [0.02, 0.5, 0.999])
def test_truncated_file(good_file, keep):
  data = open(good_file, "rb").read()
  cut = max(8, int(len(data) * keep))
  with open(good_file, "wb") as f:
    f.write(data[:cut])
  with pytest.raises(CheckpointError, match=r"tiny\.gguf: (corrupt or truncated|truncated)"):
    load_gguf(good_file, show_progress=False)


def test_non_llama_architecture(tmp_path, tensors):
  path = write_gguf(tmp_path / "gpt2.gguf", CONFIG, {}, arch="gpt2")
  with pytest.raises(CheckpointError, match=r"gpt2\.gguf: general\.architecture is 'gpt2'; expected 'llama'"):
    load_gguf(path, show_progress=False)


def test_unsupported_tensor_type(tmp_path, tensors):
  rows, cols = CONFIG.intermediate_size, CONFIG.hidden_size
  block, nbytes = gguf.GGML_QUANT_SIZES[QT.Q8_1]
  raw = np.zeros((rows, cols // block * nbytes), np.uint8)
  path = write_gguf(
    tmp_path / "q81.gguf", CONFIG, tensors, drop=("blk.1.ffn_up.weight",), raw={"blk.1.ffn_up.weight": (raw, QT.Q8_1)}
  )
  with pytest.raises(CheckpointError) as e:
    load_gguf(path, show_progress=False)
  message = str(e.value)
  assert "q81.gguf" in message and "'blk.1.ffn_up.weight'" in message and "Q8_1" in message


def test_missing_tensor(tmp_path, tensors):
  path = write_gguf(tmp_path / "missing.gguf", CONFIG, tensors, drop=("blk.1.ffn_up.weight",))
  with pytest.raises(CheckpointError) as e:
    load_gguf(path, show_progress=False)
  message = str(e.value)
  assert message.startswith(path) and "blk.1.ffn_up.weight (model.layers.1.mlp.up_proj.weight)" in message


def test_unexpected_tensor(tmp_path, tensors):
  bias = np.zeros(CONFIG.num_heads * CONFIG.head_dim, np.float32)
  path = write_gguf(tmp_path / "bias.gguf", CONFIG, tensors, extra={"blk.0.attn_q.bias": bias})
  expected = r"bias\.gguf: 1 tensor\(s\) a Llama model has no place for.*blk\.0\.attn_q\.bias"
  with pytest.raises(CheckpointError, match=expected):
    load_gguf(path, show_progress=False)


def test_shape_mismatch_names_tensor(tmp_path, tensors):
  wrong = dict(tensors)
  wrong["model.layers.0.mlp.up_proj.weight"] = np.zeros((CONFIG.intermediate_size - 32, CONFIG.hidden_size), np.float32)
  path = write_gguf(tmp_path / "shape.gguf", CONFIG, wrong)
  with pytest.raises(CheckpointError) as e:
    load_gguf(path, show_progress=False)
  message = str(e.value)
  assert "shape.gguf" in message and "blk.0.ffn_up.weight" in message
  assert f"expects {(CONFIG.intermediate_size, CONFIG.hidden_size)}" in message


@pytest.mark.parametrize(
  "divisors",
  [
    np.linspace(1.0, 3.0, CONFIG.head_dim // 2),
    # Real llama3 divisors, but for band edges the file does not state (original length 64).
    llama3_rope_divisors(CONFIG.head_dim, CONFIG.rope_theta, RopeScaling(4.0, 1.0, 4.0, 64)),
  ],
)
def test_rope_freqs_that_do_not_match_llama3(tmp_path, tensors, divisors):
  path = write_gguf(tmp_path / "odd_rope.gguf", CONFIG, tensors, rope_freqs=divisors)
  with pytest.raises(CheckpointError, match=r"odd_rope\.gguf: tensor 'rope_freqs\.weight' does not match"):
    config_from_gguf(path)


def test_missing_metadata_key(tmp_path):
  w = gguf.GGUFWriter(str(tmp_path / "bare.gguf"), "llama")
  w.add_block_count(2)
  w.write_header_to_file()
  w.write_kv_data_to_file()
  w.write_tensors_to_file()
  w.close()
  expected = r"bare\.gguf: GGUF metadata key 'llama\.embedding_length' is missing"
  with pytest.raises(CheckpointError, match=expected):
    config_from_gguf(str(tmp_path / "bare.gguf"))
