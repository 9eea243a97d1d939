"""The training loop: `run(config, workdir)`.

Reads top to bottom: mesh -> data -> model + optimiser -> shardings -> restore or init
-> jit -> loop (log, eval, checkpoint) -> export.

Where the state comes from, in order:
  1. the latest checkpoint in `workdir/checkpoints` (params, optimiser, step, RNG and the data
     iterator position: re-running the same command resumes exactly);
  2. `config.init`: kind 'params' (an `incontext convert` params dir), 'torch' (an official
     SegGPT or Painter .pth/.safetensors; tensors it lacks, e.g. Painter's type tokens, keep
     their fresh init);
  3. random init (kind 'scratch').

Outputs in `workdir`: config.json, model.json (the model's config, which `--checkpoint WORKDIR`
reads), metrics.jsonl (one JSON object per log/eval step), curve.png, predictions/step_N.png (+
predictions.png, the latest), checkpoints/, and at the end params/ (an `incontext.checkpoint` params
dir of the final model). The workdir plumbing (atomic config dump, metrics repair, falling back from
a corrupt checkpoint, process 0 writes) is `incontext.train.workdir`, shared with the tuner. The
config is read through its typed sections (`incontext.train.sections.TrainConfig`, built once in
`run`), and settings are checked before anything is compiled: unknown keys and wrong types,
non-positive steps, a total below the checkpoint's step and a model that differs from the one the
checkpoints were trained with are one-line errors."""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import time
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx

from incontext import checkpoint as ckpt_lib
from incontext import mesh as mesh_lib
from incontext import sharding
from incontext.evaluators import run as eval_run
from incontext.evaluators import sections as eval_sections
from incontext.models import convert, seggpt
from incontext.train import fewshot, flops, optim, plots, steps
from incontext.train import workdir as wd
from incontext.train.sections import TrainConfig
from incontext.train.workdir import RunError, TrainingDiverged  # noqa: F401 (re-exported)

log = logging.getLogger(__name__)

# Model fields that may change between runs of one workdir (they do not change the params).
RUNTIME_MODEL_FIELDS = ("dtype", "remat", "drop_path", "ensemble")


# -- setup ----------------------------------------------------------------------------------
def model_config(config) -> seggpt.SegGPTConfig:
  """The SegGPTConfig of `config.model` (a TrainConfig, or a ConfigDict such as a workdir's
  config.json)."""
  return _model_cfg(config.model)


def _model_cfg(model) -> seggpt.SegGPTConfig:
  kw = dict(model)
  variant = kw.pop("variant")
  return seggpt.get_config(variant, **kw)


def validate(config: TrainConfig, workdir: str) -> int | None:
  """Checks the settings against each other and against the workdir's checkpoints before
  anything is compiled (keys and types were checked by `TrainConfig.of`); returns the newest
  checkpoint step (None without checkpoints)."""
  wd.check_positive(
    total_steps=config.total_steps, log_every=config.log_every, batch_size=config.batch_size
  )
  if config.input_type == "pipeline":
    from incontext.data import pipeline  # grain/TFDS readers load only when configured

    pipeline.resolve_config(config.input_config())
  ckdir = os.path.join(workdir, "checkpoints")
  newest = wd.newest_step(ckdir)
  if newest is None:
    return None
  if int(config.total_steps) < newest:
    raise RunError(
      f"config.total_steps={config.total_steps} is below the step of the "
      f"checkpoint in {ckdir} ({newest}); raise it or use another workdir"
    )
  prev = wd.read_json(os.path.join(workdir, "config.json"))
  if prev and isinstance(prev.get("model"), dict):
    arch = lambda m: {
      k: (list(v) if isinstance(v, tuple) else v)
      for k, v in ckpt_lib.config_to_dict(_model_cfg(m)).items()
      if k not in RUNTIME_MODEL_FIELDS
    }
    try:
      old = arch(prev["model"])
    except (TypeError, ValueError, KeyError):
      old = None
    if old is not None:
      new = arch(config.model)
      diff = [k for k in new if new[k] != old.get(k)]
      if diff:
        k = diff[0]
        raise RunError(
          f"config.model.{k}={new[k]} differs from the model the checkpoints in "
          f"{ckdir} were trained with ({k}={old.get(k)}); use another workdir"
        )
  return newest


