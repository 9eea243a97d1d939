"""`incontext segment`: outputs, label round trips, ensembles, learned prompts and bad input."""

import json
import os

import numpy as np
import pytest
from flax import nnx
from PIL import Image

from _shared import shared_data_dir
from incontext import canvas, checkpoint, cli, inference as I, predict as P
from incontext.models import seggpt

# Every test here runs the incontext command on real photos (../shared/data): integration tier.
pytestmark = pytest.mark.integration

SIZE = (32, 32)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
  model = seggpt.SegGPT(seggpt.get_config("test", image_size=SIZE, patch=8), rngs=nnx.Rngs(5))
  d = tmp_path_factory.mktemp("ckpt") / "params"
  checkpoint.save_model(str(d), model)
  return str(d)


@pytest.fixture(scope="module")
def ex():
  return shared_data_dir("examples", "seggpt_examples", "examples")


def _run(argv, capsys):
  rc = cli.main([str(a) for a in argv])
  err = capsys.readouterr().err
  return rc, err


def _no_tmp(parent):
  assert not [f for f in os.listdir(parent) if f.startswith(".tmp")]


def test_cli_outputs_match_the_api(ckpt, ex, tmp_path, capsys):
  out = tmp_path / "out"
  queries = [ex / "hmbb_2.jpg", ex / "video_1.jpg", ex / "hmbb_3.jpg"]
  prompts = [
    (ex / "hmbb_1.jpg", ex / "hmbb_1_target.png"),
    (ex / "video_2.jpg", ex / "video_2_target.png"),
  ]
  argv = [
    "segment",
    "--checkpoint",
    ckpt,
    "--out",
    out,
    "--raw",
    "--batch-size",
    "2",
    "--query",
    *queries,
  ]
  for p in prompts:
    argv += ["--prompt", *p]
  rc, err = _run(argv, capsys)
  assert rc == 0, err
  assert "3/3" in err  # the progress bar reached the end
  _no_tmp(tmp_path)
  assert sorted(os.listdir(out)) == sorted(
    [f"{q.stem}{s}" for q in queries for s in (".png", "_overlay.png", ".raw.npy")]
    + ["labels.json", ".incontext-outputs.json"]
  )
  assert json.loads((out / "labels.json").read_text())["labels"] == [
    {"id": 255, "colour": [255, 255, 255]}
  ]  # grey 0/255 prompts: white
  api = I.Segmenter.from_checkpoint(ckpt).segment(prompts, queries, batch_size=2)
  for q, r in zip(queries, api):
    img = I.load_image(q)
    lab = np.asarray(Image.open(out / f"{q.stem}.png"))
    assert lab.shape == img.shape[:2]
    assert set(np.unique(lab)) <= {0, 255}  # 0/255 prompts come back as 0/255
    np.testing.assert_array_equal(lab, r.labels)
    raw = np.load(out / f"{q.stem}.raw.npy")
    assert raw.dtype == np.float32 and raw.shape == (*SIZE, 3)
    np.testing.assert_array_equal(raw, r.raw)
    ov = np.asarray(Image.open(out / f"{q.stem}_overlay.png"))
    assert ov.shape == img.shape
    # Official overlay: foreground (white) keeps the image, background is darkened to 0.4.
    bg = lab == 0
    np.testing.assert_allclose(ov[bg], np.round(img[bg] * 0.4), atol=1)
    np.testing.assert_array_equal(ov[~bg], img[~bg])


def test_cli_spatial_ensemble(ckpt, ex, tmp_path, capsys):
  prompts = [(ex / f"hmbb_{i}.jpg", ex / f"hmbb_{i}_target.png") for i in (1, 2, 3)]
  query = ex / "video_1.jpg"
  argv = [
    "segment",
    "--checkpoint",
    ckpt,
    "--out",
    tmp_path / "o",
    "--raw",
    "--query",
    query,
    "--ensemble",
    "spatial",
  ]
  for p in prompts:
    argv += ["--prompt", *p]
  rc, err = _run(argv, capsys)
  assert rc == 0, err
  seg = I.Segmenter.from_checkpoint(ckpt)
  spatial = seg.segment(prompts, [query], ensemble="spatial")[0].raw
  feature = seg.segment(prompts, [query], ensemble="feature")[0].raw
  raw = np.load(tmp_path / "o" / "video_1.raw.npy")
  np.testing.assert_allclose(raw, spatial, atol=1e-5, rtol=0)
  assert np.abs(raw - feature).max() > 1e-3


