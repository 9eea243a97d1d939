"""Fast first answer: unpadded query batches and the fixed-shape video memory give the same
outputs as the reference paths (per-query / padded batches, the growing prompt list)."""

import numpy as np
import pytest

from incontext import inference as I, predict as P, video
from incontext.models import seggpt

SIZE = (32, 32)
# Float tolerance on normalised outputs (values O(1)): batching and the masked ensemble mean
# change only the float32 summation order (XLA's GEMM blocking / a reduction over zero-weight
# slots), which moves results by a few ulps; 1e-5 is far below any decoded-label change.
ATOL = 1e-5


@pytest.fixture(scope="module")
def model():
  return seggpt.create("test", image_size=SIZE, patch=8, drop_path=0.0, seed=3)


def _images(n, seed, hw=(40, 36)):
  rng = np.random.default_rng(seed)
  return [rng.integers(0, 256, (*hw, 3), dtype=np.uint8) for _ in range(n)]


def test_segment_batches_are_not_padded(model, monkeypatch):
  """A lone query is a batch of 1; 5 queries at batch_size 4 run as 4 + 1, and the results
  equal one-query-at-a-time and the old padded batches."""
  seg = I.Segmenter(model)
  imgs = _images(7, 0)
  mask = np.zeros((40, 36), np.uint8)
  mask[8:30, 5:20] = 1
  prompts = [(imgs[0], mask), (imgs[1], mask[:, ::-1].copy())]
  queries = imgs[2:]
  shapes = []
  real = P.predict_canvas_batch

  def spy(m, pi, pt, q, **kw):
    shapes.append(len(q))
    return real(m, pi, pt, q, **kw)

  monkeypatch.setattr(P, "predict_canvas_batch", spy)
  lone = seg.segment(prompts, queries[:1])
  assert shapes == [1]
  shapes.clear()
  batched = seg.segment(prompts, queries, batch_size=4)
  assert shapes == [4, 1]
  shapes.clear()
  single = seg.segment(prompts, queries, batch_size=1)
  assert shapes == [1] * 5
  monkeypatch.setattr(P, "predict_canvas_batch", real)
  # The old path: the last batch padded with copies of its last query.
  pi, pt, *_ = seg.encode_prompts(prompts)
  qs = np.stack([P.prepare_image(q, SIZE) for q in queries[4:]] * 4)
  padded = P.predict_canvas_batch(model, pi, pt, qs, seg_type="instance")[0]
  np.testing.assert_allclose(batched[4].raw, padded, atol=ATOL, rtol=0)
  np.testing.assert_allclose(lone[0].raw, batched[0].raw, atol=ATOL, rtol=0)
  for a, b in zip(batched, single):
    np.testing.assert_allclose(a.raw, b.raw, atol=ATOL, rtol=0)
    np.testing.assert_array_equal(a.labels, b.labels)


@pytest.mark.parametrize("ensemble", ["official", "hf"])
def test_predict_slots_equals_the_valid_prompts(ensemble):
  """Masked-out slots do not enter the feature ensemble: S slots with n valid == the n valid
  prompts (ensemble on iff n > 1), whatever the invalid slots hold."""
  m = seggpt.create("test", image_size=SIZE, patch=8, drop_path=0.0, seed=4, ensemble=ensemble)
  rng = np.random.default_rng(1)
  imgs, tgts = (rng.normal(size=(4, *SIZE, 3)).astype(np.float32) for _ in range(2))
  q = rng.normal(size=(*SIZE, 3)).astype(np.float32)
  for n in (1, 2, 4):
    ref = P.predict_canvas(m, imgs[:n], tgts[:n], q, seg_type="instance", feature_ensemble=n > 1)
    junk_i, junk_t = imgs.copy(), tgts.copy()
    junk_i[n:], junk_t[n:] = 5.0, -3.0
    got = video.predict_slots(m, junk_i, junk_t, np.arange(4) < n, q, seg_type="instance")
    np.testing.assert_allclose(got, ref, atol=ATOL, rtol=0)


