"""Inputs that collide with outputs, special files, masks valid elsewhere, experiment flags.

Each case runs the real command line and asserts a one-line error (exit status 2) with nothing
written and every input file unchanged, or the documented result. `FAULTS` counts the cases
tried and the ones handled cleanly (printed at the end of the session with -s / -rA), as in
tests/test_faults.py. Cases that could hang (a FIFO) run the command in a subprocess with a
timeout, so a regression fails instead of blocking the suite.
"""

import hashlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from incontext import checkpoint, cli, imageio, outputs
from incontext.models import seggpt
from _shared import FaultTally

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZE = (32, 32)


FAULTS = FaultTally("input fault cases")


@pytest.fixture(scope="module", autouse=True)
def _report():
  yield
  FAULTS.report()


@pytest.fixture(scope="module")
def params_dir(tmp_path_factory):
  d = tmp_path_factory.mktemp("model") / "params"
  model = seggpt.create("test", image_size=SIZE, patch=8, drop_path=0.0, seed=3)
  checkpoint.save_model(str(d), model)
  return str(d)


def _img(path, seed=0, hw=(24, 24)):
  rng = np.random.default_rng(seed)
  Image.fromarray(rng.integers(0, 255, hw + (3,)).astype(np.uint8)).save(path)
  return str(path)


def _mask(path, hw=(24, 24), fg=255):
  m = np.zeros(hw, np.uint8)
  m[4:12, 4:12] = fg
  Image.fromarray(m).save(path)
  return str(path)


def _snapshot(*dirs):
  """{path: sha256} of every file under dirs (what must survive a refused run)."""
  out = {}
  for d in dirs:
    for r, _, fs in os.walk(d):
      for f in fs:
        p = os.path.join(r, f)
        if os.path.isfile(p):
          out[p] = hashlib.sha256(open(p, "rb").read()).hexdigest()
  return out


def _err(capsys) -> list[str]:
  return [l for l in capsys.readouterr().err.strip().splitlines() if l]


def _refused(argv, capsys, *, match, keep):
  """Runs argv; True when it exits 2 with one line containing `match` and `keep` unchanged."""
  before = _snapshot(*keep)
  rc = cli.main([str(a) for a in argv])
  err = _err(capsys)
  assert rc == 2 and len(err) == 1 and match in err[0], (rc, err)
  after = _snapshot(*keep)
  assert after == before, sorted(set(after.items()) ^ set(before.items()))
  ok = True
  return ok


# -- 4. outputs collide with inputs or with each other --------------------------------------------
def test_segment_output_names_never_collide(params_dir, tmp_path, capsys):
  """x.jpg + x_overlay.jpg, a/x.jpg + b/x.png, a query named labels: refused before any work."""
  p, m = _img(tmp_path / "p.png"), _mask(tmp_path / "pm.png")
  (tmp_path / "a").mkdir()
  (tmp_path / "b").mkdir()
  x = _img(tmp_path / "x.jpg", 1)
  xo = _img(tmp_path / "x_overlay.jpg", 2)
  ax, bx = _img(tmp_path / "a" / "x.jpg", 3), _img(tmp_path / "b" / "x.png", 4)
  y, yraw = _img(tmp_path / "y.png", 5), _img(tmp_path / "y.raw.png", 6)
  out = tmp_path / "out"
  base = ["segment", "--checkpoint", params_dir, "--prompt", p, m, "--out", out]
  cases = [
    ([x, xo], "'x_overlay.png'"),
    ([xo, x], "'x_overlay.png'"),
    ([ax, bx], "'x.png'"),
    ([str(tmp_path / "a"), str(tmp_path / "b")], "'x.png'"),
  ]
  n = 0
  for queries, match in cases:
    n += _refused(base + ["--query", *queries], capsys, match=match, keep=[tmp_path])
    assert not out.exists()
  # y.png and y.raw.png (with --raw: y.raw.npy vs y.raw.raw.npy) do not collide: both written.
  assert cli.main([str(a) for a in base + ["--query", y, yraw, "--raw"]]) == 0
  capsys.readouterr()
  assert {"y.png", "y.raw.npy", "y.raw.png", "y.raw.raw.npy"} <= set(os.listdir(out))
  FAULTS.add("segment: outputs of two queries share a name", len(cases) + 1, n + 1)


