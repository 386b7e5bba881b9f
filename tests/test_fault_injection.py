"""Misuse and faults, tried as a new user would, through the real entry points at tiny size: two
runs on one folder, folders that cannot be written, empty or undecodable inputs, prompts too
long for a later stage of the search, stray command-line words, a damaged newest checkpoint, and
config fields that must be settable from the command line."""

from __future__ import annotations

import glob
import gzip
import importlib.util
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from helpsteer_jax.data.run_folder import LOCK_NAME, RunFolderBusy, RunFolderError, claim_run_folder
from helpsteer_jax.testing.search_runs import search_config, write_prompts
from helpsteer_jax.testing.subprocesses import run_entry
from helpsteer_jax.testing.tiny_models import smollm2_tokenizer
from helpsteer_jax.testing.train_runs import env, losses, train_command

# Compiles whole models (seconds a test): outside the smoke suite.
pytestmark = pytest.mark.entry

REPO = pathlib.Path(__file__).resolve().parents[1]
SCALE_EXPERIMENT = REPO / "experiments" / "scaling" / "smollm2_self_feedback_edit.py"


def _load(path: pathlib.Path, arg=None):
  spec = importlib.util.spec_from_file_location(path.stem, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg) if arg is not None else module.get_config()


def _failing(cmd: list[str], timeout: float = 300) -> str:
  """Runs `cmd`, which must fail with a non-zero exit; returns its combined output."""
  proc = subprocess.run(
    cmd, cwd=REPO, env=env(), timeout=timeout, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
  )
  assert proc.returncode not in (0, None), f"{' '.join(map(str, cmd))} succeeded:\n{proc.stdout[-3000:]}"
  assert proc.returncode > 0, f"killed by signal {-proc.returncode}:\n{proc.stdout[-3000:]}"
  return proc.stdout


def _scale(*extra: str) -> list[str]:
  return [sys.executable, "-m", "helpsteer_jax.scale", f"--config={SCALE_EXPERIMENT}", *extra]


# -- one writer per folder ------------------------------------------------------------------------


@pytest.mark.entry
def test_a_second_trainer_on_a_workdir_fails_at_once_and_a_dead_holder_is_taken_over(tmp_path, task_file):
  """Two processes, one workdir: the second stops before any work naming the first; after the
  first is killed (its lock record left behind), a rerun takes the folder over and trains."""
  run = tmp_path / "run"
  first = subprocess.Popen(
    train_command(
      run, task_file, "--config.total_steps=100000", "--config.checkpoint_every=0", "--config.data.batch_size=2"
    ),
    cwd=REPO,
    env=env(),
    stdout=subprocess.DEVNULL,
    stderr=subprocess.DEVNULL,
  )
  try:
    deadline = time.time() + 300
    while time.time() < deadline and first.poll() is None and not (run / "metrics.jsonl").exists():
      time.sleep(0.1)
    assert first.poll() is None, "the first run ended before the second could start"
    started = time.time()
    output = _failing(train_command(run, task_file, "--config.total_steps=2"))
    assert f"is in use by training run 'chat_sft_tiny' (pid {first.pid} on host" in output, output[-2000:]
    assert "resume:" not in output  # it stopped before looking at checkpoints or building a model
    print(f"second trainer refused in {time.time() - started:.1f}s")
  finally:
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=60)
  record = json.loads((run / LOCK_NAME).read_text())
  assert record["pid"] == first.pid  # kill -9 leaves the record; the OS released the lock
  output = run_entry(
    train_command(
      run, task_file, "--config.total_steps=2", "--config.checkpoint_every=0", "--config.data.batch_size=2"
    ),
    cwd=REPO,
    env=env(),
    timeout=600,
  )
  assert f"taking over the lock of training run 'chat_sft_tiny' (pid {first.pid}" in output
  assert max(losses(run)) == 2 and (run / LOCK_NAME).read_text() == ""  # released on exit


def test_the_search_and_evaluate_refuse_a_held_folder(model_dir, tmp_path):
  from helpsteer_jax import scale
  from helpsteer_jax.evaluate import evaluate

  prompts = tmp_path / "prompts.jsonl"
  write_prompts(prompts, ["Hi"])
  out = tmp_path / "out"
  with claim_run_folder(out, what="another search"):
    with pytest.raises(RunFolderBusy, match=rf"is in use by another search \(pid {os.getpid()} on host"):
      scale.run_search(search_config(model_dir, prompts, out, prompts_per_batch=None))
    eval_config = _load(REPO / "experiments" / "eval" / "arena_hard.py", "tiny")
    with pytest.raises(RunFolderBusy, match="is in use by another search"):
      evaluate(eval_config, str(out))
  assert not (out / "results.jsonl").exists()
  scale.run_search(search_config(model_dir, prompts, out, prompts_per_batch=None))  # released: the folder is free again
  assert (out / "summary.json").is_file()


