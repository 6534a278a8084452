"""``cellweave`` subcommands of this area; registered by :mod:`cellweave.cli`."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction, model_help: str) -> None:
    """Add this area's subcommands to the cellweave parser (none yet)."""
