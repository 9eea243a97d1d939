"""How fast the params of a checkpoint come off the disk: Orbax restore against the bytes' read.

Saves a randomly initialised model as `incontext convert` does (Orbax params + incontext.json)
and times, each the best of --reps in this process (the OS file cache is warm after the first
read, as it is for a user's repeated call):

  orbax      checkpoint.load_model(verify=False) of the directory without its inference copy:
             the abstract model, Orbax's restore, nnx.merge (what every command did before
             the copy existed)
  read       reading every file of the params folder into memory (np.fromfile): the disk or
             page-cache speed for the same bytes, the floor any format could reach
  safetensors  the same params as one safetensors file: safetensors.numpy.load_file (mmap'd
             read into numpy) plus the same nnx.merge, i.e. what an inference copy kept beside
             the Orbax tree would cost
  load_model checkpoint.load_model(verify=False) as it is now (the copy, abstract model included)
  hash       checkpoint.params_hash: the sha256 of the weights that load_model's verify adds
             (skipped on later loads of unchanged files by the verified stamp)

  python -m experiments.bench_restore            # L/16, 1.2 GB (about a minute on 2 cores)
  python -m experiments.bench_restore --variant test --reps 2   # a quick check
"""

import argparse
import json
import os
import tempfile
import time

import numpy as np
from flax import nnx

from experiments import benchenv
from incontext import checkpoint
from incontext.models import seggpt


def _best(fn, reps: int) -> float:
  ts = []
  for _ in range(reps):
    t = time.perf_counter()
    fn()
    ts.append(time.perf_counter() - t)
  return min(ts)


def _read_all(directory: str) -> int:
  n = 0
  for root, _, files in os.walk(directory):
    for f in files:
      n += np.fromfile(os.path.join(root, f), np.uint8).size
  return n


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--variant", default="L/16")
  ap.add_argument("--reps", type=int, default=3)
  args = ap.parse_args(argv)
  import safetensors.numpy as stn

  kw = dict(image_size=(32, 32), patch=8) if args.variant == "test" else {}
  model = seggpt.create(args.variant, **kw)
  res = {"variant": args.variant}
  with tempfile.TemporaryDirectory(prefix="bench_restore_") as tmp:
    d = os.path.join(tmp, "params")
    checkpoint.save_model(d, model)
    flat = {
      "/".join(map(str, k)): np.asarray(v[...])
      for k, v in nnx.to_flat_state(nnx.state(model, nnx.Param))
    }
    st_path = os.path.join(tmp, "params.safetensors")
    stn.save_file(flat, st_path)
    tree = os.path.join(d, "params")  # the Orbax tree alone (not the inference copy beside it)
    nbytes = _read_all(tree)
    res["params_bytes"] = nbytes
    copy = os.path.join(d, checkpoint.INFERENCE_COPY)
    os.rename(copy, st_path + ".away")  # load_model reads the Orbax tree when there is no copy
    res["orbax_s"] = _best(lambda: checkpoint.load_model(d, verify=False), args.reps)
    os.rename(st_path + ".away", copy)
    res["read_s"] = _best(lambda: _read_all(tree), args.reps)

    def from_safetensors():
      arrays = stn.load_file(st_path)
      m = seggpt.abstract(model.cfg)
      graphdef, state = nnx.split(m)
      for path, var in nnx.to_flat_state(state):
        key = "/".join(map(str, path))
        if key in arrays:
          var.value = arrays[key]
      return nnx.merge(graphdef, state)

    want = checkpoint.read_meta(d)["weights_hash"]
    assert checkpoint.params_hash(from_safetensors()) == want, "safetensors copy differs"
    res["safetensors_s"] = _best(from_safetensors, args.reps)
    res["load_model_s"] = _best(lambda: checkpoint.load_model(d, verify=False), args.reps)
    res["hash_s"] = _best(lambda: checkpoint.params_hash(model), 1)
  gb = nbytes / 1e9
  res["orbax_gb_per_s"] = round(gb / res["orbax_s"], 2)
  res["read_gb_per_s"] = round(gb / res["read_s"], 2)
  res["safetensors_gb_per_s"] = round(gb / res["safetensors_s"], 2)
  res["orbax_vs_read"] = round(res["orbax_s"] / res["read_s"], 2)
  for k in ("orbax_s", "read_s", "safetensors_s", "load_model_s", "hash_s"):
    res[k] = round(res[k], 3)
  print(
    f"{args.variant}, {gb:.2f} GB: orbax restore {res['orbax_s']} s "
    f"({res['orbax_gb_per_s']} GB/s) | read the same bytes {res['read_s']} s "
    f"({res['read_gb_per_s']} GB/s) | safetensors + merge {res['safetensors_s']} s | "
    f"load_model (the copy) {res['load_model_s']} s | "
    f"sha256 verify {res['hash_s']} s",
    flush=True,
  )
  print(json.dumps(res, indent=1))
  return res


if __name__ == "__main__":
  with benchenv.bracket("bench_restore"):
    main()
