"""Benchmark task ``multimodal``: embeddings from a subset of a cell's modalities, mouse
coverage, and the effect of joint pretraining.

1. For CITE-seq and multiome cells, the embedding from RNA alone is compared with the joint
   embedding (all modalities) of the same cells: FOSCTTM (fraction of cells whose joint
   embedding is closer to a cell's RNA-only embedding than its own; 0 is perfect, 0.5 chance),
   cosine similarity of the two embeddings of a cell, and the share of the 15 nearest
   neighbours kept. Baseline: PCA of the concatenated standardized modalities (log-normalized
   RNA, CLR protein / log-normalized ATAC), with the missing modality filled by its training mean
   for the RNA-only view: the same question asked of a linear model.
2. Mouse datasets embedded with the human-pretrained model: share of their genes that reach the
   vocabulary through 1:1 orthologs.
3. Joint vs RNA-only pretraining: the ``impute`` and ``spatial`` numbers of a model pretrained
   on RNA alone beside the jointly pretrained model, read from ``ctx.joint_vs_rna_results`` or,
   by default, the copy of ``benchmarks/published/joint_vs_rna/results.json`` (written by
   ``benchmarks/joint_vs_rna_pretraining.py``) that ships with cellweave as package data: an
   installed wheel has no ``benchmarks/`` folder.
"""

from __future__ import annotations

import json
import logging
from importlib import resources
from pathlib import Path

import numpy as np

from cellweave import modalities
from cellweave._exceptions import CellWeaveInputError
from cellweave.bench import CELLWEAVE, make_records
from cellweave.data import clr

from ._multimodal_common import log_normalize, top_variable

logger = logging.getLogger(__name__)

DESCRIPTION = (
    "Multimodality: agreement of the RNA-only embedding of CITE-seq / multiome cells with their joint embedding "
    "(FOSCTTM, cosine, kNN overlap) vs PCA of the concatenated modalities; mouse vocabulary coverage; "
    "joint vs RNA-only pretraining."
)

DATASETS: list[tuple[str, str]] = [
    ("citeseq_pbmc_10x_scvi_tests", "prot"),
    ("citeseq_citefuse_eccite", "prot"),
    ("multiome_muon_test", "atac"),
]
MOUSE_DATASETS = ["spatial_osmfish_scvi", "spatial_giotto_mini_visium_dg", "spatial_novosparc_intestine"]
#: Package-data copy of benchmarks/published/joint_vs_rna/results.json (tests/bench check they agree).
PRETRAINING_JSON = "joint_vs_rna_results.json"
#: Record names in older results that describe a fit (epoch, time), not a score: left out of tables.
NOT_METRICS = frozenset({"best epoch", "fine-tuning seconds"})
K = 15


def agreement(partial: np.ndarray, joint: np.ndarray, *, k: int = K) -> dict[str, float]:
    """FOSCTTM, mean cosine similarity and kNN overlap between two views of the same cells."""
    from sklearn.neighbors import NearestNeighbors

    def _unit(x: np.ndarray) -> np.ndarray:
        return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)

    a, b = _unit(partial.astype(np.float64)), _unit(joint.astype(np.float64))
    d = 1.0 - a @ b.T  # cosine distance of every RNA-only view to every joint view
    own = np.diag(d)
    foscttm = float(np.mean((d < own[:, None]).sum(1) / (len(a) - 1)))
    k = min(k, len(a) - 1)
    na = NearestNeighbors(n_neighbors=k + 1, metric="cosine").fit(a).kneighbors(a, return_distance=False)[:, 1:]
    nb = NearestNeighbors(n_neighbors=k + 1, metric="cosine").fit(b).kneighbors(b, return_distance=False)[:, 1:]
    overlap = float(np.mean([len(set(x) & set(y)) / k for x, y in zip(na, nb)]))
    return {"FOSCTTM": foscttm, "cosine (same cell)": float(np.mean(np.sum(a * b, 1))), "kNN overlap": overlap}


