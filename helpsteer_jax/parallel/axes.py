"""Logical axis names: the single vocabulary for sharding parameters, activations and caches.

Every parameter carries a tuple of these names in its `logical_axes` metadata; activations are
constrained at block boundaries with the `ACT_*` names and the KV cache with the `CACHE_*` names.
Rules (see `rules.py`) map each name to zero or more mesh axes of the (data, fsdp, tensor) mesh.
"""

# Parameters.
LAYERS = "layers"  # leading axis of stacked (scanned) layer parameters
EMBED = "embed"  # model width D
MLP = "mlp"  # feed-forward width F
HEADS = "heads"  # query heads N
KV_HEADS = "kv_heads"  # key/value heads K
HEAD_DIM = "head_dim"  # per-head width H
VOCAB = "vocab"  # vocabulary V
NORM = "norm"  # RMSNorm scales (small, replicated)

# Activations.
ACT_BATCH = "act_batch"
ACT_SEQ = "act_seq"
ACT_EMBED = "act_embed"
ACT_HEADS = "act_heads"
ACT_KV_HEADS = "act_kv_heads"
ACT_MLP = "act_mlp"
ACT_VOCAB = "act_vocab"

# KV cache [L, B, K, S, H].
CACHE_LAYERS = "cache_layers"
CACHE_BATCH = "cache_batch"
CACHE_SEQ = "cache_seq"
CACHE_KV_HEADS = "cache_kv_heads"
CACHE_HEAD_DIM = "cache_head_dim"

# Mesh axes.
DATA = "data"
FSDP = "fsdp"
TENSOR = "tensor"
MESH_AXES = (DATA, FSDP, TENSOR)
