"""Attention implementations compute one function; bf16 mixed precision; accelerator lowering.

The lowering tests export for `cuda` and `tpu` on this CPU (no device needed): the L/16
inference forward and the sharded train step lower, and their attention has no loop.
"""

import functools
import json

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from _shared import run_train
from flax import nnx

from incontext import canvas
from incontext import mesh as mesh_lib
from incontext import sharding
from incontext.models import seggpt
from incontext.train import optim, steps

# Float32 on CPU: the implementations do the same per-element arithmetic and differ only in
# how XLA tiles the dot products and the softmax sums (order of float32 additions of ~30-200
# O(1) terms: ~1e-6), so 1e-5 absolute on O(1) outputs and gradients.
ATOL = 1e-5


def _reference(q, k, v, rel_h, rel_w):
  """float64 numpy: softmax(q.k + rel_h + rel_w) v, the bias broadcast on the key grid."""
  q, k, v, rel_h, rel_w = (np.asarray(a, np.float64) for a in (q, k, v, rel_h, rel_w))
  lg = np.einsum("bnqc,bnkc->bnqk", q, k)
  b, nh, lq, n = lg.shape
  lg = (
    lg.reshape(b, nh, lq, rel_h.shape[-1], rel_w.shape[-1])
    + rel_h[..., :, None]
    + rel_w[..., None, :]
  ).reshape(b, nh, lq, n)
  p = np.exp(lg - lg.max(-1, keepdims=True))
  return np.einsum("bnqk,bnkc->bnqc", p / p.sum(-1, keepdims=True), v)


def _inputs(b=3, nh=2, gq=7, gh=10, gw=3, c=8, seed=0):
  rng = np.random.default_rng(seed)
  f = lambda *s: jnp.asarray(rng.normal(size=s), jnp.float32)
  return (
    f(b, nh, gq * gw, c),
    f(b, nh, gh * gw, c),
    f(b, nh, gh * gw, c),
    f(b, nh, gq * gw, gh),
    f(b, nh, gq * gw, gw),
  )


@pytest.mark.parametrize("impl", ["chunked", "fused"])
@pytest.mark.parametrize("budget", [None, 2000])  # one chunk; several chunks (padded)
def test_attention_impls_match_reference_and_each_other(monkeypatch, impl, budget):
  if budget is not None:
    monkeypatch.setattr(seggpt, "_ATTN_CHUNK_BYTES", budget)
    assert seggpt._chunk_rows(21, 30)[1] > 1
  args = _inputs()
  out = seggpt.attend(*args, impl)
  np.testing.assert_allclose(np.asarray(out), _reference(*args), atol=ATOL, rtol=0)
  w = jnp.asarray(np.random.default_rng(1).normal(size=out.shape), jnp.float32)
  grad = lambda name: jax.grad(
    lambda *a: jnp.sum(seggpt.attend(*a, name) * w), argnums=(0, 1, 2, 3, 4)
  )(*args)
  for a, b in zip(grad(impl), grad("chunked" if impl == "fused" else "fused")):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=ATOL, rtol=0)


def test_auto_picks_by_backend_and_bad_settings_fail():
  assert seggpt.attention_impl("auto", jnp.float32, 812, 1568, 64, backend="cpu") == "chunked"
  assert seggpt.attention_impl("auto", jnp.bfloat16, 812, 1568, 64, backend="tpu") == "fused"
  assert seggpt.attention_impl("auto", jnp.float32, 812, 1568, 64, backend="gpu") == "fused"
  # No cuDNN on this machine: bf16 on "gpu" falls back to XLA instead of failing.
  assert seggpt.attention_impl("auto", jnp.bfloat16, 812, 1568, 64, backend="gpu") == "fused"
  assert seggpt.attention_impl("fused", jnp.float32, 1, 1, 1, backend="cpu") == "fused"
  with pytest.raises(ValueError, match="attention must be one of"):
    seggpt.get_config("test", attention="flash")
  with pytest.raises(ValueError, match="attention 'cudnn' needs dtype bfloat16"):
    seggpt.get_config("test", attention="cudnn")


def _has_loop(fn, *args) -> bool:
  jaxpr = str(jax.make_jaxpr(fn)(*args))
  return "scan[" in jaxpr or "while[" in jaxpr


