"""Video files: PyAV read/write round trip and `segment-video --video IN.mp4` on a short MP4
encoded from a DAVIS sequence (same masks as `--frames` on the decoded frames)."""

import fractions
import os

import numpy as np
import pytest
from flax import nnx
from PIL import Image

pytest.importorskip("av", reason="PyAV (the video extra) is not installed")

from _shared import shared_data_dir  # noqa: E402
from incontext import checkpoint, cli, videoio  # noqa: E402
from incontext.models import seggpt  # noqa: E402

SIZE = (32, 32)
HW = (54, 96)  # frames downscaled from DAVIS 480p (even sizes: no yuv420p padding)
FPS = fractions.Fraction(12)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
  model = seggpt.SegGPT(seggpt.get_config("test", image_size=SIZE, patch=8), rngs=nnx.Rngs(3))
  d = tmp_path_factory.mktemp("ckpt") / "params"
  checkpoint.save_model(str(d), model)
  return str(d)


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
  """(mp4 path, first-mask path): 5 frames of DAVIS 'boat', encoded with PyAV."""
  davis = shared_data_dir("davis2016_subset")
  d = tmp_path_factory.mktemp("clip")
  mp4 = d / "boat.mp4"
  with videoio.VideoWriter(str(mp4), fps=FPS) as w:
    for i in range(5):
      im = Image.open(davis / "JPEGImages" / "480p" / "boat" / f"{i:05d}.jpg").convert("RGB")
      w.write(np.asarray(im.resize(HW[::-1], Image.BILINEAR)))
  m = Image.open(davis / "Annotations" / "480p" / "boat" / "00000.png")
  m.resize(HW[::-1], Image.NEAREST).save(d / "first.png")
  return mp4, d / "first.png"


def test_writer_reader_round_trip(tmp_path):
  rng = np.random.default_rng(0)
  flat = [np.full((31, 45, 3), v, np.uint8) for v in (20, 120, 220)]  # odd size: padded
  path = tmp_path / "x.mp4"
  with videoio.VideoWriter(str(path), fps=fractions.Fraction(30000, 1001)) as w:
    for f in flat:
      w.write(f)
  info = videoio.probe(str(path))
  assert info.fps == fractions.Fraction(30000, 1001)
  assert (info.height, info.width) == (32, 46)
  back = list(videoio.read_frames(str(path)))
  assert len(back) == 3
  for f, b in zip(flat, back):
    # Lossy H.264 on flat colours: within a few grey levels (crf 18, limited-range YUV).
    assert np.abs(b[:31, :45].astype(int) - f).max() <= 3
  with pytest.raises(ValueError, match="frame 1 is"):
    with videoio.VideoWriter(str(tmp_path / "y.mp4"), fps=10) as w:
      w.write(flat[0])
      w.write(rng.integers(0, 255, (8, 8, 3)).astype(np.uint8))


def test_unreadable_video(tmp_path):
  bad = tmp_path / "bad.mp4"
  bad.write_bytes(b"not a video")
  with pytest.raises(ValueError, match="bad.mp4: cannot read video"):
    videoio.probe(str(bad))


def test_segment_video_mp4_matches_frames(ckpt, clip, tmp_path, capsys):
  mp4, first = clip
  out = tmp_path / "out"
  rc = cli.main(
    [
      "segment-video",
      "--checkpoint",
      ckpt,
      "--video",
      str(mp4),
      "--first-mask",
      str(first),
      "--out",
      str(out),
      "--memory",
      "2",
    ]
  )
  assert rc == 0, capsys.readouterr().err
  names = [f"{i:05d}.png" for i in range(5)]
  assert sorted(os.listdir(out)) == sorted([".incontext-outputs.json", *names, "overlay.mp4"])
  assert not [f for f in os.listdir(tmp_path) if f.startswith(".tmp")]
  info = videoio.probe(str(out / "overlay.mp4"))
  assert info.fps == FPS and (info.height, info.width) == HW
  assert len(list(videoio.read_frames(str(out / "overlay.mp4")))) == 5
  # The same decoded frames as a folder: identical masks.
  frames = tmp_path / "frames"
  frames.mkdir()
  for i, f in enumerate(videoio.read_frames(str(mp4))):
    Image.fromarray(f).save(frames / f"{i:05d}.png")
  ref = tmp_path / "ref"
  rc = cli.main(
    [
      "segment-video",
      "--checkpoint",
      ckpt,
      "--frames",
      str(frames),
      "--first-mask",
      str(first),
      "--out",
      str(ref),
      "--memory",
      "2",
      "--no-gif",
    ]
  )
  assert rc == 0, capsys.readouterr().err
  for n in names:
    a, b = Image.open(out / n), Image.open(ref / n)
    assert a.mode == "P" and a.size == HW[::-1]
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  np.testing.assert_array_equal(
    np.asarray(Image.open(out / names[0])), np.asarray(Image.open(first))
  )


def test_segment_video_bad_mask_size(ckpt, clip, tmp_path, capsys):
  mp4, _ = clip
  m = tmp_path / "m.png"
  Image.fromarray(np.full((10, 10), 255, np.uint8)).save(m)
  rc = cli.main(
    [
      "segment-video",
      "--checkpoint",
      ckpt,
      "--video",
      str(mp4),
      "--first-mask",
      str(m),
      "--out",
      str(tmp_path / "o"),
    ]
  )
  assert rc == 2
  assert "does not match the video" in capsys.readouterr().err
  assert not os.path.exists(tmp_path / "o")
