"""Host memory while loading a multi-shard checkpoint: the model's bytes plus a few tensors.

On CPU the device memory is host memory, so the loaded model's own bytes are always resident; what
the streaming loader promises is that on top of them it holds only a few tensors at a time, never
a second copy of the model (which is what reading the whole checkpoint first costs). Measured in
fresh single-device processes, from the resident size before the load to the peak (VmHWM, reset
just before loading) after it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from helpsteer_jax.checkpoints.hf import INDEX_NAME
from helpsteer_jax.checkpoints.param_map import llama_tensor_mappings
from helpsteer_jax.checkpoints.safetensors_io import write_safetensors
from helpsteer_jax.models.config import LlamaConfig, to_hf_dict

pytestmark = pytest.mark.entry  # every test runs an entry point in a subprocess

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MB = 1e6

# 6 layers of 44.6 MB, a 29.4 MB embedding and lm_head: 329 MB in 57 tensors, none above 30 MB.
CONFIG = LlamaConfig(
  vocab_size=7168,
  hidden_size=1024,
  intermediate_size=2816,
  num_layers=6,
  num_heads=8,
  num_kv_heads=2,
  head_dim=128,
)
SHARD_BYTES = 64 * 10**6

# Runs in a fresh process: `python script.py FOLDER MODE` prints one JSON line.
HELPER = textwrap.dedent('''
    import json, resource, sys, time

    import jax
    import jax.numpy as jnp
    import numpy as np
    from flax import nnx

    from helpsteer_jax.checkpoints.hf import SafetensorsFolder, load_hf_model, read_config
    from helpsteer_jax.checkpoints.param_map import llama_tensor_mappings
    from helpsteer_jax.checkpoints.streaming import build_model


    def status(key):
      with open("/proc/self/status") as f:
        for line in f:
          if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
      raise KeyError(key)


    class InMemory:
      """The whole checkpoint read into host arrays first: the naive loader."""

      def __init__(self, folder):
        files = SafetensorsFolder(folder)
        self.tensors = {name: files.read(name) for name in files.names()}

      def names(self):
        return list(self.tensors)

      def read(self, name):
        return self.tensors[name]

      def where(self, name):
        return "memory"


    folder, mode = sys.argv[1], sys.argv[2]
    jax.jit(lambda x: x + 1)(jnp.ones(4)).block_until_ready()  # backend up before measuring
    try:
      with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM to the current resident size
      peak_source = "VmHWM"
    except OSError:
      peak_source = "ru_maxrss"
    before = status("VmRSS")
    start = time.perf_counter()
    if mode == "stream":
      model = load_hf_model(folder, show_progress=False)
    else:
      config = read_config(folder)
      model = build_model(config, InMemory(folder), llama_tensor_mappings(config), show_progress=False)
    params = nnx.state(model, nnx.Param)
    jax.block_until_ready(params)
    seconds = time.perf_counter() - start
    peak = status("VmHWM") if peak_source == "VmHWM" else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    # Every layer slot of the stacked parameters holds its own layer (the in-place fills landed).
    fills = [float(x) for x in np.asarray(model.layers.attn.q_proj[:, 0, 0, 0])]
    print(json.dumps({
        "before": before, "peak": peak, "after": status("VmRSS"), "seconds": seconds,
        "peak_source": peak_source, "model_bytes": sum(x.nbytes for x in jax.tree.leaves(params)),
        "devices": jax.device_count(), "q_proj_fills": fills,
    }))
''')


def _fill_value(index: int) -> float:
  return 0.001 * (index + 1)


def _write_checkpoint(folder: str) -> tuple[int, int]:
  """Writes CONFIG as shards of <= SHARD_BYTES with an index; returns (total, largest) bytes."""
  os.makedirs(folder)
  mappings = llama_tensor_mappings(CONFIG)
  sizes = [int(np.prod(m.hf_shape)) * 4 for m in mappings]
  shards: list[list[int]] = [[]]
  used = 0
  for i, size in enumerate(sizes):
    if shards[-1] and used + size > SHARD_BYTES:
      shards.append([])
      used = 0
    shards[-1].append(i)
    used += size
  weight_map = {}
  for s, members in enumerate(shards):
    name = f"model-{s + 1:05d}-of-{len(shards):05d}.safetensors"
    pending = [
      (
        mappings[i].hf_name,
        mappings[i].hf_shape,
        np.dtype(np.float32),
        lambda i=i: np.full(mappings[i].hf_shape, _fill_value(i), np.float32),
      )
      for i in members
    ]
    write_safetensors(os.path.join(folder, name), pending)
    weight_map.update({mappings[i].hf_name: name for i in members})
  with open(os.path.join(folder, INDEX_NAME), "w") as f:
    json.dump({"metadata": {"total_size": sum(sizes)}, "weight_map": weight_map}, f)
  with open(os.path.join(folder, "config.json"), "w") as f:
    json.dump(to_hf_dict(CONFIG), f)
  return sum(sizes), max(sizes)


def _single_device_env() -> dict[str, str]:
  env = dict(os.environ)
  flags = [f for f in env.get("XLA_FLAGS", "").split() if "xla_force_host_platform_device_count" not in f]
  env["XLA_FLAGS"] = " ".join(flags)
  env["JAX_PLATFORMS"] = "cpu"
  env["PYTHONPATH"] = os.pathsep.join([REPO] + [p for p in [env.get("PYTHONPATH")] if p])
  return env


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs Linux /proc")
def test_streaming_load_holds_a_few_tensors_beyond_the_model(tmp_path):
  folder = str(tmp_path / "ckpt")
  total, largest = _write_checkpoint(folder)
  shards = [n for n in os.listdir(folder) if n.endswith(".safetensors")]
  assert len(shards) >= 5 and largest <= 30 * MB < total / 10

  script = tmp_path / "measure.py"
  script.write_text(HELPER)
  # Both loads at once (two cores); each process measures only itself.
  runs = {
    mode: subprocess.Popen(
      [sys.executable, str(script), folder, mode],
      env=_single_device_env(),
      stdout=subprocess.PIPE,
      stderr=subprocess.PIPE,
      text=True,
    )
    for mode in ("stream", "naive")
  }
  results = {}
  for mode, proc in runs.items():
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, f"{mode} load failed:\n{err[-3000:]}"
    results[mode] = json.loads(out.strip().splitlines()[-1])

  for mode, r in results.items():
    assert r["devices"] == 1 and r["model_bytes"] == total
    layer_fills = [_fill_value(1 + 9 * layer + 1) for layer in range(CONFIG.num_layers)]
    np.testing.assert_allclose(r["q_proj_fills"], layer_fills, rtol=1e-6)  # q_proj is 2nd per layer
  stream, naive = results["stream"], results["naive"]
  stream_increase = stream["peak"] - stream["before"]
  naive_increase = naive["peak"] - naive["before"]
  allowed = total + 3 * largest + 32 * MB
  print(
    f"model {total / MB:.0f} MB in {len(shards)} shards, largest tensor {largest / MB:.1f} MB; "
    f"peak RSS increase: streaming {stream_increase / MB:.0f} MB "
    f"(= model + {(stream_increase - total) / largest:.1f} x largest; allowed {allowed / MB:.0f} MB, "
    f"{stream['seconds']:.1f} s), whole checkpoint read first {naive_increase / MB:.0f} MB "
    f"({naive_increase / total:.2f} x model); measured with {stream['peak_source']}"
  )
  assert stream_increase <= allowed
  assert naive_increase >= 1.8 * total  # the contrast: a second copy of the model
  assert stream_increase <= naive_increase - 0.6 * total
