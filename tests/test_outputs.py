"""Safe output folders (incontext.outputs): staging inside the folder, a manifest of what was
written, overwrite that never touches unrelated files, usual permissions."""

import json
import os
import stat

import pytest

from incontext import outputs


def _write(o, files):
  for name, data in files.items():
    with open(o.path(name), "w") as f:
      f.write(data)


def _listing(d):
  return sorted(os.listdir(d))


def test_new_folder_gets_files_and_manifest(tmp_path):
  out = tmp_path / "a" / "out"
  with outputs.OutputDir(out, command="segment") as o:
    assert os.path.dirname(o.staging) == str(out)  # staged inside the output folder
    _write(o, {"x.png": "1", "y.png": "2"})
  assert _listing(out) == [outputs.MANIFEST, "x.png", "y.png"]
  m = json.loads((out / outputs.MANIFEST).read_text())
  assert m["command"] == "segment" and m["files"] == ["x.png", "y.png"] and m["complete"]


def test_existing_outputs_need_overwrite_which_spares_other_files(tmp_path):
  out = tmp_path / "out"
  with outputs.OutputDir(out, command="segment") as o:
    _write(o, {"x.png": "old", "y.png": "old"})
  (out / "notes.txt").write_text("mine")
  with pytest.raises(
    outputs.OutputError,
    match=r"out: already exists and holds the outputs of "
    r"an earlier `segment` run; set --overwrite",
  ):
    outputs.OutputDir(out, command="segment", hint="--overwrite")
  with outputs.OutputDir(out, command="segment", overwrite=True) as o:
    _write(o, {"x.png": "new", "z.png": "new"})
  # y.png (recorded, not written again) is gone; notes.txt (never recorded) is kept.
  assert _listing(out) == [outputs.MANIFEST, "notes.txt", "x.png", "z.png"]
  assert (out / "x.png").read_text() == "new" and (out / "notes.txt").read_text() == "mine"
  # A new output whose name is taken by a file the command did not write is refused, up front
  # when the names are known, else at the end (and nothing changes).
  with pytest.raises(outputs.OutputError, match="notes.txt: exists and was not written by"):
    outputs.OutputDir(out, command="segment", overwrite=True, names=["notes.txt"])
  with pytest.raises(outputs.OutputError, match="notes.txt: exists and was not written by"):
    with outputs.OutputDir(out, command="segment", overwrite=True) as o:
      _write(o, {"notes.txt": "clobber", "x.png": "newer"})
  assert (out / "notes.txt").read_text() == "mine" and (out / "x.png").read_text() == "new"
  # Another command's outputs are not its to replace.
  with pytest.raises(outputs.OutputError, match="not written by an earlier `segment-video`"):
    with outputs.OutputDir(out, command="segment-video", overwrite=True) as o:
      _write(o, {"x.png": "video"})
  assert not [n for n in os.listdir(out) if n.startswith(outputs.STAGING_PREFIX)]


def test_unrelated_folder_is_refused_without_overwrite_and_empty_one_is_fine(tmp_path):
  out = tmp_path / "out"
  out.mkdir()
  (out / "lost+found").mkdir()  # a fresh mount point
  with outputs.OutputDir(out, command="segment") as o:
    _write(o, {"x.png": "1"})
  other = tmp_path / "other"
  other.mkdir()
  (other / "photo.jpg").write_text("precious")
  with pytest.raises(
    outputs.OutputError,
    match=r"other: already exists and is not empty "
    r"\(1 entries\)",
  ):
    outputs.OutputDir(other, command="segment")
  (tmp_path / "file").write_text("")
  with pytest.raises(outputs.OutputError, match="file: exists and is not a folder"):
    outputs.OutputDir(tmp_path / "file", command="segment")


def test_failure_leaves_nothing_and_removes_a_folder_it_created(tmp_path):
  out = tmp_path / "new"
  with pytest.raises(RuntimeError):
    with outputs.OutputDir(out, command="segment") as o:
      _write(o, {"x.png": "1"})
      raise RuntimeError("inference failed")
  assert not out.exists()
  out.mkdir()
  (out / "keep").write_text("k")
  with pytest.raises(RuntimeError):
    with outputs.OutputDir(out, command="segment", overwrite=True) as o:
      _write(o, {"x.png": "1"})
      raise RuntimeError("inference failed")
  assert _listing(out) == ["keep"]


