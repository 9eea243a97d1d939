"""`run_eval(config, workdir)`: the evaluation harness behind experiments/evaluate.py.

Loads a params directory (`config.init`: converted official weights or a trained checkpoint),
runs every few-shot benchmark in `config.fewshot`, the DAVIS evaluation in `config.davis` and
the YouTube-VOS submission in `config.youtube_vos`, and writes WORKDIR/results.json and
WORKDIR/results.md (a table); each result sits next to its baseline (copy the prompt mask /
copy the first mask), each mIoU has its 95% bootstrap interval over the episodes, and a paper
benchmark has the paper's number for the same row. The config is read through its typed
sections (`incontext.evaluators.sections.EvalConfig`, built once in `run_eval`).
"""

from __future__ import annotations

import dataclasses
import logging
import os

import numpy as np

from incontext import checkpoint, outputs, prompts
from incontext.data import episodes, folds, selection, sources
from incontext.errors import UserError
from incontext.evaluators import davis, fewshot, youtube_vos
from incontext.evaluators.sections import Benchmark, DavisConfig, EvalConfig

log = logging.getLogger(__name__)


def _sel(n: int, sel: dict | None) -> list[int]:
  if not sel:
    return list(range(n))
  return selection.select_indices(n, dict(sel))


def _classes(src, bench: Benchmark, indices) -> tuple[list[int] | None, list[str]]:
  """(class ids of the benchmark or None for the fold's, names in `class_names` that the
  source lacks)."""
  if bench.classes:
    return [int(c) for c in bench.classes], []
  if bench.class_names:
    by_name = {v: int(k) for k, v in (src.class_names or {}).items()}
    want = list(bench.class_names)
    return [by_name[n] for n in want if n in by_name], [n for n in want if n not in by_name]
  if bench.folds_over_usable:
    # LVIS-92i: folds over the classes that have more than `shots` examples.
    ids = sorted(int(c) for c in src.class_names if int(c) > 0)
    index = episodes.class_index(src, ids, indices)
    usable = [c for c, ex in index.items() if len(ex) >= bench.shots + 1]
    return folds.fold_classes(usable, bench.fold, bench.num_folds, bench.scheme), []
  return None, []


def fewshot_benchmark(model, bench: Benchmark | dict, *, seed: int = 0, learned=()) -> dict:
  """One few-shot benchmark (a `sections.Benchmark`, or a dict of its keys: see
  experiments/configs/seggpt_eval.py); the same function runs the trainer's periodic evaluation
  (incontext.train.trainer). `learned`: (row name, LearnedPrompt) pairs scored on the same
  episodes, beside the example prompts."""
  bench = Benchmark.of(bench)
  name = bench.name or "fewshot"
  src = sources.make_source(dict(bench.source))
  idx = _sel(len(src), bench.select)
  indices = None if not bench.select else idx
  shots = bench.shots
  classes, missing = _classes(src, bench, indices)
  if missing:
    log.warning(
      "%s: %d of its classes are not in %s (first: %s)",
      name,
      len(missing),
      bench.source.get("root"),
      missing[0],
    )
  eps = episodes.SemanticEpisodes(
    src,
    fold=bench.fold,
    shots=shots,
    num_episodes=bench.episodes,
    seed=seed,
    num_folds=bench.num_folds,
    scheme=bench.scheme,
    classes=classes,
    indices=indices,
  )
  methods = [("1-shot", 1, "feature")]
  if shots > 1:
    methods += [(f"{shots}-shot {e}", shots, e) for e in bench.ensembles]
  res = fewshot.evaluate_fewshot(
    model,
    src,
    eps.episodes,
    methods=methods,
    seg_type=bench.seg_type,
    desc=name,
    learned=learned,
  )
  for r in res.values():
    r["per_class"] = {str(k): v for k, v in r["per_class"].items()}
  paper = dict(bench.paper or {})
  for name, r in res.items():
    if name in paper:
      r["paper"] = paper[name]
    elif name != "1-shot" and "baseline" not in name and "few-shot" in paper:
      r["paper_few_shot"] = paper["few-shot"]  # shots / ensemble not stated by the paper
  res["_info"] = {
    "classes": eps.fold_classes,
    "examples": len(idx),
    "episodes": len(eps),
    "shots": shots,
    "seed": seed,
    "missing_classes": missing,
    "paper_source": paper.get("source"),
  }
  return res


def _fmt(r: dict, k: str) -> str:
  v = r.get(k)
  return f"{v:.1f}" if isinstance(v, (int, float)) and np.isfinite(v) else ""


