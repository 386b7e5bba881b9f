"""The search's memory plan: the byte counts worked out by hand, the schedule it picks, the
engine's slots from a memory budget, and `plan --search` through its entry point."""

import logging
import os
import subprocess
import sys

import pytest

from helpsteer_jax.models.config import get_preset
from helpsteer_jax.parallel import device_memory
from helpsteer_jax.parallel.device_memory import GIB, kv_bytes_per_slot, mesh_axes, weight_bytes_per_device
from helpsteer_jax.scaling.memory_plan import engine_slots, plan_search

# Compiles whole models (seconds a test): outside the smoke suite.
pytestmark = pytest.mark.entry

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LLAMA_70B = get_preset("llama3_70b", param_dtype="bfloat16", dtype="bfloat16")


def test_bytes_by_hand():
  # 80 layers x 8 KV heads x 128: at tensor 8 a device holds one head; keys and values in bf16.
  assert kv_bytes_per_slot(LLAMA_70B, 8192, tensor=8) == 2 * 80 * 1 * 128 * 8192 * 2 == 335_544_320
  # A tensor axis wider than the heads repeats them: still one head a device.
  assert kv_bytes_per_slot(LLAMA_70B, 8192, tensor=16) == 335_544_320
  assert kv_bytes_per_slot(LLAMA_70B, 8192, tensor=4) == 2 * 335_544_320
  params = LLAMA_70B.num_params()
  assert 70.5e9 < params < 70.6e9  # Llama-3-70B: 70.55 B parameters
  assert weight_bytes_per_device(LLAMA_70B, fsdp=1, tensor=8) == -(-params * 2 // 8)
  assert mesh_axes((1, 1, -1), 8) == (1, 1, 8) and mesh_axes((2, 1, -1), 16) == (2, 1, 8)
  with pytest.raises(ValueError, match="does not divide"):
    mesh_axes((3, 1, -1), 8)


def _roles(longest=(4096, 5120, 8192, 4096)):
  return [
    (stage, f"lm:{stage}", LLAMA_70B, "preset", n)
    for stage, n in zip(("policy", "feedback", "edit", "select"), longest)
  ]


def test_the_schedule_it_picks():
  weights = weight_bytes_per_device(LLAMA_70B, 1, 8)  # 17.6 GB
  # 80 GB devices: four models take 70.5 GB of the 72 GB budget, so pipelined cannot hold 64
  # slots; each model alone leaves (72 GB - 17.6 GB) for its slots.
  h100 = plan_search(_roles(), 64, 80e9, 0.9, fsdp=1, tensor=8)
  assert h100.schedule == "staged" and not h100.pipelined_fits
  edit = h100.roles[2]
  assert edit.slots_alone == (int(80e9 * 0.9) - weights) // kv_bytes_per_slot(LLAMA_70B, 8192, 8)
  assert h100.slots(edit) == min(64, edit.slots_alone)
  # 141 GB devices: everything at 64 slots per engine fits.
  h200 = plan_search(_roles(), 64, 141e9, 0.9, fsdp=1, tensor=8)
  expected = (
    4 * weights
    + 64 * sum(kv_bytes_per_slot(LLAMA_70B, n, 8) for n in (4096, 5120, 8192))
    + kv_bytes_per_slot(LLAMA_70B, 4096, 8)
  )
  assert h200.pipelined_bytes == expected and h200.schedule == "pipelined"
  # One model shared by every role counts once, its engine at its longest request.
  shared = [(stage, "lm:one", LLAMA_70B, "preset", n) for stage, _, _, _, n in _roles()]
  one = plan_search(shared, 64, 141e9, 0.9, fsdp=1, tensor=8)
  assert one.pipelined_bytes == weights + 64 * kv_bytes_per_slot(LLAMA_70B, 8192, 8)
  # 16 GB devices over 8 chips: not even the weights of one model fit.
  assert plan_search(_roles(), 64, 16e9, 0.9, fsdp=1, tensor=8).schedule == "neither"


def test_engine_slots_from_a_budget():
  per_slot = kv_bytes_per_slot(LLAMA_70B, 8192, 8)
  slots, why = engine_slots(LLAMA_70B, 8192, 8, 64, limit_bytes=80 * GIB, in_use_bytes=60 * GIB, memory_fraction=0.9)
  assert slots == (int(80 * GIB * 0.9) - 60 * GIB) // per_slot == 38 and "slots of 8192 positions" in why
  assert engine_slots(LLAMA_70B, 8192, 8, 16, None, 0, 0.9)[0] == 16  # no limit known: batch_size
  with pytest.raises(MemoryError, match="search.schedule=staged"):
    engine_slots(LLAMA_70B, 8192, 8, 64, limit_bytes=80 * GIB, in_use_bytes=72 * GIB, memory_fraction=0.9)


def test_the_search_sizes_its_engines_from_device_memory(monkeypatch, caplog):
  from helpsteer_jax.data.prompt_sources import PromptItem
  from helpsteer_jax.scaling.search import FeedbackEditSearch, Role, SearchSettings, SlotBudget, StageSampling
  from helpsteer_jax.testing.tiny_models import smollm2_tokenizer, tiny_chat_model

  model = tiny_chat_model()
  role = Role("policy", model, smollm2_tokenizer())
  per_slot = kv_bytes_per_slot(model.config, 300, 1)
  # A device of 100 MB with 60 MB in use: 0.9 x 100 - 60 = 30 MB leave room for 30 MB / per_slot.
  monkeypatch.setattr(device_memory, "device_memory", lambda: (100 * 10**6, 60 * 10**6))
  search = FeedbackEditSearch(SearchSettings(mode="greedy", batch_size=16, draft=StageSampling(max_new_tokens=4)), role)
  search.slot_budget = SlotBudget({role.model_key: 300}, tensor=1, memory_fraction=0.9)
  with caplog.at_level(logging.INFO):
    engine = search.engine(role)
  expected = min(16, (90 * 10**6 - 60 * 10**6) // per_slot)
  assert engine.settings.num_slots == expected and engine.settings.cache_length == 300
  assert f"{expected} slots of 300 positions" in caplog.text
  records = search.run([PromptItem("a", [{"role": "user", "content": "Hi"}])])
  assert records[0]["drafts"][0]["num_tokens"] >= 1


def _plan(*args):
  env = dict(os.environ, HF_HUB_OFFLINE="1", JAX_PLATFORMS="cpu")
  out = subprocess.run(
    [sys.executable, "-m", "helpsteer_jax.plan", "--search", *args],
    cwd=REPO,
    env=env,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert out.returncode == 0, out.stderr[-3000:]
  return out.stdout


@pytest.mark.entry
def test_plan_search_entry_prints_each_machine():
  table = _plan("--config=experiments/scaling/grid.py", "--accelerator=all")
  rows = [line for line in table.splitlines() if line.startswith("| ") and "machine" not in line]
  assert [r.split("|")[1].strip() for r in rows] == list(device_memory.ACCELERATORS)
  by_name = {r.split("|")[1].strip(): r for r in rows}
  assert "| staged |" in by_name["8xH100-80GB"] and "| pipelined |" in by_name["8xH200"]
  one = _plan("--config=experiments/scaling/grid.py", "--mesh=1,1,-1", "--devices=8", "--hbm_gib=80")
  assert "schedule: staged" in one and "preset llama3_70b: checkpoint not on disk" in one
