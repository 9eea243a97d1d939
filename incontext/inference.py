"""In-context segmentation with a SegGPT params directory: one call from Python.

    seg = Segmenter.from_checkpoint("params/", seg_type="instance")
    results = seg.segment(prompts=[("a.jpg", "a.png")], queries=["q1.jpg", "q2.jpg"])
    results[0].labels        # [H, W] label ids at q1's original size
    results[0].save("out/")  # out/q1.png (palette PNG: index = label id) + q1_overlay.png

`Segmenter` reads the prompt and query files (`imageio`, each file once) and hands arrays to the
prediction core `incontext.predict` (mask encoding, resizing, the jitted forward, label
decoding; its docstring describes the pipeline and the mask conventions); `Result` and
`save_results` write what it returns.
"""

import dataclasses
import json
import logging
import os
from typing import Iterable, Iterator, Sequence

import numpy as np

from incontext import canvas, checkpoint, imageio, predict, prompts, timing
from incontext.imageio import InputError, load_image, load_mask  # noqa: F401 (re-exported)

__all__ = [
  "InputError",
  "load_image",
  "load_mask",
  "Result",
  "save_results",
  "warn_empty",
  "Segmenter",
]

log = logging.getLogger(__name__)


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
    (`predict.label_palette`; None: the model's colours `palette`).
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
    return predict.label_palette(self.label_ids, np.asarray(self.palette)[1:])

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
  """A prompt mask (a path or an array) -> (mask, the file's palette or None); a file is
  opened once for both."""
  if isinstance(x, (str, os.PathLike)):
    return load_mask(x, palette=True)
  return np.asarray(x), None


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


class Segmenter:
  """A loaded model plus the pre/post-processing of SegGPT's in-context inference."""

  def __init__(self, model, *, seg_type: str = "instance", meta: dict | None = None):
    predict.seg_type_id(seg_type)
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
    device=None,
  ) -> "Segmenter":
    """Loads a params directory (`incontext convert` output) or a training / tuning workdir's
    weights (`incontext.params_dir`). ensemble: 'official'|'hf'.

    verify: check the weights against their stored sha256 (and that they are finite).
    device: where the weights are placed (`checkpoint.load_model`); None: the default device.
    """
    directory = os.fspath(directory)
    meta = checkpoint.read_meta(directory)
    overrides = {"dtype": dtype}
    if ensemble is not None:
      overrides["ensemble"] = ensemble
    model = checkpoint.load_model(directory, verify=verify, device=device, **overrides)
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
    return self._encode_prompts(prompts, ensemble=ensemble, learned_prompt=learned_prompt)[:5]

  def _encode_prompts(self, prompts: Sequence, *, ensemble: str, learned_prompt):
    """`encode_prompts`, and the palette of the first prompt mask given as a palette-mode
    file (None if none): each file is read once, here."""
    if ensemble not in ("feature", "spatial"):
      raise ValueError(f"ensemble must be 'feature' or 'spatial', got {ensemble!r}")
    size = tuple(self.cfg.image_size)
    imgs, masks, names, file_palette = [], [], [], None
    for i, pair in enumerate(prompts):
      if len(pair) != 2:
        raise InputError(f"prompt {i}: expected an (image, mask) pair")
      img_x, mask_x = pair
      iname, mname = _name(img_x, i, "prompt image"), _name(mask_x, i, "prompt mask")
      img, (m, pal) = _read_image(img_x, iname), _read_mask(mask_x)
      if file_palette is None and isinstance(mask_x, (str, os.PathLike)):
        file_palette = pal if pal is not None else False  # the first file mask decides
      predict.check_aspect(img.shape, m.shape, iname, mname)
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
      rgbs, palette, label_ids = predict.encode_masks(masks, names, **enc)
      colour = masks[0].ndim == 3
    else:
      palette, label_ids = np.asarray(lp.palette, np.uint8), list(lp.label_ids)
    pimgs = [predict.resize_image_uint8(a, size) for a in imgs]
    ptgts = [predict.resize_mask_uint8(r, size) for r in rgbs]
    if ensemble == "spatial" and len(pimgs) > 1:
      gi, gt = predict.spatial_ensemble(np.stack(pimgs), np.stack(ptgts))
      pimgs, ptgts = [gi], [gt]
    pimgs = [canvas.normalize(a) for a in pimgs]
    ptgts = [canvas.normalize(a) for a in ptgts]
    if lp is not None:
      li, lt = np.asarray(lp.image, np.float32), np.asarray(lp.target, np.float32)
      if li.shape != size + (3,) or lt.shape != li.shape:
        raise InputError(f"learned prompt is {li.shape}/{lt.shape}; this model needs {size + (3,)}")
      pimgs.append(li)
      ptgts.append(lt)
    file_palette = file_palette if file_palette is not False else None
    return np.stack(pimgs), np.stack(ptgts), palette, label_ids, colour, file_palette

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
      pi, pt, palette, label_ids, colour, file_palette = self._encode_prompts(
        prompts, ensemble=ensemble, learned_prompt=lp
      )
    colours = predict.label_palette(label_ids, palette[1:], file_palette)
    if batch_size is None:
      batch_size = predict.batch_size(self.cfg, len(pi))
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
          qs = np.stack([predict.prepare_image(a, size) for a in raw_imgs])
        with timing.phase("forward"):  # compilation is taken out into "compile"
          raw = predict.predict_canvas_batch(
            self.model,
            pi,
            pt,
            qs,
            seg_type=st,
            feature_ensemble=predict.feature_ensemble_on(len(pi)),
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
        memory holds (`incontext.predict.batch_size`).
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
    labels = predict.decode_labels(raw, orig_hw, palette, label_ids)
    pred = canvas.denormalize(raw)  # [h, w, 3] in 0..255
    rgb = predict.resize_nearest_torch(np.round(pred).astype(np.uint8), orig_hw)
    return Result(
      labels=labels,
      rgb=rgb,
      raw=np.asarray(raw, np.float32),
      palette=np.asarray(palette, np.uint8),
      label_ids=list(label_ids),
      colour_masks=colour,
    )
