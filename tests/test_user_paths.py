"""The README's commands as a user runs them: from their own working folder, relative paths.

Official-weights path (with a tiny random model in the transformers layout standing in for
`BAAI/seggpt-vit-large`): convert a transformers folder or a Hub snapshot (`hf:REPO_ID`, read
from a local cache laid out as `huggingface_hub` writes it, offline) -> export-hf ->
transformers' `AutoImageProcessor` + `SegGptForImageSegmentation` give the same labels as
`Segmenter` on real photos; segment and segment-video; tune and evaluate on a `folder` task.
"""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from _shared import shared_data_dir
from incontext import canvas, checkpoint, cli, inference as I
from incontext.errors import UserError
from incontext.models import seggpt

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
import hf_reference  # noqa: E402

# Every test here runs the README's commands as a user does: integration tier.
pytestmark = pytest.mark.integration

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# depth 12: the feature layers (3, 5, 8, 11) are what `convert` infers from the weights.
CFG = seggpt.get_config(
  "test", depth=12, feature_layers=seggpt.default_feature_layers(12), image_size=(32, 32), patch=8
)
REPO, COMMIT = "test-org/seggpt-tiny", "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory):
  """A transformers folder (save_pretrained) of a random model whose outputs are mid-grey with
  strong spatial variation, so its labels are a real mix of background and objects."""
  hm = hf_reference.make_hf_model(CFG, seed=3)
  with torch.no_grad():
    head = hm.decoder.decoder_pred.head
    head.weight.mul_(20.0)
    head.bias.copy_(torch.tensor((0.5 - canvas.IMAGENET_MEAN) / canvas.IMAGENET_STD))
  d = tmp_path_factory.mktemp("hf") / "seggpt-tiny"
  hm.save_pretrained(str(d))
  return d


@pytest.fixture(scope="module")
def tiny_ckpt(hf_folder, tmp_path_factory):
  """The tiny model converted once (tests copy it into their working folder)."""
  from incontext.commands import convert as convert_cmd

  d = tmp_path_factory.mktemp("ckpt") / "params"
  convert_cmd.convert_file(str(hf_folder), str(d))
  return d


def _run(argv, capsys):
  rc = cli.main([str(a) for a in argv])
  cap = capsys.readouterr()
  return rc, cap.out, cap.err


def _hub_cache(cache, folder, repo_id=REPO):
  """A Hub cache holding `folder` as repo_id at COMMIT, laid out as huggingface_hub writes it."""
  repo = cache / ("models--" + repo_id.replace("/", "--"))
  snap = repo / "snapshots" / COMMIT
  snap.mkdir(parents=True)
  for f in os.listdir(folder):
    shutil.copy(folder / f, snap / f)
  (repo / "refs").mkdir()
  (repo / "refs" / "main").write_text(COMMIT)


@pytest.fixture
def offline_hub(tmp_path, monkeypatch):
  """HF_HUB_CACHE / HF_HUB_OFFLINE=1 for this test (also patched in huggingface_hub's
  constants, read at its import)."""
  hub = pytest.importorskip("huggingface_hub")
  cache = tmp_path / "hub_cache"
  cache.mkdir()
  monkeypatch.setenv("HF_HUB_CACHE", str(cache))
  monkeypatch.setenv("HF_HUB_OFFLINE", "1")
  monkeypatch.setattr(hub.constants, "HF_HUB_CACHE", str(cache))
  monkeypatch.setattr(hub.constants, "HF_HUB_OFFLINE", True)
  return cache


def _three_class_prompt(ccp, out_png):
  """A CCP label map reduced to its 3 largest classes as ids 1..3 (the rest background)."""
  img = sorted(os.listdir(ccp / "images"))[0]
  m = np.asarray(Image.open(ccp / "masks" / (os.path.splitext(img)[0] + ".png")))
  vals, counts = np.unique(m[m > 0], return_counts=True)
  top = vals[np.argsort(-counts)[:3]]
  lab = np.zeros(m.shape, np.uint8)
  for k, v in enumerate(sorted(top)):
    lab[m == v] = k + 1
  Image.fromarray(lab).save(out_png)
  return ccp / "images" / img


