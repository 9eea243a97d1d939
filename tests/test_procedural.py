"""Procedural data and the few-shot metric: held-out classes stay out of training, samples
are pure functions of (seed, index), the baselines go through the prediction's decoding, and
(slow) the quickstart learns in-context matching: it beats the copy-the-prompt-mask
baseline and the paint-every-object baseline on held-out classes."""

import json

import numpy as np
import pytest

from incontext import canvas
from incontext.data import procedural
from incontext.train import fewshot

CFG = dict(image_size=32, patch_size=4, read_threads=1)


def _classes_of(sampler_cfg, seed, index):
  """The classes a training sample draws (replays the sampler's first draws)."""
  cfg = procedural.resolve_config(sampler_cfg)
  rng = np.random.default_rng([seed, index])
  n = int(rng.integers(cfg["objects"][0], cfg["objects"][1] + 1))
  return rng.choice(procedural.class_split(cfg)[0], n, replace=False)


def test_samples_are_pure_and_use_only_training_classes():
  s1, s2 = procedural.Sampler(CFG, seed=3), procedural.Sampler(CFG, seed=3)
  a, b = s1(17), s2(17)
  assert set(a) == {"image", "target", "mask", "valid", "seg_type"}
  for k in a:
    np.testing.assert_array_equal(a[k], b[k])
  assert not np.array_equal(s1(17)["image"], s1(18)["image"])
  assert a["image"].shape == (64, 32, 3) and a["mask"].shape == (128,)
  np.testing.assert_array_equal(a["mask"], canvas.query_half_mask((16, 8)))
  train, held = procedural.class_split(procedural.resolve_config(CFG))
  assert not set(train) & set(held) and len(held) == 16
  for i in range(50):
    assert not set(_classes_of(CFG, 3, i)) & set(held)
  # The target is white (palette=1) on exactly one painted object, in both halves.
  tgt = canvas.denormalize(a["target"]).round()
  for half in (tgt[:32], tgt[32:]):
    assert set(map(tuple, half.reshape(-1, 3))) == {(0, 0, 0), (255, 255, 255)}


def test_held_out_classes_are_new_combinations_of_seen_textures():
  cfg = procedural.resolve_config(CFG)
  train, held = procedural.class_split(cfg)
  tex = lambda cs: {procedural.appearance(int(c))[1] for c in cs}
  assert tex(held) == tex(train) == set(procedural.TEXTURES)
  colours = lambda cs: {tuple(procedural.appearance(int(c))[0].round()) for c in cs}
  assert not colours(held) & colours(train)


def test_episodes_are_held_out_and_baselines_use_the_same_decoding():
  eps = procedural.make_episodes(CFG, seed=5, per_class=2)
  _, held = procedural.class_split(procedural.resolve_config(CFG))
  assert len(eps) == 2 * len(held)
  assert {int(e["class_ids"][0]) for e in eps} == set(held)
  assert sum(bool((e["query_objects"] > e["query_label"]).any()) for e in eps) > len(eps) // 2
  for e in eps:
    np.testing.assert_array_equal(canvas.denormalize(e["target"][32:]).round(), 0)  # hidden
    assert e["query_label"].any() and e["prompt_label"].any()
    assert np.all(e["query_objects"] >= e["query_label"])  # the target is an object
  again = procedural.make_episodes(CFG, seed=5, per_class=2)
  np.testing.assert_array_equal(eps[7]["image"], again[7]["image"])
  # Perfect colour predictions score 100%, all-black 0%; a prediction equal to the painted
  # prompt mask scores exactly the copy baseline.
  truth = np.stack([fewshot.encode_labels(e["query_label"], e["colours"]) for e in eps])
  r = fewshot.evaluate(truth, eps)
  assert r["miou"] == pytest.approx(100.0)
  copy = np.stack([fewshot.encode_labels(e["prompt_label"], e["colours"]) for e in eps])
  rc = fewshot.evaluate(copy, eps)
  assert rc["miou"] == pytest.approx(r["baseline_copy_miou"])
  assert 0 < r["baseline_copy_miou"] < 40 and 30 < r["baseline_objects_miou"] < 70
  black = np.stack(
    [fewshot.encode_labels(np.zeros_like(e["query_label"]), e["colours"]) for e in eps]
  )
  assert fewshot.evaluate(black, eps)["miou"] == 0.0
  # Decoding is nearest of (black, colour): a slightly dimmed white still decodes as white.
  dim = canvas.normalize(canvas.denormalize(truth[0]) * 0.6)
  np.testing.assert_array_equal(
    fewshot.decode_labels(dim, eps[0]["colours"]), eps[0]["query_label"]
  )


def test_bad_config_is_rejected_with_the_key():
  with pytest.raises(ValueError, match="unknown key 'bogus'"):
    procedural.resolve_config(dict(bogus=1))
  with pytest.raises(ValueError, match="image_size 30 is not a multiple of patch_size 4"):
    procedural.resolve_config(dict(image_size=30, patch_size=4))
  with pytest.raises(ValueError, match="palette 9"):
    procedural.resolve_config(dict(palette=9))
  with pytest.raises(ValueError, match="objects"):
    procedural.resolve_config(dict(objects=(0, 2)))


@pytest.mark.slow
def test_quickstart_learns_in_context_matching(quickstart_run):
  """The README quickstart command (400 steps, ~2-3 min on 2 idle cores): held-out mIoU is
  more than twice the copy-the-prompt-mask baseline and above painting every object (which a
  segmenter reaches without any in-context matching)."""
  wd, stdout = quickstart_run
  assert "few-shot mIoU" in stdout and "baseline (copy prompt mask)" in stdout
  rows = [json.loads(l) for l in open(wd / "metrics.jsonl")]
  ev = rows[-1]
  assert ev["step"] == 400 and rows[-1]["train/loss"] < 0.5 * rows[0]["train/loss"], rows
  assert ev["eval/miou"] > 2 * ev["eval/baseline_copy_miou"], ev
  assert ev["eval/miou"] > ev["eval/baseline_objects_miou"] + 10, ev
  assert (wd / "predictions.png").exists() and (wd / "params").is_dir()
