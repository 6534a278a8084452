"""Benchmark tasks, one module each; see :mod:`cellweave.bench._runner` for the interface."""
