"""The ``cellweave`` command line: one table of verbs (:data:`VERBS`), one grammar (:mod:`cellweave._cli._grammar`)."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger("cellweave")


def _setup_logging(verbose: int) -> None:
    level = logging.WARNING if verbose < 0 else logging.INFO if verbose == 0 else logging.DEBUG
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for noisy in ("lightning", "lightning.pytorch", "lightning.fabric", "lightning.pytorch.utilities.rank_zero",
                  "lightning.fabric.utilities.rank_zero"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


@dataclass(frozen=True)
class Verb:
    """One ``cellweave`` verb: its name, the area ``cellweave --help`` lists it under and its one-line
    help. Its functions are ``add_<verb>`` (adds its arguments) and ``cmd_<verb>`` (runs it) in
    ``cellweave._cli.<module>`` (``<verb>`` with ``-`` as ``_``; ``module`` defaults to that too),
    looked up when the parser is built (so the modules of verbs not run are imported only for their
    arguments, and a test may replace a command). ``old_names`` still run the verb, with a warning
    naming it, until :data:`~cellweave._cli._grammar.RENAMED_UNTIL`; ``cellweave --help`` does not
    list them."""

    name: str
    area: str
    help: str
    module: str = ""
    old_names: tuple[str, ...] = ()

    @property
    def _stem(self) -> str:
        return self.name.replace("-", "_")

    @property
    def add_arguments(self) -> str:
        """``"module:add_<verb>"``."""
        return f"{self.module or self._stem}:add_{self._stem}"

    @property
    def command(self) -> str:
        """``"module:cmd_<verb>"``."""
        return f"{self.module or self._stem}:cmd_{self._stem}"


#: Every verb, in the order ``cellweave --help`` lists them; :func:`build_parser` registers these only.
VERBS: tuple[Verb, ...] = (
    Verb("embed", "Cells", "embed cells: writes obsm['X_cellweave'] and uns['cellweave']"),
    Verb("annotate", "Cells", "transfer labels from a reference: writes obs['cellweave_prediction'] etc."),
    Verb("map-query", "Cells", "map query cells onto a labelled reference (the reference is not modified)"),
    Verb("integrate", "Cells", "batch-corrected embedding: writes obsm['X_cellweave_integrated']"),
    Verb("adapt", "Cells", "adapt a pretrained model to your cells without labels; writes a model folder"),
    Verb("impute", "Modalities", "predict a missing modality (protein, ATAC, RNA) of every cell from the measured ones"),
    Verb("perturb", "Perturbation", "zero-shot in silico knock-out / over-expression with the pretrained model"),
    Verb("finetune-perturb", "Perturbation", "fine-tune a perturbation-response head on a screen or conditions",
         module="perturb"),
    Verb("predict-perturb", "Perturbation", "predict control cells' expression after a perturbation",
         module="perturb"),
    Verb("grn", "Genes", "gene regulatory network from the model: edge table (source, target, score, group)"),
    Verb("markers", "Genes", "marker genes per group by attribution through the model"),
    Verb("gene-map", "Genes", "the model's gene embedding table as an AnnData with UMAP and Leiden programs",
         old_names=("genes",)),
    Verb("pretrain", "Models & data", "pretrain a model on .h5ad/.h5mu files, a token store or a SOMA experiment"),
    Verb("prepare", "Models & data",
         "turn .h5ad/.h5mu/10x files into a sharded, memory-mapped token store (bounded memory)"),
    Verb("models", "Models & data", "list the shipped models"),
    Verb("datasets", "Models & data", "registered public datasets: list, info, fetch (mirror, cache or download)"),
    Verb("benchmark", "Evaluation", "run cellweave and the baselines on the same splits; results.json + report.html"),
    Verb("demo", "Evaluation", "embed every available registered dataset and write an HTML report"),
)


def _resolve(ref: str) -> Callable:
    """A function the table names: ``"module:function"`` of ``cellweave._cli``."""
    import importlib

    module, _, name = ref.partition(":")
    return getattr(importlib.import_module(f"cellweave._cli.{module}"), name)


class _Verbs(argparse._SubParsersAction):
    """The verbs' subparsers. An old verb name (:attr:`Verb.old_names`, registered as a hidden alias)
    logs a warning naming the new one, also before ``--help``, and runs as the new name: ``args.command``
    is always a name of :data:`VERBS`."""

    def __call__(self, parser, namespace, values, option_string=None):
        from cellweave._cli._grammar import RENAMED_UNTIL

        new = next((v.name for v in VERBS if values[0] in v.old_names), None)
        if new is not None:
            logger.warning("cellweave %s is deprecated and goes in %s; write cellweave %s instead.", values[0],
                           RENAMED_UNTIL, new)
            values = [new, *values[1:]]
        super().__call__(parser, namespace, values, option_string)


def _verbs_by_area() -> str:
    """The verbs grouped by area, for ``cellweave --help`` (argparse's own list of choices cannot group)."""
    import textwrap

    width = max(len(v.name) for v in VERBS) + 2
    lines = ["verbs (`cellweave VERB --help` for each):"]
    for area in dict.fromkeys(v.area for v in VERBS):
        lines.append(f"  {area}:")
        for v in (v for v in VERBS if v.area == area):
            text = textwrap.wrap(v.help, 110 - 4 - width) or [""]
            lines.append(f"    {v.name:<{width}}{text[0]}")
            lines.extend(" " * (4 + width) + more for more in text[1:])
    return "\n".join(lines)


_GRAMMAR = """\
grammar: INPUT (positional) is the cells a verb reads; --out is what it writes; --model the base model;
--reference a labelled reference; --groupby an obs column of groups; --max-epochs / --max-steps cap the
verb's own training (--adapt-epochs / --adapt-max-steps the --adapt step before it); lists are
space-separated (commas also work). Old flag names still work until 0.3, with a warning (README: Changed
flag names)."""


def build_parser() -> argparse.ArgumentParser:
    from cellweave import __version__

    p = argparse.ArgumentParser(prog="cellweave", description="Multimodal single-cell foundation models.\n\n"
                                + _verbs_by_area(), epilog=_GRAMMAR,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"cellweave {__version__}")
    _add_global_options(p, default=True)
    sub = p.add_subparsers(dest="command", required=True, metavar="VERB", help="one of the verbs above", action=_Verbs)

    model_help = "model folder or shipped model name (default: the shipped default model)"
    for verb in VERBS:
        # No help= here: argparse would list the verbs again, ungrouped; the description above lists them.
        # The old names are aliases: argparse accepts them, and lists them nowhere without help=.
        sp = sub.add_parser(verb.name, description=verb.help, aliases=list(verb.old_names))
        _resolve(verb.add_arguments)(sp, model_help)
        sp.set_defaults(func=_resolve(verb.command))
        _add_global_options(sp, default=False)  # -q / -v / --debug work after the verb too
        _show_defaults(sp)
        _usage_with_input_first(sp)
    return p


def _usage_with_input_first(sp: argparse.ArgumentParser) -> None:
    """Show ``INPUT`` first in the verb's usage line, as it is written, and without brackets where the
    verb needs it (argparse must take it as optional, for the old flag that may stand for it)."""
    action = next((a for a in sp._actions if a.dest == "input" and not a.option_strings), None)
    if action is None:
        return
    shown = "INPUT [INPUT ...]" if action.nargs == "*" else "INPUT"
    if not sp.get_default("_input_required"):
        shown = f"[{shown}]"
    sp._actions.remove(action)
    try:
        usage = sp.format_usage().strip().removeprefix("usage: ")
    finally:
        sp._actions.append(action)
    sp.usage = usage.replace(sp.prog, f"{sp.prog} {shown}", 1).replace("%", "%%")




def _default_text(value) -> str:
    if isinstance(value, (list, tuple)):
        return " ".join(map(str, value))
    return str(value)


def _show_defaults(parser: argparse.ArgumentParser) -> None:
    """Append ``(default: ...)`` to the help of every option that takes a value and has a default,
    unless its help already says what the default is (many explain it in words: "default: the
    preset's"). Flags (``store_true``, ``--x/--no-x``, counts) and ``None`` defaults are left alone:
    "(default: False)" or "(default: None)" tells a reader nothing. Done here, once, so every verb
    (those in ``cellweave._cli`` too) shows its defaults in ``--help``."""
    for action in parser._actions:
        if not action.option_strings or action.nargs == 0 or action.help == argparse.SUPPRESS:
            continue
        if action.default is None or action.default is argparse.SUPPRESS:
            continue
        if action.help and "default" in action.help.lower():
            continue
        shown = "(default: " + _default_text(action.default).replace("%", "%%") + ")"
        action.help = f"{action.help} {shown}" if action.help else shown


def _add_global_options(parser: argparse.ArgumentParser, *, default: bool) -> None:
    """``-v``, ``-q`` and ``--debug`` on the main parser (with defaults) and on every verb
    (without, so that a flag given before the verb is not reset by the verb's parser)."""
    suppress = {} if default else {"default": argparse.SUPPRESS}
    parser.add_argument("-v", "--verbose", action="count", help="more log output",
                        **({"default": 0} if default else suppress))
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only",
                        **({"default": False} if default else suppress))
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error",
                        **({"default": False} if default else suppress))
    parser.add_argument("--overwrite", action="store_true", help="replace output files that already exist",
                        **({"default": False} if default else suppress))


