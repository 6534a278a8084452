"""Issue 12 diagnostic: does the count-likelihood readout transfer when it is trained on a corpus?

``cellweave adapt`` (``--method head``) trains scVI's variational readout (a 10-d latent, a
negative-binomial decoder of the 2,000 most variable genes; Lopez et al. 2018) on the frozen
model's embedding of the user's own cells, and lifts kNN macro-F1 on the panel from 0.69 to 0.77,
above PCA's 0.73; random weights of the architecture under the same readout do as well. The
readout is what works, and it is fit on the data it describes. This script asks whether it also
works zero-shot: one encoder of the frozen embedding, shared by every corpus dataset, trained with
a decoder per dataset (each of its own 2,000 variable genes, so no gene alignment is needed), then
applied to panel datasets it never saw. That is the scArches picture of a reference model
(Lotfollahi et al. 2022) with the foundation model's embedding as the encoder's input; what differs
is that the query is embedded by the shared encoder without any further training.

Design (the seventeenth session's folds): for the panel datasets of one fold, the corpus is the
registry's pretraining datasets outside the panel (``make pretrained``'s; up to 4,000 cells each)
plus the other fold's panel datasets (the cells the panel holds of each, up to 6,000). Every step draws one dataset uniformly
and 128 of its cells; the negative ELBO with the KL weight warmed up over the first third of the
steps, AdamW at 1e-3 (``fit_count_readout``'s settings). The embedding is standardized within each
dataset (its own cells' mean and scale, no labels), as ``LatentReadout`` standardizes with the
adapted cells' statistics.

Rows per held-out dataset (kNN macro-F1, k=15, 5-fold, seed 0): each input's zero-shot embedding,
the corpus readout's latent on it (``+ corpus readout``, zero-shot), with ``--own`` the readout fit
on the dataset itself (``+ own readout``, adapted: what ``adapt`` does), and PCA-50 of the HVGs.
Inputs: the model's embedding and random weights of its architecture (the control for
pretraining). Writes OUT (JSON) after every dataset, with ``"complete": false`` until the last::

    CELLWEAVE_DATA_DIR=../shared/data .venv/bin/python benchmarks/corpus_readout.py --fold a [--own] --out OUT

``--warm-start`` asks whether the corpus readout helps as a starting point rather than as the
answer: on each held-out dataset, ``fit_count_readout`` (``adapt``'s readout, the dataset's batch
key, else its shift key, as the decoder's covariate, as the panel adapts) from random encoder
weights (``+ own readout``) and from the corpus readout of the same input (``+ own readout from
corpus``, ``init=``), for each of ``--own-epochs`` (default 100, ``adapt``'s, and 10) and
``--own-seeds`` (mean over seeds; ``, sd`` beside it with more than one). A warm start of the
reference model, as scArches fine-tunes a reference-trained encoder on the query (Lotfollahi et al.
2022). With random weights of the architecture under a random readout as the scratch control, this
is point 3's pretrained-against-scratch comparison with a pretrained readout.
"""

from __future__ import annotations

import sys
import time

import numpy as np

FOLDS = {
    "a": ("multibatch_cellbench_sc_mixology", "scrna_merfish_ref_spacexr", "scrna_mouse_bone_marrow_stroma_cytosimplex",
          "scrna_mouse_cerebellum_ref_spacexr", "scrna_mouse_intestine_haber2017_scdesign2",
          "scrna_pancreas_baron2016_human_mouse_cider", "spatial_osmfish_scvi"),
    "b": ("prot_citeseq_adt_13studies_adtnorm", "scrna_mouse_ca1_zeisel2015_descend", "scrna_mouse_hippocampus_ref_spacexr",
          "scrna_mouse_pancreas_endocrinogenesis_veloviz", "scrna_pbmc4k_10x_soupx", "spatial_novosparc_intestine"),
}
MAX_CELLS = 4000


def standardized(x: np.ndarray) -> np.ndarray:
    """Each column z-scored over the dataset's own cells."""
    return (x - x.mean(0)) / np.maximum(x.std(0), 1e-6)


def counted_rows(data, n_counted: int) -> np.ndarray:
    """Rows of ``data``'s embedding that ``decoded_counts`` counted: every cell of an AnnData; of a
    MuData, the cells of the modality it decoded (RNA, else the first with counts: the one of
    ``n_counted`` cells among them)."""
    from cellweave.io import as_modalities

    if data.n_obs == n_counted:
        return np.arange(n_counted)
    mods = as_modalities(data)
    mod = mods["rna"] if "rna" in mods and mods["rna"].n_obs == n_counted else next(
        m for m in mods.values() if m.n_obs == n_counted)
    return data.obs_names.get_indexer(mod.obs_names)


