"""`incontext segment-video --checkpoint DIR (--frames DIR | --video MP4) --first-mask PNG --out D`.

Propagates the first frame's mask through a video (docs/design.md#video; `incontext.video`):
prompts are the first frame with its mask plus the last K frames with their predicted masks,
combined by the feature ensemble. Writes OUT/<frame name>.png (DAVIS format: palette PNG,
index = object id, the first mask's ids kept; colours: the first mask's own palette, or its
RGB colours, or white for a single grey 0/1 or 0/255 object) and OUT/overlay.gif; with
--video IN.mp4 the frames are decoded as a stream (never all in memory), the masks are named
00000.png, 00001.png, ... and the overlay is OUT/overlay.mp4 at the source frame rate.
Outputs are staged inside OUT and moved into place at the end (incontext.outputs), so a failed run
leaves nothing behind; --overwrite replaces only what an earlier `segment-video` run wrote.
"""

import logging
import os
import re

from incontext import imageio, params_dir
from incontext.errors import UserError


def register(sub):
  p = sub.add_parser(
    "segment-video",
    help="propagate a first-frame mask through a video (DAVIS-format PNGs + overlay GIF)",
  )
  p.add_argument("--checkpoint", required=True, help="incontext params directory")
  src = p.add_mutually_exclusive_group(required=True)
  src.add_argument("--frames", help="folder of frames (sorted by file name)")
  src.add_argument(
    "--video", help="a video file (MP4 or anything FFmpeg reads); needs the video extra (PyAV)"
  )
  p.add_argument(
    "--first-mask",
    required=True,
    help="mask of the first frame: DAVIS palette "
    "PNG (index = object id), grey 0/255, or an RGB colour mask (one colour per "
    "object)",
  )
  p.add_argument(
    "--out", required=True, help="output folder (one that holds files needs --overwrite)"
  )
  p.add_argument(
    "--memory",
    type=int,
    default=8,
    help="K previous frames used as extra prompts (paper Table 4b: 8 best; 0 = first frame only)",
  )
  p.add_argument("--seg-type", choices=("instance", "semantic"), default="instance")
  p.add_argument(
    "--threshold",
    type=float,
    default=None,
    help="one object only: foreground "
    "where the output's channel mean / 255 is >= this (default: nearest colour, "
    "i.e. 0.5; lower it for a model whose uncertain pixels come out grey)",
  )
  p.add_argument("--no-gif", action="store_true", help="skip the overlay GIF / MP4")
  p.add_argument(
    "--fps",
    type=float,
    default=10.0,
    help="overlay GIF frame rate (--frames; "
    "with --video the overlay MP4 keeps the source frame rate)",
  )
  p.add_argument(
    "--overwrite",
    action="store_true",
    help="replace the outputs of an earlier run in --out (files it did not write are kept)",
  )
  p.add_argument(
    "--no-verify",
    action="store_true",
    help="skip the weights checksum check on load (faster for large models)",
  )
  p.set_defaults(func=run)


def check(args) -> None:
  """Settings and paths, before jax is imported (incontext/cli.py)."""
  if args.memory < 0:
    raise UserError(f"--memory {args.memory}: must be >= 0")
  if args.threshold is not None and not 0 < args.threshold < 1:
    raise UserError(f"--threshold {args.threshold}: must be in (0, 1)")
  for what, path in (("video", args.video), ("first mask", args.first_mask)):
    if path:
      imageio.check_regular_file(path, what)  # a FIFO would block: regular files only
  args.checkpoint = params_dir.for_command(args.checkpoint)


def run(args) -> int:
  # imported on demand, so that `incontext --help` loads no jax (see incontext/cli.py)
  from tqdm import tqdm

  from incontext import outputs, video

  if args.video:
    return _run_video(args)
  # The first mask saved beside the frames is not a frame.
  paths = video.list_frames(args.frames, exclude=[args.first_mask])
  names = [os.path.splitext(os.path.basename(p))[0] + ".png" for p in paths]
  names += [] if args.no_gif else ["overlay.gif"]
  outputs.check_inputs_apart(
    args.out,
    names,
    paths + [args.first_mask],
    command="segment-video",
    overwrite=args.overwrite,
  )
  outdir = outputs.OutputDir(
    args.out,
    command="segment-video",
    overwrite=args.overwrite,
    names=names,
    hint="--overwrite",
  )
  first = imageio.load_image(paths[0])
  first_mask = _first_mask(args, first.shape[:2], f"the first frame {paths[0]}")
  first_ids = first_mask.ids
  model, colours = _model_and_colours(args, first_mask)

  def frames():
    yield first
    for p in paths[1:]:
      f = imageio.load_image(p)
      if f.shape[:2] != first.shape[:2]:
        raise UserError(
          f"{p}: frame size {f.shape[1::-1]} differs from the first frame's {first.shape[1::-1]}"
        )
      yield f

  with outdir:
    tmp = outdir.staging
    gif = []
    stream = video.propagate(
      model,
      frames(),
      first_ids,
      memory=args.memory,
      seg_type=args.seg_type,
      threshold=args.threshold,
    )
    for p, ids in tqdm(zip(paths, stream), total=len(paths), desc="segment-video", unit="frame"):
      name = os.path.splitext(os.path.basename(p))[0] + ".png"
      video.save_id_png(os.path.join(tmp, name), ids, colours)
      if not args.no_gif:
        gif.append(video.overlay(imageio.load_image(p), ids, colours))
    if gif:
      video.save_gif(os.path.join(tmp, "overlay.gif"), gif, fps=args.fps)
  print(
    f"wrote {len(paths)} DAVIS-format masks (objects {video.object_ids(first_ids)}, memory "
    f"{args.memory}) to {args.out}" + ("" if args.no_gif else ", overlay.gif")
  )
  return 0


