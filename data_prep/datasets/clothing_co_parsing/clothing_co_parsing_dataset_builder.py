"""Clothing Co-Parsing: images/NNNN.jpg + masks/NNNN.png (0..58, 0 = null) + classes.txt."""

try:
  from data_prep.datasets._common import SourceBuilder, sources
except ImportError:  # run by `tfds build data_prep/datasets/NAME` (datasets/ on sys.path)
  from _common import SourceBuilder, sources


class Builder(SourceBuilder):
  """Clothing Co-Parsing (CCP), pixel-level annotated photos; one 'train' split."""

  MANUAL_DOWNLOAD_INSTRUCTIONS = "manual_dir: images/*.jpg, masks/*.png (label index), classes.txt"

  def split_sources(self, manual_dir):
    return {"train": sources.clothing_co_parsing(manual_dir)}
