"""The trainer's entry point at tiny size: a synthetic chat task only training can teach, the
command that trains on it, and the losses a run wrote."""

from __future__ import annotations

import json
import os
import pathlib
import sys

# A made-up mapping the model can only know from training.
CODE_WORDS = {"red": "otter", "blue": "falcon", "green": "walrus", "yellow": "heron"}


def write_task(path: pathlib.Path) -> None:
  with open(path, "w") as f:
    for color, animal in CODE_WORDS.items():
      messages = [{"role": "user", "content": f"Code word for {color}?"}, {"role": "assistant", "content": animal}]
      f.write(json.dumps({"messages": messages}) + "\n")


def env(devices: int = 1) -> dict[str, str]:
  """The environment of an entry-point subprocess: offline hubs, CPU, `devices` fake devices."""
  out = dict(os.environ)
  out.update(
    HF_HUB_OFFLINE="1",
    HF_DATASETS_OFFLINE="1",
    JAX_PLATFORMS="cpu",
    XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
  )
  return out


def train_command(workdir, data, *extra: str) -> list[str]:
  return [
    sys.executable,
    "-m",
    "helpsteer_jax.train",
    "--config=experiments/chat_sft.py:tiny",
    f"--workdir={workdir}",
    f"--config.data.path={data}",
    "--config.data.seq_len=32",
    "--config.progress=False",
    "--config.tensorboard=False",
    *extra,
  ]


def losses(workdir) -> dict[int, float]:
  """step -> training loss, from the run's metrics.jsonl."""
  rows = [json.loads(line) for line in (pathlib.Path(workdir) / "metrics.jsonl").read_text().splitlines()]
  return {r["step"]: r["loss"] for r in rows if r["split"] == "train"}
