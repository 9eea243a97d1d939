"""Reading images and masks from disk the way users have them, and writing PNGs atomically.

* `load_image(path)` -> uint8 [H, W, 3] RGB: EXIF orientation applied; grayscale, palette,
  RGBA (alpha dropped, as the official `.convert("RGB")`), CMYK and 16-bit inputs converted.
* `load_mask(path)` -> the mask's *values* kept: a 2-D label map ([H, W], uint8, or int32 for
  16-bit PNGs so that labels > 255 are seen and rejected later) or an RGB colour mask
  ([H, W, 3] uint8). Palette-mode PNGs are read as their indices; an RGB(A) file whose three
  channels are identical is read as a 2-D map (e.g. the official demo targets).

Every failure is an `InputError` (a ValueError) whose message starts with the file name.
"""
import os

import numpy as np
from PIL import Image, ImageOps


class InputError(ValueError):
  """Bad user input (file missing, unreadable, or not what was expected)."""


# Largest mask accepted, in pixels (about 40 megapixels): checked from the file header before
# decoding, so that a photo passed as a mask by mistake fails at once.
MAX_MASK_PIXELS = 40_000_000


def _open(path: str, what: str) -> Image.Image:
  path = os.fspath(path)
  if not os.path.exists(path):
    raise InputError(f"{path}: no such {what} file")
  if os.path.isdir(path):
    raise InputError(f"{path}: is a directory, expected an {what} file")
  try:
    im = Image.open(path)      # lazy: reads the header only
    w, h = im.size
    if what == "mask" and w * h > MAX_MASK_PIXELS:
      raise InputError(f"{path}: mask of {w}x{h} pixels ({w * h / 1e6:.0f} megapixels) is "
                       f"larger than the {MAX_MASK_PIXELS / 1e6:.0f}-megapixel limit; is it a "
                       "photo rather than a mask?")
    im.load()   # decode now: truncated/corrupt files fail here, not later
    return ImageOps.exif_transpose(im)
  except InputError:
    raise
  except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
    raise InputError(f"{path}: cannot read {what} ({type(e).__name__}: {e})") from None


def _sixteen_to_eight(a: np.ndarray) -> np.ndarray:
  """16-bit (or 32-bit integer) intensities -> uint8 (x / 257, rounded, clipped)."""
  a = a.astype(np.float64)
  if a.max(initial=0) > 255:
    a = a / 257.0
  return np.clip(np.round(a), 0, 255).astype(np.uint8)


def image_to_rgb(im: Image.Image) -> np.ndarray:
  """A PIL image of any mode -> uint8 [H, W, 3]."""
  if im.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N"):
    g = _sixteen_to_eight(np.asarray(im))
    return np.repeat(g[..., None], 3, axis=-1)
  if im.mode == "F":
    g = np.clip(np.round(np.asarray(im, np.float64)), 0, 255).astype(np.uint8)
    return np.repeat(g[..., None], 3, axis=-1)
  if im.mode == "P" and "transparency" in im.info:
    im = im.convert("RGBA")
  return np.asarray(im.convert("RGB"), np.uint8).copy()


def load_image(path: str) -> np.ndarray:
  """Reads a photo as uint8 [H, W, 3] RGB (EXIF orientation applied)."""
  return image_to_rgb(_open(path, "image"))


def load_mask(path: str) -> np.ndarray:
  """Reads a mask keeping its values: [H, W] label map or [H, W, 3] uint8 RGB colour mask.

  Binary masks keep 0/1 or 0/255; palette PNGs give their indices; 16-bit PNGs give int32
  labels (so out-of-range labels can be reported); '1'-mode masks give 0/255.
  """
  im = _open(path, "mask")
  if im.mode == "P":
    return np.asarray(im, np.uint8).copy()
  if im.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N"):
    return np.asarray(im).astype(np.int32)
  if im.mode == "F":
    a = np.asarray(im, np.float64)
    if not np.all(a == np.round(a)):
      raise InputError(f"{path}: float mask with non-integer values; expected labels")
    return a.astype(np.int32)
  if im.mode in ("1", "L"):
    return np.asarray(im.convert("L"), np.uint8).copy()
  if im.mode == "LA":
    return np.asarray(im.getchannel("L"), np.uint8).copy()
  rgb = np.asarray(im.convert("RGB"), np.uint8)
  if np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2]):
    return rgb[..., 0].copy()
  return rgb.copy()


def save_png(path: str, arr: np.ndarray) -> None:
  """Writes uint8 [H, W] (L) or [H, W, 3] (RGB) as PNG."""
  arr = np.asarray(arr)
  if arr.dtype != np.uint8:
    raise ValueError(f"{path}: save_png needs uint8, got {arr.dtype}")
  Image.fromarray(arr).save(path, format="PNG")
