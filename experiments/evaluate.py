r"""Evaluation entry point: few-shot mIoU / FB-IoU and DAVIS J&F of a params directory.

  python -m experiments.evaluate --config experiments/configs/seggpt_eval.py \
    --config.init=/path/to/params_dir --workdir /tmp/eval

Writes WORKDIR/results.json and WORKDIR/results.md (baselines beside every result).
Relative paths (--config.init, --workdir, globs, --config.data_dir) are from the working
folder; the config file is also found by name (`--config seggpt_eval:folder`).
"""

from absl import flags
from ml_collections import config_flags

from experiments import entry
from experiments.configs import seggpt_eval

__doc__ = entry.usage(__doc__, seggpt_eval)

config_flags.DEFINE_config_file(
  "config",
  None,
  "seggpt_eval config file (path.py:ARG; args and benchmarks above)",
  lock_config=True,
)
flags.DEFINE_string("workdir", None, "output directory")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  del argv
  config = flags.FLAGS.config
  entry.require("evaluate", config.init, "--config.init", "a params directory to evaluate")
  with entry.user_errors("evaluate"):
    from incontext.evaluators import run
    from incontext.train import workdir

    with workdir.hold(flags.FLAGS.workdir) as out:  # refused before the work: see hold
      results = run.run_eval(entry.prepare(config), out)
  print(run.table(results))


if __name__ == "__main__":
  entry.run(main)
