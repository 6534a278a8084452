"""Subcommand groups of the ``cellweave`` command line, one module per area.

Each module has ``register(sub, model_help)``; :func:`cellweave.cli.build_parser` calls them in
the order of :data:`GROUPS`.
"""

GROUPS = ("adapt", "multimodal", "perturb", "genes", "datasets", "prepare")


def command_line(args) -> str:
    """The command as the user typed it (``cellweave ...``), for model cards and records; from the
    argument list :func:`cellweave.cli.main` parsed, which is not ``sys.argv`` when called from Python."""
    import shlex
    import sys

    argv = getattr(args, "argv", None)
    return "cellweave " + shlex.join(sys.argv[1:] if argv is None else argv)
