# Shared by the launch scripts (sourced, not run): the module check and dry-run printing.
# No hyperparameters here: every setting of a run comes from its --config file and overrides.

HELPSTEER_MODULES="train scale evaluate convert plan tables chat"

helpsteer_check_module() {
  local m
  for m in $HELPSTEER_MODULES; do
    [[ "$1" == "$m" ]] && return 0
  done
  echo "error: module '$1' is not one of: $HELPSTEER_MODULES" >&2
  return 2
}

# One argument quoted for a POSIX shell: plain words as they are, anything else in single quotes.
helpsteer_quote() {
  if [[ "$1" =~ ^[A-Za-z0-9_./:=,@%+-]+$ ]]; then
    printf '%s' "$1"
  else
    printf "'%s'" "${1//\'/\'\\\'\'}"
  fi
}

# Prints a command as one shell-quoted line (copy-paste runs exactly what would have run).
helpsteer_print_cmd() {
  local out="" arg
  for arg in "$@"; do
    out+="$(helpsteer_quote "$arg") "
  done
  echo "${out% }"
}

# Fails before anything is printed or launched when a --config=PATH[:ARG] names no file (PATH is
# relative to the repository root, as in the README).
helpsteer_check_config() {
  local root="$1" arg path
  shift
  for arg in "$@"; do
    [[ "$arg" == --config=* ]] || continue
    path="${arg#--config=}"
    path="${path%%:*}"
    [[ "$path" == /* ]] || path="$root/$path"
    if [[ ! -f "$path" ]]; then
      echo "error: ${arg}: no experiment file ${path#"$root/"} (experiments are files under experiments/, e.g. --config=experiments/feedback_sft.py:tiny)" >&2
      return 2
    fi
  done
}

helpsteer_default_python() {
  local root="$1"
  if [[ -n "${PYTHON:-}" ]]; then
    echo "$PYTHON"
  elif [[ -x "$root/.venv/bin/python" ]]; then
    echo "$root/.venv/bin/python"
  else
    echo "python3"
  fi
}
