"""Issue 12, point 4: which novelty score says "unknown" for a missing type and not for a shifted one.

On every development-panel dataset, with one model's zero-shot embedding (each dataset embedded
once, all cells together, as the panel does), ``tl.annotate``'s label transfer
(:class:`cellweave.tl.LabelTransfer`) with each ``novelty_score``:

- ``distance``: mean distance to the 15 nearest reference cells (the rule before this script);
- ``softmax``: one minus the top class probability;
- ``combined``: the mean conformal rank of the two (the default before the twenty-eighth session);

``mahalanobis`` (the nearest class mean in the shared covariance's metric),
``distance+mahalanobis+softmax``, ``composition`` (how much more often than chance the query cells
are each other's neighbours than the reference's) and ``combined+composition`` (the default since the
twenty-eighth session: the mean conformal rank of distance, softmax and composition); each combination
also with ``softmax_when_far`` (``, softmax when far``: ``LabelTransfer``'s default since it was measured here; the names without it are the rule
before) and with ``sharpen_when_far`` as well (``, softmax when far, sharpened``: the default since the
eighteenth session; without it, the rule before), and a score of several parts with every default including
``weight_parts`` (``, softmax when far, sharpened, weighted``: each part weighted by how well it tells the
reference's own types left out in turn, the default since the thirtieth session; every other row weighs
the parts equally, the rule before) and with ``sharpen_when_shifted`` as well (``, weighted, sharpened when
shifted``: the softmax part sharpened for any query less sure to the classifier than the held-out reference
cells, not only a far one; the default since the thirty-fifth session; every other row leaves it out, the
rule before); these two rows calibrate a small reference on every cell (``cross_fit``, the default since
the thirty-sixth session), and a third (``, sharpened when shifted, one split``) is the second with one
held-out split, the rule before; every other row keeps one split; each with ``shift_adjust`` (the
default: the query's distances scaled down by the ratio of their median to the held-out reference
cells', when above 1) and without it (``, unadjusted``), each also after Harmony on reference + query
(``align=True``), and each score with a softmax or a composition part with the threshold calibrated on
the reference's batches (``batch_key``: across a shift, the groups of the shift key left in the
reference; for a novel type, the dataset's batch key where it has one), on the panel's own splits and
``--seed`` (default 0):

- **across a shift** (every group of the shift key held out in turn): the share of test cells,
  all of known types, called "unknown" (goal <= 5%), and macro-F1 of the raw prediction over the
  test group's types, as the panel scores it (the published runs before the sixteenth session
  averaged over predicted types too, a reference type absent from the query counting as 0, and so
  read 0.836 where the panel read 0.854 on the same adapted splits);
- **novel type** (each of the 4 largest types left out of a stratified 70% reference): AUROC of
  the score among the 30% query (goal >= 0.90), and the shares of known / novel query cells
  called unknown; beside the panel's baselines on the same splits (logistic-regression
  max-softmax, kNN distance on PCA and after Harmony, and the composition on PCA, all on the
  reference's HVGs). ``--baselines-only`` scores just these (no model, minutes); they do not depend
  on ``--adapt``.

``map-query, rule before``: ``tl.map_query`` before it took ``annotate``'s rule, on the same splits
(reference-standardized embedding, 15 faiss neighbours; "unknown" when the mean neighbour distance
exceeds the 0.99 quantile of the reference cells' own leave-one-out distances; macro-F1 of the
neighbours' Gaussian-weighted vote). ``map_query`` now calls unknown exactly the cells of the
``combined, softmax when far`` row (``combined, batches, softmax when far`` with ``--batch-key``).

``--adapt`` scores the model adapted to each dataset (``cellweave adapt``'s default head, about 35
more minutes) instead of zero-shot; with ``--start random`` the adaptation starts from random weights
of the architecture (the panel's scratch control). ``--scores``, ``--no-align`` and ``--no-unadjusted`` run fewer
variants (every variant on the 256-d zero-shot embedding takes more than 25 minutes on the ADT
dataset alone); ``--seed`` takes another seed of the splits, the embedding and the adaptation.
Prints the means over datasets and writes ``--out`` (JSON, per dataset and mean) after every dataset,
with ``"complete": false`` until the last, so a stopped run keeps what it measured.
Zero-shot with the three original scores it took about 15 minutes on one core::

    CELLWEAVE_DATA_DIR=../shared/data .venv/bin/python benchmarks/novelty_scores.py --model M --out novelty.json
"""

