"""RLOO's sampler reads the policy's parameters in place: across a run of three steps (rollouts on
the decode engine, the log-probabilities, the update) no parameter is fetched to the host. Every
device-to-host fetch of a jax.Array is counted with its shape and bytes: `jax.device_get`,
`float(x)`, `x.tolist()` go through `ArrayImpl._value`; `np.asarray(x)` and its siblings read a
CPU array through the buffer protocol instead, so they are counted where they are called. (jax's
transfer guard would be the tool on an accelerator; the CPU backend does not enforce it.)"""

import importlib.util
import os
import traceback

import jax
import numpy as np
import pytest
from jax._src.array import ArrayImpl

# Compiles whole models (seconds a test): outside the smoke suite.
pytestmark = pytest.mark.entry

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _config():
  spec = importlib.util.spec_from_file_location("edit_rloo", os.path.join(REPO, "experiments", "edit_rloo.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config("tiny").unlock()
  config.total_steps = 3
  config.checkpoint_every = 0  # only the final checkpoint, a host copy by design
  config.tensorboard = False
  config.progress = False
  return config


def _caller_is_a_checkpoint() -> bool:
  """The final checkpoint's save (Orbax, by design a copy to the host) is not a step's work."""
  return any("orbax" in frame.filename for frame in traceback.extract_stack())


def test_three_rloo_steps_fetch_no_parameter_to_the_host(tmp_path, monkeypatch, bundled_data, embedded_gguf_path):
  from helpsteer_jax.train import tasks

  fetched: list[tuple[tuple[int, ...], str, int]] = []
  saved: list[tuple[tuple[int, ...], str, int]] = []

  def record(x) -> None:
    (saved if _caller_is_a_checkpoint() else fetched).append(
      (tuple(x.shape), str(x.dtype), int(x.size * x.dtype.itemsize))
    )

  original = ArrayImpl._value

  def counting(self):
    if self._npy_value is None:
      record(self)
    return original.fget(self)

  monkeypatch.setattr(ArrayImpl, "_value", property(counting))
  for name in ("asarray", "array", "asanyarray", "ascontiguousarray"):
    convert = getattr(np, name)

    def counted(x, *args, _convert=convert, **kwargs):
      if isinstance(x, jax.Array):
        record(x)
      return _convert(x, *args, **kwargs)

    monkeypatch.setattr(np, name, counted)
  config = _config()
  result = tasks.run_training(config, str(tmp_path / "run"))
  assert result.step == 3

  leaves = jax.tree.leaves(result.state.params)
  # A parameter may be fetched whole or shard by shard (as the checkpoint does).
  param_shapes = {
    (tuple(shape), str(x.dtype))
    for x in leaves
    if len(x.shape) >= 2
    for shape in [x.shape] + [shard.data.shape for shard in x.addressable_shards]
  }
  param_bytes = sum(int(x.size) * x.dtype.itemsize for x in leaves)
  fetched_bytes = sum(n for *_, n in fetched)
  print(
    f"steps: {len(fetched)} fetches, {fetched_bytes:,} bytes in all, largest "
    f"{max(fetched, key=lambda f: f[2])}; the final checkpoint: {len(saved)} fetches, "
    f"{sum(n for *_, n in saved):,} bytes; parameters {param_bytes:,} bytes in {len(leaves)} arrays"
  )
  assert not [f for f in fetched if f[:2] in param_shapes], "a parameter was fetched to the host"
  assert fetched_bytes < param_bytes / 100
  # The counters see a parameter-shaped fetch when there is one, by either path.
  shape, dtype = next(iter(param_shapes))
  np.asarray(jax.numpy.zeros(shape, dtype) + 1)
  assert fetched[-1][:2] == (shape, dtype)
  jax.device_get(jax.numpy.zeros(shape, dtype) + 2)
  assert fetched[-1][:2] == (shape, dtype)
  assert {f[:2] for f in saved} & param_shapes  # and they saw the checkpoint's parameters
