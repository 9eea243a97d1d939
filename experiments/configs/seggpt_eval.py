r"""Evaluation of a SegGPT params directory: few-shot mIoU / FB-IoU and DAVIS / YouTube-VOS J&F.

  python -m experiments.evaluate --config experiments/configs/seggpt_eval.py \
    --config.init=/path/to/params_dir --workdir /tmp/eval
  # official weights: incontext convert --source seggpt_vit_large.pth --out ckpts/seggpt_l
  python -m experiments.evaluate --config experiments/configs/seggpt_eval.py:shots=4 \
    --config.init=ckpts/seggpt_l --workdir /tmp/eval_l
  # one row of the SegGPT paper's tables, e.g. COCO-20i fold 2 (data under ROOT):
  python -m experiments.evaluate \
    --config experiments/configs/seggpt_eval.py:benchmark=coco20i,fold=2,root=/data/coco \
    --config.init=ckpts/seggpt_l --workdir /tmp/coco20i_f2

Writes WORKDIR/results.json and results.md; every number has its baseline beside it (copy the
prompt mask for few-shot, copy the first mask for video), each mIoU its 95% bootstrap interval
over the episodes, and each paper benchmark the SegGPT paper's number for the same row.
--config.learned_prompt=FILE (a learned prompt, e.g. a tuning workdir's prompt.npz) adds its row,
`learned prompt (FILE)`, to every few-shot benchmark, scored on the same episodes' queries.

Arg (comma-separated): benchmark=NAME (default `shared`), fold=F (-1: every fold), shots=K
(the k-shot methods, both ensembles; default 4, or the protocol's), episodes=N (default: the
protocol's), root=DIR (the dataset folder; default DATA_DIR/<name>), memory=K (video
memory besides K=0; default 8), folder (only the `folder` benchmark: your own images and masks,
binary 0/255 or 0/1 masks, or --config.fewshot.folder.source.mask_type=label with
--config.fewshot.folder.classes=(1,2,...)), runlocal (tiny: 4 episodes, 2 shots, 4 frames).
DATA_DIR is --config.data_dir (default $INCONTEXT_DATA_DIR, else ../shared/data beside the
project).

Benchmarks (`benchmark=`), each a fixed protocol (all use seed 0: the episodes are a pure
function of the data, the protocol and the seed, see incontext.data.episodes):

  folder     your own folder: --config.fewshot.folder.source.images='imgs/*.jpg'
             --config.fewshot.folder.source.masks='masks/*.png' (paired by file stem).
  shared     over DATA_DIR (../shared/data): coco128_fold0 (COCO-20i-style fold 0 of
             coco128_seg), horse (Weizmann horses not used by experiments/show_real_results.py),
             davis (3 held-out DAVIS-2016 sequences, K = 0 and 8).
  coco20i    COCO-20i (Nguyen & Todorovic, ICCV 2019; split as PFENet, Tian et al., TPAMI 2020,
             and HSNet, Min et al., ICCV 2021): the 80 classes in category-id order, fold f holds
             classes 4k + f + 1 (the interleaved split); query and supports from COCO 2014 val
             (ROOT/val2014/*.jpg + ROOT/annotations/instances_val2014.json); 1000 episodes per
             fold (HSNet's test protocol), 4 folds; mIoU = mean over the fold's classes of
             per-class IoU summed over episodes (HSNet's metric). 1-shot and 5-shot (HSNet's
             few-shot). Paper: SegGPT Table 1 (1-shot 56.1, few-shot 67.9, mean of 4 folds).
  pascal5i   PASCAL-5i (Shaban et al., BMVC 2017): VOC 2012 classes 1..20, fold f holds
             5f+1..5f+5 (blocks); PASCAL VOC 2012 val (ROOT/JPEGImages,
             ROOT/SegmentationClass, ROOT/ImageSets/Segmentation/val.txt); 1000 episodes per
             fold (HSNet), 4 folds, 1- and 5-shot; every val image containing the class is a
             candidate (HSNet's per-fold lists also drop tiny objects). Paper: Table 1
             (83.2 / 89.8).
  fss1000    FSS-1000 (Li et al., CVPR 2020): the 240 official test classes
             (experiments/configs/fss1000_test_classes.txt, from the authors' repository
             github.com/HKUSTCV/FSS-1000, fss_test_set.txt), ROOT/CLASS/N.jpg + N.png; 1000
             episodes (HSNet's FSS-1000 test protocol); 1-shot, 4-shot and (shots=8) 8-shot, as
             the paper's ensemble ablation. Paper: Table 2 (85.6 / 89.3) and Table 4a (1 shot
             85.5, 4 spatial 89.3, 4 feature 87.8, 8 feature 89.8).
  lvis92i    LVIS-92i (as defined by Matcher, Liu et al., ICLR 2024, github.com/aim-uofa/
             Matcher, and used by SINE, NeurIPS 2024): LVIS v1 val (ROOT/annotations/
             lvis_v1_val.json over ROOT/train2017, ROOT/val2017); the classes with more than
             `shots` val images, in category-id order, are split into 10 interleaved folds of
             n // 10 classes (fold f: classes f, f + 10, ...); 2300 episodes per fold; the
             mask of a class is the union of its instances (one label per pixel here: where
             instances of two classes overlap the later annotation wins, whereas Matcher
             keeps both). 1- and 5-shot. Paper numbers from
             SINE (NeurIPS 2024), Table 1: SegGPT 18.6 / 25.4 (not in the SegGPT paper).
  davis2017  DAVIS 2017 val, semi-supervised (Pont-Tuset et al., arXiv 1704.00675): every
             object of the first frame propagated (ImageSets/2017/val.txt, 480p); J&F over
             objects and frames 1..N-2 as the official davis2017-evaluation; the predicted
             masks are written as palette PNGs WORKDIR/davis_masks/K{k}/SEQ/FRAME.png, each
             K{k} folder a results folder that the official code scores unchanged
             (`python evaluation_method.py --task semi-supervised --results_path .../K8`).
             Memory K = 0 and 8 (the paper's best K). Paper: Table 3 (J&F 75.6, J 72.5,
             F 78.6); Table 4b (J&F by number of frames: 1 70.0, 4 74.7, 8 75.6).
  ytvos2018  YouTube-VOS 2018 val (Xu et al., ECCV 2018): ROOT/valid/JPEGImages,
             ROOT/valid/Annotations (objects may first appear after frame 0: each group of
             objects that starts on a frame is propagated from there, later groups painted over
             earlier ones), ROOT/valid/meta.json; the masks of every frame of
             valid/JPEGImages are written in the submission layout
             WORKDIR/youtube_vos/K{k}/Annotations/VID/FRAME.png (+ K{k}.zip) for the official
             server, which computes G (no local score: val labels are not public).
             Paper: Table 3 (G 74.7, Js 75.1, Fs 80.2, Ju 67.4, Fu 75.9).
"""

