"""In-context segmentation with a SegGPT params directory: one call from Python.

    seg = Segmenter.from_checkpoint("params/", seg_type="instance")
    results = seg.segment(prompts=[("a.jpg", "a.png")], queries=["q1.jpg", "q2.jpg"])
    results[0].labels        # [H, W] label ids at q1's original size
    results[0].save("out/")  # out/q1.png (palette PNG: index = label id) + q1_overlay.png

Pipeline (as the official `inference_image` and the HF processor; docs/design.md#inference):
  1. images: PIL bicubic on uint8 to the model's `cfg.image_size` (448x448 for L/16), /255,
     ImageNet-normalised; prompt masks are first encoded as RGB colour masks
     (`encode_masks`), then PIL NEAREST-resized and normalised the same way;
  2. canvas: prompt over query (image), prompt mask over prompt mask (target); the bottom half
     is the mask token; K prompts run as one batch with the feature ensemble, the
     output is batch entry 0's query half ("raw", [h, w, 3] normalised);
  3. labels: de-normalise to [0, 255], squared-L2 argmin over the palette including black
     background (HF `post_process_semantic_segmentation`), then legacy torch nearest
     (src = floor(dst * in / out)) back to the query's original size. The argmin is
     taken before the upsampling; nearest sampling commutes with a per-pixel map, so this
     is exactly HF's upsample-then-argmin.

Mask conventions (`encode_masks`): binary masks (values in {0,1} or {0,255}) become white on
black and come back with the same foreground value; label maps with several classes get
distinct colours of `canvas.build_palette(K)` (K = number of distinct non-zero labels over
all prompts, in increasing label order) and come back as the same label ids; RGB colour masks
are used as they are and come back as colour images. A grey mask with 0/255 and a thin band
of anti-aliased edge values (the official demo targets) is used as-is, like the official
code does, and comes back as 0/255.
"""

import dataclasses
import json
import logging
import math
import os
from typing import Iterable, Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from PIL import Image

from incontext import accel, canvas, checkpoint, imageio, prompts, timing
from incontext.imageio import InputError, load_image, load_mask  # noqa: F401 (re-exported)

__all__ = [
  "InputError",
  "load_image",
  "load_mask",
  "encode_masks",
  "prepare_image",
  "prepare_mask",
  "predict_canvas",
  "predict_canvas_batch",
  "spatial_ensemble",
  "labels_from_prediction",
  "resize_nearest_torch",
  "check_aspect",
  "Result",
  "save_results",
  "Segmenter",
]

MAX_LABEL = 255  # label ids are written as 8-bit PNGs
ASPECT_TOL = 0.02  # relative aspect-ratio difference allowed between image and mask

log = logging.getLogger(__name__)


# -- masks ----------------------------------------------------------------------------------
def _names(masks, names):
  return list(names) if names is not None else [f"mask {i}" for i in range(len(masks))]


def _binary_fg(m: np.ndarray) -> int | None:
  """The foreground value of a binary 2-D mask (1 or 255), 0 if empty, None if not binary."""
  vals = np.unique(m)
  nz = vals[vals != 0]
  if nz.size == 0:
    return 0
  if nz.size == 1 and nz[0] in (1, 255):
    return int(nz[0])
  return None


def _is_soft_binary(m: np.ndarray) -> bool:
  """0/255 with a thin band (< 5 % of pixels, >= 8 distinct values) of anti-aliased edges."""
  vals, counts = np.unique(m, return_counts=True)
  inner = (vals > 0) & (vals < 255)
  return 0 in vals and 255 in vals and int(inner.sum()) >= 8 and counts[inner].sum() < 0.05 * m.size


def _check_2d_range(m: np.ndarray, name: str):
  if m.dtype.kind == "f":
    if not np.all(np.isfinite(m)) or not np.all(m == np.round(m)):
      raise InputError(f"{name}: mask has non-integer values; expected label ids")
  lo, hi = m.min(), m.max()
  if lo < 0 or hi > MAX_LABEL:
    bad = int(lo) if lo < 0 else int(hi)
    raise InputError(f"{name}: label {bad} out of range (label ids must be 0..{MAX_LABEL})")


def _colours(m: np.ndarray) -> np.ndarray:
  """Distinct colours [n, 3] of an RGB mask (sorted)."""
  return np.unique(m.reshape(-1, 3), axis=0)


