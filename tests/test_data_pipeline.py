"""The grain pipeline: batch format, determinism, resumability, per-host sharding, held-out
classes, dataset mixing; on the raw folders of ../shared/data."""

import numpy as np
import pytest

from _shared import shared_data_dir
from incontext.data import pipeline

# Every test here reads the real data in ../shared/data: integration tier.
pytestmark = pytest.mark.integration

KEYS = ["image", "mask", "seg_type", "target", "valid"]


@pytest.fixture(scope="module")
def cfg():
  return pipeline.shared_data_config(str(shared_data_dir()), image_size=32, patch_size=8)


def take(it, n):
  return [next(it) for _ in range(n)]


def assert_same(a, b):
  for x, y in zip(a, b):
    for k in KEYS:
      np.testing.assert_array_equal(x[k], y[k])


def test_batch_format(cfg):
  b = next(pipeline.make_train_iterator(cfg, seed=0, batch_size=3))
  assert sorted(b) == KEYS
  assert b["image"].shape == (3, 64, 32, 3) and b["image"].dtype == np.float32
  assert b["target"].shape == (3, 64, 32, 3) and b["target"].dtype == np.float32
  assert b["mask"].shape == (3, 32) and b["mask"].dtype == bool
  assert b["valid"].shape == (3, 64, 32) and b["valid"].dtype == np.float32
  assert b["seg_type"].shape == (3,) and b["seg_type"].dtype == np.int32
  assert np.isfinite(b["image"]).all() and np.isfinite(b["target"]).all()


def test_deterministic_and_seed_dependent(cfg):
  a = take(pipeline.make_train_iterator(cfg, seed=5, batch_size=2), 2)
  b = take(pipeline.make_train_iterator(cfg, seed=5, batch_size=2), 2)
  c = take(pipeline.make_train_iterator(cfg, seed=6, batch_size=2), 2)
  assert_same(a, b)
  assert not np.array_equal(a[0]["image"], c[0]["image"])


def test_resume_from_state(cfg):
  it = pipeline.make_train_iterator(cfg, seed=1, batch_size=2)
  take(it, 3)
  state = it.get_state()
  expected = take(it, 2)
  fresh = pipeline.make_train_iterator(cfg, seed=1, batch_size=2)
  fresh.set_state(state)
  assert_same(take(fresh, 2), expected)
  for x in (it, fresh):
    if hasattr(x, "close"):
      x.close()


def test_resume_with_worker_processes(cfg):
  from absl import flags

  if not flags.FLAGS.is_parsed():  # grain's workers read absl flags (as under an absl app)
    flags.FLAGS.mark_as_parsed()
  cfg = {**cfg, "num_workers": 2}
  it = pipeline.make_train_iterator(cfg, seed=1, batch_size=2)
  take(it, 2)
  state = it.get_state()
  expected = take(it, 2)
  fresh = pipeline.make_train_iterator(cfg, seed=1, batch_size=2)
  fresh.set_state(state)
  assert_same(take(fresh, 2), expected)


def test_per_host_sharding_disjoint(cfg):
  """Host i gets global samples i, i + n, ...: host streams are disjoint and interleave into the
  single-host stream."""
  single = take(pipeline.make_train_iterator(cfg, seed=2, batch_size=1), 4)
  hosts = [
    take(
      pipeline.make_train_iterator(cfg, seed=2, batch_size=1, process_index=i, process_count=2), 2
    )
    for i in range(2)
  ]
  assert_same([hosts[0][0], hosts[1][0], hosts[0][1], hosts[1][1]], single)
  assert not np.array_equal(hosts[0][0]["image"], hosts[1][0]["image"])


def test_shard_records_disjoint(cfg):
  c = {**cfg, "shard_records": True}
  s0 = pipeline.make_sampler(c, seed=0, process_index=0, process_count=2)
  s1 = pipeline.make_sampler(c, seed=0, process_index=1, process_count=2)
  for a, b in zip(s0.indices, s1.indices):
    assert not set(a.with_class.tolist()) & set(b.with_class.tolist())


def test_held_out_fold_never_coloured(cfg):
  d = dict(
    name="camvid",
    reader="camvid",
    root=str(shared_data_dir("camvid")),
    exclude_fold=0,
    max_objects=11,
  )
  s = pipeline.make_sampler({"datasets": [d], "image_size": 32, "patch_size": 8}, seed=0)
  idx = s.indices[0]
  assert idx.excluded == {1, 5, 9}  # interleaved over 1..11, fold 0
  assert not idx.excluded & set(idx.class_list.tolist())
  for k in range(20):
    pair = s.sample_pair(np.random.default_rng([0, k]))
    assert 1 <= pair["num_objects"] <= 8