def test_stale_staging_of_a_killed_run_is_removed(tmp_path):
  out = tmp_path / "out"
  out.mkdir()
  dead = out / f"{outputs.STAGING_PREFIX}999999999-abc"  # no such process
  dead.mkdir()
  (dead / "half.png").write_text("")
  with outputs.OutputDir(out, command="segment") as o:
    _write(o, {"x.png": "1"})
  assert _listing(out) == [outputs.MANIFEST, "x.png"]


@pytest.mark.parametrize("mask", [0o022, 0o027])
def test_outputs_respect_the_umask(tmp_path, mask):
  old = os.umask(mask)
  try:
    out = tmp_path / "out"
    with outputs.OutputDir(out, command="segment") as o:
      _write(o, {"x.png": "1"})
      os.mkdir(o.path("sub"))
    outputs.write_bytes(str(tmp_path / "f.npz"), b"data")
  finally:
    os.umask(old)
  mode = lambda p: stat.S_IMODE(os.stat(p).st_mode)
  assert mode(out) == 0o777 & ~mask
  assert mode(out / "sub") == 0o777 & ~mask
  assert mode(out / "x.png") == 0o666 & ~mask
  assert mode(out / outputs.MANIFEST) == 0o666 & ~mask
  assert mode(tmp_path / "f.npz") == 0o666 & ~mask


def test_check_file(tmp_path):
  f = tmp_path / "p.npz"
  assert outputs.check_file(f, overwrite=False) == str(f)
  f.write_bytes(b"")
  with pytest.raises(outputs.OutputError, match="p.npz: already exists; set --overwrite"):
    outputs.check_file(f, overwrite=False, hint="--overwrite")
  assert outputs.check_file(f, overwrite=True) == str(f)
  with pytest.raises(outputs.OutputError, match="is a folder"):
    outputs.check_file(tmp_path, overwrite=True)


# -- the manifest is not trusted ------------------------------------------------------------------
def _tamper(out, *entries):
  m = json.loads((out / outputs.MANIFEST).read_text())
  m["files"] += list(entries)
  (out / outputs.MANIFEST).write_text(json.dumps(m))


def _victims(tmp_path):
  """Files and a folder outside OUT that no manifest entry may reach."""
  (tmp_path / "victim.txt").write_text("outside")
  d = tmp_path / "precious"
  d.mkdir()
  (d / "photo.jpg").write_text("outside folder")
  return {p: p.read_text() for p in (tmp_path / "victim.txt", d / "photo.jpg")}


def _bad_entries(tmp_path, out):
  """(entry, setup) pairs: each entry names something the command did not write."""
  os.symlink(tmp_path / "precious", out / "link_dir")
  os.symlink(tmp_path / "victim.txt", out / "link_file")
  (out / "photos").mkdir()
  (out / "photos" / "mine.jpg").write_text("user folder inside OUT")
  os.mkfifo(out / "fifo")
  return [
    "../victim.txt",
    str(tmp_path / "victim.txt"),
    str(tmp_path / "precious"),
    "../precious",
    ".",
    "",
    "..",
    "./",
    "a/../../victim.txt",
    "link_dir",
    "link_dir/photo.jpg",
    "link_file",
    "photos",
    "photos/mine.jpg",
    "fifo",
    "x.png/../../victim.txt",
    "x.png\\..\\..\\victim.txt",
    outputs.MANIFEST,
    outputs.LOCK,
    1,
    None,
    ["x.png"],
    {"../victim.txt": 1},
  ]


