"""Issue 12: is a model's integration gain on the Baron islets cross-species alignment? A second
cross-species set, made from two panel datasets.

The forty-eighth session's thinned views + profile path model gained over its random weights on one
panel integration set only, the Baron human and mouse islets with the species as the batch (scIB
total 0.813 against 0.654); a depth shift made on purpose did not reproduce the gain
(``depth_shift_integration.py``). The mirror holds no second cross-species dataset, but it holds a
second pancreas study: the Bastidas-Ponce et al. (2019) mouse E15.5 endocrinogenesis cells (10x).
From the endocrine types both studies label (alpha, beta and delta cells) this script builds three
integration sets, the source as the batch:

- ``Baron human + Bastidas-Ponce mouse``: across species, study, protocol (inDrop / 10x) and age;
- ``Baron mouse + Bastidas-Ponce mouse``: the same study shift without the species (the control);
- ``Baron human + Baron mouse``: the panel's own set restricted to the three shared types;

and scores the panel's own Baron set (five types, the species as the batch) beside them, in the
same environment and seeds.

A gain that is cross-species alignment shows on the first and third sets and not on the second.
Genes are joined on cellweave's gene keys (:func:`cellweave.genes.map_features`: a mouse gene takes
its human ortholog's Ensembl ID where Ensembl lists one-to-one orthology; the Baron table already
names its mouse cells' genes by their human orthologs' symbols), keeping the genes both sources
measure, under the Baron table's names. Each set is scored by the panel's integration protocol
(:func:`cellweave.bench.tasks.panel.integration_records`: scIB total, 0.6 bio conservation + 0.4
batch correction; kBET left out as in ``--quick``): each model zero-shot and adapted to the set's
cells (the source as the count decoder's covariate), the first model's architecture adapted from
random weights in the same budget, all with Harmony, beside Harmony on PCA and scVI, for each seed::

    .venv/bin/python benchmarks/cross_species_integration.py --models cellweave-tiny M \\
        --seeds 0 1 2 --out cross_species_integration.json

Nothing is chosen here: every arm is scored on the same cells. The sets are small (105 Baron cells
of a species against 238 Bastidas-Ponce cells), so read the seeds' spread beside the means, and the
thread count too: on the panel's Baron set (328 cells) an adapted arm's score moved by up to 0.20
between a run on one thread and on two (``OMP_NUM_THREADS``; the record names the thread count),
as whether Harmony mixes the species tips with floating-point reduction order; the three paired
sets moved by at most 0.010 (HISTORY, fifty-first session).
"""

from __future__ import annotations

import shlex
import sys
import time

#: The panel datasets the sets are made from.
BARON = "scrna_pancreas_baron2016_human_mouse_cider"
BASTIDAS_PONCE = "scrna_mouse_pancreas_endocrinogenesis_veloviz"
#: Cell types both studies label (compared in lower case).
SHARED_TYPES = ("alpha", "beta", "delta")
#: The batch key of the sets.
SOURCE = "source"


def paired_set(name: str, first, second, types=SHARED_TYPES, *, min_genes: int = 50):
    """``PanelData`` of two ``(label, adata, labels, organism)`` sources: the cells of ``types``
    (labels compared in lower case), ``obs[SOURCE]`` naming the source, the genes both measure
    (joined on cellweave's RNA gene keys, :func:`cellweave.genes.map_features`; a key held by several
    features of one source is dropped there) under
    the first source's names and ``var["gene_id"]`` set to the key. Refuses sources that share no
    type or fewer than ``min_genes`` genes."""
    import anndata as ad
    import numpy as np
    import pandas as pd
    import scipy.sparse as sp

    from cellweave.bench.tasks.panel import PanelData
    from cellweave.data import log_normalize
    from cellweave.genes import map_features

    parts, columns = [], []
    for label, adata, labels, organism in (first, second):
        keys = pd.Series(np.asarray(map_features(adata.var, modality="rna", organism=organism).keys))
        unique = (keys != "") & ~keys.duplicated(keep=False)
        columns.append(pd.Series(np.flatnonzero(unique), index=keys[unique].to_numpy()))
        lower = pd.Series(np.asarray(labels).astype(str)).str.strip().str.lower().to_numpy()
        parts.append((label, adata, lower, np.isin(lower, types)))
    shared = columns[0].index.intersection(columns[1].index, sort=False)
    present = [set(lower[keep]) for _, _, lower, keep in parts]
    if not present[0] & present[1]:
        raise ValueError(f"{name}: the two sources share none of the types {', '.join(types)}")
    if len(shared) < min_genes:
        raise ValueError(f"{name}: the two sources share {len(shared)} mapped genes; at least {min_genes} are needed")
    blocks, obs = [], []
    for (label, adata, lower, keep), cols in zip(parts, columns):
        x = sp.csr_matrix(adata.X, dtype=np.float32)[np.flatnonzero(keep)][:, cols[shared].to_numpy()]
        blocks.append(x)
        obs.append(pd.DataFrame({"cell_type": lower[keep], SOURCE: label},
                                index=[f"{label}:{c}" for c in adata.obs_names[keep]]))
    names = parts[0][1].var_names[columns[0][shared].to_numpy()]
    combined = ad.AnnData(sp.vstack(blocks).tocsr(), obs=pd.concat(obs),
                          var=pd.DataFrame({"gene_id": np.asarray(shared)}, index=names))
    combined.obs[SOURCE] = combined.obs[SOURCE].astype("category")
    kept = np.asarray(combined.X.sum(axis=1)).ravel() > 0
    combined = combined[kept].copy()
    labels = combined.obs["cell_type"].to_numpy().astype(str)
    return PanelData(name, combined, combined, labels, None, SOURCE, log_normalize(combined))


