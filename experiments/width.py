r"""Width and distance to initialisation (Neyshabur et al. 2019; report section 2).

  python -m experiments.width [--quick] [--widths=8,16,...,8192] [--dataset=fashion_mnist] \
      [--target_loss=0.01] [--max_steps=100000] [--num_seeds=3] [--workdir=runs/width]

One-hidden-layer ReLU networks of each width h trained to a training-loss target (a finished width is
reused, an interrupted one resumes); per width: test error, per-unit distance to initialisation,
||U - U0||_F, units removable at 1 point, the elbow k. Writes results.json and figure.png/.pdf.
Options: redundancy_jax.related.width.WidthConfig.
"""

from experiments import cli
from redundancy_jax.related import width


def main(config: width.WidthConfig) -> dict:
  return width.run(config)


if __name__ == "__main__":
  cli.run(main, width.WidthConfig)
