"""Video object segmentation by in-context propagation (docs/design.md#video;
the method of the SegGPT paper, Table 4b).

For frame t > 0 the prompts are the first frame with its given mask plus a FIFO of the last K
frames with their predicted masks; the query is frame t; the prompts are combined by the
feature ensemble. Objects are kept apart: object id i is painted with a distinct palette
colour (the HF/Painter palette, white for a single object), every prediction is decoded to the
nearest palette colour and mapped back to ids.

Difference from the official `inference_video` (documented choice): the official cache stores
the *binarised* prediction (channel mean > 128 -> white), so several objects collapse into one;
here the FIFO stores the decoded *colour* mask, so each object keeps its own colour (and id)
through the memory. With one object both are the same up to the threshold vs nearest-colour
decoding.

The memory has a fixed shape: 1 + K prompt slots with a validity mask (slots not filled yet do
not enter the feature ensemble), so the forward compiles once per memory size instead of once
for each of the first K frames while the memory fills; the outputs are those of the growing
prompt list (up to float rounding in the ensemble mean).

  seg = video.propagate(model, frames, first_ids, memory=8)     # iterator of [H, W] id maps
"""

from __future__ import annotations

import collections
import dataclasses
import os
from typing import Callable, Iterable, Iterator, Sequence

import jax.numpy as jnp
import numpy as np
from flax import nnx
from PIL import Image

from incontext import canvas, imageio, predict
from incontext.errors import UserError


class VideoError(UserError):
  """Frames or a first-frame mask that cannot be used (missing, empty, mismatched)."""


def davis_palette() -> np.ndarray:
  """[256, 3] uint8: the DAVIS / PASCAL VOC colour map (id 1 = (128, 0, 0), ...)."""
  pal = np.zeros((256, 3), np.uint8)
  for i in range(256):
    c, r, g, b = i, 0, 0, 0
    for j in range(8):
      r |= ((c >> 0) & 1) << (7 - j)
      g |= ((c >> 1) & 1) << (7 - j)
      b |= ((c >> 2) & 1) << (7 - j)
      c >>= 3
    pal[i] = (r, g, b)
  return pal


def object_ids(first_ids: np.ndarray) -> list[int]:
  """Sorted non-zero ids of a first-frame id map."""
  return [int(v) for v in np.unique(first_ids) if v != 0]


def ids_to_colours(id_map: np.ndarray, ids: Sequence[int], palette: np.ndarray) -> np.ndarray:
  """[H, W] ids -> [H, W, 3] uint8 colour mask (ids not in `ids` become background)."""
  lut = np.zeros((max(256, int(np.max(id_map, initial=0)) + 1), 3), np.uint8)
  for k, i in enumerate(ids):
    lut[int(i)] = palette[k + 1]
  return lut[np.asarray(id_map, np.int64)]


def colours_to_ids(
  pred_rgb: np.ndarray, ids: Sequence[int], palette: np.ndarray, threshold: float | None = None
) -> np.ndarray:
  """[H, W, 3] prediction in 0..255 -> [H, W] ids by the nearest palette colour (black = 0),
  or, for one object, by `threshold` (`predict.labels_from_prediction`)."""
  out = predict.labels_from_prediction(pred_rgb, palette, list(ids), threshold)
  return out.astype(np.int32)


PredictFn = Callable[..., np.ndarray]


def predict_slots(model, prompt_imgs, prompt_tgts, valid, query, *, seg_type) -> np.ndarray:
  """`predict.predict_canvas` over a fixed number of prompt slots, of which `valid` ([S]
  bools, slot 0 True) are used: equals predict_canvas on the valid prompts (in slot order,
  feature ensemble on when more than one), with one compiled shape for every count.

  prompt_imgs, prompt_tgts: [S, h, w, 3] normalised (invalid slots: any finite values);
  query: [h, w, 3] normalised. Returns [h, w, 3] float32 normalised.
  """
  valid = np.asarray(valid, bool)
  if not valid[0]:
    raise ValueError("predict_slots: slot 0 (the entry whose output is taken) must be valid")
  if model.cfg.ensemble != "official" and valid.sum() == 1:
    # HF's variant still mixes the two streams at the merge with one prompt under the
    # ensemble; the growing list runs one prompt without it: do the same.
    return predict.predict_canvas(
      model, prompt_imgs[:1], prompt_tgts[:1], query, seg_type=seg_type, feature_ensemble=False
    )
  graphdef, state = nnx.split(model)
  out = predict.forward(
    graphdef,
    state,
    jnp.asarray(prompt_imgs, jnp.float32),
    jnp.asarray(prompt_tgts, jnp.float32),
    jnp.asarray(query, jnp.float32)[None],
    jnp.int32(predict.seg_type_id(seg_type)),
    feature_ensemble=True,
    prompt_weights=jnp.asarray(valid, jnp.float32),
  )
  return np.asarray(out, np.float32)[0]


