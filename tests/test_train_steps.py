"""Optimiser pieces (schedule, layer decay, weight-decay mask) and frozen/trainable filters."""

import functools

import jax
import ml_collections
import numpy as np
import pytest
from flax import nnx

from incontext.data import procedural
from incontext.models import seggpt
from incontext.sharding import path_str
from incontext.train import optim, steps


def _flat(tree):
  return {path_str(p): np.asarray(x) for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]}


def test_schedule_warmup_then_cosine():
  o = ml_collections.ConfigDict(dict(lr=1e-3, min_lr=1e-5, warmup_steps=10, total_steps=110))
  s = optim.schedule(o)
  np.testing.assert_allclose([s(0), s(5), s(10)], [0.0, 5e-4, 1e-3], rtol=1e-6)
  mid = 1e-5 + 0.5 * (1e-3 - 1e-5) * (1 + np.cos(np.pi * 0.5))
  np.testing.assert_allclose(s(60), mid, rtol=1e-5)
  np.testing.assert_allclose(s(110), 1e-5, rtol=1e-5)


def test_layer_ids_and_scales_follow_painter():
  assert optim.layer_id("patch_embed/proj/kernel", 24) == 0
  assert optim.layer_id("pos_embed", 24) == 0
  assert optim.layer_id("blocks/0/attn/qkv/kernel", 24) == 1
  assert optim.layer_id("blocks/23/mlp/fc2/bias", 24) == 24
  for name in ("mask_token", "norm/scale", "decoder_head/kernel", "type_token_cls"):
    assert optim.layer_id(name, 24) == 25
  assert optim.lr_scale("blocks/23/mlp/fc2/bias", 24, 0.8) == pytest.approx(0.8)
  assert optim.lr_scale("pos_embed", 24, 0.8) == pytest.approx(0.8**25)


def _setup(**optim_kw):
  cfg = seggpt.get_config("test", image_size=(16, 16), patch=4)
  model = seggpt.SegGPT(cfg, rngs=nnx.Rngs(0))
  graphdef, params = nnx.split(model)
  params = nnx.to_pure_dict(params)
  o = ml_collections.ConfigDict(
    dict(lr=1e-3, warmup_steps=0, total_steps=10, wd=0.1, clip=3.0, layer_decay=0.8, **optim_kw)
  )
  tx, sched = optim.make_tx(o, depth=cfg.depth)
  batch = next(
    procedural.make_train_iterator(
      dict(image_size=16, patch_size=4, read_threads=1), seed=0, batch_size=4
    )
  )
  fn = jax.jit(
    functools.partial(steps.train_step, graphdef=graphdef, tx=tx, schedule=sched, patch=cfg.patch)
  )
  return params, tx, fn, batch


def test_weight_decay_mask_and_layer_decay_are_applied():
  """With zero gradients only decay moves params: wd*lr*scale*p where decayed, else 0."""
  params, tx, _, _ = _setup()
  state = tx.init(params)
  zeros = jax.tree.map(np.zeros_like, params)
  upd, _ = tx.update(zeros, state, params)
  p, u = _flat(params), _flat(upd)
  for name in ("blocks/3/attn/qkv/kernel", "blocks/0/attn/rel_pos_h", "decoder_embed/kernel"):
    scale = optim.lr_scale(name, 7, 0.8)
    np.testing.assert_allclose(u[name], -1e-3 * scale * 0.1 * p[name], rtol=1e-5, atol=1e-12)
  for name in (
    "blocks/3/attn/qkv/bias",
    "norm/scale",
    "pos_embed",
    "mask_token",
    "type_token_ins",
    "segment_token_x",
    "decoder_norm/bias",
  ):
    assert not np.any(u[name]), name


def test_frozen_filter_keeps_params_bit_identical():
  params, tx, fn, batch = _setup(trainable=".*", frozen=r"blocks/.*|patch_embed/.*|pos_embed")
  state = steps.init_state(params, tx, 0)
  before = _flat(params)
  new, m = fn(state, batch)
  after = _flat(new["params"])
  frozen = [k for k in before if k.startswith(("blocks/", "patch_embed/", "pos_embed"))]
  trained = [k for k in before if k not in frozen]
  assert frozen and trained
  for k in frozen:
    np.testing.assert_array_equal(after[k], before[k], err_msg=k)
  changed = [k for k in trained if not np.array_equal(after[k], before[k])]
  assert "decoder_embed/kernel" in changed and "mask_token" in changed
  # No Adam moments are allocated for the frozen params.
  n_mu = sum(x.size for x in jax.tree.leaves(new["opt"]) if np.ndim(x) > 0)
  n_train = sum(before[k].size for k in trained)
  assert n_mu == 2 * n_train
  assert np.isfinite(float(m["loss"]))


