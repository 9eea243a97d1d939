"""Every paper benchmark preset of experiments/configs/seggpt_eval.py end to end (runlocal, a tiny
random model) on a small fixture in the dataset's real folder layout, built in tmp_path from real
photos of ../shared/data: the protocol's classes and folds, results with the paper's number and
a bootstrap interval, and the official output layouts (DAVIS results folder, YouTube-VOS zip)."""

import json
import os
import shutil
import zipfile

import numpy as np
import pytest
from PIL import Image

from _shared import shared_data_dir
from experiments.configs import seggpt_eval
from incontext import checkpoint, metrics, outputs, video
from incontext.data import folds, sources
from incontext.evaluators import davis, run, youtube_vos
from incontext.models import seggpt

# The 80 COCO category ids (non-contiguous, as in instances_*.json).
COCO_IDS = [i for i in range(1, 91) if i not in (12, 26, 29, 30, 45, 66, 68, 69, 71, 83)]


@pytest.fixture(scope="module")
def params(tmp_path_factory):
  d = str(tmp_path_factory.mktemp("m") / "params")
  checkpoint.save_model(
    d, seggpt.create("test", image_size=(16, 16), patch=4, drop_path=0.0, seed=0)
  )
  return d


@pytest.fixture(scope="module")
def photos():
  """12 real photos (COCO), small."""
  d = shared_data_dir("coco128_seg", "images", "train2017")
  out = []
  for p in sorted(os.listdir(d))[:12]:
    with Image.open(d / p) as im:
      out.append(np.asarray(im.convert("RGB").resize((40, 32))))
  return out


def _rect(k, h=32, w=40):
  """A rectangle [x0, y0, x1, y1] that moves with k."""
  x0, y0 = 2 + (3 * k) % 16, 2 + (5 * k) % 12
  return x0, y0, x0 + 18, y0 + 14


def _run(arg, params, tmp_path):
  c = seggpt_eval.get_config(arg)
  c.init = params
  return run.run_eval(c, str(tmp_path / "out")), (tmp_path / "out" / "results.md").read_text()


def _check_fewshot(res, table, names, paper_1shot):
  assert set(res["fewshot"]) == set(names)
  for name in names:
    r = res["fewshot"][name]
    assert set(r) == {
      "1-shot",
      "2-shot feature",
      "2-shot spatial",
      "copy prompt mask (baseline)",
      "_info",
    }
    one = r["1-shot"]
    assert one["episodes"] == 4 and one["paper"] == paper_1shot
    lo, hi = one["miou_ci95"]
    assert lo <= one["miou"] <= hi or lo == hi
    assert f"| {name} | 1-shot |" in table and f"| {paper_1shot} |" in table
  assert "Paper numbers:" in table


@pytest.mark.integration
def test_coco20i_preset(params, photos, tmp_path):
  root = tmp_path / "coco"
  (root / "val2014").mkdir(parents=True)
  (root / "annotations").mkdir()
  images, anns = [], []
  for k, im in enumerate(photos[:8]):
    name = f"COCO_val2014_{k:012d}.jpg"
    Image.fromarray(im).save(root / "val2014" / name)
    images.append(dict(id=100 + k, file_name=name, height=32, width=40))
    for j, cat in enumerate((1, 2, 3, 4)):  # labels 1..4: one class of each fold
      x0, y0, x1, y1 = _rect(k + j)
      anns.append(
        dict(
          id=len(anns) + 1,
          image_id=100 + k,
          category_id=COCO_IDS[cat - 1],
          iscrowd=0,
          segmentation=[[x0, y0, x1, y0, x1, y1, x0, y1]],
        )
      )
  cats = [dict(id=c, name=f"c{c}") for c in COCO_IDS]
  json.dump(
    dict(images=images, annotations=anns, categories=cats),
    open(root / "annotations" / "instances_val2014.json", "w"),
  )
  res, table = _run(f"benchmark=coco20i,fold=2,runlocal,root={root}", params, tmp_path)
  _check_fewshot(res, table, ["coco20i_fold2"], 56.1)
  # the interleaved split over the 80 classes in category-id order: fold 2 = 3, 7, ..., 79
  info = res["fewshot"]["coco20i_fold2"]["_info"]
  assert info["classes"] == list(range(3, 81, 4))
  assert set(res["fewshot"]["coco20i_fold2"]["1-shot"]["per_class"]) == {"3"}
  assert "| 67.9* |" in table  # the paper's few-shot number beside the k-shot rows


