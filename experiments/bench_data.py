r"""Throughput of the training data pipeline (samples/s) on the raw folders of ../shared/data.

  python -m experiments.bench_data --sizes 448,64 --batch 8 --batches 20 --workers 0,2

Compare the printed samples/s with the trainer's steps/s x batch size at the same image size.
"""

import argparse
import time

from absl import flags

from experiments import benchenv
from experiments.configs import common
from incontext.data import pipeline


def bench(size, patch, batch, batches, workers, threads, data):
  cfg = pipeline.shared_data_config(
    data, image_size=size, patch_size=patch, num_workers=workers, read_threads=threads
  )
  t0 = time.perf_counter()
  it = pipeline.make_train_iterator(cfg, seed=0, batch_size=batch)
  next(it)  # index building + worker start-up + first batch
  t1 = time.perf_counter()
  for _ in range(batches):
    next(it)
  t2 = time.perf_counter()
  if hasattr(it, "close"):
    it.close()
  return t1 - t0, batch * batches / (t2 - t1)


def main():
  p = argparse.ArgumentParser(description=__doc__)
  p.add_argument("--sizes", default="448,64")
  p.add_argument("--batch", type=int, default=8)
  p.add_argument("--batches", type=int, default=20)
  p.add_argument("--workers", default="0,2")
  p.add_argument("--threads", type=int, default=2)
  p.add_argument("--data", default=common.data_dir())
  a = p.parse_args()
  flags.FLAGS.mark_as_parsed()  # grain's worker processes read absl flags; argparse parsed ours
  for size in [int(s) for s in a.sizes.split(",")]:
    patch = 16 if size % 16 == 0 and size >= 64 else 8
    for w in [int(x) for x in a.workers.split(",")]:
      start, rate = bench(size, patch, a.batch, a.batches, w, a.threads, a.data)
      print(
        f"size {size}x{size} (canvas {2 * size}x{size}) patch {patch} workers {w} "
        f"threads {a.threads}: {rate:.1f} samples/s (start-up {start:.1f}s)",
        flush=True,
      )


if __name__ == "__main__":
  with benchenv.bracket("bench_data"):
    rc = main()
