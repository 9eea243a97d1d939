"""Training losses on canvases (pure jnp functions).

The SegGPT loss (docs/design.md#loss): smooth-L1 with beta 0.01 between the predicted and the target
canvas, counted on the pixels of hidden patches times the `valid` weights, normalised by the
number of counted pixel-channel elements.
"""

import jax
import jax.numpy as jnp

Array = jax.Array


def patch_mask_to_pixels(mask: Array, grid_hw: tuple[int, int], patch: int) -> Array:
  """[B, L] patch flags (row-major over grid_hw) -> [B, gh*p, gw*p] float32 pixel mask."""
  gh, gw = grid_hw
  m = jnp.asarray(mask, jnp.float32).reshape(-1, gh, gw)
  return jnp.repeat(jnp.repeat(m, patch, axis=1), patch, axis=2)


def smooth_l1(d: Array, beta: float = 0.01) -> Array:
  """PyTorch's smooth_l1: 0.5 d^2 / beta if |d| < beta else |d| - 0.5 beta (elementwise)."""
  ad = jnp.abs(d)
  return jnp.where(ad < beta, 0.5 * d * d / beta, ad - 0.5 * beta)


def masked_smooth_l1(
  pred: Array,
  target: Array,
  mask: Array,
  valid: Array | None = None,
  *,
  patch: int,
  beta: float = 0.01,
  painter: bool = False,
) -> Array:
  """SegGPT's training loss (docs/design.md#loss), a float32 scalar.

  Args:
    pred: [B, 2H, W, C] predicted canvas (normalised pixel space).
    target: [B, 2H, W, C] target canvas.
    mask: [B, L] patch mask over the (2H/p, W/p) grid, True/1 = hidden (counted).
    valid: [B, 2H, W] per-pixel weights (0 = ignore) or None (all ones: the HF loss).
    patch: patch size p.
    beta: smooth-L1 threshold (0.01 in SegGPT and Painter).
    painter: add Painter's 0.01 to the denominator (Painter's `forward_loss`).
  Returns:
    sum(l * M) / sum(M), M = pixel mask (x valid) broadcast over channels.
  """
  b, h, w, c = pred.shape
  m = patch_mask_to_pixels(mask, (h // patch, w // patch), patch)
  if m.shape[0] != b:
    m = jnp.broadcast_to(m, (b, h, w))
  if valid is not None:
    m = m * jnp.asarray(valid, jnp.float32)
  d = pred.astype(jnp.float32) - target.astype(jnp.float32)
  m = jnp.broadcast_to(m[..., None], d.shape)
  num = jnp.sum(smooth_l1(d, beta) * m)
  den = jnp.sum(m) + (0.01 if painter else 0.0)
  return num / jnp.maximum(den, 1e-12)