def encode_masks(
  masks: Sequence[np.ndarray],
  names: Sequence[str] | None = None,
  *,
  palette: np.ndarray | None = None,
  label_ids: Sequence[int] | None = None,
  allow_empty: bool = False,
):
  """Prompt masks -> RGB colour masks sharing one palette.

  Args:
    masks: each a [H, W] label map (binary 0/1 or 0/255, or label ids 0..255, 0 =
      background) or a [H, W, 3] uint8 RGB colour mask (black = background), as from
      `load_mask`. All masks must be of one kind (label maps or colour masks).
    names: file names for error messages.
    palette, label_ids: an existing encoding to follow (e.g. a learned prompt's): labels
      and colours must then belong to it.
    allow_empty: accept masks with no foreground (otherwise an InputError).
  Returns:
    (list of uint8 [H, W, 3] colour masks, palette uint8 [K+1, 3] with palette[0] black,
     label_ids: list of K ints, the id written for palette[1:]). For colour masks the ids
     are 1..K (indices into the palette).
  """
  names = _names(masks, names)
  if not masks:
    raise InputError("no prompt masks given")
  masks = [np.asarray(m) for m in masks]
  for m, n in zip(masks, names):
    if not (m.ndim == 2 or (m.ndim == 3 and m.shape[-1] == 3)):
      raise InputError(f"{n}: mask of shape {m.shape}; expected [H, W] labels or [H, W, 3] RGB")
  kinds = {m.ndim for m in masks}
  if len(kinds) > 1:
    c = next(n for m, n in zip(masks, names) if m.ndim == 3)
    l = next(n for m, n in zip(masks, names) if m.ndim == 2)
    raise InputError(
      f"{c}: an RGB colour mask cannot be mixed with label-map masks ({l}); "
      "give all prompt masks in one convention"
    )
  if palette is not None:
    return _encode_with(masks, names, np.asarray(palette, np.uint8), list(label_ids), allow_empty)
  if kinds == {3}:
    for m, n in zip(masks, names):
      if m.dtype != np.uint8:
        raise InputError(f"{n}: RGB mask of dtype {m.dtype}; expected uint8")
      if not allow_empty and not m.any():
        raise InputError(f"{n}: mask is empty (all background)")
    cols = np.unique(np.concatenate([_colours(m) for m in masks]), axis=0)
    cols = cols[cols.any(axis=1)]
    if len(cols) > MAX_LABEL:
      raise InputError(
        f"{names[0]}: colour masks have {len(cols)} distinct colours; at most "
        f"{MAX_LABEL} are supported (is this a photo or an anti-aliased mask?)"
      )
    pal = np.concatenate([np.zeros((1, 3), np.uint8), cols.astype(np.uint8)])
    return [m.copy() for m in masks], pal, list(range(1, len(cols) + 1))
  for m, n in zip(masks, names):
    _check_2d_range(m, n)
    if not allow_empty and not m.any():
      raise InputError(f"{n}: mask is empty (all background)")
  fgs = [_binary_fg(m) for m in masks]
  if all(f is not None for f in fgs):  # binary masks
    fg = next((f for f in fgs if f), 255)
    pal = canvas.BINARY_PALETTE.copy()
    return [np.repeat((m != 0)[..., None] * np.uint8(255), 3, -1) for m in masks], pal, [fg]
  soft = [_is_soft_binary(m) for m in masks]
  if all(s or f is not None for s, f in zip(soft, fgs)) and any(soft):
    # Anti-aliased 0/255 masks (official demo targets): used as-is, like the official code.
    pal = canvas.BINARY_PALETTE.copy()
    out = [
      np.repeat(m.astype(np.uint8)[..., None], 3, -1)
      if s
      else np.repeat((m != 0)[..., None] * np.uint8(255), 3, -1)
      for m, s in zip(masks, soft)
    ]
    return out, pal, [255]
  ids = np.unique(np.concatenate([np.unique(m) for m in masks]))
  ids = [int(i) for i in ids if i != 0]
  pal = canvas.build_palette(len(ids))
  if len(np.unique(pal, axis=0)) != len(pal):  # cannot happen for <= 255 labels; kept as a guard
    raise InputError(f"{names[0]}: {len(ids)} classes do not fit the palette")
  return _paint(masks, ids, pal), pal, ids


def _paint(masks, ids, pal):
  lut = np.zeros((MAX_LABEL + 1, 3), np.uint8)
  for k, i in enumerate(ids):
    lut[i] = pal[k + 1]
  return [lut[m.astype(np.int64)] for m in masks]


def _encode_with(masks, names, pal, ids, allow_empty):
  """Encodes masks with a given palette / label ids (e.g. those of a learned prompt)."""
  if len(pal) != len(ids) + 1:
    raise InputError(f"palette has {len(pal)} colours for {len(ids)} labels (+ background)")
  out = []
  for m, n in zip(masks, names):
    if not allow_empty and not m.any():
      raise InputError(f"{n}: mask is empty (all background)")
    if m.ndim == 3:
      cols = _colours(m)
      known = {tuple(c) for c in pal}
      extra = [tuple(int(v) for v in c) for c in cols if tuple(c) not in known]
      if extra:
        raise InputError(
          f"{n}: colours {extra[:4]} are not in the prompt palette "
          f"{[tuple(int(v) for v in c) for c in pal[1:]][:8]}"
        )
      out.append(m.astype(np.uint8).copy())
      continue
    _check_2d_range(m, n)
    fg = _binary_fg(m)
    if fg and len(ids) == 1:
      out.append(np.repeat((m != 0)[..., None], 3, -1) * pal[1])
      continue
    if len(ids) == 1 and _is_soft_binary(m):
      if tuple(pal[1]) == (255, 255, 255):  # white foreground: used as-is, as officially
        out.append(np.repeat(m.astype(np.uint8)[..., None], 3, -1))
      else:  # another colour: threshold at 128
        out.append(np.repeat((m >= 128)[..., None], 3, -1) * pal[1])
      continue
    vals = [int(v) for v in np.unique(m) if v != 0]
    extra = [v for v in vals if v not in ids]
    if extra:
      raise InputError(f"{n}: labels {extra[:8]} are not among the prompt's labels {ids}")
    out.append(_paint([m], ids, pal)[0])
  return out, pal, ids


