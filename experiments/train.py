"""Trains a model of the report by its recipe and keeps the parameters at minimum validation loss.

  python -m experiments.train --model=lenet [--workdir=runs/lenet] [--steps=5000] [--num_seeds=10]

Writes into --workdir (default runs/<model>): config.json, metrics.jsonl (one line per epoch),
snapshots/epoch_*.npz (the parameters at initialisation and after each epoch, about 100 per run),
checkpoints/ (orbax; a killed run resumes from here), trained_variables.npz (the minimum-validation-loss
variables) and results.json. Options: redundancy_jax.core.train.TrainRunConfig.
"""

from experiments import cli
from redundancy_jax.core import train


def main(config: train.TrainRunConfig) -> dict:
  return train.run(config)


if __name__ == "__main__":
  cli.run(main, train.TrainRunConfig)