def test_manifest_entries_never_reach_outside_or_unwritten_files(tmp_path, caplog):
  victims = _victims(tmp_path)
  out = tmp_path / "out"
  with outputs.OutputDir(out, command="segment") as o:
    _write(o, {"x.png": "old", "y.png": "old"})
  bad = _bad_entries(tmp_path, out)
  _tamper(out, *bad)
  before = sorted(os.listdir(out))
  with caplog.at_level("WARNING", logger="incontext.outputs"):
    with outputs.OutputDir(out, command="segment", overwrite=True) as o:
      _write(o, {"x.png": "new"})
  for p, text in victims.items():
    assert p.read_text() == text
  # Only y.png (a regular file the earlier run wrote and this one did not) went away.
  assert sorted(os.listdir(out)) == sorted(set(before) - {"y.png"})
  assert (out / "photos" / "mine.jpg").read_text() == "user folder inside OUT"
  assert os.path.islink(out / "link_dir") and os.path.islink(out / "link_file")
  assert (out / "x.png").read_text() == "new"
  warned = [r.getMessage() for r in caplog.records]
  assert len(warned) == len(bad), warned
  assert all("ignoring the entry" in w and "\n" not in w for w in warned)
  # The new manifest lists what this run wrote, nothing of the tampered list.
  assert json.loads((out / outputs.MANIFEST).read_text())["files"] == ["x.png"]


@pytest.mark.parametrize("name", ["link_dir", "link_file", "photos", "fifo"])
def test_an_output_named_like_an_untrusted_entry_is_refused(tmp_path, name):
  victims = _victims(tmp_path)
  out = tmp_path / "out"
  with outputs.OutputDir(out, command="segment") as o:
    _write(o, {"x.png": "old"})
  _bad_entries(tmp_path, out)
  _tamper(out, name)
  with pytest.raises(outputs.OutputError, match=f"{name}: exists and was not written by"):
    outputs.OutputDir(out, command="segment", overwrite=True, names=[name])
  with pytest.raises(outputs.OutputError, match=f"{name}: exists and was not written by"):
    with outputs.OutputDir(out, command="segment", overwrite=True) as o:
      _write(o, {name: "clobber"})
  for p, text in victims.items():
    assert p.read_text() == text
  assert (out / "photos" / "mine.jpg").exists() and os.path.lexists(out / name)


def test_a_folder_entry_is_trusted_only_when_the_command_makes_that_folder(tmp_path):
  out = tmp_path / "out"
  with outputs.OutputDir(out, command="params", folders=("params",)) as o:
    os.mkdir(o.path("params"))
    _write(o, {"params/a": "1", "meta.json": "{}"})
  (out / "data").mkdir()
  (out / "data" / "keep").write_text("k")
  _tamper(out, "data")
  with outputs.OutputDir(out, command="params", overwrite=True, folders=("params",)) as o:
    _write(o, {"meta.json": "{}"})
  # params (recorded, a folder params runs make) is replaced; data (not its folder) stays.
  assert sorted(os.listdir(out)) == [outputs.MANIFEST, "data", "meta.json"]
  assert (out / "data" / "keep").read_text() == "k"


def test_a_manifest_that_is_a_link_or_not_a_file_is_not_read(tmp_path):
  victims = _victims(tmp_path)
  evil = tmp_path / "evil.json"
  evil.write_text(
    json.dumps({"kind": outputs.KIND, "command": "segment", "files": ["../victim.txt"]})
  )
  out = tmp_path / "out"
  out.mkdir()
  os.symlink(evil, out / outputs.MANIFEST)
  assert outputs.read_manifest(str(out)) is None
  with outputs.OutputDir(out, command="segment", overwrite=True) as o:
    _write(o, {"x.png": "1"})
  for p, text in victims.items():
    assert p.read_text() == text
  assert not os.path.islink(out / outputs.MANIFEST)  # replaced by a real one, target untouched
  assert json.loads(evil.read_text())["files"] == ["../victim.txt"]


def test_plain_name_rules():
  ok = ["x.png", "a b.txt", ".hidden", "masks"]
  for n in ok:
    assert outputs.plain_name(n) is None, n
  assert outputs.plain_name("masks/a.png", nested=True) is None
  for n in ["", ".", "..", "/abs", "a/b", "a\\b", "x\0y", 3, None, outputs.MANIFEST]:
    assert outputs.plain_name(n) is not None, n
  for n in ["a//b", "a/./b", "a/../b", "a/", "/a/b", ".incontext-tmp-1/x"]:
    assert outputs.plain_name(n, nested=True) is not None, n


