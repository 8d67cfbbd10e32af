"""Rebuilds the report's evidence from one command, as one offline page.

  python -m experiments.reproduce [--profile=quick|full] [--dataset=auto|bundled|mnist|fashion_mnist|cifar10]
      [--stages=all|report|related|lenet,conv2,...|conv2.prune,...] [--seeds=10|lenet=10,conv2=1]
      [--workdir=runs/report]

Runs the stages in order, each once: a stage that finished with the same configuration is reused, a
training run continues from its last checkpoint, so a killed run continues where it stopped; a stage
finished with another configuration is an error (use another --workdir). Then writes <workdir>/index.html
(one offline page, opened straight from disk), report.md and claims.json from every finished stage in
the workdir: Figures 1-8 as numbered in the report, the claims with computed verdicts, the related work
and provenance. Options: redundancy_jax.reproduction.profiles.ReproduceConfig.
"""

import sys

from experiments import cli
from redundancy_jax.reproduction import profiles, stages


def main(config: profiles.ReproduceConfig) -> str:
  return stages.run(config, argv=sys.argv)


if __name__ == "__main__":
  cli.run(main, profiles.ReproduceConfig)
