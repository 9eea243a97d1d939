"""Inference API: file reading, mask encoding, pre/post-processing parity with the transformers
SegGPT image processor, spatial/feature ensembles and end-to-end parity with transformers."""

import io

import numpy as np
import pytest
from flax import nnx
from PIL import Image

from _shared import shared_data_dir
from incontext import canvas, checkpoint, inference as I, predict as P
from incontext.models import convert, seggpt

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
import hf_reference  # noqa: E402

SIZE = (32, 32)


def _examples():
  return shared_data_dir("examples", "seggpt_examples", "examples")


def _hf_proc(size=(448, 448)):
  from transformers import SegGptImageProcessorPil

  return SegGptImageProcessorPil(size={"height": size[0], "width": size[1]})


def _hwc(t):
  return np.asarray(t).transpose(0, 2, 3, 1)


# -- reading files -------------------------------------------------------------------------
def test_load_image_modes_and_exif(tmp_path):
  rng = np.random.default_rng(0)
  rgb = rng.integers(0, 256, (6, 10, 3), dtype=np.uint8)
  # EXIF orientation 6 (rotate 90 CW to display): the loaded image is the displayed one.
  exif = Image.Exif()
  exif[0x0112] = 6
  Image.fromarray(rgb).save(tmp_path / "exif.png", exif=exif)
  got = I.load_image(tmp_path / "exif.png")
  np.testing.assert_array_equal(got, np.rot90(rgb, k=-1))
  gray = rgb[..., 0]
  Image.fromarray(gray).save(tmp_path / "gray.png")
  np.testing.assert_array_equal(I.load_image(tmp_path / "gray.png"), np.stack([gray] * 3, -1))
  rgba = np.concatenate([rgb, np.full((6, 10, 1), 7, np.uint8)], -1)
  Image.fromarray(rgba).save(tmp_path / "rgba.png")
  np.testing.assert_array_equal(I.load_image(tmp_path / "rgba.png"), rgb)  # alpha dropped
  pal = Image.fromarray(rgb).quantize(8)
  pal.save(tmp_path / "pal.png")
  np.testing.assert_array_equal(I.load_image(tmp_path / "pal.png"), np.asarray(pal.convert("RGB")))
  g16 = (gray.astype(np.uint16) * 257).astype(np.uint16)
  Image.fromarray(g16).save(tmp_path / "g16.png")
  assert Image.open(tmp_path / "g16.png").mode.startswith("I")
  np.testing.assert_array_equal(I.load_image(tmp_path / "g16.png"), np.stack([gray] * 3, -1))


@pytest.mark.integration
def test_load_image_real_palette_photo():
  # hmbb_3.jpg is really a palette PNG (SOURCE.txt): read as its RGB rendering.
  path = _examples() / "hmbb_3.jpg"
  im = Image.open(path)
  assert im.mode == "P"
  np.testing.assert_array_equal(I.load_image(path), np.asarray(im.convert("RGB")))


def test_load_errors_name_the_file(tmp_path):
  with pytest.raises(I.InputError, match=r"nope\.jpg: no such image file"):
    I.load_image(tmp_path / "nope.jpg")
  (tmp_path / "bad.jpg").write_bytes(b"not an image at all")
  with pytest.raises(I.InputError, match=r"bad\.jpg: cannot read image"):
    I.load_image(tmp_path / "bad.jpg")
  buf = io.BytesIO()
  Image.fromarray(np.zeros((64, 64, 3), np.uint8) + 9).save(buf, format="PNG")
  (tmp_path / "trunc.png").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
  with pytest.raises(I.InputError, match=r"trunc\.png: cannot read mask"):
    I.load_mask(tmp_path / "trunc.png")