@pytest.mark.entry
def test_a_stale_record_on_this_host_is_taken_over(tmp_path, caplog):
  import socket

  dead = subprocess.Popen([sys.executable, "-c", "pass"])
  dead.wait()
  (tmp_path / LOCK_NAME).write_text(
    json.dumps({"what": "old run", "pid": dead.pid, "host": socket.gethostname(), "started": "earlier"})
  )
  with caplog.at_level("WARNING"):
    with claim_run_folder(tmp_path, what="new run"):
      assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == os.getpid()
  assert f"taking over the lock of old run (pid {dead.pid}" in caplog.text


@pytest.mark.entry
def test_without_os_locks_the_record_decides(tmp_path, monkeypatch):
  """On a filesystem whose flock fails (ENOLCK), a live pid on this host holds the folder and a
  dead one is taken over."""
  import errno
  import fcntl
  import socket

  def no_locks(fd, operation):
    raise OSError(errno.ENOLCK, "No locks available")

  monkeypatch.setattr(fcntl, "flock", no_locks)
  host = socket.gethostname()
  (tmp_path / LOCK_NAME).write_text(json.dumps({"what": "live run", "pid": os.getppid(), "host": host}))
  with pytest.raises(RunFolderBusy, match=rf"in use by live run \(pid {os.getppid()} on host {host}"):
    with claim_run_folder(tmp_path):
      pass
  dead = subprocess.Popen([sys.executable, "-c", "pass"])
  dead.wait()
  (tmp_path / LOCK_NAME).write_text(json.dumps({"what": "dead run", "pid": dead.pid, "host": host}))
  with claim_run_folder(tmp_path, what="new run"):
    assert json.loads((tmp_path / LOCK_NAME).read_text())["what"] == "new run"
    with pytest.raises(RunFolderBusy, match="in use by new run"):  # its own record holds it too
      with claim_run_folder(tmp_path):
        pass


def test_the_summary_counts_each_prompt_once(tmp_path):
  from helpsteer_jax.scaling.results import RESULTS, ResultWriter

  def record(pid: str, total: int) -> dict:
    draft = {"text": "a", "score": 1.0, "feedbacks": []}
    return {
      "id": pid,
      "conversation": [{"role": "user", "content": "q"}],
      "drafts": [draft],
      "best": {"text": "a", "score": 1.0, "edit": None},
      "tokens": {"drafts": total, "feedback": 0, "edits": 0, "total": total, "greedy": 1},
      "token_multiple": total,
      "num_candidates": 1,
    }

  rows = [record("a", 2), record("b", 4), record("a", 2)]  # "a" written by two runs
  (tmp_path / RESULTS).write_text("".join(json.dumps(r) + "\n" for r in rows))
  summary = ResultWriter(str(tmp_path)).finalize({})
  assert summary["num_prompts"] == 2 and summary["tokens"]["total"] == 6
  assert len((tmp_path / "distill.jsonl").read_text().splitlines()) == 2


# -- fail before any work -------------------------------------------------------------------------


@pytest.mark.entry
def test_an_output_folder_that_cannot_be_created_fails_before_the_model_loads(tmp_path):
  blocker = tmp_path / "a_file"
  blocker.write_text("")
  prompts = tmp_path / "prompts.jsonl"
  write_prompts(prompts, ["Hi"])
  output = _failing(
    _scale("--config.prompts.source=jsonl", f"--config.prompts.path={prompts}", f"--config.output_dir={blocker}/out")
  )
  assert f"{blocker}/out: cannot create the output folder" in output
  assert "loaded" not in output and "prompts," not in output


def test_an_unwritable_folder_fails_the_probe(tmp_path, monkeypatch):
  """A read-only folder (root ignores permission bits, so the write itself is made to fail)."""
  import builtins

  real_open = builtins.open

  def read_only(path, mode="r", *args, **kwargs):
    if ".write_probe" in os.fspath(path) and "w" in mode:
      raise PermissionError(13, "Permission denied")
    return real_open(path, mode, *args, **kwargs)

  monkeypatch.setattr(builtins, "open", read_only)
  with pytest.raises(RunFolderError, match="the output folder cannot be written .Permission denied"):
    with claim_run_folder(tmp_path / "out"):
      pass


