"""Safe output folders and files for every command that writes results.

An output folder OUT is written like this:
  * one run at a time: a run holds an exclusive lock (`fcntl.flock`) on `OUT/.incontext-lock`
    from the moment it starts writing until it is done; a second run into the same folder is
    refused with a one-line error instead of waiting (the lock file is removed at the end);
  * everything is first written to a staging folder *inside* OUT (`OUT/.incontext-tmp-PID-*`),
    so it works when OUT is a mount point or its parent is read-only, and a failed run leaves
    OUT as it was: it removes exactly what it wrote (its staging folder, the entries it had
    already moved into place) and the folders it created (OUT and its missing parents) only
    when they are then empty, so files that appeared there meanwhile survive;
  * at the end the staged entries are moved into OUT and a manifest `OUT/.incontext-outputs.json`
    records which entries this command wrote;
  * an OUT that already holds files is refused unless `overwrite` is set, and then only the
    entries the manifest records (written by an earlier run of the same command) are replaced
    or removed: files the command did not write are never touched, and a new output whose name
    is taken by such a file is an error;
  * the manifest is not trusted (anyone can ship a folder with one): an entry is honoured only
    when it is a plain name (a string without `/`, not empty, `.` or `..`, not absolute; nested
    names `a/b` only where the caller allows them, each part checked) naming, without following
    any symbolic link, a regular file inside OUT or a folder the command says it makes. Other
    entries are ignored with a warning and never followed; a symbolic link is never removed or
    followed (the commands never write links, so a link is not theirs), which makes a new output
    of that name an error;
  * outputs get the usual permissions (0666 / 0777 minus the umask), not the owner-only modes
    that temporary files and folders are created with.

Use:
  with outputs.OutputDir(out, command="segment", overwrite=args.overwrite) as o:
    save_png(o.path("a.png"), ...)          # written to the staging folder
  # here OUT/a.png exists and OUT/.incontext-outputs.json lists it

Single files are written by `write_atomic` (and `write_bytes`, `write_text`, `write_json`,
`write_image` on top of it): a temporary name in the file's folder, then a rename, so no file is
ever half-written under its final name. A single-file output (a learned prompt `.npz`) is
checked with `check_file`; run folders that are resumed rather than replaced (a training
workdir, label's OUT) write every file through these too.
"""

from __future__ import annotations

import atexit
import datetime
import errno
import fcntl
import json
import logging
import os
import re
import secrets
import shutil
import stat
import tempfile
from typing import Callable, Iterable

from incontext.errors import UserError

MANIFEST = ".incontext-outputs.json"
STAGING_PREFIX = ".incontext-tmp-"
LOCK = ".incontext-lock"
KIND = "incontext-outputs"
# Entries a fresh file system puts in a mount point; not user data.
_IGNORED = ("lost+found",)

log = logging.getLogger(__name__)


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
  """The manifest of an output folder, or None (absent, unreadable or not a regular file).

  Its entries are not checked here: see `trusted_entries`."""
  path = os.path.join(out, MANIFEST)
  try:
    if not stat.S_ISREG(os.lstat(path).st_mode):  # a link or a FIFO is never read
      log.warning("%s: not a regular file; ignored", path)
      return None
    with open(path, "rb") as f:
      m = json.loads(f.read().decode("utf-8"))
  except (OSError, ValueError):
    return None
  if not isinstance(m, dict) or m.get("kind") != KIND or not isinstance(m.get("files"), list):
    return None
  return m