def test_segment_inputs_are_never_outputs(params_dir, tmp_path, capsys):
  """A query, prompt image or prompt mask inside OUT whose name an output takes (or that an
  earlier run recorded, which --overwrite replaces) is refused; nothing is written."""
  p, m = _img(tmp_path / "p.png"), _mask(tmp_path / "pm.png")
  out = tmp_path / "out"
  out.mkdir()
  base = ["segment", "--checkpoint", params_dir, "--out", out, "--overwrite"]
  n = tried = 0
  # 1. --query OUT/q.jpg writes OUT/q.png: fine (no collision). A prompt mask OUT/q.png is taken.
  q = _img(out / "q.jpg", 1)
  qmask = _mask(out / "q.png")
  tried += 1
  n += _refused(
    base + ["--prompt", p, qmask, "--query", q], capsys, match="also one of its outputs", keep=[out]
  )
  os.remove(qmask)
  # 2. an earlier run's outputs: OUT/ as the query folder would read q_overlay.png as a query
  assert cli.main([str(a) for a in base + ["--prompt", p, m, "--query", q]]) == 0
  capsys.readouterr()
  assert {"q.png", "q_overlay.png"} <= set(os.listdir(out))
  tried += 2
  n += _refused(
    base + ["--prompt", p, m, "--query", out], capsys, match="also one of its", keep=[tmp_path]
  )
  # 3. an earlier output given as a prompt image (recorded: --overwrite would remove it)
  n += _refused(
    base + ["--prompt", out / "q_overlay.png", m, "--query", p],
    capsys,
    match="also one of its outputs",
    keep=[tmp_path],
  )
  FAULTS.add("segment: an input is also an output", tried, n)


def _frames(d, n=3, ext="jpg"):
  d.mkdir(exist_ok=True)
  return [_img(d / f"{i:05d}.{ext}", i) for i in range(n)]


def test_segment_video_first_mask_beside_the_frames(params_dir, tmp_path, capsys):
  """--first-mask F/00000.png beside F/*.jpg: not a frame, not overwritten; F as --out: its
  frames and mask are never replaced; two frames with one stem are refused."""
  f = tmp_path / "F"
  _frames(f)
  mask = _mask(f / "00000.png", fg=1)
  out = tmp_path / "out"
  sv = ["segment-video", "--checkpoint", params_dir, "--frames", f, "--memory", "1", "--no-gif"]
  rc = cli.main([str(a) for a in sv + ["--first-mask", mask, "--out", out]])
  assert rc == 0, capsys.readouterr().err
  assert "wrote 3 DAVIS-format masks" in capsys.readouterr().out  # the mask is no frame
  assert sorted(os.listdir(out)) == [outputs.MANIFEST, "00000.png", "00001.png", "00002.png"]
  n = 1
  # OUT = F: 00000.png is the mask (an input): refused, F unchanged.
  n += _refused(
    sv + ["--first-mask", mask, "--out", f, "--overwrite"],
    capsys,
    match="also one of its outputs",
    keep=[f],
  )
  # PNG frames written into their own folder: refused (frame 00001.png is an output name).
  g = tmp_path / "G"
  _frames(g, ext="png")
  gm = _mask(tmp_path / "gm.png", fg=1)
  sv_g = ["segment-video", "--checkpoint", params_dir, "--frames", g, "--first-mask", gm]
  n += _refused(sv_g + ["--out", g, "--overwrite"], capsys, match="00000.png", keep=[g])
  # Two frames with one stem (00001.jpg and 00001.png) would share a mask name.
  _img(f / "00001.png", 9)
  n += _refused(
    sv + ["--first-mask", mask, "--out", tmp_path / "o2"], capsys, match="'00001'", keep=[f]
  )
  assert not (tmp_path / "o2").exists()
  FAULTS.add("segment-video: first mask beside frames, frames as outputs, one stem", 4, n)


