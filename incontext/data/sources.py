"""Dataset readers: raw-folder layouts and built TFDS (array_record) datasets.

Every source is a random-access sequence (``len(src)``, ``src[i]``) of per-example dicts with one
common schema, so the pair sampler, the episodes and the TFDS builders share it:

  image        uint8 [H, W, 3]  RGB
  mask         int32 [H, W]     label map: 0 = background, k > 0 = label id, IGNORE (255) = ignore
  instances    int32 [H, W]     optional instance map: 0 = background, 1..254 = instance, 255 ignore
  classes      int32 [n]        label ids present in `mask` (sorted, without 0 and IGNORE)
  id           str              example key (file stem, or "seq/frame")
  video_id     str              optional, video sources only
  frame_index  int              optional, video sources only

Label ids are dataset label ids shifted so that 0 means background: COCO/CamVid use class_id + 1,
CCP/VOC/FSS keep theirs (0 is already null/background), ADE20K's 0 ("other") becomes IGNORE.
Binary masks (Kvasir, Weizmann horse, DAVIS 2016) become 0/1. `src.class_names[k]` names label k.

Besides `__getitem__`, a source has `meta(i)` (classes / video_id / frame_index without decoding the
image; used to build pair-sampling indices) and attributes `name`, `kind` ('semantic' or 'video'),
`has_instances` and `class_names` (dict label id -> name).

Raw readers exist for the layouts in `../shared/data` and the usual public layouts:
`image_mask_folder`, `image_mask_globs` (two globs paired by file stem), `coco_yolo`
(coco128_seg), `coco_json`, `lvis`, `clothing_co_parsing`, `camvid`, `davis`, `youtube_vos`,
`kvasir_seg`, `weizmann_horse`, `fss1000`, `pascal_voc`, `ade20k`; `tfds_source` reads a dataset
built by `data_prep/datasets/*`. `make_source(cfg)` builds one from a config dict.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import os
from typing import Any, Callable, Sequence

import numpy as np
from PIL import Image, ImageDraw

from incontext.errors import UnknownName, UserError

IGNORE = 255
MAX_INSTANCES = 254


class DataError(UserError):
  """A data file is missing, unreadable or inconsistent; the message names the file."""


# ---------------------------------------------------------------------------------------------
# File readers.


def read_image_raw(path: str) -> np.ndarray:
  """RGB uint8 [H, W, 3] as stored (no EXIF rotation, unlike `imageio.load_image`: dataset
  annotations are drawn on the stored pixels); raises DataError naming `path` if missing or
  unreadable."""
  if not os.path.exists(path):
    raise DataError(f"missing image file: {path}")
  try:
    with Image.open(path) as im:
      return np.asarray(im.convert("RGB"), np.uint8)
  except Exception as e:  # PIL raises several types
    raise DataError(f"cannot read image file {path}: {e}") from e


def load_label_png(path: str) -> np.ndarray:
  """Raw label values as int32 [H, W] (palette index for 'P', channel 0 for RGB/LA)."""
  if not os.path.exists(path):
    raise DataError(f"missing mask file: {path}")
  try:
    with Image.open(path) as im:
      a = np.asarray(im)
  except Exception as e:
    raise DataError(f"cannot read mask file {path}: {e}") from e
  if a.ndim == 3:
    a = a[..., 0]
  return a.astype(np.int32)


def binarize(a: np.ndarray, threshold: int = 128) -> np.ndarray:
  """0/1 from 0/255 (threshold) or 0/1 masks (values <= 1 are kept)."""
  if a.size and a.max() <= 1:
    return (a > 0).astype(np.int32)
  return (a >= threshold).astype(np.int32)


def present_classes(mask: np.ndarray) -> np.ndarray:
  u = np.unique(mask)
  return u[(u != 0) & (u != IGNORE)].astype(np.int32)


def read_class_list(path: str) -> dict[int, str]:
  """`classes.txt` with lines "id name" (or bare names, numbered from 0)."""
  if not os.path.exists(path):
    raise DataError(f"missing class list: {path}")
  out = {}
  with open(path) as f:
    for i, line in enumerate(l.strip() for l in f):
      if not line:
        continue
      head, _, rest = line.partition(" ")
      if head.isdigit() and rest:
        out[int(head)] = rest.strip()
      else:
        out[i] = line
  return out


def _check_same_size(image: np.ndarray, mask: np.ndarray, ipath: str, mpath: str, resize: bool):
  if image.shape[:2] == mask.shape:
    return mask
  if not resize:
    raise DataError(f"mask {mpath} has size {mask.shape} but image {ipath} has {image.shape[:2]}")
  return np.asarray(Image.fromarray(mask).resize(image.shape[1::-1], Image.NEAREST), np.int32)


# ---------------------------------------------------------------------------------------------
# Polygon / RLE rasterisation (COCO json and YOLO-seg).


def rasterize_polygons(polys: Sequence[Sequence[float]], h: int, w: int) -> np.ndarray:
  """bool [h, w] union of polygons given as flat [x0, y0, x1, y1, ...] pixel coordinates."""
  im = Image.new("L", (w, h), 0)
  d = ImageDraw.Draw(im)
  for p in polys:
    if len(p) >= 6:
      d.polygon([(float(p[i]), float(p[i + 1])) for i in range(0, len(p) - 1, 2)], fill=1)
  return np.asarray(im, bool)


def rle_decode(rle: dict, h: int, w: int) -> np.ndarray:
  """COCO RLE (uncompressed list or compressed string counts) -> bool [h, w]."""
  counts = rle["counts"]
  if isinstance(counts, str):  # COCO's LEB128-like string encoding (maskApi.c rleFrString)
    cnts, p = [], 0
    while p < len(counts):
      x, k, more = 0, 0, True
      while more:
        c = ord(counts[p]) - 48
        x |= (c & 0x1F) << (5 * k)
        more = bool(c & 0x20)
        p += 1
        k += 1
        if not more and (c & 0x10):
          x |= -1 << (5 * k)
      if len(cnts) > 2:
        x += cnts[-2]
      cnts.append(x)
    counts = cnts
  flat = np.zeros(h * w, bool)
  pos, val = 0, False
  for c in counts:
    flat[pos : pos + c] = val
    pos += c
    val = not val
  return flat.reshape(w, h).T  # column-major


def read_yolo_seg(txt_path: str, h: int, w: int) -> tuple[np.ndarray, np.ndarray, list[int]]:
  """YOLO-seg label file -> (semantic class_id+1, instance line+1, instance class ids).

  Later instances overwrite earlier ones (as in ../shared/data/coco128_seg/masks_*). A missing
  label file means an image without objects.
  """
  sem = np.zeros((h, w), np.int32)
  ins = np.zeros((h, w), np.int32)
  cls = []
  if not os.path.exists(txt_path):
    return sem, ins, cls
  with open(txt_path) as f:
    lines = [l.split() for l in f if l.strip()]
  for n, parts in enumerate(lines):
    try:
      c = int(parts[0])
      xy = np.asarray(parts[1:], np.float64)
    except ValueError as e:
      raise DataError(f"bad YOLO-seg line {n + 1} in {txt_path}: {e}") from e
    xy = xy.reshape(-1, 2) * np.array([w, h])
    m = rasterize_polygons([xy.reshape(-1).tolist()], h, w)
    sem[m] = c + 1
    ins[m] = min(n + 1, MAX_INSTANCES)
    cls.append(c + 1)
  return sem, ins, cls


# ---------------------------------------------------------------------------------------------
# Sources.


@dataclasses.dataclass
class FolderSource:
  """A list of (image path, mask path) pairs plus a function turning raw masks into the schema.

  `load_masks(i, image) -> (mask, instances or None)` decodes example i's annotation.
  """

  name: str
  image_paths: list[str]
  load_masks: Callable[[int, np.ndarray | None], tuple[np.ndarray, np.ndarray | None]]
  ids: list[str]
  class_names: dict[int, str]
  kind: str = "semantic"
  has_instances: bool = False
  video_ids: list[str] | None = None
  frame_indices: list[int] | None = None
  _meta_cache: dict = dataclasses.field(default_factory=dict, repr=False)

  def __len__(self) -> int:
    return len(self.image_paths)

  def _extra(self, i: int) -> dict[str, Any]:
    out: dict[str, Any] = {"id": self.ids[i]}
    if self.video_ids is not None:
      out["video_id"] = self.video_ids[i]
      out["frame_index"] = self.frame_indices[i]
    return out

  def __getitem__(self, i: int) -> dict[str, Any]:
    i = int(i)
    image = read_image_raw(self.image_paths[i])
    mask, inst = self.load_masks(i, image)
    ex = {"image": image, "mask": mask, "classes": present_classes(mask), **self._extra(i)}
    if inst is not None:
      ex["instances"] = inst
    return ex

  def meta(self, i: int) -> dict[str, Any]:
    i = int(i)
    if i in self._meta_cache:
      return self._meta_cache[i]
    fast = getattr(self.load_masks, "meta", None)
    if fast is not None:
      classes, ninst = fast(i)
    else:
      mask, inst = self.load_masks(i, None)
      classes = present_classes(mask)
      ninst = None if inst is None else int(len(present_classes(inst)))
    out = {"classes": classes, **self._extra(i)}
    if ninst is not None:
      out["num_instances"] = ninst
    self._meta_cache[i] = out
    return out

  def subset(self, idx: Sequence[int]) -> "FolderSource":
    """A source over the examples `idx` (used by tests and record sharding)."""
    idx = [int(i) for i in idx]
    pick = lambda xs: None if xs is None else [xs[i] for i in idx]
    load = self.load_masks
    sub = lambda j, im: load(idx[j], im)
    if hasattr(load, "meta"):
      sub.meta = lambda j: load.meta(idx[j])
    return dataclasses.replace(
      self,
      _meta_cache={},
      image_paths=pick(self.image_paths),
      ids=pick(self.ids),
      load_masks=sub,
      video_ids=pick(self.video_ids),
      frame_indices=pick(self.frame_indices),
    )


class _PngMasks:
  """Loader for PNG masks. mode: 'binary' | 'label' (via lut) | 'instance' (ids as instances).

  `meta(i)` gets the present values from the PNG palette/histogram (`getcolors`), without
  building arrays, which makes indexing a folder ~5x faster than decoding to numpy.
  """

  def __init__(
    self,
    mask_paths,
    image_paths,
    *,
    mode,
    lut=None,
    threshold=128,
    resize_mask=False,
    instance_paths=None,
  ):
    self.mask_paths, self.image_paths, self.mode, self.lut = mask_paths, image_paths, mode, lut
    self.threshold, self.resize_mask, self.instance_paths = threshold, resize_mask, instance_paths

  def __call__(self, i, image):
    raw = load_label_png(self.mask_paths[i])
    if image is not None:
      raw = _check_same_size(image, raw, self.image_paths[i], self.mask_paths[i], self.resize_mask)
    if self.mode == "binary":
      return binarize(raw, self.threshold), None
    if self.mode == "instance":
      inst = np.where(raw > MAX_INSTANCES, IGNORE, raw).astype(np.int32)
      return np.where(inst == IGNORE, IGNORE, (inst > 0).astype(np.int32)), inst
    lut = self.lut
    mask = raw if lut is None else lut[np.clip(raw, 0, len(lut) - 1)]
    inst = None
    if self.instance_paths is not None:
      inst = load_label_png(self.instance_paths[i])
      if image is not None:
        inst = _check_same_size(
          image, inst, self.image_paths[i], self.instance_paths[i], self.resize_mask
        )
    return mask.astype(np.int32), inst

  def meta(self, i) -> tuple[np.ndarray, int | None]:
    """(classes present, number of instances or None) without decoding to arrays."""
    path = self.mask_paths[i]
    if not os.path.exists(path):
      raise DataError(f"missing mask file: {path}")
    try:
      with Image.open(path) as im:
        if im.mode not in ("L", "P"):
          im = im.getchannel(0)
        vals = np.array(sorted(v for _, v in im.getcolors(256)), np.int64)
    except DataError:
      raise
    except Exception as e:
      raise DataError(f"cannot read mask file {path}: {e}") from e
    if self.mode == "binary":
      fg = (vals >= self.threshold).any() if vals.max(initial=0) > 1 else (vals > 0).any()
      return np.array([1] if fg else [], np.int32), None
    if self.mode == "instance":
      n = int(((vals > 0) & (vals <= MAX_INSTANCES)).sum())
      return np.array([1] if n else [], np.int32), n
    mapped = vals if self.lut is None else self.lut[np.clip(vals, 0, len(self.lut) - 1)]
    ninst = None
    if self.instance_paths is not None:
      with Image.open(self.instance_paths[i]) as im:
        iv = [v for _, v in (im.getcolors(256) or [])]
      ninst = sum(1 for v in iv if 0 < v <= MAX_INSTANCES)
    return present_classes(np.asarray(mapped)), ninst


def _label_loader(mask_paths, image_paths, **kw) -> _PngMasks:
  return _PngMasks(mask_paths, image_paths, **kw)


def _stem(p: str) -> str:
  return os.path.splitext(os.path.basename(p))[0]


def _find_with_ext(base: str, exts=(".jpg", ".jpeg", ".png", ".JPG", ".bmp")) -> str:
  for e in exts:
    if os.path.exists(base + e):
      return base + e
  return base + exts[0]


def _require_dir(path: str, what: str):
  if not os.path.isdir(path):
    raise DataError(f"missing {what} folder: {path}")


def image_mask_folder(
  root: str,
  *,
  name: str = "image_mask_folder",
  image_glob: str = "images/*.jpg",
  mask_pattern: str = "masks/{stem}.png",
  mask_type: str = "binary",
  class_names: dict[int, str] | None = None,
  label_offset: int = 0,
  ignore_values: Sequence[int] = (),
  background_values: Sequence[int] = (0,),
  threshold: int = 128,
  resize_mask: bool = False,
  instance_pattern: str | None = None,
  require_masks: bool = True,
) -> FolderSource:
  """Any folder of images with binary, label-index or instance masks.

  Args:
    image_glob: glob relative to `root` for the images.
    mask_pattern: mask path relative to `root`; `{stem}` is the image file stem, `{dir}` the image's
      folder relative to root.
    mask_type: 'binary' (0/255 or 0/1 -> 0/1), 'label' (label index -> label + label_offset, with
      `ignore_values` -> IGNORE and `background_values` -> 0) or 'instance' (ids -> instances and
      a binary semantic mask).
    instance_pattern: optional instance-map path pattern for 'label' masks.
    require_masks: raise DataError for an image without a mask (else such images are skipped).
  """
  images = sorted(glob.glob(os.path.join(root, image_glob)))
  if not images:
    raise DataError(f"no images match {os.path.join(root, image_glob)}")

  def fmt(pat, p):
    rel_dir = os.path.relpath(os.path.dirname(p), root)
    return os.path.join(root, pat.format(stem=_stem(p), dir=rel_dir))

  masks = [fmt(mask_pattern, p) for p in images]
  keep = [i for i, m in enumerate(masks) if os.path.exists(m)]
  if require_masks and len(keep) < len(images):
    missing = [masks[i] for i in range(len(images)) if i not in set(keep)]
    raise DataError(
      f"missing mask file: {missing[0]} (for image {images[masks.index(missing[0])]};"
      f" {len(missing)} missing in total)"
    )
  images, masks = [images[i] for i in keep], [masks[i] for i in keep]
  lut = None
  if mask_type == "label":
    lut = np.arange(65536, dtype=np.int32) + label_offset
    for v in background_values:
      lut[v] = 0
    for v in ignore_values:
      lut[v] = IGNORE
  inst_paths = [fmt(instance_pattern, p) for p in images] if instance_pattern else None
  if class_names is None:
    class_names = {1: "foreground"} if mask_type in ("binary", "instance") else {}
  return FolderSource(
    name=name,
    image_paths=images,
    ids=[_stem(p) for p in images],
    class_names=class_names,
    load_masks=_label_loader(
      masks,
      images,
      mode=mask_type,
      lut=lut,
      threshold=threshold,
      resize_mask=resize_mask,
      instance_paths=inst_paths,
    ),
    has_instances=mask_type == "instance" or inst_paths is not None,
  )


def image_mask_globs(
  images: str,
  masks: str,
  *,
  name: str = "folder",
  mask_type: str = "binary",
  class_names: dict[int, str] | None = None,
  threshold: int = 128,
  resize_mask: bool = False,
) -> FolderSource:
  """Images and masks from two glob patterns (relative to the working folder), paired by file
  stem: `images='photos/*.jpg', masks='labels/*.png'` pairs photos/a.jpg with labels/a.png.

  Every image needs a mask; masks without an image are ignored. `mask_type` as in
  `image_mask_folder` ('binary' 0/255 or 0/1 masks, 'label' label-id maps, 'instance').
  """
  if not images or not masks:
    raise DataError(
      f"folder task: both image and mask globs are needed (images={images!r}, masks={masks!r})"
    )
  ims = sorted(os.path.abspath(p) for p in glob.glob(os.path.expanduser(images)))
  if not ims:
    raise DataError(f"no images match {images} (from {os.getcwd()})")
  by_stem: dict[str, str] = {}
  for p in sorted(glob.glob(os.path.expanduser(masks))):
    by_stem.setdefault(_stem(p), os.path.abspath(p))
  if not by_stem:
    raise DataError(f"no masks match {masks} (from {os.getcwd()})")
  stems = [_stem(p) for p in ims]
  if len(set(stems)) < len(stems):
    dup = sorted({s for s in stems if stems.count(s) > 1})[0]
    raise DataError(
      f"{images}: several images have the stem {dup!r}; file stems pair images with masks"
    )
  missing = [p for p in ims if _stem(p) not in by_stem]
  if missing:
    raise DataError(
      f"no mask matching {masks} for image {missing[0]} ({len(missing)} of "
      f"{len(ims)} images have none; masks pair with images by file stem)"
    )
  mpaths = [by_stem[_stem(p)] for p in ims]
  if class_names is None:
    class_names = {1: "foreground"} if mask_type in ("binary", "instance") else {}
  return FolderSource(
    name=name,
    image_paths=ims,
    ids=stems,
    class_names=dict(class_names),
    load_masks=_label_loader(
      mpaths, ims, mode=mask_type, threshold=threshold, resize_mask=resize_mask
    ),
    has_instances=mask_type == "instance",
  )


def kvasir_seg(root: str) -> FolderSource:
  """Kvasir-SEG: images/*.jpg + masks/*.png (0/255 polyp)."""
  return image_mask_folder(root, name="kvasir_seg", class_names={1: "polyp"})


def weizmann_horse(root: str) -> FolderSource:
  """Weizmann horse: images/*.jpg + masks/*.png (0/255 horse)."""
  return image_mask_folder(root, name="weizmann_horse", class_names={1: "horse"})


def clothing_co_parsing(root: str) -> FolderSource:
  """CCP: images/NNNN.jpg + masks/NNNN.png, label 0..58 (0 = null = background); classes.txt."""
  names = read_class_list(os.path.join(root, "classes.txt"))
  names.pop(0, None)
  return image_mask_folder(root, name="clothing_co_parsing", mask_type="label", class_names=names)


def camvid(root: str, split: str = "train") -> FolderSource:
  """CamVid (SegNet 11-class): {split}/X.(png|jpg) + {split}annot/X.png, ids 0..10 -> 1..11,
  11 void.

  `split` may be 'train', 'val', 'test' or a '+'-joined combination.
  """
  class_list = read_class_list(os.path.join(root, "classes.txt"))
  names = {k + 1: v for k, v in class_list.items() if k < 11}
  images, masks = [], []
  for s in split.split("+"):
    lst = os.path.join(root, f"{s}.txt")
    if os.path.exists(lst):
      with open(lst) as f:
        stems = [_stem(l.split()[0]) for l in f if l.strip()]
    else:
      _require_dir(os.path.join(root, s), "CamVid split")
      stems = sorted(_stem(p) for p in os.listdir(os.path.join(root, s)))
    images += [_find_with_ext(os.path.join(root, s, st), (".png", ".jpg")) for st in stems]
    masks += [os.path.join(root, f"{s}annot", st + ".png") for st in stems]
  lut = np.full(256, IGNORE, np.int32)
  lut[:11] = np.arange(1, 12)
  return FolderSource(
    name="camvid",
    image_paths=images,
    ids=[_stem(p) for p in images],
    class_names=names,
    load_masks=_label_loader(masks, images, mode="label", lut=lut),
  )


def coco_yolo(root: str, split: str = "train2017") -> FolderSource:
  """COCO in YOLO-seg layout (coco128_seg): images/SPLIT/*.jpg + labels/SPLIT/*.txt polygons.

  Semantic labels are class_id + 1, instances are label-file line + 1 (later overwrite earlier).
  """
  names = {k + 1: v for k, v in read_class_list(os.path.join(root, "classes.txt")).items()}
  _require_dir(os.path.join(root, "images", split), "COCO-YOLO images")
  images = sorted(glob.glob(os.path.join(root, "images", split, "*.jpg")))
  labels = [os.path.join(root, "labels", split, _stem(p) + ".txt") for p in images]

  sizes: dict[int, tuple[int, int]] = {}

  def size(i):
    if i not in sizes:
      with Image.open(images[i]) as im:
        sizes[i] = im.size[::-1]
    return sizes[i]

  def load(i, image):
    h, w = image.shape[:2] if image is not None else size(i)
    sem, ins, _ = read_yolo_seg(labels[i], h, w)
    return sem, ins

  def meta(i):  # from the label file only (a class fully overwritten by a later one is rare)
    if not os.path.exists(labels[i]):
      return np.zeros(0, np.int32), 0
    with open(labels[i]) as f:
      cls = [int(l.split()[0]) + 1 for l in f if l.strip()]
    return np.array(sorted(set(cls)), np.int32), min(len(cls), MAX_INSTANCES)

  load.meta = meta
  return FolderSource(
    name="coco128_seg",
    image_paths=images,
    ids=[_stem(p) for p in images],
    class_names=names,
    load_masks=load,
    has_instances=True,
  )


def _coco_like(
  name: str, ann_file: str, image_path, label_of: dict[int, int], names: dict[int, str]
) -> FolderSource:
  """A COCO-format instances json (COCO, LVIS) -> FolderSource with semantic + instance maps.

  image_path(image record) -> file path; label_of[category id] -> label id. Crowd regions and
  instances beyond MAX_INSTANCES are IGNORE; later annotations overwrite earlier ones where they
  overlap. `meta` reads the classes from the json without rasterising."""
  if not os.path.exists(ann_file):
    raise DataError(f"missing {name} annotation file: {ann_file}")
  with open(ann_file) as f:
    js = json.load(f)
  imgs = sorted(js["images"], key=lambda d: d["id"])
  anns: dict[int, list] = {}
  for a in js["annotations"]:
    anns.setdefault(a["image_id"], []).append(a)
  paths = [image_path(d) for d in imgs]

  def load(i, image):
    d = imgs[i]
    h, w = d["height"], d["width"]
    sem = np.zeros((h, w), np.int32)
    ins = np.zeros((h, w), np.int32)
    n = 0
    for a in anns.get(d["id"], []):
      seg = a["segmentation"]
      if isinstance(seg, list):
        m = rasterize_polygons(seg, h, w)
      else:
        m = rle_decode(seg, *seg.get("size", (h, w)))
      if a.get("iscrowd", 0):
        sem[m] = IGNORE
        ins[m] = IGNORE
        continue
      n += 1
      sem[m] = label_of[a["category_id"]]
      ins[m] = n if n <= MAX_INSTANCES else IGNORE
    if image is not None and image.shape[:2] != (h, w):
      raise DataError(f"image {paths[i]} has size {image.shape[:2]}, {ann_file} says {(h, w)}")
    return sem, ins

  def meta(i):
    a = [x for x in anns.get(imgs[i]["id"], []) if not x.get("iscrowd", 0)]
    return (
      np.array(sorted({label_of[x["category_id"]] for x in a}), np.int32),
      min(len(a), MAX_INSTANCES),
    )

  load.meta = meta
  return FolderSource(
    name=name,
    image_paths=paths,
    ids=[_stem(p) for p in paths],
    class_names=names,
    load_masks=load,
    has_instances=True,
  )


def coco_json(root: str, split: str = "train2017", ann_file: str | None = None) -> FolderSource:
  """COCO instances json: {root}/{split}/*.jpg + annotations/instances_{split}.json.

  Semantic label = contiguous index of the category (1..80) so ids stay < 255 (the order of the
  category ids, which is the COCO-20i class order); crowd regions and instance overlaps beyond
  MAX_INSTANCES are IGNORE. Instance k = k-th non-crowd annotation.
  """
  ann_file = ann_file or os.path.join(root, "annotations", f"instances_{split}.json")
  if not os.path.exists(ann_file):
    raise DataError(f"missing COCO annotation file: {ann_file}")
  with open(ann_file) as f:
    cats = json.load(f)["categories"]
  label_of = {c: k + 1 for k, c in enumerate(sorted(c["id"] for c in cats))}
  names = {label_of[c["id"]]: c["name"] for c in cats}
  return _coco_like(
    "coco", ann_file, lambda d: os.path.join(root, split, d["file_name"]), label_of, names
  )


def lvis_label(category_id: int) -> int:
  """LVIS category id (1..1203) -> label id, skipping IGNORE (255)."""
  return int(category_id) + (int(category_id) >= IGNORE)


def lvis(root: str, split: str = "val", ann_file: str | None = None) -> FolderSource:
  """LVIS v1: {root}/annotations/lvis_v1_{split}.json over the COCO 2017 images
  ({root}/train2017/*.jpg, {root}/val2017/*.jpg; the folder and file come from each image's
  `coco_url`). Label = category id (id 255 and above shifted by one: 255 is IGNORE)."""
  ann_file = ann_file or os.path.join(root, "annotations", f"lvis_v1_{split}.json")
  if not os.path.exists(ann_file):
    raise DataError(f"missing LVIS annotation file: {ann_file}")
  with open(ann_file) as f:
    cats = json.load(f)["categories"]
  label_of = {c["id"]: lvis_label(c["id"]) for c in cats}
  names = {label_of[c["id"]]: c["name"] for c in cats}

  def path(d):
    if "file_name" in d:
      return os.path.join(root, d["file_name"])
    folder, file = d["coco_url"].split("/")[-2:]
    return os.path.join(root, folder, file)

  return _coco_like("lvis", ann_file, path, label_of, names)


def pascal_voc(root: str, split: str = "train") -> FolderSource:
  """PASCAL VOC: JPEGImages/X.jpg + SegmentationClass/X.png (palette 0..20, 255 = ignore);
  ImageSets/Segmentation/{split}.txt. Labels 1..20 keep VOC's ids."""
  voc = [
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
  ]
  lst = os.path.join(root, "ImageSets", "Segmentation", f"{split}.txt")
  if not os.path.exists(lst):
    raise DataError(f"missing VOC split list: {lst}")
  with open(lst) as f:
    stems = [l.strip() for l in f if l.strip()]
  images = [os.path.join(root, "JPEGImages", s + ".jpg") for s in stems]
  masks = [os.path.join(root, "SegmentationClass", s + ".png") for s in stems]
  lut = np.full(256, IGNORE, np.int32)
  lut[:21] = np.arange(21)
  return FolderSource(
    name="pascal_voc",
    image_paths=images,
    ids=stems,
    class_names={k + 1: n for k, n in enumerate(voc)},
    load_masks=_label_loader(masks, images, mode="label", lut=lut),
  )


def ade20k(root: str, split: str = "training") -> FolderSource:
  """ADE20K (ADEChallengeData2016): images/{split}/X.jpg + annotations/{split}/X.png (0..150).

  Label 0 ("other") becomes IGNORE, 1..150 keep their ids. Class names from objectInfo150.csv
  (or sceneCategories-free fallback 'class_k')."""
  _require_dir(os.path.join(root, "images", split), "ADE20K images")
  images = sorted(glob.glob(os.path.join(root, "images", split, "*.jpg")))
  masks = [os.path.join(root, "annotations", split, _stem(p) + ".png") for p in images]
  names = {k: f"class_{k}" for k in range(1, 151)}
  info = os.path.join(root, "objectInfo150.csv")
  if os.path.exists(info):
    with open(info) as f:
      for line in list(f)[1:]:
        parts = line.strip().split(",")
        if parts and parts[0].isdigit():
          names[int(parts[0])] = parts[-1].split(";")[0]
  lut = np.full(256, IGNORE, np.int32)
  lut[1:151] = np.arange(1, 151)
  return FolderSource(
    name="ade20k",
    image_paths=images,
    ids=[_stem(p) for p in images],
    class_names=names,
    load_masks=_label_loader(masks, images, mode="label", lut=lut),
  )


def fss1000(root: str, classes: Sequence[str] | None = None) -> FolderSource:
  """FSS-1000: CLASS/N.jpg + CLASS/N.png (binary). Label of class folder k (sorted) is k + 1
  (k + 2 from k = 254 on, so that no class gets the IGNORE value 255).

  Also accepts the per-class `CLASS/image/N.jpg` + `CLASS/label/N.png` layout of the official
  example folder. `classes` restricts to those folder names (e.g. the test list)."""
  _require_dir(root, "FSS-1000 root")
  all_classes = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
  label = {c: k + 1 + (k + 1 >= IGNORE) for k, c in enumerate(all_classes)}  # skip 255
  use = all_classes if classes is None else [c for c in all_classes if c in set(classes)]
  images, masks, labels = [], [], []
  for c in use:
    d = os.path.join(root, c)
    if os.path.isdir(os.path.join(d, "image")):
      ims = sorted(glob.glob(os.path.join(d, "image", "*.jpg")))
      ms = [os.path.join(d, "label", _stem(p) + ".png") for p in ims]
    else:
      ims = sorted(glob.glob(os.path.join(d, "*.jpg")))
      ms = [os.path.join(d, _stem(p) + ".png") for p in ims]
    images += ims
    masks += ms
    labels += [label[c]] * len(ims)
  base = _label_loader(masks, images, mode="binary")

  def load(i, image):
    m, _ = base(i, image)
    return m * labels[i], None

  load.meta = lambda i: (np.array([labels[i]] if len(base.meta(i)[0]) else [], np.int32), None)

  def class_dir(p):  # the class folder: the image's parent, or its grandparent for .../image/X
    d = os.path.dirname(p)
    return os.path.basename(d if os.path.basename(d) != "image" else os.path.dirname(d))

  ids = [f"{class_dir(p)}/{_stem(p)}" for p in images]
  return FolderSource(
    name="fss1000",
    image_paths=images,
    ids=ids,
    class_names={label[c]: c for c in all_classes},
    load_masks=load,
  )


def davis(
  root: str,
  *,
  split: str | None = "train",
  resolution: str = "480p",
  year: int | str = 2016,
  sequences: Sequence[str] | None = None,
) -> FolderSource:
  """DAVIS 2016/2017 frame-level video source: JPEGImages/RES/SEQ/N.jpg + Annotations/RES/SEQ/N.png.

  2016: binary 0/255 -> instance 1. 2017: palette index = object id (instances), semantic mask
  is foreground/background. Sequences come from `sequences`, else
  ImageSets/{RES or YEAR}/{split}.txt
  (2016 lines are frame paths, 2017 lines are names), else ImageSets/sequences.txt, else all."""
  jdir = os.path.join(root, "JPEGImages", resolution)
  adir = os.path.join(root, "Annotations", resolution)
  _require_dir(jdir, "DAVIS JPEGImages")
  if sequences is None:
    cands = [
      os.path.join(root, "ImageSets", str(year), f"{split}.txt"),
      os.path.join(root, "ImageSets", resolution, f"{split}.txt"),
      os.path.join(root, "ImageSets", "sequences.txt"),
    ]
    lst = next((c for c in cands if split and os.path.exists(c)), None)
    if lst is not None:
      with open(lst) as f:
        seqs = []
        for l in f:
          l = l.strip()
          if l:
            s = l.split()[0].strip("/").split("/")[2] if "/" in l else l
            if s not in seqs:
              seqs.append(s)
    else:
      seqs = sorted(os.listdir(jdir))
  else:
    seqs = list(sequences)
  images, masks, vids, fidx = [], [], [], []
  for s in seqs:
    _require_dir(os.path.join(jdir, s), "DAVIS sequence")
    frames = sorted(glob.glob(os.path.join(jdir, s, "*.jpg")))
    for k, p in enumerate(frames):
      images.append(p)
      masks.append(os.path.join(adir, s, _stem(p) + ".png"))
      vids.append(s)
      fidx.append(k)
  mode = "binary" if str(year) == "2016" else "instance"
  base = _label_loader(masks, images, mode=mode)

  def load(i, image):
    m, inst = base(i, image)
    return m, (m.copy() if inst is None else inst)

  def meta(i):
    c, n = base.meta(i)
    return c, (len(c) if n is None else n)

  load.meta = meta
  return FolderSource(
    name=f"davis{year}",
    image_paths=images,
    ids=[f"{v}/{_stem(p)}" for v, p in zip(vids, images)],
    class_names={1: "object"},
    load_masks=load,
    kind="video",
    has_instances=True,
    video_ids=vids,
    frame_indices=fidx,
  )


def youtube_vos(
  root: str, split: str = "train", videos: Sequence[str] | None = None
) -> FolderSource:
  """YouTube-VOS (2018/2019) frame-level video source: {split}/JPEGImages/VID/F.jpg +
  {split}/Annotations/VID/F.png (palette index = object id). Only annotated frames are records
  (every frame of a 'train' video; in 'valid', the frames where objects first appear)."""
  jdir, adir = os.path.join(root, split, "JPEGImages"), os.path.join(root, split, "Annotations")
  _require_dir(jdir, "YouTube-VOS JPEGImages")
  _require_dir(adir, "YouTube-VOS Annotations")
  vids = sorted(os.listdir(adir)) if videos is None else list(videos)
  images, masks, vid_of, fidx = [], [], [], []
  for v in vids:
    _require_dir(os.path.join(jdir, v), "YouTube-VOS video")
    for k, p in enumerate(sorted(glob.glob(os.path.join(jdir, v, "*.jpg")))):
      m = os.path.join(adir, v, _stem(p) + ".png")
      if os.path.exists(m):
        images.append(p)
        masks.append(m)
        vid_of.append(v)
        fidx.append(k)
  return FolderSource(
    name="youtube_vos",
    image_paths=images,
    ids=[f"{v}/{_stem(p)}" for v, p in zip(vid_of, images)],
    class_names={1: "object"},
    load_masks=_label_loader(masks, images, mode="instance"),
    kind="video",
    has_instances=True,
    video_ids=vid_of,
    frame_indices=fidx,
  )


# ---------------------------------------------------------------------------------------------
# Built TFDS datasets (array_record) via tfds.data_source.


class TfdsSource:
  """Reads a dataset built by `data_prep/datasets/<name>` with `tfds.data_source`.

  The stored features follow the schema above (`mask`/`instances` stored as zlib uint16 tensors).
  """

  def __init__(self, name: str, split: str = "train", data_dir: str | None = None):
    import tensorflow_datasets as tfds  # slow import, only when used

    self.name = name
    self._ds = tfds.data_source(name, split=split, data_dir=data_dir, download=False)
    skip = {
      k: tfds.decode.SkipDecoding()
      for k in ("image", "mask")
      if k in self._ds.dataset_info.features
    }
    self._meta = tfds.data_source(
      name, split=split, data_dir=data_dir, download=False, decoders=skip
    )
    md = dict(self._ds.dataset_info.metadata or {})
    self.class_names = {int(k): v for k, v in md.get("class_names", {}).items()}
    self.kind = md.get("kind", "semantic")
    self.has_instances = "instances" in self._ds.dataset_info.features

  def __len__(self):
    return len(self._ds)

  @staticmethod
  def _common(ex) -> dict[str, Any]:
    out = {"classes": np.asarray(ex["classes"], np.int32), "id": _str(ex["id"])}
    if "video_id" in ex:
      out["video_id"] = _str(ex["video_id"])
      out["frame_index"] = int(ex["frame_index"])
    return out

  def __getitem__(self, i):
    ex = self._ds[int(i)]
    out = {
      "image": np.asarray(ex["image"], np.uint8),
      "mask": np.asarray(ex["mask"], np.int32),
      **self._common(ex),
    }
    if "instances" in ex:
      out["instances"] = np.asarray(ex["instances"], np.int32)
    return out

  def meta(self, i):
    ex = self._meta[int(i)]
    out = self._common(ex)
    if "instances" in ex:
      out["num_instances"] = len(present_classes(np.asarray(ex["instances"])))
    return out


def _str(x) -> str:
  return x.decode() if isinstance(x, (bytes, np.bytes_)) else str(x)


def tfds_source(name: str, split: str = "train", data_dir: str | None = None) -> TfdsSource:
  return TfdsSource(name, split, data_dir)


READERS: dict[str, Callable[..., Any]] = {
  "image_mask_folder": image_mask_folder,
  "image_mask_globs": image_mask_globs,
  "kvasir_seg": kvasir_seg,
  "weizmann_horse": weizmann_horse,
  "clothing_co_parsing": clothing_co_parsing,
  "camvid": camvid,
  "coco128_seg": coco_yolo,
  "coco_yolo": coco_yolo,
  "coco_json": coco_json,
  "pascal_voc": pascal_voc,
  "ade20k": ade20k,
  "fss1000": fss1000,
  "davis": davis,
  "lvis": lvis,
  "youtube_vos": youtube_vos,
  "davis2016_subset": davis,
  "tfds": tfds_source,
}


_SOURCE_CACHE: dict[str, Any] = {}


def make_source(cfg: dict[str, Any], cache: bool = True):
  """Source from a config dict: {'reader': NAME, 'root': PATH, ...reader kwargs}.

  reader 'tfds' takes {'name', 'split', 'data_dir'}. Keys that the reader does not take (weight,
  exclude_classes, ...) are ignored. Sources are cached per process by their arguments.
  """
  import inspect

  if cfg.get("reader") not in READERS:
    raise UnknownName(f"unknown reader {cfg.get('reader')!r}; known: {sorted(READERS)}")
  reader = READERS[cfg["reader"]]
  params = inspect.signature(reader).parameters
  kw = {k: v for k, v in cfg.items() if k in params}
  key = repr((cfg["reader"], sorted(kw.items())))
  if cache and key in _SOURCE_CACHE:
    return _SOURCE_CACHE[key]
  src = reader(**kw)
  if cache:
    _SOURCE_CACHE[key] = src
  return src