def propagate(
  model,
  frames: Iterable[np.ndarray],
  first_ids: np.ndarray,
  *,
  memory: int = 8,
  seg_type: str = "instance",
  predict_fn: PredictFn | None = None,
  first_image: np.ndarray | None = None,
  threshold: float | None = None,
  fixed_memory: bool = True,
) -> Iterator[np.ndarray]:
  """Segments a video from its first frame's mask.

  Args:
    model: a SegGPT (its `cfg.image_size` is the working resolution).
    frames: uint8 [H, W, 3] frames; the first is the prompt frame (unless `first_image`).
    first_ids: [H, W] int object ids of the first frame (0 background).
    memory: K, the number of previous frames (with predicted masks) kept as extra prompts.
    seg_type: type token for every prompt ('instance' as the official video code).
    predict_fn: (model, prompt_imgs [n,h,w,3], prompt_tgts [n,h,w,3], query [h,w,3], *,
      seg_type, feature_ensemble) -> [h, w, 3] normalised; default
      `predict.predict_canvas`.
    first_image: the prompt image if the first mask does not belong to frames[0] (then every
      frame in `frames` is segmented).
    threshold: one object only: foreground where the output's channel mean / 255 (the
      projection on the object's colour) is >= threshold, for the outputs and the memory
      alike (None: the nearest colour, i.e. 0.5; the official video cache uses > 128 / 255).
    fixed_memory: run the default predictor on 1 + K prompt slots with a validity mask (one
      compiled shape); False: on the growing prompt list (one compile per prompt count
      while the memory fills; the same outputs, kept for comparisons). A custom
      `predict_fn` always gets the growing list.
  Yields:
    [H, W] int32 id maps, one per frame (the first frame's is `first_ids` itself unless
    `first_image` is given).
  """
  slots = predict_fn is None and fixed_memory and int(memory) > 0
  predict_fn = predict_fn or predict.predict_canvas
  size = tuple(model.cfg.image_size)
  first_ids = np.asarray(first_ids)
  ids = object_ids(first_ids)
  if not ids:
    raise VideoError("the first-frame mask has no object (all background)")
  pal = predict.model_palette(ids)
  if threshold is not None and len(ids) != 1:
    raise VideoError(
      f"threshold={threshold} needs a single-object first mask; this one has objects {ids}"
    )
  frames = iter(frames)
  if first_image is None:
    first_image = next(frames, None)
    if first_image is None:
      raise VideoError("no frames")
    if first_image.shape[:2] != first_ids.shape:
      raise VideoError(f"first frame is {first_image.shape[:2]}, first mask {first_ids.shape}")
    yield first_ids.astype(np.int32)
  p_img = predict.prepare_image(first_image, size)
  p_tgt = predict.prepare_mask(ids_to_colours(first_ids, ids, pal), size)
  fifo: collections.deque = collections.deque(maxlen=max(int(memory), 0) or None)
  use_fifo = int(memory) > 0
  blank = np.zeros_like(p_img)
  for frame in frames:
    q = predict.prepare_image(frame, size)
    imgs = [p_img] + [m[0] for m in fifo]
    tgts = [p_tgt] + [m[1] for m in fifo]
    if slots:  # 1 + K slots, the unfilled ones masked out
      n = len(imgs)
      pad = [blank] * (1 + int(memory) - n)
      pred = predict_slots(
        model,
        np.stack(imgs + pad),
        np.stack(tgts + pad),
        np.arange(1 + int(memory)) < n,
        q,
        seg_type=seg_type,
      )
    else:
      pred = predict_fn(
        model,
        np.stack(imgs),
        np.stack(tgts),
        q,
        seg_type=seg_type,
        feature_ensemble=predict.feature_ensemble_on(len(imgs)),
      )
    small = colours_to_ids(canvas.denormalize(pred), ids, pal, threshold)  # [h, w] ids
    if use_fifo:
      # Keep the decoded colours (not the official binarisation): objects stay apart.
      fifo.append((q, canvas.normalize(ids_to_colours(small, ids, pal))))
    yield predict.resize_nearest_torch(small, frame.shape[:2]).astype(np.int32)


def copy_first_mask(first_ids: np.ndarray, num_frames: int) -> list[np.ndarray]:
  """The trivial baseline: every frame gets the first frame's mask."""
  return [np.asarray(first_ids, np.int32)] * num_frames


# ---------------------------------------------------------------------------------------------
# Files.


