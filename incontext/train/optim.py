"""The one optimiser builder, for training and for prompt tuning (docs/design.md#training-recipe).

  clip_by_global_norm(clip) -> Adam moments -> decoupled weight decay (masked)
  -> layer-wise lr scale -> -schedule(step)

i.e. PyTorch's AdamW with BEiT-style param groups: p -= lr * s_layer * (adam + wd * p).
`make_tx(optim, trainable=...)` applies it to the parameters the `trainable` selection names
(training: the model's params matching `optim.trainable` and not `optim.frozen`; tuning: the
prompt's 'image' leaf, and 'target' when it is learned); the others get zero updates and no
optimiser state. `OptimConfig` is `config.optim` of training, `PromptOptimConfig` that of
tuning (no weight decay or layer decay: the prompt is an input, not a weight).
"""

import dataclasses
import re
from typing import Callable, ClassVar

import jax
import jax.numpy as jnp
import optax

from incontext import config_lib
from incontext.errors import UserError
from incontext.sharding import path_str

# No weight decay on norms, biases, position embeddings and tokens (as Painter).
NO_WD = r".*(bias|scale)|(.*/)?pos_embed|(.*/)?\w*token\w*"
SCHEDULES = ("cosine", "constant")


@dataclasses.dataclass(frozen=True)
class OptimConfig:
  """`config.optim` of training (experiments/configs/common.py sets the recipe's values)."""

  # Peak learning rate, reached at the end of the warm-up.
  lr: float
  # Steps of linear warm-up from 0 to `lr` (at most the run's total steps).
  warmup_steps: int = 0
  # After the warm-up: 'cosine' (half-cosine decay to the end lr) or 'constant' (`lr`).
  schedule: str = "cosine"
  # The end of the cosine decay is min_lr + end_frac * lr (training sets min_lr, tuning end_frac).
  min_lr: float = 0.0
  end_frac: float = 0.0
  # Adam's moment decays and epsilon.
  b1: float = 0.9
  b2: float = 0.999
  eps: float = 1e-8
  # Clip the gradient to this global norm first (0: no clipping).
  clip: float = 0.0
  # Decoupled weight decay (0: off), not applied to params whose path fully matches `no_wd`.
  wd: float = 0.0
  no_wd: str = NO_WD
  # BEiT layer-wise lr decay: block i's lr is scaled by decay ** (depth + 1 - (i + 1)) (1: off).
  layer_decay: float = 1.0
  # The params that train: paths ('blocks/3/attn/qkv/kernel') fully matching `trainable` and
  # not `frozen` (regexes); the others get zero updates and no optimiser state.
  trainable: str = ".*"
  frozen: str = ""

  # Training's keys (end_frac is tuning's name for the end of the decay).
  KEYS: ClassVar[tuple[str, ...]] = (
    "lr",
    "warmup_steps",
    "schedule",
    "min_lr",
    "b1",
    "b2",
    "eps",
    "clip",
    "wd",
    "no_wd",
    "layer_decay",
    "trainable",
    "frozen",
  )


@dataclasses.dataclass(frozen=True)
class PromptOptimConfig(OptimConfig):
  """`config.optim` of prompt tuning: Adam, clipped, warm-up + cosine to a fraction of `lr`
  (experiments/configs/prompt_tune.py); what trains is chosen by `config.tune.learn_target`."""

  # Adam's second-moment decay (faster than training's 0.999: tuning runs are short).
  b2: float = 0.99
  # Global-norm clipping of the prompt's gradient.
  clip: float = 1.0
  # The cosine decay ends at end_frac * lr.
  end_frac: float = 0.1

  KEYS: ClassVar[tuple[str, ...]] = (
    "b1",
    "b2",
    "clip",
    "end_frac",
    "lr",
    "schedule",
    "warmup_steps",
  )


def _config(optim, cls=OptimConfig) -> tuple[OptimConfig, int | None]:
  """(section, total_steps) of an OptimConfig or a ConfigDict/dict holding `total_steps`."""
  if isinstance(optim, OptimConfig):
    return optim, None
  values = {k: optim[k] for k in optim.keys() if k != "total_steps"}
  total = optim["total_steps"] if "total_steps" in optim.keys() else None
  return config_lib.section(cls, values, "config.optim"), total


