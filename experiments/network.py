"""Every analysis of one network, your own Flax model included, on one page.

  python -m experiments.network --model=path/to/my_models.py:resnet --dataset=fashion_mnist
      [--variables=PATH] [--workdir=runs/my_models_resnet] [--quick]

--model is a registered model (lenet, conv2, conv4, conv6, vgg19, mlp) or FILE.py:FACTORY /
MODULE:FACTORY, a callable factory(num_classes) returning a flax.linen or flax.nnx Module (README,
"Your own network"). Trains it first (Adam 1e-3, 10,000 steps of 64 unless the flags say otherwise) or
loads --variables, then sweeps every prunable layer by every criterion and analyses every Dense and Conv
layer's spectrum. Writes into the workdir prune_sweep/ and subspace/all/ (as those commands do),
network.json, index.html and report.md. Options: redundancy_jax.analyses.network.NetworkConfig.
"""

from experiments import cli
from redundancy_jax.analyses import network


def main(config: network.NetworkConfig) -> dict:
  return network.run(config)


if __name__ == "__main__":
  cli.run(main, network.NetworkConfig)
