"""Fixed-seed evaluation episodes: the one generator of k-shot semantic episodes (used by the
evaluators, `experiments/evaluate.py` and the trainer's periodic evaluation), and video episodes.

Semantic (COCO-20i / PASCAL-5i / FSS-1000 / LVIS-92i style):

  eps = SemanticEpisodes(source, fold=0, shots=1, num_episodes=1000, seed=0)
  eps.episodes[i]  # {"class": c, "query": example index, "supports": [shots example indices]}
  ep = eps[i]      # {"support": [(image uint8 HxWx3, mask uint8 HxW 0/1)] * shots,
                   #  "query": (image, mask), "class_id": int, "class_name": str, "fold": int}

Class folds come from `incontext.data.folds` (fold_classes; DEFAULT_FOLDS per dataset name), or
pass `classes=` explicitly (e.g. all classes of an FSS-1000 test split); `indices=` restricts the
examples (e.g. a held-out slice). Classes with fewer than shots + 1 examples are skipped. Episode
i uses class `usable[i % len(usable)]` (balanced over classes) and its query and supports are
drawn without replacement among the examples containing that class, by one
`np.random.default_rng(seed)` consumed in episode order (`make_episodes`): the episodes are a
pure function of (source, classes, indices, shots, num_episodes, seed). Train on the same
dataset with `exclude_fold=fold` (pipeline config) to keep the classes unseen.

Procedural episodes (synthetic held-out classes, drawn with the training pairs' generator) are
`procedural_episodes` (canvases at model resolution; see incontext.data.procedural).

Video (DAVIS): VideoEpisodes(source)[i] -> {"video_id", "prompt": (first image, first mask),
"frames": [images of frames 1..], "masks": [gt masks of frames 1..], "object_ids": [...]} where
masks are uint8 object-id maps (0 background, 255 ignore; binary 0/1 for DAVIS 2016).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from incontext.data import folds as folds_lib
from incontext.data import sources


def class_index(source, classes: Sequence[int], indices: Sequence[int] | None = None) -> dict:
  """{class: [example indices containing it]} over `indices` (default all) of a source."""
  want = {int(c) for c in classes}
  out = {c: [] for c in sorted(want)}
  idx = range(len(source)) if indices is None else indices
  for i in idx:
    for c in source.meta(int(i))["classes"]:
      if int(c) in want:
        out[int(c)].append(int(i))
  return out


def make_episodes(index: dict, *, shots: int, num_episodes: int, seed: int = 0) -> list[dict]:
  """[{class, query, supports [shots]}] (example indices) from a `class_index`; classes with
  fewer than shots + 1 examples are skipped."""
  rng = np.random.default_rng(seed)
  usable = [c for c, ex in index.items() if len(ex) >= shots + 1]
  if not usable:
    raise ValueError(f"no class has {shots + 1} examples for {shots}-shot episodes")
  eps = []
  for i in range(num_episodes):
    c = usable[i % len(usable)]
    pick = rng.choice(len(index[c]), size=shots + 1, replace=False)
    ex = [index[c][j] for j in pick]
    eps.append({"class": c, "query": ex[0], "supports": ex[1:]})
  return eps


def fold_class_ids(
  source,
  fold: int,
  num_folds: int | None = None,
  scheme: str | None = None,
  dataset_name: str | None = None,
) -> list[int]:
  """The label ids of class fold `fold` over all of the source's classes (its `class_names`
  and the classes present), with the dataset's default fold scheme unless given."""
  name = dataset_name or getattr(source, "name", "")
  fdef = folds_lib.DEFAULT_FOLDS.get(name, {})
  nf = num_folds or fdef.get("num_folds", 4)
  sch = scheme or fdef.get("scheme", "interleaved")
  ids = {int(c) for c in (getattr(source, "class_names", {}) or {}) if int(c) > 0}
  if not ids:
    ids = {int(c) for i in range(len(source)) for c in source.meta(i)["classes"]}
  return folds_lib.fold_classes(sorted(ids), int(fold), nf, sch)


class SemanticEpisodes:
  """Deterministic k-shot episodes over the classes of one fold (or a class list) of a
  semantic source."""

  def __init__(
    self,
    source,
    *,
    fold: int = 0,
    shots: int = 1,
    num_episodes: int = 1000,
    seed: int = 0,
    num_folds: int | None = None,
    scheme: str | None = None,
    classes: Sequence[int] | None = None,
    dataset_name: str | None = None,
    indices: Sequence[int] | None = None,
  ):
    self.source, self.fold, self.shots, self.seed = source, int(fold), int(shots), int(seed)
    if classes is None:
      classes = fold_class_ids(source, fold, num_folds, scheme, dataset_name)
    self.fold_classes = [int(c) for c in classes]
    self.index = class_index(source, self.fold_classes, indices)
    self.classes = [c for c, ex in self.index.items() if len(ex) >= self.shots + 1]
    if not self.classes:
      raise ValueError(
        f"no class of fold {fold} has {shots + 1} images in {getattr(source, 'name', 'the source')}"
      )
    self.episodes = make_episodes(
      self.index, shots=self.shots, num_episodes=int(num_episodes), seed=self.seed
    )
    self.num_episodes = int(num_episodes)

  def __len__(self) -> int:
    return self.num_episodes

  def spec(self, i: int) -> tuple[int, list[int], int]:
    """(class id, support indices, query index) of episode i."""
    e = self.episodes[i]
    return e["class"], list(e["supports"]), e["query"]

  def __getitem__(self, i: int) -> dict[str, Any]:
    if not 0 <= i < self.num_episodes:
      raise IndexError(i)
    c, sup, q = self.spec(int(i))

    def load(k):
      ex = self.source[k]
      return ex["image"], (ex["mask"] == c).astype(np.uint8)

    names = getattr(self.source, "class_names", {}) or {}
    return {
      "support": [load(k) for k in sup],
      "query": load(q),
      "class_id": c,
      "class_name": names.get(c, str(c)),
      "fold": self.fold,
    }


def procedural_episodes(config, *, seed: int = 1234, per_class: int = 4) -> list[dict]:
  """Canvas episodes on procedural held-out classes (`incontext.data.procedural`)."""
  from incontext.data import procedural  # needs grain (the train extra)

  return procedural.make_episodes(config, seed=seed, per_class=per_class)


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
    to_map = lambda e: (
      np.asarray(e.get("instances", e["mask"]), np.int32).clip(0, 255).astype(np.uint8)
    )
    first = to_map(exs[0])
    ids = sorted(int(x) for x in np.unique(first) if x not in (0, sources.IGNORE))
    return {
      "video_id": v,
      "prompt": (exs[0]["image"], first),
      "frames": [e["image"] for e in exs[1:]],
      "masks": [to_map(e) for e in exs[1:]],
      "object_ids": ids,
    }
