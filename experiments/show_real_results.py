"""Shows tuning, few-shot ensembles and video propagation working on the real data in ../shared/data.

Stages (each writes under --workdir; rerunning a stage overwrites its outputs):

  # 1. (only if no checkpoint from experiments/train.py is at hand) train a small SegGPT on the
  #    training splits below with a minimal loop for a fixed wall-clock budget (CPU: ~15 min):
  python -m experiments.show_real_results train --workdir /tmp/real --minutes 15

  # 2. the three experiments with that (or any) params directory; writes results.json + table:
  python -m experiments.show_real_results eval --workdir /tmp/real --checkpoint /tmp/real/params

Splits (fixed, by sorted file order and a seeded permutation; nothing evaluated is trained on):
  * DAVIS-2016 subset: sequences in HELD_OUT_SEQS are never trained on (video propagation).
  * Kvasir-SEG: never trained on; prompt tuning uses TUNE_TRAIN images to tune, TUNE_EVAL others
    to evaluate (the untuned baseline prompt is the first tuning image with its mask).
  * Weizmann horse: the first 200 of a seeded permutation train, the rest are k-shot episodes.
  * coco128_seg: fold-0 classes (COCO-20i interleaved) are held out of training; k-shot episodes
    of those classes.

Measured (2-core CPU shared with other jobs, load ~12; experiments/show_real_results.json):
  64x64 model (8 blocks, width 128), 1113 steps at batch 8 (~48 min of contended CPU):
  eval --tune_steps 150 --episodes 60 --shots 4 --memory 8 gives
    Kvasir tuning: tuned 0.0 / untuned example 0.0 / copy-prompt baseline 25.4 mIoU
    horse: 1-shot 0.0, 4-shot feature 0.0, 4-shot spatial 0.0, copy baseline 41.0 mIoU
    coco128 fold 0: 0.0 / 0.0 / 0.0, copy baseline 8.7 mIoU
    DAVIS (boat, kite-walk, rollerblade): K=0 0.0, K=8 0.0, copy first mask 25.3 J&F
  The model had not left the "predict background everywhere" phase of SegGPT training (its
  output is black for every input; the prompt gradient norm during tuning is ~1e-5), so no
  method beats the copy baselines yet: these runs show the harness end to end, not SegGPT's
  behaviour. A longer run (or converted official weights as --checkpoint) is needed for that.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

DATA = "../shared/data"
HELD_OUT_SEQS = ("boat", "kite-walk", "rollerblade")
HORSE_TRAIN = 200
TUNE_TRAIN, TUNE_EVAL = 64, 100
SMALL_MODEL = dict(image_size=(64, 64), patch=8, width=128, depth=8, num_heads=4, mlp_dim=512,
                   feature_layers=(3, 5, 6, 7), decoder_dim=16, pretrain_grid=8, drop_path=0.0)
# --size 32: the trainer's quickstart shape (fast on CPU) at 32x32 halves.
TINY_MODEL = dict(image_size=(32, 32), patch=8, width=128, depth=6, num_heads=4, mlp_dim=256,
                  merge_index=1, feature_layers=(2, 3, 4, 5), decoder_dim=16, pretrain_grid=8,
                  drop_path=0.0)


def _perm(n, seed=0):
  return np.random.default_rng(seed).permutation(n)


def split_sources(root=DATA):
  """{name: source} of the training and held-out subsets used by both stages."""
  from incontext.data import sources
  davis_all = sorted(os.listdir(os.path.join(root, "davis2016_subset", "JPEGImages", "480p")))
  horses = sources.weizmann_horse(os.path.join(root, "weizmann_horse"))
  hp = _perm(len(horses))
  kv = sources.kvasir_seg(os.path.join(root, "kvasir_seg"))
  kp = _perm(len(kv), seed=1)
  return {
      "davis_train": sources.davis(os.path.join(root, "davis2016_subset"), split=None,
                                   sequences=[s for s in davis_all if s not in HELD_OUT_SEQS]),
      "davis_eval_seqs": list(HELD_OUT_SEQS),
      "horse_train": horses.subset(hp[:HORSE_TRAIN]),
      "horse_eval": horses.subset(hp[HORSE_TRAIN:]),
      "kvasir_tune": kv.subset(kp[:TUNE_TRAIN]),
      "kvasir_eval": kv.subset(kp[TUNE_TRAIN:TUNE_TRAIN + TUNE_EVAL]),
  }


def train_config(root=DATA, half_prob=0.5, size=64):
  """Pipeline config of the training mixture (held-out parts excluded; see module doc).

  `half_prob`: share of samples whose mask is exactly the query half (the inference task); the
  rest use Painter's random block masks."""
  from incontext.data import ops, pipeline
  cfg = pipeline.shared_data_config(
      root, image_size=(size, size), patch_size=8,
      datasets=["coco128_seg", "clothing_co_parsing", "camvid", "davis2016_subset",
                "weizmann_horse"], read_threads=2, prefetch=8)
  for d in cfg["datasets"]:
    if d["name"] == "coco128_seg":
      d["exclude_fold"] = 0
  cfg["pp"] = ops.DEFAULT_PP.replace("half_prob=0.1", f"half_prob={half_prob}")
  assert f"half_prob={half_prob}" in cfg["pp"], cfg["pp"]
  return cfg


