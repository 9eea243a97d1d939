"""Numerical parity with transformers' SegGptForImageSegmentation (random weights, f32, CPU)."""

import numpy as np
import pytest
from flax import nnx

from incontext import canvas
from incontext.models import convert, seggpt

pytest.importorskip("torch")
pytest.importorskip("transformers")
import hf_reference  # noqa: E402

ATOL = 1e-4


def _inputs(cfg, n, seed=0):
  rng = np.random.default_rng(seed)
  h, w = cfg.image_size
  prompts = rng.normal(size=(n, h, w, 3)).astype(np.float32)
  query = np.repeat(rng.normal(size=(1, h, w, 3)).astype(np.float32), n, 0)
  masks = rng.normal(size=(n, h, w, 3)).astype(np.float32)
  imgs = np.concatenate([prompts, query], 1)
  tgts = np.concatenate([masks, masks], 1)
  return imgs, tgts, canvas.query_half_mask(cfg.grid)[None]


def _pair(cfg):
  hm = hf_reference.make_hf_model(cfg)
  model = seggpt.SegGPT(cfg, rngs=nnx.Rngs(1))
  convert.load_official(model, convert.hf_to_official(hf_reference.hf_state_dict(hm)))
  return hm, model


@pytest.mark.parametrize(
  "n,ensemble,seg",
  [(1, False, "instance"), (1, False, "semantic"), (3, True, "instance"), (2, True, "semantic")],
)
def test_small_config_matches_transformers(n, ensemble, seg):
  cfg = seggpt.get_config("test", image_size=(32, 48), patch=8, ensemble="hf")
  hm, model = _pair(cfg)
  imgs, tgts, mask = _inputs(cfg, n)
  ref = hf_reference.hf_forward(hm, imgs, tgts, feature_ensemble=ensemble, embedding_type=seg)
  st = np.full((n,), canvas.SEG_TYPES[seg])
  ours = np.asarray(model(imgs, tgts, mask, st, feature_ensemble=ensemble))
  assert ours.shape == ref.shape == (n, 64, 48, 3)
  np.testing.assert_allclose(ours, ref, atol=ATOL, rtol=0)
  # The query-only decoder reproduces the bottom half of the full decoder exactly.
  q = np.asarray(model(imgs, tgts, mask, st, feature_ensemble=ensemble, query_only=True))
  np.testing.assert_allclose(q, ours[:, 32:], atol=1e-6, rtol=0)


def test_official_ensemble_differs_from_hf_only_at_block2():
  """Official feature ensemble averages per stream at block 2; HF mixes the streams.

  docs/design.md#ensembles.
  """
  cfg_hf = seggpt.get_config("test", image_size=(32, 32), patch=8, ensemble="hf")
  hm, model_hf = _pair(cfg_hf)
  model_off = seggpt.SegGPT(
    cfg_hf.__class__(**{**cfg_hf.__dict__, "ensemble": "official"}), rngs=nnx.Rngs(0)
  )
  nnx.update(model_off, nnx.state(model_hf, nnx.Param))
  imgs, tgts, mask = _inputs(cfg_hf, 2)
  st = np.ones(2, int)
  a = np.asarray(model_hf(imgs, tgts, mask, st, feature_ensemble=True))
  b = np.asarray(model_off(imgs, tgts, mask, st, feature_ensemble=True))
  assert np.abs(a - b).max() > 1e-4
  # Official with one prompt is exactly the plain one-shot forward; HF is not.
  i1, t1, _ = _inputs(cfg_hf, 1)
  plain = np.asarray(model_off(i1, t1, mask, st[:1]))
  np.testing.assert_array_equal(
    np.asarray(model_off(i1, t1, mask, st[:1], feature_ensemble=True)), plain
  )
  ref1 = hf_reference.hf_forward(hm, i1, t1, feature_ensemble=True)
  np.testing.assert_allclose(
    np.asarray(model_hf(i1, t1, mask, st[:1], feature_ensemble=True)), ref1, atol=ATOL, rtol=0
  )


@pytest.mark.slow
@pytest.mark.parametrize("n,ensemble", [(1, False), (2, True)])
def test_large_config_matches_transformers(n, ensemble):
  cfg = seggpt.get_config("L/16", ensemble="hf")
  hm, model = _pair(cfg)
  imgs, tgts, mask = _inputs(cfg, n)
  ref = hf_reference.hf_forward(hm, imgs, tgts, feature_ensemble=ensemble)
  ours = np.asarray(model(imgs, tgts, mask, np.ones(n, int), feature_ensemble=ensemble))
  err = np.abs(ours - ref).max()
  print(f"L/16 n={n} ensemble={ensemble}: max abs err {err:.2e}")
  np.testing.assert_allclose(ours, ref, atol=ATOL, rtol=0)