@pytest.mark.integration
def test_pascal5i_preset(params, photos, tmp_path):
  root = tmp_path / "VOC2012"
  for d in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
    (root / d).mkdir(parents=True)
  stems = []
  for k, im in enumerate(photos[:8]):
    stem = f"2007_{k:06d}"
    Image.fromarray(im).save(root / "JPEGImages" / f"{stem}.jpg")
    m = np.zeros((32, 40), np.uint8)
    x0, y0, x1, y1 = _rect(k)
    m[y0:y1, x0:x1] = 6 + k % 2  # classes 6, 7: fold 1
    m[y0, x0:x1] = 255  # VOC's void border
    png = Image.fromarray(m, "P")
    png.putpalette(video.davis_palette().reshape(-1).tolist())
    png.save(root / "SegmentationClass" / f"{stem}.png")
    stems.append(stem)
  (root / "ImageSets" / "Segmentation" / "val.txt").write_text("\n".join(stems) + "\n")
  res, table = _run(f"benchmark=pascal5i,fold=1,runlocal,root={root}", params, tmp_path)
  _check_fewshot(res, table, ["pascal5i_fold1"], 83.2)
  assert res["fewshot"]["pascal5i_fold1"]["_info"]["classes"] == [6, 7, 8, 9, 10]


@pytest.mark.integration
def test_fss1000_preset(params, photos, tmp_path):
  root = tmp_path / "fss1000"
  test_classes = seggpt_eval.fss1000_test_classes()
  assert len(test_classes) == 240 and len(set(test_classes)) == 240
  present = list(test_classes[:2]) + ["not_a_test_class"]
  for j, c in enumerate(present):
    (root / c).mkdir(parents=True)
    for k in range(3):
      Image.fromarray(photos[3 * j + k]).save(root / c / f"{k + 1}.jpg")
      m = np.zeros((32, 40), np.uint8)
      x0, y0, x1, y1 = _rect(k + j)
      m[y0:y1, x0:x1] = 255
      Image.fromarray(m).save(root / c / f"{k + 1}.png")
  res, table = _run(f"benchmark=fss1000,runlocal,root={root}", params, tmp_path)
  _check_fewshot(res, table, ["fss1000"], 85.5)
  info = res["fewshot"]["fss1000"]["_info"]
  src = sources.fss1000(str(root))
  assert [src.class_names[c] for c in info["classes"]] == present[:2]  # never the non-test one
  assert len(info["missing_classes"]) == 238


@pytest.mark.integration
def test_lvis92i_preset(params, photos, tmp_path):
  root = tmp_path / "lvis"
  for d in ("annotations", "val2017", "train2017"):
    (root / d).mkdir(parents=True)
  images, anns = [], []
  for k, im in enumerate(photos[:6]):
    folder = "val2017" if k % 2 else "train2017"  # LVIS val draws from both
    Image.fromarray(im).save(root / folder / f"{k:012d}.jpg")
    images.append(
      dict(
        id=k + 1,
        height=32,
        width=40,
        coco_url=f"http://images.cocodataset.org/{folder}/{k:012d}.jpg",
      )
    )
    for cat in range(1, 23):  # 22 categories in every image: 2 per fold, 2 left over
      if (cat + k) % 3:  # ... each in 4 of the 6 images
        x0, y0, x1, y1 = _rect(cat + k)
        anns.append(
          dict(
            id=len(anns) + 1,
            image_id=k + 1,
            category_id=cat,
            segmentation=[[x0, y0, x1, y0, x1, y1, x0, y1]],
          )
        )
  cats = [dict(id=c, name=f"c{c}") for c in range(1, 23)] + [dict(id=255, name="c255")]
  json.dump(
    dict(images=images, annotations=anns, categories=cats),
    open(root / "annotations" / "lvis_v1_val.json", "w"),
  )
  res, table = _run(f"benchmark=lvis92i,fold=3,runlocal,root={root}", params, tmp_path)
  _check_fewshot(res, table, ["lvis92i_fold3"], 18.6)
  # 22 usable classes (id 255 has no images), 10 folds of 22 // 10 = 2: fold 3 = 4th and 14th.
  assert res["fewshot"]["lvis92i_fold3"]["_info"]["classes"] == [4, 14]
  assert sources.lvis_label(255) == 256 and sources.lvis_label(254) == 254