def list_frames(frames_dir: str, exclude=()) -> list[str]:
  """Sorted image files of a directory, by the one image rule of `imageio.is_listed_image`
  (extensions `imageio.IMAGE_EXTS` in any case; hidden names such as macOS `._frame.jpg` forks
  and `.DS_Store`, and anything that is not a regular file, e.g. a FIFO, are not frames); errors
  name the directory. The files in `exclude` (e.g. the first-frame mask saved beside the frames)
  are not frames. Two frames with one name stem (`00000.jpg`, `00000.png`) are refused: their
  masks would share a name.
  """
  if not os.path.isdir(frames_dir):
    raise VideoError(f"frames directory {frames_dir}: no such directory")
  skip = {os.path.realpath(os.fspath(p)) for p in exclude}
  out = sorted(
    os.path.join(frames_dir, f)
    for f in os.listdir(frames_dir)
    if imageio.is_listed_image(os.path.join(frames_dir, f))
    and os.path.realpath(os.path.join(frames_dir, f)) not in skip
  )
  if not out:
    raise VideoError(
      f"frames directory {frames_dir}: no image files ({', '.join(imageio.IMAGE_EXTS)})"
    )
  seen = {}
  for p in out:
    stem = os.path.splitext(os.path.basename(p))[0]
    if stem in seen:
      raise VideoError(
        f"{p}: has the name stem {stem!r} of the frame {seen[stem]}; their masks would both be "
        f"{stem}.png (keep one frame per name)"
      )
    seen[stem] = p
  return out


def read_id_mask(path: str) -> np.ndarray:
  """A first-frame mask file -> [H, W] int ids.

  Palette or grey PNGs give their values as ids (DAVIS: palette index = object id; 0/255
  binary masks keep 255); an RGB colour mask gives ids 1..K for its distinct non-black colours
  in sorted colour order.
  """
  return read_first_mask(path).ids


@dataclasses.dataclass(frozen=True)
class FirstMask:
  """A first-frame mask file as read once: its object ids and what its colours come from.

  ids: [H, W] int32 (`read_id_mask`); rgb: [K, 3] the colours of an RGB colour mask (object
  k + 1 is rgb[k]), else None; file_palette: the palette of a palette-mode file, else None.
  """

  ids: np.ndarray
  rgb: np.ndarray | None
  file_palette: np.ndarray | None

  def colours(self, ids: Sequence[int]) -> np.ndarray:
    """[256, 3] colours for the objects `ids`, as `incontext segment` picks them
    (`predict.label_palette`): the file's own palette when it shows every object (DAVIS
    masks keep their colours), an RGB mask's colours, else the colours the model paints
    (white for one object, e.g. a 0/255 mask's object 255)."""
    if self.rgb is not None and len(self.rgb) == len(ids):
      return predict.label_palette(ids, self.rgb)
    return predict.label_palette(ids, predict.model_palette(ids)[1:], self.file_palette)


def read_first_mask(path: str) -> FirstMask:
  """A first-frame mask file -> `FirstMask` (ids and colours) from one read of the file."""
  m, file_palette = imageio.load_mask(path, palette=True)
  m = np.asarray(m)
  if m.ndim == 2:
    return FirstMask(m.astype(np.int32), None, file_palette)
  cols = np.unique(m.reshape(-1, 3), axis=0)
  cols = cols[cols.any(axis=1)]
  if len(cols) > 254:
    raise VideoError(f"{path}: {len(cols)} distinct colours; expected a mask with a few objects")
  out = np.zeros(m.shape[:2], np.int32)
  for k, c in enumerate(cols):
    out[np.all(m == c, axis=-1)] = k + 1
  return FirstMask(out, cols.astype(np.uint8), file_palette)


def first_mask_colours(path: str, ids: Sequence[int]) -> np.ndarray:
  """`FirstMask.colours` of a first-mask file (reads it; `read_first_mask` reads it once for
  the ids and the colours)."""
  return read_first_mask(path).colours(ids)


def save_id_png(path: str, ids: np.ndarray, palette: np.ndarray | None = None):
  """DAVIS-format result: a palette PNG whose indices are the object ids.

  palette: [256, 3] colours (`first_mask_colours`); default the DAVIS colour map.
  """
  ids = np.asarray(ids)
  if ids.max(initial=0) > 255 or ids.min(initial=0) < 0:
    raise VideoError(f"{path}: object ids must be in 0..255 for a palette PNG")
  imageio.save_label_png(path, ids, davis_palette() if palette is None else palette)


def overlay(frame: np.ndarray, ids: np.ndarray, palette: np.ndarray | None = None) -> np.ndarray:
  """uint8 [H, W, 3] frame tinted by the objects' colours (the official overlay of
  `imageio.overlay`: background darkened, objects in their colour; white keeps the frame).

  palette: [256, 3] colours by id (`first_mask_colours`); default the DAVIS colour map.
  """
  pal = davis_palette() if palette is None else np.asarray(palette, np.uint8)
  return imageio.overlay(frame, pal[np.asarray(ids, np.int64) % 256])


def save_gif(path: str, frames: Sequence[np.ndarray], fps: float = 10.0, max_side: int = 480):
  """Animated GIF of uint8 frames (downscaled to `max_side`)."""
  ims = []
  for f in frames:
    im = Image.fromarray(f)
    s = max_side / max(im.size)
    if s < 1:
      im = im.resize((max(1, round(im.size[0] * s)), max(1, round(im.size[1] * s))), Image.BILINEAR)
    ims.append(im)
  ims[0].save(path, save_all=True, append_images=ims[1:], duration=int(1000 / fps), loop=0)
