r"""Build one of the TFDS datasets in data_prep/datasets without the `tfds` CLI.

  python -m data_prep.build camvid --manual_dir RAW --data_dir OUT \
      [--config 2016] [--max_examples N]

Same result as `tfds build data_prep/datasets/camvid --manual_dir RAW --data_dir OUT` (whose CLI
in tensorflow-datasets 4.9.10 imports apache_beam at start-up). Format: array_record.
"""

import argparse
import importlib

import tensorflow_datasets as tfds


def builder_cls(name: str):
  return importlib.import_module(f"data_prep.datasets.{name}.{name}_dataset_builder").Builder


def build(
  name: str,
  manual_dir: str,
  data_dir: str,
  config: str | None = None,
  max_examples: int | None = None,
):
  """Build (or reuse) dataset `name` and return the builder."""
  cls = builder_cls(name)
  kw = {"config": config} if config else {}
  if cls.BUILDER_CONFIGS and not config:
    kw["config"] = cls.BUILDER_CONFIGS[0].name
  b = cls(data_dir=data_dir, **kw)
  b.download_and_prepare(
    download_config=tfds.download.DownloadConfig(
      manual_dir=manual_dir, max_examples_per_split=max_examples
    )
  )
  return b


def main():
  p = argparse.ArgumentParser(description=__doc__)
  p.add_argument("name")
  p.add_argument("--manual_dir", required=True)
  p.add_argument("--data_dir", required=True)
  p.add_argument("--config", default=None)
  p.add_argument("--max_examples", type=int, default=None)
  a = p.parse_args()
  b = build(a.name, a.manual_dir, a.data_dir, a.config, a.max_examples)
  print(b.info.full_name, {k: v.num_examples for k, v in b.info.splits.items()}, "->", b.data_dir)


if __name__ == "__main__":
  main()
