"""In-context tuning: learn one prompt (image, optionally target) for a task with SegGPT frozen.

`run_tune(config, workdir)` reads top to bottom:
  setup mesh -> task examples -> frozen model -> prompt + optimiser -> shard -> restore -> jit ->
  loop (log, checkpoint) -> curve/prompt PNGs and `WORKDIR/prompt.npz`.

Resume order: the latest checkpoint in WORKDIR/checkpoints, else a fresh prompt from
`config.tune.init`. The model always comes from `config.init` (a params directory); tuning never
starts from random weights. Batches are a pure function of (seed, step), so a killed and resumed
run follows the same trajectory as an uninterrupted one.

Workdir layout:
  config.json            the config used
  tune_meta.json         model config, weights hash, seg type, palette/labels, task (export-prompt
                         reads it)
  checkpoints/STEP/      Orbax: {'prompt': {'image', 'target'}, 'opt', 'step'}
  metrics.jsonl          one line per logged step {'step', 'loss', 'grad_norm', 'update_norm'}
  curve.png              training curve (+ the held-out mIoU points); prompt_image.png /
                         prompt_target.png: the prompt now
  prompt.npz             the learned prompt of the last step (incontext.prompts format)
  heldout.json           with `config.heldout.share` > 0: the held-out examples (a seeded share
                         of the task, never tuned on) scored with the tuned prompt and with the
                         untuned example prompt it started from

The workdir plumbing (atomic JSON, metrics repair, falling back from a corrupt checkpoint,
process 0 writes) is `incontext.train.workdir`, shared with the trainer. The config is read
through its typed sections (`incontext.train.sections.TuneConfig`, built once in `run_tune`); the
prompt's optimiser is the trainer's builder (`optim.make_tx`) with the prompt as its `trainable`
selection. Settings are checked before compiling: unknown keys and wrong types, non-positive
steps, a total below the checkpoint's step and a `config.init` whose weights differ from the
ones the workdir was tuned with are errors.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx
from tqdm import tqdm

from incontext import canvas, checkpoint, mesh as mesh_lib, metrics, outputs, predict, prompts
from incontext.data import ops, sources
from incontext.data.selection import select_indices
from incontext.errors import UserError
from incontext.train import optim, tune_steps
from incontext.train import workdir as wd
from incontext.train.sections import TaskConfig, TuneConfig
from incontext.train.workdir import RunError


# ---------------------------------------------------------------------------------------------
# Task examples.


def encode_example(
  image: np.ndarray,
  label: np.ndarray,
  size_hw,
  label_ids: Sequence[int],
  palette: np.ndarray,
  ignore: int = 255,
) -> dict:
  """uint8 image [H, W, 3] + label map [H, W] -> normalised {'image', 'target'} [h, w, 3] and
  'valid' [h, w] at `size_hw` (bicubic image, nearest labels; label_ids[k] gets palette[k+1],
  other labels background, `ignore` pixels valid 0)."""
  h, w = size_hw
  img = ops.resize_image(np.asarray(image, np.uint8), (h, w))
  lab = ops.resize_label(np.asarray(label, np.int32), (h, w))
  idx = np.zeros(lab.shape, np.int64)
  for k, c in enumerate(label_ids):
    idx[lab == int(c)] = k + 1
  return {
    "image": canvas.normalize(img),
    "target": canvas.normalize(palette[idx]),
    "valid": (lab != ignore).astype(np.float32),
    "label": idx.astype(np.int32),
  }


def read_examples(task: TaskConfig | dict) -> list[dict]:
  """The task's raw examples {'image' uint8, 'mask' int, 'id'} from `task.reader` (selected
  per `select_indices`; 'id' is the source's, else the index)."""
  task = TaskConfig.of(task)
  src = sources.make_source(task.source_config())
  idx = select_indices(len(src), task.selection())
  return [
    {**src[i], "id": str(src[i].get("id", i))} for i in tqdm(idx, desc="load task", leave=False)
  ]


