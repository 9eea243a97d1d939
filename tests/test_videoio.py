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


@pytest.mark.integration
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


@pytest.mark.integration
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


def _marked(hw=(32, 48)):
  """A frame with a bright block near the top-left corner (stays findable after H.264)."""
  a = np.full(hw + (3,), 40, np.uint8)
  a[2:10, 4:16] = 230
  return a


def _block(a):
  """Bounding box (y0, y1, x0, x1) of the bright block."""
  ys, xs = np.nonzero(a[..., 0] > 135)
  return ys.min(), ys.max(), xs.min(), xs.max()


def _rotated_mp4(path, frames, degrees, hflip=False, vflip=False, fps=10):
  """An MP4 whose stored frames are `frames`, with a display matrix (as phones record)."""
  import av

  c = av.open(str(path), "w", format="mp4")
  s = c.add_stream("libx264", rate=fps)
  s.height, s.width = frames[0].shape[:2]
  s.pix_fmt = "yuv420p"
  s.set_display_rotation(degrees, hflip=hflip, vflip=vflip)
  for f in frames:
    for p in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
      c.mux(p)
  for p in s.encode():
    c.mux(p)
  c.close()


@pytest.mark.parametrize(
  "degrees,hflip,vflip",
  [
    (0, False, False),
    (90, False, False),
    (-90, False, False),
    (180, False, False),
    (0, True, False),
    (0, False, True),
    (90, True, False),
    (90, False, True),
  ],
)
def test_frames_come_out_in_display_orientation(tmp_path, degrees, hflip, vflip):
  """The display matrix PyAV writes (rotate counterclockwise by `degrees`, then mirror) is
  applied on reading; the matrix is really in the file (PyAV reads it back)."""
  import av

  stored = _marked()
  path = tmp_path / "r.mp4"
  _rotated_mp4(path, [stored] * 2, degrees, hflip, vflip)
  with av.open(str(path)) as c:
    f = next(c.decode(video=0))
    assert (f.height, f.width) == stored.shape[:2]  # stored as written
    if degrees in (90, -90) and not (hflip or vflip):
      assert f.rotation == degrees
  want = np.rot90(stored, degrees // 90)
  want = want[:, ::-1] if hflip else want
  want = want[::-1] if vflip else want
  got = list(videoio.read_frames(str(path)))
  assert len(got) == 2 and got[0].shape == want.shape
  assert _block(got[0]) == _block(want)
  info = videoio.probe(str(path))
  assert (info.height, info.width) == want.shape[:2]
  assert videoio.scan(str(path)).num_frames == 2


def test_segment_video_rotated_phone_video(ckpt, tmp_path, capsys):
  """A portrait phone video (stored landscape, display matrix -90: turn clockwise): the first
  mask drawn on the frame as displayed is accepted, one in stored orientation is refused, and
  overlay.mp4 is upright (displayed size, no display matrix, the block where it is shown)."""
  stored = _marked()
  mp4 = tmp_path / "phone.mp4"
  _rotated_mp4(mp4, [stored] * 3, -90)
  shown = np.rot90(stored, -1)
  mask = np.zeros(shown.shape[:2], np.uint8)
  y0, y1, x0, x1 = _block(shown)
  mask[y0 : y1 + 1, x0 : x1 + 1] = 255
  Image.fromarray(mask).save(tmp_path / "shown.png")
  Image.fromarray(np.rot90(mask, 1)).save(tmp_path / "stored.png")
  argv = ["segment-video", "--checkpoint", ckpt, "--video", str(mp4), "--memory", "1"]
  rc = cli.main(
    argv + ["--first-mask", str(tmp_path / "stored.png"), "--out", str(tmp_path / "o1")]
  )
  err = capsys.readouterr().err.strip().splitlines()
  assert rc == 2 and len(err) == 1 and "does not match the video" in err[0], err
  assert not (tmp_path / "o1").exists()
  out = tmp_path / "o2"
  rc = cli.main(argv + ["--first-mask", str(tmp_path / "shown.png"), "--out", str(out)])
  assert rc == 0, capsys.readouterr().err
  np.testing.assert_array_equal(np.asarray(Image.open(out / "00000.png")) > 0, mask > 0)
  import av

  with av.open(str(out / "overlay.mp4")) as c:
    f = next(c.decode(video=0))
    assert (f.height, f.width) == shown.shape[:2] and f.rotation == 0
  ov = next(iter(videoio.read_frames(str(out / "overlay.mp4"))))
  assert _block(ov) == _block(shown)  # the object (white, kept bright) where it is shown


def test_resolution_change_is_refused_before_work(ckpt, tmp_path, capsys):
  """An H.264 stream whose size changes part-way (two encodes back to back): `scan` and
  segment-video refuse it in one line before loading the model; nothing is written."""
  import av

  def h264(hw, n, v):
    path = tmp_path / f"{hw[0]}x{hw[1]}.h264"
    c = av.open(str(path), "w", format="h264")
    s = c.add_stream("libx264", rate=10)
    s.height, s.width = hw
    s.pix_fmt = "yuv420p"
    for _ in range(n):
      for p in s.encode(av.VideoFrame.from_ndarray(np.full(hw + (3,), v, np.uint8), "rgb24")):
        c.mux(p)
    for p in s.encode():
      c.mux(p)
    c.close()
    return path.read_bytes()

  both = tmp_path / "both.h264"
  both.write_bytes(h264((16, 32), 3, 50) + h264((32, 32), 3, 200))
  with av.open(str(both)) as c:  # really two sizes in one stream
    assert {(f.height, f.width) for f in c.decode(video=0)} == {(16, 32), (32, 32)}
  with pytest.raises(videoio.InputError, match="frame 3 is 32x32 .* frame 0 is 32x16"):
    videoio.scan(str(both))
  with pytest.raises(videoio.InputError, match="frame 3 is 32x32"):
    list(videoio.read_frames(str(both)))
  Image.fromarray(np.pad(np.full((4, 4), 255, np.uint8), ((6, 6), (14, 14)))).save(
    tmp_path / "m.png"
  )
  out = tmp_path / "o"
  params = tmp_path / "params"  # a real checkpoint: it is checked first, before the video
  checkpoint.save_model(str(params), seggpt.create("test", image_size=(16, 16), patch=8))
  rc = cli.main(
    ["segment-video", "--checkpoint", str(params), "--video", str(both)]
    + ["--first-mask", str(tmp_path / "m.png"), "--out", str(out)]
  )
  err = capsys.readouterr().err.strip().splitlines()
  assert rc == 2 and len(err) == 1 and "frame 3 is 32x32" in err[0], err  # before the model
  assert not out.exists()
