"""Few-shot segmentation over class-fold episodes: mIoU and FB-IoU (FSS-1000 / COCO-20i /
PASCAL-5i style), 1 shot and k shots with the feature or the spatial ensemble.

An episode is (class c, query example, k support examples of class c); the task is the binary
mask of c in the query. Every method is scored on the *same* episodes (1-shot uses the first
support), next to the copy-the-prompt-mask baseline (the first support's mask, resized to the
query, used as the prediction). IoUs are computed at the query's original resolution (the model
output is upsampled with legacy nearest, docs/design.md#label-maps).

Episodes come from `incontext.data.episodes` (the one generator, shared with the trainer's
periodic evaluation): a pure function of (source, classes, shots, seed). The feature ensemble is
on iff more than one prompt is used (`predict.feature_ensemble_on`, the rule of `Segmenter`
and `video.propagate` too).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from tqdm import tqdm

from incontext import canvas, metrics, predict


def _binary(ex: dict, c: int) -> tuple[np.ndarray, np.ndarray]:
  m = np.asarray(ex["mask"])
  return m == c, m == 255


def predict_binary(
  model,
  support_imgs: Sequence[np.ndarray],
  support_fgs: Sequence[np.ndarray],
  query: np.ndarray,
  *,
  ensemble: str,
  seg_type: str,
) -> np.ndarray:
  """Foreground [H, W] bool of `query` (uint8 [H, W, 3]) from binary support masks.

  ensemble: 'feature' (K prompts in one batch, features averaged) or 'spatial' (the K prompts
  tiled into one, docs/design.md#ensembles); with one support both are plain one-shot.
  """
  size = tuple(model.cfg.image_size)
  imgs = np.stack([predict.resize_image_uint8(s, size) for s in support_imgs])
  tgts = np.stack(
    [
      predict.resize_mask_uint8(canvas.BINARY_PALETTE[f.astype(np.int64)], size)
      for f in support_fgs
    ]
  )
  if ensemble == "spatial" and len(imgs) > 1:
    i1, t1 = predict.spatial_ensemble(imgs, tgts)
    imgs, tgts = i1[None], t1[None]
  elif ensemble not in ("feature", "spatial"):
    raise ValueError(f"unknown ensemble {ensemble!r}; expected 'feature' or 'spatial'")
  pred = predict.predict_canvas(
    model,
    canvas.normalize(imgs),
    canvas.normalize(tgts),
    predict.prepare_image(query, size),
    seg_type=seg_type,
    feature_ensemble=predict.feature_ensemble_on(len(imgs)),
  )
  lab = predict.labels_from_prediction(canvas.denormalize(pred), canvas.BINARY_PALETTE, [1])
  return predict.resize_nearest_torch(lab, query.shape[:2]) == 1


def predict_learned(model, lp, query: np.ndarray, class_id: int, name: str) -> np.ndarray:
  """Foreground [H, W] bool of label `class_id` in `query` from a learned prompt alone."""
  if int(class_id) not in [int(i) for i in lp.label_ids]:
    raise ValueError(f"{name}: has labels {list(lp.label_ids)}, the episode's class is {class_id}")
  size = tuple(model.cfg.image_size)
  pred = predict.predict_canvas(
    model,
    np.asarray(lp.image, np.float32)[None],
    np.asarray(lp.target, np.float32)[None],
    predict.prepare_image(query, size),
    seg_type=lp.seg_type,
    feature_ensemble=False,
  )
  lab = predict.labels_from_prediction(canvas.denormalize(pred), lp.palette, lp.label_ids)
  return predict.resize_nearest_torch(lab, query.shape[:2]) == int(class_id)


def evaluate_fewshot(
  model,
  source,
  episodes: list[dict],
  *,
  methods: Sequence[tuple[str, int, str]],
  seg_type: str = "semantic",
  desc: str = "fewshot",
  learned: Sequence[tuple[str, object]] = (),
) -> dict:
  """Scores methods on episodes.

  Args:
    model: SegGPT.
    source: random-access examples {'image', 'mask'} (incontext.data.sources schema).
    episodes: `incontext.data.episodes.make_episodes` dicts {class, query, supports} with as
      many supports as the largest shot count.
    methods: (name, shots, ensemble) triples, e.g. ('1-shot', 1, 'feature'),
      ('4-shot feature', 4, 'feature'), ('4-shot spatial', 4, 'spatial').
    learned: (name, `incontext.prompts.LearnedPrompt`) pairs scored on the same episodes'
      queries (the prompt alone, no supports; an episode's class must be one of its labels).
  Returns:
    {name: {'miou', 'fb_iou', 'per_class', 'episodes'}} plus 'copy prompt mask (baseline)'.
  """
  accs = {m[0]: metrics.IoUAccumulator() for m in [*methods, *learned]}
  base = metrics.IoUAccumulator()
  cache: dict[int, dict] = {}

  def get(i):
    if i not in cache:
      if len(cache) >= 256:
        cache.pop(next(iter(cache)))
      cache[i] = source[i]
    return cache[i]

  for ep in tqdm(episodes, desc=desc, unit="episode"):
    c = ep["class"]
    q = get(ep["query"])
    gt, ign = _binary(q, c)
    sup = [get(i) for i in ep["supports"]]
    s_imgs = [s["image"] for s in sup]
    s_fgs = [_binary(s, c)[0] for s in sup]
    base.add(predict.resize_nearest_torch(s_fgs[0].astype(np.uint8), gt.shape) == 1, gt, c, ign)
    for name, k, ens in methods:
      if k > len(sup):
        raise ValueError(f"method {name!r} needs {k} supports, episodes have {len(sup)}")
      pred = predict_binary(
        model, s_imgs[:k], s_fgs[:k], q["image"], ensemble=ens, seg_type=seg_type
      )
      accs[name].add(pred, gt, c, ign)
    for name, lp in learned:
      accs[name].add(predict_learned(model, lp, q["image"], c, name), gt, c, ign)
  out = {name: a.result() for name, a in accs.items()}
  out["copy prompt mask (baseline)"] = base.result()
  return out
