"""Benchmark task ``gene-map`` (the old name ``genes`` still runs it, with a warning): do genes of
one known program sit together in the model's gene embedding, compared with a co-expression
embedding of the same genes from bundled data?

Protocol
--------
* Gene universe per dataset: genes detected in at least ``MIN_CELLS`` cells of the dataset and
  known to the model. Known programs (``cellweave.tl.gene_sets``: Tirosh 2016 S and G2M, Rice 2013
  interferon score, ribosomal proteins, MHC class II, mitochondrially encoded genes) restricted to
  that universe; programs with fewer than ``MIN_SET`` genes and genes in two programs are left out.
* Embeddings of the genes: ``cellweave`` = the model's gene token embeddings (no data needed:
  identical across seeds); ``cellweave (contextual)`` = each gene's output token state averaged
  over the cells of the dataset where it is a token; ``co-expression PCA`` = PCA (50 components)
  of the genes' standardized log1p(CP10k) profiles over cells; ``random embedding`` = Gaussian
  vectors (control). Per seed, the cells (80%, for the data-based embeddings) are redrawn.
* Metrics (cosine): silhouette of the program labels over program genes; neighbour enrichment =
  mean share of a program gene's 10 nearest genes (among the whole universe) in its program,
  over the share expected by chance.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd
import torch

from cellweave.bench._results import make_records

logger = logging.getLogger(__name__)

TASK = "gene-map"
DESCRIPTION = (
    "Gene map: silhouette and neighbour enrichment of known gene programs (cell cycle S/G2M, interferon, "
    "ribosomal, MHC-II, mitochondrial) in the model's gene embedding vs a co-expression PCA embedding of the same "
    "genes from bundled data, and a random-embedding control."
)
MIN_CELLS = 10
MIN_SET = 5
N_NEIGHBORS = 10


def _datasets(ctx: Any) -> list[tuple[str, Any]]:
    from cellweave import datasets

    if ctx.data is not None:
        from cellweave.tl import rna_adata

        return [(ctx.data_name or "data", rna_adata(ctx.data))]
    names = ["multibatch_cellbench_sc_mixology"] if ctx.quick else [
        "multibatch_cellbench_sc_mixology", "liger_bmmc_rna_gene_activity", "citeseq_citefuse_eccite"]
    return [(n, datasets.load(n, modality="rna") if datasets.REGISTRY[n].format == "h5mu" else datasets.load(n))
            for n in names]


def program_metrics(E: np.ndarray, labels: np.ndarray, in_set: np.ndarray) -> dict[str, float]:
    """Silhouette (cosine) over program genes and the neighbour enrichment of programs."""
    from sklearn.metrics import silhouette_score
    from sklearn.neighbors import NearestNeighbors

    sil = float(silhouette_score(E[in_set], labels[in_set], metric="cosine"))
    nn = NearestNeighbors(n_neighbors=N_NEIGHBORS + 1, metric="cosine").fit(E)
    _, ind = nn.kneighbors(E[in_set])
    lab_set = labels[in_set]
    same = (labels[ind[:, 1:]] == lab_set[:, None]).mean(1)
    freq = pd.Series(labels).value_counts()
    expected = np.array([(freq[x] - 1) / (len(labels) - 1) for x in lab_set])
    return {"program_silhouette": sil, "neighbour_enrichment": float(np.mean(same / expected))}


@torch.inference_mode()
def contextual_embedding(
    model: Any, corpus: Any, tok: np.ndarray, cells: np.ndarray, seed: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Each column gene's output token state averaged over the cells where it is a token, and
    whether the gene was a token in any of them."""
    from cellweave.tl import local_columns, token_batches, vocab_to_col_map

    v2c = vocab_to_col_map(model, tok)
    d = model.config.d_model
    total = torch.zeros(len(tok), d, dtype=torch.float64)
    count = torch.zeros(len(tok), dtype=torch.float64)
    for b in token_batches(model, corpus, cells, batch_size=64, seed=seed):
        _, states = model.module.encode(b["token_ids"], b["values"], b["modality_ids"], b["padding_mask"])
        col = local_columns(b["token_ids"], b["padding_mask"], v2c)
        ok = col >= 0
        total.index_add_(0, col[ok].cpu(), states[ok].double().cpu())
        count.index_add_(0, col[ok].cpu(), torch.ones(int(ok.sum()), dtype=torch.float64))
    out = (total / count.clamp_min(1.0)[:, None]).numpy().astype(np.float32)
    return out, count.numpy() > 0


