"""`incontext export-hf --checkpoint DIR --out DIR`: params dir -> transformers layout.

Writes config.json, model.safetensors and preprocessor_config.json (the `SegGptImageProcessor`
settings matching this model's input size: bicubic resize to one canvas half, ImageNet
normalisation), so `AutoImageProcessor.from_pretrained(out)` and
`SegGptForImageSegmentation.from_pretrained(out)` load it. Relative paths are from the
working folder.
"""

import json
import os

from incontext import params_dir


def register(sub):
  p = sub.add_parser(
    "export-hf",
    help="write a params directory as a transformers "
    "SegGptForImageSegmentation (config.json + model.safetensors + "
    "preprocessor_config.json)",
    description=__doc__,
  )
  p.add_argument("--checkpoint", required=True, help="incontext params directory")
  p.add_argument("--out", required=True, help="output directory (from_pretrained-able)")
  p.add_argument(
    "--overwrite",
    action="store_true",
    help="replace the outputs of an earlier export in --out (files it did not write are kept)",
  )
  p.set_defaults(func=run)


def preprocessor_config(cfg) -> dict:
  """transformers `SegGptImageProcessor` settings for a model config: the same input
  pipeline as `incontext.inference` (PIL bicubic to one canvas half, /255, ImageNet
  mean/std; prompt masks NEAREST-resized)."""
  # imported on demand, so that `incontext --help` loads no jax (see incontext/cli.py)
  from incontext import canvas

  h, w = cfg.image_size
  return {
    "image_processor_type": "SegGptImageProcessor",
    "do_resize": True,
    "size": {"height": int(h), "width": int(w)},
    "resample": 3,  # PIL.Image.BICUBIC
    "do_rescale": True,
    "rescale_factor": 1 / 255,
    "do_normalize": True,
    "image_mean": [round(float(x), 6) for x in canvas.IMAGENET_MEAN],
    "image_std": [round(float(x), 6) for x in canvas.IMAGENET_STD],
    "do_convert_rgb": True,
  }


def export_hf(
  checkpoint_dir: str, out: str, *, overwrite: bool = False, hint: str = "overwrite"
) -> None:
  """Writes `out` (config.json, model.safetensors, preprocessor_config.json); outputs are
  staged inside `out` (incontext.outputs), overwrite replaces only what an earlier export
  wrote there."""
  # imported on demand, so that `incontext --help` loads no jax (see incontext/cli.py)
  import numpy as np
  from safetensors.numpy import save_file

  from incontext import checkpoint, outputs
  from incontext.models import convert

  outdir = outputs.OutputDir(
    out,
    command="export-hf",
    overwrite=overwrite,
    hint=hint,
    names=("model.safetensors", "config.json", "preprocessor_config.json"),
  )
  model = checkpoint.load_model(checkpoint_dir)
  sd = convert.official_to_hf(convert.model_to_official(model))
  with outdir:
    tmp = outdir.staging
    save_file(
      {k: np.ascontiguousarray(v, np.float32) for k, v in sd.items()},
      os.path.join(tmp, "model.safetensors"),
      metadata={"format": "pt"},
    )
    with open(os.path.join(tmp, "config.json"), "w") as f:
      json.dump(convert.hf_config_dict(model.cfg), f, indent=2)
    with open(os.path.join(tmp, "preprocessor_config.json"), "w") as f:
      json.dump(preprocessor_config(model.cfg), f, indent=2)


def check(args) -> None:
  """The checkpoint path, before jax is imported (incontext/cli.py)."""
  args.checkpoint = params_dir.for_command(args.checkpoint)


def run(args) -> int:
  export_hf(args.checkpoint, args.out, overwrite=args.overwrite, hint="--overwrite")
  print(f"wrote {args.out} (config.json, model.safetensors, preprocessor_config.json)")
  return 0
