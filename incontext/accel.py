"""Accelerator defaults for inference: how many queries one forward takes.

On CPU one forward per few queries is already compute-bound (the default stays 4). On a
GPU/TPU a forward is only efficient with many queries in flight, so the batch is sized from
the device memory: half of it (the weights, XLA's workspace and the next batch's inputs
take the rest) divided by an analytic estimate of one query's peak activation memory.
"""

import jax

from incontext.models import seggpt

CPU_BATCH = 4
MAX_BATCH = 64


def query_activation_bytes(cfg: seggpt.SegGPTConfig, k: int) -> int:
  """Peak activation bytes of one query against k prompts (query_only forward).

  The largest live set is one two-stream block's attention: float32 logits and the
  probabilities in the compute dtype, [2k, heads, L, L] each (the fused XLA attention keeps
  them whole), beside the block's token activations (qkv, attention output, MLP hidden),
  doubled for the residual stream and XLA's fusion temporaries.
  """
  ds = 2 if cfg.dtype in ("bfloat16", "float16") else 4
  b, n = 2 * k, cfg.num_tokens
  attn = b * cfg.num_heads * n * n * (4 + ds)
  tokens = 2 * b * n * (5 * cfg.width + cfg.mlp_dim) * ds
  return attn + tokens


def device_memory_bytes(device=None) -> int | None:
  """The device's memory limit from its allocator stats (None where it reports none)."""
  device = device or jax.devices()[0]
  try:
    stats = device.memory_stats() or {}
  except Exception:  # noqa: BLE001 -- backends without allocator stats
    return None
  return stats.get("bytes_limit")


def query_batch_size(cfg: seggpt.SegGPTConfig, k: int, budget_bytes: int) -> int:
  """Queries per forward that fit `budget_bytes` of activations: 1..MAX_BATCH."""
  return max(1, min(MAX_BATCH, int(budget_bytes // query_activation_bytes(cfg, k))))


def default_batch_size(
  cfg: seggpt.SegGPTConfig, k: int, backend: str | None = None, memory_bytes: int | None = None
) -> int:
  """CPU_BATCH on CPU; on accelerators half the device memory's worth of queries."""
  backend = backend or jax.default_backend()
  if backend == "cpu":
    return CPU_BATCH
  memory_bytes = memory_bytes or device_memory_bytes()
  if not memory_bytes:
    return CPU_BATCH
  return query_batch_size(cfg, k, memory_bytes // 2)
