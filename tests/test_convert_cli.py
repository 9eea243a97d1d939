"""`incontext convert` / `incontext export-hf`: both source layouts, exact round trip, errors."""

import os

import numpy as np
import pytest

from incontext import checkpoint, cli
from incontext.models import convert, seggpt

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
import hf_reference  # noqa: E402

# depth 12: the feature layers (3, 5, 8, 11) are what `convert` infers from the weights.
CFG = seggpt.get_config(
  "test", depth=12, feature_layers=seggpt.default_feature_layers(12), image_size=(32, 32), patch=8
)


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
  """An HF model with random weights saved both ways: save_pretrained and an official .pth."""
  d = tmp_path_factory.mktemp("src")
  hm = hf_reference.make_hf_model(CFG, seed=3)
  hm.save_pretrained(str(d / "hf"))
  official = convert.hf_to_official(hf_reference.hf_state_dict(hm))
  torch.save(
    {"model": {k: torch.from_numpy(v) for k, v in official.items()}}, str(d / "seggpt_test.pth")
  )
  return hm, d / "hf" / "model.safetensors", d / "seggpt_test.pth", official


def _run(argv, capsys):
  rc = cli.main([str(a) for a in argv])
  cap = capsys.readouterr()
  return rc, cap.out, cap.err


def test_both_layouts_convert_to_the_same_weights(sources, tmp_path, capsys):
  hm, st, pth, official = sources
  assert st.exists()
  rc, out, err = _run(["convert", "--source", pth, "--out", tmp_path / "a"], capsys)
  assert rc == 0, err
  assert "official layout" in out
  rc, out, err = _run(["convert", "--source", st, "--out", tmp_path / "b"], capsys)
  assert rc == 0, err
  assert "hf layout" in out
  ma, mb = checkpoint.read_meta(str(tmp_path / "a")), checkpoint.read_meta(str(tmp_path / "b"))
  assert ma["weights_hash"] == mb["weights_hash"]
  assert ma["source"]["layout"] == "official" and mb["source"]["layout"] == "hf"
  assert ma["source"]["num_tensors"] == mb["source"]["num_tensors"] == len(official)
  model = checkpoint.load_model(str(tmp_path / "b"))
  assert model.cfg.feature_layers == CFG.feature_layers and model.cfg.depth == 12
  back = convert.model_to_official(model)
  assert back.keys() == official.keys()
  for k in official:
    np.testing.assert_array_equal(back[k], official[k])
  # An existing output is not overwritten without --overwrite.
  rc, _, err = _run(["convert", "--source", st, "--out", tmp_path / "b"], capsys)
  assert rc == 2 and "already exists" in err


def test_export_hf_round_trip_is_exact(sources, tmp_path, capsys):
  from transformers import SegGptForImageSegmentation

  hm, st, _, _ = sources
  assert _run(["convert", "--source", st, "--out", tmp_path / "p"], capsys)[0] == 0
  rc, _, err = _run(["export-hf", "--checkpoint", tmp_path / "p", "--out", tmp_path / "e"], capsys)
  assert rc == 0, err
  back = SegGptForImageSegmentation.from_pretrained(str(tmp_path / "e")).eval()
  a, b = hm.state_dict(), back.state_dict()
  assert a.keys() == b.keys()
  for k in a:
    assert torch.equal(a[k], b[k]), k
  g = torch.Generator().manual_seed(0)
  x = [torch.randn(1, 3, 32, 32, generator=g) for _ in range(3)]
  with torch.no_grad():
    ya = hm(pixel_values=x[0], prompt_pixel_values=x[1], prompt_masks=x[2]).pred_masks
    yb = back(pixel_values=x[0], prompt_pixel_values=x[1], prompt_masks=x[2]).pred_masks
  assert torch.equal(ya, yb)
  # Converting the export again gives the same weights hash.
  assert (
    _run(
      ["convert", "--source", tmp_path / "e" / "model.safetensors", "--out", tmp_path / "p2"],
      capsys,
    )[0]
    == 0
  )
  assert (
    checkpoint.read_meta(str(tmp_path / "p2"))["weights_hash"]
    == checkpoint.read_meta(str(tmp_path / "p"))["weights_hash"]
  )


def _write_pth(path, sd):
  torch.save({"model": {k: torch.from_numpy(np.asarray(v)) for k, v in sd.items()}}, str(path))


