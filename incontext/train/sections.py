"""The typed run configs of the trainer and the tuner: one frozen dataclass per config section.

Each field is one config key, with its default and a comment beside it; `TrainConfig.of(config)`
and `TuneConfig.of(config)` build them from the ml-collections ConfigDict of
experiments/configs/*.py (command-line overrides included) and check them in one place
(`incontext.config_lib.section`): an unknown key, a value of the wrong type or a missing
required key is a one-line `RunError` naming the setting. The entry points (`trainer.run`,
`tuner.run_tune`) build them once and pass them down; the ConfigDict itself is what they write
to WORKDIR/config.json.

Sections that belong to another module keep that module's checks: `input` (the data reader,
incontext.data.procedural or .pipeline), `model` (seggpt.get_config), `evals.data` of an
'episodes' evaluation (incontext.evaluators.sections.Benchmark), the task's reader arguments
(the reader's signature).
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any, ClassVar

from incontext import config_lib
from incontext.train.optim import OptimConfig, PromptOptimConfig
from incontext.train.workdir import RunError


# -- training -----------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class InitConfig:
  """`config.init`: where the params of a fresh run come from."""

  # 'scratch' (random init), 'params' (an incontext params dir) or 'torch' (.pth, .safetensors,
  # a transformers folder or hf:REPO_ID).
  kind: str = "scratch"
  # The params dir or torch file of kind 'params' / 'torch' (relative: from the working folder).
  path: str = ""


@dataclasses.dataclass(frozen=True)
class LossConfig:
  """`config.loss` of training."""

  # Smooth-L1 beta (SegGPT's 0.01; large values make it an MSE).
  beta: float
  # Painter's loss (over every patch) instead of SegGPT's (the masked patches only).
  painter: bool = False


@dataclasses.dataclass(frozen=True)
class CkptConfig:
  """`config.ckpt`: Orbax checkpoints in WORKDIR/checkpoints."""

  # Save every this many steps (0: only at the end).
  every: int = 0
  # Checkpoints kept (the best ones when `best_metric` is set, else the latest).
  keep: int = 3
  # Save in the background while training continues (key `async`).
  async_save: bool = config_lib.key("async", True)
  # An eval metric ('miou', ...) that decides which checkpoints are kept ('': the latest).
  best_metric: str = ""
  # 'max' or 'min': which end of `best_metric` is best.
  best_mode: str = "max"


@dataclasses.dataclass(frozen=True)
class EvalsConfig:
  """`config.evals`: the periodic few-shot evaluation on held-out data."""

  # 'procedural' (episodes of held-out procedural classes) or 'episodes' (the few-shot
  # evaluator on the benchmark `data`, as experiments/evaluate.py runs it).
  type: str = "procedural"
  # Evaluate every this many steps (0: only at the end, if `at_end`).
  every: int = 0
  # Evaluate after the last step.
  at_end: bool = True
  # 'procedural': episodes per held-out class.
  per_class: int = 4
  # 'episodes': episodes of the benchmark unless `data` gives `episodes`.
  num_episodes: int = 64
  # Seed of the episodes (None: 1234 for 'procedural', 0 for 'episodes').
  seed: int | None = None
  # Eval batch (0: the training batch); rounded down to a multiple of the batch devices.
  batch_size: int = 0
  # Episodes drawn in WORKDIR/predictions*.png.
  num_png: int = 8
  # 'procedural': the procedural input config (None: `config.input`); 'episodes': the
  # few-shot benchmark (keys of a seggpt_eval.py few-shot entry).
  data: dict | None = None

  def episode_seed(self) -> int:
    if self.seed is not None:
      return self.seed
    return 1234 if self.type == "procedural" else 0


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """The trainer's run config (experiments/configs/seggpt_train.py)."""

  # Seed of the init, the drop-path RNG and the data order.
  seed: int
  # Steps of the whole run (rerunning with a larger total continues the run).
  total_steps: int
  # Global batch (all hosts): a multiple of the batch devices and of the process count.
  batch_size: int
  # Log the training metrics (metrics.jsonl, the progress bar) every this many steps.
  log_every: int
  # Training data: `type` 'procedural' or 'pipeline'; the rest is that reader's config
  # (incontext.data.procedural / incontext.data.pipeline check it).
  input: dict
  # The model: `variant` plus SegGPTConfig fields (seggpt.get_config checks them).
  model: dict
  # Mesh axes [(name, size)]; one size may be -1 (the devices left).
  mesh: tuple
  # Param sharding: a preset of incontext.sharding.RULES or [(regex, spec)] pairs.
  sharding_rules: Any
  # The optimiser (incontext.train.optim.OptimConfig).
  optim: OptimConfig
  # The loss.
  loss: LossConfig
  # Where a fresh run's params come from.
  init: InitConfig = InitConfig()
  # The periodic evaluation.
  evals: EvalsConfig = EvalsConfig()
  # Checkpoints.
  ckpt: CkptConfig = CkptConfig()
  # Write WORKDIR/params (a params dir of the final model) at the end (single host).
  export_params: bool = True
  # The data folder the dataset roots were built from (experiments.configs.common).
  data_dir: str = ""

  @classmethod
  def of(cls, config) -> TrainConfig:
    """The checked section tree of a ConfigDict (a TrainConfig is returned as it is)."""
    return config_lib.section(cls, config, "config", error=RunError)

  @property
  def input_type(self) -> str:
    """'procedural' or 'pipeline' (the reader of `input`)."""
    return self.input.get("type", "procedural")

  def input_config(self) -> dict:
    """`input` without its `type`: the reader's config."""
    return {k: v for k, v in self.input.items() if k != "type"}


