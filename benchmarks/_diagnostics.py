"""What the issue-12 diagnostic scripts share: the panel datasets they run on and how they score."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any


def panel_arguments(doc: str, out: str):
    """The argument parser the panel diagnostics share: ``--model`` (default: the shipped model),
    ``--datasets`` (default: every panel dataset) and ``--out`` (default ``out``); callers add their own."""
    import argparse

    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="model folder or shipped name (default: the shipped model)")
    p.add_argument("--datasets", nargs="*", default=None, help="panel datasets (default: all)")
    p.add_argument("--out", default=out)
    return p


def panel_selection(names: Iterable[str] | None = None) -> Iterator[Any]:
    """The development panel's datasets (``cellweave.bench.tasks.panel``), only those in ``names``
    when given, in the panel's order."""
    from cellweave.bench.tasks.panel import panel_datasets

    wanted = None if names is None else set(names)
    return (d for d in panel_datasets() if wanted is None or d.name in wanted)


def two_object_splits(names: Iterable[str] | None, model, *, adapt: bool = False):
    """The across-shift splits of the panel datasets ``names`` (:func:`panel_selection`; those without a shift
    key are skipped) as two objects, the way a user runs ``annotate``: yields ``(d, y, group, tr, te, reference,
    query, split_model)``, the dataset, its labels as strings, the split, the reference (``obs["panel_label"]``
    set) and the query as separate copies of the model input. With ``adapt`` the model is first adapted to the split's
    reference and query cells together, the side as the count decoder's covariate, as ``annotate --adapt``
    does (seed 0); otherwise ``split_model`` is ``model``."""
    import numpy as np

    from cellweave.bench.tasks._cells import across_splits

    for d in panel_selection(names):
        if not d.shift_key:
            continue
        y = np.asarray(d.labels).astype(str)
        for group, tr, te in across_splits(d.adata.obs, d.shift_key, y):
            reference, query = d.model_input[tr].copy(), d.model_input[te].copy()
            reference.obs["panel_label"] = y[tr]
            split_model = model
            if adapt:
                from cellweave.train import adapt as adapt_model

                both = d.model_input[np.r_[tr, te]].copy()
                both.obs["_cellweave_side"] = np.r_[np.full(len(tr), "reference"), np.full(len(te), "query")]
                split_model = adapt_model(both, model=model, batch_key="_cellweave_side", seed=0, progress=False)
            yield d, y, group, tr, te, reference, query, split_model


def knn_f1(embedding, labels) -> float:
    """The panel's zero-shot score: kNN macro-F1 (k = the panel's, 5-fold, seed 0), 3 decimals."""
    from cellweave.bench import knn_accuracy
    from cellweave.bench.tasks.panel import N_NEIGHBORS

    return round(float(knn_accuracy(embedding, labels, k=N_NEIGHBORS, seed=0)["macro_f1"]), 3)


def panel_batch_codes(d):
    """Integer codes of the covariate the panel adapts ``d`` with (its batch key, else its shift key), one
    per cell of ``d.adata``; all zeros when it has neither."""
    import numpy as np

    key = d.batch_key or d.shift_key
    if not key:
        return np.zeros(d.adata.n_obs, dtype=np.int64)
    return np.unique(d.adata.obs[key].astype(str), return_inverse=True)[1]


def readout_latent(embedding, counts, batches, seed: int):
    """The latent (posterior mean) of :func:`cellweave.train.fit_count_readout` trained on ``embedding`` with
    ``counts`` decoded and ``batches`` as covariate (seed ``seed``), as ``adapt(method="head")`` embeds cells."""
    import numpy as np
    import scipy.sparse as sp
    import torch

    from cellweave.train import fit_count_readout

    readout = fit_count_readout(embedding, sp.csr_matrix(counts), batches, seed=seed)[0]
    with torch.no_grad():
        return readout(torch.as_tensor(np.ascontiguousarray(embedding), dtype=torch.float32)).numpy()


def random_weights(model):
    """Random weights of ``model``'s architecture, vocabulary and config (``start_module(model, "random",
    seed=0)``): the control every pretrained model is scored beside."""
    from cellweave.models import CellWeave
    from cellweave.train import start_module

    return CellWeave(model.config, model.vocab, module=start_module(model, "random", seed=0).eval())


def halves(embedding, model):
    """``(CLS half, bag half)`` of ``model``'s ``cls+bag`` embedding: its first and its last ``d_model``
    columns (``CellWeave.embed`` without a latent readout). ``SystemExit`` naming the pooling otherwise."""
    if model.config.pooling != "cls+bag" or embedding.shape[1] != 2 * model.config.d_model:
        raise SystemExit(f"{model.name}: pooling {model.config.pooling!r}, embedding width {embedding.shape[1]}; "
                         "only a cls+bag embedding without a readout has a CLS half and a bag half.")
    d = model.config.d_model
    return embedding[:, :d], embedding[:, d:]


def scores_with_halves(label: str, model, data, labels, dataset: str) -> dict[str, float]:
    """kNN macro-F1 (:func:`knn_f1`) of ``model``'s default zero-shot embedding of ``data`` (seed 0) as
    ``label``; for a model with a latent readout, also of the pooled embedding under it as
    ``"<label>, pooled"``; and, for a ``cls+bag`` (pooled) embedding, of its CLS and bag halves as
    ``"<label>, CLS half"`` and ``"<label>, bag half"``."""
    emb = model.embed(data, seed=0, progress=False, dataset=dataset)[0]
    row = {label: knn_f1(emb, labels)}
    if model.config.readout_latent:  # a latent readout: also the pooled embedding it reads, as "<label>, pooled"
        emb = model.embed(data, seed=0, progress=False, dataset=dataset,
                          embed_corpus=lambda corpus, **kw: model.embed_corpus(corpus, pooling="pooled", **kw))[0]
        row[f"{label}, pooled"] = knn_f1(emb, labels)
    if model.config.pooling == "cls+bag":
        cls, bag = halves(emb, model)
        row[f"{label}, CLS half"] = knn_f1(cls, labels)
        row[f"{label}, bag half"] = knn_f1(bag, labels)
    return row


def mean_over(rows: list[dict[str, float]]) -> dict[str, float]:
    """Each key's mean over the rows that have it (3 decimals, first-seen key order): a variant or an
    ``n`` that exists only on some datasets is averaged over those."""
    import numpy as np

    keys = dict.fromkeys(k for r in rows for k in r)
    return {k: round(float(np.mean([r[k] for r in rows if k in r])), 3) for k in keys}


def write_means(per_dataset: dict[str, dict[str, float]], out: str, *, command: str, model: str,
                seconds: float, extra: dict | None = None) -> None:
    """Print each column's mean over the datasets and write the zero-shot diagnostics' JSON to ``out``:
    the command, the model, the metric, the per-dataset rows, the means and the seconds taken, then
    the entries of ``extra``."""
    import json

    from cellweave._io_utils import atomic_write_text

    names = list(next(iter(per_dataset.values())))
    mean = {n: round(sum(r[n] for r in per_dataset.values()) / len(per_dataset), 3) for n in names}
    for n in names:
        print(f"{n:45s} {mean[n]:.3f}")
    atomic_write_text(out, json.dumps({"command": command, "model": model, "metric": "kNN macro-F1 (k=15, 5-fold, seed 0)",
                                       "per_dataset": per_dataset, "mean": mean, "seconds": round(seconds, 1),
                                       **(extra or {})}, indent=1))
