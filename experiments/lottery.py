r"""Lottery tickets by iterative magnitude pruning (Frankle and Carbin 2019; report section 2).

  python -m experiments.lottery [--quick] [--model=lenet] [--dataset=fashion_mnist] [--steps=N] \
      [--rounds=15] [--rewind=0] [--num_seeds=3] [--width=1] [--workdir=runs/lottery/<model>]

Round 0 trains the dense network; each later round prunes the smallest surviving weights per layer,
resets the survivors (or rewinds them to iteration --rewind) and trains the ticket with its two controls
(the same mask re-initialised, a random mask of the same sparsity) as replicas of one program. Every
round is a resumable training run in <workdir>/round_XX. Writes results.json (weights remaining, test
accuracy and early-stop iteration per arm, the headline's verdict) and figure.png/.pdf. Options:
redundancy_jax.related.lottery.LotteryConfig.
"""

from experiments import cli
from redundancy_jax.related import lottery


def main(config: lottery.LotteryConfig) -> dict:
  return lottery.run(config)


if __name__ == "__main__":
  cli.run(main, lottery.LotteryConfig)
