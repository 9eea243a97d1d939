"""`incontext label`: label every image of a folder (or glob) from a few (image, mask) examples.

  incontext label --checkpoint CKPT --prompt a.jpg a.png [--prompt ...] --images photos/ \
    --out labels/ [--format png,coco,yolo] [--seg-type instance|semantic]

Writes OUT/masks/*.png (palette label PNGs), OUT/annotations.json (COCO with RLE masks),
OUT/labels/*.txt (YOLO segmentation polygons) and OUT/empty.txt, the images whose prediction
is empty (a warning gives their count and first names); see `incontext.labelling` for the
formats.
Resumable: rerunning the command labels only the images without a mask. Queries are batched
over all local devices; several hosts: start one process per host with --coordinator,
--num-processes and --process-id (each labels its share of the sorted image list; process 0
writes the COCO file). Unreadable images are listed in OUT/errors.txt and skipped; the run
then exits with status 1 naming how many failed. OUT may hold only what `label` wrote there
(recorded in OUT/.incontext-outputs.json) unless --overwrite is given, and files it did not
write are never replaced or removed (`incontext.labelling.LabelFolder`).
"""

import os
import sys
import time

from incontext import imageio, params_dir
from incontext.commands.segment import check_prompt_files
from incontext.errors import UserError

FORMATS = ("png", "coco", "yolo")


def register(sub):
  p = sub.add_parser(
    "label",
    help="label a folder of images from (image, mask) examples "
    "(PNG / COCO / YOLO; resumable, multi-device)",
  )
  p.add_argument("--checkpoint", required=True, help="incontext params directory")
  p.add_argument(
    "--prompt",
    nargs=2,
    action="append",
    default=[],
    metavar=("IMG", "MASK"),
    help="an example image and its mask (repeat for several)",
  )
  p.add_argument(
    "--learned-prompt",
    default=None,
    metavar="FILE",
    help="a learned prompt (alone or with --prompt)",
  )
  p.add_argument(
    "--images",
    required=True,
    metavar="DIR_OR_GLOB",
    help="a folder of images or a glob pattern (quote it; ** is recursive)",
  )
  p.add_argument("--out", required=True, help="output folder (reused to resume)")
  p.add_argument(
    "--overwrite",
    action="store_true",
    help="label into a folder that holds other files (they are never touched)",
  )
  p.add_argument(
    "--format",
    default="png,coco,yolo",
    help="comma-separated outputs among png,coco,yolo (masks are always written: "
    "they are the resume state)",
  )
  p.add_argument(
    "--seg-type",
    choices=("instance", "semantic"),
    default="instance",
    help="type token; instance also splits COCO annotations per connected object",
  )
  p.add_argument("--ensemble", choices=("feature", "spatial"), default="feature")
  p.add_argument(
    "--names",
    default=None,
    help="comma-separated category names (default: from the first prompt image's file name)",
  )
  p.add_argument(
    "--batch-per-device", type=int, default=1, help="queries per device per forward (default 1)"
  )
  p.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
  p.add_argument(
    "--coordinator",
    default=None,
    metavar="HOST:PORT",
    help="multi-host: jax.distributed coordinator address",
  )
  p.add_argument("--num-processes", type=int, default=None)
  p.add_argument("--process-id", type=int, default=None)
  p.add_argument("--no-progress", action="store_true")
  p.set_defaults(func=run)


def _formats(spec):
  fmts = [f.strip() for f in spec.split(",") if f.strip()]
  bad = [f for f in fmts if f not in FORMATS]
  if bad or not fmts:
    raise UserError(f"--format {spec!r}: expected a comma-separated subset of {','.join(FORMATS)}")
  return set(fmts)


def check(args) -> None:
  """Settings, paths and file formats, before jax is imported (incontext/cli.py)."""
  _formats(args.format)
  if args.batch_per_device < 1:
    raise UserError(f"--batch-per-device {args.batch_per_device}: must be >= 1")
  if not args.prompt and not args.learned_prompt:
    raise UserError("give at least one --prompt IMG MASK or a --learned-prompt")
  multi = [args.coordinator, args.num_processes, args.process_id]
  if any(v is not None for v in multi) and not all(v is not None for v in multi):
    raise UserError("multi-host runs need all of --coordinator, --num-processes and --process-id")
  imageio.output_stems(imageio.list_images(args.images, what=""))
  if os.path.exists(args.out) and not os.path.isdir(args.out):
    raise UserError(f"--out {args.out}: exists and is not a directory")
  check_prompt_files(args.prompt, args.learned_prompt)
  args.checkpoint = params_dir.for_command(args.checkpoint)