@pytest.mark.skipif(sys.platform == "win32", reason="needs POSIX FIFOs")
def test_segment_video_mp4_first_mask_in_out(params_dir, tmp_path, capsys):
  """--video: a first mask OUT/00000.png would be replaced by frame 0's mask: refused."""
  pytest.importorskip("av")
  from incontext import videoio

  mp4 = tmp_path / "v.mp4"
  with videoio.VideoWriter(str(mp4), fps=5) as w:
    for i in range(2):
      w.write(np.full((24, 24, 3), 60 * i, np.uint8))
  out = tmp_path / "out"
  out.mkdir()
  mask = _mask(out / "00000.png", fg=1)
  argv = ["segment-video", "--checkpoint", params_dir, "--video", mp4, "--first-mask", mask]
  ok = _refused(
    argv + ["--out", out, "--overwrite"], capsys, match="also one of its outputs", keep=[out]
  )
  FAULTS.add("segment-video --video: first mask named like an output", 1, int(ok))


# -- 5. special files ----------------------------------------------------------------------------
def _cli_subprocess(argv, timeout=120):
  env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
  return subprocess.run(
    [sys.executable, "-m", "incontext.cli", *map(str, argv)],
    capture_output=True,
    text=True,
    timeout=timeout,  # a FIFO that is opened blocks forever: fail instead of hanging
    env=env,
    cwd=ROOT,
  )


@pytest.mark.integration
@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs POSIX FIFOs")
def test_fifos_are_skipped_in_folders_and_refused_when_named(params_dir, tmp_path):
  """A FIFO among the query images (folder or glob) is skipped; one named as --query,
  --prompt image or mask, --first-mask, --video or --learned-prompt is refused in one line."""
  p, m = _img(tmp_path / "p.png"), _mask(tmp_path / "pm.png")
  qdir = tmp_path / "q"
  qdir.mkdir()
  _img(qdir / "a.png", 1)
  fifo = qdir / "b.png"
  os.mkfifo(fifo)
  # In-process checks first (cheap): listing skips it, naming it is refused.
  assert imageio.list_images([qdir]) == [str(qdir / "a.png")]
  assert imageio.list_images([str(qdir / "*.png")]) == [str(qdir / "a.png")]
  from incontext import video

  assert imageio.list_images(str(qdir), what="") == [str(qdir / "a.png")]
  assert video.list_frames(str(qdir)) == [str(qdir / "a.png")]
  seg = ["segment", "--checkpoint", params_dir]
  frames = tmp_path / "F"
  _frames(frames, 2)
  cases = {
    "folder": (seg + ["--prompt", p, m, "--query", qdir, "--out", tmp_path / "o1"], 0),
    "glob": (seg + ["--prompt", p, m, "--query", f"{qdir}/*.png", "--out", tmp_path / "o2"], 0),
    "--query": (seg + ["--prompt", p, m, "--query", fifo, "--out", tmp_path / "o3"], 2),
    "--prompt image": (seg + ["--prompt", fifo, m, "--query", p, "--out", tmp_path / "o4"], 2),
    "--prompt mask": (seg + ["--prompt", p, fifo, "--query", p, "--out", tmp_path / "o5"], 2),
    "--learned-prompt": (
      seg + ["--learned-prompt", fifo, "--query", p, "--out", tmp_path / "o6"],
      2,
    ),
    "--first-mask": (
      ["segment-video", "--checkpoint", params_dir, "--frames", frames, "--first-mask", fifo]
      + ["--out", tmp_path / "o7"],
      2,
    ),
  }
  try:
    import av  # noqa: F401

    cases["--video"] = (
      ["segment-video", "--checkpoint", params_dir, "--video", fifo, "--first-mask", m]
      + ["--out", tmp_path / "o8"],
      2,
    )
  except ModuleNotFoundError:
    pass
  clean = 0
  for name, (argv, want) in cases.items():
    r = _cli_subprocess(argv)
    err = [l for l in r.stderr.splitlines() if l.strip()]
    if want == 0:
      assert r.returncode == 0, (name, r.stderr)
      assert r.stdout.strip().startswith("wrote 1 segmentations"), (name, r.stdout)
    else:
      assert r.returncode == 2 and len(err) == 1, (name, r.returncode, r.stderr)
      assert "not a regular file" in err[0] and str(fifo) in err[0], (name, err)
    clean += 1
  FAULTS.add("FIFO in a folder / glob / as an explicit input", len(cases), clean)


