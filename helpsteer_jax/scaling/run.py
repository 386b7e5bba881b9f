"""Running the scaling search from a config: the roles and selector it names, loaded once each;
checks that every prompt's longest request fits before any work; the run in its locked output
folder, resumed from its results. `python -m helpsteer_jax.scale` is the thin main over this.
"""

from __future__ import annotations

import gc
import json
import logging
import time
from typing import Any

import jax
import numpy as np
from ml_collections import ConfigDict
from tqdm.auto import tqdm

from helpsteer_jax.checkpoints.model_pool import ModelPool
from helpsteer_jax.data.prompt_sources import load_prompts
from helpsteer_jax.data.run_folder import claim_run_folder
from helpsteer_jax.data.run_identity import check_rerun, check_resume_mode, write_identity
from helpsteer_jax.formats.prompts import check_prompt_format
from helpsteer_jax.parallel.host_values import from_process_zero
from helpsteer_jax.remote.endpoint import Endpoint
from helpsteer_jax.scaling.config import (  # noqa: F401 (named for callers)
  POLICY,
  ROLE_BLOCKS,
  endpoint_settings,
  role_checkpoint,
  role_endpoint,
)
from helpsteer_jax.scaling.progress import StageProgress, stage_log_lines
from helpsteer_jax.scaling.search_identity import (
  SEARCH_RULES,
  check_questions,
  has_work,
  question_fingerprint,
  role_models,
  search_identity,
)
from helpsteer_jax.scaling.search_settings import settings_from_config as search_settings
from helpsteer_jax.scaling.shards import parse_shard, run_folder


def build_search(config: ConfigDict, pool: ModelPool, load: bool = True):
  """The search of `config`. With `load` off (the staged schedule) no weights load: the roles
  hold their tokenizers and model keys, and `StageModels` loads each stage's model in turn."""
  from helpsteer_jax.scaling.search import FeedbackEditSearch

  settings = check_search_config(config)
  roles = {name: _role(config, pool, name, load) for name in ("policy", "feedback", "edit")}
  return FeedbackEditSearch(
    settings,
    roles["policy"],
    selector=build_selector(config, pool, load),
    feedback=roles["feedback"],
    edit=roles["edit"],
  )


def check_search_config(config: ConfigDict):
  """Every value of the search's config that can be checked without a model: the search's
  settings (each stage's sampling named), the roles' layouts and the selector's kind. Returns the
  settings."""
  check_resume_mode(config.get("resume", "check"))
  settings = search_settings(config.search)
  for name, value, least in (
    ("prompts.limit", config.prompts.limit, 0),
    ("prompts.start", config.prompts.start, 0),
    ("prompts.max_turns", config.prompts.get("max_turns", 0), 0),
    ("prompts_per_batch", config.prompts_per_batch, 1),
    ("prompts_in_flight", config.prompts_in_flight, 0),
  ):
    if value < least:
      raise ValueError(f"{name}={value}; expected at least {least}")
  check_prompt_format(config.feedback_model.prompt_format, "feedback")
  check_prompt_format(config.edit_model.prompt_format, "edit")
  check_prompt_format(config.selector.prompt_format, "select" if config.selector.kind == "reward_model" else "judge")
  if config.selector.logit_index is not None and config.selector.kind != "reward_model":
    raise ValueError(
      f"selector.logit_index={config.selector.logit_index} is for "
      f"selector.kind='reward_model', not {config.selector.kind!r}"
    )
  if config.selector.kind not in ("generative_judge", "reward_model", "none"):
    raise ValueError(f"selector.kind={config.selector.kind!r}; expected generative_judge, reward_model or none")
  remote = []
  for block in ROLE_BLOCKS.values():
    endpoint = config[block].get("endpoint")
    if endpoint is None:
      continue
    if endpoint.kind not in ("local", "openai"):
      raise ValueError(f"{block}.endpoint.kind={endpoint.kind!r}; expected local or openai")
    if endpoint.kind == "openai":
      endpoint_settings(endpoint).check(f"{block}.endpoint")
      remote.append(block)
  remote_selector = selector_endpoint(config) is not None
  if config.selector.kind == "reward_model" and config.selector.path in ("", POLICY) and not remote_selector:
    raise ValueError(
      "selector.kind='reward_model' needs selector.path to a reward model folder, or selector.endpoint.kind='openai'"
    )
  if remote and config.search.schedule == "staged":
    raise ValueError(
      f"search.schedule='staged' loads each role's model in turn, but {', '.join(remote)} "
      "run(s) on a remote endpoint (endpoint.kind='openai'); use search.schedule='pipelined'"
    )
  return settings


