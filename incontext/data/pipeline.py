"""Grain pipeline: sources -> in-context pair sampling -> named ops -> batches.

Output batch (numpy), exactly the keys of `incontext.canvas`:
  image     float32 [B, 2H, W, 3]  ImageNet-normalised, prompt on top, query below
  target    float32 [B, 2H, W, 3]  normalised random-colour canvas (background black)
  mask      bool    [B, (2H/p) * (W/p)]  True = hidden token (row-major)
  valid     float32 [B, 2H, W]     0 on ignore pixels
  seg_type  int32   [B]            0 semantic, 1 instance (instance and video pairs)

With `procedural_frac` > 0 that share of the samples are procedural pairs
(incontext.data.procedural, at the same image and patch size) instead of real ones.

Sample k of the global stream is a pure function of (seed, k): its own
`np.random.default_rng([seed, k])` picks the dataset (by weight), the pair and every augmentation.
The stream is `MapDataset.range(...)[process_index::process_count]`, so hosts get disjoint sample
indices, and the iterator state is just a position: `it.get_state()` / `it.set_state(state)`, or
Orbax with `grain.checkpoint.CheckpointSave(it)` / `CheckpointRestore(it)`.

With `num_workers > 0` (grain `mp_prefetch`) worker w computes global samples w, w + workers, ...
and batches them itself, so the batch composition depends on `num_workers` (the sample stream does
not); keep it fixed across a resume. Scripts using workers need an `if __name__ == "__main__":`
guard (workers are spawned).

Example (trainer):

  from incontext.data import pipeline
  cfg = dict(image_size=448, patch_size=16, datasets=[
      dict(name="coco", reader="coco128_seg", root="../shared/data/coco128_seg", weight=2.0),
      dict(name="davis", reader="davis", root="../shared/data/davis2016_subset", weight=1.0)])
  it = pipeline.make_train_iterator(cfg, seed=0, batch_size=8,
                                    process_index=jax.process_index(),
                                    process_count=jax.process_count())
  batch = next(it)            # dict of numpy arrays, per-host batch
  state = it.get_state()      # save with the checkpoint; it.set_state(state) to resume
"""
from __future__ import annotations

import concurrent.futures
import copy
from typing import Any, Mapping, Sequence

import grain
import numpy as np

from incontext import canvas
from incontext.data import folds, ops, sources

# Config keys (top level) and defaults. Per-dataset keys are in DATASET_DEFAULTS.
DEFAULTS: dict[str, Any] = dict(
    image_size=448,          # int or (H, W) of one half; the canvas is (2H, W)
    patch_size=16,           # token grid for `mask` is (2H/p, W/p)
    pp=ops.DEFAULT_PP,       # op pipe string (see incontext.data.ops), `finalize` is appended
    datasets=(),             # list of dataset configs (dicts), see DATASET_DEFAULTS
    num_workers=0,           # grain mp_prefetch worker processes (0 = in-process threads)
    read_threads=2,          # threads of to_iter_dataset (per process)
    prefetch=4,              # to_iter_dataset prefetch buffer (elements)
    shard_records=False,     # also split every source's records across hosts (i % count == index)
    procedural_frac=0.0,     # P(sample is a procedural pair, incontext.data.procedural) instead
    procedural=None,         # procedural data config (image_size / patch_size come from here)
)

DATASET_DEFAULTS: dict[str, Any] = dict(
    name=None,               # unique name (defaults to reader)
    reader=None,             # sources.READERS key ('coco128_seg', 'davis', 'tfds', ...)
    root=None,               # raw folder (for raw readers); tfds: name/split/data_dir
    weight=1.0,              # mixing weight (normalised over datasets)
    instance_prob=0.5,       # P(instance pair) for sources with instance maps (not video)
    max_objects=5,           # max classes/instances coloured per pair
    min_area=0.0,            # objects under this fraction of the prompt image are not chosen
    class_sampling="image",  # 'image': uniform example, then a class of it; 'class': uniform class
    mix_context_prob=0.0,    # P(mix-context) for semantic pairs
    mix_context_n=(2, 4),    # images per side when mixing (choice)
    max_frame_gap=None,      # video: max |i - j| between prompt and query frames (None = any)
    exclude_classes=(),      # label ids never coloured (held-out classes)
    exclude_fold=None,       # or: hold out this fold's classes (folds.fold_classes)
    num_folds=None,          # default from folds.DEFAULT_FOLDS[name] or 4
    fold_scheme=None,        # 'interleaved' | 'blocks'
    excluded_as="background",  # held-out pixels: 'background' (FSS convention) or 'ignore'
)