@pytest.mark.integration
def test_load_mask_keeps_values(tmp_path):
  # Palette-mode PNG (PerSAM demo): indices 0/1, not the palette colours.
  per = shared_data_dir("examples", "perseg_examples") / "cat_00.png"
  assert Image.open(per).mode == "P"
  m = I.load_mask(per)
  assert m.ndim == 2 and set(np.unique(m)) == {0, 1}
  # 16-bit label PNG keeps labels > 255 (so they can be rejected).
  lab = np.zeros((4, 5), np.uint16)
  lab[1, 1], lab[2, 2] = 3, 300
  Image.fromarray(lab).save(tmp_path / "l16.png")
  m16 = I.load_mask(tmp_path / "l16.png")
  assert m16.dtype == np.int32 and m16[2, 2] == 300 and m16[1, 1] == 3
  # RGB colour mask stays RGB; an RGB file with identical channels becomes 2-D.
  col = np.zeros((4, 5, 3), np.uint8)
  col[0, 0] = (255, 0, 0)
  Image.fromarray(col).save(tmp_path / "col.png")
  np.testing.assert_array_equal(I.load_mask(tmp_path / "col.png"), col)
  grey = np.repeat((lab > 0).astype(np.uint8)[..., None] * 255, 3, -1)
  Image.fromarray(grey).save(tmp_path / "grey.png")
  np.testing.assert_array_equal(I.load_mask(tmp_path / "grey.png"), grey[..., 0])


# -- mask encoding --------------------------------------------------------------------------
def test_encode_masks_conventions():
  m01 = np.zeros((4, 4), np.uint8)
  m01[1:3, 1:3] = 1
  rgbs, pal, ids = P.encode_masks([m01, m01 * 255])
  assert ids == [1]
  np.testing.assert_array_equal(pal, [[0, 0, 0], [255, 255, 255]])
  for r in rgbs:
    np.testing.assert_array_equal(r, np.repeat(m01[..., None] * 255, 3, -1))
  assert P.encode_masks([m01 * 255])[2] == [255]
  # Label maps: K distinct labels over all masks -> build_palette(K) in label order.
  a = np.array([[0, 7, 7], [3, 0, 0]], np.uint8)
  b = np.array([[0, 40, 3], [0, 0, 0]], np.uint8)
  rgbs, pal, ids = P.encode_masks([a, b])
  assert ids == [3, 7, 40]
  np.testing.assert_array_equal(pal, canvas.build_palette(3))
  np.testing.assert_array_equal(rgbs[0][0, 1], pal[2])
  np.testing.assert_array_equal(rgbs[1][0, 1], pal[3])
  np.testing.assert_array_equal(rgbs[0][1, 0], pal[1])
  assert len({tuple(c) for c in pal}) == 4
  # RGB colour masks pass through; their colours are the palette, ids index it.
  c = np.zeros((3, 3, 3), np.uint8)
  c[0, 0], c[1, 1] = (10, 200, 30), (255, 0, 0)
  rgbs, pal, ids = P.encode_masks([c])
  np.testing.assert_array_equal(rgbs[0], c)
  np.testing.assert_array_equal(pal, [[0, 0, 0], [10, 200, 30], [255, 0, 0]])
  assert ids == [1, 2]
  # A given encoding (learned prompt) is followed, and foreign labels are rejected.
  rgbs, pal2, ids2 = P.encode_masks([b], ["b.png"], palette=pal, label_ids=[3, 40])
  np.testing.assert_array_equal(rgbs[0][0, 1], pal[2])
  with pytest.raises(I.InputError, match=r"a\.png: labels \[7\] are not among"):
    P.encode_masks([a], ["a.png"], palette=pal, label_ids=[3, 40])


