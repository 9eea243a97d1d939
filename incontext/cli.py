"""`incontext` command line: one sub-command per module in `incontext/commands/`.

Each command module defines `register(subparsers)` (adds its parser and sets
`func=run`) and `run(args) -> int`. Errors that users cause (bad files, wrong
checkpoint kind, ...) are `UserError`s or `ValueError`s: they print one line naming the
problem and exit with status 2; nothing half-written is left behind by the commands.
"""
import argparse
import importlib
import sys

COMMANDS = ("convert", "export_hf", "segment", "export_prompt", "segment_video", "label", "demo")


class UserError(ValueError):
  """An error in the user's input: printed without a traceback."""


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog="incontext", description="In-context segmentation with SegGPT in JAX.")
  sub = parser.add_subparsers(dest="command", required=True)
  for name in COMMANDS:
    try:
      mod = importlib.import_module(f"incontext.commands.{name}")
    except ModuleNotFoundError as e:
      if e.name == f"incontext.commands.{name}":
        continue  # command not built yet
      raise
    mod.register(sub)
  return parser


def main(argv=None) -> int:
  parser = build_parser()
  args = parser.parse_args(argv)
  try:
    return int(args.func(args) or 0)
  except (ValueError, FileNotFoundError, OSError) as e:
    print(f"incontext {args.command}: error: {e}", file=sys.stderr)
    return 2


if __name__ == "__main__":
  sys.exit(main())
