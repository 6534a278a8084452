"""Benchmark task ``grn``: networks from the model vs co-expression and GRNBoost2, scored against
the genes that change when a regulator is knocked out in the Papalexi 2021 CRISPR screen.

Protocol
--------
* Data: ``perturb_papalexi2021_sceptre`` (THP-1 cells, 299-gene panel, 26 knock-outs + control).
  Every method sees the same genes (those of the panel the model knows) and, per seed, the same
  random sample of cells; no method sees the perturbation labels.
* Observed targets of a knocked-out regulator: genes differentially expressed between its
  knock-out cells and the control cells (scanpy ``rank_genes_groups``, Wilcoxon, Benjamini-
  Hochberg FDR < 0.05, log1p(CP10k)), the regulator itself excluded. Regulators evaluated:
  knock-outs whose gene is in the panel and which have at least ``MIN_TARGETS`` observed targets.
* Metrics per regulator, averaged over regulators: AUPRC of its predicted targets (all other
  panel genes ranked by score), AUPRC over the prevalence (1 = random), early precision (precision
  of the top-k, k = number of observed targets) and its ratio to the prevalence (EPR).
* TF enrichment among top sources: of the top 5% edges of the unrestricted network (every gene a
  source), the share whose source is a TF (bundled pySCENIC human list), over the TF share of the
  genes. Only for methods that score every source (GRNBoost2 and in silico deletion are run with
  the evaluated regulators and panel TFs as sources, so the share is fixed by construction).
* Random network: uniform random scores (seeded): the control every metric is read against.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from cellweave.bench._results import make_records

logger = logging.getLogger(__name__)

DESCRIPTION = (
    "Gene regulatory networks: cellweave (gene-embedding similarity, attention, in silico deletion, combined) "
    "vs |Pearson|, |Spearman| co-expression, GRNBoost2 and a random network on the same cells of the Papalexi "
    "2021 screen (labels unused); predicted targets of knocked-out regulators scored against the genes that "
    "change in their knock-out cells (Wilcoxon vs control, FDR < 0.05)."
)
DATASET = "perturb_papalexi2021_sceptre"
MIN_TARGETS = 3
TOP_EDGE_SHARE = 0.05
FDR = 0.05


def observed_targets(ln, regulators: list[str], genes: list[str]) -> dict[str, pd.DataFrame]:
    """Per regulator: DE table of its knock-out cells vs control (Wilcoxon), restricted to ``genes``."""
    import scanpy as sc

    out = {}
    for r in regulators:
        b = ln[ln.obs["perturbation"].isin([r, "control"])].copy()
        sc.tl.rank_genes_groups(b, "perturbation", groups=[r], reference="control", method="wilcoxon")
        df = sc.get.rank_genes_groups_df(b, r)
        out[r] = df[df["names"].isin(genes) & (df["names"] != r)].reset_index(drop=True)
    return out


@dataclass
class KnockoutScreen:
    """A screen as this task scores it: the model's RNA tokens of its genes (``corpus``, ``tokens``,
    ``genes`` their names), the log-normalized cells over those genes (``ln``), the knocked-out genes the
    model tokenizes (``knockouts``), their DE tables against control (``de``) and observed targets
    (``truth_sets``: FDR < :data:`FDR`); ``regulators``: those with at least :data:`MIN_TARGETS` targets,
    ``sources`` their columns and ``truth`` their targets as boolean rows over ``genes``."""

    corpus: Any
    tokens: np.ndarray
    genes: list[str]
    ln: Any
    knockouts: list[str]
    de: dict[str, pd.DataFrame]
    truth_sets: dict[str, set[str]]

    @property
    def regulators(self) -> list[str]:
        return [r for r in self.knockouts if len(self.truth_sets[r]) >= MIN_TARGETS]

    @property
    def sources(self) -> list[int]:
        pos = {g: i for i, g in enumerate(self.genes)}
        return [pos[r] for r in self.regulators]

    @property
    def truth(self) -> list[np.ndarray]:
        return [np.array([g in self.truth_sets[r] for g in self.genes]) for r in self.regulators]


def knockout_screen(adata, model) -> KnockoutScreen:
    """The :class:`KnockoutScreen` of ``adata`` (counts, ``obs["perturbation"]`` with ``"control"``) for ``model``."""
    import scanpy as sc

    from cellweave.tl import prepare_rna, var_token_ids

    corpus, tok = prepare_rna(adata, model)
    var_tok = var_token_ids(adata, model)
    genes = [str(adata.var_names[np.flatnonzero(var_tok == t)[0]]) for t in tok]
    ln = adata[:, genes].copy()
    sc.pp.normalize_total(ln, target_sum=1e4)
    sc.pp.log1p(ln)
    kos = [g for g in pd.unique(adata.obs["perturbation"].astype(str)) if g != "control" and g in genes]
    de = observed_targets(ln, kos, genes)
    truth_sets = {r: set(d.loc[d["pvals_adj"] < FDR, "names"]) for r, d in de.items()}
    return KnockoutScreen(corpus, tok, genes, ln, kos, de, truth_sets)


def regulator_metrics(scores: np.ndarray, src: list[int], truth: list[np.ndarray]) -> dict[str, float]:
    """AUPRC, AUPRC ratio, early precision and EPR averaged over regulators (rows of ``scores``)."""
    from sklearn.metrics import average_precision_score

    auprc, ratio, ep, epr = [], [], [], []
    n = scores.shape[1]
    for i, s in enumerate(src):
        keep = np.arange(n) != s
        y, sc_ = truth[i][keep], scores[i][keep]
        prev = y.mean()
        k = int(y.sum())
        top = np.argsort(-sc_, kind="stable")[:k]
        auprc.append(average_precision_score(y, sc_))
        ratio.append(auprc[-1] / prev)
        ep.append(y[top].mean())
        epr.append(ep[-1] / prev)
    return {"auprc": float(np.mean(auprc)), "auprc_ratio": float(np.mean(ratio)),
            "early_precision": float(np.mean(ep)), "epr": float(np.mean(epr))}


def tf_enrichment(full: np.ndarray, is_tf: np.ndarray) -> float:
    """Share of the top ``TOP_EDGE_SHARE`` edges whose source is a TF, over the TF share of genes."""
    m = full.copy()
    np.fill_diagonal(m, -np.inf)
    flat = m.ravel()
    k = max(1, int(TOP_EDGE_SHARE * (m.shape[0] * (m.shape[0] - 1))))
    top = np.argpartition(-flat, k - 1)[:k]
    src = top // m.shape[1]
    return float(is_tf[src].mean() / max(is_tf.mean(), 1e-12))


def grnboost2_scores(X: np.ndarray, genes: list[str], sources: list[int], seed: int) -> np.ndarray:
    """GRNBoost2 (arboreto) importances ``(len(sources), n_genes)`` on a cells x genes matrix."""
    from arboreto.algo import grnboost2
    from distributed import Client, LocalCluster

    for name in ("distributed", "arboreto"):  # the scheduler logs every start and stop at INFO
        logging.getLogger(name).setLevel(logging.WARNING)
    df = pd.DataFrame(X, columns=genes)
    tf_names = [genes[s] for s in sources]
    with LocalCluster(processes=False, n_workers=1, threads_per_worker=2, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        net = grnboost2(expression_data=df, tf_names=tf_names, seed=seed, client_or_address=client, verbose=False)
    pos = {g: i for i, g in enumerate(genes)}
    src_pos = {genes[s]: i for i, s in enumerate(sources)}
    out = np.zeros((len(sources), len(genes)), dtype=np.float32)
    out[net["TF"].map(src_pos).to_numpy(), net["target"].map(pos).to_numpy()] = net["importance"].to_numpy()
    return out


def _coexpression(X: np.ndarray, kind: str) -> np.ndarray:
    from scipy.stats import rankdata

    Z = rankdata(X, axis=0) if kind == "spearman" else X
    with np.errstate(invalid="ignore", divide="ignore"):
        c = np.corrcoef(Z.T)
    c = np.abs(np.nan_to_num(c))
    np.fill_diagonal(c, 0.0)
    return c.astype(np.float32)


def run(ctx: Any, report: Any) -> list:
    import matplotlib.pyplot as plt

    from cellweave import datasets
    from cellweave.genes import tf_list
    from cellweave.tl import attention_scores, combine_scores, embedding_scores, perturbation_scores

    if ctx.data is not None:
        report.text("The grn task needs knock-out labels (obs['perturbation'] with 'control'); it always runs on "
                    "the bundled Papalexi 2021 screen, not on INPUT.", css_class="note")
    model = ctx.gene_model
    adata = datasets.load(DATASET, modality="rna")
    n_cells = 200 if ctx.quick else 300
    splits = {"all cells (labels unused)": np.arange(adata.n_obs)}
    if not ctx.quick:
        splits["control cells"] = np.flatnonzero(adata.obs["perturbation"].astype(str).to_numpy() == "control")

    screen = knockout_screen(adata, model)
    corpus, tok, genes, ln, de, truth_sets = (screen.corpus, screen.tokens, screen.genes, screen.ln, screen.de,
                                              screen.truth_sets)
    regs, src, truth = screen.regulators, screen.sources, screen.truth
    skipped = {r: len(truth_sets[r]) for r in screen.knockouts if r not in regs}
    tfs = set(tf_list("human"))
    is_tf = np.array([g in tfs for g in genes])
    sources_big = sorted(set(src) | set(np.flatnonzero(is_tf).tolist()))
    big_rows = [sources_big.index(s) for s in src]
    logger.info("grn: %d genes, regulators evaluated %s (observed targets %s)", len(genes), regs,
                [len(truth_sets[r]) for r in regs])

    X_all = ln.X.toarray() if hasattr(ln.X, "toarray") else np.asarray(ln.X)
    records: list = []
    examples: dict[str, dict[str, np.ndarray]] = {}
    seconds: dict[str, float] = {}
    emb_full = embedding_scores(model, tok)
    for split, pool in splits.items():
        for seed in ctx.seeds:
            rng = np.random.default_rng(seed)
            cells = np.sort(rng.choice(pool, size=min(n_cells, len(pool)), replace=False))
            X = X_all[cells]
            full: dict[str, np.ndarray] = {}
            rows: dict[str, np.ndarray] = {}
            t = time.perf_counter()
            full["cellweave (embedding)"] = emb_full
            seconds["cellweave (embedding)"] = time.perf_counter() - t
            t = time.perf_counter()
            with model.autocast(ctx.precision):  # as tl.grn's: probabilities and deletion effects in float32
                att = attention_scores(model, corpus, tok, cells, seed=seed, progress=ctx.progress)
            full["cellweave (attention)"] = 0.5 * (att + att.T)
            seconds["cellweave (attention)"] = time.perf_counter() - t
            t = time.perf_counter()
            with model.autocast(ctx.precision):
                rows["cellweave (perturbation)"] = perturbation_scores(model, corpus, tok, src, cells, seed=seed,
                                                                       progress=ctx.progress)
            seconds["cellweave (perturbation)"] = time.perf_counter() - t
            rows["cellweave (combined)"] = combine_scores(
                [emb_full[src], full["cellweave (attention)"][src], rows["cellweave (perturbation)"]])
            t = time.perf_counter()
            full["Pearson |r|"] = _coexpression(X, "pearson")
            full["Spearman |rho|"] = _coexpression(X, "spearman")
            seconds["Pearson |r|"] = time.perf_counter() - t
            t = time.perf_counter()
            rows["GRNBoost2"] = grnboost2_scores(X, genes, sources_big, seed)[big_rows]
            seconds["GRNBoost2"] = time.perf_counter() - t
            full["random network"] = np.random.default_rng(10_000 + seed).random((len(genes), len(genes))).astype(
                np.float32)
            for method, m in full.items():
                rows.setdefault(method, m[src])
            for method, s in rows.items():
                metrics = regulator_metrics(s, src, truth)
                if method in full:
                    metrics["tf_enrichment_top_sources"] = tf_enrichment(full[method], is_tf)
                records += make_records("grn", DATASET, split, seed, method, metrics)
                if seed == ctx.seeds[0] and split == next(iter(splits)):
                    examples[method] = s
    _report(report, regs, genes, src, truth_sets, de, examples, records, seconds, skipped, n_cells, plt)
    return records


def _report(report, regs, genes, src, truth_sets, de, examples, records, seconds, skipped, n_cells, plt) -> None:
    from cellweave.bench._results import records_frame

    report.text(
        f"Observed targets (Wilcoxon knock-out vs control, BH FDR < {FDR}, {len(genes)} panel genes the model "
        f"knows): {', '.join(f'{r} {len(truth_sets[r])}' for r in regs)}. Knock-outs in the panel with fewer than "
        f"{MIN_TARGETS} observed targets are not evaluated: "
        f"{', '.join(f'{r} ({n})' for r, n in skipped.items()) or 'none'}. Each method sees {n_cells} cells per "
        "seed (a fresh random sample per seed); gene-embedding similarity needs no cells (no spread over seeds). "
        "The shipped model was pretrained, without labels, on 3,600 cells of this screen among other data.",
        css_class="note")
    df = records_frame(records)
    sub = df[df["metric"] == "auprc_ratio"]
    fig, ax = plt.subplots(figsize=(8, 3.4))
    order = sub.groupby("method")["value"].mean().sort_values().index
    for j, (split, g) in enumerate(sub.groupby("split", sort=False)):
        means = g.groupby("method")["value"].mean().reindex(order)
        sds = g.groupby("method")["value"].std(ddof=0).reindex(order).fillna(0)
        ax.barh(np.arange(len(order)) + 0.38 * j, means, xerr=sds, height=0.38, label=split)
    ax.axvline(1.0, color="k", lw=0.8, ls="--")
    ax.set_yticks(np.arange(len(order)) + 0.19)
    ax.set_yticklabels(order)
    ax.set_xlabel("AUPRC / prevalence (1 = random), mean over regulators")
    ax.legend(fontsize=8, loc="lower right")
    report.figure(fig)
    # Top-5 predicted targets next to the observed ones, for the regulators with most targets.
    show = sorted(regs, key=lambda r: -len(truth_sets[r]))[:3]
    methods = [m for m in ("cellweave (embedding)", "cellweave (perturbation)", "cellweave (combined)",
                           "Pearson |r|", "GRNBoost2") if m in examples]
    rows = []
    for r in show:
        i = regs.index(r)
        d = de[r]
        obs = d.loc[d["pvals_adj"] < FDR].sort_values("pvals_adj")["names"].head(5).tolist()
        row = {"regulator (KO)": r, "observed targets (top 5 by FDR)": ", ".join(obs),
               "n observed": len(truth_sets[r])}
        for m in methods:
            s = examples[m][i].copy()
            s[src[i]] = -np.inf
            top = [genes[t] for t in np.argsort(-s)[:5]]
            row[m] = ", ".join(f"{g}{'*' if g in truth_sets[r] else ''}" for g in top)
        rows.append(row)
    report.text("Top-5 predicted targets of three knocked-out regulators (first seed, all cells); * = an observed "
                "target.", css_class="note")
    report.table(pd.DataFrame(rows))
    report.text("Seconds per method and seed (last seed): " + ", ".join(f"{k} {v:.1f}" for k, v in seconds.items())
                + ". GRNBoost2 and in silico deletion use the evaluated regulators (GRNBoost2: plus the panel's TFs) "
                  "as sources, so they have no TF-enrichment value.", css_class="note")
