"""Run plumbing shared by the trainer and the tuner: one place for each guarantee.

* `prepare(workdir)`: the workdir is a writable folder, not another command's output folder
  (one-line error otherwise); `hold(workdir)` also takes its outputs lock for the run.
* `write_json`: config dumps written atomically, by process 0 only.

A workdir is a run folder under the rules of `incontext.outputs`, adapted to a run that is
resumed rather than replaced: every file is written through `outputs`' atomic writer (config
dumps, the curve PNGs, a rewritten metrics.jsonl; only metrics.jsonl's line appends and Orbax's
checkpoints, which commit a step folder by a rename of their own, are not), one run at a time
holds the folder's lock (`outputs.FolderLock`: a second run into it is refused with one line),
and there is no staging or manifest: the workdir is meant to be reused (resume), and a run
never removes a file it did not write (a corrupt checkpoint is moved aside, not deleted).
* `MetricsLog`: metrics.jsonl is appended one line per logged step and, on resume, repaired: a
  partial or corrupt line (a crash or a full disk while appending) is dropped with a warning
  naming the file, and steps after the restored checkpoint are dropped.
* `restore_latest`: resumes from the newest checkpoint that restores; a newer one that does not
  (truncated or flipped files, a cut iterator state) is moved aside to
  `checkpoints/corrupt-STEP` for inspection, and a one-line warning says so.
* `check_finite`: a non-finite metric stops the run naming the step.
* `curve_png`: the loss curve.
* `check_keys`: unknown config keys are errors, not silently ignored settings.

Only process 0 writes files (every process restores and computes).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import tempfile
from typing import Any, Callable, Iterable, Iterator, Mapping

import jax

from incontext import outputs
from incontext.train import plots
from incontext.errors import UserError

log = logging.getLogger(__name__)


class RunError(UserError):
  """A run that cannot start: bad workdir, contradictory or unknown settings."""


class TrainingDiverged(FloatingPointError):
  """A non-finite loss or gradient norm."""


def is_main() -> bool:
  return jax.process_index() == 0


def prepare(workdir: str) -> str:
  """Absolute workdir, created if missing; RunError if it is a file, not writable, or the
  output folder of an `incontext` command (its files would be mixed with the run's)."""
  workdir = os.path.abspath(os.fspath(workdir))
  if os.path.lexists(workdir) and not os.path.isdir(workdir):
    raise RunError(f"workdir {workdir}: exists and is not a folder")
  try:
    os.makedirs(workdir, exist_ok=True)
    with tempfile.TemporaryFile(dir=workdir):  # a probe: leaves nothing behind
      pass
  except OSError as e:
    raise RunError(f"workdir {workdir}: not writable ({e.strerror})") from None
  m = outputs.read_manifest(workdir)
  if m is not None:
    raise RunError(
      f"workdir {workdir}: is the output folder of `{m.get('command')}` (its files are listed "
      f"in {outputs.MANIFEST}); use another folder"
    )
  return workdir


@contextlib.contextmanager
def hold(workdir: str) -> Iterator[str]:
  """`prepare(workdir)`, then (process 0) the folder's outputs lock until the block ends: a
  second run into the same workdir meanwhile is refused with one line (OutputError) naming
  the process that holds it. The kernel drops the lock of a killed run."""
  workdir = prepare(workdir)
  lock = outputs.take_folder(workdir)[1] if is_main() else None
  try:
    yield workdir
  finally:
    if lock is not None:
      lock.release()


def read_json(path: str) -> dict | None:
  """A JSON file's object, or None if it is missing or unreadable."""
  try:
    with open(path) as f:
      obj = json.load(f)
  except (OSError, ValueError):
    return None
  return obj if isinstance(obj, dict) else None


def write_json(path: str, obj: Any) -> None:
  """Writes `obj` as JSON atomically (process 0 only)."""
  if is_main():
    outputs.write_json(path, obj)


def check_keys(cfg: Mapping, known: Iterable[str], where: str) -> None:
  """RunError naming `where` if `cfg` has keys outside `known` (typos are not ignored)."""
  unknown = sorted(set(cfg) - set(known))
  if unknown:
    raise RunError(
      f"{where}: unknown key{'s' if len(unknown) > 1 else ''} {unknown}; known: {sorted(known)}"
    )


def check_positive(**settings) -> None:
  """RunError for the first setting (name=value, dots as '__') that is not > 0."""
  for name, v in settings.items():
    if v is None or int(v) <= 0:
      raise RunError(f"config.{name.replace('__', '.')}={v}: must be > 0")


# -- metrics log --------------------------------------------------------------------------------
class MetricsLog:
  """metrics.jsonl: one JSON object per logged step, {'step': int, ...}."""

  def __init__(self, path: str):
    self.path = path

  def load(self, upto: int) -> list[dict]:
    """Rows of steps <= upto; the file is rewritten without later steps and without partial or
    corrupt lines (each dropped line is warned about, naming the file)."""
    if not os.path.exists(self.path):
      return []
    with open(self.path, "rb") as f:
      lines = f.read().split(b"\n")
    rows, dropped, ends = [], [], []
    pos = 0
    for i, line in enumerate(lines, 1):
      pos += len(line) + 1
      if not line.strip():
        continue
      try:
        row = json.loads(line)
        if not isinstance(row, dict) or not isinstance(row.get("step"), int):
          raise ValueError("no integer 'step'")
      except ValueError:
        dropped.append(i)
        continue
      rows.append(row)
      ends.append((i, pos))
    if dropped:
      last = dropped == [len(lines) - (lines[-1] == b"")]
      log.warning(
        "%s: dropped %s line%s %s (%s)",
        self.path,
        "the partial last" if last else "corrupt",
        "" if len(dropped) == 1 else "s",
        dropped,
        "a crash or full disk while appending" if last else "unreadable JSON",
      )
    keep = [r["step"] <= upto for r in rows]
    kept = [r for r, k in zip(rows, keep) if k]
    if is_main() and (dropped or len(kept) != len(rows)):
      n = keep.index(False) if False in keep else len(rows)
      prefix = (
        all(keep[:n])
        and not any(keep[n:])
        and all(d > (ends[n - 1][0] if n else 0) for d in dropped)
      )
      if prefix:  # only trailing lines go: cut the file in place (works on a full disk)
        with open(self.path, "r+b") as f:
          f.truncate(ends[n - 1][1] if n else 0)
      else:
        outputs.write_bytes(self.path, "".join(json.dumps(r) + "\n" for r in kept).encode())
    return kept

  def append(self, row: dict) -> None:
    """Appends one row (process 0 only); a line is written whole or the run fails."""
    if is_main():
      with open(self.path, "a") as f:
        f.write(json.dumps(row) + "\n")
        f.flush()


# -- checkpoints --------------------------------------------------------------------------------
def newest_step(ckpt_dir: str) -> int | None:
  """The newest step folder in a checkpoints folder (before any restore), or None."""
  if not os.path.isdir(ckpt_dir):
    return None
  steps = [int(n) for n in os.listdir(ckpt_dir) if n.isdigit()]
  return max(steps) if steps else None


def _aside(ckpt_dir: str, step: int) -> str:
  dst = os.path.join(ckpt_dir, f"corrupt-{step}")
  k = 1
  while os.path.exists(dst):
    dst = os.path.join(ckpt_dir, f"corrupt-{step}-{k}")
    k += 1
  os.replace(os.path.join(ckpt_dir, str(step)), dst)
  return dst


def _short(e: BaseException) -> str:
  msg = str(e).strip().splitlines()
  return f"{type(e).__name__}: {msg[0][:200] if msg else ''}"


def restore_latest(mngr, restore: Callable[[int], Any]) -> tuple[int | None, Any]:
  """(step, restored) of the newest checkpoint that `restore(step)` restores, or (None, None)
  without checkpoints. Newer ones that fail are moved aside (warning); if none restores, a
  RunError names the newest and its error and nothing is moved."""
  steps = sorted(mngr.all_steps(), reverse=True)
  failed: list[tuple[int, BaseException]] = []
  for step in steps:
    try:
      restored = restore(step)
    except Exception as e:  # orbax/tensorstore/grain raise many kinds for corrupt files
      failed.append((step, e))
      continue
    if failed:
      ckdir = os.fspath(mngr.directory)
      for s, e in failed:
        where = _aside(ckdir, s) if is_main() else f"{ckdir}/corrupt-{s}"
        log.warning(
          "checkpoint %s/%d does not restore (%s); moved it to %s and resumed from step %d",
          ckdir,
          s,
          _short(e),
          where,
          step,
        )
      mngr.reload()
    return step, restored
  if failed:
    s, e = failed[0]
    raise RunError(
      f"{os.fspath(mngr.directory)}: no checkpoint restores (newest, step {s}: "
      f"{_short(e)}); nothing was moved"
    )
  return None, None


# -- stop and plot ------------------------------------------------------------------------------
def check_finite(step: int, row: Mapping[str, float], keys: Iterable[str], hint: str = "") -> None:
  """TrainingDiverged naming `step` if any of `keys` in `row` is not finite."""
  bad = [k for k in keys if k in row and not math.isfinite(row[k])]
  if bad:
    raise TrainingDiverged(
      f"training diverged at step {step}: non-finite "
      + ", ".join(f"{k}={row[k]}" for k in bad)
      + (f" ({hint})" if hint else "")
    )


def curve_png(path: str, rows: list[dict], key: str = "train/loss", **eval_series) -> None:
  """Loss curve PNG (process 0 only); `rows` with `key` are drawn as the train loss, and the
  eval points as `plots.curve_png` (`eval_key`, `eval_label`) says."""
  if not is_main():
    return

  if key != "train/loss":
    rows = [{**r, "train/loss": r[key]} if key in r else r for r in rows]
  plots.curve_png(path, rows, **eval_series)
