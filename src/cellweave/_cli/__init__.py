"""Subcommand groups of the ``cellweave`` command line, one module per area.

Each module has ``register(sub, model_help)``; :func:`cellweave.cli.build_parser` calls them in
the order of :data:`GROUPS`.
"""

GROUPS = ("adapt", "multimodal", "perturb", "genes", "datasets")
