"""Training-step benchmark: step time, throughput, FLOP/s, MFU and compiled memory.

  # CPU: the quickstart model, and L/16 at batch 1 (remat; depth reducible on slow hosts)
  python -m experiments.bench_train --model small --batch 32
  python -m experiments.bench_train --model L/16 --batch 1 --remat --steps 2   # docs/results.md
  python -m experiments.bench_train --model L/16 --batch 1 --remat --depth 6 --steps 2
  # GPU/TPU (prints MFU against the device's bf16 peak; goal: >= 40% on an H100):
  python -m experiments.bench_train --model L/16 --batch 16 --dtype bfloat16 --remat --steps 20

The peer in the same run is the jitted forward pass of the same model and batch: the
printed `train/forward` ratio is ~3 for an efficient backward (~4 with remat).
Memory is `compiled.memory_analysis()` of the sharded, donated train step. On CPU, --remat does
not lower it (XLA:CPU schedules the recomputation right after the forward, jax-ml/jax#19822;
tests/test_fast_attention.py checks the saved residuals instead): measure remat on a GPU/TPU.
"""

import argparse
import functools
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from experiments import benchenv
from experiments.configs.seggpt_train import SMALL_32
from incontext import mesh as mesh_lib
from incontext import sharding
from incontext.models import seggpt
from incontext.train import flops, optim, steps

# `--model small`: the quickstart / `real` model of experiments/configs/seggpt_train.py.
SMALL = {k: v for k, v in SMALL_32.items() if k not in ("variant", "dtype", "remat", "drop_path")}


def model_cfg(args) -> seggpt.SegGPTConfig:
  kw = dict(dtype=args.dtype, remat=args.remat, drop_path=0.1)
  if args.model == "small":
    return seggpt.get_config("test", **SMALL, **kw)
  if args.depth:
    d = args.depth
    if d < 5:
      raise SystemExit(
        f"--depth {d}: at least 5 blocks are needed (the stream merge and "
        "4 decoder feature layers after it)"
      )
    m = min(2, d - 5)
    kw.update(depth=d, merge_index=m, feature_layers=seggpt.default_feature_layers(d, m))
  if args.image_size:
    kw["image_size"] = (args.image_size, args.image_size)
  return seggpt.get_config(args.model, **kw)


def _mib(x) -> str:
  return f"{x / 2**20:.1f} MiB"


