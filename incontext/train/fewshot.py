"""Few-shot segmentation metrics on evaluation episodes (host-side numpy).

An episode is a canvas (keys of `incontext.canvas`, query half hidden) plus
  query_label [H, W] int   0 background, k = the k-th prompt colour (1-based)
  colours     [K, 3] uint8 the prompt's colour of each labelled class
  class_ids   [K] int      class of each colour (IoU is accumulated per class)
  prompt_label [H, W] int  (optional) the prompt's label map, for the copy baseline
The prediction is decoded by nearest colour among black and the prompt colours.
"""
from typing import Iterable

import numpy as np

from incontext import canvas


def decode_labels(pred_query: np.ndarray, colours: np.ndarray) -> np.ndarray:
  """[H, W, 3] normalised prediction -> [H, W] int label by nearest of (black, colours...)."""
  rgb = canvas.denormalize(pred_query)
  pal = np.concatenate([np.zeros((1, 3), np.float32), np.asarray(colours, np.float32)], 0)
  d = ((rgb[:, :, None, :] - pal[None, None]) ** 2).sum(-1)
  return d.argmin(-1).astype(np.int32)


class IoUAccumulator:
  """Per-class intersection and union sums; mIoU = mean over the classes seen."""

  def __init__(self):
    self.inter, self.union = {}, {}

  def add(self, pred_label: np.ndarray, gt_label: np.ndarray, class_ids: Iterable[int]):
    for k, c in enumerate(class_ids, start=1):
      p, g = pred_label == k, gt_label == k
      c = int(c)
      self.inter[c] = self.inter.get(c, 0) + int((p & g).sum())
      self.union[c] = self.union.get(c, 0) + int((p | g).sum())

  def per_class(self) -> dict[int, float]:
    return {c: self.inter[c] / self.union[c] if self.union[c] else 1.0 for c in self.union}

  def miou(self) -> float:
    v = list(self.per_class().values())
    return float(np.mean(v)) if v else float("nan")


def evaluate(pred_queries: np.ndarray, episodes: list[dict]) -> dict[str, float]:
  """mIoU of the predictions and of the copy-the-prompt-mask baseline (in %)."""
  acc, base = IoUAccumulator(), IoUAccumulator()
  for pq, ep in zip(pred_queries, episodes):
    acc.add(decode_labels(pq, ep["colours"]), ep["query_label"], ep["class_ids"])
    if "prompt_label" in ep:
      base.add(ep["prompt_label"], ep["query_label"], ep["class_ids"])
  out = {"miou": 100 * acc.miou()}
  if base.union:
    out["baseline_copy_miou"] = 100 * base.miou()
  return out
