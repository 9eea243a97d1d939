"""Model structure: variants, position-table resize vs PyTorch, params, errors."""

import numpy as np
import pytest
import jax
from flax import nnx

from incontext import canvas
from incontext.models import posemb, seggpt


def test_bicubic_matches_torch_interpolate():
  torch = pytest.importorskip("torch")
  rng = np.random.default_rng(0)
  grid = rng.normal(size=(14, 14, 5)).astype(np.float32)
  for out in [(56, 28), (8, 4), (14, 14), (20, 33)]:
    ref = (
      torch.nn.functional.interpolate(
        torch.from_numpy(grid.transpose(2, 0, 1))[None],
        size=out,
        mode="bicubic",
        align_corners=False,
      )[0]
      .numpy()
      .transpose(1, 2, 0)
    )
    ours = np.asarray(
      posemb.resize_pos_embed(
        np.concatenate([np.zeros((1, 5), np.float32), grid.reshape(-1, 5)])[None], out
      )
    )[0]
    # Tolerances in ulps of the largest value compared (|v| ~ 4, ulp ~ 4.8e-7). Integer
    # scales (56x28, 14x14 from 14x14): both sides sum 4 float32 taps per pass in two
    # separable passes with weights rounded to float32, <= ~5 roundings per pass: 16 ulps
    # (measured <= 3 over 5 seeds). Other scales: PyTorch computes the source coordinate in
    # float32 (error <= ulp(14) = 9.5e-7), which moves each cubic weight by <= 1.5x that:
    # 2 passes x 4 taps x 1.5 x 9.5e-7 ~ 1.1e-5 |v| ~ 96 ulps (measured <= 18).
    ulps = 16 if all(o % 14 == 0 or 14 % o == 0 for o in out) else 96
    np.testing.assert_allclose(ours, ref, atol=ulps * np.spacing(np.abs(ref).max()), rtol=0)
    if out == (56, 28):
      # jax's own bicubic (A=-0.5) is measurably different: the reason for the port.
      jx = np.asarray(jax.image.resize(grid, (56, 28, 5), "bicubic"))
      assert np.abs(jx - ref).max() > 1e-3


def test_large_param_count_matches_official():
  model = seggpt.abstract(seggpt.get_config("L/16"))
  flat = nnx.to_flat_state(nnx.state(model, nnx.Param))
  assert len(flat) == 354
  assert sum(int(np.prod(v.shape)) for _, v in flat) == 370_723_203


@pytest.mark.parametrize("variant", ["B/16", "S/16", "Ti/16"])
def test_variants_build_at_other_canvases(variant):
  cfg = seggpt.get_config(variant, image_size=(64, 96))
  model = seggpt.abstract(cfg)
  assert model.blocks[0].attn.rel_pos_h.shape == (2 * 8 - 1, cfg.width // cfg.num_heads)
  assert model.blocks[0].attn.rel_pos_w.shape == (2 * 6 - 1, cfg.width // cfg.num_heads)
  assert min(cfg.feature_layers) > cfg.merge_index


def test_forward_shapes_and_drop_path():
  cfg = seggpt.get_config("test", image_size=(32, 32), patch=8, drop_path=0.5)
  model = seggpt.SegGPT(cfg, rngs=nnx.Rngs(0))
  rng = np.random.default_rng(0)
  imgs = rng.normal(size=(2, 64, 32, 3)).astype(np.float32)
  mask = canvas.query_half_mask(cfg.grid)[None]
  st = np.array([0, 1])
  out = model(imgs, imgs, mask, st)
  assert out.shape == (2, 64, 32, 3)
  assert model(imgs, imgs, mask, st, query_only=True).shape == (2, 32, 32, 3)
  a = model(imgs, imgs, mask, st, rng=jax.random.key(0))
  b = model(imgs, imgs, mask, st, rng=jax.random.key(1))
  assert np.abs(np.asarray(a) - np.asarray(b)).max() > 0  # stochastic depth active
  np.testing.assert_array_equal(np.asarray(out), np.asarray(model(imgs, imgs, mask, st)))
  # Hidden target patches have no effect; visible ones do.
  tg = imgs.copy()
  tg[:, 32:] = 7.0
  np.testing.assert_allclose(np.asarray(model(imgs, tg, mask, st)), np.asarray(out), atol=1e-6)
  tg = imgs.copy()
  tg[:, :8] = 7.0
  assert np.abs(np.asarray(model(imgs, tg, mask, st)) - np.asarray(out)).max() > 1e-3


def test_seg_type_selects_type_token():
  cfg = seggpt.get_config("test", image_size=(16, 16), patch=8)
  model = seggpt.SegGPT(cfg, rngs=nnx.Rngs(0))
  imgs = np.random.default_rng(1).normal(size=(3, 32, 16, 3)).astype(np.float32)
  imgs[1:] = imgs[0]
  mask = canvas.query_half_mask(cfg.grid)[None]
  out = np.asarray(model(imgs, imgs, mask, np.array([0, 1, 2])))
  assert np.abs(out[0] - out[1]).max() > 1e-4 and np.abs(out[1] - out[2]).max() > 1e-4
  model.type_token_cls[...] = model.type_token_ins[...]
  out2 = np.asarray(model(imgs, imgs, mask, np.array([0, 1, 2])))
  np.testing.assert_allclose(out2[0], out2[1], atol=1e-6)


def test_bad_configs_raise():
  with pytest.raises(ValueError, match="unknown variant 'X/16'"):
    seggpt.get_config("X/16")
  with pytest.raises(ValueError, match="not a multiple of patch 16"):
    seggpt.get_config("test", image_size=(30, 32))
  with pytest.raises(ValueError, match="ensemble must be"):
    seggpt.get_config("test", ensemble="mean")
