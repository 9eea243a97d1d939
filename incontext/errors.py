"""The one base class of errors caused by the user's input (files, settings, checkpoints),
and the one rule that sorts an exception into "the user's input" or "a bug".

A `UserError` means "the input is wrong, the code is fine": the command line prints its message
as one line and exits with status 2. Every other exception is a bug (or an environment
failure) and keeps its traceback (exit status 1). The library's specific errors subclass it:
`imageio.InputError`, `checkpoint.CheckpointError`, `models.convert.ConversionError`,
`prompts.PromptError`, `video.VideoError`, `outputs.OutputError`, `train.workdir.RunError`,
`data.sources.DataError` and the experiments' `DataDirError`. It is a `ValueError`, so code
catching ValueError keeps working.

`is_user_error(e)` is the classifier both the `incontext` command line and the experiment
entry points (`experiments/entry.py`) use: a `UserError`, or an OSError about a file the user
named (missing, exists, no permission, is / is not a directory) or about the user's disk
(full, over quota, read-only). `one_line(e)` is the message printed for it.

Messages start with the file or setting at fault and say what was expected; library code
names no command-line flags in them.

This module imports nothing heavy (the command line reads it before jax is loaded).
"""

import errno


class UserError(ValueError):
  """Bad user input: printed as one line without a traceback (exit status 2)."""


class UnknownName(UserError, KeyError):
  """A setting names something that does not exist (a config key, a data reader, a data op):
  a user error, and still a KeyError for code that looks names up."""

  __str__ = BaseException.__str__  # the message as written (KeyError's would quote it)


# OSErrors that are about a file the user named or about the user's disk, not bugs.
FILE_ERRORS = (
  FileNotFoundError,
  FileExistsError,
  PermissionError,
  IsADirectoryError,
  NotADirectoryError,
)
DISK_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)


def is_user_error(e: BaseException) -> bool:
  """True for an error in the user's input (exit status 2, one line), False for a bug."""
  if isinstance(e, (UserError, *FILE_ERRORS)):
    return True
  return isinstance(e, OSError) and e.errno in DISK_ERRNOS


def one_line(e: BaseException) -> str:
  """The error's message on one line (an OSError: `FILE: strerror`)."""
  msg = (
    str(e)
    if not isinstance(e, OSError) or e.filename is None
    else (f"{e.filename}: {e.strerror or e}")
  )
  return " ".join(msg.split()) or type(e).__name__
