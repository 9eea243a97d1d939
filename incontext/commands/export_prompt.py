"""`incontext export-prompt --workdir TUNE_WORKDIR --out FILE.npz [--step N]`.

Writes the learned prompt of an in-context tuning run (experiments/tune.py) as a self-describing
file (incontext.prompts format: tensors + JSON metadata + PNG previews), for
`incontext segment --learned-prompt FILE.npz`.
"""

import os

from incontext.errors import UserError


def register(sub):
  p = sub.add_parser(
    "export-prompt",
    help="export the learned prompt of an in-context tuning run as a .npz (+ PNG previews)",
  )
  p.add_argument("--workdir", required=True, help="tuning workdir (experiments/tune.py)")
  p.add_argument("--out", required=True, help="output .npz file")
  p.add_argument("--step", type=int, default=None, help="checkpoint step (default: latest)")
  p.add_argument(
    "--overwrite", action="store_true", help="replace an existing --out file (and its PNG previews)"
  )
  p.set_defaults(func=run)


def check(args) -> None:
  """--out and --workdir, before jax is imported (incontext/cli.py)."""
  from incontext import outputs, prompts

  if not args.out.endswith(".npz"):
    raise UserError(f"--out {args.out}: a learned-prompt file must end with .npz")
  for path in (args.out,) + prompts.preview_paths(args.out):
    outputs.check_file(path, overwrite=args.overwrite, hint="--overwrite")
  if not os.path.isfile(os.path.join(args.workdir, "tune_meta.json")):
    raise UserError(f"{args.workdir}: not a tuning workdir (no tune_meta.json)")


def run(args) -> int:
  # imported on demand, so that `incontext --help` loads no jax (see incontext/cli.py)
  from incontext import prompts
  from incontext.train import tuner

  meta = tuner.export(args.workdir, args.out, step=args.step)
  img, tgt = prompts.preview_paths(args.out)
  print(
    f"wrote {args.out} (step {meta['made_by']['step']}, canvas {meta['canvas']}, "
    f"seg type {meta['seg_type']}, labels {meta['label_names']}); previews {img}, {tgt}"
  )
  return 0
