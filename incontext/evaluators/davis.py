"""DAVIS-style semi-supervised video evaluation: propagate the first mask, score J and F.

Reads the DAVIS layout (JPEGImages/RES/SEQ/*.jpg, Annotations/RES/SEQ/*.png; 2016 masks are 0/255
and become object 1, 2017 palette indices are object ids). For each memory size K it runs
`incontext.video.propagate` and scores the benchmark's J and F (`incontext.metrics`: frames
1..N-2, per object, averaged); the copy-the-first-mask baseline is scored beside it.
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np
from tqdm import tqdm

from incontext import imageio, metrics, outputs, video


def split_sequences(root: str, *, year: int | str = 2017, split: str = "val") -> list[str]:
  """The sequence names of ROOT/ImageSets/{year}/{split}.txt (the official split files)."""
  path = os.path.join(root, "ImageSets", str(year), f"{split}.txt")
  if not os.path.exists(path):
    raise FileNotFoundError(f"missing DAVIS split file: {path}")
  with open(path) as f:
    return [l.strip() for l in f if l.strip()]


def frame_names(
  root: str, seq: str, resolution: str = "480p", max_frames: int | None = None
) -> list[str]:
  """File stems of the sequence's frames (the names the official evaluation expects)."""
  paths = video.list_frames(os.path.join(root, "JPEGImages", resolution, seq))[:max_frames]
  return [os.path.splitext(os.path.basename(p))[0] for p in paths]


def read_sequence(root: str, seq: str, resolution: str = "480p", max_frames: int | None = None):
  """(frames [N] uint8 [H, W, 3], gt ids [N] int [H, W]) of one DAVIS sequence."""
  jdir = os.path.join(root, "JPEGImages", resolution, seq)
  adir = os.path.join(root, "Annotations", resolution, seq)
  paths = video.list_frames(jdir)[:max_frames]
  frames = [imageio.load_image(p) for p in paths]
  gts = []
  for p in paths:
    a = os.path.join(adir, os.path.splitext(os.path.basename(p))[0] + ".png")
    gts.append(video.read_id_mask(a))
  vals = set(np.unique(np.stack(gts)).tolist())
  if vals <= {0, 255}:  # DAVIS 2016: binary 0/255 -> object 1
    gts = [(g == 255).astype(np.int32) for g in gts]
  return frames, gts


def evaluate_davis(
  model,
  root: str,
  sequences: Sequence[str],
  *,
  memories: Sequence[int] = (0, 8),
  resolution: str = "480p",
  max_frames: int | None = None,
  seg_type: str = "instance",
  save_dir: str | None = None,
  threshold: float | None = None,
) -> dict:
  """{'K=<k>': {'J&F', 'J', 'F', 'per_sequence'}, 'copy first mask (baseline)': {...}} in %.

  threshold: the single-object decision threshold of `video.propagate` (None: nearest colour).
  save_dir: write SAVE_DIR/K{k}/SEQ/FRAME.png (palette PNGs of object ids, named like the
    sequence's frames): each K{k} folder is a results folder in the layout of the official
    davis2017-evaluation code (semi-supervised task), written under `incontext.outputs`' rules
    (each SEQ folder moved into place when complete and recorded in K{k}'s manifest; a rerun
    replaces only those, and a SEQ it did not write is refused before any work).
  """
  mask_dirs = {  # every name checked before any work
    k: outputs.OutputDir(
      os.path.join(save_dir, f"K{k}"),
      command="davis-masks",
      overwrite=True,
      add=True,
      names=sequences,
      folders=sequences,
    )
    for k in (memories if save_dir else ())
  }
  accs = {f"K={k}": metrics.JFAccumulator() for k in memories}
  base = metrics.JFAccumulator()
  for seq in sequences:
    frames, gts = read_sequence(root, seq, resolution, max_frames)
    base.add(seq, metrics.video_jf(video.copy_first_mask(gts[0], len(gts)), gts))
    for k in memories:
      preds = list(
        tqdm(
          video.propagate(model, frames, gts[0], memory=k, seg_type=seg_type, threshold=threshold),
          total=len(frames),
          desc=f"{seq} K={k}",
          unit="frame",
          leave=False,
        )
      )
      accs[f"K={k}"].add(seq, metrics.video_jf(preds, gts))
      if save_dir:
        with mask_dirs[k] as o:
          os.mkdir(o.path(seq))
          for name, p in zip(frame_names(root, seq, resolution, max_frames), preds):
            video.save_id_png(o.path(f"{seq}/{name}.png"), p)
  out = {name: a.result() for name, a in accs.items()}
  out["copy first mask (baseline)"] = base.result()
  return out


def calibrate_threshold(
  model,
  root: str,
  sequences: Sequence[str],
  *,
  memory: int = 0,
  thresholds: Sequence[float] = (0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5),
  resolution: str = "480p",
  max_frames: int | None = None,
  seg_type: str = "instance",
) -> tuple[float, dict]:
  """The single-object decision threshold with the best J&F on `sequences` (which must not be
  the evaluated ones: e.g. the training sequences), ties to the one nearest 0.5.

  Returns (threshold, {str(threshold): J&F %}).
  """
  if not thresholds:
    raise ValueError("calibrate_threshold: no thresholds to try")
  scores = {}
  for t in thresholds:
    r = evaluate_davis(
      model,
      root,
      sequences,
      memories=(memory,),
      resolution=resolution,
      max_frames=max_frames,
      seg_type=seg_type,
      threshold=float(t),
    )
    scores[str(float(t))] = r[f"K={memory}"]["J&F"]
  best = max(thresholds, key=lambda t: (scores[str(float(t))], -abs(float(t) - 0.5)))
  return float(best), scores