def test_mixing_weights_and_types(cfg):
  c = pipeline.shared_data_config(
    str(shared_data_dir()), image_size=16, patch_size=8, datasets=["davis2016_subset", "kvasir_seg"]
  )
  c["datasets"][0]["weight"], c["datasets"][1]["weight"] = 3.0, 1.0
  s = pipeline.make_sampler(c, seed=0)
  got = [s.sample_pair(np.random.default_rng([0, k])) for k in range(120)]
  frac_video = np.mean([g["dataset"] == 0 for g in got])
  assert 0.6 < frac_video < 0.9
  assert all(g["seg_type"] == (1 if g["dataset"] == 0 else 0) for g in got)


def test_in_memory_sources_override(cfg):
  rng = np.random.default_rng(0)

  class Mem:
    name, kind, has_instances, class_names = "mem", "semantic", False, {1: "a", 2: "b"}

    def __init__(self):
      self.ex = []
      for i in range(6):
        m = np.zeros((20, 24), np.int32)
        m[2:10, 3:12] = 1 + i % 2
        self.ex.append(
          {
            "image": rng.integers(0, 255, (20, 24, 3), dtype=np.uint8),
            "mask": m,
            "classes": np.array([1 + i % 2], np.int32),
            "id": str(i),
          }
        )

    def __len__(self):
      return len(self.ex)

    def __getitem__(self, i):
      return self.ex[i]

    def meta(self, i):
      return {"classes": self.ex[i]["classes"]}

  c = {"image_size": 16, "patch_size": 8, "datasets": [{"name": "mem", "reader": "none"}]}
  b = next(pipeline.make_train_iterator(c, seed=0, batch_size=2, sources_override={"mem": Mem()}))
  assert b["image"].shape == (2, 32, 16, 3)


def test_procedural_frac_mixes_procedural_pairs(cfg):
  from incontext.data import procedural

  c = pipeline.shared_data_config(
    str(shared_data_dir()),
    image_size=16,
    patch_size=4,
    datasets=["kvasir_seg"],
    procedural_frac=0.5,
    procedural=dict(palette=1),
  )
  s = pipeline.make_sampler(c, seed=3)
  proc = procedural.Sampler(dict(palette=1, image_size=16, patch_size=4), seed=3)
  n_proc = 0
  for k in range(40):
    got, p = s(k), proc(k)
    assert got["image"].shape == p["image"].shape == (32, 16, 3)
    same = all(np.array_equal(got[key], p[key]) for key in KEYS)
    n_proc += same
    assert same == (np.random.default_rng([3, k]).random() < 0.5)
  assert 10 < n_proc < 30
  with pytest.raises(ValueError, match="needs square halves"):
    pipeline.make_sampler({**c, "image_size": (16, 32)}, seed=0)


def test_unknown_config_key_raises(cfg):
  with pytest.raises(KeyError, match="unknown pipeline config keys"):
    pipeline.resolve_config({**cfg, "imagesize": 3})


def test_unknown_names_in_data_settings_are_one_line_user_errors(cfg):
  """An unknown pipeline key, reader or op: a user error (one line at the entry points, no
  traceback) whose message reads as written, and still a KeyError for callers."""
  from incontext import errors
  from incontext.data import ops, sources

  for call, want in [
    (lambda: pipeline.resolve_config({**cfg, "imagesize": 3}), "unknown pipeline config keys"),
    (lambda: sources.make_source({"reader": "bogus"}), "unknown reader 'bogus'; known: ["),
    (lambda: ops.parse_spec("hflip|nope"), "unknown op 'nope'; known: ["),
  ]:
    with pytest.raises(KeyError) as e:
      call()
    assert errors.is_user_error(e.value)
    assert errors.one_line(e.value).startswith(want) and str(e.value).startswith(want)


def test_min_area_skips_small_objects(cfg):
  """min_area: instance pairs colour only instances covering >= that fraction of the prompt
  (else the largest one); semantic pairs are redrawn until the class is big enough."""
  root = str(shared_data_dir("coco128_seg"))

  def sampler(min_area, instance_prob):
    d = dict(
      name="coco128_seg",
      reader="coco128_seg",
      root=root,
      max_objects=1,
      instance_prob=instance_prob,
      min_area=min_area,
    )
    return pipeline.make_sampler({"datasets": [d], "image_size": 32, "patch_size": 8}, seed=0)

  def areas(s):
    out = []
    for k in range(40):
      pair = s.sample_pair(np.random.default_rng([0, k]))
      lab = pair["labels"][0]
      out.append(float(np.mean(lab == 1)))
    return np.array(out)

  for prob in (1.0, 0.0):  # instance pairs, semantic pairs
    small, big = areas(sampler(0.0, prob)), areas(sampler(0.05, prob))
    assert (small < 0.05).mean() > 0.3, small  # COCO has many small objects ...
    assert (big < 0.05).mean() < 0.3, big  # ... which min_area leaves out
