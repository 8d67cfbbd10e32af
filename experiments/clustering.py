r"""Filter clustering and XORD (Brutzkus and Globerson 2019; report section 2).

  python -m experiments.clustering [--quick] [--ks=2,4,8,16,32,64,120] [--pairs=4] [--n_train=40] \
      [--clusters=4] [--num_seeds=5] [--conv2_workdir=runs/clustering/conv2] [--workdir=runs/clustering]

XORD networks for every k in one vmapped program (test accuracy exact over the balanced distribution),
k-means angles of the filters trained against initialisation, compression by cluster centres; then the
first conv layer of a Conv-2 trained on real images (in --conv2_workdir, trained there first). Writes
results.json and figure.png/.pdf. Options: redundancy_jax.related.clustering.ClusteringConfig.
"""

from experiments import cli
from redundancy_jax.related import clustering


def main(config: clustering.ClusteringConfig) -> dict:
  return clustering.run(config)


if __name__ == "__main__":
  cli.run(main, clustering.ClusteringConfig)