def heldout_split(n: int, share: float, seed: int) -> tuple[list[int], list[int]]:
  """(tuning indices, held-out indices) of n examples: round(share * n) of them, at least one
  when share > 0, held out by a seeded permutation; none when share is 0. RunError when that
  leaves nothing to tune on."""
  if not 0 <= share < 1:
    raise RunError(f"config.heldout.share={share}: expected a share in [0, 1)")
  if share == 0:
    return list(range(n)), []
  k = max(1, round(share * n))
  if n - k < 1:
    raise RunError(
      f"config.heldout.share={share}: the task has {n} example(s); holding out {k} leaves "
      "none to tune on (give at least 2 images, or --config.heldout.share=0)"
    )
  perm = np.random.default_rng(seed).permutation(n)
  return sorted(int(i) for i in perm[k:]), sorted(int(i) for i in perm[:k])


def prompt_scores(
  model, prompts, examples, *, label_ids=(1,), palette=None, seg_type="semantic"
) -> list[dict]:
  """IoU results (`metrics.IoUAccumulator.result`, in %) of each one-slot prompt (normalised
  image, target [h, w, 3]) over raw examples {'image', 'mask'}: each label of `label_ids`
  (drawn with palette[k + 1]) scored at the example's own resolution, mask 255 ignored."""
  palette = predict.model_palette(label_ids) if palette is None else np.asarray(palette)
  size = tuple(model.cfg.image_size)
  qs = np.stack([predict.prepare_image(e["image"], size) for e in examples])
  out = []
  for image, target in prompts:
    acc = metrics.IoUAccumulator()
    preds = np.concatenate(
      [
        predict.predict_canvas_batch(
          model, image[None], target[None], qs[i : i + 16], seg_type=seg_type
        )
        for i in range(0, len(qs), 16)
      ]
    )
    for e, p in zip(examples, preds):
      mask = np.asarray(e["mask"])
      lab = predict.labels_from_prediction(canvas.denormalize(p), palette, list(label_ids))
      lab = predict.resize_nearest_torch(lab, mask.shape)
      for c in label_ids:
        acc.add(lab == c, mask == c, c, mask == 255)
    out.append(acc.result())
  return out


def load_task(
  task: TaskConfig | dict, size_hw, examples: Sequence[dict] | None = None
) -> tuple[dict, dict]:
  """Stacked task examples {'image', 'target', 'valid'} [N, ...] and a description dict.

  `task`: the `config.task` section (or a dict of its keys). `examples` (a list of
  {'image' uint8, 'mask' int}) replaces reading `task.reader`.
  """
  task = TaskConfig.of(task)
  label_ids = [int(c) for c in task.label_ids or (1,)]
  palette = predict.model_palette(label_ids)
  if examples is None:
    examples = read_examples(task)
  ids = [str(e.get("id", i)) for i, e in enumerate(examples)]
  enc = [encode_example(e["image"], e["mask"], size_hw, label_ids, palette) for e in examples]
  data = {k: np.stack([e[k] for e in enc]) for k in ("image", "target", "valid")}
  desc = {
    "label_ids": label_ids,
    "palette": palette,
    "label_names": [str(n) for n in task.label_names or [f"label_{c}" for c in label_ids]],
    "example_ids": ids,
  }
  return data, desc


def sample_batch(data: dict, step: int, batch_size: int, seed: int, hflip: bool) -> dict:
  """The batch of `step`: a pure function of (seed, step) (so resumed runs reproduce)."""
  rng = np.random.default_rng([seed, step])
  n = data["image"].shape[0]
  idx = rng.choice(n, size=batch_size, replace=n < batch_size)
  out = {k: v[idx] for k, v in data.items()}
  if hflip:
    flip = rng.random(batch_size) < 0.5
    for k in out:
      out[k] = np.where(flip.reshape((-1,) + (1,) * (out[k].ndim - 1)), out[k][:, :, ::-1], out[k])
  return out


# ---------------------------------------------------------------------------------------------
# Outputs.


def _write_png(path: str, normalised: np.ndarray):
  outputs.write_image(path, np.round(canvas.denormalize(normalised)).astype(np.uint8))


def checkpoint_manager(workdir: str, keep: int = 3) -> ocp.CheckpointManager:
  return ocp.CheckpointManager(
    os.path.join(os.path.abspath(workdir), "checkpoints"),
    options=ocp.CheckpointManagerOptions(max_to_keep=keep),
  )


