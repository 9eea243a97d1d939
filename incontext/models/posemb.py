"""Absolute position tables: PyTorch-exact bicubic resize of the 14x14 pretrain grid.

SegGPT keeps MAE's (1, 1 + 14*14, D) table and resizes the grid on every forward with
`F.interpolate(mode="bicubic", align_corners=False)` (docs/design.md#position-embedding).
`jax.image.resize` uses a
different cubic kernel (A=-0.5), so we build PyTorch's interpolation as two small weight
matrices in numpy (A=-0.75, unclamped source coordinate, taps clamped to the border) and
contract the table with them.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

_A = -0.75  # PyTorch's cubic convolution coefficient.


def _cubic(x: np.ndarray) -> np.ndarray:
  x = np.abs(x)
  near = ((_A + 2) * x - (_A + 3)) * x * x + 1
  far = ((_A * x - 5 * _A) * x + 8 * _A) * x - 4 * _A
  return np.where(x <= 1, near, np.where(x < 2, far, 0.0))


@functools.lru_cache(maxsize=None)
def torch_bicubic_matrix(n_in: int, n_out: int) -> np.ndarray:
  """[n_out, n_in] float64 matrix M with M @ v == torch bicubic resize of v (1-D)."""
  scale = n_in / n_out
  m = np.zeros((n_out, n_in), np.float64)
  for d in range(n_out):
    src = (d + 0.5) * scale - 0.5
    f = int(np.floor(src))
    t = src - f
    for k, w in zip(range(f - 1, f + 3), _cubic(np.array([t + 1, t, 1 - t, 2 - t]))):
      m[d, min(max(k, 0), n_in - 1)] += w
  return m


def resize_pos_embed(
  pos_embed: jax.Array, out_hw: tuple[int, int], has_cls: bool = True
) -> jax.Array:
  """[1, (1 +) g*g, C] table -> [1, H, W, C] grid, PyTorch-bicubic (float32, HIGHEST)."""
  table = pos_embed[0, 1:] if has_cls else pos_embed[0]
  g = int(round(np.sqrt(table.shape[0])))
  if g * g != table.shape[0]:
    raise ValueError(f"pos_embed has {table.shape[0]} grid rows, not a square grid")
  grid = table.reshape(g, g, -1)
  if (g, g) == tuple(out_hw):
    return grid[None]
  mh = jnp.asarray(torch_bicubic_matrix(g, out_hw[0]), jnp.float32)
  mw = jnp.asarray(torch_bicubic_matrix(g, out_hw[1]), jnp.float32)
  hi = jax.lax.Precision.HIGHEST
  out = jnp.einsum("Hh,hwc->Hwc", mh, grid.astype(jnp.float32), precision=hi)
  out = jnp.einsum("Ww,Hwc->HWc", mw, out, precision=hi)
  return out[None]
