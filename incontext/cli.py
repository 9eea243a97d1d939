"""`incontext` command line: one sub-command per module in `incontext/commands/`.

Each command module defines `register(subparsers)` (adds its parser and sets `func=run`) and
`run(args) -> int`, and may define `check(args)`: its argument, path and file-format checks,
which `main` runs before the compile cache (and so jax) is loaded, so a wrong input is reported
within a second. Command modules import only light modules at the top (argparse, os, ...):
jax, flax, orbax and the model are imported inside `run`, so `incontext --help`,
`incontext CMD --help` and input errors answer at once (tests/test_cli_conventions.py checks it).

Conventions shared by every command:
  exit status  0 success; 2 the user's input is wrong: an `incontext.errors.UserError` (bad
               file, setting or checkpoint) or an OSError about a file (missing, exists, no
               permission, is / is not a directory, disk full or read-only), printed as ONE
               line `incontext CMD: error: MESSAGE`, as are argparse's usage errors; 1 any
               other exception: a bug, printed with its full traceback; 130 interrupted.
  console      quiet by default: the INFO lines of orbax / absl, the TensorFlow C++ logs and
               the JAX backend warnings (e.g. "An NVIDIA GPU may be present on this machine, but
               a CUDA-enabled jaxlib is not installed") are hidden; `-v` shows them (and the
               traceback of user errors), `-vv` adds DEBUG logs. Results, warnings about the
               results and progress bars are always shown (`incontext.logs`, the set-up the
               experiment entry points share).
  --profile    prints where the time went at the end (`incontext.timing`: start-up, imports,
               checks, restore, verify, compile, decode, forward, post-process, write); -v too.
  compile cache  compiled XLA programs are kept on disk (`incontext.compile_cache`), so a
               repeated call does not compile again: `--no-compile-cache` or
               INCONTEXT_COMPILE_CACHE=0 turn it off, INCONTEXT_CACHE_DIR moves it.
"""

import argparse
import importlib
import logging
import sys
import traceback

from incontext import compile_cache, errors, logs, timing

COMMANDS = ("convert", "export_hf", "segment", "export_prompt", "segment_video", "label", "demo")


def _add_common(p: argparse.ArgumentParser, top: bool) -> None:
  """-v, --profile and --no-compile-cache, accepted before and after the command name."""
  # Sub-parsers use SUPPRESS defaults so they do not overwrite what the top level parsed.
  d = {} if top else {"default": argparse.SUPPRESS}
  p.add_argument(
    "-v",
    "--verbose",
    action="count",
    help="show library logs and warnings (-vv: debug logs)",
    **({"default": 0} if top else d),
  )
  p.add_argument(
    "--profile",
    action="store_true",
    help="print where the time went (start-up, imports, restore, compile, forward, ...)",
    **({"default": False} if top else d),
  )
  p.add_argument(
    "--no-compile-cache",
    action="store_true",
    help="do not read or write the on-disk XLA compilation cache (also INCONTEXT_COMPILE_CACHE=0)",
    **d,
  )


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
    prog="incontext", description="In-context segmentation with SegGPT in JAX."
  )
  _add_common(parser, top=True)
  sub = parser.add_subparsers(dest="command", required=True)
  for name in COMMANDS:
    try:
      mod = importlib.import_module(f"incontext.commands.{name}")
    except ModuleNotFoundError as e:
      if e.name == f"incontext.commands.{name}":
        continue  # command not built yet
      raise
    mod.register(sub)
  for p in sub.choices.values():
    _add_common(p, top=False)
  return parser


def main(argv=None) -> int:
  timing.reset()
  parser = build_parser()
  args = parser.parse_args(argv)
  logs.configure_logging(args.verbose)
  try:
    return _run(args)
  finally:
    if args.profile or args.verbose:
      print(timing.report(f"incontext {args.command}: time breakdown (s)"), file=sys.stderr)


def _run(args) -> int:
  cache_dir = None
  try:
    check = getattr(sys.modules[args.func.__module__], "check", None)
    if check is not None:  # the command's input checks, before jax is imported
      with timing.phase("checks"):
        check(args)
    if not args.no_compile_cache:
      with timing.phase("imports"):
        cache_dir = compile_cache.enable_from_env()
    rc = int(args.func(args) or 0)
    if cache_dir:
      s = compile_cache.stats()
      logging.getLogger("incontext").info(
        "compilation cache %s: %d programs loaded, %d compiled and written",
        cache_dir,
        s["hits"],
        s["writes"],
      )
    return rc
  except KeyboardInterrupt:
    print(f"incontext {args.command}: interrupted", file=sys.stderr)
    return 130
  except Exception as e:  # noqa: BLE001 (sorted into user errors and bugs)
    if not errors.is_user_error(e):
      raise  # a bug: Python prints the traceback, status 1
    if args.verbose:
      traceback.print_exc()
    print(f"incontext {args.command}: error: {errors.one_line(e)}", file=sys.stderr)
    return 2


if __name__ == "__main__":
  sys.exit(main())
