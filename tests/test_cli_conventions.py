"""CLI conventions: --help without jax, exit 2 + one line for user errors, exit 1 + traceback
for bugs, a quiet console by default (-v shows library logs), the on-disk compilation cache.

Each test runs `python -m incontext.cli` in a fresh process (what a user runs), from the
project root so this checkout's `incontext` is imported.
"""

import os
import re
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from incontext import checkpoint
from incontext.models import seggpt

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _cli(args, env=None, code=None, timeout=300):
  """Runs the CLI (or `code`, a Python snippet) in a fresh process: CompletedProcess."""
  e = dict(os.environ, PYTHONPATH=str(ROOT), INCONTEXT_COMPILE_CACHE="0")
  e.pop("XLA_FLAGS", None)  # a user's process: one CPU device
  e.update(env or {})
  cmd = [sys.executable, "-c", code] if code else [sys.executable, "-m", "incontext.cli"]
  return subprocess.run(
    cmd + [str(a) for a in args], cwd=ROOT, env=e, capture_output=True, text=True, timeout=timeout
  )


@pytest.fixture(scope="module")
def files(tmp_path_factory):
  """A tiny params directory, one image and one 0/1 mask."""
  d = tmp_path_factory.mktemp("conv")
  checkpoint.save_model(
    str(d / "params"), seggpt.create("test", image_size=(32, 32), patch=8, drop_path=0.0, seed=2)
  )
  rng = np.random.default_rng(0)
  Image.fromarray(rng.integers(0, 256, (40, 36, 3), dtype=np.uint8)).save(d / "img.png")
  m = np.zeros((40, 36), np.uint8)
  m[5:30, 4:20] = 1
  Image.fromarray(m).save(d / "mask.png")
  return d


def _segment_args(d, out):
  return [
    "segment",
    "--checkpoint",
    d / "params",
    "--prompt",
    d / "img.png",
    d / "mask.png",
    "--query",
    d / "img.png",
    "--out",
    out,
  ]


@pytest.mark.integration
def test_help_imports_no_jax():
  code = (
    "import sys; from incontext import cli\n"
    "for argv in (['--help'], ['segment', '--help'], ['segment-video', '--help']):\n"
    "  try:\n    cli.main(argv)\n  except SystemExit:\n    pass\n"
    "heavy = sorted(m for m in ('jax', 'flax', 'orbax', 'torch', 'tensorflow') "
    "if m in sys.modules)\n"
    "print('HEAVY', heavy)"
  )
  r = _cli([], code=code)
  assert r.returncode == 0, r.stderr
  assert "HEAVY []" in r.stdout
  assert "--no-compile-cache" in r.stdout and "segment-video" in r.stdout


@pytest.mark.integration
def test_user_error_is_one_line_and_exit_2(files, tmp_path):
  r = _cli(
    [
      "segment",
      "--checkpoint",
      files / "params",
      "--prompt",
      files / "img.png",
      files / "nope.png",
      "--query",
      files / "img.png",
      "--out",
      tmp_path / "o",
    ]
  )
  assert r.returncode == 2
  lines = r.stderr.strip().splitlines()
  assert len(lines) == 1, r.stderr
  assert lines[0].startswith("incontext segment: error: ") and "nope.png" in lines[0]
  assert not (tmp_path / "o").exists()


@pytest.mark.integration
def test_bug_keeps_its_traceback_and_exit_1(files, tmp_path):
  """An exception that is not a user error (here a KeyError and a plain ValueError raised by
  a command) is a bug: the full traceback, status 1."""
  for exc in ("KeyError('boom')", "ValueError('boom')"):
    code = (
      "import sys; from incontext import cli; from incontext.commands import segment\n"
      f"def run(args):\n  raise {exc}\n"
      "segment.run = run\nsys.exit(cli.main(sys.argv[1:]))"
    )
    r = _cli(_segment_args(files, tmp_path / "o"), code=code)
    assert r.returncode == 1, r.stderr
    assert "Traceback (most recent call last)" in r.stderr and "boom" in r.stderr
    assert "error:" not in r.stderr


def test_user_errors_are_user_errors():
  from incontext import errors, imageio, prompts, video
  from incontext.models import convert

  from experiments.configs import common
  from incontext import outputs
  from incontext.data import sources
  from incontext.train import workdir

  for e in (
    imageio.InputError,
    checkpoint.CheckpointError,
    convert.ConversionError,
    prompts.PromptError,
    video.VideoError,
    outputs.OutputError,
    workdir.RunError,
    sources.DataError,
    common.DataDirError,
  ):
    assert issubclass(e, errors.UserError) and issubclass(e, ValueError)
  assert errors.is_user_error(FileNotFoundError(2, "No such file", "x.png"))
  # A mesh setting that does not fit the devices is the user's (train, tune: --config.mesh).
  from incontext import mesh

  for spec in ([("data", 3)], [("data", -1), ("model", -1)], [("data", -1), ("model", 3)]):
    with pytest.raises(errors.UserError, match=r"^mesh \["):
      mesh.resolve_shape(spec, 2)
  assert not errors.is_user_error(ValueError("x")) and not errors.is_user_error(KeyError("x"))


