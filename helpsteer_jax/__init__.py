"""helpsteer_jax: HelpSteer, HelpSteer2 and HelpSteer3 Feedback-Edit in JAX / Flax NNX.

    import helpsteer_jax as hj
    model, tokenizer = hj.load_pretrained(path)    # HF folder or .gguf
    logits = model(input_ids)                       # [B, T] int32 -> [B, T, V]
    texts = hj.generate(model, tokenizer, conversations, max_new_tokens=64)
    hj.save_pretrained(model, tokenizer, out_dir)

Names resolve lazily, so importing the package does not import jax or transformers.
"""

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "load_pretrained": "helpsteer_jax.checkpoints.pretrained",
    "save_pretrained": "helpsteer_jax.checkpoints.pretrained",
    "generate": "helpsteer_jax.sampling.generate",
    "Llama": "helpsteer_jax.models.llama",
    "LlamaConfig": "helpsteer_jax.models.config",
    "get_preset": "helpsteer_jax.models.config",
    "KVCache": "helpsteer_jax.models.kv_cache",
    "ShardingContext": "helpsteer_jax.parallel.partitioning",
    "make_mesh": "helpsteer_jax.parallel.mesh",
    "create_sharded_model": "helpsteer_jax.models.create",
    "CheckpointError": "helpsteer_jax.checkpoints.safetensors_io",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
  if name in _EXPORTS:
    return getattr(importlib.import_module(_EXPORTS[name]), name)
  raise AttributeError(f"module 'helpsteer_jax' has no attribute {name!r}")
