"""Params directories: exact round trip, atomic writes, clear errors."""

import json
import os

import numpy as np
import pytest
from flax import nnx

from incontext import checkpoint, outputs
from incontext.models import convert, seggpt


def _model(**kw):
  return seggpt.SegGPT(
    seggpt.get_config("test", image_size=(16, 16), patch=8, **kw), rngs=nnx.Rngs(3)
  )


def test_round_trip_is_exact(tmp_path):
  model = _model()
  meta = checkpoint.save_model(str(tmp_path / "p"), model, source={"note": "t"})
  loaded = checkpoint.load_model(str(tmp_path / "p"))
  assert loaded.cfg == model.cfg
  a, b = convert.model_to_official(model), convert.model_to_official(loaded)
  assert a.keys() == b.keys()
  for k in a:
    np.testing.assert_array_equal(a[k], b[k])
  assert checkpoint.params_hash(loaded) == meta["weights_hash"]
  assert checkpoint.read_meta(str(tmp_path / "p"))["source"] == {"note": "t"}
  # Runtime-only overrides are allowed at load time.
  assert checkpoint.load_model(str(tmp_path / "p"), dtype="bfloat16").cfg.dtype == "bfloat16"
  assert not [f for f in os.listdir(tmp_path) if f.startswith(".tmp")]


@pytest.mark.parametrize("copy", [True, False], ids=["safetensors", "orbax"])
def test_load_model_places_the_weights_on_a_device(tmp_path, copy):
  """`device=`: every weight is restored onto that device (what `label` under
  jax.distributed asks for: the process's first local device), from the safetensors copy and
  from the Orbax params alike, with the same values."""
  import jax

  model = _model()
  d = str(tmp_path / "p")
  checkpoint.save_model(d, model)
  if not copy:
    os.remove(os.path.join(d, checkpoint.INFERENCE_COPY))
  dev = jax.devices()[-1]  # not the default device when there are several
  loaded = checkpoint.load_model(d, device=dev)
  leaves = jax.tree.leaves(nnx.state(loaded, nnx.Param))
  assert leaves and all(x.devices() == {dev} for x in leaves)
  assert checkpoint.params_hash(loaded) == checkpoint.params_hash(model)


def test_errors_name_the_directory(tmp_path):
  with pytest.raises(checkpoint.CheckpointError, match="no such checkpoint directory"):
    checkpoint.load_model(str(tmp_path / "missing"))
  (tmp_path / "empty").mkdir()
  with pytest.raises(checkpoint.CheckpointError, match="not an incontext params directory"):
    checkpoint.load_model(str(tmp_path / "empty"))
  d = tmp_path / "other"
  d.mkdir()
  (d / "incontext.json").write_text(json.dumps({"kind": "learned-prompt"}))
  with pytest.raises(checkpoint.CheckpointError, match="kind 'learned-prompt'"):
    checkpoint.load_model(str(d))
  model = _model()
  checkpoint.save_model(str(tmp_path / "p"), model)
  with pytest.raises(outputs.OutputError, match="already exists"):
    checkpoint.save_model(str(tmp_path / "p"), model)
  want = seggpt.get_config("test", image_size=(32, 32), patch=8)
  with pytest.raises(checkpoint.CheckpointError, match="does not match the expected variant"):
    checkpoint.load_model(str(tmp_path / "p"), expect_variant=want)


def test_infer_config_and_strict_loading():
  model = _model()
  sd = convert.model_to_official(model)
  assert convert.infer_config(sd).feature_layers == seggpt.default_feature_layers(model.cfg.depth)
  cfg = convert.infer_config(sd, feature_layers=model.cfg.feature_layers)
  assert cfg == model.cfg
  big = seggpt.get_config("L/16")
  flat = dict(nnx.to_flat_state(nnx.state(seggpt.abstract(big), nnx.Param)))
  shapes = {
    name: np.broadcast_to(np.float32(0), _torch_shape(name, flat[path].shape))
    for name, (path, _) in convert._table(big).items()
  }
  assert convert.infer_config(shapes) == big
  m2 = seggpt.SegGPT(cfg, rngs=nnx.Rngs(9))
  convert.load_official(m2, sd)
  bad = dict(sd)
  bad["blocks.0.attn.qkv.weight"] = bad["blocks.0.attn.qkv.weight"][:-1]
  with pytest.raises(
    convert.ConversionError,
    match=r"blocks.0.attn.qkv.weight': shape \(95, 32\), expected \(96, 32\)",
  ):
    convert.load_official(m2, bad)
  extra = dict(sd, **{"head.weight": np.zeros(3)})
  with pytest.raises(convert.ConversionError, match="do not belong to this model.*head.weight"):
    convert.load_official(m2, extra)
  missing = {k: v for k, v in sd.items() if k != "norm.bias"}
  with pytest.raises(convert.ConversionError, match="lacks 1 tensors.*norm.bias"):
    convert.load_official(m2, missing)
  # Painter: no type tokens, allowed explicitly.
  painter = {k: v for k, v in sd.items() if not k.startswith("type_token")}
  convert.load_official(m2, painter, allow_missing=convert.OPTIONAL)
  # HF names round trip.
  assert convert.hf_to_official(convert.official_to_hf(sd)).keys() == sd.keys()


def _torch_shape(name, shape):
  if name.endswith("weight") and len(shape) == 2:
    return shape[::-1]
  if len(shape) == 4 and "token" not in name:
    return (shape[3], shape[2], shape[0], shape[1])
  return shape