def _davis_frames(n=4):
  """n real DAVIS frames (boat, small) and their masks."""
  root = shared_data_dir("davis2016_subset")
  out = []
  for t in range(n):
    with Image.open(root / "JPEGImages" / "480p" / "boat" / f"{t:05d}.jpg") as im:
      f = np.asarray(im.convert("RGB").resize((48, 27)))
    with Image.open(root / "Annotations" / "480p" / "boat" / f"{t:05d}.png") as im:
      m = (np.asarray(im.resize((48, 27), Image.NEAREST)) > 127).astype(np.uint8)
    out.append((f, m))
  return out


def _palette_png(path, ids):
  png = Image.fromarray(ids.astype(np.uint8), "P")
  png.putpalette(video.davis_palette().reshape(-1).tolist())
  png.save(path)


@pytest.mark.integration
def test_davis2017_preset_writes_the_official_results_layout(params, tmp_path):
  root = tmp_path / "DAVIS"
  seqs = ("boat-a",)
  for s in seqs:
    (root / "JPEGImages" / "480p" / s).mkdir(parents=True)
    (root / "Annotations" / "480p" / s).mkdir(parents=True)
    for t, (f, m) in enumerate(_davis_frames()):
      Image.fromarray(f).save(root / "JPEGImages" / "480p" / s / f"{t:05d}.jpg")
      ids = m.copy()
      ids[2:8, 30 + t : 40 + t] = 2  # a second object
      _palette_png(root / "Annotations" / "480p" / s / f"{t:05d}.png", ids)
  (root / "ImageSets" / "2017").mkdir(parents=True)
  (root / "ImageSets" / "2017" / "val.txt").write_text("\n".join(seqs) + "\n")
  (root / "ImageSets" / "2017" / "train.txt").write_text("boat-b\n")  # not evaluated
  res, table = _run(f"benchmark=davis2017,runlocal,root={root}", params, tmp_path)
  d = res["davis"]
  assert d["_info"]["sequences"] == list(seqs)
  assert set(d) == {"K=0", "K=2", "copy first mask (baseline)", "_info"}
  assert "| davis | K=0 |" in table
  # The results folder is in the official layout (K{k}/SEQ/FRAME.png, palette PNG of object
  # ids, names of the Annotations) and re-scoring it gives the reported J&F.
  for k in (0, 2):
    acc = metrics.JFAccumulator()
    for s in seqs:
      out = tmp_path / "out" / "davis_masks" / f"K{k}" / s
      assert sorted(os.listdir(out)) == sorted(os.listdir(root / "Annotations" / "480p" / s))
      preds = []
      for name in sorted(os.listdir(out)):
        with Image.open(out / name) as im:
          assert im.mode == "P" and im.size == (48, 27)
          preds.append(np.asarray(im).astype(np.int32))
      gts = davis.read_sequence(str(root), s)[1]
      assert {int(x) for x in np.unique(preds[0])} == {0, 1, 2}  # the first mask itself
      acc.add(s, metrics.video_jf(preds, gts))
    assert acc.result()["J&F"] == pytest.approx(d[f"K={k}"]["J&F"])


def _ytvos_root(tmp_path):
  """A one-video YouTube-VOS 'valid' folder: object 1 from frame 0, object 2 from frame 2."""
  root = tmp_path / "youtube_vos"
  vid = "0a1b2c3d4e"
  jdir, adir = root / "valid" / "JPEGImages" / vid, root / "valid" / "Annotations" / vid
  jdir.mkdir(parents=True)
  adir.mkdir(parents=True)
  frames = _davis_frames()
  for t, (f, m) in enumerate(frames):
    Image.fromarray(f).save(jdir / f"{5 * t:05d}.jpg")  # every 5th frame, as 'valid'
  _palette_png(adir / "00000.png", frames[0][1])  # object 1 from frame 0
  late = np.zeros_like(frames[0][1])
  late[2:8, 30:40] = 2
  _palette_png(adir / "00010.png", late)  # object 2 appears at frame 2
  (root / "valid" / "meta.json").write_text(
    json.dumps(
      {"videos": {vid: {"objects": {"1": {"frames": ["00000"]}, "2": {"frames": ["00010"]}}}}}
    )
  )
  return root, vid, late