# -- a failed run removes only what it wrote; one run at a time -----------------------------------
def test_failure_removes_only_its_own_files_and_the_empty_folders_it_made(tmp_path):
  out = tmp_path / "a" / "b" / "out"
  with pytest.raises(RuntimeError):
    with outputs.OutputDir(out, command="segment") as o:
      _write(o, {"x.png": "1"})
      raise RuntimeError("inference failed")
  assert _listing(tmp_path) == []  # out, b and a were made by the run and are empty
  # A file saved in the new OUT during the failing run survives (and so does OUT).
  with pytest.raises(RuntimeError):
    with outputs.OutputDir(out, command="segment") as o:
      _write(o, {"x.png": "1"})
      (out / "saved.txt").write_text("user")
      raise RuntimeError("inference failed")
  assert _listing(out) == ["saved.txt"]
  # ... and one saved next to OUT keeps the parent it is in.
  out2 = tmp_path / "c" / "out"
  with pytest.raises(RuntimeError):
    with outputs.OutputDir(out2, command="segment") as o:
      (tmp_path / "c" / "other.txt").write_text("user")
      raise RuntimeError("inference failed")
  assert _listing(tmp_path / "c") == ["other.txt"]


def test_failed_commit_takes_back_only_what_it_moved(tmp_path, monkeypatch):
  out = tmp_path / "out"
  with outputs.OutputDir(out, command="segment") as o:
    _write(o, {"x.png": "old", "y.png": "old"})
  (out / "notes.txt").write_text("mine")
  real = os.replace
  calls = []

  def replace(src, dst):
    calls.append(dst)
    if os.path.basename(dst) == "z.png":
      raise OSError(28, "No space left on device")
    return real(src, dst)

  monkeypatch.setattr(outputs.os, "replace", replace)
  with pytest.raises(OSError, match="No space"):
    with outputs.OutputDir(out, command="segment", overwrite=True) as o:
      _write(o, {"w.png": "new", "z.png": "new"})
  monkeypatch.setattr(outputs.os, "replace", real)
  # w.png (moved in) was taken back; y.png and x.png (recorded, not rewritten) were removed by
  # the overwrite before the failure; notes.txt never touched; the manifest lists what is left.
  assert _listing(out) == [outputs.MANIFEST, "notes.txt"]
  m = json.loads((out / outputs.MANIFEST).read_text())
  assert m["files"] == [] and not m["complete"]


def test_a_second_run_into_the_same_folder_is_refused_while_the_first_writes(tmp_path):
  out = tmp_path / "new"
  b = outputs.OutputDir(out, command="segment")  # checked before A started: nothing there
  busy = f"another incontext run \\(process {os.getpid()}\\) is writing to this folder"
  with outputs.OutputDir(out, command="segment") as a:
    _write(a, {"a.png": "A"})
    with pytest.raises(outputs.OutputError, match=busy):  # up front
      outputs.OutputDir(out, command="segment", overwrite=True)
    with pytest.raises(outputs.OutputError, match=busy):  # when it starts writing
      with b:
        _write(b, {"b.png": "B"})
  # A's outputs and manifest are whole; B left nothing (and did not remove A's folder).
  assert _listing(out) == [outputs.MANIFEST, "a.png"]
  assert json.loads((out / outputs.MANIFEST).read_text())["files"] == ["a.png"]
  # After A: B's check under the lock sees A's outputs.
  with pytest.raises(outputs.OutputError, match="holds the outputs of an earlier `segment` run"):
    with b:
      pass
  assert _listing(out) == [outputs.MANIFEST, "a.png"]


def test_a_lock_file_left_by_a_killed_run_is_taken_over(tmp_path):
  out = tmp_path / "out"
  out.mkdir()
  (out / outputs.LOCK).write_text("999999999\n")  # its process is gone: no lock is held
  with outputs.OutputDir(out, command="segment") as o:
    _write(o, {"x.png": "1"})
  assert _listing(out) == [outputs.MANIFEST, "x.png"]


