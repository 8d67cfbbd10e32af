"""redundancy_jax: where the redundancy in a trained network sits, and what removing it costs.

Folders: `core/` (configuration, data, training, run folders, the evaluation engine), `models/`,
`analyses/` (pruning, dynamics, spectra and subspaces), `related/` (the related work the report builds
on), `reproduction/` (the report rebuilt as one page), `plots/`. Definitions: docs/DEFINITIONS.md.
"""

# Where the project is published: the Colab badge (README.md) and the notebook's install cell name it
# (`python -m redundancy_jax.core.notebooks` writes it into the notebook; a test checks both).
REPOSITORY = "https://github.com/redundancy-jax/redundancy_jax"

from redundancy_jax.models.conv import configure_xla_cpu as _configure_xla_cpu

_configure_xla_cpu()  # before JAX starts: XLA:CPU's Eigen convolutions (redundancy_jax/models/conv.py)