def train(args):
  """Minimal data-parallel training loop for a wall-clock budget; writes WORKDIR/params."""
  import jax
  import optax
  from flax import nnx
  from tqdm import tqdm

  from incontext import checkpoint, losses
  from incontext.data import pipeline
  from incontext.models import seggpt

  cfg = seggpt.get_config("Ti/16", **(SMALL_MODEL if args.size == 64 else TINY_MODEL))
  prev = os.path.join(args.workdir, "params")
  steps_before = 0
  if os.path.isdir(prev):   # continue from the last save (params only; the optimiser restarts)
    model = checkpoint.load_model(prev)
    steps_before = int(checkpoint.read_meta(prev)["source"].get("steps", 0))
    args.seed += steps_before   # a different example stream for the continuation
  else:
    model = seggpt.SegGPT(cfg, rngs=nnx.Rngs(args.seed))
  graphdef, params = nnx.split(model)
  srcs = split_sources(args.data)
  it = pipeline.make_train_iterator(
      train_config(args.data, args.half_prob, args.size), seed=args.seed, batch_size=args.batch_size,
      sources_override={"davis2016_subset": srcs["davis_train"],
                        "weizmann_horse": srcs["horse_train"]})
  proc = None
  if args.procedural_frac > 0:   # easier synthetic pairs (incontext.data.procedural) mixed in
    from incontext.data import procedural
    proc = procedural.make_train_iterator(
        dict(image_size=cfg.image_size[0], patch_size=cfg.patch), seed=args.seed,
        batch_size=args.batch_size)
  mix = np.random.default_rng(args.seed)
  sched = optax.warmup_constant_schedule(0.0, args.lr, 100)
  tx = optax.chain(optax.clip_by_global_norm(1.0),
                   optax.adamw(sched, b2=0.999, weight_decay=0.05))
  opt = tx.init(params)

  def step(params, opt, batch):
    def objective(p):
      pred = nnx.merge(graphdef, p)(batch["image"], batch["target"], batch["mask"],
                                    batch["seg_type"])
      return losses.masked_smooth_l1(pred, batch["target"], batch["mask"], batch["valid"],
                                     patch=cfg.patch)
    loss, g = jax.value_and_grad(objective)(params)
    upd, opt = tx.update(g, opt, params)
    return optax.apply_updates(params, upd), opt, loss

  step = jax.jit(step, donate_argnums=(0, 1))
  os.makedirs(args.workdir, exist_ok=True)
  log = []
  t0 = time.time()
  last_save = t0
  n = 0
  bar = tqdm(desc="train", unit="step")

  def save():
    nnx.update(model, params)
    checkpoint.save_model(os.path.join(args.workdir, "params"), model, overwrite=True,
                          source={"kind": "show_real_results.train", "steps": steps_before + n,
                                  "batch_size": args.batch_size, "lr": args.lr,
                                  "seconds": round(time.time() - t0)})
    with open(os.path.join(args.workdir, f"train_log_{steps_before}.json"), "w") as f:
      json.dump(log, f)

  while time.time() - t0 < args.minutes * 60:
    batch = next(proc if proc is not None and mix.random() < args.procedural_frac else it)
    params, opt, loss = step(params, opt, {k: batch[k] for k in
                                           ("image", "target", "mask", "valid", "seg_type")})
    n += 1
    if n % 10 == 0:
      loss = float(loss)
      if not np.isfinite(loss):
        raise FloatingPointError(f"non-finite loss at step {n}")
      log.append({"step": steps_before + n, "loss": loss, "t": round(time.time() - t0, 1)})
      bar.set_postfix(loss=f"{loss:.4f}")
    bar.update(1)
    if time.time() - last_save > 180:
      save()
      last_save = time.time()
  bar.close()
  save()
  print(f"trained {n} steps in {time.time() - t0:.0f}s; params in {args.workdir}/params")


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  sub = p.add_subparsers(dest="stage", required=True)
  t = sub.add_parser("train")
  t.add_argument("--workdir", required=True)
  t.add_argument("--minutes", type=float, default=15.0)
  t.add_argument("--batch_size", type=int, default=16)
  t.add_argument("--lr", type=float, default=1e-3)
  t.add_argument("--seed", type=int, default=0)
  t.add_argument("--half_prob", type=float, default=0.5)
  t.add_argument("--procedural_frac", type=float, default=0.0,
                 help="share of batches from the procedural generator (0 = real data only)")
  t.add_argument("--size", type=int, default=64, choices=(32, 64), help="image_size of a half")
  t.add_argument("--data", default=DATA)
  e = sub.add_parser("eval")
  e.add_argument("--workdir", required=True)
  e.add_argument("--checkpoint", required=True)
  e.add_argument("--data", default=DATA)
  e.add_argument("--tune_steps", type=int, default=300)
  e.add_argument("--shots", type=int, default=4)
  e.add_argument("--episodes", type=int, default=100)
  e.add_argument("--memory", type=int, default=8)
  e.add_argument("--max_frames", type=int, default=None)
  args = p.parse_args(argv)
  if not os.path.isdir(args.data):
    sys.exit(f"real data not found at {args.data} (expected ../shared/data next to the project)")
  if args.stage == "train":
    train(args)
  else:
    evaluate(args)


