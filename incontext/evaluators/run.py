"""`run_eval(config, workdir)`: the evaluation harness behind experiments/evaluate.py.

Loads a params directory (`config.init`: converted official weights or a trained checkpoint),
runs every few-shot benchmark in `config.fewshot` and the DAVIS evaluation in `config.davis`,
and writes WORKDIR/results.json and WORKDIR/results.md (a table); each result sits next to its
baseline (copy the prompt mask / copy the first mask).
"""
from __future__ import annotations

import json
import os

import numpy as np

from incontext import checkpoint


def _sel(n: int, sel: dict | None) -> list[int]:
  if not sel:
    return list(range(n))
  from incontext.train import tuner
  return tuner.select_indices(n, dict(sel))


def fewshot_benchmark(model, bench: dict, *, seed: int = 0) -> dict:
  """One few-shot benchmark (see experiments/configs/seggpt_eval.py for the keys); the same
  function runs the trainer's periodic evaluation (incontext.train.trainer)."""
  from incontext.data import episodes, sources
  from incontext.evaluators import fewshot
  src = sources.make_source(dict(bench["source"]))
  idx = _sel(len(src), bench.get("select"))
  shots = int(bench.get("shots", 1))
  classes = [int(c) for c in bench["classes"]] if bench.get("classes") else None
  eps = episodes.SemanticEpisodes(
      src, fold=int(bench.get("fold", 0)), shots=shots, num_episodes=int(bench["episodes"]),
      seed=seed, num_folds=int(bench.get("num_folds", 4)),
      scheme=bench.get("scheme", "interleaved"), classes=classes,
      indices=None if not bench.get("select") else idx)
  methods = [("1-shot", 1, "feature")]
  if shots > 1:
    methods += [(f"{shots}-shot {e}", shots, e) for e in bench.get("ensembles", ("feature",))]
  res = fewshot.evaluate_fewshot(model, src, eps.episodes, methods=methods,
                                 seg_type=bench.get("seg_type", "semantic"),
                                 desc=bench.get("name", "fewshot"))
  for r in res.values():
    r["per_class"] = {str(k): v for k, v in r["per_class"].items()}
  res["_info"] = {"classes": eps.fold_classes, "examples": len(idx), "episodes": len(eps),
                  "shots": shots, "seed": seed}
  return res


def table(results: dict) -> str:
  """Markdown table of a results dict."""
  lines = ["| benchmark | method | mIoU | FB-IoU | J&F | J | F |", "|---|---|---|---|---|---|---|"]
  f = lambda r, k: f"{r[k]:.1f}" if k in r and np.isfinite(r[k]) else ""
  for bench, res in results.get("fewshot", {}).items():
    for m, r in res.items():
      if not m.startswith("_"):
        lines.append(f"| {bench} | {m} | {f(r, 'miou')} | {f(r, 'fb_iou')} | | | |")
  for m, r in results.get("davis", {}).items():
    lines.append(f"| davis | {m} | | | {f(r, 'J&F')} | {f(r, 'J')} | {f(r, 'F')} |")
  return "\n".join(lines) + "\n"


def write_results(workdir: str, results: dict):
  os.makedirs(workdir, exist_ok=True)
  for name, text in (("results.json", json.dumps(results, indent=2, default=float)),
                     ("results.md", table(results))):
    tmp = os.path.join(workdir, f".tmp_{name}")
    with open(tmp, "w") as fh:
      fh.write(text)
    os.replace(tmp, os.path.join(workdir, name))


def run_eval(config, workdir: str, model=None) -> dict:
  """Runs config.fewshot and config.davis; returns and writes the results."""
  from incontext.evaluators import davis
  c = config
  if model is None:
    if not c.get("init"):
      raise ValueError("config.init must name a params directory (converted official weights "
                       "or a trained checkpoint)")
    model = checkpoint.load_model(c.init, **dict(c.get("model_overrides") or {}))
  results = {"init": os.path.abspath(c.init) if c.get("init") else None,
             "weights_hash": checkpoint.read_meta(c.init).get("weights_hash")
             if c.get("init") else checkpoint.params_hash(model),
             "model": checkpoint.config_to_dict(model.cfg), "fewshot": {}}
  for name, bench in dict(c.get("fewshot") or {}).items():
    bench = dict(bench)
    bench.setdefault("name", name)
    results["fewshot"][name] = fewshot_benchmark(model, bench, seed=int(c.get("seed", 0)))
    write_results(workdir, results)
  if c.get("davis") and c.davis.get("sequences"):
    d = dict(c.davis)
    results["davis"] = davis.evaluate_davis(
        model, d["root"], list(d["sequences"]), memories=list(d.get("memories", (0, 8))),
        resolution=d.get("resolution", "480p"), max_frames=d.get("max_frames"),
        save_dir=os.path.join(workdir, "davis_masks") if d.get("save_masks") else None)
  write_results(workdir, results)
  return results
