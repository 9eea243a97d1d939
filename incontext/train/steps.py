"""Pure step functions (no jit, no globals): the trainer binds static args and jits them.

Train state (a dict pytree, saved and restored whole):
  params  nested dict of float32 arrays (nnx.to_pure_dict of the model's Params)
  opt     optax state of `tx`
  step    int32 scalar: number of updates applied
  rng     uint32 [2] base key; step s uses fold_in(rng, s), so resumed runs reproduce
"""

from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from incontext import losses

Batch = dict[str, jax.Array]


def init_state(params, tx: optax.GradientTransformation, seed: int) -> dict[str, Any]:
  return {
    "params": params,
    "opt": tx.init(params),
    "step": jnp.zeros((), jnp.int32),
    "rng": jax.random.key_data(jax.random.key(seed)),
  }


def loss_fn(
  params, batch: Batch, rng, *, graphdef, patch: int, beta: float = 0.01, painter_loss: bool = False
):
  """-> (loss, pred). batch: the canvas keys (image/target [B, 2H, W, 3], mask [B, L], ...)."""
  model = nnx.merge(graphdef, params)
  pred = model(batch["image"], batch["target"], batch["mask"], batch["seg_type"], rng=rng)
  loss = losses.masked_smooth_l1(
    pred,
    batch["target"],
    batch["mask"],
    batch["valid"],
    patch=patch,
    beta=beta,
    painter=painter_loss,
  )
  return loss, pred


def train_step(
  state: dict[str, Any],
  batch: Batch,
  *,
  graphdef,
  tx,
  schedule,
  patch: int,
  beta: float = 0.01,
  painter_loss: bool = False,
  drop_path: bool = True,
):
  """One AdamW update. -> (new state, metrics {loss, grad_norm, update_norm, param_norm, lr})."""
  step = state["step"]
  rng = jax.random.fold_in(jax.random.wrap_key_data(state["rng"]), step) if drop_path else None
  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
  (loss, _), grads = grad_fn(
    state["params"],
    batch,
    rng,
    graphdef=graphdef,
    patch=patch,
    beta=beta,
    painter_loss=painter_loss,
  )
  updates, opt = tx.update(grads, state["opt"], state["params"])
  params = optax.apply_updates(state["params"], updates)
  metrics = {
    "loss": loss,
    "grad_norm": optax.tree.norm(grads),
    "update_norm": optax.tree.norm(updates),
    "param_norm": optax.tree.norm(params),
    "lr": jnp.asarray(schedule(step), jnp.float32),
  }
  return {"params": params, "opt": opt, "step": step + 1, "rng": state["rng"]}, metrics


def predict(params, batch: Batch, *, graphdef) -> jax.Array:
  """Deterministic query-half prediction [B, H, W, 3] (normalised) for the batch's mask."""
  model = nnx.merge(graphdef, params)
  return model(batch["image"], batch["target"], batch["mask"], batch["seg_type"], query_only=True)
