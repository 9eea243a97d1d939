"""Video files in and out (MP4 and anything FFmpeg reads) with PyAV, frame by frame.

  info = videoio.probe("in.mp4")                 # VideoInfo(fps, width, height, num_frames)
  for frame in videoio.read_frames("in.mp4"):    # uint8 [H, W, 3] RGB, decoded as a stream
    ...
  with videoio.VideoWriter("out.mp4", fps=info.fps) as w:
    w.write(frame)

Frames come out in display orientation: a display matrix (the rotation a phone records
instead of turning the pixels; flips too) is applied, as images get their EXIF orientation, so
`probe` gives the displayed size and the overlay written from the frames plays upright. A
stream whose frame size changes part-way is refused: `scan` finds it (and the exact frame count)
before any work, `read_frames` stops with an InputError at the first such frame.

Frames are decoded one at a time (never the whole video in memory). The writer encodes H.264
(yuv420p, which needs even sizes: an odd width or height is padded by repeating the last
column or row) so browsers can play the file. PyAV (`pip install av`) is imported lazily.
"""

from __future__ import annotations

import dataclasses
import fractions
import os
from typing import Iterator

import numpy as np

from incontext.imageio import InputError, check_regular_file


def _av():
  try:
    import av
  except ModuleNotFoundError:
    raise InputError(
      "reading and writing video files needs PyAV: pip install 'incontext[video]'"
    ) from None
  return av


@dataclasses.dataclass(frozen=True)
class VideoInfo:
  fps: fractions.Fraction  # average frame rate of the first video stream
  width: int
  height: int
  num_frames: int  # from the container (0 when it does not say)


def _open(path: str):
  av = _av()
  path = os.fspath(path)
  check_regular_file(path, "video")
  try:
    c = av.open(path)
  except (av.error.FFmpegError, ValueError) as e:
    raise InputError(f"{path}: cannot read video ({type(e).__name__}: {e})") from None
  if not c.streams.video:
    c.close()
    raise InputError(f"{path}: has no video stream")
  return c


# The 2x2 part of a display matrix (in units of 1.0) -> (k, flip): the displayed frame is
# np.rot90(stored, k) (k quarter turns counterclockwise), then mirrored left-right ("h") or
# upside down ("v"). The eight orientations, as FFmpeg / PyAV write them
# (`VideoStream.set_display_rotation(degrees, hflip, vflip)`: rotate, then mirror).
_ORIENTATIONS = {
  (1, 0, 0, 1): (0, None),
  (1, 0, 0, -1): (0, "v"),
  (-1, 0, 0, 1): (0, "h"),
  (-1, 0, 0, -1): (2, None),
  (0, -1, 1, 0): (1, None),
  (0, 1, -1, 0): (-1, None),
  (0, 1, 1, 0): (1, "v"),
  (0, -1, -1, 0): (1, "h"),
}


def _orientation(frame, path: str) -> tuple[int, str | None]:
  """(k, flip) of a decoded frame's display matrix (`_ORIENTATIONS`); (0, None) without one."""
  for sd in getattr(frame, "side_data", ()):
    if "DISPLAYMATRIX" not in str(sd.type):
      continue
    m = np.frombuffer(bytes(sd), np.int32)
    if m.size < 9:
      continue
    a = m[[0, 1, 3, 4]].astype(np.float64) / 65536.0
    key = tuple(int(v) for v in np.round(a))
    if key not in _ORIENTATIONS or np.abs(a - key).max() > 1e-3:
      deg = getattr(frame, "rotation", None)
      raise InputError(
        f"{path}: the video's display matrix rotates by {deg} degrees or scales; only "
        "quarter turns and flips are supported"
      )
    return _ORIENTATIONS[key]
  return 0, None


def _upright(a: np.ndarray, orient: tuple[int, str | None]) -> np.ndarray:
  k, flip = orient
  if k:
    a = np.rot90(a, k)
  if flip == "h":
    a = a[:, ::-1]
  elif flip == "v":
    a = a[::-1]
  return np.ascontiguousarray(a)


def _displayed_size(frame, orient) -> tuple[int, int]:
  """(width, height) of a frame as displayed."""
  w, h = int(frame.width), int(frame.height)
  return (h, w) if orient[0] % 2 else (w, h)