def _to_dict(cfg) -> dict:
  if cfg is None:
    return {}
  if hasattr(cfg, "to_dict"):
    return cfg.to_dict()
  return dict(cfg)


def _check_dataset_keys(d: dict, i: int) -> None:
  """A dataset entry's keys must be DATASET_DEFAULTS keys or its reader's arguments (a typo
  such as `exclude_fol` would otherwise be dropped silently)."""
  import inspect
  reader = sources.READERS.get(d.get("reader"))
  if reader is None:
    return                      # an unknown reader is reported when the source is made
  known = set(DATASET_DEFAULTS) | set(inspect.signature(reader).parameters)
  unknown = sorted(set(d) - known)
  if unknown:
    raise ValueError(f"datasets[{i}] ({d.get('name') or d.get('reader')}): unknown key"
                     f"{'s' if len(unknown) > 1 else ''} {unknown}; known: {sorted(known)}")


def resolve_config(config) -> dict[str, Any]:
  cfg = {**DEFAULTS, **_to_dict(config)}
  unknown = set(cfg) - set(DEFAULTS)
  if unknown:
    raise KeyError(f"unknown pipeline config keys {sorted(unknown)}; known: {sorted(DEFAULTS)}")
  ds = cfg["datasets"]
  if isinstance(ds, Mapping):
    ds = [{"name": k, **_to_dict(v)} for k, v in ds.items()]
  out = []
  for i, d in enumerate(ds):
    d = _to_dict(d)
    _check_dataset_keys(d, i)
    d = {**DATASET_DEFAULTS, **d}
    d["name"] = d["name"] or d["reader"]
    out.append(d)
  cfg["datasets"] = out
  h = cfg["image_size"]
  cfg["image_size"] = (int(h), int(h)) if np.isscalar(h) else (int(h[0]), int(h[1]))
  return cfg


def excluded_classes(dcfg: Mapping[str, Any], class_ids: Sequence[int]) -> set[int]:
  ex = {int(c) for c in dcfg.get("exclude_classes") or ()}
  if dcfg.get("exclude_fold") is not None:
    fdef = folds.DEFAULT_FOLDS.get(dcfg["name"], {})
    nf = dcfg.get("num_folds") or fdef.get("num_folds", 4)
    scheme = dcfg.get("fold_scheme") or fdef.get("scheme", "interleaved")
    ex |= set(folds.fold_classes(class_ids, int(dcfg["exclude_fold"]), nf, scheme))
  return ex


class DatasetIndex:
  """Per-source lookup tables for pair sampling, built once from `source.meta(i)`."""

  def __init__(self, source, dcfg, *, record_shard: tuple[int, int] | None = None):
    n = len(source)
    recs = range(n) if record_shard is None else range(record_shard[0], n, record_shard[1])
    with concurrent.futures.ThreadPoolExecutor(4) as pool:  # PIL decodes release the GIL
      metas = dict(zip(recs, pool.map(source.meta, recs)))
    all_classes = sorted(set(getattr(source, "class_names", {}) or {})
                         | {int(c) for m in metas.values() for c in m["classes"]})
    self.excluded = excluded_classes(dcfg, all_classes)
    self.kind = getattr(source, "kind", "semantic")
    self.has_instances = bool(getattr(source, "has_instances", False))
    self.allowed: dict[int, np.ndarray] = {}
    by_class: dict[int, list[int]] = {}
    for i, m in metas.items():
      cl = [int(c) for c in m["classes"] if int(c) not in self.excluded]
      self.allowed[i] = np.array(cl, np.int32)
      for c in cl:
        by_class.setdefault(c, []).append(i)
    self.by_class = {c: np.array(v) for c, v in sorted(by_class.items())}
    self.class_list = np.array(sorted(self.by_class), np.int32)
    self.with_class = np.array([i for i in metas if len(self.allowed[i])], np.int64)
    self.with_instances = np.array(
        [i for i, m in metas.items() if m.get("num_instances", 0) > 0], np.int64)
    self.videos: dict[str, np.ndarray] = {}
    self.video_has_obj: dict[str, np.ndarray] = {}
    if self.kind == "video":
      vids: dict[str, list] = {}
      for i, m in metas.items():
        vids.setdefault(m["video_id"], []).append((m["frame_index"], i,
                                                  m.get("num_instances", 0) > 0))
      for v, fr in sorted(vids.items()):
        fr.sort()
        self.videos[v] = np.array([f[1] for f in fr])
        self.video_has_obj[v] = np.array([f[2] for f in fr])
      self.video_names = [v for v in self.videos if self.video_has_obj[v].any()]
    if not len(self.with_class) and not (self.kind == "video" and self.videos):
      raise ValueError(f"dataset {dcfg['name']!r} has no examples with a usable class")