def make_train_iterator(config: TrainConfig, *, seed: int, batch_size: int):
  """Per-host batch iterator (checkpointable grain iterator) for `config.input`."""
  kind = config.input_type
  kw = dict(
    seed=seed,
    batch_size=batch_size,
    process_index=jax.process_index(),
    process_count=jax.process_count(),
  )
  data_cfg = config.input_config()
  # Readers are imported where used: only the configured one (with its grain/TFDS
  # dependencies) loads.
  if kind == "procedural":
    from incontext.data import procedural  # grain: only for procedural inputs

    return procedural.make_train_iterator(data_cfg, **kw)
  if kind == "pipeline":
    from incontext.data import pipeline  # grain/TFDS readers load only when configured

    return pipeline.make_train_iterator(data_cfg, **kw)
  raise RunError(f"config.input.type: unknown {kind!r} (expected 'procedural' or 'pipeline')")


def make_episodes(config: TrainConfig) -> list[dict]:
  """Procedural evaluation episodes for `config.evals` (held-out classes); [] for the
  'episodes' type, which runs the evaluator on `eval_benchmark(config)` instead."""
  ev = config.evals
  kind = ev.type
  if kind == "procedural":
    from incontext.data import episodes  # local: run() calls its episode list `episodes`

    src = ev.data or config.input
    data_cfg = {k: v for k, v in src.items() if k != "type"}
    return episodes.procedural_episodes(data_cfg, seed=ev.episode_seed(), per_class=ev.per_class)
  if kind == "episodes":
    return []
  raise RunError(f"config.evals.type: unknown {kind!r} (expected 'procedural' or 'episodes')")


def eval_benchmark(config) -> dict:
  """The few-shot benchmark of an 'episodes' evaluation: `config.evals.data` (keys of a
  seggpt_eval.py few-shot entry: source, fold or classes, shots, ...) with `episodes` from
  `config.evals.num_episodes` unless given. `experiments/evaluate.py` with this dict as a
  benchmark and `config.evals.seed` as its seed gives the same numbers."""
  config = TrainConfig.of(config)
  if config.evals.data is None:
    raise RunError("config.evals.data: missing (the benchmark of an 'episodes' evaluation)")
  bench = dict(config.evals.data)
  bench.setdefault("episodes", config.evals.num_episodes)
  bench.setdefault("shots", 1)
  bench.setdefault("name", "eval")
  return bench


def evaluate_benchmark(model, config) -> dict:
  """{'miou', 'miou_ci_lo', 'miou_ci_hi', 'baseline_copy_miou', ...} of the 'episodes'
  evaluation: the evaluator's own code (incontext.evaluators.run.fewshot_benchmark), so the
  numbers in metrics.jsonl are those experiments/evaluate.py reports for the same params."""

  bench = eval_sections.Benchmark.of(eval_benchmark(config), "config.evals.data")
  res = eval_run.fewshot_benchmark(model, bench, seed=config.evals.episode_seed())
  one = res["1-shot"]
  out = {
    "miou": one["miou"],
    "miou_ci_lo": one["miou_ci95"][0],
    "miou_ci_hi": one["miou_ci95"][1],
    "fb_iou": one["fb_iou"],
    "baseline_copy_miou": res["copy prompt mask (baseline)"]["miou"],
  }
  for name, r in res.items():
    if name not in ("1-shot", "copy prompt mask (baseline)", "_info"):
      out[f"{name.replace(' ', '_')}_miou"] = r["miou"]
  return out


def init_params(config: TrainConfig, cfg: seggpt.SegGPTConfig, params_sh) -> Any:
  """Initial params (pure dict) placed with `params_sh`, per `config.init`."""
  init = config.init
  kind = init.kind
  if kind == "scratch":
    make = lambda: nnx.to_pure_dict(
      nnx.state(seggpt.SegGPT(cfg, rngs=nnx.Rngs(config.seed)), nnx.Param)
    )
    return jax.jit(make, out_shardings=params_sh)()
  if kind == "params":
    model = ckpt_lib.load_model(
      init.path, expect_variant=cfg, dtype=cfg.dtype, remat=cfg.remat, drop_path=cfg.drop_path
    )
  elif kind == "torch":
    sd, _ = convert.read_state_dict(convert.resolve_source(init.path))  # file, folder, hf:REPO
    model = seggpt.SegGPT(cfg, rngs=nnx.Rngs(config.seed))
    convert.load_official(model, sd, allow_missing=convert.OPTIONAL)
  else:
    raise RunError(f"config.init.kind: unknown {kind!r} (expected scratch, params or torch)")
  host = jax.tree.map(np.asarray, nnx.to_pure_dict(nnx.state(model, nnx.Param)))
  return jax.tree.map(
    lambda x, s: jax.make_array_from_callback(x.shape, s, lambda i: x[i]), host, params_sh
  )


