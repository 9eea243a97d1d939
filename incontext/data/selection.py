"""Which examples of a source a task or benchmark uses: a seeded permutation, sliced.

Shared by in-context tuning (`incontext.train.tuner`) and the evaluators
(`incontext.evaluators.run`), so that the examples a prompt is tuned on and the ones it is
scored on are disjoint by construction (e.g. tune on [0:64], score on [64:200]).
"""

import numpy as np


def select_indices(n: int, task: dict) -> list[int]:
  """Indices of a source of `n` examples used by a task: a seeded permutation of range(n)
  (`perm_seed`, or sorted order if None) sliced [`start`:`stop`]. Raises ValueError if empty."""
  order = (
    np.arange(n)
    if task.get("perm_seed") is None
    else np.random.default_rng(int(task["perm_seed"])).permutation(n)
  )
  start, stop = int(task.get("start") or 0), task.get("stop")
  sel = order[start : None if stop is None else int(stop)]
  if len(sel) == 0:
    raise ValueError(f"task selects no examples ({n} in the source, start={start}, stop={stop})")
  return [int(i) for i in sel]