def test_encode_masks_errors():
  big = np.zeros((4, 4), np.int32)
  big[0, 0] = 300
  with pytest.raises(I.InputError, match=r"m16\.png: label 300 out of range"):
    P.encode_masks([big], ["m16.png"])
  with pytest.raises(I.InputError, match=r"z\.png: mask is empty \(all background\)"):
    P.encode_masks([np.zeros((4, 4), np.uint8)], ["z.png"])
  with pytest.raises(I.InputError, match=r"z\.png: mask is empty"):
    P.encode_masks([np.zeros((4, 4, 3), np.uint8)], ["z.png"])
  photo = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
  with pytest.raises(I.InputError, match=r"photo\.png: colour masks have \d+ distinct colours"):
    P.encode_masks([photo], ["photo.png"])
  with pytest.raises(I.InputError, match=r"c\.png: an RGB colour mask cannot be mixed"):
    P.encode_masks([np.ones((2, 2), np.uint8), np.ones((2, 2, 3), np.uint8)], ["l.png", "c.png"])
  P.check_aspect((100, 200), (50, 100), "i", "m")  # same aspect, other size: fine
  with pytest.raises(I.InputError, match=r"m\.png: mask is 100x100 .* i\.jpg is 200x100"):
    P.check_aspect((100, 200), (100, 100), "i.jpg", "m.png")


# -- preprocessing parity with the transformers PIL processor -------------------------------
@pytest.mark.integration
def test_preprocessing_matches_hf_processor():
  ex = _examples()
  query, prompt = I.load_image(ex / "hmbb_2.jpg"), I.load_image(ex / "video_1.jpg")
  proc = _hf_proc()
  out = proc(images=[query], prompt_images=[prompt], return_tensors="np")
  np.testing.assert_allclose(
    P.prepare_image(query), _hwc(out["pixel_values"])[0], atol=1e-6, rtol=0
  )
  np.testing.assert_allclose(
    P.prepare_image(prompt), _hwc(out["prompt_pixel_values"])[0], atol=1e-6, rtol=0
  )
  # Another canvas size (the model's image_size decides it).
  out = _hf_proc((64, 32))(images=[query], return_tensors="np")
  np.testing.assert_allclose(
    P.prepare_image(query, (64, 32)), _hwc(out["pixel_values"])[0], atol=1e-6, rtol=0
  )


@pytest.mark.integration
def test_mask_preprocessing_matches_hf_processor():
  proc = _hf_proc()
  # Official demo target (grey RGB, anti-aliased): used as-is, like HF with do_convert_rgb=False.
  t = I.load_mask(_examples() / "hmbb_1_target.png")
  rgb = np.asarray(Image.open(_examples() / "hmbb_1_target.png").convert("RGB"))
  ref = proc.preprocess(prompt_masks=[rgb], do_convert_rgb=False, return_tensors="np")[
    "prompt_masks"
  ]
  np.testing.assert_allclose(P.prepare_mask(P.encode_masks([t])[0][0]), _hwc(ref)[0], atol=1e-6)
  # A 0/255 binary mask: HF replicates the values (no num_labels) == our white encoding.
  horse = sorted((shared_data_dir("weizmann_horse") / "masks").glob("*.png"))[0]
  hm = I.load_mask(horse)
  assert set(np.unique(hm)) == {0, 255}
  ref = proc.preprocess(prompt_masks=[hm], return_tensors="np")["prompt_masks"]
  np.testing.assert_allclose(P.prepare_mask(P.encode_masks([hm])[0][0]), _hwc(ref)[0], atol=1e-6)
  # A multi-class label map with num_labels: HF paints palette[label] with build_palette(K).
  cl = I.load_mask(shared_data_dir("clothing_co_parsing", "masks") / "0001.png")
  ids, dense = np.unique(cl, return_inverse=True)
  dense = dense.reshape(cl.shape).astype(np.uint8)  # labels 0..K, as HF expects
  k = len(ids) - 1
  assert k >= 5
  ref = proc.preprocess(prompt_masks=[dense], num_labels=k, return_tensors="np")["prompt_masks"]
  # Our encoding of the *original* (non-contiguous) ids is the same colour image.
  rgbs, pal, got_ids = P.encode_masks([cl])
  assert got_ids == [int(i) for i in ids[1:]]
  np.testing.assert_allclose(P.prepare_mask(rgbs[0]), _hwc(ref)[0], atol=1e-6)
  # An RGB colour mask (do_convert_rgb=False).
  col = canvas.build_palette(k)[dense][..., ::-1].copy()
  ref = proc.preprocess(prompt_masks=[col], do_convert_rgb=False, return_tensors="np")[
    "prompt_masks"
  ]
  np.testing.assert_allclose(P.prepare_mask(P.encode_masks([col])[0][0]), _hwc(ref)[0], atol=1e-6)


