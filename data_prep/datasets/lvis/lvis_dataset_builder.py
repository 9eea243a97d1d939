"""LVIS v1 with semantic + instance masks, over the COCO 2017 images."""

import os

try:
  from data_prep.datasets._common import SourceBuilder, sources
except ImportError:  # run by `tfds build data_prep/datasets/NAME` (datasets/ on sys.path)
  from _common import SourceBuilder, sources


class Builder(SourceBuilder):
  """LVIS v1 (1203 categories): annotations/lvis_v1_{train,val}.json + train2017/, val2017/
  (each image's folder and file come from its coco_url). Label = category id, ids >= 255
  shifted by one (255 is the ignore value); instance k = k-th annotation of the image.
  """

  HAS_INSTANCES = True
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
    "manual_dir: LVIS/ with annotations/lvis_v1_{train,val}.json "
    "and the COCO 2017 image folders train2017/, val2017/"
  )

  def split_sources(self, manual_dir):
    out = {}
    for s, name in (("train", "train"), ("val", "validation")):
      if os.path.exists(os.path.join(manual_dir, "annotations", f"lvis_v1_{s}.json")):
        out[name] = sources.lvis(manual_dir, s)
    if not out:
      raise sources.DataError(f"no annotations/lvis_v1_*.json in {manual_dir}")
    return out