def test_bad_sources_give_clear_errors(sources, tmp_path, capsys):
  from safetensors.numpy import save_file

  _, st, pth, official = sources
  cases = []
  t = tmp_path / "trunc.safetensors"
  t.write_bytes(st.read_bytes()[: st.stat().st_size // 2])
  cases.append((t, "not a readable safetensors file"))
  t = tmp_path / "trunc.pth"
  t.write_bytes(pth.read_bytes()[: pth.stat().st_size // 2])
  cases.append((t, "not a readable PyTorch checkpoint"))
  t = tmp_path / "other.safetensors"
  save_file({"encoder.weight": np.zeros((4, 4), np.float32)}, str(t))
  cases.append((t, "not a SegGPT checkpoint"))
  bad = dict(official)
  bad["blocks.1.mlp.fc1.weight"] = np.zeros((CFG.mlp_dim + 1, CFG.width), np.float32)
  _write_pth(tmp_path / "shape.pth", bad)
  cases.append(
    (tmp_path / "shape.pth", "tensor 'blocks.1.mlp.fc1.weight': shape (65, 32), expected (64, 32)")
  )
  missing = {k: v for k, v in official.items() if k != "blocks.4.attn.proj.bias"}
  _write_pth(tmp_path / "missing.pth", missing)
  cases.append(
    (tmp_path / "missing.pth", "checkpoint lacks 1 tensors: ['blocks.4.attn.proj.bias']")
  )
  extra = dict(official, **{"head.weight": np.zeros((3, 3), np.float32)})
  _write_pth(tmp_path / "extra.pth", extra)
  cases.append((tmp_path / "extra.pth", "1 tensors do not belong to this model: ['head.weight']"))
  (tmp_path / "weights.npz").write_bytes(b"x")
  cases.append((tmp_path / "weights.npz", "unknown checkpoint type"))
  cases.append((tmp_path / "nothere.pth", "no such file"))
  for i, (src, msg) in enumerate(cases):
    out = tmp_path / f"out{i}"
    rc, _, err = _run(["convert", "--source", src, "--out", out], capsys)
    assert rc == 2, (src, err)
    line = err.strip()
    assert "\n" not in line and line.startswith("incontext convert: error: "), line
    assert msg in line, (msg, line)
    assert os.path.basename(str(src)) in line, line
    assert not out.exists()
  assert not [f for f in os.listdir(tmp_path) if f.startswith(".tmp")]


@pytest.mark.parametrize("kind", ["other", "shape", "missing", "extra"])
def test_errors_name_the_source(kind, sources, tmp_path, capsys):
  from safetensors.numpy import save_file

  _, _, _, official = sources
  src = tmp_path / f"{kind}.pth"
  if kind == "other":
    src = tmp_path / "other.safetensors"
    save_file({"encoder.weight": np.zeros((4, 4), np.float32)}, str(src))
  elif kind == "shape":
    _write_pth(src, dict(official, **{"blocks.1.mlp.fc1.weight": np.zeros((3, 3), np.float32)}))
  elif kind == "missing":
    _write_pth(src, {k: v for k, v in official.items() if k != "norm.bias"})
  else:
    _write_pth(src, dict(official, **{"head.weight": np.zeros((3, 3), np.float32)}))
  rc, _, err = _run(["convert", "--source", src, "--out", tmp_path / "o"], capsys)
  assert rc == 2
  assert src.name in err, err


def test_config_json_types_are_checked_at_convert_time(sources, tmp_path, capsys):
  """A transformers config.json with a wrong-typed field (or that is not a JSON object) is
  refused by `convert` in one line naming the file and the field, and nothing is written; an
  edited incontext.json is refused when the params are loaded."""
  import json
  import shutil

  _, st, _, _ = sources
  good = json.loads((st.parent / "config.json").read_text())
  cases = [
    (dict(good, layer_norm_eps="tiny"), "layer_norm_eps is 'tiny'"),
    (dict(good, layer_norm_eps=True), "layer_norm_eps is True"),
    (dict(good, layer_norm_eps=-1.0), "layer_norm_eps is -1.0"),
    (dict(good, intermediate_hidden_state_indices=5), "intermediate_hidden_state_indices is 5"),
    (dict(good, intermediate_hidden_state_indices=["3"]), "intermediate_hidden_state_indices"),
    (dict(good, merge_index="2"), "merge_index is '2'"),
    (dict(good, image_size="big"), "image_size is 'big'"),
    (dict(good, hidden_size=32.5), "hidden_size is 32.5"),
    ([good], "holds a JSON list; expected an object"),
    ("seggpt", "holds a JSON str"),
  ]
  for i, (cfg, msg) in enumerate(cases):
    src = tmp_path / f"src{i}"
    src.mkdir()
    shutil.copy(st, src / "model.safetensors")
    (src / "config.json").write_text(json.dumps(cfg))
    out = tmp_path / f"out{i}"
    rc, _, err = _run(["convert", "--source", src, "--out", out], capsys)
    line = err.strip()
    assert rc == 2 and "\n" not in line, (cfg, err)
    assert "config.json" in line and msg in line, (msg, line)
    assert not out.exists()
  # The checkpoint's own config, edited: refused on load with one line naming the field.
  out = tmp_path / "params"
  rc, _, err = _run(["convert", "--source", st.parent, "--out", out], capsys)
  assert rc == 0, err
  meta = json.loads((out / checkpoint.META).read_text())
  for field, value in (("eps", "tiny"), ("feature_layers", 5), ("depth", "12")):
    edited = dict(meta, config=dict(meta["config"], **{field: value}))
    (out / checkpoint.META).write_text(json.dumps(edited))
    with pytest.raises(checkpoint.CheckpointError, match=f"{field} is {value!r}"):
      checkpoint.load_model(str(out), verify=False)
