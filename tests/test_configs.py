"""Every experiments/configs/*.py training config loads with its runlocal arg; overrides and
bad args behave; the runlocal quickstart runs end to end through the CLI entry."""

import importlib
import json
import os

import numpy as np
import pytest
from _shared import run_train

from incontext import config_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# (module, runlocal args) of the training configs owned by the trainer.
TRAIN_CONFIGS = [
  ("experiments.configs.seggpt_train", a)
  for a in (
    "runlocal",
    "paper,runlocal",
    "quickstart,runlocal",
    "real,runlocal",
    "paper,variant=B/16,runlocal",
  )
]


@pytest.mark.parametrize("module,arg", TRAIN_CONFIGS)
def test_config_loads_with_runlocal(module, arg):
  c = importlib.import_module(module).get_config(arg)
  assert c.total_steps == 3 and c.model.variant == "test"
  assert c.input.type in ("procedural", "pipeline")
  from incontext.train import trainer

  cfg = trainer.model_config(c)  # the model config is valid
  assert cfg.image_size == (16, 16)


def test_every_config_file_has_get_config():
  d = os.path.join(ROOT, "experiments", "configs")
  for name in sorted(os.listdir(d)):
    if name.endswith(".py") and name not in ("__init__.py", "common.py"):
      mod = importlib.import_module(f"experiments.configs.{name[:-3]}")
      assert callable(getattr(mod, "get_config", None)), name


def test_paper_preset_is_the_spec_recipe():
  from experiments.configs import seggpt_train

  c = seggpt_train.get_config("paper")
  assert (c.batch_size, c.total_steps, c.optim.warmup_steps) == (2048, 9000, 1800)
  assert (c.optim.lr, c.optim.wd, c.optim.layer_decay, c.optim.clip) == (1e-4, 0.05, 0.8, 3.0)
  assert c.model.variant == "L/16" and c.model.dtype == "bfloat16" and c.model.drop_path == 0.1


def test_parse_arg_errors_and_types():
  a = config_lib.parse_arg(
    "quickstart,variant=B/16,steps=5", preset="paper", variant="L/16", steps=0, runlocal=False
  )
  assert (a.preset, a.variant, a.steps, a.runlocal) == ("quickstart", "B/16", 5, False)
  with pytest.raises(ValueError, match="unknown key 'bogus'"):
    config_lib.parse_arg("bogus=1", variant="L/16")
  from experiments.configs import seggpt_train

  with pytest.raises(ValueError, match="unknown preset 'nope'"):
    seggpt_train.get_config("nope")
  c = seggpt_train.get_config("real,procedural_frac=0.25,min_area=0.05")
  assert c.input.procedural_frac == 0.25
  assert [d["min_area"] for d in c.input.datasets] == [0.05] * len(c.input.datasets)


@pytest.mark.integration
def test_cli_runlocal_with_override_writes_config(tmp_path):
  wd = tmp_path / "wd"
  r = run_train(
    wd,
    "--config.total_steps=2",
    "--config.optim.lr=0.002",
    preset="quickstart,runlocal",
    timeout=600,
  )
  assert r.returncode == 0, r.stderr[-3000:]
  assert "few-shot mIoU" in r.stdout and "baseline (copy prompt mask)" in r.stdout
  saved = json.load(open(wd / "config.json"))
  assert saved["total_steps"] == 2 and saved["optim"]["lr"] == 0.002
  for f in ("metrics.jsonl", "curve.png", "predictions.png", "params/incontext.json"):
    assert (wd / f).exists(), f
  r = run_train(tmp_path / "bad", "--config.optim.lrr=1", preset="quickstart,runlocal", timeout=300)
  assert r.returncode != 0 and "lrr" in r.stderr


