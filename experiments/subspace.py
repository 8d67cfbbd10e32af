"""Subspace analysis of a trained model's layers (report section 3.3, Figures 6-7).

  python -m experiments.subspace --model=lenet [--layer=fc1|all] [--workdir=runs/lenet] [--num_ranks=48]

Trains the model first (by its recipe; the training flags apply) when --workdir holds no trained model.
Writes into <workdir>/subspace/<layer>/: config.json, results.json (eigenvalues of W W^T at
initialisation and trained, Marchenko-Pastur fits and spikes, the residual curve and its elbow k,
100 ||W_k||_F / ||W||_F, test accuracy over a grid of ranks for W -> W_k and W -> W0 + P_k(W - W0)),
and esd, residuals, accuracy (.png, .pdf). Options: redundancy_jax.analyses.subspace.SubspaceConfig.
"""

from experiments import cli
from redundancy_jax.analyses import subspace


def main(config: subspace.SubspaceConfig) -> dict:
  return subspace.run(config)


if __name__ == "__main__":
  cli.run(main, subspace.SubspaceConfig)
