"""Evaluation harness: episodes, few-shot scoring with baselines, DAVIS J&F, results files."""

import json
import os

import numpy as np
import pytest
from PIL import Image

from experiments.configs import seggpt_eval
from incontext import checkpoint, metrics, outputs
from incontext.data import episodes
from incontext.evaluators import davis, fewshot, run
from incontext.models import seggpt

SIZE = (32, 32)


@pytest.fixture(scope="module")
def model():
  return seggpt.create("test", image_size=SIZE, patch=8, drop_path=0.0, seed=2)


class ListSource:
  """In-memory source with the incontext.data.sources interface."""

  def __init__(self, examples):
    self.examples = examples
    self.class_names = {1: "a", 2: "b"}

  def __len__(self):
    return len(self.examples)

  def __getitem__(self, i):
    return self.examples[i]

  def meta(self, i):
    m = self.examples[i]["mask"]
    return {"classes": np.array([c for c in np.unique(m) if c not in (0, 255)])}


def _source(n=8, same_mask=False, seed=0):
  rng = np.random.default_rng(seed)
  ex = []
  for i in range(n):
    img = rng.integers(0, 255, (24, 20, 3)).astype(np.uint8)
    m = np.zeros((24, 20), np.int32)
    r = 2 if same_mask else int(rng.integers(0, 12))
    m[r : r + 8, 3:13] = 1 if i % 2 == 0 or same_mask else 2
    ex.append({"image": img, "mask": m})
  return ListSource(ex)


def test_episodes_are_deterministic_and_valid():
  src = _source(10)
  index = episodes.class_index(src, [1, 2])
  assert index == {1: [0, 2, 4, 6, 8], 2: [1, 3, 5, 7, 9]}
  eps = episodes.make_episodes(index, shots=3, num_episodes=6, seed=1)
  assert eps == episodes.make_episodes(index, shots=3, num_episodes=6, seed=1)
  assert (
    eps == episodes.SemanticEpisodes(src, classes=[1, 2], shots=3, num_episodes=6, seed=1).episodes
  )
  assert [e["class"] for e in eps] == [1, 2, 1, 2, 1, 2]
  for e in eps:
    assert len(e["supports"]) == 3 and e["query"] not in e["supports"]
    assert all(i in index[e["class"]] for i in [e["query"], *e["supports"]])
  with pytest.raises(ValueError, match="no class has 6 examples for 5-shot episodes"):
    episodes.make_episodes(index, shots=5, num_episodes=2)


def test_fewshot_scores_and_baseline(model):
  src = _source(8, same_mask=True)
  eps = episodes.make_episodes(episodes.class_index(src, [1]), shots=2, num_episodes=3)
  res = fewshot.evaluate_fewshot(
    model,
    src,
    eps,
    methods=[
      ("1-shot", 1, "feature"),
      ("2-shot feature", 2, "feature"),
      ("2-shot spatial", 2, "spatial"),
    ],
  )
  # every mask is identical: copying the prompt mask is perfect
  assert res["copy prompt mask (baseline)"]["miou"] == pytest.approx(100.0)
  assert res["copy prompt mask (baseline)"]["fb_iou"] == pytest.approx(100.0)
  for k in ("1-shot", "2-shot feature", "2-shot spatial"):
    assert 0.0 <= res[k]["miou"] <= 100.0 and res[k]["episodes"] == 3
  with pytest.raises(ValueError, match="needs 3 supports"):
    fewshot.evaluate_fewshot(model, src, eps, methods=[("3", 3, "feature")])


def test_feature_ensemble_of_identical_prompts_equals_one_shot(model):
  src = _source(4)
  s, q = src[0], src[2]
  fg = s["mask"] == 1
  one = fewshot.predict_binary(
    model, [s["image"]], [fg], q["image"], ensemble="feature", seg_type="semantic"
  )
  three = fewshot.predict_binary(
    model, [s["image"]] * 3, [fg] * 3, q["image"], ensemble="feature", seg_type="semantic"
  )
  np.testing.assert_array_equal(one, three)
  assert one.shape == (24, 20)


def _davis_folder(root, seqs=("s1",), n=4):
  rng = np.random.default_rng(0)
  for s in seqs:
    j = root / "JPEGImages" / "480p" / s
    a = root / "Annotations" / "480p" / s
    j.mkdir(parents=True)
    a.mkdir(parents=True)
    for t in range(n):
      f = rng.integers(0, 60, (30, 40, 3)).astype(np.uint8)
      m = np.zeros((30, 40), np.uint8)
      m[5:15, 4 + 3 * t : 14 + 3 * t] = 255
      f[m > 0] = 230
      Image.fromarray(f).save(j / f"{t:05d}.jpg", quality=95)
      Image.fromarray(m).save(a / f"{t:05d}.png")