class PairSampler:
  """index -> finalized training example. Picklable (for grain worker processes)."""

  def __init__(self, cfg: dict, srcs: Sequence[Any], indices: Sequence[DatasetIndex], seed: int):
    self.cfg = cfg
    self.srcs = list(srcs)
    self.indices = list(indices)
    self.dcfgs = cfg["datasets"]
    w = np.array([float(d["weight"]) for d in self.dcfgs], np.float64)
    if (w < 0).any() or w.sum() <= 0:
      raise ValueError(f"dataset weights must be >= 0 with a positive sum, got {w}")
    self.weights = w / w.sum()
    self.seed = int(seed)
    self.ops = ops.build_ops(cfg["pp"], size=cfg["image_size"], patch_size=cfg["patch_size"])
    self.procedural_frac = float(cfg.get("procedural_frac") or 0.0)
    self.procedural = None
    if self.procedural_frac > 0:
      from incontext.data import procedural
      h, w = cfg["image_size"]
      if h != w:
        raise ValueError(f"procedural_frac > 0 needs square halves, got image_size {(h, w)}")
      self.procedural = procedural.Sampler(
          {**_to_dict(cfg.get("procedural")), "image_size": h, "patch_size": cfg["patch_size"]},
          seed)

  # -- pair sampling -------------------------------------------------------------------------
  def _lut(self, objects: Sequence[int], excluded: set[int], excluded_as: str) -> np.ndarray:
    lut = np.zeros(65536, np.int32)  # label ids are < 2**16 (stored as uint16)
    lut[ops.IGNORE] = ops.IGNORE
    if excluded_as == "ignore":
      for c in excluded:
        lut[c] = ops.IGNORE
    for k, c in enumerate(objects):
      lut[c] = k + 1
    return lut

  def _semantic(self, rng, d, src, idx: DatasetIndex):
    """A semantic pair; with min_area > 0, pairs whose chosen class covers less of the
    prompt image are redrawn (up to 8 tries, then the last draw is kept)."""
    for _ in range(8):
      pair, area = self._semantic_once(rng, d, src, idx)
      if area >= d["min_area"]:
        break
    return pair

  def _semantic_once(self, rng, d, src, idx: DatasetIndex):
    if d["class_sampling"] == "class":
      c = int(rng.choice(idx.class_list))
      p = int(rng.choice(idx.by_class[c]))
    else:
      p = int(rng.choice(idx.with_class))
      c = int(rng.choice(idx.allowed[p]))
    cands = idx.by_class[c]
    n = 1
    if d["mix_context_prob"] > 0 and rng.random() < d["mix_context_prob"]:
      n = int(rng.choice(np.asarray(d["mix_context_n"])))
    others = cands[cands != p] if len(cands) > 1 else cands
    q = [int(x) for x in rng.choice(others, n, replace=len(others) < n)]
    prompts = [p] + [int(x) for x in rng.choice(cands, n - 1, replace=len(cands) < n - 1)]
    extra = sorted({int(x) for i in prompts for x in idx.allowed[i]} - {c})
    k = int(rng.integers(1, min(d["max_objects"], 1 + len(extra)) + 1))
    objects = [c] + [int(x) for x in rng.choice(extra, k - 1, replace=False)] if k > 1 else [c]
    lut = self._lut(objects, idx.excluded, d["excluded_as"])
    cache: dict[int, dict] = {}
    load = lambda i: cache[i] if i in cache else cache.setdefault(i, src[i])
    ids = prompts + q
    exs = [load(i) for i in ids]
    area = float(np.mean(exs[0]["mask"] == c)) if d["min_area"] > 0 else 0.0
    return dict(images=[e["image"] for e in exs], labels=[lut[e["mask"]] for e in exs],
                n_prompt=n, num_objects=len(objects), seg_type=canvas.SEMANTIC), area

  def _instances_pair(self, rng, d, ex_p, ex_q):
    inst = ex_p["instances"]
    ids = np.unique(inst)
    ids = ids[(ids > 0) & (ids != ops.IGNORE)]
    if d["min_area"] > 0 and len(ids):
      area = np.array([np.mean(inst == i) for i in ids])
      big = ids[area >= d["min_area"]]
      ids = big if len(big) else ids[np.argmax(area)][None]   # none big enough: the largest
    k = int(rng.integers(1, min(d["max_objects"], len(ids)) + 1)) if len(ids) else 0
    objects = [int(x) for x in rng.choice(ids, k, replace=False)] if k else []
    lut = self._lut(objects, set(), "background")
    # Semantic ignore regions (crowd, void) stay ignored.
    labs = []
    for e in (ex_p, ex_q):
      l = lut[e["instances"]]
      l[e["mask"] == ops.IGNORE] = ops.IGNORE
      labs.append(l)
    return dict(images=[ex_p["image"], ex_q["image"]], labels=labs, n_prompt=1,
                num_objects=len(objects), seg_type=canvas.INSTANCE)

  def _instance(self, rng, d, src, idx):
    p = int(rng.choice(idx.with_instances))
    ex = src[p]
    return self._instances_pair(rng, d, ex, ex)  # two augmented views of the same image

  def _video(self, rng, d, src, idx):
    v = idx.video_names[int(rng.integers(len(idx.video_names)))]
    frames, has = idx.videos[v], idx.video_has_obj[v]
    a = int(rng.choice(np.flatnonzero(has)))
    gap = d["max_frame_gap"] or len(frames)
    lo, hi = max(0, a - gap), min(len(frames), a + gap + 1)
    cands = [j for j in range(lo, hi) if j != a] or [a]
    b = int(rng.choice(cands))
    return self._instances_pair(rng, d, src[int(frames[a])], src[int(frames[b])])

  def sample_pair(self, rng) -> dict:
    di = int(rng.choice(len(self.srcs), p=self.weights))
    d, src, idx = self.dcfgs[di], self.srcs[di], self.indices[di]
    if idx.kind == "video":
      pair = self._video(rng, d, src, idx)
    elif idx.has_instances and len(idx.with_instances) and rng.random() < d["instance_prob"]:
      pair = self._instance(rng, d, src, idx)
    else:
      pair = self._semantic(rng, d, src, idx)
    pair["dataset"] = di
    return pair

  def __call__(self, index: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng([self.seed, int(index)])
    if self.procedural is not None and rng.random() < self.procedural_frac:
      return self.procedural(index)      # easy synthetic matching pairs mixed in
    ex = self.sample_pair(rng)
    for op in self.ops:
      ex = op(ex, rng)
    return ops.finalize(ex)


def build_sources(cfg: dict, sources_override: Mapping[str, Any] | None = None) -> list:
  out = []
  for d in cfg["datasets"]:
    if sources_override and d["name"] in sources_override:
      out.append(sources_override[d["name"]])
    else:
      out.append(sources.make_source(d))
  return out


def make_sampler(config, *, seed: int, process_index: int = 0, process_count: int = 1,
                 sources_override: Mapping[str, Any] | None = None) -> PairSampler:
  cfg = resolve_config(config)
  if not cfg["datasets"]:
    raise ValueError("config has no datasets")
  srcs = build_sources(cfg, sources_override)
  shard = (process_index, process_count) if cfg["shard_records"] else None
  idx = [DatasetIndex(s, d, record_shard=shard) for s, d in zip(srcs, cfg["datasets"])]
  return PairSampler(cfg, srcs, idx, seed)


NUM_SAMPLES = 2 ** 40  # "infinite" stream of sample indices


def make_train_dataset(config, *, seed: int, batch_size: int, process_index: int = 0,
                       process_count: int = 1, sources_override=None) -> grain.IterDataset:
  """The batched grain IterDataset behind `make_train_iterator` (same arguments)."""
  cfg = resolve_config(config)
  sampler = make_sampler(cfg, seed=seed, process_index=process_index,
                         process_count=process_count, sources_override=sources_override)
  ds = grain.MapDataset.range(NUM_SAMPLES)[process_index::process_count].map(sampler)
  ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=int(cfg["read_threads"]),
                                            prefetch_buffer_size=int(cfg["prefetch"])))
  ds = ds.batch(batch_size, drop_remainder=True)
  if cfg["num_workers"] > 0:
    from absl import flags  # grain workers read absl flags; outside an absl app mark them parsed
    if not flags.FLAGS.is_parsed():
      flags.FLAGS.mark_as_parsed()
    ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=int(cfg["num_workers"])))
  return ds


