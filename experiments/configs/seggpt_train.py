"""Training SegGPT: the paper recipe, smaller variants, the CPU quickstart and `real` data.

  # Quickstart (README main command): a small model from scratch on procedural data, a few
  # minutes on a laptop CPU; prints few-shot mIoU on held-out procedural classes and the
  # copy-the-prompt-mask baseline, writes workdir/predictions.png and curve.png.
  python -m experiments.train --config experiments/configs/seggpt_train.py:quickstart \
    --workdir /tmp/qs

  # The same trainer on the real sets in ../shared/data (pipeline of incontext.data).
  python -m experiments.train --config experiments/configs/seggpt_train.py:real --workdir /tmp/real

  # The recipe of the SegGPT paper (section 4.2) for L/16 on a TPU/GPU pod, from Painter:
  python -m experiments.train --config experiments/configs/seggpt_train.py:paper \
    --config.init.path=/ckpts/painter_vit_large.pth --workdir gs://bucket/seggpt_l16
  # multi-host: add --distributed (TPU/SLURM auto-detect) or --coordinator_address=HOST:PORT
  # --num_processes=N --process_id=I on every host.

Arg (comma-separated): a preset word (paper | quickstart | real), variant=L/16|B/16|S/16|Ti/16
(paper preset only), runlocal (a tiny model, 3 steps); `real` only: procedural_frac=F (share
of procedural pairs, default 0.5), min_area=A (objects under that fraction of their prompt
image are not chosen, default 0), davis_weight=W (mixing weight of the DAVIS training sequences,
default 1 = COCO's half), frame_gap=G (max frames between a video pair's prompt and query,
default 20; 0 = any), instance_prob=P (share of COCO pairs that are one instance in two
augmented views of one image, default 0.5). Everything else:
--config.a.b=value. Rerunning the same command with the same --workdir resumes exactly.
"""

from experiments.configs import common
from incontext import config_lib

# The quickstart and `real` model: ~0.6M params, 32x32 halves in 4x4 patches (8x8 tokens/half).
# Variant `quickstart-0.6M` is this architecture; the fields are spelled out for the readers of
# c.model (input sizes) and for --config.model.X overrides.
SMALL_32 = dict(
  variant="quickstart-0.6M",
  image_size=(32, 32),
  patch=4,
  width=96,
  depth=6,
  num_heads=4,
  mlp_dim=192,
  decoder_dim=16,
  merge_index=1,
  feature_layers=(2, 3, 4, 5),
  pretrain_grid=8,
  drop_path=0.0,
  dtype="float32",
  remat=False,
)


def get_config(arg=None):
  arg = config_lib.parse_arg(
    arg,
    preset="paper",
    variant="L/16",
    runlocal=False,
    procedural_frac=0.5,
    min_area=0.0,
    davis_weight=1.0,
    frame_gap=20,
    instance_prob=0.5,
  )
  if arg.preset not in ("paper", "quickstart", "real"):
    raise ValueError(
      f"seggpt_train config: unknown preset {arg.preset!r}; known: paper, quickstart, real"
    )

  if arg.preset == "paper":
    # SegGPT paper, section 4.2: batch 2048, 9K iterations with 1.8K warm-up, AdamW lr 1e-4
    # wd 0.05, 448^2 halves; Painter's layer decay 0.8, clip 3.0, drop path 0.1; init from Painter.
    c = common.base(total_steps=9000, batch_size=2048)
    c.input = common.shared_data_input(image_size=448, patch_size=16, num_workers=8, read_threads=8)
    c.model = dict(
      variant=arg.variant,
      image_size=(448, 448),
      patch=16,
      dtype="bfloat16",
      remat=True,
      drop_path=0.1,
    )
    c.init = dict(kind="torch", path="")  # --config.init.path=painter_vit_large.pth
    c.optim.update(lr=1e-4, warmup_steps=1800, wd=0.05, layer_decay=0.8, clip=3.0)
    c.evals.update(type="procedural", every=1000, data=common.procedural_input(448, 16))
    c.ckpt.update(every=500, keep=3)
    c.log_every = 20
    c.sharding_rules = "fsdp"  # ZeRO-3 over the 'fsdp' axis when it is > 1
  elif arg.preset == "quickstart":
    # A ~0.6M-param SegGPT from scratch on 32x32 halves with 4x4 patches (8x8 tokens per
    # half), white Painter-style targets and query-half masks. Each pair has two objects of
    # different appearance classes; the model learns to paint the query object that looks
    # like the painted prompt object, and is evaluated on held-out classes.
    # loss.beta=5 makes the smooth-L1 quadratic over the whole normalised range (an MSE):
    # with SegGPT's beta=0.01 (an L1, whose optimum is the per-pixel median) a model that
    # cannot yet tell the two objects apart is best off predicting black everywhere, and
    # short CPU runs never leave that state (0% mIoU after 600 steps); the MSE rewards
    # partial evidence, and matching appears within ~100 steps.
    c = common.base(total_steps=400, batch_size=16)
    c.input = common.procedural_input(
      image_size=32,
      patch_size=4,
      half_prob=1.0,
      palette=1,
      objects=(2, 2),
      coloured=(1, 1),
      size=(0.22, 0.34),
    )
    c.model = dict(SMALL_32)
    c.optim.update(lr=2e-3, warmup_steps=30, wd=0.05, layer_decay=1.0, clip=3.0)
    c.loss.beta = 5.0
    c.evals.update(every=100, per_class=4)
    c.ckpt.update(every=200, keep=2)
    c.log_every = 25
  else:  # real
    c = common.base(total_steps=3000, batch_size=16)
    c.input = common.real_data_input(
      image_size=32,
      patch_size=4,
      procedural_frac=arg.procedural_frac,
      min_area=arg.min_area,
      davis_weight=arg.davis_weight,
      frame_gap=arg.frame_gap,
      instance_prob=arg.instance_prob,
    )
    c.model = dict(SMALL_32)
    c.optim.update(lr=2e-3, warmup_steps=50, wd=0.05, layer_decay=1.0, clip=3.0)
    c.loss.beta = 5.0
    c.evals.update(
      type="episodes",
      every=250,
      num_episodes=64,
      seed=0,
      data=dict(source=dict(reader="coco128_seg", root=f"{c.data_dir}/coco128_seg"), fold=0),
    )
    c.ckpt.update(every=500, keep=2)
    c.log_every = 50
  if arg.runlocal:
    common.shrink(c)
    if c.input.type == "pipeline":
      c.input.read_threads = 1
      c.input.num_workers = 0
    if c.evals.type == "procedural" and "data" in c.evals:
      c.evals.data.image_size, c.evals.data.patch_size = 16, 4
    c.evals.num_episodes = 4
  return c
