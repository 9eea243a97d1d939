"""`incontext export-hf --checkpoint DIR --out DIR`: params dir -> transformers layout."""
import json
import os

import numpy as np

from incontext import checkpoint, outputs
from incontext.models import convert


def register(sub):
  p = sub.add_parser("export-hf", help="write a params directory as a transformers "
                     "SegGptForImageSegmentation (config.json + model.safetensors)")
  p.add_argument("--checkpoint", required=True, help="incontext params directory")
  p.add_argument("--out", required=True, help="output directory (from_pretrained-able)")
  p.add_argument("--overwrite", action="store_true", help="replace the outputs of an earlier "
                 "export in --out (files it did not write are kept)")
  p.set_defaults(func=run)


def export_hf(checkpoint_dir: str, out: str, *, overwrite: bool = False,
              hint: str = "overwrite") -> None:
  """Writes `out` (config.json + model.safetensors); outputs are staged inside `out`
  (incontext.outputs), overwrite replaces only what an earlier export wrote there."""
  from safetensors.numpy import save_file
  outdir = outputs.OutputDir(out, command="export-hf", overwrite=overwrite, hint=hint,
                             names=("model.safetensors", "config.json"))
  model = checkpoint.load_model(checkpoint_dir)
  sd = convert.official_to_hf(convert.model_to_official(model))
  with outdir:
    tmp = outdir.staging
    save_file({k: np.ascontiguousarray(v, np.float32) for k, v in sd.items()},
              os.path.join(tmp, "model.safetensors"), metadata={"format": "pt"})
    with open(os.path.join(tmp, "config.json"), "w") as f:
      json.dump(convert.hf_config_dict(model.cfg), f, indent=2)


def run(args) -> int:
  export_hf(args.checkpoint, args.out, overwrite=args.overwrite, hint="--overwrite")
  print(f"wrote {args.out} (config.json, model.safetensors)")
  return 0
