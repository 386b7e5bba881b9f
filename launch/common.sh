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