def test_trainable_filter_trains_only_the_decoder():
  params, tx, fn, batch = _setup(trainable=r"decoder_.*")
  new, _ = fn(steps.init_state(params, tx, 0), batch)
  before, after = _flat(params), _flat(new["params"])
  for k in before:
    if not k.startswith("decoder_"):
      np.testing.assert_array_equal(after[k], before[k], err_msg=k)
  for k in ("decoder_embed/kernel", "decoder_conv/kernel", "decoder_head/kernel"):
    assert not np.array_equal(before[k], after[k]), k


def _moments(opt_state) -> int:
  """Elements of the optimiser state's arrays (Adam's mu and nu; scalars such as counts aside)."""
  return sum(x.size for x in jax.tree.leaves(opt_state) if np.ndim(x) > 0)


@pytest.mark.parametrize(
  "selection", ["model", "model decoder", "prompt image", "prompt image and target"]
)
def test_one_builder_updates_only_the_trainable_selection(selection):
  """`optim.make_tx` with each `trainable` selection: nonzero updates on exactly the selected
  leaves, zero updates and no Adam moments for the others (the model's params for training,
  the prompt's image/target for tuning)."""
  from incontext.train import tune_steps

  rng = np.random.default_rng(0)
  if selection.startswith("model"):
    cfg = seggpt.get_config("test", image_size=(16, 16), patch=4)
    params = nnx.to_pure_dict(nnx.state(seggpt.SegGPT(cfg, rngs=nnx.Rngs(0)), nnx.Param))
    o = optim.OptimConfig(lr=1e-3, clip=3.0, wd=0.05, layer_decay=0.8)
    trainable = None if selection == "model" else r"decoder_.*"
    tx, _ = optim.make_tx(o, total_steps=10, depth=cfg.depth, trainable=trainable)
    picked = (lambda k: True) if selection == "model" else (lambda k: k.startswith("decoder_"))
  else:
    params = {k: rng.standard_normal((8, 8, 3)).astype(np.float32) for k in ("image", "target")}
    learn_target = selection.endswith("target")
    tx, _ = optim.make_tx(
      optim.PromptOptimConfig(lr=0.05),
      total_steps=10,
      trainable=tune_steps.prompt_selection(learn_target),
    )
    picked = lambda k: k == "image" or learn_target
  grads = jax.tree.map(lambda p: rng.standard_normal(p.shape).astype(np.float32), params)
  state = tx.init(params)
  upd, state = tx.update(grads, state, params)
  u = _flat(upd)
  chosen = [k for k in u if picked(k)]
  assert chosen and (selection in ("model", "prompt image and target") or len(chosen) < len(u))
  for k, v in u.items():
    if picked(k):
      assert np.all(v != 0), k  # Adam's first step: -lr * scale * g / (|g| + eps), never 0
    else:
      assert not np.any(v), k
  assert _moments(state) == 2 * sum(u[k].size for k in chosen)


def test_training_and_tuning_keep_their_defaults():
  """One builder, each section with the defaults it had: training (no clipping, Adam b2 0.999,
  cosine to min_lr 0) and tuning (clip 1.0, b2 0.99, cosine to 0.1 lr), the keys each accepts."""
  from incontext import config_lib

  t = config_lib.section(optim.OptimConfig, {"lr": 1e-3}, "config.optim")
  p = config_lib.section(optim.PromptOptimConfig, {"lr": 0.1}, "config.optim")
  assert (t.clip, t.b2, t.min_lr, t.end_frac, t.wd, t.layer_decay) == (0.0, 0.999, 0, 0, 0, 1)
  assert (p.clip, p.b2, p.end_frac, p.warmup_steps, p.wd) == (1.0, 0.99, 0.1, 0, 0)
  np.testing.assert_allclose(optim.schedule(p, 10)(10), 0.01, rtol=1e-6)
  np.testing.assert_allclose(optim.schedule(t, 10)(10), 0.0, atol=1e-12)
  with pytest.raises(ValueError, match=r"config.optim: unknown key \['wd'\]"):
    config_lib.section(optim.PromptOptimConfig, {"lr": 0.1, "wd": 0.1}, "config.optim")
  with pytest.raises(ValueError, match=r"config.optim: unknown key \['end_frac'\]"):
    config_lib.section(optim.OptimConfig, {"lr": 0.1, "end_frac": 0.1}, "config.optim")
  with pytest.raises(ValueError, match=r"config.optim.schedule='linear': expected 'cosine'"):
    optim.schedule(optim.OptimConfig(lr=0.1, schedule="linear"), 10)
