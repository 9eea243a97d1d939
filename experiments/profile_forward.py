"""Where the forward's time goes on this machine: XLA's FLOP count, the achieved rate against the
matmul peak, and the time by kind of operation.

For the inference forward that `incontext segment` runs (query-only decoder; k prompts with the
feature ensemble), at a model variant's real shapes:

  flops        XLA's cost analysis (`Compiled.cost_analysis()`: what XLA runs, elementwise
               work included) of the same forward with the loop-free attention (the cost
               analysis counts a loop's body once: see loop_free_flops), beside the analytic
               matmul count of experiments/bench_inference.py (2 x multiply-adds of every
               matmul)
  time         the median of --reps forwards after a warm-up (compilation excluded)
  efficiency   GFLOP/s against this process's f32 matmul peak (experiments/benchenv.py)
  by kind      one forward traced with the JAX profiler: every XLA:CPU thunk (a fusion, a
               matmul, a copy) is timed on every thread (so shares, not sums, are the point)
               and classified from the compiled HLO by what it computes: matmul
               (dot/convolution), softmax (exp), GELU (erf), layer norm (rsqrt),
               transpose/copy (only data movement), other elementwise. Loops (the
               chunked attention's `lax.map`) are containers: the thunks inside them count.

  python -m experiments.profile_forward                   # L/16, k = 1 (a few minutes on 2 cores)
  python -m experiments.profile_forward --ks 1,8 --reps 3
  python -m experiments.profile_forward --variant test    # a quick check of the script

  shapes       (printed first) the rate of each matmul shape the forward runs, alone, in this
               process: the dense layers ([T, d] x [d, 3d], [d, 4d], [4d, d]; T = one
               canvas' tokens), the decoder's embedding and the attention's per-chunk products
               (q.k over one query chunk of one head, P.v). The forward cannot beat the
               time-weighted mix of these; the gap between it and the square peak is the
               shapes', the gap between the forward and it is the program's.
"""

import argparse
import collections
import dataclasses
import glob
import gzip
import json
import re
import statistics
import tempfile
import time

import jax
import numpy as np
from flax import nnx

from experiments import bench_inference, benchenv
from incontext import canvas, predict
from incontext.models import seggpt

KINDS = ("matmul", "softmax", "gelu", "layer norm", "transpose/copy", "other")
_MOVES = {
  "transpose",
  "copy",
  "reshape",
  "bitcast",
  "broadcast",
  "slice",
  "concatenate",
  "pad",
  "dynamic-slice",
  "dynamic-update-slice",
  "parameter",
  "constant",
  "tuple",
  "get-tuple-element",
  "iota",
  "convert",
  "gather",
}
_CONTAINERS = {"while", "conditional", "call"}

_COMP = re.compile(r"^(?:ENTRY )?%?([\w.\-]+) .*\{\s*$")
_INSTR = re.compile(r"^\s*(?:ROOT )?%?([\w.\-]+) = .*?\s([a-z][\w\-]*)\(")
_CALLS = re.compile(r"(?:calls|to_apply|body|condition)=%?([\w.\-]+)")


def hlo_index(text: str) -> tuple[dict, dict]:
  """(instruction name -> (opcode, [called computations]), computation -> [instruction names])."""
  instrs, comps, cur = {}, collections.defaultdict(list), None
  for line in text.splitlines():
    m = _COMP.match(line)
    if m and "=" not in line.split("{")[0]:
      cur = m.group(1)
      continue
    m = _INSTR.match(line)
    if m and cur is not None:
      instrs[m.group(1)] = (m.group(2), _CALLS.findall(line))
      comps[cur].append(m.group(1))
  return instrs, comps


def _opcodes(name: str, instrs: dict, comps: dict, seen=None) -> set:
  seen = set() if seen is None else seen
  op, calls = instrs[name]
  ops = {op}
  for c in calls:
    if c in seen:
      continue
    seen.add(c)
    for n in comps.get(c, ()):
      ops |= _opcodes(n, instrs, comps, seen)
  return ops


