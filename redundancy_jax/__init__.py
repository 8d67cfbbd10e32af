"""redundancy_jax: where the redundancy in a trained network sits, and what removing it costs."""
