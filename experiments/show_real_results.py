"""Shows tuning, few-shot ensembles and video propagation on the real data in ../shared/data.

  python -m experiments.show_real_results eval --workdir /tmp/real_eval \
    --checkpoint /tmp/real3/params --tune_steps 300 --episodes 100 --shots 4 --memory 8

scores a params directory (any model; here the small `real` checkpoints) and writes
real_results.json/.md to the workdir. The training commands of the checkpoints, the numbers
measured with them and what they show are in docs/results.md#small-model-on-real-data; every
checkpoint's results are in experiments/show_real_results.json.

Splits (fixed; nothing evaluated is trained on, tests/test_configs.py checks it):
  * DAVIS-2016 subset: sequences in HELD_OUT_SEQS are never trained on (video propagation).
  * Kvasir-SEG: never trained on; prompt tuning (prompt_tune task=kvasir) tunes on 64 images of
    a seeded permutation and is scored on the next TUNE_EVAL['kvasir'] = 100.
  * Weizmann horse: never trained on; a seeded permutation's first 64 tune (task=horse), the
    next 136 score the tuning, the rest ([200:]) are the k-shot episodes
    (experiments/configs/seggpt_eval.py). The untuned prompt of a tuning task is its first
    tuning image + mask (the tuning starts from it); each of the first 8 is also scored.
  * coco128_seg: fold-0 classes (COCO-20i interleaved) are held out of training; k-shot episodes
    of those classes.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

from experiments.configs import common

DATA = common.data_dir()  # $INCONTEXT_DATA_DIR or ../shared/data
HELD_OUT_SEQS = common.DAVIS_HELD_OUT  # never in the `real` training mixture
# Per tuning task (experiments/configs/prompt_tune.py TASKS: a seeded permutation, [0:64] tunes):
# how many of the examples right after the tuning ones score the prompts.
TUNE_EVAL = {"horse": 136, "kvasir": 100}
UNTUNED_MEAN = 8  # also scored: each of the first 8 tuning examples as the one prompt


def task_examples(task: dict, root: str, n_eval: int, index: int = 0) -> tuple[dict, list]:
  """(the raw tuning example `index`, the n_eval examples after `task`'s tuning slice in its
  permutation: never tuned on)."""
  from incontext.data import selection, sources

  src = sources.make_source(dict(task, root=root))
  tune = selection.select_indices(len(src), dict(task))
  idx = selection.select_indices(
    len(src), dict(task, start=int(task["stop"]), stop=int(task["stop"]) + n_eval)
  )
  if len(idx) < n_eval:
    raise ValueError(f"{root}: {len(idx)} examples after the tuning ones, need {n_eval}")
  return src[tune[index]], [src[i] for i in idx]


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  sub = p.add_subparsers(dest="stage", required=True)
  e = sub.add_parser("eval")
  e.add_argument("--workdir", required=True)
  e.add_argument("--checkpoint", required=True)
  e.add_argument("--data", default=DATA)
  e.add_argument(
    "--tune_tasks",
    default="horse,kvasir",
    help="comma-separated prompt_tune tasks to tune and score (or 'none')",
  )
  e.add_argument("--tune_steps", type=int, default=300)
  e.add_argument(
    "--tune_lr",
    type=float,
    default=None,
    help="prompt-tuning peak lr (default: experiments/configs/prompt_tune.py's)",
  )
  e.add_argument(
    "--tune_beta",
    type=float,
    default=None,
    help="smooth-L1 beta of the tuning loss (default: the one the checkpoint was "
    "trained with, as recorded by the trainer; else 0.01)",
  )
  e.add_argument("--shots", type=int, default=4)
  e.add_argument("--episodes", type=int, default=100)
  e.add_argument("--memory", type=int, default=8)
  e.add_argument("--max_frames", type=int, default=None)
  e.add_argument(
    "--no_calibrate",
    action="store_true",
    help="skip the DAVIS runs with a threshold calibrated on the training sequences",
  )
  args = p.parse_args(argv)
  if not os.path.isdir(args.data):
    sys.exit(f"real data not found at {args.data} (expected ../shared/data next to the project)")
  evaluate(args)


def _binary_scores(model, prompts, examples, seg_type="semantic"):
  """IoU results over examples of each (normalised) one-slot prompt (image, target)."""
  from incontext.train import tuner

  return tuner.prompt_scores(model, prompts, examples, seg_type=seg_type)


def _heldout_losses(model, prompts, examples, beta):
  """The tuning objective (masked smooth-L1 over the query half) of each prompt on held-out
  examples (encoded once; one jitted loss, params passed in)."""
  import jax
  import jax.numpy as jnp
  from flax import nnx
  from incontext.train import tune_steps, tuner

  data, _ = tuner.load_task({"label_ids": (1,)}, tuple(model.cfg.image_size), examples)
  gd, params = nnx.split(model)
  loss = jax.jit(
    lambda p, b, params: tune_steps.tune_loss(
      p, b, graphdef=gd, params=params, seg_type=0, beta=beta
    )
  )
  n = len(examples)
  batches = [{k: jnp.asarray(v[i : i + 16]) for k, v in data.items()} for i in range(0, n, 16)]
  out = []
  for prompt in prompts:
    p = {k: jnp.asarray(v) for k, v in prompt.items()}
    out.append(sum(float(loss(p, b, params)) * b["image"].shape[0] for b in batches) / n)
  return out


def tuning_experiment(model, args, task_name):
  """Tune a prompt on a task's 64 tuning examples; score it on TUNE_EVAL[task] others vs the
  untuned example prompt it starts from (the first tuning image + mask), each of the first
  UNTUNED_MEAN tuning examples as the prompt (mean), and the copy-the-prompt-mask baseline."""
  from experiments.configs import prompt_tune
  from incontext import metrics, predict
  from incontext.train import tuner

  c = prompt_tune.get_config(f"task={task_name}")
  c.init = args.checkpoint
  c.total_steps = args.tune_steps
  if args.tune_lr is not None:
    c.optim.lr = args.tune_lr
  c.loss.beta = args.tune_beta
  root = os.path.join(args.data, c.task.root.split("/")[-1])
  c.task.root = root
  c.ckpt_every = max(50, args.tune_steps // 4)
  wd = os.path.join(args.workdir, f"tune_{task_name}")
  out = tuner.run_tune(c, wd)
  i0 = int(c.tune.init_index)
  first, evals = task_examples(dict(c.task), root, TUNE_EVAL[task_name], i0)
  data, _ = tuner.load_task(dict(c.task), model.cfg.image_size)
  # the tuned prompt, then each of the first UNTUNED_MEAN tuning examples (and the init one)
  n_each = min(UNTUNED_MEAN, len(data["image"]))
  ex = sorted({i0, *range(n_each)})
  scores = _binary_scores(
    model,
    [(out["prompt"]["image"], out["prompt"]["target"])]
    + [(data["image"][i], data["target"][i]) for i in ex],
    evals,
  )
  by_ex = dict(zip(ex, scores[1:]))
  each = [by_ex[i] for i in range(n_each)]
  res = {"tuned prompt": scores[0], "untuned example prompt": dict(by_ex[i0])}
  res[f"untuned, mean of {len(each)} example prompts"] = {
    k: float(np.mean([r[k] for r in each])) for k in ("miou", "fb_iou")
  }
  res[f"untuned, mean of {len(each)} example prompts"]["each_miou"] = [r["miou"] for r in each]
  base = metrics.IoUAccumulator()  # the untuned prompt's mask copied to every query
  for e in evals:
    m = predict.resize_nearest_torch((first["mask"] == 1).astype(np.uint8), e["mask"].shape)
    base.add(m == 1, e["mask"] == 1, 1, e["mask"] == 255)
  res["copy prompt mask (baseline)"] = base.result()
  beta = tuner.loss_beta(c)
  untuned = {"image": data["image"][i0], "target": data["target"][i0]}
  (res["tuned prompt"]["heldout_loss"], res["untuned example prompt"]["heldout_loss"]) = (
    _heldout_losses(model, [out["prompt"], untuned], evals, beta)
  )
  res["_info"] = {
    "tune_examples": len(data["image"]),
    "eval_examples": len(evals),
    "tune_steps": args.tune_steps,
    "tune_lr": float(c.optim.lr),
    "tune_beta": beta,
    "first_loss": out["losses"][0],
    "last_loss": out["losses"][-1],
    "workdir": wd,
  }
  return res


def evaluate(args):
  """Runs the three experiments; writes WORKDIR/real_results.json and real_results.md."""
  from incontext import checkpoint, outputs
  from incontext.evaluators import davis, run
  from experiments.configs import seggpt_eval

  t0 = time.time()
  model = checkpoint.load_model(args.checkpoint)
  results = {
    "checkpoint": os.path.abspath(args.checkpoint),
    "weights_hash": checkpoint.read_meta(args.checkpoint).get("weights_hash"),
    "train_source": checkpoint.read_meta(args.checkpoint).get("source"),
    "model": checkpoint.config_to_dict(model.cfg),
  }
  out_json = os.path.join(args.workdir, "real_results.json")

  def dump():
    outputs.write_json(out_json, results, default=float)

  # 1. in-context tuning vs the untuned example prompt (horses, Kvasir: never trained on)
  tasks = [] if args.tune_tasks == "none" else [t for t in args.tune_tasks.split(",") if t]
  bad = sorted(set(tasks) - set(TUNE_EVAL))
  if bad:
    raise SystemExit(f"--tune_tasks: unknown {bad}; known: {sorted(TUNE_EVAL)} or none")
  if args.tune_steps > 0 and tasks:
    results["tuning"] = {}
    for t in tasks:
      results["tuning"][t] = tuning_experiment(model, args, t)
      dump()
  # 2. 1-shot vs k-shot (feature / spatial ensemble) on held-out episodes
  ev = seggpt_eval.get_config(f"shots={args.shots},episodes={args.episodes}")
  results["fewshot"] = {}
  for name, bench in ev.fewshot.items():
    bench = dict(bench)
    bench["source"] = dict(
      bench["source"], root=os.path.join(args.data, bench["source"]["root"].split("/")[-1])
    )
    bench["name"] = name
    results["fewshot"][name] = run.fewshot_benchmark(model, bench, seed=0)
    dump()
  # 3. video propagation vs copying the first mask (held-out DAVIS sequences)
  droot = os.path.join(args.data, "davis2016_subset")
  results["davis"] = davis.evaluate_davis(
    model, droot, list(HELD_OUT_SEQS), memories=(0, args.memory), max_frames=args.max_frames
  )
  dump()
  # ... and with the decision threshold calibrated on the training sequences (never on the
  # evaluated ones), per memory size
  if not args.no_calibrate:
    cal = {}
    for k in (0, args.memory):
      t, scores = davis.calibrate_threshold(
        model, droot, list(common.DAVIS_TRAIN), memory=k, max_frames=args.max_frames
      )
      r = davis.evaluate_davis(
        model, droot, list(HELD_OUT_SEQS), memories=(k,), max_frames=args.max_frames, threshold=t
      )
      cal[f"K={k}"] = dict(r[f"K={k}"], threshold=t, calibration_jf=scores)
    cal["copy first mask (baseline)"] = results["davis"]["copy first mask (baseline)"]
    results["davis_calibrated"] = cal
  results["seconds"] = round(time.time() - t0)
  dump()
  text = run.table(results)
  if results.get("davis_calibrated"):
    text += (
      "\n| davis, threshold calibrated on the training sequences | threshold | J&F | J | F |"
      "\n|---|---|---|---|---|\n"
    )
    for m, r in results["davis_calibrated"].items():
      text += f"| {m} | {r.get('threshold', '')} | {r['J&F']:.1f} | {r['J']:.1f} | {r['F']:.1f} |\n"
  if results.get("tuning"):
    text += (
      "\n| tuning task | method | mIoU | FB-IoU | held-out tuning loss |\n|---|---|---|---|---|\n"
    )
    for t, res in results["tuning"].items():
      for m, r in res.items():
        if not m.startswith("_"):
          hl = f"{r['heldout_loss']:.4f}" if "heldout_loss" in r else ""
          text += f"| {t} | {m} | {r['miou']:.1f} | {r['fb_iou']:.1f} | {hl} |\n"
  outputs.write_text(os.path.join(args.workdir, "real_results.md"), text)
  print(text)


if __name__ == "__main__":
  main()
