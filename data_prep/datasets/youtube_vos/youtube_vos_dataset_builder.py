"""YouTube-VOS (2018 / 2019) as frame records of the annotated frames."""

import os

try:
  from data_prep.datasets._common import SourceBuilder, sources
except ImportError:  # run by `tfds build data_prep/datasets/NAME` (datasets/ on sys.path)
  from _common import SourceBuilder, sources


class Builder(SourceBuilder):
  """YouTube-VOS video object segmentation, one record per annotated frame with video_id /
  frame_index: train/JPEGImages/VID/F.jpg + train/Annotations/VID/F.png (palette index =
  object id). 'train' has every annotated frame; 'valid' (split 'validation') only the frames
  where objects first appear (the prompts of the benchmark).
  """

  KIND = "video"
  HAS_INSTANCES = True
  MANUAL_DOWNLOAD_INSTRUCTIONS = "manual_dir: youtube_vos/ with train/ and valid/ folders"

  def split_sources(self, manual_dir):
    out = {}
    for s, name in (("train", "train"), ("valid", "validation")):
      if os.path.isdir(os.path.join(manual_dir, s, "Annotations")):
        out[name] = sources.youtube_vos(manual_dir, s)
    if not out:
      raise sources.DataError(f"no train/Annotations or valid/Annotations in {manual_dir}")
    return out