def run(args) -> int:
  fmts = _formats(args.format)
  # imported on demand, so that `incontext --help` loads no jax (see incontext/cli.py)
  import jax

  if args.coordinator is not None:
    jax.distributed.initialize(
      args.coordinator, num_processes=args.num_processes, process_id=args.process_id
    )
  from incontext import labelling

  paths = imageio.list_images(args.images, what="")
  stems = imageio.output_stems(paths)
  out = os.path.abspath(args.out)
  if os.path.exists(out) and not os.path.isdir(out):
    raise UserError(f"--out {args.out}: exists and is not a directory")
  root = args.images if os.path.isdir(args.images) else None
  files = [os.path.relpath(p, root) if root else p for p in paths]
  pid, nproc = jax.process_index(), jax.process_count()
  folder = labelling.LabelFolder(out, overwrite=args.overwrite, hint="--overwrite", index=pid)
  if pid == 0:  # checked (and locked) before any work
    folder.open(labelling.output_names(stems, nproc=nproc))
  try:
    return _label(args, jax, labelling, folder, paths, stems, files, fmts, pid, nproc)
  finally:
    if pid == 0:
      folder.abort()  # after finish: nothing left to do
    else:
      folder.close()


def _label(args, jax, labelling, folder, paths, stems, files, fmts, pid, nproc) -> int:
  out = folder.out
  seg = labelling.load_segmenter(args.checkpoint, seg_type=args.seg_type, dtype=args.dtype)
  lp = seg.load_learned_prompt(args.learned_prompt) if args.learned_prompt else None
  names = [n.strip() for n in args.names.split(",")] if args.names else None
  lab = labelling.Labeller(
    seg,
    [tuple(p) for p in args.prompt],
    seg_type=args.seg_type,
    ensemble=args.ensemble,
    learned_prompt=lp,
    names=names,
    per_device_batch=args.batch_per_device,
  )
  settings = {
    "checkpoint_weights": seg.meta.get("weights_hash"),
    "prompts": [[os.path.abspath(a), os.path.abspath(b)] for a, b in args.prompt],
    "learned_prompt": os.path.abspath(args.learned_prompt) if args.learned_prompt else None,
    "seg_type": args.seg_type,
    "ensemble": args.ensemble,
    "categories": lab.categories,
    "dtype": args.dtype,
  }
  if pid == 0:
    folder.prepare(settings)
  if nproc > 1:  # process 0 checked the folder and removed stale temporaries first
    from jax.experimental import multihost_utils

    multihost_utils.sync_global_devices("incontext label: output folder ready")
  folder.start()
  my_paths = labelling.shard(paths, pid, nproc)
  my_stems = labelling.shard(stems, pid, nproc)
  t0 = time.perf_counter()
  summary = lab.run(
    my_paths,
    my_stems,
    out,
    progress=not args.no_progress,
    write_yolo="yolo" in fmts,
    folder=folder,
  )
  dt = time.perf_counter() - t0
  labelling.finish_shard(out, my_stems, write_yolo="yolo" in fmts, folder=folder)
  err_file = os.path.join(out, "errors.txt")
  if nproc == 1:
    labelling.write_errors(err_file, summary.failed, folder)
    failed = len(summary.failed)
  else:
    part = os.path.join(out, f"errors.{pid}-of-{nproc}.txt")
    labelling.write_errors(part, summary.failed, folder)
    folder.close()  # process 0 reads every journal next
    from jax.experimental import multihost_utils

    multihost_utils.sync_global_devices("incontext label: shards done")
    failed = len(summary.failed)
    if pid == 0:
      folder.start()  # every process's records, the journal reopened
      parts = [os.path.join(out, f"errors.{i}-of-{nproc}.txt") for i in range(nproc)]
      merged = [e for p in parts for e in labelling.read_errors(p)]
      labelling.write_errors(err_file, merged, folder)
      for p in parts:
        if os.path.exists(p) and folder.owns(os.path.relpath(p, out)):
          os.remove(p)
      failed = len(merged)
  if pid == 0 and "coco" in fmts:
    coco = labelling.write_coco(
      out,
      list(zip(files, stems)),
      lab.categories,
      instance=args.seg_type == "instance",
      info={"description": "incontext label", "settings": settings},
      folder=folder,
    )
  if pid == 0:
    from incontext import inference

    empty = labelling.write_empty(out, list(zip(files, stems)), folder=folder)
    inference.warn_empty(empty, len(files), os.path.join(args.out, "empty.txt"))
    folder.finish()
  if nproc > 1:
    from jax.experimental import multihost_utils

    multihost_utils.sync_global_devices("incontext label: merged")
  rate = summary.labelled / dt if dt > 0 else 0.0
  msg = (
    f"labelled {summary.labelled} images ({rate:.2f} images/s), {summary.skipped} already "
    f"done" + (f", process {pid} of {nproc}" if nproc > 1 else "")
  )
  if pid == 0 and "coco" in fmts:
    msg += (
      f"; {len(coco['annotations'])} annotations in {os.path.join(args.out, 'annotations.json')}"
    )
  print(msg)
  if failed:
    print(
      f"incontext label: {failed} image(s) could not be read; listed in "
      f"{os.path.join(args.out, 'errors.txt')}",
      file=sys.stderr,
    )
    return 1
  return 0