def corpus_items(held_out: tuple[str, ...]):
    """``(name, data)`` of the corpus: the registry's pretraining datasets outside the panel, up to
    ``MAX_CELLS`` cells each (seed 0), then the panel's datasets outside ``held_out`` as the panel
    holds them."""
    from _diagnostics import panel_selection

    from cellweave import datasets

    table = datasets.list()
    table = table[table["pretrain"]]
    names = [n for n, tasks in zip(table["name"], table["tasks"]) if "panel" not in tasks and datasets.is_available(n)]
    for name in names:
        data = datasets.load(name)
        if data.n_obs > MAX_CELLS:
            idx = np.sort(np.random.default_rng(0).choice(data.n_obs, MAX_CELLS, replace=False))
            data = data[idx].copy()
        yield name, data
    for d in panel_selection():
        if d.name not in held_out:
            yield d.name, d.model_input


def train_corpus_readout(inputs: list[tuple[np.ndarray, np.ndarray]], *, n_latent: int, steps: int, seed: int = 0):
    """The shared encoder (``LatentReadout``, scVI's sizes) trained with one ``CountDecoder`` per
    dataset on ``inputs`` (standardized embedding, raw counts of its variable genes) for ``steps``
    steps, one uniformly drawn dataset of 128 cells per step. Returns the encoder and the last
    hundred steps' mean NLL per cell."""
    import torch

    from cellweave.nn import CountDecoder, LatentReadout, nb_nll_sum
    from cellweave.train._adapt import HEAD_BATCH_SIZE, HEAD_HIDDEN, HEAD_LR

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    encoder = LatentReadout(inputs[0][0].shape[1], n_latent, HEAD_HIDDEN)
    decoders = torch.nn.ModuleList(CountDecoder(n_latent, c.shape[1], 1, d_hidden=HEAD_HIDDEN) for _, c in inputs)
    tensors = [(torch.as_tensor(e, dtype=torch.float32), torch.as_tensor(c, dtype=torch.float32)) for e, c in inputs]
    opt = torch.optim.AdamW([*encoder.parameters(), *decoders.parameters()], lr=HEAD_LR, weight_decay=1e-4)
    warmup = max(1, steps // 3)
    recent = []
    for step in range(steps):
        k = int(rng.integers(len(tensors)))
        emb, counts = tensors[k]
        idx = torch.as_tensor(rng.choice(len(emb), min(HEAD_BATCH_SIZE, len(emb)), replace=False))
        mu, logvar = encoder.posterior(emb[idx])
        z = encoder.sample(mu, logvar)
        mean, theta = decoders[k](z, torch.zeros(len(idx), dtype=torch.long), counts[idx].sum(1, keepdim=True))
        nll = nb_nll_sum(counts[idx], mean, theta) / len(idx)
        kl = encoder.kl(mu, logvar).mean()
        loss = nll + min(1.0, step / warmup) * kl
        opt.zero_grad()
        loss.backward()
        opt.step()
        recent = (recent + [nll.item() / counts.shape[1]])[-100:]
    encoder.eval()
    return encoder, float(np.mean(recent))


def main() -> None:
    import scipy.sparse as sp
    import torch
    from _diagnostics import knn_f1, panel_arguments, panel_selection, random_weights, write_means

    from cellweave.bench import pca_hvg_embedding
    from cellweave.models import CellWeave
    from cellweave.train import decoded_counts, fit_count_readout

    parser = panel_arguments(__doc__, "corpus_readout.json")
    parser.add_argument("--fold", choices=sorted(FOLDS), required=True, help="the panel fold held out (scored)")
    parser.add_argument("--n-latent", type=int, nargs="+", default=[10], help="latent widths (default 10, scVI's)")
    parser.add_argument("--steps", type=int, default=3000, help="training steps of the corpus readout")
    parser.add_argument("--own", action="store_true", help="also fit the readout on each held-out dataset itself")
    parser.add_argument("--warm-start", action="store_true",
                        help="fit each held-out dataset's own readout from random and from the corpus readout's weights")
    parser.add_argument("--own-epochs", type=int, nargs="+", default=[100, 10], help="epochs of --warm-start's fits")
    parser.add_argument("--own-seeds", type=int, nargs="+", default=[0], help="seeds of --warm-start's fits")
    args = parser.parse_args()
    from cellweave._system import keep_torch_threads

    keep_torch_threads()
    held_out = FOLDS[args.fold]
    model = CellWeave.load(args.model)
    models = {"cellweave": model, "untrained": random_weights(model)}
    t0 = time.perf_counter()

    corpus = {name: [] for name in models}
    for name, data in corpus_items(held_out):
        counts, why = decoded_counts(data, None, any_modality=True)
        if counts is None:
            print(f"corpus: {name} left out ({why})", flush=True)
            continue
        dense = counts.toarray()
        rows = counted_rows(data, dense.shape[0])
        for label, m in models.items():
            emb = m.embed(data, seed=0, progress=False, dataset=name)[0][rows]
            corpus[label].append((standardized(emb), dense))
        print(f"corpus: {name}, {counts.shape[0]} cells, {counts.shape[1]} genes", flush=True)
    encoders, fit = {}, {}
    for label in models:
        for n in args.n_latent:
            t = time.perf_counter()
            encoders[label, n], nll = train_corpus_readout(corpus[label], n_latent=n, steps=args.steps)
            fit[f"{label}, latent {n}"] = {"nll_per_gene_last_100_steps": round(nll, 4),
                                           "seconds": round(time.perf_counter() - t, 1)}
            print(f"corpus readout on {label}, latent {n}: {fit[f'{label}, latent {n}']}", flush=True)
    del corpus

    per_dataset = {}
    scored = held_out if args.datasets is None else [n for n in args.datasets if n in held_out]
    command = " ".join(["benchmarks/corpus_readout.py", *sys.argv[1:]])
    for d in panel_selection(scored):
        row = {"PCA (HVG)": knn_f1(pca_hvg_embedding(d.adata, seed=0), d.labels)}
        counts = decoded_counts(d.model_input, None, any_modality=True)[0] if args.own or args.warm_start else None
        for label, m in models.items():
            emb = m.embed(d.model_input, seed=0, progress=False, dataset=d.name)[0]
            row[label] = knn_f1(emb, d.labels)
            x = torch.as_tensor(standardized(emb), dtype=torch.float32)
            for n in args.n_latent:
                with torch.no_grad():
                    row[f"{label} + corpus readout ({n})"] = knn_f1(encoders[label, n](x).numpy(), d.labels)
            if counts is not None and args.own:
                readout = fit_count_readout(emb, sp.csr_matrix(counts), None, seed=0)[0]
                with torch.no_grad():
                    row[f"{label} + own readout (10)"] = knn_f1(
                        readout(torch.as_tensor(np.ascontiguousarray(emb), dtype=torch.float32)).numpy(), d.labels)
            if counts is not None and args.warm_start:
                row.update(warm_start_rows(label, emb, counts, d, encoders[label, 10], args.own_epochs, args.own_seeds))
        per_dataset[d.name] = row
        print(d.name, " ".join(f"{k}={v:.3f}" for k, v in row.items()), flush=True)
        write_means(per_dataset, args.out, command=command, model=model.name, seconds=time.perf_counter() - t0,
                    extra={"corpus_fit": fit, "complete": False})
    write_means(per_dataset, args.out, command=command, model=model.name, seconds=time.perf_counter() - t0,
                extra={"corpus_fit": fit, "complete": True})


def warm_start_rows(label: str, emb: np.ndarray, counts, d, corpus_encoder, epochs: list[int], seeds: list[int]) -> dict:
    """``--warm-start``'s rows for one input of one held-out dataset: kNN macro-F1 of the readout fit on
    the dataset from random weights and from ``corpus_encoder``, for each number of epochs (mean over
    ``seeds``, and their sd), and the seconds per fit."""
    import scipy.sparse as sp
    import torch
    from _diagnostics import knn_f1, panel_batch_codes

    from cellweave.train import fit_count_readout

    batches = panel_batch_codes(d)
    x = torch.as_tensor(np.ascontiguousarray(emb), dtype=torch.float32)
    counted = counted_rows(d.model_input, counts.shape[0])  # fit on the cells with counts, score every cell
    counts, fit_emb, batches = sp.csr_matrix(counts), emb[counted], batches[counted]
    rows = {}
    for n_epochs in epochs:
        for start, init in (("", None), (" from corpus", corpus_encoder)):
            name = f"{label} + own readout{start}, {n_epochs} epochs"
            t = time.perf_counter()
            scores = []
            for s in seeds:
                readout = fit_count_readout(fit_emb, counts, batches, epochs=n_epochs, seed=s, init=init)[0]
                with torch.no_grad():
                    scores.append(knn_f1(readout(x).numpy(), d.labels))
            rows[name] = round(float(np.mean(scores)), 3)
            if len(seeds) > 1:
                rows[f"{name}, sd"] = round(float(np.std(scores)), 3)
            rows[f"{name}, s per fit"] = round((time.perf_counter() - t) / len(seeds), 1)
    return rows


if __name__ == "__main__":
    main()
