"""The GPU session script rehearsed end to end on CPU (`gpu_session.sh --tiny`): the carried-wheel
install from a local folder, the versions header, and every part through to its table, so that
what would break the run on a GPU machine breaks here first. A part that fails is reported in the
session's tables with the end of its log, and the others still run."""

import os
import pathlib
import subprocess
import sys
import zipfile

import pytest

from helpsteer_jax.testing.subprocesses import run_entry

pytestmark = pytest.mark.entry  # every test runs an entry point in a subprocess

REPO = pathlib.Path(__file__).resolve().parents[2]
SCRIPT = REPO / "experiments" / "benchmarks" / "gpu_session.sh"
PARTS = ("parity", "attention", "train", "decode", "engine")


def make_wheel(folder: pathlib.Path, name: str, version: str) -> pathlib.Path:
  """A minimal pure-Python wheel: a package whose module says its version."""
  folder.mkdir(parents=True, exist_ok=True)
  path = folder / f"{name}-{version}-py3-none-any.whl"
  info = f"{name}-{version}.dist-info"
  files = {
    f"{name}/__init__.py": f"VERSION = {version!r}\n",
    f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
    f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
  }
  record = "".join(f"{p},,\n" for p in files) + f"{info}/RECORD,,\n"
  with zipfile.ZipFile(path, "w") as wheel:
    for p, text in files.items():
      wheel.writestr(p, text)
    wheel.writestr(f"{info}/RECORD", record)
  return path


def session_env(**extra: str) -> dict:
  env = dict(os.environ, PYTHON=sys.executable, **extra)
  env.pop("OUT", None)
  return env


# Two minutes on 2 cores: run it (`-m slow`) before a device session; the default suite keeps to
# its budget.
@pytest.mark.slow
def test_tiny_session_runs_every_part_with_a_carried_wheel(tmp_path):
  make_wheel(tmp_path / "wheels", "session_probe", "0.0.1")
  out = tmp_path / "out"
  log = run_entry(
    ["bash", str(SCRIPT), "--tiny", "--wheels", str(tmp_path / "wheels"), "--out", str(out)],
    cwd=REPO,
    env=session_env(),
    timeout=600,
  )
  session = (out / "session.md").read_text()
  assert "carried wheels: session_probe-0.0.1" in session
  assert "Devices: " in session and "jax " in session
  assert "done: 0 part(s) failed" in log
  for part in PARTS:
    assert f"_{part}: " in session and "failed" not in (out / f"{part}.md").read_text(), part
  # Each part's table made it into the session, with measured rows.
  assert "| torch bf16 | " in session and "| transformers bf16 | " in session
  assert "| kernel (xla_dot_product) |" in session and "Whole model" in session
  assert session.count("| full |") == 2 and "| dots_no_batch_attention |" in session
  assert "| 1 | unrolled |" in session and "| 8 | switched |" in session
  assert "| draft |" in session and "| feedback |" in session and "| edit |" in session


def test_a_failing_part_is_reported_and_the_next_still_runs(tmp_path):
  # ml_collections made unimportable (as on a machine that lacks it, with no wheel carried): the
  # training part fails at its import; the session records it and goes on to the next part.
  blocked = tmp_path / "blocked" / "ml_collections"
  blocked.mkdir(parents=True)
  (blocked / "__init__.py").write_text("raise ImportError('ml_collections is not installed here')\n")
  out = tmp_path / "out"
  proc = subprocess.run(
    [
      "bash",
      str(SCRIPT),
      "--tiny",
      "--wheels",
      str(tmp_path / "none"),
      "--out",
      str(out),
      "--parts",
      "train,attention",
    ],
    cwd=REPO,
    env=session_env(PYTHONPATH=str(blocked.parent)),
    timeout=600,
    stdout=subprocess.PIPE,
    stderr=subprocess.STDOUT,
    text=True,
  )
  assert proc.returncode == 1, proc.stdout[-3000:]
  session = (out / "session.md").read_text()
  assert "_train: failed (exit 1)" in session and "ml_collections is not installed here" in session
  assert "_attention: " in session and "| kernel (xla_dot_product) |" in session
  assert "done: 1 part(s) failed" in proc.stdout


def test_bad_arguments_stop_before_any_work(tmp_path):
  for args, message in ((["--parts", "parity,warp"], "no part 'warp'"), (["--fast"], "unknown argument '--fast'")):
    proc = subprocess.run(
      ["bash", str(SCRIPT), "--out", str(tmp_path / "out"), *args],
      cwd=REPO,
      env=session_env(),
      stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT,
      text=True,
    )
    assert proc.returncode == 2 and message in proc.stdout
    assert not (tmp_path / "out").exists()