def _model_inputs(n, cfg, seed=2):
  rng = np.random.default_rng(seed)
  h, w = cfg.canvas
  imgs = rng.normal(size=(n, h, w, 3)).astype(np.float32)
  imgs[:, h // 2 :] = imgs[:1, h // 2 :]  # one shared query half
  tgts = rng.normal(size=(n, h, w, 3)).astype(np.float32)
  return imgs, tgts, canvas.query_half_mask(cfg.grid)[None], np.ones(n, int)


# remat_grad is slow: an eager gradient through the chunked loop (too long for the unit tier).
@pytest.mark.parametrize(
  "path", ["plain", "shared", pytest.param("remat_grad", marks=pytest.mark.slow)]
)
def test_model_paths_use_the_setting_and_agree(monkeypatch, path):
  """Forward (plain, shared-query ensemble) and remat + drop-path gradients: chunked == fused,
  and the setting really reaches every path (a loop in the jaxpr only when chunked)."""
  monkeypatch.setattr(seggpt, "_ATTN_CHUNK_BYTES", 2000)  # chunked loops here
  res = {}
  for impl in ("chunked", "fused"):
    cfg = seggpt.get_config(
      "test", image_size=(32, 24), patch=8, attention=impl, remat=path == "remat_grad"
    )
    model = seggpt.SegGPT(cfg, rngs=nnx.Rngs(0))
    gd, state = nnx.split(model)
    imgs, tgts, mask, st = _model_inputs(3, cfg)
    if path == "remat_grad":

      def f(s):
        out = nnx.merge(gd, s)(imgs, tgts, mask, st, rng=jax.random.key(1))
        return jnp.mean(out**2)

      fn = jax.grad(f)
    else:
      kw = (
        dict(feature_ensemble=True, query_only=True, shared_query=True) if path == "shared" else {}
      )
      fn = lambda s: nnx.merge(gd, s)(imgs, tgts, mask, st, **kw)
    assert _has_loop(fn, state) == (impl == "chunked")
    res[impl] = jax.tree.leaves(fn(state))
  for a, b in zip(res["chunked"], res["fused"]):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=ATOL, rtol=0)
  assert max(float(np.abs(np.asarray(a)).max()) for a in res["fused"]) > 0


# -- mixed precision ------------------------------------------------------------------------
def _train_setup(dtype):
  from incontext.data import procedural

  cfg = seggpt.get_config("test", image_size=(16, 16), patch=4, dtype=dtype, drop_path=0.0)
  gd, params = nnx.split(seggpt.SegGPT(cfg, rngs=nnx.Rngs(0)))
  params = nnx.to_pure_dict(params)
  o = ml_collections.ConfigDict(
    dict(lr=1e-3, warmup_steps=0, total_steps=10, wd=0.05, clip=3.0, layer_decay=1.0)
  )
  tx, _ = optim.make_tx(o, depth=cfg.depth)
  batch = next(
    procedural.make_train_iterator(
      dict(image_size=16, patch_size=4, read_threads=1), seed=0, batch_size=4
    )
  )
  loss_grad = jax.jit(
    jax.value_and_grad(
      functools.partial(steps.loss_fn, graphdef=gd, patch=cfg.patch, beta=5.0), has_aux=True
    )
  )
  return params, tx, batch, loss_grad


@pytest.mark.slow  # two train-step compiles (float32, bfloat16): too long for the unit tier
def test_bf16_loss_gradients_and_state_match_float32():
  """bf16 compute, float32 params/optimiser state/softmax/norms: loss and gradients close to
  float32. bf16 keeps 8 mantissa bits (relative rounding 2^-9 ~ 0.2% per op, the residual
  stream included); the loss averages that out (measured 7e-5 relative), the gradient,
  a difference of near-equal per-pixel terms at a random init, keeps more of it (measured
  5.4% relative L2, cosine 0.9986): loss within 0.5%, gradient within 10%, cosine > 0.99."""
  out = {}
  for dt in ("float32", "bfloat16"):
    params, tx, batch, loss_grad = _train_setup(dt)
    (loss, _), g = loss_grad(params, batch, None)
    _, opt = tx.update(g, tx.init(params), params)
    assert {x.dtype for x in jax.tree.leaves((g, params))} == {jnp.dtype(jnp.float32)}
    assert {x.dtype for x in jax.tree.leaves(opt) if jnp.issubdtype(x.dtype, jnp.floating)} == {
      jnp.dtype(jnp.float32)
    }
    out[dt] = (float(loss), np.concatenate([np.ravel(x) for x in jax.tree.leaves(g)]))
  (l32, g32), (l16, g16) = out["float32"], out["bfloat16"]
  err = np.linalg.norm(g16 - g32) / np.linalg.norm(g32)
  cos = float(g16 @ g32 / np.linalg.norm(g16) / np.linalg.norm(g32))
  print(
    f"bf16 vs float32: loss {l16:.5f} vs {l32:.5f}, gradient relative L2 error {err:.4f}, "
    f"cosine {cos:.5f}"
  )
  assert l16 == pytest.approx(l32, rel=0.005)
  assert err < 0.1 and cos > 0.99