def test_davis_eval_and_baseline(model, tmp_path):
  _davis_folder(tmp_path)
  frames, gts = davis.read_sequence(str(tmp_path), "s1")
  assert len(frames) == 4 and set(np.unique(gts[0])) == {0, 1}  # 0/255 -> object 1
  res = davis.evaluate_davis(
    model, str(tmp_path), ["s1"], memories=(0, 2), save_dir=str(tmp_path / "masks")
  )
  # baseline by hand: frames 1, 2 scored; the object moved 3 and 6 px of its 10 px width
  want_j = np.mean([metrics.iou(gts[0] == 1, gts[t] == 1) for t in (1, 2)])
  assert want_j == pytest.approx(np.mean([70 / 130, 40 / 160]))
  base = res["copy first mask (baseline)"]
  assert base["J"] == pytest.approx(100 * want_j)
  assert set(res) == {"K=0", "K=2", "copy first mask (baseline)"}
  assert 0 <= res["K=2"]["J&F"] <= 100
  assert sorted(os.listdir(tmp_path / "masks" / "K2" / "s1")) == [f"{t:05d}.png" for t in range(4)]
  assert json.loads((tmp_path / "masks" / "K2" / outputs.MANIFEST).read_text())["files"] == ["s1"]
  # A sequence folder it did not write is refused before any work, and never touched.
  mine = tmp_path / "masks2" / "K2" / "s1"
  mine.mkdir(parents=True)
  (mine / "00000.png").write_text("the user's")
  with pytest.raises(outputs.OutputError, match=r"masks2/K2/s1: exists and was not written by"):
    davis.evaluate_davis(
      model, str(tmp_path), ["s1"], memories=(0, 2), save_dir=str(tmp_path / "masks2")
    )
  assert os.listdir(tmp_path / "masks2") == ["K2"] and os.listdir(mine) == ["00000.png"]
  assert (mine / "00000.png").read_text() == "the user's"


def test_calibrate_threshold(model, tmp_path, monkeypatch):
  """Picks the best J&F on the calibration sequences (ties: nearest 0.5); the reported score
  is evaluate_davis' at that threshold."""
  _davis_folder(tmp_path, seqs=("s1", "s2"))
  t, scores = davis.calibrate_threshold(
    model, str(tmp_path), ["s1", "s2"], memory=1, thresholds=(0.3, 0.5)
  )
  assert set(scores) == {"0.3", "0.5"} and scores[str(t)] == max(scores.values())
  again = davis.evaluate_davis(model, str(tmp_path), ["s1", "s2"], memories=(1,), threshold=t)
  assert again["K=1"]["J&F"] == pytest.approx(scores[str(t)])
  fake = {}
  monkeypatch.setattr(
    davis,
    "evaluate_davis",
    lambda *a, threshold, memories, **k: {f"K={memories[0]}": {"J&F": fake[threshold]}},
  )
  fake.update({0.2: 10.0, 0.4: 30.0, 0.5: 20.0})
  assert davis.calibrate_threshold(model, "r", ["s"], thresholds=(0.2, 0.4, 0.5))[0] == 0.4
  fake.update({0.2: 30.0, 0.4: 30.0, 0.5: 30.0})
  assert davis.calibrate_threshold(model, "r", ["s"], thresholds=(0.2, 0.4, 0.5))[0] == 0.5
  fake.update({0.2: 30.0, 0.4: 30.0, 0.5: 10.0})
  assert davis.calibrate_threshold(model, "r", ["s"], thresholds=(0.2, 0.4, 0.5))[0] == 0.4


def test_run_eval_writes_json_and_table(model, tmp_path):
  params = str(tmp_path / "params")
  checkpoint.save_model(params, model)
  _davis_folder(tmp_path / "davis")
  c = seggpt_eval.get_config("runlocal")
  c.init = params
  c.fewshot = {}
  c.davis.root = str(tmp_path / "davis")
  c.davis.sequences = ("s1",)
  res = run.run_eval(c, str(tmp_path / "w"))
  got = json.load(open(tmp_path / "w" / "results.json"))
  assert got["davis"]["K=2"]["J&F"] == pytest.approx(res["davis"]["K=2"]["J&F"])
  assert got["weights_hash"] == checkpoint.read_meta(params)["weights_hash"]
  table = open(tmp_path / "w" / "results.md").read()
  assert "| davis | copy first mask (baseline) |" in table and "| davis | K=0 |" in table
  c.init = ""
  with pytest.raises(ValueError, match="config.init must name a params directory"):
    run.run_eval(c, str(tmp_path / "w2"))


def test_eval_configs_load():
  c = seggpt_eval.get_config("shots=8,episodes=10")
  assert c.fewshot.horse.shots == 8 and c.fewshot.coco128_fold0.episodes == 10
  with pytest.raises(ValueError, match="unknown arg 'bogus'"):
    seggpt_eval.get_config("bogus=1")


@pytest.mark.integration
def test_real_data_class_fold_and_davis_layout(model):
  from tests._shared import shared_data_dir

  root = shared_data_dir()
  bench = dict(
    name="coco",
    source=dict(reader="coco128_seg", root=str(root / "coco128_seg")),
    fold=0,
    num_folds=4,
    scheme="interleaved",
    shots=2,
    episodes=2,
    ensembles=("feature",),
  )
  res = run.fewshot_benchmark(model, bench)
  from incontext.data import folds, sources

  src = sources.coco_yolo(str(root / "coco128_seg"))
  fold0 = folds.fold_classes(sorted(c for c in src.class_names if c > 0), 0, 4, "interleaved")
  assert res["_info"]["classes"] == fold0
  assert {int(c) for c in res["1-shot"]["per_class"]} <= set(fold0)
  assert set(res) == {"1-shot", "2-shot feature", "copy prompt mask (baseline)", "_info"}
  frames, gts = davis.read_sequence(str(root / "davis2016_subset"), "boat", max_frames=3)
  assert len(frames) == 3 and frames[0].shape[:2] == gts[0].shape
  assert set(np.unique(np.stack(gts))) == {0, 1}