def _global_batch(local: dict, batch_sh) -> dict:
  return {
    k: jax.make_array_from_process_local_data(batch_sh, np.asarray(v)) for k, v in local.items()
  }


def _host(x) -> np.ndarray:
  """A replicated (possibly multi-host) array -> numpy."""
  return np.asarray(x.addressable_data(0)) if isinstance(x, jax.Array) else np.asarray(x)


def checkpoint_manager(config: TrainConfig, workdir: str) -> ocp.CheckpointManager:
  import grain

  c = config.ckpt
  best = c.best_metric or None
  opts = ocp.CheckpointManagerOptions(
    max_to_keep=c.keep,
    enable_async_checkpointing=c.async_save,
    best_fn=(lambda m: m[best]) if best else None,
    best_mode=c.best_mode,
    keep_checkpoints_without_metrics=not best,
    create=True,
  )
  return ocp.CheckpointManager(
    os.path.join(os.path.abspath(workdir), "checkpoints"),
    options=opts,
    item_handlers={
      "state": ocp.StandardCheckpointHandler(),
      "data": grain.checkpoint.CheckpointHandler(),
    },
  )


# -- evaluation -------------------------------------------------------------------------------
def run_eval(predict_fn, params, episodes, *, batch_size: int, batch_sh) -> tuple[dict, np.ndarray]:
  """-> (metrics of `fewshot.evaluate`: miou and baselines, query predictions [E, H, W, 3])."""
  keys = ("image", "target", "mask", "valid", "seg_type")
  preds = []
  for i in range(0, len(episodes), batch_size):
    chunk = episodes[i : i + batch_size]
    pad = chunk + [chunk[-1]] * (batch_size - len(chunk))  # fixed shape: no recompiles
    b = {k: np.stack([e[k] for e in pad]) for k in keys}
    b = {
      k: jax.make_array_from_callback(v.shape, batch_sh, lambda idx, v=v: v[idx])
      for k, v in b.items()
    }
    preds.append(_host(predict_fn(params, b))[: len(chunk)])
  preds = np.concatenate(preds, 0)
  return fewshot.evaluate(preds, episodes), preds


# -- the loop ---------------------------------------------------------------------------------
def run(config, workdir: str) -> dict[str, Any]:
  """Trains per `config` (the ConfigDict of experiments/configs/seggpt_train.py: written to
  WORKDIR/config.json, read through its checked sections, `TrainConfig.of`); returns
  {'step', 'history': [per-log-step metrics], 'eval': {...}}. One run at a time per workdir
  (`workdir.hold`)."""
  record = config.to_dict() if hasattr(config, "to_dict") else dataclasses.asdict(config)
  config = TrainConfig.of(config)
  with wd.hold(workdir) as workdir:
    return _run(config, record, workdir)


