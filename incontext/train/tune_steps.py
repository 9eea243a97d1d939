"""Pure step functions of in-context tuning: the model is frozen, the prompt learns.

See docs/design.md#in-context-tuning.

The prompt is a plain array argument (a dict {'image', 'target'} of [h, w, 3] normalised
tensors), not a Variable in the model: gradients only ever reach it, and the frozen `params`
are a separate, never-donated argument. No jit here; the tuner jits with shardings.

Batch (task examples, one prompt slot shared by all):
  image   [B, h, w, 3] float32  normalised query images
  target  [B, h, w, 3] float32  normalised colour-encoded ground truth
  valid   [B, h, w]    float32  1 where the loss counts (0 = ignore)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from incontext import canvas, losses
from incontext.errors import UserError


def build_canvas(prompt: dict, batch: dict) -> tuple[jax.Array, jax.Array]:
  """-> (imgs, tgts) [B, 2h, w, 3]: the prompt broadcast on top of every query.

  The query half of `tgts` is the ground truth; it is hidden by the mask token (bottom-half
  mask), so the model never sees it.
  """
  b = batch["image"].shape[0]
  top_i = jnp.broadcast_to(prompt["image"][None], (b,) + prompt["image"].shape)
  top_t = jnp.broadcast_to(prompt["target"][None], (b,) + prompt["target"].shape)
  imgs = jnp.concatenate([top_i, batch["image"]], axis=1)
  tgts = jnp.concatenate([top_t, batch["target"]], axis=1)
  return imgs, tgts


def tune_loss(
  prompt: dict, batch: dict, *, graphdef, params, seg_type: int, beta: float = 0.01
) -> jax.Array:
  """The training loss (docs/design.md#loss) of the frozen model with this prompt, a scalar.

  Masked smooth-L1 over the query half (the hidden patches at inference) against the
  colour-encoded ground truth, weighted by `valid`. beta: SegGPT's 0.01 by default; tune
  with the beta the model was trained with (an L1-like loss pulls an MSE-trained model's
  uncertain pixels to the per-pixel median, i.e. background).
  """
  model = nnx.merge(graphdef, params)
  cfg = model.cfg
  imgs, tgts = build_canvas(prompt, batch)
  b = imgs.shape[0]
  mask = jnp.asarray(canvas.query_half_mask(cfg.grid))[None]
  st = jnp.full((b,), seg_type, jnp.int32)
  pred = model(imgs, tgts, mask, st, query_only=True)  # [B, h, w, 3]
  # Over the query half every patch is hidden: a full patch mask of the half's grid.
  gq = (cfg.grid[0] // 2, cfg.grid[1])
  qmask = jnp.ones((1, gq[0] * gq[1]), bool)
  return losses.masked_smooth_l1(
    pred, batch["target"], qmask, batch["valid"], patch=cfg.patch, beta=beta
  )


def tune_step(
  state: dict,
  batch: dict,
  *,
  graphdef,
  params,
  tx,
  seg_type: int,
  learn_target: bool,
  beta: float = 0.01,
):
  """One optimiser step on the prompt only.

  Args:
    state: {'prompt': {'image', 'target'} [h, w, 3], 'opt': optax state, 'step': int32}.
    batch: task examples (module doc).
    graphdef, params: the frozen model, split with `nnx.split` (params never donated).
    tx: optax transformation over the prompt dict.
    seg_type: type token (0 semantic, 1 instance).
    learn_target: also learn the prompt target (else its gradient is stopped).
    beta: smooth-L1 beta of the loss (`tune_loss`).
  Returns:
    (new state, {'loss', 'grad_norm', 'update_norm'}).
  """

  def objective(prompt):
    if not learn_target:
      prompt = {"image": prompt["image"], "target": jax.lax.stop_gradient(prompt["target"])}
    return tune_loss(prompt, batch, graphdef=graphdef, params=params, seg_type=seg_type, beta=beta)

  loss, grad = jax.value_and_grad(objective)(state["prompt"])
  updates, opt = tx.update(grad, state["opt"], state["prompt"])
  prompt = optax.apply_updates(state["prompt"], updates)
  metrics = {
    "loss": loss,
    "grad_norm": optax.tree.norm(grad),
    "update_norm": optax.tree.norm(updates),
  }
  return {"prompt": prompt, "opt": opt, "step": state["step"] + 1}, metrics


def prompt_selection(learn_target: bool) -> str:
  """The `trainable` selection of `optim.make_tx` for a prompt: its 'image' leaf, and its
  'target' leaf when `learn_target` (a frozen target gets zero updates and no Adam state)."""
  return "image|target" if learn_target else "image"


def init_prompt(
  kind: str, h: int, w: int, *, example: dict | None = None, seed: int = 0, noise_std: float = 1.0
) -> dict:
  """Initial prompt {'image', 'target'} [h, w, 3] normalised.

  kind: 'example' (a real task example's image and colour target), 'noise' (N(0, noise_std) in
  normalised space for the image, the example's target if given else black) or 'zeros'.
  """
  black = np.broadcast_to(canvas.normalize(np.zeros(3, np.uint8)), (h, w, 3)).astype(np.float32)
  if kind == "example":
    if example is None:
      raise UserError("tune.init='example' needs a task example")
    return {
      "image": np.asarray(example["image"], np.float32),
      "target": np.asarray(example["target"], np.float32),
    }
  if kind == "noise":
    rng = np.random.default_rng(seed)
    img = (noise_std * rng.standard_normal((h, w, 3))).astype(np.float32)
    tgt = black if example is None else np.asarray(example["target"], np.float32)
    return {"image": img, "target": tgt}
  if kind == "zeros":
    return {"image": np.zeros((h, w, 3), np.float32), "target": black.copy()}
  raise UserError(f"unknown tune.init {kind!r}; expected 'example', 'noise' or 'zeros'")