def selector_endpoint(config: ConfigDict):
  """The selector's remote endpoint block, or None when it scores locally (or is none)."""
  kind = config.selector.kind
  if kind == "generative_judge":
    return role_endpoint(config, "judge")
  if kind == "reward_model":
    own = config.selector.get("endpoint")
    return own if own is not None and own.kind == "openai" else None
  return None


def _role(config: ConfigDict, pool: ModelPool, name: str, load: bool):
  from helpsteer_jax.scaling.remote_roles import RemoteRole
  from helpsteer_jax.scaling.roles import Role

  remote = role_endpoint(config, name)
  if remote is not None:
    block = config[ROLE_BLOCKS[name]]
    endpoint = Endpoint(endpoint_settings(remote), what=f"the {name} model")
    logging.info("role %s: %s", name, endpoint.name)
    return RemoteRole(name, endpoint, prompt_format=block.get("prompt_format", "plain"))
  path, dtype = role_checkpoint(config, name)
  model, tokenizer = pool.causal_lm(path, dtype) if load else (None, pool.tokenizer(path))
  block = config[ROLE_BLOCKS[name]]
  label = f"{name}=policy" if name != "policy" and block.path == POLICY else name
  return Role(
    label, model, tokenizer, prompt_format=block.get("prompt_format", "plain"), model_key=pool.lm_key(path, dtype)
  )


def build_selector(config: ConfigDict, pool: ModelPool, load: bool = True):
  """The selector of `config` (None for kind none); with `load` off, one that knows its model's
  key and its prompts but holds no weights (`scaling/staged.SelectorToLoad` for a reward model)."""
  from helpsteer_jax.scaling.staged import SelectorToLoad
  from helpsteer_jax.scoring.selectors import GenerativeJudgeSelector, RewardModelSelector

  sel = config.selector
  batch_size = config.search.batch_size
  remote = selector_endpoint(config)
  if remote is not None:
    from helpsteer_jax.scoring.remote_selectors import RemoteJudgeSelector, RemoteRewardSelector

    endpoint = Endpoint(endpoint_settings(remote), what="the selector")
    if sel.kind == "generative_judge":
      return RemoteJudgeSelector(endpoint, sel.prompt_format)
    return RemoteRewardSelector(endpoint, sel.prompt_format, attribute=sel.get("reward_attribute", ""))
  if sel.kind == "generative_judge":
    path, dtype = role_checkpoint(config, "judge")
    model, tokenizer = pool.causal_lm(path, dtype) if load else (None, pool.tokenizer(path))
    return GenerativeJudgeSelector(
      model, tokenizer, batch_size=batch_size, prompt_format=sel.prompt_format, model_key=pool.lm_key(path, dtype)
    )
  if sel.kind != "reward_model":
    return None
  key = pool.rm_key(sel.path, sel.param_dtype, sel.logit_index)
  if not load:
    return SelectorToLoad(RewardModelSelector.name, key)
  model, tok = pool.reward_model(sel.path, sel.param_dtype, sel.logit_index)
  weights = None
  if model.num_outputs > 1:  # a multi-attribute model: HelpSteer2's weighted sum of its outputs
    from helpsteer_jax.checkpoints.reward import attribute_weights, reward_labels

    weights = attribute_weights(reward_labels(sel.path))
  if tok is None:
    raise ValueError(f"{sel.path} has no tokenizer files; the selector needs a tokenizer")
  return RewardModelSelector(
    model,
    tok,
    batch_size=batch_size,
    weights=weights,
    prompt_format=sel.prompt_format,
    model_key=key,
    shared_prefill=sel.get("shared_prefill", False),
  )


