"""The default scaling-search config; experiment files under experiments/scaling/ start from it."""

from __future__ import annotations

from typing import Optional

from ml_collections import ConfigDict, config_dict

from helpsteer_jax.parallel.distributed import distributed_config
from helpsteer_jax.parallel.mesh_config import mesh_config
from helpsteer_jax.remote.endpoint import EndpointSettings
from helpsteer_jax.scaling.search_settings import SearchSettings

POLICY = "policy"  # a role path that means "the policy model plays this role"
# The config block of each role's model.
ROLE_BLOCKS = {"policy": "policy", "feedback": "feedback_model", "edit": "edit_model", "judge": "selector"}


def role_checkpoint(config: ConfigDict, name: str) -> tuple[str, str]:
  """(path, param_dtype) of the causal LM that plays role `name` (policy, feedback, edit, judge)."""
  block = config[ROLE_BLOCKS[name]]
  if name != "policy" and block.path == POLICY:
    return config.policy.path, config.policy.param_dtype
  return block.path, block.param_dtype


def role_endpoint(config: ConfigDict, name: str) -> Optional[ConfigDict]:
  """The endpoint block of the model playing role `name` (policy, feedback, edit, judge) when that
  model is remote (`endpoint.kind=openai`): the role's own block, or the policy's when the policy
  plays the role. None: a local model."""
  block = config[ROLE_BLOCKS[name]]
  own = block.get("endpoint")
  if own is not None and own.kind == "openai":
    return own
  if name != "policy" and block.path == POLICY:
    return role_endpoint(config, "policy")
  return None


def endpoint_settings(block: ConfigDict) -> EndpointSettings:
  return EndpointSettings(
    base_url=block.base_url,
    model=block.model,
    api_key_env=block.api_key_env,
    timeout_s=float(block.timeout_s),
    max_retries=block.max_retries,
    max_concurrency=block.max_concurrency,
  )


def endpoint(kind: str = "local") -> ConfigDict:
  """Where a role's model runs: `local` (loaded from `path`) or `openai`, any OpenAI-compatible
  server (vLLM, an NVIDIA NIM, `python -m helpsteer_jax.serve`) at `base_url` serving `model`, its
  API key read from the environment variable `api_key_env` ("" = none) and never written. At most
  `max_concurrency` calls are in flight; a failed call is retried `max_retries` times."""
  return ConfigDict(
    {
      "kind": kind,
      "base_url": "",
      "model": "",
      "api_key_env": "",
      "max_concurrency": 8,
      "max_retries": 3,
      "timeout_s": 600.0,
    }
  )


def selector(
  path: str = "policy", param_dtype: str = "", prompt_format: str = "plain", kind: str = "generative_judge"
) -> ConfigDict:
  """The selector's block: a role's fields, and `kind` generative_judge | reward_model | none."""
  block = role(path, param_dtype, prompt_format)
  block.kind = kind
  # reward_model stored as a causal LM (NVIDIA's Select): the vocabulary index of its reward logit.
  block.logit_index = config_dict.placeholder(int)
  # A remote reward model's reply names its scores (scoring/remote_selectors.py): the one to use;
  # "" = a lone score, or HelpSteer2's weighted sum of the five attributes.
  block.reward_attribute = ""
  # reward_model: the candidates of one conversation scored through a chunked prefill that
  # computes the conversation once (scoring/selectors.py); False: each in a left-padded batch.
  # Scores agree to 1e-5 either way; the prefill was 1.8x faster on CPU
  # (experiments/benchmarks/results/select_prefill.md).
  block.shared_prefill = True
  return block


def stage(temperature: float = 0.7, top_p: float = 0.95, max_new_tokens: int = 256) -> ConfigDict:
  # top_k is unset by default; a typed placeholder (not a bare None) lets the command line set it
  # (`--config.search.draft.top_k=50`), since a flag's value is parsed by the field's type.
  return ConfigDict(
    {
      "temperature": temperature,
      "top_p": top_p,
      "top_k": config_dict.placeholder(int),
      "max_new_tokens": max_new_tokens,
    },
    type_safe=False,
  )


