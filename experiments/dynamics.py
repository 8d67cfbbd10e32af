r"""Training dynamics of one layer as a time-varying graph (report section 3.2, Figures 3-5).

  python -m experiments.dynamics --model=lenet --layer=fc1 [--workdir=runs/lenet] \
      [--sigma=1.0] [--threshold=0.41] [--compare_workdir=runs/other] [--weighted] [--every=1]

Uses the per-epoch parameter snapshots of the training run in --workdir (training it first when there is
none). Writes into --outdir (default <workdir>/dynamics_<layer>): frames/epoch_XXXXX.png,
init_vs_converged.png/.pdf (Figure 3; with --compare_workdir one row per run, Figure 5), dynamics.gif
(and .mp4 when imageio-ffmpeg is installed), dynamics.html (the interactive offline page) and
dynamics.json. Options: redundancy_jax.analyses.dynamics_run.DynamicsRunConfig.
"""

from experiments import cli
from redundancy_jax.analyses import dynamics_run


def main(config: dynamics_run.DynamicsRunConfig) -> dict:
  return dynamics_run.run(config)


if __name__ == "__main__":
  cli.run(main, dynamics_run.DynamicsRunConfig)