class PoolStageModels:
  """The staged schedule's models (`scaling/staged.StageModels`), loaded from `config`'s
  checkpoints through `pool`, one model at a time."""

  def __init__(self, config: ConfigDict, pool: ModelPool):
    self.config, self.pool = config, pool

  def key(self, stage: str, search) -> str:
    if stage in ("rank", "select"):
      return search.selector.model_key
    return {"policy": search.policy, "feedback": search.feedback, "edit": search.edit}[stage].model_key

  def load(self, stage: str, search) -> None:
    key = self.key(stage, search)
    logging.info("stage %s: loading %s", stage, key)
    for name, role in (("policy", search.policy), ("feedback", search.feedback), ("edit", search.edit)):
      if role.model_key == key:
        role.model = self.pool.causal_lm(*role_checkpoint(self.config, name))[0]
    if stage in ("rank", "select"):
      search.selector = build_selector(self.config, self.pool)

  def free(self, search) -> None:
    for role in (search.policy, search.feedback, search.edit):
      role.model = None
    if search.selector is not None:  # its unloaded form: name, model key and prompts, no weights
      search.selector = build_selector(self.config, self.pool, load=False)
    if self.pool.loaded():
      logging.info("freeing %s", ", ".join(self.pool.loaded()))
    self.pool.free()
    gc.collect()  # the arrays of a freed model go now, before the next model's load


def check_requests(items, search, contexts: dict[str, int]) -> dict[str, int]:
  """Fails before any work on a prompt whose longest request in any stage (the Edit request
  carries the draft and its feedback group) cannot fit the context of the model answering it
  (`contexts` by role: policy, feedback, edit). Returns the longest request by model key."""
  from helpsteer_jax.scaling.request_lengths import RoleLimits, check_request_lengths

  roles = {"draft": search.policy, "feedback": search.feedback, "edit": search.edit}
  limits = [
    RoleLimits(r.name, r.tokenizer, r.prompt_format, contexts[name])
    for name, r in (("policy", search.policy), ("feedback", search.feedback), ("edit", search.edit))
  ]
  by_key: dict[str, int] = {}
  for stage, tokens in check_request_lengths(items, search.settings, *limits).items():
    key = roles[stage].model_key
    by_key[key] = max(by_key.get(key, 0), tokens)
  return by_key


def choose_schedule(config: ConfigDict, items) -> str:
  """`search.schedule`, with auto resolved by the memory plan for this run's devices (pipelined
  where the devices report no memory limit, as on CPU)."""
  schedule = config.search.schedule
  if schedule != "auto":
    return schedule
  if any(role_endpoint(config, name) for name in ("policy", "feedback", "edit")):
    logging.info("schedule auto: a role runs on a remote endpoint; pipelined")
    return "pipelined"
  from helpsteer_jax.parallel.device_memory import device_memory

  limit, _ = device_memory()
  if not limit:
    logging.info("schedule auto: the devices report no memory limit; pipelined")
    return "pipelined"
  from helpsteer_jax.scaling.search_plan import plan_config

  plan, _, _ = plan_config(config, jax.device_count(), limit, config.search.memory_fraction, items=items)
  for line in plan.lines():
    logging.info("memory plan: %s", line)
  if plan.schedule == "neither":
    raise ValueError("no schedule fits these devices: " + plan.lines()[-1])
  return plan.schedule


def output_folder(config: ConfigDict) -> str:
  """Where the run writes: `output_dir`, or its `shard-I-of-N` folder for `prompts.shard=I/N`."""
  return run_folder(config.output_dir, parse_shard(config.prompts.get("shard", "")))


def run_search(config: ConfigDict) -> dict[str, Any]:
  """Runs (or resumes) the search of `config`; returns the summary. The output folder is checked
  writable and held by this run alone (`data/run_folder.py`) before any prompt is read."""
  # Bad values fail here, before any folder is made or model loads: the shard, the resume mode,
  # and every search value (each stage's sampling, whether or not the mode runs the stage).
  shard = parse_shard(config.prompts.get("shard", ""))
  check_search_config(config)
  folder = run_folder(config.output_dir, shard)
  # Every process of a multi-host run runs the same search; process 0 alone holds and writes the folder.
  with claim_run_folder(folder, what="scaling search", enabled=jax.process_index() == 0):
    return _run_search(config, folder, shard)


