"""Transcription-factor lists (pySCENIC resources), used by gene-regulatory-network tasks."""

from __future__ import annotations

from cellweave._exceptions import CellWeaveInputError

from . import _tables
from ._ids import canonical_organism

#: Default pySCENIC list per organism.
DEFAULT_TF_LIST = {"human": "hs_hgnc_tfs", "mouse": "mm_mgi_tfs", "fly": "allTFs_dmel"}


def tf_list(organism: str = "human", *, source: str | None = None) -> list[str]:
    """Transcription-factor symbols of ``organism``.

    Parameters
    ----------
    organism
        ``"human"``, ``"mouse"`` or ``"fly"``.
    source
        A pySCENIC list name (``hs_hgnc_tfs``, ``hs_hgnc_curated_tfs``, ``lambert2018``,
        ``mm_mgi_tfs``, ``allTFs_dmel``); default: the organism's full list.

    Returns
    -------
    Unique symbols in the list's order.
    """
    org = canonical_organism(organism)
    if org in ("drosophila", "drosophila melanogaster", "dmel"):
        org = "fly"
    table = _tables.read_table(_tables.TF_LISTS)
    name = source or DEFAULT_TF_LIST.get(org or "")
    if name is None or name not in set(table["list_name"]):
        raise CellWeaveInputError(
            f"No TF list for organism={organism!r}, source={source!r}; organisms: "
            f"{sorted(DEFAULT_TF_LIST)}, sources: {sorted(set(table['list_name']))}."
        )
    symbols = table.loc[table["list_name"] == name, "gene_symbol"]
    return list(dict.fromkeys(s for s in symbols if s))
