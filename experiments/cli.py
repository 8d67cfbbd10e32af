"""The scripts' command line, derived from their configs: every option of a script's config
(`redundancy_jax.core.config.options`) is a flag of the same name, type, default and help, plus `--quick`
where the config has quick presets. A flag given on the command line overrides the preset. The one
entry point every script runs through: an error a user can cause prints one line, no traceback.

  if __name__ == "__main__":
    cli.run(main, PruneSweepConfig)
"""

from __future__ import annotations

import json
import sys
import traceback
import typing
from typing import Any, Callable

from absl import app, flags, logging

from redundancy_jax.core import config, console, parallel
from redundancy_jax.core.runs import WorkdirInUse

USER_ERRORS = (ValueError, FileNotFoundError, FloatingPointError, WorkdirInUse)


def _define(o: config.Option, fv: flags.FlagValues) -> None:
  """The absl flag of one option; the config, not the flag, holds the default (flags default to None)."""
  shown = "" if o.default is None else f" (default: {_text(o.default)})"
  help_text = o.help + shown
  if typing.get_origin(o.type) is tuple:
    flags.DEFINE_list(o.name, None, help_text + (f" Valid: {', '.join(o.choices)}." if o.choices else ""),
                      flag_values=fv)
  elif o.choices:
    flags.DEFINE_enum(o.name, None, [str(c) for c in o.choices], help_text, flag_values=fv)
  else:
    define = {bool: flags.DEFINE_bool, int: flags.DEFINE_integer, float: flags.DEFINE_float}.get(o.type, flags.DEFINE_string)
    define(o.name, None, help_text, flag_values=fv)


def _text(value: Any) -> str:
  return ",".join(map(str, value)) if isinstance(value, tuple) else str(value)


def define_flags(cfg_cls, fv: flags.FlagValues = flags.FLAGS) -> None:
  """A flag for every option of `cfg_cls`, and `--quick` when it has quick presets."""
  names = []
  for o in config.options(cfg_cls):
    _define(o, fv)
    names.append(o.name)
  if config.has_preset(cfg_cls):
    flags.DEFINE_bool("quick", False, "Start from the quick presets (a minute or two on a CPU); flags given "
                                      "still override them.", flag_values=fv)
    names.append("quick")
  for name in names:  # listed by the script's --help (absl's key flags of the main module), not only --helpfull
    fv.register_key_flag_for_module(sys.argv[0], fv[name])


def from_flags(cfg_cls, fv: flags.FlagValues = flags.FLAGS):
  """The config the command line describes: the defaults, the quick presets if `--quick`, then every
  flag given."""
  cfg = cfg_cls()
  if config.has_preset(cfg_cls) and fv["quick"].value:
    cfg = config.preset(cfg, "quick")
  given = {o.name: fv[o.name].value for o in config.options(cfg_cls) if fv[o.name].present}
  return config.override(cfg, **given)


def run(main: Callable[[Any], Any], cfg_cls) -> None:
  """Runs `main(config)` as an absl app with the flags of `cfg_cls` and those of `parallel.ClusterConfig`
  (several processes, CPU devices). A user error exits with status 1 and its message; Ctrl-C (or
  SIGTERM) exits with status 130, after a training run has saved its checkpoint. Logging is quiet
  (warnings only) unless --verbosity is given. Processes started with different options are refused."""
  define_flags(cfg_cls)
  define_flags(parallel.ClusterConfig)

  def absl_main(argv):
    if len(argv) > 1:
      sys.exit(f"error: unexpected arguments {argv[1:]}; every option is a --flag (see --help)")
    if not flags.FLAGS["verbosity"].present:
      logging.set_verbosity(logging.WARNING)
    try:
      parallel.initialize(from_flags(parallel.ClusterConfig))
      cfg = from_flags(cfg_cls)
      parallel.same_everywhere(json.dumps(config.to_json(cfg), sort_keys=True), "configuration")
      main(cfg)
    except USER_ERRORS as e:
      _exit(f"error: {e}", 1)
    except console.Interrupted as e:
      _exit(str(e), 130)
    except KeyboardInterrupt:
      _exit("interrupted", 130)
    except Exception as e:  # a bug: in a multi-process run, its traceback and the other processes told
      if parallel.is_multi_process():
        traceback.print_exc()
        parallel.fail(f"{type(e).__name__}: {e}", 1)
      raise

  app.run(absl_main)


def _exit(message: str, status: int) -> None:
  print(message, file=sys.stderr)
  parallel.fail(message, status)  # a multi-process run: the others stop too, naming this process
  sys.exit(status)
