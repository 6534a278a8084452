"""``cellweave.tl.impute``: predict a modality a cell was not measured in from the ones it was."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from cellweave import modalities
from cellweave._constants import UNS_KEY
from cellweave._exceptions import CellWeaveInputError
from cellweave.models import CellWeave, environment_versions

from ._embed import _h5_safe, _resolve

if TYPE_CHECKING:
    from anndata import AnnData
    from mudata import MuData

logger = logging.getLogger(__name__)

#: Layer of a filled MuData modality holding the predictions for every cell.
IMPUTED_LAYER = "cellweave_imputed"


def feature_keys(model: CellWeave, mod: AnnData, target: str, organism: str | None = None) -> list[str]:
    """The vocabulary key of every feature (``var``) of a measured ``target`` modality, ``""``
    where the model does not know it (ATAC peaks map to their genomic bins; no organism)."""
    from cellweave.genes import infer_organism, map_features

    needs_organism = modalities.get(target, exact=True).needs_organism  # genomic bins do not
    org = organism or (infer_organism(mod.var_names, mod.var.get("gene_id")) if needs_organism else None)
    fmap = map_features(mod.var, modality=target, organism=org, aliases=model.vocab.gene_aliases)
    keys = [str(k) for k in fmap.keys]
    return [k if i >= 0 else "" for k, i in zip(keys, model.vocab.lookup(keys))]


def _target_features(model: CellWeave, data: Any, target: str, organism: str | None) -> tuple[list[str], list[str]]:
    """Vocabulary keys to predict and a readable name for each.

    A MuData that measured ``target`` in some cells: its own features that the vocabulary
    knows (names = its var_names). Otherwise every feature of ``target`` in the vocabulary,
    i.e. every one seen in pretraining (names = the vocabulary keys).
    """
    mod = getattr(data, "mod", None)
    if mod is not None and target in mod:
        all_keys = feature_keys(model, mod[target], target, organism)
        known = [(k, str(n)) for k, n in zip(all_keys, mod[target].var_names) if k]
        if known:
            # Several columns can share a key (duplicate antibodies of one target): keep the first.
            first = dict(reversed(known))  # key -> name of its first column
            keys = list(dict.fromkeys(k for k, _ in known))
            return keys, [first[k] for k in keys]
    keys = model.modality_features(target)
    return keys, list(keys)


def impute(
    adata: AnnData | MuData,
    *,
    target: str,
    model: CellWeave | str | None = None,
    features: list[str] | None = None,
    input_modalities: list[str] | None = None,
    key_added: str | None = None,
    reference: AnnData | MuData | None = None,
    max_epochs: int = 40,
    layer: str | None = None,
    organism: str | None = None,
    batch_size: int = 128,
    seed: int = 0,
    progress: bool = True,
    precision: str = "32-true",
    copy: bool = False,
) -> AnnData | MuData | None:
    """Predict every cell's ``target`` modality from the modalities it was measured in.

    Two ways, both from ``input_modalities`` only (by default every modality of the data
    except ``target``: RNA for an .h5ad):

    * zero-shot (no ``reference``): the pretrained model's cell head predicts each ``target``
      feature it saw in pretraining from the cell's state, on the model's value scale. Weak
      with the small shipped model (see the benchmark); no training.
    * fine-tuned (``reference``: cells measured in both, e.g. a CITE-seq or multiome MuData,
      which may be ``adata`` itself when some of its cells carry ``target``): a
      feature-query decoder over the encoder's token states is trained on the reference's
      paired cells (:func:`cellweave.train.finetune_cross_modal`: frozen encoder, starting
      from ridge regression on the cell embedding, early stopping on held-out reference
      cells) and predicts every feature of the reference's
      ``target`` modality, in its units: CLR for protein, log1p counts per 10k otherwise.

    No measured value of ``target`` of a cell enters its own prediction, so predictions for
    measured cells can be checked against the measurement (when they were not in the
    reference).

    Parameters
    ----------
    adata
        AnnData (RNA) or MuData.
    target
        Modality to predict, a registered one (``cellweave.modalities.names()``): ``"prot"``,
        ``"atac"``, ``"rna"`` or ``"gene_activity"``.
    model
        A :class:`~cellweave.CellWeave`, model folder, shipped model name or ``None`` (default).
    features
        Vocabulary keys to predict (``model.modality_features(target)`` lists them). Default:
        for a MuData that carries ``target``, its own ``target`` features that the model knows;
        otherwise every ``target`` feature seen in pretraining.
    input_modalities
        Modalities the prediction is made from (default: all the data has, except ``target``).
    key_added
        ``obsm`` key of the predictions (default ``"cellweave_<target>"``).
    reference
        MuData whose cells measured ``target`` and the input modalities: fine-tune on them
        and predict all of its ``target`` features (``features`` must then be ``None``).
    max_epochs
        Upper bound of fine-tuning epochs (with a reference; early stopping picks the best).
    layer, organism
        RNA layer holding counts; ``"human"``/``"mouse"`` (default: inferred).
    batch_size, seed, progress
        Inference batch size, seed of the token sampling, progress bar.
    precision
        ``"32-true"`` (default) or ``"bf16-mixed"``: the forward passes under bf16 autocast (as
        :func:`cellweave.tl.embed` takes it); with a reference, the fine-tuning too (Lightning's
        bf16-mixed; weights float32). Predictions are float32. Recorded in ``uns``.
    copy
        Return a modified copy instead of writing into ``adata``.

    Returns
    -------
    ``None``, or the modified copy when ``copy=True``. Writes:

    ``.obsm[key_added]``
        ``(n_obs, n_features)`` float32 predictions. Zero-shot: on the model's value scale
        (within-cell quantile in (0, 1] for ``value_encoding="quantile"``; about 0 = not
        detected), cells with no input token get the population-level prediction (counted in
        uns). With a reference: in the reference's units (``uns[...]["units"]``).
    ``.uns["cellweave"][key_added]``
        ``features`` (vocabulary keys), ``feature_names``, target, input modalities, value
        scale, model name and SHA-256, versions, seed, ``precision``, coverage of the input modalities and
        ``n_cells_without_input``; with a reference, ``mode="fine-tuned"``, ``units`` and the
        fine-tuning summary (cells, best epoch, held-out error, seconds).
    ``.mod[target]`` (MuData only)
        Added when absent (``X`` = predictions, ``var_names`` = feature names); when present,
        extended to every cell of the MuData, with the predictions for every cell in
        ``.layers["cellweave_imputed"]``, measured values kept in ``X`` (0 for cells that
        were not measured) and ``.obs["cellweave_measured"]`` telling them apart.
    """
    if target not in modalities.names():
        raise CellWeaveInputError(
            f"target={target!r} is not a modality cellweave predicts; choose one of {', '.join(modalities.names())}."
        )
    CellWeave.check_precision(precision)
    adata = adata.copy() if copy else adata
    model = _resolve(model)
    if reference is not None:
        if features is not None:
            raise CellWeaveInputError("features= cannot be combined with reference=: the reference's own "
                                      f"{target!r} features are predicted.")
        return _impute_finetuned(adata, reference, target=target, model=model, input_modalities=input_modalities,
                                 key_added=key_added, layer=layer, organism=organism, max_epochs=max_epochs,
                                 batch_size=batch_size, seed=seed, progress=progress, precision=precision, copy=copy)
    if features is None:
        features, names = _target_features(model, adata, target, organism)
    else:
        names = list(features)
    if not features:
        raise CellWeaveInputError(
            f"The model {model.name!r} knows no {target!r} features: it was not pretrained on data with that "
            "modality. Pretrain (`cellweave pretrain`) on data that carries it."
        )
    missing = [f for f, i in zip(features, model.vocab.lookup(features)) if i < 0]
    if missing:
        raise CellWeaveInputError(
            f"{len(missing)} features are not in the model's vocabulary, e.g. {missing[:3]}; "
            f"pass keys from model.modality_features({target!r})."
        )
    from cellweave.io import as_modalities

    available = list(as_modalities(adata))
    inputs = input_modalities or [m for m in available if m != target]
    if not inputs:
        raise CellWeaveInputError(
            f"The data carries only {available}: there is nothing to predict {target!r} from. "
            "Impute a modality the data lacks, or pass input_modalities=."
        )
    if target in inputs:
        raise CellWeaveInputError(f"input_modalities must not include the target {target!r}.")
    corpus = model.prepare(adata, modalities=inputs, layer=layer, organism=organism)
    with model.autocast(precision):
        states = model.embed_corpus(corpus, batch_size=batch_size, seed=seed, progress=progress, pooling="cls")
    pred = model.predict_features(corpus, features, target=target, cell_states=states)  # the cell head: float32
    no_input = ~np.any([b.present & (np.diff(b.values.indptr) > 0) for b in corpus.blocks], axis=0)
    key = key_added or f"cellweave_{target}"
    record: dict[str, Any] = {
        "model": model.name,
        "model_sha256": model.model_hash,
        "target": target,
        "features": [str(f) for f in features],
        "feature_names": [str(n) for n in names],
        "input_modalities": list(inputs),
        "value_scale": f"{model.config.value_encoding} (the model's value encoding)",
        "n_cells_without_input": int(no_input.sum()),
        "precision": precision,
    }
    _store(adata, key, pred, record, corpus, features, names, seed)
    logger.info("Wrote .obsm[%r]: %d cells x %d %s features predicted from %s", key, pred.shape[0], pred.shape[1],
                target, "+".join(inputs))
    return adata if copy else None


def _store(adata: AnnData | MuData, key: str, pred: np.ndarray, record: dict[str, Any], corpus, features: list[str],
           names: list[str], seed: int) -> None:
    """Predictions to ``obsm[key]``, the record (plus input coverage, seed, versions) to ``uns``,
    and for a MuData the target modality (added or extended)."""
    adata.obsm[key] = pred
    record = {**record, "coverage": {c["modality"]: {k: v for k, v in c.items() if k != "examples"}
                                     for c in corpus.coverage},
              "seed": seed, "versions": environment_versions()}
    uns = dict(adata.uns.get(UNS_KEY, {}))
    uns[key] = _h5_safe(record)
    adata.uns[UNS_KEY] = uns
    if hasattr(adata, "mod"):
        _write_modality(adata, record["target"], pred, features, names)


def _write_modality(adata: MuData, target: str, pred: np.ndarray, features: list[str], names: list[str]) -> None:
    """Add ``target`` to a MuData (X = predictions), or extend the measured one to every cell
    with the predictions in ``layers["cellweave_imputed"]``."""
    import anndata as ad
    import scipy.sparse as sp

    obs_index = adata.obs_names
    if target not in adata.mod:
        mod = ad.AnnData(X=pred.copy(), obs=pd.DataFrame(index=obs_index.copy()),
                         var=pd.DataFrame({"cellweave_feature": features}, index=pd.Index(names, dtype=str)))
        mod.uns["cellweave_imputed"] = True
        adata.mod[target] = mod
    else:
        old = adata.mod[target]
        rows = obs_index.get_indexer(old.obs_names)
        X = sp.csr_matrix((len(obs_index), old.n_vars), dtype=np.float32)
        X = sp.lil_matrix(X)
        X[rows] = sp.csr_matrix(old.X)
        col = old.var_names.get_indexer(pd.Index(names))
        layer_vals = np.full((len(obs_index), old.n_vars), np.nan, dtype=np.float32)
        layer_vals[:, col[col >= 0]] = pred[:, col >= 0]
        measured = np.zeros(len(obs_index), dtype=bool)
        measured[rows] = True
        obs = pd.DataFrame(index=obs_index.copy())
        obs["cellweave_measured"] = measured
        new = ad.AnnData(X=X.tocsr(), obs=obs, var=old.var.copy(), uns=dict(old.uns))
        new.layers[IMPUTED_LAYER] = layer_vals
        adata.mod[target] = new
    adata.update()


def reference_target_values(mod: AnnData, target: str) -> tuple[np.ndarray, str]:
    """A measured modality as the dense matrix a fine-tuned predictor learns and returns, and
    its units, by the modality's ``readout`` (``cellweave.modalities``): ``clr`` (proteins) ->
    CLR of counts (``log1p(x) - mean_j log1p(x_j)`` per cell, the CITE-seq convention);
    ``log1p_cp10k`` (the others) -> log1p(counts per 10k), log-normalized values as they are."""
    from cellweave.data import clr, log_normalize
    from cellweave.io import detect_x_kind

    spec = modalities.get(target, exact=True)
    X = mod.X
    kind = detect_x_kind(X)
    if spec.readout == "clr":
        if kind != "counts":
            raise CellWeaveInputError(
                f"The reference's {target!r} matrix holds {kind!r} values; pass raw counts (CLR is computed here)."
            )
        return clr(X), spec.units
    M = log_normalize(X).toarray().astype(np.float64)
    return M, spec.units if kind == "counts" else "the reference's log-normalized values"


def _impute_finetuned(
    adata: AnnData | MuData,
    reference: AnnData | MuData,
    *,
    target: str,
    model: CellWeave,
    input_modalities: list[str] | None,
    key_added: str | None,
    layer: str | None,
    organism: str | None,
    max_epochs: int,
    batch_size: int,
    seed: int,
    progress: bool,
    precision: str,
    copy: bool,
) -> AnnData | MuData | None:
    from cellweave.io import as_modalities
    from cellweave.train import finetune_cross_modal

    ref_mods = as_modalities(reference)
    if target not in ref_mods:
        raise CellWeaveInputError(
            f"The reference carries {sorted(ref_mods)}, not {target!r}: pass a MuData whose cells were measured "
            f"in {target!r} (e.g. CITE-seq for protein, multiome for ATAC)."
        )
    available = list(as_modalities(adata))
    inputs = input_modalities or [m for m in available if m != target]
    if not inputs or target in inputs:
        raise CellWeaveInputError(
            f"Nothing to predict {target!r} from: the data carries {available} (input_modalities={input_modalities})."
        )
    lacking = [m for m in inputs if m not in ref_mods]
    if lacking:
        raise CellWeaveInputError(
            f"The reference lacks the input modalities {lacking}: it must carry every modality the prediction is "
            f"made from ({inputs}) and {target!r}. Pass input_modalities= to use fewer."
        )
    tmod = ref_mods[target]
    values, units = reference_target_values(tmod, target)
    ref_corpus = model.prepare(reference, modalities=inputs, layer=layer, organism=organism, dataset="reference")
    pos = pd.Index(ref_corpus.obs.index).get_indexer(tmod.obs_names)
    has_input = np.all([b.present for b in ref_corpus.blocks], axis=0)
    ok = (pos >= 0) & has_input[np.clip(pos, 0, None)]
    if ok.sum() < 20:
        raise CellWeaveInputError(
            f"Only {int(ok.sum())} reference cells carry both {target!r} and {inputs}: fine-tuning needs at least 20."
        )
    keys = feature_keys(model, tmod, target, organism)
    names = [str(n) for n in tmod.var_names]
    predictor = finetune_cross_modal(
        model, ref_corpus.subset(pos[ok]), values[ok], target=target, feature_names=names, feature_keys=keys,
        input_modalities=inputs, max_epochs=max_epochs, seed=seed, progress=progress, precision=precision,
    )
    corpus = model.prepare(adata, modalities=inputs, layer=layer, organism=organism)
    pred = predictor.predict(corpus, batch_size=batch_size, seed=seed, progress=progress, precision=precision)
    key = key_added or f"cellweave_{target}"
    summary = {k: v for k, v in predictor.summary.items() if k != "history"}
    record: dict[str, Any] = {
        "mode": "fine-tuned",
        "model": model.name,
        "model_sha256": model.model_hash,
        "target": target,
        "features": keys,
        "feature_names": names,
        "input_modalities": list(inputs),
        "units": units,
        "value_scale": units,
        "n_reference_cells": int(ok.sum()),
        "precision": precision,
        "finetune": summary,
    }
    _store(adata, key, pred, record, corpus, keys, names, seed)
    logger.info("Wrote .obsm[%r]: %d cells x %d %s features (%s) predicted from %s by a decoder fine-tuned on "
                "%d reference cells (best epoch %s)", key, pred.shape[0], pred.shape[1], target, units,
                "+".join(inputs), int(ok.sum()), summary["best_epoch"])
    return adata if copy else None
