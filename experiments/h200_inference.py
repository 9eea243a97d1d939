"""Inference on one GPU (issue 18): speed, transformers in the same run, GPU vs CPU, `label`, eval.

One run writes one JSON (rewritten after every section, so a run stopped early keeps what it
measured). Top-level keys:
  device                    the name the accelerator reports (jax's device_kind)
  pairs_per_s               ours, L/16 bf16 compute (float32 params), 1 prompt per query, at
                            the best batch size found (prompt-query pairs per second)
  speedup_vs_transformers   pairs_per_s / transformers' best pairs/s (same weights, same device)
  label_images_per_s        the `incontext label` work (decode, forward, PNG masks, COCO file)
                            on a folder of real photos, end to end, after a warm-up
  gpu_cpu_label_agreement   share of label pixels the bf16 GPU run gives like the float32 run
                            of the same program on jax's CPU backend (same photos and prompt)
and: latency_s (one query, one prompt, batch 1), pairs_per_s_k8 (one query with 8 prompts =
8 pairs, feature ensemble), best_batch, attention_impl and attention_share (of the bf16
forward time), gpu_cpu_max_abs_diff_f32, eval_episodes_per_s, label_gpu_busy_share; each
section's rows under "sections", failures under "errors" (recorded, never raised), sections
left out for lack of time under "skipped".

Sections, in order (each given a share of --budget_s, starting no new measurement past it):
  ours          latency; throughput over batch sizes 1, 2, 4, ... (doubling until the rate
                gains under 5 %, memory runs out or the share is spent) for k = 1 and 8, through
                `incontext.predict.jitted()`, the jitted forward `label` and `Segmenter`
                run (each query against the K prompts, the query-half decoder only)
  transformers  SegGptForImageSegmentation with the same random weights (experiments/
                bench_inference.build): float32 (tf32 matmuls allowed, as `torch.backends` lets a
                user), bfloat16, and bfloat16 under torch.compile, each at its best batch (k=1);
                and one query with 8 prompts (its feature ensemble) in bf16
  attention     which implementation "auto" picks (cuDNN fused attention through
                jax.nn.dot_product_attention, or XLA's), the others timed beside it, and the
                forward with the attention replaced by a pass-through: share = 1 - t_without/t
  parity        the same float32 program on the GPU (default and "highest" matmul precision)
                and on jax's CPU backend: max |difference| of the raw output; the bf16 GPU labels
                vs the float32 CPU labels: share of pixels that agree
  label         `labelling.Labeller` (what `incontext label` runs) on >= 200 real photos with a
                horse prompt, PNG masks and the COCO file written; GPU busy share from
                `nvidia-smi` sampled during the run (else the forward time over the wall time)
  eval          the FSS-1000 preset of experiments/configs/seggpt_eval.py (1-shot, 4-shot feature
                and spatial) on a fixture in FSS-1000's layout made of Weizmann horse photos and
                masks: episodes/s after a one-episode warm-up

The programs of a section compile in parallel threads first; its timings start once they are
all compiled (XLA's GPU autotuning runs kernels on the device and would disturb a timing), or
when 60-70 % of the section's time is spent (`compiles_in_flight_at_timing` says how many were
still compiling).

Weights are random (the cost does not depend on them); the labels' agreement is of the model's
raw colours, which random weights make noisier than trained ones would.

  bash experiments/device_payload.sh        # once: photos into .device/, wheels into .whl/
  python -m experiments.h200_inference --out /tmp/h200_inference.json          # one H200
  python -m experiments.h200_inference --tiny --out /tmp/h200_inference.json   # CPU, seconds
"""

import argparse
import dataclasses
import functools
import glob
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import threading
import time

# Before jax allocates: leave GPU memory to torch (transformers runs in the same process).
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
os.environ.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.6")

import jax  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402

from experiments import bench_inference  # noqa: E402
from experiments.configs import common  # noqa: E402
from experiments.device_check import Budget, error_line  # noqa: E402
from incontext import canvas, imageio, inference, labelling, outputs, predict  # noqa: E402
from incontext.models import seggpt  # noqa: E402
from incontext.train import flops  # noqa: E402

TINY = dict(image_size=(16, 16), patch=8)  # the "test" variant on 32x16 canvases
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARES = dict(ours=0.22, transformers=0.33, attention=0.1, parity=0.1, label=0.13, eval=0.12)


