"""DAVIS 2016 / 2017 (JPEGImages/480p/SEQ, Annotations/480p/SEQ) as frame records."""

import os

import tensorflow_datasets as tfds

try:
  from data_prep.datasets._common import SourceBuilder, sources
except ImportError:  # run by `tfds build data_prep/datasets/NAME` (datasets/ on sys.path)
  from _common import SourceBuilder, sources


class Builder(SourceBuilder):
  """DAVIS video object segmentation, one record per frame with video_id / frame_index.

  Config '2016': binary masks (0/255 -> instance 1); '2017': palette index = object id.
  Splits from ImageSets (2016: ImageSets/480p/{train,val}.txt;
  2017: ImageSets/2017/{train,val}.txt);
  without them, ImageSets/sequences.txt (or all sequences) becomes 'train'.
  """

  BUILDER_CONFIGS = [tfds.core.BuilderConfig(name="2016"), tfds.core.BuilderConfig(name="2017")]
  KIND = "video"
  HAS_INSTANCES = True
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
    "manual_dir: DAVIS/ with JPEGImages/480p, Annotations/480p, ImageSets"
  )

  def split_sources(self, manual_dir):
    year = self.builder_config.name
    out = {}
    for s in ("train", "val"):
      for c in (
        os.path.join(manual_dir, "ImageSets", year, f"{s}.txt"),
        os.path.join(manual_dir, "ImageSets", "480p", f"{s}.txt"),
      ):
        if os.path.exists(c):
          out["validation" if s == "val" else s] = sources.davis(manual_dir, split=s, year=year)
          break
    if not out:
      out["train"] = sources.davis(manual_dir, split="sequences", year=year)
    return out
