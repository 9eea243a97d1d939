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
