"""Broken HF checkpoints fail with one `CheckpointError` that names the file or tensor at fault."""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Callable

import numpy as np
import pytest

from helpsteer_jax.checkpoints.hf import INDEX_NAME, SINGLE_NAME, load_hf_model
from helpsteer_jax.checkpoints.param_map import llama_tensor_mappings
from helpsteer_jax.checkpoints.safetensors_io import CheckpointError, SafetensorsFile, write_safetensors
from helpsteer_jax.models.config import LlamaConfig, to_hf_dict

CONFIG = LlamaConfig(
  vocab_size=64,
  hidden_size=32,
  intermediate_size=48,
  num_layers=2,
  num_heads=4,
  num_kv_heads=2,
  head_dim=8,
  rope_theta=10000.0,
)
SHARD_1, SHARD_2 = "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"
Q_PROJ = "model.layers.1.self_attn.q_proj.weight"
K_PROJ = "model.layers.0.self_attn.k_proj.weight"


def _tensors(config: LlamaConfig = CONFIG) -> dict[str, np.ndarray]:
  rng = np.random.default_rng(0)
  return {m.hf_name: rng.standard_normal(m.hf_shape).astype(np.float32) for m in llama_tensor_mappings(config)}


def _write(path: str, tensors: dict[str, np.ndarray]) -> None:
  write_safetensors(path, [(n, t.shape, t.dtype, lambda t=t: t) for n, t in tensors.items()])


def _write_config(folder: str, **changes) -> None:
  hf = to_hf_dict(CONFIG)
  hf.update(changes)
  with open(os.path.join(folder, "config.json"), "w") as f:
    json.dump(hf, f)


def _single(folder: str, tensors: dict[str, np.ndarray] | None = None) -> None:
  """A one-file checkpoint (config.json + model.safetensors)."""
  os.makedirs(folder, exist_ok=True)
  _write_config(folder)
  _write(os.path.join(folder, SINGLE_NAME), _tensors() if tensors is None else tensors)


def _sharded(folder: str) -> None:
  """Two shards split after layer 0, and their index."""
  os.makedirs(folder, exist_ok=True)
  _write_config(folder)
  tensors = _tensors()
  first = {n: t for n, t in tensors.items() if n.startswith(("model.embed", "model.layers.0."))}
  second = {n: t for n, t in tensors.items() if n not in first}
  _write(os.path.join(folder, SHARD_1), first)
  _write(os.path.join(folder, SHARD_2), second)
  weight_map = {**{n: SHARD_1 for n in first}, **{n: SHARD_2 for n in second}}
  with open(os.path.join(folder, INDEX_NAME), "w") as f:
    json.dump({"metadata": {}, "weight_map": weight_map}, f)


def _edit_single(folder: str, edit: Callable[[dict[str, np.ndarray]], None]) -> None:
  tensors = _tensors()
  edit(tensors)
  _single(folder, tensors)


def _set(folder: str, name: str, data: bytes) -> None:
  with open(os.path.join(folder, name), "wb") as f:
    f.write(data)


def _truncate(path: str, drop: int) -> None:
  size = os.path.getsize(path)
  with open(path, "r+b") as f:
    f.truncate(size - drop)


def _header_of(path: str) -> bytes:
  with open(path, "rb") as f:
    (n,) = struct.unpack("<Q", f.read(8))
    return f.read(n)


def _replace_header(path: str, header: bytes) -> None:
  """Swaps in another header of the same length (so the data offsets stay where they were)."""
  old = _header_of(path)
  assert len(header) <= len(old)
  header += b" " * (len(old) - len(header))
  with open(path, "r+b") as f:
    f.seek(8)
    f.write(header)


def _bad_dtype_header(path: str) -> None:
  header = json.loads(_header_of(path))
  header[Q_PROJ]["dtype"] = "Q4_K"
  _replace_header(path, json.dumps(header, separators=(",", ":")).encode())


def _rewrite_index(folder: str, edit: Callable[[dict[str, str]], None]) -> None:
  path = os.path.join(folder, INDEX_NAME)
  with open(path) as f:
    index = json.load(f)
  edit(index["weight_map"])
  with open(path, "w") as f:
    json.dump(index, f)


