"""Unknown-cell calls under shift and novel-type detection: three rules on the same embedding.

Point 4 of the representation work: "unknown" should mean a type the reference lacks, not a known
type in a new state. On the shipped model's zero-shot embedding of panel datasets, compares

- **current** (``tl.annotate``'s rule): mean distance to the 15 nearest reference cells on the
  reference-standardized embedding; threshold = 99th percentile of a held-out 20% of the reference;
- **harmony**: the same after Harmony on the PCA of reference + query together (reference/query as
  the batch), the classifier trained and applied on the corrected coordinates;
- **mahalanobis**: minimum class-conditional Mahalanobis distance with a shared covariance (Lee et al.
  2018, "A simple unified framework for detecting out-of-distribution samples"), same threshold rule.

Protocols as the panel's: across a shift (each group of the shift key held out; macro-F1 over true
and predicted labels, share called unknown) and novel type (each of the 4 largest types left out of
a 70% reference; AUROC, share of known / novel query cells called unknown). Prints two tables.

    CELLWEAVE_DATA_DIR=../shared/data .venv/bin/python benchmarks/novelty_calibration.py \
        multibatch_cellbench_sc_mixology,scrna_pancreas_baron2016_human_mouse_cider,\
prot_citeseq_adt_13studies_adtnorm,scrna_pbmc4k_10x_soupx
"""

import sys

import numpy as np
import pandas as pd
from sklearn.metrics import f1_score, roc_auc_score
from sklearn.model_selection import train_test_split
from sklearn.neighbors import NearestNeighbors
from sklearn.preprocessing import StandardScaler
from sklearn.linear_model import LogisticRegression
from cellweave.bench.tasks import panel as P
from cellweave.bench.tasks._cells import across_splits
from cellweave.tl._integrate import harmony
from cellweave.tl._transfer import LabelTransfer
from cellweave.models import CellWeave
def harmony_transfer(emb_ref, y_ref, emb_q, seed=0, q=0.99, k=15):
    sc = StandardScaler().fit(emb_ref)
    zr, zq = sc.transform(emb_ref), sc.transform(emb_q)
    from sklearn.decomposition import PCA
    n = min(50, zr.shape[1])
    pca = PCA(n, random_state=seed).fit(zr)
    joint = np.vstack([pca.transform(zr), pca.transform(zq)]).astype(np.float32)
    side = np.array(["r"] * len(zr) + ["q"] * len(zq))
    cor = harmony(joint, side, seed=seed)
    cr, cq = cor[:len(zr)], cor[len(zr):]
    clf = LogisticRegression(max_iter=1000, random_state=seed).fit(cr, y_ref)
    fit, cal = train_test_split(np.arange(len(y_ref)), test_size=0.2, stratify=y_ref, random_state=seed)
    nn = NearestNeighbors(n_neighbors=k).fit(cr[fit])
    thr = np.quantile(nn.kneighbors(cr[cal])[0].mean(1), q)
    nov = nn.kneighbors(cq)[0].mean(1)
    return clf.predict(cq), nov, nov > thr

def mahalanobis(emb_ref, y_ref, emb_q, q=0.99, seed=0):
    sc = StandardScaler().fit(emb_ref); zr, zq = sc.transform(emb_ref), sc.transform(emb_q)
    fit, cal = train_test_split(np.arange(len(y_ref)), test_size=0.2, stratify=y_ref, random_state=seed)
    classes = np.unique(y_ref)
    mus = np.stack([zr[fit][y_ref[fit] == c].mean(0) for c in classes])
    resid = zr[fit] - mus[np.searchsorted(classes, y_ref[fit])]
    cov = np.cov(resid.T) + 1e-3 * np.eye(zr.shape[1]); P_ = np.linalg.inv(cov)
    def score(z):
        d = np.stack([np.einsum("ij,jk,ik->i", z - m, P_, z - m) for m in mus], 1)
        return d.min(1), classes[d.argmin(1)]
    thr = np.quantile(score(zr[cal])[0], q)
    s, pred = score(zq)
    return pred, s, s > thr


def main() -> None:
    from cellweave._system import keep_torch_threads

    keep_torch_threads()  # scanpy's first numba call would otherwise lift torch's thread limit
    model = CellWeave.load()
    names = sys.argv[1].split(",")
    ds = [d for d in P.panel_datasets() if d.name in names]
    rows = []
    for d in ds:
        emb = model.embed(d.model_input, progress=False, dataset=d.name)[0]
        if d.shift_key:
            for g, tr, te in across_splits(d.adata.obs, d.shift_key, d.labels):
                y = d.labels
                cw = LabelTransfer().fit(emb[tr], y[tr]).predict(emb[te])
                rows.append(dict(ds=d.name, proto="shift", method="current", f1=f1_score(y[te], cw.raw_prediction.astype(str), average="macro"), unknown=cw.unknown.mean()))
                p, s, u = harmony_transfer(emb[tr], y[tr], emb[te])
                rows.append(dict(ds=d.name, proto="shift", method="harmony", f1=f1_score(y[te], p, average="macro"), unknown=u.mean()))
                p, s, u = mahalanobis(emb[tr], y[tr], emb[te])
                rows.append(dict(ds=d.name, proto="shift", method="mahalanobis", f1=f1_score(y[te], p, average="macro"), unknown=u.mean()))
        classes = pd.Series(d.labels).value_counts().index[:4]
        ref, query = train_test_split(np.arange(len(d.labels)), test_size=0.3, stratify=d.labels, random_state=0)
        for novel in classes:
            tr = ref[d.labels[ref] != novel]; isn = d.labels[query] == novel
            cw = LabelTransfer().fit(emb[tr], d.labels[tr]).predict(emb[query])
            for m, (s, u) in {"current": (cw.novelty, cw.unknown), "harmony": harmony_transfer(emb[tr], d.labels[tr], emb[query])[1:],
                              "mahalanobis": mahalanobis(emb[tr], d.labels[tr], emb[query])[1:]}.items():
                rows.append(dict(ds=d.name, proto="novel", method=m, auroc=roc_auc_score(isn, s), known_unk=u[~isn].mean(), novel_unk=u[isn].mean()))
        print(d.name, flush=True)
    df = pd.DataFrame(rows)
    print(df.groupby(["proto", "method"]).mean(numeric_only=True).round(3).to_string())
    print(df.groupby(["proto", "ds", "method"]).mean(numeric_only=True).round(3).to_string())


if __name__ == "__main__":
    main()
