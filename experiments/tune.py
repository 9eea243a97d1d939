"""In-context tuning entry point: learn a prompt for a task with a frozen SegGPT.

  python -m experiments.tune --config experiments/configs/prompt_tune.py:task=kvasir \
    --config.init=/path/to/params_dir --workdir /tmp/tune_kvasir

Writes WORKDIR/{checkpoints/, metrics.jsonl, curve.png, prompt_image.png, prompt_target.png,
prompt.npz}; rerun with the same --workdir to resume.
"""
from absl import app, flags
from ml_collections import config_flags

config_flags.DEFINE_config_file("config", None, "prompt_tune config file", lock_config=True)
flags.DEFINE_string("workdir", None, "output / resume directory")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  del argv
  from incontext.train import tuner
  out = tuner.run_tune(flags.FLAGS.config, flags.FLAGS.workdir)
  print(f"step {out['step']}: loss {out['losses'][-1]:.4f}; prompt in "
        f"{flags.FLAGS.workdir}/prompt.npz")


if __name__ == "__main__":
  app.run(main)