def role(path: str = "policy", param_dtype: str = "", prompt_format: str = "plain") -> ConfigDict:
  """`path`: an HF folder or .gguf; "policy" = the policy plays the role; "" = embedded SmolLM2.
  `prompt_format`: the layout of the role's requests (formats/prompts.py: plain | nemotron)."""
  return ConfigDict({"path": path, "param_dtype": param_dtype, "prompt_format": prompt_format, "endpoint": endpoint()})


def default_config() -> ConfigDict:
  config = ConfigDict()
  config.policy = role(path="")  # the embedded SmolLM2-135M-Instruct
  config.feedback_model = role()
  config.edit_model = role()
  config.selector = selector()
  # shard "I/N": this run takes every N-th prompt from the I-th and writes <output_dir>/shard-I-of-N
  # (scaling/shards.py); `python -m helpsteer_jax.merge` joins the shards. Empty: all prompts.
  # source: arena_hard | mt_bench | alpaca_eval (the benchmarks' questions, with their ids) | jsonl (path).
  # max_turns: of a multi-turn question (MT-Bench, a jsonl row with `turns`), the turns answered,
  # each a full search with the chosen answers before it in the conversation (0: all).
  config.prompts = ConfigDict({"source": "arena_hard", "path": "", "limit": 4, "start": 0, "shard": "", "max_turns": 0})
  config.search = ConfigDict(
    {
      "mode": "feedback_edit",
      "num_drafts": 2,
      "num_feedbacks": 2,  # M: effective feedbacks kept per draft (the paper's grid axis)
      "num_feedback_samples": 0,  # F: sampled per draft; 0 = 2M, at most 64, at least M
      "feedback_group_size": 3,
      "num_edits": 1,
      "feedback_rule": "constructive",
      "draft": stage(),
      "feedback": stage(temperature=0.7, max_new_tokens=160),  # the Feedback model card's 0.7
      "edit": stage(),
      # The readings of the paper's tree and token account (docs/reproducing.md): feedback on
      # every draft (or the best k by the selector), one Edit request per draft from its best
      # feedback group (or one per group), drafts and edits counted against greedy (or feedback too).
      "feedback_drafts": SearchSettings.feedback_drafts,
      "edits_from": SearchSettings.edits_from,
      "token_account": SearchSettings.token_account,
      # Feedback in waves until M are kept, and early exit of feedback whose opening fails the
      # rule (scaling/search_settings.py; experiments/benchmarks/results/search_options.md, what each saves).
      "feedback_sampling": SearchSettings.feedback_sampling,
      "feedback_wave": SearchSettings.feedback_wave,
      "feedback_early_exit": SearchSettings.feedback_early_exit,
      "early_exit_tokens": SearchSettings.early_exit_tokens,
      # A token budget per prompt (a multiple of its greedy answer) and a settling margin: drafts
      # expanded one at a time, best first, while under it (scaling/token_budget.py). 0: off.
      "token_budget": SearchSettings.token_budget,
      "settle_margin": SearchSettings.settle_margin,
      "select_drafts": True,
      "measure_greedy": True,
      "batch_size": 16,
      # Shared prefixes held once in each local engine (a prefix table of this many entries).
      "prefix_entries": SearchSettings.prefix_entries,
      "seed": 0,
      # pipelined: every role's model loaded, the stages of the prompts in flight overlapping;
      # staged: one stage at a time over all prompts with only its model loaded, for roles that
      # do not fit together (scaling/staged.py). Both give the same records.
      "schedule": "pipelined",  # | staged | auto: the memory plan's choice for the devices at hand
      # Share of each device's memory for weights and caches; engines size their slots to it.
      "memory_fraction": 0.9,
    }
  )
  # Prompts admitted to the search together at least; more enter while the engine has free slots.
  config.prompts_per_batch = 4
  config.prompts_in_flight = 0  # at most this many prompts at a time; 0 = as the engine has room
  config.mesh = mesh_config((1, 1, 1))  # shape (data, fsdp, tensor), -1 = the rest; rules
  # Several hosts run one search SPMD over a mesh of all their devices (parallel/distributed.py).
  config.distributed = distributed_config()
  config.output_dir = "outputs/scaling/default"
  # check: a rerun into a folder holding another search's results refuses, naming the fields
  # that differ (data/run_identity.py); force: it continues anyway, logging them.
  config.resume = "check"
  # The table row the evaluations of this run fill ("<policy>:<variant>", eval/tables.py), read by
  # `evaluate` when it is given no label of its own; "" = the evaluated folder's name.
  config.label = ""
  # The model name a request to `python -m helpsteer_jax.serve --search_config=...` names to run
  # this search (serve/search_service.py).
  config.served_model_name = "feedback-edit"
  return config


