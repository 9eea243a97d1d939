"""experiments/show_real_results.py end to end on ../shared/data with a tiny random model:
every experiment runs and writes its JSON and table (numbers are the script's business)."""
import json

from _shared import shared_data_dir
from experiments import show_real_results
from incontext import checkpoint
from incontext.models import seggpt


def test_eval_stage_writes_results(tmp_path):
  data = str(shared_data_dir())
  params = str(tmp_path / "params")
  checkpoint.save_model(params, seggpt.create("test", image_size=(16, 16), patch=4,
                                              drop_path=0.0, seed=0),
                        source={"trainer": "test", "step": 0, "loss": {"beta": 5.0}})
  show_real_results.main(["eval", "--workdir", str(tmp_path / "w"), "--checkpoint", params,
                          "--data", data, "--tune_steps", "2", "--episodes", "2", "--shots", "2",
                          "--memory", "1", "--max_frames", "3"])
  res = json.load(open(tmp_path / "w" / "real_results.json"))
  tune = res["tuning_kvasir"]
  assert tune["_info"]["tune_beta"] == 5.0 and tune["_info"]["tune_steps"] == 2
  for m in ("tuned prompt", "untuned example prompt"):
    assert 0 <= tune[m]["miou"] <= 100 and tune[m]["heldout_loss"] > 0
  assert set(res["fewshot"]) == {"coco128_fold0", "horse"}
  assert {"1-shot", "2-shot feature", "2-shot spatial",
          "copy prompt mask (baseline)"} <= set(res["fewshot"]["horse"])
  assert {"K=0", "K=1", "copy first mask (baseline)"} <= set(res["davis"])
  table = (tmp_path / "w" / "real_results.md").read_text()
  assert "held-out tuning loss" in table and "copy first mask (baseline)" in table
