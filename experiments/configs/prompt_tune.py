r"""In-context tuning of a prompt with SegGPT frozen (docs/design.md#in-context-tuning).

  python -m experiments.tune \
    --config experiments/configs/prompt_tune.py:task=kvasir \
    --config.init=/path/to/params_dir --workdir /tmp/tune_kvasir
  incontext export-prompt --workdir /tmp/tune_kvasir --out kvasir_prompt.npz
  incontext segment --checkpoint /path/to/params_dir --learned-prompt kvasir_prompt.npz ...

  # your own images and masks (globs relative to the working folder, paired by file stem):
  python -m experiments.tune --config experiments/configs/prompt_tune.py:task=folder \
    --config.task.images='photos/*.jpg' --config.task.masks='masks/*.png' \
    --config.init=ckpts/seggpt_vit_large --workdir tune_mine

Rerunning the same command with the same --workdir resumes from its last checkpoint.
Arg (comma-separated): task=kvasir|horse|davis_SEQ|folder (the task examples; davis_SEQ tunes
on the first frames of one DAVIS sequence; folder takes --config.task.images and
--config.task.masks, binary 0/255 or 0/1 masks unless --config.task.mask_type=label with
--config.task.label_ids; it holds out --config.heldout.share=0.25 of the images, by a seeded
split, and scores the tuned and the untuned example prompt on them at the end),
init=example|noise|zeros, learn_target, runlocal (2 steps).
Only the prompt image is learned unless `learn_target` (then the prompt target too).
Data: --config.data_dir (default $INCONTEXT_DATA_DIR, else ../shared/data beside the project).
Result on ../shared/data (small CPU model): see experiments/show_real_results.py.
"""

import ml_collections

from experiments.configs import common


def tasks(data: str) -> dict:
  """The named tasks over the data folder `data`."""
  return {
    # Kvasir-SEG polyps: binary (0/255 -> 1); tune on 64 images of a seeded permutation.
    "kvasir": dict(
      reader="kvasir_seg",
      root=f"{data}/kvasir_seg",
      perm_seed=1,
      start=0,
      stop=64,
      label_ids=(1,),
      label_names=("polyp",),
      seg_type="semantic",
    ),
    # Weizmann horses: tune on 64 of the first 200 of a seeded permutation (the rest of those
    # 200 score it in show_real_results; the few-shot eval uses the permutation's [200:]).
    "horse": dict(
      reader="weizmann_horse",
      root=f"{data}/weizmann_horse",
      perm_seed=0,
      start=0,
      stop=64,
      label_ids=(1,),
      label_names=("horse",),
      seg_type="semantic",
    ),
    # A user's folder: every image matching `images` with the mask of the same file stem.
    "folder": dict(
      reader="image_mask_globs",
      images="",
      masks="",
      mask_type="binary",
      perm_seed=None,
      start=0,
      stop=None,
      label_ids=(1,),
      label_names=("foreground",),
      seg_type="semantic",
    ),
  }


TASKS = tasks(common.data_dir())


def _parse(arg):
  out = dict(task="kvasir", init="example", learn_target=False, runlocal=False)
  for item in filter(None, (arg or "").split(",")):
    k, _, v = item.partition("=")
    if k not in out:
      raise ValueError(f"prompt_tune config: unknown arg {k!r}; known: {sorted(out)}")
    out[k] = v if v else True
  return out


def get_config(arg=None):
  a = _parse(arg)
  c = ml_collections.ConfigDict()
  data = common.data_dir()
  c.data_dir = data
  # run
  c.seed = 0
  c.total_steps = 300
  c.log_every = 10
  c.ckpt_every = 50
  c.keep_ckpts = 3
  # input: the task examples
  if a["task"].startswith("davis_"):
    c.task = dict(
      reader="davis",
      root=f"{data}/davis2016_subset",
      split=None,
      sequences=(a["task"][len("davis_") :],),
      start=0,
      stop=8,
      label_ids=(1,),
      label_names=("object",),
      seg_type="instance",
      perm_seed=None,
    )
  elif a["task"] in TASKS:
    c.task = tasks(data)[a["task"]]
  else:
    raise ValueError(
      f"prompt_tune config: unknown task {a['task']!r}; known: {sorted(TASKS)} or davis_SEQ"
    )
  # held out of the task: a seeded share (at least one example) never tuned on, scored at the
  # end with the tuned prompt and with the untuned example prompt (WORKDIR/heldout.json).
  # On for your own folder, where nothing else says whether tuning helped.
  c.heldout = dict(share=0.25 if a["task"] == "folder" else 0.0, seed=0)
  # model: a params directory (converted official weights or a trained checkpoint)
  c.init = ""
  c.model_overrides = {}
  # tune
  c.tune = dict(
    init=a["init"], init_index=0, learn_target=bool(a["learn_target"]), batch_size=8, hflip=True
  )
  c.optim = dict(
    lr=0.03, warmup_steps=10, schedule="cosine", end_frac=0.1, clip=1.0, b1=0.9, b2=0.99
  )
  # loss: smooth-L1 beta; None = the beta the model was trained with (the trainer records it
  # in its params dir), 0.01 (SegGPT's) for converted official weights.
  c.loss = dict(beta=None)
  # mesh: data parallel over all devices
  c.mesh = [("data", -1)]
  if a["runlocal"]:
    c.total_steps = 2
    c.log_every = 1
    c.ckpt_every = 1
    c.tune.batch_size = 8
    c.task.stop = 4 if c.task.get("stop") is None else min(int(c.task.stop), c.task.start + 4)
  return c
