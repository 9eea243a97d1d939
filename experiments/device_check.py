"""One accelerator check: inference latency vs transformers, output parity, training MFU/memory.

Writes one JSON with
  inference  L/16 latency (median of --reps after a warm-up) at k = 1 and 8 prompts in
             float32 and bfloat16, ours (`attention="auto"`, and every other usable
             implementation at bf16 k=8) beside transformers' SegGptForImageSegmentation on the
             same device in the same run (same random weights, float32 and bfloat16);
             transformers' SegGPT has its own eager attention (no SDPA path), recorded as such
  parity     max|ours on the device - ours on the CPU| (float32, k=1), and
             max|ours - transformers| on the device (float32, k = 1 and 8)
  train      L/16 bf16 train step (AdamW, drop path) with and without remat at several
             batch sizes: compiled memory (memory_analysis), step time, examples/s, MFU
             against the chip's dense bf16 peak (incontext/train/flops.py)
Sections stop early when --budget_s is spent (recorded as skipped), so the whole run fits the
time a device is lent; out-of-memory and other failures are recorded, not raised.

  python -m experiments.device_check --out /tmp/device_check.json       # one H200: < 8 min
  python -m experiments.device_check --tiny --out /tmp/dc.json          # CPU smoke (seconds)
"""

import argparse
import functools
import json
import os
import statistics
import time

import jax
import ml_collections
import numpy as np
from flax import nnx

from experiments import benchenv
from experiments import bench_inference
from incontext import outputs
from incontext.models import seggpt
from incontext.train import flops, optim, steps

TINY = dict(image_size=(32, 32), patch=8)  # the "test" variant on 64x32 canvases


def model_cfg(args, **kw) -> seggpt.SegGPTConfig:
  if args.tiny:
    return seggpt.get_config("test", **TINY, **kw)
  return seggpt.get_config("L/16", **kw)


def _median_time(fn, reps: int) -> tuple[float, object]:
  out = fn()  # warm-up (compile)
  ts = []
  for _ in range(reps):
    t = time.perf_counter()
    out = fn()
    ts.append(time.perf_counter() - t)
  return statistics.median(ts), out


def _ours(model, imgs, tgts, device):
  """The core's forward (`bench_inference.core_runner`) on `device` -> () -> numpy."""
  return bench_inference.core_runner(model, imgs, tgts, device)


def _hf(hm, imgs, tgts, tdev, tdtype):
  import torch

  h = imgs.shape[1] // 2
  t = lambda a: torch.from_numpy(np.ascontiguousarray(a.transpose(0, 3, 1, 2))).to(tdev, tdtype)
  args = dict(
    pixel_values=t(imgs[:, h:]),
    prompt_pixel_values=t(imgs[:, :h]),
    prompt_masks=t(tgts[:, :h]),
    feature_ensemble=imgs.shape[0] > 1,
    embedding_type="instance",
  )

  def run():
    with torch.no_grad():
      out = hm(**args).pred_masks
    if tdev != "cpu":
      torch.cuda.synchronize()
    return out.float().cpu().numpy().transpose(0, 2, 3, 1)[:, h:]

  return run


def _with_dtype(model, dtype: str, attention: str = "auto"):
  """The same weights under another compute dtype / attention setting."""
  import dataclasses

  cfg = dataclasses.replace(model.cfg, dtype=dtype, attention=attention).validate()
  gd, _ = nnx.split(seggpt.abstract(cfg))
  return nnx.merge(gd, nnx.state(model))


class Budget:
  def __init__(self, seconds: float):
    self.end = time.perf_counter() + seconds

  def left(self) -> float:
    return self.end - time.perf_counter()


def error_line(e: Exception) -> str:
  """An exception as one short line for a result row: its type and first line (300 chars)."""
  return f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"