@pytest.mark.integration
def test_quiet_warnings_are_one_plain_line(files, tmp_path):
  """A warning in a quiet run reads `warning: ...` (not logging's `WARNING:incontext...`)."""
  proc = tmp_path / "proc"
  checkpoint.save_model(
    str(proc),
    seggpt.create("test", image_size=(32, 32), patch=8, drop_path=0.0, seed=2),
    trained_on={"data": "procedural", "steps": 5},
  )
  args = _segment_args(files, tmp_path / "o")
  args[args.index("--checkpoint") + 1] = proc
  r = _cli(args)
  assert r.returncode == 0, r.stderr
  warn = [l for l in r.stderr.splitlines() if "procedural shapes only" in l]
  assert len(warn) == 1 and warn[0].startswith(f"warning: {proc}: this model was trained"), warn
  assert "WARNING" not in r.stderr, r.stderr


@pytest.mark.integration
def test_quiet_by_default_and_the_compile_cache(files, tmp_path):
  """A normal run prints only its result and progress (no orbax / absl INFO lines); with the
  cache on, the first run writes compiled programs and a second process loads them all
  (-v reports jax's cache-hit events) and writes nothing new."""
  cache = tmp_path / "cache"
  env = {"INCONTEXT_COMPILE_CACHE": "1", "INCONTEXT_CACHE_DIR": str(cache)}
  r = _cli(_segment_args(files, tmp_path / "o1"), env=env)
  assert r.returncode == 0, r.stderr
  assert "wrote 1 segmentations" in r.stdout
  noise = [l for l in r.stderr.splitlines() if "INFO" in l or "WARNING" in l or "absl" in l]
  assert not noise, r.stderr
  written = sorted(os.listdir(cache))
  assert written  # the model's forward was cached
  r = _cli(["-v"] + _segment_args(files, tmp_path / "o2"), env=env)
  assert r.returncode == 0, r.stderr
  # -v shows the libraries' logs: here XLA's C++ INFO lines (orbax's absl lines no longer come,
  # the params being read from their safetensors copy)
  assert re.search(r"^I\d{4} .*\.cc:\d+\]", r.stderr, re.M), r.stderr
  line = next(l for l in r.stderr.splitlines() if "compilation cache" in l)
  loaded = int(line.split(": ")[-1].split()[0])
  assert loaded >= 1 and "0 compiled and written" in line, line
  assert sorted(os.listdir(cache)) == written
  np.testing.assert_array_equal(
    np.asarray(Image.open(tmp_path / "o1" / "img.png")),
    np.asarray(Image.open(tmp_path / "o2" / "img.png")),
  )


_NO_JAX = (
  "import sys; from incontext import cli; rc = cli.main(sys.argv[1:]); "
  "print('jax imported' if 'jax' in sys.modules else 'no jax', file=sys.stderr); sys.exit(rc)"
)


@pytest.mark.integration
def test_input_errors_come_before_jax(files, tmp_path):
  """Argument, path and file-format errors are found before jax is imported (so they take
  well under a second): exit 2, one error line, and jax not in sys.modules. From a scratch
  working folder with relative paths, as a user types them."""
  os.symlink(files, tmp_path / "f")
  (tmp_path / "notes.png").write_text("not an image")
  seg = ["segment", "--prompt", "f/img.png", "f/mask.png", "--query", "f/img.png", "--out", "o"]
  cases = [
    (["segment", "--checkpoint", "missing"] + seg[1:], "missing: no such checkpoint directory"),
    (
      ["segment", "--checkpoint", "f/params", "--prompt", "f/img.png", "notes.png"] + seg[4:],
      "notes.png: cannot read mask",
    ),
    (
      ["segment", "--checkpoint", "f/params"] + seg[1:4] + ["--query", "nope.jpg", "--out", "o"],
      "nope.jpg: no such query image file",
    ),
    (
      ["label", "--checkpoint", "missing", "--images", "f", "--out", "o"],
      "give at least one --prompt",
    ),
    (
      [
        "label",
        "--checkpoint",
        "f/params",
        "--prompt",
        "f/img.png",
        "f/mask.png",
        "--images",
        "none/",
        "--out",
        "o",
      ],
      "none/: no such image file or folder",
    ),
    (
      [
        "segment-video",
        "--checkpoint",
        "missing",
        "--frames",
        "f",
        "--first-mask",
        "f/mask.png",
        "--out",
        "o",
      ],
      "missing: no such checkpoint directory",
    ),
    (["export-hf", "--checkpoint", "f/img.png", "--out", "hf"], "f/img.png: is a file"),
    (["convert", "--source", "nothere.pth", "--out", "ck"], "nothere.pth: no such file"),
    (["export-prompt", "--workdir", "f", "--out", "p.npz"], "f: not a tuning workdir"),
  ]
  for argv, want in cases:
    e = dict(os.environ, PYTHONPATH=str(ROOT), INCONTEXT_COMPILE_CACHE="1")
    r = subprocess.run(
      [sys.executable, "-c", _NO_JAX, *argv],
      cwd=tmp_path,
      env=e,
      capture_output=True,
      text=True,
      timeout=120,
    )
    lines = r.stderr.splitlines()
    assert r.returncode == 2 and len(lines) == 2, (argv, r.stderr)
    assert lines[0].startswith(f"incontext {argv[0]}: error: ") and want in lines[0], lines
    assert lines[1] == "no jax", (argv, r.stderr)
  assert sorted(os.listdir(tmp_path)) == ["f", "notes.png"]  # nothing written