def _duplicate_tensor(folder: str) -> None:
  first = SafetensorsFile(os.path.join(folder, SHARD_1))
  tensors = {n: first.read(n) for n in first.keys()}
  tensors[Q_PROJ] = np.zeros((32, 32), np.float32)
  _write(os.path.join(folder, SHARD_1), tensors)


def _mistral(folder: str) -> None:
  _single(folder)
  _write_config(folder, model_type="mistral", architectures=["MistralForCausalLM"], sliding_window=4096)


def _gpt2(folder: str) -> None:
  os.makedirs(folder)
  _set(
    folder,
    "config.json",
    json.dumps(
      {
        "model_type": "gpt2",
        "architectures": ["GPT2LMHeadModel"],
        "n_embd": 32,
        "n_layer": 2,
        "n_head": 4,
        "vocab_size": 64,
      }
    ).encode(),
  )
  _write(os.path.join(folder, SINGLE_NAME), {"wte.weight": np.zeros((64, 32), np.float32)})


def _config_change(**changes):
  def make(folder: str) -> None:
    _single(folder)
    _write_config(folder, **changes)

  return make


def _then(build: Callable[[str], None], *steps: Callable[[str], None]):
  def make(folder: str) -> None:
    build(folder)
    for step in steps:
      step(folder)

  return make


def _remove(*names: str):
  return lambda folder: [os.remove(os.path.join(folder, n)) for n in names]