def _run_search(config: ConfigDict, folder: str, shard) -> dict[str, Any]:
  from helpsteer_jax.scaling.results import ResultWriter

  writes = jax.process_index() == 0
  items = load_prompts(
    config.prompts.source,
    config.prompts.path,
    config.prompts.limit,
    config.prompts.start,
    config.prompts.get("max_turns", 0),
  )
  if shard is not None:
    everything, items = len(items), shard.select(items)
    logging.info("shard %s: %d of the run's %d prompts", shard, len(items), everything)
  writer = ResultWriter(folder) if writes else None
  # What this run is (models by fingerprint, config, prompt file), checked against what produced
  # the folder before any model loads; every record names its models and its question.
  models = role_models(config)
  questions = {
    _turn_id(item, t): question_fingerprint(item) for item in items for t in range(1, 2 + len(item.later_turns))
  }
  if writer is not None:
    _check_rerun(config, folder, writer, search_identity(config, models), questions)
  # A multi-turn question is answered turn by turn, each turn a full search whose conversation
  # holds the search's own chosen answers to the turns before: one round per turn.
  rounds = max((1 + len(item.later_turns) for item in items), default=1)
  expected = [_turn_id(item, t) for item in items for t in range(1, 2 + len(item.later_turns))]
  done_before = len(expected) - len(_still_to_do_ids(expected, writer))
  logging.info(
    "%d prompts%s, %d of their %d records already in %s",
    len(items),
    f" of up to {rounds} turns" if rounds > 1 else "",
    done_before,
    len(expected),
    folder,
  )
  pool = ModelPool(config.mesh)
  staged = choose_schedule(config, _still_to_do(items, writer) or items) == "staged"
  search = build_search(config, pool, load=not staged)

  start = time.perf_counter()
  written = [0]
  engine_stats: dict[str, Any] = {}
  with tqdm(total=len(expected), initial=done_before, desc="scaling search", unit="prompt", disable=not writes) as bar:
    # The bar's counter moves per finished prompt, its postfix per finished sample of any stage.
    search.progress = StageProgress(on_change=lambda p: bar.set_postfix_str(p.line()))

    def write(record):
      record["models"] = models
      record["prompt_fingerprint"] = questions.get(str(record["id"]))
      if writer is not None:
        writer.append([record])
      written[0] += 1
      bar.update(1)

    turn_items = items
    for turn in range(1, rounds + 1):
      if turn > 1:
        turn_items = _follow_ups(turn_items, writer)
      todo = _still_to_do(turn_items, writer)
      if not todo:
        continue
      if rounds > 1:
        logging.info("turn %d: %d prompts to answer", turn, len(todo))
      _fit_requests(config, pool, search, todo)
      finished_before = written[0]
      try:
        if staged:
          engine_stats = _run_staged(config, pool, search, folder, todo, write, bar)
        else:
          # Prompts enter the search's engine as it has room; each record is written (in prompt
          # order) as soon as it is complete, so an interrupted run loses only prompts in flight.
          search.run(
            todo, on_record=write, min_in_flight=config.prompts_per_batch, max_in_flight=config.prompts_in_flight
          )
          engine_stats = search.stats()["engines"]
        bar.set_postfix_str(search.progress.line())  # the last counts, past the refresh interval
      except Exception as e:
        finished = done_before + written[0]
        raise RuntimeError(
          f"the search failed with prompts {[b.id for b in todo[written[0] - finished_before :]][:8]} "
          f"unfinished ({type(e).__name__}: {e}); the {finished} finished prompts are kept in "
          f"{folder}, and a rerun of this config skips them"
        ) from e
  stats = dict(search.stats(), engines=engine_stats)
  for line in stage_log_lines(stats["engines"], stats["select_seconds"], search.progress.scored):
    logging.info("%s", line)
  run_info = {"config": config.to_dict(), "seconds_this_run": time.perf_counter() - start, "engine": stats}
  if writer is None:
    return {"process_index": jax.process_index(), "prompts_this_run": written[0]}
  return writer.finalize(run_info)