def make_train_iterator(config, *, seed: int, batch_size: int, process_index: int = 0,
                        process_count: int = 1, sources_override=None) -> grain.DatasetIterator:
  """Infinite, deterministic, resumable iterator of per-host training batches.

  Args:
    config: dict / ConfigDict with the keys of DEFAULTS (image_size, patch_size, pp, datasets,
      num_workers, read_threads, prefetch, shard_records); each entry of `datasets` is a dict with
      the keys of DATASET_DEFAULTS plus its reader's arguments (root, split, year, data_dir, ...),
      e.g. dict(reader="camvid", root="../shared/data/camvid", split="train", weight=1.0,
      exclude_fold=0) or dict(reader="tfds", name="davis", split="train", data_dir=OUT).
    seed: stream seed; sample k of the global stream depends only on (seed, k, config, data).
    batch_size: per-host batch size.
    process_index, process_count: this host and the number of hosts; host i gets global samples
      i, i + count, i + 2 * count, ...
    sources_override: optional {dataset name: source object} (in-memory or custom sources with
      `__len__`, `__getitem__`, `meta` as in incontext.data.sources) used instead of `reader`.

  Returns:
    a grain DatasetIterator yielding dicts {image, target, mask, valid, seg_type} of numpy arrays;
    `get_state()` / `set_state()` checkpoint it (or grain.checkpoint.CheckpointSave/Restore).
  """
  return iter(make_train_dataset(config, seed=seed, batch_size=batch_size,
                                 process_index=process_index, process_count=process_count,
                                 sources_override=sources_override))


