"""FSS-1000: CLASS/N.jpg + CLASS/N.png (binary); official test classes -> test split."""

import os

try:
  from data_prep.datasets._common import SourceBuilder, sources
except ImportError:  # run by `tfds build data_prep/datasets/NAME` (datasets/ on sys.path)
  from _common import SourceBuilder, sources


class Builder(SourceBuilder):
  """FSS-1000 (1000 classes x 10 images). The label of class folder k (sorted) is k + 1.

  Splits: 'test' = classes listed in fss_test_set.txt (in manual_dir, or its parent), 'train' =
  the others; without the list everything is 'train'.
  """

  MANUAL_DOWNLOAD_INSTRUCTIONS = (
    "manual_dir: FSS-1000/ with one folder per class (+ fss_test_set.txt)"
  )

  def split_sources(self, manual_dir):
    parent = os.path.dirname(manual_dir.rstrip("/"))
    lst = next(
      (
        p
        for p in (
          os.path.join(manual_dir, "fss_test_set.txt"),
          os.path.join(parent, "fss_test_set.txt"),
        )
        if os.path.exists(p)
      ),
      None,
    )
    classes = sorted(
      d for d in os.listdir(manual_dir) if os.path.isdir(os.path.join(manual_dir, d))
    )
    if lst is None:
      return {"train": sources.fss1000(manual_dir)}
    with open(lst) as f:
      test = {l.strip() for l in f if l.strip()}
    out = {"train": sources.fss1000(manual_dir, [c for c in classes if c not in test])}
    if any(c in test for c in classes):
      out["test"] = sources.fss1000(manual_dir, [c for c in classes if c in test])
    return out