def probe(path: str) -> VideoInfo:
  """Frame rate, displayed size (from the first frame, its display matrix applied) and the
  container's frame count of a video file's first video stream."""
  av = _av()
  with _open(path) as c:
    s = c.streams.video[0]
    rate = s.average_rate or s.guessed_rate or fractions.Fraction(25)
    w, h = int(s.codec_context.width), int(s.codec_context.height)
    try:
      first = next(iter(c.decode(video=0)), None)
    except av.error.FFmpegError as e:
      raise InputError(f"{path}: cannot decode video ({type(e).__name__}: {e})") from None
    if first is not None:
      w, h = _displayed_size(first, _orientation(first, path))
    return VideoInfo(fps=fractions.Fraction(rate), width=w, height=h, num_frames=int(s.frames or 0))


def scan(path: str) -> VideoInfo:
  """`probe` with the exact frame count, after decoding every frame (no colour conversion,
  one frame in memory at a time): InputError if there is none, or if the frame size or
  orientation changes part-way (checked before any work, rather than failing at that frame
  after the frames before it were processed)."""
  av = _av()
  info = probe(path)
  n, first = 0, None
  with _open(path) as c:
    try:
      for frame in c.decode(video=0):
        shape = (frame.width, frame.height, _orientation(frame, path))
        if first is None:
          first = shape
        elif shape != first:
          raise InputError(
            f"{path}: frame {n} is {shape[0]}x{shape[1]} (stored), frame 0 is "
            f"{first[0]}x{first[1]}; a video whose frame size or orientation changes is "
            "not supported (re-encode it at one size)"
          )
        n += 1
    except av.error.FFmpegError as e:
      raise InputError(f"{path}: cannot decode video ({type(e).__name__}: {e})") from None
  if n == 0:
    raise InputError(f"{path}: the video has no frames")
  return dataclasses.replace(info, num_frames=n)


def read_frames(path: str, max_frames: int | None = None) -> Iterator[np.ndarray]:
  """Yields uint8 [H, W, 3] RGB frames of the first video stream, in presentation order and
  display orientation; InputError at a frame whose size differs from the first's."""
  av = _av()
  c = _open(path)
  try:
    n, first = 0, None
    for frame in c.decode(video=0):
      if max_frames is not None and n >= max_frames:
        return
      orient = _orientation(frame, path)
      a = _upright(frame.to_ndarray(format="rgb24"), orient)
      if first is None:
        first = a.shape
      elif a.shape != first:
        raise InputError(
          f"{path}: frame {n} is {a.shape[1]}x{a.shape[0]}, frame 0 is {first[1]}x{first[0]}; "
          "a video whose frame size changes is not supported (re-encode it at one size)"
        )
      yield a
      n += 1
    if n == 0:
      raise InputError(f"{path}: the video has no frames")
  except av.error.FFmpegError as e:
    raise InputError(f"{path}: cannot decode video ({type(e).__name__}: {e})") from None
  finally:
    c.close()


class VideoWriter:
  """H.264 MP4 writer (yuv420p) at a given frame rate; size fixed by the first frame."""

  def __init__(self, path: str, fps, *, crf: int = 18):
    self.path = os.fspath(path)
    self.fps = fractions.Fraction(fps).limit_denominator(1001 * 1000)
    self.crf = int(crf)
    self._c = self._s = None
    self._hw = None
    self.num_frames = 0

  def write(self, frame: np.ndarray) -> None:
    """Appends a uint8 [H, W, 3] RGB frame (every frame must have the first one's size)."""
    av = _av()
    frame = np.asarray(frame)
    if frame.ndim != 3 or frame.shape[-1] != 3 or frame.dtype != np.uint8:
      raise ValueError(
        f"{self.path}: frames must be uint8 [H, W, 3], got {frame.dtype} {frame.shape}"
      )
    if self._c is None:
      self._hw = frame.shape[:2]
      self._c = av.open(self.path, "w", format="mp4")
      self._s = self._c.add_stream("libx264", rate=self.fps)
      self._s.width = frame.shape[1] + frame.shape[1] % 2
      self._s.height = frame.shape[0] + frame.shape[0] % 2
      self._s.pix_fmt = "yuv420p"
      self._s.options = {"crf": str(self.crf)}
    elif frame.shape[:2] != self._hw:
      raise ValueError(
        f"{self.path}: frame {self.num_frames} is {frame.shape[1::-1]} (w, h), "
        f"the first was {self._hw[::-1]}"
      )
    h, w = frame.shape[:2]
    if h % 2 or w % 2:
      frame = np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
    vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
    for pkt in self._s.encode(vf):
      self._c.mux(pkt)
    self.num_frames += 1

  def close(self) -> None:
    if self._c is not None:
      for pkt in self._s.encode():
        self._c.mux(pkt)
      self._c.close()
      self._c = None

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()
