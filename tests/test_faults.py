"""Fault injection: corrupt files, killed runs, full disks, mount points, contradictory settings.

Every case asserts the run either recovers exactly or stops with a one-line error naming the
file or setting; nothing is used silently and no user file is lost. `FAULTS` counts the cases
tried and the ones handled cleanly (printed at the end of the session with -s / -rA).

Cases that need a tmpfs or a read-only bind mount run as root only (skipped with the reason
otherwise). The SIGKILL tests run the trainer in subprocesses.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from incontext import checkpoint, cli, outputs, prompts
from incontext.models import seggpt
from incontext.train import workdir as wd
from _shared import FaultTally

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZE = (32, 32)


# -- helpers --------------------------------------------------------------------------------------
def _one_line(msg: str) -> bool:
  return "\n" not in str(msg).strip()


def _files(d):
  return sorted(os.path.join(r, f) for r, _, fs in os.walk(d) for f in fs)


def _flip(path, offset, rng):
  with open(path, "r+b") as f:
    f.seek(offset)
    b = f.read(1)
    f.seek(offset)
    f.write(bytes([b[0] ^ (1 << int(rng.integers(8)))]))


def _truncate(path, frac):
  n = os.path.getsize(path)
  with open(path, "r+b") as f:
    f.truncate(int(n * frac))


def _can_mount() -> str | None:
  """None if tmpfs/bind mounts work here, else the reason."""
  if os.geteuid() != 0:
    return "needs root to mount a tmpfs"
  if shutil.which("mount") is None:
    return "no mount command"
  return None


class _Mounts:
  def __init__(self):
    self.points = []

  def tmpfs(self, path, size="256k"):
    os.makedirs(path, exist_ok=True)
    r = subprocess.run(
      ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
      capture_output=True,
      text=True,
    )
    if r.returncode:
      pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    self.points.append(str(path))

  def read_only(self, path):
    r = subprocess.run(["mount", "-o", "remount,ro", str(path)], capture_output=True, text=True)
    if r.returncode:
      pytest.skip(f"cannot remount read-only here: {r.stderr.strip()}")

  def close(self):
    for p in reversed(self.points):
      subprocess.run(["umount", "-l", p], capture_output=True)


@pytest.fixture
def mounts():
  reason = _can_mount()
  if reason:
    pytest.skip(reason)
  m = _Mounts()
  yield m
  m.close()


@pytest.fixture(scope="module")
def params_dir(tmp_path_factory):
  d = tmp_path_factory.mktemp("model") / "params"
  model = seggpt.create("test", image_size=SIZE, patch=8, drop_path=0.0, seed=3)
  checkpoint.save_model(str(d), model)
  return str(d)


# -- weights ---------------------------------------------------------------------------------------
def _corrupt_params_cases(params_dir, tmp_path):
  """(case name, corrupted copy) for a byte flip and a truncation of every params file."""
  rng = np.random.default_rng(0)
  files = [f for f in _files(params_dir) if not f.endswith(outputs.MANIFEST)]
  for i, f in enumerate(files):
    rel = os.path.relpath(f, params_dir)
    for kind in ("flip", "truncate"):
      dst = tmp_path / f"{kind}{i}"
      shutil.copytree(params_dir, dst)
      target = os.path.join(dst, rel)
      if os.path.getsize(target) == 0:
        continue
      if kind == "flip":
        _flip(target, int(rng.integers(os.path.getsize(target))), rng)
      else:
        _truncate(target, 0.5)
      yield f"params {kind} {rel}", str(dst)


@pytest.mark.parametrize("every", [8, pytest.param(1, marks=pytest.mark.slow)])
def test_corrupt_weights_are_refused_or_identical(params_dir, tmp_path, every):
  """Byte flips and truncations anywhere in a params folder: loading either fails with one line
  naming the folder, or (a flip in bytes that do not matter) gives the exact weights. The
  default run tries a quarter of the cases (flips and truncations), the slow run all of them."""
  want = checkpoint.read_meta(params_dir)["weights_hash"]
  n = clean = 0
  for k, (case, d) in enumerate(_corrupt_params_cases(params_dir, tmp_path)):
    if every > 1 and k % every not in (0, every - 1):  # cases alternate flip, truncate
      continue
    n += 1
    try:
      model = checkpoint.load_model(d)
    except ValueError as e:  # CheckpointError, or corrupt metadata
      assert d in str(e) and _one_line(e), (case, e)
      clean += 1
      continue
    assert checkpoint.params_hash(model) == want, case
    clean += 1
  assert n >= (24 if every == 1 else 6)
  FAULTS.add("params byte flips / truncations", n, clean)


def test_flipped_weight_values_fail_the_hash_and_verify_false_skips_it(params_dir, tmp_path):
  """A changed weight that still restores (the silent case) is caught by the hash check."""
  model = checkpoint.load_model(params_dir)
  bad = tmp_path / "bad"
  checkpoint.save_model(str(bad), model)
  meta = json.loads((bad / "incontext.json").read_text())
  # Same files, but the recorded hash is of other weights: as if the arrays had changed.
  meta["weights_hash"] = "0" * 64
  (bad / "incontext.json").write_text(json.dumps(meta))
  with pytest.raises(
    checkpoint.CheckpointError,
    match=rf"{bad}: weights do not match their "
    r"recorded sha256",
  ):
    checkpoint.load_model(str(bad))
  checkpoint.load_model(str(bad), verify=False)  # the flag skips the check
  # Non-finite weights are refused even with a matching hash.
  import jax.numpy as jnp

  model.decoder_head.kernel[...] = jnp.full_like(model.decoder_head.kernel[...], jnp.nan)
  nan = tmp_path / "nan"
  checkpoint.save_model(str(nan), model)
  with pytest.raises(
    checkpoint.CheckpointError,
    match=r"non-finite weights in 1 arrays, e.g. "
    r"decoder_head/kernel",
  ):
    checkpoint.load_model(str(nan))
  # CLI: one line, exit 2; --no-verify goes on.
  rc = cli.main(
    [
      "segment",
      "--checkpoint",
      str(bad),
      "--prompt",
      "x",
      "y",
      "--query",
      __file__,
      "--out",
      str(tmp_path / "o"),
    ]
  )
  assert rc == 2
  FAULTS.add("changed / non-finite weights", 2, 2)


# -- learned prompts ------------------------------------------------------------------------------
def _prompt_file(tmp_path):
  cfg = seggpt.get_config("test", image_size=SIZE, patch=8)
  rng = np.random.default_rng(1)
  lp = prompts.LearnedPrompt(
    image=rng.normal(size=SIZE + (3,)).astype(np.float32),
    target=rng.normal(size=SIZE + (3,)).astype(np.float32),
  )
  path = str(tmp_path / "p.npz")
  prompts.save(path, lp, model_cfg=cfg, weights_hash=None)
  return path, lp, cfg


def test_edited_or_corrupt_learned_prompts_are_refused(tmp_path):
  path, lp, cfg = _prompt_file(tmp_path)
  n = clean = 0
  # An edited array (valid file, metadata kept).
  with np.load(path) as z:
    arrays = {k: z[k] for k in z.files}
  arrays["image"] = arrays["image"].copy()
  arrays["image"][0, 0, 0] += 0.5
  edited = str(tmp_path / "edited.npz")
  np.savez(edited, **arrays)
  with pytest.raises(
    prompts.PromptError,
    match=r"edited.npz: the prompt arrays do not match "
    r"their recorded sha256",
  ):
    prompts.load(edited, model_cfg=cfg)
  n += 1
  clean += 1
  # Byte flips at seeded offsets and truncations: refused with one line, or read back exactly.
  data = open(path, "rb").read()
  rng = np.random.default_rng(2)
  for i, off in enumerate(rng.integers(0, len(data), 24).tolist() + [None] * 3):
    bad = str(tmp_path / f"bad{i}.npz")
    shutil.copy(path, bad)
    if off is None:
      _truncate(bad, [0.1, 0.5, 0.95][i - 24])
    else:
      _flip(bad, off, rng)
    n += 1
    try:
      got = prompts.load(bad, model_cfg=cfg)
    except prompts.PromptError as e:
      assert bad in str(e) and _one_line(e), e
      clean += 1
      continue
    np.testing.assert_array_equal(got.image, lp.image)
    np.testing.assert_array_equal(got.target, lp.target)
    clean += 1
  FAULTS.add("learned prompt edits / flips / truncations", n, clean)


# -- logs -----------------------------------------------------------------------------------------
def test_partial_or_corrupt_metrics_lines_are_dropped_with_a_warning(tmp_path, caplog):
  p = tmp_path / "metrics.jsonl"
  rows = [{"step": s, "loss": 1.0 / s} for s in range(1, 6)]
  good = "".join(json.dumps(r) + "\n" for r in rows)
  cases = {
    "partial last line": good + '{"step": 6, "lo',
    "corrupt middle line": good.replace('{"step": 3', '{"step": 3x', 1),
    "binary garbage": good + "\x00\x00\x00\n",
    "no step": good + '{"loss": 2}\n',
  }
  n = clean = 0
  for name, text in cases.items():
    p.write_text(text)
    caplog.clear()
    got = wd.MetricsLog(str(p)).load(upto=4)
    n += 1
    assert [r["step"] for r in got] == [
      s for s in (1, 2, 3, 4) if not (name == "corrupt middle line" and s == 3)
    ], name
    assert str(p) in caplog.text and "dropped" in caplog.text, name
    # The file is repaired: it now reads without warnings.
    caplog.clear()
    assert wd.MetricsLog(str(p)).load(upto=4) == got and not caplog.text
    clean += 1
  FAULTS.add("metrics.jsonl partial / corrupt lines", n, clean)


# -- tuning checkpoints ----------------------------------------------------------------------------
def _tune_config(params_dir, total=6):
  from experiments.configs import prompt_tune

  c = prompt_tune.get_config("task=kvasir")
  c.init = params_dir
  c.total_steps = total
  c.log_every = 1
  c.ckpt_every = 2
  c.keep_ckpts = 5
  c.tune.batch_size = 8
  c.tune.learn_target = False
  c.tune.init = "example"
  c.optim.lr = 0.05
  c.optim.warmup_steps = 0
  return c


def _examples(n=8, seed=0):
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


@pytest.fixture(scope="module")
def tuned(params_dir, tmp_path_factory):
  """A finished 6-step tuning run (checkpoints 2, 4, 6) and its losses."""
  from incontext.train import tuner

  w = str(tmp_path_factory.mktemp("tune") / "w")
  out = tuner.run_tune(_tune_config(params_dir), w, examples=_examples())
  return w, out["losses"]


# The tuning tests resume real tuner runs (the `tuned` fixture): integration tier.
@pytest.mark.integration
@pytest.mark.parametrize("fault", ["flip", "truncate", "empty_file"])
def test_corrupt_latest_tuning_checkpoint_falls_back(params_dir, tuned, tmp_path, caplog, fault):
  """The newest checkpoint is damaged: the run resumes from the one before, says so, keeps the
  bad one aside, and ends with the same losses as the undamaged run."""
  from incontext.train import tuner

  w0, losses = tuned
  w = str(tmp_path / "w")
  shutil.copytree(w0, w)
  os.remove(os.path.join(w, "prompt.npz"))
  ck6 = os.path.join(w, "checkpoints", "6")
  big = max(_files(ck6), key=os.path.getsize)  # the array data
  if fault == "flip":
    rng = np.random.default_rng(3)
    for off in rng.integers(0, os.path.getsize(big), 64):
      _flip(big, int(off), rng)
  elif fault == "truncate":
    _truncate(big, 0.3)
  else:
    for f in _files(ck6):
      open(f, "wb").close()
  # Lose the log lines of steps 5-6 as well, like a crash would.
  wd.MetricsLog(os.path.join(w, "metrics.jsonl")).load(upto=4)
  out = tuner.run_tune(_tune_config(params_dir), w, examples=_examples())
  assert "checkpoints/6 does not restore" in caplog.text and "resumed from step 4" in caplog.text
  assert os.path.isdir(os.path.join(w, "checkpoints", "corrupt-6"))
  np.testing.assert_array_equal(out["losses"], losses)  # bit-identical continuation
  FAULTS.add(f"tuning checkpoint {fault}", 1, 1)


@pytest.mark.integration
def test_tuning_settings_are_validated_before_compiling(params_dir, tuned, tmp_path):
  from incontext.train import tuner

  w0, _ = tuned
  w = str(tmp_path / "w")
  shutil.copytree(w0, w)
  other = tmp_path / "other"
  checkpoint.save_model(str(other), seggpt.create("test", image_size=SIZE, patch=8, seed=9))
  ro_file = tmp_path / "afile"
  ro_file.write_text("")
  cases = [
    (
      dict(total_steps=4),
      w,
      r"config.total_steps=4 is below the step of the checkpoint in "
      rf"{w}/checkpoints \(6\)",
    ),
    (dict(total_steps=-5), str(tmp_path / "n1"), r"config.total_steps=-5: must be > 0"),
    (dict(log_every=0), str(tmp_path / "n2"), r"config.log_every=0: must be > 0"),
    (
      dict(init=str(other)),
      w,
      rf"config.init={other} \(weights \w+\.\.\.\) is not the model "
      "this workdir was tuned with",
    ),
    (dict(typo=1), str(tmp_path / "n3"), r"config: unknown key \['typo'\]"),
    (
      dict(tune__lern_target=True),
      str(tmp_path / "n4"),
      r"config.tune: unknown key \['lern_target'\]",
    ),
    ({}, str(ro_file), rf"workdir {ro_file}: exists and is not a folder"),
  ]
  n = clean = 0
  for change, workdir, msg in cases:
    c = _tune_config(params_dir)
    with c.unlocked():
      for k, v in change.items():
        sect, _, key = k.rpartition("__")
        (c[sect] if sect else c)[key] = v
    n += 1
    with pytest.raises(ValueError, match=msg) as e:
      tuner.run_tune(c, workdir, examples=_examples())
    assert _one_line(e.value)
    clean += 1
  FAULTS.add("tuning settings (steps, init, keys, workdir)", n, clean)


def test_read_only_workdir(params_dir, tmp_path, mounts):
  from incontext.train import tuner

  mnt = tmp_path / "ro"
  mounts.tmpfs(mnt)
  mounts.read_only(mnt)
  with pytest.raises(wd.RunError, match=rf"workdir {mnt}/w: not writable"):
    tuner.run_tune(_tune_config(params_dir), str(mnt / "w"), examples=_examples())
  FAULTS.add("read-only workdir", 1, 1)


def test_pipeline_dataset_key_typo_is_an_error():
  from incontext.data import pipeline

  cfg = {"datasets": [dict(reader="camvid", root="/nonexistent", exclude_fol=0)]}
  with pytest.raises(ValueError, match=r"datasets\[0\] \(camvid\): unknown key \['exclude_fol'\]"):
    pipeline.resolve_config(cfg)
  FAULTS.add("per-dataset config key typo", 1, 1)


# -- outputs on mounts, full disks -----------------------------------------------------------------
def _segment_argv(params_dir, tmp_path, out, *extra):
  from PIL import Image

  rng = np.random.default_rng(0)
  img = tmp_path / "img.png"
  mask = tmp_path / "mask.png"
  Image.fromarray(rng.integers(0, 255, (24, 24, 3)).astype(np.uint8)).save(img)
  m = np.zeros((24, 24), np.uint8)
  m[4:12, 4:12] = 255
  Image.fromarray(m).save(mask)
  return [
    "segment",
    "--checkpoint",
    params_dir,
    "--prompt",
    str(img),
    str(mask),
    "--query",
    str(img),
    "--out",
    str(out),
    *extra,
  ]


def test_outputs_on_a_mount_point_with_a_read_only_parent(params_dir, tmp_path, mounts, capsys):
  """A mount point as --out (its parent read-only): works; --overwrite keeps unrelated files."""
  parent = tmp_path / "parent"
  mounts.tmpfs(parent, "1m")
  out = parent / "out"
  out.mkdir()
  mounts.tmpfs(out, "4m")
  (out / "photo.jpg").write_bytes(b"user data")
  mounts.read_only(parent)
  argv = _segment_argv(params_dir, tmp_path, out)
  rc = cli.main(argv)
  err = capsys.readouterr().err
  assert rc == 2 and "already exists and is not empty" in err  # refused, one line
  rc = cli.main(argv + ["--overwrite"])
  assert rc == 0, capsys.readouterr().err
  assert sorted(os.listdir(out)) == [
    outputs.MANIFEST,
    "img.png",
    "img_overlay.png",
    "labels.json",
    "photo.jpg",
  ]
  rc = cli.main(argv + ["--overwrite"])  # again: replaces its own
  assert rc == 0 and (out / "photo.jpg").read_bytes() == b"user data"
  FAULTS.add("outputs: mount point, read-only parent, unrelated files", 3, 3)


def test_full_disk_leaves_the_output_folder_as_it_was(params_dir, tmp_path, mounts, capsys):
  out = tmp_path / "small"
  mounts.tmpfs(out, "12k")
  (out / "keep.txt").write_bytes(b"k")
  argv = _segment_argv(params_dir, tmp_path, out, "--raw", "--overwrite")
  rc = cli.main(argv)
  err = [l for l in capsys.readouterr().err.splitlines() if "error:" in l]
  assert rc == 2 and len(err) == 1 and "No space left on device" in err[0], err
  assert sorted(os.listdir(out)) == ["keep.txt"]
  # A metrics log on a full disk: the append fails part-way, the next load repairs it.
  log = wd.MetricsLog(str(out / "metrics.jsonl"))
  with pytest.raises(OSError):
    for s in range(1, 100000):
      log.append({"step": s, "loss": 0.5, "pad": "x" * 200})
  rows = log.load(upto=10**9)  # on the still full disk: cut in place, no copy needed
  assert [r["step"] for r in rows] == list(range(1, len(rows) + 1)) and rows
  assert open(out / "metrics.jsonl", "rb").read().endswith(b"}\n")
  FAULTS.add("full disk: segment outputs, metrics append", 2, 2)


def _label_argv(params_dir, tmp_path, out, n=6):
  from PIL import Image

  rng = np.random.default_rng(1)
  src = tmp_path / "label_src"
  if not src.exists():
    (src / "images").mkdir(parents=True)
    for i in range(n):
      Image.fromarray(rng.integers(0, 255, (48, 40, 3)).astype(np.uint8)).save(
        src / "images" / f"im_{i}.png"
      )
    m = np.zeros((48, 40), np.uint8)
    m[8:30, 6:20] = 255
    Image.fromarray(m).save(src / "mask.png")
  img = src / "images" / "im_0.png"
  return ["label", "--checkpoint", params_dir, "--prompt", str(img), str(src / "mask.png")] + [
    "--images",
    str(src / "images"),
    "--out",
    str(out),
    "--no-progress",
  ]


def _tree(d):
  return {
    os.path.relpath(p, d): open(p, "rb").read()
    for p in (os.path.join(r, f) for r, _, fs in os.walk(d) for f in fs)
  }


def test_label_on_a_full_disk_names_the_file_and_resumes_to_a_clean_run(
  params_dir, tmp_path, mounts, capsys
):
  pytest.importorskip("pycocotools", reason="pycocotools (label extra) missing")
  clean = tmp_path / "clean"
  assert cli.main(_label_argv(params_dir, tmp_path, clean)) == 0, capsys.readouterr().err
  out = tmp_path / "small"
  mounts.tmpfs(out, "28k")  # a page per file: full after a few images
  rc = cli.main(_label_argv(params_dir, tmp_path, out))
  err = [l for l in capsys.readouterr().err.splitlines() if "error:" in l]
  assert rc == 2 and len(err) == 1 and "No space left on device" in err[0], err
  assert f"error: {out}/" in err[0], err  # names the file it was writing
  assert not [f for r, _, fs in os.walk(out) for f in fs if f.startswith(".tmp_")]
  r = subprocess.run(["mount", "-o", "remount,size=4m", str(out)], capture_output=True, text=True)
  if r.returncode:
    pytest.skip(f"cannot grow the tmpfs: {r.stderr.strip()}")
  assert cli.main(_label_argv(params_dir, tmp_path, out)) == 0
  assert _tree(out) == _tree(clean)
  FAULTS.add("full disk: label names the file, the rerun equals a clean run", 2, 2)


def test_tampered_manifests_and_user_files_are_never_touched(params_dir, tmp_path, capsys):
  """segment --overwrite with manifest entries outside OUT, `.`, links; label into a folder
  of the user's files, its dataset folder, a corrupt label.json."""
  outside = tmp_path / "victim.txt"
  outside.write_text("v")
  folder = tmp_path / "precious"
  folder.mkdir()
  (folder / "a.jpg").write_text("a")
  out = tmp_path / "out"
  argv = _segment_argv(params_dir, tmp_path, out)
  assert cli.main(argv) == 0
  entries = ["../victim.txt", str(outside), str(folder), ".", "", "a/../../victim.txt", 7, "lnk"]
  os.symlink(folder, out / "lnk")
  m = json.loads((out / outputs.MANIFEST).read_text())
  n = clean = 0
  for e in entries:
    n += 1
    (out / outputs.MANIFEST).write_text(json.dumps(dict(m, files=m["files"] + [e])))
    rc = cli.main(argv + ["--overwrite"])
    ok = rc == 0 and outside.read_text() == "v" and (folder / "a.jpg").read_text() == "a"
    clean += ok and os.path.islink(out / "lnk") and (out / "img.png").exists()
  capsys.readouterr()
  FAULTS.add("tampered output manifest (outside, absolute, ., empty, nested, link)", n, clean)
  assert clean == n
  pytest.importorskip("pycocotools", reason="pycocotools (label extra) missing")
  mine = tmp_path / "mine"
  mine.mkdir()
  (mine / "annotations.json").write_text("user's")
  (mine / "errors.txt").write_text("user's")
  (mine / ".tmp_x").write_text("user's")
  ds = tmp_path / "label_src"
  label_cases = {
    "user files": (_label_argv(params_dir, tmp_path, mine), mine),
    "user files, --overwrite": (_label_argv(params_dir, tmp_path, mine) + ["--overwrite"], mine),
  }
  from PIL import Image

  _label_argv(params_dir, tmp_path, ds)  # makes the images
  (ds / "masks").mkdir(exist_ok=True)
  Image.fromarray(np.ones((48, 40), np.uint8)).save(ds / "masks" / "im_1.png")
  label_cases["dataset folder as --out, --overwrite"] = (
    _label_argv(params_dir, tmp_path, ds) + ["--overwrite"],
    ds,
  )
  n = clean = 0
  for name, (args, d) in label_cases.items():
    n += 1
    before = _tree(d)
    rc = cli.main(args)
    err = capsys.readouterr().err.strip().splitlines()
    clean += rc == 2 and len(err) == 1 and _tree(d) == before
  good = tmp_path / "good"
  assert cli.main(_label_argv(params_dir, tmp_path, good)) == 0
  (good / "label.json").write_text("{")
  n += 1
  rc = cli.main(_label_argv(params_dir, tmp_path, good))
  err = capsys.readouterr().err.strip().splitlines()
  clean += rc == 2 and len(err) == 1 and "label.json: unreadable" in err[0]
  FAULTS.add("label: user files, dataset folder as OUT, corrupt label.json", n, clean)
  assert clean == n