def _oracle(monkeypatch):
  """A 'model' that paints the first prompt's target: tests the label path exactly."""

  def fake(model, prompt_imgs, prompt_tgts, queries, *, seg_type, feature_ensemble=True):
    return np.broadcast_to(np.asarray(prompt_tgts)[0], np.shape(queries)).copy()

  monkeypatch.setattr(P, "predict_canvas_batch", fake)


def _expected_labels(mask, size, out_hw):
  """Label map NEAREST-resized to the canvas (PIL) then legacy-nearest back (torch)."""
  small = np.asarray(Image.fromarray(mask).resize((size[1], size[0]), Image.NEAREST))
  return P.resize_nearest_torch(small, out_hw)


def test_label_ids_round_trip_through_the_cli(ckpt, tmp_path, capsys, monkeypatch):
  _oracle(monkeypatch)
  coco = shared_data_dir("coco128_seg")
  img = coco / "images" / "train2017" / "000000000009.jpg"
  mask = coco / "masks_semantic" / "train2017" / "000000000009.png"
  m = I.load_mask(mask)
  ids = set(np.unique(m).tolist())
  assert len(ids) == 4 and 0 in ids  # 3 classes + background
  rc, err = _run(
    [
      "segment",
      "--checkpoint",
      ckpt,
      "--prompt",
      img,
      mask,
      "--query",
      img,
      "--out",
      tmp_path / "o",
    ],
    capsys,
  )
  assert rc == 0, err
  got = np.asarray(Image.open(tmp_path / "o" / "000000000009.png"))
  np.testing.assert_array_equal(got, _expected_labels(m, SIZE, m.shape))
  assert set(np.unique(got).tolist()) == ids  # the same label ids come back
  # a grey label map: each id drawn in the colour the model painted it (distinct, visible)
  pal = np.asarray(Image.open(tmp_path / "o" / "000000000009.png").getpalette()).reshape(-1, 3)
  np.testing.assert_array_equal(pal[sorted(ids - {0})], canvas.build_palette(3)[1:])
  # Binary 0/1 palette PNG (PerSAM) -> 0/1; RGB colour mask -> the colour image.
  per = shared_data_dir("examples", "perseg_examples")
  pm = I.load_mask(per / "cat_00.png")
  col = canvas.build_palette(3)[np.minimum(m, 1) + (m == 50)][..., ::-1].copy()
  Image.fromarray(col).save(tmp_path / "col.png")
  rc, err = _run(
    [
      "segment",
      "--checkpoint",
      ckpt,
      "--prompt",
      per / "cat_00.jpg",
      per / "cat_00.png",
      "--query",
      per / "cat_00.jpg",
      "--out",
      tmp_path / "p",
    ],
    capsys,
  )
  assert rc == 0, err
  got = np.asarray(Image.open(tmp_path / "p" / "cat_00.png"))
  np.testing.assert_array_equal(got, _expected_labels(pm, SIZE, pm.shape))
  assert set(np.unique(got).tolist()) == {0, 1}
  # ... drawn in the prompt file's own palette colour (DAVIS dark red), not grey 1 on black.
  pal = np.asarray(Image.open(tmp_path / "p" / "cat_00.png").getpalette()).reshape(-1, 3)
  assert (
    tuple(pal[1])
    == tuple(np.asarray(Image.open(per / "cat_00.png").getpalette()).reshape(-1, 3)[1])
    == (128, 0, 0)
  )
  rc, err = _run(
    [
      "segment",
      "--checkpoint",
      ckpt,
      "--prompt",
      img,
      tmp_path / "col.png",
      "--query",
      img,
      "--out",
      tmp_path / "c",
    ],
    capsys,
  )
  assert rc == 0, err
  im = Image.open(tmp_path / "c" / "000000000009.png")
  assert im.mode == "P"  # indices 1..K, palette = the colours
  np.testing.assert_array_equal(np.asarray(im.convert("RGB")), _expected_labels(col, SIZE, m.shape))
  legend = json.loads((tmp_path / "c" / "labels.json").read_text())
  assert legend["prompt_masks"] == "colour"
  cols = np.unique(col.reshape(-1, 3), axis=0)[1:]  # sorted non-black colours
  assert legend["labels"] == [{"id": k + 1, "colour": c.tolist()} for k, c in enumerate(cols)]
  np.testing.assert_array_equal(np.asarray(im), I.load_mask(tmp_path / "c" / "000000000009.png"))
  assert set(np.unique(np.asarray(im)).tolist()) <= {0, 1, 2, 3}