def restore_prompt(workdir: str, step: int | None = None) -> tuple[dict, int]:
  """({'image', 'target'} numpy, step) of a tuning checkpoint (the latest if step is None)."""
  ckdir = os.path.join(workdir, "checkpoints")
  if not os.path.isdir(ckdir):
    raise UserError(f"{workdir}: not a tuning workdir (no checkpoints/ directory)")
  with checkpoint_manager(workdir) as mngr:
    steps = mngr.all_steps()
    if not steps:
      raise UserError(f"{ckdir}: no checkpoints")
    step = max(steps) if step is None else int(step)
    if step not in steps:
      raise UserError(f"{ckdir}: no checkpoint for step {step}; have {sorted(steps)}")
    # Restore just the prompt leaves (no optimiser template needed).
    tree = mngr.restore(step, args=ocp.args.StandardRestore())
  p = tree["prompt"]
  return {
    "image": np.asarray(p["image"], np.float32),
    "target": np.asarray(p["target"], np.float32),
  }, step


def read_tune_meta(workdir: str) -> dict:
  path = os.path.join(workdir, "tune_meta.json")
  if not os.path.isfile(path):
    raise UserError(f"{workdir}: not a tuning workdir (no tune_meta.json)")
  meta = wd.read_json(path)
  if meta is None:
    raise UserError(f"{path}: corrupt (not a JSON object)")
  return meta


def validate(c: TuneConfig, workdir: str) -> None:
  """Checks the settings against each other and the workdir before anything is loaded or
  compiled (keys and types were checked by `TuneConfig.of`); RunError naming the setting."""
  wd.check_positive(
    total_steps=c.total_steps,
    log_every=c.log_every,
    ckpt_every=c.ckpt_every,
    tune__batch_size=c.tune.batch_size,
  )
  if not c.init:
    raise RunError("config.init must name a params directory: tuning needs a trained model")
  ckdir = os.path.join(workdir, "checkpoints")
  newest = wd.newest_step(ckdir)
  if newest is None:
    return
  if c.total_steps < newest:
    raise RunError(
      f"config.total_steps={c.total_steps} is below the step of the checkpoint "
      f"in {ckdir} ({newest}); raise it or use another workdir"
    )
  old = wd.read_json(os.path.join(workdir, "tune_meta.json")) or {}
  new_hash = checkpoint.read_meta(c.init).get("weights_hash")
  if old.get("weights_hash") and new_hash and old["weights_hash"] != new_hash:
    raise RunError(
      f"config.init={c.init} (weights {new_hash[:12]}...) is not the model this "
      f"workdir was tuned with ({old.get('init')}, weights "
      f"{old['weights_hash'][:12]}...); use another workdir"
    )


# ---------------------------------------------------------------------------------------------


def loss_beta(config) -> float:
  """The smooth-L1 beta to tune with: `config.loss.beta` if set, else the beta the model in
  `config.init` was trained with (recorded by the trainer in its params dir), else SegGPT's
  0.01 (converted official weights). `config`: a TuneConfig or its ConfigDict."""
  config = TuneConfig.of(config)
  beta = config.loss.beta
  if beta is not None:
    return float(beta)
  src = checkpoint.read_meta(config.init).get("source") or {}
  return float((src.get("loss") or {}).get("beta", 0.01))


@functools.lru_cache(maxsize=8)
def _jitted_step(
  graphdef,
  optim_cfg: optim.PromptOptimConfig,
  total: int,
  seg_type: int,
  learn_target: bool,
  repl,
  batch_sh,
  beta: float = 0.01,
):
  """The jitted tune step (cached so that a resumed run in the same process does not
  recompile)."""
  tx, _ = optim.make_tx(
    optim_cfg, total_steps=total, trainable=tune_steps.prompt_selection(learn_target)
  )
  tune_step = functools.partial(
    tune_steps.tune_step,
    graphdef=graphdef,
    tx=tx,
    seg_type=seg_type,
    learn_target=learn_target,
    beta=beta,
  )
  return jax.jit(
    lambda state, batch, params: tune_step(state, batch, params=params),
    in_shardings=(repl, batch_sh, repl),
    out_shardings=(repl, repl),
    donate_argnums=(0,),
  )  # the prompt state is replaced; params never donated


