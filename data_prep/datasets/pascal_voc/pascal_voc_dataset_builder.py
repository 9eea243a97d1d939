"""PASCAL VOC 2012 segmentation (JPEGImages, SegmentationClass, ImageSets/Segmentation)."""

import os

try:
  from data_prep.datasets._common import SourceBuilder, sources
except ImportError:  # run by `tfds build data_prep/datasets/NAME` (datasets/ on sys.path)
  from _common import SourceBuilder, sources


class Builder(SourceBuilder):
  """PASCAL VOC semantic segmentation: labels 1..20, 0 background, 255 boundary/ignore."""

  MANUAL_DOWNLOAD_INSTRUCTIONS = (
    "manual_dir: VOCdevkit/VOC2012 (JPEGImages, SegmentationClass, ImageSets)"
  )

  def split_sources(self, manual_dir):
    out = {}
    for s, name in (("train", "train"), ("val", "validation")):
      if os.path.exists(os.path.join(manual_dir, "ImageSets", "Segmentation", f"{s}.txt")):
        out[name] = sources.pascal_voc(manual_dir, s)
    if not out:
      raise sources.DataError(f"no ImageSets/Segmentation/{{train,val}}.txt in {manual_dir}")
    return out
