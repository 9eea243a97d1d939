"""Model parameter directories: an Orbax params tree plus `incontext.json` metadata.

Layout of a params directory DIR (what `incontext convert` and the trainer's export write):
  DIR/incontext.json   {"kind": "incontext-seggpt-params", "config": {...SegGPTConfig...},
                        "source": {...}, "weights_hash": "<sha256 of the params>",
                        "trained_on": {"data": "procedural" | [dataset names] | ...,
                                       "steps": N, ...}}
  DIR/params/          Orbax StandardCheckpointer tree of the NNX Param state
  DIR/params.safetensors  the same arrays as one safetensors file (names: the Param paths
                       joined by "/"), the inference copy that `load_model` reads when present
                       (1.4 s for L/16 on 2 cores against 3.2 s through Orbax; see
                       experiments/bench_restore.py and docs/design.md).
                       Directories written before it existed load from `params/`.

Writes are staged inside DIR and moved into place at the end (incontext.outputs), so a failed
run leaves no half-written directory; overwriting replaces only what an earlier save wrote.
Loading checks the weights against `weights_hash` and that they are finite (`verify=False` skips
it), hashing one array at a time, once: a verified directory gets a stamp in the user's cache
keyed by its files' paths, sizes, inodes and times, so later loads of the unchanged files skip
the hash (any change to a file changes the key).
"""

import dataclasses
import hashlib
import json
import os

import jax
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx

from incontext import outputs, params_dir, timing
from incontext.models import seggpt
from incontext.params_dir import KIND, META, CheckpointError  # noqa: F401 (re-exported)

INFERENCE_COPY = "params.safetensors"
NAMES = (META, "params", INFERENCE_COPY)  # the entries save_model writes


def config_to_dict(cfg: seggpt.SegGPTConfig) -> dict:
  d = dataclasses.asdict(cfg)
  return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


def config_from_dict(d: dict) -> seggpt.SegGPTConfig:
  fields = {f.name for f in dataclasses.fields(seggpt.SegGPTConfig)}
  unknown = set(d) - fields
  if unknown:
    raise CheckpointError(f"unknown model config fields {sorted(unknown)}")
  kw = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}
  try:
    return seggpt.SegGPTConfig(**kw).validate()
  except TypeError as e:  # an edited incontext.json: one line naming the field
    raise CheckpointError(f"model config: {e}") from None


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
    names=NAMES,
    owned=_owned_params_dir,
    folders=("params",),
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
    _save_inference_copy(out.path(INFERENCE_COPY), model)
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


# The trainer writes this beside WORKDIR/config.json: {"config": the model's SegGPTConfig as a
# dict, "trained_on": what the run trains on (its "steps" filled in per checkpoint)}.
RUN_MODEL = "model.json"