def _check_rerun(config: ConfigDict, folder: str, writer, identity, questions: dict[str, str]) -> None:
  """Refuses a rerun into `folder` that would mix another search with the one on disk (a field
  that changes results, another model, another question under an id on disk); records `identity`."""
  from helpsteer_jax.scaling.results import read_records

  resume = config.get("resume", "check")
  records = read_records(folder)
  done = {str(r["id"]) for r in records}
  check_rerun(folder, identity, SEARCH_RULES, resume, has_work=has_work(folder, done))
  check_questions(records, questions, folder, resume)
  write_identity(folder, identity)


def _turn_id(item, turn: int) -> str:
  """The record id of `item`'s question at `turn` (the first turn keeps the question's id)."""
  return item.id if turn <= 1 else f"{item.question_id}/turn{turn}"


def _fit_requests(config: ConfigDict, pool: ModelPool, search, todo) -> None:
  """Fails before any work on a request that cannot fit; sizes the slot budget to the longest."""
  longest = check_requests(
    todo,
    search,
    {
      name: 0 if role_endpoint(config, name) else pool.max_positions(role_checkpoint(config, name)[0])
      for name in ("policy", "feedback", "edit")
    },
  )
  if search.settings.memory_fraction > 0:
    from helpsteer_jax.parallel.device_memory import mesh_axes
    from helpsteer_jax.scaling.search import SlotBudget

    tensor = mesh_axes(tuple(config.mesh.shape), jax.device_count())[2]
    search.slot_budget = SlotBudget(longest, tensor, search.settings.memory_fraction)


def _follow_ups(items, writer) -> list:
  """The next turn of each item that has one, its conversation holding the chosen answer of the
  item's record (read by process 0 and told to the others)."""
  from helpsteer_jax.scaling.results import read_records

  waiting = {item.id for item in items if item.later_turns}
  chosen = {}
  if writer is not None:
    chosen = {str(r["id"]): r["best"]["text"] for r in read_records(writer.out_dir) if str(r["id"]) in waiting}
  if jax.process_count() > 1:
    chosen = json.loads(from_process_zero(json.dumps(chosen).encode() if writer is not None else b"") or b"{}")
  missing = sorted(waiting - set(chosen))
  if missing:
    raise RuntimeError(f"turns {missing[:8]} have no record: their next turns cannot start")
  return [item.follow_up(chosen[item.id]) for item in items if item.later_turns]


def _run_staged(config: ConfigDict, pool: ModelPool, search, folder: str, todo, write, bar) -> dict[str, Any]:
  """The staged schedule over `todo`, resumed from the stage files of `folder` (read by process 0
  and told to the others); returns the engines' stats by stage."""
  from helpsteer_jax.scaling.staged import StagedSearch, StageLog, StageSample

  writes = jax.process_index() == 0
  log = StageLog(folder, writes=writes)
  if jax.process_count() == 1:
    written = log.read()
  else:  # process 0 read the folder: the others get its samples
    on_disk = json.dumps([s.to_record() for s in log.read()]).encode() if writes else b""
    written = [StageSample.from_record(r) for r in json.loads(from_process_zero(on_disk) or b"[]")]
  if written:
    logging.info("%d samples of unfinished stages already in %s", len(written), log.folder)

  def on_stage(name: str) -> None:
    logging.info("stage %s", name)
    bar.set_description(f"scaling search ({name})")

  staged = StagedSearch(search, PoolStageModels(config, pool), log, on_stage=on_stage)
  staged.run(todo, written, on_record=write)
  log.compact()  # every stage done: in a bucket, each stage file as one object
  return staged.engine_stats


def _still_to_do(items, writer) -> list:
  """The prompts without a record in the folder."""
  todo = set(_still_to_do_ids([item.id for item in items], writer))
  return [item for item in items if item.id in todo]


def _still_to_do_ids(ids: list[str], writer) -> list[str]:
  """The ids without a record in the folder. In a multi-host run process 0 (the writer) reads
  the folder and sends the answer to the others, so that every process runs the same prompts even
  where the folder is on process 0's disk alone."""
  done = writer.done_ids() if writer is not None else set()
  mask = np.asarray([i in done for i in ids], np.bool_)
  if jax.process_count() > 1 and len(ids):
    from jax.experimental import multihost_utils

    mask = np.asarray(multihost_utils.broadcast_one_to_all(mask))
  return [i for i, finished in zip(ids, mask) if not finished]
