"""Persistent XLA compilation cache: compiled programs are kept on disk between processes.

Compiling the L/16 forward takes about 10 s on a CPU; with the cache a second process (a
repeated `incontext segment` call) loads the compiled program instead. The command line turns
it on by default; from Python call `enable()` once, before the first jitted call:

    from incontext import compile_cache
    compile_cache.enable()                  # ~/.cache/incontext/jax (or $XDG_CACHE_HOME/...)

Settings (environment):
  INCONTEXT_COMPILE_CACHE=0   off (also `false`, `no`, `off`; the CLI's --no-compile-cache)
  INCONTEXT_CACHE_DIR=DIR     the cache folder (default $XDG_CACHE_HOME/incontext/jax, or
                              ~/.cache/incontext/jax)

The folder holds one file per compiled program (the key covers the program, the jax/XLA
version and the devices, so a stale entry is never used); the least recently used entries
are dropped above `MAX_BYTES`. Deleting the folder is always safe. Only the current user
should be able to write to it: jax trusts its contents as compiled code.
"""

import os

ENV_SWITCH = "INCONTEXT_COMPILE_CACHE"
ENV_DIR = "INCONTEXT_CACHE_DIR"
# Programs that compile faster than this are not written (jax's default is 1 s). Low, so
# the small eager helpers are skipped but every model forward is kept, even a tiny model's.
MIN_COMPILE_SECS = 0.1
MAX_BYTES = 4 << 30  # least recently used entries are deleted above 4 GiB

_counts = {"hits": 0, "writes": 0}
_listening = False


def default_dir() -> str:
  """The cache folder: $INCONTEXT_CACHE_DIR, else $XDG_CACHE_HOME/incontext/jax, else
  ~/.cache/incontext/jax."""
  if os.environ.get(ENV_DIR):
    return os.path.abspath(os.path.expanduser(os.environ[ENV_DIR]))
  base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return os.path.join(os.path.abspath(base), "incontext", "jax")


def enabled_by_env() -> bool:
  """False when INCONTEXT_COMPILE_CACHE is 0 / false / no / off."""
  return os.environ.get(ENV_SWITCH, "1").strip().lower() not in ("0", "false", "no", "off")


def _on_event(event: str, **kwargs) -> None:
  if event == "/jax/compilation_cache/cache_hits":
    _counts["hits"] += 1
  elif event == "/jax/compilation_cache/cache_misses":  # recorded when an entry is written
    _counts["writes"] += 1


def enable(path: str | None = None, *, min_compile_secs: float = MIN_COMPILE_SECS) -> str | None:
  """Turns the persistent compilation cache on in this process; returns its folder.

  path: the folder (default `default_dir()`), created if missing. A folder that cannot be
  created gives a warning and no cache (returns None): the cache only saves time.
  Best called before the first jitted call; later calls switch the folder for what is
  compiled from then on.
  """
  import warnings

  import jax
  from jax.experimental.compilation_cache import compilation_cache as cc

  global _listening
  path = os.path.abspath(os.path.expanduser(os.fspath(path or default_dir())))
  try:
    os.makedirs(path, mode=0o700, exist_ok=True)
  except OSError as e:
    warnings.warn(
      f"{path}: cannot create the compilation cache folder ({e.strerror}); compiling without it",
      stacklevel=2,
    )
    return None
  if jax.config.jax_compilation_cache_dir not in (None, path):
    cc.reset_cache()  # re-read the folder setting on the next compile
  jax.config.update("jax_enable_compilation_cache", True)
  jax.config.update("jax_compilation_cache_dir", path)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", float(min_compile_secs))
  jax.config.update("jax_compilation_cache_max_size", MAX_BYTES)
  if not _listening:
    jax.monitoring.register_event_listener(_on_event)
    _listening = True
  return path


def enable_from_env() -> str | None:
  """`enable()` unless INCONTEXT_COMPILE_CACHE turns it off (what the command line does)."""
  return enable() if enabled_by_env() else None


def stats() -> dict:
  """{'hits': programs loaded from the cache, 'writes': programs compiled and written} in
  this process since `enable()`."""
  return dict(_counts)
