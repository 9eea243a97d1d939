"""Weight conversion between PyTorch SegGPT layouts and our NNX model (numpy only).

Two source layouts are understood (spec section 2):
  * official `seggpt_vit_large.pth`: `{'model': state_dict}` with official names;
  * transformers `SegGptForImageSegmentation` (`model.safetensors`, HF names).
Both are first normalised to official names; then every official tensor is mapped to one
NNX parameter with its layout change (Linear transpose, conv OIHW -> HWIO), every shape is
asserted and every source tensor must be used. The way back (`model_to_official`,
`official_to_hf`) writes the same names, so a round trip is exact.

torch is imported lazily and only to read `.pth` files.
"""

import hashlib
import os
import re
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from incontext.errors import UserError
from incontext.models import seggpt

# Official name prefix <-> HF name prefix (docs/design.md#weight-names); "#" is a block index.
_NAME_PAIRS = [
  ("patch_embed.proj.", "model.embeddings.patch_embeddings.projection."),
  ("mask_token", "model.embeddings.mask_token"),
  ("segment_token_x", "model.embeddings.segment_token_input"),
  ("segment_token_y", "model.embeddings.segment_token_prompt"),
  ("type_token_cls", "model.embeddings.type_token_semantic"),
  ("type_token_ins", "model.embeddings.type_token_instance"),
  ("pos_embed", "model.embeddings.position_embeddings"),
  ("norm.", "model.encoder.layernorm."),
  ("blocks.#.attn.", "model.encoder.layers.#.attention."),
  ("blocks.#.mlp.fc1.", "model.encoder.layers.#.mlp.lin1."),
  ("blocks.#.mlp.fc2.", "model.encoder.layers.#.mlp.lin2."),
  ("blocks.#.norm1.", "model.encoder.layers.#.layernorm_before."),
  ("blocks.#.norm2.", "model.encoder.layers.#.layernorm_after."),
  ("decoder_embed.", "decoder.decoder_embed."),
  ("decoder_pred.0.", "decoder.decoder_pred.conv."),
  ("decoder_pred.1.", "decoder.decoder_pred.layernorm."),
  ("decoder_pred.3.", "decoder.decoder_pred.head."),
]


def _regex_table(src: int):
  """(pattern, replacement) pairs mapping side `src` of _NAME_PAIRS to the other side."""
  table = []
  for pair in _NAME_PAIRS:
    a, b = pair[src], pair[1 - src]
    pat = "^" + re.escape(a).replace("\\#", "#").replace("#", r"(\d+)")
    pat += "" if a.endswith(".") else "$"
    table.append((pat, b.replace("#", r"\1")))
  return table


_OFFICIAL_TO_HF = _regex_table(0)
_HF_TO_OFFICIAL = _regex_table(1)


class ConversionError(UserError):
  """A checkpoint that does not fit the model (names, shapes, kind)."""


def _rename(name: str, table) -> str | None:
  for pat, rep in table:
    if re.match(pat, name):
      return re.sub(pat, rep, name)
  return None


