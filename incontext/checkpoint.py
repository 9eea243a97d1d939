"""Model parameter directories: an Orbax params tree plus `incontext.json` metadata.

Layout of a params directory DIR (what `incontext convert` and the trainer's export write):
  DIR/incontext.json   {"kind": "incontext-seggpt-params", "config": {...SegGPTConfig...},
                        "source": {...}, "weights_hash": "<sha256 of the params>",
                        "trained_on": {"data": "procedural" | [dataset names] | ...,
                                       "steps": N, ...}}
  DIR/params/          Orbax StandardCheckpointer tree of the NNX Param state

Writes are staged inside DIR and moved into place at the end (incontext.outputs), so a failed
run leaves no half-written directory; overwriting replaces only what an earlier save wrote.
Loading checks the weights against `weights_hash` and that they are finite (`verify=False` skips
it), hashing one array at a time.
"""

import dataclasses
import hashlib
import json
import os

import jax
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx

from incontext import outputs, params_dir
from incontext.models import seggpt
from incontext.params_dir import KIND, META, CheckpointError  # noqa: F401 (re-exported)


def config_to_dict(cfg: seggpt.SegGPTConfig) -> dict:
  d = dataclasses.asdict(cfg)
  return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


def config_from_dict(d: dict) -> seggpt.SegGPTConfig:
  fields = {f.name for f in dataclasses.fields(seggpt.SegGPTConfig)}
  unknown = set(d) - fields
  if unknown:
    raise CheckpointError(f"unknown model config fields {sorted(unknown)}")
  kw = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}
  return seggpt.SegGPTConfig(**kw).validate()


def params_hash(model_or_state, *, nonfinite: list | None = None) -> str:
  """sha256 over the params (names, shapes and float32 bytes), independent of storage.

  Streams: one array at a time is brought to the host. `nonfinite`, if given, collects the
  names of arrays holding NaN or inf.
  """
  state = model_or_state
  if isinstance(state, nnx.Module):
    state = nnx.state(state, nnx.Param)
  h = hashlib.sha256()
  for path, var in sorted(nnx.to_flat_state(state), key=lambda kv: str(kv[0])):
    arr = np.asarray(jax.device_get(var[...] if hasattr(var, "__getitem__") else var), np.float32)
    h.update(str(path).encode())
    h.update(str(arr.shape).encode())
    h.update(arr.tobytes())
    if nonfinite is not None and not np.isfinite(arr).all():
      nonfinite.append("/".join(str(p) for p in path))
  return h.hexdigest()


def _owned_params_dir(directory: str) -> list[str]:
  """Entries of a params directory saved before output manifests existed."""
  try:
    read_meta(directory)
  except CheckpointError:
    return []
  return [META, "params"]


def _pure(model: nnx.Module) -> dict:
  return nnx.to_pure_dict(nnx.state(model, nnx.Param))


def save_model(
  directory: str,
  model: seggpt.SegGPT,
  *,
  source: dict | None = None,
  overwrite: bool = False,
  hint: str = "overwrite",
  trained_on: dict | None = None,
) -> dict:
  """Writes a params directory atomically; returns its metadata. A relative path is from the
  working folder.

  An existing non-empty `directory` needs `overwrite` (`hint` says how the user sets it).
  trained_on: what the weights were trained on, e.g. {"data": "procedural", "steps": 400}
  (the trainer) or {"data": "official SegGPT weights"} (conversion); read back by
  `procedural_only_warning`.
  """
  directory = os.path.abspath(directory)
  with outputs.OutputDir(
    directory,
    command="params",
    overwrite=overwrite,
    hint=hint,
    names=(META, "params"),
    owned=_owned_params_dir,
  ) as out:
    meta = {
      "kind": KIND,
      "config": config_to_dict(model.cfg),
      "source": source or {},
      "weights_hash": params_hash(model),
    }
    if trained_on is not None:
      meta["trained_on"] = trained_on
    with ocp.StandardCheckpointer() as ckptr:
      ckptr.save(out.path("params"), _pure(model))
      ckptr.wait_until_finished()
    with open(out.path(META), "w") as f:
      json.dump(meta, f, indent=2)
  return meta


def read_meta(directory: str) -> dict:
  """The `incontext.json` of a params directory (a relative path is from the working folder).

  A training or tuning workdir stands for the weights `params_dir.resolve` finds in it; for a
  training checkpoint the metadata is made from the workdir's config.json (no weights hash).
  """
  r = params_dir.resolve(directory)
  if r.step is None:
    return params_dir.read_params_meta(r.path)
  return _checkpoint_meta(r.path, r.step)


def _run_config(workdir: str):
  import ml_collections

  path = os.path.join(os.path.abspath(workdir), "config.json")
  try:
    with open(path) as f:
      return ml_collections.ConfigDict(json.load(f))
  except (OSError, ValueError) as e:
    raise CheckpointError(f"{path}: unreadable training config ({e})") from None