def test_cli_output_conventions_are_the_same_everywhere(params_dir, tmp_path, capsys):
  """segment, segment-video, export-hf, convert: an existing output is refused with one line;
  --overwrite replaces only their own outputs."""
  out = tmp_path / "out"
  out.mkdir()
  (out / "mine.txt").write_text("m")
  frames = tmp_path / "frames"
  frames.mkdir()
  from PIL import Image

  rng = np.random.default_rng(0)
  for i in range(2):
    Image.fromarray(rng.integers(0, 255, (24, 24, 3)).astype(np.uint8)).save(
      frames / f"{i:05d}.jpg"
    )
  (frames / "._00000.jpg").write_bytes(b"\x00\x05\x16\x07")  # macOS resource fork
  (frames / ".DS_Store").write_bytes(b"\x00")
  m = np.zeros((24, 24), np.uint8)
  m[4:12, 4:12] = 1
  Image.fromarray(m).save(tmp_path / "first.png")
  commands = {
    "segment": _segment_argv(params_dir, tmp_path, out),
    "segment-video": [
      "segment-video",
      "--checkpoint",
      params_dir,
      "--frames",
      str(frames),
      "--first-mask",
      str(tmp_path / "first.png"),
      "--out",
      str(out),
      "--memory",
      "1",
    ],
    "export-hf": ["export-hf", "--checkpoint", params_dir, "--out", str(out)],
  }
  n = clean = 0
  for name, argv in commands.items():
    n += 1
    rc = cli.main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and "already exists and is not empty" in err[-1] and "--overwrite" in err[-1]
    rc = cli.main(argv + ["--overwrite"])
    assert rc == 0, capsys.readouterr().err
    assert (out / "mine.txt").read_text() == "m"
    assert json.loads((out / outputs.MANIFEST).read_text())["command"] == name
    clean += 1
  # segment-video wrote one mask per real frame (hidden files are not frames); each command's
  # --overwrite left the other commands' outputs alone.
  assert sorted(os.listdir(out)) == sorted(
    [
      outputs.MANIFEST,
      "mine.txt",
      "img.png",
      "img_overlay.png",
      "labels.json",
      "00000.png",
      "00001.png",
      "overlay.gif",
      "config.json",
      "model.safetensors",
      "preprocessor_config.json",
    ]
  )
  FAULTS.add("CLI --overwrite conventions + hidden frames", n, clean)


