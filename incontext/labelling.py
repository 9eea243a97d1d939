"""Labelling a folder of images from a few (image, mask) examples: PNG, COCO and YOLO outputs.

  lab = Labeller(segmenter, prompts=[("a.jpg", "a.png")], seg_type="instance")
  summary = lab.run(imageio.list_images("photos/"), "out/")  # writes out/masks/*.png, ...
  write_coco("out/", ...)  # rebuilt from the masks

Output folder OUT:
  masks/STEM.png      palette label PNG (index = category id 1..K, 0 background; DAVIS colours)
  labels/STEM.txt     YOLO segmentation: `class x1 y1 x2 y2 ...` per object, class = id - 1,
                      the object's outer boundary (pixel edges) normalised by width/height
  annotations.json    COCO: images, categories (named from the prompts), annotations with an
                      RLE mask (pycocotools), bbox [x, y, w, h] and area; seg type 'instance'
                      gives one annotation per 8-connected object, 'semantic' one per category
  errors.txt          images that could not be read (skipped; a rerun retries them)
  empty.txt           images whose prediction is empty (all background), one name a line
  label.json          the settings the folder was labelled with (a rerun must match them)

OUT follows the output rules of `incontext.outputs` (`LabelFolder`): one run at a time (the
same lock), a manifest `.incontext-outputs.json` (command "label", nested names such as
`masks/a.png`) lists every file `label` wrote there, and while a run is under way each process
appends the name of a file to its journal `.incontext-journal-I` *before* renaming the file into
place (the journals are folded into the manifest at the end). A folder holding anything label
did not record is refused unless overwrite is set, and then those files are never touched: an
output name taken by one is an error, checked before any work. An unreadable manifest or
label.json is an error, not a fresh start.

Resumable: an image is done when its mask exists *and* is recorded; every file is written to a
temporary name in its folder and renamed into place (`outputs.write_atomic`), so a killed run
leaves no partial file under a final name (the next run removes its own stale temporaries,
those `outputs.temp_target` maps to one of its output names, and no other file) and a rerun
only labels what is missing. The COCO file and the YOLO labels are derived from the masks, so
they are rebuilt at the end.

Scale: the queries of a batch are sharded over the local devices (data parallel, the model
replicated); with several processes (`jax.distributed`) each labels every process_count-th
image of the sorted list and process 0 merges the COCO file after a barrier.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import os
import re
from typing import Sequence

import jax
import numpy as np
from scipy import ndimage
from tqdm import tqdm

from incontext import imageio, inference, outputs, predict, video
from incontext import mesh as mesh_lib
from incontext.imageio import InputError


# -- inputs ---------------------------------------------------------------------------------
output_stems = imageio.output_stems


def shard(items: Sequence, index: int, count: int) -> list:
  """Every count-th item starting at index (process `index` of `count`)."""
  return list(items[index::count])


def category_names(
  prompt_images: Sequence[str],
  label_ids: Sequence[int],
  palette,
  colour_masks: bool,
  names: Sequence[str] | None = None,
) -> list[str]:
  """Names of categories 1..K: given `names`, else from the first prompt image's file name
  (trailing digits dropped: 'horse_003.jpg' -> 'horse'), with the label id or colour appended
  when there are several."""
  k = len(label_ids)
  if names:
    if len(names) != k:
      raise InputError(
        f"{len(names)} category names {list(names)} for {k} categories in the prompt masks"
      )
    return [str(n) for n in names]
  base = "object"
  if prompt_images:
    stem = os.path.splitext(os.path.basename(str(prompt_images[0])))[0]
    base = re.sub(r"[\W_]*\d+$", "", stem) or stem
  if k == 1:
    return [base]
  if colour_masks:
    return [f"{base}_#{''.join(f'{int(v):02x}' for v in palette[i + 1])}" for i in range(k)]
  return [f"{base}_{int(i)}" for i in label_ids]


# -- atomic files ---------------------------------------------------------------------------
# Every file goes through `outputs.write_atomic` (a temporary name in its folder, then a rename);
# `record` (`LabelFolder.record`) notes the name in the journal just before the rename.
def write_text_atomic(path: str, text: str, record=None) -> None:
  outputs.write_text(path, text, before_rename=record)


def save_mask(path: str, ids: np.ndarray, record=None) -> None:
  """Palette label PNG (DAVIS colours), written atomically."""

  outputs.write_atomic(path, lambda tmp: video.save_id_png(tmp, ids), before_rename=record)


# -- masks -> annotations -------------------------------------------------------------------
def components(binary: np.ndarray) -> list[np.ndarray]:
  """8-connected components of a [H, W] bool mask, in raster order of their first pixel."""

  lab, n = ndimage.label(binary, structure=np.ones((3, 3), bool))
  return [lab == i for i in range(1, n + 1)]


def mask_annotations(mask: np.ndarray, *, instance: bool) -> list[dict]:
  """[H, W] category ids -> COCO annotation dicts (no ids): RLE segmentation, bbox, area."""
  from pycocotools import mask as mask_util  # optional: the `label` extra

  out = []
  for c in [int(v) for v in np.unique(mask) if v != 0]:
    parts = components(mask == c) if instance else [mask == c]
    for m in parts:
      rle = mask_util.encode(np.asfortranarray(m.astype(np.uint8)))
      out.append(
        {
          "category_id": c,
          "segmentation": {
            "size": [int(s) for s in rle["size"]],
            "counts": rle["counts"].decode("ascii"),
          },
          "area": int(mask_util.area(rle)),
          "bbox": [float(v) for v in mask_util.toBbox(rle)],
          "iscrowd": 0,
        }
      )
  return out


_STEP = {(0, 1): 0, (1, 0): 1, (0, -1): 2, (-1, 0): 3}  # (dr, dc) -> direction index


def outer_boundary(binary: np.ndarray) -> np.ndarray:
  """The outer boundary of an 8-connected [H, W] bool region along pixel edges.

  Returns [n, 2] float (x, y) corner coordinates (0..W, 0..H) of the polygon, clockwise on
  screen, collinear points dropped; its area is the region's pixel count minus any holes
  (holes are not part of a YOLO polygon). Diagonal pinch points are passed through so the
  polygon covers the whole 8-connected region.
  """
  m = np.pad(np.asarray(binary, bool), 1)
  h, w = m.shape
  inside = m[1:-1, 1:-1]
  r, c = np.nonzero(inside)
  r, c = r + 1, c + 1
  edges = {}  # start corner -> list of (end corner)
  # Pixel (i, j) (padded) has corners (i-1, j-1)..(i, j) in unpadded corner coordinates.
  for dr, dc, (a, b) in (
    (-1, 0, ((0, 0), (0, 1))),  # top edge, moving right
    (0, 1, ((0, 1), (1, 1))),  # right edge, moving down
    (1, 0, ((1, 1), (1, 0))),  # bottom edge, moving left
    (0, -1, ((1, 0), (0, 0))),
  ):  # left edge, moving up
    sel = ~m[r + dr, c + dc]
    for i, j in zip(r[sel] - 1, c[sel] - 1):
      edges.setdefault((i + a[0], j + a[1]), []).append((i + b[0], j + b[1]))
  if not edges:
    return np.zeros((0, 2), np.float32)
  loops = []
  while edges:
    start = min(edges)
    loop, cur, d_in = [start], start, None
    while True:
      outs = edges[cur]
      if len(outs) > 1 and d_in is not None:
        # Pinch: prefer the left turn (joins diagonal neighbours into one outline).
        left = (d_in - 1) % 4
        k = next(
          (k for k, e in enumerate(outs) if _STEP[(e[0] - cur[0], e[1] - cur[1])] == left), 0
        )
      else:
        k = 0
      nxt = outs.pop(k)
      if not outs:
        del edges[cur]
      d_in = _STEP[(nxt[0] - cur[0], nxt[1] - cur[1])]
      cur = nxt
      if cur == start:
        break
      loop.append(cur)
    loops.append(np.array(loop, np.float64))

  def area(p):
    y, x = p[:, 0], p[:, 1]
    return 0.5 * float(np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y))

  best = max(loops, key=area)
  # Drop collinear vertices.
  prev, nxt = np.roll(best, 1, 0), np.roll(best, -1, 0)
  cross = (best - prev)[:, 0] * (nxt - best)[:, 1] - (best - prev)[:, 1] * (nxt - best)[:, 0]
  best = best[cross != 0]
  return best[:, ::-1].astype(np.float32)  # (x, y)


def yolo_lines(mask: np.ndarray) -> list[str]:
  """[H, W] category ids -> YOLO segmentation lines, one per 8-connected object."""
  h, w = mask.shape
  out = []
  for c in [int(v) for v in np.unique(mask) if v != 0]:
    for m in components(mask == c):
      poly = outer_boundary(m)
      if len(poly) < 3:
        continue
      xy = poly / np.array([w, h], np.float32)
      out.append(f"{c - 1} " + " ".join(f"{v:.6f}" for v in xy.reshape(-1)))
  return out


def build_coco(
  items: Sequence[tuple[str, str]],
  masks_dir: str,
  categories: Sequence[str],
  *,
  instance: bool,
  info: dict | None = None,
) -> dict:
  """COCO dict from the masks. items: (file_name, stem) for every image in the sorted list
  (image id = position + 1); images without a mask (failed) are left out."""
  images, anns = [], []
  for i, (file_name, stem) in enumerate(items):
    path = os.path.join(masks_dir, stem + ".png")
    if not os.path.exists(path):
      continue
    m = imageio.load_mask(path, void=False)  # label 255 is a category here, not void
    images.append(
      {"id": i + 1, "file_name": file_name, "height": int(m.shape[0]), "width": int(m.shape[1])}
    )
    for a in mask_annotations(m, instance=instance):
      anns.append({"id": len(anns) + 1, "image_id": i + 1, **a})
  return {
    "info": info or {},
    "images": images,
    "annotations": anns,
    "categories": [{"id": k + 1, "name": n, "supercategory": ""} for k, n in enumerate(categories)],
  }


def load_segmenter(directory: str, *, seg_type: str, dtype: str = "float32"):
  """A Segmenter from a params directory (`Segmenter.from_checkpoint`); under
  `jax.distributed` its weights are placed on this process's first local device, so every
  process holds its own replica."""
  device = jax.local_devices()[0] if jax.process_count() > 1 else None
  return inference.Segmenter.from_checkpoint(
    directory, seg_type=seg_type, dtype=dtype, device=device
  )


# -- the labeller ---------------------------------------------------------------------------
@dataclasses.dataclass
class Summary:
  total: int  # images in this process's shard
  skipped: int  # already done before this run
  labelled: int  # done in this run
  failed: list  # [(path, message)]


class Labeller:
  """Labels images with a Segmenter from fixed prompts, batched over the local devices."""

  def __init__(
    self,
    segmenter,
    prompts: Sequence,
    *,
    seg_type: str = "instance",
    ensemble: str = "feature",
    learned_prompt=None,
    per_device_batch: int = 1,
    devices=None,
    names: Sequence[str] | None = None,
  ):
    self.seg = segmenter
    self.seg_type = seg_type
    pi, pt, palette, label_ids, colour = segmenter.encode_prompts(
      prompts, ensemble=ensemble, learned_prompt=learned_prompt
    )
    self.palette, self.label_ids, self.colour = palette, list(label_ids), colour
    self.categories = category_names([p[0] for p in prompts], label_ids, palette, colour, names)
    self.lut = np.zeros(max(256, max(self.label_ids) + 1), np.uint8)
    for k, i in enumerate(self.label_ids):
      self.lut[int(i)] = k + 1
    devices = list(devices if devices is not None else jax.local_devices())
    self.mesh = mesh_lib.make_mesh([("data", -1)], devices=devices)
    self.predictor = predict.Predictor(segmenter.model, pi, pt, seg_type=seg_type, mesh=self.mesh)
    self.batch_size = self.predictor.batch_size(per_device_batch)

  def _forward(self, qs: np.ndarray):
    return self.predictor(qs)

  def _load(self, path):
    try:
      img = imageio.load_image(path)
    except InputError as e:
      return None, str(e)
    return img, predict.prepare_image(img, tuple(self.seg.cfg.image_size))

  def run(
    self,
    paths: Sequence[str],
    stems: Sequence[str],
    out: str,
    *,
    progress: bool = False,
    write_yolo: bool = True,
    folder: "LabelFolder | None" = None,
  ) -> Summary:
    """Labels the images whose mask is missing in out/masks (with a `folder`: missing or not
    recorded by label, and every file written is recorded); returns what happened."""

    masks_dir = os.path.join(out, "masks")
    record = folder.record if folder is not None else None
    todo = [
      (p, s)
      for p, s in zip(paths, stems)
      if not (folder.done(s) if folder is not None else os.path.exists(masks_dir + f"/{s}.png"))
    ]
    summary = Summary(total=len(paths), skipped=len(paths) - len(todo), labelled=0, failed=[])
    self.seg.warn_trained_on()  # the procedural-only model warning, as `segment` gives it
    bar = None
    if progress:
      bar = tqdm(
        total=len(paths), initial=summary.skipped, unit="img", desc="label", dynamic_ncols=True
      )
    chunks = [todo[i : i + self.batch_size] for i in range(0, len(todo), self.batch_size)]
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=4)
    try:
      nxt = [pool.submit(self._load, p) for p, _ in chunks[0]] if chunks else []
      for ci, chunk in enumerate(chunks):
        loaded = [f.result() for f in nxt]
        ok = [(item, img, q) for item, (img, q) in zip(chunk, loaded) if img is not None]
        for (p, _), (img, msg) in zip(chunk, loaded):
          if img is None:
            summary.failed.append((p, msg))
        raw = None
        if ok:
          qs = [q for _, _, q in ok]
          qs += [qs[-1]] * (self.batch_size - len(qs))  # pad: one compiled shape
          raw = self._forward(np.stack(qs))  # async: read the next batch
        nxt = (
          [pool.submit(self._load, p) for p, _ in chunks[ci + 1]] if ci + 1 < len(chunks) else []
        )
        if raw is not None:
          raw = np.asarray(raw, np.float32)
          for j, ((p, stem), img, _) in enumerate(ok):
            labels = predict.decode_labels(raw[j], img.shape[:2], self.palette, self.label_ids)
            ids = self.lut[labels.astype(np.int64)]
            if write_yolo:
              write_yolo_file(out, stem, ids, record)
            save_mask(os.path.join(masks_dir, stem + ".png"), ids, record)  # last: marks it done
            summary.labelled += 1
        if bar is not None:
          bar.update(len(chunk))
    finally:
      pool.shutdown(wait=False, cancel_futures=True)
      if bar is not None:
        bar.close()
    return summary


def write_yolo_file(out: str, stem: str, ids: np.ndarray, record=None) -> None:
  write_text_atomic(
    os.path.join(out, "labels", stem + ".txt"),
    "".join(l + "\n" for l in yolo_lines(ids)),
    record,
  )


def finish_shard(out: str, stems: Sequence[str], *, write_yolo: bool, folder=None) -> None:
  """YOLO files for this shard's masks that lack one (e.g. labelled before --format yolo)."""
  if not write_yolo:
    return
  record = folder.record if folder is not None else None
  for s in stems:
    mp = os.path.join(out, "masks", s + ".png")
    if folder is not None and not folder.done(s):
      continue
    if os.path.exists(mp) and not os.path.exists(os.path.join(out, "labels", s + ".txt")):
      write_yolo_file(out, s, imageio.load_mask(mp, void=False), record)


