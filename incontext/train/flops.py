"""Analytic FLOP counts of SegGPT (for throughput and MFU; 1 multiply-add = 2 FLOPs)."""

from incontext.models.seggpt import SegGPTConfig


def forward_flops(cfg: SegGPTConfig) -> float:
  """Forward FLOPs of one canvas (image + target streams, full decoder)."""
  gh, gw = cfg.grid
  n = gh * gw
  d, p = cfg.width, cfg.patch
  hd = d // cfg.num_heads
  patch = 2 * n * p * p * 3 * d  # both streams
  per_block = (
    n * (4 * d * d + 2 * d * cfg.mlp_dim)  # qkv, proj, mlp
    + 2 * n * n * d  # q k^T and p v
    + n * (gh + gw) * hd * cfg.num_heads
  )  # decomposed rel-pos
  streams = 2 * (cfg.merge_index + 1) + (cfg.depth - cfg.merge_index - 1)
  h, w = cfg.canvas
  dec = n * len(cfg.feature_layers) * d * p * p * cfg.decoder_dim + h * w * (
    9 * cfg.decoder_dim**2 + 3 * cfg.decoder_dim
  )
  return 2.0 * (patch + streams * per_block + dec)


def train_flops(cfg: SegGPTConfig) -> float:
  """Model FLOPs of one training example: forward + backward (3x), rematerialisation excluded."""
  return 3.0 * forward_flops(cfg)


# Dense bf16 peak FLOP/s per device (for MFU); by `device_kind` substring.
PEAK_BF16 = {
  "H100": 989e12,
  "H200": 989e12,
  "A100": 312e12,
  "v5p": 459e12,
  "v5 lite": 197e12,
  "v5e": 197e12,
  "v4": 275e12,
  "v6": 918e12,
  "B200": 2250e12,
}


def peak_flops(device_kind: str) -> float | None:
  for k, v in PEAK_BF16.items():
    if k.lower() in device_kind.lower():
      return v
  return None