# -- post-processing parity -----------------------------------------------------------------
@pytest.mark.parametrize(
  "in_hw,out_hw",
  [
    ((32, 32), (170, 297)),
    ((448, 448), (300, 168)),
    ((7, 5), (14, 10)),
    ((448, 448), (448, 448)),
    ((9, 13), (4, 31)),
  ],
)
def test_resize_nearest_matches_torch(in_hw, out_hw):
  x = np.arange(in_hw[0] * in_hw[1], dtype=np.float32).reshape(in_hw)
  ref = torch.nn.functional.interpolate(
    torch.from_numpy(x)[None, None], size=out_hw, mode="nearest"
  )[0, 0].numpy()
  np.testing.assert_array_equal(P.resize_nearest_torch(x, out_hw), ref)


def test_postprocessing_matches_hf():
  from transformers.models.seggpt.modeling_seggpt import SegGptImageSegmentationOutput

  rng = np.random.default_rng(0)
  num_labels = 5
  # Palette colours plus heavy noise: every class occurs, many pixels near decision borders.
  pal = canvas.build_palette(num_labels)
  lab = rng.integers(0, num_labels + 1, (2, 64, 32))
  rgb = pal[lab].astype(np.float32) + rng.normal(scale=70.0, size=(2, 64, 32, 3))
  pred = canvas.normalize(rgb).transpose(0, 3, 1, 2).astype(np.float32)
  sizes = [(170, 297), (50, 20)]
  hf = _hf_proc().post_process_semantic_segmentation(
    SegGptImageSegmentationOutput(pred_masks=torch.from_numpy(pred)),
    target_sizes=sizes,
    num_labels=num_labels,
  )
  ids = [3, 9, 17, 200, 201]
  lut = np.array([0] + ids)
  for i in range(2):
    raw = pred[i, :, 32:, :].transpose(1, 2, 0)
    ours = P.resize_nearest_torch(
      P.labels_from_prediction(canvas.denormalize(raw), pal, ids), sizes[i]
    )
    ref = hf[i].numpy()
    assert len(np.unique(ref)) == num_labels + 1  # all classes occur: a real test
    small = P.labels_from_prediction(canvas.denormalize(raw), pal, list(range(1, 6)))
    assert 0.05 < (small != lab[i, 32:]).mean() < 0.5  # the noise moves pixels across borders
    np.testing.assert_array_equal(ours, lut[ref])


# -- models ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def hf_pair(tmp_path_factory):
  """(HF model, params dir) with the same random weights, test variant at 32x32 patch 8."""
  cfg = seggpt.get_config("test", image_size=SIZE, patch=8)
  hm = hf_reference.make_hf_model(cfg, seed=1)
  model = seggpt.SegGPT(cfg, rngs=nnx.Rngs(0))
  convert.load_official(model, convert.hf_to_official(hf_reference.hf_state_dict(hm)))
  d = tmp_path_factory.mktemp("ckpt") / "params"
  checkpoint.save_model(str(d), model)
  return hm, str(d)


def _hf_raw(hm, prompts, query, *, feature_ensemble):
  """HF pipeline: PIL processor on the files, then pred_masks[0, :, h:, :] as HWC."""
  proc = _hf_proc(SIZE)
  k = len(prompts)
  imgs = [I.load_image(p) for p, _ in prompts]
  masks = [np.asarray(Image.open(m).convert("RGB")) for _, m in prompts]
  q = I.load_image(query)
  inp = proc(
    images=[q] * k,
    prompt_images=imgs,
    prompt_masks=masks,
    do_convert_rgb=False,
    return_tensors="pt",
  )
  with torch.no_grad():
    out = hm(**inp, feature_ensemble=feature_ensemble, embedding_type="instance").pred_masks
  return out[0, :, SIZE[0] :, :].numpy().transpose(1, 2, 0)