def shared_data_config(root: str = "../shared/data", *, image_size=448, patch_size=16,
                       datasets: Sequence[str] | None = None, **overrides) -> dict:
  """A ready config over the raw folders in ../shared/data (for smoke tests / runlocal)."""
  all_ds = {
      "coco128_seg": dict(reader="coco128_seg", root=f"{root}/coco128_seg", weight=2.0,
                          mix_context_prob=0.2),
      "clothing_co_parsing": dict(reader="clothing_co_parsing",
                                  root=f"{root}/clothing_co_parsing", weight=1.0),
      "camvid": dict(reader="camvid", root=f"{root}/camvid", split="train", weight=1.0),
      "davis2016_subset": dict(reader="davis", root=f"{root}/davis2016_subset", split=None,
                               weight=1.0, max_frame_gap=20),
      "kvasir_seg": dict(reader="kvasir_seg", root=f"{root}/kvasir_seg", weight=0.5),
      "weizmann_horse": dict(reader="weizmann_horse", root=f"{root}/weizmann_horse", weight=0.5),
  }
  names = list(datasets) if datasets is not None else list(all_ds)
  cfg = dict(image_size=image_size, patch_size=patch_size,
             datasets=[{"name": n, **copy.deepcopy(all_ds[n])} for n in names])
  cfg.update(overrides)
  return cfg
