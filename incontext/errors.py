"""The one base class of errors caused by the user's input (files, settings, checkpoints).

A `UserError` means "the input is wrong, the code is fine": the command line prints its message
as one line and exits with status 2. Every other exception is a bug (or an environment
failure) and keeps its traceback (exit status 1). The library's specific errors subclass it:
`imageio.InputError`, `checkpoint.CheckpointError`, `models.convert.ConversionError`,
`prompts.PromptError`, `video.VideoError`. It is a `ValueError`, so code catching ValueError
keeps working.

Messages start with the file or setting at fault and say what was expected; library code
names no command-line flags in them.

This module imports nothing heavy (the command line reads it before jax is loaded).
"""


class UserError(ValueError):
  """Bad user input: printed as one line without a traceback (exit status 2)."""
