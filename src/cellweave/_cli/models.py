"""``cellweave models``: list the shipped models (listed in :data:`cellweave.cli.VERBS`)."""

from __future__ import annotations

import argparse
import sys


def cmd_models(args: argparse.Namespace) -> int:
    from cellweave.models import DEFAULT_GENE_MODEL, DEFAULT_MODEL, CellWeave, available_models

    roles = {DEFAULT_MODEL: "default", DEFAULT_GENE_MODEL: "default of grn and gene-map"}
    for name in available_models():
        sys.stdout.write(f"{name}\t{roles.get(name, '-')}\t{CellWeave.load(name)!r}\n")
    return 0


def add_models(sp: argparse.ArgumentParser, model_help: str) -> None:  # noqa: ARG001 - same signature as the others
    """``cellweave models`` takes no arguments."""
