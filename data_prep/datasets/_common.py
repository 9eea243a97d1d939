"""Shared TFDS builder base: wraps an `incontext.data.sources` raw reader.

Every dataset here stores one record per image (videos: per frame, with video_id/frame_index),
in the schema of `incontext.data.sources`:
  image Image uint8 (H, W, 3); mask Tensor uint16 (H, W) zlib, label map (0 bg, 255 ignore);
  instances (optional) Tensor uint16 (H, W) zlib; classes Sequence int32; id Text;
  video_id Text, frame_index int32 (videos).
Dataset metadata (`info.metadata`): class_names {"label id": name}, kind ('semantic' | 'video').
The default file format is array_record (for `tfds.data_source` / grain).
"""

from __future__ import annotations

import pathlib
import sys

import numpy as np
import tensorflow_datasets as tfds

_ROOT = str(pathlib.Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:  # `tfds build data_prep/datasets/X` imports us without the project root
  sys.path.insert(0, _ROOT)

from incontext.data import sources  # noqa: E402


class SourceBuilder(tfds.core.GeneratorBasedBuilder):
  """Subclasses set VERSION/RELEASE_NOTES and implement `split_sources(manual_dir)`."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  KIND = "semantic"
  HAS_INSTANCES = False

  def __init__(self, **kwargs):
    kwargs.setdefault("file_format", "array_record")
    super().__init__(**kwargs)

  def split_sources(self, manual_dir: str) -> dict[str, sources.FolderSource]:
    raise NotImplementedError

  def _info(self) -> tfds.core.DatasetInfo:
    lab = lambda: tfds.features.Tensor(
      shape=(None, None), dtype=np.uint16, encoding=tfds.features.Encoding.ZLIB
    )
    feats = dict(
      image=tfds.features.Image(shape=(None, None, 3)),
      mask=lab(),
      classes=tfds.features.Sequence(np.int32),
      id=tfds.features.Text(),
    )
    if self.HAS_INSTANCES:
      feats["instances"] = lab()
    if self.KIND == "video":
      feats["video_id"] = tfds.features.Text()
      feats["frame_index"] = np.int32
    return self.dataset_info_from_configs(
      features=tfds.features.FeaturesDict(feats),
      metadata=tfds.core.MetadataDict(kind=self.KIND, class_names={}),
      description=self.__doc__,
    )

  def _split_generators(self, dl_manager):
    manual = str(dl_manager.manual_dir)
    if not pathlib.Path(manual).exists():
      raise sources.DataError(f"manual dir {manual} does not exist ({self.name})")
    srcs = {k: v for k, v in self.split_sources(manual).items() if len(v)}  # drop empty splits
    if not srcs:
      raise sources.DataError(f"no examples found in {manual} ({self.name})")
    names = {}
    for s in srcs.values():
      names.update({str(k): v for k, v in s.class_names.items()})
    self.info.metadata["class_names"] = names
    return {split: self._generate_examples(src) for split, src in srcs.items()}

  def _generate_examples(self, src):
    for i in range(len(src)):
      ex = src[i]
      out = {
        "image": ex["image"],
        "mask": ex["mask"].astype(np.uint16),
        "classes": ex["classes"].astype(np.int32),
        "id": ex["id"],
      }
      if self.HAS_INSTANCES:
        inst = ex.get("instances")
        inst = np.zeros_like(ex["mask"]) if inst is None else inst
        out["instances"] = inst.astype(np.uint16)
      if self.KIND == "video":
        out["video_id"] = ex["video_id"]
        out["frame_index"] = np.int32(ex["frame_index"])
      yield ex["id"], out
