"""The chunked attention and the query-only encoder are exact rewrites of the plain forms."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from incontext import canvas
from incontext.models import seggpt


def _plain_attention(attn: seggpt.Attention, x):
  """The reference formulation (docs/design.md#attention): full [B, nh, L, L] logits."""
  b, gh, gw, d = x.shape
  nh = attn.num_heads
  hd = d // nh
  qkv = attn.qkv(x).reshape(b, gh, gw, 3, nh, hd)
  q, k, v = qkv[..., 0, :, :], qkv[..., 1, :, :], qkv[..., 2, :, :]
  rh = attn.rel_pos_h[...][seggpt._rel_index(gh)]
  rw = attn.rel_pos_w[...][seggpt._rel_index(gw)]
  rel_h = jnp.einsum("bijnc,ikc->bnijk", q, rh)
  rel_w = jnp.einsum("bijnc,jlc->bnijl", q, rw)
  logits = jnp.einsum("bijnc,bklnc->bnijkl", q * hd**-0.5, k)
  logits = (logits + rel_h[..., :, None] + rel_w[..., None, :]).reshape(b, nh, gh * gw, -1)
  out = jnp.einsum("bnqk,bknc->bqnc", jax.nn.softmax(logits, -1), v.reshape(b, -1, nh, hd))
  return attn.proj(out.reshape(b, gh, gw, d))


@pytest.mark.parametrize("budget", [None, 360, 480])  # one chunk; even chunks; padded
@pytest.mark.parametrize("row0", [0, 3])
def test_chunked_attention_matches_plain(monkeypatch, budget, row0):
  cfg = seggpt.get_config("test", image_size=(40, 24), patch=8)  # grid 10 x 3, L = 30
  attn = seggpt.Attention(cfg, rngs=nnx.Rngs(0))
  rng = np.random.default_rng(0)
  attn.rel_pos_h[...] = jnp.asarray(rng.normal(size=attn.rel_pos_h.shape), jnp.float32)
  attn.rel_pos_w[...] = jnp.asarray(rng.normal(size=attn.rel_pos_w.shape), jnp.float32)
  x = jnp.asarray(rng.normal(size=(3, 10, 3, cfg.width)), jnp.float32)
  if budget is not None:
    monkeypatch.setattr(seggpt, "_ATTN_CHUNK_BYTES", budget)
    rows, n = seggpt._chunk_rows((10 - row0) * 3, 30)
    assert n > 1
  want = np.asarray(_plain_attention(attn, x))[:, row0:]
  got = np.asarray(attn(x, row0))
  assert got.shape == want.shape
  np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)


def test_chunk_rows_pads_at_most_one_row_per_chunk():
  for lq in (1, 7, 30, 812, 1568, 1573):
    rows, n = seggpt._chunk_rows(lq, 1568)
    assert rows * n >= lq and rows * (n - 1) < lq
    assert rows * 4 * 1568 <= max(seggpt._ATTN_CHUNK_BYTES, 4 * 1568)


@pytest.mark.parametrize("ensemble", [False, True])
def test_query_only_encoder_equals_full(ensemble):
  """Last block on the query rows only, later blocks skipped: same bottom half."""
  cfg = seggpt.get_config("test", image_size=(32, 24), patch=8, depth=8)  # block 7 unused
  model = seggpt.SegGPT(cfg, rngs=nnx.Rngs(0))
  rng = np.random.default_rng(1)
  n = 2 if ensemble else 1
  imgs = rng.normal(size=(n, 64, 24, 3)).astype(np.float32)
  imgs[:, 32:] = imgs[:1, 32:]
  tgts = rng.normal(size=(n, 64, 24, 3)).astype(np.float32)
  mask = canvas.query_half_mask(cfg.grid)[None]
  st = np.ones(n, int)
  full = np.asarray(model(imgs, tgts, mask, st, feature_ensemble=ensemble))
  q = np.asarray(model(imgs, tgts, mask, st, feature_ensemble=ensemble, query_only=True))
  assert q.shape == (n, 32, 24, 3)
  np.testing.assert_allclose(q, full[:, 32:], atol=1e-5, rtol=0)
  feats = model.encode(imgs, tgts, mask, st, feature_ensemble=ensemble, query_only=True)
  assert [f.shape for f in feats] == [(n, 5, 3, cfg.width)] * 4  # 8 token rows: 4 + 1


