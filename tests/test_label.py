"""`incontext label`: COCO RLE / YOLO polygons decode back to the masks, resumable runs (kill
and rerun = one clean run), unreadable images reported, two processes = one process."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
from flax import nnx
from PIL import Image

mask_util = pytest.importorskip("pycocotools.mask", reason="pycocotools (label extra) missing")

from incontext import checkpoint, cli, labelling  # noqa: E402
from incontext.data import procedural  # noqa: E402
from incontext.models import seggpt  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZE = (32, 32)
N_IMAGES = 10


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
  model = seggpt.SegGPT(seggpt.get_config("test", image_size=SIZE, patch=8), rngs=nnx.Rngs(7))
  d = tmp_path_factory.mktemp("ckpt") / "params"
  checkpoint.save_model(str(d), model)
  return str(d)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
  """Procedural images (48 x 40, two objects each) and a two-class prompt label map."""
  d = tmp_path_factory.mktemp("data")
  cfg = procedural.resolve_config(dict(image_size=48))
  rng = np.random.default_rng(0)
  img, lab = procedural.render([3, 10], rng, cfg)
  Image.fromarray(img).save(d / "shape_01.png")
  Image.fromarray((lab * 40).astype(np.uint8)).save(d / "shape_01_mask.png")  # labels 40, 80
  imgs = d / "images"
  imgs.mkdir()
  for i in range(N_IMAGES):
    im, _ = procedural.render([3, 10], rng, cfg)
    Image.fromarray(im[:, 4:44]).save(imgs / f"img_{i:03d}.jpg", quality=95)
  return d


def _argv(ckpt, data, out, *extra):
  return [
    "label",
    "--checkpoint",
    ckpt,
    "--prompt",
    str(data / "shape_01.png"),
    str(data / "shape_01_mask.png"),
    "--images",
    str(data / "images"),
    "--out",
    str(out),
    "--no-progress",
    *extra,
  ]


def _files(folder):
  out = {}
  for dp, _, fs in os.walk(folder):
    for f in fs:
      p = os.path.join(dp, f)
      with open(p, "rb") as fh:
        out[os.path.relpath(p, folder)] = fh.read()
  return out


def _check_coco_matches_masks(out, instance):
  with open(out / "annotations.json") as f:
    coco = json.load(f)
  assert coco["images"]
  n_fg = 0
  for im in coco["images"]:
    stem = os.path.splitext(im["file_name"])[0]
    mask = np.asarray(Image.open(out / "masks" / f"{stem}.png"))
    assert mask.shape == (im["height"], im["width"])
    rebuilt = np.zeros_like(mask)
    for a in [a for a in coco["annotations"] if a["image_id"] == im["id"]]:
      rle = dict(a["segmentation"], counts=a["segmentation"]["counts"].encode())
      m = mask_util.decode(rle).astype(bool)
      assert m.any() and not rebuilt[m].any()  # disjoint, non-empty
      assert a["area"] == m.sum()
      ys, xs = np.nonzero(m)
      assert a["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
      if instance:
        assert len(labelling.components(m)) == 1
      rebuilt[m] = a["category_id"]
    np.testing.assert_array_equal(rebuilt, mask)  # exactly the PNG
    n_fg += int(mask.any())
  return coco, n_fg


def test_annotations_decode_to_the_mask():
  """Synthetic label map: holes, diagonal touches, several objects of two classes."""
  m = np.zeros((20, 24), np.uint8)
  m[2:9, 2:9] = 1
  m[4:6, 4:6] = 0  # a hole
  m[9, 9] = 1  # diagonal neighbour: same 8-connected object
  m[12:18, 3:6] = 1  # a second object of class 1
  m[1:6, 15:22] = 2
  m[14:19, 12:20] = 2
  for instance, n in ((True, 4), (False, 2)):
    anns = labelling.mask_annotations(m, instance=instance)
    assert len(anns) == n
    rebuilt = np.zeros_like(m)
    for a in anns:
      rle = dict(a["segmentation"], counts=a["segmentation"]["counts"].encode())
      d = mask_util.decode(rle).astype(bool)
      assert not rebuilt[d].any()
      rebuilt[d] = a["category_id"]
    np.testing.assert_array_equal(rebuilt, m)
  lines = labelling.yolo_lines(m)
  assert [l.split()[0] for l in lines] == ["0", "0", "1", "1"]
  # Polygon areas (pixel-edge outlines) are the objects' pixel counts with holes filled.
  for line, (c, area) in zip(lines, [(1, 49 + 1), (1, 18), (2, 35), (2, 40)]):
    xy = np.array(line.split()[1:], np.float64).reshape(-1, 2) * [24, 20]
    x, y = xy[:, 0], xy[:, 1]
    assert abs(0.5 * abs(np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y)) - area) < 1e-3


def test_label_outputs_errors_and_rerun(ckpt, data, tmp_path, capsys):
  images = data / "images"
  bad = tmp_path / "images"
  bad.mkdir()
  for f in os.listdir(images):
    os.link(images / f, bad / f)
  (bad / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
  out = tmp_path / "out"
  argv = _argv(ckpt, data, out)
  argv[argv.index("--images") + 1] = str(bad)
  rc = cli.main(argv)
  cap = capsys.readouterr()
  assert rc == 1
  assert "1 image(s) could not be read" in cap.err and "errors.txt" in cap.err
  errs = (out / "errors.txt").read_text().splitlines()
  assert len(errs) == 1 and errs[0].startswith(str(bad / "broken.jpg") + "\t")
  assert sorted(os.listdir(out / "masks")) == [f"img_{i:03d}.png" for i in range(N_IMAGES)]
  assert sorted(os.listdir(out / "labels")) == [f"img_{i:03d}.txt" for i in range(N_IMAGES)]
  im = Image.open(out / "masks" / "img_000.png")
  assert im.mode == "P" and im.size == (40, 48)
  coco, n_fg = _check_coco_matches_masks(out, instance=True)
  assert n_fg >= N_IMAGES // 2  # the check is not vacuous
  assert [c["name"] for c in coco["categories"]] == ["shape_40", "shape_80"]
  assert {im["file_name"] for im in coco["images"]} == {f"img_{i:03d}.jpg" for i in range(N_IMAGES)}
  for im in coco["images"]:  # YOLO: one polygon per COCO instance, normalised coords
    stem = os.path.splitext(im["file_name"])[0]
    lines = (out / "labels" / f"{stem}.txt").read_text().splitlines()
    assert len(lines) == len([a for a in coco["annotations"] if a["image_id"] == im["id"]])
    for l in lines:
      v = np.array(l.split()[1:], float)
      assert l.split()[0] in ("0", "1") and len(v) >= 6 and v.min() >= 0 and v.max() <= 1
  before = _files(out)
  # Rerun: nothing is relabelled (the broken image is retried and still fails).
  assert cli.main(argv) == 1
  assert "labelled 0 images" in capsys.readouterr().out
  assert _files(out) == before
  # Other settings on the same folder: refused.
  rc = cli.main(argv + ["--seg-type", "semantic"])
  assert (
    rc == 2 and "was labelled with other settings (differ: seg_type)" in capsys.readouterr().err
  )


def test_label_warns_like_segment(data, tmp_path, monkeypatch, caplog):
  """A procedural-only model gets segment's one-line warning; empty predictions get one line
  (count and first names) and OUT/empty.txt lists them all. Relative paths throughout."""
  import logging

  from incontext import canvas

  monkeypatch.chdir(tmp_path)
  os.symlink(data, "d")
  model = seggpt.SegGPT(seggpt.get_config("test", image_size=SIZE, patch=8), rngs=nnx.Rngs(7))
  checkpoint.save_model("proc", model, trained_on={"data": "procedural", "steps": 7})
  forced = {1, 4, 6, 8}  # these images' predictions are painted black (background)
  calls = []
  forward = labelling.Labeller._forward

  def fake(self, qs):
    raw = np.array(forward(self, qs))
    for j in range(len(raw)):  # row j of call k is image k * batch + j (padding at the end)
      if len(calls) * len(raw) + j in forced:
        raw[j] = canvas.normalize(np.zeros(3, np.uint8))
    calls.append(1)
    return raw

  monkeypatch.setattr(labelling.Labeller, "_forward", fake)
  argv = ["label", "--checkpoint", "proc", "--prompt", "d/shape_01.png", "d/shape_01_mask.png"]
  argv += ["--images", "d/images", "--out", "out", "--no-progress"]
  with caplog.at_level(logging.WARNING, logger="incontext"):
    assert cli.main(argv) == 0
  msgs = [r.getMessage() for r in caplog.records]
  proc = [m for m in msgs if "procedural shapes only (7 steps)" in m]
  assert len(proc) == 1 and proc[0].startswith("proc: "), msgs
  empty = sorted(
    f"img_{i:03d}.jpg"
    for i in range(N_IMAGES)
    if not np.asarray(Image.open(f"out/masks/img_{i:03d}.png")).any()
  )
  assert {f"img_{i:03d}.jpg" for i in forced} <= set(empty)
  assert (tmp_path / "out" / "empty.txt").read_text().splitlines() == empty
  line = [m for m in msgs if "empty prediction" in m]
  more = f" and {len(empty) - 3} more" if len(empty) > 3 else ""
  assert line == [
    f"{len(empty)} of {N_IMAGES} images: empty prediction (every pixel is background) "
    f"({', '.join(empty[:3])}{more}); all listed in out/empty.txt"
  ]


def _worker(ckpt, data, out, *extra, devices=1):
  env = dict(
    os.environ,
    XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
    JAX_PLATFORMS="cpu",
    PYTHONPATH=ROOT,
  )
  code = (
    "import sys, jax; jax.config.update('jax_default_matmul_precision', 'highest'); "
    "from incontext import cli; sys.exit(cli.main(sys.argv[1:]))"
  )
  return subprocess.Popen(
    [sys.executable, "-c", code, *_argv(ckpt, data, out, *extra)],
    cwd=ROOT,
    env=env,
    stdout=subprocess.PIPE,
    stderr=subprocess.STDOUT,
    text=True,
  )


@pytest.mark.integration
def test_kill_and_rerun_equals_one_clean_run(ckpt, data, tmp_path, capsys):
  """SIGKILL as soon as the first mask lands; the rerun completes: the same files."""
  clean = tmp_path / "clean"
  assert cli.main(_argv(ckpt, data, clean)) == 0, capsys.readouterr().err
  out = tmp_path / "out"
  p = _worker(ckpt, data, out)
  try:
    deadline = time.time() + 300
    while time.time() < deadline and p.poll() is None:
      if (out / "masks").is_dir() and [
        f for f in os.listdir(out / "masks") if f.endswith(".png") and not f.startswith(".")
      ]:
        p.send_signal(signal.SIGKILL)
        break
      time.sleep(0.02)
    p.communicate(timeout=60)
  finally:
    if p.poll() is None:
      p.kill()
  assert p.returncode == -signal.SIGKILL
  done = [f for f in os.listdir(out / "masks") if not f.startswith(".")]
  assert 1 <= len(done) < N_IMAGES and not (out / "annotations.json").exists()
  rc = cli.main(_argv(ckpt, data, out))
  assert rc == 0
  assert f"{len(done)} already done" in capsys.readouterr().out
  assert _files(out) == _files(clean)


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@pytest.mark.slow  # two fresh processes importing jax and compiling: ~1 min on 2 busy cores
def test_two_processes_equal_one(ckpt, data, tmp_path, capsys):
  one = tmp_path / "one"
  assert cli.main(_argv(ckpt, data, one, "--seg-type", "semantic")) == 0
  two = tmp_path / "two"
  port = _free_port()
  procs = [
    _worker(
      ckpt,
      data,
      two,
      "--seg-type",
      "semantic",
      "--coordinator",
      f"127.0.0.1:{port}",
      "--num-processes",
      "2",
      "--process-id",
      str(i),
      devices=4,
    )
    for i in range(2)
  ]
  outs = []
  for p in procs:
    try:
      outs.append(p.communicate(timeout=600)[0])
    except subprocess.TimeoutExpired:
      for q in procs:
        q.kill()
      raise
  for p, o in zip(procs, outs):
    assert p.returncode == 0, o[-3000:]
  assert "process 1 of 2" in outs[1]
  assert _files(two) == _files(one)
  _check_coco_matches_masks(two, instance=False)


# -- the output rules (the folder may hold the user's files) --------------------------------------
def _snapshot(folder):
  return {k: v for k, v in _files(folder).items()}


def test_a_folder_with_the_users_files_is_refused_and_never_touched(ckpt, data, tmp_path, capsys):
  out = tmp_path / "out"
  out.mkdir()
  (out / "notes.txt").write_text("mine")
  (out / ".tmp_draft").write_text("my temp file")
  (out / ".tmp_123_notes.txt").write_text("looks like a temporary, is not label's")
  before = _snapshot(out)
  rc = cli.main(_argv(ckpt, data, out))
  err = capsys.readouterr().err.strip().splitlines()
  assert rc == 2 and len(err) == 1, err
  assert "holds 3 file(s) that `label` did not write there" in err[0] and "--overwrite" in err[0]
  assert _snapshot(out) == before
  # --overwrite: labels into it, the user's files untouched.
  assert cli.main(_argv(ckpt, data, out, "--overwrite")) == 0, capsys.readouterr().err
  after = _snapshot(out)
  assert {k: after[k] for k in before} == before
  assert len(os.listdir(out / "masks")) == N_IMAGES
  m = json.loads((out / ".incontext-outputs.json").read_text())
  stems = [f"img_{i:03d}" for i in range(N_IMAGES)]
  assert m["files"] == sorted(
    ["annotations.json", "label.json", "labels", "masks"]
    + [f"masks/{s}.png" for s in stems]
    + [f"labels/{s}.txt" for s in stems]
  )
  assert not [f for f in m["files"] if f in before]
  # A rerun needs --overwrite again (the folder still holds the user's files), then resumes.
  assert cli.main(_argv(ckpt, data, out)) == 2
  assert "did not write there" in capsys.readouterr().err
  assert cli.main(_argv(ckpt, data, out, "--overwrite")) == 0
  assert "labelled 0 images" in capsys.readouterr().out
  assert _snapshot(out) == after


@pytest.mark.parametrize(
  "user_file",
  ["annotations.json", "errors.txt", "label.json", "labels/img_003.txt", "masks/img_000.png"],
)
def test_an_output_name_taken_by_a_users_file_is_refused_even_with_overwrite(
  ckpt, data, tmp_path, capsys, user_file
):
  out = tmp_path / "out"
  (out / os.path.dirname(user_file)).mkdir(parents=True, exist_ok=True)
  (out / user_file).write_bytes(b"the user's own")
  before = _snapshot(out)
  for extra in ((), ("--overwrite",)):
    rc = cli.main(_argv(ckpt, data, out, *extra))
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1, err
    taken = user_file.split("/")[0] if extra else ""
    assert (f"{taken}: exists and was not written by `label`" if extra else "did not write") in (
      err[0]
    ), err
    assert _snapshot(out) == before
  assert sorted(os.listdir(out)) == [user_file.split("/")[0]]  # no lock, manifest or masks left


def test_the_dataset_folder_as_out_does_not_count_its_masks_as_done(ckpt, data, tmp_path, capsys):
  """--out equal to a folder with images/ and ground-truth masks/: refused, masks untouched."""
  ds = tmp_path / "ds"
  (ds / "images").mkdir(parents=True)
  (ds / "masks").mkdir()
  for i in range(N_IMAGES):
    os.link(data / "images" / f"img_{i:03d}.jpg", ds / "images" / f"img_{i:03d}.jpg")
  for i in range(3):
    Image.fromarray(np.full((48, 40), i + 1, np.uint8)).save(ds / "masks" / f"img_{i:03d}.png")
  before = _snapshot(ds)
  argv = _argv(ckpt, data, ds)
  argv[argv.index("--images") + 1] = str(ds / "images")
  assert cli.main(argv) == 2
  assert "did not write there" in capsys.readouterr().err
  assert cli.main(argv + ["--overwrite"]) == 2
  err = capsys.readouterr().err
  assert "ds/masks: exists and was not written by `label`" in err, err
  assert _snapshot(ds) == before and sorted(os.listdir(ds)) == ["images", "masks"]


def test_an_unreadable_state_file_is_an_error(ckpt, data, tmp_path, capsys):
  out = tmp_path / "out"
  assert cli.main(_argv(ckpt, data, out)) == 0
  capsys.readouterr()
  good = _snapshot(out)
  cases = {
    "label.json": [b"{", b"[]", b"\xff\xfe"],
    ".incontext-outputs.json": [b"{", b'{"kind": "x"}', b"null"],
  }
  for name, contents in cases.items():
    for c in contents:
      (out / name).write_bytes(c)
      rc = cli.main(_argv(ckpt, data, out))
      err = capsys.readouterr().err.strip().splitlines()
      assert rc == 2 and len(err) == 1 and f"{name}: unreadable" in err[0], (name, c, err)
      # nothing else changed (no lock, journal or temporary left behind)
      assert {k: v for k, v in _snapshot(out).items() if k != name} == {
        k: v for k, v in good.items() if k != name
      }
      (out / name).write_bytes(good[name])
  assert cli.main(_argv(ckpt, data, out)) == 0
  assert _snapshot(out) == good


def test_a_failed_start_removes_only_the_empty_folders_it_made(ckpt, data, tmp_path, capsys):
  out = tmp_path / "a" / "b" / "out"
  argv = _argv(ckpt, data, out)
  argv[argv.index("--checkpoint") + 1] = str(tmp_path / "no_such_checkpoint")
  assert cli.main(argv) == 2
  assert "no_such_checkpoint" in capsys.readouterr().err
  assert os.listdir(tmp_path) == []


@pytest.mark.slow  # two fresh processes importing jax and compiling
def test_two_runs_at_once_end_as_one_clean_run(ckpt, data, tmp_path, capsys):
  clean = tmp_path / "clean"
  assert cli.main(_argv(ckpt, data, clean)) == 0
  out = tmp_path / "out"
  procs = [_worker(ckpt, data, out) for _ in range(2)]
  res = [(p.wait(timeout=600), p.stdout.read()) for p in procs]
  for rc, o in res:
    assert rc == 0 or (rc == 2 and "another incontext run" in o), o[-2000:]
  assert any(rc == 0 for rc, _ in res)
  if any(rc == 2 for rc, _ in res):  # refused: a rerun resumes
    assert cli.main(_argv(ckpt, data, out)) == 0
  assert _files(out) == _files(clean)


def test_a_journal_line_cut_by_a_kill_does_not_swallow_the_next_record(tmp_path):
  out = tmp_path / "out"
  names = labelling.output_names(["a", "b"])
  f = labelling.LabelFolder(str(out))
  f.open(names)
  f.prepare({"k": 1})
  f.start()
  labelling.write_text_atomic(str(out / "masks" / "a.png"), "A", f.record)
  f.close()  # killed: no finish; the journal's last line is cut
  with open(out / f"{labelling.JOURNAL_PREFIX}0", "ab") as j:
    j.write(b"masks/b.p")
  f.abort()
  g = labelling.LabelFolder(str(out))
  g.open(names)
  g.prepare({"k": 1})
  g.start()
  labelling.write_text_atomic(str(out / "labels" / "b.txt"), "B", g.record)
  g.finish()
  m = json.loads((out / ".incontext-outputs.json").read_text())
  assert m["files"] == ["label.json", "labels", "labels/b.txt", "masks", "masks/a.png"]
  assert sorted(os.listdir(out)) == [".incontext-outputs.json", "label.json", "labels", "masks"]
