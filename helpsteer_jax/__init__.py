"""helpsteer_jax: HelpSteer, HelpSteer2 and HelpSteer3 Feedback-Edit in JAX / Flax NNX.

    import helpsteer_jax as hj
    model, tokenizer = hj.load_pretrained(path)    # HF folder or .gguf
    logits = model(input_ids)                       # [B, T] int32 -> [B, T, V]
    texts = hj.generate(model, tokenizer, conversations, max_new_tokens=64)
    hj.save_pretrained(model, tokenizer, out_dir)

Public API (names resolve lazily, so importing the package does not import jax or transformers):

    load_pretrained, save_pretrained   causal LMs from and to HF folders (and GGUF files, in)
    load_reward_model, save_reward_model
                                       reward models: HF sequence classifiers, or causal LMs whose
                                       reward is one logit (NVIDIA's Select: logit_index=0)
    generate                           chat conversations in, n sampled answers each out
    Llama, LlamaConfig, get_preset     the network, its frozen config, the size presets
    RewardModel                        a Llama trunk with a scalar or multi-attribute head
    SlotCache                          the decode cache: one sample per slot, each at its own length
    make_mesh, ShardingContext         (data, fsdp, tensor) meshes and logical-axis placement
    create_sharded_model               a model created directly on its shards
    CheckpointError                    raised for bad checkpoints, naming the file or tensor

Entry points: python -m helpsteer_jax.<train | scale | evaluate | rescore | convert | plan |
chat | annotate | tables> --help.
"""

import importlib

__version__ = "0.1.0"

_EXPORTS = {
  "load_pretrained": "helpsteer_jax.checkpoints.pretrained",
  "save_pretrained": "helpsteer_jax.checkpoints.pretrained",
  "load_reward_model": "helpsteer_jax.checkpoints.reward",
  "save_reward_model": "helpsteer_jax.checkpoints.reward",
  "generate": "helpsteer_jax.sampling.generate",
  "Llama": "helpsteer_jax.models.llama",
  "LlamaConfig": "helpsteer_jax.models.config",
  "get_preset": "helpsteer_jax.models.config",
  "RewardModel": "helpsteer_jax.models.heads",
  "SlotCache": "helpsteer_jax.models.decode.slot_cache",
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


def __dir__():
  return sorted(set(globals()) | set(_EXPORTS))