@pytest.mark.integration
def test_segmenter_matches_transformers_end_to_end(hf_pair):
  hm, d = hf_pair
  ex = _examples()
  seg = I.Segmenter.from_checkpoint(d, ensemble="hf")
  queries = [ex / "hmbb_2.jpg", ex / "video_1.jpg", ex / "hmbb_3.jpg"]
  one = [(ex / "hmbb_1.jpg", ex / "hmbb_1_target.png")]
  res = seg.segment(one, queries, batch_size=2)  # 2 batches, the last one padded
  for q, r in zip(queries, res):
    ref = _hf_raw(hm, one, q, feature_ensemble=False)
    assert r.raw.shape == (*SIZE, 3)
    np.testing.assert_allclose(r.raw, ref, atol=1e-4, rtol=0)
    assert r.labels.shape == I.load_image(q).shape[:2]
  few = one + [
    (ex / "video_2.jpg", ex / "video_2_target.png"),
    (ex / "hmbb_3.jpg", ex / "hmbb_3_target.png"),
  ]
  res = seg.segment(few, queries[:2], ensemble="feature", batch_size=4)
  for q, r in zip(queries[:2], res):
    ref = _hf_raw(hm, few, q, feature_ensemble=True)
    np.testing.assert_allclose(r.raw, ref, atol=1e-4, rtol=0)
    # Labels: HF's post-processing of the same raw output (binary 0/255 prompts -> 0/255).
    hf_lab = (
      _hf_proc(SIZE)
      .post_process_semantic_segmentation(
        type(
          "O",
          (),
          {
            "pred_masks": torch.from_numpy(
              np.concatenate([np.zeros_like(r.raw), r.raw], 0).transpose(2, 0, 1)[None]
            )
          },
        )(),
        target_sizes=[r.labels.shape],
        num_labels=1,
      )[0]
      .numpy()
    )
    np.testing.assert_array_equal(r.labels, hf_lab * 255)


def _model_and_prompts(official=True):
  cfg = seggpt.get_config(
    "test", image_size=SIZE, patch=8, ensemble="official" if official else "hf"
  )
  model = seggpt.SegGPT(cfg, rngs=nnx.Rngs(2))
  rng = np.random.default_rng(0)
  imgs = rng.normal(size=(3, *SIZE, 3)).astype(np.float32)
  tgts = rng.normal(size=(3, *SIZE, 3)).astype(np.float32)
  q = rng.normal(size=(*SIZE, 3)).astype(np.float32)
  return model, imgs, tgts, q


def test_feature_ensemble():
  model, imgs, tgts, q = _model_and_prompts()
  one = P.predict_canvas(model, imgs[:1], tgts[:1], q, seg_type="instance")
  same = P.predict_canvas(
    model, np.repeat(imgs[:1], 3, 0), np.repeat(tgts[:1], 3, 0), q, seg_type="instance"
  )
  np.testing.assert_allclose(same, one, atol=1e-5, rtol=0)  # k copies == 1 prompt
  mixed = P.predict_canvas(model, imgs, tgts, q, seg_type="instance")
  assert np.abs(mixed - one).max() > 1e-3  # other prompts change it
  # Without the ensemble, entry 0 ignores the other prompts entirely.
  off = P.predict_canvas(model, imgs, tgts, q, seg_type="instance", feature_ensemble=False)
  np.testing.assert_allclose(off, one, atol=1e-5, rtol=0)
  # The query only comes in through its own canvas: batching queries changes nothing.
  qs = np.stack([q, -q])
  both = P.predict_canvas_batch(model, imgs, tgts, qs, seg_type="instance")
  np.testing.assert_allclose(both[0], mixed, atol=1e-5, rtol=0)
  np.testing.assert_allclose(
    both[1], P.predict_canvas(model, imgs, tgts, -q, seg_type="instance"), atol=1e-5, rtol=0
  )
  sem = P.predict_canvas(model, imgs[:1], tgts[:1], q, seg_type="semantic")
  assert np.abs(sem - one).max() > 1e-4  # the type token is used