from __future__ import annotations

import time
from collections import defaultdict

import numpy as np

SCORES = ("distance", "softmax", "combined", "mahalanobis", "distance+mahalanobis+softmax", "composition",
          "combined+composition")
#: The suffix of the rows with every default of ``LabelTransfer`` but ``sharpen_when_shifted``: the rule before it.
WEIGHTED = ", softmax when far, sharpened, weighted"
#: The suffix of the rows with every default of ``LabelTransfer`` since ``sharpen_when_shifted``: the rule now.
SHIFTED = WEIGHTED + ", sharpened when shifted"
#: The suffix of the rows with every default but ``cross_fit`` (one held-out split): the rule before it.
ONE_SPLIT = SHIFTED + ", one split"


def map_query_rule_before(ref, labels, query, *, k: int = 15, quantile: float = 0.99):
    """``tl.map_query``'s prediction and "unknown" before it took ``annotate``'s rule: the fields of
    ``LabelTransfer.predict``'s result that this script reads (novelty: the mean neighbour distance)."""
    from types import SimpleNamespace

    import pandas as pd
    from sklearn.preprocessing import StandardScaler

    from cellweave.tl import NeighborIndex, kernel_vote

    scaler = StandardScaler().fit(ref)
    ref_z, query_z = scaler.transform(ref), scaler.transform(query)
    codes, classes = pd.factorize(labels, sort=True)
    index = NeighborIndex(ref_z)
    k = min(k, len(ref_z) - 1)
    idx, dist = index.query(query_z, k)
    vote = np.asarray(classes)[kernel_vote(idx, dist, codes, len(classes)).argmax(axis=1)]
    novelty = dist.mean(axis=1)
    threshold = np.quantile(index.query(ref_z, k + 1)[1][:, 1:].mean(axis=1), quantile)
    return SimpleNamespace(raw_prediction=vote, novelty=novelty, unknown=novelty > threshold)


