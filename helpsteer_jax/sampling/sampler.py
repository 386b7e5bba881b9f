"""`sample_tokens`: continuations of token prompts on the decode engine (engine.py).

Settings and prompt shaping (`SamplingSettings`, `bucket`, `keep_ends`, `left_pad`) live in
settings.py, below this module and the engine; they are imported here for older callers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Optional

from helpsteer_jax.models.llama import Llama
from helpsteer_jax.sampling.engine import Engine, EngineSettings, Request
from helpsteer_jax.sampling.keys import sample_key
from helpsteer_jax.sampling.settings import SamplingSettings, bucket, keep_ends, left_pad  # noqa: F401


def sample_tokens(
  model: Llama,
  prompts: Sequence[Sequence[int]],
  settings: SamplingSettings,
  n: int = 1,
  seed: int = 0,
  names: Optional[Sequence[object]] = None,
  num_slots: int = 32,
) -> list[list[list[int]]]:
  """Token ids of n continuations per prompt (stop token excluded): [len(prompts)][n][tokens],
  decoded by an engine of at most `num_slots` slots. Prompt i's samples draw from the key of
  (seed, names[i]) (default: its index), whatever else is in the call."""
  if not prompts:
    return []
  for i, prompt in enumerate(prompts):
    if len(prompt) == 0:
      raise ValueError(f"prompt {i} is empty; every prompt needs at least one token")
  if names is not None and len(names) != len(prompts):
    raise ValueError(f"{len(names)} names for {len(prompts)} prompts; expected one each")
  names = list(range(len(prompts))) if names is None else list(names)
  slots = min(num_slots, bucket(len(prompts) * n, minimum=1))
  engine = Engine(
    model, EngineSettings(num_slots=slots, stop_token_ids=settings.stop_token_ids, pad_id=settings.pad_id)
  )
  requests = [Request(list(p), settings, sample_key(seed, name), n=n) for p, name in zip(prompts, names)]
  for request in requests:
    engine.submit(request)
  engine.run()
  return [r.results for r in requests]