def test_huge_mask_is_rejected_from_its_header(tmp_path):
  """A 48-megapixel image passed as a mask fails before it is decoded."""
  from PIL import Image
  from incontext import imageio

  p = tmp_path / "photo.png"
  Image.new("L", (8000, 6000)).save(p, compress_level=1)
  with pytest.raises(
    imageio.InputError,
    match=r"photo.png: mask of 8000x6000 pixels \(48 "
    r"megapixels\) is larger than",
  ):
    imageio.load_mask(str(p))
  FAULTS.add("huge mask", 1, 1)


# -- trainer: SIGKILL at random moments, bit-identical resume -------------------------------------
TOTAL = 5


def _train_config(total=TOTAL):
  from experiments.configs import seggpt_train

  c = seggpt_train.get_config("quickstart,runlocal")
  c.total_steps = total
  c.model.drop_path = 0.1  # exercises the per-step RNG
  c.evals.every = 0
  c.evals.at_end = False
  c.ckpt.every = 1
  c.ckpt.keep = 2
  c.mesh = [("data", -1)]
  c.sharding_rules = "replicate"
  return c


# Every run is a separate process running exactly the configuration above on one CPU device
# (compiles much faster than the 8 fake devices of the test process).
_TRAIN = r"""
import sys
sys.path.insert(0, {root!r})
sys.path.insert(0, {tests!r})
import test_faults
from incontext.train import trainer
trainer.run(test_faults._train_config(), sys.argv[1])
print("DONE", flush=True)
"""


