"""End-to-end speed of a first answer: `incontext segment` vs a transformers script, and video.

Prints, in one run:
  1. wall time of one `incontext segment` call (1 prompt, 1 query, fresh process each) with an
     empty compilation cache (cold) and again with the cache that call filled (warm), beside
     a fresh-process transformers script doing the same work (load the model, the
     `SegGptImageProcessor`, forward, `post_process_semantic_segmentation`, write the mask
     PNG), with ratios. The weights are random: a transformers `SegGptForImageSegmentation`
     at the default L/16 config with its own random init, `save_pretrained`, then converted
     with `incontext convert` into a params directory; both sides read the same files.
     The transformers script runs twice (before and after the CLI calls; the faster counts)
     so the OS file cache favours neither side. Each CLI call runs with `--profile`: its time
     breakdown (start-up, imports, restore, verify, compile, forward, ...) is printed too.
  2. `segment-video` propagation speed (frames/s, in process, compilation included, as a
     user sees it) at memory K = 0 and K = 8: before = the growing prompt list (one compile
     per prompt count while the memory fills), after = the fixed-shape memory (1 + K slots
     with a validity mask, one compile). A smaller model than L/16 (`--video-variant`) keeps
     this affordable on a CPU; compilation is what differs.

  python -m experiments.bench_cli              # L/16 (minutes on a CPU)
  python -m experiments.bench_cli --tiny       # the tiny test model: a quick end-to-end check

Query and prompt are ../shared/data/examples/seggpt_examples/examples/hmbb_{2,1}.jpg when
present (the prompt mask binarised from hmbb_1_target.png), else random images.
"""

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

import numpy as np
from PIL import Image

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's incontext, in process as in the subprocesses

from experiments import benchenv  # noqa: E402 (after the path set-up)
from incontext import timing  # noqa: E402
from incontext.data import datadir  # noqa: E402

EXAMPLES = pathlib.Path(datadir.data_dir("examples", "seggpt_examples", "examples"))

HF_SCRIPT = r"""
import sys
import numpy as np
import torch
from PIL import Image
from transformers import SegGptForImageSegmentation, SegGptImageProcessor
model_dir, size, prompt, mask, query, out = sys.argv[1:7]
size = int(size)
model = SegGptForImageSegmentation.from_pretrained(model_dir).eval()
proc = SegGptImageProcessor(size={"height": size, "width": size})
img = Image.open(query).convert("RGB")
labels = (np.asarray(Image.open(mask)) > 0).astype(np.int64)
inputs = proc(images=img, prompt_images=Image.open(prompt).convert("RGB"),
              prompt_masks=labels, num_labels=1, return_tensors="pt")
with torch.no_grad():
  outputs = model(**inputs)
seg = proc.post_process_semantic_segmentation(outputs, target_sizes=[img.size[::-1]],
                                              num_labels=1)[0]
Image.fromarray((seg.numpy() * 255).astype(np.uint8)).save(out)
"""


def _env(extra=None):
  env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
  env.pop("XLA_FLAGS", None)
  env.update(extra or {})
  return env


def _run(cmd, env=None) -> tuple[float, str]:
  """(wall seconds, stderr) of a command in a fresh process."""
  t0 = time.perf_counter()
  r = subprocess.run([str(c) for c in cmd], cwd=ROOT, env=_env(env), capture_output=True, text=True)
  dt = time.perf_counter() - t0
  if r.returncode:
    raise SystemExit(f"failed ({r.returncode}): {' '.join(map(str, cmd))}\n{r.stderr[-3000:]}")
  return dt, r.stderr


def _timed(cmd, env=None) -> float:
  return _run(cmd, env)[0]


def make_inputs(tmp: pathlib.Path, tiny: bool):
  """(prompt image, prompt mask 0/255 PNG, query image) paths."""
  if (EXAMPLES / "hmbb_1.jpg").exists() and not tiny:
    prompt, query = EXAMPLES / "hmbb_1.jpg", EXAMPLES / "hmbb_2.jpg"
    m = np.asarray(Image.open(EXAMPLES / "hmbb_1_target.png").convert("L")) > 128
  else:
    rng = np.random.default_rng(0)
    prompt, query = tmp / "prompt.png", tmp / "query.png"
    Image.fromarray(rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)).save(prompt)
    Image.fromarray(rng.integers(0, 256, (110, 150, 3), dtype=np.uint8)).save(query)
    m = np.zeros((120, 160), bool)
    m[20:90, 30:100] = True
  mask = tmp / "prompt_mask.png"
  Image.fromarray(m.astype(np.uint8) * 255).save(mask)
  return prompt, mask, query


def make_weights(tmp: pathlib.Path, tiny: bool) -> tuple[pathlib.Path, pathlib.Path, int]:
  """Random transformers model -> save_pretrained folder -> our params dir; (hf, params, size)."""
  import torch
  from transformers import SegGptConfig, SegGptForImageSegmentation

  from incontext.commands import convert as convert_cmd
  from incontext.models import convert, seggpt

  cfg = (
    seggpt.get_config("test", image_size=(32, 32), patch=8) if tiny else seggpt.get_config("L/16")
  )
  kw = {
    k: v for k, v in convert.hf_config_dict(cfg).items() if k not in ("architectures", "model_type")
  }
  torch.manual_seed(0)
  hf = tmp / "hf"
  SegGptForImageSegmentation(SegGptConfig(**kw)).eval().save_pretrained(hf)
  params = tmp / "params"
  convert_cmd.convert_file(str(hf / "model.safetensors"), str(params))
  return hf, params, cfg.image_size[0]