def write_manifest(
  out: str, command: str, files: Iterable[str], complete: bool, *, stamp: bool = True
) -> None:
  """Writes OUT's manifest atomically; stamp=False leaves out the time (a manifest that must
  be the same bytes whenever the same files were written)."""
  m = {
    "kind": KIND,
    "command": command,
    "files": sorted(set(files)),
    "complete": complete,
  }
  if stamp:
    m["written"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
  write_bytes(os.path.join(out, MANIFEST), (json.dumps(m, indent=2) + "\n").encode())


# Names in OUT that are this module's bookkeeping, never outputs (the manifest is written
# through a temporary file: see `is_bookkeeping`).
_RESERVED = (MANIFEST, LOCK)


def is_bookkeeping(name: str) -> bool:
  """OUT/name is this module's (the manifest, the lock, a staging folder, the manifest's
  temporary file) or a fresh file system's `lost+found`: never an output, never the user's."""
  return (
    name in _RESERVED
    or name in _IGNORED
    or name.startswith(STAGING_PREFIX)
    or temp_target(name) == MANIFEST
  )


def plain_name(entry, *, nested: bool = False) -> str | None:
  """Why `entry` is not a safe relative output name, or None when it is one: a non-empty
  string, not absolute, no `\\` or NUL, no part empty, `.` or `..`; `/` only when `nested`."""
  if not isinstance(entry, str):
    return f"not a string ({type(entry).__name__})"
  if not entry or entry in (".", ".."):
    return "empty or the folder itself"
  if os.path.isabs(entry) or entry.startswith("/"):
    return "an absolute path"
  if "\\" in entry or "\0" in entry:
    return "a backslash or NUL in the name"
  parts = entry.split("/")
  if len(parts) > 1 and not nested:
    return "not a plain name (contains /)"
  if any(p in ("", ".", "..") for p in parts):
    return "a path part that is empty, . or .."
  if parts[0] in _RESERVED or parts[0].startswith(STAGING_PREFIX):
    return "a name this module keeps for itself"
  return None


def entry_kind(out: str, name: str) -> str | None:
  """What OUT/name is, without following any symbolic link on the way: "file" (regular),
  "folder", "link", "other" (FIFO, device, socket) or None (missing). `name` must have passed
  `plain_name`."""
  path = out
  parts = name.split("/")
  for i, part in enumerate(parts):
    path = os.path.join(path, part)
    try:
      mode = os.lstat(path).st_mode
    except OSError:
      return None
    if stat.S_ISLNK(mode):
      return "link"
    if i < len(parts) - 1 and not stat.S_ISDIR(mode):
      return None
  if stat.S_ISREG(mode):
    return "file"
  return "folder" if stat.S_ISDIR(mode) else "other"


def _inside(out: str, name: str) -> bool:
  real_out = os.path.realpath(out)
  return os.path.realpath(os.path.join(out, name)).startswith(real_out + os.sep)


def trusted_entries(
  out: str,
  entries,
  *,
  folders: Iterable[str] = (),
  nested: bool = False,
  source: str = "",
  warn: bool = True,
) -> set[str]:
  """The manifest entries that may be replaced or removed: plain names (`plain_name`) that
  are, without following links, a regular file inside OUT or a folder named in `folders` (the
  folders the command makes; for nested names the first part is checked). Entries naming
  nothing are dropped silently; every other entry is ignored with a warning (when `warn`)."""
  folders = set(folders)
  keep = set()
  for e in entries if isinstance(entries, (list, tuple, set)) else ():
    why = plain_name(e, nested=nested)
    if why is None:
      kind = entry_kind(out, e)
      if kind is None:
        continue
      if kind == "link":
        why = "a symbolic link (never followed or removed)"
      elif kind == "folder" and e.split("/")[0] not in folders:
        why = "a folder this command does not make"
      elif kind == "folder" and "/" in e:
        why = "a folder inside an output folder"
      elif kind not in ("file", "folder"):
        why = "not a regular file"
      elif not _inside(out, e):
        why = "outside the output folder"
      else:
        keep.add(e)
        continue
    if warn:
      log.warning(
        "%s: ignoring the entry %s: %s", source or os.path.join(out, MANIFEST), ascii(e), why
      )
  return keep


class FolderLock:
  """An exclusive, non-blocking `fcntl.flock` on OUT/.incontext-lock (see the module
  docstring). `acquire` raises OutputError naming the holder's pid when another run has it;
  `release` removes the lock file. The kernel drops the lock when its process dies, so a
  killed run's lock file is simply taken over."""

  def __init__(self, out: str):
    self.out = out
    self.path = os.path.join(out, LOCK)
    self.fd: int | None = None

  def _busy_error(self, fd: int) -> OutputError:
    holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "?"
    return OutputError(
      f"{self.out}: another incontext run (process {holder}) is writing to this folder; "
      "wait for it to finish or write to another folder"
    )

  def check_free(self) -> None:
    """Raises the `acquire` error when another run holds the lock now (takes nothing)."""
    try:
      fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
      return
    try:
      fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as e:
      if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
        raise self._busy_error(fd) from None
    finally:
      os.close(fd)

  def acquire(self) -> None:
    for _ in range(100):
      fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o666 & ~umask())
      try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
      except OSError as e:
        if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
          os.close(fd)
          raise
        err = self._busy_error(fd)
        os.close(fd)
        raise err from None
      # Its previous holder may have removed the file between our open and flock.
      try:
        same = os.path.samestat(os.fstat(fd), os.stat(self.path, follow_symlinks=False))
      except FileNotFoundError:
        same = False
      if same:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.fd = fd
        return
      os.close(fd)
    raise OutputError(f"{self.path}: cannot take the lock (the file keeps being replaced)")

  def release(self) -> None:
    if self.fd is None:
      return
    try:
      if os.path.samestat(os.fstat(self.fd), os.stat(self.path, follow_symlinks=False)):
        os.remove(self.path)  # while still holding it: a waiting run then retries the open
    except OSError:
      pass
    os.close(self.fd)
    self.fd = None