@pytest.mark.parametrize("ensemble", [pytest.param("official", marks=pytest.mark.slow), "hf"])
def test_prompt_weights_in_the_per_entry_path(ensemble):
  """The per-entry encoder (shared_query=False) honours prompt_weights like the shared one."""
  import jax
  import jax.numpy as jnp
  from flax import nnx

  from incontext import canvas

  m = seggpt.create("test", image_size=SIZE, patch=8, drop_path=0.0, seed=5, ensemble=ensemble)
  rng = np.random.default_rng(2)
  imgs, tgts = (rng.normal(size=(3, 2 * SIZE[0], SIZE[1], 3)).astype(np.float32) for _ in range(2))
  imgs[:, SIZE[0] :] = imgs[:1, SIZE[0] :]  # one shared query half
  mask = jnp.asarray(canvas.query_half_mask(m.cfg.grid))[None]
  st = jnp.ones((3,), jnp.int32)
  graphdef, state = nnx.split(m)

  @jax.jit
  def run(state, imgs, tgts, st, w):
    return nnx.merge(graphdef, state)(
      imgs, tgts, mask, st, feature_ensemble=True, query_only=True, prompt_weights=w
    )[0]

  ref = run(state, imgs[:2], tgts[:2], st[:2], None)
  got = run(state, imgs, tgts, st, jnp.asarray([1.0, 1.0, 0.0]))
  np.testing.assert_allclose(np.asarray(got), np.asarray(ref), atol=ATOL, rtol=0)


def _moving_squares(n, h=40, w=48):
  rng = np.random.default_rng(0)
  frames, ids = [], []
  for t in range(n):
    f = rng.integers(90, 110, (h, w, 3)).astype(np.uint8)
    m = np.zeros((h, w), np.int32)
    f[4:14, 2 + 2 * t : 12 + 2 * t] = (220, 30, 30)
    m[4:14, 2 + 2 * t : 12 + 2 * t] = 3
    f[18:28, 14 + t : 22 + t] = (30, 220, 30)
    m[18:28, 14 + t : 22 + t] = 7
    frames.append(f)
    ids.append(m)
  return frames, ids


@pytest.mark.parametrize("memory", [0, 2, pytest.param(3, marks=pytest.mark.slow)])
def test_fixed_memory_matches_the_growing_memory(model, memory, monkeypatch):
  """Same raw predictions and ids as the growing prompt list, with one compiled shape."""
  frames, ids = _moving_squares(6)
  raws = {"fixed": [], "growing": []}
  real_slots, real_canvas = video.predict_slots, P.predict_canvas

  def spy_slots(*a, **kw):
    raws["fixed"].append(real_slots(*a, **kw))
    return raws["fixed"][-1]

  def spy_canvas(*a, **kw):
    raws["growing"].append(real_canvas(*a, **kw))
    return raws["growing"][-1]

  monkeypatch.setattr(video, "predict_slots", spy_slots)
  monkeypatch.setattr(P, "predict_canvas", spy_canvas)
  P.clear_compiled()
  fixed = list(video.propagate(model, frames, ids[0], memory=memory))
  if memory:
    assert P.compiled_count() == 1  # one compile for all frames
    assert len(raws["fixed"]) == 5 and not raws["growing"]
  else:  # K = 0 is a single prompt: the plain forward
    raws["fixed"], raws["growing"] = raws["growing"], []
  growing = list(video.propagate(model, frames, ids[0], memory=memory, fixed_memory=False))
  assert len(raws["growing"]) == 5
  for a, b in zip(raws["fixed"], raws["growing"]):
    np.testing.assert_allclose(a, b, atol=ATOL, rtol=0)
  for a, b in zip(fixed, growing):
    np.testing.assert_array_equal(a, b)