def versions() -> dict:
  """Installed versions of the packages these runs depend on (None: not installed)."""
  from importlib import metadata

  out = {}
  for n in (
    "jax",
    "jaxlib",
    "flax",
    "optax",
    "orbax-checkpoint",
    "torch",
    "transformers",
    "grain",
    "pycocotools",
    "ml-collections",
  ):
    try:
      out[n] = metadata.version(n)
    except metadata.PackageNotFoundError:
      out[n] = None
  return out


def default_data() -> str:
  """.device/data (experiments/device_payload.sh) when present, else the shared data folder."""
  d = os.path.join(ROOT, ".device", "data")
  return d if os.path.isdir(d) else common.data_dir()


class Report:
  """The result dict, written atomically to `path` after every section."""

  def __init__(self, path: str, res: dict):
    self.path, self.res, self.t0 = path, res, time.perf_counter()

  def save(self):
    self.res["wall_s"] = time.perf_counter() - self.t0
    outputs.write_json(self.path, self.res, indent=1, default=float)


def _with(model, **kw):
  """The same weights under other runtime settings (dtype, attention, ensemble)."""
  cfg = dataclasses.replace(model.cfg, **kw).validate()
  gd, _ = nnx.split(seggpt.abstract(cfg))
  return nnx.merge(gd, nnx.state(model))


def _timeit(fn, reps: int) -> tuple[float, float, object]:
  """(first call s, median of reps s, last output); fn returns something to block on."""
  t = time.perf_counter()
  out = jax.block_until_ready(fn())
  first = time.perf_counter() - t
  ts = []
  for _ in range(reps):
    t = time.perf_counter()
    out = jax.block_until_ready(fn())
    ts.append(time.perf_counter() - t)
  return first, statistics.median(ts), out


class Fwd:
  """The jitted forward `label` and `Segmenter` run (`predict.jitted()`: each query
  against the same k prompts, random here), compiled ahead of time for any batch size."""

  def __init__(self, model, k: int, *, jit=None, seed: int = 0):
    h, w = model.cfg.image_size
    rng = np.random.default_rng(seed)
    pi = rng.normal(size=(k, h, w, 3)).astype(np.float32)
    pt = rng.normal(size=(k, h, w, 3)).astype(np.float32)
    self.gd, state = nnx.split(model)
    self.state, self.pi, self.pt = jax.device_put((state, pi, pt))
    self.k, self.hw, self.seed = k, (h, w), seed
    self.jit = jit or predict.jitted()
    self.st = np.int32(canvas.INSTANCE)

  def lower(self, b: int):
    q = jax.ShapeDtypeStruct((b, *self.hw, 3), np.float32)
    return self.jit.lower(
      self.gd, self.state, self.pi, self.pt, q, self.st, feature_ensemble=self.k > 1
    )

  def compile(self, b: int):
    return self.lower(b).compile()

  def runner(self, b: int, compiled=None):
    """() -> [b, h, w, 3] on b random queries (compiled now unless given)."""
    compiled = compiled or self.compile(b)
    rng = np.random.default_rng(self.seed + 1)
    q = jax.device_put(rng.normal(size=(b, *self.hw, 3)).astype(np.float32))
    return lambda: compiled(self.state, self.pi, self.pt, q, self.st)