def write_empty(out: str, items: Sequence[tuple[str, str]], folder=None) -> list[str]:
  """OUT/empty.txt: the images (file, stem pairs) whose mask is all background, one file name
  a line (removed when there is none; with a `folder`, only when label wrote it); returns those
  names. Read from the masks, so a resumed run lists the images of earlier runs too."""
  empty = []
  for f, s in items:
    mp = os.path.join(out, "masks", s + ".png")
    if os.path.exists(mp) and not imageio.load_mask(mp, void=False).any():
      empty.append(f)
  path = os.path.join(out, "empty.txt")
  if empty:
    record = folder.record if folder is not None else None
    write_text_atomic(path, "".join(f + "\n" for f in empty), record)
  elif os.path.exists(path):
    if folder is None or (
      folder.owns("empty.txt") and outputs.entry_kind(out, "empty.txt") == "file"
    ):
      os.remove(path)
  return empty


def write_coco(
  out: str,
  items: Sequence[tuple[str, str]],
  categories: Sequence[str],
  *,
  instance: bool,
  info: dict | None = None,
  folder=None,
) -> dict:
  coco = build_coco(items, os.path.join(out, "masks"), categories, instance=instance, info=info)
  write_text_atomic(
    os.path.join(out, "annotations.json"),
    json.dumps(coco),
    folder.record if folder is not None else None,
  )
  return coco


