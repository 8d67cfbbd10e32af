"""The project's own refusals: bad input, missing or damaged files, state a user can fix. Every one derives
from `UserError`, and only those are printed by the commands as one line without a traceback
(experiments/cli.py); anything else is a bug and keeps its traceback.

  raise BadOption(f"unknown criterion {name!r}; valid criteria: {', '.join(CRITERIA)}")
  raise DamagedFile(path, "delete it and rerun the command: training resumes from its last checkpoint")

Each class also derives from the built-in exception it refines (ValueError, FileNotFoundError, ...), so
library callers that catch those keep working.
"""

from __future__ import annotations

import os


class UserError(Exception):
  """A refusal a user can act on; its message names what is wrong, the valid choices and the fix."""


class BadOption(UserError, ValueError):
  """An option, argument or combination of them that is not valid."""


class MissingFile(UserError, FileNotFoundError):
  """A file or run the command needs is not there."""


class DamagedFile(UserError, ValueError):
  """A file that exists but cannot be read (truncated, corrupted): names it, what failed, and the fix."""

  def __init__(self, path: str, fix: str, cause: BaseException | str | None = None):
    why = f" ({_first_line(cause)})" if cause else ""
    super().__init__(f"{path} is damaged{why}: {fix}")
    self.path = path


class TrainingDiverged(UserError, FloatingPointError):
  """A non-finite training loss: the message names the step and the checkpoint kept."""


def _first_line(cause: BaseException | str) -> str:
  text = str(cause) or type(cause).__name__
  line = text.strip().splitlines()[0] if text.strip() else type(cause).__name__
  return line if len(line) <= 160 else line[:157] + "..."


def unwritable(e: OSError) -> str | None:
  """The one-line message for an OSError that a user fixes by choosing another folder (no permission, a
  read-only or full disk), or None for any other OSError."""
  import errno

  if e.errno not in (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT):
    return None
  where = e.filename or "a file"
  folder = os.path.dirname(os.path.abspath(where)) if e.filename else "the output folder"
  return (f"cannot write {where}: {e.strerror or os.strerror(e.errno)}; give a --workdir you can write to, or free "
          f"space / fix the permissions of {folder}")