def test_a_trainer_workdir_that_cannot_be_created_fails_before_the_task_is_built(tmp_path):
  from helpsteer_jax.train.config import apply_size, default_train_config
  from helpsteer_jax.train.loop import train_and_evaluate

  class NeverBuilt:
    def __getattr__(self, name):
      raise AssertionError(f"the loop reached task.{name} before checking the workdir")

  (tmp_path / "a_file").write_text("")
  config = apply_size(default_train_config(), "tiny")
  with pytest.raises(RunFolderError, match="cannot create the output folder"):
    train_and_evaluate(config, str(tmp_path / "a_file" / "run"), NeverBuilt())


@pytest.mark.entry
@pytest.mark.parametrize("content", [b"", b"\n  \n"], ids=["zero_bytes", "blank_lines"])
def test_an_empty_prompt_file_fails_before_the_model_loads(tmp_path, content):
  prompts = tmp_path / "prompts.jsonl"
  prompts.write_bytes(content)
  output = _failing(
    _scale(
      "--config.prompts.source=jsonl", f"--config.prompts.path={prompts}", f"--config.output_dir={tmp_path / 'out'}"
    )
  )
  assert f"{prompts}: no prompts (the file is empty)" in output
  assert not (tmp_path / "out" / "results.jsonl").exists()


@pytest.mark.entry
def test_an_empty_training_file_says_no_examples_were_built_from_it(tmp_path, embedded_gguf_path):
  data = tmp_path / "empty.jsonl"
  data.write_bytes(b"")
  output = _failing(train_command(tmp_path / "run", data, "--config.total_steps=2"))
  assert f"{data}: no chat_messages examples were built from this source (the file is empty)" in output
  assert not (tmp_path / "run" / "checkpoints").exists()


def test_an_edit_request_over_the_context_fails_before_any_generation(model_dir, tmp_path, monkeypatch):
  """The prompt and its draft fit (4096 tokens), but the Edit request carries the draft and a
  group of three feedbacks of 1000 tokens each: it cannot, and nothing is generated."""
  from helpsteer_jax import scale
  from helpsteer_jax.scaling.search import FeedbackEditSearch

  monkeypatch.setattr(FeedbackEditSearch, "run", lambda self, items: pytest.fail("generation started"))
  prompts = tmp_path / "prompts.jsonl"
  write_prompts(prompts, ["Name a colour.", "Say hello."])
  config = search_config(model_dir, prompts, tmp_path / "out", max_new_tokens=1000, prompts_per_batch=None)
  config.search.num_feedbacks = 3
  config.search.num_feedback_samples = 3
  config.search.feedback_group_size = 3
  with pytest.raises(ValueError) as info:
    scale.run_search(config)
  message = str(info.value)
  assert "prompt 'q0': its edit request, with a draft of 1000 tokens and 3 feedback items of 1000 tokens" in message
  assert "over the edit=policy model's context of 4096" in message
  assert not (tmp_path / "out" / "results.jsonl").exists()


def test_request_lengths_name_the_stage_that_overflows():
  """The pure check: each stage's worst case against the context of the model answering it."""
  from helpsteer_jax.data.prompt_sources import PromptItem
  from helpsteer_jax.scaling.request_lengths import RoleLimits, check_request_lengths, longest_requests
  from helpsteer_jax.scaling.search import SearchSettings, StageSampling

  tokenizer = smollm2_tokenizer()
  item = PromptItem("p", [{"role": "user", "content": "Name a colour."}])
  settings = SearchSettings(
    num_feedbacks=2,
    feedback_group_size=2,
    draft=StageSampling(max_new_tokens=300),
    feedback=StageSampling(max_new_tokens=200),
    edit=StageSampling(max_new_tokens=300),
  )
  roles = [RoleLimits(name, tokenizer, "plain", 4096) for name in ("policy", "feedback", "edit")]
  requests = {r.stage: r for r in longest_requests(item, settings, *roles)}
  assert requests["draft"].prompt_tokens < requests["feedback"].prompt_tokens - 300
  assert requests["edit"].prompt_tokens > requests["draft"].prompt_tokens + 300 + 2 * 200
  check_request_lengths([item], settings, *roles)  # fits in 4096
  small_feedback = RoleLimits("feedback", tokenizer, "nemotron", requests["feedback"].prompt_tokens + 100)
  with pytest.raises(ValueError, match="its feedback request, with a draft of 300 tokens, .* over the feedback model"):
    check_request_lengths([item], settings, roles[0], small_feedback, roles[2])
  greedy = SearchSettings(mode="greedy", draft=StageSampling(max_new_tokens=300))
  assert [r.stage for r in longest_requests(item, greedy, *roles)] == ["draft"]


