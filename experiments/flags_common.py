"""Flags shared by the experiment scripts (declared once here), the config they build, and the one
entry point every script runs through."""

import sys
from typing import Any, Callable

from absl import app, flags

from redundancy_jax import train

flags.DEFINE_string("model", "lenet", "Model name: lenet, conv2, conv4, conv6 or vgg19.")
flags.DEFINE_string("workdir", None, "Run folder (default: runs/<model>).")
flags.DEFINE_string("dataset", None, "Dataset (default: the model's: mnist or cifar10).")
flags.DEFINE_string("data_dir", None, "Folder with the dataset's binary files, or a tfds data_dir.")
flags.DEFINE_enum("data_source", "auto", ["auto", "files", "tfds", "bundled"], "Where to read the data.")
flags.DEFINE_integer("steps", None, "Training iterations (default: the recipe's).")
flags.DEFINE_integer("batch_size", None, "Batch size (default: the recipe's).")
flags.DEFINE_string("optimizer", None, "sgd, momentum or adam (default: the recipe's).")
flags.DEFINE_float("learning_rate", None, "Learning rate (default: the recipe's).")
flags.DEFINE_float("width", 1.0, "Width multiplier of every hidden layer.")
flags.DEFINE_bool("batch_norm", None, "BatchNorm after convolutions (default: on for vgg19 only).")
flags.DEFINE_integer("eval_every", 100, "Iterations between validation-loss evaluations.")
flags.DEFINE_integer("seed", 0, "Random seed (initialisation, data order, validation split).")
flags.DEFINE_integer("num_seeds", 1, "Independently seeded replicas trained together (vmapped).")
flags.DEFINE_integer("num_devices", None, "Devices to shard the batch over (default: all local).")
flags.DEFINE_integer("snapshot_every", 0, "Epochs between snapshots (0: every epoch, at most ~100).")

FLAGS = flags.FLAGS


def train_config() -> train.TrainConfig:
  """The training config the flags describe (recipe defaults are filled by `resolve`)."""
  return train.TrainConfig(
    model=FLAGS.model, dataset=FLAGS.dataset, data_dir=FLAGS.data_dir, data_source=FLAGS.data_source,
    steps=FLAGS.steps, batch_size=FLAGS.batch_size, optimizer=FLAGS.optimizer,
    learning_rate=FLAGS.learning_rate, width=FLAGS.width, batch_norm=FLAGS.batch_norm,
    eval_every=FLAGS.eval_every, seed=FLAGS.seed, num_seeds=FLAGS.num_seeds, num_devices=FLAGS.num_devices,
    snapshot_every=FLAGS.snapshot_every,
  )


def workdir() -> str:
  return FLAGS.workdir or f"runs/{FLAGS.model}"


def define_analysis_flags(layer_help: str, eval_chunk: bool = False) -> None:
  """The flags the analysis scripts share: --layer (its help says what the script accepts) and, for
  those that batch their evaluation by hand, --eval_chunk."""
  flags.DEFINE_string("layer", "fc1", layer_help)
  if eval_chunk:
    flags.DEFINE_integer("eval_chunk", 500, "Test images per batched evaluation step.")


USER_ERRORS = (ValueError, FileNotFoundError, FloatingPointError)


def run_app(run: Callable[[], Any]) -> None:
  """Runs `run()` as an absl app; an error a user can cause exits with its message, no traceback."""

  def main(argv):
    if len(argv) > 1:
      sys.exit(f"error: unexpected arguments {argv[1:]}; every option is a --flag (see --help)")
    try:
      run()
    except USER_ERRORS as e:
      sys.exit(f"error: {e}")

  app.run(main)