def test_label_ids_real_model_structure(ckpt, tmp_path, capsys):
  """A random model cannot segment well; the output must still be in the prompt's label set."""
  coco = shared_data_dir("coco128_seg")
  img = coco / "images" / "train2017" / "000000000071.jpg"
  mask = coco / "masks_semantic" / "train2017" / "000000000071.png"
  query = coco / "images" / "train2017" / "000000000074.jpg"
  rc, err = _run(
    [
      "segment",
      "--checkpoint",
      ckpt,
      "--prompt",
      img,
      mask,
      "--query",
      query,
      "--out",
      tmp_path / "o",
      "--seg-type",
      "semantic",
    ],
    capsys,
  )
  assert rc == 0, err
  im = Image.open(tmp_path / "o" / "000000000074.png")
  assert im.mode == "P" and im.size == Image.open(query).size
  assert set(np.unique(np.asarray(im)).tolist()) <= set(np.unique(I.load_mask(mask)).tolist())


def test_learned_prompt(ckpt, ex, tmp_path, capsys):
  prompts = pytest.importorskip("incontext.prompts")
  seg = I.Segmenter.from_checkpoint(ckpt)
  rng = np.random.default_rng(0)
  lp = prompts.LearnedPrompt(
    image=rng.normal(size=(*SIZE, 3)).astype(np.float32),
    target=rng.normal(size=(*SIZE, 3)).astype(np.float32),
    seg_type="semantic",
    label_ids=[255],
    label_names=["eyes"],
  )
  path = str(tmp_path / "lp.npz")
  prompts.save(path, lp, model_cfg=seg.cfg, weights_hash=seg.meta["weights_hash"])
  query = ex / "hmbb_2.jpg"
  q = P.prepare_image(I.load_image(query), SIZE)
  rc, err = _run(
    [
      "segment",
      "--checkpoint",
      ckpt,
      "--learned-prompt",
      path,
      "--query",
      query,
      "--out",
      tmp_path / "a",
      "--raw",
    ],
    capsys,
  )
  assert rc == 0, err
  want = P.predict_canvas(seg.model, lp.image[None], lp.target[None], q, seg_type="semantic")
  np.testing.assert_allclose(np.load(tmp_path / "a" / "hmbb_2.raw.npy"), want, atol=1e-5)
  # Together with an ordinary prompt: a feature ensemble over both.
  pair = (ex / "hmbb_1.jpg", ex / "hmbb_1_target.png")
  rc, err = _run(
    [
      "segment",
      "--checkpoint",
      ckpt,
      "--learned-prompt",
      path,
      "--prompt",
      *pair,
      "--query",
      query,
      "--out",
      tmp_path / "b",
      "--raw",
    ],
    capsys,
  )
  assert rc == 0, err
  pi = P.prepare_image(I.load_image(pair[0]), SIZE)
  pt = P.prepare_mask(P.encode_masks([I.load_mask(pair[1])])[0][0], SIZE)
  want2 = P.predict_canvas(
    seg.model, np.stack([pi, lp.image]), np.stack([pt, lp.target]), q, seg_type="semantic"
  )
  np.testing.assert_allclose(np.load(tmp_path / "b" / "hmbb_2.raw.npy"), want2, atol=1e-5)
  assert np.abs(want2 - want).max() > 1e-3
  labels = np.asarray(Image.open(tmp_path / "b" / "hmbb_2.png"))
  assert set(np.unique(labels).tolist()) <= {0, 255}
  # A prompt made for other weights is refused, naming the file.
  other = tmp_path / "other.npz"
  prompts.save(str(other), lp, model_cfg=seg.cfg, weights_hash="0" * 64)
  rc, err = _run(
    [
      "segment",
      "--checkpoint",
      ckpt,
      "--learned-prompt",
      other,
      "--query",
      query,
      "--out",
      tmp_path / "c",
    ],
    capsys,
  )
  assert rc == 2 and "other.npz" in err and "weights" in err
  assert not (tmp_path / "c").exists()


