"""The one entry point every experiment script runs through (no flags of its own)."""

import sys
from typing import Any, Callable

from absl import app, flags, logging

from redundancy_jax import console

USER_ERRORS = (ValueError, FileNotFoundError, FloatingPointError)


def flag_values(names, quick_presets: dict | None = None) -> dict:
  """{name: value} of the flags `names`; with `quick_presets` (a script's --quick), each preset replaces
  its flag unless that flag was given on the command line."""
  values = {name: flags.FLAGS[name].value for name in names}
  if quick_presets:
    values.update({k: v for k, v in quick_presets.items() if not flags.FLAGS[k].present})
  return values


def run_app(run: Callable[[], Any]) -> None:
  """Runs `run()` as an absl app. An error a user can cause exits with its message and no traceback;
  Ctrl-C (or SIGTERM) exits with status 130, after a training run has saved its checkpoint. Logging is
  quiet (warnings only) unless --verbosity is given."""

  def main(argv):
    if len(argv) > 1:
      sys.exit(f"error: unexpected arguments {argv[1:]}; every option is a --flag (see --help)")
    if not flags.FLAGS["verbosity"].present:
      logging.set_verbosity(logging.WARNING)
    try:
      run()
    except USER_ERRORS as e:
      sys.exit(f"error: {e}")
    except console.Interrupted as e:
      print(e, file=sys.stderr)
      sys.exit(130)
    except KeyboardInterrupt:
      print("interrupted", file=sys.stderr)
      sys.exit(130)

  app.run(main)