def _binary_scores(model, lp_image, lp_target, examples, seg_type="semantic"):
  """IoU accumulator over examples with one (normalised) prompt slot."""
  from incontext import canvas, inference, metrics
  from incontext.evaluators.fewshot import WHITE
  acc = metrics.IoUAccumulator()
  size = tuple(model.cfg.image_size)
  qs = np.stack([inference.prepare_image(e["image"], size) for e in examples])
  preds = []
  for i in range(0, len(qs), 16):
    preds.append(inference.predict_canvas_batch(model, lp_image[None], lp_target[None],
                                                qs[i:i + 16], seg_type=seg_type))
  preds = np.concatenate(preds)
  for e, p in zip(examples, preds):
    lab = inference.labels_from_prediction(canvas.denormalize(p), WHITE, [1])
    fg = inference.resize_nearest_torch(lab, e["mask"].shape) == 1
    acc.add(fg, e["mask"] == 1, 1, e["mask"] == 255)
  return acc.result()


def tuning_experiment(model, args, srcs):
  """Tune a prompt on TUNE_TRAIN Kvasir images; score it on TUNE_EVAL others vs the untuned
  example prompt (the first tuning image and its mask) and the copy-the-prompt-mask baseline."""
  from experiments.configs import prompt_tune
  from incontext import inference, metrics
  from incontext.train import tuner
  c = prompt_tune.get_config("task=kvasir")
  c.init = args.checkpoint
  c.total_steps = args.tune_steps
  c.task.root = os.path.join(args.data, "kvasir_seg")
  c.ckpt_every = max(50, args.tune_steps // 4)
  wd = os.path.join(args.workdir, "tune_kvasir")
  out = tuner.run_tune(c, wd)
  evals = [srcs["kvasir_eval"][i] for i in range(len(srcs["kvasir_eval"]))]
  data, _ = tuner.load_task(dict(c.task), model.cfg.image_size)
  first = srcs["kvasir_tune"][0]
  res = {
      "tuned prompt": _binary_scores(model, out["prompt"]["image"], out["prompt"]["target"],
                                     evals),
      "untuned example prompt": _binary_scores(model, data["image"][0], data["target"][0], evals),
  }
  base = metrics.IoUAccumulator()
  for e in evals:
    m = inference.resize_nearest_torch((first["mask"] == 1).astype(np.uint8), e["mask"].shape)
    base.add(m == 1, e["mask"] == 1, 1, e["mask"] == 255)
  res["copy prompt mask (baseline)"] = base.result()
  res["_info"] = {"tune_examples": TUNE_TRAIN, "eval_examples": len(evals),
                  "tune_steps": args.tune_steps, "first_loss": out["losses"][0],
                  "last_loss": out["losses"][-1], "workdir": wd}
  return res


def evaluate(args):
  """Runs the three experiments; writes WORKDIR/real_results.json and real_results.md."""
  from incontext import checkpoint
  from incontext.evaluators import davis, run
  from experiments.configs import seggpt_eval
  t0 = time.time()
  model = checkpoint.load_model(args.checkpoint)
  srcs = split_sources(args.data)
  results = {"checkpoint": os.path.abspath(args.checkpoint),
             "weights_hash": checkpoint.read_meta(args.checkpoint).get("weights_hash"),
             "train_source": checkpoint.read_meta(args.checkpoint).get("source"),
             "model": checkpoint.config_to_dict(model.cfg)}
  out_json = os.path.join(args.workdir, "real_results.json")

  def dump():
    tmp = out_json + ".tmp"
    with open(tmp, "w") as f:
      json.dump(results, f, indent=2, default=float)
    os.replace(tmp, out_json)

  # 1. in-context tuning vs the untuned example prompt (Kvasir, never trained on)
  if args.tune_steps > 0:
    results["tuning_kvasir"] = tuning_experiment(model, args, srcs)
    dump()
  # 2. 1-shot vs k-shot (feature / spatial ensemble) on held-out episodes
  ev = seggpt_eval.get_config(f"shots={args.shots},episodes={args.episodes}")
  results["fewshot"] = {}
  for name, bench in ev.fewshot.items():
    bench = dict(bench)
    bench["source"] = dict(bench["source"], root=os.path.join(args.data, bench["source"]["root"]
                                                              .split("/")[-1]))
    bench["name"] = name
    results["fewshot"][name] = run.fewshot_benchmark(model, bench, seed=0)
    dump()
  # 3. video propagation vs copying the first mask (held-out DAVIS sequences)
  results["davis"] = davis.evaluate_davis(model, os.path.join(args.data, "davis2016_subset"),
                                          list(HELD_OUT_SEQS), memories=(0, args.memory),
                                          max_frames=args.max_frames)
  results["seconds"] = round(time.time() - t0)
  dump()
  text = run.table(results)
  if "tuning_kvasir" in results:
    text += "\n| kvasir (tuning) | method | mIoU | FB-IoU |\n|---|---|---|---|\n"
    for m, r in results["tuning_kvasir"].items():
      if not m.startswith("_"):
        text += f"| kvasir | {m} | {r['miou']:.1f} | {r['fb_iou']:.1f} |\n"
  with open(os.path.join(args.workdir, "real_results.md"), "w") as f:
    f.write(text)
  print(text)


if __name__ == "__main__":
  main()
