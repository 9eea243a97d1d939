"""Video propagation: FIFO memory, object ids kept through colours, DAVIS PNGs, CLI."""

import os

import numpy as np
import pytest
from PIL import Image

from incontext import canvas, checkpoint, cli, imageio, predict, video
from incontext.models import seggpt

SIZE = (32, 32)


@pytest.fixture(scope="module")
def model():
  return seggpt.create("test", image_size=SIZE, patch=8, drop_path=0.0, seed=1)


def _video(n=5, h=40, w=48, seed=0):
  """A red and a green square moving right by 2 px per frame on grey noise; ids 3 and 7."""
  rng = np.random.default_rng(seed)
  frames, ids = [], []
  for t in range(n):
    f = rng.integers(90, 110, (h, w, 3)).astype(np.uint8)
    m = np.zeros((h, w), np.int32)
    f[4:14, 2 + 2 * t : 12 + 2 * t] = (220, 30, 30)
    m[4:14, 2 + 2 * t : 12 + 2 * t] = 3
    f[18:28, 14 + t : 22 + t] = (30, 220, 30)
    m[18:28, 14 + t : 22 + t] = 7
    frames.append(f)
    ids.append(m)
  return frames, ids


def test_ids_colours_round_trip():
  ids = [3, 7, 255]
  pal = predict.model_palette(ids)
  assert len(np.unique(pal, axis=0)) == 4
  m = np.array([[0, 3, 7], [255, 3, 0]])
  col = video.ids_to_colours(m, ids, pal)
  np.testing.assert_array_equal(video.colours_to_ids(col.astype(np.float32), ids, pal), m)
  # single object: white
  np.testing.assert_array_equal(predict.model_palette([1])[1], [255, 255, 255])


def test_fifo_memory_and_colour_masks(model):
  """A stub predictor that returns the newest prompt's target: the FIFO must hold each frame's
  decoded colour mask (both objects kept apart), never more than K + 1 prompts."""
  frames, ids = _video(6, h=32, w=32)  # at the model's size: no resampling losses
  seen = []

  def stub(m, imgs, tgts, q, *, seg_type, feature_ensemble):
    seen.append((len(imgs), feature_ensemble, seg_type))
    return tgts[-1]

  out = list(video.propagate(model, frames, ids[0], memory=2, predict_fn=stub))
  assert [s[0] for s in seen] == [1, 2, 3, 3, 3]
  assert [s[1] for s in seen] == [False, True, True, True, True]
  assert all(s[2] == "instance" for s in seen)
  assert len(out) == 6
  np.testing.assert_array_equal(out[0], ids[0])
  for o in out[1:]:  # copying through the memory keeps both objects with their own ids
    np.testing.assert_array_equal(o, ids[0])
  seen.clear()
  list(video.propagate(model, frames, ids[0], memory=0, predict_fn=stub))
  assert [s[0] for s in seen] == [1] * 5


def test_threshold_decoding():
  """threshold=0.5 is the nearest-colour rule (any single colour); lower thresholds only add
  foreground; a grey at 45% is background by the nearest colour, object at threshold 0.4."""
  lab = predict.labels_from_prediction
  x = np.random.default_rng(0).uniform(0, 255, (24, 24, 3)).astype(np.float32)
  for col in ((255, 255, 255), (128, 0, 0), (0, 64, 192)):
    pal = np.array([(0, 0, 0), col], np.uint8)
    np.testing.assert_array_equal(lab(x, pal, [5], threshold=0.5), lab(x, pal, [5]))
  white = predict.model_palette([1])
  masks = [lab(x, white, [1], threshold=t) for t in (0.7, 0.5, 0.3, 0.1)]
  for hi, lo in zip(masks, masks[1:]):
    assert ((hi == 1) <= (lo == 1)).all() and (lo == 1).sum() > (hi == 1).sum()
  grey = np.full((2, 3, 3), 0.45 * 255, np.float32)
  assert (lab(grey, white, [1]) == 0).all() and (lab(grey, white, [1], threshold=0.4) == 1).all()
  with pytest.raises(ValueError, match="needs one label"):
    lab(x, canvas.build_palette(2), [1, 2], threshold=0.5)
  with pytest.raises(ValueError, match=r"in \(0, 1\)"):
    lab(x, white, [1], threshold=1.5)


def test_propagate_threshold_outputs_and_memory(model):
  """A stub that paints the newest prompt's mask at 40% grey: with the nearest colour the
  object is lost at frame 1 (and the memory then holds an empty mask); with threshold 0.3
  it is kept in every output and every memory entry."""
  frames, ids = _video(5, h=32, w=32)
  one = (ids[0] == 3).astype(np.int32)
  seen = []

  def dim(m, imgs, tgts, q, *, seg_type, feature_ensemble):
    seen.append(canvas.denormalize(tgts[-1]).mean(-1) > 128)
    return canvas.normalize(0.4 * canvas.denormalize(tgts[-1]))

  out = list(video.propagate(model, frames, one, memory=1, predict_fn=dim))
  assert all((o == 0).all() for o in out[1:])
  seen.clear()
  out = list(video.propagate(model, frames, one, memory=1, predict_fn=dim, threshold=0.3))
  for o in out:
    np.testing.assert_array_equal(o, one)
  for s in seen:  # the newest prompt (first frame, then the memory)
    np.testing.assert_array_equal(s, one == 1)
  with pytest.raises(ValueError, match="single-object"):
    next(video.propagate(model, frames, ids[0], threshold=0.3))
  next(video.propagate(model, frames, one, threshold=0.3))  # frame 0 is the mask itself


