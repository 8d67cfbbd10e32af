"""redundancy_jax: where the redundancy in a trained network sits, and what removing it costs.

Folders: `core/` (configuration, data, training, run folders, the evaluation engine), `models/`,
`analyses/` (pruning, dynamics, spectra and subspaces), `related/` (the related work the report builds
on), `reproduction/` (the report rebuilt as one page), `plots/`. Definitions: docs/DEFINITIONS.md.
"""

# Where the project is published (its public git address), written once: empty while it is not. The
# notebook's install cell installs from it (`python -m redundancy_jax.core.notebooks` writes it in), and
# README.md shows the Open in Colab badge for it only once it is set (tests/test_notebooks.py checks both).
REPOSITORY = ""

from redundancy_jax.core.allocator import configure_allocator as _configure_allocator

_configure_allocator()  # before JAX starts its threads: freed buffers reused in place (core/allocator.py)

from redundancy_jax.models.conv import configure_xla_cpu as _configure_xla_cpu

_configure_xla_cpu()  # before JAX starts: XLA:CPU's Eigen convolutions (redundancy_jax/models/conv.py)
