"""The accelerator scripts (experiments/h200_inference.py, h200_train.py) in their --tiny CPU mode:
every section runs in a fresh process and the JSON has the keys the issues ask for, with sane
values. On a CPU the "device" is the CPU itself, so the GPU-vs-CPU comparisons must be exact."""

import json
import math
import os
import subprocess
import sys

import pytest

from _shared import PROJECT_ROOT, shared_data_dir
from experiments import h200_inference


def _run(module, tmp_path, *extra):
  out = tmp_path / "out.json"
  # One CPU device; LLVM's optimisation off: the tiny programs compile in about half the time,
  # and what is checked is values within one process, not speed.
  flags = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
  env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count=1 {flags}")
  env["PYTHONPATH"] = os.pathsep.join([str(PROJECT_ROOT), env.get("PYTHONPATH", "")])
  cmd = [sys.executable, "-m", module, "--tiny", "--out", str(out), *extra]
  p = subprocess.run(cmd, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=900)
  assert p.returncode == 0, p.stderr[-3000:]
  res = json.loads(out.read_text())
  assert res["errors"] == {} and res["skipped"] == [], (res["errors"], res["skipped"])
  assert not list(tmp_path.glob("*.tmp")), "a half-written JSON was left behind"
  return res


def _positive(res, *keys):
  for k in keys:
    v = res[k]
    assert isinstance(v, (int, float)) and math.isfinite(v) and v > 0, (k, v)


@pytest.mark.slow  # a fresh process importing jax, torch and transformers; ~15 compiles
def test_h200_inference_tiny(tmp_path):
  data = shared_data_dir()
  res = _run("experiments.h200_inference", tmp_path, "--data", str(data))
  assert res["device"] == "cpu" and res["model"] == "test (tiny)"
  _positive(
    res,
    "pairs_per_s",
    "speedup_vs_transformers",
    "label_images_per_s",
    "gpu_cpu_label_agreement",
    "latency_s",
    "pairs_per_s_k8",
    "eval_episodes_per_s",
    "label_gpu_busy_share",
  )
  assert res["gpu_cpu_label_agreement"] <= 1 and res["label_gpu_busy_share"] <= 1
  # The "device" is the CPU: the float32 program equals the CPU reference bit for bit.
  assert res["gpu_cpu_max_abs_diff_f32"] == 0.0
  assert res["attention_impl"] == "chunked" and 0 <= res["attention_share"] <= 1
  s = res["sections"]
  assert s["label"]["images"] == 6 and s["label"]["annotations"] >= 0
  assert {"1-shot", "4-shot feature", "4-shot spatial"} <= set(s["eval"]["methods"])
  assert s["transformers"]["bfloat16_compile"]["best"]["pairs_per_s"] > 0
  assert s["attention"]["cudnn_error"]  # no cuDNN on a CPU: recorded, not raised


@pytest.mark.slow  # a fresh process; the train step compiled for 3 remat policies + the trainer
def test_h200_train_tiny(tmp_path):
  data = shared_data_dir()
  res = _run("experiments.h200_train", tmp_path, "--data", str(data))
  assert res["device"] == "cpu"
  _positive(res, "mfu", "examples_per_s", "batch_size", "pipeline_headroom", "peak_tflops_measured")
  assert res["remat"] in ("none", "dots", "full")
  rows = res["sections"]["sweep"]["rows"]
  assert [(r["remat"], r["batch"]) for r in rows] == [("none", 2), ("dots", 2), ("full", 2)]
  for r in rows:
    assert r["fits"] and r["memory_gib"]["temp"] > 0 and math.isfinite(r["loss"]), r
  # Recomputation is counted by XLA: full remat does more FLOPs than none.
  assert rows[2]["xla_flops"] > rows[0]["xla_flops"]
  p = res["paper_run"]
  assert p["steps"] == 4 and math.isfinite(p["loss_last"])
  assert p["checkpoint_params_equal_exported"] is True
  assert p["state_round_trip_bit_exact"] is True
  # Same backend on both sides here: the resumed loss is the same number.
  assert p["next_loss_rel_diff"] == 0.0 and p["cpu_resume_ok"] is True


def test_batch_search_stops_when_the_rate_stops_growing_or_memory_runs_out():
  rates = {1: 10.0, 2: 19.0, 4: 30.0, 8: 31.0, 16: 60.0}
  best, rows = h200_inference.search_batch(
    lambda b: dict(per_s=rates[b]), h200_inference.Budget(60), sizes=[1, 2, 4, 8, 16]
  )
  assert best["batch"] == 8 and [r["batch"] for r in rows] == [1, 2, 4, 8]  # 31 < 1.05 * 30

  def oom(b):
    if b > 2:
      raise MemoryError("RESOURCE_EXHAUSTED: out of memory")
    return dict(per_s=float(b))

  best, rows = h200_inference.search_batch(oom, h200_inference.Budget(60), sizes=[1, 2, 4, 8])
  assert best["batch"] == 2 and rows[-1]["batch"] == 4 and "MemoryError" in rows[-1]["error"]
  best, rows = h200_inference.search_batch(oom, h200_inference.Budget(-1), sizes=[1, 2])
  assert best is None and rows == [dict(batch=1, skipped="time budget")]


@pytest.mark.parametrize("module", ["experiments.h200_inference", "experiments.h200_train"])
def test_device_scripts_reject_bad_settings(module, tmp_path, capsys):
  import importlib

  mod = importlib.import_module(module)
  with pytest.raises(SystemExit) as e:
    mod.main(["--out", str(tmp_path / "x.json"), "--skip", "nothing"])
  assert e.value.code == 2 and "--skip: unknown sections ['nothing']" in capsys.readouterr().err
  with pytest.raises(SystemExit) as e:
    mod.main(["--out", str(tmp_path / "no" / "x.json")])
  assert e.value.code == 2 and "does not exist" in capsys.readouterr().err


@pytest.mark.slow  # builds both tiny models (imports torch and transformers) and compiles twice
def test_h200_inference_falls_back_to_fused_attention_when_auto_fails(tmp_path, monkeypatch):
  """A failing "auto" attention (on a GPU: cuDNN's kernel not compiling) costs the first try
  of the `ours` section, not the run: it is recorded and measured again with "fused"."""
  from incontext.models import seggpt

  def broken(*a):
    raise RuntimeError("no kernel for this attention")

  monkeypatch.setitem(seggpt.ATTEND_IMPLS, "chunked", broken)  # what "auto" picks on a CPU
  out = tmp_path / "o.json"
  skip = "transformers,attention,parity,label,eval"
  res = h200_inference.main(["--tiny", "--out", str(out), "--skip", skip])
  assert "no kernel for this attention" in res["sections"]["ours_auto_attention"]["error"]
  assert res["sections"]["ours"]["attention_setting"] == "fused (auto failed)"
  assert res["errors"] == {} and res["pairs_per_s"] > 0
  assert json.loads(out.read_text())["pairs_per_s"] == res["pairs_per_s"]
