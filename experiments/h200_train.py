"""Training on one GPU (issue 19): L/16 step MFU by remat and batch, input pipeline, paper run.

One run writes one JSON (rewritten after every section, so a run stopped early keeps what it
measured). Top-level keys:
  device             the name the accelerator reports (jax's device_kind)
  mfu                the best step's model FLOPs per second over the bf16 matmul peak measured in
                     the same run (model FLOPs: XLA's cost analysis of the compiled step without
                     remat, per example; recomputation is not model work)
  examples_per_s     that step's examples per second
  batch_size, remat  that step's batch and remat policy (none | dots | full)
  pipeline_headroom  the input pipeline's examples/s (the `paper` preset's grain pipeline) over
                     examples_per_s: >= 1 means the data keeps up
and: peak_tflops_measured, mfu_nominal (against 989 TFLOP/s), paper_run (loss falling, checkpoint
round trip, CPU resume); rows under "sections", failures under "errors" (recorded, never raised),
sections left out for lack of time under "skipped".

Sections, in order (each given a share of --budget_s, starting no new measurement past it):
  peak      an n x n x n bf16 matrix product on random data (n = 8192): median TFLOP/s
  sweep     the L/16 train step (bf16 compute, float32 master weights and AdamW state, drop path,
            the state donated) for remat none / dots (jax.checkpoint_policies.dots_saveable) /
            full, at doubling batch sizes in an interleaved order (every policy at one batch,
            then the next batch): compiled memory (memory_analysis; a step over the device's
            memory is recorded and not run), XLA cost-analysis FLOPs, step time, examples/s, MFU
  pipeline  the `paper` preset's input (incontext.data.pipeline: pair sampling, augmentation,
            colouring, canvas) over the real subset carried in .device/data (coco128_seg and
            weizmann_horse; the preset's other sets are not carried), its worker count and
            then one worker per core: examples/s after the first batch
  paper     `incontext.train.trainer.run` on the `paper` preset at its real shapes (L/16,
            448x448 halves, bf16, drop path 0.1, the real-data pipeline above with one worker
            per core), init from scratch, no evals, warm-up and cosine compressed to the run:
            the sweep's best remat policy at its largest measured batch up to --paper_batch, for
            as many steps as the time left allows (at least 20, at most --paper_steps); the
            logged losses; the checkpoint of the last step restored and compared bit for bit
            with the params the trainer exported, and the whole state (params, AdamW, step, rng)
            saved and restored again bit for bit; then the loss of one fixed batch from the
            restored params at float32 on the GPU ("highest" matmul precision) and on jax's CPU
            backend from the same checkpoint (the CPU resume), their relative difference
            against --resume_rtol (1e-4: float32 sums in another order, no bf16 anywhere)

The programs of a section compile in parallel threads first; its timings start once they are
all compiled (XLA's GPU autotuning runs kernels on the device and would disturb a timing), or
when 60-70 % of the section's time is spent (`compiles_in_flight_at_timing` says how many were
still compiling).

  bash experiments/device_payload.sh     # once: the data subset into .device/, wheels into .whl/
  python -m experiments.h200_train --out /tmp/h200_train.json          # one H200
  python -m experiments.h200_train --tiny --out /tmp/h200_train.json   # CPU, seconds
"""

import argparse
import functools
import os
import tempfile
import time

# Before jax allocates: training is this process's only GPU user.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
os.environ.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.94")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402

from experiments.configs import seggpt_train  # noqa: E402
from experiments.device_check import Budget, error_line  # noqa: E402
from experiments.h200_inference import (  # noqa: E402
  Report,
  _dig,
  _result,
  _timeit,
  default_data,
  precompile,
  run_sections,
  settle,
  versions,
)
from incontext.models import seggpt  # noqa: E402
from incontext.train import flops, optim, steps  # noqa: E402

# The "test" variant on 32x16 canvases, cut to 5 blocks (compiles faster on a CPU).
TINY = dict(image_size=(16, 16), patch=4, depth=5, merge_index=0, feature_layers=(1, 2, 3, 4))
NOMINAL_PEAK = 989e12  # H100/H200 SXM dense bf16, the datasheet's
REMAT = {"none": False, "dots": "dots", "full": True}
SHARES = dict(peak=0.03, sweep=0.37, pipeline=0.1, paper=0.5)
CARRIED = ("coco128_seg", "weizmann_horse")


