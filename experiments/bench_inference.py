"""Inference benchmark: this project's SegGPT forward vs transformers' on this CPU.

Both models get the same random weights (built as a transformers `SegGptConfig`, copied
into ours with `incontext.models.convert`), float32, the same canvases. Transformers runs
its full forward (`pred_masks` over the whole canvas, as its API does); ours runs the
inference path `model(..., query_only=True)`: every encoder block, then the decoder on the
query half plus one token row of context (bit-for-bit the bottom half of the full decode).
The outputs are compared on the query half (max abs diff printed).

k = 1 is the one-prompt forward; k > 1 is the feature ensemble over k prompts (the
transformers' feature-ensemble variant, `ensemble="hf"`, so the outputs are comparable); ours
then also passes `shared_query=True` (the k entries share one query, so its per-token work is done
once; `--no-shared` times the per-entry path instead).

Times are medians over `--reps` runs after one warm-up (k = 1; for k > 1 ours is warmed up
to exclude compilation, transformers is not, being eager), the two implementations
interleaved so machine load hits both alike. GFLOP counts are analytic: 2 x multiply-adds
of every matmul and convolution each implementation performs (elementwise work, softmax
and norms not counted), so GFLOP/s is the achieved rate on the work actually done.

  python -m experiments.bench_inference                       # L/16, k = 1, 2, 4, 8
  python -m experiments.bench_inference --ks 1 --reps 5
  python -m experiments.bench_inference --variant B/16 --depth 7 --ks 1,2   # quick look
"""

import argparse
import os
import statistics
import sys
import time

import jax
import numpy as np
from flax import nnx

from experiments import benchenv
from incontext import canvas, predict
from incontext import mesh as mesh_lib
from incontext.models import convert, seggpt


