"""Build every TFDS builder in data_prep/datasets from ../shared/data (small subsets via
max_examples_per_split, or generated miniatures of layouts not in ../shared/data) and read the
records back with tfds.data_source."""

import json
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from _shared import shared_data_dir
from incontext.data import sources

# Every test here builds datasets from the real data in ../shared/data: integration tier.
pytestmark = pytest.mark.integration

tfds = pytest.importorskip("tensorflow_datasets")
build_mod = pytest.importorskip("data_prep.build")

N = 4  # max examples per split


@pytest.fixture(scope="session")
def out_dir(tmp_path_factory):
  return tmp_path_factory.mktemp("tfds")


def build(name, manual, out, config=None, n=N):
  b = build_mod.build(name, str(manual), str(out / "data"), config, n)
  return b


def read(builder, split):
  name = builder.name + (f"/{builder.builder_config.name}" if builder.builder_config else "")
  return sources.tfds_source(name, split, str(builder.data_dir_root))


def check_records(src, n, *, max_label, has_instances=False, video=False):
  assert len(src) == n
  for i in range(len(src)):
    ex = src[i]
    h, w = ex["image"].shape[:2]
    assert ex["image"].dtype == np.uint8 and ex["image"].shape[2] == 3
    assert ex["mask"].shape == (h, w) and ex["mask"].dtype == np.int32
    vals = set(np.unique(ex["mask"]).tolist()) - {0, sources.IGNORE}
    assert vals <= set(range(1, max_label + 1)), vals
    np.testing.assert_array_equal(ex["classes"], sorted(vals))
    assert ("instances" in ex) == has_instances
    if video:
      assert isinstance(ex["video_id"], str) and ex["frame_index"] >= 0
    assert src.meta(i)["id"] == ex["id"]


def test_camvid(out_dir):
  b = build("camvid", shared_data_dir("camvid"), out_dir)
  assert {k: v.num_examples for k, v in b.info.splits.items()} == {"train": N, "val": N, "test": N}
  src = read(b, "val")
  check_records(src, N, max_label=11)
  assert src.class_names[1] == "Sky"
  raw = sources.camvid(str(shared_data_dir("camvid")), "val")
  ex = src[0]
  np.testing.assert_array_equal(raw[raw.ids.index(ex["id"])]["mask"], ex["mask"])


def test_clothing_co_parsing(out_dir):
  b = build("clothing_co_parsing", shared_data_dir("clothing_co_parsing"), out_dir)
  src = read(b, "train")
  check_records(src, N, max_label=58)
  assert len(src.class_names) == 58


def test_coco_yolo(out_dir):
  b = build("coco", shared_data_dir("coco128_seg"), out_dir, "yolo")
  src = read(b, "train")
  check_records(src, N, max_label=80, has_instances=True)
  ex = src[1]
  ref = np.asarray(
    Image.open(shared_data_dir("coco128_seg") / "masks_instance" / "train2017" / f"{ex['id']}.png")
  )
  np.testing.assert_array_equal(ex["instances"], ref)


def test_davis2016(out_dir):
  b = build("davis", shared_data_dir("davis2016_subset"), out_dir, "2016")
  src = read(b, "train")
  assert src.kind == "video"
  check_records(src, N, max_label=1, has_instances=True, video=True)


