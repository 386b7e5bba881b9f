"""Convert a checkpoint to an HF folder: `python -m helpsteer_jax.convert --src=X --dst=DIR`.

`--src` is an HF folder or a .gguf file (quantised GGUF tensors are dequantised), so this also
turns the embedded SmolLM2 GGUF into safetensors that transformers and vLLM load.

`--reward_logit_index=N` reads `--src` as a reward model stored as a causal LM whose reward is the
logit of vocabulary index N (NVIDIA's Llama-3.3-Nemotron-70B-Select and
Llama-3.1-Nemotron-70B-Reward-HF: N = 0) and writes it as an HF `LlamaForSequenceClassification`
with that output-layer row as its one-output head: the same scores, without the [V, D] output
layer (2 GB less at 70B in bf16).

The folder is written under a temporary name beside `--dst` and renamed into place when complete,
so `--dst` holds a whole checkpoint or none. A `--dst` that already holds files is refused before
the model loads (a new export beside an old sharded one leaves neither loadable);
`--overwrite` replaces it, the old folder staying until the new one is complete.
"""

from __future__ import annotations

import logging
import os
from typing import Optional

from absl import app, flags

import helpsteer_jax as hj
from helpsteer_jax import entry_point, storage


class DestinationNotEmpty(FileExistsError):
  """`--dst` holds files and `--overwrite` was not given; the message names it."""


def _check_destination(dst: str, overwrite: bool) -> None:
  if storage.is_dir(dst) and storage.listdir(dst) and not overwrite:
    raise DestinationNotEmpty(
      f"{dst} already holds files ({', '.join(sorted(storage.listdir(dst))[:5])}...): writing a "
      "checkpoint beside them can leave neither loadable; choose an empty folder, or pass "
      "--overwrite to replace it"
    )
  if storage.exists(dst) and not storage.is_dir(dst):
    raise DestinationNotEmpty(f"{dst} is a file; --dst must be a folder")


def _partial_folders(dst: str) -> list[str]:
  """Temporary folders of earlier conversions into `dst` that did not finish."""
  parent, name = os.path.split(dst.rstrip("/"))
  if not storage.is_dir(parent or "."):
    return []
  return [storage.join(parent or ".", n) for n in storage.listdir(parent or ".") if n.startswith(f".{name}.partial-")]


def convert_checkpoint(
  src: str,
  dst: str,
  dtype: Optional[str] = None,
  max_shard_size: str = "5GB",
  reward_logit_index: Optional[int] = None,
  overwrite: bool = False,
) -> None:
  """`src` (HF folder or .gguf) -> an HF folder at `dst`; see the module docstring."""
  import jax

  dst = dst.rstrip("/")
  _check_destination(dst, overwrite)
  writes = jax.process_index() == 0
  parent, name = os.path.split(dst)
  partial = storage.join(parent or ".", f".{name}.partial-{os.getpid()}")
  if writes:
    for stale in _partial_folders(dst):  # a conversion killed before its rename
      logging.info("removing %s, left by a conversion that did not finish", stale)
      storage.rmtree(stale)
  if reward_logit_index is not None:
    from helpsteer_jax.checkpoints.reward import load_reward_model, save_reward_model

    model, tokenizer = load_reward_model(src, logit_index=reward_logit_index)
    save_reward_model(model, tokenizer, partial, max_shard_size=max_shard_size, dtype=dtype)
  else:
    model, tokenizer = hj.load_pretrained(src)
    hj.save_pretrained(model, tokenizer, partial, max_shard_size=max_shard_size, dtype=dtype)
  if writes:
    _move_into_place(partial, dst)


def _move_into_place(partial: str, dst: str) -> None:
  """Renames the complete folder `partial` to `dst`; an old `dst` is set aside first and removed
  only once the new one is in place."""
  old = None
  if storage.exists(dst):
    old = f"{partial}.old"
    storage.rename(dst, old)
  storage.rename(partial, dst)
  if old is not None:
    storage.rmtree(old)


def _define_flags():
  # Defined when the command runs, not at import: importing this module (tests, other entry
  # points in one process) registers no global flags, required ones included.
  return {
    "src": flags.DEFINE_string("src", None, "HF checkpoint folder or .gguf file.", required=True),
    "dst": flags.DEFINE_string("dst", None, "Output folder.", required=True),
    "dtype": flags.DEFINE_enum("dtype", None, ["float32", "bfloat16", "float16"], "Dtype of the saved weights."),
    "max_shard_size": flags.DEFINE_string("max_shard_size", "5GB", "Largest safetensors shard, e.g. 2GB or 500MB."),
    "overwrite": flags.DEFINE_bool("overwrite", False, "Replace a --dst folder that already holds files."),
    "reward_logit_index": flags.DEFINE_integer(
      "reward_logit_index",
      None,
      "Read --src as a causal-LM reward model scored by this vocabulary index's logit (NVIDIA's "
      "Select: 0) and write a LlamaForSequenceClassification.",
    ),
  }


def run():
  flag = _define_flags()

  def main(argv):
    if len(argv) > 1:
      raise app.UsageError(f"unexpected positional arguments {argv[1:]}; flags are --name=value")
    convert_checkpoint(**{name: f.value for name, f in flag.items()})
    print(f"wrote {flag['dst'].value}")

  entry_point.run(main)


if __name__ == "__main__":
  run()
