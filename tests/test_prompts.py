"""Learned-prompt files: exact round trip, previews, and clear errors for the wrong model/file."""

import os

import numpy as np
import pytest
from PIL import Image

from incontext import canvas, prompts
from incontext.models import seggpt

CFG = seggpt.get_config("test", image_size=(32, 32), patch=8)


def _prompt(seed=0, cfg=CFG):
  rng = np.random.default_rng(seed)
  h, w = cfg.image_size
  return prompts.LearnedPrompt(
    image=rng.normal(size=(h, w, 3)).astype(np.float32),
    target=rng.normal(size=(h, w, 3)).astype(np.float32),
    seg_type="instance",
    palette=np.array([[0, 0, 0], [255, 0, 0], [0, 255, 0]], np.uint8),
    label_ids=[3, 7],
    label_names=["cat", "dog"],
  )


def test_round_trip_is_exact(tmp_path):
  lp = _prompt()
  path = str(tmp_path / "p.npz")
  meta = prompts.save(
    path, lp, model_cfg=CFG, weights_hash="ab" * 32, made_by={"tune_workdir": "/x", "step": 5}
  )
  got = prompts.load(path, model_cfg=CFG, weights_hash="ab" * 32)
  assert got.image.dtype == np.float32 and got.target.dtype == np.float32
  np.testing.assert_array_equal(got.image, lp.image)
  np.testing.assert_array_equal(got.target, lp.target)
  np.testing.assert_array_equal(got.palette, lp.palette)
  assert got.palette.dtype == np.uint8
  assert (got.seg_type, got.label_ids, got.label_names) == ("instance", [3, 7], ["cat", "dog"])
  assert got.meta == meta
  assert got.meta["canvas"] == [64, 32] and got.meta["made_by"]["step"] == 5
  # a runtime-only field (dtype) does not matter
  prompts.load(
    path, model_cfg=seggpt.get_config("test", image_size=(32, 32), patch=8, dtype="bfloat16")
  )
  assert sorted(os.listdir(tmp_path)) == ["p.npz", "p_image.png", "p_target.png"]


def test_previews_are_the_denormalised_tensors(tmp_path):
  lp = _prompt()
  path = str(tmp_path / "p.npz")
  prompts.save(path, lp, model_cfg=CFG, weights_hash=None)
  img_png, tgt_png = prompts.preview_paths(path)
  for p, a in ((img_png, lp.image), (tgt_png, lp.target)):
    got = np.asarray(Image.open(p))
    np.testing.assert_array_equal(got, np.round(canvas.denormalize(a)).astype(np.uint8))


def test_wrong_variant_canvas_or_weights_is_a_clear_error(tmp_path):
  path = str(tmp_path / "p.npz")
  prompts.save(path, _prompt(), model_cfg=CFG, weights_hash="ab" * 32)
  other_canvas = seggpt.get_config("test", image_size=(48, 32), patch=8)
  with pytest.raises(
    prompts.PromptError,
    match=r"p\.npz: prompt made for canvas \(64, 32\) \(image_size \(32, 32\)\), "
    r"but the model's canvas is \(96, 32\)",
  ):
    prompts.load(path, model_cfg=other_canvas)
  other_variant = seggpt.get_config("test", image_size=(32, 32), patch=8, width=64)
  with pytest.raises(
    prompts.PromptError,
    match=r"p\.npz: prompt made for another model variant .*'width': \(32, 64\)",
  ):
    prompts.load(path, model_cfg=other_variant)
  with pytest.raises(prompts.PromptError, match=r"p\.npz: prompt tuned with weights abababab"):
    prompts.load(path, model_cfg=CFG, weights_hash="cd" * 32)
  assert isinstance(prompts.PromptError("x"), ValueError)


def test_corrupt_or_missing_file(tmp_path):
  path = str(tmp_path / "p.npz")
  prompts.save(path, _prompt(), model_cfg=CFG, weights_hash=None)
  data = open(path, "rb").read()
  bad = tmp_path / "bad.npz"
  bad.write_bytes(data[: len(data) // 2])
  with pytest.raises(prompts.PromptError, match=r"bad\.npz: corrupt or unreadable"):
    prompts.load(str(bad), model_cfg=CFG)
  other = tmp_path / "other.npz"
  np.savez(other, x=np.zeros(3))
  with pytest.raises(prompts.PromptError, match=r"other\.npz: not a learned-prompt file"):
    prompts.load(str(other), model_cfg=CFG)
  with pytest.raises(FileNotFoundError, match=r"nope\.npz: no such learned-prompt file"):
    prompts.load(str(tmp_path / "nope.npz"), model_cfg=CFG)


def test_save_rejects_bad_prompt_and_leaves_nothing(tmp_path):
  lp = _prompt()
  lp.image = lp.image[:16]
  with pytest.raises(
    prompts.PromptError,
    match=r"prompt image has shape \(16, 32, 3\), "
    r"expected \(32, 32, 3\)",
  ):
    prompts.save(str(tmp_path / "p.npz"), lp, model_cfg=CFG, weights_hash=None)
  with pytest.raises(prompts.PromptError, match="must end with .npz"):
    prompts.save(str(tmp_path / "p.bin"), _prompt(), model_cfg=CFG, weights_hash=None)
  assert os.listdir(tmp_path) == []