@pytest.fixture(scope="session")
def mini(tmp_path_factory):
  """Miniatures of layouts missing from ../shared/data, made from its files."""
  root = tmp_path_factory.mktemp("mini")
  coco = sources.coco_yolo(str(shared_data_dir("coco128_seg")))
  exs = [coco[i] for i in range(3)]
  # PASCAL VOC: palette PNG labels (1..20, 255 border).
  voc = root / "voc"
  for d in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
    (voc / d).mkdir(parents=True)
  for ex in exs:
    Image.fromarray(ex["image"]).save(voc / "JPEGImages" / f"{ex['id']}.jpg")
    lab = Image.fromarray(np.where(ex["mask"] > 0, (ex["mask"] % 20) + 1, 0).astype(np.uint8), "P")
    lab.putpalette(list(np.random.default_rng(0).integers(0, 255, 768)))
    lab.save(voc / "SegmentationClass" / f"{ex['id']}.png")
  (voc / "ImageSets/Segmentation/train.txt").write_text("\n".join(e["id"] for e in exs[:2]))
  (voc / "ImageSets/Segmentation/val.txt").write_text(exs[2]["id"])
  # ADE20K: 0 = other, 1..150.
  ade = root / "ade"
  for s in ("training", "validation"):
    (ade / "images" / s).mkdir(parents=True)
    (ade / "annotations" / s).mkdir(parents=True)
  for ex in exs:
    Image.fromarray(ex["image"]).save(ade / "images/training" / f"{ex['id']}.jpg")
    Image.fromarray(ex["mask"].astype(np.uint8)).save(
      ade / "annotations/training" / f"{ex['id']}.png"
    )
  # COCO json (polygons + one crowd RLE).
  cj = root / "coco_json"
  (cj / "train2017").mkdir(parents=True)
  (cj / "annotations").mkdir()
  images, anns = [], []
  for k, ex in enumerate(exs[:2]):
    h, w = ex["mask"].shape
    Image.fromarray(ex["image"]).save(cj / "train2017" / f"{ex['id']}.jpg")
    images.append({"id": k + 1, "file_name": f"{ex['id']}.jpg", "height": h, "width": w})
    anns.append(
      {
        "id": 2 * k + 1,
        "image_id": k + 1,
        "category_id": 18,
        "iscrowd": 0,
        "segmentation": [[10, 10, 60, 10, 60, 50, 10, 50]],
      }
    )
    anns.append(
      {
        "id": 2 * k + 2,
        "image_id": k + 1,
        "category_id": 1,
        "iscrowd": 1,
        "segmentation": {"size": [h, w], "counts": [w * 5, 20, h * w - w * 5 - 20]},
      }
    )
  (cj / "annotations/instances_train2017.json").write_text(
    json.dumps(
      {
        "images": images,
        "annotations": anns,
        "categories": [{"id": 1, "name": "person"}, {"id": 18, "name": "dog"}],
      }
    )
  )
  # DAVIS 2017: palette masks with two objects.
  d17 = root / "davis17"
  src = sources.davis(str(shared_data_dir("davis2016_subset")), split=None, sequences=["boat"])
  for k in range(3):
    ex = src[k]
    for d in ("JPEGImages/480p/boat", "Annotations/480p/boat"):
      (d17 / d).mkdir(parents=True, exist_ok=True)
    Image.fromarray(ex["image"]).save(d17 / "JPEGImages/480p/boat" / f"{k:05d}.jpg")
    m = ex["mask"].astype(np.uint8)
    m[:40, :40] = 2
    p = Image.fromarray(m, "P")
    p.putpalette([0, 0, 0, 128, 0, 0, 0, 128, 0] + [0] * 759)
    p.save(d17 / "Annotations/480p/boat" / f"{k:05d}.png")
  # FSS-1000 flat layout: two classes from the example support set + the official test list.
  fss = root / "fss"
  ex_dir = shared_data_dir("examples", "fss1000_examples")
  for c in ("eiffel_tower", "bus"):
    (fss / c).mkdir(parents=True)
    for k in range(1, 4):
      shutil.copy(ex_dir / "eiffel_tower_support/image" / f"{k}.jpg", fss / c / f"{k}.jpg")
      shutil.copy(ex_dir / "eiffel_tower_support/label" / f"{k}.png", fss / c / f"{k}.png")
  shutil.copy(ex_dir / "fss_test_set.txt", fss / "fss_test_set.txt")
  # image_mask_folder with a custom layout.json (Kvasir files, other names).
  imf = root / "imf"
  (imf / "imgs").mkdir(parents=True)
  (imf / "gt").mkdir()
  kv = shared_data_dir("kvasir_seg")
  for p in sorted(os.listdir(kv / "images"))[:3]:
    s = p[:-4]
    shutil.copy(kv / "images" / p, imf / "imgs" / f"{s}.jpg")
    shutil.copy(kv / "masks" / f"{s}.png", imf / "gt" / f"{s}_mask.png")
  (imf / "layout.json").write_text(
    json.dumps(
      {
        "image_glob": "imgs/*.jpg",
        "mask_pattern": "gt/{stem}_mask.png",
        "class_names": {"1": "polyp"},
      }
    )
  )
  return root


def test_pascal_voc(out_dir, mini):
  b = build("pascal_voc", mini / "voc", out_dir)
  assert b.info.splits["train"].num_examples == 2
  check_records(read(b, "validation"), 1, max_label=20)


def test_ade20k(out_dir, mini):
  b = build("ade20k", mini / "ade", out_dir)
  src = read(b, "train")
  check_records(src, 3, max_label=150)
  assert (src[0]["mask"] == sources.IGNORE).any()  # label 0 ("other") -> ignore


def test_coco_json(out_dir, mini):
  b = build("coco", mini / "coco_json", out_dir, "json")
  src = read(b, "train")
  check_records(src, 2, max_label=80, has_instances=True)
  ex = src[0]
  assert ex["classes"].tolist() == [2] and src.class_names[2] == "dog"
  assert (ex["mask"] == sources.IGNORE).sum() == 20  # the crowd RLE run


def test_davis2017(out_dir, mini):
  b = build("davis", mini / "davis17", out_dir, "2017")
  src = read(b, "train")
  check_records(src, 3, max_label=1, has_instances=True, video=True)
  assert set(np.unique(src[0]["instances"])) == {0, 1, 2}


def test_fss1000(out_dir, mini):
  b = build("fss1000", mini / "fss", out_dir)
  assert {k: v.num_examples for k, v in b.info.splits.items()} == {"train": 3, "test": 3}
  src = read(b, "test")  # 'bus' is an official test class
  check_records(src, 3, max_label=2)
  assert src.class_names[src[0]["classes"][0]] == "bus"


def test_image_mask_folder(out_dir, mini):
  b = build("image_mask_folder", mini / "imf", out_dir, "binary")
  src = read(b, "train")
  check_records(src, 3, max_label=1)
  assert src.class_names == {1: "polyp"}


