"""The path layer on a GCS emulator: files, the append log's objects, the run folder's lock, and
the one-line refusal of a bucket URL without its client library."""

import json
import os
import subprocess
import sys

import pytest

from helpsteer_jax import storage
from helpsteer_jax.data.jsonl import JsonlAppender, read_jsonl
from helpsteer_jax.data.run_folder import RunFolderBusy, claim_run_folder
from helpsteer_jax.storage import object_log
from helpsteer_jax.storage.object_lock import ObjectLock

# Compiles whole models (seconds a test): outside the smoke suite.
pytestmark = pytest.mark.entry


def test_files_round_trip_in_a_bucket(gcs_bucket):
  path = storage.join(gcs_bucket, "run1", "summary.json")
  storage.write_atomic(path, '{"a": 1}\n')
  assert storage.read_text(path) == '{"a": 1}\n'
  assert storage.is_file(path) and storage.is_dir(storage.join(gcs_bucket, "run1"))
  assert storage.listdir(storage.join(gcs_bucket, "run1")) == ["summary.json"]
  storage.remove(path)
  assert not storage.exists(path)
  assert not os.path.exists("gs:")


def test_append_log_is_one_object_per_append_and_compacts_safely(gcs_bucket):
  path = storage.join(gcs_bucket, "run1", "results.jsonl")
  log = JsonlAppender(path)
  log.append([{"id": 0}])
  log.append([{"id": 1}, {"id": 2}])
  assert storage.listdir(object_log.parts_folder(path)) == ["00000000-00000000.jsonl", "00000001-00000001.jsonl"]
  assert [row["id"] for row in JsonlAppender(path).read()] == [0, 1, 2]
  # A compaction cut short after writing the whole range but before deleting its parts: the parts
  # inside the range are skipped, so no row is read twice.
  storage.write_atomic(
    storage.join(object_log.parts_folder(path), "00000000-00000001.jsonl"), b'{"id": 0}\n{"id": 1}\n{"id": 2}\n'
  )
  assert [row["id"] for row in read_jsonl(path)] == [0, 1, 2]
  resumed = JsonlAppender(path)  # appends carry on after the widest range
  resumed.append([{"id": 3}])
  resumed.compact()
  assert storage.listdir(object_log.parts_folder(path)) == ["00000000-00000002.jsonl"]
  assert [row["id"] for row in read_jsonl(path)] == [0, 1, 2, 3]


def test_two_writers_of_one_log_never_overwrite_each_other(gcs_bucket):
  path = storage.join(gcs_bucket, "shared", "judge_cache.jsonl")
  first, second = JsonlAppender(path), JsonlAppender(path)  # both start at part 0
  first.append([{"key": "a"}])
  second.append([{"key": "b"}])  # part 0 is taken: it writes part 1
  first.append([{"key": "c"}])
  assert sorted(row["key"] for row in read_jsonl(path)) == ["a", "b", "c"]
  assert len(storage.listdir(object_log.parts_folder(path))) == 3


def test_a_plain_log_copied_into_the_bucket_is_read_before_its_parts(gcs_bucket):
  path = storage.join(gcs_bucket, "copied", "results.jsonl")
  storage.write_atomic(path, b'{"id": 0}\n')
  JsonlAppender(path).append([{"id": 1}])
  assert [row["id"] for row in read_jsonl(path)] == [0, 1]


def test_a_second_run_cannot_claim_a_bucket_folder_and_a_clean_exit_frees_it(gcs_bucket):
  folder = storage.join(gcs_bucket, "run1")
  with claim_run_folder(folder, what="search"):
    record = json.loads(storage.read_text(storage.join(folder, ".lock")))
    assert record["pid"] == os.getpid() and record["what"] == "search"
    with pytest.raises(RunFolderBusy, match="in use by search"):
      with claim_run_folder(folder, what="search"):
        pass
  assert not storage.exists(storage.join(folder, ".lock"))
  with claim_run_folder(folder, what="search"):
    pass


def test_a_lapsed_lease_is_taken_over_and_the_lease_is_renewed(gcs_bucket):
  path = storage.join(gcs_bucket, "run2", ".lock")
  # A holder on another host that stopped renewing (a preempted VM): stale once its lease lapses.
  storage.write_atomic(path, json.dumps({"what": "train", "pid": 1, "host": "gone-vm", "renewed": 0, "lease_s": 300}))
  lock = ObjectLock(path, what="train", lease_s=2.0, renew_s=0.2)
  lock.acquire()
  try:
    first = json.loads(storage.read_text(path))["renewed"]
    import time

    time.sleep(0.8)
    assert json.loads(storage.read_text(path))["renewed"] > first
    other = ObjectLock(path, what="train")
    with pytest.raises(Exception, match="in use by train"):
      other.acquire()
  finally:
    lock.release()
  assert not storage.exists(path)


@pytest.mark.entry
def test_a_bucket_url_without_its_client_fails_in_one_line_and_makes_no_folder(tmp_path):
  repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  config = os.path.join(repo, "experiments", "feedback_sft.py")
  blocked = (
    "import sys, runpy; sys.modules['gcsfs'] = None; sys.modules['tensorflow'] = None; "
    f"sys.argv = ['train', '--config={config}:tiny', '--workdir=gs://my-bucket/run1']; "
    "runpy.run_module('helpsteer_jax.train', run_name='__main__')"
  )
  env = dict(os.environ, PYTHONPATH=repo)
  proc = subprocess.run(
    [sys.executable, "-c", blocked], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
  )
  assert proc.returncode != 0
  assert proc.stderr.strip().splitlines()[-1] == (
    "error: gs://my-bucket/run1: gs:// paths need the package gcsfs (pip install gcsfs)"
  )
  assert not (tmp_path / "gs:").exists() and os.listdir(tmp_path) == []


def test_a_gguf_model_in_a_bucket_loads_as_the_local_file(gcs_bucket, embedded_gguf_path, tmp_path, monkeypatch):
  import numpy as np

  import helpsteer_jax as hj

  monkeypatch.setenv("HELPSTEER_CACHE", str(tmp_path / "cache"))
  url = storage.join(gcs_bucket, "models", "smollm2.gguf")
  with open(embedded_gguf_path, "rb") as f:
    storage.write_atomic(url, f.read())
  remote, _ = hj.load_pretrained(url, show_progress=False)
  local, _ = hj.load_pretrained(embedded_gguf_path, show_progress=False)
  ids = np.asarray([[1, 2, 3, 4]], np.int32)
  np.testing.assert_array_equal(np.asarray(remote(ids)), np.asarray(local(ids)))
