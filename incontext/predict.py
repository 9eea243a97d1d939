"""The prediction core: SegGPT's in-context prediction on arrays, below everything that predicts.

`inference.Segmenter` (files, `Result`), `video.propagate`, `labelling.Labeller`, the app, the
evaluators, the prompt tuner and the experiment scripts all predict through this module. It
reads and writes no files and imports only `accel`, `canvas`, `imageio` (for `InputError`, the
error of a bad mask) and `mesh` from the package.

  pi, pt = np.stack([prepare_image(a)]), np.stack([prepare_mask(rgb)])   # [K, h, w, 3]
  raw = predict_canvas_batch(model, pi, pt, queries, seg_type="instance",
                             feature_ensemble=feature_ensemble_on(len(pi)))
  labels = decode_labels(raw[0], image.shape[:2], palette, label_ids)  # [H, W] label ids

The pipeline (as the official `inference_image` and the HF processor; docs/design.md#inference):
  1. images: PIL bicubic on uint8 to the model's `cfg.image_size` (448x448 for L/16), /255,
     ImageNet-normalised (`prepare_image`); prompt masks are first encoded as RGB colour masks
     (`encode_masks`), then PIL NEAREST-resized and normalised the same way (`prepare_mask`);
  2. canvas: prompt over query (image), prompt mask over prompt mask (target); the bottom half
     is the mask token; K prompts run as one batch with the feature ensemble (on iff K > 1,
     `feature_ensemble_on`), the output is batch entry 0's query half ("raw", [h, w, 3]
     normalised); `forward` is the one jitted forward, `Predictor` holds a model and fixed
     prompts placed on a device mesh;
  3. labels (`decode_labels`): de-normalise to [0, 255], squared-L2 argmin over the palette
     including black background (HF `post_process_semantic_segmentation`), then legacy torch
     nearest (src = floor(dst * in / out)) back to the query's original size. The argmin is
     taken before the upsampling; nearest sampling commutes with a per-pixel map, so this is
     exactly HF's upsample-then-argmin.

Mask conventions (`encode_masks`): binary masks (values in {0,1} or {0,255}) become white on
black and come back with the same foreground value; label maps with several classes get
distinct colours of `model_palette` (K = number of distinct non-zero labels over all prompts,
in increasing label order) and come back as the same label ids; RGB colour masks are used as
they are and come back as colour images. A grey mask with 0/255 and a thin band of
anti-aliased edge values (the official demo targets) is used as-is, like the official code
does, and comes back as 0/255.

Resizing lives here rather than in `imageio`: it is part of the model's input convention (the
official bicubic / NEAREST rules at `cfg.image_size`, torch's legacy nearest back to the
query's size), while `imageio` only reads and writes files.
"""

import math
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from PIL import Image

from incontext import accel, canvas
from incontext import mesh as mesh_lib
from incontext.imageio import InputError

__all__ = [
  "MAX_LABEL",
  "seg_type_id",
  "feature_ensemble_on",
  "model_palette",
  "label_palette",
  "encode_masks",
  "check_aspect",
  "resize_image_uint8",
  "resize_mask_uint8",
  "prepare_image",
  "prepare_mask",
  "spatial_ensemble",
  "resize_nearest_torch",
  "labels_from_prediction",
  "decode_labels",
  "forward",
  "jitted",
  "clear_compiled",
  "compiled_count",
  "batch_size",
  "Predictor",
  "predict_canvas_batch",
  "predict_canvas",
]

MAX_LABEL = 255  # label ids are written as 8-bit PNGs
ASPECT_TOL = 0.02  # relative aspect-ratio difference allowed between image and mask
MIN_VISIBLE = 64  # a label colour whose brightest channel is below this looks black


# -- seg types, the ensemble rule, palettes --------------------------------------------------
def seg_type_id(seg_type) -> int:
  """'semantic' / 'instance' (or an id already) -> the type token id of `canvas.SEG_TYPES`."""
  if isinstance(seg_type, str):
    if seg_type not in canvas.SEG_TYPES:
      raise ValueError(f"seg_type must be one of {sorted(canvas.SEG_TYPES)}, got {seg_type!r}")
    return canvas.SEG_TYPES[seg_type]
  return int(seg_type)


def feature_ensemble_on(num_prompts: int) -> bool:
  """The one rule for the feature ensemble, shared by `Segmenter`, `video.propagate`, `label`
  and the evaluators: on iff more than one prompt (the official code's rule; a single prompt
  is plain one-shot for both ensemble variants, whereas HF's variant with the flag set would
  average at the merge layer even for one prompt)."""
  return int(num_prompts) > 1


