"""`incontext segment`: segment query images from in-context (image, mask) prompts.

For each query NAME.ext it writes into --out:
  NAME.png          label map at the query's original size, with the prompt masks' label ids
                    (binary masks: the same 0/1 or 0/255; RGB colour masks: a colour image)
  NAME_overlay.png  the query tinted by the prediction (official overlay: img * (0.6 c + 0.4))
  NAME.raw.npy      with --raw: float32 [h, w, 3] normalised model output for the query half

Everything is staged inside --out and moved into place at the end (incontext.outputs), so a
failed run leaves no partial outputs; an --out that holds files needs --overwrite, which replaces
only what an earlier `segment` run wrote there.
"""
import os

import numpy as np

from incontext import imageio
from incontext.imageio import InputError


def register(sub):
  p = sub.add_parser("segment", help="segment query images from (image, mask) prompts")
  p.add_argument("--checkpoint", required=True, help="incontext params directory")
  p.add_argument("--prompt", nargs=2, action="append", default=[], metavar=("IMG", "MASK"),
                 help="a prompt image and its mask (repeat for several prompts)")
  p.add_argument("--query", nargs="+", required=True, metavar="IMG", help="images to segment")
  p.add_argument("--out", required=True, help="output folder")
  p.add_argument("--ensemble", choices=("feature", "spatial"), default="feature",
                 help="combine several prompts by feature ensemble (default) or as one "
                 "n x n spatial grid prompt")
  p.add_argument("--seg-type", choices=("instance", "semantic"), default=None,
                 help="type token (default instance, or the learned prompt's)")
  p.add_argument("--raw", action="store_true", help="also write NAME.raw.npy")
  p.add_argument("--learned-prompt", default=None, metavar="FILE",
                 help="a learned prompt (alone or with --prompt; feature ensemble over all)")
  p.add_argument("--batch-size", type=int, default=4, help="queries per forward (default 4)")
  p.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32",
                 help="compute dtype (default float32)")
  p.add_argument("--overwrite", action="store_true", help="replace the outputs of an earlier "
                 "run in --out (files it did not write are kept)")
  p.add_argument("--no-verify", action="store_true", help="skip the weights checksum check "
                 "on load (faster for large models)")
  p.set_defaults(func=run)


def _stems(queries):
  stems = {}
  for q in queries:
    stem = os.path.splitext(os.path.basename(q))[0]
    if stem in stems:
      raise InputError(f"{q}: writes the same output name {stem!r} as {stems[stem]}; "
                       "rename one of the queries")
    stems[stem] = q
  return list(stems)


def overlay(img: np.ndarray, colored: np.ndarray) -> np.ndarray:
  """Official overlay: img * (0.6 * colour / 255 + 0.4), uint8 [H, W, 3]."""
  out = img.astype(np.float32) * (0.6 * colored.astype(np.float32) / 255.0 + 0.4)
  return np.clip(np.round(out), 0, 255).astype(np.uint8)


def run(args) -> int:
  from incontext import outputs
  from incontext.inference import Segmenter
  if args.batch_size < 1:
    raise InputError(f"--batch-size must be >= 1, got {args.batch_size}")
  for q in args.query:
    if not os.path.isfile(q):
      raise InputError(f"{q}: no such query image file")
  stems = _stems(args.query)
  names = [s + suffix for s in stems for suffix in
           (".png", "_overlay.png") + ((".raw.npy",) if args.raw else ())]
  outdir = outputs.OutputDir(args.out, command="segment", overwrite=args.overwrite,
                             names=names, hint="--overwrite")
  if not args.prompt and not args.learned_prompt:
    raise InputError("give at least one --prompt IMG MASK or a --learned-prompt")
  seg = Segmenter.from_checkpoint(args.checkpoint, seg_type=args.seg_type or "instance",
                                  dtype=args.dtype, verify=not args.no_verify)
  lp = seg.load_learned_prompt(args.learned_prompt) if args.learned_prompt else None
  prompts = [tuple(p) for p in args.prompt]
  with outdir:
    tmp = outdir.staging
    results = seg.segment_iter(prompts, args.query, ensemble=args.ensemble, learned_prompt=lp,
                               seg_type=args.seg_type, batch_size=args.batch_size,
                               progress=True)
    n = 0
    for stem, q, res in zip(stems, args.query, results):
      colored = res.colored
      label_img = colored if res.colour_masks else res.labels
      imageio.save_png(os.path.join(tmp, stem + ".png"), label_img)
      imageio.save_png(os.path.join(tmp, stem + "_overlay.png"),
                       overlay(imageio.load_image(q), colored))
      if args.raw:
        np.save(os.path.join(tmp, stem + ".raw.npy"), res.raw.astype(np.float32))
      n += 1
  print(f"wrote {n} segmentations to {args.out}")
  return 0