def check_aspect(
  image_hw, mask_hw, image_name: str, mask_name: str, tol: float = ASPECT_TOL
) -> None:
  """Raises if the mask's aspect ratio differs from its image's (same size not required)."""
  (ih, iw), (mh, mw) = image_hw[:2], mask_hw[:2]
  a, b = iw / ih, mw / mh
  if abs(a - b) > tol * a:
    raise InputError(
      f"{mask_name}: mask is {mw}x{mh} (aspect {b:.3f}) but its image "
      f"{image_name} is {iw}x{ih} (aspect {a:.3f}); they must have the same "
      "aspect ratio"
    )


# -- resizing -------------------------------------------------------------------------------
def _pil_resize(a: np.ndarray, size, resample) -> np.ndarray:
  """uint8 [H, W, 3] or float [H, W, C] -> size (h, w) with PIL (float: per-channel 'F')."""
  h, w = size
  a = np.asarray(a)
  if a.dtype == np.uint8:
    return np.asarray(Image.fromarray(a).resize((w, h), resample))
  chans = [
    np.asarray(
      Image.fromarray(np.ascontiguousarray(a[..., c], np.float32), "F").resize((w, h), resample)
    )
    for c in range(a.shape[-1])
  ]
  return np.stack(chans, -1).astype(np.float32)


def resize_image_uint8(img: np.ndarray, size=(448, 448)) -> np.ndarray:
  """uint8 [H, W, 3] -> uint8 [h, w, 3], PIL bicubic (antialiased) like the official code."""
  return _pil_resize(_as_rgb_uint8(img, "image"), size, Image.BICUBIC)


def resize_mask_uint8(rgb: np.ndarray, size=(448, 448)) -> np.ndarray:
  """uint8 [H, W, 3] colour mask -> uint8 [h, w, 3], PIL NEAREST."""
  return _pil_resize(_as_rgb_uint8(rgb, "mask"), size, Image.NEAREST)


def prepare_image(img_uint8: np.ndarray, size=(448, 448)) -> np.ndarray:
  """uint8 [H, W, 3] -> float32 [h, w, 3] ImageNet-normalised (PIL bicubic on uint8)."""
  return canvas.normalize(resize_image_uint8(img_uint8, size))


def prepare_mask(rgb_uint8: np.ndarray, size=(448, 448)) -> np.ndarray:
  """uint8 [H, W, 3] colour mask -> float32 [h, w, 3] normalised (PIL NEAREST)."""
  return canvas.normalize(resize_mask_uint8(rgb_uint8, size))


def _as_rgb_uint8(a, what):
  a = np.asarray(a)
  if a.ndim == 2:
    a = np.repeat(a[..., None], 3, -1)
  if a.ndim != 3 or a.shape[-1] != 3 or a.dtype != np.uint8:
    raise InputError(f"{what} must be uint8 [H, W, 3], got {a.dtype} {a.shape}")
  return a


def spatial_ensemble(imgs: np.ndarray, tgts: np.ndarray, n: int | None = None):
  """Spatial ensemble: n x n prompts tiled into one grid, subsampled to one slot.

  docs/design.md#ensembles.

  Prompt i goes to grid cell (i // n, i % n); with fewer than n*n prompts the remaining
  cells repeat the prompts cyclically (cell j holds prompt j mod K). The (n h, n w) grid is
  resized to (h, w) with PIL: bicubic for the images, NEAREST for the masks.
  uint8 inputs are resized as uint8 (the prompts' pixels before normalisation, as the
  official pipeline resizes); float inputs (e.g. normalised or learned prompts) are resized
  per channel in float ('F' mode), which equals the uint8 path up to rounding because the
  normalisation is affine per channel.

  Args:
    imgs: [K, h, w, 3] prompt images; tgts: [K, h, w, 3] their colour masks.
    n: grid side; default ceil(sqrt(K)).
  Returns:
    (img [h, w, 3], tgt [h, w, 3]) of the input dtypes.
  """
  imgs, tgts = np.asarray(imgs), np.asarray(tgts)
  if imgs.ndim != 4 or imgs.shape != tgts.shape or imgs.shape[-1] != 3:
    raise ValueError(
      f"spatial_ensemble: imgs {imgs.shape} and tgts {tgts.shape} must both be [K, h, w, 3]"
    )
  k, h, w, _ = imgs.shape
  n = n or math.ceil(math.sqrt(k))
  if k > n * n:
    raise ValueError(f"spatial_ensemble: {k} prompts do not fit a {n}x{n} grid")
  cells = [j % k for j in range(n * n)]
  grid = lambda a: a[cells].reshape(n, n, h, w, 3).transpose(0, 2, 1, 3, 4).reshape(n * h, n * w, 3)
  return (
    _pil_resize(grid(imgs), (h, w), Image.BICUBIC),
    _pil_resize(grid(tgts), (h, w), Image.NEAREST),
  )


