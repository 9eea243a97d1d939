"""What every benchmark prints at its start and end: the machine's load and its matmul peak.

A speed ratio means something only beside the conditions it was taken in. Under contention
(other processes on the cores) torch's and XLA's thread pools lose unequally, so a ratio taken
at load 8 on 2 cores is not the ratio a user sees. Every `experiments/bench_*.py` therefore
brackets its run with `bracket(...)`, which prints, at the start and again at the end:

  bench_cli start: load 0.21 0.23 0.11 (1/5/15 min) on 2 cores; f32 matmul peak: jax 228.1 GFLOP/s,
    torch 160.1 GFLOP/s (n=2048); QUIET
  bench_cli end: load 1.52 ... (this benchmark's own load included)

The matmul peak is the best of a few timed square f32 products in this process (jax on its
default device, torch on the CPU when it is installed); a figure in docs/results.md is taken only
from runs whose start says QUIET (1-minute load under `QUIET_LOAD` per 2 cores with nothing of
the benchmark's running yet; the end's load includes the benchmark itself, so it is printed for
the record, not judged), and whose peaks at start and end agree.

  with benchenv.bracket("bench_cli"):
    ...  # the benchmark

`python -m experiments.benchenv` prints the line once (e.g. before a run, to see whether the
machine is quiet).
"""

import contextlib
import os
import time

import numpy as np

# A run counts as quiet when the 1-minute load average stays under this per 2 cores.
QUIET_LOAD = 1.5


def load() -> tuple[float, float, float]:
  """The 1, 5 and 15 minute load averages (zeros where the OS has none)."""
  try:
    return os.getloadavg()
  except OSError:
    return (0.0, 0.0, 0.0)


def quiet(load1: float | None = None, cores: int | None = None) -> bool:
  """True when the 1-minute load is under QUIET_LOAD per 2 cores."""
  load1 = load()[0] if load1 is None else load1
  cores = cores or os.cpu_count() or 1
  return load1 < QUIET_LOAD * cores / 2


def _best_time(fn, reps: int) -> float:
  fn()  # warm-up (and compile)
  best = float("inf")
  for _ in range(reps):
    t = time.perf_counter()
    fn()
    best = min(best, time.perf_counter() - t)
  return best


def jax_matmul_gflops(n: int = 2048, reps: int = 5) -> float:
  """Best f32 n x n x n matmul rate of jax on its default device, GFLOP/s."""
  import jax

  a = jax.device_put(np.random.default_rng(0).standard_normal((n, n), np.float32))
  mm = jax.jit(lambda x: x @ x)
  return 2 * n**3 / _best_time(lambda: mm(a).block_until_ready(), reps) / 1e9


def torch_matmul_gflops(n: int = 2048, reps: int = 5) -> float | None:
  """Best f32 n x n x n matmul rate of torch on the CPU, GFLOP/s; None without torch."""
  try:
    import torch
  except ImportError:
    return None
  a = torch.from_numpy(np.random.default_rng(0).standard_normal((n, n), np.float32))
  with torch.no_grad():
    return 2 * n**3 / _best_time(lambda: a @ a, reps) / 1e9


def line(tag: str = "bench-env", *, peak: bool = True, n: int = 2048, verdict: bool = True) -> dict:
  """Prints one line with the load and (peak=True) the f32 matmul peaks; returns them.

  verdict: say QUIET or LOADED (at a benchmark's end the load includes the benchmark itself,
  so the verdict is the start's; the end line gives the load and the peak for the record)."""
  l1, l5, l15 = load()
  cores = os.cpu_count() or 1
  row = {"load": [round(l1, 2), round(l5, 2), round(l15, 2)], "cores": cores}
  text = f"{tag}: load {l1:.2f} {l5:.2f} {l15:.2f} (1/5/15 min) on {cores} cores"
  if peak:
    row["jax_gflops"] = round(float(jax_matmul_gflops(n)), 1)
    tg = torch_matmul_gflops(n)
    row["torch_gflops"] = None if tg is None else round(tg, 1)
    text += f"; f32 matmul peak: jax {row['jax_gflops']:.1f} GFLOP/s"
    text += "" if tg is None else f", torch {tg:.1f} GFLOP/s"
    text += f" (n={n})"
  row["quiet"] = quiet(l1, cores)
  if verdict:
    text += "; QUIET" if row["quiet"] else "; LOADED (figures not for docs/results.md)"
  else:
    text += " (this benchmark's own load included)"
  print(text, flush=True)
  return row


@contextlib.contextmanager
def bracket(name: str, *, peak: bool = True):
  """Prints `line` at the start and end of a benchmark (the end also after a failure).

  Yields a dict that gets 'start' and, at the end, 'end' rows (a benchmark that writes JSON
  can store it).
  """
  env = {"start": line(f"{name} start", peak=peak)}
  try:
    yield env
  finally:
    env["end"] = line(f"{name} end", peak=peak, verdict=False)
    if not env["start"]["quiet"]:
      print(f"{name}: the machine was not quiet; its ratios are not comparable", flush=True)


if __name__ == "__main__":
  line()
