"""Shared config pieces for experiment configs: the data folder, base run settings, inputs,
the runlocal shrink.

The data folder (`data_dir()`, the project's one rule: `incontext.data.datadir`) is, in this
order: the environment variable INCONTEXT_DATA_DIR, else `../shared/data` beside the project
root (so any working folder works). Configs store it as `config.data_dir` and build their
dataset roots from it;
`--config.data_dir=DIR` on the command line moves every root that was under the default
(`resolve_data_dir`, called by the entry points).
"""

import os

import ml_collections

from incontext.data.datadir import DATA_DIR_ENV, data_dir
from incontext.errors import UserError


class DataDirError(UserError):
  """The configured data folder does not exist."""


def _map_strings(x, fn):
  """x with fn applied to every string inside its ConfigDicts, dicts, lists and tuples."""
  if isinstance(x, str):
    return fn(x)
  if isinstance(x, ml_collections.ConfigDict):
    for k in list(x.keys()):
      new = _map_strings(x[k], fn)
      if new is not x[k]:
        x[k] = new
    return x
  if isinstance(x, dict):
    return {k: _map_strings(v, fn) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    out = [_map_strings(v, fn) for v in x]
    return out if isinstance(x, list) else tuple(out)
  return x


def resolve_data_dir(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Makes `config.data_dir` absolute, moves the roots built from the default data folder
  under it, and checks the folder exists when a root uses it (DataDirError: one line naming
  the setting and the path). Configs without `data_dir` are returned as they are."""
  if "data_dir" not in config:
    return config
  default, new = data_dir(), os.path.abspath(os.path.expanduser(str(config.data_dir)))
  config.data_dir = new
  used = []

  def move(s):
    if s == default or s.startswith(default + os.sep):
      s = new + s[len(default) :]
    if s == new or s.startswith(new + os.sep):
      used.append(s)
    return s

  for k in list(config.keys()):
    if k != "data_dir":
      new_v = _map_strings(config[k], move)
      if new_v is not config[k]:
        config[k] = new_v
  if used and not os.path.isdir(new):
    raise DataDirError(
      f"data_dir {new}: no such folder (set --config.data_dir=DIR or "
      f"{DATA_DIR_ENV}=DIR to the folder holding the datasets)"
    )
  return config


def base(
  *, seed: int = 0, total_steps: int = 1000, batch_size: int = 32
) -> ml_collections.ConfigDict:
  """Run, optimiser (Painter/SegGPT recipe defaults), loss, ckpt, log and mesh sections."""
  c = ml_collections.ConfigDict()
  c.data_dir = data_dir()  # dataset roots below are built from it
  # run
  c.seed = seed
  c.total_steps = total_steps
  c.batch_size = batch_size  # global batch (all hosts)
  c.log_every = 50
  c.export_params = True  # workdir/params at the end (single host)
  # init: kind 'scratch' | 'params' (incontext params dir) | 'torch' (.pth, .safetensors,
  # a transformers folder or hf:REPO_ID); a relative path is from the working folder
  c.init = dict(kind="scratch", path="")
  # optim (docs/design.md#training-recipe): AdamW, warm-up + cosine, no wd on
  # norms/biases/pos/tokens, BEiT layer-wise lr decay, global-norm clipping.
  c.optim = dict(
    lr=1e-4,
    min_lr=0.0,
    warmup_steps=100,
    schedule="cosine",
    wd=0.05,
    b1=0.9,
    b2=0.999,
    eps=1e-8,
    clip=3.0,
    layer_decay=0.8,
    no_wd=r".*(bias|scale)|(.*/)?pos_embed|(.*/)?\w*token\w*",
    trainable=".*",
    frozen="",
  )
  c.loss = dict(beta=0.01, painter=False)
  # evals: few-shot mIoU on held-out classes
  c.evals = dict(
    type="procedural",
    every=0,
    at_end=True,
    per_class=4,
    num_episodes=64,
    seed=1234,
    batch_size=0,
    num_png=8,
  )
  # ckpt
  c.ckpt = dict(every=500, keep=3, best_metric="", best_mode="max")
  c.ckpt["async"] = True
  # mesh: batch over data x fsdp; params by regex rules (a preset name of
  # incontext.sharding.RULES or a list of (regex, spec) pairs).
  c.mesh = [("data", -1), ("fsdp", 1), ("model", 1)]
  c.sharding_rules = "replicate"
  return c


def procedural_input(image_size: int = 32, patch_size: int = 4, **kw) -> dict:
  return dict(type="procedural", image_size=image_size, patch_size=patch_size, **kw)


def shared_data_input(image_size: int = 448, patch_size: int = 16, **kw) -> dict:
  """The data pipeline over the raw sets in ../shared/data (incontext.data.pipeline)."""
  from incontext.data import pipeline

  cfg = pipeline.shared_data_config(data_dir(), image_size=image_size, patch_size=patch_size, **kw)
  return dict(type="pipeline", **cfg)


def shrink(c: ml_collections.ConfigDict) -> None:
  """runlocal: a tiny model, tiny canvases, a few steps; runs on a laptop CPU in seconds."""
  c.total_steps = 3
  c.batch_size = 8
  c.log_every = 1
  c.model.variant = "test"
  for k in (
    "width",
    "depth",
    "num_heads",
    "mlp_dim",
    "feature_layers",
    "decoder_dim",
    "merge_index",
    "pretrain_grid",
  ):
    if k in c.model:
      del c.model[k]
  c.model.image_size = (16, 16)
  c.model.patch = 4
  c.model.dtype = "float32"
  c.model.remat = False
  c.optim.warmup_steps = 1
  c.input.image_size = 16
  c.input.patch_size = 4
  c.evals.per_class = 1
  c.ckpt.every = 2
  c.mesh = [("data", -1), ("fsdp", 1), ("model", 1)]


# Held out of the `real` training mixture (evaluated by experiments/show_real_results.py):
# Kvasir-SEG and Weizmann horse entirely, these DAVIS sequences, COCO's fold-0 classes.
DAVIS_HELD_OUT = ("boat", "kite-walk", "rollerblade")
DAVIS_TRAIN = ("bmx-bumps", "dog-agility", "hockey", "motorbike", "surf")
REAL_PP = (
  "random_resized_crop(scale=(0.3, 1.0))|hflip(p=0.5)|color_jitter(p=0.8)"
  "|random_colouring(colours='white')|to_canvas|patch_mask(mode='half')"
)


def real_data_input(
  image_size: int = 32,
  patch_size: int = 4,
  procedural_frac: float = 0.5,
  min_area: float = 0.0,
  davis_weight: float = 1.0,
  frame_gap: int = 20,
  instance_prob: float = 0.5,
  **kw,
) -> dict:
  """The `real` training mixture: COCO (fold-0 classes held out), CCP, CamVid, DAVIS train
  sequences; one object per pair painted white on black, the query half hidden (the few-shot
  inference task), and `procedural_frac` of the pairs procedural (teaches matching fast).
  DAVIS pairs are two frames of one training sequence at most `frame_gap` apart (0: any),
  mixed with weight `davis_weight` (COCO 2, CCP 1, CamVid 1). `instance_prob` of the pairs
  of sources with instances (COCO) are one instance in two augmented views of one image."""
  if davis_weight < 0 or frame_gap < 0:
    raise ValueError(
      f"real_data_input: davis_weight ({davis_weight}) and frame_gap ({frame_gap}) must be >= 0"
    )
  if not 0 <= instance_prob <= 1:
    raise ValueError(f"real_data_input: instance_prob {instance_prob} must be in [0, 1]")
  cfg = shared_data_input(
    image_size=image_size,
    patch_size=patch_size,
    datasets=["coco128_seg", "clothing_co_parsing", "camvid", "davis2016_subset"],
    pp=REAL_PP,
    procedural_frac=procedural_frac,
    procedural=dict(objects=(2, 2), coloured=(1, 1), size=(0.22, 0.34), palette=1, half_prob=1.0),
    read_threads=2,
    prefetch=16,
    **kw,
  )
  for d in cfg["datasets"]:
    d["max_objects"] = 1
    d["mix_context_prob"] = 0.0
    d["min_area"] = float(min_area)
    d["instance_prob"] = float(instance_prob)
    if d["name"] == "coco128_seg":
      d["exclude_fold"] = 0
    if d["name"] == "davis2016_subset":
      d["sequences"] = DAVIS_TRAIN
      d["exclude_examples"] = DAVIS_HELD_OUT  # also held out if `sequences` is overridden
      d["weight"] = float(davis_weight)
      d["max_frame_gap"] = int(frame_gap) or None
  return cfg
