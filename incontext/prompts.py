"""Learned-prompt files: a tuned prompt (image + colour target) that plugs into any query.

A learned prompt is one prompt slot of the canvas (the top half): an image and a colour target,
both ImageNet-normalised [h, w, 3] float32 with (h, w) = the model's `image_size`. It is only
meaningful for the model it was tuned with, so the file records that model.

File format (`FILE.npz`, written atomically; no pickles):
  image      float32 [h, w, 3]   normalised prompt image
  target     float32 [h, w, 3]   normalised prompt colour target
  palette    uint8   [K+1, 3]    colour of each label (row 0 = background)
  metadata   uint8   [n]         UTF-8 JSON:
      kind "incontext-learned-prompt", format_version 1,
      model: {variant config fields (architecture only)}, weights_hash (sha256 of the params),
      image_size [h, w], canvas [2h, w], patch, seg_type 'instance'|'semantic',
      label_ids [K] (dataset label id of palette row k+1), label_names [K],
      made_by {how it was made: tuning workdir, step, init, data, loss, ...}, created (UTC ISO),
      arrays_sha256 (sha256 of image, target and palette: an edited array is refused on read)
Previews are written next to it: `FILE_image.png` and `FILE_target.png` (de-normalised RGB).

Use:
  lp = prompts.load("horse.npz", model_cfg=model.cfg, weights_hash=checkpoint.params_hash(model))
  lp.image, lp.target                  # [h, w, 3] normalised, ready for the top half of a canvas
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import io
import json
import os
import zipfile
from typing import Any

import numpy as np
from PIL import Image

from incontext import canvas, outputs
from incontext.errors import UserError

KIND = "incontext-learned-prompt"
FORMAT_VERSION = 1
SEG_TYPE_NAMES = ("semantic", "instance")
# Runtime-only model fields: a prompt tuned with one setting works with another.
_RUNTIME_FIELDS = ("dtype", "ensemble", "remat", "drop_path")


class PromptError(UserError):
  """A learned-prompt file that is corrupt or made for another model."""


@dataclasses.dataclass
class LearnedPrompt:
  """A learned prompt slot.

  image:  [h, w, 3] float32 normalised prompt image.
  target: [h, w, 3] float32 normalised prompt colour target.
  seg_type: 'instance' or 'semantic' (the type token it was tuned with).
  palette: [K+1, 3] uint8, row 0 background, row k the colour of label_ids[k-1].
  label_ids / label_names: the K labels the palette colours stand for.
  meta: the file's full metadata (filled by `load`; `save` adds it).
  """

  image: np.ndarray
  target: np.ndarray
  seg_type: str = "semantic"
  palette: np.ndarray = dataclasses.field(default_factory=canvas.BINARY_PALETTE.copy)
  label_ids: list[int] = dataclasses.field(default_factory=lambda: [1])
  label_names: list[str] = dataclasses.field(default_factory=lambda: ["foreground"])
  meta: dict = dataclasses.field(default_factory=dict)


def model_arch(model_cfg) -> dict[str, Any]:
  """The architecture fields of a SegGPTConfig (what a prompt depends on), JSON-friendly."""
  d = dataclasses.asdict(model_cfg)
  return {
    k: (list(v) if isinstance(v, tuple) else v) for k, v in d.items() if k not in _RUNTIME_FIELDS
  }


def _check_prompt(lp: LearnedPrompt, model_cfg, where: str):
  h, w = model_cfg.image_size
  for name in ("image", "target"):
    a = np.asarray(getattr(lp, name))
    if a.shape != (h, w, 3):
      raise PromptError(
        f"{where}: prompt {name} has shape {a.shape}, expected {(h, w, 3)} "
        f"(the model's image_size {tuple(model_cfg.image_size)})"
      )
    if not np.all(np.isfinite(a)):
      raise PromptError(f"{where}: prompt {name} has non-finite values")
  if lp.seg_type not in SEG_TYPE_NAMES:
    raise PromptError(f"{where}: seg_type {lp.seg_type!r}, expected one of {SEG_TYPE_NAMES}")
  pal = np.asarray(lp.palette)
  if pal.ndim != 2 or pal.shape[1] != 3 or pal.shape[0] != len(lp.label_ids) + 1:
    raise PromptError(
      f"{where}: palette shape {pal.shape} does not fit {len(lp.label_ids)} "
      "labels (expected [K+1, 3])"
    )
  if len(lp.label_names) != len(lp.label_ids):
    raise PromptError(
      f"{where}: {len(lp.label_names)} label names for {len(lp.label_ids)} label ids"
    )


def arrays_sha256(image: np.ndarray, target: np.ndarray, palette: np.ndarray) -> str:
  """sha256 over the prompt arrays (name, shape, dtype and bytes of each)."""
  h = hashlib.sha256()
  for name, a in (
    ("image", np.asarray(image, np.float32)),
    ("target", np.asarray(target, np.float32)),
    ("palette", np.asarray(palette, np.uint8)),
  ):
    a = np.ascontiguousarray(a)
    h.update(f"{name}{a.shape}{a.dtype.str}".encode())
    h.update(a.tobytes())
  return h.hexdigest()


def preview_paths(path: str) -> tuple[str, str]:
  """(image PNG, target PNG) preview paths written next to a prompt file."""
  stem = path[:-4] if path.endswith(".npz") else path
  return stem + "_image.png", stem + "_target.png"


def to_png_bytes(normalised: np.ndarray) -> bytes:
  """[h, w, 3] normalised -> PNG bytes of the de-normalised RGB image."""
  rgb = np.round(canvas.denormalize(normalised)).astype(np.uint8)
  buf = io.BytesIO()
  Image.fromarray(rgb).save(buf, format="PNG")
  return buf.getvalue()


def save(
  path: str,
  lp: LearnedPrompt,
  *,
  model_cfg,
  weights_hash: str | None,
  made_by: dict | None = None,
  previews: bool = True,
) -> dict:
  """Writes `lp` as a learned-prompt `.npz` (+ PNG previews) atomically; returns the metadata.

  Args:
    path: output file; must end with `.npz`.
    lp: the prompt (image/target shapes must match model_cfg.image_size).
    model_cfg: the SegGPTConfig it was tuned with.
    weights_hash: `checkpoint.params_hash` of the frozen weights (None if unknown).
    made_by: how it was made (JSON-serialisable), e.g. {'tune_workdir': ..., 'step': ...}.
  """
  if not str(path).endswith(".npz"):
    raise PromptError(f"{path}: a learned-prompt file must end with .npz")
  _check_prompt(lp, model_cfg, str(path))
  h, w = model_cfg.image_size
  meta = {
    "kind": KIND,
    "format_version": FORMAT_VERSION,
    "model": model_arch(model_cfg),
    "weights_hash": weights_hash,
    "image_size": [h, w],
    "canvas": [2 * h, w],
    "patch": model_cfg.patch,
    "seg_type": lp.seg_type,
    "palette": np.asarray(lp.palette).tolist(),
    "label_ids": [int(i) for i in lp.label_ids],
    "label_names": [str(n) for n in lp.label_names],
    "made_by": made_by or {},
    "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    "arrays_sha256": arrays_sha256(lp.image, lp.target, lp.palette),
  }
  buf = io.BytesIO()
  np.savez(
    buf,
    image=np.asarray(lp.image, np.float32),
    target=np.asarray(lp.target, np.float32),
    palette=np.asarray(lp.palette, np.uint8),
    metadata=np.frombuffer(json.dumps(meta).encode("utf-8"), np.uint8),
  )
  if previews:
    for p, a in zip(preview_paths(path), (lp.image, lp.target)):
      outputs.write_bytes(p, to_png_bytes(a))  # temporary name, then a rename
  outputs.write_bytes(path, buf.getvalue())
  lp.meta = meta
  return meta


def read(path: str) -> LearnedPrompt:
  """Reads a learned-prompt file without checking it against a model (metadata in `.meta`)."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{path}: no such learned-prompt file")
  try:
    with np.load(path, allow_pickle=False) as z:
      missing = {"image", "target", "palette", "metadata"} - set(z.files)
      if missing:
        raise PromptError(f"{path}: not a learned-prompt file (missing {sorted(missing)})")
      image = np.array(z["image"], np.float32)
      target = np.array(z["target"], np.float32)
      palette = np.array(z["palette"], np.uint8)
      meta = json.loads(z["metadata"].tobytes().decode("utf-8"))
  except PromptError:
    raise
  except (OSError, ValueError, zipfile.BadZipFile, KeyError, UnicodeDecodeError, EOFError) as e:
    raise PromptError(
      f"{path}: corrupt or unreadable learned-prompt file ({type(e).__name__}: {e})"
    ) from None
  if not isinstance(meta, dict) or meta.get("kind") != KIND:
    kind = meta.get("kind") if isinstance(meta, dict) else None
    raise PromptError(f"{path}: not a learned-prompt file (kind {kind!r}, expected {KIND!r})")
  if meta.get("format_version") != FORMAT_VERSION:
    raise PromptError(
      f"{path}: format version {meta.get('format_version')!r}, this code reads {FORMAT_VERSION}"
    )
  want = meta.get("arrays_sha256")  # absent in files written before checksums
  if want is not None and arrays_sha256(image, target, palette) != want:
    raise PromptError(
      f"{path}: the prompt arrays do not match their recorded sha256 "
      "(the file is corrupt or was edited)"
    )
  try:
    return LearnedPrompt(
      image=image,
      target=target,
      seg_type=meta["seg_type"],
      palette=palette,
      label_ids=[int(i) for i in meta["label_ids"]],
      label_names=[str(n) for n in meta["label_names"]],
      meta=meta,
    )
  except (KeyError, TypeError, ValueError) as e:
    raise PromptError(
      f"{path}: corrupt learned-prompt metadata ({type(e).__name__}: {e})"
    ) from None


