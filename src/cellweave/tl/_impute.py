"""``cellweave.tl.impute``: predict a modality a cell was not measured in from the ones it was."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd

from cellweave._constants import MODALITIES, UNS_KEY
from cellweave._exceptions import CellWeaveInputError
from cellweave.models import CellWeave, environment_versions

from ._embed import _h5_safe, _resolve

if TYPE_CHECKING:
    from anndata import AnnData
    from mudata import MuData

logger = logging.getLogger(__name__)

#: Layer of a filled MuData modality holding the predictions for every cell.
IMPUTED_LAYER = "cellweave_imputed"


def _target_features(model: CellWeave, data: Any, target: str, organism: str | None) -> tuple[list[str], list[str]]:
    """Vocabulary keys to predict and a readable name for each.

    A MuData that measured ``target`` in some cells: its own features that the vocabulary
    knows (names = its var_names). Otherwise every feature of ``target`` in the vocabulary,
    i.e. every one seen in pretraining (names = the vocabulary keys).
    """
    from cellweave.genes import infer_organism, map_features

    mod = getattr(data, "mod", None)
    if mod is not None and target in mod:
        var = mod[target].var
        org = organism or infer_organism(var.index, var.get("gene_id"))
        fmap = map_features(var, modality=target, organism=org)
        ids = model.vocab.lookup(fmap.keys)
        keep = ids >= 0
        keys = list(np.asarray(fmap.keys, dtype=object)[keep])
        names = list(var.index[keep])
        if keys:
            # Several columns can share a key (duplicate antibodies of one target): keep the first.
            first = ~pd.Index(keys).duplicated()
            return [k for k, f in zip(keys, first) if f], [n for n, f in zip(names, first) if f]
    keys = model.modality_features(target)
    return keys, list(keys)


def impute(
    adata: AnnData | MuData,
    *,
    target: Literal["prot", "atac", "rna", "gene_activity"],
    model: CellWeave | str | None = None,
    features: list[str] | None = None,
    input_modalities: list[str] | None = None,
    key_added: str | None = None,
    layer: str | None = None,
    organism: str | None = None,
    batch_size: int = 128,
    seed: int = 0,
    progress: bool = True,
    copy: bool = False,
) -> AnnData | MuData | None:
    """Predict every cell's ``target`` modality from the modalities it was measured in.

    The cell state is computed from ``input_modalities`` only (by default every modality of
    the data except ``target``: RNA for an .h5ad) and the model's cell head, trained with
    cross-modal masking, predicts each ``target`` feature from it. No measured value of
    ``target`` enters the prediction, so predictions for measured cells can be checked
    against the measurement.

    Parameters
    ----------
    adata
        AnnData (RNA) or MuData.
    target
        Modality to predict: ``"prot"``, ``"atac"``, ``"rna"`` or ``"gene_activity"``.
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
    layer, organism
        RNA layer holding counts; ``"human"``/``"mouse"`` (default: inferred).
    batch_size, seed, progress
        Inference batch size, seed of the token sampling, progress bar.
    copy
        Return a modified copy instead of writing into ``adata``.

    Returns
    -------
    ``None``, or the modified copy when ``copy=True``. Writes:

    ``.obsm[key_added]``
        ``(n_obs, n_features)`` float32 predictions on the model's value scale (within-cell
        quantile in (0, 1] for ``value_encoding="quantile"``; about 0 = not detected).
        Cells with no input token get the population-level prediction (counted in uns).
    ``.uns["cellweave"][key_added]``
        ``features`` (vocabulary keys), ``feature_names``, target, input modalities, value
        scale, model name and SHA-256, versions, seed, coverage of the input modalities and
        ``n_cells_without_input``.
    ``.mod[target]`` (MuData only)
        Added when absent (``X`` = predictions, ``var_names`` = feature names); when present,
        extended to every cell of the MuData, with the predictions for every cell in
        ``.layers["cellweave_imputed"]``, measured values kept in ``X`` (0 for cells that
        were not measured) and ``.obs["cellweave_measured"]`` telling them apart.
    """
    import anndata as ad
    import scipy.sparse as sp

    if target not in MODALITIES:
        raise CellWeaveInputError(f"target={target!r} is not a modality cellweave predicts; choose one of {', '.join(MODALITIES)}.")
    adata = adata.copy() if copy else adata
    model = _resolve(model)
    is_mudata = hasattr(adata, "mod")
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
    states = model.embed_corpus(corpus, batch_size=batch_size, seed=seed, progress=progress, pooling="cls")
    pred = model.predict_features(corpus, features, target=target, cell_states=states)
    no_input = ~np.any([b.present & (np.diff(b.values.indptr) > 0) for b in corpus.blocks], axis=0)
    key = key_added or f"cellweave_{target}"
    adata.obsm[key] = pred
    record: dict[str, Any] = {
        "model": model.name,
        "model_sha256": model.model_hash,
        "target": target,
        "features": [str(f) for f in features],
        "feature_names": [str(n) for n in names],
        "input_modalities": list(inputs),
        "value_scale": f"{model.config.value_encoding} (the model's value encoding)",
        "n_cells_without_input": int(no_input.sum()),
        "coverage": {c["modality"]: {k: v for k, v in c.items() if k not in ("examples",)} for c in corpus.coverage},
        "seed": seed,
        "versions": environment_versions(),
    }
    uns = dict(adata.uns.get(UNS_KEY, {}))
    uns[key] = _h5_safe(record)
    adata.uns[UNS_KEY] = uns
    if is_mudata:
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
    logger.info("Wrote .obsm[%r]: %d cells x %d %s features predicted from %s", key, pred.shape[0], pred.shape[1],
                target, "+".join(inputs))
    return adata if copy else None