# -- lowering for accelerators on this CPU ---------------------------------------------------
def _inference_fn(cfg, k):
  gd, state = nnx.split(seggpt.abstract(cfg))
  mask = jnp.asarray(canvas.query_half_mask(cfg.grid))[None]

  def fwd(state, imgs, tgts):
    m = nnx.merge(gd, state)
    return m(
      imgs,
      tgts,
      mask,
      jnp.ones((imgs.shape[0],), jnp.int32),
      feature_ensemble=k > 1,
      query_only=True,
      shared_query=k > 1,
    )

  canv = jax.ShapeDtypeStruct((k,) + cfg.canvas + (3,), jnp.float32)
  return jax.jit(fwd), (state, canv, canv)


def _export_text(jitted, args, platforms=("cuda", "tpu")) -> str:
  return jax.export.export(jitted, platforms=platforms)(*args).mlir_module()


def test_loop_check_sees_the_chunked_loop(monkeypatch):
  """The 'no while' assertion below can fail: the chunked attention lowers to loops."""
  monkeypatch.setattr(seggpt, "_ATTN_CHUNK_BYTES", 2000)
  for impl, loops in (("chunked", True), ("fused", False)):
    cfg = seggpt.get_config("test", image_size=(32, 24), patch=8, attention=impl)
    txt = _export_text(*_inference_fn(cfg, 2))
    assert ("stablehlo.while" in txt) == loops


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_l16_inference_forward_lowers_for_gpu_and_tpu_without_loops(dtype):
  """The jitted L/16 k=8 inference forward (abstract weights: nothing materialised)."""
  cfg = seggpt.get_config("L/16", attention="fused", dtype=dtype)
  txt = _export_text(*_inference_fn(cfg, 8))
  assert "stablehlo.while" not in txt
  assert "dot_general" in txt and "1568" in txt  # the full-length attention is there


def _train_step_fn(cfg, batch, mesh):
  o = ml_collections.ConfigDict(
    dict(lr=1e-4, warmup_steps=10, total_steps=1000, wd=0.05, clip=3.0, layer_decay=0.8)
  )
  tx, sched = optim.make_tx(o, depth=cfg.depth)
  gd, abs_params = nnx.split(seggpt.abstract(cfg))
  abs_state = jax.eval_shape(lambda q: steps.init_state(q, tx, 0), nnx.to_pure_dict(abs_params))
  state_sh = sharding.shardings(abs_state, "fsdp", mesh)
  bsh, repl = mesh_lib.batch_sharding(mesh), mesh_lib.replicated(mesh)
  h, w = cfg.canvas
  s = jax.ShapeDtypeStruct
  abs_batch = {
    "image": s((batch, h, w, 3), jnp.float32),
    "target": s((batch, h, w, 3), jnp.float32),
    "mask": s((batch, cfg.num_tokens), jnp.bool_),
    "valid": s((batch, h, w), jnp.float32),
    "seg_type": s((batch,), jnp.int32),
  }
  step = jax.jit(
    functools.partial(steps.train_step, graphdef=gd, tx=tx, schedule=sched, patch=cfg.patch),
    in_shardings=(state_sh, bsh),
    out_shardings=(state_sh, repl),
    donate_argnums=(0,),
  )
  return step, (abs_state, abs_batch)


def _l16(depth=None, **kw):
  if depth:
    kw.update(
      depth=depth,
      merge_index=min(2, depth - 5),
      feature_layers=seggpt.default_feature_layers(depth, min(2, depth - 5)),
    )
  return seggpt.get_config("L/16", attention="fused", dtype="bfloat16", remat=True, **kw)


def test_sharded_l16_train_step_lowers_for_gpu_and_tpu_without_loops():
  """bf16 + remat train step, FSDP x data mesh over the 8 CPU devices, L/16 width, 896x448
  canvas and 6 blocks (the full 24 lower the same blocks; tested under slow below)."""
  mesh = mesh_lib.make_mesh([("data", 2), ("fsdp", 4)])
  with jax.set_mesh(mesh):
    txt = _export_text(*_train_step_fn(_l16(depth=6), 8, mesh))
  assert "stablehlo.while" not in txt
  assert "mhlo.sharding" in txt or "sdy.sharding" in txt


def _print_memory(name, compiled):
  ma = compiled.memory_analysis()
  if ma is None:
    print(f"{name}: no memory analysis on this backend")
    return
  gib = lambda x: f"{x / 2**30:.2f} GiB"
  print(
    f"{name} (CPU compile, per device): arguments {gib(ma.argument_size_in_bytes)}, "
    f"outputs {gib(ma.output_size_in_bytes)}, temp {gib(ma.temp_size_in_bytes)}"
  )


