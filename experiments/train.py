"""Trains a model of the report by its recipe and keeps the parameters at minimum validation loss.

  python -m experiments.train --model=lenet --workdir=runs/lenet [--steps=5000] [--num_seeds=10]

Writes into --workdir: config.json, metrics.jsonl (one line per epoch), snapshots/epoch_*.npz (the
parameters at initialisation and after each epoch), checkpoints/ (orbax; a killed run resumes from
here), trained_variables.npz (the minimum-validation-loss variables) and results.json.
"""

from absl import flags

from experiments import flags_common
from redundancy_jax import train

flags.DEFINE_float("checkpoint_every_secs", 60.0, "Seconds between resumable checkpoints (and one at the end).")


def run() -> None:
  train.train(
    flags_common.train_config(), flags_common.workdir(), checkpoint_every_secs=flags_common.FLAGS.checkpoint_every_secs
  )


if __name__ == "__main__":
  flags_common.run_app(run)