def resize_nearest_torch(x: np.ndarray, out_hw) -> np.ndarray:
  """Legacy PyTorch `interpolate(mode='nearest')` on the first two axes (docs/design.md#label-maps).

  src = min(floor(dst * (in / out)), in - 1), with the scale and product in float32 as in
  ATen (so the indices are bit-identical to torch's).
  """
  x = np.asarray(x)
  idx = []
  for n_in, n_out in zip(x.shape[:2], out_hw):
    if n_out == n_in:
      idx.append(np.arange(n_out))
    elif n_out == 2 * n_in:
      idx.append(np.arange(n_out) >> 1)
    else:
      scale = np.float32(n_in) / np.float32(n_out)
      src = np.floor(np.arange(n_out, dtype=np.float32) * scale).astype(np.int64)
      idx.append(np.minimum(src, n_in - 1))
  return x[idx[0][:, None], idx[1][None, :]]


def labels_from_prediction(
  pred_rgb: np.ndarray,
  palette: np.ndarray,
  label_ids: Sequence[int],
  threshold: float | None = None,
) -> np.ndarray:
  """[H, W, 3] prediction in 0..255 -> [H, W] label ids (uint8).

  argmin of the squared L2 distance over `palette` (black background first), ties to the
  lower index, as HF `post_process_semantic_segmentation(num_labels=...)`; palette entry
  k > 0 gives label_ids[k - 1], entry 0 gives 0.

  threshold (one label only): foreground where the prediction's projection on the label's
  colour, <x, c> / <c, c> (the channel mean / 255 for white), is >= threshold. 0.5 is the
  nearest-colour rule above up to ties (and the official video code's "channel mean > 128");
  a lower value trades precision for recall, e.g. for a small model whose uncertain
  pixels come out grey (calibrate it on data that is not evaluated:
  `incontext.evaluators.davis.calibrate_threshold`).
  """
  x = np.asarray(pred_rgb, np.float32)
  pal = np.asarray(palette, np.float32)
  if len(pal) != len(label_ids) + 1:
    raise ValueError(f"palette has {len(pal)} colours for {len(label_ids)} labels (+ background)")
  if threshold is not None:
    if len(label_ids) != 1:
      raise ValueError(
        f"threshold={threshold} needs one label (a binary mask); got "
        f"{len(label_ids)} labels: decode several with the nearest colour"
      )
    if not 0.0 < float(threshold) < 1.0:
      raise ValueError(f"threshold must be in (0, 1), got {threshold}")
    c = pal[1] - pal[0]
    s = ((x - pal[0]) @ c) / float(c @ c)
    return np.where(s >= float(threshold), int(label_ids[0]), 0).astype(
      np.uint8 if int(label_ids[0]) <= 255 else np.int32
    )
  best = np.full(x.shape[:2], np.inf, np.float32)
  arg = np.zeros(x.shape[:2], np.int64)
  for k, c in enumerate(pal):
    d = x - c
    d = d * d
    d = d[..., 0] + d[..., 1] + d[..., 2]
    better = d < best
    best = np.where(better, d, best)
    arg = np.where(better, k, arg)
  lut = np.array([0] + [int(i) for i in label_ids])
  return lut[arg].astype(np.uint8 if lut.max() <= 255 else np.int32)


# -- the forward ----------------------------------------------------------------------------
def _forward(graphdef, state, prompt_imgs, prompt_tgts, queries, seg_type, *, feature_ensemble):
  """The jitted forward; off CPU the queries' buffer is donated (reused for the output)."""
  fn = _forward_keep if jax.default_backend() == "cpu" else _forward_donate
  return fn(
    graphdef, state, prompt_imgs, prompt_tgts, queries, seg_type, feature_ensemble=feature_ensemble
  )


def _forward_impl(
  graphdef, state, prompt_imgs, prompt_tgts, queries, seg_type, *, feature_ensemble
):
  """[K,h,w,3] x2, [B,h,w,3] -> [B,h,w,3]: each query against all K prompts (vmap over B).

  Jitted once per (model structure, shapes); weights are an argument, so models of the
  same structure share the compiled code and updated weights are always used.
  """
  model = nnx.merge(graphdef, state)
  k = prompt_imgs.shape[0]
  mask = jnp.asarray(canvas.query_half_mask(model.cfg.grid))[None]
  st = jnp.full((k,), seg_type, jnp.int32)
  tgts = jnp.concatenate([prompt_tgts, prompt_tgts], axis=1)

  def one(q):
    imgs = jnp.concatenate([prompt_imgs, jnp.broadcast_to(q, prompt_imgs.shape)], axis=1)
    # All K entries share the query half: with the ensemble its per-token work runs once.
    out = model(
      imgs,
      tgts,
      mask,
      st,
      feature_ensemble=feature_ensemble,
      query_only=True,
      shared_query=feature_ensemble,
    )
    return out[0]  # batch entry 0, like the official code

  return jax.vmap(one)(queries)


