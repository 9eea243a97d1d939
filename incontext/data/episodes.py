"""Fixed-seed evaluation episodes: k-shot semantic episodes over class folds, and video episodes.

Semantic (COCO-20i / PASCAL-5i / FSS-1000 style):

  eps = SemanticEpisodes(source, fold=0, shots=1, num_episodes=1000, seed=0)
  ep = eps[i]   # {"support": [(image uint8 HxWx3, mask uint8 HxW 0/1)] * shots,
                #  "query": (image, mask), "class_id": int, "class_name": str, "fold": int}

Class folds come from `incontext.data.folds` (fold_classes; DEFAULT_FOLDS per dataset name), or
pass `classes=` explicitly (e.g. all classes of an FSS-1000 test split). Episode i uses class
`classes[i % len(classes)]` (balanced) and images drawn from `np.random.default_rng([seed, fold,
shots, i])`, so every evaluation sees the same episodes, independent of how many are read.
Train on the same dataset with `exclude_fold=fold` (pipeline config) to keep the classes unseen.

Video (DAVIS): VideoEpisodes(source)[i] -> {"video_id", "prompt": (first image, first mask),
"frames": [images of frames 1..], "masks": [gt masks of frames 1..], "object_ids": [...]} where
masks are uint8 object-id maps (0 background, 255 ignore; binary 0/1 for DAVIS 2016).
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from incontext.data import folds as folds_lib
from incontext.data import sources


class SemanticEpisodes:
  """Deterministic k-shot episodes over the classes of one fold of a semantic source."""

  def __init__(self, source, *, fold: int = 0, shots: int = 1, num_episodes: int = 1000,
               seed: int = 0, num_folds: int | None = None, scheme: str | None = None,
               classes: Sequence[int] | None = None, dataset_name: str | None = None):
    self.source, self.fold, self.shots, self.seed = source, int(fold), int(shots), int(seed)
    metas = [source.meta(i) for i in range(len(source))]
    by_class: dict[int, list[int]] = {}
    for i, m in enumerate(metas):
      for c in m["classes"]:
        by_class.setdefault(int(c), []).append(i)
    if classes is None:
      name = dataset_name or getattr(source, "name", "")
      fdef = folds_lib.DEFAULT_FOLDS.get(name, {})
      nf = num_folds or fdef.get("num_folds", 4)
      sch = scheme or fdef.get("scheme", "interleaved")
      all_ids = sorted(set(getattr(source, "class_names", {}) or {}) | set(by_class))
      classes = folds_lib.fold_classes(all_ids, self.fold, nf, sch)
    # A class needs shots + 1 distinct images.
    self.classes = [int(c) for c in classes if len(by_class.get(int(c), [])) >= self.shots + 1]
    if not self.classes:
      raise ValueError(f"no class of fold {fold} has {shots + 1} images in {source.name}")
    self.by_class = {c: np.array(by_class[c]) for c in self.classes}
    self.num_episodes = int(num_episodes)

  def __len__(self) -> int:
    return self.num_episodes

  def spec(self, i: int) -> tuple[int, list[int], int]:
    """(class id, support indices, query index) of episode i."""
    c = self.classes[i % len(self.classes)]
    rng = np.random.default_rng([self.seed, self.fold, self.shots, i])
    pick = rng.choice(self.by_class[c], self.shots + 1, replace=False)
    return c, [int(x) for x in pick[1:]], int(pick[0])

  def __getitem__(self, i: int) -> dict[str, Any]:
    if not 0 <= i < self.num_episodes:
      raise IndexError(i)
    c, sup, q = self.spec(int(i))

    def load(k):
      ex = self.source[k]
      return ex["image"], (ex["mask"] == c).astype(np.uint8)
    names = getattr(self.source, "class_names", {}) or {}
    return {"support": [load(k) for k in sup], "query": load(q), "class_id": c,
            "class_name": names.get(c, str(c)), "fold": self.fold}


class VideoEpisodes:
  """One episode per video of a frame-level video source (e.g. sources.davis)."""

  def __init__(self, source):
    self.source = source
    vids: dict[str, list[tuple[int, int]]] = {}
    for i in range(len(source)):
      m = source.meta(i)
      vids.setdefault(m["video_id"], []).append((m["frame_index"], i))
    self.videos = {v: [i for _, i in sorted(f)] for v, f in sorted(vids.items())}
    self.names = list(self.videos)

  def __len__(self) -> int:
    return len(self.names)

  def __getitem__(self, k: int) -> dict[str, Any]:
    v = self.names[k]
    exs = [self.source[i] for i in self.videos[v]]
    to_map = lambda e: (np.asarray(e.get("instances", e["mask"]), np.int32)
                        .clip(0, 255).astype(np.uint8))
    first = to_map(exs[0])
    ids = sorted(int(x) for x in np.unique(first) if x not in (0, sources.IGNORE))
    return {"video_id": v, "prompt": (exs[0]["image"], first),
            "frames": [e["image"] for e in exs[1:]], "masks": [to_map(e) for e in exs[1:]],
            "object_ids": ids}
