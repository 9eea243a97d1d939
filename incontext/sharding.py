"""Regex rules -> PartitionSpecs for a (params or train) state.

A rule is (regex, spec): the regex is matched with `re.fullmatch` against the '/'-joined
path of every leaf (e.g. `params/blocks/3/attn/qkv/kernel`, `opt/0/mu/blocks/3/...`), the
first match wins, and `spec` is a tuple of mesh axis names / None per array dimension (or
None = replicated). Unmatched leaves are replicated. A dimension whose size is not a multiple
of its mesh axes stays unsharded (so one rule can cover every kernel; see `spec_for`).
"""

import re
from typing import Any, Sequence

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

Rules = Sequence[tuple[str, Any]]

# Presets for config.sharding_rules.
RULES = {
  "replicate": [],
  # ZeRO-3: the larger dimension of every matrix / conv kernel over 'fsdp'.
  "fsdp": [(r".*kernel", "fsdp_largest"), (r".*pos_embed", (None, None, "fsdp"))],
  # Megatron-style tensor parallelism of the ViT blocks.
  "model": [
    (r".*attn/qkv/kernel", (None, "model")),
    (r".*attn/qkv/bias", ("model",)),
    (r".*attn/proj/kernel", ("model", None)),
    (r".*mlp/fc1/kernel", (None, "model")),
    (r".*mlp/fc1/bias", ("model",)),
    (r".*mlp/fc2/kernel", ("model", None)),
  ],
}
RULES["fsdp_model"] = [
  (r".*attn/qkv/kernel", ("fsdp", "model")),
  (r".*attn/qkv/bias", ("model",)),
  (r".*attn/proj/kernel", ("model", "fsdp")),
  (r".*mlp/fc1/kernel", ("fsdp", "model")),
  (r".*mlp/fc1/bias", ("model",)),
  (r".*mlp/fc2/kernel", ("model", "fsdp")),
] + RULES["fsdp"]


def path_str(path) -> str:
  """A jax key path -> 'a/b/3/c'."""
  parts = []
  for k in path:
    for attr in ("key", "idx", "name"):
      if hasattr(k, attr):
        parts.append(str(getattr(k, attr)))
        break
    else:
      parts.append(str(k))
  return "/".join(parts)


def resolve_rules(rules) -> list[tuple[str, Any]]:
  """A preset name, or a list of (regex, spec) pairs (lists from configs become tuples)."""
  if isinstance(rules, str):
    if rules not in RULES:
      raise ValueError(f"unknown sharding rules preset {rules!r}; known: {sorted(RULES)}")
    rules = RULES[rules]
  out = []
  for r in rules or ():
    if len(r) != 2:
      raise ValueError(f"sharding rule {r!r}: expected (regex, spec)")
    pat, spec = r
    re.compile(pat)
    out.append((pat, spec if spec is None or isinstance(spec, str) else tuple(spec)))
  return out


def _axis_size(mesh, axes) -> int:
  if axes is None:
    return 1
  axes = (axes,) if isinstance(axes, str) else tuple(axes)
  return int(np.prod([mesh.shape[a] for a in axes]))


def spec_for(shape: tuple[int, ...], spec, mesh) -> P:
  """The PartitionSpec for one array; axes that do not divide their dimension are dropped."""
  if spec is None or len(shape) == 0:
    return P()
  if spec == "fsdp_largest":
    if len(shape) < 2:
      return P()
    d = int(np.argmax(shape))
    spec = tuple("fsdp" if i == d else None for i in range(len(shape)))
  if len(spec) > len(shape):
    raise ValueError(f"spec {spec} has more dimensions than the array {shape}")
  spec = tuple(spec) + (None,) * (len(shape) - len(spec))
  out = []
  for dim, axes in zip(shape, spec):
    ok = axes is not None and all(
      a in mesh.axis_names for a in ((axes,) if isinstance(axes, str) else axes)
    )
    out.append(axes if ok and dim % _axis_size(mesh, axes) == 0 else None)
  return P(*out)


def partition_specs(tree, rules: Rules, mesh) -> Any:
  """A PartitionSpec per leaf of `tree` (arrays or ShapeDtypeStructs)."""
  rules = resolve_rules(rules)
  compiled = [(re.compile(p), s) for p, s in rules]

  def one(path, leaf):
    name = path_str(path)
    shape = tuple(getattr(leaf, "shape", ()))
    for pat, spec in compiled:
      if pat.fullmatch(name):
        return spec_for(shape, spec, mesh)
    return P()

  return jax.tree_util.tree_map_with_path(one, tree)


def shardings(tree, rules: Rules, mesh) -> Any:
  """NamedSharding per leaf (see `partition_specs`)."""
  return jax.tree.map(
    lambda s: NamedSharding(mesh, s),
    partition_specs(tree, rules, mesh),
    is_leaf=lambda x: isinstance(x, P),
  )
