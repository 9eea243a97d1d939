"""Safe output folders and files for every command that writes results.

An output folder OUT is written like this:
  * everything is first written to a staging folder *inside* OUT (`OUT/.incontext-tmp-PID-*`),
    so it works when OUT is a mount point or its parent is read-only, and a failed run leaves
    OUT as it was (a folder the run created itself is removed again);
  * at the end the staged entries are moved into OUT and a manifest `OUT/.incontext-outputs.json`
    records which entries this command wrote;
  * an OUT that already holds files is refused unless `overwrite` is set, and then only the
    entries the manifest records (written by an earlier run of the same command) are replaced
    or removed: files the command did not write are never touched, and a new output whose name
    is taken by such a file is an error;
  * outputs get the usual permissions (0666 / 0777 minus the umask), not the owner-only modes
    that temporary files and folders are created with.

Use:
  with outputs.OutputDir(out, command="segment", overwrite=args.overwrite) as o:
    save_png(o.path("a.png"), ...)          # written to the staging folder
  # here OUT/a.png exists and OUT/.incontext-outputs.json lists it

Single-file outputs (a learned prompt `.npz`) use `check_file` and `write_bytes`.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import tempfile
from typing import Iterable

from incontext.errors import UserError

MANIFEST = ".incontext-outputs.json"
STAGING_PREFIX = ".incontext-tmp-"
KIND = "incontext-outputs"
# Entries a fresh file system puts in a mount point; not user data.
_IGNORED = ("lost+found",)


class OutputError(UserError):
  """An output path that cannot be written without losing data (or at all)."""


def umask() -> int:
  """The process umask (read without changing it for longer than a call)."""
  mask = os.umask(0o022)
  os.umask(mask)
  return mask


def fix_mode(path: str) -> None:
  """Gives a file 0666 and a folder 0777 minus the umask (mkstemp/mkdtemp make 0600/0700)."""
  base = 0o777 if os.path.isdir(path) else 0o666
  os.chmod(path, base & ~umask())


def _pid_alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  return True


def read_manifest(out: str) -> dict | None:
  """The manifest of an output folder, or None (absent or unreadable)."""
  try:
    with open(os.path.join(out, MANIFEST)) as f:
      m = json.load(f)
  except (OSError, ValueError):
    return None
  if not isinstance(m, dict) or m.get("kind") != KIND or not isinstance(m.get("files"), list):
    return None
  return m


def _write_manifest(out: str, command: str, files: Iterable[str], complete: bool) -> None:
  m = {
    "kind": KIND,
    "command": command,
    "files": sorted(set(files)),
    "complete": complete,
    "written": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
  }
  write_bytes(os.path.join(out, MANIFEST), (json.dumps(m, indent=2) + "\n").encode())


def _remove(path: str) -> None:
  if os.path.isdir(path) and not os.path.islink(path):
    shutil.rmtree(path)
  elif os.path.lexists(path):
    os.remove(path)


class OutputDir:
  """Context manager staging a command's outputs inside `out` (see the module docstring).

  Args:
    out: the output folder.
    command: the command name recorded in the manifest (overwrite replaces only its outputs).
    overwrite: replace the outputs a previous run of `command` recorded.
    names: output names known up front, checked before any work is done (optional).
    hint: how the user sets `overwrite`, for the refusal message.
    owned: entries treated as recorded when `out` has no manifest (a format that predates it).
  """

  def __init__(
    self,
    out: str,
    *,
    command: str,
    overwrite: bool = False,
    names: Iterable[str] = (),
    hint: str = "overwrite",
    owned=None,
  ):
    self.out = os.path.abspath(os.fspath(out))
    self.command = command
    self.overwrite = overwrite
    self.hint = hint
    self.staging: str | None = None
    self._created = False
    self._recorded: set[str] = set()
    self._owned = owned
    self._check(list(names))

  # -- checks before any work ------------------------------------------------------------------
  def _existing(self) -> list[str]:
    return sorted(
      n
      for n in os.listdir(self.out)
      if n != MANIFEST and n not in _IGNORED and not n.startswith(STAGING_PREFIX)
    )

  def _check(self, names: list[str]) -> None:
    out = self.out
    if os.path.lexists(out) and not os.path.isdir(out):
      raise OutputError(f"{out}: exists and is not a folder")
    if not os.path.isdir(out):
      return
    existing = self._existing()
    manifest = read_manifest(out)
    if manifest is not None and manifest.get("command") == self.command:
      self._recorded = {str(n) for n in manifest["files"]}
    elif manifest is None and self._owned is not None:
      self._recorded = set(self._owned(out))
    if existing and not self.overwrite:
      what = (
        f"holds the outputs of an earlier `{self.command}` run"
        if self._recorded
        else f"is not empty ({len(existing)} entries)"
      )
      raise OutputError(
        f"{out}: already exists and {what}; set {self.hint} to replace what "
        f"an earlier `{self.command}` run wrote there (other files are never "
        "touched)"
      )
    self._check_names(names)

  def _check_names(self, names) -> None:
    for n in names:
      if os.path.lexists(os.path.join(self.out, n)) and n not in self._recorded:
        raise OutputError(
          f"{os.path.join(self.out, n)}: exists and was not written by an "
          f"earlier `{self.command}` run; not replacing it (move it away or "
          "write to another folder)"
        )

  # -- staging -----------------------------------------------------------------------------
  def __enter__(self) -> "OutputDir":
    out = self.out
    if not os.path.isdir(out):
      parent = os.path.dirname(out)
      try:
        os.makedirs(parent, exist_ok=True)
        os.mkdir(out)
      except OSError as e:
        raise OutputError(f"{out}: cannot create the output folder ({e.strerror})") from None
      self._created = True
    self._clean_stale()
    try:
      self.staging = tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{os.getpid()}-", dir=out)
    except OSError as e:
      self._undo()
      raise OutputError(f"{out}: cannot write in the output folder ({e.strerror})") from None
    fix_mode(self.staging)
    return self

  def _clean_stale(self) -> None:
    """Removes staging folders of killed runs (their process is gone)."""
    for n in os.listdir(self.out):
      if not n.startswith(STAGING_PREFIX):
        continue
      try:
        pid = int(n[len(STAGING_PREFIX) :].split("-", 1)[0])
      except ValueError:
        continue
      if pid != os.getpid() and not _pid_alive(pid):
        shutil.rmtree(os.path.join(self.out, n), ignore_errors=True)

  def path(self, name: str) -> str:
    """Where to write output `name` (a path in the staging folder)."""
    assert self.staging is not None, "use OutputDir as a context manager"
    return os.path.join(self.staging, name)

  def _undo(self) -> None:
    if self.staging:
      shutil.rmtree(self.staging, ignore_errors=True)
      self.staging = None
    if self._created:
      shutil.rmtree(self.out, ignore_errors=True)

  def __exit__(self, exc_type, exc, tb) -> bool:
    if exc_type is not None:
      self._undo()
      return False
    try:
      self.commit()
    except BaseException:
      self._undo()
      raise
    return False

  def commit(self) -> list[str]:
    """Moves the staged entries into place; returns their names."""
    out, staging = self.out, self.staging
    new = sorted(os.listdir(staging))
    self._check_names(new)
    old = self._recorded if self.overwrite else set()
    # Record the union first: a crash while moving leaves every entry listed for a later
    # overwrite to clean up.
    _write_manifest(out, self.command, set(new) | old, complete=False)
    for n in sorted(old - set(new)):
      _remove(os.path.join(out, n))
    for n in new:
      dst = os.path.join(out, n)
      if os.path.isdir(dst) and not os.path.islink(dst):
        shutil.rmtree(dst)
      os.replace(os.path.join(staging, n), dst)
    _write_manifest(out, self.command, new, complete=True)
    os.rmdir(staging)
    self.staging = None
    return new


def check_file(path: str, *, overwrite: bool, hint: str = "overwrite") -> str:
  """Refuses an existing output file without `overwrite`; returns the absolute path."""
  path = os.path.abspath(os.fspath(path))
  if os.path.isdir(path):
    raise OutputError(f"{path}: is a folder, expected a file name")
  if os.path.lexists(path) and not overwrite:
    raise OutputError(f"{path}: already exists; set {hint} to replace it")
  return path


def write_bytes(path: str, data: bytes) -> None:
  """Writes a file atomically (temporary file in the same folder, then rename) with the usual
  permissions."""
  d = os.path.dirname(os.path.abspath(path))
  os.makedirs(d, exist_ok=True)
  fd, tmp = tempfile.mkstemp(prefix=".tmp_" + os.path.basename(path) + "_", dir=d)
  try:
    with os.fdopen(fd, "wb") as f:
      f.write(data)
      f.flush()
      os.fsync(f.fileno())
    fix_mode(tmp)
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def write_json(path: str, obj, **kw) -> None:
  """`json.dump` to `path` atomically (indent 2, `default=str`)."""
  write_bytes(path, (json.dumps(obj, indent=2, default=str, **kw) + "\n").encode())


def check_inputs_apart(
  out: str,
  names: Iterable[str],
  inputs: Iterable[str],
  *,
  command: str,
  overwrite: bool,
  is_output=None,
) -> None:
  """Refuses (OutputError, before any work) a run whose outputs would replace one of its inputs.

  An input is taken for an output when its real path is `out`/NAME for a NAME in `names`,
  or one `is_output(NAME)` accepts (outputs whose number is not known yet, e.g. one PNG per
  video frame), or, with `overwrite`, an entry the manifest records for `command` (the run
  replaces or removes those).
  """
  root = os.path.realpath(os.fspath(out))
  taken = set(names)
  if overwrite:
    m = read_manifest(root)
    if m is not None and m.get("command") == command:
      taken |= {str(n) for n in m["files"]}
  for p in inputs:
    real = os.path.realpath(os.fspath(p))
    folder, name = os.path.split(real)
    if folder == root and (name in taken or (is_output is not None and is_output(name))):
      raise OutputError(
        f"{p}: is an input of this `{command}` run and also one of its outputs "
        f"({os.path.join(root, name)}); write the outputs to another folder"
      )