def bench_segment(tmp: pathlib.Path, tiny: bool) -> dict:
  prompt, mask, query = make_inputs(tmp, tiny)
  hf, params, size = make_weights(tmp, tiny)
  hf_cmd = [sys.executable, "-c", HF_SCRIPT, hf, size, prompt, mask, query, tmp / "hf.png"]
  cli = lambda out: [
    sys.executable,
    "-m",
    "incontext.cli",
    "segment",
    "--checkpoint",
    params,
    "--prompt",
    prompt,
    mask,
    "--query",
    query,
    "--out",
    out,
    "--profile",
  ]
  # A fresh user cache: the cold call compiles and hashes the weights, the warm call loads
  # the compiled program and skips the hash of the unchanged weights (its verified stamp).
  cache = {
    "INCONTEXT_CACHE_DIR": str(tmp / "jax_cache"),
    "INCONTEXT_COMPILE_CACHE": "1",
    "XDG_CACHE_HOME": str(tmp / "user_cache"),
  }
  t_hf1 = _timed(hf_cmd)
  t_cold, err_cold = _run(cli(tmp / "cold"), cache)
  t_warm, err_warm = _run(cli(tmp / "warm"), cache)
  t_hf2 = _timed(hf_cmd)
  t_hf = min(t_hf1, t_hf2)
  ours = np.asarray(Image.open(tmp / "warm" / (query.stem + ".png")))
  theirs = np.asarray(Image.open(tmp / "hf.png"))
  agree = float(((ours > 0) == (theirs > 0)).mean())
  return {
    "transformers_s": [round(t_hf1, 2), round(t_hf2, 2)],
    "cli_cold_s": round(t_cold, 2),
    "cli_warm_s": round(t_warm, 2),
    "warm_speedup_vs_transformers": round(t_hf / t_warm, 2),
    "cold_speedup_vs_transformers": round(t_hf / t_cold, 2),
    "mask_agreement": round(agree, 4),
    "cold_breakdown_s": timing.parse_report(err_cold),
    "warm_breakdown_s": timing.parse_report(err_warm),
  }


def _video(n: int, h: int, w: int):
  rng = np.random.default_rng(0)
  frames, first = [], np.zeros((h, w), np.int32)
  for t in range(n):
    f = rng.integers(90, 110, (h, w, 3)).astype(np.uint8)
    f[h // 8 : h // 2, w // 10 + 3 * t : w // 3 + 3 * t] = (220, 30, 30)
    frames.append(f)
  first[h // 8 : h // 2, w // 10 : w // 3] = 1
  return frames, first


def bench_video(variant: str, size: int, n_frames: int, memories, tiny: bool) -> dict:
  from incontext import predict, video
  from incontext.models import seggpt

  kw = dict(image_size=(size, size), drop_path=0.0)
  if tiny:
    kw["patch"] = 8
  model = seggpt.create(variant, **kw)
  frames, first = _video(n_frames, 96 if tiny else 240, 128 if tiny else 320)
  out = {}
  for k in memories:
    for name, fixed in (("before", False), ("after", True)):
      predict.clear_compiled()  # compilation counts, as in a fresh process
      t0 = time.perf_counter()
      n = sum(1 for _ in video.propagate(model, frames, first, memory=k, fixed_memory=fixed))
      dt = time.perf_counter() - t0
      out[f"K={k} {name}"] = round((n - 1) / dt, 3)
    out[f"K={k} speedup"] = round(out[f"K={k} after"] / out[f"K={k} before"], 2)
  return out


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--tiny", action="store_true", help="the tiny test model everywhere")
  ap.add_argument("--video-variant", default="Ti/16", help="model for the video timing")
  ap.add_argument("--video-size", type=int, default=224, help="its image_size (square)")
  ap.add_argument("--frames", type=int, default=12, help="video length")
  ap.add_argument("--memories", default="0,8", help="memory sizes K to time")
  ap.add_argument("--skip-video", action="store_true")
  ap.add_argument("--skip-segment", action="store_true")
  args = ap.parse_args(argv)
  if args.tiny:
    args.video_variant, args.video_size, args.frames = "test", 32, min(args.frames, 6)
  res = {"model": "test 32px" if args.tiny else "L/16 448px (random weights)"}
  with tempfile.TemporaryDirectory(prefix="bench_cli_") as tmp:
    if not args.skip_segment:
      res["segment"] = bench_segment(pathlib.Path(tmp), args.tiny)
      s = res["segment"]
      print(
        f"segment, 1 query, {res['model']}: transformers script {min(s['transformers_s'])} s"
        f" | incontext cold {s['cli_cold_s']} s ({s['cold_speedup_vs_transformers']}x) | "
        f"warm {s['cli_warm_s']} s ({s['warm_speedup_vs_transformers']}x)",
        flush=True,
      )
      for kind in ("cold", "warm"):
        parts = "  ".join(f"{k} {v:.2f}" for k, v in s[f"{kind}_breakdown_s"].items())
        print(f"  {kind} call, time breakdown (s): {parts}", flush=True)
  if not args.skip_video:
    mems = [int(k) for k in args.memories.split(",")]
    res["video"] = bench_video(args.video_variant, args.video_size, args.frames, mems, args.tiny)
    res["video_setup"] = f"{args.video_variant} {args.video_size}px, {args.frames} frames"
    v = res["video"]
    for k in mems:
      print(
        f"video {res['video_setup']}, K={k}: before {v[f'K={k} before']} frames/s, after "
        f"{v[f'K={k} after']} frames/s ({v[f'K={k} speedup']}x)",
        flush=True,
      )
  print(json.dumps(res, indent=1))
  return res


if __name__ == "__main__":
  with benchenv.bracket("bench_cli"):
    rc = main()
