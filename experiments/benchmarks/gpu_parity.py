"""bf16 parity on the device: a transformers Llama with Llama-3-8B widths and 4 layers (random
weights, redrawn so that logits are O(1)), saved as an HF checkpoint and loaded with bf16
parameters by `load_pretrained`.

    python experiments/benchmarks/gpu_parity.py --out DIR [--tiny]

Reports the logits' max and mean error and top-1 agreement of ours (bf16) against torch bf16 and
torch fp32 (the same bf16-rounded weights) on 2 x 1024 tokens, and 32 greedy tokens from the
decode engine against transformers `generate` in bf16 and fp32 (random weights leave small
margins between the top tokens, so a bf16 rounding can switch a greedy choice: the table gives
the tokens that agree before the first difference).
"""

from __future__ import annotations

import math
import os
import shutil
import sys
import tempfile

import numpy as np
from gpu_common import Report, device, parse_args


def hf_config(tiny: bool):
  import transformers

  if tiny:
    widths = dict(
      vocab_size=512,
      hidden_size=64,
      intermediate_size=160,
      num_hidden_layers=2,
      num_attention_heads=4,
      num_key_value_heads=2,
      head_dim=16,
    )
  else:
    widths = dict(
      vocab_size=128256,
      hidden_size=4096,
      intermediate_size=14336,
      num_hidden_layers=4,
      num_attention_heads=32,
      num_key_value_heads=8,
      head_dim=128,
    )
  rope = {
    "rope_type": "llama3",
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 8192,
  }
  return transformers.LlamaConfig(
    **widths,
    rope_theta=500000.0,
    rope_scaling=rope,
    max_position_embeddings=131072,
    rms_norm_eps=1e-5,
    tie_word_embeddings=False,
    bos_token_id=None,
    eos_token_id=None,
    pad_token_id=0,
  )


def randomize(model, seed: int) -> None:
  """Weights ~ N(0, 1/fan_in), norm scales 1 + N(0, 0.3): O(1) logits, so a layout error is an
  O(1) error (transformers' 0.02-std initialisation would hide it)."""
  import torch

  g = torch.Generator(device=model.device).manual_seed(seed)
  with torch.no_grad():
    for p in model.parameters():
      noise = torch.randn(p.shape, generator=g, device=p.device, dtype=torch.float32)
      p.copy_(1.0 + 0.3 * noise if p.ndim == 1 else noise / math.sqrt(p.shape[1]))


def compare(ours: np.ndarray, reference: np.ndarray) -> str:
  err = np.abs(ours - reference)
  top1 = np.mean(ours.argmax(-1) == reference.argmax(-1))
  return f"{err.max():.3g} | {err.mean():.3g} | {np.abs(reference).mean():.3g} | {top1:.2%}"


def agreeing_prefix(a: list[int], b: list[int]) -> int:
  n = 0
  while n < min(len(a), len(b)) and a[n] == b[n]:
    n += 1
  return n


