"""The scripts' command line, derived from their configs: every option of a script's config
(redundancy_jax.core.config.options) is a flag of the same name, type, default and help, plus --quick
where the config has quick presets. A flag given on the command line overrides the preset. The one
entry point every script runs through: an error a user can cause prints one line, no traceback.

  if __name__ == "__main__":
    cli.run(main, PruneSweepConfig)

--help (or -h) prints the script's docstring and its options in groups, each in declaration order: the
command's own, then each nested config's (the training options last), then the cluster options; absl's
own flags only in --helpfull, which lists the same groups.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import re
import sys
import traceback
import typing
from typing import Any, Callable

from absl import app, flags, logging

from redundancy_jax.core import config, console, errors, parallel, processes
from redundancy_jax.models import MODELS, create_model, topology


HELP_ARGS = ("--help", "-h", "-?", "--helpshort")
TRAINING = "training options"
CLUSTER = "cluster and device"  # the heading of parallel.ClusterConfig's options
CLUSTER_ABOUT = "Several processes (one per host) and CPU devices; every command takes them."
_STATED_DEFAULT = re.compile(r"\s*\(default\b[^()]*\)")  # "(default 1)", "(default: the recipe's)"


@dataclasses.dataclass
class Group:
  """Options under one heading of --help: a command's own, or one nested config's."""

  heading: str
  about: str  # the nested config's help ("" for the command's own options)
  names: list[str]  # flag names, in declaration order


def groups(cfg_cls, command: str) -> list[Group]:
  """The flags of `cfg_cls` under their headings: the command's own (--quick first), then each nested
  config's in declaration order, the training options (a TrainConfig) last."""
  instance = cfg_cls()
  own = Group(f"{command} options", "", ["quick"] if config.has_preset(cfg_cls) else [])
  nested: dict[tuple[str, ...], Group] = {}
  for o in config.options(cfg_cls):
    key = o.path[:-1]
    if not key:
      own.names.append(o.name)
      continue
    if key not in nested:
      parent = _get(instance, key[:-1])
      field = {f.name: f for f in dataclasses.fields(parent)}[key[-1]]
      training = isinstance(getattr(parent, key[-1]), config.TrainConfig)
      nested[key] = Group(TRAINING if training else f"{key[-1]} options", field.metadata.get("help", ""), [])
    nested[key].names.append(o.name)
  return [own, *sorted(nested.values(), key=lambda g: g.heading == TRAINING)]


def _get(cfg, path: tuple[str, ...]):
  return functools.reduce(getattr, path, cfg)


@functools.cache
def kernel_layers(model: str) -> tuple[str, ...]:
  """A registered model's Dense and Conv layers, read off the shapes of its variables in the natural order
  of their numbered names (no trace: --help stays fast; `models.topology` finds the same in call order,
  tests/test_cli.py checks it)."""
  import jax

  net = create_model(model)
  shapes = jax.eval_shape(lambda: net.init(jax.random.key(0), net.image_shape))
  natural = lambda name: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]  # conv2 before conv10
  return tuple(sorted(topology.kernel_layers(shapes), key=natural))


def _layers(names_of: Callable) -> str:
  """Each model's layers, from the model registry: "lenet: fc1, fc2; conv2: conv1, conv2, fc1, fc2; ..."."""
  return "; ".join(f"{m}: {_compact(names_of(m))}" for m in MODELS)


def _compact(names) -> str:
  """"conv1, conv2, conv3, conv4, fc1" -> "conv1..conv4, fc1": runs of four or more numbered names shortened."""
  runs: list[list[str]] = []
  for name in names:
    prefix, number = re.fullmatch(r"(.*?)(\d*)", name).groups()
    last = runs[-1][-1] if runs else ""
    if number and re.fullmatch(re.escape(prefix) + str(int(number) - 1), last):
      runs[-1].append(name)
    else:
      runs.append([name])
  return ", ".join(f"{r[0]}..{r[-1]}" if len(r) >= 4 else ", ".join(r) for r in runs)


def expand_layers(text: str) -> str:
  """`text` with each registered model's layers in place of {layers} and {prunable_layers} (only when
  help is printed: building the models starts JAX's backend, which must wait for --cpu_devices)."""
  for placeholder, names_of in (("{layers}", kernel_layers), ("{prunable_layers}", lambda m: kernel_layers(m)[:-1])):
    if placeholder in text:
      text = text.replace(placeholder, _layers(names_of))
  return text


def _help(o: config.Option, quick: Any) -> str:
  """The help of an option's flag: its text, the default this command sets (in place of a default the text states for the unset case), the value
  under --quick where it differs, and a list's valid values."""
  text = o.help  # ({layers} and {prunable_layers} are filled in when help is printed: `expand_layers`)
  values = []
  if _text(o.default):
    text = _STATED_DEFAULT.sub("", text)
    values.append(f"default: {_text(o.default)}")
  if quick != o.default and _text(quick):
    values.append(f"--quick: {_text(quick)}")
  stated = _STATED_DEFAULT.search(text)
  if values and stated and text[stated.end():] in ("", "."):  # "(default: the recipe's; --quick: 1500)."
    text = f"{text[:stated.end() - 1]}; {'; '.join(values)}{text[stated.end() - 1:]}"
  elif values:
    text = text.rstrip(".") + f" ({'; '.join(values)})."
  if typing.get_origin(o.type) is tuple and o.choices:
    text += f" Valid: {', '.join(o.choices)}."
  return text