def run(ctx: Any, report: Any) -> list:
    import matplotlib.pyplot as plt
    from sklearn.decomposition import PCA

    from cellweave.bench import umap_coordinates
    from cellweave.tl import gene_embedding_table, gene_sets
    from cellweave.tl import log_normalized, prepare_rna
    from cellweave.tl import corpus_var_names

    model = ctx.gene_model
    W, table = gene_embedding_table(model)
    row_of_token = {int(t): i for i, t in enumerate(table["token_id"])}
    n_cells = 300 if ctx.quick else 500
    records: list = []
    shown = False
    for name, adata in _datasets(ctx):
        corpus, tok = prepare_rna(adata, model)
        genes = np.array([str(g) for g in corpus_var_names(adata, model, tok, None)])
        X = log_normalized(adata)[:, adata.var_names.get_indexer(genes)].tocsc()
        detected = np.diff(X.indptr) >= MIN_CELLS
        keep = detected & np.array([int(t) in row_of_token for t in tok])
        sets = gene_sets("program", universe=genes[keep])
        label = np.full(len(genes), "", dtype=object)
        seen: dict[str, int] = {}
        for s, members in sets.items():
            for g in members:
                seen[g] = seen.get(g, 0) + 1
        for s, members in sets.items():
            idx = [i for i, g in enumerate(genes) if keep[i] and g in set(members) and seen[g] == 1]
            if len(idx) >= MIN_SET:
                label[idx] = s
        label = np.where(label == "", "other", label).astype(str)
        sizes = pd.Series(label[keep]).value_counts()
        logger.info("genes/%s: %d genes, programs %s", name, int(keep.sum()), sizes.drop("other", errors="ignore").to_dict())
        for seed in ctx.seeds:
            rng = np.random.default_rng(seed)
            cells = np.sort(rng.choice(adata.n_obs, size=int(0.8 * adata.n_obs), replace=False))
            ctx_cells = np.sort(rng.choice(cells, size=min(n_cells, len(cells)), replace=False))
            C, has_tok = contextual_embedding(model, corpus, tok, ctx_cells, seed)
            k2 = keep & has_tok
            lab = label[k2]
            in_set = lab != "other"
            if len(set(lab[in_set])) < 2:
                report.text(f"{name}: fewer than two programs with {MIN_SET}+ genes; skipped.", css_class="note")
                break
            Xk = X[cells][:, k2].toarray()
            Z = (Xk - Xk.mean(0)) / np.maximum(Xk.std(0), 1e-6)
            coexp = PCA(n_components=min(50, Z.shape[0] - 1), random_state=seed).fit(Z).components_.T
            embs = {
                "cellweave": W[[row_of_token[int(t)] for t in tok[k2]]],
                "cellweave (contextual)": C[k2],
                "co-expression PCA": coexp,
                "random embedding": rng.standard_normal((int(k2.sum()), W.shape[1])).astype(np.float32),
            }
            for method, E in embs.items():
                records += make_records(TASK, name, "80% of cells", seed, method, program_metrics(E, lab, in_set))
            if not shown:
                _plot(report, embs, lab, in_set, seed, name, umap_coordinates, plt)
                shown = True
    return records


def _plot(report, embs, lab, in_set, seed, name, umap_coordinates, plt) -> None:
    """UMAP of the program genes plus as many other genes, in the model's and the co-expression embedding."""
    rng = np.random.default_rng(seed)
    others = np.flatnonzero(~in_set)
    pick = np.concatenate([np.flatnonzero(in_set), rng.choice(others, size=min(len(others), 2 * int(in_set.sum())),
                                                              replace=False)])
    from cellweave.pl import category_colors

    fig, axes = plt.subplots(1, 2, figsize=(12, 5))
    lp = lab[pick]
    colors = category_colors(sorted(set(lp)))  # "other" genes grey, every program its own hue
    for ax, method in zip(axes, ["cellweave", "co-expression PCA"]):
        U = umap_coordinates(embs[method][pick], seed=seed)
        ax.scatter(U[lp == "other", 0], U[lp == "other", 1], s=3, color=colors.get("other", "#d0d0d0"), label="other genes")
        for s in sorted(set(lp) - {"other"}):
            m = lp == s
            ax.scatter(U[m, 0], U[m, 1], s=9, color=colors[s], label=s)
        ax.set_title(f"{method}: genes of {name}", fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    # Outside the axes, where it covers no gene.
    axes[1].legend(fontsize=7, markerscale=2, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    report.text("Gene UMAPs (program genes and twice as many other genes); colours: known programs.", css_class="note")
    report.figure(fig)