def test_bad_and_missing_files_name_the_file(tmp_path):
  kv = shared_data_dir("kvasir_seg")
  (tmp_path / "images").mkdir()
  (tmp_path / "masks").mkdir()
  names = sorted(os.listdir(kv / "images"))[:2]
  for p in names:
    shutil.copy(kv / "images" / p, tmp_path / "images" / p)
  shutil.copy(kv / "masks" / (names[0][:-4] + ".png"), tmp_path / "masks")
  missing = str(tmp_path / "masks" / (names[1][:-4] + ".png"))
  with pytest.raises(sources.DataError, match=f"missing mask file: {missing}"):
    sources.image_mask_folder(str(tmp_path))
  with open(missing, "wb") as f:
    f.write(b"not a png")
  src = sources.image_mask_folder(str(tmp_path))
  with pytest.raises(sources.DataError, match=f"cannot read mask file {missing}"):
    src[1]
  bad_img = tmp_path / "images" / names[0]
  bad_img.write_bytes(b"garbage")
  with pytest.raises(sources.DataError, match=f"cannot read image file {bad_img}"):
    src[0]
  with pytest.raises((sources.DataError, AssertionError), match=str(tmp_path / "nope")):
    build_mod.build("image_mask_folder", str(tmp_path / "nope"), str(tmp_path / "o"), "binary")
  with pytest.raises(sources.DataError, match=f"cannot read image file {bad_img}"):
    build_mod.build("image_mask_folder", str(tmp_path), str(tmp_path / "o2"), "binary")


def test_pipeline_reads_built_tfds(out_dir):
  from incontext.data import pipeline

  b = build("davis", shared_data_dir("davis2016_subset"), out_dir, "2016")
  cfg = {
    "image_size": 16,
    "patch_size": 8,
    "datasets": [
      dict(name="davis/2016", reader="tfds", split="train", data_dir=str(b.data_dir_root))
    ],
  }
  batch = next(pipeline.make_train_iterator(cfg, seed=0, batch_size=2))
  assert batch["image"].shape == (2, 32, 16, 3) and (batch["seg_type"] == 1).all()


def test_lvis(out_dir, tmp_path):
  """LVIS json (images found by coco_url, category ids kept, 255 shifted past the ignore)."""
  coco = sources.coco_yolo(str(shared_data_dir("coco128_seg")))
  root = tmp_path / "lvis"
  (root / "annotations").mkdir(parents=True)
  images, anns = [], []
  for k in range(2):
    ex = coco[k]
    h, w = ex["mask"].shape
    folder = ("train2017", "val2017")[k]
    (root / folder).mkdir()
    Image.fromarray(ex["image"]).save(root / folder / f"{ex['id']}.jpg")
    images.append(
      {
        "id": k + 1,
        "height": h,
        "width": w,
        "coco_url": f"http://images.cocodataset.org/{folder}/{ex['id']}.jpg",
      }
    )
    for j, cat in enumerate((7, 255)):
      anns.append(
        {
          "id": len(anns) + 1,
          "image_id": k + 1,
          "category_id": cat,
          "segmentation": [[10 + 40 * j, 10, 40 + 40 * j, 10, 40 + 40 * j, 40, 10 + 40 * j, 40]],
        }
      )
  (root / "annotations/lvis_v1_val.json").write_text(
    json.dumps(
      {
        "images": images,
        "annotations": anns,
        "categories": [{"id": 7, "name": "a"}, {"id": 255, "name": "b"}],
      }
    )
  )
  b = build("lvis", root, out_dir)
  src = read(b, "validation")
  check_records(src, 2, max_label=256, has_instances=True)
  assert src[0]["classes"].tolist() == [7, 256] and src.class_names[256] == "b"


def test_youtube_vos(out_dir, tmp_path):
  """YouTube-VOS layout: train (all annotated) and valid (first-appearance frames only)."""
  src16 = sources.davis(str(shared_data_dir("davis2016_subset")), split=None, sequences=["boat"])
  root = tmp_path / "ytvos"
  for split, annotated in (("train", (0, 1, 2)), ("valid", (0,))):
    for d in ("JPEGImages", "Annotations"):
      (root / split / d / "v1").mkdir(parents=True)
    for k in range(3):
      ex = src16[k]
      Image.fromarray(ex["image"]).save(root / split / "JPEGImages/v1" / f"{5 * k:05d}.jpg")
      if k in annotated:
        m = ex["mask"].astype(np.uint8)
        m[:40, :40] = 2
        p = Image.fromarray(m, "P")
        p.putpalette([0, 0, 0, 128, 0, 0, 0, 128, 0] + [0] * 759)
        p.save(root / split / "Annotations/v1" / f"{5 * k:05d}.png")
  b = build("youtube_vos", root, out_dir)
  assert {k: v.num_examples for k, v in b.info.splits.items()} == {"train": 3, "validation": 1}
  src = read(b, "train")
  check_records(src, 3, max_label=1, has_instances=True, video=True)
  assert set(np.unique(src[1]["instances"])) == {0, 1, 2} and src[1]["video_id"] == "v1"
  assert src[2]["frame_index"] == 2
