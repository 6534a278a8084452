"""``cellweave gene-map``: the model's gene embedding table as an AnnData with UMAP and Leiden
programs, and a .png of the map.

Listed in :data:`cellweave.cli.VERBS`; ``cellweave genes``, its name before, still runs it with a
warning until 0.3; the work is :func:`cellweave.tl.gene_map`.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from cellweave._cli._common import write_tsv
from cellweave._exceptions import CellWeaveInputError

logger = logging.getLogger("cellweave")


def cmd_gene_map(args: argparse.Namespace) -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from cellweave import io, tl
    from cellweave._io_utils import atomic_path
    from cellweave.models import CellWeave

    out = Path(args.out)
    if out.suffix != ".h5ad":
        raise CellWeaveInputError(f"--out {out}: the gene map is an AnnData; give a path ending in .h5ad.")
    model = CellWeave.load(args.model)
    gmap = tl.gene_map(model=model, organism=args.organism, n_neighbors=args.n_neighbors,
                       resolution=args.resolution, seed=args.seed)
    io.write(gmap, out)
    logger.info("Wrote %s (%d genes x %d dims, %d programs)", out, gmap.n_obs, gmap.n_vars,
                gmap.obs["program"].nunique())
    sets = tl.gene_sets("program", universe=gmap.obs_names)
    fig, ax = plt.subplots(figsize=(7, 6))
    U = gmap.obsm["X_umap"]
    ax.scatter(U[:, 0], U[:, 1], s=1, c="#d0d0d0", rasterized=True, label="all genes")
    for name, genes in sets.items():
        m = gmap.obs_names.isin(genes)
        if m.sum() >= 3:
            ax.scatter(U[m, 0], U[m, 1], s=8, label=f"{name} ({int(m.sum())})")
    ax.set_title(f"Gene map of {model.name}: {gmap.n_obs} genes")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.legend(fontsize=7, markerscale=3)
    png = out.with_suffix(".png")
    with atomic_path(png) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    plt.close(fig)
    logger.info("Wrote %s", png)
    if args.programs_tsv:
        df = gmap.obs[["gene_id", "program"]].rename_axis("gene").reset_index()
        write_tsv(df, args.programs_tsv)
    return 0


def add_gene_map(sp: argparse.ArgumentParser, model_help: str) -> None:  # noqa: ARG001 - same signature as the others
    """Arguments of ``cellweave gene-map`` (no INPUT: the model's own gene table)."""
    sp.add_argument("--model", default=None,
                    help="model folder or shipped model name (default: the shipped gene model cellweave-tiny-genes, "
                    "whose gene tables were learned; the default model's are fixed random codes)")
    sp.add_argument("--out", required=True, help="output .h5ad (genes x dims); a .png UMAP is written beside it")
    sp.add_argument("--organism", default="human", choices=["human", "mouse"])
    sp.add_argument("--n-neighbors", type=int, default=15)
    sp.add_argument("--resolution", type=float, default=1.0, help="Leiden resolution of the gene programs")
    sp.add_argument("--programs-tsv", default=None, help="also write gene -> program as a .tsv")
    sp.add_argument("--seed", type=int, default=0)
