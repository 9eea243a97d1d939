"""experiments/bench_cli.py runs end to end (--tiny): the CLI cold/warm vs the transformers
script, and the video memory before/after. Numbers are printed, not asserted (no timing
assertions); the run must finish and the two implementations' masks must agree."""

import pytest

pytest.importorskip("transformers")


@pytest.mark.slow
def test_bench_cli_tiny_runs_end_to_end(capsys):
  from experiments import bench_cli

  res = bench_cli.main(["--tiny", "--memories", "0,2"])
  s, v = res["segment"], res["video"]
  assert s["cli_cold_s"] > 0 and s["cli_warm_s"] > 0 and min(s["transformers_s"]) > 0
  # Same weights, same pre/post-processing: the label masks agree (a few pixels may flip
  # where the random tiny model's output sits at the decision boundary).
  assert s["mask_agreement"] >= 0.95, s
  assert all(v[f"K={k} {w}"] > 0 for k in (0, 2) for w in ("before", "after"))
  out = capsys.readouterr().out
  assert "incontext cold" in out and "K=2: before" in out
