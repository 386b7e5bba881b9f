"""Convert a checkpoint to an HF folder: `python -m helpsteer_jax.convert --src=X --dst=DIR`.

`--src` is an HF folder or a .gguf file (quantised GGUF tensors are dequantised), so this also
turns the embedded SmolLM2 GGUF into safetensors that transformers and vLLM load.
"""

from __future__ import annotations

from absl import app, flags

_SRC = flags.DEFINE_string("src", None, "HF checkpoint folder or .gguf file.", required=True)
_DST = flags.DEFINE_string("dst", None, "Output folder.", required=True)
_DTYPE = flags.DEFINE_enum("dtype", None, ["float32", "bfloat16", "float16"], "Dtype of the saved weights.")
_SHARD = flags.DEFINE_string("max_shard_size", "5GB", "Largest safetensors shard, e.g. 2GB or 500MB.")


def main(argv):
  del argv
  import helpsteer_jax as hj

  model, tokenizer = hj.load_pretrained(_SRC.value)
  hj.save_pretrained(model, tokenizer, _DST.value, max_shard_size=_SHARD.value, dtype=_DTYPE.value)
  print(f"wrote {_DST.value}")


def run():
  app.run(main)


if __name__ == "__main__":
  run()