def _train_cmd():
  return [sys.executable, "-c", _TRAIN.format(root=ROOT, tests=os.path.join(ROOT, "tests"))]


def _env():
  return dict(
    os.environ,
    XLA_FLAGS="--xla_force_host_platform_device_count=1",
    TF_CPP_MIN_LOG_LEVEL="3",
    JAX_PLATFORMS="cpu",
  )


def _run_train(workdir, timeout=900):
  r = subprocess.run(
    _train_cmd() + [str(workdir)],
    env=_env(),
    capture_output=True,
    text=True,
    timeout=timeout,
    cwd=ROOT,
  )
  assert r.returncode == 0 and "DONE" in r.stdout, r.stderr[-3000:]


def _kill_at(workdir, total, rng, timeout=600):
  """Starts a run and SIGKILLs it at a seeded moment: after a seeded number of checkpoint
  folders has appeared, plus a seeded fraction of the time one step takes."""
  p = subprocess.Popen(
    _train_cmd() + [str(workdir)],
    env=_env(),
    cwd=ROOT,
    stdout=subprocess.DEVNULL,
    stderr=subprocess.DEVNULL,
  )
  ck = os.path.join(workdir, "checkpoints")
  after = int(rng.integers(1, total - 1))
  delay = float(rng.random()) * 0.3
  t0 = time.time()
  try:
    while time.time() - t0 < timeout:
      if p.poll() is not None:
        return "finished"
      steps = [int(d) for d in os.listdir(ck) if d.isdigit()] if os.path.isdir(ck) else []
      if steps and max(steps) >= after:
        time.sleep(delay)
        p.send_signal(signal.SIGKILL)
        p.wait()
        return f"killed after checkpoint {max(steps)} (+{delay:.2f}s)"
      time.sleep(0.01)
    p.kill()
    raise AssertionError("training did not start in time")
  finally:
    if p.poll() is None:
      p.kill()
      p.wait()


