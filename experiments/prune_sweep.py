"""Compares structured pruning criteria on a trained network (the report's Figure 2).

  python -m experiments.prune_sweep --model=lenet [--layer=fc1|all] [--workdir=runs/lenet]
      [--checkpoint=DIR] [--criteria=max_mag,min_mag,max_fp,min_fp,random] [--random_seeds=5]

Trains first (by the model's recipe) when the workdir holds no trained model, or uses the training run
in --checkpoint; a model trained with other settings than the training flags given is refused. Then
removes 0..m units of the layer by every criterion, without retraining, all in one batched computation.
Writes into <workdir>/prune_sweep/: results.json, curves.csv, orders.npz (the removal orders),
figure2.png/.pdf (the criteria explained in its legend), and prints a summary table. Options:
redundancy_jax.analyses.prune_sweep.PruneSweepConfig.
"""

from experiments import cli
from redundancy_jax.analyses import prune_sweep


def main(config: prune_sweep.PruneSweepConfig) -> dict:
  return prune_sweep.run(config)


if __name__ == "__main__":
  cli.run(main, prune_sweep.PruneSweepConfig)