@pytest.mark.integration
def test_real_config_never_trains_on_what_is_evaluated():
  """The `real` mixture leaves out everything experiments/show_real_results.py and
  seggpt_eval.py score: Kvasir and horses entirely, the held-out DAVIS sequences, COCO fold 0."""
  from experiments import show_real_results
  from experiments.configs import common, seggpt_eval, seggpt_train
  from incontext.data import pipeline
  from incontext.data.episodes import SemanticEpisodes
  from _shared import shared_data_dir

  c = seggpt_train.get_config("real")
  cfg = {k: v for k, v in c.input.to_dict().items() if k != "type"}
  names = [d["name"] for d in cfg["datasets"]]
  assert "kvasir_seg" not in names and "weizmann_horse" not in names
  ev = seggpt_eval.get_config()
  assert (
    set(ev.davis.sequences) == set(common.DAVIS_HELD_OUT) == set(show_real_results.HELD_OUT_SEQS)
  )
  assert not set(common.DAVIS_TRAIN) & set(common.DAVIS_HELD_OUT)
  assert ev.fewshot.coco128_fold0.fold == 0 and c.evals.data.fold == 0
  cfg["datasets"] = [
    dict(d, root=str(shared_data_dir(d["name"])))
    for d in cfg["datasets"]
    if d["name"] in ("coco128_seg", "davis2016_subset")
  ]
  for d in cfg["datasets"]:
    d["instance_prob"] = 1.0  # COCO: instance pairs only
  s = pipeline.make_sampler(cfg, seed=0)
  coco, davis = s.indices
  episodes = SemanticEpisodes(s.srcs[0], fold=0, shots=1, num_episodes=4)
  assert set(episodes.classes) <= coco.excluded  # every evaluated class is held out
  assert not coco.excluded & {int(x) for x in coco.class_list}
  assert set(davis.videos) == set(common.DAVIS_TRAIN)
  # Instance and video pairs too (not only the semantic index): what they paint is checked
  # pixel by pixel in tests/test_data_leaks.py; here their metadata.
  for k in range(40):
    meta = s.sample_pair(np.random.default_rng([0, k]))["meta"]
    assert meta.kind in ("instance", "video")
    if meta.dataset == "coco128_seg":
      assert not set(meta.classes) & set(episodes.classes), meta
    else:
      assert not {i.split("/")[0] for i in meta.ids} & set(common.DAVIS_HELD_OUT), meta


def test_real_config_video_args():
  """`davis_weight` / `frame_gap` reach the DAVIS entry of the `real` mixture (0 = any gap),
  `instance_prob` every entry;
  the other datasets keep their weights; negative values are refused, naming both."""
  from experiments.configs import seggpt_train

  by_name = lambda c: {d["name"]: d for d in c.input.datasets}
  d = by_name(seggpt_train.get_config("real"))
  assert d["davis2016_subset"]["weight"] == 1.0 and d["davis2016_subset"]["max_frame_gap"] == 20
  assert d["coco128_seg"]["instance_prob"] == 0.5
  d = by_name(seggpt_train.get_config("real,davis_weight=4,frame_gap=0,instance_prob=1"))
  assert d["davis2016_subset"]["weight"] == 4.0 and d["davis2016_subset"]["max_frame_gap"] is None
  assert d["coco128_seg"]["weight"] == 2.0 and d["camvid"]["weight"] == 1.0
  assert d["coco128_seg"]["instance_prob"] == 1.0
  with pytest.raises(ValueError, match="instance_prob"):
    seggpt_train.get_config("real,instance_prob=2")
  with pytest.raises(ValueError, match="davis_weight.*frame_gap"):
    seggpt_train.get_config("real,frame_gap=-1")


def test_quickstart_preset_is_the_named_variant():
  """The quickstart/real presets' model is exactly variant `quickstart-0.6M` (~0.6M params)."""
  from incontext.models import seggpt
  from incontext.train import trainer

  c = importlib.import_module("experiments.configs.seggpt_train").get_config("quickstart")
  assert c.model.variant == "quickstart-0.6M"
  assert trainer.model_config(c) == seggpt.get_config("quickstart-0.6M", drop_path=0.0)


def _check_same(sec, values, where="config"):
  """Every key of the ConfigDict section `values` reads back from the typed section `sec` with
  the same value (lists and tuples alike)."""
  import dataclasses

  from incontext import config_lib

  norm = lambda x: json.loads(json.dumps(x))
  fields = {f.metadata.get("key", f.name): f.name for f in dataclasses.fields(sec)}
  extra = getattr(sec, "reader_args", {})
  for k, v in values.items():
    if k not in fields:  # a reader argument of a task
      assert norm(extra[k]) == norm(v), f"{where}.{k}"
      continue
    got = getattr(sec, fields[k])
    if dataclasses.is_dataclass(got):
      _check_same(got, v, f"{where}.{k}")
    elif isinstance(got, dict) and got and all(dataclasses.is_dataclass(x) for x in got.values()):
      for name, b in got.items():
        _check_same(b, v[name], f"{where}.{k}.{name}")
    elif got is None and v == {}:
      pass  # an empty section is absent
    else:
      assert norm(got) == norm(config_lib.plain(v)), f"{where}.{k}: {got!r} != {v!r}"