_RUN = """
import sys, time
from incontext import outputs
name, delay = sys.argv[2], float(sys.argv[3])
try:
  with outputs.OutputDir(sys.argv[1], command="segment") as o:
    open(o.path(name), "w").write(name)
    time.sleep(delay)
except outputs.OutputError as e:
  print(e)
  sys.exit(2)
"""


@pytest.mark.integration
@pytest.mark.parametrize("delays", [(0.5, 0.5), (0.0, 0.3), (0.3, 0.0)])
def test_two_processes_into_one_new_folder_end_whole_or_refused(tmp_path, delays):
  import subprocess
  import sys

  out = tmp_path / "p" / "new"
  env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  procs = [
    subprocess.Popen(
      [sys.executable, "-c", _RUN, str(out), f"{n}.png", str(d)],
      env=env,
      stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT,
      text=True,
    )
    for n, d in zip("ab", delays)
  ]
  res = [(p.wait(timeout=60), p.stdout.read().strip()) for p in procs]
  ok = [n for n, (rc, _) in zip("ab", res) if rc == 0]
  for rc, msg in res:
    assert rc in (0, 2), msg
    if rc == 2:  # one clear line
      assert "\n" not in msg and (
        "another incontext run" in msg or "holds the outputs of an earlier" in msg
      ), msg
  assert len(ok) == 1, res  # the first wins; the second is refused (no --overwrite)
  m = json.loads((out / outputs.MANIFEST).read_text())
  assert m["files"] == [f"{ok[0]}.png"] and m["complete"]
  assert _listing(out) == [outputs.MANIFEST, f"{ok[0]}.png"]
  assert (out / f"{ok[0]}.png").read_text() == f"{ok[0]}.png"


# -- through the command line ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def params_dir(tmp_path_factory):
  from incontext import checkpoint
  from incontext.models import seggpt

  d = tmp_path_factory.mktemp("model") / "params"
  checkpoint.save_model(str(d), seggpt.create("test", image_size=(32, 32), patch=8, seed=3))
  return str(d)


def _segment_argv(params_dir, tmp_path, out):
  from PIL import Image

  import numpy as np

  rng = np.random.default_rng(0)
  img, mask = tmp_path / "img.png", tmp_path / "mask.png"
  Image.fromarray(rng.integers(0, 255, (24, 24, 3)).astype(np.uint8)).save(img)
  m = np.zeros((24, 24), np.uint8)
  m[4:12, 4:12] = 255
  Image.fromarray(m).save(mask)
  argv = ["segment", "--checkpoint", params_dir, "--prompt", str(img), str(mask)]
  return argv + ["--query", str(img), "--out", str(out)]


def test_segment_overwrite_with_a_tampered_manifest_touches_nothing_outside(
  params_dir, tmp_path, capsys, caplog
):
  from incontext import cli

  victims = _victims(tmp_path)
  out = tmp_path / "out"
  argv = _segment_argv(params_dir, tmp_path, out)
  assert cli.main(argv) == 0, capsys.readouterr().err
  bad = _bad_entries(tmp_path, out)
  _tamper(out, *bad)
  inside = {p: p.read_bytes() for p in [out / "photos" / "mine.jpg", tmp_path / "img.png"]}
  with caplog.at_level("WARNING", logger="incontext.outputs"):
    assert cli.main(argv + ["--overwrite"]) == 0, capsys.readouterr().err
  warned = [r.getMessage() for r in caplog.records if r.name == "incontext.outputs"]
  assert len(warned) == len(bad) and all("ignoring the entry" in w for w in warned), warned
  for p, text in victims.items():
    assert p.read_text() == text
  for p, data in inside.items():
    assert p.read_bytes() == data
  assert sorted(os.listdir(out)) == sorted(
    [outputs.MANIFEST, "img.png", "img_overlay.png", "labels.json"]
    + ["link_dir", "link_file", "photos", "fifo"]
  )
  m = json.loads((out / outputs.MANIFEST).read_text())
  assert m["files"] == ["img.png", "img_overlay.png", "labels.json"]


