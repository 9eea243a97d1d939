"""The core package runs without the heavy extras (tensorflow, TFDS, grain, torch, transformers).

A subprocess marks those modules as missing (`sys.modules[name] = None`, so any import of them
raises ImportError), imports the inference-path modules, then writes a tiny model as a
transformers-layout safetensors file, converts it and segments a real photo through the CLI.
CI also installs the core alone in a fresh venv (.ci/run, .ci/core_smoke.py).
"""

import os
import subprocess
import sys
import textwrap

import pytest
from PIL import Image

from _shared import PROJECT_ROOT, shared_data_dir

# Every test here runs a fresh interpreter with the heavy extras blocked: integration tier.
pytestmark = pytest.mark.integration

HEAVY = ("tensorflow", "tensorflow_datasets", "grain", "torch", "transformers")

IMPORTS = """
import sys
for name in {heavy!r}:
  sys.modules[name] = None           # `import name` now raises ImportError
import importlib
for mod in ("incontext.inference", "incontext.video", "incontext.prompts", "incontext.cli",
            "incontext.imageio", "incontext.checkpoint", "incontext.models.convert",
            *("incontext.commands." + c for c in ("segment", "segment_video", "convert",
                                                 "export_hf", "export_prompt"))):
  importlib.import_module(mod)
from incontext import cli
cli.build_parser()
"""

SCRIPT = (
  IMPORTS
  + """
from flax import nnx
from incontext import checkpoint, cli
from incontext.commands import export_hf
from incontext.models import seggpt
work, ex = sys.argv[1], sys.argv[2]
cfg = seggpt.get_config("test", depth=12, feature_layers=seggpt.default_feature_layers(12),
                        image_size=(16, 16), patch=8)
checkpoint.save_model(work + "/tiny", seggpt.SegGPT(cfg, rngs=nnx.Rngs(0)))
export_hf.export_hf(work + "/tiny", work + "/hf")
assert cli.main(["convert", "--source", work + "/hf/model.safetensors",
                 "--out", work + "/ckpt"]) == 0
# a procedural-only model: the segment command says so on stderr
checkpoint.save_model(work + "/proc", seggpt.SegGPT(cfg, rngs=nnx.Rngs(0)),
                      trained_on={{"data": "procedural", "steps": 5}})
for ck, out in (("ckpt", "out"), ("proc", "out_proc")):
  rc = cli.main(["segment", "--checkpoint", work + "/" + ck, "--prompt", ex + "/hmbb_1.jpg",
                 ex + "/hmbb_1_target.png", "--query", ex + "/hmbb_2.jpg",
                 "--out", work + "/" + out])
  assert rc == 0, rc
assert not [m for m in {heavy!r} if sys.modules.get(m) is not None]
"""
)


def _run(script, *args, cwd):
  env = dict(os.environ, PYTHONPATH=str(PROJECT_ROOT))
  return subprocess.run(
    [sys.executable, "-c", textwrap.dedent(script.format(heavy=HEAVY)), *map(str, args)],
    env=env,
    cwd=str(cwd),
    capture_output=True,
    text=True,
    timeout=600,
  )


def test_inference_modules_import_without_heavy_extras(tmp_path):
  p = _run(IMPORTS, cwd=tmp_path)
  assert p.returncode == 0, p.stderr[-3000:]


DEMO = (
  IMPORTS
  + """
import os
for mod in ("incontext.app", "incontext.commands.demo", "incontext.commands.label"):
  importlib.import_module(mod)
from incontext import app
app.build_app(object(), examples=True)  # the procedural examples are drawn here
rows = app.procedural_examples(sys.argv[1])
assert len(rows) == 3 and all(os.path.getsize(f) > 0 for r in rows for f in r), rows
"""
)


def test_demo_and_its_examples_without_the_train_extra(tmp_path):
  """`pip install 'incontext[demo,label]'` (the README's line) has no grain: the app still
  builds, with its procedural examples (numpy only)."""
  pytest.importorskip("gradio")
  p = _run(DEMO, tmp_path, cwd=tmp_path)
  assert p.returncode == 0, p.stderr[-3000:]


@pytest.mark.slow  # ~25 s of CPU (a subprocess: jax start-up, convert, two segment runs)
def test_segment_runs_without_heavy_extras(tmp_path):
  ex = shared_data_dir("examples", "seggpt_examples", "examples")
  p = _run(SCRIPT, tmp_path, ex, cwd=tmp_path)
  assert p.returncode == 0, p.stderr[-3000:]
  for out in ("out", "out_proc"):
    assert sorted(os.listdir(tmp_path / out)) == [
      ".incontext-outputs.json",
      "hmbb_2.png",
      "hmbb_2_overlay.png",
      "labels.json",
    ]
    assert Image.open(tmp_path / out / "hmbb_2.png").mode == "P"
  warn = [ln for ln in p.stderr.splitlines() if "procedural shapes only" in ln]
  assert len(warn) == 1 and "proc" in warn[0] and "(5 steps)" in warn[0], p.stderr[-2000:]
