"""Evaluation episodes: fixed seeds, folds, held-out classes, video episodes (real data)."""

import numpy as np
import pytest

from _shared import shared_data_dir
from incontext.data import episodes, folds, pipeline, sources


def test_fold_schemes():
  ids = list(range(1, 81))
  f0 = folds.fold_classes(ids, 0, 4, "interleaved")
  assert f0[:3] == [1, 5, 9] and len(f0) == 20
  assert folds.fold_classes(range(1, 21), 1, 4, "blocks") == [6, 7, 8, 9, 10]
  union = sorted(sum((folds.fold_classes(ids, f, 4) for f in range(4)), []))
  assert union == ids


@pytest.fixture(scope="module")
def ccp():
  return sources.clothing_co_parsing(str(shared_data_dir("clothing_co_parsing")))


@pytest.mark.integration
def test_semantic_episodes_deterministic(ccp):
  a = episodes.SemanticEpisodes(ccp, fold=1, shots=2, num_episodes=6, seed=3)
  b = episodes.SemanticEpisodes(ccp, fold=1, shots=2, num_episodes=6, seed=3)
  assert [a.spec(i) for i in range(6)] == [b.spec(i) for i in range(6)]
  assert a.spec(0) != episodes.SemanticEpisodes(ccp, fold=1, shots=2, seed=4).spec(0)
  ep = a[0]
  assert len(ep["support"]) == 2 and ep["fold"] == 1
  assert ep["class_id"] in folds.fold_classes(range(1, 59), 1, 4)
  assert ep["class_name"] == ccp.class_names[ep["class_id"]]
  for img, m in ep["support"] + [ep["query"]]:
    assert img.dtype == np.uint8 and img.ndim == 3 and m.dtype == np.uint8
    assert m.shape == img.shape[:2] and set(np.unique(m)) <= {0, 1} and m.any()


@pytest.mark.integration
def test_train_excludes_eval_fold(ccp):
  eps = episodes.SemanticEpisodes(ccp, fold=2, num_episodes=4)
  d = dict(
    name="clothing_co_parsing",
    reader="clothing_co_parsing",
    root=str(shared_data_dir("clothing_co_parsing")),
    exclude_fold=2,
  )
  s = pipeline.make_sampler({"datasets": [d], "image_size": 16, "patch_size": 8}, seed=0)
  assert set(eps.classes) <= s.indices[0].excluded
  assert not set(eps.classes) & set(s.indices[0].class_list.tolist())


@pytest.mark.integration
@pytest.mark.parametrize(
  "name,reader,root",
  [("camvid", sources.camvid, "camvid"), ("coco128_seg", sources.coco_yolo, "coco128_seg")],
)
def test_folds_on_shared_semantic_sets(name, reader, root):
  src = reader(str(shared_data_dir(root)))
  seen = set()
  for f in range(4):
    try:
      eps = episodes.SemanticEpisodes(src, fold=f, num_episodes=2)
    except ValueError:
      continue
    assert not seen & set(eps.classes)
    seen |= set(eps.classes)
    assert eps[1]["query"][1].any()
  assert seen


@pytest.mark.integration
def test_fss_style_episodes():
  src = sources.fss1000(str(shared_data_dir("examples", "fss1000_examples")))
  eps = episodes.SemanticEpisodes(src, classes=list(src.class_names), shots=4, num_episodes=3)
  ep = eps[2]
  assert ep["class_name"] == "eiffel_tower_support" and len(ep["support"]) == 4


@pytest.mark.integration
def test_video_episodes():
  src = sources.davis(
    str(shared_data_dir("davis2016_subset")), split=None, sequences=["boat", "surf"]
  )
  eps = episodes.VideoEpisodes(src)
  assert eps.names == ["boat", "surf"]
  ep = eps[0]
  n = sum(1 for v in src.video_ids if v == "boat")
  assert len(ep["frames"]) == len(ep["masks"]) == n - 1 and ep["object_ids"] == [1]
  assert ep["prompt"][1].shape == ep["prompt"][0].shape[:2]
  assert set(np.unique(ep["masks"][0])) <= {0, 1}