def feature_ensemble_on(num_prompts: int) -> bool:
  """The one rule for the feature ensemble, shared by `Segmenter`, `video.propagate` and the
  evaluators: on iff more than one prompt (the official code's rule; a single prompt is plain
  one-shot for both ensemble variants, whereas HF's variant with the flag set would average
  at the merge layer even for one prompt)."""
  return int(num_prompts) > 1


_forward_keep = jax.jit(_forward_impl, static_argnums=(0,), static_argnames=("feature_ensemble",))
_forward_donate = jax.jit(
  _forward_impl,
  static_argnums=(0,),
  static_argnames=("feature_ensemble",),
  donate_argnames=("queries",),
)


def _seg_type_id(seg_type) -> int:
  if isinstance(seg_type, str):
    if seg_type not in canvas.SEG_TYPES:
      raise ValueError(f"seg_type must be one of {sorted(canvas.SEG_TYPES)}, got {seg_type!r}")
    return canvas.SEG_TYPES[seg_type]
  return int(seg_type)


def predict_canvas_batch(
  model, prompt_imgs, prompt_tgts, queries, *, seg_type, feature_ensemble: bool = True
) -> np.ndarray:
  """B queries, each against the same K prompts: -> [B, h, w, 3] float32 normalised.

  Args: prompt_imgs, prompt_tgts [K, h, w, 3] and queries [B, h, w, 3], all normalised at
  the model's `cfg.image_size`; seg_type 'instance'/'semantic' or its id.
  """
  h, w = model.cfg.image_size
  pi, pt, q = (np.asarray(a, np.float32) for a in (prompt_imgs, prompt_tgts, queries))
  if pi.ndim != 4 or pi.shape[1:] != (h, w, 3) or pt.shape != pi.shape:
    raise ValueError(
      f"prompts must be [K, {h}, {w}, 3] (the model's image_size), got images "
      f"{pi.shape} and targets {pt.shape}"
    )
  if q.ndim != 4 or q.shape[1:] != (h, w, 3):
    raise ValueError(f"queries must be [B, {h}, {w}, 3], got {q.shape}")
  graphdef, state = nnx.split(model)
  out = _forward(
    graphdef,
    state,
    pi,
    pt,
    q,
    jnp.int32(_seg_type_id(seg_type)),
    feature_ensemble=bool(feature_ensemble),
  )
  return np.asarray(out, np.float32)


def predict_canvas(
  model, prompt_imgs, prompt_tgts, query, *, seg_type, feature_ensemble: bool = True
) -> np.ndarray:
  """One query [h, w, 3] against K prompts [K, h, w, 3] -> [h, w, 3] float32 normalised.

  The query half of batch entry 0 (query_only decoder), as the official code takes it;
  with feature_ensemble the K prompts' query features are averaged.
  """
  return predict_canvas_batch(
    model,
    prompt_imgs,
    prompt_tgts,
    np.asarray(query)[None],
    seg_type=seg_type,
    feature_ensemble=feature_ensemble,
  )[0]