def main():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("--model", default="small", help="small | L/16 | B/16 | S/16 | Ti/16")
  p.add_argument("--batch", type=int, default=32, help="global batch")
  p.add_argument("--dtype", default="float32")
  p.add_argument("--remat", action="store_true")
  p.add_argument("--depth", type=int, default=0, help="reduce the block count (0 = variant's)")
  p.add_argument("--image_size", type=int, default=0, help="half size (0 = variant's)")
  p.add_argument("--steps", type=int, default=5)
  p.add_argument("--mesh", default="data=-1", help="e.g. data=-1 or data=2,fsdp=4")
  p.add_argument("--rules", default="replicate", help="sharding preset (incontext.sharding)")
  p.add_argument("--compile_only", action="store_true", help="memory analysis only")
  args = p.parse_args()

  cfg = model_cfg(args)
  mesh = mesh_lib.make_mesh(
    [(k, int(v)) for k, v in (kv.split("=") for kv in args.mesh.split(","))]
  )
  o = ml_collections.ConfigDict(
    dict(lr=1e-4, warmup_steps=10, total_steps=1000, wd=0.05, clip=3.0, layer_decay=0.8)
  )
  tx, sched = optim.make_tx(o, depth=cfg.depth)
  graphdef, abs_params = nnx.split(seggpt.abstract(cfg))
  abs_params = nnx.to_pure_dict(abs_params)
  abs_state = jax.eval_shape(lambda q: steps.init_state(q, tx, 0), abs_params)
  state_sh = sharding.shardings(abs_state, args.rules, mesh)
  bsh, repl = mesh_lib.batch_sharding(mesh), mesh_lib.replicated(mesh)
  n_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(abs_params))
  h, w = cfg.canvas
  b = args.batch
  batch = {
    "image": jnp.zeros((b, h, w, 3)),
    "target": jnp.zeros((b, h, w, 3)),
    "mask": jnp.asarray(np.random.default_rng(0).random((b, cfg.num_tokens)) < 0.5),
    "valid": jnp.ones((b, h, w)),
    "seg_type": jnp.zeros((b,), jnp.int32),
  }
  batch = jax.device_put(batch, bsh)
  step = jax.jit(
    functools.partial(steps.train_step, graphdef=graphdef, tx=tx, schedule=sched, patch=cfg.patch),
    in_shardings=(state_sh, bsh),
    out_shardings=(state_sh, repl),
    donate_argnums=(0,),
  )
  fwd = jax.jit(
    lambda prm, bt: steps.loss_fn(prm, bt, None, graphdef=graphdef, patch=cfg.patch)[0],
    in_shardings=(state_sh["params"], bsh),
    out_shardings=repl,
  )
  print(
    f"model {args.model} depth {cfg.depth} canvas {cfg.canvas} patch {cfg.patch} "
    f"params {n_params / 1e6:.2f}M dtype {cfg.dtype} remat {cfg.remat} batch {b} "
    f"devices {jax.device_count()} x {jax.devices()[0].device_kind} mesh {dict(mesh.shape)}"
  )
  with jax.set_mesh(mesh):
    t = time.perf_counter()
    compiled = step.lower(abs_state, batch).compile()
    print(f"compile: {time.perf_counter() - t:.1f} s")
    ma = compiled.memory_analysis()
    if ma is not None:
      print(
        "memory (per device): "
        f"arguments {_mib(ma.argument_size_in_bytes)}, "
        f"outputs {_mib(ma.output_size_in_bytes)}, "
        f"aliased {_mib(ma.alias_size_in_bytes)}, temp {_mib(ma.temp_size_in_bytes)}, "
        f"generated code {_mib(ma.generated_code_size_in_bytes)}"
      )
    if args.compile_only:
      return
    state = jax.jit(
      lambda: steps.init_state(
        jax.tree.map(lambda a: jnp.full(a.shape, 0.01, a.dtype), abs_params), tx, 0
      ),
      out_shardings=state_sh,
    )()
    state, m = compiled(state, batch)  # warm-up
    jax.block_until_ready(m)
    t = time.perf_counter()
    for _ in range(args.steps):
      state, m = compiled(state, batch)
    jax.block_until_ready(m)
    dt = (time.perf_counter() - t) / args.steps
    loss = fwd(state["params"], batch)
    jax.block_until_ready(loss)
    t = time.perf_counter()
    for _ in range(args.steps):
      loss = fwd(state["params"], batch)
    jax.block_until_ready(loss)
    dt_fwd = (time.perf_counter() - t) / args.steps
  fl = flops.train_flops(cfg) * b
  per_dev = fl / dt / jax.device_count()
  print(
    f"train step: {dt * 1e3:.1f} ms  ({b / dt:.2f} examples/s, "
    f"{per_dev / 1e12:.3f} TFLOP/s per device, model FLOPs {fl / 1e12:.3f} TFLOP/step)"
  )
  print(f"forward (peer): {dt_fwd * 1e3:.1f} ms  -> train/forward = {dt / dt_fwd:.2f}")
  peak = flops.peak_flops(jax.devices()[0].device_kind)
  if peak:
    print(f"MFU (bf16 peak {peak / 1e12:.0f} TFLOP/s): {100 * per_dev / peak:.1f}%")
  else:
    print(f"MFU: unknown peak for device kind {jax.devices()[0].device_kind!r}")


if __name__ == "__main__":
  with benchenv.bracket("bench_train"):
    rc = main()