def precompile(jobs: dict) -> dict:
  """{key: () -> compiled} -> {key: Future}. The compiles run in parallel threads (XLA
  releases the GIL), so a search over batch sizes waits for one compile, not for each in turn;
  an unfinished one is left to run when its result is no longer wanted."""
  import concurrent.futures

  workers = max(1, min(8, (os.cpu_count() or 2) // 2))
  pool = concurrent.futures.ThreadPoolExecutor(max_workers=workers)
  futs = {k: pool.submit(fn) for k, fn in jobs.items()}
  pool.shutdown(wait=False)
  return futs


def settle(futs: dict, dl: "Budget", keep: float) -> int:
  """Waits for the compiles to end before anything is timed (XLA's GPU autotuning runs kernels
  on the device, which would disturb a timing), leaving `keep` of the deadline's time; returns
  how many are still compiling (recorded beside the timings)."""
  import concurrent.futures

  concurrent.futures.wait(list(futs.values()), timeout=max(0.0, dl.left() * (1 - keep)))
  return sum(not f.done() for f in futs.values())


def _result(fut, dl: "Budget"):
  """The future's result, waiting at most until the deadline (TimeoutError past it)."""
  return fut.result(timeout=max(0.1, dl.left()))


def doubling(start: int, limit: int) -> list[int]:
  out = [start]
  while out[-1] * 2 <= limit:
    out.append(out[-1] * 2)
  return out


def search_batch(
  run_at, deadline: Budget, *, sizes: list[int], min_gain: float = 1.05
) -> tuple[dict | None, list]:
  """Tries the batch sizes in order while the rate gains >= min_gain and time is left.

  run_at(b) -> row with 'per_s' (or raises: out of memory ends the search). Returns (best row,
  all rows)."""
  rows, best = [], None
  for b in sizes:
    if deadline.left() < 0:
      rows.append(dict(batch=b, skipped="time budget"))
      break
    try:
      row = dict(batch=b, **run_at(b))
    except Exception as e:  # noqa: BLE001 -- e.g. out of memory: the search ends here
      rows.append(dict(batch=b, error=error_line(e)))
      break
    rows.append(row)
    print(json.dumps(row), flush=True)
    if best is not None and row["per_s"] < min_gain * best["per_s"]:
      best = row if row["per_s"] > best["per_s"] else best
      break
    best = row if best is None or row["per_s"] > best["per_s"] else best
  return best, rows


# -- sections ---------------------------------------------------------------------------------
def sec_ours(ctx, dl: Budget) -> dict:
  model, cfg, reps = ctx["model16"], ctx["cfg"], ctx["reps"]
  fwd = {("bfloat16", 1): Fwd(model, 1), ("float32", 1): Fwd(ctx["model32"], 1)}
  fwd[("bfloat16", 8)] = Fwd(model, 8)
  sizes = {1: ctx["k1_batches"], 8: ctx["k8_batches"]}
  jobs = {
    ("latency", dt): functools.partial(fwd[(dt, 1)].compile, 1) for dt in ("bfloat16", "float32")
  }
  for k in (1, 8):
    jobs.update({(k, b): functools.partial(fwd[("bfloat16", k)].compile, b) for b in sizes[k]})
  futs = precompile(jobs)
  out = {"compiles_in_flight_at_timing": settle(futs, dl, keep=0.4)}
  for dtype in ("bfloat16", "float32"):
    try:
      c = _result(futs[("latency", dtype)], dl)
      first, t1, _ = _timeit(fwd[(dtype, 1)].runner(1, c), reps)
      out[f"latency_{dtype}"] = dict(first_call_s=first, s=t1)
    except Exception as e:  # noqa: BLE001 -- recorded; the throughput rows still run
      out[f"latency_{dtype}"] = dict(error=error_line(e))
  peak = flops.peak_flops(jax.devices()[0].device_kind)
  for k in (1, 8):
    fl = bench_inference.model_flops(cfg, k, reference=False, shared=k > 1)

    def run_at(b, k=k, fl=fl):
      first, t, _ = _timeit(fwd[("bfloat16", k)].runner(b, _result(futs[(k, b)], sub)), reps)
      r = dict(first_call_s=first, s=t, per_s=b / t, pairs_per_s=b * k / t)
      r["tflop_per_s"] = b * fl / t / 1e12
      if peak:
        r["mfu_nominal"] = b * fl / t / peak
      return r

    sub = Budget(dl.left() * (0.6 if k == 1 else 1.0))
    best, rows = search_batch(run_at, sub, sizes=sizes[k])
    out[f"k{k}"] = dict(best=best, rows=rows, tflop_per_query=fl / 1e12)
  for f in futs.values():
    f.cancel()
  return out


def _hf_fn(hm, cfg, k: int, b: int, tdev, tdtype, seed: int = 0):
  """transformers' forward: b independent queries (k = 1), or one query with k prompts."""
  import torch

  h, w = cfg.image_size
  n = b if k == 1 else k
  g = torch.Generator().manual_seed(seed)
  t = lambda: torch.randn(n, 3, h, w, generator=g).to(tdev, tdtype)
  args = dict(
    pixel_values=t(),
    prompt_pixel_values=t(),
    prompt_masks=t(),
    feature_ensemble=k > 1,
    embedding_type="instance",
  )

  def run():
    with torch.no_grad():
      out = hm(**args).pred_masks
    if tdev != "cpu":
      torch.cuda.synchronize()
    return out

  return run


def sec_transformers(ctx, dl: Budget) -> dict:
  import torch

  cfg, reps = ctx["cfg"], ctx["reps"]
  tdev = "cuda" if torch.cuda.is_available() else "cpu"
  hm = ctx["hm"].to(tdev)
  out = {"torch": torch.__version__, "torch_device": tdev, "attention": "eager (no SDPA path)"}
  prev_tf32 = torch.backends.cuda.matmul.allow_tf32
  torch.backends.cuda.matmul.allow_tf32 = True  # the fastest float32 a user can ask for
  torch.backends.cudnn.allow_tf32 = True
  configs = [
    ("float32", False),
    ("bfloat16", False),
    ("bfloat16", True),
  ]
  n = len(configs) + 1
  try:
    for i, (dtype, compiled) in enumerate(configs):
      name = f"{dtype}{'_compile' if compiled else ''}"
      sub = Budget(dl.left() / (n - i))
      hm_d = hm.to(dtype=getattr(torch, dtype))
      sizes = ctx["hf_batches"]
      if compiled:  # one compile, at eager bf16's best batch (a new shape recompiles)
        backend = "inductor" if tdev == "cuda" else "eager"  # CPU tests: no C++ toolchain run
        runner_model = torch.compile(hm_d, backend=backend)
        out[f"{name}_backend"] = backend
        sizes = [_dig(out, ("bfloat16", "best", "batch")) or sizes[0]]
        sub = Budget(max(sub.left(), ctx["hf_compile_min_s"]))
      else:
        runner_model = hm_d

      def run_at(b, m=runner_model, dtype=dtype):
        fn = _hf_fn(m, cfg, 1, b, tdev, getattr(torch, dtype))
        first, t, _ = _timeit(fn, reps)
        return dict(first_call_s=first, s=t, per_s=b / t, pairs_per_s=b / t)

      best, rows = search_batch(run_at, sub, sizes=sizes)
      out[name] = dict(best=best, rows=rows)
      if tdev == "cuda":
        torch.cuda.empty_cache()
    if dl.left() > 0:  # one query, 8 prompts (the feature ensemble), bf16 eager
      fn = _hf_fn(hm.to(dtype=torch.bfloat16), cfg, 8, 1, tdev, torch.bfloat16)
      first, t, _ = _timeit(fn, reps)
      out["bfloat16_k8"] = dict(first_call_s=first, s=t, per_s=1 / t, pairs_per_s=8 / t)
  finally:
    torch.backends.cuda.matmul.allow_tf32 = prev_tf32
    hm.to("cpu")
    if tdev == "cuda":
      torch.cuda.empty_cache()
  return out


def _no_attention(q, k, v, rel_h, rel_w):
  """A pass-through in the attention's place: q, with k and v still read (kept alive)."""
  return q + 0 * (k.sum() + v.sum()).astype(q.dtype)


def sec_attention(ctx, dl: Budget) -> dict:
  cfg, reps, b = ctx["cfg"], ctx["reps"], ctx["best_batch"]
  hd = cfg.width // cfg.num_heads
  setting = ctx["model16"].cfg.attention  # "auto", or "fused" after a failed "auto"
  auto = seggpt.attention_impl(setting, "bfloat16", cfg.num_tokens, cfg.num_tokens, hd)
  out = {"auto": auto, "setting": setting, "batch": b}
  fwd = {"auto": Fwd(ctx["model16"], 1)}
  for impl in ("fused", "cudnn", "chunked"):
    if impl != auto:
      try:
        fwd[impl] = Fwd(_with(ctx["model16"], attention=impl), 1)
      except Exception as e:  # noqa: BLE001 -- e.g. a setting this dtype does not allow
        out[f"{impl}_error"] = error_line(e)
  # Without attention: a fresh jit traced (lowered) while the attention is a pass-through.
  fwd["none"] = Fwd(
    ctx["model16"],
    1,
    jit=predict.jitted(fresh=True),
  )
  saved = dict(seggpt.ATTEND_IMPLS)
  try:
    seggpt.ATTEND_IMPLS.update({k: _no_attention for k in saved})
    lowered_none = fwd["none"].lower(b)
  finally:
    seggpt.ATTEND_IMPLS.update(saved)
  jobs = {k: functools.partial(f.compile, b) for k, f in fwd.items() if k != "none"}
  jobs["none"] = lowered_none.compile
  futs = precompile(jobs)
  out["compiles_in_flight_at_timing"] = settle(futs, dl, keep=0.3)
  _, t_auto, y = _timeit(fwd["auto"].runner(b, _result(futs["auto"], dl)), reps)
  out["auto_s"] = t_auto
  y = np.asarray(y, np.float32)
  _, t_none, _ = _timeit(fwd["none"].runner(b, _result(futs["none"], dl)), reps)
  out["without_attention_s"] = t_none
  out["share"] = max(0.0, 1 - t_none / t_auto)
  for impl in ("fused", "cudnn", "chunked"):
    if impl not in futs:
      continue
    try:
      _, t, yi = _timeit(fwd[impl].runner(b, _result(futs[impl], dl)), reps)
      out[f"{impl}_s"] = t
      out[f"{impl}_max_abs_diff_vs_auto"] = float(np.abs(np.asarray(yi, np.float32) - y).max())
    except Exception as e:  # noqa: BLE001 -- e.g. no cuDNN, or past the deadline: record it
      out[f"{impl}_error"] = error_line(e)
  return out


def _prompt(data: str) -> tuple[str, str]:
  d = os.path.join(data, "weizmann_horse")
  return os.path.join(d, "images", "horse001.jpg"), os.path.join(d, "masks", "horse001.png")


def photos(data: str, n: int) -> list[str]:
  """n real photos: COCO (coco128_seg) first, then Weizmann horses (not the prompt's)."""
  coco = sorted(glob.glob(os.path.join(data, "coco128_seg", "images", "*", "*.jpg")))
  horses = sorted(glob.glob(os.path.join(data, "weizmann_horse", "images", "*.jpg")))[1:]
  got = (coco + horses)[:n]
  if len(got) < n:
    raise FileNotFoundError(f"{data}: {len(got)} photos in coco128_seg + weizmann_horse, need {n}")
  return got


def _labels_on(model, device, prompt, paths):
  """The label maps `label` would write for `paths`, computed on `device`."""
  seg = inference.Segmenter(model, seg_type="instance")
  pi, pt, palette, ids, _ = seg.encode_prompts([prompt])
  size = tuple(model.cfg.image_size)
  imgs = [imageio.load_image(p) for p in paths]
  q = np.stack([predict.prepare_image(im, size) for im in imgs])
  raw = np.asarray(_forward_fn_arrays(model, pi, pt, q, device)(), np.float32)
  labs = [predict.decode_labels(r, im.shape[:2], palette, ids) for r, im in zip(raw, imgs)]
  return raw, labs


def _forward_fn_arrays(model, pi, pt, q, device):
  gd, state = nnx.split(model)
  state, pi, pt, q = jax.device_put((state, pi, pt, q), device)
  st = np.int32(canvas.INSTANCE)
  return lambda: predict.jitted()(gd, state, pi, pt, q, st, feature_ensemble=False)


def sec_parity(ctx, dl: Budget) -> dict:
  cpu, dev = jax.devices("cpu")[0], jax.devices()[0]
  prompt, paths = _prompt(ctx["data"]), photos(ctx["data"], 2)
  # CPU: explicit attention ("auto" resolves by the default backend, the GPU's, when traced).
  ref_model = _with(ctx["model32"], attention="chunked")
  raw_cpu, lab_cpu = _labels_on(ref_model, cpu, prompt, paths)
  out = {"batch": len(paths), "cpu_attention": "chunked"}
  raw32, _ = _labels_on(ctx["model32"], dev, prompt, paths)
  out["f32_max_abs_diff"] = float(np.abs(raw32 - raw_cpu).max())
  with jax.default_matmul_precision("highest"):
    raw_hi, _ = _labels_on(_with(ctx["model32"], attention="fused"), dev, prompt, paths)
  out["f32_highest_max_abs_diff"] = float(np.abs(raw_hi - raw_cpu).max())
  raw16, lab16 = _labels_on(ctx["model16"], dev, prompt, paths)
  out["bf16_max_abs_diff"] = float(np.abs(raw16 - raw_cpu).max())
  agree = sum(int((a == b).sum()) for a, b in zip(lab16, lab_cpu))
  out["bf16_label_agreement"] = agree / sum(a.size for a in lab_cpu)
  out["foreground_share_cpu"] = float(np.mean([(a > 0).mean() for a in lab_cpu]))
  return out


class GpuSampler:
  """Mean `nvidia-smi` utilization.gpu over the run (None without nvidia-smi)."""

  def __init__(self, period_ms: int = 100):
    self.vals, self.proc = [], None
    if shutil.which("nvidia-smi") and jax.default_backend() == "gpu":
      self.proc = subprocess.Popen(
        [
          "nvidia-smi",
          "--query-gpu=utilization.gpu",
          "--format=csv,noheader,nounits",
          f"--loop-ms={period_ms}",
        ],
        stdout=subprocess.PIPE,
        text=True,
      )
      self.thread = threading.Thread(target=self._read, daemon=True)
      self.thread.start()

  def _read(self):
    for line in self.proc.stdout:
      try:
        self.vals.append(float(line.strip().split(",")[0]))
      except ValueError:
        pass

  def stop(self) -> float | None:
    if self.proc is None:
      return None
    self.proc.terminate()
    self.proc.wait(timeout=10)
    return statistics.mean(self.vals) / 100 if self.vals else None


def sec_label(ctx, dl: Budget) -> dict:
  n, b = ctx["label_images"], ctx["label_batch"]
  paths = photos(ctx["data"], n)
  model = _with(ctx["model16"], ensemble="official")
  seg = inference.Segmenter(model, seg_type="instance")
  lab = labelling.Labeller(seg, [_prompt(ctx["data"])], per_device_batch=b)
  out = {"images": n, "batch_per_device": b, "dtype": "bfloat16", "formats": "png,coco"}
  with tempfile.TemporaryDirectory() as tmp:
    folder = os.path.join(tmp, "photos")
    os.makedirs(folder)
    for p in paths:  # one flat folder, as a user would give `--images`
      os.symlink(os.path.abspath(p), os.path.join(folder, os.path.basename(p)))
    files = imageio.list_images(folder, what="")
    stems = imageio.output_stems(files)
    warm = os.path.join(tmp, "warm")
    os.makedirs(os.path.join(warm, "masks"))
    t = time.perf_counter()
    lab.run(files[:b], stems[:b], warm, write_yolo=False)  # compile
    out["warmup_s"] = time.perf_counter() - t
    res = os.path.join(tmp, "out")
    lf = labelling.LabelFolder(res)  # the output folder as `incontext label` keeps it
    lf.open(labelling.output_names(stems))
    lf.prepare({"bench": "h200_inference"})
    lf.start()
    sampler = GpuSampler()
    t = time.perf_counter()
    summary = lab.run(files, stems, res, write_yolo=False, folder=lf)
    coco = labelling.write_coco(
      res,
      list(zip([os.path.basename(f) for f in files], stems)),
      lab.categories,
      instance=True,
      folder=lf,
    )
    lf.finish()
    wall = time.perf_counter() - t
    busy = sampler.stop()
    if summary.labelled != n or summary.failed:
      raise RuntimeError(f"labelled {summary.labelled} of {n}, failed {summary.failed[:3]}")
    out.update(wall_s=wall, images_per_s=n / wall, annotations=len(coco["annotations"]))
    # The forward alone at the same batch: its share of the wall time (busy estimate).
    qs = np.stack(
      [predict.prepare_image(imageio.load_image(p), model.cfg.image_size) for p in files[:b]]
    )
    _, tf, _ = _timeit(lambda: lab.predictor(qs), ctx["reps"])
    out["forward_s_per_batch"] = tf
    out["forward_share"] = min(1.0, tf * -(-n // b) / wall)
    out["gpu_busy_share_nvidia_smi"] = busy
    out["gpu_busy_share"] = busy if busy is not None else out["forward_share"]
  return out


def _fss_fixture(data: str, root: str, classes: int, per_class: int) -> None:
  """FSS-1000's layout (CLASS/N.jpg + N.png, 0/255 masks) from Weizmann horse photos."""
  from PIL import Image

  from experiments.configs import seggpt_eval

  d = os.path.join(data, "weizmann_horse")
  imgs = sorted(glob.glob(os.path.join(d, "images", "*.jpg")))
  need = classes * per_class
  if len(imgs) < need:
    raise FileNotFoundError(f"{d}: {len(imgs)} horse photos, the fixture needs {need}")
  for c, name in enumerate(seggpt_eval.fss1000_test_classes()[:classes]):
    os.makedirs(os.path.join(root, name))
    for j in range(per_class):
      p = imgs[c * per_class + j]
      shutil.copy(p, os.path.join(root, name, f"{j + 1}.jpg"))
      m = np.asarray(Image.open(os.path.join(d, "masks", os.path.basename(p)[:-4] + ".png")))
      Image.fromarray(np.where(m > 0, 255, 0).astype(np.uint8)).save(
        os.path.join(root, name, f"{j + 1}.png")
      )


def sec_eval(ctx, dl: Budget) -> dict:
  """The preset's few-shot protocol (`run.fewshot_benchmark`, as `experiments.evaluate` runs it,
  without hashing the weights or writing results files)."""
  from experiments.configs import seggpt_eval
  from incontext.evaluators import run

  model = _with(ctx["model16"], ensemble="official")
  n = ctx["eval_episodes"]
  out = {"benchmark": "fss1000", "dtype": "bfloat16", "episodes": n}
  with tempfile.TemporaryDirectory() as tmp:
    root = os.path.join(tmp, "fss1000")
    _fss_fixture(ctx["data"], root, 2, 10)
    for name, eps in (("warmup", 1), ("timed", n)):
      c = seggpt_eval.get_config(f"benchmark=fss1000,root={root},episodes={eps}")
      bench = dict(c.fewshot["fss1000"], name="fss1000")
      t = time.perf_counter()
      r = run.fewshot_benchmark(model, bench, seed=0)
      out[f"{name}_s"] = time.perf_counter() - t
    out["methods"] = sorted(k for k in r if not k.startswith("_"))
    out["miou_1shot"] = r["1-shot"]["miou"]
    out["shots"] = r["_info"]["shots"]
  out["episodes_per_s"] = n / out["timed_s"]
  return out


SECTIONS = dict(
  ours=sec_ours,
  transformers=sec_transformers,
  attention=sec_attention,
  parity=sec_parity,
  label=sec_label,
  eval=sec_eval,
)


def _summary(res: dict) -> None:
  """The top-level keys from the sections (None where a section did not run)."""
  s = res["sections"]
  g = lambda *ks: _dig(s, ks)
  res["pairs_per_s"] = g("ours", "k1", "best", "pairs_per_s")
  res["best_batch"] = g("ours", "k1", "best", "batch")
  res["pairs_per_s_k8"] = g("ours", "k8", "best", "pairs_per_s")
  res["latency_s"] = g("ours", "latency_bfloat16", "s")
  hf = [
    g("transformers", c, "best", "pairs_per_s") for c in ("float32", "bfloat16", "bfloat16_compile")
  ]
  hf = [v for v in hf if v]
  res["transformers_pairs_per_s"] = max(hf) if hf else None
  res["speedup_vs_transformers"] = (
    res["pairs_per_s"] / res["transformers_pairs_per_s"]
    if res["pairs_per_s"] and res["transformers_pairs_per_s"]
    else None
  )
  res["attention_impl"] = g("attention", "auto")
  res["attention_share"] = g("attention", "share")
  res["gpu_cpu_max_abs_diff_f32"] = g("parity", "f32_max_abs_diff")
  res["gpu_cpu_label_agreement"] = g("parity", "bf16_label_agreement")
  res["label_images_per_s"] = g("label", "images_per_s")
  res["label_gpu_busy_share"] = g("label", "gpu_busy_share")
  res["eval_episodes_per_s"] = g("eval", "episodes_per_s")


def run_sections(sections, shares, ctx, res, rep, budget_s, skip, summary, after=None):
  """Runs each section `fn(ctx, deadline)` within its share of the budget (a section is skipped
  once the budget is spent); a failure is recorded in res["errors"], never raised. After each
  section: `after(name, budget, deadline)` (hand results on through ctx), the summary, the JSON
  rewritten (so a killed run keeps what it had)."""
  budget = Budget(budget_s)
  for name, fn in sections.items():
    if name in skip:
      continue
    if budget.left() <= 0:
      res["skipped"].append(name)
      continue
    dl = Budget(min(budget.left(), shares[name] * budget_s))
    t = time.perf_counter()
    try:
      res["sections"][name] = fn(ctx, dl)
    except Exception as e:  # noqa: BLE001 -- recorded; the other sections still run
      res["errors"][name] = error_line(e)
    res.setdefault("section_s", {})[name] = time.perf_counter() - t
    if after is not None:
      after(name, budget, dl)
    summary(res)
    rep.save()
    print(f"# {name}: {res['section_s'][name]:.1f} s", flush=True)
  summary(res)
  rep.save()


def _dig(d, ks):
  for k in ks:
    if not isinstance(d, dict) or d.get(k) is None:
      return None
    d = d[k]
  return d


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--out", required=True, help="JSON file to write")
  ap.add_argument("--tiny", action="store_true", help="the tiny test model (CPU smoke test)")
  ap.add_argument("--budget_s", type=float, default=180.0, help="seconds for all measurements")
  ap.add_argument("--reps", type=int, default=5, help="timed calls per measurement (median)")
  ap.add_argument("--data", default=None, help="folder with coco128_seg and weizmann_horse")
  ap.add_argument("--label_images", type=int, default=228, help="photos `label` runs on")
  ap.add_argument("--label_batch", type=int, default=32, help="label's --batch-per-device")
  ap.add_argument("--eval_episodes", type=int, default=60)
  ap.add_argument("--skip", default="", help=f"comma-separated sections: {','.join(SECTIONS)}")
  ap.add_argument("--seed", type=int, default=0)
  args = ap.parse_args(argv)
  out_dir = os.path.dirname(os.path.abspath(args.out))
  if not os.path.isdir(out_dir):
    ap.error(f"--out: folder {out_dir} does not exist")
  skip = set(filter(None, args.skip.split(",")))
  if skip - set(SECTIONS):
    ap.error(f"--skip: unknown sections {sorted(skip - set(SECTIONS))}; known: {list(SECTIONS)}")
  if args.budget_s <= 0 or args.reps < 1:
    ap.error("--budget_s must be > 0 and --reps >= 1")
  data = args.data or default_data()
  dev = jax.devices()[0]
  res = {
    "device": dev.device_kind,
    "backend": jax.default_backend(),
    "jax": jax.__version__,
    "versions": versions(),
    "model": "test (tiny)" if args.tiny else "L/16",
    "params_dtype": "float32",
    "budget_s": args.budget_s,
    "data": data,
    "sections": {},
    "errors": {},
    "skipped": [],
  }
  rep = Report(os.path.abspath(args.out), res)
  cfg = (
    seggpt.get_config("test", **TINY, ensemble="hf")
    if args.tiny
    else seggpt.get_config("L/16", ensemble="hf")
  )
  t = time.perf_counter()
  hm, model32 = bench_inference.build(cfg, args.seed)  # transformers' and ours, same weights
  res["build_s"] = time.perf_counter() - t
  ctx = dict(
    cfg=cfg,
    hm=hm,
    model32=model32,
    model16=_with(model32, dtype="bfloat16"),
    reps=min(args.reps, 2) if args.tiny else args.reps,
    data=data,
    k1_batches=[1, 2] if args.tiny else doubling(8, 512),
    k8_batches=[1] if args.tiny else doubling(1, 32),
    hf_batches=[1, 2] if args.tiny else doubling(4, 128),
    hf_compile_min_s=0 if args.tiny else 30,
    best_batch=1,
    label_images=min(args.label_images, 6) if args.tiny else args.label_images,
    label_batch=min(args.label_batch, 2) if args.tiny else args.label_batch,
    eval_episodes=min(args.eval_episodes, 1) if args.tiny else args.eval_episodes,
  )

  def after(name, budget, dl):
    if name == "ours" and not _dig(res["sections"], ("ours", "k1", "best")):
      # No k = 1 rate with attention "auto" (e.g. the cuDNN kernel failed to compile): once
      # more with XLA's fused attention, so that the other sections have a model that runs.
      rows = _dig(res["sections"], ("ours", "k1", "rows")) or []
      failed = res["errors"].pop("ours", None) or next(
        (r["error"] for r in rows if "error" in r), "no k=1 row ran"
      )
      res["sections"]["ours_auto_attention"] = dict(error=failed, rows=rows)
      try:
        ctx["model16"] = _with(ctx["model16"], attention="fused")
        res["sections"]["ours"] = sec_ours(ctx, Budget(min(budget.left(), dl.left() + 30)))
        res["sections"]["ours"]["attention_setting"] = "fused (auto failed)"
      except Exception as e:  # noqa: BLE001 -- recorded
        res["errors"]["ours"] = error_line(e)
    if name == "ours":
      ctx["best_batch"] = _dig(res["sections"], ("ours", "k1", "best", "batch")) or 1

  run_sections(SECTIONS, SHARES, ctx, res, rep, args.budget_s, skip, _summary, after)
  print(json.dumps({k: v for k, v in res.items() if k != "sections"}, indent=1))
  return res


if __name__ == "__main__":
  main()
