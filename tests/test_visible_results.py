"""Results people can see: palette label PNGs, Result.save/overlay, query expansion, warnings."""

import logging
import os

import numpy as np
import pytest
from flax import nnx
from PIL import Image

from _shared import shared_data_dir
from incontext import canvas, checkpoint, cli, imageio, inference as I, predict, video
from incontext.models import seggpt

SIZE = (16, 16)


@pytest.fixture(scope="module")
def model():
  return seggpt.SegGPT(seggpt.get_config("test", image_size=SIZE, patch=8), rngs=nnx.Rngs(3))


@pytest.fixture(scope="module")
def ckpt(model, tmp_path_factory):
  d = tmp_path_factory.mktemp("ckpt") / "params"
  checkpoint.save_model(str(d), model, trained_on={"data": "procedural", "steps": 7})
  return str(d)


def _oracle(monkeypatch, paint=None):
  """A 'model' that paints the first prompt's target (or `paint`, a normalised colour)."""

  def fake(model, prompt_imgs, prompt_tgts, queries, *, seg_type, feature_ensemble=True):
    if paint is not None:
      return np.broadcast_to(
        canvas.normalize(np.asarray(paint, np.uint8)), np.shape(queries)
      ).copy()
    return np.broadcast_to(np.asarray(prompt_tgts)[0], np.shape(queries)).copy()

  monkeypatch.setattr(predict, "predict_canvas_batch", fake)


def _pal(path):
  return np.asarray(Image.open(path).getpalette(), np.uint8).reshape(-1, 3)


@pytest.mark.parametrize("fg", [1, 255])
def test_binary_label_png_is_visible(tmp_path, fg):
  ids = np.zeros((6, 9), np.uint8)
  ids[2:5, 3:7] = fg
  # a grey-palette 0/1 file draws label 1 as (1, 1, 1): not used, the model's white is
  grey = np.repeat(np.arange(256, dtype=np.uint8)[:, None], 3, 1)
  pal = predict.label_palette([fg], [[255, 255, 255]], grey)
  p = tmp_path / "m.png"
  imageio.save_label_png(p, ids, pal)
  im = Image.open(p)
  assert im.mode == "P"
  np.testing.assert_array_equal(np.asarray(im), ids)  # index = label id
  np.testing.assert_array_equal(imageio.load_mask(p), ids)  # reads back as ids
  rgb = np.asarray(im.convert("RGB"))
  assert tuple(rgb[3, 4]) == (255, 255, 255) and tuple(rgb[0, 0]) == (0, 0, 0)


def test_label_palette_keeps_a_visible_file_palette():
  davis = video.davis_palette()
  pal = predict.label_palette([1, 2], [[255, 255, 255], [255, 255, 127]], davis)
  np.testing.assert_array_equal(pal[[1, 2]], davis[[1, 2]])
  # two labels in one file colour, or a near-black one: the model's colours instead
  same = davis.copy()
  same[2] = same[1]
  pal = predict.label_palette([1, 2], [[255, 255, 255], [255, 255, 127]], same)
  np.testing.assert_array_equal(pal[[1, 2]], [[255, 255, 255], [255, 255, 127]])
  with pytest.raises(ValueError, match="0..255"):
    imageio.save_label_png("x.png", np.full((2, 2), 300), pal)


@pytest.mark.integration
def test_result_save_and_overlay_round_trip(ckpt, tmp_path, monkeypatch):
  """API on a real photo and its multi-class mask: ids, model colours, overlay, raw."""
  _oracle(monkeypatch)
  coco = shared_data_dir("coco128_seg")
  img = coco / "images" / "train2017" / "000000000009.jpg"
  mask = coco / "masks_semantic" / "train2017" / "000000000009.png"
  seg = I.Segmenter.from_checkpoint(ckpt)
  r = seg.segment((img, mask), str(img))[0]  # one pair and one string query
  assert r.name == "000000000009" and r.labels.shape == r.image.shape[:2]
  paths = r.save(tmp_path / "out", raw=True)
  assert [os.path.basename(p) for p in paths] == [
    "000000000009.png",
    "000000000009_overlay.png",
    "000000000009.raw.npy",
  ]
  ids = sorted(set(np.unique(I.load_mask(mask)).tolist()) - {0})
  lab = Image.open(paths[0])
  assert lab.mode == "P"
  np.testing.assert_array_equal(np.asarray(lab), r.labels)
  assert set(np.unique(r.labels).tolist()) == {0, *ids}
  np.testing.assert_array_equal(_pal(paths[0])[ids], canvas.build_palette(len(ids))[1:])
  np.testing.assert_array_equal(np.asarray(lab.convert("RGB")), r.colored)
  ov = np.asarray(Image.open(paths[1]))
  np.testing.assert_array_equal(ov, r.overlay())
  np.testing.assert_array_equal(ov, imageio.overlay(I.load_image(img), r.colored))
  np.testing.assert_array_equal(np.load(paths[2]), r.raw)
  assert r.legend()["labels"][0] == {"id": ids[0], "colour": [255, 255, 255]}