def _checkpoint_meta(workdir: str, step: int) -> dict:
  from incontext.train import trainer  # the run's model config and data, as the trainer reads them

  config = _run_config(workdir)
  return {
    "kind": KIND,
    "config": config_to_dict(trainer.model_config(config)),
    "source": {"trainer": os.path.abspath(workdir), "step": step},
    "trained_on": trainer.trained_on(config, step),
  }


def _restore_checkpoint_params(workdir: str, step: int) -> dict:
  """The params of training checkpoint `step` (its optimiser state is read and dropped)."""
  path = os.path.join(os.path.abspath(workdir), "checkpoints", str(step), "state")
  try:
    with ocp.StandardCheckpointer() as ckptr:
      return jax.tree.map(jax.numpy.asarray, ckptr.restore(path)["params"])
  except Exception as e:
    first = (str(e).strip().splitlines() or [""])[0][:300]
    raise CheckpointError(
      f"{path}: cannot restore the training checkpoint ({type(e).__name__}: {first})"
    ) from None


def load_model(
  directory: str,
  *,
  expect_variant: seggpt.SegGPTConfig | None = None,
  verify: bool = True,
  **config_overrides,
) -> seggpt.SegGPT:
  """Loads a params directory (or a workdir's weights, `params_dir.resolve`) into a new SegGPT.

  `directory` may be relative to the working folder (Orbax itself needs absolute paths).
  `config_overrides` change runtime-only fields (dtype, ensemble, remat, drop_path);
  `expect_variant` raises if the stored architecture differs from it; `verify` checks the
  weights against the stored sha256 and that they are finite (CheckpointError naming the
  directory otherwise).
  """
  r = params_dir.resolve(directory)
  directory = os.path.abspath(r.path)
  meta = read_meta(directory) if r.step is None else _checkpoint_meta(directory, r.step)
  cfg_dict = dict(meta["config"])
  cfg_dict.update(config_overrides)
  cfg = config_from_dict(cfg_dict)
  if expect_variant is not None:
    arch = lambda c: {
      k: v
      for k, v in config_to_dict(c).items()
      if k not in ("dtype", "ensemble", "remat", "drop_path")
    }
    if arch(cfg) != arch(expect_variant):
      diff = {
        k: (v, arch(expect_variant)[k])
        for k, v in arch(cfg).items()
        if arch(expect_variant)[k] != v
      }
      raise CheckpointError(
        f"{directory}: model does not match the expected variant "
        f"(field: (checkpoint, expected)) {diff}"
      )
  model = seggpt.abstract(cfg)
  target = _pure(model)
  if r.step is not None:
    restored = _restore_checkpoint_params(directory, r.step)
    model = nnx.merge(*_graph_and_state(cfg, restored, model))
    if verify:
      verify_model(directory, model, meta)  # no recorded hash: the finiteness check
    return model
  try:
    with ocp.StandardCheckpointer() as ckptr:
      restored = ckptr.restore(os.path.join(directory, "params"), target)
  except Exception as e:
    first = (str(e).strip().splitlines() or [""])[0][:300]  # tensorstore errors span pages
    raise CheckpointError(
      f"{directory}: cannot restore params, the files are corrupt or "
      f"incomplete ({type(e).__name__}: {first})"
    ) from None
  model = nnx.merge(*_graph_and_state(cfg, restored, model))
  if verify:
    verify_model(directory, model, meta)
  return model


def verify_model(directory: str, model: seggpt.SegGPT, meta: dict) -> None:
  """Raises CheckpointError if `model`'s weights are not finite or do not match the sha256
  recorded in `meta` (params directories without a recorded hash get the finiteness check)."""
  bad: list[str] = []
  digest = params_hash(model, nonfinite=bad)
  want = meta.get("weights_hash")
  if want and digest != want:
    raise CheckpointError(
      f"{directory}: weights do not match their recorded sha256 ({digest[:12]}... vs "
      f"{want[:12]}...): the params files are corrupt or were changed"
      + (f"; non-finite values in {len(bad)} arrays, e.g. {bad[0]}" if bad else "")
    )
  if bad:
    raise CheckpointError(f"{directory}: non-finite weights in {len(bad)} arrays, e.g. {bad[0]}")


def _graph_and_state(cfg, pure, abstract_model=None):
  # Tracing the abstract model takes seconds at L/16: reuse the restore target's.
  model = abstract_model if abstract_model is not None else seggpt.abstract(cfg)
  graphdef, state = nnx.split(model)
  nnx.replace_by_pure_dict(state, pure)
  return graphdef, state


def procedural_only_warning(meta: dict) -> str | None:
  """A one-line warning when a params directory's metadata says it was trained on procedural
  shapes only (and not initialised from other weights); None otherwise (or when unknown)."""
  t = meta.get("trained_on") or {}
  if t.get("data") != "procedural" or t.get("init") not in (None, "scratch"):
    return None
  steps = f" ({t['steps']} steps)" if "steps" in t else ""
  return (
    "this model was trained on procedural shapes only" + steps + ": on photos expect "
    "coarse, misplaced or empty masks; for real images convert the official SegGPT "
    "weights (README: Official weights)"
  )