def _remove(path: str) -> None:
  """Removes a file, a link (itself, never its target) or a folder tree (rmtree does not
  follow the links inside)."""
  if os.path.isdir(path) and not os.path.islink(path):
    shutil.rmtree(path)
  elif os.path.lexists(path):
    os.remove(path)


def make_folder(path: str) -> list[str]:
  """Creates `path` and its missing parents; returns the folders it created, outermost
  first (for `remove_empty`)."""
  made, p = [], os.path.abspath(path)
  while not os.path.lexists(p):
    made.append(p)
    p = os.path.dirname(p)
  made.reverse()
  for d in made:
    try:
      os.mkdir(d)
    except FileExistsError:  # another run made it meanwhile: not ours to remove
      made = [m for m in made if m != d]
      if not os.path.isdir(d):
        raise
  return made


def remove_empty(folders: Iterable[str]) -> None:
  """Removes the given folders, innermost first, each only while it is empty."""
  for d in sorted(folders, key=len, reverse=True):
    try:
      os.rmdir(d)
    except OSError:
      return


def take_folder(out: str) -> tuple[list[str], FolderLock]:
  """The start of every run that writes into a folder: creates `out` and its missing parents
  and takes its lock; returns (the folders it created, outermost first, and the held lock).
  Raises a one-line OutputError when `out` cannot be created or written or another run holds
  it, and then leaves none of the folders it created."""
  made: list[str] = []
  for _ in range(10):  # a failing concurrent run may remove an empty OUT under us: retry
    try:
      made += make_folder(out)
    except OSError as e:
      remove_empty(made)
      raise OutputError(f"{out}: cannot create the output folder ({e.strerror})") from None
    lock = FolderLock(out)
    try:
      lock.acquire()
    except FileNotFoundError:
      continue
    except OSError as e:
      remove_empty(made)
      raise OutputError(f"{out}: cannot write in the output folder ({e.strerror})") from None
    except BaseException:
      remove_empty(made)
      raise
    return made, lock
  remove_empty(made)
  raise OutputError(f"{out}: the output folder keeps disappearing")


