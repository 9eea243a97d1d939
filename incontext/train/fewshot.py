"""Few-shot segmentation metrics on evaluation episodes (host-side numpy).

An episode is a canvas (keys of `incontext.canvas`, query half hidden) plus
  query_label [H, W] int   0 background, k = the k-th prompt colour (1-based)
  colours     [K, 3] uint8 the prompt's colour of each labelled class
  class_ids   [K] int      class of each colour (IoU is accumulated per class)
  prompt_label [H, W] int  (optional) the prompt's label map, for the copy baseline
  query_objects [H, W] int (optional) 1 on every object of the query, the target and the
                           distractors alike, for the paint-every-object baseline
The prediction is decoded by nearest colour among black and the prompt colours. The
baselines go through the same path: their label maps are painted with the episode's colours
(`encode_labels`) and decoded by `decode_labels`.
"""

from typing import Iterable

import numpy as np

from incontext import canvas


def encode_labels(label: np.ndarray, colours: np.ndarray) -> np.ndarray:
  """[H, W] int label (0 black, k the k-th colour) -> [H, W, 3] normalised colour image."""
  pal = np.concatenate([np.zeros((1, 3), np.uint8), np.asarray(colours, np.uint8)], 0)
  return canvas.normalize(pal[np.clip(label, 0, len(pal) - 1)])


def decode_labels(pred_query: np.ndarray, colours: np.ndarray) -> np.ndarray:
  """[H, W, 3] normalised prediction -> [H, W] int label by nearest of (black, colours...)."""
  rgb = canvas.denormalize(pred_query)
  pal = np.concatenate([np.zeros((1, 3), np.float32), np.asarray(colours, np.float32)], 0)
  d = ((rgb[:, :, None, :] - pal[None, None]) ** 2).sum(-1)
  return d.argmin(-1).astype(np.int32)


class LabelMapIoU:
  """Per-class IoU sums over multi-class label maps (ids 1..K -> class_ids); mIoU = mean over the
  classes seen. (`metrics.IoUAccumulator` is the binary, per-episode one of the evaluators.)"""

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
  """mIoU (in %) of the predictions and of the baselines the episodes allow.

  -> {'miou', 'baseline_copy_miou' (the prompt's mask copied onto the query; episodes with
  `prompt_label`), 'baseline_objects_miou' (every query object painted, target or not: what
  a segmenter without in-context matching reaches at best; episodes with `query_objects`)}.
  """
  accs = {
    "miou": LabelMapIoU(),
    "baseline_copy_miou": LabelMapIoU(),
    "baseline_objects_miou": LabelMapIoU(),
  }
  for pq, ep in zip(pred_queries, episodes):
    col, gt, ids = ep["colours"], ep["query_label"], ep["class_ids"]
    accs["miou"].add(decode_labels(pq, col), gt, ids)
    if "prompt_label" in ep:
      accs["baseline_copy_miou"].add(
        decode_labels(encode_labels(ep["prompt_label"], col), col), gt, ids
      )
    if "query_objects" in ep:
      accs["baseline_objects_miou"].add(
        decode_labels(encode_labels(ep["query_objects"], col), col), gt, ids
      )
  return {k: 100 * a.miou() for k, a in accs.items() if a.union}
