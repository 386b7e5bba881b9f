"""Convert a checkpoint to an HF folder: `python -m helpsteer_jax.convert --src=X --dst=DIR`.

`--src` is an HF folder or a .gguf file (quantised GGUF tensors are dequantised), so this also
turns the embedded SmolLM2 GGUF into safetensors that transformers and vLLM load.

`--reward_logit_index=N` reads `--src` as a reward model stored as a causal LM whose reward is the
logit of vocabulary index N (NVIDIA's Llama-3.3-Nemotron-70B-Select and
Llama-3.1-Nemotron-70B-Reward-HF: N = 0) and writes it as an HF `LlamaForSequenceClassification`
with that output-layer row as its one-output head: the same scores, without the [V, D] output
layer (2 GB less at 70B in bf16).
"""

from __future__ import annotations

from typing import Optional

from absl import app, flags

from helpsteer_jax import entry_point

_SRC = flags.DEFINE_string("src", None, "HF checkpoint folder or .gguf file.", required=True)
_DST = flags.DEFINE_string("dst", None, "Output folder.", required=True)
_DTYPE = flags.DEFINE_enum("dtype", None, ["float32", "bfloat16", "float16"], "Dtype of the saved weights.")
_SHARD = flags.DEFINE_string("max_shard_size", "5GB", "Largest safetensors shard, e.g. 2GB or 500MB.")
_LOGIT = flags.DEFINE_integer(
    "reward_logit_index", None,
    "Read --src as a causal-LM reward model scored by this vocabulary index's logit (NVIDIA's "
    "Select: 0) and write a LlamaForSequenceClassification.")


def convert_checkpoint(src: str, dst: str, dtype: Optional[str] = None,
                       max_shard_size: str = "5GB", reward_logit_index: Optional[int] = None) -> None:
  """`src` (HF folder or .gguf) -> an HF folder at `dst`; see the module docstring."""
  if reward_logit_index is not None:
    from helpsteer_jax.checkpoints.reward import load_reward_model, save_reward_model

    model, tokenizer = load_reward_model(src, logit_index=reward_logit_index)
    save_reward_model(model, tokenizer, dst, max_shard_size=max_shard_size, dtype=dtype)
    return
  import helpsteer_jax as hj

  model, tokenizer = hj.load_pretrained(src)
  hj.save_pretrained(model, tokenizer, dst, max_shard_size=max_shard_size, dtype=dtype)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected positional arguments {argv[1:]}; flags are --name=value")
  convert_checkpoint(_SRC.value, _DST.value, _DTYPE.value, _SHARD.value, _LOGIT.value)
  print(f"wrote {_DST.value}")


def run():
  entry_point.run(main)


if __name__ == "__main__":
  run()
