"""Seconds per 100 few-shot episodes of the evaluator, per method, at a given model variant.

  python -m experiments.bench_eval --variant L/16 --shots 5 --episodes 2

Random weights (the cost does not depend on them), episodes of COCO fold 0 from
DATA/coco128_seg (--data; default $INCONTEXT_DATA_DIR, else ../shared/data); the first
episode of each method compiles and is not timed, the next `--episodes` are, and the time is
scaled to 100 episodes. A video frame costs one 1-prompt (K = 0) or (1 + K)-prompt forward,
like a 1-shot or (1 + K)-shot feature episode.
"""

import argparse
import time

from experiments import benchenv
from incontext.data import datadir, episodes, sources
from incontext.evaluators import fewshot
from incontext.models import seggpt


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("--variant", default="L/16")
  ap.add_argument("--shots", type=int, default=5)
  ap.add_argument("--episodes", type=int, default=2)
  ap.add_argument("--data", default=datadir.data_dir())
  a = ap.parse_args(argv)
  model = seggpt.create(a.variant, drop_path=0.0, seed=0)
  src = sources.coco_yolo(f"{a.data}/coco128_seg")
  eps = episodes.SemanticEpisodes(
    src, fold=0, shots=a.shots, num_episodes=a.episodes + 1, seed=0
  ).episodes
  methods = [
    ("1-shot", 1, "feature"),
    (f"{a.shots}-shot feature", a.shots, "feature"),
    (f"{a.shots}-shot spatial", a.shots, "spatial"),
  ]
  total = 0.0
  for m in methods:
    fewshot.evaluate_fewshot(model, src, eps[:1], methods=[m], desc="compile")
    t = time.perf_counter()
    fewshot.evaluate_fewshot(model, src, eps[1:], methods=[m], desc=m[0])
    per100 = (time.perf_counter() - t) / a.episodes * 100
    total += per100
    print(f"{a.variant} {m[0]:>16}: {per100:8.0f} s per 100 episodes")
  print(f"{a.variant} {'all three':>16}: {total:8.0f} s per 100 episodes")


if __name__ == "__main__":
  with benchenv.bracket("bench_eval"):
    rc = main()
