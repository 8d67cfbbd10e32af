"""Flags shared by the experiment scripts (declared once here), the config they build, and the one
entry point every script runs through."""

from typing import Any

from absl import flags

from experiments.app import run_app  # noqa: F401  (the scripts call flags_common.run_app)
from redundancy_jax import train

flags.DEFINE_string("model", "lenet", "Model name: lenet, conv2, conv4, conv6, vgg19 or mlp (one hidden layer of --width units).")
flags.DEFINE_string("workdir", None, "Run folder (default: runs/<model>).")
flags.DEFINE_string("dataset", None, "mnist, fashion_mnist, cifar10, teacher_student, xord, random_images (default: the model's).")
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
flags.DEFINE_integer("classifier_seed", None, "Re-sample the classifier's initialisation with this seed (Figure 5).")
flags.DEFINE_float("target_train_loss", None, "Stop after the first epoch whose mean training loss is at most this.")

FLAGS = flags.FLAGS


# TrainConfig fields with a flag of the same name.
_TRAINING_FLAGS = (
  "model", "dataset", "data_dir", "data_source", "steps", "batch_size", "optimizer", "learning_rate", "width",
  "batch_norm", "eval_every", "seed", "num_seeds", "num_devices", "snapshot_every",
  "classifier_seed", "target_train_loss",
)


def train_config() -> train.TrainConfig:
  """The training config the flags describe (recipe defaults are filled by `resolve`)."""
  return train.TrainConfig(**{name: FLAGS[name].value for name in _TRAINING_FLAGS})


def given_training_flags() -> dict[str, Any]:
  """The training flags given on the command line, as {config field: value}: a trained model that a
  script reuses must have been trained with these values (the others are taken from its config.json)."""
  return {name: FLAGS[name].value for name in _TRAINING_FLAGS if FLAGS[name].present}


def workdir() -> str:
  return FLAGS.workdir or f"runs/{FLAGS.model}"


def define_analysis_flags(layer_help: str, eval_chunk: bool = False) -> None:
  """The flags the analysis scripts share: --layer (its help says what the script accepts) and, for
  those that batch their evaluation by hand, --eval_chunk."""
  flags.DEFINE_string("layer", "fc1", layer_help)
  if eval_chunk:
    flags.DEFINE_integer("eval_chunk", 500, "Test images per batched evaluation step.")

