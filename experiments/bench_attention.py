"""Attention implementations side by side on this machine: chunked vs fused (vs cuDNN on GPU).

Times one attention layer's core (`seggpt.attend`: logits, decomposed relative bias,
float32 softmax, P.V), forward and forward+backward, at a small and a mid (L/16: 56 x 28
token grid, 16 heads of 64) size, the implementations interleaved in one run. `auto` picks
"chunked" on CPU: the printed fused/chunked ratio (> 1: chunked is faster) is why.

  python -m experiments.bench_attention                # both sizes, float32
  python -m experiments.bench_attention --dtype bfloat16 --sizes mid
"""

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from experiments import benchenv
from incontext.models import seggpt

# name: (batch entries, heads, head dim, token grid gh x gw)
SIZES = {"small": (8, 4, 32, (16, 8)), "mid": (2, 16, 64, (56, 28))}


def _inputs(b, nh, c, grid, dtype):
  gh, gw = grid
  n = gh * gw
  rng = np.random.default_rng(0)
  f = lambda *s: jnp.asarray(rng.normal(size=s), dtype)
  return (
    f(b, nh, n, c) * c**-0.5,
    f(b, nh, n, c),
    f(b, nh, n, c),
    f(b, nh, n, gh),
    f(b, nh, n, gw),
  )


def _time(fn, args, reps):
  jax.block_until_ready(fn(*args))  # compile
  ts = []
  for _ in range(reps):
    t = time.perf_counter()
    jax.block_until_ready(fn(*args))
    ts.append(time.perf_counter() - t)
  return statistics.median(ts)


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--sizes", default="small,mid")
  ap.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
  ap.add_argument("--reps", type=int, default=5)
  args = ap.parse_args(argv)
  impls = ["chunked", "fused"] + (
    ["cudnn"] if args.dtype == "bfloat16" and jax.default_backend() == "gpu" else []
  )
  print(
    f"# {jax.default_backend()} ({jax.devices()[0].device_kind}), {args.dtype}, "
    f"auto = {seggpt.attention_impl('auto', args.dtype, 2, 2, 64)}"
  )
  rows = []
  for size in args.sizes.split(","):
    b, nh, c, grid = SIZES[size]
    a = _inputs(b, nh, c, grid, jnp.dtype(args.dtype))
    t = {}
    for impl in impls:
      fwd = jax.jit(lambda *x, impl=impl: seggpt.attend(*x, impl))
      bwd = jax.jit(
        jax.grad(
          lambda *x, impl=impl: jnp.sum(seggpt.attend(*x, impl).astype(jnp.float32)),
          argnums=(0, 1, 2, 3, 4),
        )
      )
      t[impl] = (_time(fwd, a, args.reps), _time(bwd, a, args.reps))
    for impl in impls:
      f, g = t[impl]
      rows.append((size, impl, f, g, f / t["chunked"][0], g / t["chunked"][1]))
  print(
    f"{'size':>5} | {'impl':>7} | {'fwd ms':>8} | {'fwd+bwd ms':>10} | "
    f"{'fwd / chunked':>13} | {'fwd+bwd / chunked':>17}"
  )
  for size, impl, f, g, rf, rg in rows:
    print(f"{size:>5} | {impl:>7} | {f * 1e3:>8.1f} | {g * 1e3:>10.1f} | {rf:>13.2f} | {rg:>17.2f}")
  return rows


if __name__ == "__main__":
  with benchenv.bracket("bench_attention"):
    rc = main()
