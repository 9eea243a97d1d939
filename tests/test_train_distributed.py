"""Two jax.distributed processes on localhost (4 CPU devices each, gloo collectives) train
the same config as one 8-device process: the losses agree to rtol 1e-5 (the per-host batches
hold the same samples, only the reduction order differs)."""

import json
import os
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from incontext.train import trainer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

WORKER = textwrap.dedent("""
    import sys
    import jax
    jax.config.update("jax_default_matmul_precision", "highest")
    port, pid, workdir = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    jax.distributed.initialize(f"127.0.0.1:{port}", num_processes=2, process_id=pid)
    assert jax.process_count() == 2 and jax.device_count() == 8, jax.devices()
    sys.path.insert(0, "tests")
    from test_train_distributed import config
    from incontext.train import trainer
    trainer.run(config(), workdir)
""")


def config():
  from experiments.configs import seggpt_train

  c = seggpt_train.get_config("quickstart,runlocal")
  c.total_steps = 2
  c.evals.every = 0
  c.evals.at_end = False
  c.export_params = False
  c.ckpt.every = 0  # only the final (multi-host) checkpoint
  c.mesh = [("data", 4), ("fsdp", 2)]
  c.sharding_rules = "fsdp"
  return c


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _losses(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(l)["train/loss"] for l in f]


@pytest.mark.slow  # ~4 min on 2 busy cores (3 compiles)
def test_two_process_run_matches_single_process(tmp_path):
  port = _free_port()
  multi = str(tmp_path / "multi")
  env = dict(
    os.environ,
    XLA_FLAGS="--xla_force_host_platform_device_count=4",
    JAX_PLATFORMS="cpu",
    PYTHONPATH=ROOT,
  )
  procs = [
    subprocess.Popen(
      [sys.executable, "-c", WORKER, str(port), str(i), multi],
      cwd=ROOT,
      env=env,
      stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT,
      text=True,
    )
    for i in range(2)
  ]
  outs = []
  for p in procs:
    try:
      outs.append(p.communicate(timeout=600)[0])
    except subprocess.TimeoutExpired:
      for q in procs:
        q.kill()
      raise
  for p, out in zip(procs, outs):
    assert p.returncode == 0, out[-3000:]
  single = str(tmp_path / "single")
  trainer.run(config(), single)
  a, b = _losses(multi), _losses(single)
  assert len(a) == len(b) == 2
  np.testing.assert_allclose(a, b, rtol=1e-5)
  assert os.path.isdir(os.path.join(multi, "checkpoints", "2"))