SECTION_PRESETS = (
  [
    ("seggpt_train", a)
    for a in (
      "paper",
      "quickstart",
      "real",
      "paper,runlocal",
      "quickstart,runlocal",
      "real,runlocal",
    )
  ]
  + [
    ("prompt_tune", a)
    for a in ("task=kvasir", "task=horse,init=noise,learn_target", "task=davis_boat", "task=folder")
  ]
  + [
    ("seggpt_eval", a)
    for a in ("", "runlocal", "benchmark=coco20i", "benchmark=pascal5i", "benchmark=fss1000")
  ]
  + [
    ("seggpt_eval", a) for a in ("benchmark=lvis92i", "benchmark=davis2017", "benchmark=ytvos2018")
  ]
)


@pytest.mark.parametrize("module,arg", SECTION_PRESETS)
def test_every_preset_reads_back_through_its_typed_sections(module, arg):
  from incontext.evaluators.sections import EvalConfig
  from incontext.train.sections import TrainConfig, TuneConfig

  cls = {"seggpt_train": TrainConfig, "prompt_tune": TuneConfig, "seggpt_eval": EvalConfig}[module]
  c = importlib.import_module(f"experiments.configs.{module}").get_config(arg)
  sec = cls.of(c)
  _check_same(sec, c.to_dict())
  assert cls.of(sec) is sec  # built once, passed down as it is


def test_typed_sections_refuse_unknown_keys_and_wrong_types_in_one_line():
  """Each run config's sections are checked in one place: an unknown key (at any depth), a value
  of the wrong type or a missing required key is one UserError line naming the setting."""
  from experiments.configs import prompt_tune, seggpt_eval, seggpt_train
  from incontext.errors import UserError, one_line
  from incontext.evaluators.sections import EvalConfig
  from incontext.train.sections import TrainConfig, TuneConfig

  def edit(c, path, value):
    *parents, last = path.split(".")
    d = c
    for p in parents:
      d = d[p]
    if value is None:
      del d[last]
    else:
      d[last] = value
    return c

  cases = [
    (
      TrainConfig,
      seggpt_train,
      "quickstart",
      "evals.evry",
      1,
      r"config.evals: unknown key \['evry'\]",
    ),
    (
      TrainConfig,
      seggpt_train,
      "quickstart",
      "optim.lr",
      "fast",
      r"config.optim.lr='fast': expected a float",
    ),
    (
      TrainConfig,
      seggpt_train,
      "quickstart",
      "ckpt.async",
      1,
      r"config.ckpt.async=1: expected a boolean",
    ),
    (
      TrainConfig,
      seggpt_train,
      "quickstart",
      "loss.beta",
      None,
      r"config.loss.beta: missing \(expected a float\)",
    ),
    (
      TrainConfig,
      seggpt_train,
      "quickstart",
      "init.knd",
      "x",
      r"config.init: unknown key \['knd'\]",
    ),
    (
      TuneConfig,
      prompt_tune,
      "task=kvasir",
      "heldout.shares",
      0.5,
      r"config.heldout: unknown key \['shares'\]",
    ),
    (
      TuneConfig,
      prompt_tune,
      "task=kvasir",
      "task.rooot",
      "x",
      r"config.task: unknown key \['rooot'\]; known: \[.*'root'",
    ),
    (
      TuneConfig,
      prompt_tune,
      "task=kvasir",
      "tune.batch_size",
      8.0,
      r"config.tune.batch_size=8.0: expected an integer",
    ),
    (
      TuneConfig,
      prompt_tune,
      "task=kvasir",
      "optim.wd",
      0.1,
      r"config.optim: unknown key \['wd'\]",
    ),
    (
      EvalConfig,
      seggpt_eval,
      "",
      "fewshot.horse.shot",
      1,
      r"config.fewshot.horse: unknown key \['shot'\]",
    ),
    (
      EvalConfig,
      seggpt_eval,
      "",
      "davis.memories",
      "0,8",
      r"config.davis.memories='0,8': expected a list",
    ),
    (EvalConfig, seggpt_eval, "", "seeed", 1, r"config: unknown key \['seeed'\]"),
  ]
  for cls, module, arg, path, value, msg in cases:
    c = edit(module.get_config(arg).to_dict(), path, value)
    with pytest.raises(UserError, match=msg) as e:
      cls.of(c)
    assert one_line(e.value) == str(e.value), path
