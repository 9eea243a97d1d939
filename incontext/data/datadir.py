"""Where the datasets are: the one data-folder rule of the experiment configs, the scripts in
experiments/ and the tests.

`data_dir(*parts)` is, in this order: the environment variable INCONTEXT_DATA_DIR (a relative
path is from the working folder), else `../shared/data` beside the project root (the folder
holding the `incontext` package), so any working folder gives the same answer. The path is
absolute and not checked: a config reports a missing folder as its `data_dir` setting
(experiments/configs/common.resolve_data_dir), the tests skip (fail under CI=true).

Imports nothing heavy (the tests' helpers and the configs read it).
"""

import os

DATA_DIR_ENV = "INCONTEXT_DATA_DIR"
PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def data_dir(*parts: str) -> str:
  """The data folder ($INCONTEXT_DATA_DIR, else ../shared/data beside the project root), or
  `parts` joined below it. Absolute, not checked for existence."""
  env = os.environ.get(DATA_DIR_ENV)
  root = (
    os.path.abspath(os.path.expanduser(env))
    if env
    else os.path.join(os.path.dirname(PROJECT_ROOT), "shared", "data")
  )
  return os.path.join(root, *parts)