def model_palette(label_ids: Sequence[int]) -> np.ndarray:
  """[K+1, 3] uint8: the colours the model paints K labels (objects) with, row 0 black:
  white for one label, else the HF/Painter palette (`canvas.build_palette`)."""
  if len(label_ids) == 1:
    return canvas.BINARY_PALETTE.copy()
  return canvas.build_palette(len(label_ids))


def label_palette(label_ids, colours, file_palette: np.ndarray | None = None) -> np.ndarray:
  """The colour of each label id in a label PNG: [256, 3] uint8, index 0 black.

  Args:
    label_ids: the K label ids (1..255).
    colours: [K, 3] the colours the model painted them with (colours[k] for label_ids[k]).
    file_palette: the prompt mask file's own palette (`imageio.load_mask(...,
      palette=True)`); used instead when it gives every label a distinct colour that is not
      near-black, so a DAVIS-style mask keeps its colours while a grey-palette 0/1 mask
      (label 1 drawn (1, 1, 1)) is shown visibly.
  """
  ids = [int(i) for i in label_ids]
  colours = np.asarray(colours, np.uint8).reshape(-1, 3)
  if len(colours) != len(ids):
    raise ValueError(f"label_palette: {len(colours)} colours for {len(ids)} labels")
  if any(not 0 < i <= 255 for i in ids):
    raise ValueError(f"label_palette: label ids must be in 1..255, got {ids}")
  pal = np.zeros((256, 3), np.uint8)
  if file_palette is not None:
    fp = np.asarray(file_palette, np.uint8)
    own = fp[ids] if len(fp) > max(ids) else None
    if (
      own is not None
      and own.max(axis=1).min() >= MIN_VISIBLE
      and len(np.unique(own, axis=0)) == len(ids)
    ):
      colours = own
  pal[ids] = colours
  return pal


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
  pal = model_palette(ids)
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


def decode_labels(raw, out_hw, palette, label_ids, threshold: float | None = None) -> np.ndarray:
  """One normalised model output [h, w, 3] -> [H, W] label ids at `out_hw` (the query's size):
  de-normalised, decoded by `labels_from_prediction`, then legacy torch nearest."""
  labels = labels_from_prediction(canvas.denormalize(raw), palette, label_ids, threshold)
  return resize_nearest_torch(labels, out_hw)