#: Attributes of the parsed arguments that name files or folders a command writes.
OUTPUT_ARGS = ("out", "out_h5ad", "programs_tsv")
_DATA = (".h5ad", ".h5mu")
#: (verb, attribute) -> suffixes a file output may have; outputs not listed are folders.
OUTPUT_SUFFIXES = {
    **{(verb, "out"): _DATA for verb in ("embed", "annotate", "integrate", "map-query", "impute", "perturb",
                                        "predict-perturb")},
    ("grn", "out"): (".tsv", ".txt"), ("markers", "out"): (".tsv", ".txt"), ("gene-map", "out"): (".h5ad",),
    ("grn", "out_h5ad"): _DATA, ("markers", "out_h5ad"): _DATA, ("gene-map", "programs_tsv"): (".tsv", ".txt"),
}


def _check_outputs(args: argparse.Namespace) -> None:
    """Refuse an output path before any work starts: the nearest existing folder above it must be
    writable (a path whose parent is an existing file is refused), a file output must have a suffix
    the command writes, and an existing file is replaced only with ``--overwrite``; a folder output
    must not be an existing file."""
    import os

    from cellweave._exceptions import CellWeaveInputError

    for attr in OUTPUT_ARGS:
        value = getattr(args, attr, None)
        if not value:
            continue
        path = Path(value).expanduser().absolute()
        flag = "--" + attr.replace("_", "-")
        suffixes = OUTPUT_SUFFIXES.get((args.command, attr))
        if suffixes is not None:
            if path.is_dir():
                raise CellWeaveInputError(f"{flag} {value} is a folder; give a file name ending in {suffixes[0]}.")
            if path.suffix.lower() not in suffixes:
                raise CellWeaveInputError(
                    f"{flag} {value}: cellweave {args.command} writes {' or '.join(suffixes)} files, not "
                    f"{path.suffix or 'a path without suffix'!r}. Use {path.with_suffix(suffixes[0]).name!r}.")
            if path.exists() and not getattr(args, "overwrite", False):
                raise CellWeaveInputError(
                    f"{flag} {value} exists; add --overwrite to replace it, or choose another name.")
        elif path.is_file():
            raise CellWeaveInputError(f"{flag} {value} is a file, but cellweave {args.command} writes a folder there. "
                                      "Choose a folder path.")
        ancestor = path.parent
        while not ancestor.exists() and ancestor != ancestor.parent:
            ancestor = ancestor.parent
        if not ancestor.is_dir():
            raise CellWeaveInputError(f"{flag} {value}: {ancestor} is a file, not a folder. Choose another path.")
        if not os.access(ancestor, os.W_OK | os.X_OK):
            raise CellWeaveInputError(
                f"{flag} {value}: the folder {ancestor} is not writable. Choose a path you can write to.")


