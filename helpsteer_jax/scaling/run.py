"""Running the scaling search from a config: the roles and selector it names, loaded once each;
checks that every prompt's longest request fits before any work; the run in its locked output
folder, resumed from its results. `python -m helpsteer_jax.scale` is the thin main over this.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any

from ml_collections import ConfigDict

from helpsteer_jax.checkpoints.model_pool import ModelPool
from helpsteer_jax.scaling.progress import StageProgress, stage_log_lines

POLICY = "policy"  # a role path that means "the policy model plays this role"


def search_settings(cfg: ConfigDict):
  from helpsteer_jax.scaling.search import SearchSettings, StageSampling

  s = cfg.to_dict()
  stages = {name: StageSampling(**s.pop(name)) for name in ("draft", "feedback", "edit")}
  return SearchSettings(**s, **stages)


def build_search(config: ConfigDict, pool: ModelPool):
  from helpsteer_jax.scaling.search import FeedbackEditSearch, Role
  from helpsteer_jax.scaling.selectors import GenerativeJudgeSelector, RewardModelSelector

  from helpsteer_jax.formats.prompts import check_prompt_format

  settings = search_settings(config.search)
  # Bad layout names fail here, before any model loads.
  check_prompt_format(config.feedback_model.prompt_format, "feedback")
  check_prompt_format(config.edit_model.prompt_format, "edit")
  check_prompt_format(config.selector.prompt_format,
                      "select" if config.selector.kind == "reward_model" else "judge")
  if config.selector.logit_index is not None and config.selector.kind != "reward_model":
    raise ValueError(f"selector.logit_index={config.selector.logit_index} is for "
                     f"selector.kind='reward_model', not {config.selector.kind!r}")
  policy_model, policy_tok = pool.causal_lm(config.policy.path, config.policy.param_dtype)
  policy = Role("policy", policy_model, policy_tok)

  def role(name: str, cfg: ConfigDict) -> Role:
    if cfg.path == POLICY:
      return dataclasses.replace(policy, name=f"{name}=policy", prompt_format=cfg.prompt_format)
    model, tok = pool.causal_lm(cfg.path, cfg.param_dtype)
    return Role(name, model, tok, prompt_format=cfg.prompt_format)

  feedback = role("feedback", config.feedback_model)
  edit = role("edit", config.edit_model)
  selector = None
  sel = config.selector
  if sel.kind == "generative_judge":
    judge = role("judge", sel)
    selector = GenerativeJudgeSelector(judge.model, judge.tokenizer, batch_size=settings.batch_size,
                                       prompt_format=sel.prompt_format)
  elif sel.kind == "reward_model":
    if sel.path in ("", POLICY):
      raise ValueError("selector.kind='reward_model' needs selector.path to a reward model folder")
    model, tok = pool.reward_model(sel.path, sel.param_dtype, sel.logit_index)
    weights = None
    if model.num_outputs > 1:  # a multi-attribute model: HelpSteer2's weighted sum of its outputs
      from helpsteer_jax.checkpoints.reward import attribute_weights, reward_labels

      weights = attribute_weights(reward_labels(sel.path))
    if tok is None:
      raise ValueError(f"{sel.path} has no tokenizer files; the selector needs a tokenizer")
    selector = RewardModelSelector(model, tok, batch_size=settings.batch_size, weights=weights,
                                   prompt_format=sel.prompt_format)
  elif sel.kind != "none":
    raise ValueError(f"selector.kind={sel.kind!r}; expected generative_judge, reward_model or none")
  return FeedbackEditSearch(settings, policy, selector=selector, feedback=feedback, edit=edit)


def check_requests(items, search) -> None:
  """Fails before any work on a prompt whose longest request in any stage (the Edit request
  carries the draft and its feedback group) cannot fit the context of the model answering it."""
  from helpsteer_jax.scaling.request_lengths import RoleLimits, check_request_lengths

  limits = [RoleLimits(r.name, r.tokenizer, r.prompt_format, r.model.config.max_position_embeddings)
            for r in (search.policy, search.feedback, search.edit)]
  check_request_lengths(items, search.settings, *limits)


def output_folder(config: ConfigDict) -> str:
  """Where the run writes: `output_dir`, or its `shard-I-of-N` folder for `prompts.shard=I/N`."""
  from helpsteer_jax.scaling.shards import parse_shard, run_folder

  return run_folder(config.output_dir, parse_shard(config.prompts.get("shard", "")))


def run_search(config: ConfigDict) -> dict[str, Any]:
  """Runs (or resumes) the search of `config`; returns the summary. The output folder is checked
  writable and held by this run alone (`data/run_folder.py`) before any prompt is read."""
  from helpsteer_jax.data.run_folder import claim_run_folder

  import jax

  from helpsteer_jax.scaling.shards import parse_shard, run_folder

  shard = parse_shard(config.prompts.get("shard", ""))  # a bad shard fails here, before any folder is made
  folder = run_folder(config.output_dir, shard)
  # Every process of a multi-host run runs the same search; process 0 alone holds and writes the folder.
  with claim_run_folder(folder, what="scaling search", enabled=jax.process_index() == 0):
    return _run_search(config, folder, shard)


def _run_search(config: ConfigDict, folder: str, shard) -> dict[str, Any]:
  import jax
  from tqdm.auto import tqdm

  from helpsteer_jax.data.prompt_sources import load_prompts
  from helpsteer_jax.scaling.results import ResultWriter

  writes = jax.process_index() == 0
  items = load_prompts(config.prompts.source, config.prompts.path, config.prompts.limit,
                       config.prompts.start)
  if shard is not None:
    everything, items = len(items), shard.select(items)
    logging.info("shard %s: %d of the run's %d prompts", shard, len(items), everything)
  writer = ResultWriter(folder) if writes else None
  todo = _still_to_do(items, writer)
  logging.info("%d prompts, %d already done in %s", len(items), len(items) - len(todo), folder)
  search = build_search(config, ModelPool(config.mesh))
  check_requests(todo, search)

  start = time.perf_counter()
  done_before = len(items) - len(todo)
  written = [0]
  with tqdm(total=len(items), initial=done_before, desc="scaling search", unit="prompt", disable=not writes) as bar:
    # The bar's counter moves per finished prompt, its postfix per finished sample of any stage.
    search.progress = StageProgress(on_change=lambda p: bar.set_postfix_str(p.line()))

    def write(record):
      if writer is not None:
        writer.append([record])
      written[0] += 1
      bar.update(1)

    try:
      # Prompts enter the search's engine as it has room; each record is written (in prompt
      # order) as soon as it is complete, so an interrupted run loses only prompts in flight.
      search.run(todo, on_record=write, min_in_flight=config.prompts_per_batch,
                 max_in_flight=config.prompts_in_flight)
      bar.set_postfix_str(search.progress.line())  # the last counts, past the refresh interval
    except Exception as e:
      finished = done_before + written[0]
      raise RuntimeError(
          f"the search failed with prompts {[b.id for b in todo[written[0]:]][:8]} unfinished "
          f"({type(e).__name__}: {e}); the {finished} finished prompts are kept in {folder} "
          "and a rerun resumes after them"
      ) from e
  stats = search.stats()
  for line in stage_log_lines(stats["engines"], stats["select_seconds"], search.progress.scored):
    logging.info("%s", line)
  run_info = {"config": config.to_dict(), "seconds_this_run": time.perf_counter() - start,
              "engine": stats}
  if writer is None:
    return {"process_index": jax.process_index(), "prompts_this_run": written[0]}
  return writer.finalize(run_info)


def _still_to_do(items, writer) -> list:
  """The prompts without a record in the folder. In a multi-host run process 0 (the writer) reads
  the folder and sends the answer to the others, so that every process runs the same prompts even
  where the folder is on process 0's disk alone."""
  import jax
  import numpy as np

  done = writer.done_ids() if writer is not None else set()
  mask = np.asarray([item.id in done for item in items], np.bool_)
  if jax.process_count() > 1 and len(items):
    from jax.experimental import multihost_utils

    mask = np.asarray(multihost_utils.broadcast_one_to_all(mask))
  return [item for item, finished in zip(items, mask) if not finished]
