"""`incontext segment`: segment query images from in-context (image, mask) prompts.

--query takes image files, folders (their images, sorted; hidden files skipped) and quoted
glob patterns. For each query NAME.ext it writes into --out:
  NAME.png          palette PNG at the query's original size: index = the prompt masks' label
                    id (binary masks: the same 0/1 or 0/255; RGB colour masks: 1..K), colour =
                    the prompt's colour (the prompt file's palette, the RGB mask's colours, or
                    the colours the model painted: white for binary masks), so the file both
                    reads back as ids and is visible in an image viewer
  NAME_overlay.png  the query tinted by the prediction (official overlay: img * (0.6 c + 0.4))
  NAME.raw.npy      with --raw: float32 [h, w, 3] normalised model output for the query half
and labels.json: each label id with its colour (for colour masks: id k <-> the k-th colour).

Everything is staged inside --out and moved into place at the end (incontext.outputs), so a
failed run leaves no partial outputs; an --out that holds files needs --overwrite, which replaces
only what an earlier `segment` run wrote there.
"""

import os

from incontext import imageio, outputs, params_dir, timing
from incontext.imageio import InputError


def register(sub):
  p = sub.add_parser("segment", help="segment query images from (image, mask) prompts")
  p.add_argument("--checkpoint", required=True, help="incontext params directory")
  p.add_argument(
    "--prompt",
    nargs=2,
    action="append",
    default=[],
    metavar=("IMG", "MASK"),
    help="a prompt image and its mask (repeat for several prompts)",
  )
  p.add_argument(
    "--query",
    nargs="+",
    required=True,
    metavar="IMG",
    help="images to segment: files, folders or quoted globs ('imgs/*.jpg')",
  )
  p.add_argument("--out", required=True, help="output folder")
  p.add_argument(
    "--ensemble",
    choices=("feature", "spatial"),
    default="feature",
    help="combine several prompts by feature ensemble (default) or as one "
    "n x n spatial grid prompt",
  )
  p.add_argument(
    "--seg-type",
    choices=("instance", "semantic"),
    default=None,
    help="type token (default instance, or the learned prompt's)",
  )
  p.add_argument("--raw", action="store_true", help="also write NAME.raw.npy")
  p.add_argument(
    "--learned-prompt",
    default=None,
    metavar="FILE",
    help="a learned prompt (alone or with --prompt; feature ensemble over all)",
  )
  p.add_argument(
    "--batch-size",
    type=int,
    default=None,
    help="queries per forward (default "
    "4 on CPU; on an accelerator as many as half its memory holds)",
  )
  p.add_argument(
    "--dtype",
    choices=("float32", "bfloat16"),
    default="float32",
    help="compute dtype (default float32)",
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


SUFFIXES = (".png", "_overlay.png")


def output_names(queries, raw: bool, check: bool = True) -> list[str]:
  """Every output file name, checked to be distinct: two queries whose outputs share a name
  (`a/x.jpg` and `b/x.png`; `x.jpg` and `x_overlay.jpg`, whose `x_overlay.png` both write) are
  refused before any work, naming both queries."""
  suffixes = SUFFIXES + ((".raw.npy",) if raw else ())
  owner = {"labels.json": None}
  for q in queries:
    stem = os.path.splitext(os.path.basename(q))[0]
    for n in (stem + s for s in suffixes):
      if n in owner and check:
        other = "the labels file" if owner[n] is None else owner[n]
        raise InputError(
          f"{q}: writes the same output name {n!r} as {other}; rename one of the queries"
        )
      owner[n] = q
  return sorted(owner)


def _outdir(args):
  """The checked query list and output folder (nothing written yet): inputs never outputs,
  output names never shared."""
  queries = imageio.list_images(args.query)
  inputs = queries + [f for p in args.prompt for f in p]
  inputs += [args.learned_prompt] if args.learned_prompt else []
  outputs.check_inputs_apart(
    args.out,
    output_names(queries, args.raw, check=False),
    inputs,
    command="segment",
    overwrite=args.overwrite,
  )
  outdir = outputs.OutputDir(
    args.out,
    command="segment",
    overwrite=args.overwrite,
    names=output_names(queries, args.raw),
    hint="--overwrite",
  )
  return queries, outdir


def check(args) -> None:
  """Settings, paths and file formats, before jax is imported (incontext/cli.py)."""
  if args.batch_size is not None and args.batch_size < 1:
    raise InputError(f"--batch-size must be >= 1, got {args.batch_size}")
  args.checked_outdir = _outdir(args)  # run() reuses it: the manifest is read (and warned
  # about) once
  if not args.prompt and not args.learned_prompt:
    raise InputError("give at least one --prompt IMG MASK or a --learned-prompt")
  check_prompt_files(args.prompt, args.learned_prompt)
  args.checkpoint = params_dir.for_command(args.checkpoint)


def check_prompt_files(pairs, learned_prompt) -> None:
  """Each prompt image and mask reads as one; the learned prompt file exists."""
  for img, mask in pairs:
    imageio.load_image(img)
    imageio.load_mask(mask)
  if learned_prompt:
    imageio.check_regular_file(learned_prompt, "learned prompt")


def run(args) -> int:
  with timing.phase("imports"):
    # imported on demand, so that `incontext --help` loads no jax (see incontext/cli.py)
    from incontext.inference import Segmenter, save_results

  with timing.phase("checks"):
    queries, outdir = getattr(args, "checked_outdir", None) or _outdir(args)
  seg = Segmenter.from_checkpoint(
    args.checkpoint,
    seg_type=args.seg_type or "instance",
    dtype=args.dtype,
    verify=not args.no_verify,
  )
  lp = seg.load_learned_prompt(args.learned_prompt) if args.learned_prompt else None
  prompts = [tuple(p) for p in args.prompt]
  # "write": the PNGs and the commit of the folder; the phases inside (decode, forward, ...)
  # are taken out of it.
  with timing.phase("write"), outdir:
    results = seg.segment_iter(
      prompts,
      queries,
      ensemble=args.ensemble,
      learned_prompt=lp,
      seg_type=args.seg_type,
      batch_size=args.batch_size,
      progress=True,
    )
    n = save_results(results, outdir.staging, raw=args.raw)
  print(f"wrote {n} segmentations to {args.out}")
  return 0