def test_propagate_real_model_output_ids(model):
  frames, ids = _video(4)
  out = list(video.propagate(model, frames, ids[0], memory=2))
  assert len(out) == 4
  for o in out:
    assert o.shape == (40, 48) and set(np.unique(o)) <= {0, 3, 7}
  with pytest.raises(ValueError, match="no object"):
    list(video.propagate(model, frames, np.zeros((40, 48), np.int32)))


def test_davis_png_and_palette(tmp_path):
  m = np.zeros((6, 7), np.int32)
  m[1:3, 1:3] = 2
  m[4, 4] = 254
  p = str(tmp_path / "00001.png")
  video.save_id_png(p, m)
  im = Image.open(p)
  assert im.mode == "P"
  np.testing.assert_array_equal(np.asarray(im), m)
  np.testing.assert_array_equal(video.read_id_mask(p), m)
  # 255 beside other ids in a palette mask is VOC's void: read as background (docs/design.md).
  m[5, 5] = 255
  video.save_id_png(p, m)
  assert np.asarray(Image.open(p))[5, 5] == 255
  np.testing.assert_array_equal(video.read_id_mask(p), np.where(m == 255, 0, m))
  pal = video.davis_palette()
  assert [tuple(pal[i]) for i in (1, 2, 3)] == [(128, 0, 0), (0, 128, 0), (128, 128, 0)]
  # an RGB colour mask: ids 1..K in sorted colour order
  rgb = np.zeros((4, 4, 3), np.uint8)
  rgb[0, 0] = (255, 0, 0)
  rgb[1, 1] = (0, 0, 255)
  Image.fromarray(rgb).save(tmp_path / "rgb.png")
  got = video.read_id_mask(str(tmp_path / "rgb.png"))
  assert got[0, 0] == 2 and got[1, 1] == 1 and got.sum() == 3


def test_cli_segment_video(model, tmp_path, monkeypatch):
  params = str(tmp_path / "params")
  checkpoint.save_model(params, model)
  frames, ids = _video(4)
  fdir = tmp_path / "frames"
  fdir.mkdir()
  for t, f in enumerate(frames):
    Image.fromarray(f).save(fdir / f"{t:05d}.jpg", quality=95)
  video.save_id_png(str(tmp_path / "first.png"), ids[0])
  out = tmp_path / "out"
  argv = [
    "segment-video",
    "--checkpoint",
    params,
    "--frames",
    str(fdir),
    "--first-mask",
    str(tmp_path / "first.png"),
    "--out",
    str(out),
    "--memory",
    "2",
  ]
  opened = []
  real_open = imageio.Image.open

  def counting(fp, *a, **kw):
    opened.append(os.path.basename(os.fspath(fp)))
    return real_open(fp, *a, **kw)

  monkeypatch.setattr(imageio.Image, "open", counting)
  assert cli.main(argv) == 0
  monkeypatch.undo()
  assert opened.count("first.png") == 1, opened  # its ids and colours from one read
  pal = np.asarray(Image.open(out / "00001.png").getpalette(), np.uint8).reshape(-1, 3)
  np.testing.assert_array_equal(pal[[3, 7]], video.davis_palette()[[3, 7]])  # the file's own
  assert sorted(os.listdir(out)) == [
    ".incontext-outputs.json",
    "00000.png",
    "00001.png",
    "00002.png",
    "00003.png",
    "overlay.gif",
  ]
  np.testing.assert_array_equal(np.asarray(Image.open(out / "00000.png")), ids[0])
  for t in range(1, 4):
    got = np.asarray(Image.open(out / f"{t:05d}.png"))
    assert got.shape == (40, 48) and set(np.unique(got)) <= {0, 3, 7}
  assert Image.open(out / "overlay.gif").n_frames == 4
  # errors: existing output, wrong mask size, missing frames; nothing half-written
  assert cli.main(argv) == 2
  Image.fromarray(np.zeros((10, 10), np.uint8)).save(tmp_path / "small.png")
  bad = [
    "segment-video",
    "--checkpoint",
    params,
    "--frames",
    str(fdir),
    "--first-mask",
    str(tmp_path / "small.png"),
    "--out",
    str(tmp_path / "o2"),
  ]
  assert cli.main(bad) == 2
  bad[4] = str(tmp_path / "nope")
  assert cli.main(bad) == 2
  assert not (tmp_path / "o2").exists()
  assert not [f for f in os.listdir(tmp_path) if f.startswith(".tmp")]


def test_cli_errors_message(model, tmp_path, capsys):
  # A real params dir: the checkpoint is checked first, before jax is imported.
  checkpoint.save_model(str(tmp_path / "params"), model)
  frames, ids = _video(2)
  fdir = tmp_path / "frames"
  fdir.mkdir()
  Image.fromarray(frames[0]).save(fdir / "a.jpg")
  Image.fromarray(np.zeros((10, 10), np.uint8)).save(tmp_path / "small.png")
  rc = cli.main(
    [
      "segment-video",
      "--checkpoint",
      str(tmp_path / "params"),
      "--frames",
      str(fdir),
      "--first-mask",
      str(tmp_path / "small.png"),
      "--out",
      str(tmp_path / "o"),
    ]
  )
  assert rc == 2
  err = capsys.readouterr().err
  assert "small.png: size (10, 10) (w, h) does not match the first frame" in err
  video.save_id_png(str(tmp_path / "two.png"), ids[0])
  rc = cli.main(
    [
      "segment-video",
      "--checkpoint",
      str(tmp_path / "params"),
      "--frames",
      str(fdir),
      "--first-mask",
      str(tmp_path / "two.png"),
      "--out",
      str(tmp_path / "o"),
      "--threshold",
      "0.4",
    ]
  )
  assert rc == 2 and "--threshold needs a single-object --first-mask" in capsys.readouterr().err
  assert not (tmp_path / "o").exists()