# -- the high-level API ---------------------------------------------------------------------
@dataclasses.dataclass
class Result:
  """One query's segmentation.

  labels: [H, W] uint8 label ids at the query's original size (the ids of the prompt masks;
    for colour masks: indices into `palette`).
  rgb: [H, W, 3] uint8 de-normalised model output at the original size (what SegGPT paints).
  raw: [h, w, 3] float32 normalised model output (the query half at the model's size).
  palette: [K+1, 3] uint8 colours (0 = black background); label_ids: K ids for palette[1:].
  colour_masks: True when the prompts were RGB colour masks (then `colored` is the output).
  colours: [256, 3] uint8 colour of each label id in the saved label PNG and the overlay
    (`imageio.label_palette`; None: the model's colours `palette`).
  image: the query, uint8 [H, W, 3] (for `overlay`); name: the query's file stem (or
    'query_<i>' for arrays), the default file name of `save`.
  """

  labels: np.ndarray
  rgb: np.ndarray
  raw: np.ndarray
  palette: np.ndarray
  label_ids: list
  colour_masks: bool = False
  colours: np.ndarray | None = None
  image: np.ndarray | None = dataclasses.field(default=None, repr=False)
  name: str | None = None

  @property
  def colored(self) -> np.ndarray:
    """[H, W, 3] uint8: each pixel painted with its label's palette colour."""
    lut = np.zeros((max([0] + list(self.label_ids)) + 1, 3), np.uint8)
    for k, i in enumerate(self.label_ids):
      lut[i] = self.palette[k + 1]
    return lut[self.labels]

  @property
  def empty(self) -> bool:
    """True when every pixel was decoded as background."""
    return not np.any(self.labels)

  def label_colours(self) -> np.ndarray:
    """[256, 3] uint8: the colour of each label id as shown in the label PNG (0 black)."""
    if self.colours is not None:
      return np.asarray(self.colours, np.uint8)
    return imageio.label_palette(self.label_ids, np.asarray(self.palette)[1:])

  def legend(self) -> dict:
    """{'labels': [{'id': i, 'colour': [r, g, b]}, ...]}: what each label PNG index means.

    For RGB colour-mask prompts the ids are 1..K and the colours are the prompt's colours.
    """
    cols = self.label_colours()
    kind = "colour" if self.colour_masks else ("binary" if len(self.label_ids) == 1 else "labels")
    return {
      "prompt_masks": kind,
      "labels": [{"id": int(i), "colour": [int(v) for v in cols[int(i)]]} for i in self.label_ids],
    }

  def overlay(self) -> np.ndarray:
    """uint8 [H, W, 3]: the query tinted by the label colours (official overlay formula:
    background darkened to 40 %, white labels keep the image, colours tint it)."""
    if self.image is None:
      raise ValueError("this Result has no query image (segment() keeps it); cannot overlay")
    return imageio.overlay(self.image, self.label_colours()[self.labels])

  def save(self, directory, name: str | None = None, *, raw: bool = False) -> list[str]:
    """Writes NAME.png (palette PNG: index = label id, colours `label_colours()`),
    NAME_overlay.png (when the query image is known) and, with raw, NAME.raw.npy (float32
    model output) into `directory` (created if missing). Returns the written paths."""
    name = name or self.name
    if not name:
      raise ValueError("Result.save: give a file name (this result has none)")
    directory = os.fspath(directory)
    os.makedirs(directory, exist_ok=True)
    base = os.path.join(directory, name)
    paths = [base + ".png"]
    imageio.save_label_png(paths[0], self.labels, self.label_colours())
    if self.image is not None:
      paths.append(base + "_overlay.png")
      imageio.save_png(paths[-1], self.overlay())
    if raw:
      paths.append(base + ".raw.npy")
      np.save(paths[-1], np.asarray(self.raw, np.float32))
    return paths


EMPTY_PREDICTION = "empty prediction (every pixel is background)"


def warn_empty(names: Sequence[str], total: int, listed_in: str | None = None, show: int = 3):
  """One warning line for many queries with an empty prediction (all background): how many,
  the first `show` names and, with `listed_in`, the file that lists them all. Nothing when
  `names` is empty."""
  if not names:
    return
  first = ", ".join(names[:show]) + (f" and {len(names) - show} more" if len(names) > show else "")
  where = f"; all listed in {listed_in}" if listed_in else ""
  log.warning("%d of %d images: %s (%s)%s", len(names), total, EMPTY_PREDICTION, first, where)


def save_results(results: Iterable[Result], directory, *, raw: bool = False) -> int:
  """Saves every Result (`Result.save`) and the label legend as `labels.json`.

  Returns the number of results written; file names must be distinct.
  """
  directory = os.fspath(directory)
  seen, n, legend = {}, 0, None
  for i, r in enumerate(results):
    name = r.name or f"query_{i}"
    files = {name + ".png", name + "_overlay.png", name + ".raw.npy"}
    if files & seen.keys():  # also x and x_overlay: both write x_overlay.png
      raise InputError(f"{name}: two queries would write the same output name; rename one")
    seen.update(dict.fromkeys(files, True))
    r.save(directory, name, raw=raw)
    legend = legend or r.legend()
    n += 1
  if legend is not None:
    rows = ",\n".join("  " + json.dumps(r) for r in legend["labels"])
    with open(os.path.join(directory, "labels.json"), "w") as f:
      f.write(f'{{"prompt_masks": {json.dumps(legend["prompt_masks"])}, "labels": [\n{rows}\n]}}\n')
  return n


def _name(x, i, what):
  return os.fspath(x) if isinstance(x, (str, os.PathLike)) else f"{what} {i}"


def _read_image(x, name):
  if isinstance(x, (str, os.PathLike)):
    return load_image(x)
  a = np.asarray(x)
  if a.ndim == 2:
    a = np.repeat(a[..., None], 3, -1)
  if a.ndim != 3 or a.shape[-1] != 3 or a.dtype != np.uint8:
    raise InputError(f"{name}: expected a uint8 [H, W, 3] image, got {a.dtype} {a.shape}")
  return a


def _read_mask(x):
  return load_mask(x) if isinstance(x, (str, os.PathLike)) else np.asarray(x)


def _is_one(x) -> bool:
  """A single image/mask: a path or an array (not a list of them)."""
  return isinstance(x, (str, os.PathLike, np.ndarray))


def _as_query_list(queries) -> list:
  """One query (a path, or one [H, W, 3] array) -> [it]; otherwise the queries as a list."""
  if isinstance(queries, (str, os.PathLike)):
    return [queries]
  if isinstance(queries, np.ndarray) and queries.ndim == 3 and queries.shape[-1] == 3:
    return [queries]
  return list(queries)


def _as_prompt_list(prompts) -> list:
  """One (image, mask) pair -> [pair]; otherwise the pairs as a list."""
  if isinstance(prompts, tuple) and len(prompts) == 2 and all(_is_one(x) for x in prompts):
    return [prompts]
  return list(prompts)


