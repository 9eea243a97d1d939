"""Any folder of images with binary, label-index or instance masks."""

import os

try:
  from data_prep.datasets._common import SourceBuilder, sources
except ImportError:  # run by `tfds build data_prep/datasets/NAME` (datasets/ on sys.path)
  from _common import SourceBuilder, sources


import json

import tensorflow_datasets as tfds


class Builder(SourceBuilder):
  """Catch-all for a user's own data: images + masks matched by file stem.

  Defaults: images/*.jpg with masks/{stem}.png; configs 'binary' (0/255 or 0/1), 'label'
  (label index, 0 = background) and 'instance' (instance ids). A `layout.json` in manual_dir
  overrides any `incontext.data.sources.image_mask_folder` argument, e.g.
  {"image_glob": "imgs/*.png", "mask_pattern": "gt/{stem}_mask.png", "ignore_values": [255],
   "class_names": {"1": "polyp"}}. Sub-folders of manual_dir named train/validation/test (each
  with that layout) become splits; otherwise everything is 'train'.
  """

  BUILDER_CONFIGS = [tfds.core.BuilderConfig(name=n) for n in ("binary", "label", "instance")]
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
    "manual_dir: images/ + masks/ (see layout.json in data_prep/README.md)"
  )

  @property
  def HAS_INSTANCES(self):  # noqa: N802
    return self.builder_config.name == "instance"

  def split_sources(self, manual_dir):
    kw = {"mask_type": self.builder_config.name}
    lay = os.path.join(manual_dir, "layout.json")
    if os.path.exists(lay):
      with open(lay) as f:
        kw.update(json.load(f))
    if "class_names" in kw:
      kw["class_names"] = {int(k): v for k, v in kw["class_names"].items()}
    splits = [
      s for s in ("train", "validation", "test") if os.path.isdir(os.path.join(manual_dir, s))
    ]
    if splits:
      return {s: sources.image_mask_folder(os.path.join(manual_dir, s), **kw) for s in splits}
    return {"train": sources.image_mask_folder(manual_dir, **kw)}
