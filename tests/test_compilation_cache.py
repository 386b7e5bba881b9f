"""The persistent compilation cache that every command turns on (helpsteer_jax/compilation_cache.py):
where it goes, how it is turned off, and that a second process loads what the first compiled."""

import json
import os
import subprocess
import sys

import pytest

from helpsteer_jax import compilation_cache as cc

# A program compiled in a fresh process with the cache turned on as a command would turn it on;
# prints the directory used and the process's cache hits.
PROGRAM = r"""
import json, jax, jax.numpy as jnp
from helpsteer_jax import compilation_cache
hits = []
jax.monitoring.register_event_listener(lambda e, **k: hits.append(e) if e == "/jax/compilation_cache/cache_hits" else None)
directory = compilation_cache.enable()
f = jax.jit(lambda x: jnp.tanh(x @ x.T).sum(axis=1) * 3.0)
f(jnp.ones((64, 64))).block_until_ready()
print(json.dumps({"directory": directory, "hits": len(hits)}))
"""


def run_program(env: dict) -> dict:
  environ = {k: v for k, v in os.environ.items() if k != cc.JAX_ENV}
  environ.update(env)
  done = subprocess.run([sys.executable, "-c", PROGRAM], env=environ, capture_output=True, text=True, check=True)
  return json.loads(done.stdout.strip().splitlines()[-1])


def test_directory_from_the_environment(tmp_path):
  assert cc.directory_from_env({"XDG_CACHE_HOME": str(tmp_path)}) == str(tmp_path / "helpsteer_jax" / "xla")
  assert cc.directory_from_env({"HOME": str(tmp_path)}).endswith(os.path.join(".cache", "helpsteer_jax", "xla"))
  for off in ("off", "0", "", "None", "false"):
    assert cc.directory_from_env({cc.ENV: off}) is None
  assert cc.directory_from_env({cc.ENV: str(tmp_path / "x")}) == str(tmp_path / "x")


def test_jax_own_setting_is_left_alone(tmp_path):
  assert cc.enable({cc.JAX_ENV: str(tmp_path), cc.ENV: "off"}) == str(tmp_path)
  assert not any(tmp_path.iterdir())


def test_machine_tag_is_stable_and_short():
  tag = cc.machine_tag()
  assert tag == cc.machine_tag()
  arch, digest = tag.rsplit("-", 1)
  assert arch and len(digest) == 12 and int(digest, 16) >= 0


@pytest.mark.entry
def test_a_second_process_loads_what_the_first_compiled(tmp_path):
  env = {cc.ENV: str(tmp_path / "cache"), "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}
  first = run_program(env)
  assert first["directory"] == str(tmp_path / "cache" / cc.machine_tag())
  entries = os.listdir(first["directory"])
  assert any("cache" in name for name in entries), entries
  assert first["hits"] == 0
  second = run_program(env)
  assert second["directory"] == first["directory"]
  assert second["hits"] >= 1


@pytest.mark.entry
def test_turned_off_writes_nothing(tmp_path):
  out = run_program({cc.ENV: "off", "XDG_CACHE_HOME": str(tmp_path)})
  assert out["directory"] is None
  assert not (tmp_path / "helpsteer_jax").exists()