def _first_mask(args, size, what: str):
  """--first-mask read once (`video.FirstMask`: ids [H, W] and colours), its ids checked
  against the frame size (h, w) and --threshold."""
  # imported on demand, so that `incontext --help` loads no jax (see incontext/cli.py)
  from incontext import video

  first = video.read_first_mask(args.first_mask)
  first_ids = first.ids
  if tuple(size) != first_ids.shape:
    raise UserError(
      f"--first-mask {args.first_mask}: size {first_ids.shape[::-1]} (w, h) does "
      f"not match {what} {tuple(size)[::-1]}"
    )
  ids = video.object_ids(first_ids)
  if not ids:
    raise UserError(f"--first-mask {args.first_mask}: no object (all background)")
  if args.threshold is not None and len(ids) > 1:
    raise UserError(
      f"--threshold needs a single-object --first-mask; {args.first_mask} has objects {ids}"
    )
  return first


def _model_and_colours(args, first):
  """The checked model (a procedural-only one is warned about) and the objects' colours."""
  # imported on demand, so that `incontext --help` loads no jax (see incontext/cli.py)
  from incontext import checkpoint, video

  model = checkpoint.load_model(args.checkpoint, verify=not args.no_verify)
  warn = checkpoint.procedural_only_warning(checkpoint.read_meta(args.checkpoint))
  if warn:
    logging.getLogger("incontext").warning("%s: %s", args.checkpoint, warn)
  return model, first.colours(video.object_ids(first.ids))


def _run_video(args) -> int:
  """--video: decode, propagate and encode frame by frame (one frame held at a time)."""
  # imported on demand, so that `incontext --help` loads no jax (see incontext/cli.py)
  from tqdm import tqdm

  from incontext import outputs, video, videoio

  info = videoio.scan(args.video)  # displayed size, exact frame count; a size change refused
  # OUT/00000.png, 00001.png, ... (as many as the video has frames) and overlay.mp4
  outputs.check_inputs_apart(
    args.out,
    [] if args.no_gif else ["overlay.mp4"],
    [args.video, args.first_mask],
    command="segment-video",
    overwrite=args.overwrite,
    is_output=lambda n: re.fullmatch(r"\d{5,}\.png", n) is not None,
  )
  first_mask = _first_mask(args, (info.height, info.width), f"the video {args.video}")
  first_ids = first_mask.ids
  ids = video.object_ids(first_ids)
  outdir = outputs.OutputDir(
    args.out,
    command="segment-video",
    overwrite=args.overwrite,
    names=[] if args.no_gif else ["overlay.mp4"],
    hint="--overwrite",
  )
  model, colours = _model_and_colours(args, first_mask)
  current = [None]

  def frames():
    for f in videoio.read_frames(args.video):
      current[0] = f
      yield f

  n = 0
  with outdir:
    tmp = outdir.staging
    writer = (
      None if args.no_gif else videoio.VideoWriter(os.path.join(tmp, "overlay.mp4"), fps=info.fps)
    )
    stream = video.propagate(
      model,
      frames(),
      first_ids,
      memory=args.memory,
      seg_type=args.seg_type,
      threshold=args.threshold,
    )
    # propagate yields frame t's ids right after pulling frame t: `current` is that frame.
    for n, m in enumerate(
      tqdm(stream, total=info.num_frames or None, desc="segment-video", unit="frame"), 1
    ):
      video.save_id_png(os.path.join(tmp, f"{n - 1:05d}.png"), m, colours)
      if writer is not None:
        writer.write(video.overlay(current[0], m, colours))
    if writer is not None:
      writer.close()
  print(
    f"wrote {n} DAVIS-format masks (objects {ids}, memory {args.memory}) to {args.out}"
    + ("" if args.no_gif else f", overlay.mp4 at {float(info.fps):.3g} fps")
  )
  return 0