def _record(config) -> dict:
  """The config as given, for config.json and tune_meta.json."""
  if hasattr(config, "to_dict"):
    return config.to_dict()
  return dataclasses.asdict(config) if dataclasses.is_dataclass(config) else dict(config)


def run_tune(
  config, workdir: str, *, examples: Sequence[dict] | None = None, stop_at: int | None = None
) -> dict:
  """Tunes a prompt; returns {'losses': [...], 'prompt': {...}, 'step': int, ...}.

  Args:
    config: ml_collections config (experiments/configs/prompt_tune.py): written to
      WORKDIR/config.json and read through its checked sections (`TuneConfig.of`).
    workdir: output / resume directory (one run at a time: `workdir.hold`).
    examples: optional in-memory task examples [{'image', 'mask'}] instead of config.task.
    stop_at: stop after this step (as if killed right after its checkpoint; tests use it).
  """
  record = _record(config)
  c = TuneConfig.of(config)
  with wd.hold(workdir) as workdir:
    return _run_tune(c, record, workdir, examples=examples, stop_at=stop_at)


def _run_tune(c: TuneConfig, record: dict, workdir: str, *, examples, stop_at) -> dict:
  validate(c, workdir)
  wd.write_json(os.path.join(workdir, "config.json"), record)

  # -- mesh ----------------------------------------------------------------------------------
  mesh = mesh_lib.make_mesh([tuple(a) for a in c.mesh])
  repl = mesh_lib.replicated(mesh)
  batch_sh = mesh_lib.batch_sharding(mesh)
  bs = c.tune.batch_size
  if bs % mesh_lib.batch_size_multiple(mesh):
    raise RunError(
      f"tune.batch_size {bs} is not a multiple of the "
      f"{mesh_lib.batch_size_multiple(mesh)} devices on the batch axes"
    )

  # -- frozen model --------------------------------------------------------------------------
  model = checkpoint.load_model(c.init, **c.model_overrides)
  cfg = model.cfg
  weights_hash = checkpoint.read_meta(c.init).get("weights_hash") or checkpoint.params_hash(model)
  graphdef, params = nnx.split(model)
  params = jax.device_put(params, repl)

  # -- task: the tuning examples and the held-out ones ----------------------------------------
  raw = list(examples) if examples is not None else read_examples(c.task)
  tune_i, held_i = heldout_split(len(raw), c.heldout.share, c.heldout.seed)
  held = [raw[i] for i in held_i]
  data, desc = load_task(c.task, cfg.image_size, [raw[i] for i in tune_i])
  seg_type = c.task.seg_type
  beta = loss_beta(c)
  meta = {
    "kind": "incontext-tune-workdir",
    "model_config": checkpoint.config_to_dict(cfg),
    "weights_hash": weights_hash,
    "init": os.path.abspath(c.init),
    "seg_type": seg_type,
    "palette": desc["palette"].tolist(),
    "label_ids": desc["label_ids"],
    "label_names": desc["label_names"],
    "task": {k: v for k, v in dict(record["task"]).items()},
    "example_ids": desc["example_ids"],
    "heldout_ids": [str(e.get("id", i)) for i, e in zip(held_i, held)],
    "tune": dict(record["tune"]),
    "loss_beta": beta,
  }
  wd.write_json(os.path.join(workdir, "tune_meta.json"), meta)

  # -- prompt + optimiser --------------------------------------------------------------------
  h, w = cfg.image_size
  learn_target = c.tune.learn_target
  i0 = c.tune.init_index
  prompt0 = tune_steps.init_prompt(
    c.tune.init,
    h,
    w,
    seed=c.seed,
    example={"image": data["image"][i0], "target": data["target"][i0]},
  )
  total = c.total_steps
  tx, _ = optim.make_tx(
    c.optim, total_steps=total, trainable=tune_steps.prompt_selection(learn_target)
  )
  state = {"prompt": jax.tree.map(jnp.asarray, prompt0), "step": jnp.int32(0)}
  state["opt"] = tx.init(state["prompt"])
  state = jax.device_put(state, repl)

  # -- restore -------------------------------------------------------------------------------
  mngr = checkpoint_manager(workdir, keep=c.keep_ckpts)
  start = 0
  abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
  step0, restored = wd.restore_latest(
    mngr, lambda step: mngr.restore(step, args=ocp.args.StandardRestore(abstract))
  )
  if step0 is not None:
    state = restored
    start = int(state["step"])
  metrics = wd.MetricsLog(os.path.join(workdir, "metrics.jsonl"))
  rows = metrics.load(upto=start)

  # -- jit -----------------------------------------------------------------------------------
  step_fn = _jitted_step(
    graphdef,
    c.optim,
    total,
    canvas.SEG_TYPES[seg_type],
    learn_target,
    repl,
    batch_sh,
    beta,
  )

  # -- loop ----------------------------------------------------------------------------------
  log_every, ckpt_every = c.log_every, c.ckpt_every
  end = total if stop_at is None else min(total, int(stop_at))
  bar = tqdm(total=total, initial=start, desc="tune", unit="step")
  with jax.set_mesh(mesh):
    for step in range(start + 1, end + 1):
      batch = sample_batch(data, step, bs, c.seed, c.tune.hflip)
      batch = jax.device_put(batch, batch_sh)
      state, m = step_fn(state, batch, params)
      if step % log_every == 0 or step == total or step == 1:
        m = {k: float(v) for k, v in jax.device_get(m).items()}
        wd.check_finite(step, m, list(m), "lower optim.lr or set optim.clip")
        rows.append({"step": step, **m})
        metrics.append(rows[-1])
        bar.set_postfix(loss=f"{m['loss']:.4f}")
      if step % ckpt_every == 0 or step == end:
        mngr.save(step, args=ocp.args.StandardSave(state))
      bar.update(1)
  bar.close()
  mngr.wait_until_finished()
  mngr.close()

  # -- outputs -------------------------------------------------------------------------------
  prompt = jax.tree.map(lambda a: np.asarray(jax.device_get(a), np.float32), state["prompt"])
  final = int(jax.device_get(state["step"]))
  heldout, points = None, []
  if held and final == total:  # the tuned prompt vs the untuned example prompt it started from
    tuned, example = prompt_scores(
      model,
      [(prompt["image"], prompt["target"]), (data["image"][i0], data["target"][i0])],
      held,
      label_ids=desc["label_ids"],
      palette=desc["palette"],
      seg_type=seg_type,
    )
    heldout = {
      "images": len(held),
      "ids": meta["heldout_ids"],
      "tuned": tuned,
      "example prompt": example,
      "example_id": desc["example_ids"][i0],
    }
    wd.write_json(os.path.join(workdir, "heldout.json"), heldout)
    points = [
      {"step": 0, "heldout/miou": example["miou"]},
      {"step": final, "heldout/miou": tuned["miou"]},
    ]
  if wd.is_main():
    wd.curve_png(
      os.path.join(workdir, "curve.png"),
      rows + points,
      key="loss",
      eval_key="heldout/miou",
      eval_label="held-out mIoU % (red; step 0: the example prompt)",
    )
    _write_png(os.path.join(workdir, "prompt_image.png"), prompt["image"])
    _write_png(os.path.join(workdir, "prompt_target.png"), prompt["target"])
    if final == total:
      export(workdir, os.path.join(workdir, "prompt.npz"))
  return {
    "losses": [r["loss"] for r in rows],
    "rows": rows,
    "prompt": prompt,
    "step": final,
    "params": params,
    "weights_hash": weights_hash,
    "heldout": heldout,
  }


def export(workdir: str, out: str, step: int | None = None) -> dict:
  """Writes the learned prompt of a tuning run (checkpoint `step`, default latest) to `out`."""
  meta = read_tune_meta(workdir)
  prompt, step = restore_prompt(workdir, step)
  cfg = checkpoint.config_from_dict(meta["model_config"])
  lp = prompts.LearnedPrompt(
    image=prompt["image"],
    target=prompt["target"],
    seg_type=meta["seg_type"],
    palette=np.asarray(meta["palette"], np.uint8),
    label_ids=meta["label_ids"],
    label_names=meta["label_names"],
  )
  return prompts.save(
    out,
    lp,
    model_cfg=cfg,
    weights_hash=meta["weights_hash"],
    made_by={
      "method": "in-context tuning",
      "tune_workdir": os.path.abspath(workdir),
      "step": step,
      "init": meta["init"],
      "task": meta["task"],
      "tune": meta["tune"],
    },
  )
