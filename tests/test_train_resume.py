"""Trainer end to end: a run stopped after N steps and restarted reproduces an uninterrupted
2N-step run exactly (params, optimiser, step, drop-path RNG and data position restored)."""

import json
import os

import pytest

from experiments.configs import seggpt_train
from incontext.train import trainer

# Every test here runs the trainer end to end: integration tier.
pytestmark = pytest.mark.integration


def _config(total_steps):
  c = seggpt_train.get_config("quickstart,runlocal")
  c.total_steps = total_steps
  c.model.drop_path = 0.1  # exercises the per-step RNG
  c.evals.every = 0
  c.evals.at_end = False
  c.ckpt.every = 2
  c.export_params = False
  c.mesh = [("data", 2), ("fsdp", 2), ("model", 2)]
  c.sharding_rules = "fsdp_model"
  return c


def _losses(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    rows = [json.loads(l) for l in f]
  return {r["step"]: r["train/loss"] for r in rows}


def test_resume_reproduces_uninterrupted_run(tmp_path):
  straight = str(tmp_path / "straight")
  trainer.run(_config(4), straight)
  resumed = str(tmp_path / "resumed")
  first = trainer.run(_config(2), resumed)  # "killed" after step 2 (checkpointed)
  assert first["step"] == 2
  # Simulate a crash that logged a step after the last checkpoint: it must be discarded.
  with open(os.path.join(resumed, "metrics.jsonl"), "a") as f:
    f.write(json.dumps({"step": 3, "train/loss": 123.0}) + "\n")
  trainer.run(_config(4), resumed)  # same command, resumes at 2
  a, b = _losses(straight), _losses(resumed)
  assert sorted(a) == sorted(b) == [1, 2, 3, 4]
  assert [a[s] for s in range(1, 5)] == [b[s] for s in range(1, 5)]  # bit-identical
  assert len(set(a.values())) == 4  # the losses actually differ per step
  ckpts = sorted(os.listdir(os.path.join(resumed, "checkpoints")))
  assert ckpts == ["2", "4"]


def test_non_finite_loss_stops_naming_the_step(tmp_path):
  c = _config(3)
  c.mesh = [("data", -1)]
  c.sharding_rules = "replicate"
  c.optim.lr = 1e30  # diverges within a couple of steps
  c.optim.warmup_steps = 0
  c.optim.clip = 0.0
  c.optim.layer_decay = 1.0
  with pytest.raises(trainer.TrainingDiverged, match=r"training diverged at step \d+: non-finite"):
    trainer.run(c, str(tmp_path / "nan"))
  assert not os.path.exists(tmp_path / "nan" / "checkpoints" / "3")