def main() -> None:
  args = parse_args(__doc__)
  os.environ.setdefault("HF_HUB_OFFLINE", "1")
  import jax
  import torch
  import transformers
  from flax import nnx

  import helpsteer_jax as hj
  from helpsteer_jax.models.create import abstract_model
  from helpsteer_jax.sampling.sampler import SamplingSettings, sample_tokens

  dev = device()
  torch_device = "cuda" if torch.cuda.is_available() else "cpu"
  tokens, new_tokens = (64, 8) if args.tiny else (1024, 32)
  report = Report(
    args.out,
    "parity",
    f"bf16 parity against transformers ({dev.describe}, torch "
    f"{torch.__version__} on {torch_device}, transformers {transformers.__version__})",
  )
  config = hf_config(args.tiny)
  folder = tempfile.mkdtemp()
  torch.manual_seed(0)
  with torch.device(torch_device):
    written = transformers.LlamaForCausalLM(config).eval()
  randomize(written, 0)
  # Only the parameters are rounded to bf16 (a module `.to(bfloat16)` would round RoPE's inverse
  # frequencies too, a buffer transformers keeps in fp32): the references load the checkpoint as a
  # user would, in bf16 and in fp32.
  for p in written.parameters():
    p.data = p.data.to(torch.bfloat16)
  written.save_pretrained(folder)
  del written
  load = lambda dtype: transformers.LlamaForCausalLM.from_pretrained(folder, dtype=dtype).to(torch_device).eval()
  reference = load(torch.bfloat16)
  rng = np.random.default_rng(0)
  ids = rng.integers(1, config.vocab_size, size=(2, tokens)).astype(np.int32)
  torch_ids = torch.tensor(ids.astype(np.int64), device=torch_device)
  prompt_len = min(128, tokens // 2)
  prompts = ids[:, :prompt_len].tolist()
  generate = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False, pad_token_id=0)
  with torch.no_grad():
    torch_bf16 = reference(torch_ids).logits.float().cpu().numpy()
    gen_bf16 = reference.generate(torch_ids[:, :prompt_len], **generate)[:, prompt_len:].cpu().tolist()
  reference = load(torch.float32)  # the same bf16-rounded weights, computed in fp32
  with torch.no_grad():
    torch_fp32 = reference(torch_ids).logits.float().cpu().numpy()
    gen_fp32 = reference.generate(torch_ids[:, :prompt_len], **generate)[:, prompt_len:].cpu().tolist()
  del reference
  if torch_device == "cuda":
    torch.cuda.empty_cache()
  model, _ = hj.load_pretrained(folder, show_progress=False, param_dtype="bfloat16", dtype="bfloat16")
  shutil.rmtree(folder)

  graphdef, state = nnx.split(model)
  forward = jax.jit(lambda state, ids: nnx.merge(graphdef, state)(ids))
  ours = np.asarray(forward(state, ids), np.float32)
  # The same bf16 parameters with fp32 activations: what is left against torch fp32 is the
  # implementation's own error, not bf16 rounding.
  graphdef32 = nnx.graphdef(abstract_model(model.config.replace(dtype="float32")))
  ours32 = np.asarray(jax.jit(lambda state, ids: nnx.merge(graphdef32, state)(ids))(state, ids), np.float32)
  report.add(
    f"Widths {config.hidden_size} / {config.intermediate_size} / {config.num_attention_heads} "
    f"heads / {config.num_key_value_heads} KV heads, vocabulary {config.vocab_size}, "
    f"{config.num_hidden_layers} layers, random weights ~ N(0, 1/fan_in), "
    f"logits over {ids.shape[0]} x {tokens} tokens; ours bf16 parameters and activations "
    f"(attention {model.config.attention_impl}, resolved per backend).",
    "",
    "| reference | max abs error | mean abs error | mean abs logit | top-1 agreement |",
    "|---|---:|---:|---:|---:|",
    f"| torch bf16 | {compare(ours, torch_bf16)} |",
    f"| torch fp32 (same weights) | {compare(ours, torch_fp32)} |",
    f"| torch bf16 against torch fp32 | {compare(torch_bf16, torch_fp32)} |",
    f"| ours with fp32 activations against torch fp32 | {compare(ours32, torch_fp32)} |",
    "",
  )
  engine = sample_tokens(model, prompts, SamplingSettings(max_new_tokens=new_tokens))
  engine = [samples[0] for samples in engine]
  rows = []
  for name, theirs in (("transformers bf16", gen_bf16), ("transformers fp32", gen_fp32)):
    prefix = [agreeing_prefix(a, b) for a, b in zip(engine, theirs)]
    same = sum(int(x == y) for a, b in zip(engine, theirs) for x, y in zip(a, b))
    rows.append(f"| {name} | {' / '.join(map(str, prefix))} | {same} of {sum(map(len, theirs))} |")
  prefix = [agreeing_prefix(a, b) for a, b in zip(gen_bf16, gen_fp32)]
  rows.append(
    f"| transformers bf16 against fp32 | {' / '.join(map(str, prefix))} | "
    f"{sum(int(x == y) for a, b in zip(gen_bf16, gen_fp32) for x, y in zip(a, b))} of "
    f"{sum(map(len, gen_fp32))} |"
  )
  report.add(
    f"{new_tokens} greedy tokens after {prompt_len}-token prompts, the decode engine against `generate`:",
    "",
    "| against | tokens agreeing before the first difference, per row | same token at the same step |",
    "|---|---|---:|",
    *rows,
  )


if __name__ == "__main__":
  sys.exit(main())