# (id, how to break a checkpoint folder, strings the one error message must contain)
CASES = [
  ("missing_folder", lambda folder: None, ["ckpt", "no such directory"]),
  ("folder_is_a_file", lambda folder: open(folder, "w").close(), ["ckpt", "is a file"]),
  ("missing_config", _then(_single, _remove("config.json")), ["config.json", "file not found"]),
  (
    "corrupt_config",
    _then(_single, lambda f: _set(f, "config.json", b'{"model_type": "llama",')),
    ["config.json", "not valid JSON"],
  ),
  (
    "config_not_an_object",
    _then(_single, lambda f: _set(f, "config.json", b"[1, 2]")),
    ["config.json", "expected a JSON object"],
  ),
  ("gpt2_config", _gpt2, ["config.json", "model_type='gpt2'", "expected a Llama"]),
  ("mistral_sliding_window", _mistral, ["config.json", "model_type='mistral'", "expected a Llama"]),
  (
    "config_missing_keys",
    _then(
      _single,
      lambda f: _set(
        f, "config.json", json.dumps({k: v for k, v in to_hf_dict(CONFIG).items() if k != "hidden_size"}).encode()
      ),
    ),
    ["config.json", "missing required keys", "hidden_size"],
  ),
  ("gelu_mlp", _config_change(hidden_act="gelu"), ["config.json", "hidden_act='gelu'", "silu"]),
  ("yarn_rope", _config_change(rope_scaling={"rope_type": "yarn", "factor": 4.0}), ["config.json", "'yarn'", "llama3"]),
  (
    "llama3_rope_incomplete",
    _config_change(rope_scaling={"rope_type": "llama3", "factor": 8.0}),
    ["config.json", "low_freq_factor", "original_max_position_embeddings"],
  ),
  ("kv_heads_do_not_divide", _config_change(num_key_value_heads=3), ["config.json", "num_heads=4", "num_kv_heads=3"]),
  (
    "no_safetensors",
    _then(_single, _remove(SINGLE_NAME), lambda f: _set(f, "pytorch_model.bin", b"\0" * 16)),
    ["ckpt", "no model.safetensors", ".bin"],
  ),
  (
    "truncated_file",
    _then(_single, lambda f: _truncate(os.path.join(f, SINGLE_NAME), 100)),
    [SINGLE_NAME, "truncated", "lm_head.weight"],
  ),
  ("truncated_shard", _then(_sharded, lambda f: _truncate(os.path.join(f, SHARD_2), 4)), [SHARD_2, "truncated"]),
  (
    "shorter_than_header_size",
    _then(_single, lambda f: _set(f, SINGLE_NAME, b"\x05\x00")),
    [SINGLE_NAME, "not a safetensors file"],
  ),
  (
    "garbage_header",
    _then(_single, lambda f: _set(f, SINGLE_NAME, os.urandom(4096))),
    [SINGLE_NAME, "corrupt safetensors header"],
  ),
  (
    "header_not_json",
    _then(_single, lambda f: _set(f, SINGLE_NAME, struct.pack("<Q", 24) + b"this is not a JSON header" + b"\0" * 64)),
    [SINGLE_NAME, "corrupt safetensors header"],
  ),
  (
    "unknown_dtype_in_header",
    _then(_single, lambda f: _bad_dtype_header(os.path.join(f, SINGLE_NAME))),
    [SINGLE_NAME, Q_PROJ, "dtype 'Q4_K'", "BF16"],
  ),
  ("index_names_missing_shard", _then(_sharded, _remove(SHARD_2)), [INDEX_NAME, SHARD_2, "not in"]),
  ("corrupt_index", _then(_sharded, lambda f: _set(f, INDEX_NAME, b'{"weight_map": 3}')), [INDEX_NAME, "weight_map"]),
  (
    "index_points_at_wrong_shard",
    _then(_sharded, lambda f: _rewrite_index(f, lambda wm: wm.__setitem__(Q_PROJ, SHARD_1))),
    [INDEX_NAME, Q_PROJ, SHARD_1],
  ),
  ("tensor_in_two_shards", _then(_sharded, _duplicate_tensor), [SHARD_1, SHARD_2, Q_PROJ]),
  ("missing_tensor", lambda f: _edit_single(f, lambda t: t.pop(Q_PROJ)), ["ckpt", "missing 1 tensor", Q_PROJ]),
  (
    "config_has_more_layers",
    _then(_single, lambda f: _write_config(f, num_hidden_layers=3)),
    ["missing 9 tensor", "model.layers.2."],
  ),
  (
    "wrong_shape",
    lambda f: _edit_single(f, lambda t: t.__setitem__(K_PROJ, t[K_PROJ].T.copy())),
    [SINGLE_NAME, K_PROJ, "has shape (32, 16), the config expects (16, 32)"],
  ),
  (
    "unexpected_tensor",
    lambda f: _edit_single(
      f, lambda t: t.__setitem__("model.layers.0.self_attn.q_proj.bias", np.zeros(32, np.float32))
    ),
    ["model.layers.0.self_attn.q_proj.bias", SINGLE_NAME, "no place for"],
  ),
  (
    "tied_config_with_lm_head",
    _then(_single, lambda f: _write_config(f, tie_word_embeddings=True)),
    ["lm_head.weight", SINGLE_NAME, "ties the output layer"],
  ),
  (
    "integer_weights",
    lambda f: _edit_single(f, lambda t: t.__setitem__(Q_PROJ, np.zeros((32, 32), np.int32))),
    [SINGLE_NAME, Q_PROJ, "int32", "floating-point"],
  ),
]


@pytest.mark.parametrize("build,expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_broken_checkpoint_fails_clearly(tmp_path, build, expected):
  folder = str(tmp_path / "ckpt")
  build(folder)
  with pytest.raises(CheckpointError) as info:
    load_hf_model(folder, show_progress=False)
  message = str(info.value)
  assert isinstance(info.value, ValueError)
  for part in expected:
    assert part in message, f"{part!r} not in: {message}"


@pytest.mark.parametrize("make", [_single, _sharded], ids=["single", "sharded"])
def test_intact_checkpoint_loads(tmp_path, make):
  """The unbroken folders the cases start from do load (so each case fails for its own reason)."""
  folder = str(tmp_path / "ckpt")
  make(folder)
  model = load_hf_model(folder, scan_layers=False, show_progress=False)
  expected = _tensors()["model.layers.1.mlp.down_proj.weight"]
  np.testing.assert_array_equal(np.asarray(model.layers[1].mlp.down_proj[...]), expected.T)