# The released models of the paper's system, by role, and the folders the 70B configs read them
# from: `checkpoints/<repository name>` (download, then load as they are or convert; see
# docs/reproducing.md). The Edit model before RL is not released: experiments/edit_sft.py:70b
# trains it.
RELEASED_MODELS = {
  "policy": "nvidia/Llama-3.1-Nemotron-70B-Instruct-HF",  # the paper's drafts
  "base_policy": "meta-llama/Llama-3.3-70B-Instruct",  # the main table's base row, an ablation
  "feedback": "nvidia/Llama-3.3-Nemotron-70B-Feedback",
  "edit": "nvidia/Llama-3.3-Nemotron-70B-Edit",
  "select": "nvidia/Llama-3.3-Nemotron-70B-Select",
}
LLAMA3_70B_ROLES = {name: "checkpoints/" + repo.split("/")[1] for name, repo in RELEASED_MODELS.items()}
LLAMA3_70B_ROLES["edit_sft"] = "checkpoints/Llama-3.3-Nemotron-70B-Edit-SFT"
# Which model writes the drafts (`policy=` argument of the experiments), by size: the name is the
# first part of a run's table label ("nemotron_instruct:feedback_edit", eval/tables.py).
POLICIES = {"70b": {"nemotron_instruct": "policy", "llama3.3_instruct": "base_policy"}, "smollm2": {"smollm2": ""}}
DEFAULT_POLICY = {"70b": "nemotron_instruct", "smollm2": "smollm2"}


def sized_config(size: str, policy: str = "") -> ConfigDict:
  """The shared part of the paper-scale configs: `70b` (NVIDIA's released roles in their own
  layouts, bf16, 8-way tensor parallel) or `smollm2` (the embedded model in every role: the same
  experiment at CPU scale). `policy` picks the drafting model (POLICIES; "" = the size's default)."""
  if size not in POLICIES:
    raise ValueError(f"size={size!r}; expected one of {sorted(POLICIES)}")
  policy = policy or DEFAULT_POLICY[size]
  if policy not in POLICIES[size]:
    raise ValueError(f"policy={policy!r} at size={size}; expected one of {sorted(POLICIES[size])}")
  config = default_config()
  if size == "70b":
    config.policy = role(LLAMA3_70B_ROLES[POLICIES[size][policy]], "bfloat16")
    # The Feedback model reads NVIDIA's multi-turn layout; the Edit model's layout is unpublished,
    # so it gets the project's (docs/reproducing.md).
    config.feedback_model = role(LLAMA3_70B_ROLES["feedback"], "bfloat16", prompt_format="nemotron")
    config.edit_model = role(LLAMA3_70B_ROLES["edit"], "bfloat16", prompt_format="plain")
    config.selector = selector(LLAMA3_70B_ROLES["select"], "bfloat16", prompt_format="nemotron", kind="reward_model")
    config.selector.logit_index = 0  # Select stores its reward as the logit of token 0
    config.mesh.shape = (1, 1, -1)  # tensor parallel over all devices of the host (8 GPUs or TPU cores)
    config.search.batch_size = 64
    # Four 70B roles take 564 GB: pipelined on two 8x80 GB nodes or a v5p-16, staged on one node
    # (`python -m helpsteer_jax.plan --search` prints the plan for a mesh).
    config.search.schedule = "auto"
    config.prompts.limit = 0  # all 500 Arena-Hard questions
    for name, tokens in (("draft", 2048), ("feedback", 512), ("edit", 2048)):
      config.search[name].max_new_tokens = tokens
  else:
    config.prompts.limit = 3
    for name, tokens in (("draft", 160), ("feedback", 96), ("edit", 160)):
      config.search[name].max_new_tokens = tokens
  return config