# -- 8. experiment entry points --------------------------------------------------------------------
@pytest.mark.integration
def test_experiment_entry_points_bad_settings_are_one_line_exit_2(params_dir, tmp_path):
  """A workdir that is a file, a misspelt config key (top level and nested), a wrong-typed
  override, an unknown flag, an unknown preset and an unknown data reader: one line
  `PROG: error: ...`, status 2, for train, tune and evaluate alike. (The first ten are refused
  before jax is imported or any file is written; the rest may make their workdir, nothing
  else.)"""
  afile = tmp_path / "afile"
  afile.write_text("user data")
  env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
  train = ["experiments.train", "--config", "seggpt_train:quickstart"]
  tune = ["experiments.tune", "--config", "prompt_tune:task=folder", "--config.init", params_dir]
  evaluate = ["experiments.evaluate", "--config", "seggpt_eval", "--config.init", params_dir]
  w = ["--workdir", str(tmp_path / "w")]
  w2 = ["--workdir", str(tmp_path / "w2")]
  cases = [
    (train + ["--workdir", str(afile)], f"workdir {afile}: exists and is not a folder"),
    (tune + ["--workdir", str(afile)], f"workdir {afile}: exists and is not a folder"),
    (evaluate + ["--workdir", str(afile)], f"{afile}"),
    (train + w + ["--config.total_stepz=5"], "--config.total_stepz: no such key 'total_stepz'"),
    (train + w + ["--config.optim.lrr=1"], 'did you mean "lr"'),
    (evaluate + w + ["--config.batchz=3"], "--config.batchz: no such key"),
    (train + w + ["--config.total_steps=abc"], "--config.total_steps=abc"),
    (tune + w + ["--config.steps=1.5"], "--config.steps"),
    (train + w + ["--nosuchflag=1"], "nosuchflag"),
    (["experiments.train", "--config", "seggpt_train:nosuchpreset"] + w, "nosuchpreset"),
    # settings the trainer checks (RunError): may make the workdir w2, nothing else
    (train + w2 + ["--config.input.type=bogus"], "config.input.type: unknown 'bogus'"),
    (train + w2 + ["--config.init.kind=bogus"], "config.init.kind: unknown 'bogus'"),
    (train + w2 + ["--config.input.patch_size=5"], "procedural data config: image_size 32 is"),
    (tune + w2 + ["--config.task.reader=bogus"], "unknown reader 'bogus'; known: ["),
  ]
  clean = 0
  for args, match in cases:
    r = subprocess.run(
      [sys.executable, "-m", *args],
      capture_output=True,
      text=True,
      timeout=300,
      env=env,
      cwd=tmp_path,
    )
    err = [l for l in r.stderr.splitlines() if l.strip()]
    prog = args[0].split(".")[-1]
    assert r.returncode == 2 and len(err) == 1, (args, r.returncode, r.stderr[-3000:])
    assert err[0].startswith(f"{prog}: error: ") and match in err[0], (args, err)
    assert "Traceback" not in r.stderr
    clean += 1
  assert afile.read_text() == "user data" and not (tmp_path / "w").exists()
  FAULTS.add("experiments: workdir is a file, misspelt / mistyped overrides", len(cases), clean)


# -- 7. mask values that are valid elsewhere -------------------------------------------------------
def _voc_mask(path, hw=(24, 24)):
  """A VOC-style palette mask: object 15 with a void (255) border, void stripe in the
  background, the VOC colour map."""
  from incontext import video

  m = np.zeros(hw, np.uint8)
  m[4:12, 4:12] = 255
  m[5:11, 5:11] = 15
  m[20, :] = 255
  im = Image.fromarray(m, mode="P")
  im.putpalette(video.davis_palette().reshape(-1).tolist())
  im.save(path)
  return str(path)


def _mask16(path, fg, hw=(24, 24)):
  m = np.zeros(hw, np.uint16)
  m[4:12, 4:12] = fg
  Image.fromarray(m).save(path)
  assert Image.open(path).mode.startswith("I;16")
  return str(path)


