"""Class folds for few-shot evaluation and held-out training classes.

Schemes (over a sorted list of label ids):
  'interleaved' (COCO-20i): class at position i is in fold i % num_folds.
  'interleaved_equal' (LVIS-92i): interleaved, each fold cut to len(ids) // num_folds classes
    (fold f: positions f, f + F, ..., f + F * (n // F - 1)).
  'blocks' (PASCAL-5i): contiguous blocks; fold f holds positions [f*n/F, (f+1)*n/F).
  'list': an explicit list of class names/ids is the test fold (FSS-1000 official test classes);
    fold 0 is that list, fold 1 the rest.
"""

from __future__ import annotations

from typing import Sequence


def fold_classes(
  class_ids: Sequence[int], fold: int, num_folds: int = 4, scheme: str = "interleaved"
) -> list[int]:
  ids = sorted(int(c) for c in class_ids)
  if not 0 <= fold < num_folds:
    raise ValueError(f"fold {fold} not in [0, {num_folds})")
  if scheme == "interleaved":
    return [c for i, c in enumerate(ids) if i % num_folds == fold]
  if scheme == "interleaved_equal":
    return [ids[fold + num_folds * v] for v in range(len(ids) // num_folds)]
  if scheme == "blocks":
    n = len(ids)
    return ids[fold * n // num_folds : (fold + 1) * n // num_folds]
  raise ValueError(f"unknown fold scheme {scheme!r}")


# Folds used for the semantic sets in ../shared/data (documented in data_prep/README.md):
# COCO (coco128_seg, coco): COCO-20i interleaved over the 80 label ids (1..80), 4 folds.
# PASCAL VOC: PASCAL-5i blocks over 1..20, 4 folds.
# clothing_co_parsing: interleaved over labels 1..58, 4 folds.
# camvid: interleaved over labels 1..11, 4 folds (3/3/3/2 classes).
DEFAULT_FOLDS = {
  "coco128_seg": dict(num_folds=4, scheme="interleaved"),
  "coco": dict(num_folds=4, scheme="interleaved"),
  "pascal_voc": dict(num_folds=4, scheme="blocks"),
  "clothing_co_parsing": dict(num_folds=4, scheme="interleaved"),
  "camvid": dict(num_folds=4, scheme="interleaved"),
  "ade20k": dict(num_folds=4, scheme="interleaved"),
}