import os

import ml_collections

from experiments.configs.common import data_dir

HERE = os.path.dirname(os.path.abspath(__file__))
FSS1000_TEST_CLASSES = os.path.join(HERE, "fss1000_test_classes.txt")

PAPER = "SegGPT (Wang et al., ICCV 2023)"
# The SegGPT paper's numbers (mIoU / J&F in %), by benchmark and method name. 'few-shot' rows
# state neither the shots nor the ensemble.
PAPER_RESULTS = {
  "coco20i": {"source": f"{PAPER}, Table 1 (mean of 4 folds)", "1-shot": 56.1, "few-shot": 67.9},
  "pascal5i": {"source": f"{PAPER}, Table 1 (mean of 4 folds)", "1-shot": 83.2, "few-shot": 89.8},
  "fss1000": {
    "source": f"{PAPER}, Tables 2 and 4a",
    "1-shot": 85.5,
    "few-shot": 89.3,
    "4-shot spatial": 89.3,
    "4-shot feature": 87.8,
    "8-shot feature": 89.8,
  },
  "lvis92i": {
    "source": "SINE (Liu et al., NeurIPS 2024), Table 1",
    "1-shot": 18.6,
    "few-shot": 25.4,
  },
  "davis2017": {
    "source": f"{PAPER}, Tables 3 and 4b (K = number of frames)",
    "K=1": 70.0,
    "K=4": 74.7,
    "K=8": 75.6,
    "K=12": 74.8,
    "K=16": 74.6,
  },
  "ytvos2018": {"source": f"{PAPER}, Table 3", "G": 74.7},
}
BENCHMARKS = (
  "shared",
  "folder",
  "coco20i",
  "pascal5i",
  "fss1000",
  "lvis92i",
  "davis2017",
  "ytvos2018",
)


def _parse(arg):
  out = dict(
    shots=0,
    episodes=0,
    runlocal=False,
    benchmark="shared",
    fold=-1,
    root="",
    memory=8,
    folder=False,
  )
  for item in filter(None, (arg or "").split(",")):
    k, _, v = item.partition("=")
    if k not in out:
      raise ValueError(f"seggpt_eval config: unknown arg {k!r}; known: {sorted(out)}")
    out[k] = type(out[k])(v) if v and not isinstance(out[k], bool) else True
  if out["benchmark"] not in BENCHMARKS:
    raise ValueError(
      f"seggpt_eval config: unknown benchmark {out['benchmark']!r}; known: {', '.join(BENCHMARKS)}"
    )
  if out["folder"]:
    out["benchmark"] = "folder"
  return out


def fss1000_test_classes() -> tuple[str, ...]:
  with open(FSS1000_TEST_CLASSES) as f:
    return tuple(l.strip() for l in f if l.strip())


def _folds(a, n):
  if a["fold"] >= n:
    raise ValueError(f"seggpt_eval config: fold={a['fold']} but {a['benchmark']} has {n} folds")
  return range(n) if a["fold"] < 0 else [a["fold"]]


