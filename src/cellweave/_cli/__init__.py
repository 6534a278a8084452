"""Verbs of the ``cellweave`` command line, one module per area.

Each verb has ``add_<verb>(parser, model_help)``, which adds its arguments, and ``cmd_<verb>(args)``;
:data:`cellweave.cli.VERBS` names them, and :func:`cellweave.cli.build_parser` registers them in the
table's order. The grammar every verb follows is :mod:`cellweave._cli._grammar`.
"""


def command_line(args) -> str:
    """The command as the user typed it (``cellweave ...``), for model cards and records; from the
    argument list :func:`cellweave.cli.main` parsed, which is not ``sys.argv`` when called from Python."""
    import shlex
    import sys

    argv = getattr(args, "argv", None)
    return "cellweave " + shlex.join(sys.argv[1:] if argv is None else argv)
