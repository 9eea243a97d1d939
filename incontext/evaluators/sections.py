"""The typed config of the evaluation harness (experiments/configs/seggpt_eval.py): one frozen
dataclass per section, each key a commented field with its default.

`EvalConfig.of(config)` builds it from the ml-collections ConfigDict and checks it in one place
(`incontext.config_lib.section`: an unknown key, a wrong type or a missing required key is a
one-line UserError naming the setting); `run.run_eval` builds it once and passes its sections
down. `Benchmark.of(bench)` does the same for one few-shot benchmark dict (the trainer's
'episodes' evaluation and the experiment scripts pass dicts).
"""

from __future__ import annotations

import dataclasses

from incontext import config_lib


@dataclasses.dataclass(frozen=True)
class Benchmark:
  """One few-shot benchmark: episodes (class, query, supports) over a source's class folds."""

  # The examples: {'reader', 'root', ...} (incontext.data.sources.make_source).
  source: dict
  # Episodes scored.
  episodes: int
  # The benchmark's name (progress bar, log lines; run_eval: its key in `fewshot`).
  name: str = ""
  # Supports per episode: 1-shot always, and the k-shot methods when > 1.
  shots: int = 1
  # Which examples of the source (incontext.data.selection: perm_seed, start, stop; None: all).
  select: dict | None = None
  # The held-out fold of `num_folds` class folds split by `scheme` (incontext.data.folds).
  fold: int = 0
  num_folds: int = 4
  scheme: str = "interleaved"
  # The classes instead of the fold's: by id, or by name in the source's class names.
  classes: tuple[int, ...] = ()
  class_names: tuple[str, ...] = ()
  # Folds over the classes with more than `shots` examples only (LVIS-92i).
  folds_over_usable: bool = False
  # The ensembles of the k-shot methods: 'feature' and/or 'spatial'.
  ensembles: tuple[str, ...] = ("feature",)
  # 'semantic' or 'instance': the model's type token.
  seg_type: str = "semantic"
  # The paper's numbers by method name, and 'source' (the table they come from).
  paper: dict | None = None

  @classmethod
  def of(cls, bench, where: str = "benchmark") -> Benchmark:
    return config_lib.section(cls, bench, where)


@dataclasses.dataclass(frozen=True)
class DavisConfig:
  """`config.davis`: semi-supervised video object segmentation on DAVIS (J&F)."""

  # The DAVIS folder (JPEGImages/, Annotations/, ImageSets/).
  root: str
  # The sequences; empty: those of ImageSets/{year}/{split}.txt.
  sequences: tuple[str, ...] = ()
  # ImageSets year and split (the evaluation runs only with `sequences` or a `split`).
  year: int | str = 2017
  split: str | None = None
  # Memory sizes K (frames besides the first used as prompts), one result row each.
  memories: tuple[int, ...] = (0, 8)
  # The frames' folder under JPEGImages/ and Annotations/.
  resolution: str = "480p"
  # Frames per sequence (None: all).
  max_frames: int | None = None
  # Write the predicted masks to WORKDIR/davis_masks/K{k}/SEQ/FRAME.png.
  save_masks: bool = False
  # The paper's numbers by row name, and 'source'.
  paper: dict | None = None


@dataclasses.dataclass(frozen=True)
class YoutubeVosConfig:
  """`config.youtube_vos`: a YouTube-VOS submission (scored by the official server)."""

  # The YouTube-VOS folder ({split}/JPEGImages, Annotations, meta.json).
  root: str
  # The split.
  split: str = "valid"
  # Memory sizes K, one submission each.
  memories: tuple[int, ...] = (0, 8)
  # Frames per video (None: all).
  max_frames: int | None = None
  # The videos (empty: all of the split).
  videos: tuple[str, ...] = ()
  # The paper's numbers ('G') and 'source'.
  paper: dict | None = None


@dataclasses.dataclass(frozen=True)
class EvalConfig:
  """The evaluation harness's run config (experiments/configs/seggpt_eval.py)."""

  # The params dir evaluated (converted official weights or a trained checkpoint).
  init: str = ""
  # Seed of the few-shot episodes.
  seed: int = 0
  # SegGPTConfig fields changed at load (runtime ones: dtype, attention, ...).
  model_overrides: dict = dataclasses.field(default_factory=dict)
  # A learned prompt (.npz) scored on every few-shot benchmark's queries ('': none).
  learned_prompt: str = ""
  # The preset the config was made from (recorded, not read).
  benchmark: str = ""
  # Few-shot benchmarks by name.
  fewshot: dict[str, Benchmark] = dataclasses.field(default_factory=dict)
  # DAVIS (None or empty: not run).
  davis: DavisConfig | None = None
  # YouTube-VOS (None or empty: not run).
  youtube_vos: YoutubeVosConfig | None = None
  # The data folder the roots were built from (experiments.configs.common).
  data_dir: str = ""

  @classmethod
  def of(cls, config) -> EvalConfig:
    """The checked section tree of a ConfigDict (an EvalConfig is returned as it is)."""
    return config_lib.section(cls, config, "config")