def test_official_weights_path_from_a_working_folder(hf_folder, tmp_path, monkeypatch, capsys):
  from transformers import AutoImageProcessor, SegGptForImageSegmentation

  horse, ccp = shared_data_dir("weizmann_horse"), shared_data_dir("clothing_co_parsing")
  monkeypatch.chdir(tmp_path)
  shutil.copytree(hf_folder, "downloads/seggpt-tiny")
  rc, out, err = _run(
    ["convert", "--source", "downloads/seggpt-tiny", "--out", "ckpts/seggpt_tiny"], capsys
  )
  assert rc == 0, err
  assert "hf layout" in out
  rc, out, err = _run(
    ["export-hf", "--checkpoint", "ckpts/seggpt_tiny", "--out", "hf_export"], capsys
  )
  assert rc == 0, err
  assert sorted(os.listdir("hf_export")) == [
    ".incontext-outputs.json",
    "config.json",
    "model.safetensors",
    "preprocessor_config.json",
  ]
  # The PIL backend (the default without torchvision) resizes with PIL as `Segmenter` does.
  proc = AutoImageProcessor.from_pretrained("hf_export", backend="pil")
  hm = SegGptForImageSegmentation.from_pretrained("hf_export").eval()

  # A binary horse prompt (0/255 PNG; instance) and a 3-class clothing prompt (semantic), on
  # real photos.
  ccp_img = _three_class_prompt(ccp, tmp_path / "ccp_prompt.png")
  horse_q = [horse / "images" / f"horse00{i}.jpg" for i in (2, 3)]
  ccp_q = [ccp / "images" / f for f in sorted(os.listdir(ccp / "images"))[1:3]]
  cases = [
    (horse / "images" / "horse001.jpg", horse / "masks" / "horse001.png", horse_q, "instance"),
    (ccp_img, tmp_path / "ccp_prompt.png", ccp_q, "semantic"),
  ]
  results = {}
  for pimg, pmask, queries, seg_type in cases:
    seg = I.Segmenter.from_checkpoint("ckpts/seggpt_tiny", seg_type=seg_type)
    ours = seg.segment([(pimg, pmask)], queries)
    raw_mask = np.asarray(Image.open(pmask))
    ids = raw_mask > 127 if raw_mask.max() == 255 else raw_mask
    num_labels = int(ids.max())
    for q, r in zip(queries, ours):
      results[q] = r
      qi = Image.open(q).convert("RGB")
      inp = proc(
        images=qi,
        prompt_images=Image.open(pimg).convert("RGB"),
        prompt_masks=ids.astype(np.int64),
        num_labels=num_labels,
        return_tensors="pt",
      )
      with torch.no_grad():
        pred = hm(**inp, embedding_type=seg_type)
      hf = proc.post_process_semantic_segmentation(
        pred, target_sizes=[qi.size[::-1]], num_labels=num_labels
      )[0].numpy()
      want = (r.labels > 0).astype(int) if raw_mask.max() == 255 else r.labels
      # Exact: same resize, same float32 network, same nearest-colour rule; the labels are a
      # real mix (checked below), not all background.
      np.testing.assert_array_equal(hf, want, err_msg=f"{q.name} {seg_type}")
      assert len(np.unique(want)) >= 2, (q.name, np.unique(want))

  # `segment` with relative paths, as in the README: the same labels as the API.
  shutil.copy(horse / "images" / "horse001.jpg", "p.jpg")
  shutil.copy(horse / "masks" / "horse001.png", "p.png")
  shutil.copy(horse_q[0], "q.jpg")
  rc, _, err = _run(
    [
      "segment",
      "--checkpoint",
      "ckpts/seggpt_tiny",
      "--prompt",
      "p.jpg",
      "p.png",
      "--query",
      "q.jpg",
      "--out",
      "out",
    ],
    capsys,
  )
  assert rc == 0, err
  lab = np.asarray(Image.open(os.path.join("out", "q.png")))
  np.testing.assert_array_equal(lab > 0, results[horse_q[0]].labels > 0)