def classify(name: str, instrs: dict, comps: dict) -> str | None:
  """The kind of an XLA instruction by what it computes; None for loops (containers)."""
  if name not in instrs:
    return None
  if instrs[name][0] in _CONTAINERS:
    return None
  ops = _opcodes(name, instrs, comps)
  if ops & {"dot", "convolution"} or "ynn" in name or "onednn" in name:
    return "matmul"
  if "exponential" in ops:
    return "softmax"
  if "erf" in ops:
    return "gelu"
  if "rsqrt" in ops:
    return "layer norm"
  if ops <= _MOVES | {"fusion"}:
    return "transpose/copy"
  return "other"


def _thunk_times(trace_dir: str) -> dict:
  """{event name: total microseconds} of the complete events in the profiler's trace."""
  (path,) = glob.glob(f"{trace_dir}/**/perfetto_trace.json.gz", recursive=True)
  with gzip.open(path) as f:
    tr = json.load(f)
  events = tr["traceEvents"] if isinstance(tr, dict) else tr
  out = collections.Counter()
  for e in events:
    if e.get("ph") == "X" and not e["name"].startswith(("$", "end: ")):
      out[e["name"]] += float(e.get("dur", 0))
  return out


def _rate(shape_a, shape_b, spec: str, reps: int = 5) -> float:
  """Best GFLOP/s of one f32 `einsum(spec)` of the two shapes (jit, alone)."""
  rng = np.random.default_rng(0)
  a = jax.device_put(rng.standard_normal(shape_a, np.float32))
  b = jax.device_put(rng.standard_normal(shape_b, np.float32))
  f = jax.jit(lambda x, y: jax.numpy.einsum(spec, x, y))
  out = f(a, b).block_until_ready()
  fl = 2 * float(np.prod(out.shape)) * float(np.prod(shape_a)) / float(np.prod(out.shape[:-1]))
  best = float("inf")
  for _ in range(reps):
    t = time.perf_counter()
    f(a, b).block_until_ready()
    best = min(best, time.perf_counter() - t)
  return fl / best / 1e9


