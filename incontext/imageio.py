"""Reading images and masks from disk the way users have them, and writing PNGs atomically.

* `load_image(path)` -> uint8 [H, W, 3] RGB: EXIF orientation applied; grayscale, palette,
  RGBA (alpha dropped, as the official `.convert("RGB")`), CMYK and 16-bit inputs converted.
* `load_mask(path)` -> the mask's *values* kept: a 2-D label map ([H, W], uint8, or int32 for
  16-bit PNGs so that labels > 255 are seen and rejected later) or an RGB colour mask
  ([H, W, 3] uint8). Palette-mode PNGs are read as their indices (VOC's "void" 255 beside
  other labels read as background); a two-valued 16-bit mask (0/65535) is binary 0/255; an
  RGB(A) file whose three channels are identical is read as a 2-D map (e.g. the official demo
  targets). Every command reads masks with it.
* `mask_palette(path)` -> the colours of a palette-mode mask file ([256, 3]), else None
  (`load_mask(path, palette=True)` reads the mask and its palette in one go).
* `save_label_png(path, labels, palette)` -> a palette PNG whose indices are the label ids
  and whose colours are `palette` (what every command, the app and `Result.save` write;
  `predict.label_palette` picks those colours); `overlay` tints an image by a colour mask.
* `list_images(items)` -> image files from files, folders and glob patterns (the one lister:
  hidden names, non-regular files and other extensions are skipped; `is_listed_image`).
* `check_regular_file(path, what)`: only regular files are read (a FIFO would block).

Every failure is an `InputError` (a ValueError) whose message starts with the file name.
"""

import glob
import os

import numpy as np
from PIL import Image, ImageOps

from incontext.errors import UserError


class InputError(UserError):
  """Bad user input (file missing, unreadable, or not what was expected)."""


# Largest mask accepted, in pixels (about 40 megapixels): checked from the file header before
# decoding, so that a photo passed as a mask by mistake fails at once.
MAX_MASK_PIXELS = 40_000_000


def check_regular_file(path, what: str) -> None:
  """InputError unless `path` is a regular file (or a link to one).

  Only regular files are read: opening a FIFO blocks until something writes to it, and a
  device or socket is never an image, mask, video or prompt file.
  """
  path = os.fspath(path)
  a = "an" if what[:1] in "aeiou" else "a"
  if not os.path.exists(path):
    raise InputError(f"{path}: no such {what} file")
  if os.path.isdir(path):
    raise InputError(f"{path}: is a directory, expected {a} {what} file")
  if not os.path.isfile(path):
    raise InputError(
      f"{path}: not a regular file (a FIFO, device or socket), expected {a} {what} file"
    )


def _open(path: str, what: str) -> Image.Image:
  path = os.fspath(path)
  check_regular_file(path, what)
  try:
    im = Image.open(path)  # lazy: reads the header only
    w, h = im.size
    if what == "mask" and w * h > MAX_MASK_PIXELS:
      raise InputError(
        f"{path}: mask of {w}x{h} pixels ({w * h / 1e6:.0f} megapixels) is "
        f"larger than the {MAX_MASK_PIXELS / 1e6:.0f}-megapixel limit; is it a "
        "photo rather than a mask?"
      )
    im.load()  # decode now: truncated/corrupt files fail here, not later
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


VOID = 255  # "void" / "ignore" label of VOC-style palette masks (object borders, unclear areas)


def _without_void(a: np.ndarray) -> np.ndarray:
  """A palette mask's indices with the VOC "void" label 255 made background (0) when the mask
  also has object labels 1..254; a 0/255 palette mask keeps 255 (a binary mask)."""
  if (a == VOID).any() and ((a > 0) & (a < VOID)).any():
    a = np.where(a == VOID, 0, a).astype(a.dtype)
  return a


def _two_valued(a: np.ndarray) -> np.ndarray:
  """A wide-integer mask with one non-zero value above 255 (0/65535 from a 16-bit export) ->
  the binary 0/255 mask it is; any other mask unchanged (0/1 stays 0/1; labels > 255 among
  several values are kept, to be reported as out of range)."""
  nz = np.unique(a[a != 0])
  if nz.size == 1 and nz[0] > 255:
    return np.where(a != 0, 255, 0).astype(np.int32)
  return a


def load_mask(path: str, *, void: bool = True, palette: bool = False):
  """Reads a mask keeping its values: [H, W] label map or [H, W, 3] uint8 RGB colour mask.

  The one mask reader of every command (`segment` prompts, `segment-video`'s first mask,
  `label`'s prompts, the app's uploaded masks). Binary masks keep 0/1 or 0/255; palette PNGs
  give their indices, with the VOC "void" label 255 read as background (0) when the mask also
  has labels 1..254 (`void=False` keeps it: for files whose label 255 is a class); 16-bit and
  32-bit masks give int32 labels (so out-of-range labels can be reported), except that a
  two-valued one whose foreground is above 255 (0/65535) is the binary mask 0/255;
  '1'-mode masks give 0/255. palette=True: (mask, `mask_palette` of the same file) from one
  read of the file.
  """
  im = _open(path, "mask")
  m = _mask_values(im, path, void)
  return (m, _palette_of(im)) if palette else m


