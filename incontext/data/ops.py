"""Named numpy ops that turn a sampled in-context pair into a training example.

An op is made by a registered factory, `OPS[name](**kwargs) -> fn`, with `fn(ex, rng) -> ex`
(`rng` a `np.random.Generator`, the example's own). A config lists ops as a pipe string, e.g.

  "random_resized_crop(scale=(0.3, 1.0))|hflip|color_jitter(p=0.8)|mix_context|random_colouring"
  "|to_canvas|canvas_crop(p=0.0)|patch_mask(ratio=0.5, half_prob=0.1)"

and `build_ops(spec, size=(H, W), patch_size=p)` fills `size`/`patch_size` into factories that take
them. The pipeline always ends with `finalize` (colour lookup + ImageNet normalisation).

Keys of a pair example (made by the sampler in pipeline.py), before `to_canvas`:
  images      list of uint8 [h, w, 3]; the first `n_prompt` are the prompt side, the rest the query
  labels      list of int32 [h, w] object maps: 0 background, 1..K object (class or instance),
              255 ignore
  n_prompt    int, number of prompt images (> 1 only for mix-context)
  num_objects int K
  seg_type    int (canvas.SEMANTIC / canvas.INSTANCE)
After `to_canvas`: canvas_image uint8 [2H, W, 3], canvas_label int32 [2H, W].
`random_colouring` adds palette uint8 [256, 3] (object id -> colour; 0 and 255 black).
`patch_mask` adds mask bool [(2H/p) * (W/p)].
`finalize` returns exactly the batch keys of `incontext.canvas`: image, target, mask, valid,
seg_type.
"""

from __future__ import annotations

import ast
import inspect
import math
from typing import Any, Callable

import numpy as np
from PIL import Image, ImageEnhance

from incontext import canvas
from incontext.errors import UnknownName

IGNORE = 255
Op = Callable[[dict, np.random.Generator], dict]
OPS: dict[str, Callable[..., Op]] = {}


def register(name: str):
  def deco(factory):
    OPS[name] = factory
    return factory

  return deco


def parse_spec(spec: str | list) -> list[tuple[str, dict[str, Any]]]:
  """'a|b(x=1, y=(2, 3))' (or a list of such strings / (name, kwargs) pairs) -> [(name, kwargs)]."""
  items = spec if isinstance(spec, (list, tuple)) else [s for s in spec.split("|")]
  out = []
  for it in items:
    if isinstance(it, (list, tuple)):
      out.append((it[0], dict(it[1]) if len(it) > 1 else {}))
      continue
    it = it.strip()
    if not it:
      continue
    node = ast.parse(it, mode="eval").body
    if isinstance(node, ast.Name):
      out.append((node.id, {}))
    elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and not node.args:
      out.append((node.func.id, {k.arg: ast.literal_eval(k.value) for k in node.keywords}))
    else:
      raise ValueError(f"bad op spec {it!r}: expected name or name(key=value, ...)")
  for name, _ in out:
    if name not in OPS:
      raise UnknownName(f"unknown op {name!r}; known: {sorted(OPS)}")
  return out


def build_ops(spec: str | list, **defaults) -> list[Op]:
  """Instantiate ops; `defaults` (e.g. size, patch_size) go to factories that accept them."""
  ops = []
  for name, kw in parse_spec(spec):
    factory = OPS[name]
    params = inspect.signature(factory).parameters
    kw = {**{k: v for k, v in defaults.items() if k in params}, **kw}
    ops.append(factory(**kw))
  return ops


# ---------------------------------------------------------------------------------------------
# Helpers.


def _pair(x) -> tuple[int, int]:
  return (int(x), int(x)) if np.isscalar(x) else (int(x[0]), int(x[1]))