def _checkpoint_meta(workdir: str, step: int) -> dict:
  path = os.path.join(os.path.abspath(workdir), RUN_MODEL)
  try:
    with open(path) as f:
      run = json.load(f)
    config, trained_on = run["config"], dict(run["trained_on"])
  except FileNotFoundError:
    raise CheckpointError(
      f"{path}: missing (a training workdir from an older version: run its training command "
      "once more, which writes it and prints the finished run's result)"
    ) from None
  except (OSError, ValueError, KeyError, TypeError) as e:
    raise CheckpointError(f"{path}: unreadable run model file ({e})") from None
  trained_on["steps"] = int(step)
  return {
    "kind": KIND,
    "config": config,
    "source": {"trainer": os.path.abspath(workdir), "step": step},
    "trained_on": trained_on,
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
  device=None,
  **config_overrides,
) -> seggpt.SegGPT:
  """Loads a params directory (or a workdir's weights, `params_dir.resolve`) into a new SegGPT.

  `directory` may be relative to the working folder (Orbax itself needs absolute paths).
  `config_overrides` change runtime-only fields (dtype, ensemble, remat, drop_path);
  `expect_variant` raises if the stored architecture differs from it; `verify` checks the
  weights against the stored sha256 and that they are finite (CheckpointError naming the
  directory otherwise). `device` (a jax Device): place the weights there, e.g. a process's
  first local device under `jax.distributed` (each process then holds its own replica; the
  default restore assumes the topology the weights were saved with); None: the default.
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
  with timing.phase("restore", compiles=False):  # the abstract model's trace
    model = seggpt.abstract(cfg)
  if r.step is not None:
    with timing.phase("restore"):
      restored = _restore_checkpoint_params(directory, r.step)
      if device is not None:
        restored = jax.device_put(restored, device)
      model = nnx.merge(*_graph_and_state(cfg, restored, model))
    if verify:
      verify_model(directory, model, meta)  # no recorded hash: the finiteness check
    return model
  copy = os.path.join(directory, INFERENCE_COPY)
  try:
    with timing.phase("restore"):
      if os.path.isfile(copy):
        model = _load_inference_copy(copy, model, device)
      else:
        target = _pure(model)
        if device is not None:
          dev = jax.sharding.SingleDeviceSharding(device)
          target = jax.tree.map(
            lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=dev), target
          )
        with ocp.StandardCheckpointer() as ckptr:
          restored = ckptr.restore(os.path.join(directory, "params"), target)
        model = nnx.merge(*_graph_and_state(cfg, restored, model))
  except Exception as e:
    first = (str(e).strip().splitlines() or [""])[0][:300]  # tensorstore errors span pages
    raise CheckpointError(
      f"{directory}: cannot restore params, the files are corrupt or "
      f"incomplete ({type(e).__name__}: {first})"
    ) from None
  if verify:
    key = _stamp_key(directory, meta)
    if key is None or not _has_stamp(key):
      with timing.phase("verify"):
        verify_model(directory, model, meta)
      _write_stamp(key, directory)
  return model


def _save_inference_copy(path: str, model) -> None:
  import safetensors.numpy as stn

  arrays = {
    "/".join(map(str, p)): np.asarray(jax.device_get(var[...]))
    for p, var in nnx.to_flat_state(nnx.state(model, nnx.Param))
  }
  stn.save_file(arrays, path, metadata={"format": "np", "kind": KIND})


def _load_inference_copy(path: str, abstract_model, device=None):
  """The model from its safetensors copy: every Param must be there with its shape.

  The arrays are read whole (safetensors' mmap'd read) and placed on the device in one
  `device_put` of the whole tree (per-array transfers cost about twice as long at L/16).
  """
  import safetensors.numpy as stn

  arrays = stn.load_file(path)
  graphdef, state = nnx.split(abstract_model)
  params = {
    "/".join(map(str, p)): var for p, var in nnx.to_flat_state(state) if isinstance(var, nnx.Param)
  }
  for name, var in params.items():
    arr = arrays.get(name)
    if arr is None:
      raise ValueError(f"{INFERENCE_COPY} has no array {name!r}")
    if arr.shape != tuple(var.shape) or arr.dtype != var.dtype:
      raise ValueError(
        f"{INFERENCE_COPY}: {name} is {arr.dtype}{list(arr.shape)}, "
        f"expected {var.dtype}{list(var.shape)}"
      )
  placed = jax.device_put({name: arrays[name] for name in params}, device)
  for name, var in params.items():
    var.set_value(placed[name])
  return nnx.merge(graphdef, state)


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


# -- verified stamps: the 1.2 GB of L/16 weights are hashed once, not on every load ----------
# A stamp is an empty file in the user's cache whose name is the sha256 of the params
# directory's real path, its recorded weights hash and, for every file in it, its relative
# path, size, inode, mtime and ctime (ns). Any change to a file (a write, a replacement, even
# with the mtime set back: ctime moves) gives another key, so the weights are hashed again.
STAMP_LIMIT = 256  # the oldest stamps are dropped above this many


def stamp_dir() -> str:
  """$XDG_CACHE_HOME/incontext/verified, else ~/.cache/incontext/verified."""
  base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return os.path.join(os.path.abspath(base), "incontext", "verified")


def _stamp_key(directory: str, meta: dict) -> str | None:
  """The key of a params directory's current files, or None when it cannot be read."""
  h = hashlib.sha256()
  real = os.path.realpath(directory)
  h.update(f"{real}\0{meta.get('weights_hash')}\0".encode())
  try:
    for root, dirs, files in os.walk(real):
      dirs.sort()
      for name in sorted(files):
        path = os.path.join(root, name)
        st = os.stat(path)
        rel = os.path.relpath(path, real)
        h.update(f"{rel}\0{st.st_size}\0{st.st_ino}\0{st.st_mtime_ns}\0{st.st_ctime_ns}\n".encode())
  except OSError:
    return None
  return h.hexdigest()


def _has_stamp(key: str) -> bool:
  return os.path.isfile(os.path.join(stamp_dir(), key))


def _is_stamp_name(name: str) -> bool:
  return len(name) == 64 and all(c in "0123456789abcdef" for c in name)


def _write_stamp(key: str | None, directory: str) -> None:
  """Records a verified key; a cache folder that cannot be written only costs a re-hash."""
  if key is None:
    return
  folder = stamp_dir()
  try:
    os.makedirs(folder, mode=0o700, exist_ok=True)
    with open(os.path.join(folder, key), "w") as f:
      f.write(os.path.realpath(directory) + "\n")
    stamps = sorted(  # only stamps (64 hex digits, regular files) are ever pruned
      (
        e for e in os.scandir(folder) if _is_stamp_name(e.name) and e.is_file(follow_symlinks=False)
      ),
      key=lambda e: e.stat().st_mtime_ns,
    )
    for e in stamps[:-STAMP_LIMIT]:
      os.unlink(e.path)
  except OSError:
    pass


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