def schedule(optim, total_steps: int | None = None) -> optax.Schedule:
  """Linear warm-up from 0 to `lr` over `warmup_steps`, then half-cosine to
  min_lr + end_frac * lr over the rest of `total_steps` (or constant `lr`)."""
  o, total_cfg = _config(optim)
  total = int(total_steps if total_steps is not None else total_cfg)
  warm = min(int(o.warmup_steps), total)
  if o.schedule not in SCHEDULES:
    raise UserError(f"config.optim.schedule={o.schedule!r}: expected 'cosine' or 'constant'")
  if o.schedule == "constant":
    return optax.join_schedules(
      [optax.linear_schedule(0.0, o.lr, max(warm, 1)), optax.constant_schedule(o.lr)], [warm]
    )
  end = o.min_lr + o.end_frac * o.lr
  return optax.warmup_cosine_decay_schedule(0.0, o.lr, warm, max(total, warm + 1), end_value=end)


def layer_id(name: str, depth: int) -> int:
  """BEiT/Painter ids: 0 patch_embed and pos_embed, i+1 blocks/i, depth+1 everything else."""
  if name.startswith(("patch_embed", "pos_embed")):
    return 0
  m = re.match(r"blocks/(\d+)/", name)
  if m:
    return int(m.group(1)) + 1
  return depth + 1


def lr_scale(name: str, depth: int, decay: float) -> float:
  return float(decay ** (depth + 1 - layer_id(name, depth)))


def trainable_fn(trainable: str = ".*", frozen: str = ""):
  """name -> bool: fullmatches `trainable` and not `frozen` (regexes over param paths)."""
  t, f = re.compile(trainable or ".*"), re.compile(frozen) if frozen else None
  return lambda name: bool(t.fullmatch(name)) and not (f is not None and f.fullmatch(name))


def _scale_by_path(fn) -> optax.GradientTransformation:
  """Multiplies each update by fn(path) (static per leaf)."""

  def update(updates, state, params=None):
    del params
    return jax.tree_util.tree_map_with_path(
      lambda p, u: u * jnp.asarray(fn(path_str(p)), u.dtype), updates
    ), state

  return optax.GradientTransformation(lambda p: optax.EmptyState(), update)


def make_tx(
  optim,
  *,
  total_steps: int | None = None,
  depth: int | None = None,
  trainable: str | Callable[[str], bool] | None = None,
) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """(tx, schedule): the optimiser of `optim` applied to the `trainable` selection.

  Args:
    optim: an `OptimConfig` (or `PromptOptimConfig`), or a ConfigDict/dict of training's keys
      (`OptimConfig.KEYS`) plus `total_steps`.
    total_steps: the run's length (the cosine decay ends there); default `optim.total_steps`.
    depth: the model depth, for the layer-wise lr decay (needed when layer_decay != 1).
    trainable: which params train: None (the model's params per `optim.trainable` and
      `optim.frozen`), a regex over param paths (e.g. `tune_steps.prompt_selection(...)`: the
      prompt's leaves) or a predicate path -> bool. The others get zero updates, no state.
  """
  o, total_cfg = _config(optim)
  sched = schedule(o, total_steps if total_steps is not None else total_cfg)
  no_wd = re.compile(o.no_wd)
  wd_mask = lambda params: jax.tree_util.tree_map_with_path(
    lambda p, _: not no_wd.fullmatch(path_str(p)), params
  )
  parts = []
  if o.clip:
    parts.append(optax.clip_by_global_norm(float(o.clip)))
  parts.append(optax.scale_by_adam(b1=o.b1, b2=o.b2, eps=o.eps))
  if o.wd:
    parts.append(optax.add_decayed_weights(float(o.wd), mask=wd_mask))
  if o.layer_decay != 1.0:
    if depth is None:
      raise ValueError("make_tx: layer_decay needs the model depth")
    parts.append(_scale_by_path(lambda name: lr_scale(name, depth, o.layer_decay)))
  parts.append(optax.scale_by_learning_rate(sched))
  tx = optax.chain(*parts)
  if trainable is None:
    fn = trainable_fn(o.trainable, o.frozen)
  elif isinstance(trainable, str):
    fn = trainable_fn(trainable)
  else:
    fn = trainable
  labels = lambda params: jax.tree_util.tree_map_with_path(
    lambda p, _: "train" if fn(path_str(p)) else "frozen", params
  )
  tx = optax.multi_transform({"train": tx, "frozen": optax.set_to_zero()}, labels)
  return tx, sched
