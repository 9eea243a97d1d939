"""Device mesh from config (Auto axes) and the standard batch / replicated shardings."""

from typing import Sequence

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from incontext.errors import UserError

# Axes of the training mesh: batch over ('data', 'fsdp'); params sharded by rules over
# 'fsdp' (ZeRO-3 style) and 'model' (tensor parallel).
BATCH_AXES = ("data", "fsdp")


def resolve_shape(
  spec: Sequence[tuple[str, int]], num_devices: int
) -> tuple[tuple[str, ...], tuple[int, ...]]:
  """[('data', -1), ('model', 2)] -> (names, sizes) with the single -1 resolved; a spec that
  does not fit the devices is the user's setting (UserError naming the mesh)."""
  names = tuple(str(n) for n, _ in spec)
  sizes = [int(s) for _, s in spec]
  if sizes.count(-1) > 1:
    raise UserError(f"mesh {list(spec)}: at most one axis may have size -1")
  known = int(np.prod([s for s in sizes if s != -1]))
  if -1 in sizes:
    if num_devices % known:
      raise UserError(f"mesh {list(spec)}: {num_devices} devices not divisible by {known}")
    sizes[sizes.index(-1)] = num_devices // known
  if int(np.prod(sizes)) != num_devices:
    raise UserError(
      f"mesh {list(spec)} has {int(np.prod(sizes))} devices, but {num_devices} are available"
    )
  return names, tuple(sizes)


def make_mesh(spec: Sequence[tuple[str, int]], devices=None) -> jax.sharding.Mesh:
  """Mesh with Auto axis types (GSPMD propagation). spec: [(name, size|-1), ...].

  Axes the spec omits among ('data', 'fsdp', 'model') are added with size 1, so the rules
  and batch shardings can always name them.
  """
  spec = [tuple(s) for s in spec]
  for ax in ("data", "fsdp", "model"):
    if ax not in [n for n, _ in spec]:
      spec.append((ax, 1))
  devices = jax.devices() if devices is None else devices
  names, sizes = resolve_shape(spec, len(devices))
  auto = (jax.sharding.AxisType.Auto,) * len(names)
  return jax.make_mesh(sizes, names, axis_types=auto, devices=devices)


def batch_sharding(mesh) -> NamedSharding:
  """Leading (batch) dimension over the data and fsdp axes."""
  axes = tuple(a for a in BATCH_AXES if a in mesh.axis_names)
  return NamedSharding(mesh, P(axes))


def replicated(mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_size_multiple(mesh) -> int:
  """Global batch sizes must be a multiple of this (devices along the batch axes)."""
  return int(np.prod([mesh.shape[a] for a in BATCH_AXES if a in mesh.axis_names]))
