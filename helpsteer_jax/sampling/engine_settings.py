"""The decode engine's settings: one record shared by its device programs and its scheduler.

The measurements behind each default are in experiments/benchmarks/results/engine_settings.md.
"""

from __future__ import annotations

import dataclasses

from helpsteer_jax.models.decode.decode_layout import LAYOUTS


@dataclasses.dataclass(frozen=True)
class EngineSettings:
  num_slots: int = 16
  stop_token_ids: tuple[int, ...] = ()
  pad_id: int = 0
  # Cache positions read per attention block.
  attention_block: int = 128
  steps_per_call: int = 32  # decode steps per device call at most (fewer when a slot frees)
  # Top-k / top-p draw from the `top_p_fast_candidates` most likely tokens when a row's nucleus lies
  # inside them, else from `top_p_candidates` (sampling/rules.py).
  top_p_candidates: int = 1024
  top_p_fast_candidates: int = 128
  # Prompts are prefilled in chunks of this many tokens (sampling/chunked_prefill.py): the same few
  # compiled programs for every prompt length. Chunks stay kept for prompts with the same start, up
  # to `keep_prefill_mb` MiB (a 128-token chunk of SmolLM2 in fp32 is 5.9 MB; of Llama-3-8B in
  # bf16, 16.8 MB).
  prefill_chunk: int = 128
  keep_prefill_mb: int = 1024
  # Weights for the decode step (models/decode/decode_layout.py). auto: on CPU, switched layers for
  # several slots and unrolled layers with fused input projections for a single slot; on one GPU,
  # unrolled layers; elsewhere (TPU, several devices) the model's own layout, as those are not
  # measured here. A scan over stacked layers copies each layer's matrices out of the stack before
  # its products; unrolled layers read them in place but compile several times slower; switched
  # layers (models/decode/layer_switch.py) read them in place from one compiled body, with the same
  # results bit for bit. An unrolled, switched or fused engine holds a second copy of the weights,
  # converted once per model and kept while it lives.
  layout: str = "auto"
  # When nothing is queued and at most this many slots are live, they decode in a program of this
  # many slots (the tail of a run, where most slots have nothing left to do); 0 = never. Why 8: on
  # CPU the rows of a decode step over 8 slots are bitwise those of the same rows among 16 (matmuls
  # tile rows by 8); over 4, 2 or 1 slots they differ by ~1e-3 in the logits, and a sample's tokens
  # would then depend on when its neighbours finished. Other backends may round by batch size.
  tail_slots: int = 8
  # Compile the decode programs for each new cache shape (the full one, and the tail's with the
  # moves to and from it) in a background thread while the first prompts are prefilled, on one
  # device: XLA compiles a program on one core, and the time would otherwise be spent waiting
  # before the first decode step and in the tail.
  compile_ahead: bool = True
  # Cache positions per slot allocated at the first request (rounded up to `attention_block`):
  # the longest request the engine will serve, sized with its slots from a memory budget
  # (scaling/memory_plan.py) so that the cache never grows. 0: from 1024 positions, doubled
  # when a request needs more.
  cache_length: int = 0
  # Entries of a prefix table (models/decode/prefix_table.py): a prompt's shared prefix (up to its
  # last prefill break, or the whole prompt, in whole attention blocks) is held once, and the slots
  # that read it hold only what follows; decode attention reads each shared block once per group
  # of slots (models/decode/prefix_attention.py). The same tokens either way. 0: every slot holds
  # its whole prompt. On one device only.
  prefix_entries: int = 0

  def __post_init__(self):
    if self.layout not in ("auto", *LAYOUTS):
      raise ValueError(f"layout={self.layout!r}; expected auto or one of {LAYOUTS}")
    if self.num_slots < 1:
      raise ValueError(f"num_slots={self.num_slots}; expected at least 1")
    if self.layout == "fused" and self.num_slots != 1:
      # At several rows the fused products tile differently: slower on CPU, and not checked to
      # keep a row's tokens independent of how many slots its program has (`tail_slots`).
      raise ValueError(f"layout='fused' is for a single slot; num_slots={self.num_slots} (use auto or unrolled)")
    if self.prefix_entries < 0:
      raise ValueError(f"prefix_entries={self.prefix_entries}; expected 0 (no prefix table) or more")
    if self.tail_slots < 0:
      raise ValueError(f"tail_slots={self.tail_slots}; expected 0 (never) or more")
    if self.prefill_chunk < 1 or self.keep_prefill_mb < 0:
      raise ValueError(
        f"prefill_chunk={self.prefill_chunk} and keep_prefill_mb="
        f"{self.keep_prefill_mb}; expected at least 1 and at least 0"
      )
    if not 1 <= self.top_p_fast_candidates <= self.top_p_candidates:
      raise ValueError(
        f"top_p_fast_candidates={self.top_p_fast_candidates} and top_p_candidates="
        f"{self.top_p_candidates}; expected 1 <= fast <= candidates"
      )
    if self.attention_block < 1 or self.steps_per_call < 1:
      raise ValueError(
        f"attention_block={self.attention_block} and steps_per_call={self.steps_per_call}; expected at least 1"
      )
