"""Test setup: 8 fake CPU devices (set before jax is imported) and shared fixtures."""

import os

import pytest
from _shared import run_train

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# The CLI keeps compiled programs in ~/.cache by default; tests leave no files there.
os.environ.setdefault("INCONTEXT_COMPILE_CACHE", "0")

import jax  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")  # f32 matmuls: parity on any backend


@pytest.fixture(scope="session")
def quickstart_run(tmp_path_factory):
  """The README's quickstart command, run once per session (~2-3 min on 2 idle cores):
  (workdir, stdout). Used by the slow tests that need the trained quickstart model."""
  wd = tmp_path_factory.mktemp("quickstart") / "qs"
  r = run_train(wd)
  assert r.returncode == 0, r.stderr[-3000:]
  return wd, r.stdout
