"""Video files in and out (MP4 and anything FFmpeg reads) with PyAV, frame by frame.

  info = videoio.probe("in.mp4")                 # VideoInfo(fps, width, height, num_frames)
  for frame in videoio.read_frames("in.mp4"):    # uint8 [H, W, 3] RGB, decoded as a stream
    ...
  with videoio.VideoWriter("out.mp4", fps=info.fps) as w:
    w.write(frame)

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


def probe(path: str) -> VideoInfo:
  """Frame rate, size and frame count of a video file's first video stream."""
  with _open(path) as c:
    s = c.streams.video[0]
    rate = s.average_rate or s.guessed_rate or fractions.Fraction(25)
    return VideoInfo(
      fps=fractions.Fraction(rate),
      width=int(s.codec_context.width),
      height=int(s.codec_context.height),
      num_frames=int(s.frames or 0),
    )


def read_frames(path: str, max_frames: int | None = None) -> Iterator[np.ndarray]:
  """Yields uint8 [H, W, 3] RGB frames of the first video stream, in presentation order."""
  av = _av()
  c = _open(path)
  try:
    n = 0
    for frame in c.decode(video=0):
      if max_frames is not None and n >= max_frames:
        return
      yield frame.to_ndarray(format="rgb24")
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
