"""launch/tpu_pod.sh deploys before it runs: it packs the code (the checkout, or a git revision),
copies it to every worker, unpacks it and sets up the environment there, then runs the command on
all workers. Rehearsed on a fake pod of two workers (tests/launch/fakes/gcloud: folders on this machine,
the command run on each at once with a coordinator on 127.0.0.1)."""

import json
import os
import shlex
import subprocess
import sys

import pytest

pytestmark = pytest.mark.entry  # every test runs an entry point in a subprocess

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FAKES = os.path.join(REPO, "tests", "launch", "fakes")


def _launch(args, env=None, timeout=120):
  return subprocess.run(
    ["bash", "launch/tpu_pod.sh", *args],
    cwd=REPO,
    env=dict(os.environ, **(env or {})),
    capture_output=True,
    text=True,
    timeout=timeout,
  )


def test_dry_run_prints_pack_copy_setup_and_run_in_order():
  proc = _launch(
    [
      "--dry-run",
      "--tpu=hs-v5p",
      "--zone=us-east5-a",
      "--project=p1",
      "scale",
      "--config=experiments/scaling/grid.py:drafts=8,feedbacks=16",
      "--config.output_dir=gs://b/s1",
    ]
  )
  assert proc.returncode == 0, proc.stderr
  pack, copy, setup, run = proc.stdout.strip().splitlines()
  assert "git ls-files" in pack and "tar --null -T - -czf /" in pack
  tarball = pack.rsplit(" ", 1)[1]
  copy, setup, run = shlex.split(copy), shlex.split(setup), shlex.split(run)
  assert copy[:5] == ["gcloud", "compute", "tpus", "tpu-vm", "scp"] and copy[5] == tarball
  assert copy[6].startswith("hs-v5p:/tmp/") and "--worker=all" in copy and "--project=p1" in copy
  setup_command = next(a for a in setup if a.startswith("--command="))
  assert "tar -xzf /tmp/" in setup_command and "! -name .venv" in setup_command
  assert "HELPSTEER_PROFILE=cluster HELPSTEER_JAX='jax[tpu]' bash scripts/setup_env.sh" in setup_command
  remote = next(a for a in run if a.startswith("--command="))[len("--command=") :]
  assert remote.startswith("cd ~/helpsteer_jax && .venv/bin/python -m helpsteer_jax.scale ")
  assert shlex.split(remote.split("&&", 1)[1])[3:] == [
    "--config=experiments/scaling/grid.py:drafts=8,feedbacks=16",
    "--config.output_dir=gs://b/s1",
  ]


def test_a_revision_is_packed_by_git_archive_and_none_copies_nothing():
  rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
  proc = _launch(
    [
      "--dry-run",
      "--tpu=t",
      "--zone=z",
      "--code=HEAD",
      "--jax=jax[tpu]==0.10.2",
      "plan",
      "--config=experiments/edit_sft.py:70b",
    ]
  )
  pack = proc.stdout.splitlines()[0]
  assert pack.startswith(f"git -C {REPO} archive --format=tar.gz -o ") and pack.endswith(" HEAD"), pack
  assert f"helpsteer_jax-{rev}.tar.gz" in pack and "'jax[tpu]==0.10.2'" in proc.stdout
  none = _launch(
    [
      "--dry-run",
      "--tpu=t",
      "--zone=z",
      "--code=none",
      "--python=python3",
      "plan",
      "--config=experiments/edit_sft.py:70b",
    ]
  )
  (only,) = none.stdout.strip().splitlines()
  assert "cd ~/helpsteer_jax && python3 -m helpsteer_jax.plan" in only
  bad = _launch(
    ["--dry-run", "--tpu=t", "--zone=z", "--code=no-such-rev", "plan", "--config=experiments/edit_sft.py:70b"]
  )
  assert bad.returncode == 2 and "is not a revision" in bad.stderr and bad.stdout == ""
  assert "checkout" in _launch(["--help"]).stdout and "git archive REV" in _launch(["--help"]).stdout


def test_a_fake_pod_of_two_workers_gets_the_code_and_trains_as_two_processes(tmp_path, task_file):
  pod = tmp_path / "pod"
  pod.mkdir()
  env = {
    "PATH": f"{FAKES}:{os.environ['PATH']}",
    "FAKE_TPU_ROOT": str(pod),
    "FAKE_TPU_WORKERS": "2",
    "TMPDIR": str(tmp_path),
    "JAX_PLATFORMS": "cpu",
    "HF_HUB_OFFLINE": "1",
    "XLA_FLAGS": "--xla_force_host_platform_device_count=1",
  }
  workdir = tmp_path / "run"  # on a real pod: a bucket both workers reach
  proc = _launch(
    [
      "--tpu=pod",
      "--zone=z",
      f"--python={sys.executable}",
      "train",
      "--config=experiments/chat_sft.py:tiny",
      f"--workdir={workdir}",
      f"--config.data.path={task_file}",
      "--config.data.seq_len=32",
      "--config.total_steps=2",
      "--config.progress=False",
      "--config.tensorboard=False",
    ],
    env=env,
    timeout=600,
  )
  logs = "\n".join(
    (pod / "pod" / f"worker-{i}" / "ssh.log").read_text()[-3000:]
    for i in range(2)
    if (pod / "pod" / f"worker-{i}" / "ssh.log").exists()
  )
  assert proc.returncode == 0, proc.stdout + proc.stderr + logs
  calls = (pod / "calls.log").read_text().splitlines()
  assert [c.split()[3] for c in calls] == ["scp", "ssh", "ssh"]  # copy, unpack (no setup: --python), run
  for i in range(2):
    code = pod / "pod" / f"worker-{i}" / "helpsteer_jax"
    assert (code / "helpsteer_jax" / "__init__.py").is_file() and (code / "experiments" / "chat_sft.py").is_file()
    assert not (code / ".venv").exists() and not (code / ".git").exists()
  assert "2 processes" in (pod / "pod" / "worker-0" / "ssh.log").read_text()
  rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
  assert [r["step"] for r in rows if r["split"] == "train"] == [1, 2]