def _define(o: config.Option, fv: flags.FlagValues, group: str, quick: Any) -> None:
  """The absl flag of one option, registered under its group's heading (absl's --helpfull lists flags by
  that name); the config, not the flag, holds the default (flags default to None)."""
  help_text = _help(o, quick)
  if typing.get_origin(o.type) is tuple:
    flags.DEFINE_list(o.name, None, help_text, flag_values=fv, module_name=group)
  elif o.choices:
    flags.DEFINE_enum(o.name, None, [str(c) for c in o.choices], help_text, flag_values=fv, module_name=group)
  else:
    define = {bool: flags.DEFINE_bool, int: flags.DEFINE_integer, float: flags.DEFINE_float}.get(o.type,
                                                                                                 flags.DEFINE_string)
    define(o.name, None, help_text, flag_values=fv, module_name=group)


def _text(value: Any) -> str:
  """A default as typed on the command line: "" for none, lists comma separated, booleans lower case."""
  if value is None:
    return ""
  if isinstance(value, tuple):
    return ",".join(map(_text, value))
  return str(value).lower() if isinstance(value, bool) else str(value)


def define_flags(cfg_cls, fv: flags.FlagValues = flags.FLAGS, command: str = "command") -> None:
  """A flag for every option of `cfg_cls`, and `--quick` when it has quick presets, each under its group
  (`groups`); `command` names the group of the config's own options."""
  by_name = {o.name: o for o in config.options(cfg_cls)}
  quick = config.preset(cfg_cls()) if config.has_preset(cfg_cls) else cfg_cls()
  for group in groups(cfg_cls, command):
    for name in group.names:
      if name == "quick":
        flags.DEFINE_bool("quick", False, "Start from the quick presets (a minute or two on a CPU); flags given "
                                          "still override them.", flag_values=fv, module_name=group.heading)
      else:
        _define(by_name[name], fv, group.heading, quick=_get(quick, by_name[name].path))


def help_text(cfg_cls, doc: str, command: str, fv: flags.FlagValues = flags.FLAGS) -> str:
  """What --help prints: the script's docstring, then its flags by group (`groups`, then the cluster
  options), each flag as absl words it."""
  sections = [(doc or "").strip("\n")]
  cluster = dataclasses.replace(groups(parallel.ClusterConfig, CLUSTER)[0], about=CLUSTER_ABOUT)
  for group in [*groups(cfg_cls, command), cluster]:
    about = [flags.text_wrap(group.about, indent="  ")] if group.about else []
    sections.append("\n".join([f"{group.heading}:", *about, *(_flag_help(fv[name]) for name in group.names)]))
  sections.append("Try --helpfull for every flag, absl's own too (--verbosity, --logtostderr, ...).")
  return "\n\n".join(sections) + "\n"


def _flag_help(flag: flags.Flag) -> str:
  name = f"--[no]{flag.name}" if flag.boolean else f"--{flag.name}"
  text = flags.text_wrap(f"{name}: {expand_layers(flag.help)}", indent="      ", firstline_indent="  ")
  if flag.parser.syntactic_help:
    text += "\n" + flags.text_wrap(f"({flag.parser.syntactic_help})", indent="      ")
  return text


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
  processes.supervise()  # a process other than 0 of a multi-process run: relays this command's output, prefixed
  command = os.path.splitext(os.path.basename(sys.argv[0]))[0]
  define_flags(cfg_cls, command=command)
  define_flags(parallel.ClusterConfig, command=CLUSTER)

  def parse(argv):  # --help before absl parses: the grouped options (absl's would list them alphabetically)
    if any(arg in HELP_ARGS for arg in argv[1:]):
      print(help_text(cfg_cls, sys.modules["__main__"].__doc__, command), end="")
      sys.exit(0)
    if any(arg.startswith("--helpfull") for arg in argv[1:]):  # absl prints the flags' help as registered
      for name in flags.FLAGS:
        flags.FLAGS[name].help = expand_layers(flags.FLAGS[name].help or "")
    return app.parse_flags_with_usage(argv)

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
    except errors.UserError as e:  # the project's own refusals: one line; anything else is a bug (traceback)
      _exit(f"error: {e}", 1)
    except console.Interrupted as e:
      _exit(str(e), 130)
    except KeyboardInterrupt:
      _exit("interrupted", 130)
    except Exception as e:  # a bug: in a multi-process run, its traceback and the other processes told
      if isinstance(e, OSError) and (message := errors.unwritable(e)):  # no permission, read-only, disk full
        _exit(f"error: {message}", 1)
      if parallel.is_multi_process():
        if processes.peer_lost(e):  # a collective broke because a process died: the watchdog names it
          processes.await_watchdog()
        traceback.print_exc()
        processes.fail(f"{type(e).__name__}: {e}", 1)
      raise

  app.run(absl_main, flags_parser=parse)


def _exit(message: str, status: int) -> None:
  print(message, file=sys.stderr)
  processes.fail(message, status)  # a multi-process run: the others stop too, naming this process
  sys.exit(status)
