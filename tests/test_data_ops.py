"""Each named op of incontext.data.ops on real data from ../shared/data."""

import numpy as np
import pytest

from _shared import shared_data_dir
from incontext import canvas
from incontext.data import ops, sources


@pytest.fixture(scope="module")
def pair():
  src = sources.coco_yolo(str(shared_data_dir("coco128_seg")))
  a, b = src[0], src[1]
  la, lb = (np.where(np.isin(x["mask"], x["classes"][:2]), 1, 0).astype(np.int32) for x in (a, b))
  la[:5] = ops.IGNORE
  return dict(
    images=[a["image"], b["image"]],
    labels=[la, lb],
    n_prompt=1,
    num_objects=1,
    seg_type=canvas.SEMANTIC,
  )


def fresh(pair):
  return {k: (list(v) if isinstance(v, list) else v) for k, v in pair.items()}


def test_parse_spec_and_registry():
  spec = ops.parse_spec("hflip|random_resized_crop(scale=(0.5, 1.0), size=32)|patch_mask")
  assert spec == [
    ("hflip", {}),
    ("random_resized_crop", {"scale": (0.5, 1.0), "size": 32}),
    ("patch_mask", {}),
  ]
  with pytest.raises(KeyError, match="unknown op"):
    ops.parse_spec("nope")
  with pytest.raises(ValueError, match="bad op spec"):
    ops.parse_spec("hflip(1)")
  assert len(ops.build_ops(ops.DEFAULT_PP, size=(32, 32), patch_size=8)) == 8


@pytest.mark.integration
def test_random_resized_crop_keeps_labels(pair):
  ex = ops.random_resized_crop(size=(48, 40))(fresh(pair), np.random.default_rng(0))
  for im, l in zip(ex["images"], ex["labels"]):
    assert im.shape == (48, 40, 3) and im.dtype == np.uint8
    assert l.shape == (48, 40) and l.dtype == np.int32
    assert set(np.unique(l)) <= {0, 1, ops.IGNORE}  # nearest: no new label values
    assert (l == 1).any()  # keep_objects


@pytest.mark.integration
def test_hflip_is_joint(pair):
  ex = ops.resize(size=(32, 32))(fresh(pair), None)
  before = [im.copy() for im in ex["images"]], [l.copy() for l in ex["labels"]]
  ex = ops.hflip(p=1.0)(ex, np.random.default_rng(0))
  for k in range(2):
    np.testing.assert_array_equal(ex["images"][k], before[0][k][:, ::-1])
    np.testing.assert_array_equal(ex["labels"][k], before[1][k][:, ::-1])


@pytest.mark.integration
def test_color_jitter_image_only(pair):
  ex = ops.resize(size=(32, 32))(fresh(pair), None)
  labels = [l.copy() for l in ex["labels"]]
  img0 = ex["images"][0].copy()
  ex = ops.color_jitter(p=1.0)(ex, np.random.default_rng(1))
  assert not np.array_equal(ex["images"][0], img0)
  for a, b in zip(ex["labels"], labels):
    np.testing.assert_array_equal(a, b)


@pytest.mark.integration
def test_mix_context_stitches(pair):
  ex = fresh(pair)
  ex["images"] = ex["images"][:1] * 2 + ex["images"][1:] * 2
  ex["labels"] = ex["labels"][:1] * 2 + ex["labels"][1:] * 2
  ex["n_prompt"] = 2
  ex = ops.resize(size=(32, 32))(ex, None)
  ex = ops.mix_context(size=(32, 32))(ex, np.random.default_rng(0))
  assert len(ex["images"]) == 2 and ex["n_prompt"] == 1
  assert ex["images"][0].shape == (32, 32, 3) and (ex["labels"][0] == 1).any()


def test_random_colouring_distinct_consistent():
  rng = np.random.default_rng(0)
  cols = ops.random_colours(rng, 20)
  assert len({tuple(c) for c in cols}) == 20 and (cols.max(1) >= 64).all()
  ex = ops.random_colouring()({"num_objects": 3}, rng)
  pal = ex["palette"]
  assert (pal[0] == 0).all() and (pal[255] == 0).all() and len({tuple(c) for c in pal[1:4]}) == 3


def test_white_colouring_paints_every_object_white_without_randomness():
  rng = np.random.default_rng(0)
  state = rng.bit_generator.state
  pal = ops.random_colouring(colours="white")({"num_objects": 2}, rng)["palette"]
  assert (pal[1:3] == 255).all() and (pal[0] == 0).all() and (pal[3:] == 0).all()
  assert rng.bit_generator.state == state
  with pytest.raises(ValueError, match="colours must be 'random' or 'white', got 'red'"):
    ops.random_colouring(colours="red")


@pytest.mark.integration
def test_canvas_and_finalize(pair):
  rng = np.random.default_rng(0)
  ex = fresh(pair)
  for op in ops.build_ops(
    "resize|random_colouring|to_canvas|canvas_crop(p=1.0)|patch_mask", size=(32, 32), patch_size=8
  ):
    ex = op(ex, rng)
  out = ops.finalize(ex)
  assert sorted(out) == ["image", "mask", "seg_type", "target", "valid"]
  assert out["image"].shape == (64, 32, 3) and out["target"].dtype == np.float32
  assert out["mask"].shape == (32,) and out["mask"].sum() == 16
  assert out["valid"].shape == (64, 32)
  # target pixels are black (background / ignore) or the object's colour.
  tgt = canvas.denormalize(out["target"]).round().astype(int).reshape(-1, 3)
  allowed = {(0, 0, 0), tuple(int(x) for x in ex["palette"][1])}
  assert {tuple(t) for t in np.unique(tgt, axis=0)} <= allowed


@pytest.mark.integration
def test_to_canvas_order(pair):
  ex = ops.resize(size=(16, 16))(fresh(pair), None)
  top, bottom = ex["images"][0].copy(), ex["images"][1].copy()
  ex = ops.to_canvas(size=(16, 16))(ex, None)
  np.testing.assert_array_equal(ex["canvas_image"][:16], top)
  np.testing.assert_array_equal(ex["canvas_image"][16:], bottom)


@pytest.mark.parametrize("grid", [(56, 28), (16, 8), (4, 2)])
def test_masking_generator_exact_count(grid):
  gen = ops.MaskingGenerator(
    grid,
    grid[0] * grid[1] // 2,
    max(1, round(16 * grid[0] * grid[1] / 1568)),
    grid[0] * grid[1] // 4,
  )
  for s in range(5):
    m = gen(np.random.default_rng(s))
    assert m.shape == grid and m.sum() == grid[0] * grid[1] // 2


def test_patch_mask_modes():
  half = canvas.query_half_mask((8, 4))
  m = ops.patch_mask(size=(32, 32), patch_size=8, mode="half")({"seg_type": 0}, None)["mask"]
  np.testing.assert_array_equal(m, half)
  op = ops.patch_mask(size=(32, 32), patch_size=8, mode="painter", half_prob=0.5)
  masks = [op({"seg_type": 0}, np.random.default_rng(s))["mask"] for s in range(40)]
  n_half = sum(np.array_equal(m, half) for m in masks)
  assert 5 < n_half < 35 and all(m.sum() == 16 for m in masks)
