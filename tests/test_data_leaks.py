"""No held-out class or example reaches training: every pair kind of the `real` training preset
(semantic, instance, video; mix-context on a source that has it) is checked pixel by pixel
against the source's label map, with the held-out sets computed here independently of the
pipeline (COCO-20i fold 0 by its definition, the held-out DAVIS sequences by name)."""

import collections

import numpy as np
import pytest

from _shared import shared_data_dir
from incontext.data import pipeline, sources

# Every test here reads the real data in ../shared/data: integration tier.
pytestmark = pytest.mark.integration

COCO_FOLD0 = {c for c in range(1, 81) if (c - 1) % 4 == 0}  # interleaved split: 1, 5, ..., 77


class Recording:
  """Wraps a source and keeps the last examples it returned (the pair's label maps). With
  `fast`, folder sources skip decoding the image (a black one of the mask's size is returned):
  the check needs only the label maps, and this makes the 2000-pair test ~3x faster."""

  def __init__(self, src, fast=True):
    self.src, self.recent = src, collections.OrderedDict()
    self.fast = fast and hasattr(src, "load_masks")

  def __getattr__(self, k):
    return getattr(self.src, k)

  def __len__(self):
    return len(self.src)

  def __getitem__(self, i):
    if self.fast:
      mask, inst = self.src.load_masks(int(i), None)
      meta = self.src.meta(i)
      ex = {
        "image": np.zeros(mask.shape + (3,), np.uint8),
        "mask": mask,
        "classes": np.asarray(meta["classes"], np.int32),
        **{k: meta[k] for k in ("id", "video_id", "frame_index") if k in meta},
      }
      if inst is not None:
        ex["instances"] = inst
    else:
      ex = self.src[i]
    self.recent[int(i)] = ex
    self.recent.move_to_end(int(i))
    while len(self.recent) > 16:
      self.recent.popitem(last=False)
    return ex


def real_sampler(**kw):
  from experiments.configs import common, seggpt_train

  c = seggpt_train.get_config("real,procedural_frac=0")
  cfg = {k: v for k, v in c.input.to_dict().items() if k != "type"}
  cfg["datasets"] = [dict(d, root=str(shared_data_dir(d["name"]))) for d in cfg["datasets"]]
  for d in cfg["datasets"]:
    d.update(kw)
  rc = pipeline.resolve_config(cfg)
  srcs = {d["name"]: Recording(sources.make_source(d, cache=False)) for d in rc["datasets"]}
  return pipeline.make_sampler(cfg, seed=0, sources_override=srcs), common.DAVIS_HELD_OUT


def painted(pair, s) -> list[tuple[dict, set[int]]]:
  """(source example, label ids of its pixels that the pair paints) for each image of a pair."""
  src = s.srcs[pair["dataset"]]
  out = []
  for r, lab in zip(pair["meta"].records, pair["labels"]):
    ex = src.recent[r]
    obj = (lab > 0) & (lab != sources.IGNORE)
    out.append((ex, set(np.flatnonzero(np.bincount(ex["mask"][obj].ravel())).tolist())))
  return out


def check_pairs(s, held_seqs, n, seed=0):
  kinds = collections.Counter()
  for k in range(n):
    pair = s.sample_pair(np.random.default_rng([seed, k]))
    meta = pair["meta"]
    kinds[meta.dataset, meta.kind] += 1
    for ex, cls in painted(pair, s):
      assert cls <= set(meta.classes), (meta, cls)  # the metadata is honest
      if meta.dataset == "coco128_seg":
        assert not cls & COCO_FOLD0, (meta, cls)
      if meta.dataset == "davis2016_subset":
        assert ex["video_id"] not in held_seqs, meta
        assert ex["id"].split("/")[0] not in held_seqs, meta
      assert ex["id"] in meta.ids
  return kinds


@pytest.mark.slow  # ~30-60 s on 2 busy cores (decodes ~4500 label maps)
def test_real_preset_never_paints_held_out_classes_or_examples():
  """2000 pairs of the `real` training mixture (procedural pairs off): no COCO pair (semantic
  or instance) paints a COCO-20i fold-0 class, no DAVIS pair uses a held-out sequence."""
  s, held = real_sampler()
  kinds = check_pairs(s, held, 2000)
  assert kinds["coco128_seg", "instance"] > 200 and kinds["coco128_seg", "semantic"] > 200
  assert kinds["davis2016_subset", "video"] > 200, kinds


def test_instance_pairs_skip_held_out_classes():
  """COCO instance pairs only (instance_prob=1): held-out instances (person is class 1 of
  fold 0) are never painted although they are in most images."""
  s, held = real_sampler(instance_prob=1.0)
  s.weights = np.array([d["name"] == "coco128_seg" for d in s.dcfgs], np.float64)
  kinds = check_pairs(s, held, 60)
  assert kinds == {("coco128_seg", "instance"): 60}


def test_guard_catches_a_pair_kind_that_skips_the_filter(monkeypatch):
  """A pair kind that paints an instance without the class filter is refused by the one check
  in sample_pair (HeldOutLeak), and a pair without metadata too."""
  s, _ = real_sampler(instance_prob=1.0)
  s.weights = np.array([d["name"] == "coco128_seg" for d in s.dcfgs], np.float64)
  idx = s.indices[[d["name"] for d in s.dcfgs].index("coco128_seg")]
  src = s.srcs[[d["name"] for d in s.dcfgs].index("coco128_seg")]
  person = next(i for i in idx.with_instances if 1 in src.meta(i)["classes"])

  def leaky(rng, d, src, idx):
    ex = src[person]
    pair = s._instances_pair(rng, d, idx, "instance", [person, person], ex, ex)
    return dict(pair, meta=pipeline.PairMeta("coco128_seg", "instance", (), (person,), (1,)))

  monkeypatch.setattr(s, "_instance", leaky)
  with pytest.raises(pipeline.HeldOutLeak, match=r"paints held-out classes \[1\]"):
    s.sample_pair(np.random.default_rng(0))
  monkeypatch.setattr(s, "_instance", lambda *a: {"images": [], "labels": []})
  with pytest.raises(pipeline.HeldOutLeak, match="without PairMeta"):
    s.sample_pair(np.random.default_rng(0))


def test_exclude_examples_and_sample_meta():
  """exclude_examples drops images (by id) and sequences (by video id) from every table;
  `sample(i)` gives the training example with the same metadata as its pair."""
  root = str(shared_data_dir("davis2016_subset"))
  d = dict(
    name="davis",
    reader="davis",
    root=root,
    split=None,
    exclude_examples=("boat", "kite-walk/00003"),
  )
  s = pipeline.make_sampler({"datasets": [d], "image_size": 16, "patch_size": 8}, seed=0)
  idx = s.indices[0]
  assert "boat" not in idx.videos and "kite-walk/00003" not in idx.ids.values()
  assert "kite-walk/00004" in idx.ids.values()
  ex, meta = s.sample(5)
  pair = s.sample_pair(np.random.default_rng([0, 5]))
  assert meta == pair["meta"] and meta.kind == "video" and meta.classes == (1,)
  assert ex["image"].shape == (32, 16, 3)
  with pytest.raises(ValueError, match="exclude_examples must be a list"):
    pipeline.make_sampler({"datasets": [dict(d, exclude_examples="boat")]}, seed=0)
