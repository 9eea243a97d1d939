"""Evaluation entry point: few-shot mIoU / FB-IoU and DAVIS J&F of a params directory.

  python -m experiments.evaluate --config experiments/configs/seggpt_eval.py \
    --config.init=/path/to/params_dir --workdir /tmp/eval

Writes WORKDIR/results.json and WORKDIR/results.md (baselines beside every result).
"""
from absl import app, flags
from ml_collections import config_flags

config_flags.DEFINE_config_file("config", None, "seggpt_eval config file", lock_config=True)
flags.DEFINE_string("workdir", None, "output directory")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  del argv
  from incontext.evaluators import run
  results = run.run_eval(flags.FLAGS.config, flags.FLAGS.workdir)
  print(run.table(results))


if __name__ == "__main__":
  app.run(main)
