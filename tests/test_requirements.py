"""requirements.txt, the lock of the `test` extra, agrees with pyproject.toml's ranges.

pyproject.toml keeps ranges and extras; requirements.txt pins the exact versions CI installs
(`bash .ci/lock_requirements.sh` regenerates it). Every core dependency and every package of
the `test` extra (its nested extras expanded) must be pinned there inside pyproject's range.
"""

import importlib.metadata
import itertools
import os
import pathlib

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

try:
  import tomllib
except ModuleNotFoundError:  # Python 3.10
  tomllib = pytest.importorskip("tomli")

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _project(root=ROOT):
  with open(root / "pyproject.toml", "rb") as f:
    return tomllib.load(f)["project"]


def _lock(root=ROOT) -> dict:
  """requirements.txt as {canonical name: Version}; every line a comment or `name==version`."""
  pins = {}
  for n, line in enumerate((root / "requirements.txt").read_text().splitlines(), 1):
    line = line.strip()
    if not line or line.startswith("#"):
      continue
    req = Requirement(line)
    spec = list(req.specifier)
    assert len(spec) == 1 and spec[0].operator == "==" and not req.url, (
      f"requirements.txt:{n}: {line!r} is not an exact pin name==version"
    )
    name = canonicalize_name(req.name)
    assert name not in pins, f"requirements.txt:{n}: {req.name} pinned twice"
    pins[name] = Version(spec[0].version)
  return pins


def _wanted(project) -> list:
  """The core dependencies and the `test` extra, nested `incontext[...]` extras expanded."""
  extras = project["optional-dependencies"]
  own = canonicalize_name(project["name"])
  out, todo, seen = [], list(project["dependencies"]) + list(extras["test"]), set()
  while todo:
    req = Requirement(todo.pop())
    if canonicalize_name(req.name) == own:
      for extra in sorted(req.extras - seen):
        seen.add(extra)
        todo += extras[extra]
    elif req.marker is None or req.marker.evaluate():
      out.append(req)
  return out


def _check_lock(root=ROOT):
  project, pins = _project(root), _lock(root)
  wanted = _wanted(project)
  names = {canonicalize_name(r.name) for r in wanted}
  # The expansion reached the nested extras: core, torch, demo, label, lint and test's own.
  assert {"jax", "torch", "gradio", "pycocotools", "ruff", "pytest", "grain"} <= names
  missing = sorted(names - set(pins))
  assert not missing, f"requirements.txt lacks {missing}; regenerate: bash .ci/lock_requirements.sh"
  outside = [
    f"{r.name}=={pins[canonicalize_name(r.name)]} not in {r.specifier}"
    for r in wanted
    if not r.specifier.contains(pins[canonicalize_name(r.name)], prereleases=True)
  ]
  assert not outside, f"requirements.txt pins outside pyproject.toml's ranges: {outside}"
  assert canonicalize_name(project["name"]) not in pins  # the project itself is not locked


def test_every_test_extra_package_is_pinned_inside_its_range():
  _check_lock()


def test_the_check_sees_a_pin_outside_the_range(tmp_path):
  """The range check can fail: a lock with jax moved off pyproject's `jax==` pin is caught."""
  lock = (ROOT / "requirements.txt").read_text()
  jax = next(line for line in lock.splitlines() if line.startswith("jax=="))
  bad = lock.replace(jax + "\n", "jax==0.0.1\n")
  assert bad != lock
  (tmp_path / "pyproject.toml").write_bytes((ROOT / "pyproject.toml").read_bytes())
  (tmp_path / "requirements.txt").write_text(bad)
  with pytest.raises(AssertionError, match=r"jax==0\.0\.1 not in ==0\.10\.2"):
    _check_lock(tmp_path)
  (tmp_path / "requirements.txt").write_text(bad.replace("jax==0.0.1\n", "jax==0.10.2\n" * 2))
  with pytest.raises(AssertionError, match="jax pinned twice"):
    _lock(tmp_path)
  (tmp_path / "requirements.txt").write_text(bad.replace("jax==0.0.1\n", ""))
  with pytest.raises(AssertionError, match=r"requirements.txt lacks \['jax'\]"):
    _check_lock(tmp_path)


def test_header_names_the_regenerate_command():
  lines = (ROOT / "requirements.txt").read_text().splitlines()
  head = list(itertools.takewhile(lambda line: line.startswith("#"), lines))
  assert "#   bash .ci/lock_requirements.sh" in head
  assert (ROOT / ".ci" / "lock_requirements.sh").is_file()


def test_ci_runs_the_locked_versions():
  """Under CI (which installs requirements.txt first) every pinned package is installed at its
  pinned version; elsewhere a differing environment is only reported (skip)."""
  off = []
  for name, version in sorted(_lock().items()):
    try:
      have = Version(importlib.metadata.version(name))
    except importlib.metadata.PackageNotFoundError:
      off.append(f"{name} not installed")
      continue
    if have.public != version.public or (version.local and have.local != version.local):
      off.append(f"{name} {have} (lock {version})")
  if off and os.environ.get("CI", "").lower() != "true":
    pytest.skip(f"this environment differs from requirements.txt: {', '.join(off)}")
  assert not off, f"CI runs versions other than requirements.txt's: {off}"
