r"""Write a PNG grid of sampled training pairs: image canvas | target canvas | masked patches.

  python -m experiments.show_samples --out /tmp/samples.png --n 8 --size 224 --patch 16

Each row is one sample: the (prompt over query) image canvas, the colour target canvas (valid=0
pixels tinted grey), and the image with the hidden patches (mask=True) greyed out. The row label
gives the seg_type (S semantic / I instance).
"""

import argparse

import numpy as np
from PIL import Image, ImageDraw

from incontext import canvas, outputs
from experiments.configs import common
from incontext.data import pipeline


def render(batch, patch: int) -> Image.Image:
  rows = []
  for b in range(batch["image"].shape[0]):
    img = canvas.denormalize(batch["image"][b]).astype(np.uint8)
    tgt = canvas.denormalize(batch["target"][b]).astype(np.uint8)
    inv = batch["valid"][b] == 0
    tgt[inv] = (tgt[inv] // 2 + 64).astype(np.uint8)
    h, w = img.shape[:2]
    m = batch["mask"][b].reshape(h // patch, w // patch)
    mp = np.kron(m, np.ones((patch, patch), bool))
    masked = img.copy()
    masked[mp] = (masked[mp] // 4 + 96).astype(np.uint8)
    sep = np.full((h, 4, 3), 255, np.uint8)
    row = np.concatenate([img, sep, tgt, sep, masked], 1)
    row[h // 2 - 1 : h // 2 + 1] = (255, 0, 0)  # prompt/query boundary
    im = Image.fromarray(row)
    ImageDraw.Draw(im).text((3, 3), "SI"[int(batch["seg_type"][b])], fill=(255, 255, 0))
    rows.append(np.asarray(im))
    rows.append(np.full((4, row.shape[1], 3), 255, np.uint8))
  return Image.fromarray(np.concatenate(rows, 0))


def main():
  p = argparse.ArgumentParser(description=__doc__)
  p.add_argument("--out", default="/tmp/samples.png")
  p.add_argument("--data", default=common.data_dir())
  p.add_argument("--n", type=int, default=8)
  p.add_argument("--size", type=int, default=224)
  p.add_argument("--patch", type=int, default=16)
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--datasets", default=None, help="comma list of shared-data dataset names")
  p.add_argument("--mix_context_prob", type=float, default=None)
  a = p.parse_args()
  names = a.datasets.split(",") if a.datasets else None
  cfg = pipeline.shared_data_config(a.data, image_size=a.size, patch_size=a.patch, datasets=names)
  if a.mix_context_prob is not None:
    for d in cfg["datasets"]:
      d["mix_context_prob"] = a.mix_context_prob
  it = pipeline.make_train_iterator(cfg, seed=a.seed, batch_size=a.n)
  outputs.write_image(a.out, render(next(it), a.patch))  # temporary name, then a rename
  print("wrote", a.out)


if __name__ == "__main__":
  main()