class OutputDir:
  """Context manager staging a command's outputs inside `out` (see the module docstring).

  Args:
    out: the output folder.
    command: the command name recorded in the manifest (overwrite replaces only its outputs).
    overwrite: replace the outputs a previous run of `command` recorded.
    names: output names known up front, checked before any work is done (optional).
    hint: how the user sets `overwrite`, for the refusal message.
    owned: entries treated as recorded when `out` has no manifest (a format that predates it).
    folders: the names of the folders the command writes (a recorded folder of another name
      is not trusted: see `trusted_entries`).
    add: this run adds or replaces only the entries it writes; the other entries an earlier
      run recorded stay, and stay recorded (a run that fills OUT in parts, each committed
      when done: the YouTube-VOS submission's K{k} folders). Without it, overwrite replaces
      the earlier run's outputs as a whole.
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
    folders: Iterable[str] = (),
    add: bool = False,
  ):
    self.out = os.path.abspath(os.fspath(out))
    self.command = command
    self.overwrite = overwrite
    self.hint = hint
    self.staging: str | None = None
    self._names = list(names)
    self._folders = tuple(folders)
    self.add = add
    self._made: list[str] = []  # folders this run created (OUT, its parents)
    self._moved: list[str] = []  # entries this run moved into OUT
    self._lock: FolderLock | None = None
    self._had_manifest = False
    self._wrote_manifest = False
    self._recorded: set[str] = set()
    self._owned = owned
    self._warned = False
    self._check(self._names)

  # -- checks before any work ------------------------------------------------------------------
  def _existing(self) -> list[str]:
    return sorted(n for n in os.listdir(self.out) if not is_bookkeeping(n))

  def _check(self, names: list[str]) -> None:
    out = self.out
    if os.path.lexists(out) and not os.path.isdir(out):
      raise OutputError(f"{out}: exists and is not a folder")
    if not os.path.isdir(out):
      return
    if self._lock is None:
      FolderLock(out).check_free()
    existing = self._existing()
    manifest = read_manifest(out)
    self._recorded = set()
    warn, self._warned = not self._warned, True  # the check runs twice: warn once
    if manifest is not None and manifest.get("command") == self.command:
      self._recorded = trusted_entries(out, manifest["files"], folders=self._folders, warn=warn)
    elif manifest is None and self._owned is not None:
      self._recorded = trusted_entries(
        out, list(self._owned(out)), folders=self._folders, source=out, warn=warn
      )
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
    self._made, self._lock = take_folder(out)
    try:
      self._check(self._names)  # again, under the lock: another run may have finished meanwhile
      self._had_manifest = os.path.lexists(os.path.join(out, MANIFEST))
      self._clean_stale()
      self.staging = tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{os.getpid()}-", dir=out)
      fix_mode(self.staging)
    except OSError as e:
      self._undo()
      raise OutputError(f"{out}: cannot write in the output folder ({e.strerror})") from None
    except BaseException:
      self._undo()
      raise
    return self

  def _clean_stale(self) -> None:
    """Removes staging folders of killed runs (their process is gone)."""
    for n in os.listdir(self.out):
      if not n.startswith(STAGING_PREFIX) or entry_kind(self.out, n) != "folder":
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
    """Removes exactly what this run wrote: the staging folder, the entries already moved
    into OUT (a failed commit), its manifest changes, and the folders it created while empty."""
    if self.staging:
      shutil.rmtree(self.staging, ignore_errors=True)
      self.staging = None
    for n in self._moved:
      try:
        _remove(os.path.join(self.out, n))
      except OSError:
        pass
    if self._wrote_manifest:
      left = sorted(n for n in self._recorded if entry_kind(self.out, n) is not None)
      try:
        if left or self._had_manifest:
          write_manifest(self.out, self.command, left, complete=False)
        else:
          os.remove(os.path.join(self.out, MANIFEST))
      except OSError:
        pass  # the manifest lists entries that may be missing: harmless
    self._moved = []
    if self._lock is not None:
      self._lock.release()
      self._lock = None
    remove_empty(self._made)
    self._made = []

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

  def _removable(self, n: str) -> bool:
    """OUT/n may be replaced: still a regular file or a folder the command makes."""
    kind = entry_kind(self.out, n)
    return kind == "file" or (kind == "folder" and n in self._folders)

  def commit(self) -> list[str]:
    """Moves the staged entries into place; returns their names."""
    out, staging = self.out, self.staging
    new = sorted(os.listdir(staging))
    self._check_names(new)
    old = self._recorded if self.overwrite else set()
    kept = set()
    if self.add:  # the earlier entries stay: none is removed, all stay recorded
      kept, old = {n for n in old if n not in new and self._removable(n)}, set()
    # Record the union first: a crash while moving leaves every entry listed for a later
    # overwrite to clean up.
    self._wrote_manifest = True
    write_manifest(out, self.command, set(new) | old | kept, complete=False)
    for n in sorted(old - set(new)):
      if self._removable(n):
        _remove(os.path.join(out, n))
    for n in new:
      src, dst = os.path.join(staging, n), os.path.join(out, n)
      if os.path.lexists(dst):
        if not self._removable(n):  # changed under us since the check: leave it alone
          raise OutputError(f"{dst}: changed while this run was writing; not replacing it")
        if os.path.isdir(dst) or os.path.isdir(src):  # os.replace cannot swap these
          _remove(dst)
      os.replace(src, dst)
      self._moved.append(n)
    write_manifest(out, self.command, set(new) | kept, complete=True)
    os.rmdir(staging)
    self.staging = None
    self._moved = []
    self._made = []
    if self._lock is not None:
      self._lock.release()
      self._lock = None
    return new


def check_file(path: str, *, overwrite: bool, hint: str = "overwrite") -> str:
  """Refuses an existing output file without `overwrite`; returns the absolute path."""
  path = os.path.abspath(os.fspath(path))
  if os.path.isdir(path):
    raise OutputError(f"{path}: is a folder, expected a file name")
  if os.path.lexists(path) and not overwrite:
    raise OutputError(f"{path}: already exists; set {hint} to replace it")
  return path


# -- single files --------------------------------------------------------------------------------
# Every file is written to a temporary name in its own folder and renamed into place, so a
# reader (or a killed run) never sees a partial file under a final name. The temporary name is
# `.tmp_PID-XXXXXXXX_NAME` (XXXXXXXX random hex): it keeps NAME's extension (writers that pick
# the format from it), names the writing process, and `temp_target` maps it back to NAME, so a
# folder's owner can tell its own leftover temporaries (of names it writes) from the user's files.
TMP_PREFIX = ".tmp_"
# `.tmp_PID_NAME` (no random part) is what label wrote before; still recognised as label's.
_TMP_RE = re.compile(re.escape(TMP_PREFIX) + r"(\d+)(?:-[0-9a-f]{8})?_(.+)\Z", re.S)


def temp_target(name: str) -> str | None:
  """NAME (in the same folder) when `name` is a temporary file name of `write_atomic`
  (`[FOLDER/].tmp_PID-XXXXXXXX_NAME`), else None."""
  d, f = os.path.split(name)
  m = _TMP_RE.match(f)
  return os.path.join(d, m.group(2)) if m else None


def _new_temp(path: str) -> str:
  d, f = os.path.split(path)
  for _ in range(100):
    tmp = os.path.join(d, f"{TMP_PREFIX}{os.getpid()}-{secrets.token_hex(4)}_{f}")
    try:
      fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
      continue
    os.close(fd)
    return tmp
  raise OSError(errno.EEXIST, "cannot make a temporary file name", path)


def _discard(tmp: str | None) -> None:
  if tmp is not None and os.path.lexists(tmp):
    os.remove(tmp)


def write_atomic(path, write: Callable[[str], None], *, before_rename=None) -> None:
  """`write(tmp)` writes the file at a temporary path in `path`'s folder (created if missing),
  which is then given the usual permissions and renamed to `path`; a failure removes the
  temporary file and leaves `path` as it was.

  before_rename(path), when given, runs just before the rename (label notes the name in its
  journal there). An OSError without a file name, or naming the temporary file (a full disk),
  is raised naming `path`."""
  path = os.fspath(path)
  tmp = None
  try:
    full = os.path.abspath(path)
    os.makedirs(os.path.dirname(full), exist_ok=True)
    tmp = _new_temp(full)
    write(tmp)
    fix_mode(tmp)
    if before_rename is not None:
      before_rename(path)
    os.replace(tmp, path)
  except OSError as e:
    _discard(tmp)
    if e.filename is None or e.filename == tmp:
      raise OSError(e.errno, e.strerror or str(e), path) from None
    raise
  except BaseException:
    _discard(tmp)
    raise


def write_bytes(path, data: bytes, *, before_rename=None) -> None:
  """Writes `data` atomically (`write_atomic`), synced to the disk before the rename."""

  def w(tmp):
    with open(tmp, "wb") as f:
      f.write(data)
      f.flush()
      os.fsync(f.fileno())

  write_atomic(path, w, before_rename=before_rename)


def write_text(path, text: str, *, before_rename=None) -> None:
  """Writes `text` (UTF-8) atomically."""
  write_bytes(path, text.encode("utf-8"), before_rename=before_rename)


def write_json(path, obj, **kw) -> None:
  """`json.dump` to `path` atomically (indent 2, `default=str` unless given)."""
  kw.setdefault("indent", 2)
  kw.setdefault("default", str)
  write_text(path, json.dumps(obj, **kw) + "\n")


def write_image(path, image, *, before_rename=None, **save) -> None:
  """Saves a PIL image (or a uint8 array) atomically; the format follows `path`'s extension
  unless `format=` is given; `save` goes to `PIL.Image.save`."""
  from PIL import Image

  im = image if isinstance(image, Image.Image) else Image.fromarray(image)
  save.setdefault("format", Image.registered_extensions().get(os.path.splitext(path)[1].lower()))
  write_atomic(path, lambda tmp: im.save(tmp, **save), before_rename=before_rename)


class Scratch:
  """Private output folders of a long-lived process (the demo app): one per request under a
  temporary folder `root` that is removed at exit.

  `new(handler)` makes a handler's folder and removes the one its previous call made: the app's
  web framework has copied the files that call returned into its own cache by then (it copies
  returned paths before the response is sent, and each handler runs one call at a time), so
  the page's links stay valid while the process's own copies do not pile up.
  """

  def __init__(self, prefix: str = "incontext_"):
    self.root = tempfile.mkdtemp(prefix=prefix)
    self._last: dict[str, str] = {}
    atexit.register(shutil.rmtree, self.root, ignore_errors=True)

  def new(self, handler: str) -> str:
    old = self._last.pop(handler, None)
    if old:
      shutil.rmtree(old, ignore_errors=True)
    d = tempfile.mkdtemp(dir=self.root)
    self._last[handler] = d
    return d


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