def model_flops(
  cfg: seggpt.SegGPTConfig, k: int, *, reference: bool, shared: bool = False
) -> float:
  """Analytic matmul/conv FLOPs of one forward with k prompts.

  reference=True: transformers' work (all blocks, full-canvas decoder, k decoded entries);
  False: ours with query_only (blocks up to the last feature layer, the last one on the
  query half plus one row of queries, the decoder on that many rows); shared (k > 1):
  the query rows' qkv, proj and MLP once per stream, their decoder once (+1 row per prompt).
  """
  gh, gw = cfg.grid
  t = gh * gw
  d, m, p, dd = cfg.width, cfg.mlp_dim, cfg.patch, cfg.decoder_dim
  last = max(cfg.feature_layers)
  nblocks = cfg.depth if reference else last + 1
  rows_q = gh if reference else gh // 2 + 1
  fl = 2 * k * t * 2 * (p * p * 3) * d  # patch embed, both streams
  shared = shared and k > 1 and not reference
  tqh = (gh - gh // 2) * gw  # query-half tokens
  for i in range(nblocks):
    b = 2 * k if i <= cfg.merge_index else k
    s = 2 if i <= cfg.merge_index else 1  # streams
    tq = t if (reference or i < last) else rows_q * gw
    tok = (b * (tq - tqh) + s * tqh) if shared else b * tq  # rows through proj and MLP
    kv = (b * (t - tqh) + s * tqh) if shared else b * t  # rows through qkv
    fl += (
      2 * kv * d * 3 * d  # qkv
      + b * 2 * tq * d * (gh + gw)  # decomposed relative terms
      + b * 2 * 2 * tq * t * d  # q.k and p.v
      + 2 * tok * d * d  # proj
      + 2 * 2 * tok * d * m
    )  # mlp
  r = gh if reference else rows_q

  def dec(rows, n):
    return n * (
      2 * rows * gw * len(cfg.feature_layers) * d * p * p * dd  # decoder_embed
      + 2 * (rows * p) * (gw * p) * 9 * dd * dd  # 3x3 conv
      + 2 * (rows * p) * (gw * p) * dd * 3
    )  # 1x1 head

  if shared:
    return fl + dec(gh - gh // 2, 1) + k * dec(1, 1)
  return fl + dec(r, k)


def build(cfg: seggpt.SegGPTConfig, seed: int = 0):
  """(transformers model, our model) with the same random weights."""
  import torch
  from transformers import SegGptConfig, SegGptForImageSegmentation

  kw = {
    k: v for k, v in convert.hf_config_dict(cfg).items() if k not in ("architectures", "model_type")
  }
  torch.manual_seed(seed)
  hm = SegGptForImageSegmentation(SegGptConfig(**kw)).eval()
  with torch.no_grad():  # non-trivial values for every parameter
    for name, prm in hm.named_parameters():
      if name.endswith(("layernorm_before.weight", "layernorm_after.weight", "layernorm.weight")):
        prm.copy_(1.0 + 0.1 * torch.randn_like(prm))
      else:
        prm.copy_(0.05 * torch.randn_like(prm))
  sd = {k: v.detach().numpy().copy() for k, v in hm.state_dict().items()}
  model = seggpt.SegGPT(cfg, rngs=nnx.Rngs(seed))
  convert.load_official(model, convert.hf_to_official(sd))
  return hm, model


def inputs(cfg: seggpt.SegGPTConfig, k: int, seed: int = 0):
  """k prompts (image, colour mask) over one shared query: [k, 2H, W, 3] canvases."""
  rng = np.random.default_rng(seed)
  h, w = cfg.image_size
  prompts = rng.normal(size=(k, h, w, 3)).astype(np.float32)
  query = np.repeat(rng.normal(size=(1, h, w, 3)).astype(np.float32), k, 0)
  masks = rng.normal(size=(k, h, w, 3)).astype(np.float32)
  return np.concatenate([prompts, query], 1), np.concatenate([masks, masks], 1)


def hf_runner(hm, imgs, tgts, ensemble: bool):
  import torch

  h = imgs.shape[1] // 2
  t = lambda a: torch.from_numpy(np.ascontiguousarray(a.transpose(0, 3, 1, 2)))
  args = dict(
    pixel_values=t(imgs[:, h:]),
    prompt_pixel_values=t(imgs[:, :h]),
    prompt_masks=t(tgts[:, :h]),
    feature_ensemble=ensemble,
    embedding_type="instance",
  )

  def run():
    with torch.no_grad():
      out = hm(**args).pred_masks
    return out.numpy().transpose(0, 2, 3, 1)[:, h:]  # query half, NHWC

  return run


def core_runner(model, imgs, tgts, device=None):
  """The forward `incontext segment` runs (`predict.Predictor`, on `device` or the default
  one): the k prompts of the canvases against their shared query -> () -> [1, h, w, 3] numpy,
  entry 0's query half (all k entries' are one under the feature ensemble)."""
  h = imgs.shape[1] // 2
  mesh = mesh_lib.make_mesh([("data", -1)], devices=[device or jax.devices()[0]])
  pred = predict.Predictor(model, imgs[:, :h], tgts[:, :h], seg_type="instance", mesh=mesh)
  q = jax.device_put(imgs[:1, h:], mesh_lib.batch_sharding(mesh))
  return lambda: np.asarray(pred(q, donate=False))


def ours_runner(model, imgs, tgts, ensemble: bool, query_only: bool = True, shared: bool = True):
  """Ours: the core's forward (`core_runner`) for what `segment` runs (query only, the query
  shared under the ensemble, `ensemble` = k > 1); the model called directly for the variants
  the core does not run (the full canvas, no shared query)."""
  if query_only and (shared or not ensemble) and ensemble == predict.feature_ensemble_on(len(imgs)):
    return core_runner(model, imgs, tgts)
  cfg = model.cfg
  graphdef, state = nnx.split(model)
  mask = canvas.query_half_mask(cfg.grid)[None]
  st = np.full((imgs.shape[0],), canvas.INSTANCE)

  @jax.jit
  def fwd(state, imgs, tgts):
    m = nnx.merge(graphdef, state)
    return m(
      imgs,
      tgts,
      mask,
      st,
      feature_ensemble=ensemble,
      query_only=query_only,
      shared_query=shared and ensemble,
    )

  h = imgs.shape[1] // 2
  imgs_d, tgts_d = jax.device_put(imgs), jax.device_put(tgts)

  def run():
    out = np.asarray(fwd(state, imgs_d, tgts_d))
    return out if query_only else out[:, h:]

  return run


def timed(fn):
  t0 = time.perf_counter()
  out = fn()
  return time.perf_counter() - t0, out


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--variant", default="L/16", help="model variant (default L/16)")
  ap.add_argument("--reps", type=int, default=3, help="timed runs per implementation and k")
  ap.add_argument("--ks", default="1,2,4,8", help="comma-separated prompt counts")
  ap.add_argument(
    "--depth",
    type=int,
    default=None,
    help="override the block count (quick looks; not the official model)",
  )
  ap.add_argument(
    "--full",
    action="store_true",
    help="also time our full-canvas forward (query_only=False) at k=1",
  )
  ap.add_argument(
    "--no-shared",
    action="store_true",
    help="k > 1: time our per-entry ensemble path (no shared_query)",
  )
  ap.add_argument(
    "--dtype",
    default="float32",
    choices=("float32", "bfloat16"),
    help="our compute dtype (transformers stays float32; bfloat16 is not "
    "the parity setting: read its max|diff| accordingly)",
  )
  ap.add_argument("--seed", type=int, default=0)
  args = ap.parse_args(argv)
  try:
    ks = [int(s) for s in args.ks.split(",") if s.strip()]
  except ValueError:
    ap.error(f"--ks: expected comma-separated integers, got {args.ks!r}")
  if not ks or min(ks) < 1:
    ap.error(f"--ks: prompt counts must be >= 1, got {args.ks!r}")
  if args.reps < 1:
    ap.error(f"--reps: must be >= 1, got {args.reps}")
  over = dict(ensemble="hf", dtype=args.dtype)
  try:
    if args.depth is not None:
      over.update(depth=args.depth, feature_layers=seggpt.default_feature_layers(args.depth))
    cfg = seggpt.get_config(args.variant, **over)
  except ValueError as e:
    ap.error(f"--variant/--depth: {e}")

  import torch

  print(
    f"# {args.variant}{'' if args.depth is None else f' (depth {args.depth})'}, canvas "
    f"{cfg.canvas[0]}x{cfg.canvas[1]}, transformers float32, ours {args.dtype}, "
    f"{os.cpu_count()} CPUs; "
    f"jax {jax.__version__} ({jax.default_backend()}), torch {torch.__version__} "
    f"({torch.get_num_threads()} threads)",
    flush=True,
  )
  t0 = time.perf_counter()
  hm, model = build(cfg, args.seed)
  print(
    f"# built both models with the same random weights in {time.perf_counter() - t0:.0f}s",
    flush=True,
  )

  rows = []
  for k in ks:
    imgs, tgts = inputs(cfg, k, args.seed)
    ens = k > 1
    hf = hf_runner(hm, imgs, tgts, ens)
    ours = ours_runner(model, imgs, tgts, ens, shared=not args.no_shared)
    tc, _ = timed(ours)  # compile + first run
    if k == 1:
      timed(hf)
    th, to = [], []
    ref = out = None
    for _ in range(args.reps):
      dt, ref = timed(hf)
      th.append(dt)
      dt, out = timed(ours)
      to.append(dt)
    err = float(np.abs(out - ref[: len(out)]).max())  # entry 0 (ours: the core's output)
    mh, mo = statistics.median(th), statistics.median(to)
    fh = model_flops(cfg, k, reference=True)
    fo = model_flops(cfg, k, reference=False, shared=not args.no_shared)
    rows.append((k, mh, mo, mh / mo, fh / 1e9, fh / mh / 1e9, fo / 1e9, fo / mo / 1e9, err))
    print(
      f"# k={k}: transformers {[round(x, 2) for x in th]} s, ours {[round(x, 2) for x in to]}"
      f" s (first call incl. compile {tc:.1f} s), max|diff| {err:.2e}",
      flush=True,
    )
    if args.full and k == 1:
      full = ours_runner(model, imgs, tgts, False, query_only=False)
      timed(full)
      tf = statistics.median(timed(full)[0] for _ in range(args.reps))
      ff = model_flops(cfg, 1, reference=True) if cfg.depth == max(cfg.feature_layers) + 1 else None
      print(
        f"# k=1 ours full canvas (query_only=False): {tf:.2f} s"
        + (f", {ff / tf / 1e9:.1f} GFLOP/s" if ff else ""),
        flush=True,
      )

  print()
  print(
    f"{'k':>2} | {'transformers s':>14} | {'ours s':>7} | {'speed-up':>8} | "
    f"{'HF GFLOP':>8} | {'HF GFLOP/s':>10} | {'our GFLOP':>9} | {'our GFLOP/s':>11} | "
    f"{'max|diff|':>9}"
  )
  print("-" * 104)
  for k, mh, mo, r, gh_, rh, go, ro, err in rows:
    print(
      f"{k:>2} | {mh:>14.2f} | {mo:>7.2f} | {r:>7.2f}x | {gh_:>8.0f} | {rh:>10.1f} | "
      f"{go:>9.0f} | {ro:>11.1f} | {err:>9.2e}"
    )
  base_h, base_o = rows[0][1] / rows[0][0], rows[0][2] / rows[0][0]
  print()
  print(
    "cost per prompt relative to the first row: "
    + ", ".join(
      f"k={k}: transformers {mh / k / base_h:.2f}, ours {mo / k / base_o:.2f}"
      for k, mh, mo, *_ in rows
    )
  )
  return rows


if __name__ == "__main__":
  with benchenv.bracket("bench_inference"):
    rc = main()
  sys.exit(0 if rc else 1)
