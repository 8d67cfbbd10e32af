"""Figures of the report: one module per experiment (pruning, spectral, dynamics)."""
