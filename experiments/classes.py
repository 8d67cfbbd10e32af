"""The report's open question (section 3.3): does a trained layer's spectrum follow the number of classes?

  python -m experiments.classes [--model=lenet] [--counts=2,3,4,5,6,8,10] [--seeds_per_count=3] [--quick]

Trains --seeds_per_count replicas per number of classes C on random C-class subsets (one vmapped run of
10-output classifiers with the absent classes masked; Fashion-MNIST when installed), resumably, in
--workdir (default runs/classes_<model>); then writes <workdir>/classes/results.json, table.md and
figure.png/.pdf: per layer, outliers above lambda+ and the Tracy-Widom margin, elbows of W and W - W0
against C, trained and at initialisation, the accuracy of rank-k replacements at k = C-1, C, C+1, 2C and
the elbow, and the verdicts. Options: redundancy_jax.analyses.classes.ClassesConfig.
"""

import os

from experiments import cli
from redundancy_jax.analyses import classes


def main(config: classes.ClassesConfig) -> dict:
  from redundancy_jax.plots import classes as plots, save  # matplotlib: only where a figure is drawn

  results = classes.run(config)
  paths = save(plots.figure(results), os.path.join(classes.run_folder(config).path("classes"), "figure"))
  print(f"wrote {', '.join(paths)}")
  return results


if __name__ == "__main__":
  cli.run(main, classes.ClassesConfig)