def test_string_query_is_one_query(ckpt, tmp_path, monkeypatch):
  _oracle(monkeypatch)
  a = np.zeros((20, 24, 3), np.uint8)
  a[5:10, 5:12] = 200
  Image.fromarray(a).save(tmp_path / "query_image.png")
  m = np.zeros((20, 24), np.uint8)
  m[4:12, 4:14] = 1
  seg = I.Segmenter.from_checkpoint(ckpt)
  for q in (str(tmp_path / "query_image.png"), tmp_path / "query_image.png", a):
    res = seg.segment([(a, m)], q)
    assert len(res) == 1 and res[0].labels.shape == (20, 24)
    assert set(np.unique(res[0].labels).tolist()) == {0, 1}


@pytest.mark.integration
def test_query_folders_and_globs(ckpt, tmp_path, capsys, monkeypatch):
  _oracle(monkeypatch)
  ex = shared_data_dir("examples", "perseg_examples")
  q = tmp_path / "queries"
  q.mkdir()
  for n in ("b_img.jpg", "a_img.jpg", "c_img.png"):
    Image.open(ex / "cat_01.jpg").save(q / n)
  (q / "._a_img.jpg").write_bytes(b"\0\1junk")  # macOS resource fork: skipped
  (q / ".DS_Store").write_bytes(b"junk")
  (q / "notes.txt").write_text("not an image")
  assert imageio.list_images([q]) == [str(q / n) for n in ("a_img.jpg", "b_img.jpg", "c_img.png")]
  assert imageio.list_images([str(q / "*.jpg")]) == [str(q / "a_img.jpg"), str(q / "b_img.jpg")]
  with pytest.raises(imageio.InputError, match=r"\*.gif: no query images match"):
    imageio.list_images([str(q / "*.gif")])
  with pytest.raises(imageio.InputError, match="no such query image"):
    imageio.list_images([str(q / "missing.jpg")])
  argv = [
    "segment",
    "--checkpoint",
    ckpt,
    "--prompt",
    ex / "cat_00.jpg",
    ex / "cat_00.png",
    "--query",
    q / "*.jpg",
    q / "c_img.png",
    "--out",
    tmp_path / "o",
  ]
  assert cli.main([str(a) for a in argv]) == 0, capsys.readouterr().err
  assert sorted(os.listdir(tmp_path / "o")) == sorted(
    [f"{n}{s}" for n in ("a_img", "b_img", "c_img") for s in (".png", "_overlay.png")]
    + ["labels.json", ".incontext-outputs.json"]
  )
  empty = tmp_path / "empty"
  empty.mkdir()
  argv[-3:] = [empty, "--out", tmp_path / "o2"]
  assert cli.main([str(a) for a in argv]) == 2
  assert "empty: folder has no query images" in capsys.readouterr().err