def _pca_views(data, other: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """PCA of [RNA, other] standardized; RNA-only view with ``other`` at its mean."""
    from sklearn.decomposition import PCA

    R = log_normalize(data["rna"].X)
    R = R[:, top_variable(R, np.arange(R.shape[0]), 2000)]
    O = clr(data[other].X) if modalities.get(other).readout == "clr" else log_normalize(data[other].X)
    blocks = []
    for M in (R, O):
        sd = M.std(0)
        M = (M - M.mean(0)) / np.where(sd > 0, sd, 1.0)
        blocks.append(M / np.sqrt(M.shape[1]))  # each modality weighs the same in total
    J = np.concatenate(blocks, axis=1)
    n = int(min(50, J.shape[0] - 1, J.shape[1] - 1))
    pca = PCA(n_components=n, random_state=seed).fit(J)
    partial = np.concatenate([blocks[0], np.zeros_like(blocks[1])], axis=1)  # standardized mean = 0
    return pca.transform(partial), pca.transform(J)


def run(ctx, report) -> list:
    import cellweave.datasets as cwd
    import pandas as pd

    model = ctx.model
    records: list = []
    seeds = ctx.seeds[:1] if ctx.quick else ctx.seeds
    datasets = [DATASETS[0], DATASETS[2]] if ctx.quick else DATASETS
    for name, other in datasets:
        data = cwd.load(name)
        mods = [m for m in ("rna", other)]
        label = f"{name} (RNA vs RNA+{other})"
        corpus = model.prepare(data, modalities=mods, dataset=name)
        for seed in seeds:
            with model.autocast(ctx.precision):
                joint = model.embed_corpus(corpus, seed=seed, progress=ctx.progress)
                partial = model.embed_corpus(corpus, seed=seed, progress=ctx.progress, modalities=["rna"])
            records += make_records("multimodal", label, "all cells", seed, CELLWEAVE, agreement(partial, joint),
                                    higher_is_better={"FOSCTTM": False})
            p, j = _pca_views(data, other, seed)
            records += make_records("multimodal", label, "all cells", seed, "PCA (missing modality mean-filled)",
                                    agreement(p, j), higher_is_better={"FOSCTTM": False})
    cov_rows = []
    for name in MOUSE_DATASETS[:1] if ctx.quick else MOUSE_DATASETS:
        data = cwd.load(name)
        corpus = model.prepare(data, dataset=name)
        for c in corpus.coverage:
            frac = c["n_in_vocab"] / max(c["n_features"], 1)
            cov_rows.append({"dataset": name, "organism": c.get("organism"), "modality": c["modality"],
                             "features": c["n_features"], "in vocabulary": c["n_in_vocab"], "coverage": frac,
                             "generated codes": c.get("n_generated", 0)})
            records += make_records("multimodal", f"{name} (mouse → human vocabulary)", "all genes", 0, CELLWEAVE,
                                    {"vocabulary coverage": frac})
    report.text(
        "RNA-only vs joint embedding: the same cells embedded from RNA alone and from RNA + the other modality. "
        "FOSCTTM 0 = every cell's RNA-only embedding is closest to its own joint embedding; 0.5 = chance. The PCA "
        "baseline is fitted on the concatenated modalities of all cells (no split: nothing is predicted).",
        css_class="note")
    if cov_rows:
        report.text("Mouse data embedded with the human-pretrained model (genes mapped through 1:1 orthologs):",
                    css_class="note")
        report.table(pd.DataFrame(cov_rows))
    _pretraining_effect(report, getattr(ctx, "joint_vs_rna_results", None))
    return records


def pretraining_results(path: str | Path | None = None) -> list[dict]:
    """Records of ``benchmarks/joint_vs_rna_pretraining.py``: from ``path``, else the shipped copy.

    Raises
    ------
    CellWeaveInputError
        ``path`` is given but is not a file.
    """
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise CellWeaveInputError(
                f"joint_vs_rna_results={str(path)!r} is not a file. Pass the results.json written by "
                "benchmarks/joint_vs_rna_pretraining.py, or None for the copy shipped with cellweave.")
        return json.loads(path.read_text())
    return json.loads(resources.files("cellweave.bench").joinpath("resources", PRETRAINING_JSON).read_text())


def _pretraining_effect(report, path: str | Path | None = None) -> None:
    import pandas as pd

    from cellweave.bench import summarize

    # Older result files carry facts about the fine-tuning fit as records; they score nothing.
    rows = [r for r in pretraining_results(path) if r["metric"] not in NOT_METRICS]
    s = summarize(rows)
    if s.empty:
        return
    s["value"] = [f"{m:.3f} ± {sd:.3f}" if n > 1 else f"{m:.3f}" for m, sd, n in zip(s["mean"], s["std"], s["n"])]
    parts = s["method"].str.extract(r"^(.*) \[(.*)\]$")
    s["variant"], s["pretraining"] = parts[0], parts[1]
    s = s.dropna(subset=["variant"])
    wide = s.pivot_table(index=["task", "dataset", "split", "metric", "variant"], columns="pretraining",
                         values="value", aggfunc="first").rename_axis(columns=None).reset_index()
    wide = wide[~wide["split"].astype(str).str.contains("held out")]
    report.text(
        "Effect of joint pretraining: the same downstream numbers (quick protocol of the impute and spatial tasks) "
        "from models pretrained on RNA alone and on every modality (modality dropout 0.5), same preset, epochs "
        "and cell caps, 3 pretraining seeds, each benchmarked with its own seed (from "
        "benchmarks/published/joint_vs_rna/results.json). The RNA-only model has no protein or peak tokens, so it "
        "has no zero-shot cross-modal prediction; its fine-tuned and kNN-on-embedding numbers are comparable.",
        css_class="note")
    report.table(pd.DataFrame(wide))