def model_cfg(tiny: bool, remat: str, dtype: str = "bfloat16") -> seggpt.SegGPTConfig:
  kw = dict(dtype=dtype, remat=REMAT[remat], drop_path=0.1)
  if tiny:
    return seggpt.get_config("test", **TINY, **kw)
  return seggpt.get_config("L/16", image_size=(448, 448), patch=16, **kw)


def sec_peak(ctx, dl: Budget) -> dict:
  n = ctx["matmul_n"]
  ka, kb = jax.random.split(jax.random.key(0))
  a = jax.random.normal(ka, (n, n), jnp.bfloat16)
  b = jax.random.normal(kb, (n, n), jnp.bfloat16)
  mm = jax.jit(lambda x, y: x @ y)
  _, t, _ = _timeit(lambda: mm(a, b), 10)
  return dict(n=n, s=t, tflop_per_s=2 * n**3 / t / 1e12)


def _optim_cfg(total: int = 1000):
  return ml_collections.ConfigDict(
    dict(lr=1e-4, warmup_steps=10, total_steps=total, wd=0.05, clip=3.0, layer_decay=0.8)
  )


def _random_batch(cfg, b: int, seed: int = 0) -> dict:
  """A batch of random canvases made on the default device (no host-side generation)."""
  h, w = cfg.canvas
  k1, k2, k3 = jax.random.split(jax.random.key(seed), 3)
  return {
    "image": jax.random.normal(k1, (b, h, w, 3), jnp.float32),
    "target": jax.random.normal(k2, (b, h, w, 3), jnp.float32),
    "mask": jax.random.uniform(k3, (b, cfg.num_tokens)) < 0.5,
    "valid": jnp.ones((b, h, w), jnp.float32),
    "seg_type": jnp.zeros((b,), jnp.int32),
  }


def _cost_flops(compiled) -> float | None:
  ca = compiled.cost_analysis()
  if isinstance(ca, (list, tuple)):
    ca = ca[0] if ca else None
  return float(ca["flops"]) if ca and ca.get("flops") else None


def _memory(compiled) -> dict | None:
  ma = compiled.memory_analysis()
  if ma is None:
    return None
  gib = {
    n: getattr(ma, f"{n}_size_in_bytes") / 2**30 for n in ("argument", "output", "alias", "temp")
  }
  gib["peak"] = gib["argument"] + gib["output"] - gib["alias"] + gib["temp"]
  return gib


def _device_limit_gib() -> float | None:
  try:
    st = jax.devices()[0].memory_stats()
  except Exception:  # noqa: BLE001 -- CPU: no memory stats
    st = None
  return st["bytes_limit"] / 2**30 if st and st.get("bytes_limit") else None


def _plan(batches: list[int]) -> list[tuple[str, int]]:
  """Every policy at one batch, then the next batch: the useful rows come first."""
  return [(r, b) for b in batches for r in REMAT]


def _batch_shapes(cfg, b: int) -> dict:
  h, w = cfg.canvas
  f32 = np.float32
  return {
    "image": jax.ShapeDtypeStruct((b, h, w, 3), f32),
    "target": jax.ShapeDtypeStruct((b, h, w, 3), f32),
    "mask": jax.ShapeDtypeStruct((b, cfg.num_tokens), np.bool_),
    "valid": jax.ShapeDtypeStruct((b, h, w), f32),
    "seg_type": jax.ShapeDtypeStruct((b,), np.int32),
  }