# -- tuning -------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class TaskConfig:
  """`config.task`: the examples a prompt is tuned on; keys other than these are the
  arguments of `reader` (incontext.data.sources.READERS), checked against its signature."""

  # The source reader ('kvasir_seg', 'image_mask_globs', 'davis', ...).
  reader: str = ""
  # The label ids the prompt paints, in palette order (one: white on black).
  label_ids: tuple[int, ...] = (1,)
  # Their names (default label_ID).
  label_names: tuple[str, ...] = ()
  # 'semantic' or 'instance': the model's type token.
  seg_type: str = "semantic"
  # Which examples of the source (incontext.data.selection): a seeded permutation (None: in
  # order) sliced [start:stop].
  perm_seed: int | None = None
  start: int | None = 0
  stop: int | None = None
  # The reader's arguments (root, images, masks, ...): every other key of the section.
  reader_args: dict = dataclasses.field(default_factory=dict)

  KEYS: ClassVar[tuple[str, ...]] = (
    "label_ids",
    "label_names",
    "perm_seed",
    "reader",
    "seg_type",
    "start",
    "stop",
  )

  @classmethod
  def from_values(cls, values, where: str, error) -> TaskConfig:
    from incontext.data import sources

    keys = list(values.keys())
    reader = values["reader"] if "reader" in keys else ""
    rest = [k for k in keys if k not in cls.KEYS]
    fn = sources.READERS.get(reader) if isinstance(reader, str) else None
    if fn is not None:
      known = set(cls.KEYS) | set(inspect.signature(fn).parameters)
      unknown = sorted(set(rest) - known)
      if unknown:
        raise error(
          f"{where}: unknown key{'s' if len(unknown) > 1 else ''} {unknown}; known: {sorted(known)}"
        )
    own = config_lib.build(cls, {k: values[k] for k in keys if k in cls.KEYS}, where, error=error)
    args = {k: config_lib.plain(values[k]) for k in rest}
    return dataclasses.replace(own, reader_args=args)

  @classmethod
  def of(cls, task, where: str = "config.task") -> TaskConfig:
    return config_lib.section(cls, task, where, error=RunError)

  def source_config(self) -> dict:
    """The `sources.make_source` config: {'reader', **reader_args}."""
    return {"reader": self.reader, **self.reader_args}

  def selection(self) -> dict:
    """The `selection.select_indices` config."""
    return {"perm_seed": self.perm_seed, "start": self.start, "stop": self.stop}

  def names(self) -> list[str]:
    """`label_names`, else label_ID for each label id."""
    return [str(n) for n in self.label_names or [f"label_{c}" for c in self.label_ids]]


@dataclasses.dataclass(frozen=True)
class TuneSection:
  """`config.tune`: the prompt and its batches."""

  # Examples per step (sampled with replacement when the task has fewer); a multiple of the
  # batch devices.
  batch_size: int
  # The initial prompt: 'example' (a task example), 'noise' or 'zeros'.
  init: str
  # Also learn the prompt's target (else only its image).
  learn_target: bool
  # Which task example starts the prompt ('example', and the target of 'noise').
  init_index: int = 0
  # Random horizontal flips of the batch examples.
  hflip: bool = True


@dataclasses.dataclass(frozen=True)
class TuneLossConfig:
  """`config.loss` of tuning."""

  # Smooth-L1 beta; None: the beta the model in `config.init` was trained with (the trainer
  # records it in its params dir), else SegGPT's 0.01.
  beta: float | None = None


@dataclasses.dataclass(frozen=True)
class HeldoutConfig:
  """`config.heldout`: task examples never tuned on, scored at the end (heldout.json)."""

  # Share of the task held out by a seeded permutation (at least one when > 0; 0: none).
  share: float = 0.0
  # Seed of that permutation.
  seed: int = 0


@dataclasses.dataclass(frozen=True)
class TuneConfig:
  """The tuner's run config (experiments/configs/prompt_tune.py)."""

  # Seed of the batches (and of a 'noise' prompt).
  seed: int
  # Steps of the whole run.
  total_steps: int
  # Mesh axes [(name, size)]; one size may be -1 (the devices left).
  mesh: tuple
  # The task examples.
  task: TaskConfig
  # The prompt and its batches.
  tune: TuneSection
  # The prompt's optimiser (incontext.train.optim.PromptOptimConfig).
  optim: PromptOptimConfig
  # The frozen model: a params dir (converted official weights or a trained checkpoint).
  init: str = ""
  # Log metrics every this many steps (and at steps 1 and the last).
  log_every: int = 10
  # Checkpoint every this many steps (and at the last).
  ckpt_every: int = 100
  # Checkpoints kept.
  keep_ckpts: int = 3
  # SegGPTConfig fields changed at load (runtime ones: dtype, attention, ...).
  model_overrides: dict = dataclasses.field(default_factory=dict)
  # The loss.
  loss: TuneLossConfig = TuneLossConfig()
  # Held-out task examples.
  heldout: HeldoutConfig = HeldoutConfig()
  # The data folder the task roots were built from (experiments.configs.common).
  data_dir: str = ""

  @classmethod
  def of(cls, config) -> TuneConfig:
    """The checked section tree of a ConfigDict (a TuneConfig is returned as it is)."""
    return config_lib.section(cls, config, "config", error=RunError)
