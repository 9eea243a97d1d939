"""Procedural in-context segmentation data: textured objects on clutter, no download needed.

A class c is an appearance: a colour (a golden-ratio hue with its own saturation and value)
and a texture (flat, horizontal or vertical stripes, checker, with a period of 2 or 3
pixels); an object's shape (ellipse, rectangle, triangle, diamond), size and place are
random per instance. A training pair is a prompt image and a query image that both contain
one object of each of the same `objects` classes (at new places, sizes and shapes); in the
target canvas the first `coloured` of them are painted (the same colour in both halves), the
rest is black. Which class is painted is random per pair, so the model has to find in the
query the objects that look like the painted prompt objects: in-context matching, not class
memorisation. Every `heldout_every`-th class never appears in training; the few-shot
evaluation episodes (`make_episodes`) use only those classes (target and distractors), so a
good score needs matching of appearances never seen in training. Textures are spread over
train and held-out classes alike (`appearance`), so held-out classes are new combinations,
not a new kind of texture.

Target colours: `palette=1` paints white (Painter-style binary target: the most separable
colour from black), `palette=n` draws from PALETTE[:n], `palette=0` random colours
(SegGPT's random colouring).

Batches carry exactly the keys of `incontext.canvas` (image, target, mask, valid, seg_type).
Sample k of the stream is a pure function of (seed, k); the stream is a grain MapDataset
`range(...)[process_index::process_count]`, so the iterator state is a position and
`get_state()` / `set_state()` (or grain's Orbax handlers) resume it exactly.

  from incontext.data import procedural
  it = procedural.make_train_iterator(dict(image_size=32, patch_size=4), seed=0, batch_size=8)
  batch = next(it)           # image [8, 64, 32, 3], target, mask [8, 128], valid, seg_type
"""

from __future__ import annotations

import colorsys
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np

from incontext import canvas
from incontext.errors import UserError

if TYPE_CHECKING:
  import grain

DEFAULTS: dict[str, Any] = dict(
  image_size=32,  # one half is image_size x image_size; the canvas is (2H, W)
  patch_size=16,  # token grid of `mask`
  num_classes=64,  # procedural classes 0..num_classes-1
  heldout_every=4,  # class c is held out (eval only) iff c % heldout_every == heldout_every-1
  objects=(2, 2),  # number of distinct classes per pair (min, max): target + distractors
  coloured=(1, 1),  # number of them painted in the target (min, max)
  size=(0.22, 0.34),  # object radius as a fraction of image_size (min, max)
  palette=1,  # 1: white targets; n: colours drawn from PALETTE[:n]; 0: random
  half_prob=1.0,  # P(mask exactly the query half); otherwise random patches
  mask_ratio=0.5,  # fraction of hidden patches when not the half mask
  read_threads=2,
  prefetch=4,
)

NUM_SAMPLES = 2**40
# Saturated, mutually distant colours for `palette=n`; white first (palette=1: binary).
PALETTE = np.array(
  [
    (255, 255, 255),
    (255, 0, 0),
    (0, 255, 0),
    (0, 0, 255),
    (255, 255, 0),
    (255, 0, 255),
    (0, 255, 255),
    (255, 128, 0),
  ],
  np.uint8,
)
TEXTURES = ("flat", "hstripes", "vstripes", "checker")
SHAPES = ("ellipse", "rectangle", "triangle", "diamond")


