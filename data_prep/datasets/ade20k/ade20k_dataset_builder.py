"""ADE20K (ADEChallengeData2016: images/{training,validation}, annotations/...)."""

import os

try:
  from data_prep.datasets._common import SourceBuilder, sources
except ImportError:  # run by `tfds build data_prep/datasets/NAME` (datasets/ on sys.path)
  from _common import SourceBuilder, sources


class Builder(SourceBuilder):
  """ADE20K SceneParsing 150 classes: labels 1..150, 0 ('other') -> 255 ignore."""

  MANUAL_DOWNLOAD_INSTRUCTIONS = "manual_dir: ADEChallengeData2016/"

  def split_sources(self, manual_dir):
    out = {}
    for s, name in (("training", "train"), ("validation", "validation")):
      if os.path.isdir(os.path.join(manual_dir, "images", s)):
        out[name] = sources.ade20k(manual_dir, s)
    if not out:
      raise sources.DataError(f"no images/training or images/validation in {manual_dir}")
    return out