def hf_to_official(sd: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  out = {}
  for k, v in sd.items():
    new = _rename(k, _HF_TO_OFFICIAL)
    if new is None:
      raise ConversionError(f"unexpected tensor {k!r} in a transformers SegGPT checkpoint")
    out[new] = v
  return out


def official_to_hf(sd: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  return {_rename(k, _OFFICIAL_TO_HF): v for k, v in sd.items()}


def detect_layout(sd: dict) -> str:
  """'official' or 'hf' from the tensor names."""
  if any(k.startswith("model.embeddings.") for k in sd):
    return "hf"
  if "patch_embed.proj.weight" in sd:
    return "official"
  sample = ", ".join(sorted(sd)[:5])
  raise ConversionError(
    f"not a SegGPT checkpoint: no patch embedding tensor (first keys: {sample})"
  )


# -- official name <-> NNX path ------------------------------------------------------------
_lin = (lambda w: w.T, lambda k: k.T)  # torch (out,in) <-> flax (in,out)
_conv = (lambda w: w.transpose(2, 3, 1, 0), lambda k: k.transpose(3, 2, 0, 1))  # OIHW<->HWIO
_same = (lambda w: w, lambda k: k)


def _table(cfg: seggpt.SegGPTConfig) -> dict[str, tuple[tuple, tuple[Callable, Callable]]]:
  """official name -> (NNX path, (to_nnx, to_torch))."""
  t = {
    "mask_token": (("mask_token",), _same),
    "segment_token_x": (("segment_token_x",), _same),
    "segment_token_y": (("segment_token_y",), _same),
    "type_token_cls": (("type_token_cls",), _same),
    "type_token_ins": (("type_token_ins",), _same),
    "pos_embed": (("pos_embed",), _same),
    "patch_embed.proj.weight": (("patch_embed", "proj", "kernel"), _conv),
    "patch_embed.proj.bias": (("patch_embed", "proj", "bias"), _same),
    "norm.weight": (("norm", "scale"), _same),
    "norm.bias": (("norm", "bias"), _same),
    "decoder_embed.weight": (("decoder_embed", "kernel"), _lin),
    "decoder_embed.bias": (("decoder_embed", "bias"), _same),
    "decoder_pred.0.weight": (("decoder_conv", "kernel"), _conv),
    "decoder_pred.0.bias": (("decoder_conv", "bias"), _same),
    "decoder_pred.1.weight": (("decoder_norm", "scale"), _same),
    "decoder_pred.1.bias": (("decoder_norm", "bias"), _same),
    "decoder_pred.3.weight": (("decoder_head", "kernel"), _conv),
    "decoder_pred.3.bias": (("decoder_head", "bias"), _same),
  }
  for i in range(cfg.depth):
    b = ("blocks", i)
    for tn, nn_ in (("norm1", "norm1"), ("norm2", "norm2")):
      t[f"blocks.{i}.{tn}.weight"] = (b + (nn_, "scale"), _same)
      t[f"blocks.{i}.{tn}.bias"] = (b + (nn_, "bias"), _same)
    for tn, path in (
      ("attn.qkv", ("attn", "qkv")),
      ("attn.proj", ("attn", "proj")),
      ("mlp.fc1", ("mlp", "fc1")),
      ("mlp.fc2", ("mlp", "fc2")),
    ):
      t[f"blocks.{i}.{tn}.weight"] = (b + path + ("kernel",), _lin)
      t[f"blocks.{i}.{tn}.bias"] = (b + path + ("bias",), _same)
    t[f"blocks.{i}.attn.rel_pos_h"] = (b + ("attn", "rel_pos_h"), _same)
    t[f"blocks.{i}.attn.rel_pos_w"] = (b + ("attn", "rel_pos_w"), _same)
  return t


# Official names that may be absent: Painter checkpoints have no type tokens.
OPTIONAL = ("type_token_cls", "type_token_ins")


def infer_config(sd: dict[str, np.ndarray], **overrides) -> seggpt.SegGPTConfig:
  """Model config from an official-layout state dict's shapes (heads from the rel-pos dim)."""
  try:
    width, _, patch, _ = sd["patch_embed.proj.weight"].shape
    depth = 1 + max(int(m.group(1)) for k in sd if (m := re.match(r"blocks\.(\d+)\.", k)))
    hd = sd["blocks.0.attn.rel_pos_h"].shape[1]
    gh = (sd["blocks.0.attn.rel_pos_h"].shape[0] + 1) // 2
    gw = (sd["blocks.0.attn.rel_pos_w"].shape[0] + 1) // 2
    mlp_dim = sd["blocks.0.mlp.fc1.weight"].shape[0]
    pos_rows = sd["pos_embed"].shape[1]
    dec_dim = sd["decoder_pred.0.weight"].shape[0]
    n_feat = sd["decoder_embed.weight"].shape[1] // width
  except KeyError as e:
    raise ConversionError(f"checkpoint lacks tensor {e.args[0]!r}") from None
  g = int(round(np.sqrt(pos_rows - 1)))
  kw = dict(
    image_size=(gh * patch // 2, gw * patch),
    patch=patch,
    width=width,
    depth=depth,
    num_heads=width // hd,
    mlp_dim=mlp_dim,
    decoder_dim=dec_dim,
    pretrain_grid=g,
  )
  if "feature_layers" not in overrides:
    if n_feat != 4:
      raise ConversionError(f"cannot infer {n_feat} decoder feature layers; pass feature_layers")
    try:  # the official 5/11/17/23 for depth 24, spread the same way otherwise
      kw["feature_layers"] = seggpt.default_feature_layers(depth)
    except ValueError as e:
      raise ConversionError(str(e)) from None
  kw.update(overrides)
  try:
    return seggpt.SegGPTConfig(**kw).validate()
  except (TypeError, ValueError) as e:
    raise ConversionError(f"model config: {e}") from None


def load_official(
  model: seggpt.SegGPT, sd: dict[str, np.ndarray], *, allow_missing: tuple[str, ...] = ()
) -> None:
  """Copies an official-layout state dict into `model` in place (shapes asserted).

  Every source tensor must be used; names in `allow_missing` may be absent (they keep
  their initial values, e.g. the type tokens when starting from Painter).
  """
  table = _table(model.cfg)
  unknown = sorted(set(sd) - set(table))
  if unknown:
    raise ConversionError(f"{len(unknown)} tensors do not belong to this model: {unknown[:8]}")
  missing = sorted(set(table) - set(sd) - set(allow_missing))
  if missing:
    raise ConversionError(f"checkpoint lacks {len(missing)} tensors: {missing[:8]}")
  flat = dict(nnx.to_flat_state(nnx.state(model, nnx.Param)))
  for name, (path, (to_nnx, from_nnx)) in table.items():
    if name not in sd:
      continue
    src = np.asarray(sd[name])
    if src.dtype.kind != "f" and "float" not in src.dtype.name:  # bfloat16 has kind 'V'
      raise ConversionError(
        f"tensor {name!r}: dtype {src.dtype}, expected floating point "
        "weights (converting would truncate them)"
      )
    val = np.asarray(to_nnx(src))
    var = flat[path]
    if tuple(var.shape) != val.shape:
      want = np.shape(from_nnx(np.broadcast_to(np.float32(0), tuple(var.shape))))
      raise ConversionError(
        f"tensor {name!r}: shape {tuple(src.shape)}, expected {tuple(want)} for this model"
      )
    if not np.all(np.isfinite(val)):
      raise ConversionError(f"tensor {name!r} has non-finite values")
    var[...] = jnp.asarray(val, var[...].dtype)
  nnx.update(model, nnx.from_flat_state(flat))


def model_to_official(model: seggpt.SegGPT) -> dict[str, np.ndarray]:
  """NNX params -> official-layout numpy state dict (float32)."""
  flat = dict(nnx.to_flat_state(nnx.state(model, nnx.Param)))
  out = {}
  for name, (path, (_, to_torch)) in _table(model.cfg).items():
    out[name] = np.ascontiguousarray(
      to_torch(np.asarray(jax.device_get(flat[path][...]), np.float32))
    )
  return out


# -- files ------------------------------------------------------------------------------------
def file_sha256(path: str) -> str:
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for chunk in iter(lambda: f.read(1 << 22), b""):
      h.update(chunk)
  return h.hexdigest()


def _read_json(path: str) -> dict:
  import json

  try:
    with open(path) as f:
      d = json.load(f)
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise ConversionError(f"{path}: corrupt config.json ({e})") from None
  if not isinstance(d, dict):
    raise ConversionError(
      f"{path}: config.json holds a JSON {type(d).__name__}; expected an object of settings"
    )
  return d


def _is_int(v) -> bool:
  return isinstance(v, int) and not isinstance(v, bool)


def _check_hf_types(cfg_path: str, hf: dict) -> None:
  """ConversionError naming the first transformers config field this project reads whose
  value has the wrong type (checked at convert time, so no checkpoint is written that
  fails later)."""

  def bad(k, want):
    raise ConversionError(f"{cfg_path}: {k} is {hf[k]!r}; expected {want}")

  for k in _ARCH_FIELDS + ("merge_index",):
    if hf.get(k) is None:
      continue
    v = hf[k]
    if k in ("image_size", "pretrain_image_size"):
      ok = _is_int(v) or (
        isinstance(v, list) and len(v) == 2 and all(_is_int(x) and x > 0 for x in v)
      )
      if not ok or (_is_int(v) and v <= 0):
        bad(k, "a positive integer or two")
    elif not _is_int(v) or v < 0:
      bad(k, "a non-negative integer")
  k = "intermediate_hidden_state_indices"
  if k in hf and not (
    isinstance(hf[k], list) and hf[k] and all(_is_int(x) and x >= 0 for x in hf[k])
  ):
    bad(k, "a list of layer indices (integers)")
  k = "layer_norm_eps"
  if k in hf:
    v = hf[k]
    if not (isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v < 1):
      bad(k, "a small positive number (e.g. 1e-6)")
  if not isinstance(hf.get("model_type", ""), (str, type(None))):
    bad("model_type", "'seggpt'")


def hf_config_path(path: str) -> str | None:
  """The transformers `config.json` beside a weights file, if there is one."""
  cfg_path = os.path.join(os.path.dirname(os.path.abspath(path)), "config.json")
  return cfg_path if os.path.isfile(cfg_path) else None


def read_hf_config(path: str) -> dict:
  """Model-config overrides from a transformers `config.json` beside a safetensors file."""
  cfg_path = hf_config_path(path)
  if cfg_path is None:
    return {}
  hf = _read_json(cfg_path)
  if hf.get("model_type") != "seggpt":
    return {}
  _check_hf_types(cfg_path, hf)
  out = {}
  if "intermediate_hidden_state_indices" in hf:
    out["feature_layers"] = tuple(hf["intermediate_hidden_state_indices"])
  if "merge_index" in hf:
    out["merge_index"] = hf["merge_index"]
  if "layer_norm_eps" in hf:
    out["eps"] = hf["layer_norm_eps"]
  return out


# transformers config fields fixed by the tensors' shapes (checked against them).
_ARCH_FIELDS = (
  "hidden_size",
  "num_hidden_layers",
  "num_attention_heads",
  "patch_size",
  "image_size",
  "mlp_dim",
  "decoder_hidden_size",
  "pretrain_image_size",
)


def check_hf_config(cfg_path: str, cfg: seggpt.SegGPTConfig) -> None:
  """Raises ConversionError when a transformers config.json disagrees with the model config
  inferred from the tensors (a config.json from another model, or edited)."""
  hf = _read_json(cfg_path)
  if hf.get("model_type") not in (None, "seggpt"):
    raise ConversionError(f"{cfg_path}: model_type {hf.get('model_type')!r}, expected 'seggpt'")
  _check_hf_types(cfg_path, hf)
  ours = hf_config_dict(cfg)
  for k in _ARCH_FIELDS:
    if hf.get(k) is None:
      continue
    want = list(ours[k]) if isinstance(ours[k], (list, tuple)) else ours[k]
    got = list(hf[k]) if isinstance(hf[k], (list, tuple)) else hf[k]
    if got != want:
      raise ConversionError(f"{cfg_path}: {k} is {got} but the weights have {want}")


def resolve_source(source: str) -> str:
  """A weights file for `source`: a `.pth` / `.safetensors` file, a transformers folder
  (config.json + model.safetensors, as `save_pretrained` or a Hub snapshot writes), or
  `hf:REPO_ID` (downloaded with `huggingface_hub.snapshot_download` into its cache; the
  official weights are `hf:BAAI/seggpt-vit-large`). A relative path is from the working
  folder."""
  if source.startswith("hf:"):
    repo = source[len("hf:") :]
    if not repo:
      raise ConversionError(f"{source}: expected hf:OWNER/NAME")
    try:
      from huggingface_hub import snapshot_download  # only needed for downloads
    except ImportError:
      raise ConversionError(
        f"{source}: downloading needs huggingface_hub (pip install huggingface_hub)"
      ) from None
    try:
      folder = snapshot_download(
        repo_id=repo,
        allow_patterns=["config.json", "model.safetensors", "*.pth", "preprocessor_config.json"],
      )
    except Exception as e:  # network, unknown repo, offline without a cached copy
      raise ConversionError(
        f"{source}: cannot download ({type(e).__name__}: "
        f"{str(e).splitlines()[0] if str(e) else ''})"
      ) from None
    return resolve_source(folder)
  if not os.path.isdir(source):
    return source
  for name in ("model.safetensors",):
    if os.path.isfile(os.path.join(source, name)):
      return os.path.join(source, name)
  found = sorted(f for f in os.listdir(source) if f.endswith((".pth", ".safetensors")))
  if len(found) == 1:
    return os.path.join(source, found[0])
  if not found:
    raise ConversionError(
      f"{source}: folder has no model.safetensors or .pth weights "
      "(expected a transformers folder: config.json + model.safetensors)"
    )
  raise ConversionError(f"{source}: folder has several weight files {found[:4]}; name one of them")


def read_state_dict(path: str) -> tuple[dict[str, np.ndarray], str]:
  """Reads a `.pth` (official `{'model': sd}` or bare) or `.safetensors` file.

  Returns (official-layout numpy state dict, source layout 'official' | 'hf').
  """
  if not os.path.isfile(path):
    raise ConversionError(f"{path}: no such file")
  if path.endswith(".safetensors"):
    from safetensors.numpy import load_file

    try:
      sd = load_file(path)
    except Exception as e:  # safetensors raises its own error types
      raise ConversionError(f"{path}: not a readable safetensors file ({e})") from None
  elif path.endswith((".pth", ".pt", ".bin")):
    try:
      import torch  # an extra: only needed for .pth files
    except ImportError:
      raise ConversionError(
        f"{path}: reading .pth needs torch (pip install 'incontext[torch]')"
      ) from None
    try:
      obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
      raise ConversionError(f"{path}: not a readable PyTorch checkpoint ({e})") from None
    if isinstance(obj, dict) and "model" in obj and isinstance(obj["model"], dict):
      obj = obj["model"]
    if not isinstance(obj, dict):
      raise ConversionError(f"{path}: expected a state dict, got {type(obj).__name__}")
    sd = {k: v.detach().float().numpy() for k, v in obj.items() if hasattr(v, "numpy")}
  else:
    raise ConversionError(f"{path}: unknown checkpoint type (expected .pth or .safetensors)")
  try:
    layout = detect_layout(sd)
  except ConversionError as e:
    raise ConversionError(f"{path}: {e}") from None
  return (hf_to_official(sd) if layout == "hf" else sd), layout


def hf_config_dict(cfg: seggpt.SegGPTConfig) -> dict:
  """transformers `SegGptConfig` fields for a model config."""
  return {
    "architectures": ["SegGptForImageSegmentation"],
    "model_type": "seggpt",
    "hidden_size": cfg.width,
    "num_hidden_layers": cfg.depth,
    "num_attention_heads": cfg.num_heads,
    "hidden_act": "gelu",
    "hidden_dropout_prob": 0.0,
    "initializer_range": 0.02,
    "layer_norm_eps": cfg.eps,
    "image_size": list(cfg.canvas),
    "patch_size": cfg.patch,
    "num_channels": 3,
    "qkv_bias": True,
    "mlp_dim": cfg.mlp_dim,
    "drop_path_rate": cfg.drop_path,
    "pretrain_image_size": cfg.pretrain_grid * cfg.patch,
    "decoder_hidden_size": cfg.decoder_dim,
    "use_relative_position_embeddings": True,
    "merge_index": cfg.merge_index,
    "intermediate_hidden_state_indices": list(cfg.feature_layers),
    "beta": 0.01,
  }
