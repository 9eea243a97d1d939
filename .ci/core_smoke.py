"""Core-install smoke run: convert a tiny safetensors model and segment a real photo.

Run with the python of an environment where only the core package is installed
(`pip install .`, no extras); `.ci/run` does it in a fresh venv:

    python .ci/core_smoke.py ../shared/data WORKDIR

It checks that tensorflow, tensorflow_datasets, grain, torch and transformers are not
installed, writes a tiny random SegGPT as a transformers-layout `model.safetensors`
(`incontext export-hf`), converts it back with `incontext convert` and runs
`incontext segment` on a real photo, all through the installed `incontext` command.
"""

import importlib.util
import os
import shutil
import subprocess
import sys

HEAVY = ("tensorflow", "tensorflow_datasets", "grain", "torch", "transformers")


def main(data: str, work: str) -> int:
  present = [m for m in HEAVY if importlib.util.find_spec(m) is not None]
  if present:
    print(f"core_smoke: expected a core-only install, but {present} are installed", file=sys.stderr)
    return 1
  from flax import nnx

  from incontext import checkpoint
  from incontext.commands import export_hf
  from incontext.models import seggpt

  shutil.rmtree(work, ignore_errors=True)
  os.makedirs(work)
  # depth 12: the feature layers (3, 5, 8, 11) are what `convert` infers from the weights.
  cfg = seggpt.get_config(
    "test",
    depth=12,
    feature_layers=seggpt.default_feature_layers(12),
    image_size=(32, 32),
    patch=8,
  )
  checkpoint.save_model(os.path.join(work, "tiny"), seggpt.SegGPT(cfg, rngs=nnx.Rngs(0)))
  export_hf.export_hf(os.path.join(work, "tiny"), os.path.join(work, "hf"))
  ex = os.path.join(data, "examples", "seggpt_examples", "examples")
  exe = os.path.join(os.path.dirname(sys.executable), "incontext")  # this environment's
  if not os.path.exists(exe):
    print(f"core_smoke: no {exe}; is incontext installed in this environment?", file=sys.stderr)
    return 1
  cmds = [
    [
      exe,
      "convert",
      "--source",
      os.path.join(work, "hf", "model.safetensors"),
      "--out",
      os.path.join(work, "ckpt"),
    ],
    [
      exe,
      "segment",
      "--checkpoint",
      os.path.join(work, "ckpt"),
      "--prompt",
      os.path.join(ex, "hmbb_1.jpg"),
      os.path.join(ex, "hmbb_1_target.png"),
      "--query",
      os.path.join(ex, "hmbb_2.jpg"),
      "--out",
      os.path.join(work, "out"),
    ],
  ]
  for cmd in cmds:
    print("+", " ".join(cmd), flush=True)
    rc = subprocess.call(cmd)
    if rc:
      print(f"core_smoke: {cmd[1]} exited with {rc}", file=sys.stderr)
      return 1
  from PIL import Image

  out = os.path.join(work, "out")
  got = sorted(os.listdir(out))
  want = [".incontext-outputs.json", "hmbb_2.png", "hmbb_2_overlay.png", "labels.json"]
  if got != want:
    print(f"core_smoke: {out} holds {got}, expected {want}", file=sys.stderr)
    return 1
  im = Image.open(os.path.join(out, "hmbb_2.png"))
  if im.mode != "P" or im.size != Image.open(os.path.join(ex, "hmbb_2.jpg")).size:
    print(f"core_smoke: label PNG is {im.mode} {im.size}", file=sys.stderr)
    return 1
  print(f"core_smoke: ok ({', '.join(got)})")
  return 0


if __name__ == "__main__":
  sys.exit(main(*sys.argv[1:3]))
