"""`incontext convert --source SRC --out DIR`: official / transformers weights -> params dir.

SRC is the official `seggpt_vit_large.pth`, a transformers `model.safetensors` (its
`config.json` beside it, if any, is checked against the tensors), a transformers folder
(`save_pretrained` output or a Hub snapshot), or `hf:REPO_ID` to download one
(`hf:BAAI/seggpt-vit-large`). Relative paths are from the working folder.
"""

import os

from incontext.errors import UserError


def register(sub):
  p = sub.add_parser(
    "convert",
    help="convert official (.pth) or transformers "
    "(.safetensors, folder, hf:REPO) SegGPT weights to an incontext params "
    "directory",
    description=__doc__,
  )
  p.add_argument(
    "--source",
    required=True,
    help="seggpt_vit_large.pth, model.safetensors, a transformers folder "
    "(config.json + model.safetensors) or hf:REPO_ID "
    "(e.g. hf:BAAI/seggpt-vit-large)",
  )
  p.add_argument("--out", required=True, help="output params directory")
  p.add_argument(
    "--overwrite",
    action="store_true",
    help="replace the outputs of an earlier run in --out (files it did not write are kept)",
  )
  p.set_defaults(func=run)


def convert_file(
  source: str, out: str, *, overwrite: bool = False, hint: str = "overwrite"
) -> dict:
  """Converts one checkpoint (file, transformers folder or hf:REPO_ID); returns the written
  metadata."""
  # imported on demand, so that `incontext --help` loads no jax (see incontext/cli.py)
  from flax import nnx

  from incontext import checkpoint, outputs
  from incontext.models import convert, seggpt

  outputs.OutputDir(
    out,
    command="params",
    overwrite=overwrite,
    hint=hint,
    names=checkpoint.NAMES,
    folders=("params",),
  )  # refuse before reading the source
  origin = source
  source = convert.resolve_source(source)
  sd, layout = convert.read_state_dict(source)
  cfg_path = convert.hf_config_path(source) if layout == "hf" else None
  if os.path.isdir(origin) and layout == "hf" and cfg_path is None:
    raise convert.ConversionError(f"{origin}: transformers folder has no config.json")
  overrides = convert.read_hf_config(source) if layout == "hf" else {}
  try:
    cfg = convert.infer_config(sd, **overrides)
  except convert.ConversionError as e:
    raise convert.ConversionError(f"{source}: {e}") from None
  if cfg_path is not None:
    convert.check_hf_config(cfg_path, cfg)
  try:
    model = seggpt.SegGPT(cfg, rngs=nnx.Rngs(0))
    convert.load_official(model, sd)
  except convert.ConversionError as e:
    raise convert.ConversionError(f"{source}: {e}") from None
  source_meta = {
    "path": os.path.abspath(source),
    "sha256": convert.file_sha256(source),
    "layout": layout,
    "num_tensors": len(sd),
  }
  if origin.startswith("hf:"):
    source_meta["hub_repo"] = origin[len("hf:") :]
  return checkpoint.save_model(
    out,
    model,
    source=source_meta,
    overwrite=overwrite,
    hint=hint,
    trained_on={"data": "converted weights", "layout": layout},
  )


def check(args) -> None:
  """The output folder and a local --source, before jax is imported (incontext/cli.py)."""
  from incontext import outputs
  from incontext.params_dir import META

  outputs.OutputDir(
    args.out, command="params", overwrite=args.overwrite, hint="--overwrite", names=(META, "params")
  )
  if not args.source.startswith("hf:") and not os.path.exists(args.source):
    raise UserError(f"{args.source}: no such file")


def run(args) -> int:
  meta = convert_file(args.source, args.out, overwrite=args.overwrite, hint="--overwrite")
  c = meta["config"]
  print(
    f"wrote {args.out}: width {c['width']}, depth {c['depth']}, canvas "
    f"{2 * c['image_size'][0]}x{c['image_size'][1]}, {meta['source']['num_tensors']} "
    f"tensors from {meta['source']['layout']} layout; weights {meta['weights_hash'][:12]}"
  )
  return 0
