"""Helpers for configs: `get_config(arg)` argument strings, and typed config sections.

A config section is a frozen dataclass (one commented field per key, the defaults beside
them). `section(cls, values, where)` builds one from the ml-collections ConfigDict (or dict) of
a run config, checking it in one place: an unknown key, a value of the wrong type or a missing
required key is a one-line `UserError` naming the setting (`config.optim.lr=...: expected a
float`). The run entry points (trainer, tuner, evaluation harness) build their sections once and
pass them down; the ConfigDict stays at the edges (absl flags, config.json).
"""

import ast
import dataclasses
import types
import typing
from typing import Any

import ml_collections

from incontext.errors import UserError


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


# -- typed config sections ----------------------------------------------------------------------
def key(name: str, default: Any = dataclasses.MISSING) -> Any:
  """A section field whose config key differs from its name (e.g. the keyword `async`)."""
  return dataclasses.field(default=default, metadata={"key": name})


def _keys(cls) -> dict[str, dataclasses.Field]:
  return {f.metadata.get("key", f.name): f for f in dataclasses.fields(cls) if f.init}


def known_keys(cls) -> tuple[str, ...]:
  """The config keys of a section: its `KEYS` class attribute if set, else every field."""
  return tuple(getattr(cls, "KEYS", None) or _keys(cls))


def _is_mapping(x) -> bool:
  return isinstance(x, (dict, ml_collections.ConfigDict)) or (
    hasattr(x, "keys") and hasattr(x, "__getitem__")
  )


def plain(x) -> Any:
  """ConfigDicts (at any depth) as dicts; other values unchanged."""
  if isinstance(x, ml_collections.ConfigDict):
    return x.to_dict()
  if isinstance(x, dict):
    return {k: plain(v) for k, v in x.items()}
  return x


def _type_name(tp) -> str:
  if tp is type(None):
    return "None"
  args = typing.get_args(tp)
  if typing.get_origin(tp) in (typing.Union, types.UnionType):
    return " or ".join(_type_name(a) for a in args)
  if dataclasses.is_dataclass(tp):
    return "a section (dict)"
  origin = typing.get_origin(tp) or tp
  return {
    bool: "a boolean",
    int: "an integer",
    float: "a float",
    str: "a string",
    tuple: "a list",
    dict: "a dict",
  }.get(origin, getattr(origin, "__name__", str(origin)))


def _convert(value, tp, where: str, error) -> Any:
  """`value` checked against the annotation `tp` (ints pass as floats, lists as tuples,
  ConfigDicts as dicts, an empty dict as an absent optional section)."""
  if tp is Any:
    return plain(value)
  origin, args = typing.get_origin(tp), typing.get_args(tp)
  if origin in (typing.Union, types.UnionType):
    if value is None and type(None) in args:
      return None
    inner = [a for a in args if a is not type(None)]
    if type(None) in args and _is_mapping(value) and not len(list(value.keys())):
      if any(dataclasses.is_dataclass(a) for a in inner):
        return None  # an empty section: absent
    for a in inner:
      try:
        return _convert(value, a, where, error)
      except error:
        if dataclasses.is_dataclass(a) and _is_mapping(value):
          raise  # the section's own message (unknown key, ...) names the setting
    raise error(f"{where}={value!r}: expected {_type_name(tp)}")
  if dataclasses.is_dataclass(tp):
    return section(tp, value, where, error=error)
  ok = {
    bool: lambda v: isinstance(v, bool),
    int: lambda v: isinstance(v, int) and not isinstance(v, bool),
    float: lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    str: lambda v: isinstance(v, str),
  }
  if tp in ok:
    if not ok[tp](value):
      raise error(f"{where}={value!r}: expected {_type_name(tp)}")
    return float(value) if tp is float else value
  if (origin or tp) is tuple:
    if not isinstance(value, (list, tuple)):
      raise error(f"{where}={value!r}: expected {_type_name(tp)}")
    if len(args) == 2 and args[1] is Ellipsis:
      return tuple(_convert(v, args[0], f"{where}[{i}]", error) for i, v in enumerate(value))
    return tuple(plain(v) for v in value)
  if (origin or tp) is dict:
    if not _is_mapping(value):
      raise error(f"{where}={value!r}: expected {_type_name(tp)}")
    if len(args) == 2 and dataclasses.is_dataclass(args[1]):
      return {k: _convert(value[k], args[1], f"{where}.{k}", error) for k in value.keys()}
    return {k: plain(value[k]) for k in value.keys()}
  raise TypeError(f"config section field type {tp!r} is not supported")  # a bug, not input


def section(cls, values, where: str, *, error=UserError):
  """The section `cls` (a frozen dataclass) from a ConfigDict or dict, checked.

  Keys outside `known_keys(cls)`, values that do not match the field's annotation and missing
  required fields raise `error` (a UserError) naming `where.KEY`; missing optional keys take the
  field's default. A `cls` instance is returned as it is; None is an empty section. A class
  with a `from_values(values, where, error)` classmethod builds itself (e.g. to keep keys that
  belong to a reader it names) and calls `build` for its own keys.
  """
  if isinstance(values, cls):
    return values
  if values is None:
    values = {}
  if hasattr(cls, "from_values"):
    return cls.from_values(values, where, error)
  return build(cls, values, where, error=error)


def build(cls, values, where: str, *, error=UserError):
  """`section` without the class's own `from_values` hook."""
  if not _is_mapping(values):
    raise error(f"{where}={values!r}: expected a section (dict)")
  fields, known = _keys(cls), known_keys(cls)
  unknown = sorted(set(values.keys()) - set(known))
  if unknown:
    raise error(
      f"{where}: unknown key{'s' if len(unknown) > 1 else ''} {unknown}; known: {sorted(known)}"
    )
  hints = typing.get_type_hints(cls)
  kw = {}
  for k in values.keys():
    f = fields[k]
    kw[f.name] = _convert(values[k], hints[f.name], f"{where}.{k}", error)
  for k, f in fields.items():
    required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    if required and f.name not in kw:
      raise error(f"{where}.{k}: missing (expected {_type_name(hints[f.name])})")
  return cls(**kw)
