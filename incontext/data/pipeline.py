"""Grain pipeline: sources -> in-context pair sampling -> named ops -> batches.

Output batch (numpy), exactly the keys of `incontext.canvas`:
  image     float32 [B, 2H, W, 3]  ImageNet-normalised, prompt on top, query below
  target    float32 [B, 2H, W, 3]  normalised random-colour canvas (background black)
  mask      bool    [B, (2H/p) * (W/p)]  True = hidden token (row-major)
  valid     float32 [B, 2H, W]     0 on ignore pixels
  seg_type  int32   [B]            0 semantic, 1 instance (instance and video pairs)

With `procedural_frac` > 0 that share of the samples are procedural pairs
(incontext.data.procedural, at the same image and patch size) instead of real ones.

Held-out data (one mechanism for every kind of pair): a dataset's held-out classes
(`exclude_classes`, `exclude_fold`) and held-out examples (`exclude_examples`: example ids or
video ids) are removed from its `DatasetIndex`, so no pair kind (semantic, mix-context,
instance, video) can draw a held-out example or choose a held-out class to paint: an instance is
painted only if the class under it (the most frequent label of `mask` inside the instance) is
not held out. Every pair carries `meta` (`PairMeta`: dataset name, source example ids, painted
class ids, kind), and `PairSampler.sample_pair` checks it against the index before returning
(`HeldOutLeak` otherwise), so a future pair kind that forgets the filter fails loudly.
`PairSampler.sample(index)` returns (training example, meta).

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
import dataclasses
from typing import Any, Mapping, Sequence

import grain
import numpy as np

from incontext import canvas
from incontext.errors import UnknownName, UserError
from incontext.data import datadir, folds, ops, procedural, sources

# Config keys (top level) and defaults. Per-dataset keys are in DATASET_DEFAULTS.
DEFAULTS: dict[str, Any] = dict(
  image_size=448,  # int or (H, W) of one half; the canvas is (2H, W)
  patch_size=16,  # token grid for `mask` is (2H/p, W/p)
  pp=ops.DEFAULT_PP,  # op pipe string (see incontext.data.ops), `finalize` is appended
  datasets=(),  # list of dataset configs (dicts), see DATASET_DEFAULTS
  num_workers=0,  # grain mp_prefetch worker processes (0 = in-process threads); grain's
  # workers read absl flags: outside an absl app, call
  # absl.flags.FLAGS.mark_as_parsed() first (experiments/bench_data.py)
  read_threads=2,  # threads of to_iter_dataset (per process)
  prefetch=4,  # to_iter_dataset prefetch buffer (elements)
  shard_records=False,  # also split every source's records across hosts (i % count == index)
  procedural_frac=0.0,  # P(sample is a procedural pair, incontext.data.procedural) instead
  procedural=None,  # procedural data config (image_size / patch_size come from here)
)

DATASET_DEFAULTS: dict[str, Any] = dict(
  name=None,  # unique name (defaults to reader)
  reader=None,  # sources.READERS key ('coco128_seg', 'davis', 'tfds', ...)
  root=None,  # raw folder (for raw readers); tfds: name/split/data_dir
  weight=1.0,  # mixing weight (normalised over datasets)
  instance_prob=0.5,  # P(instance pair) for sources with instance maps (not video)
  max_objects=5,  # max classes/instances coloured per pair
  min_area=0.0,  # objects under this fraction of the prompt image are not chosen
  class_sampling="image",  # 'image': uniform example, then a class of it; 'class': uniform class
  mix_context_prob=0.0,  # P(mix-context) for semantic pairs
  mix_context_n=(2, 4),  # images per side when mixing (choice)
  max_frame_gap=None,  # video: max |i - j| between prompt and query frames (None = any)
  exclude_classes=(),  # label ids never coloured (held-out classes)
  exclude_fold=None,  # or: hold out this fold's classes (folds.fold_classes)
  exclude_examples=(),  # example ids (source `id`) or video ids never used in any pair
  num_folds=None,  # default from folds.DEFAULT_FOLDS[name] or 4
  fold_scheme=None,  # 'interleaved' | 'blocks'
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
    return  # an unknown reader is reported when the source is made
  known = set(DATASET_DEFAULTS) | set(inspect.signature(reader).parameters)
  unknown = sorted(set(d) - known)
  if unknown:
    raise UserError(
      f"datasets[{i}] ({d.get('name') or d.get('reader')}): unknown key"
      f"{'s' if len(unknown) > 1 else ''} {unknown}; known: {sorted(known)}"
    )


def resolve_config(config) -> dict[str, Any]:
  cfg = {**DEFAULTS, **_to_dict(config)}
  unknown = set(cfg) - set(DEFAULTS)
  if unknown:
    raise UnknownName(f"unknown pipeline config keys {sorted(unknown)}; known: {sorted(DEFAULTS)}")
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


class HeldOutLeak(RuntimeError):
  """A sampled training pair uses a held-out example or paints a held-out class."""


def held_out_examples(dcfg: Mapping[str, Any]) -> set[str]:
  ex = dcfg.get("exclude_examples") or ()
  if isinstance(ex, str):
    raise UserError(
      f"dataset {dcfg.get('name')!r}: exclude_examples must be a list of ids, got the string {ex!r}"
    )
  return {str(x) for x in ex}


class DatasetIndex:
  """Per-source lookup tables for pair sampling, built once from `source.meta(i)`.

  Held-out examples (ids or video ids in `exclude_examples`) are left out of every table, and
  held-out classes out of `allowed` / `by_class`; records whose classes are all held out are in
  no table (`usable` lists the records that are in some).
  """

  def __init__(self, source, dcfg, *, record_shard: tuple[int, int] | None = None):
    n = len(source)
    recs = range(n) if record_shard is None else range(record_shard[0], n, record_shard[1])
    with concurrent.futures.ThreadPoolExecutor(4) as pool:  # PIL decodes release the GIL
      metas = dict(zip(recs, pool.map(source.meta, recs)))
    all_classes = sorted(
      set(getattr(source, "class_names", {}) or {})
      | {int(c) for m in metas.values() for c in m["classes"]}
    )
    self.name = dcfg["name"]
    self.excluded = excluded_classes(dcfg, all_classes)
    self.excluded_examples = held_out_examples(dcfg)
    held = lambda m: (
      str(m.get("id")) in self.excluded_examples or str(m.get("video_id")) in self.excluded_examples
    )
    metas = {i: m for i, m in metas.items() if not held(m)}
    self.ids = {i: str(m.get("id", i)) for i, m in metas.items()}
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
      [i for i, m in metas.items() if m.get("num_instances", 0) > 0 and len(self.allowed[i])],
      np.int64,
    )
    self.usable = set(int(i) for i in self.with_class)
    self.videos: dict[str, np.ndarray] = {}
    self.video_has_obj: dict[str, np.ndarray] = {}
    if self.kind == "video":
      vids: dict[str, list] = {}
      for i, m in metas.items():
        vids.setdefault(m["video_id"], []).append(
          (m["frame_index"], i, m.get("num_instances", 0) > 0 and len(self.allowed[i]) > 0)
        )
      for v, fr in sorted(vids.items()):
        fr.sort()
        self.videos[v] = np.array([f[1] for f in fr])
        self.video_has_obj[v] = np.array([f[2] for f in fr])
      self.video_names = [v for v in self.videos if self.video_has_obj[v].any()]
      self.usable |= {int(i) for v in self.video_names for i in self.videos[v]}
    if not len(self.with_class) and not (self.kind == "video" and self.videos):
      raise ValueError(f"dataset {dcfg['name']!r} has no examples with a usable class")

  def check(self, meta: "PairMeta") -> None:
    """Raises HeldOutLeak if `meta` uses a held-out or unindexed example or paints a held-out
    class."""
    bad_cls = set(meta.classes) & self.excluded
    bad_rec = [r for r in meta.records if r not in self.usable]
    if bad_cls or bad_rec:
      raise HeldOutLeak(
        f"dataset {self.name!r}: a {meta.kind} pair paints held-out classes "
        f"{sorted(bad_cls)} or uses held-out examples "
        f"{[self.ids.get(r, r) for r in bad_rec]}"
      )


@dataclasses.dataclass(frozen=True)
class PairMeta:
  """Where a training pair comes from.

  dataset: the dataset's config name ('procedural' for procedural pairs).
  kind: 'semantic', 'mix_context', 'instance', 'video' or 'procedural'.
  ids: source example ids of the pair's images (prompt side first).
  records: their record indices in the source.
  classes: the label ids of the painted objects (an instance's is the label under it).
  """

  dataset: str
  kind: str
  ids: tuple[str, ...]
  records: tuple[int, ...]
  classes: tuple[int, ...]


def instance_classes(instances: np.ndarray, mask: np.ndarray, ids: Sequence[int]) -> list[int]:
  """The label id under each instance: the most frequent value of `mask` (ignoring IGNORE)
  inside it; 0 if none. instances, mask: int [H, W]."""
  out = []
  for i in ids:
    vals = mask[(instances == i) & (mask != ops.IGNORE)]
    out.append(int(np.bincount(vals).argmax()) if vals.size else 0)
  return out


class PairSampler:
  """index -> finalized training example. Picklable (for grain worker processes)."""

  def __init__(self, cfg: dict, srcs: Sequence[Any], indices: Sequence[DatasetIndex], seed: int):
    self.cfg = cfg
    self.srcs = list(srcs)
    self.indices = list(indices)
    self.dcfgs = cfg["datasets"]
    w = np.array([float(d["weight"]) for d in self.dcfgs], np.float64)
    if (w < 0).any() or w.sum() <= 0:
      raise UserError(f"dataset weights must be >= 0 with a positive sum, got {w}")
    self.weights = w / w.sum()
    self.seed = int(seed)
    self.ops = ops.build_ops(cfg["pp"], size=cfg["image_size"], patch_size=cfg["patch_size"])
    self.procedural_frac = float(cfg.get("procedural_frac") or 0.0)
    self.procedural = None
    if self.procedural_frac > 0:
      h, w = cfg["image_size"]
      if h != w:
        raise UserError(f"procedural_frac > 0 needs square halves, got image_size {(h, w)}")
      self.procedural = procedural.Sampler(
        {**_to_dict(cfg.get("procedural")), "image_size": h, "patch_size": cfg["patch_size"]}, seed
      )

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
    meta = self._meta(d, idx, "mix_context" if n > 1 else "semantic", ids, objects)
    return dict(
      images=[e["image"] for e in exs],
      labels=[lut[e["mask"]] for e in exs],
      n_prompt=n,
      num_objects=len(objects),
      seg_type=canvas.SEMANTIC,
      meta=meta,
    ), area

  @staticmethod
  def _meta(d, idx: DatasetIndex, kind: str, records, classes) -> PairMeta:
    records = tuple(int(r) for r in records)
    return PairMeta(
      dataset=d["name"],
      kind=kind,
      ids=tuple(idx.ids.get(r, str(r)) for r in records),
      records=records,
      classes=tuple(sorted({int(c) for c in classes})),
    )

  def _instances_pair(self, rng, d, idx: DatasetIndex, kind: str, recs, ex_p, ex_q):
    inst = ex_p["instances"]
    ids = np.flatnonzero(np.bincount(inst.ravel(), minlength=ops.IGNORE + 1))  # sorted, fast
    ids = ids[(ids > 0) & (ids != ops.IGNORE)]
    # Only instances whose class is not held out may be painted.
    cls = dict(zip(ids.tolist(), instance_classes(inst, ex_p["mask"], ids)))
    ids = np.array([i for i in ids if cls[int(i)] not in idx.excluded], ids.dtype)
    if d["min_area"] > 0 and len(ids):
      area = np.array([np.mean(inst == i) for i in ids])
      big = ids[area >= d["min_area"]]
      ids = big if len(big) else ids[np.argmax(area)][None]  # none big enough: the largest
    k = int(rng.integers(1, min(d["max_objects"], len(ids)) + 1)) if len(ids) else 0
    objects = [int(x) for x in rng.choice(ids, k, replace=False)] if k else []
    lut = self._lut(objects, set(), "background")
    # Semantic ignore regions (crowd, void) stay ignored, and so do held-out classes with
    # excluded_as='ignore'.
    sem_ignore = self._lut([], idx.excluded, d["excluded_as"])
    labs = []
    for e in (ex_p, ex_q):
      l = lut[e["instances"]]
      l[sem_ignore[e["mask"]] == ops.IGNORE] = ops.IGNORE
      labs.append(l)
    return dict(
      images=[ex_p["image"], ex_q["image"]],
      labels=labs,
      n_prompt=1,
      num_objects=len(objects),
      seg_type=canvas.INSTANCE,
      meta=self._meta(d, idx, kind, recs, [cls[o] for o in objects]),
    )

  def _instance(self, rng, d, src, idx):
    p = int(rng.choice(idx.with_instances))
    ex = src[p]
    # two augmented views of the same image
    return self._instances_pair(rng, d, idx, "instance", [p, p], ex, ex)

  def _video(self, rng, d, src, idx):
    v = idx.video_names[int(rng.integers(len(idx.video_names)))]
    frames, has = idx.videos[v], idx.video_has_obj[v]
    a = int(rng.choice(np.flatnonzero(has)))
    gap = d["max_frame_gap"] or len(frames)
    lo, hi = max(0, a - gap), min(len(frames), a + gap + 1)
    cands = [j for j in range(lo, hi) if j != a] or [a]
    b = int(rng.choice(cands))
    fa, fb = int(frames[a]), int(frames[b])
    return self._instances_pair(rng, d, idx, "video", [fa, fb], src[fa], src[fb])

  def sample_pair(self, rng) -> dict:
    """A pair (keys of incontext.data.ops plus `dataset` and `meta`, a PairMeta), checked
    against the dataset's held-out classes and examples."""
    di = int(rng.choice(len(self.srcs), p=self.weights))
    d, src, idx = self.dcfgs[di], self.srcs[di], self.indices[di]
    if idx.kind == "video":
      pair = self._video(rng, d, src, idx)
    elif idx.has_instances and len(idx.with_instances) and rng.random() < d["instance_prob"]:
      pair = self._instance(rng, d, src, idx)
    else:
      pair = self._semantic(rng, d, src, idx)
    meta = pair.get("meta")
    if not isinstance(meta, PairMeta):
      raise HeldOutLeak(
        f"dataset {d['name']!r}: a pair without PairMeta cannot be checked "
        "against the held-out classes and examples"
      )
    idx.check(meta)
    pair["dataset"] = di
    return pair

  def sample(self, index: int) -> tuple[dict[str, np.ndarray], PairMeta]:
    """Sample `index` of the stream: (finalized training example, its PairMeta)."""
    rng = np.random.default_rng([self.seed, int(index)])
    if self.procedural is not None and rng.random() < self.procedural_frac:
      # easy synthetic matching pairs mixed in (their own train/held-out class split)
      return self.procedural(index), PairMeta("procedural", "procedural", (), (), ())
    ex = self.sample_pair(rng)
    meta = ex.pop("meta")
    for op in self.ops:
      ex = op(ex, rng)
    return ops.finalize(ex), meta

  def __call__(self, index: int) -> dict[str, np.ndarray]:
    return self.sample(index)[0]


def build_sources(cfg: dict, sources_override: Mapping[str, Any] | None = None) -> list:
  out = []
  for d in cfg["datasets"]:
    if sources_override and d["name"] in sources_override:
      out.append(sources_override[d["name"]])
    else:
      out.append(sources.make_source(d))
  return out


def make_sampler(
  config,
  *,
  seed: int,
  process_index: int = 0,
  process_count: int = 1,
  sources_override: Mapping[str, Any] | None = None,
) -> PairSampler:
  cfg = resolve_config(config)
  if not cfg["datasets"]:
    raise UserError("config has no datasets")
  srcs = build_sources(cfg, sources_override)
  shard = (process_index, process_count) if cfg["shard_records"] else None
  idx = [DatasetIndex(s, d, record_shard=shard) for s, d in zip(srcs, cfg["datasets"])]
  return PairSampler(cfg, srcs, idx, seed)


NUM_SAMPLES = 2**40  # "infinite" stream of sample indices


def make_train_dataset(
  config,
  *,
  seed: int,
  batch_size: int,
  process_index: int = 0,
  process_count: int = 1,
  sources_override=None,
) -> grain.IterDataset:
  """The batched grain IterDataset behind `make_train_iterator` (same arguments)."""
  cfg = resolve_config(config)
  sampler = make_sampler(
    cfg,
    seed=seed,
    process_index=process_index,
    process_count=process_count,
    sources_override=sources_override,
  )
  ds = grain.MapDataset.range(NUM_SAMPLES)[process_index::process_count].map(sampler)
  ds = ds.to_iter_dataset(
    grain.ReadOptions(
      num_threads=int(cfg["read_threads"]), prefetch_buffer_size=int(cfg["prefetch"])
    )
  )
  ds = ds.batch(batch_size, drop_remainder=True)
  if cfg["num_workers"] > 0:
    ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=int(cfg["num_workers"])))
  return ds