# -- the output folder ------------------------------------------------------------------------
COMMAND = "label"
FOLDERS = ("masks", "labels")
SETTINGS = "label.json"
JOURNAL_PREFIX = ".incontext-journal-"


def output_names(stems: Sequence[str], *, nproc: int = 1) -> list[str]:
  """Every name (relative to OUT) a run over these stems may write."""
  names = [*FOLDERS, SETTINGS, "annotations.json", "errors.txt", "empty.txt"]
  names += [f"errors.{i}-of-{nproc}.txt" for i in range(nproc)] if nproc > 1 else []
  return names + [f"masks/{s}.png" for s in stems] + [f"labels/{s}.txt" for s in stems]


class LabelFolder:
  """OUT of `label` under the rules of `incontext.outputs` (see the module docstring).

  Process 0 calls `open` (checks and takes the lock, before any work), then `prepare` (the
  settings check, label.json and the folders); every process then calls `start` (reads what is
  recorded, opens its journal) and writes through `record`; process 0 ends with `finish` (the
  manifest, the lock released) or `abort` after a failure.
  """

  def __init__(self, out: str, *, overwrite: bool = False, hint: str = "overwrite", index=0):
    self.out = os.path.abspath(out)
    self.overwrite = overwrite
    self.hint = hint
    self.index = index
    self.records: set[str] = set()
    self._lock: outputs.FolderLock | None = None
    self._made: list[str] = []
    self._journal: int | None = None
    self._names: set[str] = set()

  # -- what label wrote --------------------------------------------------------------------
  def _journals(self) -> list[str]:
    return sorted(f for f in os.listdir(self.out) if f.startswith(JOURNAL_PREFIX))

  def read_records(self, *, warn: bool = True) -> set[str]:
    """The trusted entries of the manifest (when it is label's) and of the journals; an
    unreadable manifest is an error."""
    out = self.out
    path = os.path.join(out, outputs.MANIFEST)
    entries = []
    if os.path.lexists(path):
      m = outputs.read_manifest(out)
      if m is None:
        raise InputError(
          f"{path}: unreadable (expected the JSON list of the files written here); "
          "restore or remove it, or use a new output folder"
        )
      if m.get("command") == COMMAND:
        entries += m["files"]
    for j in self._journals():
      jp = os.path.join(out, j)
      if outputs.entry_kind(out, j) != "file":
        continue
      with open(jp, "rb") as f:
        entries += [l for l in f.read().decode("utf-8", "replace").splitlines() if l]
    return outputs.trusted_entries(
      out, entries, folders=FOLDERS, nested=True, source=path, warn=warn
    )

  def _ours_tmp(self, name: str) -> bool:
    """A temporary file of one of label's writes (`outputs.temp_target`: NAME one of its
    outputs)."""
    return outputs.temp_target(name) in self._names

  def _unrelated(self) -> list[str]:
    out, rec = self.out, self.records
    found = []
    for n in sorted(os.listdir(out)):
      if (
        n in (outputs.MANIFEST, outputs.LOCK, "lost+found")
        or n.startswith(JOURNAL_PREFIX)
        or outputs.temp_target(n) == outputs.MANIFEST
        or self._ours_tmp(n)
      ):
        continue
      if n not in rec:
        found.append(n)
      elif n in FOLDERS:
        found += [
          f"{n}/{f}"
          for f in sorted(os.listdir(os.path.join(out, n)))
          if f"{n}/{f}" not in rec and not self._ours_tmp(f"{n}/{f}")
        ]
    return found

  # -- process 0 ---------------------------------------------------------------------------
  def open(self, names: Sequence[str]) -> None:
    """Checks OUT and takes the lock (process 0, before any work): refuses a folder holding
    files label did not record (unless overwrite) and any output name taken by one."""
    out = self.out
    if os.path.lexists(out) and not os.path.isdir(out):
      raise outputs.OutputError(f"{out}: exists and is not a folder")
    self._names = set(names)
    self._made, self._lock = outputs.take_folder(out)
    try:
      self.records = self.read_records()
      unrelated = self._unrelated()
      if unrelated and not self.overwrite:
        raise outputs.OutputError(
          f"{out}: holds {len(unrelated)} file(s) that `label` did not write there "
          f"(e.g. {unrelated[0]}); set {self.hint} to label into it anyway (they are never "
          "touched), or use a new output folder"
        )
      for n in names:
        if n not in self.records and os.path.lexists(os.path.join(out, n)):
          raise outputs.OutputError(
            f"{os.path.join(out, n)}: exists and was not written by `label`; not replacing "
            "it (move it away or use a new output folder)"
          )
    except BaseException:
      self.abort()
      raise

  def prepare(self, settings: dict) -> None:
    """The settings check (label.json), then the manifest, the folders and label.json."""
    out = self.out
    path = os.path.join(out, SETTINGS)
    if SETTINGS in self.records:
      try:
        with open(path, "rb") as f:
          old = json.loads(f.read().decode("utf-8"))
        if not isinstance(old, dict):
          raise ValueError("not a JSON object")
      except (OSError, ValueError) as e:
        raise InputError(
          f"{path}: unreadable ({type(e).__name__}: {' '.join(str(e).split())}); it holds the "
          "settings this folder was labelled with: restore it or use a new output folder"
        ) from None
      if old != settings:
        diff = sorted(k for k in set(old) | set(settings) if old.get(k) != settings.get(k))
        raise InputError(
          f"{out}: was labelled with other settings (differ: {', '.join(diff)}); "
          "use a new output folder"
        )
    outputs.write_manifest(
      out, COMMAND, self.records | {*FOLDERS, SETTINGS}, complete=False, stamp=False
    )
    for sub in FOLDERS:
      os.makedirs(os.path.join(out, sub), exist_ok=True)
    for sub in ("", *FOLDERS):  # stale temporaries of label's own writes, nothing else
      for f in os.listdir(os.path.join(out, sub)):
        name = f"{sub}/{f}" if sub else f
        if self._ours_tmp(name) and outputs.entry_kind(out, name) == "file":
          try:
            os.remove(os.path.join(out, name))
          except FileNotFoundError:
            pass
    if SETTINGS not in self.records:
      write_text_atomic(path, json.dumps(settings, indent=2, sort_keys=True) + "\n")
    self.records |= {*FOLDERS, SETTINGS}

  # -- every process -----------------------------------------------------------------------
  def start(self) -> None:
    """Reads what is recorded (after process 0's `prepare`) and opens this process's journal."""
    self.records = self.read_records(warn=False) | self.records
    jp = os.path.join(self.out, f"{JOURNAL_PREFIX}{self.index}")
    self._journal = os.open(jp, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o666)
    size = os.fstat(self._journal).st_size
    if size and os.pread(self._journal, 1, size - 1) != b"\n":  # a killed run's cut line
      self.record_line("")

  def record(self, path: str) -> None:
    """Notes that `path` (in OUT) is label's: appended to the journal before the rename."""
    name = os.path.relpath(path, self.out)
    assert outputs.plain_name(name, nested=True) is None, name
    self.record_line(name)
    self.records.add(name)

  def record_line(self, name: str) -> None:
    try:
      os.write(self._journal, (name + "\n").encode())
    except OSError as e:
      jp = os.path.join(self.out, f"{JOURNAL_PREFIX}{self.index}")
      raise OSError(e.errno, e.strerror, jp) from None

  def done(self, stem: str) -> bool:
    """The image's mask exists and label wrote it."""
    name = f"masks/{stem}.png"
    return name in self.records and outputs.entry_kind(self.out, name) == "file"

  def owns(self, name: str) -> bool:
    return name in self.records

  def close(self) -> None:
    if self._journal is not None:
      os.close(self._journal)
      self._journal = None

  def finish(self) -> None:
    """Process 0, after every process is done: the journals become the manifest (sorted, no
    time stamp: the same files give the same bytes) and the lock is released."""
    self.close()
    records = self.read_records(warn=False) | self.records
    present = {n for n in records if outputs.entry_kind(self.out, n) is not None}
    outputs.write_manifest(self.out, COMMAND, present, complete=True, stamp=False)
    for j in self._journals():
      if outputs.entry_kind(self.out, j) == "file":
        os.remove(os.path.join(self.out, j))
    self.abort()

  def abort(self) -> None:
    """Releases the lock and removes the folders `open` created, while they are empty."""
    self.close()
    if self._lock is not None:
      self._lock.release()
      self._lock = None
    outputs.remove_empty(self._made)
    self._made = []


def write_errors(path: str, failed: Sequence[tuple[str, str]], folder=None) -> None:
  """errors.txt: one `PATH<TAB>message` line per failed image (removed when none failed; with
  a `folder`, only when label wrote it)."""
  record = folder.record if folder is not None else None
  if failed:
    write_text_atomic(path, "".join(f"{p}\t{m}\n" for p, m in sorted(failed)), record)
  elif os.path.exists(path):
    name = os.path.relpath(path, folder.out) if folder is not None else None
    if folder is None or (folder.owns(name) and outputs.entry_kind(folder.out, name) == "file"):
      os.remove(path)


def read_errors(path: str) -> list[tuple[str, str]]:
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [tuple(l.rstrip("\n").split("\t", 1)) for l in f if l.strip()]


__all__ = [
  "output_stems",
  "shard",
  "category_names",
  "mask_annotations",
  "outer_boundary",
  "yolo_lines",
  "build_coco",
  "Labeller",
  "Summary",
  "write_coco",
  "LabelFolder",
  "output_names",
  "write_empty",
  "write_errors",
  "read_errors",
  "finish_shard",
  "components",
  "save_mask",
]