STRAY = {
  "scale": [f"--config={SCALE_EXPERIMENT}", "extra"],
  "chat": ["--prompt=What", "is", "the", "capital", "of", "France"],
  "evaluate": [f"--config={REPO / 'experiments' / 'eval' / 'arena_hard.py'}:tiny", "extra"],
  "tables": ["--results=a", "--out=b", "extra"],
  "plan": [f"--config={REPO / 'experiments' / 'chat_sft.py'}:tiny", "--devices=1", "extra"],
}


@pytest.mark.entry
@pytest.mark.parametrize("command", sorted(STRAY))
def test_stray_positional_arguments_are_a_usage_error(command):
  output = _failing([sys.executable, "-m", f"helpsteer_jax.{command}", *STRAY[command]], timeout=120)
  stray = STRAY[command][1:] if command == "chat" else ["extra"]
  assert f"unexpected arguments {stray}" in output, output[-2000:]
  assert "Traceback" not in output


# -- errors name the input ------------------------------------------------------------------------

LATIN1 = '{"id": "b", "prompt": "caf\xe9"}\n'.encode("latin-1")  # 0xe9: not UTF-8 here
GOOD = b'{"id": "a", "prompt": "Hi"}\n'
OFFSET = len(GOOD) + LATIN1.index(b"\xe9")
COLUMN = LATIN1.index(b"\xe9") + 1


def _readers():
  from helpsteer_jax.data.jsonl import JsonlAppender
  from helpsteer_jax.data.prompt_sources import load_prompts
  from helpsteer_jax.data.sources import SourceSpec, read_rows
  from helpsteer_jax.eval.answers import read_answers
  from helpsteer_jax.eval.rescore import read_alpaca_annotations
  from helpsteer_jax.eval.results import read_result
  from helpsteer_jax.eval.sources import alpaca_eval_set, read_jsonl
  from helpsteer_jax.eval.tables import read_row_specs
  from helpsteer_jax.scaling.results import read_records

  return {
    "training_jsonl": ("train.jsonl", lambda p: list(read_rows(SourceSpec(path=p)))),
    "training_jsonl_gz": ("train.jsonl.gz", lambda p: list(read_rows(SourceSpec(path=p)))),
    "training_json": ("train.json", lambda p: list(read_rows(SourceSpec(path=p)))),
    "prompts": ("prompts.jsonl", lambda p: load_prompts("jsonl", p)),
    "benchmark_jsonl": ("question.jsonl", read_jsonl),
    "alpaca_json": ("outputs.json", alpaca_eval_set),
    "answers_log": ("answers.jsonl", lambda p: JsonlAppender(p).read()),
    "search_results": ("results.jsonl", lambda p: read_records(os.path.dirname(p))),
    "answers_json": ("answers.json", lambda p: read_answers(p, [])),
    "eval_result": ("eval_result.json", read_result),
    "table_rows": ("rows.json", read_row_specs),
    "annotations": ("annotations.json", read_alpaca_annotations),
  }


@pytest.mark.parametrize("case", sorted(_readers()))
def test_non_utf8_bytes_name_the_file_line_and_offset(tmp_path, case):
  from helpsteer_jax.data.examples import DataError

  name, read = _readers()[case]
  path = str(tmp_path / name)
  data = GOOD + LATIN1
  if name.endswith(".json"):
    data = b"[\n" + GOOD.rstrip() + b",\n" + LATIN1.rstrip() + b"\n]\n"
  opener = gzip.open if name.endswith(".gz") else open
  with opener(path, "wb") as f:
    f.write(data)
  with pytest.raises(DataError) as info:
    read(path)
  line = 3 if name.endswith(".json") else 2
  offset = data.index(b"\xe9")
  assert (
    f"{path}:{line}: not UTF-8 text (byte 0xe9 at column {COLUMN} of the line, byte offset {offset} of the file)"
  ) in str(info.value)