# -- the forward ----------------------------------------------------------------------------
def _forward_impl(
  graphdef,
  state,
  prompt_imgs,
  prompt_tgts,
  queries,
  seg_type,
  *,
  feature_ensemble,
  prompt_weights=None,
):
  """[K,h,w,3] x2, [B,h,w,3] -> [B,h,w,3]: each query against all K prompts (vmap over B).

  prompt_weights: None, or [K] 0/1 validity of the prompt slots (slots weighted 0 do not enter
  the feature ensemble; `video.propagate`'s fixed-size memory). Jitted once per (model
  structure, shapes); weights are an argument, so models of the same structure share the
  compiled code and updated weights are always used.
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
      prompt_weights=prompt_weights,
    )
    return out[0]  # batch entry 0, like the official code

  return jax.vmap(one)(queries)


_forward_keep = jax.jit(_forward_impl, static_argnums=(0,), static_argnames=("feature_ensemble",))
_forward_donate = jax.jit(
  _forward_impl,
  static_argnums=(0,),
  static_argnames=("feature_ensemble",),
  donate_argnames=("queries",),
)


def forward(
  graphdef,
  state,
  prompt_imgs,
  prompt_tgts,
  queries,
  seg_type,
  *,
  feature_ensemble: bool,
  prompt_weights=None,
  donate: bool | None = None,
):
  """The one jitted forward (`_forward_impl`) on arrays already placed: -> [B, h, w, 3] jax
  array (asynchronous). seg_type: an int32 scalar (`seg_type_id`). donate: reuse the queries'
  buffer for the output (default: off CPU, where it saves a copy; the caller must not reuse
  the queries then)."""
  donate = jax.default_backend() != "cpu" if donate is None else donate
  fn = _forward_donate if donate else _forward_keep
  return fn(
    graphdef,
    state,
    prompt_imgs,
    prompt_tgts,
    queries,
    seg_type,
    feature_ensemble=bool(feature_ensemble),
    prompt_weights=prompt_weights,
  )


def jitted(*, donate: bool = False, fresh: bool = False):
  """The jitted forward itself (for `.lower`, ahead-of-time compiles and benchmarks); its
  arguments are `forward`'s without `donate`. fresh: a new jit of the same function, with a
  compile cache of its own (e.g. traced under other settings)."""
  if fresh:
    kw = dict(donate_argnames=("queries",)) if donate else {}
    return jax.jit(_forward_impl, static_argnums=(0,), static_argnames=("feature_ensemble",), **kw)
  return _forward_donate if donate else _forward_keep


def clear_compiled() -> None:
  """Drops the compiled forwards (a benchmark's fresh-process compile)."""
  _forward_keep.clear_cache()
  _forward_donate.clear_cache()


def compiled_count() -> int:
  """How many programs the forward has compiled (both buffer modes) since the last clear."""
  return _forward_keep._cache_size() + _forward_donate._cache_size()


def _check_shapes(model, pi, pt, q):
  h, w = model.cfg.image_size
  if pi.ndim != 4 or pi.shape[1:] != (h, w, 3) or pt.shape != pi.shape:
    raise ValueError(
      f"prompts must be [K, {h}, {w}, 3] (the model's image_size), got images "
      f"{pi.shape} and targets {pt.shape}"
    )
  if q.ndim != 4 or q.shape[1:] != (h, w, 3):
    raise ValueError(f"queries must be [B, {h}, {w}, 3], got {q.shape}")


def batch_size(cfg, num_prompts: int, *, mesh=None, per_device: int | None = None) -> int:
  """Queries per forward: `per_device` per device of the mesh's batch axes (one device
  without a mesh), by default what the device memory holds (`accel.default_batch_size`: 4 on
  CPU, on an accelerator half its memory over one query's activation estimate)."""
  n = 1 if mesh is None else mesh_lib.batch_size_multiple(mesh)
  if per_device is None:
    per_device = accel.default_batch_size(cfg, num_prompts)
  return int(per_device) * n


class Predictor:
  """A model and a fixed set of K prompts, placed once, for many batches of queries.

  mesh: None (the default device), or a device mesh: the weights and prompts are replicated
  and each batch of queries is split over the mesh's batch axes (data parallel), so a batch
  must be a multiple of `mesh.batch_size_multiple(mesh)`.
  feature_ensemble: default `feature_ensemble_on(K)`.
  """

  def __init__(
    self, model, prompt_imgs, prompt_tgts, *, seg_type, feature_ensemble=None, mesh=None
  ):
    self.cfg = model.cfg
    pi, pt = (np.asarray(a, np.float32) for a in (prompt_imgs, prompt_tgts))
    h, w = self.cfg.image_size
    _check_shapes(model, pi, pt, np.zeros((0, h, w, 3), np.float32))
    self.num_prompts = len(pi)
    self.feature_ensemble = (
      feature_ensemble_on(len(pi)) if feature_ensemble is None else bool(feature_ensemble)
    )
    self.mesh = mesh
    self.graphdef, state = nnx.split(model)
    self.seg_type = jnp.int32(seg_type_id(seg_type))
    if mesh is None:
      self.state, self.prompt_imgs, self.prompt_tgts = state, pi, pt
      self._batch = None
    else:
      rep = mesh_lib.replicated(mesh)
      self.state = jax.device_put(state, rep)
      self.prompt_imgs, self.prompt_tgts = jax.device_put(pi, rep), jax.device_put(pt, rep)
      self._batch = mesh_lib.batch_sharding(mesh)

  def batch_size(self, per_device: int | None = None) -> int:
    """Queries per forward for this predictor's mesh (`batch_size`)."""
    return batch_size(self.cfg, self.num_prompts, mesh=self.mesh, per_device=per_device)

  def __call__(self, queries, *, donate: bool | None = None):
    """[B, h, w, 3] normalised queries -> [B, h, w, 3] normalised outputs (a jax array,
    asynchronous: read it with np.asarray)."""
    q = queries if self._batch is None else jax.device_put(queries, self._batch)
    return forward(
      self.graphdef,
      self.state,
      self.prompt_imgs,
      self.prompt_tgts,
      q,
      self.seg_type,
      feature_ensemble=self.feature_ensemble,
      donate=donate,
    )


def predict_canvas_batch(
  model, prompt_imgs, prompt_tgts, queries, *, seg_type, feature_ensemble: bool = True
) -> np.ndarray:
  """B queries, each against the same K prompts: -> [B, h, w, 3] float32 normalised.

  Args: prompt_imgs, prompt_tgts [K, h, w, 3] and queries [B, h, w, 3], all normalised at
  the model's `cfg.image_size`; seg_type 'instance'/'semantic' or its id.
  """
  pi, pt, q = (np.asarray(a, np.float32) for a in (prompt_imgs, prompt_tgts, queries))
  _check_shapes(model, pi, pt, q)
  graphdef, state = nnx.split(model)
  out = forward(
    graphdef,
    state,
    pi,
    pt,
    q,
    jnp.int32(seg_type_id(seg_type)),
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
