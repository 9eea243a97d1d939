"""YouTube-VOS semi-supervised video segmentation: predictions in the submission layout.

Reads the official layout ROOT/SPLIT/JPEGImages/VID/FRAME.jpg and ROOT/SPLIT/Annotations/VID/
FRAME.png, where (in 'valid') a PNG is given only on the frames where objects first appear.
Objects that start on the same frame form a group, propagated from that frame with
`incontext.video.propagate` (memory K); the groups' id maps are merged in start order (a later
group is painted over an earlier one). Writes, for every frame of JPEGImages,
OUT/K{k}/Annotations/VID/FRAME.png (palette PNG of object ids) and OUT/K{k}.zip, the file the
official evaluation server takes (it computes G = mean of J/F on seen/unseen classes; the
validation labels are not public, so nothing is scored here). OUT is written under the rules of
`incontext.outputs` (`write_submission`).
"""

from __future__ import annotations

import os
import re
import shutil
from typing import Sequence

import numpy as np
from tqdm import tqdm

from incontext import imageio, outputs, video


def list_videos(root: str, split: str = "valid") -> list[str]:
  adir = os.path.join(root, split, "Annotations")
  if not os.path.isdir(adir):
    raise FileNotFoundError(f"missing YouTube-VOS annotations folder: {adir}")
  return sorted(os.listdir(adir))


def object_groups(
  root: str, split: str, vid: str, names: Sequence[str]
) -> list[tuple[int, np.ndarray]]:
  """[(start frame index, [H, W] id map of the objects that start there)] in frame order."""
  adir = os.path.join(root, split, "Annotations", vid)
  seen: set[int] = set()
  out = []
  for t, n in enumerate(names):
    p = os.path.join(adir, n + ".png")
    if not os.path.exists(p):
      continue
    ids = video.read_id_mask(p)
    new = sorted(set(np.unique(ids).tolist()) - {0, 255} - seen)
    if new:
      out.append((t, np.where(np.isin(ids, new), ids, 0).astype(np.int32)))
      seen |= set(new)
  return out


def segment_video(model, frames: Sequence[np.ndarray], groups, *, memory: int) -> list[np.ndarray]:
  """[N] id maps: every object group propagated from its start frame, merged in start order."""
  out = [np.zeros(f.shape[:2], np.int32) for f in frames]
  for start, first in groups:
    for t, p in enumerate(
      video.propagate(model, frames[start:], first, memory=memory), start=start
    ):
      out[t] = np.where(p > 0, p, out[t])
  return out


COMMAND = "youtube-vos"


def write_submission(
  model,
  root: str,
  out_dir: str,
  *,
  split: str = "valid",
  memories: Sequence[int] = (0, 8),
  max_frames: int | None = None,
  videos: Sequence[str] | None = None,
) -> dict:
  """Writes OUT/K{k}/Annotations and OUT/K{k}.zip per memory size; returns
  {'K=<k>': {'videos', 'frames', 'zip'}}.

  OUT follows `incontext.outputs`: each K{k} and its zip are staged and moved into place
  together when done (complete or absent), and recorded in OUT's manifest; a rerun replaces
  only what an earlier submission recorded there. A K{k} or K{k}.zip it did not write is never
  replaced or removed: the run is refused before any work, naming it."""
  vids = list(videos) if videos else list_videos(root, split)
  out_dir = os.fspath(out_dir)
  folders = {f"K{k}" for k in memories} | _recorded_folders(out_dir)
  parts = [  # every name checked before any work
    (
      k,
      outputs.OutputDir(
        out_dir,
        command=COMMAND,
        overwrite=True,
        add=True,
        names=[f"K{k}", f"K{k}.zip"],
        folders=folders,
      ),
    )
    for k in memories
  ]
  res = {}
  for k, part in parts:
    name = f"K{k}"
    n_frames = 0
    with part as o:
      staged = o.path(name)
      for vid in tqdm(vids, desc=f"youtube-vos K={k}", unit="video"):
        paths = video.list_frames(os.path.join(root, split, "JPEGImages", vid))[:max_frames]
        names = [os.path.splitext(os.path.basename(p))[0] for p in paths]
        frames = [imageio.load_image(p) for p in paths]
        preds = segment_video(model, frames, object_groups(root, split, vid, names), memory=k)
        d = os.path.join(staged, "Annotations", vid)
        os.makedirs(d, exist_ok=True)
        for n, p in zip(names, preds):
          video.save_id_png(os.path.join(d, n + ".png"), p)
        n_frames += len(preds)
      shutil.make_archive(staged, "zip", root_dir=staged, base_dir="Annotations")
    final = os.path.join(part.out, name)
    res[f"K={k}"] = {"videos": len(vids), "frames": n_frames, "zip": final + ".zip"}
  return res


def _recorded_folders(out_dir: str) -> set[str]:
  """The K{k} folders an earlier submission recorded in OUT's manifest (trusted as this
  command's folders, so that a rerun with other memory sizes keeps them recorded)."""
  m = outputs.read_manifest(out_dir) if os.path.isdir(out_dir) else None
  if m is None or m.get("command") != COMMAND:
    return set()
  return {f for f in m["files"] if isinstance(f, str) and re.fullmatch(r"K\d+", f)}
