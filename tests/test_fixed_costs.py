"""The fixed costs of a call: params read from their safetensors inference copy, weights hashed
once per unchanged checkpoint, and the breakdown that `--profile` prints (incontext/timing.py)."""

import os
import pathlib
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from incontext import checkpoint, timing
from incontext.models import seggpt

ROOT = pathlib.Path(__file__).resolve().parents[1]
SIZE = (32, 32)


@pytest.fixture
def cache(tmp_path, monkeypatch):
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
  return tmp_path / "cache" / "incontext" / "verified"


@pytest.fixture
def params(tmp_path):
  d = tmp_path / "params"
  checkpoint.save_model(str(d), seggpt.create("test", image_size=SIZE, patch=8, seed=1))
  return d


def _count_hashes(monkeypatch) -> list:
  calls = []
  real = checkpoint.verify_model
  monkeypatch.setattr(
    checkpoint, "verify_model", lambda *a, **k: (calls.append(a[0]), real(*a, **k))[1]
  )
  return calls


def _largest_file(d: pathlib.Path) -> pathlib.Path:
  return max((p for p in d.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)


def test_the_inference_copy_holds_the_orbax_weights_exactly(params, cache):
  assert (params / checkpoint.INFERENCE_COPY).is_file()
  want = checkpoint.read_meta(str(params))["weights_hash"]
  from_copy = checkpoint.load_model(str(params))
  assert checkpoint.params_hash(from_copy) == want
  os.rename(params / checkpoint.INFERENCE_COPY, params.parent / "away.safetensors")
  from_orbax = checkpoint.load_model(str(params))  # a directory written before the copy
  assert checkpoint.params_hash(from_orbax) == want


@pytest.mark.parametrize("fault", ["missing array", "wrong shape", "truncated"])
def test_a_bad_inference_copy_is_a_one_line_error(params, cache, fault):
  import safetensors.numpy as stn

  path = params / checkpoint.INFERENCE_COPY
  arrays = stn.load_file(str(path))
  name = sorted(arrays)[0]
  if fault == "missing array":
    del arrays[name]
  elif fault == "wrong shape":
    arrays[name] = arrays[name].reshape(-1)[:-1] if arrays[name].size > 1 else arrays[name][None]
  if fault == "truncated":
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
  else:
    stn.save_file(arrays, str(path))
  with pytest.raises(checkpoint.CheckpointError, match=rf"^{params}: cannot restore params") as e:
    checkpoint.load_model(str(params))
  assert "\n" not in str(e.value)


def test_unchanged_weights_are_hashed_once(params, cache, monkeypatch):
  calls = _count_hashes(monkeypatch)
  checkpoint.load_model(str(params))
  assert len(calls) == 1 and len(list(cache.iterdir())) == 1
  checkpoint.load_model(str(params))
  checkpoint.load_model(str(params))
  assert len(calls) == 1  # the stamp stands for the hash of the same files


def test_a_changed_file_is_hashed_again_and_caught(params, cache, monkeypatch):
  """A byte changed in place (same size), even with its mtime set back, changes the stamp key:
  the key holds the files' ctime, which a write moves and utime cannot set back."""
  checkpoint.load_model(str(params))
  meta = checkpoint.read_meta(str(params))
  key = checkpoint._stamp_key(str(params), meta)
  assert checkpoint._has_stamp(key)
  f = _largest_file(params)  # the inference copy, which load_model reads
  st = f.stat()
  data = bytearray(f.read_bytes())
  data[len(data) // 2] ^= 0xFF
  time.sleep(0.01)
  f.write_bytes(bytes(data))
  os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))  # hide the write from mtime
  assert f.stat().st_size == st.st_size and f.stat().st_mtime_ns == st.st_mtime_ns
  assert not checkpoint._has_stamp(checkpoint._stamp_key(str(params), meta))
  with pytest.raises(ValueError, match=str(params)):  # the hash (or the restore) refuses it
    checkpoint.load_model(str(params))


def test_a_replaced_checkpoint_at_the_same_path_is_hashed_again(params, cache, monkeypatch):
  calls = _count_hashes(monkeypatch)
  checkpoint.load_model(str(params))
  other = seggpt.create("test", image_size=SIZE, patch=8, seed=2)
  checkpoint.save_model(str(params), other, overwrite=True)
  model = checkpoint.load_model(str(params))
  assert len(calls) == 2
  assert checkpoint.params_hash(model) == checkpoint.params_hash(other)


