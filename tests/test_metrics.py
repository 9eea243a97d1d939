"""Metrics against hand-computed values: IoU/mIoU/FB-IoU and the DAVIS J and F."""

import numpy as np
import pytest

from incontext import metrics


def _square(shape, r0, c0, size=2):
  m = np.zeros(shape, bool)
  m[r0 : r0 + size, c0 : c0 + size] = True
  return m


def test_seg2bmap_hand_computed():
  seg = _square((5, 5), 1, 1)
  want = np.zeros((5, 5), bool)
  want[0, 0:3] = want[2, 0:3] = True
  want[1, 0] = want[1, 2] = True  # ring around (1,1): 8 pixels, (1,1) itself not
  np.testing.assert_array_equal(metrics.seg2bmap(seg), want)


def test_seg2bmap_last_row_and_column_rules():
  # A full mask has no boundary: the generic rule compares with in-image neighbours only, the
  # last row uses seg ^ east, the last column seg ^ south, and the corner is always 0.
  np.testing.assert_array_equal(metrics.seg2bmap(np.ones((3, 4), bool)), np.zeros((3, 4), bool))
  # A mask touching the bottom-right corner: the last-row/column rules give one pixel each.
  seg = np.zeros((3, 4), bool)
  seg[2, 3] = True
  want = np.zeros((3, 4), bool)
  want[1, 2] = True  # south-east neighbour differs
  want[1, 3] = True  # last column: seg ^ south
  want[2, 2] = True  # last row: seg ^ east
  np.testing.assert_array_equal(metrics.seg2bmap(seg), want)


def test_disk_and_dilation():
  np.testing.assert_array_equal(metrics.disk(1), np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]], bool))
  assert metrics.disk(2).sum() == 13
  m = np.zeros((5, 5), bool)
  m[0, 0] = True
  d = metrics.binary_dilation(m, metrics.disk(1))
  assert set(zip(*np.nonzero(d))) == {(0, 0), (0, 1), (1, 0)}


def test_dilation_matches_scipy():
  ndimage = pytest.importorskip("scipy.ndimage")
  rng = np.random.default_rng(0)
  m = rng.random((23, 31)) < 0.05
  for r in (1, 2, 4):
    np.testing.assert_array_equal(
      metrics.binary_dilation(m, metrics.disk(r)), ndimage.binary_dilation(m, metrics.disk(r))
    )


def test_iou_hand_computed():
  gt = _square((6, 8), 1, 1)
  assert metrics.iou(_square((6, 8), 1, 2), gt) == pytest.approx(2 / 6)
  assert metrics.iou(_square((6, 8), 1, 3), gt) == 0.0
  assert metrics.iou(gt, gt) == 1.0
  assert metrics.iou(np.zeros((4, 4)), np.zeros((4, 4))) == 1.0
  void = np.zeros((6, 8), bool)
  void[1, 2] = True  # drops one intersection and one union pixel
  assert metrics.iou(_square((6, 8), 1, 2), gt, void) == pytest.approx(1 / 5)


def test_boundary_f_hand_computed():
  # 60x80 image: diagonal 100, 0.008 * 100 = 0.8 -> tolerance ceil = 1 pixel (plus-shaped disk).
  gt = _square((60, 80), 10, 10)
  pred = _square((60, 80), 10, 12)
  # gt boundary ring rows 9-11 cols 9-11, pred ring rows 9-11 cols 11-13 (8 pixels each);
  # pred pixels within 1 (4-neighbourhood) of the gt ring: cols 11 (3) + (9,12), (11,12) = 5.
  assert metrics.boundary_f(pred, gt) == pytest.approx(5 / 8)
  assert metrics.boundary_f(pred, gt, bound_th=1) == pytest.approx(5 / 8)
  # A tolerance of 2 pixels matches everything but the far corners: disk(2) reaches (dy,dx)
  # with dy^2+dx^2 <= 4; pred (9,13) is 2 from gt (9,11) -> matched; all 8 match.
  assert metrics.boundary_f(pred, gt, bound_th=2) == pytest.approx(1.0)
  assert metrics.boundary_f(gt, gt) == 1.0
  empty = np.zeros((60, 80), bool)
  assert metrics.boundary_f(empty, empty) == 1.0
  assert metrics.boundary_f(empty, gt) == 0.0
  assert metrics.boundary_f(gt, empty) == 0.0


def test_boundary_f_precision_recall_differ():
  # gt: 2x2 square; pred: 2x2 square plus a far-away single pixel (boundary of 3 more pixels?).
  gt = _square((60, 80), 10, 10)
  pred = gt.copy()
  pred[40, 40] = True  # its seg2bmap boundary: (39,39),(39,40),(40,39),(40,40)? computed below
  extra = metrics.seg2bmap(_square((60, 80), 40, 40, 1)).sum()
  assert extra == 4  # (39,39) se, (39,40) s, (40,39) e, (40,40) itself
  p, r = 8 / (8 + extra), 1.0
  assert metrics.boundary_f(pred, gt) == pytest.approx(2 * p * r / (p + r))


def test_video_jf_skips_first_and_last_and_averages():
  gt = [_square((60, 80), 10, 10).astype(np.uint8) for _ in range(4)]
  pred = [g.copy() for g in gt]
  pred[1] = _square((60, 80), 10, 12).astype(np.uint8)  # J 0, F 5/8
  pred[0] = np.zeros((60, 80), np.uint8)  # first frame: not scored
  pred[3] = np.zeros((60, 80), np.uint8)  # last frame: not scored
  jf = metrics.video_jf(pred, gt)
  assert jf["J"][1] == pytest.approx(0.5)
  assert jf["F"][1] == pytest.approx((5 / 8 + 1) / 2)
  acc = metrics.JFAccumulator()
  acc.add("seq", jf)
  res = acc.result()
  assert res["J"] == pytest.approx(50.0)
  assert res["J&F"] == pytest.approx((50.0 + 100 * (13 / 16)) / 2)


def test_iou_accumulator_miou_fbiou():
  acc = metrics.IoUAccumulator()
  gt = _square((4, 4), 0, 0)  # 4 fg pixels, 12 bg
  acc.add(_square((4, 4), 0, 1), gt, class_id=1)  # fg I=2 U=6; bg I=10 U=14
  acc.add(gt, gt, class_id=1)  # fg I=4 U=4; bg I=12 U=12
  acc.add(np.zeros((4, 4)), gt, class_id=2)  # fg I=0 U=4; bg I=12 U=16
  res = acc.result()
  assert res["per_class"][1] == pytest.approx(100 * 6 / 10)
  assert res["per_class"][2] == pytest.approx(0.0)
  assert res["miou"] == pytest.approx(30.0)
  assert res["fb_iou"] == pytest.approx(100 * (6 / 14 + 34 / 42) / 2)
  assert res["episodes"] == 3


def test_shape_mismatch_is_an_error():
  with pytest.raises(ValueError, match="shape"):
    metrics.iou(np.zeros((2, 2)), np.zeros((3, 3)))