def sec_sweep(ctx, dl: Budget) -> dict:
  tiny = ctx["tiny"]
  base = model_cfg(tiny, "none")
  tx, sched = optim.make_tx(_optim_cfg(), depth=base.depth)
  _, params = nnx.split(seggpt.SegGPT(base, rngs=nnx.Rngs(0)))
  params = jax.device_put(nnx.to_pure_dict(params))
  state0 = jax.jit(lambda p: steps.init_state(p, tx, 0))(params)
  del params
  abstract = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), state0)
  limit = _device_limit_gib()
  out = {"device_limit_gib": limit, "rows": [], "model_flops_per_example": None}
  analytic = flops.train_flops(base)
  out["analytic_flops_per_example"] = analytic

  def compile_one(remat, b):
    cfg = model_cfg(tiny, remat)
    gd = nnx.split(seggpt.abstract(cfg))[0]
    step = jax.jit(
      functools.partial(steps.train_step, graphdef=gd, tx=tx, schedule=sched, patch=cfg.patch),
      donate_argnums=(0,),
    )
    t = time.perf_counter()
    compiled = step.lower(abstract, _batch_shapes(cfg, b)).compile()
    return compiled, time.perf_counter() - t, cfg

  plan = _plan(ctx["batches"])
  futs = precompile({rb: functools.partial(compile_one, *rb) for rb in plan})
  out["compiles_in_flight_at_timing"] = settle(futs, dl, keep=0.3)
  no_fit: set[str] = set()
  for remat, b in plan:
    if remat in no_fit:
      futs[(remat, b)].cancel()
      continue
    row = dict(remat=remat, batch=b)
    out["rows"].append(row)
    if dl.left() < 0:
      row["skipped"] = "time budget"
      continue
    try:
      compiled, row["compile_s"], cfg = _result(futs[(remat, b)], dl)
      row["memory_gib"] = mem = _memory(compiled)
      row["xla_flops"] = fl = _cost_flops(compiled)
      if remat == "none" and fl and out["model_flops_per_example"] is None:
        out["model_flops_per_example"] = fl / b
      if limit and mem and mem["peak"] > limit:
        row["fits"] = False
        no_fit.add(remat)
        continue
      batch = _random_batch(cfg, b)
      state = jax.tree.map(jnp.copy, state0)
      state, m = compiled(state, batch)
      jax.block_until_ready(m)
      t = time.perf_counter()
      for _ in range(ctx["steps"]):
        state, m = compiled(state, batch)
      jax.block_until_ready(m)
      dt = (time.perf_counter() - t) / ctx["steps"]
      row.update(fits=True, step_s=dt, examples_per_s=b / dt, loss=float(m["loss"]))
      del state, compiled, batch
    except TimeoutError:
      row["skipped"] = "time budget (still compiling)"
    except Exception as e:  # noqa: BLE001 -- e.g. out of memory at run time: record it
      row["error"] = error_line(e)
      no_fit.add(remat)
    print(row, flush=True)
  for f in futs.values():
    f.cancel()
  # MFU per row: model FLOPs per example (XLA, no remat; the analytic count where XLA's is
  # missing or below it, e.g. custom calls such as cuDNN attention are not counted).
  mfe = out["model_flops_per_example"]
  out["flops_source"] = "xla_cost_analysis"
  if not mfe or mfe < 0.9 * analytic:
    out["flops_source"] = "analytic (incontext.train.flops)"
    mfe = analytic
  peak = ctx.get("peak")
  for row in out["rows"]:
    if row.get("examples_per_s"):
      row["model_tflop_per_s"] = row["examples_per_s"] * mfe / 1e12
      row["mfu_nominal"] = row["examples_per_s"] * mfe / NOMINAL_PEAK
      if peak:
        row["mfu"] = row["examples_per_s"] * mfe / peak
  ran = [r for r in out["rows"] if r.get("examples_per_s")]
  out["best"] = max(ran, key=lambda r: r["examples_per_s"]) if ran else None
  return out


