"""Where one command's time goes: named phases, with XLA compilation split out.

The commands mark their steps with `phase(name)`; `incontext CMD --profile` (or `-v`) prints
the sum per phase at the end, e.g.

  time breakdown (s)      start-up 0.9  imports 2.8  checks 0.0  restore 4.1  verify 0.0
                          compile 1.2  decode 0.1  forward 25.8  post-process 0.1  write 0.1
                          other 0.4  total 35.5

  start-up      the interpreter and the `incontext` command line, before the command runs
                (the process's age when timing starts; Linux only, else left out)
  imports       jax, flax, orbax and the model code, imported on demand by the command
  compile       tracing, lowering and compiling jitted programs, or loading them from the
                compilation cache (jax's own duration events, so it is taken out of the phase
                that triggered it: `forward` is the forward alone)
  other         the rest of the wall time (argument parsing, interpreter exit work)

Phases nest: an inner phase's time is taken out of the outer one, so the sums add up to the
wall time. Recording costs a `perf_counter` call per phase, so it is always on; `report()`
formats it.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time

# jax's duration events for tracing, lowering and compiling (or loading a cached program).
COMPILE_EVENTS = (
  "/jax/core/compile/jaxpr_trace_duration",
  "/jax/core/compile/jaxpr_to_mlir_module_duration",
  "/jax/core/compile/backend_compile_duration",
)

_totals: dict[str, float] = {}
# Per open phase: [time taken out of it by nested phases and compiles, splits compiles].
_stack: list[list] = []
_state = {"t0": time.perf_counter(), "age0": None, "listening": False}


def process_age() -> float | None:
  """Seconds since this process started (Linux /proc), or None."""
  try:
    with open("/proc/self/stat") as f:
      start_ticks = int(f.read().rsplit(")", 1)[1].split()[19])
    with open("/proc/uptime") as f:
      uptime = float(f.read().split()[0])
    return max(0.0, uptime - start_ticks / os.sysconf("SC_CLK_TCK"))
  except (OSError, ValueError, IndexError):
    return None


def reset() -> None:
  """Starts a new breakdown (the command line calls it once, first thing)."""
  _totals.clear()
  _stack.clear()
  _state["t0"] = time.perf_counter()
  _state["age0"] = process_age()


def add(name: str, seconds: float) -> None:
  _totals[name] = _totals.get(name, 0.0) + seconds


def _on_duration(event: str, duration: float, **kwargs) -> None:
  if event not in COMPILE_EVENTS or (_stack and not _stack[-1][1]):
    return
  add("compile", duration)
  if _stack:
    _stack[-1][0] += duration


def _listen_to_jax() -> None:
  """Registers the compile-time listener once jax is imported (never imports jax itself)."""
  if _state["listening"] or "jax" not in sys.modules:
    return
  sys.modules["jax"].monitoring.register_event_duration_secs_listener(_on_duration)
  _state["listening"] = True


@contextlib.contextmanager
def phase(name: str, *, compiles: bool = True):
  """Adds the wall time of the block to `name`, less nested phases and compilation.

  compiles=False keeps jax's tracing inside the phase (e.g. `jax.eval_shape` of an abstract
  model while restoring: a trace, not a program to compile).
  """
  _listen_to_jax()
  _stack.append([0.0, compiles])
  t = time.perf_counter()
  try:
    yield
  finally:
    dt = time.perf_counter() - t
    taken = _stack.pop()[0]
    add(name, max(0.0, dt - taken))
    if _stack:
      _stack[-1][0] += dt
    _listen_to_jax()  # the block may have imported jax


def breakdown() -> dict[str, float]:
  """{phase: seconds} so far, with 'start-up' (when known), 'other' and 'total'."""
  out = {}
  wall = time.perf_counter() - _state["t0"]
  if _state["age0"] is not None:
    out["start-up"] = _state["age0"]
    wall += _state["age0"]
  out.update(_totals)
  out["other"] = max(0.0, wall - sum(out.values()))
  out["total"] = wall
  return out


def report(title: str = "time breakdown (s)") -> str:
  """The breakdown as a few lines of `name seconds` pairs."""
  items = [f"{k} {v:.2f}" for k, v in breakdown().items()]
  lines, row = [], []
  for it in items:
    row.append(it)
    if len(row) == 6:
      lines.append("  ".join(row))
      row = []
  if row:
    lines.append("  ".join(row))
  pad = " " * (len(title) + 2)
  return "\n".join((title + "  " if i == 0 else pad) + ln for i, ln in enumerate(lines))


def parse_report(text: str) -> dict[str, float]:
  """The {phase: seconds} of the last `report()` printed in `text` (e.g. a command's stderr)."""
  i = text.rfind("time breakdown (s)")
  if i < 0:
    return {}
  words = text[i + len("time breakdown (s)") :].split()
  out = {}
  for name, value in zip(words[::2], words[1::2]):
    try:
      out[name] = float(value)
    except ValueError:
      break
  return out
