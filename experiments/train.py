"""Trains SegGPT: `python -m experiments.train --config FILE.py:ARGS --workdir DIR`.

  python -m experiments.train --config experiments/configs/seggpt_train.py:quickstart \
    --workdir /tmp/qs [--config.total_steps=800]

Rerunning the same command resumes from the latest checkpoint in DIR. Multi-host:
--distributed calls jax.distributed.initialize() (auto-detects TPU pods / SLURM); or pass
--coordinator_address=HOST:PORT --num_processes=N --process_id=I (also read from the env
JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID). Relative paths (--workdir,
--config.init.path, --config.data_dir) are from the working folder; the config file is also
found by name (`--config seggpt_train:quickstart`).
"""

import os

from absl import flags
from ml_collections import config_flags

from experiments import entry
from experiments.configs import seggpt_train

__doc__ = entry.usage(__doc__, seggpt_train)

config_flags.DEFINE_config_file(
  "config", None, "Config file (path.py:ARG; presets and args above).", lock_config=True
)
flags.DEFINE_string("workdir", None, "Output / checkpoint directory.")
flags.DEFINE_bool("distributed", False, "Call jax.distributed.initialize() (auto-detect).")
flags.DEFINE_string(
  "coordinator_address",
  os.environ.get("JAX_COORDINATOR_ADDRESS"),
  "host:port of process 0 (multi-host).",
)
flags.DEFINE_integer(
  "num_processes", int(os.environ.get("JAX_NUM_PROCESSES", "0")) or None, "Number of processes."
)
flags.DEFINE_integer(
  "process_id", int(os.environ.get("JAX_PROCESS_ID", "-1")), "This process (0-based)."
)
flags.mark_flags_as_required(["config", "workdir"])
FLAGS = flags.FLAGS


def main(argv):
  del argv
  import jax

  if FLAGS.coordinator_address:
    jax.distributed.initialize(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id)
  elif FLAGS.distributed:
    jax.distributed.initialize()
  from incontext.train import trainer

  with entry.user_errors("train"):
    out = trainer.run(entry.prepare(FLAGS.config), FLAGS.workdir)
  if jax.process_index() == 0:
    ev = out["eval"]
    if ev:
      line = f"final step {out['step']}: few-shot mIoU {ev['eval/miou']:.2f}%"
      if "eval/baseline_copy_miou" in ev:
        line += f" vs baseline (copy prompt mask) {ev['eval/baseline_copy_miou']:.2f}%"
      print(line)
    print(
      f"workdir: {os.path.abspath(FLAGS.workdir)} (metrics.jsonl, curve.png, "
      "predictions.png, checkpoints/, params/)"
    )


if __name__ == "__main__":
  entry.run(main)