def test_convert_from_the_hub_cache(hf_folder, offline_hub, tmp_path, monkeypatch, capsys):
  _hub_cache(offline_hub, hf_folder)
  monkeypatch.chdir(tmp_path)
  rc, out, err = _run(["convert", "--source", f"hf:{REPO}", "--out", "ckpts/hub"], capsys)
  assert rc == 0, err
  rc, _, err = _run(["convert", "--source", hf_folder, "--out", "ckpts/folder"], capsys)
  assert rc == 0, err
  hub, folder = checkpoint.read_meta("ckpts/hub"), checkpoint.read_meta("ckpts/folder")
  assert hub["weights_hash"] == folder["weights_hash"]
  assert hub["source"]["hub_repo"] == REPO
  assert hub["source"]["path"].startswith(str(offline_hub))
  # A repo holding only the official .pth (as BAAI/SegGPT does).
  from safetensors.numpy import load_file
  from incontext.models import convert

  official = convert.hf_to_official(load_file(str(hf_folder / "model.safetensors")))
  os.makedirs("pth_repo")
  torch.save(
    {"model": {k: torch.from_numpy(v) for k, v in official.items()}},
    "pth_repo/seggpt_vit_large.pth",
  )
  _hub_cache(offline_hub, tmp_path / "pth_repo", "test-org/seggpt-pth")
  rc, out, err = _run(
    ["convert", "--source", "hf:test-org/seggpt-pth", "--out", "ckpts/pth"], capsys
  )
  assert rc == 0 and "official layout" in out, err
  assert checkpoint.read_meta("ckpts/pth")["weights_hash"] == folder["weights_hash"]
  # A repo that is not in the cache, offline: one line naming the source, nothing written.
  rc, _, err = _run(["convert", "--source", "hf:test-org/absent", "--out", "ckpts/x"], capsys)
  assert rc == 2 and "\n" not in err.strip()
  assert "hf:test-org/absent: cannot download" in err
  assert not os.path.exists("ckpts/x")


def test_convert_folder_checks_its_config(hf_folder, tmp_path, monkeypatch, capsys):
  monkeypatch.chdir(tmp_path)
  cases = []
  shutil.copytree(hf_folder, "wrong_width")
  cfg = json.load(open("wrong_width/config.json"))
  cfg["hidden_size"] = 64
  json.dump(cfg, open("wrong_width/config.json", "w"))
  cases.append(("wrong_width", "config.json: hidden_size is 64 but the weights have 32"))
  shutil.copytree(hf_folder, "wrong_size")
  cfg["hidden_size"], cfg["image_size"] = 32, [128, 64]
  json.dump(cfg, open("wrong_size/config.json", "w"))
  cases.append(("wrong_size", "config.json: image_size is [128, 64] but the weights have [64, 32]"))
  shutil.copytree(hf_folder, "no_config")
  os.remove("no_config/config.json")
  cases.append(("no_config", "no_config: transformers folder has no config.json"))
  os.makedirs("empty")
  cases.append(("empty", "empty: folder has no model.safetensors or .pth weights"))
  for i, (src, msg) in enumerate(cases):
    rc, _, err = _run(["convert", "--source", src, "--out", f"o{i}"], capsys)
    assert rc == 2, (src, err)
    assert "\n" not in err.strip() and msg in err, (msg, err)
    assert not os.path.exists(f"o{i}")


def test_segment_video_with_relative_paths(tiny_ckpt, tmp_path, monkeypatch, capsys):
  davis = shared_data_dir("davis2016_subset")
  monkeypatch.chdir(tmp_path)
  shutil.copytree(tiny_ckpt, "ckpt")
  os.makedirs("frames")
  for f in sorted(os.listdir(davis / "JPEGImages" / "480p" / "boat"))[:2]:
    shutil.copy(davis / "JPEGImages" / "480p" / "boat" / f, os.path.join("frames", f))
  shutil.copy(davis / "Annotations" / "480p" / "boat" / "00000.png", "first.png")
  rc, _, err = _run(
    [
      "segment-video",
      "--checkpoint",
      "ckpt",
      "--frames",
      "frames",
      "--first-mask",
      "first.png",
      "--out",
      "video_out",
      "--memory",
      "1",
      "--no-gif",
    ],
    capsys,
  )
  assert rc == 0, err
  assert sorted(f for f in os.listdir("video_out") if f.endswith(".png")) == sorted(
    os.path.splitext(f)[0] + ".png" for f in os.listdir("frames")
  )