def _result(workdir):
  rows = [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl"))]
  meta = checkpoint.read_meta(os.path.join(workdir, "params"))
  return {r["step"]: r["train/loss"] for r in rows}, meta["weights_hash"]


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
  """An uninterrupted run: per-step losses and the final weights hash."""
  w = tmp_path_factory.mktemp("straight") / "w"
  _run_train(w)
  want_loss, want_hash = _result(w)
  assert sorted(want_loss) == list(range(1, TOTAL + 1))
  assert len(set(want_loss.values())) == TOTAL  # the losses differ per step
  return want_loss, want_hash, str(w)


def _kill_resume_cases(tmp_path, straight, kills, seed):
  want_loss, want_hash, _ = straight
  rng = np.random.default_rng(seed)
  n = clean = 0
  for k in range(kills):
    w = tmp_path / f"killed{k}"
    how = _kill_at(str(w), TOTAL, rng)
    _run_train(w)  # the same command again resumes
    got_loss, got_hash = _result(w)
    n += 1
    assert got_loss == want_loss, (how, got_loss, want_loss)  # bit-identical
    assert got_hash == want_hash, how
    clean += 1
  FAULTS.add("SIGKILL of training + resume", n, clean)


@pytest.mark.integration
def test_sigkill_during_training_resumes_bit_identically(tmp_path, straight):
  _kill_resume_cases(tmp_path, straight, kills=1, seed=0)


@pytest.mark.slow
def test_sigkill_at_more_moments_resumes_bit_identically(tmp_path, straight):
  _kill_resume_cases(tmp_path, straight, kills=2, seed=1)


@pytest.mark.integration
def test_trainer_settings_are_validated_before_compiling(tmp_path, straight):
  """Against a workdir whose checkpoints are at step 5: one line naming the setting."""
  from incontext.train import trainer

  w = str(tmp_path / "w")
  shutil.copytree(straight[2], w)
  cases = [
    (
      dict(total_steps=3),
      r"config.total_steps=3 is below the step of the checkpoint in "
      rf"{w}/checkpoints \(5\)",
    ),
    (dict(total_steps=0), r"config.total_steps=0: must be > 0"),
    (dict(log_every=0), r"config.log_every=0: must be > 0"),
    (
      dict(model__width=48),
      r"config.model.width=48 differs from the model the checkpoints "
      rf"in {w}/checkpoints were trained with \(width=\d+\)",
    ),
    (dict(totl_steps=9), r"config: unknown key \['totl_steps'\]"),
    (dict(ckpt__evry=9), r"config.ckpt: unknown key \['evry'\]"),
  ]
  n = clean = 0
  for change, msg in cases:
    c = _train_config()
    with c.unlocked():
      for k, v in change.items():
        sect, _, key = k.rpartition("__")
        (c[sect] if sect else c)[key] = v
    n += 1
    with pytest.raises(ValueError, match=msg) as e:
      trainer.run(c, w)
    assert _one_line(e.value)
    clean += 1
  FAULTS.add("training settings (steps, model shape, keys)", n, clean)


@pytest.mark.slow
def test_trainer_falls_back_from_a_corrupt_latest_checkpoint(tmp_path, straight, caplog):
  """Truncated data-iterator state in the newest training checkpoint: the run resumes from the
  one before (moving the bad one aside) and ends bit-identical to the uninterrupted run."""
  want_loss, want_hash, w0 = straight
  n = clean = 0
  for fault in ("iterator json", "state arrays"):
    w = str(tmp_path / fault.replace(" ", "_"))
    shutil.copytree(w0, w)
    sub = "data" if fault == "iterator json" else "state"
    files = _files(os.path.join(w, "checkpoints", str(TOTAL), sub))
    if fault == "iterator json":
      files = [f for f in files if f.endswith(".json")] or files
    _truncate(max(files, key=os.path.getsize), 0.5)
    _run_train(w)
    n += 1
    got_loss, got_hash = _result(w)
    assert got_loss == want_loss and got_hash == want_hash, fault
    assert os.path.isdir(os.path.join(w, "checkpoints", f"corrupt-{TOTAL}")), fault
    clean += 1
  FAULTS.add("training checkpoint truncation (iterator JSON, state)", n, clean)


# -- the tally ------------------------------------------------------------------------------------
FAULTS = FaultTally("fault cases")


@pytest.fixture(scope="module", autouse=True)
def _report():
  yield
  FAULTS.report()
