"""A search config's memory plan (scaling/memory_plan.py) from its checkpoints and prompts.

Each role's model shape is read from its checkpoint's config without the weights; a checkpoint not
on disk (the 70B models before download) is planned as the preset named by `preset`, in the role's
`param_dtype`. The longest request of each stage is measured over the run's prompts with the
role's tokenizer and layout (`scaling/request_lengths.py`), the embedded SmolLM2 tokenizer standing
in for one not on disk. The selector's longest sequence is the judge or Select layout of the
longest prompt with a response of the longer of the draft and edit caps.
"""

from __future__ import annotations

import dataclasses
import os
import statistics
from typing import Any, Optional

from ml_collections import ConfigDict

from helpsteer_jax.checkpoints.gguf import config_from_gguf
from helpsteer_jax.checkpoints.hf import read_config
from helpsteer_jax.checkpoints.model_pool import ModelPool, resolve_path
from helpsteer_jax.data.prompt_sources import load_prompts
from helpsteer_jax.formats import prompts as templates
from helpsteer_jax.models.config import LlamaConfig, get_preset
from helpsteer_jax.parallel.device_memory import mesh_axes
from helpsteer_jax.sampling.generate import encode_conversations
from helpsteer_jax.scaling.config import ROLE_BLOCKS, role_checkpoint
from helpsteer_jax.scaling.memory_plan import SearchMemoryPlan, StageTokens, plan_search
from helpsteer_jax.scaling.request_lengths import RoleLimits, longest_requests, placeholder
from helpsteer_jax.scaling.search_settings import settings_from_config

STAGE_ROLES = {"policy": "policy", "feedback": "feedback", "edit": "edit", "select": "judge"}


@dataclasses.dataclass(frozen=True)
class RoleShape:
  stage: str
  key: str
  config: LlamaConfig
  source: str
  tokenizer: Any
  prompt_format: str


def _on_disk(path: str) -> bool:
  try:
    return os.path.exists(resolve_path(path))
  except FileNotFoundError:
    return False


def _shape(pool: ModelPool, path: str, param_dtype: str, preset: str) -> tuple[LlamaConfig, str, Any]:
  """(model config, where it came from, tokenizer or None)."""
  dtypes = {"param_dtype": param_dtype, "dtype": param_dtype} if param_dtype else {}
  if _on_disk(path):
    resolved = resolve_path(path)
    if resolved.endswith(".gguf"):
      config = config_from_gguf(resolved, **dtypes)
    else:
      config = read_config(resolved, **dtypes)
    try:
      tokenizer = pool.tokenizer(path)
    except ValueError:
      tokenizer = None
    return config, "its checkpoint's config", tokenizer
  return (
    get_preset(preset, **(dtypes or {"param_dtype": "bfloat16", "dtype": "bfloat16"})),
    f"preset {preset}: checkpoint not on disk",
    None,
  )


def role_shapes(config: ConfigDict, preset: str = "llama3_70b", pool: Optional[ModelPool] = None) -> list[RoleShape]:
  """The model of each stage (policy, feedback, edit, select) of `config`; select is left out for
  selector.kind=none."""
  pool = pool or ModelPool()
  stand_in = None
  out = []
  for stage, role in STAGE_ROLES.items():
    sel = config.selector
    if stage == "select" and sel.kind == "none":
      continue
    if stage == "select" and sel.kind == "reward_model":
      path, dtype = sel.path, sel.param_dtype
      key = pool.rm_key(path, dtype, sel.logit_index)
    else:
      path, dtype = role_checkpoint(config, role)
      key = pool.lm_key(path, dtype)
    model, source, tokenizer = _shape(pool, path, dtype, preset)
    if stage == "select" and sel.kind == "reward_model":
      model = model.replace(tie_word_embeddings=True)  # the one-row reward head in place of the LM head
    if tokenizer is None:
      stand_in = stand_in or pool.tokenizer("")
      tokenizer, source = stand_in, source + "; lengths with the embedded SmolLM2 tokenizer"
    out.append(RoleShape(stage, key, model, source, tokenizer, config[ROLE_BLOCKS[role]].prompt_format))
  return out