def resolve_config(config: Mapping[str, Any] | None) -> dict[str, Any]:
  """DEFAULTS updated by `config`; an unknown key or values that do not fit together are the
  user's settings (UserError: one line, exit status 2 from the entry points)."""
  cfg = dict(DEFAULTS)
  for k, v in dict(config or {}).items():
    if k in ("type", "name"):
      continue
    if k not in DEFAULTS:
      raise UserError(f"procedural data config: unknown key {k!r}; known: {sorted(DEFAULTS)}")
    cfg[k] = v
  if cfg["image_size"] % cfg["patch_size"]:
    raise UserError(
      f"procedural data config: image_size {cfg['image_size']} is not a "
      f"multiple of patch_size {cfg['patch_size']}"
    )
  lo, hi = cfg["objects"]
  if not 1 <= lo <= hi:
    raise UserError(
      f"procedural data config: objects {cfg['objects']} must be (min, max) with 1 <= min <= max"
    )
  if not 1 <= cfg["coloured"][0] <= cfg["coloured"][1]:
    raise UserError(
      f"procedural data config: coloured {cfg['coloured']} must be (min, max) with 1 <= min <= max"
    )
  if not 0 <= cfg["palette"] <= len(PALETTE):
    raise UserError(
      f"procedural data config: palette {cfg['palette']} must be 0 (random "
      f"colours) or 1..{len(PALETTE)}"
    )
  train, held = class_split(cfg)
  if len(held) < hi or len(train) < hi:
    raise UserError(
      f"procedural data config: num_classes {cfg['num_classes']} with "
      f"heldout_every {cfg['heldout_every']} gives {len(train)} train / "
      f"{len(held)} held-out classes, fewer than objects max {hi}"
    )
  return cfg


def class_split(cfg) -> tuple[np.ndarray, np.ndarray]:
  """(train classes, held-out classes)."""
  c = np.arange(cfg["num_classes"])
  held = (c % cfg["heldout_every"]) == cfg["heldout_every"] - 1
  return c[~held], c[held]