def _verbosity(argv: list[str]) -> int:
    """The verbosity ``-q`` / ``-v`` ask for (as :func:`_setup_logging` takes it), read from the
    command line before the verbs are parsed: they may be given before or after the verb."""
    flags = argparse.ArgumentParser(add_help=False, allow_abbrev=False, exit_on_error=False)
    _add_global_options(flags, default=True)
    try:
        known, _ = flags.parse_known_args(argv)
    except argparse.ArgumentError:  # e.g. --debug=1: the verb's parser says what is wrong
        return 0
    return -1 if known.quiet else known.verbose


def _verb_parser(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[name]


def main(argv: list[str] | None = None) -> int:
    from cellweave._exceptions import CellWeaveInputError, CellWeaveModelError

    from cellweave._cli._grammar import resolve_renamed
    from cellweave._system import keep_torch_threads

    argv = list(sys.argv[1:] if argv is None else argv)
    _setup_logging(_verbosity(argv))  # before parsing: the parser may warn (an old verb name, even with --help)
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = argv
    try:
        resolve_renamed(args, _verb_parser(parser, args.command))
        _check_outputs(args)
        keep_torch_threads()  # before any verb's scanpy call can reset torch's thread limit
        return int(args.func(args) or 0)
    except (CellWeaveInputError, CellWeaveModelError, FileExistsError) as err:
        # Bad input is the user's to fix: one clear line, no traceback (unless --debug).
        if args.debug:
            raise
        sys.stderr.write(f"cellweave {args.command}: error: {err}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write(f"cellweave {args.command}: interrupted\n")
        return 130
    except Exception as err:  # noqa: BLE001 - the command line's last resort; --debug shows it all
        if args.debug:
            raise
        sys.stderr.write(
            f"cellweave {args.command}: error: {type(err).__name__}: {err}. This input or situation is not "
            "handled with a clearer message yet; rerun with --debug for the traceback, and report it.\n"
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
