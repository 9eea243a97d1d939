"""The one console log set-up, shared by the `incontext` command line and the experiment
entry points (`experiments/entry.py`).

`configure_logging(verbose)`:
  0  quiet (the default): the INFO logs and warnings of the libraries (absl, orbax, jax, flax,
     tensorflow, ...), the TensorFlow / XLA C++ logs (TF_CPP_MIN_LOG_LEVEL=3 unless it is set)
     and the libraries' Python warnings are hidden; the root logger shows WARNING and above,
     so this project's own warnings still print. Without a handler already on the root logger
     they read as one plain line, `warning: message`; under absl's `app.run` (the experiment
     entry points) absl's handler and line format are kept.
  1  the libraries' logs at INFO (and the C++ logs), as `I name: message`;
  2  the same at DEBUG.

Call it once, before the libraries log anything (their modules may already be imported). This
module imports nothing heavy: the command line calls it before jax is loaded.
"""

import logging
import os
import warnings

# Libraries whose INFO logs and warnings are hidden unless verbose.
NOISY_LOGGERS = ("absl", "orbax", "jax", "jax._src.xla_bridge", "flax", "tensorflow", "h5py")
NOISY_MODULES = r"(absl|orbax|jax|jaxlib|flax|tensorflow|google|tensorstore)(\.|$)"


class PlainFormatter(logging.Formatter):
  """`warning: message`: a quiet run's warnings read as one line each."""

  def format(self, record):
    return f"{record.levelname.lower()}: {record.getMessage()}"


def configure_logging(verbose: int = 0) -> None:
  """Quiet console (verbose <= 0) or the libraries' logs shown (1: INFO, 2: DEBUG)."""
  if verbose <= 0:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    for name in NOISY_LOGGERS:
      logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module=NOISY_MODULES)
    # absl's app.run sets the root logger to INFO: back to WARNING (Python's own default).
    logging.root.setLevel(max(logging.root.level, logging.WARNING))
    if not logging.root.handlers:  # else a library's basicConfig() prints "WARNING:name:..."
      handler = logging.StreamHandler()
      handler.setFormatter(PlainFormatter())
      logging.root.addHandler(handler)
    return
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0")
  level = logging.INFO if verbose == 1 else logging.DEBUG
  logging.basicConfig(level=level, format="%(levelname).1s %(name)s: %(message)s", force=True)
  for name in NOISY_LOGGERS:
    logging.getLogger(name).setLevel(level)