def inference(args, budget: Budget) -> tuple[dict, dict]:
  import torch

  dev = jax.devices()[0]
  cpu = jax.devices("cpu")[0]
  tdev = "cuda" if torch.cuda.is_available() and not args.tiny else "cpu"
  cfg = model_cfg(args, ensemble="hf")
  hm, model = bench_inference.build(cfg, args.seed)
  hm = hm.to(tdev)
  rows, parity = [], {}
  ks = [int(s) for s in args.ks.split(",")]
  for dtype in ("float32", "bfloat16"):
    ours_model = _with_dtype(model, dtype)
    hm_d = hm.to(dtype=getattr(torch, dtype))
    for k in ks:
      if budget.left() < 0:
        rows.append(dict(dtype=dtype, k=k, skipped="time budget"))
        continue
      imgs, tgts = bench_inference.inputs(cfg, k, args.seed)
      row = dict(dtype=dtype, k=k, transformers_attention="eager (no SDPA path in SegGPT)")
      try:
        t0 = time.perf_counter()
        ours = _ours(ours_model, imgs, tgts, dev)
        ours()
        row["ours_first_call_s"] = time.perf_counter() - t0
        row["ours_s"], out = _median_time(ours, args.reps)
        row["ours_attention"] = seggpt.attention_impl(
          "auto",
          dtype,
          (cfg.grid[0] // 2 + 1) * cfg.grid[1],
          cfg.num_tokens,
          cfg.width // cfg.num_heads,
        )
        row["transformers_s"], ref = _median_time(
          _hf(hm_d, imgs, tgts, tdev, getattr(torch, dtype)), args.reps
        )
        row["speedup"] = row["transformers_s"] / row["ours_s"]
        row["max_abs_diff_vs_transformers"] = float(np.abs(out - ref[: len(out)]).max())
        if k == 1 and dtype == "float32":  # the same program on the CPU: the backend's error
          cpu_out = _ours(ours_model, imgs, tgts, cpu)()
          parity[f"{dtype}_k1_device_vs_cpu_max_abs"] = float(np.abs(out - cpu_out).max())
        if dtype == "bfloat16" and k == max(ks):
          for impl in ("chunked", "fused", "cudnn"):
            if impl == row["ours_attention"] or budget.left() < 0:
              continue
            try:
              alt = _ours(_with_dtype(model, dtype, impl), imgs, tgts, dev)
              row[f"ours_{impl}_s"], alt_out = _median_time(alt, args.reps)
              row[f"ours_{impl}_max_abs_diff_vs_auto"] = float(np.abs(alt_out - out).max())
            except Exception as e:  # noqa: BLE001 -- e.g. cuDNN missing: record it
              row[f"ours_{impl}_error"] = error_line(e)
      except Exception as e:  # noqa: BLE001 -- e.g. out of memory: record and go on
        row["error"] = error_line(e)
      rows.append(row)
      print(json.dumps(row), flush=True)
  hm.to("cpu")
  del hm
  if tdev == "cuda":
    torch.cuda.empty_cache()
  return {"rows": rows, "torch_device": tdev, "torch": torch.__version__}, parity


def train(args, budget: Budget) -> list[dict]:
  o = ml_collections.ConfigDict(
    dict(lr=1e-4, warmup_steps=10, total_steps=1000, wd=0.05, clip=3.0, layer_decay=0.8)
  )
  peak = flops.peak_flops(jax.devices()[0].device_kind)
  rows = []
  for b in [int(s) for s in args.batches.split(",")]:
    for remat in (True, False):
      row = dict(dtype="bfloat16", remat=remat, batch=b)
      rows.append(row)
      if budget.left() < 0:
        row["skipped"] = "time budget"
        continue
      try:
        cfg = model_cfg(args, dtype="bfloat16", remat=remat, drop_path=0.1)
        tx, sched = optim.make_tx(o, depth=cfg.depth)
        gd, params = nnx.split(seggpt.SegGPT(cfg, rngs=nnx.Rngs(0)))
        state = steps.init_state(nnx.to_pure_dict(params), tx, 0)
        h, w = cfg.canvas
        rng = np.random.default_rng(0)
        batch = {
          "image": rng.normal(size=(b, h, w, 3)).astype(np.float32),
          "target": rng.normal(size=(b, h, w, 3)).astype(np.float32),
          "mask": rng.random((b, cfg.num_tokens)) < 0.5,
          "valid": np.ones((b, h, w), np.float32),
          "seg_type": np.zeros((b,), np.int32),
        }
        batch = jax.device_put(batch)
        step = jax.jit(
          functools.partial(steps.train_step, graphdef=gd, tx=tx, schedule=sched, patch=cfg.patch),
          donate_argnums=(0,),
        )
        t = time.perf_counter()
        compiled = step.lower(state, batch).compile()
        row["compile_s"] = time.perf_counter() - t
        ma = compiled.memory_analysis()
        if ma is not None:
          row["memory_gib"] = {
            n: getattr(ma, f"{n}_size_in_bytes") / 2**30
            for n in ("argument", "output", "alias", "temp")
          }
        state, m = compiled(state, batch)
        jax.block_until_ready(m)
        t = time.perf_counter()
        for _ in range(args.steps):
          state, m = compiled(state, batch)
        jax.block_until_ready(m)
        dt = (time.perf_counter() - t) / args.steps
        fl = flops.train_flops(cfg) * b
        row.update(step_s=dt, examples_per_s=b / dt, tflops=fl / dt / 1e12, loss=float(m["loss"]))
        if peak:
          row["mfu"] = fl / dt / peak
        del state, compiled
      except Exception as e:  # noqa: BLE001 -- out of memory at large batches: record it
        row["error"] = error_line(e)
      print(json.dumps(row), flush=True)
  return rows


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--out", required=True, help="JSON file to write")
  ap.add_argument("--tiny", action="store_true", help="tiny model (CPU smoke test)")
  ap.add_argument("--ks", default="1,8", help="prompt counts for the inference latency")
  ap.add_argument("--batches", default="16,32,64", help="train-step batch sizes")
  ap.add_argument("--reps", type=int, default=5)
  ap.add_argument("--steps", type=int, default=5, help="timed train steps per configuration")
  ap.add_argument(
    "--budget_s", type=float, default=420.0, help="start no new measurement after this many seconds"
  )
  ap.add_argument("--seed", type=int, default=0)
  ap.add_argument("--skip", default="", help="comma-separated sections to skip: inference,train")
  args = ap.parse_args(argv)
  out_dir = os.path.dirname(os.path.abspath(args.out))
  if not os.path.isdir(out_dir):
    ap.error(f"--out: folder {out_dir} does not exist")
  dev = jax.devices()[0]
  budget = Budget(args.budget_s)
  t0 = time.perf_counter()
  res = {
    "device": dev.device_kind,
    "backend": jax.default_backend(),
    "num_devices": jax.device_count(),
    "jax": jax.__version__,
    "model": "test (tiny)" if args.tiny else "L/16",
    "peak_bf16_tflops": (flops.peak_flops(dev.device_kind) or 0) / 1e12 or None,
  }
  skip = set(filter(None, args.skip.split(",")))
  if "inference" not in skip:
    res["inference"], res["parity"] = inference(args, budget)
  if "train" not in skip:
    res["train"] = train(args, budget)
  res["wall_s"] = time.perf_counter() - t0
  outputs.write_json(args.out, res, indent=1)  # no half-written output
  print(f"wrote {args.out} ({res['wall_s']:.0f} s)")
  return res


if __name__ == "__main__":
  with benchenv.bracket("device_check"):
    rc = main()
