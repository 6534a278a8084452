"""``cellweave`` subcommands of this area (gene-level knowledge): ``grn``, ``markers``, ``genes``.

Listed in :data:`cellweave.cli.VERBS`.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from cellweave._exceptions import CellWeaveInputError

logger = logging.getLogger("cellweave")


def _read_regulators(path: str | None):
    if path is None or path == "all":
        return path
    p = Path(path)
    if not p.is_file():
        raise CellWeaveInputError(f"--regulators {path}: no such file. Give a text file with one gene symbol per "
                                  "line, or 'all'.")
    names = [line.split("\t")[0].strip() for line in p.read_text().splitlines()]
    names = [n for n in names if n and not n.startswith("#")]
    if not names:
        raise CellWeaveInputError(f"--regulators {path} holds no gene symbols (one per line expected).")
    return names


def _input_rna(path: str, use_raw: bool):
    from cellweave import io
    from cellweave.io import detect_x_kind
    from cellweave.tl import rna_adata

    data = io.read(path)
    rna = rna_adata(data)
    if not use_raw and rna.raw is not None and detect_x_kind(rna.X) == "scaled":
        raise CellWeaveInputError(f"{path}: X holds scaled values, which the model cannot read; add --use-raw to "
                                  "use .raw (log-normalized or counts) instead.")
    if use_raw:
        if rna.raw is None:
            raise CellWeaveInputError(f"{path} has no .raw; drop --use-raw.")
        raw = rna.raw.to_adata()
        raw.obs = rna.obs.copy()
        return raw
    return rna


def _write_tsv(df, path: str) -> None:
    from cellweave._io_utils import atomic_write_text

    atomic_write_text(path, df.to_csv(sep="\t", index=False))
    logger.info("Wrote %s (%d rows)", path, len(df))


def cmd_grn(args: argparse.Namespace) -> int:
    from cellweave import io, tl
    from cellweave.models import CellWeave

    adata = _input_rna(args.input, args.use_raw)
    model = CellWeave.load(args.model)
    tl.grn(adata, model=model, method=args.method, groupby=args.groupby, regulators=_read_regulators(args.regulators),
           n_cells=args.n_cells, n_top_targets=args.n_top_targets, layer=args.layer, organism=args.organism,
           seed=args.seed)
    _write_tsv(adata.uns["cellweave_grn"]["edges"], args.out)
    if args.out_h5ad:
        io.write(adata, args.out_h5ad)
        logger.info("Wrote %s (varp: %s)", args.out_h5ad, ", ".join(adata.varp.keys()))
    return 0


def cmd_markers(args: argparse.Namespace) -> int:
    from cellweave import io, tl
    from cellweave.models import CellWeave

    adata = _input_rna(args.input, args.use_raw)
    model = CellWeave.load(args.model)
    tl.markers(adata, groupby=args.groupby, model=model, method=args.method, n_cells_per_group=args.n_cells,
               n_steps=args.n_steps, layer=args.layer, organism=args.organism, seed=args.seed)
    df = tl.markers_frame(adata)
    if args.n_top:
        df = df[df["rank"] <= args.n_top]
    _write_tsv(df, args.out)
    for group, sub in df.groupby("group", sort=False):
        logger.info("%s: %s", group, ", ".join(sub["gene"].head(5)))
    if args.out_h5ad:
        io.write(adata, args.out_h5ad)
        logger.info("Wrote %s (uns['cellweave_markers'])", args.out_h5ad)
    return 0


def cmd_genes(args: argparse.Namespace) -> int:
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
        _write_tsv(df, args.programs_tsv)
    return 0


def add_grn(sp: argparse.ArgumentParser, model_help: str) -> None:
    """Arguments of ``cellweave grn``."""
    from cellweave._cli._grammar import add_input

    add_input(sp, ".h5ad / .h5mu (RNA counts or log-normalized)")
    sp.add_argument("--model", default=None, help=model_help)
    sp.add_argument("--out", required=True, help="edge table (.tsv)")
    sp.add_argument("--out-h5ad", default=None, help="also write the data with varp['cellweave_grn...'] here")
    sp.add_argument("--method", default="embedding", choices=["embedding", "attention", "perturbation", "combined"],
                    help="how edges are scored (default: embedding, the best on the Papalexi knock-outs)")
    sp.add_argument("--groupby", default=None, help="obs column: one network per group")
    sp.add_argument("--regulators", default=None,
                    help="text file with one regulator symbol per line, or 'all' (default: the organism's pySCENIC TF list)")
    sp.add_argument("--n-cells", type=int, default=500, help="cells per group for attention/perturbation")
    sp.add_argument("--n-top-targets", type=int, default=50, help="edges per regulator in the table")
    sp.add_argument("--layer", default=None, help="layer holding raw counts (default: X)")
    sp.add_argument("--use-raw", action="store_true", help="use .raw (e.g. when X is scaled)")
    sp.add_argument("--organism", default=None, choices=["human", "mouse"], help="default: inferred")
    sp.add_argument("--seed", type=int, default=0)


def add_markers(sp: argparse.ArgumentParser, model_help: str) -> None:
    """Arguments of ``cellweave markers``."""
    from cellweave._cli._grammar import add_input

    add_input(sp, ".h5ad / .h5mu (RNA counts or log-normalized)")
    sp.add_argument("--model", default=None, help=model_help)
    sp.add_argument("--groupby", required=True, help="obs column with the groups")
    sp.add_argument("--out", required=True, help="marker table (.tsv: group, rank, gene, score)")
    sp.add_argument("--out-h5ad", default=None, help="also write the data with uns['cellweave_markers'] here")
    sp.add_argument("--method", default="integrated_gradients", choices=["integrated_gradients", "deletion"])
    sp.add_argument("--n-cells", type=int, default=50, help="cells per group averaged over")
    sp.add_argument("--n-steps", type=int, default=16, help="integrated-gradients steps (a count, not a training budget)")
    sp.add_argument("--n-top", type=int, default=100, help="markers per group in the table (0 = all genes)")
    sp.add_argument("--layer", default=None, help="layer holding raw counts (default: X)")
    sp.add_argument("--use-raw", action="store_true", help="use .raw (e.g. when X is scaled)")
    sp.add_argument("--organism", default=None, choices=["human", "mouse"], help="default: inferred")
    sp.add_argument("--seed", type=int, default=0)


def add_genes(sp: argparse.ArgumentParser, model_help: str) -> None:
    """Arguments of ``cellweave genes`` (no INPUT: the model's own gene table)."""
    sp.add_argument("--model", default=None, help=model_help)
    sp.add_argument("--out", required=True, help="output .h5ad (genes x dims); a .png UMAP is written beside it")
    sp.add_argument("--organism", default="human", choices=["human", "mouse"])
    sp.add_argument("--n-neighbors", type=int, default=15)
    sp.add_argument("--resolution", type=float, default=1.0, help="Leiden resolution of the gene programs")
    sp.add_argument("--programs-tsv", default=None, help="also write gene -> program as a .tsv")
    sp.add_argument("--seed", type=int, default=0)
