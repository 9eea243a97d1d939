"""SegGPT: a plain ViT that inpaints the query half of a (prompt over query) canvas.

Exact to the official `seggpt_vit_large_patch16_input896x448` (docs/design.md#model):
all-global attention with decomposed relative positions, image and target streams averaged
after block `merge_index`, segment/type/mask tokens, the MAE 14x14 position table resized
PyTorch-bicubic, one shared final norm for the decoder features, exact GELU and two-pass
LayerNorm.

Layout is channels-last: image and target canvases are [N, 2H, W, 3] (ImageNet-normalised,
prompt on top); the output `pred` is [N, 2H, W, 3] in the same space, or [N, H, W, 3] for
`query_only=True` (the bottom half, bit-for-bit what the full decoder gives there).
"""

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from incontext.models import posemb

Array = jax.Array

ATTENTION = ("auto", "chunked", "fused", "cudnn")
# Named `remat` settings besides True (save nothing inside a block) -> what the backward keeps.
REMAT_POLICIES = {
  "dots": jax.checkpoint_policies.dots_saveable,
  "dots_no_batch": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}
_HALF = (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))


@dataclasses.dataclass(frozen=True)
class SegGPTConfig:
  """Model hyper-parameters. `image_size` is one half of the canvas (H, W)."""

  image_size: tuple[int, int] = (448, 448)
  patch: int = 16
  width: int = 1024
  depth: int = 24
  num_heads: int = 16
  mlp_dim: int = 4096
  merge_index: int = 2
  feature_layers: tuple[int, ...] = (5, 11, 17, 23)
  decoder_dim: int = 64
  pretrain_grid: int = 14  # pos_embed is (1, 1 + g*g, D): MAE's 224-pixel table
  drop_path: float = 0.1  # max rate, linear over blocks; training only
  ensemble: str = "official"  # feature-ensemble variant: "official" or "hf"
  dtype: str = "float32"  # compute dtype; params stay float32
  # Rematerialise each block in the backward pass: False (keep every activation), True (keep
  # only the block inputs: "full" remat), "dots" (also keep matmul outputs,
  # jax.checkpoint_policies.dots_saveable) or "dots_no_batch" (keep the outputs of matmuls
  # without batch dimensions: the projections and MLP, not the attention's q.k and p.v).
  remat: bool | str = False
  # Attention implementation: "auto" (by backend: "chunked" on CPU, "cudnn" on GPU for
  # bf16/f16 shapes cuDNN supports, else "fused"), "chunked" (L2-sized query chunks in a
  # loop; fastest on CPU), "fused" (one batched XLA attention over all entries and
  # queries), "cudnn" (cuDNN flash attention with the relative bias; GPU, bf16/f16 only).
  # Same outputs up to float rounding; a runtime choice that does not change the weights.
  attention: str = "auto"
  eps: float = 1e-6

  @property
  def canvas(self) -> tuple[int, int]:
    return (2 * self.image_size[0], self.image_size[1])

  @property
  def grid(self) -> tuple[int, int]:
    h, w = self.canvas
    return (h // self.patch, w // self.patch)

  @property
  def num_tokens(self) -> int:
    return self.grid[0] * self.grid[1]

  def check_types(self):
    """TypeError naming the first field whose value has the wrong type (e.g. an edited
    config file's `"eps": "tiny"` or `"feature_layers": 5`)."""
    is_int = lambda v: isinstance(v, (int, np.integer)) and not isinstance(v, bool)
    for name in _INT_FIELDS:
      v = getattr(self, name)
      if not is_int(v) or v < (0 if name == "merge_index" else 1):
        raise TypeError(f"{name} is {v!r}; expected a positive integer")
    for name, n in (("image_size", 2), ("feature_layers", None)):
      v = getattr(self, name)
      if (
        not isinstance(v, (tuple, list))
        or (n is not None and len(v) != n)
        or not v
        or not all(is_int(x) and x >= 0 for x in v)
      ):
        what = f"{n} integers" if n else "a list of integers"
        raise TypeError(f"{name} is {v!r}; expected {what}")
    for name in ("eps", "drop_path"):
      v = getattr(self, name)
      if not (isinstance(v, (int, float, np.floating)) and not isinstance(v, bool)) or not (
        np.isfinite(v) and (0 < v < 1 if name == "eps" else 0 <= v < 1)
      ):
        rng = "in (0, 1)" if name == "eps" else "in [0, 1)"
        raise TypeError(f"{name} is {v!r}; expected a number {rng}")
    for name in ("ensemble", "dtype", "attention"):
      if not isinstance(getattr(self, name), str):
        raise TypeError(f"{name} is {getattr(self, name)!r}; expected a string")
    if not isinstance(self.remat, (bool, str)):
      raise TypeError(f"remat is {self.remat!r}; expected true, false or a policy name")
    return self

  def validate(self):
    self.check_types()
    h, w = self.image_size
    if h % self.patch or w % self.patch:
      raise ValueError(f"image_size {self.image_size} is not a multiple of patch {self.patch}")
    if self.width % self.num_heads:
      raise ValueError(f"width {self.width} not divisible by num_heads {self.num_heads}")
    if max(self.feature_layers) >= self.depth or self.merge_index >= self.depth:
      raise ValueError(
        f"feature_layers {self.feature_layers} / merge_index "
        f"{self.merge_index} out of range for depth {self.depth}"
      )
    if self.ensemble not in ("official", "hf"):
      raise ValueError(f"ensemble must be 'official' or 'hf', got {self.ensemble!r}")
    if self.attention not in ATTENTION:
      raise ValueError(f"attention must be one of {ATTENTION}, got {self.attention!r}")
    if not isinstance(self.remat, bool) and self.remat not in REMAT_POLICIES:
      raise ValueError(
        f"remat must be False, True or one of {tuple(REMAT_POLICIES)}, got {self.remat!r}"
      )
    if self.attention == "cudnn" and jnp.dtype(self.dtype) not in _HALF:
      raise ValueError(f"attention 'cudnn' needs dtype bfloat16 or float16, got {self.dtype!r}")
    return self


_INT_FIELDS = (
  "patch",
  "width",
  "depth",
  "num_heads",
  "mlp_dim",
  "merge_index",
  "decoder_dim",
  "pretrain_grid",
)


def default_feature_layers(depth, merge_index=2):
  """Decoder feature blocks spread like 5/11/17/23 over `depth` blocks, after the merge."""
  layers = [int(round((i + 1) * depth / 4)) - 1 for i in range(4)]
  layers[0] = max(layers[0], merge_index + 1)  # transformers requires features after merge
  for i in range(1, 4):  # strictly increasing
    layers[i] = max(layers[i], layers[i - 1] + 1)
  if layers[-1] >= depth:
    raise ValueError(f"depth {depth} is too shallow for 4 decoder features after the merge")
  return tuple(layers)


VARIANTS: dict[str, dict[str, Any]] = {
  "L/16": dict(width=1024, depth=24, num_heads=16, mlp_dim=4096),
  "B/16": dict(
    width=768, depth=12, num_heads=12, mlp_dim=3072, feature_layers=default_feature_layers(12)
  ),
  "S/16": dict(
    width=384, depth=12, num_heads=6, mlp_dim=1536, feature_layers=default_feature_layers(12)
  ),
  "Ti/16": dict(
    width=192, depth=12, num_heads=3, mlp_dim=768, feature_layers=default_feature_layers(12)
  ),
  # The quickstart model (experiments/configs/seggpt_train.py quickstart and real presets):
  # 32x32 halves in 4x4 patches (8x8 tokens per half), trains on a 2-core CPU in minutes.
  "quickstart-0.6M": dict(
    image_size=(32, 32),
    patch=4,
    width=96,
    depth=6,
    num_heads=4,
    mlp_dim=192,
    decoder_dim=16,
    merge_index=1,
    feature_layers=(2, 3, 4, 5),
    pretrain_grid=8,
  ),
  # The unit tests' model: a few blocks so the merge (after block 2) and the 4 decoder
  # features still exist.
  "test": dict(
    width=32,
    depth=7,
    num_heads=2,
    mlp_dim=64,
    feature_layers=(3, 4, 5, 6),
    decoder_dim=8,
    pretrain_grid=4,
  ),
}


def get_config(variant: str = "L/16", **overrides) -> SegGPTConfig:
  """Config of a named variant (`L/16`, `B/16`, `S/16`, `Ti/16`, `quickstart-0.6M`,
  `test`) with overrides."""
  if variant not in VARIANTS:
    raise ValueError(f"unknown variant {variant!r}; known: {sorted(VARIANTS)}")
  kw = dict(VARIANTS[variant])
  kw.update(overrides)
  if "image_size" in kw:
    kw["image_size"] = tuple(kw["image_size"])
  if "feature_layers" in kw:
    kw["feature_layers"] = tuple(kw["feature_layers"])
  return SegGPTConfig(**kw).validate()


def _dense_init():
  return nnx.initializers.truncated_normal(stddev=0.02)


def _torch_conv_init():
  # PyTorch's default Conv2d init: kaiming_uniform(a=sqrt(5)) == U(-1/sqrt(fan_in), ...).
  return nnx.initializers.variance_scaling(1 / 3, "fan_in", "uniform")


def _norm(dim, cfg, rngs):
  return nnx.LayerNorm(dim, epsilon=cfg.eps, use_fast_variance=False, rngs=rngs)


def _rel_index(n: int) -> np.ndarray:
  """[n, n] indices i - i' + n - 1 into a (2n - 1)-row relative table."""
  r = np.arange(n)
  return r[:, None] - r[None, :] + n - 1


# Bytes of one head's attention logits per query chunk of the CPU attention: a few MiB, so a
# chunk's logits, bias and exponentials stay in the caches between the two products.
_ATTN_CHUNK_BYTES = 6 << 20


def _chunk_rows(num_q: int, num_k: int) -> tuple[int, int]:
  """(chunk, num_chunks) splitting num_q query rows so one head's chunk logits fit the budget."""
  cap = max(1, _ATTN_CHUNK_BYTES // (4 * num_k))
  if num_q <= cap:
    return num_q, 1
  n = -(-num_q // cap)
  return -(-num_q // n), n


def _biased_logits(q, k, rel_h, rel_w, gh, gw):
  """float32 q.k + rel_h + rel_w: q [..., r, c] (scaled), k [..., L, c], rel_h [..., r, gh],
  rel_w [..., r, gw] -> [..., r, L]. The bias is broadcast onto the [gh, gw] key grid, never
  materialised as an [r, L] array of its own (XLA fuses the add into what reads it)."""
  lg = jnp.einsum("...qc,...kc->...qk", q, k, preferred_element_type=jnp.float32)
  lg = lg.reshape(*lg.shape[:-1], gh, gw)
  lg = lg + rel_h[..., :, None].astype(jnp.float32) + rel_w[..., None, :].astype(jnp.float32)
  return lg.reshape(*lg.shape[:-2], gh * gw)


def _logits_probs(q, k, rel_h, rel_w, gh, gw):
  """Softmax over keys of q.k + rel_h + rel_w (float32) -> probs [..., r, L] in q's dtype."""
  probs = jax.nn.softmax(_biased_logits(q, k, rel_h, rel_w, gh, gw), axis=-1)
  return probs.astype(q.dtype)


def _attend_chunked(q: Array, k: Array, v: Array, rel_h: Array, rel_w: Array) -> Array:
  """The attention one head at a time, in cache-sized query chunks (`lax.map` loops): for CPU.

  Each chunk is two plain 2-D products, [r, c] x [c, L] and [r, L] x [L, c]: XLA:CPU runs
  these at 60-70 % of its matmul peak at L/16 sizes, where the same products batched over
  heads ran at under half of it (docs/results.md). The [Lq, L] logits are never materialised
  whole. The softmax is normalised after P.V (divide the [r, c] product, not the [r, L]
  exponentials), which is the same function with one pass over the logits fewer.
  """
  b, nh, lq, c = q.shape
  gh, gw = rel_h.shape[-1], rel_w.shape[-1]
  dt = q.dtype

  def one(qc, kh, vh, rhc, rwc):  # [r, c], [L, c], [L, c], [r, gh], [r, gw] -> [r, c]
    lg = _biased_logits(qc, kh, rhc, rwc, gh, gw)
    e = jnp.exp(lg - jax.lax.stop_gradient(lg.max(axis=-1, keepdims=True)))
    out = jnp.dot(e.astype(dt), vh, preferred_element_type=jnp.float32)
    return (out / e.sum(axis=-1, keepdims=True)).astype(dt)

  rows, n = _chunk_rows(lq, gh * gw)
  pad = rows * n - lq
  padq = lambda a: jnp.pad(a, ((0, pad), (0, 0))) if pad else a
  split = lambda a: padq(a).reshape(n, rows, a.shape[-1])  # [Lq, .] -> [n, rows, .]

  def per_head(args):
    qh, kh, vh, rhh, rwh = args
    if n == 1:
      return one(qh, kh, vh, rhh, rwh)
    out = jax.lax.map(lambda a: one(a[0], kh, vh, a[1], a[2]), (split(qh), split(rhh), split(rwh)))
    return out.reshape(n * rows, c)[:lq]

  flat = lambda a: a.reshape(b * nh, *a.shape[2:])
  out = jax.lax.map(per_head, tuple(flat(a) for a in (q, k, v, rel_h, rel_w)))
  return out.reshape(b, nh, lq, c)


def _attend_fused(q: Array, k: Array, v: Array, rel_h: Array, rel_w: Array) -> Array:
  """One batched attention over all entries, heads and queries (no loop): for GPU/TPU."""
  gh, gw = rel_h.shape[-1], rel_w.shape[-1]
  return jnp.einsum("bnqk,bnkc->bnqc", _logits_probs(q, k, rel_h, rel_w, gh, gw), v)


def _attend_cudnn(q: Array, k: Array, v: Array, rel_h: Array, rel_w: Array) -> Array:
  """cuDNN flash attention (`jax.nn.dot_product_attention`) with the relative bias.

  cuDNN takes an additive bias as a [B, nh, Lq, L] array, so the decomposed terms are
  summed into one (in the compute dtype); softmax is float32 inside cuDNN.
  """
  b, nh, lq, c = q.shape
  gh, gw = rel_h.shape[-1], rel_w.shape[-1]
  bias = (rel_h[..., :, None] + rel_w[..., None, :]).reshape(b, nh, lq, gh * gw)
  t = lambda a: a.transpose(0, 2, 1, 3)  # [B, nh, T, c] <-> BTNH
  out = jax.nn.dot_product_attention(
    t(q), t(k), t(v), bias=bias.astype(q.dtype), scale=1.0, implementation="cudnn"
  )
  return t(out)


def _cudnn_usable(dtype, lq: int, num_k: int, head_dim: int) -> bool:
  """Whether "auto" may use cuDNN here: half-precision, supported head dim and lengths."""
  if jnp.dtype(dtype) not in _HALF or head_dim % 8 or head_dim > 128 or lq % 2 or num_k % 2:
    return False
  try:
    from jax._src.cudnn import fused_attention_stablehlo as fa

    fa.check_cudnn_version()
  except Exception:  # noqa: BLE001 -- no cuDNN (or no jax CUDA plugin): use XLA
    return False
  return True


def attention_impl(
  setting: str, dtype, lq: int, num_k: int, head_dim: int, backend: str | None = None
) -> str:
  """The implementation `setting` ("auto" or explicit) runs on `backend` (default: JAX's)."""
  if setting != "auto":
    return setting
  backend = backend or jax.default_backend()
  if backend == "cpu":
    return "chunked"
  if backend in ("gpu", "cuda") and _cudnn_usable(dtype, lq, num_k, head_dim):
    return "cudnn"
  return "fused"


ATTEND_IMPLS = {"chunked": _attend_chunked, "fused": _attend_fused, "cudnn": _attend_cudnn}


def attend(q: Array, k: Array, v: Array, rel_h: Array, rel_w: Array, impl: str = "auto") -> Array:
  """Softmax attention with the decomposed relative bias.

  q: [B, nh, Lq, c] (already scaled); k, v: [B, nh, L, c]; rel_h: [B, nh, Lq, gh];
  rel_w: [B, nh, Lq, gw] with L = gh * gw. Returns [B, nh, Lq, c]. impl: an ATTENTION
  setting; every implementation computes the same function.
  """
  name = attention_impl(impl, q.dtype, q.shape[2], k.shape[2], q.shape[3])
  return ATTEND_IMPLS[name](q, k, v, rel_h, rel_w)


class Attention(nnx.Module):
  """Global MHSA with decomposed relative positions (MViTv2/ViTDet; docs/design.md#attention)."""

  def __init__(self, cfg: SegGPTConfig, *, rngs: nnx.Rngs):
    d, dt = cfg.width, jnp.dtype(cfg.dtype)
    self.num_heads = cfg.num_heads
    self.attention = cfg.attention
    self.qkv = nnx.Linear(d, 3 * d, kernel_init=_dense_init(), dtype=dt, rngs=rngs)
    self.proj = nnx.Linear(d, d, kernel_init=_dense_init(), dtype=dt, rngs=rngs)
    hd = d // cfg.num_heads
    gh, gw = cfg.grid
    self.rel_pos_h = nnx.Param(jnp.zeros((2 * gh - 1, hd), jnp.float32))
    self.rel_pos_w = nnx.Param(jnp.zeros((2 * gw - 1, hd), jnp.float32))

  def __call__(self, x: Array, row0: int = 0) -> Array:
    """x: [B, gh, gw, D] -> [B, gh - row0, gw, D].

    row0: only token rows >= row0 are computed as queries (all rows stay keys/values);
    the result equals rows row0: of the full output.
    """
    return self.proj(self.mix(self.qkv(x), row0))

  def mix(self, qkv: Array, row0: int = 0) -> Array:
    """The attention between the qkv and proj matmuls: [B, gh, gw, 3D] -> [B, gh - row0, gw, D]."""
    b, gh, gw, d3 = qkv.shape
    d = d3 // 3
    nh = self.num_heads
    hd = d // nh
    gq = gh - row0
    qkv = qkv.reshape(b, gh * gw, 3, nh, hd).transpose(2, 0, 3, 1, 4)
    q, k, v = qkv[0], qkv[1], qkv[2]  # [B, nh, L, hd]
    q = q[:, :, row0 * gw :]  # [B, nh, Lq, hd]
    dt = q.dtype
    rh = self.rel_pos_h[...].astype(dt)[_rel_index(gh)[row0:]]  # [gq, gh, hd]
    rw = self.rel_pos_w[...].astype(dt)[_rel_index(gw)]  # [gw, gw, hd]
    # Relative terms use the unscaled q (only q.k is scaled, as the official code).
    qg = q.reshape(b, nh, gq, gw, hd)
    rel_h = jnp.einsum("bnijc,ikc->bnijk", qg, rh).reshape(b, nh, gq * gw, gh)
    rel_w = jnp.einsum("bnijc,jlc->bnijl", qg, rw).reshape(b, nh, gq * gw, gw)
    out = attend(
      q * jnp.asarray(hd**-0.5, dt),
      k,
      v,
      rel_h,
      rel_w,  # [B, nh, Lq, hd]
      self.attention,
    )
    return out.transpose(0, 2, 1, 3).reshape(b, gq, gw, d)


class Mlp(nnx.Module):
  def __init__(self, cfg: SegGPTConfig, *, rngs: nnx.Rngs):
    dt = jnp.dtype(cfg.dtype)
    self.fc1 = nnx.Linear(cfg.width, cfg.mlp_dim, kernel_init=_dense_init(), dtype=dt, rngs=rngs)
    self.fc2 = nnx.Linear(cfg.mlp_dim, cfg.width, kernel_init=_dense_init(), dtype=dt, rngs=rngs)

  def __call__(self, x: Array) -> Array:
    return self.fc2(jax.nn.gelu(self.fc1(x), approximate=False))  # exact erf GELU


def _drop_path(x: Array, rate: float, rng) -> Array:
  if rng is None or rate == 0.0:
    return x
  keep = jax.random.bernoulli(rng, 1.0 - rate, (x.shape[0],) + (1,) * (x.ndim - 1))
  return jnp.where(keep, x / (1.0 - rate), jnp.zeros_like(x))


def _prompt_mean(x: Array, axis: int, weights: Array | None) -> Array:
  """Mean of x over its prompt axis (keepdims); with weights [n] (0/1 validity of the prompt
  slots, tiled when the axis holds both streams) the mean over the valid slots only."""
  if weights is None:
    return x.mean(axis=axis, keepdims=True)
  n = x.shape[axis]
  w = jnp.tile(weights.astype(x.dtype), n // weights.shape[0])
  w = w.reshape((1,) * axis + (n,) + (1,) * (x.ndim - axis - 1))
  return (x * w).sum(axis=axis, keepdims=True) / w.sum()


def _ensemble_query_half(
  a: Array,
  mode: str | None,
  num_prompts: int,
  half: int | None = None,
  weights: Array | None = None,
) -> Array:
  """Averages the query half (bottom token rows) of the attention output over prompts.

  mode: None (off), "stream" (batch is [x_1..x_N, y_1..y_N]: mean within each stream)
  or "all" (mean over the whole batch). half: first query-half row of `a` (default: the
  middle row; differs when `a` holds only the bottom rows of the canvas). weights: [N]
  0/1 prompt-slot validity: the mean runs over the valid slots only (None: all).
  """
  if mode is None:
    return a
  if half is None:
    half = a.shape[1] // 2
  top, bot = a[:, :half], a[:, half:]
  if mode == "stream":
    s = bot.reshape(2, num_prompts, *bot.shape[1:])
    bot = jnp.broadcast_to(_prompt_mean(s, 1, weights), s.shape).reshape(bot.shape)
  else:
    bot = jnp.broadcast_to(_prompt_mean(bot, 0, weights), bot.shape)
  return jnp.concatenate([top, bot], axis=1)


class Block(nnx.Module):
  """Pre-norm block; the feature-ensemble hook rewrites the attention output.

  docs/design.md#ensembles.
  """

  def __init__(self, cfg: SegGPTConfig, drop_path: float, *, rngs: nnx.Rngs):
    self.norm1 = _norm(cfg.width, cfg, rngs)
    self.attn = Attention(cfg, rngs=rngs)
    self.norm2 = _norm(cfg.width, cfg, rngs)
    self.mlp = Mlp(cfg, rngs=rngs)
    self.drop_path = drop_path

  def __call__(
    self,
    x: Array,
    ensemble: str | None = None,
    num_prompts: int = 1,
    rng=None,
    row0: int = 0,
    weights: Array | None = None,
  ) -> Array:
    """x: [B, gh, gw, D] -> [B, gh - row0, gw, D] (row0 > 0: only rows row0: computed).

    weights: [num_prompts] 0/1 prompt-slot validity for the ensemble (None: all valid).
    """
    a = self.attn(self.norm1(x), row0)
    a = _ensemble_query_half(a, ensemble, num_prompts, x.shape[1] // 2 - row0, weights)
    r1 = r2 = None
    if rng is not None:
      r1, r2 = jax.random.split(rng)
    x = x[:, row0:] + _drop_path(a, self.drop_path, r1)
    return x + _drop_path(self.mlp(self.norm2(x)), self.drop_path, r2)

  def shared(
    self, xp: Array, xq: Array, ensemble: str, row0: int = 0, weights: Array | None = None
  ) -> tuple[Array, Array]:
    """The block under feature ensemble when all entries of a stream share the query half.

    xp: [B, hp, gw, D] prompt rows of each entry (streams stacked: B = S * n);
    xq: [S, gh - hp, gw, D] the query rows, one copy per stream. Equals `__call__` on the
    concatenated canvases: the query rows' qkv, proj (of the prompt-mean, by linearity)
    and MLP are computed once per stream instead of once per entry; only their attention
    (whose keys differ per prompt) is per entry. row0 < hp: only rows row0: of xp come back.
    weights: [n] 0/1 prompt-slot validity for the ensemble mean (None: all valid).
    """
    b, hp = xp.shape[:2]
    s = xq.shape[0]
    qkv_q = self.attn.qkv(self.norm1(xq))
    qkv = jnp.concatenate(
      [self.attn.qkv(self.norm1(xp)), jnp.repeat(qkv_q, b // s, axis=0)], axis=1
    )
    o = self.attn.mix(qkv, row0)  # [B, gh - row0, gw, D]
    op, oq = o[:, : hp - row0], o[:, hp - row0 :]
    if ensemble == "stream":
      oq = _prompt_mean(oq.reshape(s, b // s, *oq.shape[1:]), 1, weights)[:, 0]
    else:  # "all"
      oq = jnp.broadcast_to(_prompt_mean(oq, 0, weights), (s,) + oq.shape[1:])
    xp = xp[:, row0:] + self.attn.proj(op)
    xq = xq + self.attn.proj(oq)
    return xp + self.mlp(self.norm2(xp)), xq + self.mlp(self.norm2(xq))


def _remat_block(ensemble: str | None, num_prompts: int, row0: int, remat: bool | str = True):
  """nnx.remat of a block call (static options closed over, not passed as arguments);
  `remat` True saves nothing inside the block, a REMAT_POLICIES name what that policy saves."""

  def f(block, x, rng, weights):
    return block(x, ensemble, num_prompts, rng, row0=row0, weights=weights)

  return nnx.remat(f, policy=None if remat is True else REMAT_POLICIES[remat])


class PatchEmbed(nnx.Module):
  def __init__(self, cfg: SegGPTConfig, *, rngs: nnx.Rngs):
    p = cfg.patch
    self.proj = nnx.Conv(
      3,
      cfg.width,
      (p, p),
      strides=(p, p),
      padding="VALID",
      kernel_init=_torch_conv_init(),
      dtype=jnp.dtype(cfg.dtype),
      rngs=rngs,
    )

  def __call__(self, x: Array) -> Array:
    return self.proj(x)


class SegGPT(nnx.Module):
  """SegGPT encoder + pixel decoder. Attribute names follow the official checkpoint."""

  def __init__(self, cfg: SegGPTConfig, *, rngs: nnx.Rngs):
    cfg.validate()
    self.cfg = cfg
    d = cfg.width
    tok = lambda: nnx.Param(0.02 * jax.random.normal(rngs.params(), (1, 1, 1, d)))
    self.patch_embed = PatchEmbed(cfg, rngs=rngs)
    self.mask_token = tok()
    self.segment_token_x = tok()
    self.segment_token_y = tok()
    self.type_token_cls = tok()
    self.type_token_ins = tok()
    g = cfg.pretrain_grid
    self.pos_embed = nnx.Param(_dense_init()(rngs.params(), (1, 1 + g * g, d)))
    rates = np.linspace(0.0, cfg.drop_path, cfg.depth)
    self.blocks = nnx.List([Block(cfg, float(r), rngs=rngs) for r in rates])
    self.norm = _norm(d, cfg, rngs)
    p, dd = cfg.patch, cfg.decoder_dim
    dt = jnp.dtype(cfg.dtype)
    self.decoder_embed = nnx.Linear(
      len(cfg.feature_layers) * d, p * p * dd, kernel_init=_dense_init(), dtype=dt, rngs=rngs
    )
    self.decoder_conv = nnx.Conv(
      dd, dd, (3, 3), padding=((1, 1), (1, 1)), kernel_init=_torch_conv_init(), dtype=dt, rngs=rngs
    )
    self.decoder_norm = _norm(dd, cfg, rngs)
    self.decoder_head = nnx.Conv(dd, 3, (1, 1), kernel_init=_torch_conv_init(), dtype=dt, rngs=rngs)

  # -- embedding --------------------------------------------------------------------------
  def embed(self, imgs: Array, tgts: Array, mask: Array, seg_type: Array) -> Array:
    """-> [2N, gh, gw, D]: image-stream entries, then target-stream ones (docs/design.md#model)."""
    cfg = self.cfg
    gh, gw = cfg.grid
    dt = jnp.dtype(cfg.dtype)
    x = self.patch_embed(imgs.astype(dt))
    y = self.patch_embed(tgts.astype(dt))
    w = jnp.asarray(mask, dt).reshape(-1, gh, gw, 1)
    y = y * (1 - w) + self.mask_token[...].astype(dt) * w
    x = x + self.segment_token_x[...].astype(dt)
    y = y + self.segment_token_y[...].astype(dt)
    pos = posemb.resize_pos_embed(self.pos_embed[...], (gh, gw)).astype(dt)
    x, y = x + pos, y + pos
    st = jnp.asarray(seg_type, jnp.int32).reshape(-1, 1, 1, 1)
    type_emb = (
      jnp.where(st == 0, self.type_token_cls[...], 0.0)
      + jnp.where(st == 1, self.type_token_ins[...], 0.0)
    ).astype(dt)
    x, y = x + type_emb, y + type_emb
    return jnp.concatenate([x, y], axis=0)

  def _ensemble_modes(self, n: int, feature_ensemble: bool):
    cfg = self.cfg
    modes = []
    for i in range(cfg.depth):
      b = 2 * n if i <= cfg.merge_index else n
      if not feature_ensemble:
        modes.append(None)
      elif cfg.ensemble == "official":
        # Official: on iff more than one prompt; per-stream up to and including the merge.
        modes.append(None if n == 1 else ("stream" if i <= cfg.merge_index else "all"))
      else:
        # HF: ensemble_cond 2 below merge_index, else 1; applied when batch//2 >= cond.
        cond = 2 if i < cfg.merge_index else 1
        modes.append(None if b // 2 < cond else ("stream" if i < cfg.merge_index else "all"))
    return modes

  def encode(
    self,
    imgs: Array,
    tgts: Array,
    mask: Array,
    seg_type: Array,
    *,
    feature_ensemble: bool = False,
    rng=None,
    query_only: bool = False,
    prompt_weights: Array | None = None,
  ) -> list[Array]:
    """Runs the ViT; returns the normed decoder features, each [N, gh, gw, D].

    Blocks after the last feature layer cannot affect the output and are skipped.
    query_only: features are only needed for the query half plus one row of context, so
    they come back as [N, gh/2 + 1, gw, D] and the last block computes only those rows.
    """
    cfg = self.cfg
    n = imgs.shape[0]
    h = self.embed(imgs, tgts, mask, seg_type)
    modes = self._ensemble_modes(n, feature_ensemble)
    rngs = [None] * cfg.depth if rng is None else list(jax.random.split(rng, cfg.depth))
    last = max(cfg.feature_layers)
    r0 = cfg.grid[0] // 2 - 1 if query_only else 0
    feats = []
    for i, blk in enumerate(self.blocks):
      if i > last:
        break
      row0 = r0 if i == last else 0
      if cfg.remat:
        h = _remat_block(modes[i], n, row0, cfg.remat)(blk, h, rngs[i], prompt_weights)
      else:
        h = blk(h, modes[i], n, rngs[i], row0=row0, weights=prompt_weights)
      if i == cfg.merge_index:
        h = 0.5 * (h[:n] + h[n:])
      if i in cfg.feature_layers:
        feats.append(self.norm(h[:, r0 - row0 :]))
    return feats

  def _encode_shared(
    self,
    imgs: Array,
    tgts: Array,
    mask: Array,
    seg_type: Array,
    *,
    query_only: bool,
    prompt_weights: Array | None = None,
  ):
    """Feature-ensemble encoder computing the shared query half once per stream.

    Assumes every entry has the same query half (image, mask and type token), as in
    k-prompt inference. Returns (prompt-row features [N, r, gw, D], query-row features
    [1, gh - gh/2, gw, D]) per feature layer; r = 1 (the context row) when query_only.
    """
    cfg = self.cfg
    n = imgs.shape[0]
    hp = cfg.grid[0] // 2
    h = self.embed(imgs, tgts, mask, seg_type)
    modes = self._ensemble_modes(n, True)
    xp, xq = h[:, :hp], h[::n, hp:]  # [2N, hp, ...], [2, gh - hp, ...]
    last = max(cfg.feature_layers)
    fp, fq = [], []
    for i, blk in enumerate(self.blocks):
      if i > last:
        break
      xp, xq = blk.shared(
        xp, xq, modes[i], hp - 1 if (query_only and i == last) else 0, prompt_weights
      )
      if i == cfg.merge_index:
        xp, xq = 0.5 * (xp[:n] + xp[n:]), 0.5 * (xq[:1] + xq[1:])
      if i in cfg.feature_layers:
        fp.append(self.norm(xp[:, -1:] if query_only else xp))
        fq.append(self.norm(xq))
    return fp, fq

  # -- decoder ----------------------------------------------------------------------------
  def _pixels(self, x: Array) -> Array:
    """[N, r, gw, F*D] concatenated features -> [N, r*p, gw*p, dd] decoder pixels.

    Pixel shuffle: docs/design.md#decoder.
    """
    p, dd = self.cfg.patch, self.cfg.decoder_dim
    n, r, gw, _ = x.shape
    x = self.decoder_embed(x).reshape(n, r, gw, p, p, dd)
    return x.transpose(0, 1, 3, 2, 4, 5).reshape(n, r * p, gw * p, dd)

  def _head(self, x: Array) -> Array:
    x = self.decoder_conv(x)
    x = jax.nn.gelu(self.decoder_norm(x), approximate=False)
    return self.decoder_head(x)

  def decode(self, feats: list[Array], query_only: bool = False) -> Array:
    """Features -> pixels. query_only decodes the bottom half plus one row of context."""
    cfg = self.cfg
    p = cfg.patch
    gh = cfg.grid[0]
    x = jnp.concatenate(feats, axis=-1)  # [N, gh, gw, 4D]
    if query_only and x.shape[1] == gh:
      x = x[:, gh // 2 - 1 :]  # one token row of context
    x = self._head(self._pixels(x))
    if query_only:
      x = x[:, p:]
    return x.astype(jnp.float32)

  def _decode_shared(self, fp: list[Array], fq: list[Array]) -> Array:
    """query_only decode of shared-query features: [N, H, W, 3].

    Only the first query pixel row sees the (per-prompt) context row through the 3x3 conv;
    every other row is decoded once and broadcast.
    """
    ctx = self._pixels(jnp.concatenate(fp, axis=-1))  # [N, p, W, dd]
    q = self._pixels(jnp.concatenate(fq, axis=-1))  # [1, H, W, dd]
    n = ctx.shape[0]
    rest = self._head(q)[:, 1:]  # rows 1..H-1 (row 0 lacks context)
    edge = jnp.concatenate([ctx[:, -1:], jnp.broadcast_to(q[:, :2], (n, 2) + q.shape[2:])], axis=1)
    first = self._head(edge)[:, 1:2]  # [N, 1, W, 3]
    out = jnp.concatenate([first, jnp.broadcast_to(rest, (n,) + rest.shape[1:])], axis=1)
    return out.astype(jnp.float32)

  def __call__(
    self,
    imgs: Array,
    tgts: Array,
    mask: Array,
    seg_type: Array,
    *,
    feature_ensemble: bool = False,
    query_only: bool = False,
    rng=None,
    shared_query: bool = False,
    prompt_weights: Array | None = None,
  ) -> Array:
    """Predicts the target canvas.

    Args:
      imgs: [N, 2H, W, 3] normalised image canvas (prompt over query).
      tgts: [N, 2H, W, 3] normalised target canvas; hidden patches are replaced by the mask
        token, so their content only needs to be finite.
      mask: [N or 1, L] bool/0-1 patch mask, True = hidden (the bottom half at inference).
      seg_type: [N] int (0 semantic, 1 instance, other: no type token).
      feature_ensemble: average query-half features across the N prompts (docs/design.md#ensembles).
      query_only: decode only the query half ([N, H, W, 3]).
      rng: PRNG key enabling drop path (training); None = deterministic.
      shared_query: with feature_ensemble, promise that all N entries share the query half
        (image, mask, seg_type), as in k-prompt inference: its per-token work (qkv, proj,
        MLP, norms, decoder) is then done once instead of N times. Same result up to float
        rounding; wrong results if the promise does not hold. Inference only (rng=None).
      prompt_weights: [N] 0/1 validity of the prompt slots: the feature ensemble averages
        over the valid slots only, so a fixed number of slots (one compiled shape) serves a
        growing prompt memory; invalid slots only need finite content and their own outputs
        are meaningless. None: all N prompts are valid.
    Returns:
      [N, 2H, W, 3] (or [N, H, W, 3]) float32 prediction in normalised pixel space.
    """
    if (
      shared_query
      and feature_ensemble
      and imgs.shape[0] > 1
      and all(self._ensemble_modes(imgs.shape[0], True))
    ):
      if rng is not None:
        raise ValueError("shared_query is an inference path: drop path (rng) is not supported")
      fp, fq = self._encode_shared(
        imgs, tgts, mask, seg_type, query_only=query_only, prompt_weights=prompt_weights
      )
      if query_only:
        return self._decode_shared(fp, fq)
      n = imgs.shape[0]
      return self.decode(
        [
          jnp.concatenate([a, jnp.broadcast_to(b, (n,) + b.shape[1:])], axis=1)
          for a, b in zip(fp, fq)
        ]
      )
    feats = self.encode(
      imgs,
      tgts,
      mask,
      seg_type,
      feature_ensemble=feature_ensemble,
      rng=rng,
      query_only=query_only,
      prompt_weights=prompt_weights,
    )
    return self.decode(feats, query_only=query_only)


def create(variant: str = "L/16", *, seed: int = 0, **overrides) -> SegGPT:
  """Builds a randomly initialised SegGPT of a named variant."""
  return SegGPT(get_config(variant, **overrides), rngs=nnx.Rngs(seed))


def abstract(cfg: SegGPTConfig) -> SegGPT:
  """Shape-only model (no memory), e.g. as a restore target."""
  return nnx.eval_shape(lambda: SegGPT(cfg, rngs=nnx.Rngs(0)))
