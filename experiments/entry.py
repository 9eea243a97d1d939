"""Plumbing shared by the experiment entry points (train, tune, evaluate).

* `usage(doc, config_module)`: the entry point's docstring followed by its config file's
  docstring (presets and args), which absl prints for `--help`;
* `run(main)`: absl's app.run with the two below; `--help` exits with status 0;
* `find_config(argv)`: `--config PATH.py[:ARG]` where PATH is not found from the working
  folder is looked up beside the project (`experiments/configs/prompt_tune.py`) and by
  name in `experiments/configs/`, so the commands work from any folder;
* `prepare(config)`: the data folder setting resolved and checked;
* `user_errors()`: errors in the user's input (missing files, data folder or checkpoint)
  print one line naming the problem and exit with status 2; other errors keep their
  traceback.
"""

import contextlib
import os
import re
import sys

from experiments.configs import common

PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG_DIR = os.path.join(PROJECT_ROOT, "experiments", "configs")


def usage(doc: str, config_module) -> str:
  """`doc` + the config module's docstring, for absl's `--help` (printed as written)."""
  name = os.path.relpath(config_module.__file__, PROJECT_ROOT)
  return (
    doc.rstrip() + f"\n\nConfig file {name} (ARG after ':'; any field: "
    "--config.KEY=VALUE):\n" + config_module.__doc__.rstrip().replace("%", "%%") + "\n"
  )


def _resolve(path: str) -> str:
  if os.path.exists(path):
    return path
  for cand in (
    os.path.join(PROJECT_ROOT, path),
    os.path.join(CONFIG_DIR, os.path.basename(path)),
    os.path.join(CONFIG_DIR, os.path.basename(path) + ".py"),
  ):
    if os.path.isfile(cand):
      return cand
  return path


def find_config(argv: list[str]) -> list[str]:
  """argv with the --config file path made findable from any working folder."""
  out = list(argv)
  for i, a in enumerate(out):
    if a in ("--config", "-config") and i + 1 < len(out):
      j, val, pre = i + 1, out[i + 1], ""
    elif a.startswith(("--config=", "-config=")):
      j, val = i, a.split("=", 1)[1]
      pre = a.split("=", 1)[0] + "="
    else:
      continue
    m = re.match(r"^(.*?\.py|[^:]+)(:.*)?$", val)
    if m:
      out[j] = pre + _resolve(m.group(1)) + (m.group(2) or "")
  return out


def run(main) -> None:
  """`absl.app.run(main)` with the --config path resolved; `--help` exits with status 0."""
  from absl import app

  argv = find_config(sys.argv)
  if any(a in ("--help", "-h", "-help", "--helpshort") for a in argv[1:]):
    app.usage(shorthelp=True, writeto_stdout=True, exitcode=0)
  app.run(main, argv=argv)


def prepare(config):
  """The config with its data folder resolved (see experiments/configs/common.py)."""
  return common.resolve_data_dir(config)


def _user_error_types() -> tuple:
  from incontext import checkpoint
  from incontext.data import sources
  from incontext.imageio import InputError
  from incontext.models import convert

  return (
    common.DataDirError,
    checkpoint.CheckpointError,
    sources.DataError,
    convert.ConversionError,
    InputError,
    FileNotFoundError,
  )


@contextlib.contextmanager
def user_errors(prog: str):
  """Errors in the user's input -> one line on stderr and exit status 2."""
  types = _user_error_types()
  try:
    yield
  except types as e:
    print(f"{prog}: error: {e}", file=sys.stderr)
    sys.exit(2)


def require(prog: str, value, flag: str, what: str):
  """Exits with a one-line error (status 2) when a required setting is empty."""
  if not value:
    print(f"{prog}: error: {flag} is required ({what})", file=sys.stderr)
    sys.exit(2)


def quiet_logs():
  """absl (and so Orbax) logs at WARNING: Orbax logs every file it reads at INFO."""
  from absl import logging as absl_logging

  absl_logging.set_verbosity(absl_logging.WARNING)
