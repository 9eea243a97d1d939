"""Masked smooth-L1 (docs/design.md#loss) vs a numpy loop reference and transformers' SegGptLoss."""

import numpy as np
import pytest

from incontext import losses


def _np_reference(pred, tgt, mask, valid, patch, beta, painter=False):
  """Direct transcription of docs/design.md#loss with explicit per-patch loops (NHWC)."""
  b, h, w, c = pred.shape
  gh, gw = h // patch, w // patch
  num, den = 0.0, 0.0
  for i in range(b):
    for t in range(gh * gw):
      if not mask[i if mask.shape[0] > 1 else 0, t]:
        continue
      r, q = divmod(t, gw)
      sl = (i, slice(r * patch, (r + 1) * patch), slice(q * patch, (q + 1) * patch))
      d = pred[sl].astype(np.float64) - tgt[sl]
      l = np.where(np.abs(d) < beta, 0.5 * d * d / beta, np.abs(d) - 0.5 * beta)
      v = valid[sl][..., None] * np.ones((1, 1, c))
      num += (l * v).sum()
      den += v.sum()
  return num / (den + (0.01 if painter else 0.0))


@pytest.mark.parametrize("painter", [False, True])
def test_matches_numpy_reference(painter):
  rng = np.random.default_rng(0)
  b, h, w, p = 3, 16, 8, 4
  pred = rng.normal(size=(b, h, w, 3)).astype(np.float32)
  tgt = pred + rng.normal(scale=0.02, size=pred.shape).astype(np.float32)  # both branches
  tgt[0, :4] += 1.0
  mask = rng.random((b, (h // p) * (w // p))) < 0.5
  valid = (rng.random((b, h, w)) < 0.8).astype(np.float32)
  got = float(losses.masked_smooth_l1(pred, tgt, mask, valid, patch=p, painter=painter))
  want = _np_reference(pred, tgt, mask, valid, p, 0.01, painter)
  np.testing.assert_allclose(got, want, rtol=1e-5)


def test_smooth_l1_branches_and_optax_identity():
  import optax

  d = np.array([-0.5, -0.01, -0.004, 0.0, 0.003, 0.0099, 0.02, 2.0], np.float32)
  got = np.asarray(losses.smooth_l1(d, 0.01))
  want = np.where(np.abs(d) < 0.01, 0.5 * d * d / 0.01, np.abs(d) - 0.005)
  np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-9)
  # optax huber(d, delta=beta) == beta * smooth_l1_beta(d)
  np.testing.assert_allclose(
    np.asarray(optax.huber_loss(d, delta=0.01)) / 0.01, got, rtol=1e-5, atol=1e-7
  )


def test_unmasked_pixels_and_invalid_pixels_do_not_count():
  rng = np.random.default_rng(1)
  pred = rng.normal(size=(2, 8, 4, 3)).astype(np.float32)
  tgt = rng.normal(size=pred.shape).astype(np.float32)
  mask = np.zeros((2, 8), bool)
  mask[:, 4:] = True  # the query half (grid 4x2, patch 2)
  valid = np.ones((2, 8, 4), np.float32)
  base = float(losses.masked_smooth_l1(pred, tgt, mask, valid, patch=2))
  pred2 = pred.copy()
  pred2[:, :4] += 100.0  # change only the visible half
  assert float(losses.masked_smooth_l1(pred2, tgt, mask, valid, patch=2)) == base
  valid2 = valid.copy()
  valid2[:, 6:] = 0
  pred3 = pred.copy()
  pred3[:, 6:] += 100.0  # change only invalid pixels
  assert float(losses.masked_smooth_l1(pred3, tgt, mask, valid2, patch=2)) == pytest.approx(
    float(losses.masked_smooth_l1(pred, tgt, mask, valid2, patch=2)), rel=1e-6
  )


def test_matches_transformers_seggpt_loss():
  torch = pytest.importorskip("torch")
  modeling = pytest.importorskip("transformers.models.seggpt.modeling_seggpt")
  from transformers import SegGptConfig

  rng = np.random.default_rng(2)
  b, h, w, p = 2, 32, 16, 8  # canvas 2h x w; prompt/label h x w
  pred = rng.normal(size=(b, 2 * h, w, 3)).astype(np.float32)
  prompt_m = rng.normal(size=(b, h, w, 3)).astype(np.float32)
  label = pred[:, h:] + rng.normal(scale=0.01, size=(b, h, w, 3)).astype(np.float32)
  mask = rng.random((b, (2 * h // p) * (w // p))) < 0.6
  hf = modeling.SegGptLoss(SegGptConfig(patch_size=p, beta=0.01))
  t = lambda x: torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
  want = float(hf(t(prompt_m), t(pred), t(label), torch.from_numpy(mask)))
  got = float(
    losses.masked_smooth_l1(pred, np.concatenate([prompt_m, label], 1), mask, None, patch=p)
  )
  np.testing.assert_allclose(got, want, rtol=1e-5)