def main() -> None:
    from _diagnostics import panel_arguments

    p = panel_arguments(__doc__, out="novelty_scores.json")
    p.add_argument("--adapt", action="store_true",
                   help="score the model adapted to each dataset (cellweave adapt's default head, the batch key, "
                        "else the shift key, as covariate; seed 0, as the panel's --adapt pretrained) instead of zero-shot")
    p.add_argument("--start", choices=("pretrained", "random"), default="pretrained",
                   help="with --adapt: adapt from the model's weights (default) or from random weights of its "
                        "architecture (the panel's scratch control)")
    p.add_argument("--scores", nargs="+", choices=SCORES, default=list(SCORES),
                   help="novelty scores to run (default: all); fewer make the run shorter")
    p.add_argument("--no-align", action="store_true", help="leave out the variants after Harmony on reference + query")
    p.add_argument("--no-unadjusted", action="store_true", help="leave out the variants without shift_adjust")
    p.add_argument("--default-rows", action="store_true",
                   help="score only the rows of LabelTransfer's defaults, before and with sharpen_when_shifted "
                        "(and their batch-calibrated forms)")
    p.add_argument("--seed", type=int, default=0, help="seed of the splits, the embedding and the adaptation")
    p.add_argument("--baselines-only", action="store_true",
                   help="score only the baselines on the novel-type splits (no model; minutes): their rows do not "
                        "depend on --adapt, so one run per seed gives them for every cellweave run of that seed")
    args = p.parse_args()
    from cellweave._system import keep_torch_threads

    keep_torch_threads()  # scanpy's first numba call would otherwise lift torch's thread limit

    from _diagnostics import mean_over, panel_selection
    from sklearn.metrics import f1_score, roc_auc_score

    from cellweave._io_utils import atomic_write_json
    from cellweave.bench.tasks._cells import across_splits
    from cellweave.bench.tasks.panel import baseline_novelty_scores, novel_type_splits
    from cellweave.models import CellWeave
    from cellweave.tl import LabelTransfer, align_reference_query
    from cellweave.tl._transfer import NOVELTY_COMPONENTS

    model = None if args.baselines_only else CellWeave.load(args.model)
    seed = args.seed
    t0 = time.perf_counter()
    shift, novel = defaultdict(list), defaultdict(list)  # dataset -> one row per split

    def default_rows(score, h, etr, ytr, ete, groups=None):
        """The rows of ``LabelTransfer``'s defaults: before ``sharpen_when_shifted`` (``WEIGHTED``), with it
        (``SHIFTED``, the defaults) and with one held-out split instead of ``cross_fit`` (``ONE_SPLIT``)."""
        fitted = LabelTransfer(novelty_score=score, sharpen_when_shifted=False, seed=seed).fit(etr, ytr, groups=groups)
        name = score + (", batches" if groups is not None else "")
        rows = {name + WEIGHTED + h: fitted.predict(ete)}
        fitted.sharpen_when_shifted = True  # acts at predict time only
        rows[name + SHIFTED + h] = fitted.predict(ete)
        one_split = LabelTransfer(novelty_score=score, cross_fit=False, seed=seed).fit(etr, ytr, groups=groups)
        rows[name + ONE_SPLIT + h] = one_split.predict(ete)
        return rows

    def transfers(emb, tr, te, labels, groups=None):
        out = {}
        several = groups is not None and len(set(groups[tr])) >= 2
        for aligned in (False,) if args.no_align else (False, True):
            etr, ete = align_reference_query(emb[tr], emb[te], seed=seed) if aligned else (emb[tr], emb[te])
            h = " + Harmony" if aligned else ""
            if not aligned and not args.default_rows:
                out["map-query, rule before"] = map_query_rule_before(etr, labels[tr], ete)
            for score in args.scores:
                if len(NOVELTY_COMPONENTS[score]) > 1:  # LabelTransfer's defaults: the parts weighted
                    out.update(default_rows(score, h, etr, labels[tr], ete))
                if args.default_rows:
                    continue
                fitted = LabelTransfer(novelty_score=score, softmax_when_far=False, sharpen_when_far=False,
                                       weight_parts=False, sharpen_when_shifted=False, cross_fit=False,
                                       seed=seed).fit(etr, labels[tr])
                for adjust in (True,) if args.no_unadjusted else (True, False):  # acts at predict time only
                    fitted.shift_adjust = adjust
                    out[score + ("" if adjust else ", unadjusted") + h] = fitted.predict(ete)
                if "softmax" in fitted.components_ and score != "softmax":
                    fitted.shift_adjust, fitted.softmax_when_far = True, True
                    out[score + ", softmax when far" + h] = fitted.predict(ete)
                    fitted.sharpen_when_far = True
                    out[score + ", softmax when far, sharpened" + h] = fitted.predict(ete)
            if groups is None:
                continue
            # With fewer than 2 batches in the reference annotate calibrates on held-out cells: the rows above.
            for score in [s for s in args.scores if {"softmax", "composition"} & set(NOVELTY_COMPONENTS[s])]:
                if len(NOVELTY_COMPONENTS[score]) > 1:
                    out.update(default_rows(score, h, etr, labels[tr], ete, groups[tr]) if several else
                               {f"{score}, batches" + suffix + h: out[score + suffix + h]
                                for suffix in (WEIGHTED, SHIFTED, ONE_SPLIT)})
                if args.default_rows:
                    continue
                fitted = (LabelTransfer(novelty_score=score, softmax_when_far=False, sharpen_when_far=False,
                                        weight_parts=False, sharpen_when_shifted=False, cross_fit=False, seed=seed)
                          .fit(etr, labels[tr], groups=groups[tr]) if several else None)
                variants = [(True, False, False), *([] if args.no_unadjusted else [(False, False, False)])]
                if "softmax" in NOVELTY_COMPONENTS[score]:
                    variants += [(True, True, False), (True, True, True)]
                for adjust, far, sharpen in variants:
                    suffix = (("" if adjust else ", unadjusted") + (", softmax when far" if far else "")
                              + (", sharpened" if sharpen else ""))
                    if fitted is not None:
                        fitted.shift_adjust, fitted.softmax_when_far, fitted.sharpen_when_far = adjust, far, sharpen
                        out[f"{score}, batches" + suffix + h] = fitted.predict(ete)
                    elif score + suffix + h in out:
                        out[f"{score}, batches" + suffix + h] = out[score + suffix + h]
        return out

    command = ("benchmarks/novelty_scores.py" + (f" --model {args.model}" if args.model else "")
               + (" --adapt" if args.adapt else "") + (f" --start {args.start}" if args.start != "pretrained" else "")
               + (f" --scores {' '.join(args.scores)}" if list(args.scores) != list(SCORES) else "")
               + (" --no-align" if args.no_align else "") + (" --no-unadjusted" if args.no_unadjusted else "")
               + (" --default-rows" if args.default_rows else "")
               + (" --baselines-only" if args.baselines_only else "")
               + (f" --seed {seed}" if seed else ""))

    def write(*, complete: bool) -> dict:
        result = {"command": command, "model": model.name if model is not None else None, "seed": seed,
                  "seconds": round(time.perf_counter() - t0, 1), "complete": complete}
        for protocol, per in (("across shift", shift), ("novel type", novel)):
            per_dataset = {name: mean_over(rows) for name, rows in per.items()}
            result[protocol] = {"per_dataset": per_dataset, "mean": mean_over(list(per_dataset.values())),
                                "n_datasets": len(per_dataset)}
        atomic_write_json(args.out, result)
        return result

    for d in panel_selection(args.datasets):
        if args.baselines_only:
            y = np.asarray(d.labels).astype(str)
            for held_out, tr, query in novel_type_splits(d, seed=seed, quick=True):
                novel[d.name].append({f"{name}: AUROC": roc_auc_score(y[query] == held_out, s)
                                      for name, s in baseline_novelty_scores(d, tr, query, seed=seed).items()})
            print(d.name, f"{time.perf_counter() - t0:.0f} s", flush=True)
            write(complete=False)
            continue
        if args.adapt:
            from cellweave.train import adapt

            adapted = adapt(d.model_input, model=model, batch_key=d.batch_key or d.shift_key, seed=seed,
                            start=args.start, progress=False)
            emb = adapted.embed(d.model_input, seed=seed, progress=False, dataset=d.name)[0]
        else:
            emb = model.embed(d.model_input, seed=seed, progress=False, dataset=d.name)[0]
        y = np.asarray(d.labels).astype(str)
        if d.shift_key:
            groups = d.adata.obs[d.shift_key].astype(str).to_numpy()
            for _, tr, te in across_splits(d.adata.obs, d.shift_key, y):
                row = {}
                for name, res in transfers(emb, tr, te, y, groups).items():
                    row[f"{name}: unknown"] = float(res.unknown.mean())
                    # Over the query's types, as the panel scores it (a type predicted but absent adds no zero).
                    row[f"{name}: macro-F1"] = float(f1_score(y[te], res.raw_prediction.astype(str), average="macro",
                                                              labels=np.unique(y[te])))
                shift[d.name].append(row)
        for held_out, tr, query in novel_type_splits(d, seed=seed, quick=True):
            is_novel = y[query] == held_out
            row = {}
            batches = d.adata.obs[d.batch_key].astype(str).to_numpy() if d.batch_key else None
            for name, res in transfers(emb, tr, query, y, batches).items():
                row[f"{name}: AUROC"] = roc_auc_score(is_novel, res.novelty)
                row[f"{name}: known unknown"] = float(res.unknown[~is_novel].mean())
                row[f"{name}: novel unknown"] = float(res.unknown[is_novel].mean())
            for name, s in baseline_novelty_scores(d, tr, query, seed=seed).items():
                row[f"{name}: AUROC"] = roc_auc_score(is_novel, s)
            novel[d.name].append(row)
        print(d.name, f"{time.perf_counter() - t0:.0f} s", flush=True)
        # Written after every dataset (atomically), so a run stopped part way keeps what it measured.
        write(complete=False)
    result = write(complete=True)
    for protocol in ("across shift", "novel type"):
        per_dataset = result[protocol]["per_dataset"]
        print(f"\n{protocol}, mean over {len(per_dataset)} datasets")
        for key, value in result[protocol]["mean"].items():
            n = sum(key in row for row in per_dataset.values())
            print(f"  {key:45s} {value:.3f}" + (f"  ({n} datasets with batches)" if n < len(per_dataset) else ""))


if __name__ == "__main__":
    main()