def appearance(c: int) -> tuple[np.ndarray, str, int]:
  """Class c -> (rgb float [3] in 0..255, texture, stripe period in pixels).

  The texture index (c + c // 4) % 4 cycles through all textures within every residue
  class of c mod 4, so train and held-out classes share the same textures.
  """
  hue = (c * 0.618033988749895) % 1.0
  sat = 0.6 + 0.4 * ((c * 7) % 5) / 4
  val = 0.65 + 0.35 * ((c * 3) % 4) / 3
  rgb = np.array(colorsys.hsv_to_rgb(hue, sat, val), np.float32) * 255
  return rgb, TEXTURES[(c + c // 4) % 4], 2 + (c // 16) % 2


def _shape_mask(shape, yy, xx, cy, cx, ry, rx) -> np.ndarray:
  dy, dx = (yy - cy) / ry, (xx - cx) / rx
  if shape == "ellipse":
    return dy * dy + dx * dx <= 1
  if shape == "rectangle":
    return (np.abs(dy) <= 0.8) & (np.abs(dx) <= 0.8)
  if shape == "diamond":
    return np.abs(dy) + np.abs(dx) <= 1
  t = (dy + 1) / 2  # triangle, apex on top
  return (t >= 0) & (t <= 1) & (np.abs(dx) <= t)


def _texture(tex, yy, xx, period) -> np.ndarray:
  """[H, W] brightness factor in {0.45, 1}."""
  if tex == "flat":
    on = np.ones_like(yy, bool)
  elif tex == "hstripes":
    on = (yy // period) % 2 == 0
  elif tex == "vstripes":
    on = (xx // period) % 2 == 0
  else:
    on = ((yy // period) + (xx // period)) % 2 == 0
  return np.where(on, 1.0, 0.45)


def _centres(rng, n, radii, s) -> np.ndarray:
  """n object centres [n, 2] inside the image, spread apart (best of a few random draws)."""
  best, best_gap = None, -np.inf
  for _ in range(8):
    c = rng.uniform(0.2 * s, 0.8 * s, (n, 2))
    if n == 1:
      return c
    d = np.sqrt(((c[:, None] - c[None]) ** 2).sum(-1))
    r = radii[:, None] + radii[None]
    gap = np.min((d - 0.8 * r)[~np.eye(n, dtype=bool)])
    if gap > best_gap:
      best, best_gap = c, gap
    if gap >= 0:
      break
  return best


def render(classes, rng, cfg) -> tuple[np.ndarray, np.ndarray]:
  """One image with one instance of each class -> (uint8 [S, S, 3], label [S, S] int32).

  The label is 1 + the index into `classes` (0 = background); later objects occlude. The
  background is a low-saturation grey gradient with noise.
  """
  s = cfg["image_size"]
  yy, xx = np.mgrid[0:s, 0:s].astype(np.float32)
  base = rng.uniform(60, 190) + rng.uniform(-15, 15, 3)
  gy, gx = rng.uniform(-1, 1, 2) * 40 / s
  img = base[None, None] + (gy * yy + gx * xx)[..., None] + rng.normal(0, 6, (s, s, 3))
  label = np.zeros((s, s), np.int32)
  n = len(classes)
  radii = rng.uniform(*cfg["size"], (n, 2)) * s  # (ry, rx) per object
  centres = _centres(rng, n, radii.mean(1), s)
  for i, c in enumerate(classes):
    rgb, tex, period = appearance(int(c))
    (ry, rx), (cy, cx) = radii[i], centres[i]
    m = _shape_mask(SHAPES[rng.integers(len(SHAPES))], yy, xx, cy, cx, ry, rx)
    if m.sum() < 4:  # keep every object visible
      m = _shape_mask("rectangle", yy, xx, cy, cx, max(ry, 3), max(rx, 3))
    col = rgb * rng.uniform(0.9, 1.1) + rng.uniform(-10, 10, 3)
    obj = (
      col[None, None]
      * _texture(tex, yy + rng.integers(period), xx + rng.integers(period), period)[..., None]
    )
    img = np.where(m[..., None], obj, img)
    label[m] = i + 1
  return np.clip(img, 0, 255).astype(np.uint8), label


def _mask(rng, cfg) -> np.ndarray:
  p, s = cfg["patch_size"], cfg["image_size"]
  gh, gw = 2 * s // p, s // p
  if rng.random() < cfg["half_prob"]:
    return canvas.query_half_mask((gh, gw))
  m = np.zeros(gh * gw, bool)
  m[rng.choice(gh * gw, int(round(cfg["mask_ratio"] * gh * gw)), replace=False)] = True
  return m


def _colours(rng, k, palette: int = 0) -> np.ndarray:
  """k mutually distinct colours far from black (from PALETTE[:palette] if > 0)."""
  if palette:
    if k > palette:
      raise ValueError(
        f"procedural data: {k} coloured classes need palette >= {k} (got palette={palette})"
      )
    return PALETTE[rng.choice(palette, k, replace=False)]
  out = []
  while len(out) < k:
    c = rng.integers(0, 256, 3)
    if c.sum() > 150 and all(np.abs(c - o).sum() > 120 for o in out):
      out.append(c)
  return np.array(out, np.uint8)


def _pair(rng, cfg, class_pool, *, first=None, num_coloured=None):
  """-> (prompt img, prompt label, query img, query label, coloured classes, colours,
  query object map). Labels: 0 black, j+1 = painted with colours[j]; the object map is
  1 + the object index (0 background) for every object, painted or not.

  The pair's classes are drawn from `class_pool`; `first` fixes the first (painted) one.
  """
  n = int(rng.integers(cfg["objects"][0], cfg["objects"][1] + 1))
  if first is None:
    classes = rng.choice(class_pool, n, replace=False)
  else:
    others = class_pool[class_pool != first]
    classes = np.concatenate([[first], rng.choice(others, n - 1, replace=False)])
  k = num_coloured or int(rng.integers(cfg["coloured"][0], min(cfg["coloured"][1], n) + 1))
  colours = _colours(rng, k, cfg["palette"])
  p_img, p_lab = render(classes, rng, cfg)
  perm = rng.permutation(n)
  q_img, q_lab_perm = render(classes[perm], rng, cfg)
  q_obj = np.where(q_lab_perm > 0, perm[np.maximum(q_lab_perm - 1, 0)] + 1, 0)
  # Object i (label i+1) is painted colour j+1 iff i is the j-th coloured object.
  lut = np.zeros(n + 1, np.int32)
  lut[1 : k + 1] = np.arange(1, k + 1)  # the first k sampled classes are coloured
  return p_img, lut[p_lab], q_img, lut[q_obj], classes[:k], colours, q_obj


def _finalize(p_img, p_lab, q_img, q_lab, colours, mask) -> dict[str, np.ndarray]:
  pal = np.concatenate([np.zeros((1, 3), np.uint8), colours], 0)
  img = np.concatenate([p_img, q_img], 0)
  tgt = pal[np.concatenate([p_lab, q_lab], 0)]
  return {
    "image": canvas.normalize(img),
    "target": canvas.normalize(tgt),
    "mask": mask,
    "valid": np.ones(img.shape[:2], np.float32),
    "seg_type": np.int32(canvas.SEMANTIC),
  }


class Sampler:
  """index -> training sample (a pure function of (seed, index))."""

  def __init__(self, config, seed: int):
    self.cfg = resolve_config(config)
    self.seed = int(seed)
    self.train_classes, _ = class_split(self.cfg)

  def __call__(self, index: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng([self.seed, int(index)])
    p_img, p_lab, q_img, q_lab, _, colours, _ = _pair(rng, self.cfg, self.train_classes)
    return _finalize(p_img, p_lab, q_img, q_lab, colours, _mask(rng, self.cfg))


def make_train_dataset(
  config, *, seed: int, batch_size: int, process_index: int = 0, process_count: int = 1
) -> grain.IterDataset:
  import grain  # the train extra; the samplers and episodes (e.g. the demo's examples) are numpy

  cfg = resolve_config(config)
  ds = grain.MapDataset.range(NUM_SAMPLES)[process_index::process_count].map(Sampler(cfg, seed))
  ds = ds.to_iter_dataset(
    grain.ReadOptions(
      num_threads=int(cfg["read_threads"]), prefetch_buffer_size=int(cfg["prefetch"])
    )
  )
  return ds.batch(batch_size, drop_remainder=True)


def make_train_iterator(
  config, *, seed: int, batch_size: int, process_index: int = 0, process_count: int = 1
) -> grain.DatasetIterator:
  """Infinite, deterministic, resumable iterator of per-host batches (numpy dicts).

  Host i of `process_count` gets global samples i, i + count, ...; `get_state()` /
  `set_state()` checkpoint the position.
  """
  return iter(
    make_train_dataset(
      config,
      seed=seed,
      batch_size=batch_size,
      process_index=process_index,
      process_count=process_count,
    )
  )


def make_episodes(config, *, seed: int = 1234, per_class: int = 4) -> list[dict[str, Any]]:
  """Few-shot evaluation episodes on the held-out classes (1 prompt, 1 query each).

  Built like training pairs (same `objects`, sizes, palette) but only from held-out classes:
  the target class and its distractors are all classes never seen in training. Each episode
  has the canvas keys with the query half of `target` black and `mask` the query half, plus
  `query_label` [H, W] int32 (0 background, 1 the class), `colours` [1, 3] uint8 (the
  prompt's colour of the class), `class_ids` [1] int32, `prompt_label` (the prompt's label
  map, for the copy baseline) and `query_objects` [H, W] int32 (1 on every object, target
  or distractor: the paint-every-object baseline, which needs no matching).
  """
  cfg = resolve_config(config)
  _, held = class_split(cfg)
  s, p = cfg["image_size"], cfg["patch_size"]
  half = canvas.query_half_mask((2 * s // p, s // p))
  out = []
  for e in range(per_class):  # classes interleaved: the first few span many classes
    for c in held:
      rng = np.random.default_rng([seed, int(c), e])
      # Class c is painted; the distractors are other held-out classes.
      p_img, p_lab, q_img, q_lab, _, colours, q_obj = _pair(
        rng, cfg, held, first=int(c), num_coloured=1
      )
      ep = _finalize(p_img, p_lab, q_img, np.zeros_like(q_lab), colours, half)
      ep.update(
        query_label=q_lab,
        prompt_label=p_lab,
        colours=colours,
        class_ids=np.array([c], np.int32),
        query_objects=(q_obj > 0).astype(np.int32),
      )
      out.append(ep)
  return out