def sample_crop_box(rng, h, w, scale, ratio, tries: int = 10):
  """torchvision RandomResizedCrop box (x0, y0, x1, y1); ratio = width / height."""
  area = h * w
  log_r = (math.log(ratio[0]), math.log(ratio[1]))
  for _ in range(tries):
    a = area * rng.uniform(*scale)
    r = math.exp(rng.uniform(*log_r))
    cw, ch = int(round(math.sqrt(a * r))), int(round(math.sqrt(a / r)))
    if 0 < cw <= w and 0 < ch <= h:
      y0, x0 = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
      return x0, y0, x0 + cw, y0 + ch
  r0 = w / h  # fallback: central crop at the clamped ratio
  if r0 < ratio[0]:
    cw, ch = w, int(round(w / ratio[0]))
  elif r0 > ratio[1]:
    ch, cw = h, int(round(h * ratio[1]))
  else:
    cw, ch = w, h
  x0, y0 = (w - cw) // 2, (h - ch) // 2
  return x0, y0, x0 + cw, y0 + ch


def _has_object(label, box=None) -> bool:
  if box is not None:
    x0, y0, x1, y1 = box
    label = label[y0:y1, x0:x1]
  return bool(((label > 0) & (label != IGNORE)).any())


def resize_image(img: np.ndarray, size_hw, box=None) -> np.ndarray:
  """Bicubic (crop and) resize of uint8 RGB to size (H, W)."""
  h, w = size_hw
  if box is None and img.shape[:2] == (h, w):
    return img
  return np.asarray(Image.fromarray(img).resize((w, h), Image.BICUBIC, box=box), np.uint8)


def resize_label(label: np.ndarray, size_hw, box=None) -> np.ndarray:
  """Nearest (crop and) resize of an int32 label map to size (H, W)."""
  h, w = size_hw
  if box is None and label.shape[:2] == (h, w):
    return label
  im = Image.fromarray(label.astype(np.int32), mode="I")
  return np.asarray(im.resize((w, h), Image.NEAREST, box=box), np.int32)


# ---------------------------------------------------------------------------------------------
# Per-image augmentation.


@register("resize")
def resize(size=(448, 448)) -> Op:
  """Plain resize of every image/label to `size` (bicubic / nearest)."""
  size = _pair(size)

  def fn(ex, rng):
    ex["images"] = [resize_image(im, size) for im in ex["images"]]
    ex["labels"] = [resize_label(l, size) for l in ex["labels"]]
    return ex

  return fn


@register("random_resized_crop")
def random_resized_crop(
  size=(448, 448),
  scale=(0.3, 1.0),
  ratio=(3 / 4, 4 / 3),
  keep_objects: bool = True,
  tries: int = 10,
) -> Op:
  """Per image: torchvision-style random resized crop to `size`; image bicubic, label nearest.

  With keep_objects, crops that would lose every object pixel are re-drawn (`tries` times), then
  the whole image is used.
  """
  size = _pair(size)

  def fn(ex, rng):
    imgs, labels = [], []
    for im, l in zip(ex["images"], ex["labels"]):
      h, w = l.shape
      need = keep_objects and _has_object(l)
      box = None
      for _ in range(tries):
        b = sample_crop_box(rng, h, w, scale, ratio)
        if not need or _has_object(l, b):
          box = b
          break
      box = box or (0, 0, w, h)
      imgs.append(resize_image(im, size, box))
      labels.append(resize_label(l, size, box))
    ex["images"], ex["labels"] = imgs, labels
    return ex

  return fn


@register("hflip")
def hflip(p: float = 0.5) -> Op:
  """Per image: horizontal flip of image and label together with probability p."""

  def fn(ex, rng):
    for k in range(len(ex["images"])):
      if rng.random() < p:
        ex["images"][k] = np.ascontiguousarray(ex["images"][k][:, ::-1])
        ex["labels"][k] = np.ascontiguousarray(ex["labels"][k][:, ::-1])
    return ex

  return fn


def _jitter_one(img: np.ndarray, rng, b, c, s, hue) -> np.ndarray:
  im = Image.fromarray(img)
  for t in rng.permutation(4):  # random order, as torchvision ColorJitter
    if t == 0 and b > 0:
      im = ImageEnhance.Brightness(im).enhance(rng.uniform(max(0, 1 - b), 1 + b))
    elif t == 1 and c > 0:
      im = ImageEnhance.Contrast(im).enhance(rng.uniform(max(0, 1 - c), 1 + c))
    elif t == 2 and s > 0:
      im = ImageEnhance.Color(im).enhance(rng.uniform(max(0, 1 - s), 1 + s))
    elif t == 3 and hue > 0:
      hsv = np.asarray(im.convert("HSV")).copy()
      hsv[..., 0] = (hsv[..., 0].astype(np.int16) + int(rng.uniform(-hue, hue) * 255)) % 256
      im = Image.fromarray(hsv, "HSV").convert("RGB")
  return np.asarray(im, np.uint8)