@dataclasses.dataclass(frozen=True)
class PromptLengths:
  """Per stage, the longest request (prompt and new tokens) and the mean prompt, over the run's prompts."""

  longest: dict[str, int]
  mean_prompt: dict[str, float]


def prompt_lengths(config: ConfigDict, shapes: list[RoleShape], items=None) -> PromptLengths:
  settings = settings_from_config(config.search)
  if items is None:
    items = load_prompts(config.prompts.source, config.prompts.path, config.prompts.limit, config.prompts.start)
  by_stage = {s.stage: s for s in shapes}
  limits = {
    stage: RoleLimits(stage, s.tokenizer, s.prompt_format, s.config.max_position_embeddings)
    for stage, s in by_stage.items()
  }
  stage_of = {"draft": "policy", "feedback": "feedback", "edit": "edit"}
  longest: dict[str, int] = {}
  prompts: dict[str, list[int]] = {}
  for item in items:
    for r in longest_requests(item, settings, limits["policy"], limits["feedback"], limits["edit"]):
      stage = stage_of[r.stage]
      longest[stage] = max(longest.get(stage, 0), r.total)
      prompts.setdefault(stage, []).append(r.prompt_tokens)
    if "select" in by_stage:
      s = by_stage["select"]
      response = placeholder(max(settings.draft.max_new_tokens, settings.edit.max_new_tokens))
      layout = templates.select_request if config.selector.kind == "reward_model" else templates.judge_request
      messages = layout(item.conversation, response, s.prompt_format)
      longest["select"] = max(longest.get("select", 0), len(encode_conversations(s.tokenizer, [messages])[0]))
  return PromptLengths(longest, {k: statistics.fmean(v) for k, v in prompts.items()})


def plan_config(
  config: ConfigDict,
  devices: int,
  hbm_bytes: float,
  memory_fraction: float = 0.9,
  preset: str = "llama3_70b",
  items=None,
) -> tuple[SearchMemoryPlan, PromptLengths, tuple[int, int, int]]:
  """The memory plan of search config `config` on `devices` devices of `hbm_bytes` each, over the
  mesh of `config.mesh.shape`, with the mesh axes (data, fsdp, tensor)."""
  shapes = role_shapes(config, preset)
  lengths = prompt_lengths(config, shapes, items)
  return plan_shapes(config, shapes, lengths, devices, hbm_bytes, memory_fraction)


def plan_shapes(
  config: ConfigDict,
  shapes: list[RoleShape],
  lengths: PromptLengths,
  devices: int,
  hbm_bytes: float,
  memory_fraction: float = 0.9,
):
  """As `plan_config`, from role shapes and prompt lengths already read."""
  axes = mesh_axes(tuple(config.mesh.shape), devices)
  roles = [(s.stage, s.key, s.config, s.source, lengths.longest[s.stage]) for s in shapes if s.stage in lengths.longest]
  plan = plan_search(roles, int(config.search.batch_size), hbm_bytes, memory_fraction, axes[1], axes[2])
  return plan, lengths, axes


def paper_stage_tokens(
  config: ConfigDict,
  lengths: PromptLengths,
  draft_tokens: float = 600,
  feedback_tokens: float = 150,
  edit_tokens: float = 600,
) -> list[StageTokens]:
  """Generated tokens per prompt of each stage at the config's tree shape, at the mean answer
  lengths given (docs/reproducing.md: drafts and edits ~600 tokens, feedback ~150), and each
  stage's mean request length (its mean prompt and half its answer)."""
  s = settings_from_config(config.search)
  edited = s.feedback_drafts if s.feedback_on_top_drafts else s.num_drafts  # drafts given feedback
  edits = s.responses_per_prompt - s.num_drafts  # under the config's reading of the tree
  out = [StageTokens("policy", (s.num_drafts + 1) * draft_tokens, lengths.mean_prompt["policy"] + draft_tokens / 2)]
  if s.mode == "feedback_edit":
    out.append(
      StageTokens(
        "feedback", edited * s.feedback_samples * feedback_tokens, lengths.mean_prompt["feedback"] + feedback_tokens / 2
      )
    )
    out.append(StageTokens("edit", edits * edit_tokens, lengths.mean_prompt["edit"] + edit_tokens / 2))
  return out
