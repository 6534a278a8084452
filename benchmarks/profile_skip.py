"""Issue 12 diagnostic: does a linear path from the input values to the cell state
(``CellWeaveConfig.profile_skip``) make the adapted embedding reach PCA?

On the panel datasets named (default: CA1 neurons, endocrinogenesis, Baron pancreas), kNN macro-F1
(k=15, stratified 5-fold, seed 0) of the embedding after ``cellweave.train.adapt`` (``--steps``
steps or ``--epochs`` passes over the cells, whichever ends first; the dataset's batch key, else its shift key, as the count decoder's covariate) from:

- ``scratch``: random weights, no profile path (the best start of ``adapt_start_points.py``);
- ``scratch + skip``: random weights with the profile path;
- ``pretrained + skip``: the shipped weights with a new, randomly initialized profile path;
- ``scratch + skip, log1p [384]``: random weights with the path, token values log1p of counts
  per 10k instead of within-cell quantiles [and 384 RNA tokens per cell instead of 256];
- ``scratch + skip, log1p, deviation``: as above with 256 tokens chosen by deviation above each
  gene's mean over the dataset's cells instead of by value (``token_selection="deviation"``);

each read out as the cell state (``cls``, which holds the path) and as the shipped pooling
(``cls+bag``). Beside them: PCA-50 on log-normalized HVGs of the same cells (the panel's
baseline), and PCA-50 of what each input encoding lets the model see: the shipped model's tokens
(top 256 genes, within-cell quantiles), all measured genes as quantiles, and the top 256 as log1p,
chosen by value or by deviation (the ceiling a linear path over the tokens can reach). ``--model M`` adds M zero-shot and
adapted the same way (``--starts``: from its weights, from random weights with its gene embeddings, from random
weights)::

    CELLWEAVE_DATA_DIR=../shared/data .venv/bin/python benchmarks/profile_skip.py --out skip.json
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import time

DEFAULT_DATASETS = ("scrna_mouse_ca1_zeisel2015_descend", "scrna_mouse_pancreas_endocrinogenesis_veloviz",
                    "scrna_pancreas_baron2016_human_mouse_cider")
VARIANTS = ("scratch", "scratch + skip", "pretrained + skip", "scratch + skip, log1p", "scratch + skip, log1p 384",
            "scratch + skip, log1p, deviation")
INPUTS = (("input PCA: tokens, quantile", "quantile", True, "value"),
          ("input PCA: all measured, quantile", "quantile", False, "value"),
          ("input PCA: tokens, log1p", "log1p", True, "value"),
          ("input PCA: tokens, log1p, deviation", "log1p", True, "deviation"))


def with_skip(base, *, pretrained: bool, **overrides):
    """``base`` with the profile path added (new weights); the rest pretrained or random.
    ``overrides``: other config fields (only with random weights)."""
    from cellweave.models import CellWeave
    from cellweave.nn import CellWeaveModule

    config = dataclasses.replace(copy.deepcopy(base.config), profile_skip=True, **overrides)
    module = CellWeaveModule(config)
    if pretrained:
        missing, unexpected = module.load_state_dict(base.module.state_dict(), strict=False)
        assert not unexpected and all(k.startswith("profile_") for k in missing), (missing, unexpected)
    return CellWeave(config, base.vocab, module=module, card=copy.deepcopy(base.card))


def input_pca(base, data, encoding: str, *, tokens_only: bool, selection: str = "value"):
    """PCA-50 of the model's RNA input under ``encoding``: each cell's tokens (chosen by
    ``selection``, as ``embed`` tokenizes them; zeros elsewhere) or every measured gene."""
    import numpy as np
    import scipy.sparse as sp
    from sklearn.decomposition import PCA

    from cellweave.data import TokenDataset, Tokenizer

    from cellweave.models import CellWeave

    config = dataclasses.replace(copy.deepcopy(base.config), value_encoding=encoding, token_selection=selection)
    model = CellWeave(config, base.vocab, module=copy.deepcopy(base.module), card=base.card)
    corpus = model.prepare(data)
    if tokens_only:
        ds = TokenDataset([corpus], Tokenizer.from_config(config), mode="embed", seed=0, modalities=["rna"])
        items = [ds[i] for i in range(len(ds))]
        rows = np.concatenate([np.full(it["token_ids"].size, i) for i, it in enumerate(items)])
        X = sp.csr_matrix((np.concatenate([it["values"] for it in items]),
                           (rows, np.concatenate([it["token_ids"] for it in items]))),
                          shape=(len(ds), config.vocab_size))
    else:
        X = next(b for b in corpus.blocks if b.modality == "rna").values
    return PCA(50, random_state=0).fit_transform(X.toarray())


def score_poolings(model, corpus, labels, prefix: str) -> dict[str, float]:
    """kNN macro-F1 of ``model``'s cell state (``cls``) and of its configured pooling on ``corpus``."""
    from _diagnostics import knn_f1

    return {f"{prefix}: {'cls' if pooling == 'cls' else model.config.pooling}":
            knn_f1(model.embed_corpus(corpus, seed=0, progress=False, pooling=pooling), labels)
            for pooling in ("cls", "config")}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", nargs="+", default=list(DEFAULT_DATASETS))
    p.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=VARIANTS)
    p.add_argument("--inputs", nargs="*", default=[i[0] for i in INPUTS], choices=[i[0] for i in INPUTS],
                   help="input ceilings to score (PCA of what each encoding lets the model see)")
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--epochs", type=int, default=3,
                   help="passes over the cells (adapt's default, 3; small datasets reach it before --steps)")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--model", default=None,
                   help="also score this model (e.g. one pretrained with --profile-skip) zero-shot and adapted")
    p.add_argument("--starts", nargs="+", default=["pretrained"], choices=["pretrained", "genes", "random"],
                   help="with --model: adapt it from these starts (adapt's start=: its weights, random weights "
                        "with its gene embeddings, random weights)")
    p.add_argument("--out", default="profile_skip.json")
    args = p.parse_args()
    from cellweave._system import keep_torch_threads

    keep_torch_threads()  # scanpy's first numba call would otherwise lift torch's thread limit

    from _diagnostics import knn_f1, panel_selection

    from cellweave.bench import pca_hvg_embedding
    from cellweave.models import CellWeave
    from cellweave.train import adapt

    base = CellWeave.load(None)
    own = CellWeave.load(args.model) if args.model else None
    results: dict[str, dict[str, float]] = {}
    for d in panel_selection(args.datasets):

        def f1(emb) -> float:
            return knn_f1(emb, d.labels)

        res: dict[str, float] = {"PCA (HVG)": f1(pca_hvg_embedding(d.adata, seed=0))}
        for label, encoding, tokens_only, selection in INPUTS:
            if label in args.inputs:
                res[label] = f1(input_pca(base, d.model_input, encoding, tokens_only=tokens_only, selection=selection))
        print(d.name, res, flush=True)
        if own is not None:
            t = time.perf_counter()
            corpus = own.prepare(d.model_input)
            res.update(score_poolings(own, corpus, d.labels, f"{own.name} zero-shot"))
            res[f"{own.name}: seconds"] = round(time.perf_counter() - t, 1)
            for start in args.starts:
                t = time.perf_counter()
                adapted = adapt(d.model_input, model=own, batch_key=d.batch_key or d.shift_key, max_steps=args.steps,
                                max_epochs=args.epochs, seed=0, progress=False, lr=args.lr, start=start)
                label = f"{own.name} adapted" + ("" if start == "pretrained" else f" from {start}")
                res.update(score_poolings(adapted, corpus, d.labels, label))
                res[f"{label}: seconds"] = round(time.perf_counter() - t, 1)
            print(d.name, {k: v for k, v in res.items() if k.startswith(own.name)}, flush=True)
        for name in args.variants:
            t = time.perf_counter()
            overrides = {}
            if "log1p" in name:
                overrides["value_encoding"] = "log1p"
            if "deviation" in name:
                overrides["token_selection"] = "deviation"
            if "384" in name:
                overrides["context_length"] = {**base.config.context_length, "rna": 384}
            start = base if name == "scratch" else with_skip(base, pretrained=name.startswith("pretrained"),
                                                             **overrides)
            adapted = adapt(d.model_input, model=start, batch_key=d.batch_key or d.shift_key, max_steps=args.steps,
                            max_epochs=args.epochs, seed=0, progress=False, lr=args.lr,
                            from_scratch=name.startswith("scratch"))
            res.update(score_poolings(adapted, adapted.prepare(d.model_input), d.labels, name))
            res[f"{name}: seconds"] = round(time.perf_counter() - t, 1)
            print(d.name, {k: v for k, v in res.items() if k.startswith(name)}, flush=True)
        results[d.name] = res
    from cellweave._io_utils import atomic_write_json

    atomic_write_json(args.out, {"command": "benchmarks/profile_skip.py", "steps": args.steps, "epochs": args.epochs,
                                 "lr": args.lr, "metric": "kNN macro-F1 (k=15, 5-fold, seed 0)", "results": results})


if __name__ == "__main__":
    main()
