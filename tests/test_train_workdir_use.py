"""A training run as a user meets it afterwards: `--checkpoint WORKDIR` (its params/, else its
newest checkpoint, named on stderr), a rerun of the finished command prints its final result
again, and predictions.png has column headers. One tiny real run (runlocal, 2 steps) from a
scratch working folder with relative paths."""

import os
import shutil

import numpy as np
import pytest
from PIL import Image

from _shared import run_train
from incontext import checkpoint, cli
from incontext.train import plots

# Every test here trains the quickstart model in a subprocess: integration tier.
pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  """(tmp folder, the train command's result): workdir `wd`, 2 steps, an evaluation at the
  end, a checkpoint at step 2 and params/."""
  d = tmp_path_factory.mktemp("trainrun")
  r = run_train(d / "wd", "--config.total_steps=2", preset="quickstart,runlocal", timeout=900)
  assert r.returncode == 0, r.stderr[-3000:]
  return d, r


def _segment(ckpt, out):
  q = "q.png"
  return ["segment", "--checkpoint", ckpt, "--prompt", q, "m.png", "--query", q, "--out", out]


def test_checkpoint_may_be_a_training_workdir(run, tmp_path, monkeypatch, capsys):
  d, _ = run
  monkeypatch.chdir(tmp_path)
  shutil.copytree(d / "wd", "wd")
  rng = np.random.default_rng(0)
  Image.fromarray(rng.integers(0, 256, (24, 20, 3), dtype=np.uint8)).save("q.png")
  m = np.zeros((24, 20), np.uint8)
  m[4:16, 3:12] = 1
  Image.fromarray(m).save("m.png")
  assert cli.main(_segment("wd/params", "direct")) == 0
  capsys.readouterr()
  assert cli.main(_segment("wd", "from_wd")) == 0
  err = capsys.readouterr().err.splitlines()
  assert err[0] == "incontext: wd: a training workdir; using its params wd/params", err
  # Without params/ (a run still going, or export_params=False): the newest checkpoint, which
  # after the last step holds the same weights.
  shutil.rmtree("wd/params")
  assert cli.main(_segment("wd", "from_ckpt")) == 0
  err = capsys.readouterr().err.splitlines()
  assert err[0] == (
    "incontext: wd: a training workdir without exported params; using its newest checkpoint, "
    "wd/checkpoints/2"
  ), err
  want = np.asarray(Image.open("direct/q.png"))
  for out in ("from_wd", "from_ckpt"):
    np.testing.assert_array_equal(np.asarray(Image.open(f"{out}/q.png")), want)
  # The checkpoint's model comes from the run's model.json (the trainer writes it; checkpoint
  # sits below the trainer and does not read its settings): its steps are the checkpoint's.
  meta = checkpoint.read_meta("wd")
  assert meta["trained_on"] == {"data": "procedural", "steps": 2, "init": "scratch"}, meta
  assert meta["config"] == checkpoint.read_meta(str(d / "wd" / "params"))["config"]
  os.remove("wd/model.json")
  assert cli.main(_segment("wd", "o")) == 2
  err = capsys.readouterr().err
  assert "wd/model.json: missing (a training workdir from an older version" in err, err
  # A folder that is neither is refused in one line that says what is accepted.
  os.mkdir("empty")
  assert cli.main(_segment("empty", "o")) == 2
  err = capsys.readouterr().err
  assert "not an incontext params directory (no incontext.json), training workdir or tuning" in err


def test_bar_shows_evaluating_and_a_rerun_prints_the_result(run):
  d, first = run
  final = [l for l in first.stdout.splitlines() if l.startswith("final step 2: few-shot mIoU")]
  assert len(final) == 1, first.stdout
  assert "train (evaluating)" in first.stderr  # the bar said so while it evaluated
  again = run_train(d / "wd", "--config.total_steps=2", preset="quickstart,runlocal", timeout=900)
  assert again.returncode == 0, again.stderr[-3000:]
  assert final[0] in again.stdout.splitlines(), again.stdout


def test_predictions_png_has_column_headers(run):
  d, _ = run
  im = np.asarray(Image.open(d / "wd" / "predictions.png").convert("L"))
  head, body = im[:18], im[18:]
  assert body.shape[0] > 0 and (body < 250).any()
  cw = im.shape[1] / len(plots.COLUMNS)
  assert len(plots.COLUMNS) == 5
  for i in range(5):  # each column's header strip holds dark text pixels on white
    strip = head[:, int(i * cw) : int((i + 1) * cw)]
    assert (strip < 128).sum() > 20 and (strip == 255).mean() > 0.5, i


def test_one_run_at_a_time_holds_a_workdir_and_an_output_folder_is_refused(tmp_path):
  from incontext import outputs
  from incontext.train import workdir as wd

  with wd.hold(tmp_path / "w") as w:
    assert os.listdir(w) == [outputs.LOCK]
    with pytest.raises(outputs.OutputError) as e:  # a second run into it meanwhile
      with wd.hold(w):
        pass
    msg = str(e.value)
    assert msg.startswith(f"{w}: another incontext run (process {os.getpid()})"), msg
    assert "\n" not in msg
  assert os.listdir(w) == []  # the lock file goes with the run
  with wd.hold(w):  # released: the next run (a resume) holds it
    pass
  seg = tmp_path / "seg"
  with outputs.OutputDir(seg, command="segment") as o:
    with open(o.path("a.png"), "w") as f:
      f.write("x")
  before = sorted(os.listdir(seg))
  with pytest.raises(wd.RunError, match=rf"workdir {seg}: is the output folder of `segment`"):
    wd.prepare(str(seg))
  assert sorted(os.listdir(seg)) == before