def _fewshot_presets(a, data: str) -> dict:
  """{benchmark name: few-shot benchmark dict} of a paper preset (roots under `data`)."""
  b, root = a["benchmark"], a["root"]
  ens = ("feature", "spatial")
  paper = PAPER_RESULTS.get(b)
  out = {}
  if b == "coco20i":
    src = dict(reader="coco_json", root=root or f"{data}/coco", split="val2014")
    for f in _folds(a, 4):
      out[f"coco20i_fold{f}"] = dict(
        source=src,
        fold=f,
        num_folds=4,
        scheme="interleaved",
        shots=a["shots"] or 5,
        episodes=a["episodes"] or 1000,
        ensembles=ens,
        seg_type="semantic",
        paper=paper,
      )
  elif b == "pascal5i":
    src = dict(reader="pascal_voc", root=root or f"{data}/VOC2012", split="val")
    for f in _folds(a, 4):
      out[f"pascal5i_fold{f}"] = dict(
        source=src,
        fold=f,
        num_folds=4,
        scheme="blocks",
        shots=a["shots"] or 5,
        episodes=a["episodes"] or 1000,
        ensembles=ens,
        seg_type="semantic",
        paper=paper,
      )
  elif b == "fss1000":
    out["fss1000"] = dict(
      source=dict(reader="fss1000", root=root or f"{data}/fss1000"),
      class_names=fss1000_test_classes(),
      shots=a["shots"] or 4,
      episodes=a["episodes"] or 1000,
      ensembles=ens,
      seg_type="semantic",
      paper=paper,
    )
  elif b == "lvis92i":
    src = dict(reader="lvis", root=root or f"{data}/lvis", split="val")
    for f in _folds(a, 10):
      out[f"lvis92i_fold{f}"] = dict(
        source=src,
        fold=f,
        num_folds=10,
        scheme="interleaved_equal",
        folds_over_usable=True,
        shots=a["shots"] or 5,
        episodes=a["episodes"] or 2300,
        ensembles=ens,
        seg_type="semantic",
        paper=paper,
      )
  return out


def get_config(arg=None):
  a = _parse(arg)
  c = ml_collections.ConfigDict()
  data = data_dir()
  c.data_dir = data
  c.seed = 0
  c.init = ""
  c.model_overrides = {}
  # a learned prompt (.npz from `incontext export-prompt`, or a tuning workdir's prompt.npz):
  # scored on every few-shot benchmark's episodes, beside the example-prompt rows
  c.learned_prompt = ""
  c.benchmark = a["benchmark"]
  c.fewshot = {}
  c.davis = {}
  c.youtube_vos = {}
  if a["benchmark"] == "shared":
    common = dict(
      shots=a["shots"] or 4,
      episodes=a["episodes"] or 200,
      ensembles=("feature", "spatial"),
      seg_type="semantic",
    )
    c.fewshot = {
      "coco128_fold0": dict(
        source=dict(reader="coco128_seg", root=f"{data}/coco128_seg"),
        fold=0,
        num_folds=4,
        scheme="interleaved",
        **common,
      ),
      "horse": dict(
        source=dict(reader="weizmann_horse", root=f"{data}/weizmann_horse"),
        classes=(1,),
        select=dict(perm_seed=0, start=200),
        **common,
      ),
    }
    c.davis = dict(
      root=f"{data}/davis2016_subset",
      sequences=("boat", "kite-walk", "rollerblade"),
      memories=(0, a["memory"]),
      resolution="480p",
      max_frames=None,
      save_masks=False,
    )
  elif a["benchmark"] == "folder":
    c.fewshot = {
      "folder": dict(
        source=dict(reader="image_mask_globs", images="", masks="", mask_type="binary"),
        classes=(1,),
        shots=a["shots"] or 4,
        episodes=a["episodes"] or 200,
        ensembles=("feature", "spatial"),
        seg_type="semantic",
      )
    }
  elif a["benchmark"] == "davis2017":
    c.davis = dict(
      root=a["root"] or f"{data}/DAVIS",
      year=2017,
      split="val",
      sequences=(),
      memories=(0, a["memory"]),
      resolution="480p",
      max_frames=None,
      save_masks=True,
      paper=PAPER_RESULTS["davis2017"],
    )
  elif a["benchmark"] == "ytvos2018":
    c.youtube_vos = dict(
      root=a["root"] or f"{data}/youtube_vos",
      split="valid",
      memories=(0, a["memory"]),
      max_frames=None,
      videos=(),
      paper=PAPER_RESULTS["ytvos2018"],
    )
  else:
    c.fewshot = _fewshot_presets(a, data)
  if a["runlocal"]:
    for b in c.fewshot.values():
      b.episodes = 4
      b.shots = 2
    if c.davis:
      if a["benchmark"] == "shared":
        c.davis.sequences = ("boat",)
      c.davis.max_frames = 4
      c.davis.memories = (0, 2)
    if c.youtube_vos:
      c.youtube_vos.max_frames = 4
      c.youtube_vos.memories = (0, 2)
  return c
