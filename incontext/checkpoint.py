"""Model parameter directories: an Orbax params tree plus `incontext.json` metadata.

Layout of a params directory DIR (what `incontext convert` and the trainer's export write):
  DIR/incontext.json   {"kind": "incontext-seggpt-params", "config": {...SegGPTConfig...},
                        "source": {...}, "weights_hash": "<sha256 of the params>",
                        "trained_on": {"data": "procedural" | [dataset names] | ...,
                                       "steps": N, ...}}
  DIR/params/          Orbax StandardCheckpointer tree of the NNX Param state

Writes go to a temporary sibling first and are renamed into place, so a failed run leaves
no half-written directory.
"""
import dataclasses
import hashlib
import json
import os
import shutil
import tempfile

import jax
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx

from incontext.errors import UserError
from incontext.models import seggpt

KIND = "incontext-seggpt-params"
META = "incontext.json"


class CheckpointError(UserError):
  """A params directory that is missing, of another kind, or does not fit."""


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


def params_hash(model_or_state) -> str:
  """sha256 over the params (names, shapes and float32 bytes), independent of storage."""
  state = model_or_state
  if isinstance(state, nnx.Module):
    state = nnx.state(state, nnx.Param)
  h = hashlib.sha256()
  for path, var in sorted(nnx.to_flat_state(state), key=lambda kv: str(kv[0])):
    arr = np.asarray(jax.device_get(var[...] if hasattr(var, "__getitem__") else var),
                     np.float32)
    h.update(str(path).encode())
    h.update(str(arr.shape).encode())
    h.update(arr.tobytes())
  return h.hexdigest()


def _pure(model: nnx.Module) -> dict:
  return nnx.to_pure_dict(nnx.state(model, nnx.Param))


def save_model(directory: str, model: seggpt.SegGPT, *, source: dict | None = None,
               overwrite: bool = False, trained_on: dict | None = None) -> dict:
  """Writes a params directory atomically; returns its metadata. A relative path is from the
  working folder.

  trained_on: what the weights were trained on, e.g. {"data": "procedural", "steps": 400}
  (the trainer) or {"data": "official SegGPT weights"} (conversion); read back by
  `procedural_only_warning`.
  """
  directory = os.path.abspath(directory)
  if os.path.exists(directory):
    if not overwrite:
      raise CheckpointError(f"{directory}: already exists (pass overwrite)")
  parent = os.path.dirname(directory)
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(prefix=".tmp_" + os.path.basename(directory) + "_", dir=parent)
  try:
    meta = {"kind": KIND, "config": config_to_dict(model.cfg), "source": source or {},
            "weights_hash": params_hash(model)}
    if trained_on is not None:
      meta["trained_on"] = trained_on
    with ocp.StandardCheckpointer() as ckptr:
      ckptr.save(os.path.join(tmp, "params"), _pure(model))
      ckptr.wait_until_finished()
    with open(os.path.join(tmp, META), "w") as f:
      json.dump(meta, f, indent=2)
    if os.path.exists(directory):
      shutil.rmtree(directory)
    os.replace(tmp, directory)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  return meta


def read_meta(directory: str) -> dict:
  """The `incontext.json` of a params directory (a relative path is from the working folder)."""
  directory = os.path.abspath(directory)
  path = os.path.join(directory, META)
  if not os.path.isdir(directory):
    raise CheckpointError(f"{directory}: no such checkpoint directory")
  if not os.path.isfile(path):
    raise CheckpointError(f"{directory}: not an incontext params directory (no {META}); "
                          "convert PyTorch weights with `incontext convert`")
  try:
    with open(path) as f:
      meta = json.load(f)
  except json.JSONDecodeError as e:
    raise CheckpointError(f"{path}: corrupt metadata ({e})") from None
  if meta.get("kind") != KIND:
    raise CheckpointError(f"{path}: kind {meta.get('kind')!r}, expected {KIND!r}")
  return meta


def load_model(directory: str, *, expect_variant: seggpt.SegGPTConfig | None = None,
               **config_overrides) -> seggpt.SegGPT:
  """Loads a params directory into a new SegGPT.

  `directory` may be relative to the working folder (Orbax itself needs absolute paths).
  `config_overrides` change runtime-only fields (dtype, ensemble, remat, drop_path);
  `expect_variant` raises if the stored architecture differs from it.
  """
  directory = os.path.abspath(directory)
  meta = read_meta(directory)
  cfg_dict = dict(meta["config"])
  cfg_dict.update(config_overrides)
  cfg = config_from_dict(cfg_dict)
  if expect_variant is not None:
    arch = lambda c: {k: v for k, v in config_to_dict(c).items()
                      if k not in ("dtype", "ensemble", "remat", "drop_path")}
    if arch(cfg) != arch(expect_variant):
      diff = {k: (v, arch(expect_variant)[k]) for k, v in arch(cfg).items()
              if arch(expect_variant)[k] != v}
      raise CheckpointError(f"{directory}: model does not match the expected variant "
                            f"(field: (checkpoint, expected)) {diff}")
  model = seggpt.abstract(cfg)
  target = _pure(model)
  try:
    with ocp.StandardCheckpointer() as ckptr:
      restored = ckptr.restore(os.path.join(directory, "params"), target)
  except Exception as e:
    raise CheckpointError(f"{directory}: cannot restore params ({type(e).__name__}: {e})") from None
  model = nnx.merge(*_graph_and_state(cfg, restored, model))
  return model


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
  return ("this model was trained on procedural shapes only" + steps + ": on photos expect "
          "coarse, misplaced or empty masks; for real images convert the official SegGPT "
          "weights (README: Official weights)")