def make_train_iterator(
  config,
  *,
  seed: int,
  batch_size: int,
  process_index: int = 0,
  process_count: int = 1,
  sources_override=None,
) -> grain.DatasetIterator:
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
  return iter(
    make_train_dataset(
      config,
      seed=seed,
      batch_size=batch_size,
      process_index=process_index,
      process_count=process_count,
      sources_override=sources_override,
    )
  )


def shared_data_config(
  root: str | None = None,
  *,
  image_size=448,
  patch_size=16,
  datasets: Sequence[str] | None = None,
  **overrides,
) -> dict:
  """A ready config over the raw folders in `root` (default: the data folder,
  `incontext.data.datadir.data_dir()`), for smoke tests / runlocal."""
  root = datadir.data_dir() if root is None else root
  all_ds = {
    "coco128_seg": dict(
      reader="coco128_seg", root=f"{root}/coco128_seg", weight=2.0, mix_context_prob=0.2
    ),
    "clothing_co_parsing": dict(
      reader="clothing_co_parsing", root=f"{root}/clothing_co_parsing", weight=1.0
    ),
    "camvid": dict(reader="camvid", root=f"{root}/camvid", split="train", weight=1.0),
    "davis2016_subset": dict(
      reader="davis", root=f"{root}/davis2016_subset", split=None, weight=1.0, max_frame_gap=20
    ),
    "kvasir_seg": dict(reader="kvasir_seg", root=f"{root}/kvasir_seg", weight=0.5),
    "weizmann_horse": dict(reader="weizmann_horse", root=f"{root}/weizmann_horse", weight=0.5),
  }
  names = list(datasets) if datasets is not None else list(all_ds)
  cfg = dict(
    image_size=image_size,
    patch_size=patch_size,
    datasets=[{"name": n, **copy.deepcopy(all_ds[n])} for n in names],
  )
  cfg.update(overrides)
  return cfg
