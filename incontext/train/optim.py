"""The optax optimiser from `config.optim` (docs/design.md#training-recipe).

  clip_by_global_norm(clip) -> Adam moments -> decoupled weight decay (masked)
  -> layer-wise lr scale -> -schedule(step)

i.e. PyTorch's AdamW with BEiT-style param groups: p -= lr * s_layer * (adam + wd * p).
Frozen parameters (not matched by `trainable`, or matched by `frozen`) get zero updates and
no optimiser state.
"""

import re

import jax
import jax.numpy as jnp
import optax

from incontext.sharding import path_str

# No weight decay on norms, biases, position embeddings and tokens (as Painter).
NO_WD = r".*(bias|scale)|(.*/)?pos_embed|(.*/)?\w*token\w*"


def schedule(optim) -> optax.Schedule:
  """Linear warm-up from 0 to `lr` over `warmup_steps`, then half-cosine to `min_lr`."""
  total = int(optim.total_steps)
  warm = min(int(optim.warmup_steps), total)
  if optim.get("schedule", "cosine") == "constant":
    return optax.join_schedules(
      [optax.linear_schedule(0.0, optim.lr, max(warm, 1)), optax.constant_schedule(optim.lr)],
      [warm],
    )
  return optax.warmup_cosine_decay_schedule(
    0.0, optim.lr, warm, max(total, warm + 1), end_value=optim.get("min_lr", 0.0)
  )


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


def make_tx(optim, *, depth: int) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """(tx, schedule) from config.optim.

  Keys: lr, min_lr, warmup_steps, total_steps, schedule ('cosine'|'constant'), wd,
  b1, b2, eps, clip (global norm, 0 = off), layer_decay (1.0 = off), no_wd (regex),
  trainable / frozen (regexes).
  """
  sched = schedule(optim)
  no_wd = re.compile(optim.get("no_wd", NO_WD))
  decay = float(optim.get("layer_decay", 1.0))
  wd_mask = lambda params: jax.tree_util.tree_map_with_path(
    lambda p, _: not no_wd.fullmatch(path_str(p)), params
  )
  parts = []
  if optim.get("clip", 0.0):
    parts.append(optax.clip_by_global_norm(float(optim.clip)))
  parts.append(
    optax.scale_by_adam(
      b1=optim.get("b1", 0.9), b2=optim.get("b2", 0.999), eps=optim.get("eps", 1e-8)
    )
  )
  if optim.get("wd", 0.0):
    parts.append(optax.add_decayed_weights(float(optim.wd), mask=wd_mask))
  if decay != 1.0:
    parts.append(_scale_by_path(lambda name: lr_scale(name, depth, decay)))
  parts.append(optax.scale_by_learning_rate(sched))
  tx = optax.chain(*parts)
  fn = trainable_fn(optim.get("trainable", ".*"), optim.get("frozen", ""))
  labels = lambda params: jax.tree_util.tree_map_with_path(
    lambda p, _: "train" if fn(path_str(p)) else "frozen", params
  )
  tx = optax.multi_transform({"train": tx, "frozen": optax.set_to_zero()}, labels)
  return tx, sched
