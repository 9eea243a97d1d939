"""What a `--checkpoint` path names, found from its files alone (no jax: the commands check it
before importing the model code, so a wrong path is reported at once).

A path may be
  a params directory        DIR/incontext.json + DIR/params/ (`incontext convert`, a finished
                            training run's export): used as it is;
  a training workdir        WORKDIR/params/ when the run exported it, else the newest
                            checkpoint in WORKDIR/checkpoints/ (with WORKDIR/config.json);
  a tuning workdir          WORKDIR/tune_meta.json: the params it was tuned from (its learned
                            prompt is WORKDIR/prompt.npz, for --learned-prompt).
`resolve` says which one it used, in a line the commands print on stderr.
"""

import dataclasses
import json
import os
import sys

from incontext.errors import UserError

KIND = "incontext-seggpt-params"
META = "incontext.json"


class CheckpointError(UserError):
  """A params directory that is missing, of another kind, or does not fit."""


def read_params_meta(directory: str) -> dict:
  """The `incontext.json` of a params directory (a relative path is from the working folder)."""
  if os.path.isfile(directory):
    hint = (
      " (a checkpoint file: convert it to a params directory first, `incontext convert`)"
      if os.fspath(directory).endswith((".pth", ".pt", ".safetensors", ".bin"))
      else ""
    )
    raise CheckpointError(f"{directory}: is a file, expected an incontext params directory{hint}")
  directory = os.path.abspath(directory)
  path = os.path.join(directory, META)
  if not os.path.isdir(directory):
    raise CheckpointError(f"{directory}: no such checkpoint directory")
  if not os.path.isfile(path):
    raise CheckpointError(
      f"{directory}: not an incontext params directory (no {META}), training workdir or "
      "tuning workdir; convert PyTorch weights with `incontext convert`"
    )
  try:
    with open(path) as f:
      meta = json.load(f)
  except json.JSONDecodeError as e:
    raise CheckpointError(f"{path}: corrupt metadata ({e})") from None
  if meta.get("kind") != KIND:
    raise CheckpointError(f"{path}: kind {meta.get('kind')!r}, expected {KIND!r}")
  return meta


@dataclasses.dataclass
class Resolved:
  path: str  # a params directory, or (step set) the training workdir
  step: int | None = None  # the training checkpoint's step, None for a params directory
  note: str | None = None  # which weights a workdir gave, for the user; None for a params dir


def _newest_step(ckpt_dir: str) -> int | None:
  if not os.path.isdir(ckpt_dir):
    return None
  steps = [int(n) for n in os.listdir(ckpt_dir) if n.isdigit()]
  return max(steps) if steps else None


def resolve(directory: str) -> Resolved:
  """The weights a `--checkpoint` path names (see the module docstring); the path as given
  (relative stays relative). Anything else is left to `read_params_meta` to refuse."""
  directory = os.fspath(directory)
  if os.path.isfile(os.path.join(directory, META)) or not os.path.isdir(directory):
    return Resolved(directory)
  params = os.path.join(directory, "params")
  if os.path.isfile(os.path.join(params, META)):
    return Resolved(params, note=f"{directory}: a training workdir; using its params {params}")
  tune_meta = os.path.join(directory, "tune_meta.json")
  if os.path.isfile(tune_meta):
    try:
      with open(tune_meta) as f:
        init = json.load(f)["init"]
    except (OSError, ValueError, KeyError, TypeError):
      raise CheckpointError(f"{tune_meta}: unreadable tuning metadata (no 'init')") from None
    return Resolved(
      init,
      note=f"{directory}: a tuning workdir; using the params it was tuned from, {init} "
      f"(its learned prompt: --learned-prompt {os.path.join(directory, 'prompt.npz')})",
    )
  step = _newest_step(os.path.join(directory, "checkpoints"))
  if step is not None and os.path.isfile(os.path.join(directory, "config.json")):
    where = os.path.join(directory, "checkpoints", str(step))
    return Resolved(
      directory,
      step=step,
      note=f"{directory}: a training workdir without exported params; using its newest "
      f"checkpoint, {where}",
    )
  return Resolved(directory)


def check(directory: str) -> Resolved:
  """`resolve`, then a params directory must have readable metadata (CheckpointError)."""
  r = resolve(directory)
  if r.step is None:
    read_params_meta(r.path)
  return r


def for_command(directory: str) -> str:
  """A command's `--checkpoint` value checked (`check`): the path to load, with the line that
  says which weights a workdir gave printed on stderr."""
  r = check(directory)
  if r.note:
    print(f"incontext: {r.note}", file=sys.stderr)
  return r.path if r.step is None else directory