@pytest.mark.integration
def test_warnings_empty_prediction_and_procedural_model(ckpt, tmp_path, monkeypatch, caplog):
  _oracle(monkeypatch, paint=(0, 0, 0))  # the model paints all background
  ex = shared_data_dir("examples", "perseg_examples")
  seg = I.Segmenter.from_checkpoint(ckpt)
  queries = [ex / "cat_01.jpg", ex / "cat_02.jpg"]
  with caplog.at_level(logging.WARNING, logger="incontext"):
    res = seg.segment([(ex / "cat_00.jpg", ex / "cat_00.png")], queries)
    seg.segment([(ex / "cat_00.jpg", ex / "cat_00.png")], queries[:1])
  assert all(r.empty for r in res)
  msgs = [r.getMessage() for r in caplog.records]
  proc = [m for m in msgs if "procedural shapes only (7 steps)" in m]
  assert len(proc) == 1 and proc[0].startswith(ckpt)  # once per Segmenter
  for q in queries:
    assert f"{q}: empty prediction (every pixel is background)" in msgs
  assert all("\n" not in m for m in msgs)  # one line each
  # a model with other metadata gives no procedural warning
  other = str(tmp_path / "conv")
  checkpoint.save_model(other, seg.model, trained_on={"data": "converted weights"})
  caplog.clear()
  with caplog.at_level(logging.WARNING, logger="incontext"):
    I.Segmenter.from_checkpoint(other).segment(
      [(ex / "cat_00.jpg", ex / "cat_00.png")], queries[:1]
    )
  assert [r.getMessage() for r in caplog.records] == [
    f"{queries[0]}: empty prediction (every pixel is background)"
  ]


def test_trainer_records_what_it_trained_on():
  from experiments.configs import seggpt_train
  from incontext.train import trainer

  c = seggpt_train.get_config("preset=quickstart")
  assert trainer.trained_on(c, 400) == {"data": "procedural", "steps": 400, "init": "scratch"}
  c = seggpt_train.get_config("preset=real")
  t = trainer.trained_on(c, 10)
  assert t["data"][:2] == ["coco128_seg", "clothing_co_parsing"] and "procedural" in t["data"]
  assert checkpoint.procedural_only_warning({"trained_on": t}) is None


def test_video_binary_255_is_visible(model, tmp_path):
  """A 0/255 first mask: object 255 in the PNG, drawn white (not DAVIS 255, near-grey)."""
  p = tmp_path / "first.png"
  m = np.zeros((12, 16), np.uint8)
  m[3:8, 4:10] = 255
  Image.fromarray(m).save(p)
  ids = video.read_id_mask(str(p))
  pal = video.first_mask_colours(str(p), video.object_ids(ids))
  video.save_id_png(str(tmp_path / "out.png"), ids, pal)
  im = Image.open(tmp_path / "out.png")
  np.testing.assert_array_equal(np.asarray(im), m)
  assert tuple(np.asarray(im.convert("RGB"))[4, 5]) == (255, 255, 255)
  frame = np.full((12, 16, 3), 200, np.uint8)
  ov = video.overlay(frame, ids, pal)
  assert tuple(ov[4, 5]) == (200, 200, 200) and tuple(ov[0, 0]) == (80, 80, 80)
  # a DAVIS palette first mask keeps its colours
  d = tmp_path / "davis.png"
  video.save_id_png(str(d), (m > 0).astype(np.int32) * 2)
  pal = video.first_mask_colours(str(d), [2])
  assert tuple(pal[2]) == tuple(video.davis_palette()[2])


def test_segment_reads_each_prompt_and_query_file_once(tmp_path, monkeypatch):
  """`Segmenter.segment` opens every file once: the prompt mask gives its label ids and its
  palette (the label PNG's colours) from one read."""
  model = seggpt.create("test", image_size=SIZE, patch=8, drop_path=0.0, seed=0)
  rng = np.random.default_rng(0)
  for name in ("p.jpg", "q.jpg"):
    Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(tmp_path / name)
  ids = np.zeros((40, 48), np.uint8)
  ids[5:20, 5:30], ids[25:35, 10:40] = 1, 2
  mask = Image.fromarray(ids, mode="P")
  davis = video.davis_palette()
  mask.putpalette(davis.reshape(-1).tolist())
  mask.save(tmp_path / "m.png")
  opened = []
  real_open = imageio.Image.open

  def counting(fp, *a, **kw):
    opened.append(os.path.basename(os.fspath(fp)))
    return real_open(fp, *a, **kw)

  monkeypatch.setattr(imageio.Image, "open", counting)
  (res,) = I.Segmenter(model).segment(
    [(str(tmp_path / "p.jpg"), str(tmp_path / "m.png"))], [str(tmp_path / "q.jpg")]
  )
  assert sorted(opened) == ["m.png", "p.jpg", "q.jpg"], opened
  np.testing.assert_array_equal(res.label_colours()[[1, 2]], davis[[1, 2]])  # the file's own