def shape_rates(cfg) -> dict:
  """{name: GFLOP/s} of the forward's matmul shapes alone (see the module docstring)."""
  gh, gw = cfg.grid
  t, d, m, nh = gh * gw, cfg.width, cfg.mlp_dim, cfg.num_heads
  c = d // nh
  rows, _ = seggpt._chunk_rows(t, t)
  nfeat = len(cfg.feature_layers)
  dec = cfg.patch * cfg.patch * cfg.decoder_dim
  tq = (gh - gh // 2 + 1) * gw
  return {
    f"qkv [{t},{d}]x[{d},{3 * d}]": _rate((t, d), (d, 3 * d), "td,de->te"),
    f"fc1 [{t},{d}]x[{d},{m}]": _rate((t, d), (d, m), "td,de->te"),
    f"fc2 [{t},{m}]x[{m},{d}]": _rate((t, m), (m, d), "td,de->te"),
    f"decoder embed [{tq},{nfeat * d}]x[{nfeat * d},{dec}]": _rate(
      (tq, nfeat * d), (nfeat * d, dec), "td,de->te"
    ),
    f"q.k [{rows},{c}]x[{t},{c}]": _rate((rows, c), (t, c), "qc,kc->qk"),
    f"p.v [{rows},{t}]x[{t},{c}]": _rate((rows, t), (t, c), "qk,kc->qc"),
  }


def loop_free_flops(cfg, fwd, inputs: tuple, feature_ensemble: bool) -> float:
  """XLA's FLOP count of the same forward with the loop-free ("fused") attention.

  XLA's cost analysis counts a loop's body once, not once per iteration, so on the CPU
  program (the attention loops over heads and query chunks) it would leave out nearly all of
  the attention's products. The loop-free program does the same arithmetic in one piece;
  it is only compiled here, never run.
  """
  graphdef, state = nnx.split(seggpt.abstract(dataclasses.replace(cfg, attention="fused")))
  lowered = fwd.lower(graphdef, state, *inputs, feature_ensemble=feature_ensemble)
  cost = lowered.compile().cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float(cost.get("flops", 0.0))


def profile(variant: str, over: dict, k: int, reps: int, peak: float) -> dict:
  model = seggpt.create(variant, **over)
  cfg = model.cfg
  graphdef, state = nnx.split(model)
  h, w = cfg.image_size
  rng = np.random.default_rng(0)
  pi = rng.standard_normal((k, h, w, 3)).astype(np.float32)
  pt = rng.standard_normal((k, h, w, 3)).astype(np.float32)
  q = rng.standard_normal((1, h, w, 3)).astype(np.float32)
  st = np.int32(canvas.INSTANCE)
  # The forward `incontext segment` runs (the core's), compiled ahead of time.
  fwd = predict.jitted()
  ens = predict.feature_ensemble_on(k)
  compiled = fwd.lower(graphdef, state, pi, pt, q, st, feature_ensemble=ens).compile()
  flops = loop_free_flops(cfg, fwd, (pi, pt, q, st), ens)
  run = lambda: jax.block_until_ready(compiled(state, pi, pt, q, st))
  run()
  ts = []
  for _ in range(reps):
    t = time.perf_counter()
    run()
    ts.append(time.perf_counter() - t)
  dt = statistics.median(ts)
  instrs, comps = hlo_index(compiled.as_text())
  with tempfile.TemporaryDirectory() as d:
    with jax.profiler.trace(d, create_perfetto_trace=True):
      run()
    times = _thunk_times(d)
  by_kind = collections.Counter()
  for name, us in times.items():
    kind = classify(name, instrs, comps)
    if kind is not None:
      by_kind[kind] += us / 1e6
  traced = sum(by_kind.values())
  analytic = bench_inference.model_flops(cfg, k, reference=False, shared=k > 1)
  row = {
    "k": k,
    "gflop": round(flops / 1e9, 1),
    "analytic_matmul_gflop": round(analytic / 1e9, 1),
    "analytic_efficiency": round(analytic / dt / 1e9 / peak, 3),
    "forward_s": round(dt, 3),
    "gflops_per_s": round(flops / dt / 1e9, 1),
    "matmul_peak_gflops": round(peak, 1),
    "efficiency": round(flops / dt / 1e9 / peak, 3),
    "traced_s": round(traced, 3),
    "by_kind_s": {kk: round(by_kind.get(kk, 0.0), 3) for kk in KINDS},
  }
  return row


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--variant", default="L/16")
  ap.add_argument("--ks", default="1", help="comma-separated prompt counts")
  ap.add_argument("--reps", type=int, default=3)
  ap.add_argument("--depth", type=int, default=None, help="fewer blocks (a quick look)")
  args = ap.parse_args(argv)
  over = dict(image_size=(32, 32), patch=8) if args.variant == "test" else {}
  if args.depth is not None:
    over.update(depth=args.depth, feature_layers=seggpt.default_feature_layers(args.depth))
  peak = benchenv.jax_matmul_gflops()
  cfg = seggpt.get_config(args.variant, **over)
  rates = shape_rates(cfg)
  print(
    "matmul shapes alone (GFLOP/s, % of the square peak): "
    + "; ".join(f"{k} {v:.0f} ({100 * v / peak:.0f}%)" for k, v in rates.items()),
    flush=True,
  )
  rows = []
  for k in (int(s) for s in args.ks.split(",")):
    r = profile(args.variant, over, k, args.reps, peak)
    rows.append(r)
    parts = ", ".join(
      f"{kk} {v:.2f} s ({100 * v / max(r['traced_s'], 1e-9):.0f}%)"
      for kk, v in r["by_kind_s"].items()
    )
    print(
      f"{args.variant} k={k}: {r['gflop']} GFLOP (XLA cost analysis) in {r['forward_s']} s = "
      f"{r['gflops_per_s']} GFLOP/s, {100 * r['efficiency']:.0f}% of the f32 matmul peak "
      f"({r['matmul_peak_gflops']} GFLOP/s); analytic matmul {r['analytic_matmul_gflop']} GFLOP:"
      f" {100 * r['analytic_efficiency']:.0f}%; time by kind (share of the traced thunk time,"
      f" which counts threads running side by side): {parts}",
      flush=True,
    )
  print(json.dumps(rows, indent=1))
  return rows


if __name__ == "__main__":
  with benchenv.bracket("profile_forward"):
    main()
