"""Host-side numpy metrics: IoU / mIoU / FB-IoU for few-shot segmentation, J and F for video.

Few-shot semantic segmentation (HSNet / FPTrans / SegGPT protocol):
  * mIoU: per class c, IoU_c = sum over that class's episodes of |pred & gt| / sum of |pred | gt|
    (intersections and unions accumulated over all episodes of the class, then divided); mIoU is
    the mean of IoU_c over classes.
  * FB-IoU: foreground and background IoU, each accumulated over all episodes, averaged.
Accumulation is sum-and-count (`IoUAccumulator`), so the final numbers are exact.

Video (DAVIS benchmark, `davis2017-evaluation/davis2017/metrics.py`):
  * J = region similarity: |pred & gt| / |pred | gt| (void pixels excluded); 1 when both empty.
  * F = boundary F-measure: boundaries are extracted with `seg2bmap` (one-pixel boundaries of the
    binary mask, as in the benchmark), matched within `ceil(0.008 * image diagonal)` pixels using a
    disk-shaped dilation; precision/recall of matched boundary pixels; F = 2PR / (P + R).
  * Per sequence and object: the mean over frames 1..N-2 (the first frame is given, the last is
    excluded as in the benchmark); J&F = (mean J + mean F) / 2 over all objects of all sequences.
Everything is numpy-only (no scipy / skimage / cv2 dependency).
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np


# ---------------------------------------------------------------------------------------------
# IoU and few-shot accumulators.


def iou(pred: np.ndarray, gt: np.ndarray, void: np.ndarray | None = None) -> float:
  """Region IoU of two boolean masks [H, W] (DAVIS J); 1.0 when both are empty."""
  pred, gt = np.asarray(pred, bool), np.asarray(gt, bool)
  if pred.shape != gt.shape:
    raise ValueError(f"prediction shape {pred.shape} != ground-truth shape {gt.shape}")
  keep = np.ones_like(gt) if void is None else ~np.asarray(void, bool)
  inter = np.sum(pred & gt & keep)
  union = np.sum((pred | gt) & keep)
  return 1.0 if union == 0 else float(inter / union)


class IoUAccumulator:
  """Sum-and-count accumulation of per-class and foreground/background IoU over episodes.

  `add(pred, gt, class_id)` takes binary masks [H, W] of one episode (foreground = the episode's
  class); `ignore` marks pixels excluded from both. `result()` gives mIoU, FB-IoU and per-class
  IoU in percent.
  """

  def __init__(self):
    self.inter: dict[int, float] = {}
    self.union: dict[int, float] = {}
    self.rows: list[tuple[int, float, float]] = []  # (class, intersection, union) per episode
    self.fb_inter = np.zeros(2)  # [background, foreground]
    self.fb_union = np.zeros(2)
    self.count = 0

  def add(self, pred: np.ndarray, gt: np.ndarray, class_id: int, ignore: np.ndarray | None = None):
    pred, gt = np.asarray(pred, bool), np.asarray(gt, bool)
    if pred.shape != gt.shape:
      raise ValueError(f"prediction shape {pred.shape} != ground-truth shape {gt.shape}")
    keep = np.ones_like(gt) if ignore is None else ~np.asarray(ignore, bool)
    i = float(np.sum(pred & gt & keep))
    u = float(np.sum((pred | gt) & keep))
    c = int(class_id)
    self.inter[c] = self.inter.get(c, 0.0) + i
    self.union[c] = self.union.get(c, 0.0) + u
    self.rows.append((c, i, u))
    self.fb_inter += [np.sum(~pred & ~gt & keep), i]
    self.fb_union += [np.sum((~pred | ~gt) & keep), u]
    self.count += 1

  def bootstrap_miou(
    self, num: int = 1000, seed: int = 0, level: float = 0.95
  ) -> tuple[float, float]:
    """Percentile bootstrap interval of the mIoU (in %) over episodes: `num` resamples of the
    episodes with replacement, each scored like `result` (per-class sums, then the mean over
    the classes it contains)."""
    if not self.rows:
      return float("nan"), float("nan")
    cls = np.array([r[0] for r in self.rows])
    classes, ci = np.unique(cls, return_inverse=True)
    onehot = np.eye(len(classes))[ci]  # [E, C]
    inter = onehot * np.array([r[1] for r in self.rows])[:, None]
    union = onehot * np.array([r[2] for r in self.rows])[:, None]
    rng = np.random.default_rng(seed)
    w = rng.multinomial(len(self.rows), np.full(len(self.rows), 1 / len(self.rows)), size=num)
    n, i, u = w @ onehot, w @ inter, w @ union  # [B, C]
    iou = np.where(u > 0, i / np.maximum(u, 1e-12), 1.0)
    miou = 100 * (iou * (n > 0)).sum(1) / (n > 0).sum(1)
    a = (1 - level) / 2
    return float(np.quantile(miou, a)), float(np.quantile(miou, 1 - a))

  def result(self) -> dict:
    """{'miou', 'miou_ci95' (bootstrap_miou), 'fb_iou', 'per_class': {id: iou}, 'episodes'}
    with IoUs in percent."""
    per_class = {
      c: 100.0 * (self.inter[c] / self.union[c] if self.union[c] else 1.0)
      for c in sorted(self.inter)
    }
    fb = np.where(self.fb_union > 0, self.fb_inter / np.maximum(self.fb_union, 1), 1.0)
    return {
      "miou": float(np.mean(list(per_class.values()))) if per_class else float("nan"),
      "miou_ci95": list(self.bootstrap_miou()),
      "fb_iou": 100.0 * float(fb.mean()) if self.count else float("nan"),
      "per_class": per_class,
      "episodes": self.count,
    }


# ---------------------------------------------------------------------------------------------
# DAVIS boundary F-measure.


def seg2bmap(seg: np.ndarray) -> np.ndarray:
  """One-pixel boundary map [H, W] bool of a binary mask, exactly as the DAVIS benchmark.

  A pixel is a boundary pixel if it differs from its east, south or south-east neighbour
  (outside the image counts as 0 for those neighbours, with the benchmark's special cases on the
  last row/column and the bottom-right pixel).
  """
  seg = np.asarray(seg).astype(bool)
  if seg.ndim != 2:
    raise ValueError(f"seg2bmap expects a 2-D mask, got shape {seg.shape}")
  e = np.zeros_like(seg)
  s = np.zeros_like(seg)
  se = np.zeros_like(seg)
  e[:, :-1] = seg[:, 1:]
  s[:-1, :] = seg[1:, :]
  se[:-1, :-1] = seg[1:, 1:]
  b = (seg ^ e) | (seg ^ s) | (seg ^ se)
  b[-1, :] = seg[-1, :] ^ e[-1, :]
  b[:, -1] = seg[:, -1] ^ s[:, -1]
  b[-1, -1] = False
  return b


def disk(radius: int) -> np.ndarray:
  """[2r+1, 2r+1] bool structuring element x^2 + y^2 <= r^2 (skimage.morphology.disk)."""
  r = int(radius)
  y, x = np.mgrid[-r : r + 1, -r : r + 1]
  return (x * x + y * y) <= r * r


def binary_dilation(mask: np.ndarray, selem: np.ndarray) -> np.ndarray:
  """Dilation of a bool mask by a symmetric structuring element (zero outside the image)."""
  mask = np.asarray(mask, bool)
  h, w = mask.shape
  ry, rx = selem.shape[0] // 2, selem.shape[1] // 2
  padded = np.zeros((h + 2 * ry, w + 2 * rx), bool)
  padded[ry : ry + h, rx : rx + w] = mask
  out = np.zeros_like(mask)
  for dy, dx in zip(*np.nonzero(selem)):
    out |= padded[dy : dy + h, dx : dx + w]
  return out


def boundary_f(
  pred: np.ndarray, gt: np.ndarray, void: np.ndarray | None = None, bound_th: float = 0.008
) -> float:
  """DAVIS boundary F-measure of binary masks [H, W] (`db_eval_boundary` / `f_measure`).

  bound_th < 1 is a fraction of the image diagonal (tolerance ceil(bound_th * diag) pixels),
  >= 1 a pixel count.
  """
  pred, gt = np.asarray(pred, bool), np.asarray(gt, bool)
  if pred.shape != gt.shape:
    raise ValueError(f"prediction shape {pred.shape} != ground-truth shape {gt.shape}")
  keep = np.ones_like(gt) if void is None else ~np.asarray(void, bool)
  bound_pix = bound_th if bound_th >= 1 else np.ceil(bound_th * np.linalg.norm(pred.shape))
  fg_b = seg2bmap(pred & keep)
  gt_b = seg2bmap(gt & keep)
  se = disk(int(bound_pix))
  fg_dil = binary_dilation(fg_b, se)
  gt_dil = binary_dilation(gt_b, se)
  n_fg, n_gt = int(fg_b.sum()), int(gt_b.sum())
  if n_fg == 0 and n_gt > 0:
    precision, recall = 1.0, 0.0
  elif n_fg > 0 and n_gt == 0:
    precision, recall = 0.0, 1.0
  elif n_fg == 0 and n_gt == 0:
    precision, recall = 1.0, 1.0
  else:
    precision = float(np.sum(fg_b & gt_dil)) / n_fg
    recall = float(np.sum(gt_b & fg_dil)) / n_gt
  if precision + recall == 0:
    return 0.0
  return 2 * precision * recall / (precision + recall)


def video_jf(
  pred_ids: Sequence[np.ndarray],
  gt_ids: Sequence[np.ndarray],
  object_ids: Iterable[int] | None = None,
  *,
  skip_first_last: bool = True,
) -> dict:
  """J and F of one sequence from id maps ([H, W] ints per frame, 0 background, 255 void).

  Returns {'J': {obj: mean}, 'F': {obj: mean}} (fractions in [0, 1]). Frames 1..N-2 are scored
  when `skip_first_last` (the benchmark's convention; sequences with < 3 frames score all).
  """
  if len(pred_ids) != len(gt_ids):
    raise ValueError(f"{len(pred_ids)} predicted frames for {len(gt_ids)} ground-truth frames")
  frames = list(range(len(gt_ids)))
  if skip_first_last and len(frames) >= 3:
    frames = frames[1:-1]
  if object_ids is None:
    object_ids = sorted({int(v) for g in gt_ids for v in np.unique(g) if 0 < v < 255})
  out = {"J": {}, "F": {}}
  for o in object_ids:
    js, fs = [], []
    for t in frames:
      g = np.asarray(gt_ids[t])
      void = g == 255
      p = np.asarray(pred_ids[t]) == o
      js.append(iou(p, g == o, void))
      fs.append(boundary_f(p, g == o, void))
    out["J"][int(o)] = float(np.mean(js))
    out["F"][int(o)] = float(np.mean(fs))
  return out


class JFAccumulator:
  """Collects per-sequence, per-object J and F; `result()` gives the DAVIS global numbers (%)."""

  def __init__(self):
    self.rows: list[tuple[str, int, float, float]] = []

  def add(self, seq: str, jf: dict):
    for o in jf["J"]:
      self.rows.append((seq, o, jf["J"][o], jf["F"][o]))

  def result(self) -> dict:
    if not self.rows:
      return {"J&F": float("nan"), "J": float("nan"), "F": float("nan"), "per_sequence": {}}
    j = 100 * float(np.mean([r[2] for r in self.rows]))
    f = 100 * float(np.mean([r[3] for r in self.rows]))
    per_seq = {}
    for seq, o, jj, ff in self.rows:
      per_seq[f"{seq}_{o}"] = {"J": 100 * jj, "F": 100 * ff}
    return {"J&F": (j + f) / 2, "J": j, "F": f, "per_sequence": per_seq}
