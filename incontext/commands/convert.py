"""`incontext convert --source FILE --out DIR`: official .pth / HF safetensors -> params dir."""
import os

from flax import nnx

from incontext import checkpoint, outputs
from incontext.models import convert, seggpt


def register(sub):
  p = sub.add_parser("convert", help="convert official (.pth) or transformers "
                     "(.safetensors) SegGPT weights to an incontext params directory")
  p.add_argument("--source", required=True, help="seggpt_vit_large.pth or model.safetensors")
  p.add_argument("--out", required=True, help="output params directory")
  p.add_argument("--overwrite", action="store_true", help="replace the outputs of an earlier "
                 "run in --out (files it did not write are kept)")
  p.set_defaults(func=run)


def convert_file(source: str, out: str, *, overwrite: bool = False,
                 hint: str = "overwrite") -> dict:
  """Converts one checkpoint file; returns the written metadata."""
  outputs.OutputDir(out, command="params", overwrite=overwrite, hint=hint,
                    names=(checkpoint.META, "params"))      # refuse before reading the source
  sd, layout = convert.read_state_dict(source)
  try:
    overrides = convert.read_hf_config(source) if layout == "hf" else {}
    cfg = convert.infer_config(sd, **overrides)
    model = seggpt.SegGPT(cfg, rngs=nnx.Rngs(0))
    convert.load_official(model, sd)
  except convert.ConversionError as e:
    raise convert.ConversionError(f"{source}: {e}") from None
  source_meta = {"path": os.path.abspath(source), "sha256": convert.file_sha256(source),
                 "layout": layout, "num_tensors": len(sd)}
  return checkpoint.save_model(out, model, source=source_meta, overwrite=overwrite, hint=hint)


def run(args) -> int:
  meta = convert_file(args.source, args.out, overwrite=args.overwrite, hint="--overwrite")
  c = meta["config"]
  print(f"wrote {args.out}: width {c['width']}, depth {c['depth']}, canvas "
        f"{2 * c['image_size'][0]}x{c['image_size'][1]}, {meta['source']['num_tensors']} "
        f"tensors from {meta['source']['layout']} layout; weights {meta['weights_hash'][:12]}")
  return 0
