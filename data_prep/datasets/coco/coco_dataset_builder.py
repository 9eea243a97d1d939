"""COCO with semantic + instance masks, from the YOLO-seg layout or COCO instances json."""

import os

import tensorflow_datasets as tfds

try:
  from data_prep.datasets._common import SourceBuilder, sources
except ImportError:  # run by `tfds build data_prep/datasets/NAME` (datasets/ on sys.path)
  from _common import SourceBuilder, sources


class Builder(SourceBuilder):
  """COCO semantic (label = class + 1) and instance masks.

  Config 'yolo': images/SPLIT/*.jpg + labels/SPLIT/*.txt (YOLO-seg polygons) + classes.txt
  (e.g. ../shared/data/coco128_seg); SPLIT folders found under images/ become splits
  (train2017 -> train, val2017 -> validation).
  Config 'json': train2017/, val2017/ + annotations/instances_{train,val}2017.json.
  """

  BUILDER_CONFIGS = [tfds.core.BuilderConfig(name="yolo"), tfds.core.BuilderConfig(name="json")]
  HAS_INSTANCES = True
  MANUAL_DOWNLOAD_INSTRUCTIONS = "manual_dir: a COCO copy in YOLO-seg or official json layout"

  def split_sources(self, manual_dir):
    rename = {"train2017": "train", "val2017": "validation"}
    out = {}
    if self.builder_config.name == "yolo":
      idir = os.path.join(manual_dir, "images")
      if not os.path.isdir(idir):
        raise sources.DataError(f"missing COCO-YOLO images folder: {idir}")
      for s in sorted(os.listdir(idir)):
        out[rename.get(s, s)] = sources.coco_yolo(manual_dir, s)
    else:
      for s in ("train2017", "val2017"):
        if os.path.exists(os.path.join(manual_dir, "annotations", f"instances_{s}.json")):
          out[rename[s]] = sources.coco_json(manual_dir, s)
      if not out:
        raise sources.DataError(f"no annotations/instances_*2017.json in {manual_dir}")
    return out