@pytest.mark.integration
def test_ytvos2018_preset_writes_the_submission_layout(params, tmp_path):
  root, vid, late = _ytvos_root(tmp_path)
  res, table = _run(f"benchmark=ytvos2018,runlocal,root={root}", params, tmp_path)
  for k in (0, 2):
    r = res["youtube_vos"][f"K={k}"]
    assert r["videos"] == 1 and r["frames"] == 4
    names = sorted(zipfile.ZipFile(r["zip"]).namelist())
    want = [f"Annotations/{vid}/{5 * t:05d}.png" for t in range(4)]
    assert [n for n in names if n.endswith(".png")] == want
    out = tmp_path / "out" / "youtube_vos" / f"K{k}" / "Annotations" / vid
    ids = [np.asarray(Image.open(out / f"{5 * t:05d}.png")) for t in range(4)]
    assert 2 not in ids[0] and 2 not in ids[1]  # object 2 not before it appears
    np.testing.assert_array_equal(ids[2][late == 2], 2)  # its given mask on its first frame
  assert res["youtube_vos"]["_info"]["paper_G"] == 74.7


def _tree(d):
  return sorted(os.path.relpath(os.path.join(r, f), d) for r, ds, fs in os.walk(d) for f in fs + ds)


@pytest.mark.integration
def test_ytvos_submission_never_replaces_what_it_did_not_write(params, tmp_path, monkeypatch):
  root, vid, _ = _ytvos_root(tmp_path)
  model = checkpoint.load_model(params)
  out = tmp_path / "sub"
  out.mkdir()
  (out / "K2").mkdir()  # a name the run would write, holding the user's file
  (out / "K2" / "mine.png").write_text("the user's")
  (out / "notes.txt").write_text("the user's")
  with pytest.raises(outputs.OutputError, match=r"sub/K2: exists and was not written by"):
    youtube_vos.write_submission(model, str(root), str(out), memories=(0, 2), max_frames=3)
  assert _tree(out) == ["K2", "K2/mine.png", "notes.txt"]  # refused before any work
  shutil.rmtree(out / "K2")
  res = youtube_vos.write_submission(model, str(root), str(out), memories=(0, 2), max_frames=3)
  assert res["K=2"]["zip"] == str(out / "K2.zip") and res["K=2"]["frames"] == 3
  k0 = (out / "K0" / "Annotations" / vid / "00000.png").read_bytes()
  m = json.loads((out / outputs.MANIFEST).read_text())
  assert m["files"] == ["K0", "K0.zip", "K2", "K2.zip"] and m["complete"]
  # A rerun that fails at K=2 keeps the K0 it committed and the K2 of the earlier run, and
  # leaves no staging folder or temporary file.
  calls = []
  real = youtube_vos.segment_video

  def fail_second(*a, **kw):
    calls.append(1)
    if len(calls) == 2:
      raise OSError(28, "No space left on device")
    return real(*a, **kw)

  monkeypatch.setattr(youtube_vos, "segment_video", fail_second)
  before = _tree(out)
  with pytest.raises(OSError, match="No space left"):
    youtube_vos.write_submission(model, str(root), str(out), memories=(0, 2), max_frames=3)
  assert _tree(out) == before
  assert (out / "K0" / "Annotations" / vid / "00000.png").read_bytes() == k0
  assert json.loads((out / outputs.MANIFEST).read_text())["files"] == m["files"]
  assert (out / "notes.txt").read_text() == "the user's"


def test_preset_args_are_checked():
  with pytest.raises(ValueError, match="unknown benchmark 'coco'"):
    seggpt_eval.get_config("benchmark=coco")
  with pytest.raises(ValueError, match="fold=4 but coco20i has 4 folds"):
    seggpt_eval.get_config("benchmark=coco20i,fold=4")
  c = seggpt_eval.get_config("benchmark=coco20i")
  assert [b.episodes for b in c.fewshot.values()] == [1000] * 4 and c.seed == 0
  assert c.fewshot.coco20i_fold0.ensembles == ("feature", "spatial")
  assert len(seggpt_eval.get_config("benchmark=lvis92i").fewshot) == 10
  assert seggpt_eval.get_config("benchmark=lvis92i").fewshot.lvis92i_fold0.episodes == 2300
  assert folds.fold_classes(list(range(25)), 9, 10, "interleaved_equal") == [9, 19]