def table(results: dict) -> str:
  """Markdown table of a results dict: each mIoU with its 95% bootstrap interval over the
  episodes and the paper's number for the same row ('few-shot' rows of the paper, which state
  neither shots nor ensemble, are marked *)."""
  lines = [
    "| benchmark | method | mIoU [95% CI] | paper | FB-IoU | J&F | J | F |",
    "|---|---|---|---|---|---|---|---|",
  ]
  sources_seen = []
  for bench, res in results.get("fewshot", {}).items():
    src = res.get("_info", {}).get("paper_source")
    if src and src not in sources_seen:
      sources_seen.append(src)
    for m, r in res.items():
      if m.startswith("_"):
        continue
      ci = r.get("miou_ci95")
      miou = _fmt(r, "miou")
      if miou and ci and all(np.isfinite(ci)):
        miou += f" [{ci[0]:.1f}, {ci[1]:.1f}]"
      paper = _fmt(r, "paper") or (_fmt(r, "paper_few_shot") + "*" if "paper_few_shot" in r else "")
      lines.append(f"| {bench} | {m} | {miou} | {paper} | {_fmt(r, 'fb_iou')} | | | |")
  for key in ("davis", "youtube_vos"):
    for m, r in results.get(key, {}).items():
      if m.startswith("_") or not isinstance(r, dict):
        continue
      lines.append(
        f"| {key} | {m} | | {_fmt(r, 'paper')} | | {_fmt(r, 'J&F')} | "
        f"{_fmt(r, 'J')} | {_fmt(r, 'F')} |"
      )
    src = results.get(key, {}).get("_info", {}).get("paper_source")
    if src and src not in sources_seen:
      sources_seen.append(src)
  out = "\n".join(lines) + "\n"
  if sources_seen:
    out += (
      "\nPaper numbers: " + "; ".join(sources_seen) + ". * the paper's few-shot number "
      "(shots and ensemble not stated).\n"
    )
  return out


def write_results(workdir: str, results: dict):
  """WORKDIR/results.json and results.md, each written atomically (rewritten after every
  benchmark, so a stopped run keeps the finished ones)."""
  outputs.write_json(os.path.join(workdir, "results.json"), results, default=float)
  outputs.write_text(os.path.join(workdir, "results.md"), table(results))


def davis_benchmark(model, d: DavisConfig, workdir: str) -> dict:
  """`config.davis`: explicit `sequences`, or those of ImageSets/{year}/{split}.txt."""
  seqs = list(d.sequences) or davis.split_sequences(d.root, year=d.year, split=d.split or "val")
  res = davis.evaluate_davis(
    model,
    d.root,
    seqs,
    memories=list(d.memories),
    resolution=d.resolution,
    max_frames=d.max_frames,
    save_dir=os.path.join(workdir, "davis_masks") if d.save_masks else None,
  )
  paper = dict(d.paper or {})
  for name, r in res.items():
    if name in paper:
      r["paper"] = paper[name]
  res["_info"] = {"sequences": seqs, "paper_source": paper.get("source")}
  return res


def run_eval(config, workdir: str, model=None) -> dict:
  """Runs config.fewshot, config.davis and config.youtube_vos; returns and writes the
  results. `config`: the ConfigDict of experiments/configs/seggpt_eval.py or an EvalConfig."""
  c = EvalConfig.of(config)
  if model is None:
    if not c.init:
      raise UserError(
        "config.init must name a params directory (converted official weights "
        "or a trained checkpoint)"
      )
    model = checkpoint.load_model(c.init, **c.model_overrides)
  results = {
    "init": os.path.abspath(c.init) if c.init else None,
    "weights_hash": checkpoint.read_meta(c.init).get("weights_hash")
    if c.init
    else checkpoint.params_hash(model),
    "model": checkpoint.config_to_dict(model.cfg),
    "fewshot": {},
  }
  learned = []
  if c.learned_prompt:  # scored beside the example-prompt rows of every benchmark
    lp_path = c.learned_prompt
    try:
      lp = prompts.load(lp_path, model_cfg=model.cfg, weights_hash=results["weights_hash"])
    except FileNotFoundError:
      raise UserError(f"config.learned_prompt={lp_path}: no such file") from None
    except ValueError as e:
      raise UserError(f"config.learned_prompt={lp_path}: {e}") from None
    learned = [(f"learned prompt ({os.path.basename(lp_path)})", lp)]
    results["learned_prompt"] = os.path.abspath(lp_path)
  for name, bench in c.fewshot.items():
    bench = bench if bench.name else dataclasses.replace(bench, name=name)
    results["fewshot"][name] = fewshot_benchmark(model, bench, seed=c.seed, learned=learned)
    write_results(workdir, results)
  d = c.davis
  if d is not None and (d.sequences or d.split):
    results["davis"] = davis_benchmark(model, d, workdir)
    write_results(workdir, results)
  y = c.youtube_vos
  if y is not None:
    results["youtube_vos"] = youtube_vos.write_submission(
      model,
      y.root,
      os.path.join(workdir, "youtube_vos"),
      split=y.split,
      memories=list(y.memories),
      max_frames=y.max_frames,
      videos=list(y.videos) or None,
    )
    paper = dict(y.paper or {})
    results["youtube_vos"]["_info"] = {
      "paper_source": paper.get("source"),
      "paper_G": paper.get("G"),
    }
  write_results(workdir, results)
  return results