def _prompt_file_palette(prompts) -> np.ndarray | None:
  """The palette of the first prompt mask given as a palette-mode file, if any."""
  for pair in prompts:
    if len(pair) == 2 and isinstance(pair[1], (str, os.PathLike)):
      return imageio.mask_palette(pair[1])
  return None


class Segmenter:
  """A loaded model plus the pre/post-processing of SegGPT's in-context inference."""

  def __init__(self, model, *, seg_type: str = "instance", meta: dict | None = None):
    _seg_type_id(seg_type)
    self.model = model
    self.cfg = model.cfg
    self.seg_type = seg_type
    self.meta = meta or {}

  @classmethod
  def from_checkpoint(
    cls,
    directory: str,
    *,
    seg_type: str = "instance",
    dtype: str = "float32",
    ensemble: str | None = None,
    verify: bool = True,
  ) -> "Segmenter":
    """Loads a params directory (`incontext convert` output) or a training / tuning workdir's
    weights (`incontext.params_dir`). ensemble: 'official'|'hf'.

    verify: check the weights against their stored sha256 (and that they are finite).
    """
    directory = os.fspath(directory)
    meta = checkpoint.read_meta(directory)
    overrides = {"dtype": dtype}
    if ensemble is not None:
      overrides["ensemble"] = ensemble
    model = checkpoint.load_model(directory, verify=verify, **overrides)
    seg = cls(model, seg_type=seg_type, meta=meta)
    seg.directory = directory
    return seg

  def load_learned_prompt(self, path: str):
    """Loads a learned prompt (`incontext.prompts`) checked against this model."""
    path = os.fspath(path)
    imageio.check_regular_file(path, "learned prompt")
    try:
      return prompts.load(path, model_cfg=self.cfg, weights_hash=self.meta.get("weights_hash"))
    except ValueError as e:
      msg = str(e)
      raise InputError(msg if path in msg else f"{path}: {msg}") from None

  def encode_prompts(self, prompts: Sequence, *, ensemble: str = "feature", learned_prompt=None):
    """(image, mask) pairs (paths or arrays) -> normalised prompt arrays and the encoding.

    Returns (imgs [K, h, w, 3], tgts [K, h, w, 3], palette, label_ids, colour_masks).
    """
    if ensemble not in ("feature", "spatial"):
      raise ValueError(f"ensemble must be 'feature' or 'spatial', got {ensemble!r}")
    size = tuple(self.cfg.image_size)
    imgs, masks, names = [], [], []
    for i, pair in enumerate(prompts):
      if len(pair) != 2:
        raise InputError(f"prompt {i}: expected an (image, mask) pair")
      img_x, mask_x = pair
      iname, mname = _name(img_x, i, "prompt image"), _name(mask_x, i, "prompt mask")
      img, m = _read_image(img_x, iname), _read_mask(mask_x)
      check_aspect(img.shape, m.shape, iname, mname)
      imgs.append(img)
      masks.append(m)
      names.append(mname)
    lp = learned_prompt
    if not imgs and lp is None:
      raise InputError("no prompts: give at least one (image, mask) prompt or a learned prompt")
    palette = label_ids = None
    colour = False
    rgbs = []
    if masks:
      enc = (
        {}
        if lp is None
        else dict(palette=np.asarray(lp.palette, np.uint8), label_ids=list(lp.label_ids))
      )
      rgbs, palette, label_ids = encode_masks(masks, names, **enc)
      colour = masks[0].ndim == 3
    else:
      palette, label_ids = np.asarray(lp.palette, np.uint8), list(lp.label_ids)
    pimgs = [resize_image_uint8(a, size) for a in imgs]
    ptgts = [resize_mask_uint8(r, size) for r in rgbs]
    if ensemble == "spatial" and len(pimgs) > 1:
      gi, gt = spatial_ensemble(np.stack(pimgs), np.stack(ptgts))
      pimgs, ptgts = [gi], [gt]
    pimgs = [canvas.normalize(a) for a in pimgs]
    ptgts = [canvas.normalize(a) for a in ptgts]
    if lp is not None:
      li, lt = np.asarray(lp.image, np.float32), np.asarray(lp.target, np.float32)
      if li.shape != size + (3,) or lt.shape != li.shape:
        raise InputError(f"learned prompt is {li.shape}/{lt.shape}; this model needs {size + (3,)}")
      pimgs.append(li)
      ptgts.append(lt)
    return np.stack(pimgs), np.stack(ptgts), palette, label_ids, colour

  def segment_iter(
    self,
    prompts: Sequence,
    queries: Iterable,
    *,
    ensemble: str = "feature",
    learned_prompt=None,
    seg_type: str | None = None,
    batch_size: int | None = None,
    progress: bool = False,
  ) -> Iterator[Result]:
    """Like `segment`, yielding one Result per query as batches finish."""
    if batch_size is not None and batch_size < 1:
      raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    lp = learned_prompt
    if lp is not None and seg_type is not None and seg_type != lp.seg_type:
      raise InputError(f"seg_type {seg_type!r} conflicts with the learned prompt's {lp.seg_type!r}")
    st = seg_type or (lp.seg_type if lp is not None else self.seg_type)
    prompts = _as_prompt_list(prompts)
    with timing.phase("decode"):
      pi, pt, palette, label_ids, colour = self.encode_prompts(
        prompts, ensemble=ensemble, learned_prompt=lp
      )
    colours = imageio.label_palette(label_ids, palette[1:], _prompt_file_palette(prompts))
    if batch_size is None:
      batch_size = accel.default_batch_size(self.cfg, len(pi))
    size = tuple(self.cfg.image_size)
    queries = _as_query_list(queries)
    self.warn_trained_on()
    bar = None
    if progress:
      from tqdm import tqdm

      bar = tqdm(total=len(queries), unit="img", desc="segment")
    try:
      for start in range(0, len(queries), batch_size):
        chunk = queries[start : start + batch_size]
        with timing.phase("decode"):
          raw_imgs = [_read_image(q, _name(q, start + j, "query")) for j, q in enumerate(chunk)]
          # Not padded to batch_size: a lone query costs one query's compute; a stream of
          # queries compiles two shapes at most (full batches and the last remainder).
          qs = np.stack([prepare_image(a, size) for a in raw_imgs])
        with timing.phase("forward"):  # compilation is taken out into "compile"
          raw = predict_canvas_batch(
            self.model,
            pi,
            pt,
            qs,
            seg_type=st,
            feature_ensemble=feature_ensemble_on(len(pi)),
          )
        if bar is not None:
          bar.update(len(chunk))
        for j, img in enumerate(raw_imgs):
          with timing.phase("post-process"):
            res = self._result(raw[j], img.shape[:2], palette, label_ids, colour)
          q = chunk[j]
          res.image, res.colours = img, colours
          res.name = (
            os.path.splitext(os.path.basename(os.fspath(q)))[0]
            if isinstance(q, (str, os.PathLike))
            else f"query_{start + j}"
          )
          if res.empty:
            log.warning("%s: %s", _name(q, start + j, "query"), EMPTY_PREDICTION)
          yield res
    finally:
      if bar is not None:
        bar.close()

  def segment(
    self,
    prompts: Sequence,
    queries: Iterable,
    *,
    ensemble: str = "feature",
    learned_prompt=None,
    seg_type: str | None = None,
    batch_size: int | None = None,
    progress: bool = False,
  ) -> list[Result]:
    """Segments each query from the prompts.

    Args:
      prompts: [(image, mask), ...]: paths or arrays (uint8 [H, W, 3] images; masks as
        `load_mask` returns them). Empty list allowed with a learned prompt.
        A single (image, mask) pair may be given alone.
      queries: image paths or uint8 [H, W, 3] arrays; a single path (or array) is one query.
      ensemble: 'feature' (all K prompts as a batch, query features averaged;
        docs/design.md#ensembles) or
        'spatial' (the K prompts tiled into one n x n grid prompt).
      learned_prompt: an `incontext.prompts` learned prompt (from `load_learned_prompt`),
        used alone or as one more prompt next to `prompts`.
      seg_type: 'instance' or 'semantic' (default: the Segmenter's, or the learned prompt's).
      batch_size: queries per forward (the last batch holds the remainder, not padded:
        one compile per batch shape); None: 4 on CPU, on an accelerator as many as half its
        memory holds (`incontext.accel.default_batch_size`).
    The feature ensemble is on iff more than one prompt slot is used (official rule; with
    the model's ensemble='hf' a single prompt is then HF's feature_ensemble=False).
    Returns:
      one `Result` per query (`Result.save(dir)` writes its label PNG and overlay).
    Logs a warning naming each query whose prediction is empty (all background), and once
    per Segmenter when its checkpoint was trained on procedural shapes only.
    """
    return list(
      self.segment_iter(
        prompts,
        queries,
        ensemble=ensemble,
        learned_prompt=learned_prompt,
        seg_type=seg_type,
        batch_size=batch_size,
        progress=progress,
      )
    )

  def warn_trained_on(self):
    """Once per Segmenter: a model trained on procedural shapes only does not segment photos."""
    if getattr(self, "_warned", False):
      return
    self._warned = True
    msg = checkpoint.procedural_only_warning(self.meta)
    if msg:
      log.warning("%s: %s", getattr(self, "directory", "checkpoint"), msg)

  @staticmethod
  def _result(raw, orig_hw, palette, label_ids, colour) -> Result:
    pred = canvas.denormalize(raw)  # [h, w, 3] in 0..255
    labels = labels_from_prediction(pred, palette, label_ids)
    labels = resize_nearest_torch(labels, orig_hw)
    rgb = resize_nearest_torch(np.round(pred).astype(np.uint8), orig_hw)
    return Result(
      labels=labels,
      rgb=rgb,
      raw=np.asarray(raw, np.float32),
      palette=np.asarray(palette, np.uint8),
      label_ids=list(label_ids),
      colour_masks=colour,
    )
