r"""In-context tuning entry point: learn a prompt for a task with a frozen SegGPT.

  python -m experiments.tune --config experiments/configs/prompt_tune.py:task=kvasir \
    --config.init=/path/to/params_dir --workdir /tmp/tune_kvasir

Writes WORKDIR/{checkpoints/, metrics.jsonl, curve.png, prompt_image.png, prompt_target.png,
prompt.npz} and, when the config holds images out (task=folder does), heldout.json; its last
line is then `held-out mIoU: tuned X% vs example prompt Y% (N images)`. Rerun with the same
--workdir to resume. Relative paths (--config.init, --workdir, globs, --config.data_dir) are
from the working folder; the config file is also found by name (`--config prompt_tune:task=folder`).
"""

from absl import flags
from ml_collections import config_flags

from experiments import entry
from experiments.configs import prompt_tune

__doc__ = entry.usage(__doc__, prompt_tune)

config_flags.DEFINE_config_file(
  "config", None, "prompt_tune config file (path.py:ARG; args and presets above)", lock_config=True
)
flags.DEFINE_string("workdir", None, "output / resume directory")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  del argv
  config = flags.FLAGS.config
  entry.require("tune", config.init, "--config.init", "a params directory: tuning needs a model")
  with entry.user_errors("tune"):
    from incontext.train import tuner

    out = tuner.run_tune(entry.prepare(config), flags.FLAGS.workdir)
  print(
    f"step {out['step']}: loss {out['losses'][-1]:.4f}; prompt in {flags.FLAGS.workdir}/prompt.npz"
  )
  h = out["heldout"]
  if h:
    print(
      f"held-out mIoU: tuned {h['tuned']['miou']:.1f}% vs example prompt "
      f"{h['example prompt']['miou']:.1f}% ({h['images']} images)"
    )


if __name__ == "__main__":
  entry.run(main)
