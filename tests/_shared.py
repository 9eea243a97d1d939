"""Helpers for tests that read the real data: the project's data folder
(`incontext.data.datadir.data_dir()`: $INCONTEXT_DATA_DIR, else ../shared/data beside the
project root). Tests that need it skip with a reason when it is missing, except under CI=true,
where they fail.
Use `shared_data_dir(*subdirs)` (returns the path).
`run_train` runs the training command line as a user would; `FaultTally` counts fault cases.
"""

import os
import pathlib
import subprocess
import sys

import pytest

from incontext.data import datadir

PROJECT_ROOT = pathlib.Path(__file__).resolve().parents[1]


def _in_ci() -> bool:
  return os.environ.get("CI", "").lower() == "true"


def shared_data_dir(*subdirs: str) -> pathlib.Path:
  """Path of the data folder (or a sub-folder); skip (fail under CI=true) when it is missing."""
  path = pathlib.Path(datadir.data_dir(*subdirs))
  if not path.exists():
    msg = (
      f"real data not found at {path} (expected {datadir.DATA_DIR_ENV} or ../shared/data "
      "next to the project root)"
    )
    if _in_ci():
      pytest.fail(msg + "; CI=true requires it")
    pytest.skip(msg)
  return path


def run_train(workdir, *overrides, preset="quickstart", timeout=1800):
  """`python -m experiments.train --config ...seggpt_train.py:PRESET OVERRIDES --workdir W`
  in a fresh process with one CPU device, from the project root: CompletedProcess (text)."""
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1")
  cmd = [sys.executable, "-m", "experiments.train"]
  cmd += ["--config", f"experiments/configs/seggpt_train.py:{preset}", *overrides]
  return subprocess.run(
    cmd + ["--workdir", str(workdir)],
    cwd=PROJECT_ROOT,
    env=env,
    capture_output=True,
    text=True,
    timeout=timeout,
  )


class FaultTally:
  """Counts the fault cases a test module tried and how many ended clean; `report` (call it
  from a module fixture's teardown) prints the tally that docs/results.md's fault rows quote."""

  def __init__(self, title: str):
    self.title = title
    self.rows = []

  def add(self, name, tried, clean):
    self.rows.append((name, tried, clean))

  def report(self):
    if self.rows:
      tried = sum(r[1] for r in self.rows)
      clean = sum(r[2] for r in self.rows)
      lines = [f"  {name}: {t} tried, {c} clean" for name, t, c in self.rows]
      print(f"\n{self.title}: {tried} tried, {clean} clean\n" + "\n".join(lines))
