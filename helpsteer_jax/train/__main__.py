"""Training entry point for every trainer (SFT, reward models, RLOO):

    python -m helpsteer_jax.train --config=experiments/feedback_sft.py:tiny --workdir=runs/feedback_sft

`config.trainer` picks the task; everything else (mesh, optimizer, checkpoints, resume) is the
shared loop's. Rerunning the same command after a crash or preemption resumes from the latest
checkpoint in the workdir.
"""

from __future__ import annotations

from absl import app, flags
from ml_collections import config_flags

from helpsteer_jax import entry_point
from helpsteer_jax.parallel.distributed import initialize, settings_from_config

# `--help` lists this config's fields (or those of the --config file given beside it).
from helpsteer_jax.train.config import default_train_config as HELP_CONFIG  # noqa: E402,F401
from helpsteer_jax.train.library_logs import quiet_library_logs

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run folder: checkpoints, metrics.jsonl, tensorboard/.")


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  config = _CONFIG.value
  # Multi-host start must come before anything touches the devices.
  initialize(settings_from_config(config.get("distributed", None)))
  quiet_library_logs()
  from helpsteer_jax.train.tasks import run_training

  workdir = _WORKDIR.value
  assert workdir is not None  # a required flag: absl refuses to start without it
  run_training(config, workdir)


def run() -> None:
  flags.mark_flags_as_required(["config", "workdir"])
  entry_point.run(main)


if __name__ == "__main__":
  run()
