r"""The report's Figure 8 table: low-rank replacement of each model's first dense layer, over seeds.

  python -m experiments.subspace_table --models=lenet,conv2,conv6,vgg19 --num_seeds=10 \
      [--steps=N] [--workdir_root=runs] [--dataset=random_images] [--width=0.25] [--layer=fc1]

For every model, --num_seeds replicas (default 10) are trained together in
<workdir_root>/<model>_seeds<K> (suffixed _w<width>, _<dataset>, _steps<N> when given) unless that
workdir holds them. Per replica: k = the elbow of W's residual curve, 100 ||W_k||_F / ||W||_F, the test
accuracy drops a - a_proj (W -> W_k) and a - a_NK (W -> W0 + P_k(W - W0)), and the update's own elbow.
Writes <out>.md (one column per model, as in the report), <out>.csv and <out>.json; <out> defaults to
<workdir_root>/subspace_table. Options: redundancy_jax.analyses.subspace_table.SubspaceTableConfig.
"""

from experiments import cli
from redundancy_jax.analyses import subspace_table


def main(config: subspace_table.SubspaceTableConfig) -> list:
  return subspace_table.run_table(config)


if __name__ == "__main__":
  cli.run(main, subspace_table.SubspaceTableConfig)
