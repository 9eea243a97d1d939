"""In-context tuning: frozen params stay bit-identical, the prompt learns, resume reproduces,
export round trip is exact (8 fake CPU devices, data-parallel mesh)."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from experiments.configs import prompt_tune
from incontext import checkpoint, cli, prompts
from incontext.models import seggpt
from incontext.train import tune_steps, tuner

SIZE = (32, 32)


@pytest.fixture(scope="module")
def params_dir(tmp_path_factory):
  d = tmp_path_factory.mktemp("model") / "params"
  model = seggpt.create("test", image_size=SIZE, patch=8, drop_path=0.0, seed=3)
  checkpoint.save_model(str(d), model)
  return str(d)


def _examples(n=12, seed=0):
  """Squares of a random colour on noise; the mask is the square."""
  rng = np.random.default_rng(seed)
  out = []
  for _ in range(n):
    img = rng.integers(0, 80, (40, 40, 3)).astype(np.uint8)
    m = np.zeros((40, 40), np.int32)
    r, c = rng.integers(2, 22, 2)
    img[r : r + 16, c : c + 16] = rng.integers(150, 256, 3)
    m[r : r + 16, c : c + 16] = 1
    out.append({"image": img, "mask": m})
  return out


def _config(params_dir, **kw):
  c = prompt_tune.get_config("task=kvasir")
  c.init = params_dir
  c.total_steps = kw.pop("total_steps", 6)
  c.log_every = 1
  c.ckpt_every = kw.pop("ckpt_every", 3)
  c.tune.batch_size = 8
  c.tune.learn_target = kw.pop("learn_target", False)
  c.tune.init = kw.pop("init", "example")
  c.optim.lr = kw.pop("lr", 0.05)
  c.optim.warmup_steps = 0
  assert not kw
  return c


def _flat_numpy(state):
  return {str(k): np.array(jax.device_get(v[...])) for k, v in nnx.to_flat_state(state)}


# Tests that run the tuner to its end are in the integration tier.
@pytest.mark.integration
def test_tuning_learns_prompt_and_never_touches_params(params_dir, tmp_path):
  ex = _examples()
  before = _flat_numpy(nnx.state(checkpoint.load_model(params_dir), nnx.Param))
  out = tuner.run_tune(
    _config(params_dir, total_steps=12, ckpt_every=12), str(tmp_path / "w"), examples=ex
  )
  # Frozen params: never donated (still alive) and bit-identical after tuning.
  leaves = jax.tree.leaves(out["params"])
  assert not any(l.is_deleted() for l in leaves)
  after = _flat_numpy(out["params"])
  assert before.keys() == after.keys()
  for k in before:
    np.testing.assert_array_equal(after[k], before[k], err_msg=k)
  # The target was not learned; the image was.
  data, _ = tuner.load_task({"label_ids": (1,)}, SIZE, ex)
  np.testing.assert_array_equal(out["prompt"]["target"], data["target"][0])
  assert np.abs(out["prompt"]["image"] - data["image"][0]).max() > 1e-3
  # Learned improvement: the tuned prompt's loss over all task examples beats the initial one.
  model = checkpoint.load_model(params_dir)
  gd, st = nnx.split(model)
  full = {k: jnp.asarray(v) for k, v in data.items()}
  loss = lambda p: float(
    tune_steps.tune_loss(jax.tree.map(jnp.asarray, p), full, graphdef=gd, params=st, seg_type=0)
  )
  init = {"image": data["image"][0], "target": data["target"][0]}
  # (a random tiny model depends only weakly on its prompt: a small but exact decrease)
  assert loss(out["prompt"]) < loss(init) - 1e-3
  # Outputs a person looks at.
  w = tmp_path / "w"
  for f in (
    "curve.png",
    "prompt_image.png",
    "prompt_target.png",
    "prompt.npz",
    "metrics.jsonl",
    "tune_meta.json",
    "config.json",
  ):
    assert (w / f).exists(), f
  rows = [json.loads(l) for l in open(w / "metrics.jsonl")]
  assert [r["step"] for r in rows] == list(range(1, 13))


@pytest.mark.integration
def test_killed_and_resumed_gives_the_same_losses(params_dir, tmp_path):
  ex = _examples()
  straight = tuner.run_tune(
    _config(params_dir, learn_target=True), str(tmp_path / "a"), examples=ex
  )
  first = tuner.run_tune(
    _config(params_dir, learn_target=True), str(tmp_path / "b"), examples=ex, stop_at=3
  )
  assert first["step"] == 3 and not (tmp_path / "b" / "prompt.npz").exists()
  resumed = tuner.run_tune(_config(params_dir, learn_target=True), str(tmp_path / "b"), examples=ex)
  assert resumed["step"] == 6 and len(straight["losses"]) == 6
  np.testing.assert_array_equal(resumed["losses"], straight["losses"])
  np.testing.assert_array_equal(resumed["prompt"]["image"], straight["prompt"]["image"])
  # learn_target: the target moved too.
  data, _ = tuner.load_task({"label_ids": (1,)}, SIZE, ex)
  assert np.abs(straight["prompt"]["target"] - data["target"][0]).max() > 1e-4

  # Export (CLI) of the tuned prompt: exact round trip of the checkpointed tensors.
  out = str(tmp_path / "exported.npz")
  assert cli.main(["export-prompt", "--workdir", str(tmp_path / "b"), "--out", out]) == 0
  lp = prompts.load(
    out,
    model_cfg=checkpoint.load_model(params_dir).cfg,
    weights_hash=checkpoint.read_meta(params_dir)["weights_hash"],
  )
  np.testing.assert_array_equal(lp.image, resumed["prompt"]["image"])
  np.testing.assert_array_equal(lp.target, resumed["prompt"]["target"])
  assert lp.meta["made_by"]["step"] == 6 and lp.label_names == ["polyp"]
  assert os.path.exists(str(tmp_path / "exported_image.png"))
  # ... and `incontext segment --learned-prompt` uses it (alone).
  from PIL import Image

  Image.fromarray(ex[0]["image"]).save(tmp_path / "q.png")
  assert (
    cli.main(
      [
        "segment",
        "--checkpoint",
        params_dir,
        "--learned-prompt",
        out,
        "--query",
        str(tmp_path / "q.png"),
        "--out",
        str(tmp_path / "seg"),
      ]
    )
    == 0
  )
  assert os.listdir(tmp_path / "seg")
  # An earlier step, and the errors.
  lp3 = tuner.export(str(tmp_path / "b"), str(tmp_path / "s3.npz"), step=3)
  assert lp3["made_by"]["step"] == 3
  with pytest.raises(ValueError, match=r"no checkpoint for step 4; have \[3, 6\]"):
    tuner.export(str(tmp_path / "b"), str(tmp_path / "s4.npz"), step=4)
  assert (
    cli.main(["export-prompt", "--workdir", str(tmp_path / "nope"), "--out", out, "--overwrite"])
    == 2
  )


def test_init_noise_and_errors(params_dir, tmp_path):
  p = tune_steps.init_prompt("noise", 32, 32, seed=1)
  assert p["image"].shape == (32, 32, 3) and abs(float(p["image"].std()) - 1) < 0.1
  with pytest.raises(ValueError, match="unknown tune.init 'bogus'"):
    tune_steps.init_prompt("bogus", 32, 32)
  c = _config(params_dir)
  c.init = ""
  with pytest.raises(ValueError, match="config.init must name a params directory"):
    tuner.run_tune(c, str(tmp_path / "x"), examples=_examples(4))
  c = _config(params_dir)
  c.tune.batch_size = 6
  with pytest.raises(ValueError, match="tune.batch_size 6 is not a multiple of the 8 devices"):
    tuner.run_tune(c, str(tmp_path / "y"), examples=_examples(4))


def test_configs_load():
  for arg in ("task=kvasir,runlocal", "task=horse,init=noise,learn_target", "task=davis_boat"):
    c = prompt_tune.get_config(arg)
    assert c.total_steps >= 2
  with pytest.raises(ValueError, match="unknown task 'nope'"):
    prompt_tune.get_config("task=nope")


@pytest.mark.integration
def test_tuning_loss_is_the_one_the_model_was_trained_with(params_dir, tmp_path):
  """beta: config.loss.beta, else the trainer-recorded beta of the params dir, else 0.01; the
  logged first loss is the masked smooth-L1 with that beta."""
  model = checkpoint.load_model(params_dir)
  trained = str(tmp_path / "trained")
  checkpoint.save_model(
    trained, model, source={"trainer": "wd", "step": 1, "loss": {"beta": 5.0, "painter": False}}
  )
  c = _config(trained, total_steps=1)
  assert c.loss.beta is None and tuner.loss_beta(c) == 5.0
  assert tuner.loss_beta(_config(params_dir)) == 0.01  # no record: SegGPT's beta
  c.loss.beta = 0.5
  assert tuner.loss_beta(c) == 0.5
  c.loss.beta = None
  ex = _examples(8)
  out = tuner.run_tune(c, str(tmp_path / "w"), examples=ex)
  assert json.load(open(tmp_path / "w" / "tune_meta.json"))["loss_beta"] == 5.0
  # Step 1's batch is the 8 examples (flips aside): recompute its loss under both betas.
  data, _ = tuner.load_task({"label_ids": (1,)}, SIZE, ex)
  batch = tuner.sample_batch(data, 1, 8, int(c.seed), bool(c.tune.hflip))
  gd, st = nnx.split(model)
  prompt = {"image": jnp.asarray(data["image"][0]), "target": jnp.asarray(data["target"][0])}
  loss = lambda beta: float(
    tune_steps.tune_loss(
      prompt, jax.tree.map(jnp.asarray, batch), graphdef=gd, params=st, seg_type=0, beta=beta
    )
  )
  np.testing.assert_allclose(out["losses"][0], loss(5.0), rtol=1e-5)
  assert abs(loss(5.0) - loss(0.01)) > 1e-3


def test_heldout_split_is_seeded_and_keeps_one_of_each():
  tune, held = tuner.heldout_split(10, 0.25, seed=0)
  assert len(held) == 2 and sorted(tune + held) == list(range(10))  # round(2.5) = 2
  assert (tune, held) == tuner.heldout_split(10, 0.25, seed=0)
  assert len(tuner.heldout_split(3, 0.01, seed=0)[1]) == 1  # at least one image
  assert tuner.heldout_split(5, 0.0, seed=0) == ([0, 1, 2, 3, 4], [])
  with pytest.raises(tuner.RunError, match="the task has 1 example.*leaves none to tune on"):
    tuner.heldout_split(1, 0.25, seed=0)


def test_curve_legend_names_only_what_it_draws(tmp_path, monkeypatch):
  from PIL import ImageDraw

  from incontext.train import plots

  texts = []
  orig = ImageDraw.ImageDraw.text

  def text(self, xy, t, *a, **k):
    texts.append(t)
    return orig(self, xy, t, *a, **k)

  monkeypatch.setattr(ImageDraw.ImageDraw, "text", text)
  rows = [{"step": s, "train/loss": 1.0 / s} for s in range(1, 6)]
  plots.curve_png(str(tmp_path / "a.png"), rows)
  assert not any("mIoU" in t for t in texts) and any("train loss" in t for t in texts)
  texts.clear()
  label = "held-out mIoU % (red; step 0: the example prompt)"
  pts = [{"step": 0, "heldout/miou": 20.0}, {"step": 5, "heldout/miou": 40.0}]
  plots.curve_png(str(tmp_path / "b.png"), rows + pts, eval_key="heldout/miou", eval_label=label)
  assert any(label in t for t in texts) and {"20", "40"} <= set(texts)