def _run(config: TrainConfig, record: dict, workdir: str) -> dict[str, Any]:
  is_main = wd.is_main()
  validate(config, workdir)
  wd.write_json(os.path.join(workdir, "config.json"), record)
  # What `checkpoint` needs to load a checkpoint of this run as a model (`--checkpoint WORKDIR`)
  # without reading the trainer's settings itself (it sits below the trainer).
  wd.write_json(
    os.path.join(workdir, ckpt_lib.RUN_MODEL),
    {
      "config": ckpt_lib.config_to_dict(model_config(config)),
      "trained_on": trained_on(config, 0),
    },
  )

  # Mesh.
  mesh = mesh_lib.make_mesh(config.mesh)
  repl = mesh_lib.replicated(mesh)
  batch_sh = mesh_lib.batch_sharding(mesh)
  gbs = int(config.batch_size)
  if gbs % mesh_lib.batch_size_multiple(mesh) or gbs % jax.process_count():
    raise RunError(
      f"config.batch_size={gbs} must be a multiple of the batch devices "
      f"({mesh_lib.batch_size_multiple(mesh)}) and of the process count"
    )
  total = int(config.total_steps)

  # Data.
  it = make_train_iterator(config, seed=config.seed, batch_size=gbs // jax.process_count())
  evaluating = bool(config.evals.every or config.evals.at_end)
  episodes = make_episodes(config) if evaluating else []
  evaluating = evaluating and (bool(episodes) or config.evals.type == "episodes")

  # Model + optimiser (abstract first: nothing is allocated before the shardings are known).
  cfg = model_config(config)
  graphdef, abs_params = nnx.split(seggpt.abstract(cfg))
  abs_params = nnx.to_pure_dict(abs_params)
  tx, schedule = optim.make_tx(config.optim, total_steps=total, depth=cfg.depth)
  abs_state = jax.eval_shape(lambda p: steps.init_state(p, tx, config.seed), abs_params)
  state_sh = sharding.shardings(abs_state, config.sharding_rules, mesh)

  # Restore or init.
  mngr = checkpoint_manager(config, workdir)
  import grain

  abstract = jax.tree.map(
    lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abs_state, state_sh
  )
  start, restored = wd.restore_latest(
    mngr,
    lambda step: mngr.restore(
      step,
      args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract), data=grain.checkpoint.CheckpointRestore(it)
      ),
    ),
  )
  if start is not None:
    state = restored["state"]
    log.info("resumed from %s at step %d", mngr.directory, start)
  else:
    start = 0
    params = init_params(config, cfg, state_sh["params"])
    state = jax.jit(lambda p: steps.init_state(p, tx, config.seed), out_shardings=state_sh)(params)
  metrics = wd.MetricsLog(os.path.join(workdir, "metrics.jsonl"))
  history = metrics.load(upto=start) if is_main else []

  # Jit with explicit shardings; the state is donated.
  step_fn = jax.jit(
    functools.partial(
      steps.train_step,
      graphdef=graphdef,
      tx=tx,
      schedule=schedule,
      patch=cfg.patch,
      beta=config.loss.beta,
      painter_loss=config.loss.painter,
      drop_path=cfg.drop_path > 0,
    ),
    in_shardings=(state_sh, batch_sh),
    out_shardings=(state_sh, repl),
    donate_argnums=(0,),
  )
  predict_fn = jax.jit(
    functools.partial(steps.predict, graphdef=graphdef),
    in_shardings=(state_sh["params"], batch_sh),
    out_shardings=repl,
  )
  ex_flops = flops.train_flops(cfg)
  peak = flops.peak_flops(jax.devices()[0].device_kind)

  # Loop.
  log_every, eval_every = config.log_every, config.evals.every
  ckpt_every = config.ckpt.every
  pending: list[tuple[int, dict]] = []
  last_eval: dict = {}
  t_last, n_last = None, 0
  bar = _progress(start, total, is_main)
  with jax.set_mesh(mesh):
    for step in range(start + 1, total + 1):
      batch = _global_batch(next(it), batch_sh)
      state, m = step_fn(state, batch)
      pending.append((step, m))
      bar.update(1)
      if step == start + 1:
        jax.block_until_ready(m)  # exclude compilation from throughput
        t_last, n_last = time.perf_counter(), step
        bar.start_t, bar.initial = time.time(), bar.n  # and from the bar's rate (tqdm's clock)
      do_eval = evaluating and (
        (eval_every and step % eval_every == 0) or (step == total and config.evals.at_end)
      )
      if step % log_every == 0 or step == total or do_eval:
        rows = _check_finite(pending)
        pending = []
        now = time.perf_counter()
        rec = {"step": step, **{f"train/{k}": v for k, v in rows[-1].items()}}
        if step > n_last:
          ex_per_s = gbs * (step - n_last) / (now - t_last)
          rec.update(
            {
              "train/examples_per_s": ex_per_s,
              "train/step_s": (now - t_last) / (step - n_last),
              "train/flops_per_s_per_device": ex_per_s * ex_flops / jax.device_count(),
            }
          )
          if peak:
            rec["train/mfu"] = rec["train/flops_per_s_per_device"] / peak
        t_last, n_last = now, step
        if do_eval:
          bar.set_description_str("train (evaluating)", refresh=True)
          preds = None
          if episodes:
            res, preds = run_eval(
              predict_fn,
              state["params"],
              episodes,
              batch_size=_eval_bs(config, mesh),
              batch_sh=batch_sh,
            )
          else:
            res = evaluate_benchmark(nnx.merge(graphdef, _host_params(state["params"])), config)
          last_eval = {f"eval/{k}": v for k, v in res.items()}
          rec.update(last_eval)
          t_last = time.perf_counter()
          if is_main:
            if preds is not None:
              plots.predictions_png(
                os.path.join(workdir, "predictions", f"step_{step}.png"),
                episodes,
                preds,
                n=config.evals.num_png,
              )
              plots.predictions_png(
                os.path.join(workdir, "predictions.png"),
                episodes,
                preds,
                n=config.evals.num_png,
              )
            bar.write(f"step {step}: few-shot mIoU {res['miou']:.2f}%" + _baselines(res))
          bar.set_description_str("train", refresh=False)
        if is_main:
          history.append(rec)
          metrics.append(rec)
          bar.set_postfix(loss=f"{rec['train/loss']:.4f}", lr=f"{rec['train/lr']:.2e}")
      if (ckpt_every and step % ckpt_every == 0) or step == total:
        mngr.save(
          step,
          args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), data=grain.checkpoint.CheckpointSave(it)
          ),
          metrics={k.split("/", 1)[1]: v for k, v in last_eval.items()} or None,
        )
  bar.close()
  if start == total and history:  # a finished run again: its final result, from metrics.jsonl
    last_eval = {k: v for k, v in history[-1].items() if k.startswith("eval/")}
  mngr.wait_until_finished()
  mngr.close()
  wd.curve_png(os.path.join(workdir, "curve.png"), history)
  if config.export_params and jax.process_count() == 1:
    model = nnx.merge(graphdef, jax.device_get(state["params"]))
    ckpt_lib.save_model(
      os.path.join(workdir, "params"),
      model,
      overwrite=True,
      source={"trainer": workdir, "step": total, "loss": dataclasses.asdict(config.loss)},
      trained_on=trained_on(config, total),
    )
  return {"step": total, "history": history, "eval": last_eval}