@pytest.mark.entry
def test_a_prompt_of_the_wrong_type_is_named_through_the_entry_point(tmp_path):
  prompts = tmp_path / "prompts.jsonl"
  prompts.write_text(json.dumps({"id": "a", "prompt": "Hi"}) + "\n" + json.dumps({"id": "b", "prompt": 123}) + "\n")
  output = _failing(
    _scale(
      "--config.prompts.source=jsonl", f"--config.prompts.path={prompts}", f"--config.output_dir={tmp_path / 'out'}"
    )
  )
  assert f"{prompts}:2: field 'prompt' must be a string, got int 123" in output


@pytest.mark.entry
def test_non_utf8_prompts_through_the_entry_point(tmp_path):
  prompts = tmp_path / "prompts.jsonl"
  prompts.write_bytes(GOOD + LATIN1)
  output = _failing(
    _scale(
      "--config.prompts.source=jsonl", f"--config.prompts.path={prompts}", f"--config.output_dir={tmp_path / 'out'}"
    )
  )
  assert f"{prompts}:2: not UTF-8 text (byte 0xe9" in output and f"byte offset {OFFSET} of the file" in output


# -- a damaged newest checkpoint ------------------------------------------------------------------


def _largest_file(folder: pathlib.Path) -> pathlib.Path:
  return max((p for p in folder.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)


def _tiny_state():
  import jax.numpy as jnp

  return {"w": jnp.arange(4096, dtype=jnp.float32).reshape(64, 64), "b": jnp.ones(8, jnp.float32)}


def test_a_damaged_newest_checkpoint_is_named_or_set_aside(tmp_path):
  """In-process, on a small state: "none" raises one CheckpointError naming the step folder and the
  array that cannot be read; "previous" moves the step aside and restores the step before."""
  import jax

  from helpsteer_jax.checkpoints.safetensors_io import CheckpointError
  from helpsteer_jax.train.checkpointing import CORRUPT_DIR, Checkpointer

  state = _tiny_state()
  saver = Checkpointer(tmp_path / "checkpoints", asynchronous=False)
  for step in (1, 2):
    saver.save(step, jax.tree.map(lambda x: x * step, state), {"position": step}, force=True)
  saver.close()
  _largest_file(tmp_path / "checkpoints" / "2").unlink()
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state)

  strict = Checkpointer(tmp_path / "checkpoints", asynchronous=False)
  with pytest.raises(CheckpointError) as info:
    strict.restore_newest_intact(abstract, "none")
  strict.close()
  assert f"{tmp_path / 'checkpoints' / '2'}: the checkpoint of step 2 cannot be restored (array " in str(info.value)
  assert "a data file of the step is missing or cut short" in str(info.value)

  lenient = Checkpointer(tmp_path / "checkpoints", asynchronous=False)
  restored, position, step = lenient.restore_newest_intact(abstract, "previous")
  assert step == 1 and position == {"position": 1}
  np.testing.assert_array_equal(np.asarray(restored["w"]), np.asarray(state["w"]))
  assert lenient.latest_step() == 1 and (tmp_path / CORRUPT_DIR / "2").is_dir()
  lenient.save(2, state, {"position": 2}, force=True)  # the step number can be saved again
  lenient.close()


@pytest.mark.entry
def test_resume_after_the_newest_checkpoint_lost_its_data_is_bit_identical(tmp_path, task_file):
  """Through the trainer: a finished run's copy whose step-6 data file is deleted resumes from
  step 3 by itself and ends with the losses and exported weights of the uninterrupted run."""
  steps = [
    "--config.total_steps=6",
    "--config.checkpoint_every=3",
    "--config.data.batch_size=2",
    "--config.optim.learning_rate=1e-3",
  ]
  straight = tmp_path / "straight"
  run_entry(
    train_command(straight, task_file, *steps, f"--config.export_dir={straight}/export"),
    cwd=REPO,
    env=env(),
    timeout=600,
  )
  damaged = tmp_path / "damaged"
  shutil.copytree(straight, damaged, ignore=shutil.ignore_patterns("export"))
  lost = _largest_file(damaged / "checkpoints" / "6")
  lost.unlink()

  output = run_entry(
    train_command(damaged, task_file, *steps, f"--config.export_dir={damaged}/export"), cwd=REPO, env=env(), timeout=600
  )
  assert f"{damaged / 'checkpoints' / '6'}: the checkpoint of step 6 cannot be restored" in output
  assert "resume_fallback='previous': moving it aside and resuming from step 3" in output
  assert "resume: latest checkpoint of this run, step 3" in output
  a, b = losses(straight), losses(damaged)
  assert sorted(a) == sorted(b) == list(range(1, 7))
  assert [a[s] for s in sorted(a)] == [b[s] for s in sorted(b)]  # exact
  from safetensors.numpy import load_file

  wa = load_file(str(straight / "export" / "model.safetensors"))
  wb = load_file(str(damaged / "export" / "model.safetensors"))
  assert wa.keys() == wb.keys()
  for name in wa:
    np.testing.assert_array_equal(wa[name], wb[name], err_msg=name)
  print(f"deleted {lost.relative_to(damaged)} ({len(wa)} tensors compared)")


