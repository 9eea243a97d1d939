"""experiments/show_real_results.py end to end on ../shared/data with a tiny random model:
every experiment runs and writes its JSON and table (numbers are the script's business)."""

import json

import pytest

from _shared import shared_data_dir
from experiments import show_real_results
from incontext import checkpoint
from incontext.models import seggpt

# Every test here reads the real data in ../shared/data: integration tier.
pytestmark = pytest.mark.integration


def test_eval_stage_writes_results(tmp_path):
  data = str(shared_data_dir())
  params = str(tmp_path / "params")
  checkpoint.save_model(
    params,
    seggpt.create("test", image_size=(16, 16), patch=4, drop_path=0.0, seed=0),
    source={"trainer": "test", "step": 0, "loss": {"beta": 5.0}},
  )
  show_real_results.main(
    [
      "eval",
      "--workdir",
      str(tmp_path / "w"),
      "--checkpoint",
      params,
      "--data",
      data,
      "--tune_steps",
      "2",
      "--episodes",
      "2",
      "--shots",
      "2",
      "--memory",
      "1",
      "--max_frames",
      "3",
    ]
  )
  res = json.load(open(tmp_path / "w" / "real_results.json"))
  assert set(res["tuning"]) == {"horse", "kvasir"}
  for task, n_eval in show_real_results.TUNE_EVAL.items():
    tune = res["tuning"][task]
    assert tune["_info"]["tune_beta"] == 5.0 and tune["_info"]["tune_steps"] == 2
    assert tune["_info"]["eval_examples"] == n_eval and tune["_info"]["tune_examples"] == 64
    for m in ("tuned prompt", "untuned example prompt"):
      assert 0 <= tune[m]["miou"] <= 100 and tune[m]["heldout_loss"] > 0
    mean = tune["untuned, mean of 8 example prompts"]
    assert len(mean["each_miou"]) == 8
    # the first of the 8 is the untuned example prompt itself
    assert mean["each_miou"][0] == tune["untuned example prompt"]["miou"]
    assert mean["miou"] == pytest.approx(sum(mean["each_miou"]) / 8, rel=1e-6)
  assert set(res["fewshot"]) == {"coco128_fold0", "horse"}
  assert {"1-shot", "2-shot feature", "2-shot spatial", "copy prompt mask (baseline)"} <= set(
    res["fewshot"]["horse"]
  )
  assert {"K=0", "K=1", "copy first mask (baseline)"} <= set(res["davis"])
  cal = res["davis_calibrated"]
  for k in ("K=0", "K=1"):
    assert cal[k]["calibration_jf"][str(cal[k]["threshold"])] == max(
      cal[k]["calibration_jf"].values()
    )
  assert cal["copy first mask (baseline)"] == res["davis"]["copy first mask (baseline)"]
  table = (tmp_path / "w" / "real_results.md").read_text()
  assert "held-out tuning loss" in table and "copy first mask (baseline)" in table
  assert "threshold calibrated on the training sequences" in table
  assert "| horse | tuned prompt |" in table and "| kvasir | tuned prompt |" in table


def test_tuning_splits_are_disjoint():
  """Each tuning task's scoring examples are not its tuning examples, and the horse ones are
  not the horse few-shot episodes' examples either (all three slices of one permutation)."""
  from experiments.configs import prompt_tune, seggpt_eval
  from incontext.data import selection, sources

  for name, n_eval in show_real_results.TUNE_EVAL.items():
    task = dict(prompt_tune.get_config(f"task={name}").task)
    root = str(shared_data_dir(task["root"].split("/")[-1]))
    n = len(sources.make_source(dict(task, root=root)))
    tune = set(selection.select_indices(n, task))
    ev = set(
      selection.select_indices(n, dict(task, start=task["stop"], stop=task["stop"] + n_eval))
    )
    assert len(tune) == 64 and len(ev) == n_eval and not tune & ev
    if name == "horse":
      fs = set(selection.select_indices(n, dict(seggpt_eval.get_config().fewshot.horse.select)))
      assert not fs & (tune | ev) and len(fs) == n - 200
