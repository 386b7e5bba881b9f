"""The commands docs/reproducing.md and docs/70b.md print run as written in a dry run: each
`python -m helpsteer_jax.<entry> --config=...` builds its config (with its `--config.<key>=` overrides
naming keys the config has), and each `launch/...` command prints, with DRY_RUN=1, commands whose
configs build."""

import os
import re
import shlex
import subprocess
import sys

import pytest

from helpsteer_jax.testing.checkout import config_from_flag

pytestmark = pytest.mark.entry  # every test runs an entry point in a subprocess

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DOCS = ("docs/reproducing.md", "docs/70b.md", "README.md")


def _commands(doc: str) -> list[list[str]]:
  """Commands in the doc's code blocks and inline code, continuation lines joined, comments cut."""
  text = open(os.path.join(REPO, doc)).read()
  text = re.sub(r"\\\n\s*", " ", text)  # continuation lines
  out = []
  # Fenced and indented code lines, and inline code.
  for line in text.splitlines() + re.findall(r"`([^`\n]+)`", text):
    line = line.split(" #", 1)[0].strip()
    if "$" in line:  # a shell loop's body over downloaded repositories
      continue
    if "<" in line or "..." in line:  # a synopsis with placeholders (README's command table)
      continue
    if line.startswith("python -m helpsteer_jax.") or (line.startswith("launch/") and "--config=" in line):
      out.append(shlex.split(line))
  return out


def _check_overrides(config, words):
  for w in words:
    if w.startswith("--config.") and "=" in w:
      key = w[len("--config.") :].split("=", 1)[0]
      node = config
      for part in key.split("."):
        assert part in node, f"{w}: the config has no {key}"
        node = node[part]


_HELP: dict = {}


def _check_flags(words):
  """Every --flag of a config-less command (convert, tables, merge) is one its --help lists."""
  module = words[2]
  if module not in _HELP:
    proc = subprocess.run(
      [sys.executable, "-m", module, "--help"], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    _HELP[module] = set(re.findall(r"--(?:\[no\])?(\w+)", proc.stdout))
  for w in words[3:]:
    if w.startswith("--"):
      name = w[2:].split("=", 1)[0]
      assert name in _HELP[module], f"{' '.join(words)}: {module} has no flag --{name}"


@pytest.mark.parametrize("doc", DOCS)
def test_every_documented_command_builds(doc):
  commands = _commands(doc)
  assert len(commands) >= 2, commands
  for words in commands:
    if words[0] == "python" and not any(w.startswith("--config=") for w in words):
      _check_flags(words)  # an entry point without a config: its flags exist
      continue
    if words[0] == "python":
      configs = [w for w in words if w.startswith("--config=")]
      assert len(configs) == 1, words
      _check_overrides(config_from_flag(configs[0]), words)
      continue
    env = dict(os.environ, PYTHON=sys.executable, DRY_RUN="1")
    proc = subprocess.run(["bash", *words], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"{words}: {proc.stderr[-2000:]}"
    words = [w for line in proc.stdout.splitlines() for w in shlex.split(line)]
    # A TPU pod's command runs on the workers: its words are inside --command=.
    words += [r for w in words if w.startswith("--command=") for r in shlex.split(w.split("&&", 1)[1])]
    printed = [w for w in words if w.startswith("--config=")]
    assert printed, f"{words} printed no command: {proc.stdout[-2000:]}"
    for config in printed:
      config_from_flag(config)
