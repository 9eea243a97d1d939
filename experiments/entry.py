"""Plumbing shared by the experiment entry points (train, tune, evaluate).

* `usage(doc, config_module)`: the entry point's docstring followed by its config file's
  docstring (presets and args), which absl prints for `--help`;
* `run(main)`: absl's app.run with the two below and the console set up as the command
  line's (`incontext.logs.configure_logging`: library logs quiet; absl's `--verbosity=0`
  (`-v 0`) shows their INFO logs, `-v 1` DEBUG); `--help` exits with status 0;
* `find_config(argv)`: `--config PATH.py[:ARG]` where PATH is not found from the working
  folder is looked up beside the project (`experiments/configs/prompt_tune.py`) and by
  name in `experiments/configs/`, so the commands work from any folder;
* `prepare(config)`: the data folder setting resolved and checked;
* `user_errors()`: errors in the user's input (`incontext.errors.is_user_error`: missing
  files, data folder, checkpoint, a workdir that is a file, bad settings) print one line
  naming the problem and exit with status 2; other errors keep their traceback. A bad flag or
  config override (unknown key, wrong type) is one line and status 2 as well.
"""

import contextlib
import os
import re
import sys

from experiments.configs import common
from incontext import errors, logs

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


def _prog() -> str:
  return os.path.splitext(os.path.basename(sys.argv[0]))[0] or "experiments"


def _fail(prog: str, msg: str):
  print(f"{prog}: error: {msg}", file=sys.stderr)
  sys.exit(2)


def _parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing, with a bad command line as one line and exit status 2.

  A flag absl rejects (unknown, missing, or a value of the wrong type, including
  `--config.KEY=VALUE` overrides) and a config override ml_collections rejects (a misspelt
  KEY, a value that does not fit the field) are the user's input, not bugs.
  """
  from absl import flags

  prog = _prog()
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    text = str(e)
    if "Traceback (most recent call last)" in text:  # the config file's get_config raised
      head = text.split(": ", 1)[0]  # "flag --config=PATH:ARG"
      text = f"{head}: {text.strip().splitlines()[-1]}"
    _fail(prog, errors.one_line(flags.Error(text)))
  except (AttributeError, KeyError, TypeError, ValueError) as e:
    # ml_collections: a KeyError/AttributeError whose text is "'key'\nDid you mean ...".
    msg = errors.one_line(e).strip("'\"").replace("\\'", "'").replace("\\n", " ")
    key = ""
    if isinstance(e, (AttributeError, KeyError)):
      key = msg.split()[0].strip("'\"") if msg else ""
      msg = "no such key " + msg.replace(" Did you mean", "; did you mean")
    over = [a.split("=", 1)[0] for a in argv[1:] if a.startswith(("--config.", "-config."))]
    named = [o for o in over if key and o.split(".")[-1] == key] or over
    _fail(prog, f"{', '.join(named) or '--config'}: {msg}")


def verbose_level() -> int:
  """absl's `--verbosity` (`-v`) as `logs.configure_logging`'s level: not given (or below 0):
  0, quiet; 0 (absl's INFO): 1; 1 or more: 2 (DEBUG)."""
  from absl import flags

  f = flags.FLAGS["verbosity"]
  return min(2, max(0, int(f.value) + 1)) if f.present else 0


def run(main) -> None:
  """`absl.app.run(main)` with the --config path resolved and the console set up
  (`logs.configure_logging`) before `main`; `--help` exits with status 0; a bad flag or config
  override is one line and exit status 2 (`_parse_flags`)."""
  from absl import app

  argv = find_config(sys.argv)
  if any(a in ("--help", "-h", "-help", "--helpshort") for a in argv[1:]):
    app.usage(shorthelp=True, writeto_stdout=True, exitcode=0)

  def logged_main(args):
    logs.configure_logging(verbose_level())
    return main(args)

  app.run(logged_main, argv=argv, flags_parser=_parse_flags)


def prepare(config):
  """The config with its data folder resolved (see experiments/configs/common.py)."""
  return common.resolve_data_dir(config)


@contextlib.contextmanager
def user_errors(prog: str):
  """Errors in the user's input -> one line on stderr and exit status 2.

  The classifier is the command line's (`incontext.errors.is_user_error`): every `UserError`
  (bad data folder, data file, checkpoint, workdir or setting) and the OSErrors about a
  user's file or disk; other errors keep their traceback (exit status 1).
  """
  try:
    yield
  except Exception as e:  # noqa: BLE001 (sorted into user errors and bugs)
    if not errors.is_user_error(e):
      raise
    _fail(prog, errors.one_line(e))


def require(prog: str, value, flag: str, what: str):
  """Exits with a one-line error (status 2) when a required setting is empty."""
  if not value:
    print(f"{prog}: error: {flag} is required ({what})", file=sys.stderr)
    sys.exit(2)