def test_spatial_ensemble_tiles_prompts():
  colours = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0]], np.uint8)
  imgs = np.broadcast_to(colours[:, None, None], (4, 32, 32, 3)).copy()
  tgts = imgs[:, :, :, ::-1].copy()
  img, tgt = P.spatial_ensemble(imgs, tgts)
  assert img.shape == tgt.shape == (32, 32, 3) and img.dtype == np.uint8
  quads = [
    (slice(0, 16), slice(0, 16)),
    (slice(0, 16), slice(16, 32)),
    (slice(16, 32), slice(0, 16)),
    (slice(16, 32), slice(16, 32)),
  ]
  for k, (ys, xs) in enumerate(quads):
    np.testing.assert_array_equal(tgt[ys, xs], np.broadcast_to(colours[k, ::-1], (16, 16, 3)))
    inner = (slice(ys.start + 4, ys.stop - 4), slice(xs.start + 4, xs.stop - 4))
    np.testing.assert_array_equal(img[inner], np.broadcast_to(colours[k], (8, 8, 3)))
  # 3 prompts in a 2x2 grid: the last cell repeats prompt 0.
  _, t3 = P.spatial_ensemble(imgs[:3], tgts[:3])
  np.testing.assert_array_equal(t3[16:, 16:], np.broadcast_to(colours[0, ::-1], (16, 16, 3)))
  # Float (normalised) inputs give the same prompt up to uint8 rounding (PIL's uint8 bicubic
  # is fixed-point and clips overshoot): within 1.5 grey levels.
  rng = np.random.default_rng(0)
  photos = rng.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
  u_img, u_tgt = P.spatial_ensemble(photos, tgts)
  f_img, f_tgt = P.spatial_ensemble(canvas.normalize(photos), canvas.normalize(tgts))
  np.testing.assert_allclose(f_img, canvas.normalize(u_img), atol=1.5 / 255 / 0.224)
  np.testing.assert_allclose(f_tgt, canvas.normalize(u_tgt), atol=1e-5)
  with pytest.raises(ValueError, match="do not fit a 1x1 grid"):
    P.spatial_ensemble(imgs, tgts, n=1)


def test_segmenter_spatial_is_one_grid_prompt(tmp_path):
  model, _, _, _ = _model_and_prompts()
  seg = I.Segmenter(model)
  rng = np.random.default_rng(1)
  imgs = [rng.integers(0, 256, (40 + 8 * i, 40 + 8 * i, 3), dtype=np.uint8) for i in range(4)]
  masks = [(rng.random((40 + 8 * i, 40 + 8 * i)) > 0.5).astype(np.uint8) for i in range(4)]
  query = rng.integers(0, 256, (50, 70, 3), dtype=np.uint8)
  res = seg.segment(list(zip(imgs, masks)), [query], ensemble="spatial")[0]
  pi = np.stack([P.resize_image_uint8(a, SIZE) for a in imgs])
  pt = np.stack([P.resize_mask_uint8(r, SIZE) for r in P.encode_masks(masks)[0]])
  gi, gt = P.spatial_ensemble(pi, pt)
  want = P.predict_canvas(
    model,
    canvas.normalize(gi)[None],
    canvas.normalize(gt)[None],
    P.prepare_image(query, SIZE),
    seg_type="instance",
  )
  np.testing.assert_allclose(res.raw, want, atol=1e-5, rtol=0)
  feat = seg.segment(list(zip(imgs, masks)), [query], ensemble="feature")[0]
  assert np.abs(feat.raw - res.raw).max() > 1e-3
  assert res.labels.shape == (50, 70) and set(np.unique(res.labels)) <= {0, 1}