def pancreas_sets(baron, bastidas_ponce) -> list:
    """The three sets of the module docstring from the two panel datasets (``PanelData``), and the
    Baron islets as the panel has them (all five types, the species as the batch) as a fourth."""
    import numpy as np

    species = baron.adata.obs["species"].astype(str).to_numpy()
    sources = {}
    for sp_name, latin in (("human", "Homo sapiens"), ("mouse", "Mus musculus")):
        rows = np.flatnonzero(species == latin)
        if not len(rows):
            raise ValueError(f"{baron.name}: no cells with obs['species'] == {latin!r}")
        sources[sp_name] = (f"Baron {sp_name}", baron.adata[rows].copy(), np.asarray(baron.labels)[rows], "human")
    mouse = ("Bastidas-Ponce mouse", bastidas_ponce.adata, np.asarray(bastidas_ponce.labels), "mouse")
    return [paired_set("Baron human + Bastidas-Ponce mouse", sources["human"], mouse),
            paired_set("Baron mouse + Bastidas-Ponce mouse", sources["mouse"], mouse),
            paired_set("Baron human + Baron mouse", sources["human"], sources["mouse"]), baron]


def composition(d) -> dict[str, int]:
    """Cells of ``d`` per batch and type, as ``{"batch / type": n}``."""
    import numpy as np
    import pandas as pd

    counts = pd.crosstab(d.adata.obs[d.batch_key].astype(str).to_numpy(), np.asarray(d.labels).astype(str))
    return {f"{b} / {t}": int(counts.loc[b, t]) for b in counts.index for t in counts.columns if counts.loc[b, t]}


def main() -> None:
    import argparse

    from _diagnostics import panel_selection
    from depth_shift_integration import integration_rows, mean_rows, print_table

    from cellweave import CellWeave
    from cellweave._io_utils import atomic_write_json
    from cellweave._system import hardware, keep_torch_threads

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", required=True, help="model folders or shipped names")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--sets", nargs="+", default=None,
                   help="names of the sets to score (default: all four; the panel's Baron set by its dataset name)")
    p.add_argument("--no-scratch", action="store_true", help="leave out the random-weight control")
    p.add_argument("--precision", default="32-true", choices=["32-true", "bf16-mixed"])
    p.add_argument("--out", default="cross_species_integration.json")
    args = p.parse_args()
    keep_torch_threads()

    found = {d.name: d for d in panel_selection([BARON, BASTIDAS_PONCE])}
    missing = [n for n in (BARON, BASTIDAS_PONCE) if n not in found]
    if missing:
        sys.exit(f"error: {', '.join(missing)} not found; point CELLWEAVE_DATA_DIR at the data mirror "
                 "(see the README's data section)")
    sets = pancreas_sets(found[BARON], found[BASTIDAS_PONCE])
    if args.sets:
        unknown = sorted(set(args.sets) - {d.name for d in sets})
        if unknown:
            sys.exit(f"error: no set named {', '.join(map(repr, unknown))}; the sets are "
                     + ", ".join(repr(d.name) for d in sets))
        sets = [d for d in sets if d.name in args.sets]
    models = [CellWeave.load(m) for m in args.models]
    labels = [m.name for m in models]
    if len(set(labels)) < len(labels):
        labels = [f"{m.name} ({i})" for i, m in enumerate(models)]
    per_set: dict[str, dict[str, dict[str, dict[str, float]]]] = {}
    start = time.perf_counter()
    for d in sets:
        print(f"{d.name}: {d.adata.n_obs} cells, {d.adata.n_vars} genes; "
              + ", ".join(f"{k} {n}" for k, n in composition(d).items()), flush=True)
        for seed in args.seeds:
            rows = integration_rows(models, labels, d, seed, scratch=not args.no_scratch, precision=args.precision)
            per_set.setdefault(d.name, {})[str(seed)] = rows
            print(f"  seed {seed}: " + ", ".join(f"{m} {v['scIB total']:.3f}" for m, v in rows.items()), flush=True)
            atomic_write_json(args.out, {"complete": False, "per_set": per_set})

    means = {}
    for name, by_seed in per_set.items():
        means[name] = mean_rows(by_seed.values())
        print_table(means[name], f"{name}, mean over seeds {', '.join(map(str, args.seeds))}")
    atomic_write_json(args.out, {
        "command": shlex.join(sys.argv), "complete": True, "seeds": args.seeds,
        "sets": {d.name: {"cells": int(d.adata.n_obs), "genes": int(d.adata.n_vars), "batch key": d.batch_key,
                          "cells per batch and type": composition(d)} for d in sets},
        "models": [{"label": label, "name": m.name, "sha256": m.model_hash} for label, m in zip(labels, models)],
        "seconds": round(time.perf_counter() - start, 1), "hardware": hardware(), "means": means,
        "per_set": per_set,
    })


if __name__ == "__main__":
    main()