def _folder_task(tmp_path, tiny_ckpt, n=5):
  """A user's folder: imgs/*.jpg + masks/*.png (real horses) and ckpt/, as the cwd."""
  horse = shared_data_dir("weizmann_horse")
  work = tmp_path / "work"
  (work / "imgs").mkdir(parents=True)
  (work / "masks").mkdir()
  for i in range(1, n + 1):
    shutil.copy(horse / "images" / f"horse00{i}.jpg", work / "imgs")
    shutil.copy(horse / "masks" / f"horse00{i}.png", work / "masks")
  shutil.copytree(tiny_ckpt, work / "ckpt")
  return work


def test_folder_task_tune_and_evaluate_in_process(tiny_ckpt, tmp_path, monkeypatch, capsys):
  """The library path behind the commands: configs with globs and relative paths."""
  from experiments import entry
  from experiments.configs import prompt_tune, seggpt_eval
  from incontext.evaluators import run as eval_run
  from incontext.train import tuner

  work = _folder_task(tmp_path, tiny_ckpt)
  monkeypatch.chdir(work)
  c = prompt_tune.get_config("task=folder,runlocal")
  c.task.images, c.task.masks, c.init = "imgs/*.jpg", "masks/*.png", "ckpt"
  out = tuner.run_tune(entry.prepare(c), "tune")
  assert out["step"] == 2 and np.isfinite(out["losses"][-1])
  meta = json.load(open("tune/tune_meta.json"))
  assert meta["init"] == str(work / "ckpt")
  # A quarter of the 4 images held out (one), never tuned on, scored at the end.
  h = out["heldout"]
  assert h["images"] == 1 and len(meta["example_ids"]) == 3
  assert sorted(h["ids"] + meta["example_ids"]) == [f"horse00{i}" for i in range(1, 5)]
  assert json.load(open("tune/heldout.json")) == json.loads(json.dumps(h))
  # Its numbers are what the tuned prompt (`segment --learned-prompt`) and the untuned example
  # prompt give on that image: the same forward, labels and IoU sums.
  from incontext.data import sources

  src = sources.image_mask_globs("imgs/*.jpg", "masks/*.png")
  ex = src[src.ids.index(h["ids"][0])]
  seg = I.Segmenter.from_checkpoint("ckpt", seg_type="semantic")
  lp = seg.load_learned_prompt("tune/prompt.npz")
  first = src[src.ids.index(h["example_id"])]
  for res, key in (
    (seg.segment([], ex["image"], learned_prompt=lp)[0], "tuned"),
    (seg.segment([(first["image"], first["mask"])], ex["image"])[0], "example prompt"),
  ):
    fg, gt = res.labels == 1, ex["mask"] == 1
    assert h[key]["miou"] == pytest.approx(100 * (fg & gt).sum() / (fg | gt).sum(), rel=1e-9)
  rc, _, err = _run(
    [
      "segment",
      "--checkpoint",
      "ckpt",
      "--learned-prompt",
      "tune/prompt.npz",
      "--query",
      "imgs/horse005.jpg",
      "--out",
      "seg",
    ],
    capsys,
  )
  assert rc == 0, err
  c = seggpt_eval.get_config("folder,runlocal")
  c.fewshot.folder.source.images, c.fewshot.folder.source.masks = "imgs/*.jpg", "masks/*.png"
  c.fewshot.folder.shots = 1  # one method (1-shot) and its baseline: fast
  c.init = "ckpt"
  c.learned_prompt = "tune/prompt.npz"
  res = eval_run.run_eval(entry.prepare(c), "eval")
  assert list(res["fewshot"]) == ["folder"] and "davis" not in res
  info = res["fewshot"]["folder"]["_info"]
  assert info["examples"] == 5 and info["episodes"] == 4
  assert os.path.isfile("eval/results.json")
  # The learned prompt's row beside the example-prompt rows, on the same 4 episodes.
  rows = res["fewshot"]["folder"]
  assert rows["learned prompt (prompt.npz)"]["episodes"] == rows["1-shot"]["episodes"] == 4
  assert "| folder | learned prompt (prompt.npz) |" in open("eval/results.md").read()
  c.learned_prompt = "tune/missing.npz"
  with pytest.raises(UserError, match="config.learned_prompt=tune/missing.npz"):
    eval_run.run_eval(entry.prepare(c), "eval2")