# -- single files: one atomic writer -----------------------------------------------------------
def test_single_file_writers_round_trip_and_leave_no_temporaries(tmp_path):
  np = pytest.importorskip("numpy")
  from PIL import Image

  outputs.write_bytes(tmp_path / "a.bin", b"\x00\x01")
  outputs.write_text(tmp_path / "sub" / "b.txt", "é\n")  # missing folder: made
  outputs.write_json(tmp_path / "c.json", {"x": 1})
  px = np.arange(12, dtype=np.uint8).reshape(3, 4)
  outputs.write_image(tmp_path / "d.png", px)
  assert (tmp_path / "a.bin").read_bytes() == b"\x00\x01"
  assert (tmp_path / "sub" / "b.txt").read_text("utf-8") == "é\n"
  assert json.loads((tmp_path / "c.json").read_text()) == {"x": 1}
  with Image.open(tmp_path / "d.png") as im:
    assert im.format == "PNG" and np.array_equal(np.asarray(im), px)
  assert _listing(tmp_path) == ["a.bin", "c.json", "d.png", "sub"]


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
  p = tmp_path / "r.json"
  p.write_text("old")
  seen = []

  def half(tmp):
    seen.append(tmp)
    with open(tmp, "w") as f:
      f.write("half")
    raise OSError(28, "No space left on device")

  with pytest.raises(OSError, match="No space left on device") as e:
    outputs.write_atomic(p, half)
  assert e.value.filename == str(p)  # names the file being written, not the temporary
  assert outputs.temp_target(os.path.basename(seen[0])) == "r.json"
  assert p.read_text() == "old" and _listing(tmp_path) == ["r.json"]
  with pytest.raises(KeyboardInterrupt):
    outputs.write_atomic(p, lambda tmp: (_ for _ in ()).throw(KeyboardInterrupt()))
  from PIL import Image

  with pytest.raises(OSError, match="cannot write mode F as JPEG"):  # PIL fails mid-save
    outputs.write_image(p.with_suffix(".jpg"), Image.new("F", (2, 2)))
  assert p.read_text() == "old" and _listing(tmp_path) == ["r.json"]


def test_temp_target_recognises_only_write_atomics_names():
  assert outputs.temp_target(".tmp_12-0a1b2c3d_a.png") == "a.png"
  assert outputs.temp_target("masks/.tmp_12-0a1b2c3d_b.png") == "masks/b.png"
  assert outputs.temp_target(".tmp_12_a.png") == "a.png"  # label's older name
  for n in (".tmp_draft", ".tmp_x_a.png", "tmp_12_a.png", ".tmp_12-XYZ_a.png", "a.png"):
    assert outputs.temp_target(n) is None, n


def test_add_keeps_the_earlier_entries_and_never_touches_the_users(tmp_path):
  out = tmp_path / "out"
  for k in (0, 8):
    with outputs.OutputDir(
      out, command="sub", overwrite=True, add=True, names=[f"K{k}"], folders=["K0", "K8"]
    ) as o:
      os.mkdir(o.path(f"K{k}"))
      _write(o, {f"K{k}/a.png": str(k)})
  (out / "K2").write_text("the user's")
  m = json.loads((out / outputs.MANIFEST).read_text())
  assert m["files"] == ["K0", "K8"] and m["complete"]
  with outputs.OutputDir(out, command="sub", overwrite=True, add=True, folders=["K0", "K8"]) as o:
    os.mkdir(o.path("K0"))
    _write(o, {"K0/a.png": "again"})
  assert (out / "K0" / "a.png").read_text() == "again" and (out / "K8" / "a.png").read_text() == "8"
  assert json.loads((out / outputs.MANIFEST).read_text())["files"] == ["K0", "K8"]
  with pytest.raises(outputs.OutputError, match="K2: exists and was not written by"):
    outputs.OutputDir(out, command="sub", overwrite=True, add=True, names=["K2"], folders=["K2"])
  assert (out / "K2").read_text() == "the user's"