@pytest.mark.slow
def test_full_l16_lowers_and_cpu_compile_memory():
  """Full-depth L/16 train step lowers for cuda/tpu without loops; prints the memory the
  CPU compile estimates for the same shapes (CPU ignores remat's savings: see
  experiments/bench_train.py; measure on a device with experiments/device_check.py)."""
  mesh = mesh_lib.make_mesh([("data", 2), ("fsdp", 4)])
  step, args = _train_step_fn(_l16(), 8, mesh)
  with jax.set_mesh(mesh):
    assert "stablehlo.while" not in _export_text(step, args)
    _print_memory("L/16 bf16 remat train step, batch 8 on 8 devices", step.lower(*args).compile())
  fwd, args = _inference_fn(seggpt.get_config("L/16", attention="fused", dtype="bfloat16"), 8)
  _print_memory("L/16 bf16 inference forward, k=8", fwd.lower(*args).compile())


@pytest.mark.slow
def test_device_check_runs_end_to_end_on_cpu_tiny(tmp_path):
  """experiments/device_check.py --tiny: every section runs and the JSON is complete."""
  from experiments import device_check

  out = tmp_path / "dc.json"
  res = device_check.main(
    ["--tiny", "--out", str(out), "--reps", "1", "--steps", "1", "--ks", "1,2", "--batches", "2"]
  )
  assert json.loads(out.read_text()) == json.loads(json.dumps(res))
  rows = res["inference"]["rows"]
  assert [(r["dtype"], r["k"]) for r in rows] == [
    ("float32", 1),
    ("float32", 2),
    ("bfloat16", 1),
    ("bfloat16", 2),
  ]
  for r in rows:
    assert "error" not in r and r["ours_s"] > 0 and r["transformers_s"] > 0, r
  # Same random weights in both implementations: float32 parity as in test_model_parity.
  assert rows[0]["max_abs_diff_vs_transformers"] < 1e-4
  assert rows[-1]["ours_fused_max_abs_diff_vs_auto"] < 0.05  # bf16 rounding only
  assert res["parity"]["float32_k1_device_vs_cpu_max_abs"] == 0.0  # CPU is the device here
  assert [(r["remat"], r["batch"]) for r in res["train"]] == [(True, 2), (False, 2)]
  for r in res["train"]:
    assert "error" not in r and np.isfinite(r["loss"]) and r["memory_gib"]["temp"] > 0, r


@pytest.mark.slow
def test_bf16_quickstart_learns_like_float32(tmp_path):
  """The quickstart cut to 150 steps, in bf16 and float32: the bf16 run learns in-context
  matching too, its held-out mIoU within 5 points of float32 (bf16 rounds every step
  differently, so the runs drift apart like runs with different seeds)."""
  ev = {}
  for dt in ("float32", "bfloat16"):
    wd = tmp_path / dt
    r = run_train(
      wd,
      "--config.total_steps=150",
      "--config.optim.warmup_steps=20",
      f"--config.model.dtype={dt}",
      "--config.evals.every=0",
      "--config.ckpt.every=0",
      "--config.export_params=False",
    )
    assert r.returncode == 0, r.stderr[-3000:]
    ev[dt] = [json.loads(line) for line in open(wd / "metrics.jsonl")][-1]
  print({dt: round(e["eval/miou"], 1) for dt, e in ev.items()})
  assert ev["bfloat16"]["eval/miou"] > 2 * ev["bfloat16"]["eval/baseline_copy_miou"], ev
  assert abs(ev["bfloat16"]["eval/miou"] - ev["float32"]["eval/miou"]) < 5, ev


def test_inference_batch_from_memory_budget_and_donation():
  from incontext import accel, predict

  l16 = seggpt.get_config("L/16", dtype="bfloat16")
  assert accel.default_batch_size(l16, 8, backend="cpu") == accel.CPU_BATCH
  h200 = 141 * 2**30
  b8 = accel.default_batch_size(l16, 8, backend="gpu", memory_bytes=h200)
  b1 = accel.default_batch_size(l16, 1, backend="tpu", memory_bytes=h200)
  # k=8: 16 entries x 16 heads x 1568^2 logits (f32 + bf16) ~ 3.8 GB a query: 70 GB -> 18.
  assert 10 <= b8 <= 25 and b1 == accel.MAX_BATCH
  assert accel.query_batch_size(l16, 8, 1) == 1
  # The accelerator forward donates the queries' buffer (aliased to the same-shape output).
  cfg = seggpt.get_config("test", image_size=(16, 16), patch=8)
  gd, state = nnx.split(seggpt.SegGPT(cfg, rngs=nnx.Rngs(0)))
  s = lambda *a: jax.ShapeDtypeStruct(a, jnp.float32)
  args = (gd, state, s(2, 16, 16, 3), s(2, 16, 16, 3), s(3, 16, 16, 3), jnp.int32(1))
  txt = predict.jitted(donate=True).lower(*args, feature_ensemble=True).as_text()
  assert "tf.aliasing_output" in txt or "jax.buffer_donor" in txt
  assert "tf.aliasing_output" not in predict.jitted().lower(*args, feature_ensemble=True).as_text()