# -- bad input ------------------------------------------------------------------------------
def _bad_files(tmp_path, ex):
  """Writes the bad inputs; returns a dict name -> path."""
  img = I.load_image(ex / "hmbb_1.jpg")  # 297 x 170
  h, w = img.shape[:2]
  f = {}
  f["garbage"] = tmp_path / "garbage.jpg"
  f["garbage"].write_bytes(b"\x89PNG but not really" * 10)
  data = (ex / "hmbb_1_target.png").read_bytes()
  f["trunc"] = tmp_path / "trunc.png"
  f["trunc"].write_bytes(data[: len(data) // 2])
  f["square"] = tmp_path / "square.png"
  Image.fromarray(np.full((100, 100), 255, np.uint8)).save(f["square"])
  f["empty"] = tmp_path / "empty.png"
  Image.fromarray(np.zeros((h, w), np.uint8)).save(f["empty"])
  f["half"] = tmp_path / "half.png"  # same aspect, half size: fine
  Image.fromarray(np.asarray(Image.open(ex / "hmbb_1_target.png").resize((w // 2, h // 2)))).save(
    f["half"]
  )
  lab = np.zeros((h, w), np.uint16)
  lab[10:40, 10:40] = 300
  lab[50:60, 50:60] = 2
  f["l300"] = tmp_path / "labels300.png"
  Image.fromarray(lab).save(f["l300"])
  f["notckpt"] = tmp_path / "notckpt"
  f["notckpt"].mkdir()
  (f["notckpt"] / "config.json").write_text("{}")
  f["pth"] = tmp_path / "seggpt_vit_large.pth"
  f["pth"].write_bytes(b"x")
  f["corrupt_ckpt"] = tmp_path / "corrupt_ckpt"
  return f


BAD = [
  # (name, prompt image, prompt mask, query, checkpoint, expected message pieces)
  ("missing query", "P", "M", "missing.jpg", "C", ["missing.jpg", "no such query image"]),
  ("missing image", "nothere.jpg", "M", "Q", "C", ["nothere.jpg", "no such image file"]),
  ("missing mask", "P", "nomask.png", "Q", "C", ["nomask.png", "no such mask file"]),
  ("corrupt image", "garbage", "M", "Q", "C", ["garbage.jpg", "cannot read image"]),
  ("truncated mask", "P", "trunc", "Q", "C", ["trunc.png", "cannot read mask"]),
  ("aspect", "P", "square", "Q", "C", ["square.png", "same aspect ratio"]),
  ("empty mask", "P", "empty", "Q", "C", ["empty.png", "mask is empty (all background)"]),
  ("label range", "P", "l300", "Q", "C", ["labels300.png", "label 300 out of range"]),
  ("no checkpoint", "P", "M", "Q", "nockpt", ["nockpt", "no such checkpoint directory"]),
  ("wrong kind", "P", "M", "Q", "notckpt", ["notckpt", "not an incontext params directory"]),
  ("weights file", "P", "M", "Q", "pth", ["seggpt_vit_large.pth", "incontext convert"]),
  ("corrupt params", "P", "M", "Q", "corrupt_ckpt", ["corrupt_ckpt", "cannot restore params"]),
]


@pytest.mark.parametrize("case", BAD, ids=[c[0] for c in BAD])
def test_bad_input_is_a_one_line_error_with_no_outputs(case, ckpt, ex, tmp_path, capsys):
  _, pimg, pmask, query, ck, pieces = case
  files = _bad_files(tmp_path, ex)
  if ck == "corrupt_ckpt":
    import shutil

    shutil.copytree(ckpt, files["corrupt_ckpt"])
    for root, _, names in os.walk(files["corrupt_ckpt"]):  # Orbax tree and inference copy
      for n in names:
        p = os.path.join(root, n)
        if os.path.getsize(p) > 100 and not n.endswith(".json"):
          with open(p, "r+b") as fh:
            fh.truncate(os.path.getsize(p) // 3)
  pick = lambda x, default: (default if x in ("P", "M", "Q", "C") else files.get(x, tmp_path / x))
  argv = [
    "segment",
    "--checkpoint",
    ckpt if ck == "C" else pick(ck, None),
    "--prompt",
    pick(pimg, ex / "hmbb_1.jpg"),
    pick(pmask, ex / "hmbb_1_target.png"),
    "--query",
    pick(query, ex / "hmbb_2.jpg"),
    "--out",
    tmp_path / "out",
  ]
  rc, err = _run(argv, capsys)
  assert rc == 2
  last = err.strip().splitlines()[-1]
  assert last.startswith("incontext segment: error: ")
  for piece in pieces:
    assert piece in last, last
  assert not (tmp_path / "out").exists()
  _no_tmp(tmp_path)


def test_good_odd_inputs_are_accepted(ckpt, ex, tmp_path, capsys):
  """A mask at another size with the same aspect is fine; so is a 16-bit label map <= 255."""
  files = _bad_files(tmp_path, ex)
  rc, err = _run(
    [
      "segment",
      "--checkpoint",
      ckpt,
      "--prompt",
      ex / "hmbb_1.jpg",
      files["half"],
      "--query",
      ex / "hmbb_2.jpg",
      "--out",
      tmp_path / "o",
    ],
    capsys,
  )
  assert rc == 0, err


def test_failure_mid_run_leaves_existing_outputs_alone(ckpt, ex, tmp_path, capsys):
  out = tmp_path / "out"
  prompt = ["--prompt", ex / "hmbb_1.jpg", ex / "hmbb_1_target.png"]
  rc, err = _run(
    ["segment", "--checkpoint", ckpt, *prompt, "--query", ex / "hmbb_2.jpg", "--out", out], capsys
  )
  assert rc == 0, err
  (out / "notes.txt").write_text("keep me")
  before = {f: (out / f).read_bytes() for f in os.listdir(out)}
  files = _bad_files(tmp_path, ex)
  bad_query = tmp_path / "zz_bad.png"
  bad_query.write_bytes(files["trunc"].read_bytes())
  # Batch 1 (two good queries) succeeds, batch 2 hits the corrupt query.
  rc, err = _run(
    [
      "segment",
      "--checkpoint",
      ckpt,
      *prompt,
      "--query",
      ex / "hmbb_2.jpg",
      ex / "video_1.jpg",
      bad_query,
      "--batch-size",
      "2",
      "--out",
      out,
      "--overwrite",
    ],
    capsys,
  )
  assert rc == 2
  assert "zz_bad.png" in err.strip().splitlines()[-1]
  assert {f: (out / f).read_bytes() for f in os.listdir(out)} == before
  _no_tmp(tmp_path)
  # Duplicate output names are refused before anything runs.
  rc, err = _run(
    [
      "segment",
      "--checkpoint",
      ckpt,
      "--prompt",
      ex / "hmbb_1.jpg",
      ex / "hmbb_1_target.png",
      "--query",
      ex / "hmbb_2.jpg",
      bad_query,
      tmp_path / "zz_bad.png",
      "--out",
      tmp_path / "o2",
    ],
    capsys,
  )
  assert rc == 2 and "same output name 'zz_bad.png'" in err
