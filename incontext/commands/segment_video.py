"""`incontext segment-video --checkpoint DIR --frames DIR --first-mask PNG --out DIR [--memory K]`.

Propagates the first frame's mask through a video (spec 3.2; `incontext.video`): prompts are the
first frame with its mask plus the last K frames with their predicted masks, combined by the
feature ensemble. Writes OUT/<frame name>.png (DAVIS format: palette PNG, index = object id,
the first mask's ids kept) and OUT/overlay.gif. Outputs are staged inside OUT and moved into
place at the end (incontext.outputs), so a failed run leaves nothing behind; --overwrite replaces
only what an earlier `segment-video` run wrote in OUT.
"""
import os


def register(sub):
  p = sub.add_parser("segment-video", help="propagate a first-frame mask through a video "
                     "(DAVIS-format PNGs + overlay GIF)")
  p.add_argument("--checkpoint", required=True, help="incontext params directory")
  p.add_argument("--frames", required=True, help="folder of frames (sorted by file name)")
  p.add_argument("--first-mask", required=True, help="mask of the first frame: DAVIS palette "
                 "PNG (index = object id), grey 0/255, or an RGB colour mask (one colour per "
                 "object)")
  p.add_argument("--out", required=True, help="output folder (must not exist unless --overwrite)")
  p.add_argument("--memory", type=int, default=8, help="K previous frames used as extra prompts "
                 "(paper Table 4b: 8 best; 0 = first frame only)")
  p.add_argument("--seg-type", choices=("instance", "semantic"), default="instance")
  p.add_argument("--threshold", type=float, default=None, help="one object only: foreground "
                 "where the output's channel mean / 255 is >= this (default: nearest colour, "
                 "i.e. 0.5; lower it for a model whose uncertain pixels come out grey)")
  p.add_argument("--no-gif", action="store_true", help="skip the overlay GIF")
  p.add_argument("--fps", type=float, default=10.0, help="overlay GIF frame rate")
  p.add_argument("--overwrite", action="store_true", help="replace the outputs of an earlier "
                 "run in --out (files it did not write are kept)")
  p.add_argument("--no-verify", action="store_true", help="skip the weights checksum check "
                 "on load (faster for large models)")
  p.set_defaults(func=run)


def run(args) -> int:
  from tqdm import tqdm

  from incontext import checkpoint, imageio, outputs, video
  if args.memory < 0:
    raise ValueError(f"--memory {args.memory}: must be >= 0")
  if args.threshold is not None and not 0 < args.threshold < 1:
    raise ValueError(f"--threshold {args.threshold}: must be in (0, 1)")
  paths = video.list_frames(args.frames)
  names = [os.path.splitext(os.path.basename(p))[0] + ".png" for p in paths]
  outdir = outputs.OutputDir(args.out, command="segment-video", overwrite=args.overwrite,
                             names=names + ([] if args.no_gif else ["overlay.gif"]),
                             hint="--overwrite")
  first_ids = video.read_id_mask(args.first_mask)
  first = imageio.load_image(paths[0])
  if first.shape[:2] != first_ids.shape:
    raise ValueError(f"--first-mask {args.first_mask}: size {first_ids.shape[::-1]} (w, h) does "
                     f"not match the first frame {paths[0]} {first.shape[1::-1]}")
  if not video.object_ids(first_ids):
    raise ValueError(f"--first-mask {args.first_mask}: no object (all background)")
  if args.threshold is not None and len(video.object_ids(first_ids)) > 1:
    raise ValueError(f"--threshold needs a single-object --first-mask; {args.first_mask} has "
                     f"objects {video.object_ids(first_ids)}")
  model = checkpoint.load_model(args.checkpoint, verify=not args.no_verify)

  def frames():
    yield first
    for p in paths[1:]:
      f = imageio.load_image(p)
      if f.shape[:2] != first.shape[:2]:
        raise ValueError(f"{p}: frame size {f.shape[1::-1]} differs from the first frame's "
                         f"{first.shape[1::-1]}")
      yield f

  with outdir:
    tmp = outdir.staging
    gif = []
    stream = video.propagate(model, frames(), first_ids, memory=args.memory,
                             seg_type=args.seg_type, threshold=args.threshold)
    for p, ids in tqdm(zip(paths, stream), total=len(paths), desc="segment-video",
                       unit="frame"):
      name = os.path.splitext(os.path.basename(p))[0] + ".png"
      video.save_id_png(os.path.join(tmp, name), ids)
      if not args.no_gif:
        gif.append(video.overlay(imageio.load_image(p), ids))
    if gif:
      video.save_gif(os.path.join(tmp, "overlay.gif"), gif, fps=args.fps)
  print(f"wrote {len(paths)} DAVIS-format masks (objects {video.object_ids(first_ids)}, memory "
        f"{args.memory}) to {args.out}" + ("" if args.no_gif else ", overlay.gif"))
  return 0
