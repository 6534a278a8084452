"""Issue 12 positive control: can pretraining transfer anything when the corpus shares biology with new data?

Thirty sessions of recipes pretrained on the mirror's datasets tie random weights of the architecture
on the development panel, zero-shot and adapted. That leaves two explanations: the corpus (13-20
small datasets, mostly human blood, about 100 MB in all) holds too little that carries over to a mouse
brain or pancreas, or the method (objective, architecture, CPU budget) cannot learn and transfer
shared structure even where it exists. This script tells them apart on synthetic data built so that
it does exist, as a positive control.

**The synthetic world.** One gene universe (real human gene names, so the vocabulary and tokenizer
treat the cells as they treat real ones), one baseline profile and a set of gene programmes (disjoint
gene sets of equal size), shared by every dataset. A cell type is a combination of programmes, each
up-regulated by a fold change in its genes; cells vary in each programme's activity (log-normal). Two
programmes are nuisance states (a proliferation-like and a stress-like one) that any cell may carry,
independent of its type, so the largest variance of a dataset is not all type. Each dataset measures
its own random share of the genes, has its own gene-level technical shift and library sizes, and draws
its counts from a negative binomial (the generative model of scVI and of Splatter, Zappia et al. 2017,
reduced to what the question needs).

**Corpus and held-out data.** The corpus datasets draw their types from one pool of programme
combinations; the held-out datasets draw theirs from a disjoint pool: their types are new, their
programmes are not. Held-out datasets are small and shallow (few cells, few counts per cell), the
regime where a prior learned elsewhere should matter most and where PCA of the dataset's own cells has
least to go on. A model that learned the programmes from the corpus can read them in a new dataset;
random weights cannot.

**Scored** on each held-out dataset (kNN macro-F1, k=15, stratified 5-fold, the panel's
:func:`~cellweave.bench.knn_accuracy`): each model's zero-shot embedding and its CLS half, random
weights of its architecture, the same adapted without labels by ``cellweave adapt``'s default head from
each start (point 3's comparison), PCA-50 of the standardized log-normalized HVGs (the panel's
baseline), and the oracle: each cell's log mean expression of every programme's genes, what a model
that knew the programmes exactly could give.

Two steps::

    .venv/bin/python benchmarks/positive_control.py make --out build/exp/pc/data
    .venv/bin/cellweave pretrain build/exp/pc/data/corpus/*.h5ad --preset tiny --out build/exp/pc/model \\
        --max-epochs 3 --seed 0 --value-encoding log1p --profile-skip --token-selection deviation \\
        --fixed-feature-tables --count-likelihood --embed-hvg-tokens 2000
    .venv/bin/python benchmarks/positive_control.py score --data build/exp/pc/data \\
        --models build/exp/pc/model --out positive_control.json

``make`` takes seconds; ``score`` about a minute per model and held-out dataset on two cores.

**Choosing a run's epoch without the scored datasets** (issue 12, forty-third session): ``make --validation 4``
also writes four more datasets of the held-out types to ``OUT/validation/`` (drawn after the six scored ones,
which stay the same), for a run to watch with ``cellweave pretrain ... --snapshot-every 1 --knn-monitor
OUT/validation/*.h5ad --select-epoch knn``; ``score --split validation`` scores models on them instead.
Four sets are too few to choose a readout or a recipe (fiftieth session: on them the CLS state passed PCA
zero-shot, on twelve more and on the scored six it did not); ``--validation 16`` keeps the first four and adds more.

**Readouts**: ``score --pooling cls`` (or ``bag``, ``mean``) reads every model with that pooling instead of its
config's, zero-shot and as the adapted head's input.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

#: Programmes 0 and 1 are the nuisance states every cell may carry; types combine the others.
N_NUISANCE = 2


def world(seed: int, n_genes: int, n_programmes: int, programme_size: int, n_corpus_types: int,
          n_heldout_types: int, programmes_per_type: int) -> dict:
    """The shared biology: baseline log-profile, programmes (gene index sets) and two disjoint pools of
    types (programme combinations) for the corpus and the held-out datasets."""
    rng = np.random.default_rng(seed)
    if n_programmes * programme_size > n_genes:
        raise SystemExit(f"{n_programmes} programmes of {programme_size} genes need at least "
                         f"{n_programmes * programme_size} genes; give more --genes.")
    genes = rng.permutation(n_genes)
    programmes = [genes[i * programme_size:(i + 1) * programme_size].tolist() for i in range(n_programmes)]
    combos: set[tuple[int, ...]] = set()
    while len(combos) < n_corpus_types + n_heldout_types:
        combos.add(tuple(sorted(rng.choice(np.arange(N_NUISANCE, n_programmes), programmes_per_type,
                                           replace=False).tolist())))
    combos_list = [list(c) for c in combos]
    rng.shuffle(combos_list)
    return {"seed": seed, "base": rng.normal(0.0, 1.0, n_genes).tolist(), "programmes": programmes,
            "corpus_types": combos_list[:n_corpus_types], "heldout_types": combos_list[n_corpus_types:]}


def dataset(w: dict, rng: np.random.Generator, types: list[list[int]], *, n_cells: int, depth: float,
            gene_share: float, fold: float, name: str):
    """One dataset of ``w``: ``n_cells`` cells spread evenly over ``types``, each measuring a random
    ``gene_share`` of the genes at a median of ``depth`` counts per cell. Returns an AnnData of counts."""
    import pandas as pd
    import scipy.sparse as sp
    from anndata import AnnData

    from cellweave.data.synthetic import _genes

    base = np.asarray(w["base"])
    n_genes = len(base)
    names = _genes("human", n_genes)
    member = np.zeros((len(w["programmes"]), n_genes))
    for p, idx in enumerate(w["programmes"]):
        member[p, idx] = 1.0
    type_of = np.arange(n_cells) % len(types)
    rng.shuffle(type_of)
    activity = np.zeros((n_cells, len(w["programmes"])))
    for c, t in enumerate(type_of):
        activity[c, types[t]] = rng.lognormal(0.0, 0.25, len(types[t]))
    carries = rng.random((n_cells, N_NUISANCE)) < 0.4  # nuisance states, whatever the type
    activity[:, :N_NUISANCE] = carries * rng.lognormal(0.0, 0.25, (n_cells, N_NUISANCE))
    log_mu = base + rng.normal(0.0, 0.2, n_genes) + np.log(fold) * activity @ member
    profile = np.exp(log_mu - log_mu.max(axis=1, keepdims=True))
    profile /= profile.sum(axis=1, keepdims=True)
    library = rng.lognormal(np.log(depth), 0.4, n_cells)
    mu = profile * library[:, None]
    theta = 10.0
    counts = rng.negative_binomial(theta, theta / (theta + mu)).astype(np.float32)
    keep = np.sort(rng.choice(n_genes, int(round(gene_share * n_genes)), replace=False))
    obs = pd.DataFrame(index=[f"{name}_cell{i}" for i in range(n_cells)])
    obs["cell_type"] = pd.Categorical(["+".join(f"P{p}" for p in types[t]) for t in type_of])
    obs["type_index"] = type_of
    var = pd.DataFrame({"gene_id": names["ensembl_gene_id"].to_numpy()[keep]},
                       index=pd.Index(names["gene_symbol"].to_numpy()[keep]))
    adata = AnnData(X=sp.csr_matrix(counts[:, keep]), obs=obs, var=var)
    adata.uns["x_kind"] = "counts"
    adata.uns["synthetic_world"] = {"name": name, "depth": depth, "gene_share": gene_share, "fold": fold}
    adata.obsm["programme_scores"] = _programme_scores(counts, library, member)
    return adata


def _programme_scores(counts: np.ndarray, library: np.ndarray, member: np.ndarray) -> np.ndarray:
    """The oracle: each cell's log mean normalized expression over every programme's genes (all genes,
    measured or not: an upper bound for any representation of the measured ones)."""
    norm = counts / library[:, None] * 1e4
    return np.log1p(norm @ member.T / member.sum(axis=1))


def make(args: argparse.Namespace) -> None:
    out = Path(args.out)
    w = world(args.seed, args.genes, args.programmes, args.programme_size, args.corpus_types, args.heldout_types,
              args.programmes_per_type)
    rng = np.random.default_rng(args.seed + 1)
    (out / "heldout").mkdir(parents=True, exist_ok=True)
    if args.heldout_only:  # the mismatch control: another world's biology in the same genes, no corpus
        args.corpus = 0
    else:
        (out / "corpus").mkdir(parents=True, exist_ok=True)
    for i in range(args.corpus):
        pick = rng.choice(len(w["corpus_types"]), args.types_per_dataset, replace=False)
        ad = dataset(w, rng, [w["corpus_types"][j] for j in pick], n_cells=args.corpus_cells, depth=args.corpus_depth,
                     gene_share=args.gene_share, fold=args.fold, name=f"corpus{i:02d}")
        ad.write_h5ad(out / "corpus" / f"corpus{i:02d}.h5ad")
    # Validation datasets are drawn after the scored ones (so those stay the same with or without them), from
    # the same pool of new types: what a pretraining run's kNN monitor may watch (--knn-monitor).
    if args.validation:
        (out / "validation").mkdir(parents=True, exist_ok=True)
    for i in range(args.heldout + args.validation):
        pick = rng.choice(len(w["heldout_types"]), args.types_per_dataset, replace=False)
        ad = dataset(w, rng, [w["heldout_types"][j] for j in pick], n_cells=args.heldout_cells,
                     depth=args.heldout_depth, gene_share=args.gene_share, fold=args.fold, name=f"heldout{i:02d}")
        ad.write_h5ad(out / ("heldout" if i < args.heldout else "validation") / f"heldout{i:02d}.h5ad")
    (out / "world.json").write_text(json.dumps({"arguments": vars(args) | {"func": None}, "world": w}, indent=1))
    print(f"wrote {args.corpus} corpus, {args.heldout} held-out and {args.validation} validation datasets to {out}")


def score(args: argparse.Namespace) -> None:
    from cellweave._system import keep_torch_threads

    keep_torch_threads()
    import anndata as ad

    from _diagnostics import halves, knn_f1, mean_over, random_weights

    from cellweave.bench import pca_hvg_embedding
    from cellweave.models import CellWeave
    from cellweave.train import adapt

    from cellweave.train import start_module

    models = {m: CellWeave.load(m) for m in args.models}
    if args.pooling != "config":  # pooling only changes what embed returns (CellWeaveConfig.pooling)
        for path, model in models.items():
            if model.config.readout_latent:
                raise SystemExit(f"{path}: an adapted model's latent readout was trained on its "
                                 f"{model.config.pooling!r} pooling; score it without --pooling, or pass the model "
                                 "it was adapted from.")
            model.config.pooling = args.pooling
    first = models[args.models[0]]
    models["random weights"] = random_weights(first)
    if args.gene_tables:  # random weights with the first model's trained gene tables put back
        models["random weights + its gene tables"] = CellWeave(first.config, first.vocab,
                                                               module=start_module(first, "genes", seed=0).eval())
    t0 = time.perf_counter()
    per_dataset = {}
    for path in sorted(Path(args.data, args.split).glob("*.h5ad")):
        data = ad.read_h5ad(path)
        labels = data.obs["cell_type"].astype(str).to_numpy()
        row = {"PCA (HVG)": knn_f1(pca_hvg_embedding(data, seed=0), labels),
               "oracle programme scores": knn_f1(data.obsm["programme_scores"], labels)}
        for label, model in models.items():
            emb = model.embed(data, seed=0, progress=False)[0]
            row[label] = knn_f1(emb, labels)
            if model.config.pooling == "cls+bag":
                cls, bag = halves(emb, model)
                row[f"{label}, CLS half"] = knn_f1(cls, labels)
                row[f"{label}, bag half"] = knn_f1(bag, labels)
            if args.adapt:
                adapted = adapt(data, model=model, seed=0, progress=False)
                row[f"{label}, adapted"] = knn_f1(adapted.embed(data, seed=0, progress=False)[0], labels)
        per_dataset[path.stem] = row
        print(path.stem, " ".join(f"{k}={v:.3f}" for k, v in row.items()), flush=True)
    means = mean_over(list(per_dataset.values()))
    print("mean", " ".join(f"{k}={v:.3f}" for k, v in means.items()))
    world_args = json.loads(Path(args.data, "world.json").read_text())["arguments"]
    result = {"command": "benchmarks/positive_control.py score --models " + " ".join(args.models)
              + (" --adapt" if args.adapt else "") + (" --gene-tables" if args.gene_tables else "")
              + (f" --split {args.split}" if args.split != "heldout" else "")
              + (f" --pooling {args.pooling}" if args.pooling != "config" else ""),
              "pooling": args.pooling, "world": world_args, "models": args.models,
              "seconds": round(time.perf_counter() - t0, 1),
              "mean": means, "per_dataset": per_dataset}
    from cellweave._io_utils import atomic_write_json

    atomic_write_json(args.out, result)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="step", required=True)
    m = sub.add_parser("make", help="write the synthetic corpus and held-out datasets")
    m.add_argument("--out", required=True)
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--genes", type=int, default=3000)
    m.add_argument("--programmes", type=int, default=60)
    m.add_argument("--programme-size", type=int, default=25)
    m.add_argument("--programmes-per-type", type=int, default=3)
    m.add_argument("--corpus-types", type=int, default=60)
    m.add_argument("--heldout-types", type=int, default=30)
    m.add_argument("--types-per-dataset", type=int, default=8)
    m.add_argument("--corpus", type=int, default=20, help="corpus datasets")
    m.add_argument("--corpus-cells", type=int, default=1500)
    m.add_argument("--corpus-depth", type=float, default=2000.0)
    m.add_argument("--heldout", type=int, default=6, help="held-out datasets")
    m.add_argument("--validation", type=int, default=0,
                   help="also write this many validation datasets of the held-out types (OUT/validation/), drawn "
                        "after the held-out ones, for a run's --knn-monitor (default: 0)")
    m.add_argument("--heldout-cells", type=int, default=400)
    m.add_argument("--heldout-depth", type=float, default=600.0)
    m.add_argument("--gene-share", type=float, default=0.9)
    m.add_argument("--fold", type=float, default=3.0, help="fold change of a programme's genes at activity 1")
    m.add_argument("--heldout-only", action="store_true",
                   help="write held-out datasets only; with another --seed, a world whose programmes and baseline "
                        "differ from the corpus's in the same genes (what a corpus of other tissues offers)")
    m.set_defaults(func=make)
    s = sub.add_parser("score", help="score models on the held-out datasets")
    s.add_argument("--data", required=True)
    s.add_argument("--models", nargs="+", required=True)
    s.add_argument("--adapt", action="store_true", help="also adapt each start with `cellweave adapt`'s default head")
    s.add_argument("--gene-tables", action="store_true",
                   help="also score random weights with the first model's gene tables (adapt's start='genes')")
    s.add_argument("--split", default="heldout", choices=["heldout", "validation"],
                   help="score the held-out datasets (default) or the validation ones (`make --validation N`)")
    s.add_argument("--pooling", default="config", choices=["config", "cls+bag", "cls", "bag", "mean"],
                   help="read every model's cells (zero-shot and the adapted head's input) with this pooling "
                        "instead of its config's (default: config; CellWeaveConfig.pooling)")
    s.add_argument("--out", default="positive_control.json")
    s.set_defaults(func=score)
    args = p.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