def test_mask_values_valid_elsewhere_one_reader(params_dir, tmp_path, capsys):
  """VOC void 255 beside labels is background; 0/65535 and 0/1 16-bit masks are binary; the
  same in `segment`, `segment-video`'s first mask, `label`'s prompts and the reader itself."""
  from incontext import labelling, predict, video

  voc = _voc_mask(tmp_path / "voc.png")
  b65535 = _mask16(tmp_path / "b65535.png", 65535)
  b1 = _mask16(tmp_path / "b1.png", 1)
  # The reader: void -> 0 (and kept with void=False); 16-bit two-valued -> 0/255, 0/1 kept.
  assert sorted(np.unique(imageio.load_mask(voc))) == [0, 15]
  assert sorted(np.unique(imageio.load_mask(voc, void=False))) == [0, 15, 255]
  assert sorted(np.unique(imageio.load_mask(b65535))) == [0, 255]
  assert sorted(np.unique(imageio.load_mask(b1))) == [0, 1]
  assert sorted(np.unique(video.read_id_mask(voc))) == [0, 15]
  assert sorted(np.unique(video.read_id_mask(b65535))) == [0, 255]
  # A 0/255 palette mask is binary (255 is its object, not void); labels > 255 among several
  # 16-bit values are still refused.
  pb = np.zeros((24, 24), np.uint8)
  pb[2:8, 2:8] = 255
  pim = Image.fromarray(pb, mode="P")
  pim.putpalette([v for i in range(256) for v in (i, i, i)])
  pim.save(tmp_path / "pal_binary.png")
  assert sorted(np.unique(imageio.load_mask(tmp_path / "pal_binary.png"))) == [0, 255]
  multi = np.zeros((24, 24), np.uint16)
  multi[2:8, 2:8], multi[10:14, 10:14] = 300, 7
  Image.fromarray(multi).save(tmp_path / "multi16.png")
  with pytest.raises(imageio.InputError, match="label 300 out of range"):
    predict.encode_masks([imageio.load_mask(tmp_path / "multi16.png")], ["multi16.png"])
  # label's own masks (read back with void=False): category 255 beside others is a category.
  own = tmp_path / "own" / "own.png"
  own.parent.mkdir()
  labelling.save_mask(str(own), np.asarray([[0, 1], [2, 255]], np.int32))
  assert sorted(np.unique(imageio.load_mask(str(own), void=False))) == [0, 1, 2, 255]
  coco = labelling.build_coco([("own.jpg", "own")], str(own.parent), ["c"] * 255, instance=False)
  assert sorted(a["category_id"] for a in coco["annotations"]) == [1, 2, 255]
  n = 7
  p = _img(tmp_path / "p.png")
  q = _img(tmp_path / "q.png", 1)
  seg = ["segment", "--checkpoint", params_dir, "--query", q]
  for mask, ids in ((voc, [15]), (b65535, [255]), (b1, [1])):
    out = tmp_path / f"seg_{os.path.basename(mask)}"
    rc = cli.main(seg + ["--prompt", p, mask, "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    legend = json.loads((out / "labels.json").read_text())
    assert [r["id"] for r in legend["labels"]] == ids, legend
    assert set(np.unique(np.asarray(Image.open(out / "q.png")))) <= {0, *ids}
    n += 1
  frames = tmp_path / "F"
  _frames(frames, 2)
  for mask, ids in ((voc, [15]), (b65535, [255])):
    out = tmp_path / f"sv_{os.path.basename(mask)}"
    argv = ["segment-video", "--checkpoint", params_dir, "--frames", frames, "--first-mask", mask]
    rc = cli.main([str(a) for a in argv + ["--out", out, "--memory", "1", "--no-gif"]])
    assert rc == 0, capsys.readouterr().err
    first = np.asarray(Image.open(out / "00000.png"))
    assert sorted(np.unique(first)) == [0, *ids]
    n += 1
  capsys.readouterr()
  lab = tmp_path / "lab"
  imgs = tmp_path / "imgs"
  imgs.mkdir()
  _img(imgs / "a.png", 2)
  rc = cli.main(
    ["label", "--checkpoint", params_dir, "--prompt", p, b65535, "--images", str(imgs)]
    + ["--out", str(lab), "--no-progress"]
  )
  assert rc == 0, capsys.readouterr().err
  coco = json.loads((lab / "annotations.json").read_text())
  assert [c["id"] for c in coco["categories"]] == [1]
  n += 1
  FAULTS.add("VOC void 255, 16-bit 0/65535 and 0/1 masks, one reader", n, n)
