"""RLOO's sampler reads the policy's parameters in place: across a run of three steps (rollouts on
the decode engine, the log-probabilities, the update) no parameter is fetched to the host. Every
device-to-host fetch of a jax.Array (`np.asarray`, `jax.device_get`, `float(x)`: all go through
`ArrayImpl._value`) is counted, with its shape and bytes."""

import importlib.util
import os

import jax
import numpy as np
from flax import nnx
from jax._src.array import ArrayImpl

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _config():
  spec = importlib.util.spec_from_file_location("edit_rloo", os.path.join(REPO, "experiments", "edit_rloo.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config("tiny").unlock()
  config.total_steps = 3
  config.checkpoint_every = 0  # a checkpoint is a host copy by design; between steps there is none
  config.tensorboard = False
  config.progress = False
  return config


def test_three_rloo_steps_fetch_no_parameter_to_the_host(tmp_path, monkeypatch, bundled_data, embedded_gguf_path):
  from helpsteer_jax.train import tasks

  fetched: list[tuple[tuple[int, ...], str, int]] = []
  original = ArrayImpl._value

  def counting(self):
    if self._npy_value is None:
      fetched.append((tuple(self.shape), str(self.dtype), int(self.size * self.dtype.itemsize)))
    return original.fget(self)

  monkeypatch.setattr(ArrayImpl, "_value", property(counting))
  config = _config()
  result = tasks.run_training(config, str(tmp_path / "run"))
  assert result.step == 3

  params = nnx.state(tasks.make_task(config).abstract_model(None), nnx.Param)
  leaves = jax.tree.leaves(params)
  param_shapes = {(tuple(x.shape), str(x.dtype)) for x in leaves if len(x.shape) >= 2}
  param_bytes = sum(int(np.prod(x.shape)) * np.dtype(x.dtype).itemsize for x in leaves)
  fetched_bytes = sum(n for *_, n in fetched)
  print(f"{len(fetched)} fetches, {fetched_bytes:,} bytes in all; parameters {param_bytes:,} bytes "
        f"in {len(leaves)} arrays; largest fetch {max(fetched, key=lambda f: f[2])}")
  assert not [f for f in fetched if f[:2] in param_shapes], "a parameter was fetched to the host"
  assert fetched_bytes < param_bytes / 100
  # The counter sees a parameter-shaped fetch when there is one.
  shape, dtype = next(iter(param_shapes))
  np.asarray(jax.numpy.zeros(shape, dtype))
  assert fetched[-1][:2] == (shape, dtype)
