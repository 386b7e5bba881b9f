"""The evaluation entry point at tiny size against the loopback judge (judge_server.py): the
benchmark experiments made small, with the judge's key in an environment variable."""

from __future__ import annotations

from helpsteer_jax.testing.checkout import experiment_config

SECRET = "sk-e2e-secret-0123456789"
KEY_ENV = "HELPSTEER_E2E_JUDGE_KEY"


def eval_config(benchmark: str, model_dir: str, server, limit: int, start: int = 0, label: str = ""):
  """experiments/eval/<benchmark>.py at tiny size on `model_dir`, judged by `server` (a
  JudgeServer) through the key in $KEY_ENV: `limit` questions from `start`, 4 answer tokens."""
  config = experiment_config(
    f"eval/{benchmark}.py", f"tiny,model={model_dir},judge=http" + (f",label={label}" if label else "")
  )
  config.judge.base_url = server.base_url
  config.judge.api_key_env = KEY_ENV
  config.judge.model = "loopback-judge"
  config.judge.backoff_s = 0.01
  config.judge.max_tokens = 32
  config.questions.start = start
  config.questions.limit = limit
  config.generation.max_new_tokens = 4
  config.scoring.bootstrap_rounds = 10
  config.questions_per_batch = 1
  return config
