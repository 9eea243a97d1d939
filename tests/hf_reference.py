"""Helpers building a transformers SegGPT reference with random weights (tests only)."""

import numpy as np

torch = None


def make_hf_model(cfg, seed=0):
  """Random-weight `SegGptForImageSegmentation` for a SegGPTConfig (all params non-trivial)."""
  import torch as _torch
  from transformers import SegGptConfig, SegGptForImageSegmentation
  from incontext.models import convert

  kw = {
    k: v for k, v in convert.hf_config_dict(cfg).items() if k not in ("architectures", "model_type")
  }
  _torch.manual_seed(seed)
  hm = SegGptForImageSegmentation(SegGptConfig(**kw)).eval()
  with _torch.no_grad():
    for name, p in hm.named_parameters():
      if name.endswith(("layernorm_before.weight", "layernorm_after.weight", "layernorm.weight")):
        p.copy_(1.0 + 0.1 * _torch.randn_like(p))
      else:
        p.copy_(0.05 * _torch.randn_like(p))
  return hm


def hf_state_dict(hm) -> dict[str, np.ndarray]:
  return {k: v.detach().numpy().copy() for k, v in hm.state_dict().items()}


def hf_forward(hm, imgs_nhwc, tgts_nhwc, *, feature_ensemble=False, embedding_type="instance"):
  """Runs HF on our canvas convention; returns pred [N, 2H, W, 3] numpy."""
  import torch as _torch

  h = imgs_nhwc.shape[1] // 2
  t = lambda a: _torch.from_numpy(np.ascontiguousarray(a.transpose(0, 3, 1, 2)))
  with _torch.no_grad():
    out = hm(
      pixel_values=t(imgs_nhwc[:, h:]),
      prompt_pixel_values=t(imgs_nhwc[:, :h]),
      prompt_masks=t(tgts_nhwc[:, :h]),
      feature_ensemble=feature_ensemble,
      embedding_type=embedding_type,
    ).pred_masks
  return out.numpy().transpose(0, 2, 3, 1)