def _mask_values(im: Image.Image, path, void: bool) -> np.ndarray:
  if im.mode == "P":
    a = np.asarray(im, np.uint8).copy()
    return _without_void(a) if void else a
  if im.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N"):
    return _two_valued(np.asarray(im).astype(np.int64)).astype(np.int32)
  if im.mode == "F":
    a = np.asarray(im, np.float64)
    if not np.all(np.isfinite(a)) or not np.all(a == np.round(a)):
      raise InputError(f"{path}: float mask with non-integer values; expected labels")
    return _two_valued(a.astype(np.int64)).astype(np.int32)
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


# -- label PNGs -------------------------------------------------------------------------------
def mask_palette(path) -> np.ndarray | None:
  """The palette [256, 3] uint8 of a palette-mode ('P') mask file, None for other modes."""
  return _palette_of(_open(path, "mask"))


def _palette_of(im: Image.Image) -> np.ndarray | None:
  if im.mode != "P" or im.getpalette() is None:
    return None
  pal = np.zeros((256, 3), np.uint8)
  flat = np.asarray(im.getpalette(), np.uint8).reshape(-1, 3)[:256]
  pal[: len(flat)] = flat
  return pal


def save_label_png(path, labels: np.ndarray, palette: np.ndarray) -> None:
  """Writes [H, W] label ids (0..255) as a palette PNG: index = label id, colour = palette.

  Reading the file with `load_mask` (or PIL) gives the ids back; viewing it (or PIL's
  `.convert("RGB")`) shows palette[id]. palette: [N <= 256, 3] uint8.
  """
  labels = np.asarray(labels)
  if labels.ndim != 2:
    raise ValueError(f"{path}: label map must be [H, W], got shape {labels.shape}")
  if labels.size and (labels.min() < 0 or labels.max() > 255):
    raise ValueError(
      f"{path}: label ids must be in 0..255 for a palette PNG, got "
      f"{int(labels.min())}..{int(labels.max())}"
    )
  pal = np.asarray(palette, np.uint8).reshape(-1, 3)
  if len(pal) > 256:
    raise ValueError(f"{path}: palette has {len(pal)} colours; at most 256")
  a = np.ascontiguousarray(labels, np.uint8)
  im = Image.frombytes("P", (a.shape[1], a.shape[0]), a.tobytes())
  im.putpalette(pal.reshape(-1).tolist())
  im.save(os.fspath(path), format="PNG")


def overlay(img: np.ndarray, colored: np.ndarray) -> np.ndarray:
  """Official overlay: img * (0.6 * colour / 255 + 0.4), uint8 [H, W, 3].

  The background (black) is darkened to 40 %, a white label keeps the image as it is and a
  coloured one tints it.
  """
  out = np.asarray(img).astype(np.float32) * (
    0.6 * np.asarray(colored).astype(np.float32) / 255.0 + 0.4
  )
  return np.clip(np.round(out), 0, 255).astype(np.uint8)


# The image files a folder or a glob pattern gives (lower-cased; a file's extension is compared
# case-insensitively, so `.JPG` counts).
IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif")


def is_listed_image(path) -> bool:
  """Whether a folder or glob lists `path` as an image: its name does not start with '.'
  (macOS `._x` forks, `.DS_Store`), its extension is one of IMAGE_EXTS in any case, and it is a
  regular file (or a link to one: a FIFO would block, a device or socket is never an image)."""
  name = os.path.basename(os.fspath(path))
  return not name.startswith(".") and name.lower().endswith(IMAGE_EXTS) and os.path.isfile(path)


def list_images(items, what: str = "query") -> list[str]:
  """The one image lister (`segment --query`, `label --images`): image files from files,
  folders and glob patterns, in the order of `items`.

  Each item is, in this order:
    * a folder: its images (`is_listed_image`), sorted, not recursive;
    * an existing file: kept as given, whatever its name (a FIFO, device or socket named
      directly is refused);
    * a glob pattern (`*`, `?`, `[`; `**` is recursive): its matches that are images
      (`is_listed_image`), sorted.
  `items` may be one path. Raises InputError naming the item that gives nothing (`what` names
  the images in the message: "query" -> "no such query image file or folder").
  """
  if isinstance(items, (str, os.PathLike)):
    items = [items]
  noun = f"{what} images" if what else "images"
  out = []
  for item in items:
    item = os.fspath(item)
    if os.path.isdir(item):
      found = sorted(os.path.join(item, f) for f in os.listdir(item))
      found = [f for f in found if is_listed_image(f)]
      if not found:
        raise InputError(f"{item}: folder has no {noun} ({', '.join(IMAGE_EXTS)})")
      out += found
    elif os.path.exists(item):
      check_regular_file(item, noun[:-1])
      out.append(item)
    elif glob.has_magic(item):
      found = sorted(f for f in glob.glob(item, recursive=True) if is_listed_image(f))
      if not found:
        raise InputError(f"{item}: no {noun} match this pattern ({', '.join(IMAGE_EXTS)})")
      out += found
    else:
      raise InputError(f"{item}: no such {noun[:-1]} file or folder")
  return out


def output_stems(paths: list[str]) -> list[str]:
  """File stems used for the outputs; two images with one stem are an error."""
  seen = {}
  for p in paths:
    stem = os.path.splitext(os.path.basename(p))[0]
    if stem in seen:
      raise InputError(
        f"{p}: has the same file name stem {stem!r} as {seen[stem]}; outputs "
        "are named by stem, rename one of them"
      )
    seen[stem] = p
  return list(seen)
