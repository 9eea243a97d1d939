"""Labelling throughput: `incontext.labelling.Labeller` vs a loop over transformers' SegGPT.

Both label the same query photos from the same prompts with the same random weights (built as
a transformers `SegGptConfig` and copied into ours with `incontext.models.convert`, as in
`experiments/bench_inference.py`), float32, on this CPU, in the same run. Each side does the
whole per-image job: read the photo, preprocess, forward, post-process to a label map at the
photo's size, write a PNG. Transformers is the usual labelling loop (`SegGptImageProcessor`,
one query per forward, `post_process_semantic_segmentation`); ours is what `incontext label`
runs (`Labeller`, one call per image here so that the sides can alternate; with one CPU device
and `--batch-per-device 1` a batch is one image anyway, so the read-ahead of the next batch is
not part of the number). Ours labels one image first for each prompt count (warm-up:
compilation), transformers once with one prompt (eager: its first call only), then the timed
images; the two sides alternate image by image, so machine load hits both alike.

Measured (2026-12-02, L/16, 2-core CPU, `python -m experiments.bench_label`, 4 photos per
side): 1 prompt: transformers 124.5 s (0.032 img/s), ours 43.4 s (0.092 img/s), 2.87x;
4 prompts: transformers 436.8 s (0.009 img/s), ours 116.3 s (0.034 img/s), 3.76x (this part
shared the cores with other jobs; the alternation keeps the ratio fair). Warm-up with
compilation: 14.2 s (1 prompt), 27.7 s (4 prompts).

  python -m experiments.bench_label                      # L/16, 1 and 4 prompts, 4 images
  python -m experiments.bench_label --variant B/16 --depth 8 --images 8   # quick look
"""

import argparse
import glob
import os
import sys
import tempfile
import time

import numpy as np
from PIL import Image

from experiments import benchenv
from experiments import bench_inference
from incontext import checkpoint, labelling
from incontext.data import datadir
from incontext.inference import Segmenter, load_image, load_mask
from incontext.models import seggpt

SHARED = datadir.data_dir()


def hf_label(hm, processor, prompts, queries, out_dir):
  """The transformers loop: one query per forward (feature ensemble over the prompts)."""
  import torch

  p_imgs = [load_image(p) for p, _ in prompts]
  p_masks = [(load_mask(m) > 0).astype(np.uint8) for _, m in prompts]  # label maps 0/1
  k = len(prompts)
  for q in queries:
    img = load_image(q)
    inp = processor(
      images=[img] * k,
      prompt_images=p_imgs,
      prompt_masks=p_masks,
      num_labels=1,
      return_tensors="pt",
    )
    with torch.no_grad():
      out = hm(**inp, feature_ensemble=k > 1, embedding_type="instance")
    # With the feature ensemble the k outputs are one query's prediction k times over.
    out.pred_masks = out.pred_masks.mean(0, keepdim=True)
    lab = processor.post_process_semantic_segmentation(
      out, target_sizes=[img.shape[:2]], num_labels=1
    )[0]
    Image.fromarray(lab.numpy().astype(np.uint8)).save(
      os.path.join(out_dir, os.path.splitext(os.path.basename(q))[0] + ".png")
    )


def ours_label(lab, queries, out_dir):
  stems = labelling.output_stems(queries)
  os.makedirs(os.path.join(out_dir, "masks"), exist_ok=True)
  s = lab.run(queries, stems, out_dir, write_yolo=False)
  assert s.labelled == len(queries) and not s.failed, s


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--variant", default="L/16")
  ap.add_argument(
    "--depth",
    type=int,
    default=None,
    help="override the block count (quick looks; not the official model)",
  )
  ap.add_argument("--images", type=int, default=4, help="timed query images per side")
  ap.add_argument("--ks", default="1,4", help="prompt counts")
  ap.add_argument("--batch-per-device", type=int, default=1)
  args = ap.parse_args(argv)
  import jax
  import torch
  from transformers import SegGptImageProcessor

  ex = os.path.join(SHARED, "examples", "seggpt_examples", "examples")
  coco = sorted(glob.glob(os.path.join(SHARED, "coco128_seg", "images", "train2017", "*.jpg")))
  if not os.path.isdir(ex) or len(coco) < args.images + 1:
    sys.exit(f"needs the example photos and coco128_seg under {SHARED}")
  all_prompts = [
    (os.path.join(ex, f"{n}.jpg"), os.path.join(ex, f"{n}_target.png"))
    for n in ("hmbb_1", "hmbb_2", "hmbb_3", "video_1")
  ]
  warm, queries = coco[:1], coco[1 : args.images + 1]
  over = dict(ensemble="hf")
  if args.depth is not None:
    over.update(depth=args.depth, feature_layers=seggpt.default_feature_layers(args.depth))
  cfg = seggpt.get_config(args.variant, **over)
  print(
    f"# {args.variant}{'' if args.depth is None else f' (depth {args.depth})'}, "
    f"{args.images} COCO photos per side, float32, {os.cpu_count()} CPUs, "
    f"{jax.local_device_count()} jax device(s), torch {torch.get_num_threads()} threads",
    flush=True,
  )
  hm, model = bench_inference.build(cfg)
  processor = SegGptImageProcessor()
  rows = []
  with tempfile.TemporaryDirectory() as tmp:
    ck = os.path.join(tmp, "ckpt")
    checkpoint.save_model(ck, model)
    seg = Segmenter.from_checkpoint(ck, ensemble="hf")
    for k in [int(v) for v in args.ks.split(",")]:
      prompts = all_prompts[:k]
      lab = labelling.Labeller(seg, prompts, per_device_batch=args.batch_per_device)
      d_ours, d_hf = tempfile.mkdtemp(dir=tmp), tempfile.mkdtemp(dir=tmp)
      t0 = time.perf_counter()
      ours_label(lab, warm, d_ours)
      tw = time.perf_counter() - t0
      if not rows:  # eager: one (one-prompt) warm-up call is enough
        hf_label(hm, processor, prompts[:1], warm, d_hf)
      # The sides alternate image by image, so a change in machine load hits both alike.
      to = th = 0.0
      for i, q in enumerate(queries):
        t0 = time.perf_counter()
        ours_label(lab, [q], d_ours)
        to += time.perf_counter() - t0
        t0 = time.perf_counter()
        hf_label(hm, processor, prompts, [q], d_hf)
        th += time.perf_counter() - t0
        print(
          f"#   image {i + 1}/{len(queries)}: transformers {th:.1f} s, ours {to:.1f} s", flush=True
        )
      rows.append((k, args.images / th, args.images / to))
      print(
        f"# k={k}: transformers {th:.1f} s, ours {to:.1f} s (warm-up incl. compile {tw:.1f} s)",
        flush=True,
      )
  print()
  print(f"{'prompts':>7} | {'transformers img/s':>18} | {'ours img/s':>10} | {'ratio':>6}")
  for k, rh, ro in rows:
    print(f"{k:>7} | {rh:>18.3f} | {ro:>10.3f} | {ro / rh:>5.2f}x")
  return rows


if __name__ == "__main__":
  with benchenv.bracket("bench_label"):
    rc = main()
  sys.exit(0 if rc else 1)
