"""Helpers for experiment configs: `get_config(arg)` argument strings."""

import ast
from typing import Any

import ml_collections


def _value(s: str, default: Any) -> Any:
  if isinstance(default, bool):
    if s.lower() in ("1", "true", "yes", ""):
      return True
    if s.lower() in ("0", "false", "no"):
      return False
    raise ValueError(f"expected a boolean, got {s!r}")
  if isinstance(default, (int, float)) and not isinstance(default, bool):
    return type(default)(ast.literal_eval(s))
  if isinstance(default, (tuple, list)):
    return tuple(ast.literal_eval(s))
  return s


def parse_arg(arg: str | None, **defaults) -> ml_collections.ConfigDict:
  """'variant=B/16,runlocal' -> ConfigDict(variant='B/16', runlocal=True, <other defaults>).

  A bare word sets the boolean of that name (or, if it is not a known key but a value of the
  `preset` default, the preset). Values are converted to the type of their default. Unknown
  keys raise, naming the known ones.
  """
  out = dict(defaults)
  for part in (arg or "").split(","):
    part = part.strip()
    if not part:
      continue
    key, eq, val = part.partition("=")
    key = key.strip()
    if not eq:
      if key in defaults and isinstance(defaults[key], bool):
        out[key] = True
        continue
      if "preset" in defaults:
        out["preset"] = key
        continue
    if key not in defaults:
      raise ValueError(f"config argument {part!r}: unknown key {key!r}; known: {sorted(defaults)}")
    try:
      out[key] = _value(val.strip(), defaults[key])
    except (ValueError, SyntaxError) as e:
      raise ValueError(f"config argument {part!r}: {e}") from None
  return ml_collections.ConfigDict(out)
