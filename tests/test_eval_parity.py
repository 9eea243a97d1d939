"""The trainer's periodic evaluation and experiments/evaluate.py are one code path: for the
same params they report the same mIoU on the same episodes."""

import json

import pytest

from _shared import shared_data_dir
from experiments.configs import seggpt_eval, seggpt_train
from incontext.evaluators import run
from incontext.train import trainer


@pytest.mark.slow  # a training run (1 step, compiles the train step): ~40 s on 2 idle cores
def test_trainer_eval_equals_evaluate(tmp_path):
  c = seggpt_train.get_config("real,runlocal")
  with c.unlocked():
    c.total_steps = 1
    c.evals.every, c.evals.at_end, c.evals.num_episodes = 0, True, 6
    c.evals.data.source.root = str(shared_data_dir("coco128_seg"))
    c.input.procedural_frac = 0.0
    c.input.datasets = [
      dict(d, root=str(shared_data_dir(d["name"])))  # COCO only: fast
      for d in c.input.datasets
      if d["name"] == "coco128_seg"
    ]
  out = trainer.run(c, str(tmp_path / "train"))
  logged = [json.loads(l) for l in open(tmp_path / "train" / "metrics.jsonl")][-1]
  ev = seggpt_eval.get_config("runlocal")
  ev.init = str(tmp_path / "train" / "params")
  ev.seed = c.evals.seed
  ev.fewshot = {"coco_fold0": trainer.eval_benchmark(c)}
  ev.davis.sequences = ()
  res = run.run_eval(ev, str(tmp_path / "eval"))["fewshot"]["coco_fold0"]
  assert res["_info"]["episodes"] == 6
  # Same code, same weights, same episodes: the numbers are identical, not merely close.
  assert logged["eval/miou"] == out["eval"]["eval/miou"] == res["1-shot"]["miou"]
  assert logged["eval/baseline_copy_miou"] == res["copy prompt mask (baseline)"]["miou"]
  assert [logged["eval/miou_ci_lo"], logged["eval/miou_ci_hi"]] == res["1-shot"]["miou_ci95"]