def _entry(args, cwd, env=None):
  env = dict(
    os.environ, PYTHONPATH=ROOT, XLA_FLAGS="--xla_force_host_platform_device_count=1", **(env or {})
  )
  return subprocess.run(
    [sys.executable, "-m", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
  )


@pytest.mark.slow
def test_tune_and_evaluate_commands_on_a_folder_task(tiny_ckpt, tmp_path):
  """The README's commands in fresh processes from the user's folder: flags, the config file
  found by name, globs and every path relative to the working folder; a bad glob is one line
  and exit status 2."""
  work = _folder_task(tmp_path, tiny_ckpt)
  r = _entry(
    [
      "experiments.tune",
      "--config",
      "prompt_tune.py:task=folder,runlocal",
      "--config.task.images=imgs/*.jpg",
      "--config.task.masks=masks/*.png",
      "--config.init=ckpt",
      "--workdir",
      "tune",
    ],
    cwd=work,
  )
  assert r.returncode == 0, r.stderr[-3000:]
  assert "prompt in tune/prompt.npz" in r.stdout
  h = json.load(open(work / "tune" / "heldout.json"))
  assert r.stdout.splitlines()[-1] == (
    f"held-out mIoU: tuned {h['tuned']['miou']:.1f}% vs example prompt "
    f"{h['example prompt']['miou']:.1f}% (1 images)"
  )
  assert json.load(open(work / "tune" / "tune_meta.json"))["init"] == str(work / "ckpt")
  r = _entry(
    [
      "experiments.evaluate",
      "--config",
      "experiments/configs/seggpt_eval.py:folder,runlocal",
      "--config.fewshot.folder.source.images=imgs/*.jpg",
      "--config.fewshot.folder.source.masks=masks/*.png",
      "--config.init=ckpt",
      "--config.learned_prompt=tune/prompt.npz",
      "--workdir",
      "eval",
    ],
    cwd=work,
  )
  assert r.returncode == 0, r.stderr[-3000:]
  res = json.load(open(work / "eval" / "results.json"))
  assert list(res["fewshot"]) == ["folder"]
  assert "learned prompt (prompt.npz)" in res["fewshot"]["folder"]
  assert res["fewshot"]["folder"]["_info"]["examples"] == 5
  r = _entry(
    [
      "experiments.evaluate",
      "--config",
      "seggpt_eval:folder,runlocal",
      "--config.fewshot.folder.source.images=photos/*.jpg",
      "--config.fewshot.folder.source.masks=masks/*.png",
      "--config.init=ckpt",
      "--workdir",
      "eval2",
    ],
    cwd=work,
  )
  assert r.returncode == 2 and "no images match photos/*.jpg" in r.stderr, r.stderr[-2000:]
  assert "Traceback" not in r.stderr


def test_help_lists_presets_and_args_from_any_folder(tmp_path):
  for mod, words in (
    (
      "experiments.tune",
      ("task=kvasir|horse|davis_SEQ|folder", "--config.task.images", "INCONTEXT_DATA_DIR"),
    ),
    ("experiments.evaluate", ("folder", "coco128_fold0", "shots=K")),
    ("experiments.train", ("quickstart", "runlocal", "--workdir")),
  ):
    r = _entry([mod, "--help"], cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    for w in words:
      assert w in r.stdout, (mod, w)


def test_data_dir_setting_and_its_error(tmp_path, monkeypatch):
  from experiments.configs import common, prompt_tune, seggpt_eval, seggpt_train

  monkeypatch.delenv(common.DATA_DIR_ENV, raising=False)
  default = common.data_dir()
  assert default == os.path.join(os.path.dirname(ROOT), "shared", "data")
  monkeypatch.chdir(tmp_path)
  monkeypatch.setenv(common.DATA_DIR_ENV, "mydata")
  assert common.data_dir() == str(tmp_path / "mydata")
  c = prompt_tune.get_config("task=kvasir")
  assert c.data_dir == str(tmp_path / "mydata")
  assert c.task.root == str(tmp_path / "mydata" / "kvasir_seg")
  # The env var's folder is missing: one line naming the setting and the path.
  with pytest.raises(
    common.DataDirError,
    match=r"data_dir .*mydata: no such folder .*"
    r"--config.data_dir=DIR or INCONTEXT_DATA_DIR",
  ):
    common.resolve_data_dir(c)
  # --config.data_dir (relative) moves every root, also in lists (the training mixture).
  (tmp_path / "d2").mkdir()
  monkeypatch.delenv(common.DATA_DIR_ENV)
  for c, roots in (
    (
      seggpt_train.get_config("real"),
      lambda c: [d["root"] for d in c.input.datasets] + [c.evals.data.source.root],
    ),
    (
      seggpt_eval.get_config(""),
      lambda c: [b.source.root for b in c.fewshot.values()] + [c.davis.root],
    ),
  ):
    c.data_dir = "d2"
    common.resolve_data_dir(c)
    assert c.data_dir == str(tmp_path / "d2")
    assert all(r.startswith(str(tmp_path / "d2") + os.sep) for r in roots(c)), roots(c)
  # A folder task uses no data_dir: a missing one is not an error.
  c = prompt_tune.get_config("task=folder")
  c.data_dir = "absent"
  common.resolve_data_dir(c)


def test_one_data_folder_rule(tmp_path, monkeypatch):
  """The configs, the data pipeline's default roots and the tests' helper read one rule
  (`incontext.data.datadir`): $INCONTEXT_DATA_DIR, else ../shared/data beside the project;
  the tests' helper skips when a folder is missing, and fails under CI=true."""
  import _shared
  from experiments.configs import common
  from incontext.data import datadir, pipeline

  monkeypatch.delenv(datadir.DATA_DIR_ENV, raising=False)
  default = os.path.join(os.path.dirname(ROOT), "shared", "data")
  assert datadir.data_dir() == common.data_dir() == default
  roots = {d["name"]: d["root"] for d in pipeline.shared_data_config()["datasets"]}
  assert roots["coco128_seg"] == os.path.join(default, "coco128_seg")
  monkeypatch.chdir(tmp_path)
  monkeypatch.setenv(datadir.DATA_DIR_ENV, "elsewhere")
  there = tmp_path / "elsewhere" / "kvasir_seg"
  there.mkdir(parents=True)
  assert datadir.data_dir("kvasir_seg") == str(there)
  assert common.data_dir() == str(tmp_path / "elsewhere")
  roots = {d["name"]: d["root"] for d in pipeline.shared_data_config()["datasets"]}
  assert roots["kvasir_seg"] == str(there)
  assert _shared.shared_data_dir("kvasir_seg") == there
  monkeypatch.delenv("CI", raising=False)
  with pytest.raises(pytest.skip.Exception, match=r"real data not found at .*elsewhere/nothere"):
    _shared.shared_data_dir("nothere")
  monkeypatch.setenv("CI", "true")
  with pytest.raises(pytest.fail.Exception, match="CI=true requires it"):
    _shared.shared_data_dir("nothere")


def test_image_mask_globs_pairs_by_stem_and_names_what_is_wrong(tmp_path, monkeypatch):
  from incontext.data import sources

  monkeypatch.chdir(tmp_path)
  for d in ("a", "b", "m"):
    os.makedirs(d)
  img = np.zeros((6, 8, 3), np.uint8)
  mask = np.zeros((6, 8), np.uint8)
  mask[2:4, 2:5] = 255
  for stem in ("x1", "x2"):
    Image.fromarray(img).save(f"a/{stem}.jpg")
    Image.fromarray(mask).save(f"m/{stem}.png")
  Image.fromarray(mask).save("m/unused.png")  # a mask without an image is ignored
  src = sources.make_source(
    dict(reader="image_mask_globs", images="a/*.jpg", masks="m/*.png"), cache=False
  )
  assert src.ids == ["x1", "x2"] and src.image_paths[0] == str(tmp_path / "a" / "x1.jpg")
  ex = src[1]
  assert ex["mask"].sum() == 6 and list(ex["classes"]) == [1]  # 0/255 -> 0/1
  Image.fromarray(img).save("a/x3.jpg")
  with pytest.raises(
    sources.DataError,
    match=r"no mask matching m/\*.png for image .*x3.jpg "
    r"\(1 of 3 images",
  ):
    sources.image_mask_globs("a/*.jpg", "m/*.png")
  Image.fromarray(img).save("b/x1.png")
  with pytest.raises(sources.DataError, match="several images have the stem 'x1'"):
    sources.image_mask_globs("[ab]/x1.*", "m/*.png")
  with pytest.raises(sources.DataError, match=r"no images match c/\*.jpg"):
    sources.image_mask_globs("c/*.jpg", "m/*.png")
  with pytest.raises(sources.DataError, match="both image and mask globs are needed"):
    sources.image_mask_globs("a/*.jpg", "")


def test_config_file_is_found_from_any_folder(tmp_path, monkeypatch):
  from experiments import entry

  monkeypatch.chdir(tmp_path)
  cfg = os.path.join(ROOT, "experiments", "configs")
  got = entry.find_config(["tune", "--config", "prompt_tune:task=folder", "--workdir", "w"])
  assert got == [
    "tune",
    "--config",
    os.path.join(cfg, "prompt_tune.py") + ":task=folder",
    "--workdir",
    "w",
  ]
  got = entry.find_config(["x", "--config=experiments/configs/seggpt_eval.py:folder,shots=2"])
  assert got == [
    "x",
    "--config=" + os.path.join(ROOT, "experiments/configs/seggpt_eval.py") + ":folder,shots=2",
  ]
  (tmp_path / "mine.py").write_text("")  # a file in the working folder wins
  assert entry.find_config(["x", "--config", "mine.py:a"]) == ["x", "--config", "mine.py:a"]


def _readme_block(containing: str) -> str:
  """The README's ```python block that contains `containing`, as written."""
  with open(os.path.join(ROOT, "README.md")) as f:
    text = f.read()
  blocks = [b.split("```", 1)[0] for b in text.split("```python\n")[1:]]
  found = [b for b in blocks if containing in b]
  assert len(found) == 1, f"{len(found)} README python blocks contain {containing!r}"
  return found[0]


def test_readme_transformers_snippet_runs_as_written(hf_folder, tmp_path, monkeypatch, capsys):
  """The README's commands (convert, segment, export-hf) then its transformers block, run as
  written in a scratch folder with its relative names: it prints that the labels match."""
  horse = shared_data_dir("weizmann_horse")
  monkeypatch.chdir(tmp_path)
  shutil.copytree(hf_folder, "seggpt-tiny")
  shutil.copy(horse / "images" / "horse001.jpg", "p.jpg")
  shutil.copy(horse / "masks" / "horse001.png", "p.png")
  shutil.copy(horse / "images" / "horse002.jpg", "q.jpg")
  ckpt = "ckpts/seggpt_vit_large"
  for argv in (
    ["convert", "--source", "seggpt-tiny", "--out", ckpt],
    ["segment", "--checkpoint", ckpt, "--prompt", "p.jpg", "p.png", "--query", "q.jpg"]
    + ["--out", "out/"],
    ["export-hf", "--checkpoint", ckpt, "--out", "hf_export"],
  ):
    rc, _, err = _run(argv, capsys)
    assert rc == 0, (argv, err)
  assert len(np.unique(np.asarray(Image.open("out/q.png")))) == 2  # not all background
  code = _readme_block("SegGptForImageSegmentation")
  exec(compile(code, "README.md", "exec"), {"__name__": "readme"})
  assert capsys.readouterr().out.splitlines() == ["same labels as incontext segment: True"]