# -- every config field from the command line -----------------------------------------------------

EXPERIMENT_FILES = sorted(
  p
  for p in glob.glob(str(REPO / "experiments" / "*.py")) + glob.glob(str(REPO / "experiments" / "*" / "*.py"))
  if "benchmarks" not in p
)


def _leaves(config, prefix: str = ""):
  from ml_collections import ConfigDict, FieldReference

  for key in config.keys():
    value = config[key]
    if isinstance(value, ConfigDict):
      yield from _leaves(value, f"{prefix}{key}.")
    else:
      ref = config._fields[key]
      declared = ref.get_type() if isinstance(ref, FieldReference) else type(value)
      yield f"{prefix}{key}", value, declared


def _changed(value, declared):
  """A command-line value of the field's type that differs from `value` (None: no such value)."""
  if declared is bool:
    return "false" if value else "true", not value
  if declared is int:
    new = (value or 0) + 3
    return str(new), new
  if declared is float:
    new = (value or 0.0) + 0.5
    return repr(new), new
  if declared is str:
    return value + "_x", value + "_x"
  if declared is tuple and value and all(type(v) is int for v in value):
    new = tuple(v + 1 for v in value)
    return str(new).replace(" ", ""), new
  return None


def _override(path: str, flags_: list[str], monkeypatch):
  from absl import flags
  from ml_collections import config_flags

  values = flags.FlagValues()
  holder = config_flags.DEFINE_config_file("config", None, "", flag_values=values, lock_config=True)
  argv = ["prog", f"--config={path}", *flags_]
  monkeypatch.setattr(sys, "argv", argv)  # config_flags reads the overrides from sys.argv
  values(argv)
  return holder.value


@pytest.mark.parametrize("path", EXPERIMENT_FILES, ids=lambda p: os.path.relpath(p, REPO / "experiments"))
def test_every_field_type_can_be_set_from_the_command_line(path, monkeypatch):
  """One field of each type of the experiment (the first in order), an unset (None-default) field
  included where there is one, set through the flags; and no field is a bare None, whose type no
  flag could parse."""
  base = _override(path, [], monkeypatch)
  leaves = list(_leaves(base))
  untyped = [name for name, value, declared in leaves if declared is type(None)]
  assert not untyped, f"fields with a bare None default cannot be set from the command line: {untyped}"
  chosen = {}
  for name, value, declared in leaves:
    kind = "unset" if value is None else declared
    if kind in chosen or _changed(value, declared) is None:
      continue
    chosen[kind] = (name, *_changed(value, declared))
  assert {int, str, bool} <= set(chosen), f"{path}: expected int, str and bool fields, found {set(chosen)}"
  config = _override(path, [f"--config.{name}={text}" for name, text, _ in chosen.values()], monkeypatch)
  for name, _, expected in chosen.values():
    value = config
    for part in name.split("."):
      value = value[part]
    assert value == expected, f"--config.{name}: got {value!r}, expected {expected!r}"
  print(f"{os.path.basename(path)}: set {', '.join(n for n, _, _ in chosen.values())}")


@pytest.mark.entry
def test_the_draft_top_k_is_settable():
  """The case of the report: `--config.search.draft.top_k=50` reaches the search's settings."""
  from helpsteer_jax.scale import search_settings

  result = subprocess.run(
    [
      sys.executable,
      "-c",
      "import sys; from absl import flags; from ml_collections import config_flags;"
      "v = flags.FlagValues(); h = config_flags.DEFINE_config_file('config', flag_values=v, lock_config=True);"
      "v(sys.argv); print(h.value.search.draft.top_k, h.value.search.edit.top_k)",
      f"--config={SCALE_EXPERIMENT}",
      "--config.search.draft.top_k=50",
    ],
    cwd=REPO,
    env=env(),
    capture_output=True,
    text=True,
    timeout=120,
  )
  assert result.returncode == 0, result.stderr[-2000:]
  assert result.stdout.split() == ["50", "None"]
  settings = search_settings(_load(SCALE_EXPERIMENT).search)
  assert settings.draft.top_k is None
