r"""Evaluation of a SegGPT params directory: few-shot mIoU / FB-IoU and DAVIS J&F.

  python -m experiments.evaluate --config experiments/configs/seggpt_eval.py \
    --config.init=/path/to/params_dir --workdir /tmp/eval
  # official weights: incontext convert --source seggpt_vit_large.pth --out ckpts/seggpt_l
  python -m experiments.evaluate --config experiments/configs/seggpt_eval.py:shots=4 \
    --config.init=ckpts/seggpt_l --workdir /tmp/eval_l

  # your own images and masks only (globs relative to the working folder, paired by stem):
  python -m experiments.evaluate --config experiments/configs/seggpt_eval.py:folder,shots=2 \
    --config.fewshot.folder.source.images='photos/*.jpg' \
    --config.fewshot.folder.source.masks='masks/*.png' --config.init=CKPT --workdir eval_mine

Writes WORKDIR/results.json and results.md; every number has its baseline beside it (copy the
prompt mask for few-shot, copy the first mask for video).
Arg (comma-separated): shots=K (k-shot methods, default 4), episodes=N, folder (only the
`folder` benchmark: binary 0/255 or 0/1 masks, or --config.fewshot.folder.source.mask_type=label
with --config.fewshot.folder.classes=(1,2,...)), runlocal (tiny).
Benchmarks over the data folder (--config.data_dir; default $INCONTEXT_DATA_DIR, else
../shared/data beside the project):
  coco128_fold0:  COCO-20i-style class fold 0 (interleaved over the label ids) of coco128_seg
  horse:          Weizmann horses not used for training by experiments/show_real_results.py
  davis:          DAVIS-2016 subset sequences (first-mask propagation, K = 0 and 8)
"""
import ml_collections

from experiments.configs.common import data_dir


def _parse(arg):
  out = dict(shots=4, episodes=200, folder=False, runlocal=False)
  for item in filter(None, (arg or "").split(",")):
    k, _, v = item.partition("=")
    if k not in out:
      raise ValueError(f"seggpt_eval config: unknown arg {k!r}; known: {sorted(out)}")
    out[k] = type(out[k])(v) if v and not isinstance(out[k], bool) else True
  return out


def get_config(arg=None):
  a = _parse(arg)
  c = ml_collections.ConfigDict()
  data = data_dir()
  c.data_dir = data
  c.seed = 0
  c.init = ""
  c.model_overrides = {}
  common = dict(shots=a["shots"], episodes=a["episodes"], ensembles=("feature", "spatial"),
                seg_type="semantic")
  c.fewshot = {
      "coco128_fold0": dict(source=dict(reader="coco128_seg", root=f"{data}/coco128_seg"),
                            fold=0, num_folds=4, scheme="interleaved", **common),
      "horse": dict(source=dict(reader="weizmann_horse", root=f"{data}/weizmann_horse"),
                    classes=(1,), select=dict(perm_seed=0, start=200), **common),
  }
  c.davis = dict(root=f"{data}/davis2016_subset", sequences=("boat", "kite-walk", "rollerblade"),
                 memories=(0, 8), resolution="480p", max_frames=None, save_masks=False)
  if a["folder"]:
    c.fewshot = {"folder": dict(source=dict(reader="image_mask_globs", images="", masks="",
                                            mask_type="binary"), classes=(1,), **common)}
    c.davis.sequences = ()
  if a["runlocal"]:
    for b in c.fewshot.values():
      b.episodes = 4
      b.shots = 2
    c.davis.sequences = ("boat",) if c.davis.sequences else ()
    c.davis.max_frames = 4
    c.davis.memories = (0, 2)
  return c