def paper_config(ctx, *, batch: int, remat: str, steps_: int) -> ml_collections.ConfigDict:
  """The `paper` preset on the carried data subset, cut to `steps_` steps at `batch`."""
  from experiments.configs import common

  c = seggpt_train.get_config("paper,runlocal" if ctx["tiny"] else "paper")
  c.data_dir = ctx["data"]
  c = common.resolve_data_dir(c)
  c.input.datasets = [d for d in c.input.datasets if d["name"] in CARRIED]
  # One grain worker per core (the preset's 8 is for a host of its own choosing); none in
  # the CPU smoke test.
  c.input.num_workers = 0 if ctx["tiny"] else (os.cpu_count() or 1)
  if ctx["tiny"]:
    c.model.update({k: TINY[k] for k in ("depth", "merge_index", "feature_layers")})
  c.total_steps = steps_
  c.batch_size = batch
  c.optim.warmup_steps = max(1, steps_ // 10)
  c.log_every = max(1, steps_ // 20)
  c.evals.every = 0
  c.evals.at_end = False
  c.init = dict(kind="scratch", path="")
  c.ckpt.every = 0
  c.ckpt["async"] = False
  model = dict(c.model)
  model["remat"] = REMAT[remat]
  c.model = model
  return c


def sec_pipeline(ctx, dl: Budget) -> dict:
  from incontext.data import pipeline

  c = paper_config(ctx, batch=ctx["pipe_batch"], remat="full", steps_=1)
  out = {"datasets": [d["name"] for d in c.input.datasets], "batch": ctx["pipe_batch"]}
  out["image_size"] = c.input.image_size
  workers = [int(c.input.num_workers)]
  out["rows"] = []
  for nw in workers:
    if dl.left() < 0:
      out["rows"].append(dict(num_workers=nw, skipped="time budget"))
      continue
    cfg = {k: v for k, v in c.input.to_dict().items() if k != "type"}
    cfg["num_workers"] = nw
    t = time.perf_counter()
    it = pipeline.make_train_iterator(cfg, seed=0, batch_size=ctx["pipe_batch"])
    next(it)
    row = dict(num_workers=nw, first_batch_s=time.perf_counter() - t)
    n, t = 0, time.perf_counter()
    while n < ctx["pipe_batches"] and (time.perf_counter() - t) < max(5.0, dl.left() / 2):
      next(it)
      n += 1
    row.update(batches=n, examples_per_s=n * ctx["pipe_batch"] / (time.perf_counter() - t))
    out["rows"].append(row)
    print(row, flush=True)
    del it
  ran = [r for r in out["rows"] if r.get("examples_per_s")]
  out["best"] = max(ran, key=lambda r: r["examples_per_s"]) if ran else None
  return out


def _loss_of(params_tree, batch, cfg, device):
  """The loss of `batch` from `params_tree` on `device` (no drop path: deterministic)."""
  gd = nnx.split(seggpt.abstract(cfg))[0]
  params_tree, batch = jax.device_put((params_tree, batch), device)
  fn = jax.jit(lambda p, b: steps.loss_fn(p, b, None, graphdef=gd, patch=cfg.patch)[0])
  return float(fn(params_tree, batch))


def _equal_trees(a, b) -> bool:
  la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
  return len(la) == len(lb) and all(
    x.shape == y.shape and x.dtype == y.dtype and np.array_equal(np.asarray(x), np.asarray(y))
    for x, y in zip(la, lb)
  )


def sec_paper(ctx, dl: Budget) -> dict:
  import orbax.checkpoint as ocp

  from incontext import checkpoint as ckpt_lib
  from incontext.train import trainer

  # The sweep's best policy at a batch of at most --paper_batch; steps from the time left
  # (the step time of the sweep or the pipeline's rate, whichever is slower; 90 s kept for
  # compiling, the checkpoint and the CPU resume), at least 20, at most --paper_steps.
  rows = _dig(ctx, ("sweep_rows",)) or []
  best = _dig(ctx, ("sweep_best",)) or {}
  remat = best.get("remat", "full")
  fit = [r for r in rows if r.get("remat") == remat and r.get("step_s")]
  fit = [r for r in fit if r["batch"] <= ctx["paper_batch"]] or fit
  row = max(fit, key=lambda r: r["batch"]) if fit else {}
  batch = row.get("batch", ctx["paper_batch"])
  est = [row["step_s"]] if row.get("step_s") else []
  if ctx.get("pipe_rate"):
    est.append(batch / ctx["pipe_rate"])
  n = ctx["paper_steps"]
  if est and not ctx["tiny"]:
    n = int(min(n, max(20, (dl.left() - 90) / max(est))))
  c = paper_config(ctx, batch=batch, remat=remat, steps_=n)
  out = dict(steps=n, batch=batch, remat=remat, image_size=list(c.model.image_size))
  out["estimated_step_s"] = max(est) if est else None
  out["overrides"] = (
    "total_steps, batch_size, warmup 10% of the run, init scratch, no evals, datasets "
    f"{list(CARRIED)} only, one checkpoint at the end"
  )
  with tempfile.TemporaryDirectory() as wd:
    t = time.perf_counter()
    res = trainer.run(c, wd)
    out["run_s"] = time.perf_counter() - t
    hist = [(r["step"], r["train/loss"]) for r in res["history"] if "train/loss" in r]
    out["losses"] = hist
    k = max(1, len(hist) // 4)
    first, last = np.mean([v for _, v in hist[:k]]), np.mean([v for _, v in hist[-k:]])
    out.update(loss_first=float(first), loss_last=float(last), loss_falling=bool(last < first))
    rates = [r["train/examples_per_s"] for r in res["history"] if "train/examples_per_s" in r]
    if rates:
      out["examples_per_s"] = float(np.median(rates))
    # The checkpoint of the last step, restored on the GPU: its params equal the exported ones.
    cfg = trainer.model_config(c)
    ocfg = c.optim.copy_and_resolve_references()
    with ocfg.unlocked():
      ocfg.total_steps = n
    tx, _ = optim.make_tx(ocfg, depth=cfg.depth)
    abs_params = nnx.to_pure_dict(nnx.split(seggpt.abstract(cfg))[1])
    abs_state = jax.eval_shape(lambda p: steps.init_state(p, tx, c.seed), abs_params)
    ck = os.path.join(wd, "checkpoints", str(n), "state")
    with ocp.StandardCheckpointer() as cp:
      state = cp.restore(ck, abs_state)
    exported = ckpt_lib.load_model(os.path.join(wd, "params"))
    out["checkpoint_params_equal_exported"] = _equal_trees(
      state["params"], nnx.to_pure_dict(nnx.state(exported, nnx.Param))
    )
    out["checkpoint_step"] = int(state["step"])
    with ocp.StandardCheckpointer() as cp:  # the whole state (params, AdamW, step, rng) again
      cp.save(os.path.join(wd, "again"), state)
      cp.wait_until_finished()
      again = cp.restore(os.path.join(wd, "again"), abs_state)
    out["state_round_trip_bit_exact"] = _equal_trees(state, again)
    del again
    # The next loss from the restored params: GPU (float32, "highest") vs CPU backend.
    if dl.left() > 0 or ctx["tiny"]:
      b = _random_batch(cfg, ctx["resume_batch"], seed=1)
      f32 = dict(dtype="float32", drop_path=0.0, remat=False)
      import dataclasses

      cfg_dev = dataclasses.replace(cfg, **f32).validate()
      with jax.default_matmul_precision("highest"):
        out["next_loss_device_f32"] = _loss_of(state["params"], b, cfg_dev, jax.devices()[0])
      cpu = jax.devices("cpu")[0]
      cpu_sh = jax.sharding.SingleDeviceSharding(cpu)
      abs_cpu = jax.tree.map(
        lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=cpu_sh), abs_state
      )
      with ocp.StandardCheckpointer() as cp:
        state_cpu = cp.restore(ck, abs_cpu)
      cfg_cpu = dataclasses.replace(cfg_dev, attention="chunked").validate()
      t = time.perf_counter()
      out["next_loss_cpu_f32"] = _loss_of(state_cpu["params"], b, cfg_cpu, cpu)
      out["cpu_resume_s"] = time.perf_counter() - t
      d = abs(out["next_loss_cpu_f32"] - out["next_loss_device_f32"])
      out["next_loss_rel_diff"] = d / max(abs(out["next_loss_cpu_f32"]), 1e-12)
      out["resume_rtol"] = ctx["resume_rtol"]
      out["cpu_resume_ok"] = out["next_loss_rel_diff"] <= ctx["resume_rtol"]
  return out


SECTIONS = dict(peak=sec_peak, sweep=sec_sweep, pipeline=sec_pipeline, paper=sec_paper)


def _summary(res: dict) -> None:
  s = res["sections"]
  g = lambda *ks: _dig(s, ks)
  best = g("sweep", "best") or {}
  res["peak_tflops_measured"] = g("peak", "tflop_per_s")
  res["mfu"] = best.get("mfu")
  res["mfu_nominal"] = best.get("mfu_nominal")
  res["examples_per_s"] = best.get("examples_per_s")
  res["batch_size"] = best.get("batch")
  res["remat"] = best.get("remat")
  res["step_s"] = best.get("step_s")
  res["peak_memory_gib"] = _dig(best, ("memory_gib", "peak"))
  pipe = g("pipeline", "best", "examples_per_s")
  res["pipeline_examples_per_s"] = pipe
  res["pipeline_headroom"] = (
    pipe / res["examples_per_s"] if pipe and res["examples_per_s"] else None
  )
  p = g("paper") or {}
  res["paper_run"] = {
    k: p.get(k)
    for k in (
      "steps",
      "batch",
      "remat",
      "loss_first",
      "loss_last",
      "loss_falling",
      "checkpoint_params_equal_exported",
      "state_round_trip_bit_exact",
      "next_loss_device_f32",
      "next_loss_cpu_f32",
      "next_loss_rel_diff",
      "cpu_resume_ok",
    )
  }


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--out", required=True, help="JSON file to write")
  ap.add_argument("--tiny", action="store_true", help="the tiny test model (CPU smoke test)")
  ap.add_argument("--budget_s", type=float, default=240.0, help="seconds for all measurements")
  ap.add_argument("--batches", default="16,32,64,128", help="sweep batch sizes")
  ap.add_argument("--steps", type=int, default=5, help="timed steps per sweep row")
  ap.add_argument("--paper_steps", type=int, default=150, help="at most (fewer if time is short)")
  ap.add_argument("--paper_batch", type=int, default=16, help="the paper run's largest batch")
  ap.add_argument("--resume_rtol", type=float, default=1e-4, help="GPU vs CPU next-loss tolerance")
  ap.add_argument("--data", default=None, help="folder with coco128_seg and weizmann_horse")
  ap.add_argument("--skip", default="", help=f"comma-separated sections: {','.join(SECTIONS)}")
  args = ap.parse_args(argv)
  out_dir = os.path.dirname(os.path.abspath(args.out))
  if not os.path.isdir(out_dir):
    ap.error(f"--out: folder {out_dir} does not exist")
  skip = set(filter(None, args.skip.split(",")))
  if skip - set(SECTIONS):
    ap.error(f"--skip: unknown sections {sorted(skip - set(SECTIONS))}; known: {list(SECTIONS)}")
  try:
    batches = [int(b) for b in args.batches.split(",")]
  except ValueError:
    ap.error(f"--batches: expected comma-separated integers, got {args.batches!r}")
  if args.budget_s <= 0 or args.steps < 1 or args.paper_steps < 2 or min(batches) < 1:
    ap.error("--budget_s must be > 0, --steps >= 1, --paper_steps >= 2, batches >= 1")
  data = args.data or default_data()
  dev = jax.devices()[0]
  res = {
    "device": dev.device_kind,
    "backend": jax.default_backend(),
    "jax": jax.__version__,
    "versions": versions(),
    "model": "test (tiny)" if args.tiny else "L/16",
    "compute_dtype": "bfloat16",
    "master_dtype": "float32",
    "nominal_peak_tflops": NOMINAL_PEAK / 1e12,
    "budget_s": args.budget_s,
    "data": data,
    "cpu_count": os.cpu_count(),
    "sections": {},
    "errors": {},
    "skipped": [],
  }
  rep = Report(os.path.abspath(args.out), res)
  ctx = dict(
    tiny=args.tiny,
    data=data,
    matmul_n=256 if args.tiny else 8192,
    batches=[2] if args.tiny else batches,
    steps=1 if args.tiny else args.steps,
    pipe_batch=4 if args.tiny else 32,
    pipe_batches=3 if args.tiny else 40,
    paper_steps=min(args.paper_steps, 4) if args.tiny else args.paper_steps,
    paper_batch=2 if args.tiny else args.paper_batch,
    resume_batch=1,
    resume_rtol=args.resume_rtol,
  )

  def after(name, budget, dl):
    if name == "peak":
      ctx["peak"] = _dig(res["sections"], ("peak", "tflop_per_s"))
      ctx["peak"] = ctx["peak"] * 1e12 if ctx["peak"] else None
    if name == "sweep":
      ctx["sweep_best"] = _dig(res["sections"], ("sweep", "best"))
      ctx["sweep_rows"] = _dig(res["sections"], ("sweep", "rows"))
    if name == "pipeline":
      ctx["pipe_rate"] = _dig(res["sections"], ("pipeline", "best", "examples_per_s"))

  run_sections(SECTIONS, SHARES, ctx, res, rep, args.budget_s, skip, _summary, after)
  print({k: v for k, v in res.items() if k != "sections"}, flush=True)
  return res


if __name__ == "__main__":
  main()
