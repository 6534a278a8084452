"""Issue 12 diagnostic: what the count-likelihood readout of ``adapt(method="head")`` gets from its input.

``cellweave adapt`` (default ``--method head``) keeps the model frozen and trains a small variational
encoder of its embedding with scVI's negative-binomial decoder of the cells' 2,000 most variable
genes (:func:`cellweave.train.fit_count_readout`). This script trains the same readout, on each
panel dataset (the dataset's batch key, else its shift key, as the decoder's covariate), on three
inputs: the pretrained model's zero-shot embedding (what ``adapt`` does), the embedding of random
weights of the same architecture (the control for pretraining), and PCA (50) of the log-normalized
HVGs (the control for the foundation model as a whole: the readout on the baseline's own input).
kNN macro-F1 (k=15, 5-fold, seed 0) of each input and of each readout's latent, the readout
trained with each of ``--seeds`` (default 0; mean and sd). Writes OUT (JSON)::

    CELLWEAVE_DATA_DIR=../shared/data .venv/bin/python benchmarks/embedding_vae.py [--datasets D ...] [--seeds 0 1 2] --out OUT
"""

from __future__ import annotations

import sys
import time

import numpy as np

INPUTS = ("cellweave", "untrained", "PCA (HVG)")


def main() -> None:
    import torch
    from _diagnostics import knn_f1, panel_arguments, panel_batch_codes, panel_selection, readout_latent, write_means

    from cellweave.bench import pca_hvg_embedding
    from cellweave.models import CellWeave
    from cellweave.nn import CellWeaveModule
    from cellweave.train import decoded_counts

    parser = panel_arguments(__doc__, "embedding_vae.json")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="seeds of the readout's training")
    parser.add_argument("--inputs", nargs="+", default=list(INPUTS), choices=INPUTS,
                        help="the readout's inputs (default: all three)")
    args = parser.parse_args()
    from cellweave._system import keep_torch_threads

    keep_torch_threads()  # scanpy's first numba call would otherwise lift torch's thread limit
    model = CellWeave.load(args.model)
    torch.manual_seed(0)
    untrained = CellWeave(model.config, model.vocab, module=CellWeaveModule(model.config).eval())
    out = {}
    t0 = time.perf_counter()
    for d in panel_selection(args.datasets):
        counts, why = decoded_counts(d.model_input, None, any_modality=True)
        if counts is None:
            print(f"{d.name}: left out ({why})", flush=True)
            continue
        batches = panel_batch_codes(d)
        make = {"cellweave": lambda: model.embed(d.model_input, seed=0, progress=False, dataset=d.name)[0],
                "untrained": lambda: untrained.embed(d.model_input, seed=0, progress=False, dataset=d.name)[0],
                "PCA (HVG)": lambda: pca_hvg_embedding(d.adata, seed=0)}
        inputs = {name: make[name]() for name in args.inputs}
        row = {}
        for name, x in inputs.items():
            row[name] = knn_f1(x, d.labels)
            t = time.perf_counter()
            scores = [knn_f1(readout_latent(x, counts, batches, s), d.labels) for s in args.seeds]
            row[f"{name} + readout"] = round(float(np.mean(scores)), 3)
            if len(scores) > 1:
                row[f"{name} + readout, sd"] = round(float(np.std(scores)), 3)
            row[f"{name} + readout, s per fit"] = round((time.perf_counter() - t) / len(args.seeds), 1)
        out[d.name] = row
        print(d.name, row, flush=True)
    write_means(out, args.out, command=" ".join(["benchmarks/embedding_vae.py", *sys.argv[1:]]),
                model=model.name, seconds=time.perf_counter() - t0)


if __name__ == "__main__":
    main()