def trained_on(config, steps: int) -> dict:
  """What a run trains on, for the params metadata: {"data": "procedural" or the dataset
  names (+ "procedural" when mixed in), "steps", "init": "scratch" or the init path}.
  `config`: a TrainConfig or its ConfigDict (a workdir's config.json)."""
  config = TrainConfig.of(config)
  inp = config.input
  if config.input_type == "procedural":
    data = "procedural"
  else:
    data = [
      d.get("name") or (d.get("source") or {}).get("reader") or d.get("reader") or "?"
      for d in inp.get("datasets", [])
    ]
    if inp.get("procedural_frac", 0.0):
      data.append("procedural")
  kind = config.init.kind
  return {
    "data": data,
    "steps": int(steps),
    "init": "scratch" if kind == "scratch" else f"{kind}:{config.init.path}",
  }


def _host_params(params):
  """Params as host numpy arrays (gathered across hosts when sharded over several)."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils

    return multihost_utils.process_allgather(params, tiled=True)
  return jax.device_get(params)


def _baselines(res: dict) -> str:
  names = (
    ("baseline_copy_miou", "copy-prompt-mask"),
    ("baseline_objects_miou", "paint-every-object, no matching"),
  )
  parts = [f"baseline {n} {res[k]:.2f}%" for k, n in names if k in res]
  return f" ({'; '.join(parts)})" if parts else ""


def _eval_bs(config: TrainConfig, mesh) -> int:
  m = mesh_lib.batch_size_multiple(mesh)
  bs = config.evals.batch_size or config.batch_size
  return max(m, bs // m * m)


def _progress(start, total, enabled):
  from tqdm import tqdm

  # smoothing=0: the rate (and so the ETA) is the average since the start, which counts the
  # periodic evaluations; the default recent-steps rate jumps at every evaluation pause.
  return tqdm(
    total=total,
    initial=start,
    disable=not enabled,
    desc="train",
    dynamic_ncols=True,
    smoothing=0,
  )


def _check_finite(pending: list[tuple[int, dict]]) -> list[dict]:
  """Host metrics of the steps since the last log; raises naming the first bad step."""
  rows = []
  for step, m in pending:
    row = {k: float(_host(v)) for k, v in m.items()}
    wd.check_finite(
      step, row, ("loss", "grad_norm"), "lower optim.lr, raise optim.warmup_steps or set optim.clip"
    )
    rows.append(row)
  return rows
