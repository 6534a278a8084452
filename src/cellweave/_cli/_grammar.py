"""The command line's grammar, shared by every verb.

* The main input is the positional ``INPUT`` (:func:`add_input`); ``--out`` is the output,
  ``--model`` the base model, ``--reference`` a labelled reference and nothing else.
* Group keys are ``--groupby`` (scanpy's spelling); ``--max-epochs``/``--max-steps`` cap the verb's
  own training, ``--adapt-epochs``/``--adapt-max-steps`` the ``--adapt`` step before it; ``--n-*``
  are counts (cells, neighbours, integration steps), not training budgets.
* Lists are space-separated (:class:`ListArgument`); a comma-separated value is split too, as
  older releases took ``--genes STAT1,IRF1``.
* Flags renamed after 0.1.0 stay for one release as hidden aliases (:func:`add_renamed`) that log a
  warning naming the new spelling; :func:`resolve_renamed` applies them after parsing.
"""

from __future__ import annotations

import argparse
import logging

logger = logging.getLogger("cellweave")

#: The release after which the renamed flags (:func:`add_renamed`) are removed.
RENAMED_UNTIL = "0.3"


class ListArgument(argparse.Action):
    """``nargs="+"`` that also splits comma-separated values (``--genes A B`` == ``--genes A,B``).

    ``item_type`` converts each item and ``choices`` checks it after the split (argparse would
    check the unsplit ``"a,b"``); the help shows the choices as argparse does.
    """

    def __init__(self, option_strings, dest, *, item_type=str, choices=None, metavar=None, **kwargs):
        kwargs.setdefault("nargs", "+")
        self.item_type = item_type
        self.valid = list(choices) if choices is not None else None
        if metavar is None and self.valid is not None:
            metavar = "{" + ",".join(map(str, self.valid)) + "}"
        super().__init__(option_strings, dest, metavar=metavar, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        items = []
        for value in values if isinstance(values, list) else [values]:
            for part in str(value).split(","):
                part = part.strip()
                if not part:
                    continue
                try:
                    item = self.item_type(part)
                except ValueError:
                    raise argparse.ArgumentError(self, f"invalid value: {part!r}") from None
                if self.valid is not None and item not in self.valid:
                    raise argparse.ArgumentError(
                        self, f"invalid choice: {part!r} (choose from {', '.join(map(str, self.valid))})")
                items.append(item)
        if not items:
            raise argparse.ArgumentError(self, "expected at least one value")
        setattr(namespace, self.dest, items)


class _Renamed(argparse.Action):
    """A hidden old flag: records its value; :func:`resolve_renamed` moves it to the new one."""

    def __init__(self, option_strings, dest, *, new: str, target: str, **kwargs):
        self.new, self.target = new, target
        super().__init__(option_strings, dest, help=argparse.SUPPRESS, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        if isinstance(values, list):
            values = [part.strip() for v in values for part in str(v).split(",") if part.strip()]
        renamed = list(getattr(namespace, "_renamed", []))
        renamed.append((option_string, self, values))
        setattr(namespace, "_renamed", renamed)


def add_renamed(sp: argparse.ArgumentParser, old: str, *, target: str, new: str, **kwargs) -> None:
    """Accept ``old`` (hidden from ``--help``) for the argument stored in ``target``, spelled ``new``
    now; ``kwargs`` as the old flag took them (``nargs``, ``type``)."""
    sp.add_argument(old, dest=f"_renamed_{old.lstrip('-').replace('-', '_')}", action=_Renamed, new=new,
                    target=target, **kwargs)


def add_input(sp: argparse.ArgumentParser, help: str, *, nargs: str | None = None,  # noqa: A002 - argparse's name
              required: bool = True) -> None:
    """The verb's main input, the positional ``INPUT`` (``nargs="+"``: several files). Where an old
    flag may stand for it, argparse must not require it; :func:`resolve_renamed` does."""
    many = nargs == "+"
    sp.add_argument("input", metavar="INPUT", nargs="*" if many else "?", default=[] if many else None,
                    help=help)
    sp.set_defaults(_input_required=required)


def resolve_renamed(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """Apply the old flags given (each logs a warning naming its new spelling) and require
    ``INPUT`` where the verb needs one. ``parser`` is the verb's; a usage error exits as argparse does."""
    from cellweave._exceptions import CellWeaveInputError

    for option, action, values in getattr(args, "_renamed", []):
        current = getattr(args, action.target, None)
        if current not in (None, [], parser.get_default(action.target)) and current != values:
            raise CellWeaveInputError(f"{option} is the old name of {action.new}; give one of them, not both.")
        setattr(args, action.target, values)
        logger.warning("cellweave %s: %s is deprecated and goes in %s; write %s instead.", args.command, option,
                       RENAMED_UNTIL, action.new)
    if hasattr(args, "_renamed"):
        del args._renamed
    if getattr(args, "_input_required", False) and args.input in (None, []):
        parser.error("the following arguments are required: INPUT")
    if hasattr(args, "_input_required"):
        del args._input_required