def load(path: str, *, model_cfg, weights_hash: str | None = None) -> LearnedPrompt:
  """Reads a learned prompt and checks that it was made for this model.

  Raises PromptError (a ValueError) naming the file when it is corrupt, or was made for another
  model variant, canvas size or (when `weights_hash` is given) other weights. A file saved
  without a weights hash (weights_hash=None at save time) passes the weights check.
  """
  lp = read(path)
  meta = lp.meta
  want = model_arch(model_cfg)
  h, w = model_cfg.image_size
  if list(meta.get("image_size", [])) != [h, w]:
    raise PromptError(
      f"{path}: prompt made for canvas {tuple(meta.get('canvas', ()))} "
      f"(image_size {tuple(meta.get('image_size', ()))}), "
      "but the model's canvas is "
      f"{(2 * h, w)} (image_size {(h, w)})"
    )
  got = meta.get("model", {})
  if got != want:
    diff = {
      k: (got.get(k), want.get(k))
      for k in sorted(set(got) | set(want))
      if got.get(k) != want.get(k)
    }
    raise PromptError(
      f"{path}: prompt made for another model variant (field: (prompt file, model)) {diff}"
    )
  if weights_hash is not None and meta.get("weights_hash") not in (None, weights_hash):
    raise PromptError(
      f"{path}: prompt tuned with weights {str(meta.get('weights_hash'))[:12]}..., "
      f"but the model's weights are {weights_hash[:12]}..."
    )
  _check_prompt(lp, model_cfg, path)
  return lp
