"""The one argument idiom of every experiment config: `--config=experiments/<name>.py:<arg>`.

    parse_arg("70b", positional="size", size="tiny")              -> {"size": "70b"}
    parse_arg("size=smollm2,drafts=2", size="70b", drafts="8")     -> {"size": "smollm2", "drafts": "2"}
    parse_arg("full,label=base", positional="variant", variant="full", label="")

The argument is comma-separated `key=value` parts over the config's own keys (an unknown key
fails and lists the known ones); the first part may be a bare value of the `positional` key.
Values stay strings: each config converts and checks its own. Everything else about a run goes
through `--config.<field>=...` overrides on the locked config.
"""

from __future__ import annotations


def parse_arg(arg: str | None, positional: str = "", **defaults: str) -> dict[str, str]:
  if positional and positional not in defaults:
    raise ValueError(f"positional key {positional!r} needs a default among {sorted(defaults)}")
  values = dict(defaults)
  for i, part in enumerate(p.strip() for p in (arg or "").split(",")):
    if not part:
      continue
    key, sep, value = part.partition("=")
    if not sep and i == 0 and positional:
      key, value = positional, part
    elif not sep or key not in defaults:
      first = f"a {positional} value first, then " if positional else ""
      raise ValueError(f"config argument {part!r}: expected {first}key=value with key in {sorted(defaults)}")
    values[key] = value
  return values