@register("color_jitter")
def color_jitter(brightness=0.4, contrast=0.4, saturation=0.2, hue=0.1, p=0.8) -> Op:
  """Per image, image only: ColorJitter(0.4, 0.4, 0.2, 0.1) with probability p (Painter)."""

  def fn(ex, rng):
    ex["images"] = [
      _jitter_one(im, rng, brightness, contrast, saturation, hue) if rng.random() < p else im
      for im in ex["images"]
    ]
    return ex

  return fn


# ---------------------------------------------------------------------------------------------
# Mix-context: stitch the images of one side (sharing the pair's colour mapping) and re-crop.


def _grid(n: int, rng) -> tuple[int, int]:
  if n == 2:
    return (1, 2) if rng.random() < 0.5 else (2, 1)
  r = int(math.floor(math.sqrt(n)))
  while n % r:
    r -= 1
  return (r, n // r)


@register("mix_context")
def mix_context(size=(448, 448), scale=(0.5, 1.0), keep_objects: bool = True) -> Op:
  """SegGPT mix-context: when a side has n > 1 images (the sampler drew them sharing the object
  ids, i.e. one colour mapping), tile them in a grid (1x2/2x1 or r x c), then random-resized-crop
  the grid back to `size` (aspect ratio within x4/3 of the grid's). No-op for n == 1 per side."""
  size = _pair(size)

  def stitch(imgs, labels, rng):
    rows, cols = _grid(len(imgs), rng)
    h, w = labels[0].shape
    imgs = [resize_image(i, (h, w)) for i in imgs]
    labels = [resize_label(l, (h, w)) for l in labels]
    gi = np.concatenate(
      [np.concatenate(imgs[r * cols : (r + 1) * cols], 1) for r in range(rows)], 0
    )
    gl = np.concatenate(
      [np.concatenate(labels[r * cols : (r + 1) * cols], 1) for r in range(rows)], 0
    )
    gr = (cols * w) / (rows * h)
    box = None
    for _ in range(10):
      b = sample_crop_box(rng, gl.shape[0], gl.shape[1], scale, (gr * 3 / 4, gr * 4 / 3))
      if not keep_objects or not _has_object(gl) or _has_object(gl, b):
        box = b
        break
    box = box or (0, 0, gl.shape[1], gl.shape[0])
    return resize_image(gi, size, box), resize_label(gl, size, box)

  def fn(ex, rng):
    n = ex["n_prompt"]
    sides = [(ex["images"][:n], ex["labels"][:n]), (ex["images"][n:], ex["labels"][n:])]
    if all(len(s[0]) == 1 for s in sides):
      return ex
    out = [stitch(i, l, rng) if len(i) > 1 else (i[0], l[0]) for i, l in sides]
    ex["images"], ex["labels"] = [o[0] for o in out], [o[1] for o in out]
    ex["n_prompt"] = 1
    return ex

  return fn


# ---------------------------------------------------------------------------------------------
# Random colouring.


def random_colours(rng, k: int, min_dist: int = 48, min_norm: int = 64) -> np.ndarray:
  """k distinct random RGB colours [k, 3] uint8, pairwise L-inf distance >= min_dist where
  possible and away from black (max channel >= min_norm)."""
  out: list[np.ndarray] = []
  tries = 0
  while len(out) < k:
    c = rng.integers(0, 256, 3)
    tries += 1
    if c.max() < min_norm:
      continue
    if tries < 200 * k and any(np.abs(c - o).max() < min_dist for o in out):
      continue
    if any((c == o).all() for o in out):
      continue
    out.append(c)
  return np.array(out, np.uint8).reshape(k, 3)


@register("random_colouring")
def random_colouring(min_dist: int = 48, colours: str = "random") -> Op:
  """Each object id 1..K of the pair gets a random distinct colour, the same in prompt and query;
  background (0) and ignore (255) are black (ignore is excluded from the loss by `valid`).

  colours='white' paints every object white instead (Painter-style binary targets, as the
  few-shot evaluation paints its prompt masks; use with a dataset's max_objects=1 for one
  object per pair). It draws no random numbers.
  """
  if colours not in ("random", "white"):
    raise ValueError(f"random_colouring: colours must be 'random' or 'white', got {colours!r}")

  def fn(ex, rng):
    pal = np.zeros((256, 3), np.uint8)
    k = int(ex["num_objects"])
    if k:
      pal[1 : k + 1] = 255 if colours == "white" else random_colours(rng, k, min_dist)
    ex["palette"] = pal
    return ex

  return fn


@register("fixed_colouring")
def fixed_colouring() -> Op:
  """Painter's deterministic base-b palette instead of random colours (ablation)."""

  def fn(ex, rng):
    pal = np.zeros((256, 3), np.uint8)
    base = canvas.build_palette(254)
    pal[:255] = base[:255]
    ex["palette"] = pal
    return ex

  return fn


# ---------------------------------------------------------------------------------------------
# Canvas.


@register("to_canvas")
def to_canvas(size=(448, 448)) -> Op:
  """Stack prompt over query: canvas_image uint8 [2H, W, 3], canvas_label int32 [2H, W]."""
  size = _pair(size)

  def fn(ex, rng):
    if len(ex["images"]) != 2:
      raise ValueError("to_canvas needs one image per side; put mix_context before it")
    imgs = [resize_image(i, size) for i in ex["images"]]
    labels = [resize_label(l, size) for l in ex["labels"]]
    ex["canvas_image"] = np.concatenate(imgs, 0)
    ex["canvas_label"] = np.concatenate(labels, 0)
    del ex["images"], ex["labels"]
    return ex

  return fn


@register("canvas_crop")
def canvas_crop(
  p: float = 0.0, scale=(0.3, 1.0), ratio=(0.3, 0.7), skip_instance: bool = True
) -> Op:
  """Painter's second RandomResizedCrop over the whole 2H x W canvas (with probability p),
  resized back to 2H x W; Painter skips it for instance pairs. Straddles prompt and query."""

  def fn(ex, rng):
    if rng.random() >= p or (skip_instance and ex["seg_type"] == canvas.INSTANCE):
      return ex
    im, l = ex["canvas_image"], ex["canvas_label"]
    h, w = l.shape
    box = sample_crop_box(rng, h, w, scale, ratio)
    ex["canvas_image"] = resize_image(im, (h, w), box)
    ex["canvas_label"] = resize_label(l, (h, w), box)
    ex["half_mask_forbidden"] = True
    return ex

  return fn


class MaskingGenerator:
  """BEiT block-wise masking (Painter's `util/masking_generator.py`), numpy Generator based.

  Blocks of min..max patches with aspect in [min_aspect, 1/min_aspect] are added until
  `num_masking_patches` are hidden; as in Painter, the count is then made exact.
  """

  def __init__(
    self,
    input_size,
    num_masking_patches,
    min_num_patches=16,
    max_num_patches=None,
    min_aspect=0.3,
    max_aspect=None,
  ):
    self.height, self.width = input_size
    self.num_masking_patches = num_masking_patches
    self.min_num_patches = min_num_patches
    self.max_num_patches = num_masking_patches if max_num_patches is None else max_num_patches
    max_aspect = max_aspect or 1 / min_aspect
    self.log_aspect_ratio = (math.log(min_aspect), math.log(max_aspect))

  def _mask(self, mask, max_mask_patches, rng):
    delta = 0
    for _ in range(10):
      target_area = rng.uniform(self.min_num_patches, max_mask_patches)
      aspect = math.exp(rng.uniform(*self.log_aspect_ratio))
      h = int(round(math.sqrt(target_area * aspect)))
      w = int(round(math.sqrt(target_area / aspect)))
      if w < self.width and h < self.height:
        top = int(rng.integers(0, self.height - h + 1))
        left = int(rng.integers(0, self.width - w + 1))
        win = mask[top : top + h, left : left + w]
        num_masked = int(win.sum())
        if 0 < h * w - num_masked <= max_mask_patches:
          delta += h * w - num_masked
          win[...] = True
        if delta > 0:
          break
    return delta

  def __call__(self, rng) -> np.ndarray:
    mask = np.zeros((self.height, self.width), bool)
    count = 0
    while count < self.num_masking_patches:
      max_patches = min(self.num_masking_patches - count, self.max_num_patches)
      if max_patches < self.min_num_patches:
        break
      delta = self._mask(mask, max_patches, rng)
      if delta == 0:
        break
      count += delta
    diff = int(mask.sum()) - self.num_masking_patches  # make the count exact
    if diff > 0:
      on = np.flatnonzero(mask)
      mask.flat[rng.choice(on, diff, replace=False)] = False
    elif diff < 0:
      off = np.flatnonzero(~mask)
      mask.flat[rng.choice(off, -diff, replace=False)] = True
    return mask


@register("patch_mask")
def patch_mask(
  size=(448, 448),
  patch_size: int = 16,
  mode: str = "painter",
  ratio: float = 0.5,
  half_prob: float = 0.1,
  min_block: int | None = None,
  max_block: int | None = None,
  min_aspect: float = 0.3,
) -> Op:
  """Patch mask over the (2H/p, W/p) token grid, row-major, True = hidden.

  Painter's masking (docs/design.md#training-recipe).

  mode 'painter': block-wise `ratio` of the tokens, or with `half_prob` exactly the query half
  (not after a canvas crop); 'block': always block-wise; 'half': always the query half.
  Block sizes default to Painter's 16 .. L/4 at 56x28 (392 of 1568), scaled to the grid:
  min_block = max(1, round(16 * L / 1568)), max_block = L // 4.
  """
  h, w = _pair(size)
  gh, gw = 2 * h // patch_size, w // patch_size
  L = gh * gw
  min_block = max(1, round(16 * L / 1568)) if min_block is None else min_block
  max_block = L // 4 if max_block is None else max_block
  gen = MaskingGenerator((gh, gw), int(round(ratio * L)), min_block, max_block, min_aspect)
  half = canvas.query_half_mask((gh, gw))

  def fn(ex, rng):
    use_half = mode == "half" or (
      mode == "painter" and rng.random() < half_prob and not ex.get("half_mask_forbidden", False)
    )
    ex["mask"] = half.copy() if use_half else gen(rng).reshape(-1)
    return ex

  return fn


_SCALE = (1.0 / (255.0 * canvas.IMAGENET_STD)).astype(np.float32)
_OFFSET = (-canvas.IMAGENET_MEAN / canvas.IMAGENET_STD).astype(np.float32)


def _normalize_u8(x: np.ndarray) -> np.ndarray:
  """canvas.normalize for uint8 input, in place on one float32 buffer (~3x faster)."""
  y = x.astype(np.float32)
  y *= _SCALE
  y += _OFFSET
  return y


def finalize(ex: dict) -> dict[str, np.ndarray]:
  """Colour lookup + normalisation -> exactly {image, target, mask, valid, seg_type}."""
  label = ex["canvas_label"]
  pal = ex.get("palette")
  if pal is None:
    pal = np.zeros((256, 3), np.uint8)
    pal[:255] = canvas.build_palette(254)[:255]
  pal_norm = _normalize_u8(pal)  # normalise 256 colours, then gather
  return {
    "image": _normalize_u8(ex["canvas_image"]),
    "target": pal_norm[np.clip(label, 0, 255)],
    "mask": np.asarray(ex["mask"], bool),
    "valid": (label != IGNORE).astype(np.float32),
    "seg_type": np.int32(ex["seg_type"]),
  }


DEFAULT_PP = (
  "random_resized_crop(scale=(0.3, 1.0))|hflip(p=0.5)|color_jitter(p=0.8)"
  "|mix_context|random_colouring|to_canvas|canvas_crop(p=0.0)"
  "|patch_mask(mode='painter', ratio=0.5, half_prob=0.1)"
)
