#!/usr/bin/env bash
# One GPU session: installs carried wheels, prints the versions and the device, then runs each part
# in its own process under its own timeout, appending each part's table to OUT/session.md as it
# finishes, so that a part that fails or runs out of time loses nothing else.
#
#   bash experiments/benchmarks/gpu_session.sh [--tiny] [--wheels DIR] [--out DIR] [--parts a,b,...]
#
# Parts (experiments/benchmarks/gpu_<part>.py): parity, attention, train, decode, engine.
#   --tiny    small shapes on any backend (the rehearsal on CPU; the test suite runs it)
#   --wheels  folder of .whl files to install first, without dependencies or an index (packages
#             the machine lacks, e.g. ml_collections); default .whl in the repository root
#   --out     where the tables and logs go; default $OUT, else outputs/gpu_session
#   --parts   a subset, in the order given
# PYTHON picks the interpreter (default python3). What the parts print is in OUT/parts.log.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
TINY=0
WHEELS="$ROOT/.whl"
DEST="${OUT:-$ROOT/outputs/gpu_session}"
PARTS="parity,attention,train,decode,engine"
while [ "$#" -gt 0 ]; do
  case "$1" in
    --tiny) TINY=1 ;;
    --wheels) WHEELS="$2"; shift ;;
    --wheels=*) WHEELS="${1#*=}" ;;
    --out) DEST="$2"; shift ;;
    --out=*) DEST="${1#*=}" ;;
    --parts) PARTS="$2"; shift ;;
    --parts=*) PARTS="${1#*=}" ;;
    *) echo "gpu_session.sh: unknown argument '$1' (expected --tiny, --wheels DIR, --out DIR, --parts a,b)" >&2
       exit 2 ;;
  esac
  shift
done
PYTHON="${PYTHON:-python3}"
for part in ${PARTS//,/ }; do
  if [ ! -f "$ROOT/experiments/benchmarks/gpu_$part.py" ]; then
    echo "gpu_session.sh: no part '$part' (expected some of parity,attention,train,decode,engine)" >&2
    exit 2
  fi
done
mkdir -p "$DEST"
SESSION="$DEST/session.md"

# Seconds each part may run: at full size on an H200 every part ends well inside its limit.
declare -A LIMIT=([parity]=100 [attention]=120 [train]=140 [decode]=140 [engine]=90)
declare -A TINY_LIMIT=([parity]=120 [attention]=120 [train]=120 [decode]=120 [engine]=120)
# Environment per part: the parity part shares the device with torch (no preallocation), the
# training part needs more than JAX's default 75% of the device's memory at 8B.
declare -A PART_ENV=([parity]="XLA_PYTHON_CLIENT_PREALLOCATE=false" [train]="XLA_PYTHON_CLIENT_MEM_FRACTION=0.92")

SITE="$(mktemp -d)"
LOGS="$(mktemp -d)"
trap 'rm -rf "$SITE" "$LOGS"' EXIT
: > "$DEST/parts.log"
shopt -s nullglob
wheels=("$WHEELS"/*.whl)
if [ "${#wheels[@]}" -gt 0 ]; then
  echo "[session] installing ${#wheels[@]} carried wheel(s) from $WHEELS"
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" \
    "${wheels[@]}" || { echo "[session] the wheel install failed" >&2; exit 1; }
fi
export PYTHONPATH="$SITE:$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false

{
  echo "# GPU session, $(date -u +%Y-%m-%d)"
  echo
  "$PYTHON" - "$SITE" <<'PY'
import importlib.metadata as md
import os
import platform
import sys

site = sys.argv[1]
carried = sorted(n[:-len(".dist-info")] for n in os.listdir(site) if n.endswith(".dist-info"))
print(f"Python {platform.python_version()} ({sys.executable}); carried wheels: {', '.join(carried) or 'none'}.")
names = ["jax", "jaxlib", "jax-cuda13-plugin", "jax-cuda12-plugin", "flax", "optax", "orbax-checkpoint",
         "ml_collections", "transformers", "torch", "safetensors", "tokenizers", "numpy"]
found = []
for name in names:
  try:
    found.append(f"{name} {md.version(name)}")
  except md.PackageNotFoundError:
    pass
print("Packages: " + ", ".join(found) + ".")
try:
  import jax
  devices = jax.devices()
  first = devices[0]
  print(f"Devices: {len(devices)} x {getattr(first, 'device_kind', first)} (backend {jax.default_backend()}).")
except Exception as e:  # the parts report their own failure; the header says what is missing
  print(f"jax devices: unavailable ({type(e).__name__}: {e})")
PY
  if command -v nvidia-smi >/dev/null 2>&1; then
    echo
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,clocks.max.mem --format=csv 2>&1 | sed 's/^/    /'
  fi
  echo
} | tee "$SESSION"

failed=0
for part in ${PARTS//,/ }; do
  if [ "$TINY" = 1 ]; then limit="${TINY_LIMIT[$part]}"; args=(--tiny); else limit="${LIMIT[$part]}"; args=(); fi
  echo "[session] $part (limit ${limit} s)"
  start=$(date +%s)
  env ${PART_ENV[$part]:-} timeout --kill-after=10 "$limit" "$PYTHON" "$ROOT/experiments/benchmarks/gpu_$part.py" \
    --out "$DEST" "${args[@]}" > "$LOGS/$part.log" 2>&1
  code=$?
  seconds=$(( $(date +%s) - start ))
  # One log file for all parts (OUT/parts.log): fewer files to bring back from a remote machine.
  { echo "===== $part: exit $code after ${seconds} s"; cat "$LOGS/$part.log"; } >> "$DEST/parts.log"
  {
    [ -f "$DEST/$part.md" ] && cat "$DEST/$part.md"
    if [ "$code" = 0 ]; then
      echo "_${part}: ${seconds} s._"
    elif [ "$code" = 124 ] || [ "$code" = 137 ]; then
      echo "_${part}: stopped at its ${limit} s limit; the rows above were measured before that._"
    else
      echo "_${part}: failed (exit ${code}) after ${seconds} s; the end of its log:_"
      echo
      tail -n 15 "$LOGS/$part.log" | sed 's/^/    /'
    fi
    echo
  } >> "$SESSION"
  [ "$code" = 0 ] || failed=$((failed + 1))
  echo "[session] $part: exit $code after ${seconds} s"
  if [ -f "$DEST/$part.md" ]; then grep -F "failed:" "$DEST/$part.md" | cut -c1-400; fi
  if [ "$code" != 0 ]; then tail -n 5 "$LOGS/$part.log" | cut -c1-400; fi
done
echo "[session] done: $failed part(s) failed; tables in $SESSION"
[ "$failed" = 0 ]
