"""The one console set-up (`incontext.logs.configure_logging`) as the experiment entry points
use it: quiet by default (library INFO logs, library warnings and their Python warnings hidden,
the project's own warnings shown in absl's format), absl's `-v 0` showing the libraries' logs.
The command line's side is tests/test_cli_conventions.py (quiet default, `-v`).

Each case runs `experiments.entry.run(main)` in a fresh process (logging is process state).
"""

import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]

# A main that logs what the libraries and the trainer log, through `entry.run`.
PROBE = """
import logging, sys, warnings
from experiments import entry

def main(argv):
  logging.getLogger("orbax").info("orbax-info")
  logging.getLogger("jax._src.xla_bridge").warning("jax-warning")
  logging.getLogger("incontext.train.trainer").info("incontext-info")
  logging.getLogger("incontext.train.trainer").warning("incontext-warning")
  warnings.warn_explicit("flax-pywarning", UserWarning, "x.py", 1, module="flax.core")
  print("tf", __import__("os").environ.get("TF_CPP_MIN_LOG_LEVEL"))

sys.argv[0] = "probe"
entry.run(main)
"""


def _probe(*args):
  env = dict(os.environ, PYTHONPATH=str(ROOT))
  env.pop("TF_CPP_MIN_LOG_LEVEL", None)
  r = subprocess.run(
    [sys.executable, "-c", PROBE, *args],
    cwd=ROOT,
    env=env,
    capture_output=True,
    text=True,
    timeout=120,
  )
  assert r.returncode == 0, r.stderr
  return r


def test_entry_points_are_quiet_by_default():
  r = _probe()
  lines = r.stderr.splitlines()
  # Only the project's own warning, in absl's format (W<date> ... file:line] message).
  assert len(lines) == 1 and lines[0].startswith("W") and "] incontext-warning" in lines[0], lines
  assert r.stdout.strip() == "tf 3"


def test_entry_points_verbose_shows_library_logs():
  for flag in (["-v", "0"], ["--verbosity=1"]):
    r = _probe(*flag)
    for want in (
      "I orbax: orbax-info",
      "W jax._src.xla_bridge: jax-warning",
      "I incontext.train.trainer: incontext-info",
      "W incontext.train.trainer: incontext-warning",
      "flax-pywarning",
    ):
      assert want in r.stderr, (flag, want, r.stderr)
    assert r.stdout.strip() == "tf 0"