@pytest.mark.parametrize(
  "ensemble,query_only", [("hf", True), ("official", True), ("official", False)]
)
def test_shared_query_path_equals_per_entry(ensemble, query_only):
  """Feature ensemble with the query half computed once equals the per-entry forward."""
  cfg = seggpt.get_config("test", image_size=(32, 24), patch=8, ensemble=ensemble)
  model = seggpt.SegGPT(cfg, rngs=nnx.Rngs(0))
  rng = np.random.default_rng(2)
  n = 3
  imgs = rng.normal(size=(n, 64, 24, 3)).astype(np.float32)
  imgs[:, 32:] = imgs[:1, 32:]
  tgts = rng.normal(size=(n, 64, 24, 3)).astype(np.float32)
  mask = canvas.query_half_mask(cfg.grid)[None]
  st = np.zeros(n, int)
  kw = dict(feature_ensemble=True, query_only=query_only)
  want = np.asarray(model(imgs, tgts, mask, st, **kw))
  got = np.asarray(model(imgs, tgts, mask, st, shared_query=True, **kw))
  assert got.shape == want.shape
  np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
  # The per-prompt outputs differ (first query pixel row sees each prompt's context row).
  assert np.abs(want[0] - want[1]).max() > 0
  with pytest.raises(ValueError, match="shared_query is an inference path"):
    model(imgs, tgts, mask, st, shared_query=True, rng=jax.random.key(0), **kw)


@pytest.mark.slow  # four eager gradients through the chunked loop: the unit tier's longest
def test_remat_and_drop_path_gradients_match_plain(monkeypatch):
  """Training path through the chunked attention: remat (every policy) changes nothing, rng
  is honoured."""
  monkeypatch.setattr(seggpt, "_ATTN_CHUNK_BYTES", 2000)  # force several chunks
  rng = np.random.default_rng(3)
  imgs = rng.normal(size=(2, 64, 24, 3)).astype(np.float32)
  tgts = rng.normal(size=(2, 64, 24, 3)).astype(np.float32)
  mask = canvas.query_half_mask((8, 3))[None]
  out = {}
  for remat in (False, True, "dots", "dots_no_batch"):
    cfg = seggpt.get_config("test", image_size=(32, 24), patch=8, remat=remat)
    model = seggpt.SegGPT(cfg, rngs=nnx.Rngs(0))
    loss = lambda m: jnp.mean(m(imgs, tgts, mask, np.ones(2, int), rng=jax.random.key(1)) ** 2)
    val, grads = nnx.value_and_grad(loss)(model)
    out[remat] = (float(val), jax.tree.leaves(nnx.state(grads)))
  for r in (True, "dots", "dots_no_batch"):
    assert out[False][0] == pytest.approx(out[r][0], abs=1e-6)
    for a, b in zip(out[False][1], out[r][1]):
      np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5, rtol=0)
  assert max(float(jnp.abs(g).max()) for g in out[False][1]) > 0


def _activation_residual_bytes(f, *args) -> int:
  """Bytes of the residuals that reverse-mode AD of f saves, arguments (params) excluded."""
  import contextlib
  import io
  import re
  from jax.ad_checkpoint import print_saved_residuals

  buf = io.StringIO()
  with contextlib.redirect_stdout(buf):
    print_saved_residuals(f, *args)
  total = 0
  for line in buf.getvalue().splitlines():
    m = re.match(r"(f32|bf16|i32|u32|bool)\[([\d,]*)\]", line)
    if m and "argument" not in line:
      size = {"f32": 4, "bf16": 2, "i32": 4, "u32": 4, "bool": 1}[m.group(1)]
      total += size * int(np.prod([int(s) for s in m.group(2).split(",") if s] or [1]))
  return total


def test_remat_saves_only_block_inputs():
  """remat=True keeps far fewer activations for the backward pass (JAX-level residuals; the
  CPU backend's memory_analysis does not show it: XLA:CPU schedules the recomputation early,
  jax-ml/jax#19822, so measure the memory on a GPU/TPU). The "dots" policies keep more than
  full remat and less than none."""
  got = {}
  for remat in (False, True, "dots_no_batch", "dots"):
    cfg = seggpt.get_config("test", image_size=(32, 32), patch=8, remat=remat, drop_path=0.0)
    gd, params = nnx.split(seggpt.SegGPT(cfg, rngs=nnx.Rngs(0)))
    x = jnp.ones((2, 64, 32, 3))
    mask = jnp.asarray(canvas.query_half_mask(cfg.grid))[None]
    f = lambda p: nnx.merge(gd, p)(x, x, mask, jnp.zeros((2,), jnp.int32)).mean()
    got[remat] = _activation_residual_bytes(f, params)
  assert got[False] > 1e6 and got[True] < 0.5 * got[False], got
  assert got[True] < got["dots_no_batch"] <= got["dots"] < got[False], got
  with pytest.raises(ValueError, match="remat must be False, True or one of"):
    seggpt.get_config("test", remat="everything")