def test_no_stamp_when_verification_fails_or_the_cache_is_unwritable(params, cache, monkeypatch):
  meta_path = params / checkpoint.META
  meta_path.write_text(meta_path.read_text().replace('"weights_hash": "', '"weights_hash": "0'))
  for _ in range(2):  # refused every time: a failed check leaves no stamp
    with pytest.raises(checkpoint.CheckpointError, match="recorded sha256"):
      checkpoint.load_model(str(params))
  assert not cache.exists() or not list(cache.iterdir())
  blocker = cache.parent.parent / "file"
  blocker.parent.mkdir(parents=True, exist_ok=True)
  blocker.write_text("")
  monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))  # a file: no stamp folder can be made
  d2 = params.parent / "p2"
  checkpoint.save_model(str(d2), seggpt.create("test", image_size=SIZE, patch=8, seed=1))
  checkpoint.load_model(str(d2))  # still loads; only the stamp is missing


def test_phases_nest_and_add_up_to_the_wall_time():
  timing.reset()
  with timing.phase("outer"):
    time.sleep(0.05)
    with timing.phase("inner"):
      time.sleep(0.1)
  b = timing.breakdown()
  assert 0.09 < b["inner"] < 0.5
  assert 0.04 < b["outer"] < 0.09 + 0.3  # the inner phase is taken out of the outer one
  parts = sum(v for k, v in b.items() if k != "total")
  assert parts == pytest.approx(b["total"], abs=1e-6)


def test_compilation_is_split_out_of_the_phase_that_triggered_it():
  import jax
  import jax.numpy as jnp

  timing.reset()
  f = jax.jit(lambda x: jnp.sin(x) @ jnp.cos(x).T + 0.123456)  # a program not compiled before
  x = jnp.ones((64, 64))
  with timing.phase("forward"):
    f(x).block_until_ready()
  b = timing.breakdown()
  assert b.get("compile", 0) > 0
  with timing.phase("restore", compiles=False):
    jax.eval_shape(lambda x: x * 2.5, x)
  assert timing.breakdown()["compile"] == b["compile"]


@pytest.mark.integration
def test_profile_prints_every_phase_of_a_segment_call(tmp_path):
  rng = np.random.default_rng(0)
  Image.fromarray(rng.integers(0, 256, (40, 36, 3), dtype=np.uint8)).save(tmp_path / "img.png")
  m = np.zeros((40, 36), np.uint8)
  m[5:30, 4:20] = 1
  Image.fromarray(m).save(tmp_path / "mask.png")
  checkpoint.save_model(str(tmp_path / "params"), seggpt.create("test", image_size=SIZE, patch=8))
  env = dict(os.environ, PYTHONPATH=str(ROOT), INCONTEXT_COMPILE_CACHE="0")
  env.pop("XLA_FLAGS", None)
  args = "segment --profile --checkpoint params --prompt img.png mask.png --query img.png --out o"
  r = subprocess.run(
    [sys.executable, "-m", "incontext.cli", *args.split()],
    cwd=tmp_path,
    env=env,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert r.returncode == 0, r.stderr
  got = timing.parse_report(r.stderr)
  line = r.stderr[r.stderr.index("time breakdown") :]
  want = "start-up imports checks restore verify compile decode forward post-process write"
  assert set(want.split()) | {"other", "total"} == set(got), line
  assert sum(v for k, v in got.items() if k != "total") == pytest.approx(got["total"], abs=0.1)
  assert (tmp_path / "o" / "img.png").is_file()


def test_stamp_pruning_removes_only_old_stamps(params, cache, monkeypatch):
  """Above STAMP_LIMIT the oldest stamps go; anything else in the folder is never touched."""
  monkeypatch.setattr(checkpoint, "STAMP_LIMIT", 2)
  cache.mkdir(parents=True)
  (cache / "notes.txt").write_text("mine")
  old = ["0" * 64, "1" * 64]
  for i, name in enumerate(old):
    (cache / name).write_text("")
    os.utime(cache / name, ns=(i, i))  # older than any new stamp
  checkpoint.load_model(str(params))
  left = sorted(p.name for p in cache.iterdir())
  assert "notes.txt" in left and old[0] not in left and len(left) == 3, left
