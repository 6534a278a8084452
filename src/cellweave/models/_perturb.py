"""The fine-tuned perturbation-response model (:class:`PerturbationModel`) and what it needs at prediction.

A pretrained CellWeave (frozen) plus a small head (:class:`cellweave.nn.PerturbationHead`) that maps
(perturbation, control cell) to a change of every gene's log-normalized expression. The fit lives in
:func:`cellweave.train.finetune_perturbation`.

The folder written by :meth:`PerturbationModel.save` is self-describing and safe: the base
CellWeave files, ``perturb_head.safetensors``, ``perturbation.json`` and ``control_cells.h5ad``.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from cellweave._constants import UNS_KEY
from cellweave._exceptions import CellWeaveInputError, CellWeaveModelError
from cellweave._io_utils import atomic_path, atomic_write_bytes, atomic_write_json
from cellweave.data import log_normalize
from cellweave.nn import PerturbationHead

from ._cellweave import CellWeave, environment_versions
from ._insilico import in_silico_profiles

if TYPE_CHECKING:
    from anndata import AnnData

logger = logging.getLogger(__name__)

HEAD_FILE = "perturb_head.safetensors"
META_FILE = "perturbation.json"
CONTROL_FILE = "control_cells.h5ad"


# ---------------------------------------------------------------------- expression helpers
def perturbation_expression(adata: AnnData, *, layer: str | None = None) -> np.ndarray:
    """Dense float32 log1p(counts per 10k) of ``adata`` (log-normalized input is used as is): the units of
    a :class:`PerturbationModel`'s targets and predictions."""
    try:
        return log_normalize(adata, layer=layer).toarray()
    except CellWeaveInputError as err:
        raise CellWeaveInputError(
            f"Perturbation models need counts or log-normalized expression; {err}"
        ) from None


def align_genes(adata: AnnData, genes: list[str], *, layer: str | None = None) -> tuple[sp.csr_matrix, list[str]]:
    """``adata``'s matrix with columns reordered to ``genes`` (missing genes are zero columns)."""
    X = sp.csr_matrix(adata.layers[layer] if layer is not None else adata.X, dtype=np.float32)
    pos = pd.Index(map(str, adata.var_names)).get_indexer(genes)
    missing = [g for g, p in zip(genes, pos) if p < 0]
    if len(missing) == len(genes):
        raise CellWeaveInputError(
            "None of the model's genes are in these cells' var_names; give cells measured on the same genes "
            f"(the model knows e.g. {', '.join(genes[:5])})."
        )
    cols = np.where(pos >= 0, pos, 0)
    out = X[:, cols].tocsc()
    if missing:
        keep = sp.diags((pos >= 0).astype(np.float32))
        out = out @ keep
    return sp.csr_matrix(out), missing


# ---------------------------------------------------------------------- perturbation identities
@dataclass
class PerturbationIdentity:
    """How a perturbation is represented: summed gene tokens and/or a learned label."""

    name: str
    kind: str  # "gene" or "label"
    token_ids: list[int]
    label_index: int  # 0 for genes, 1 + label id for labels


def resolve_perturbation(model: CellWeave, name: str, labels: list[str], var: pd.DataFrame | None = None
                         ) -> PerturbationIdentity:
    """A perturbation name -> its representation; a label wins over a gene of the same name."""

    if name in labels:
        return PerturbationIdentity(name, "label", [], 1 + labels.index(name))
    parts = [p.strip() for p in str(name).split("+") if p.strip()]
    ids = model.gene_token_ids(parts, var) if parts else np.zeros(0, dtype=np.int64)
    if parts and (ids >= 0).all():
        return PerturbationIdentity(name, "gene", [int(i) for i in ids], 0)
    raise CellWeaveInputError(
        f"Perturbation {name!r} is neither a gene (or G1+G2 combination) in the model's vocabulary nor a "
        f"condition label seen in fine-tuning ({', '.join(labels) or 'none'}). An unseen label that is not a "
        "gene has no representation: fine-tune on data that contains it, or name the perturbed gene(s)."
    )


def identity_vectors(model: CellWeave, identities: list[PerturbationIdentity]) -> np.ndarray:
    """Per identity, the sum of its genes' pretrained token vectors (zeros for labels)."""
    emb = model.module.feature_embedding.weight.detach().cpu().numpy()
    out = np.zeros((len(identities), emb.shape[1]), dtype=np.float32)
    for k, ident in enumerate(identities):
        if ident.token_ids:
            out[k] = emb[ident.token_ids].sum(axis=0)
    return out


def zero_shot_features(model: CellWeave, control: AnnData, identities: list[PerturbationIdentity],
                       readout_ids: np.ndarray, *, n_cells: int = 64, seed: int = 0, progress: bool = False,
                       cache: dict | None = None, precision: str = "32-true") -> np.ndarray:
    """Per perturbation, the pretrained model's zero-shot in silico knock-out profile over the readout
    genes (mean over ``n_cells`` control cells; zeros for labels and genes outside the vocabulary),
    its forward passes at ``precision`` (cached per precision)."""
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(control.n_obs, size=min(n_cells, control.n_obs), replace=False))
    corpus = model.prepare(control[pick], modalities=None)
    ok = readout_ids >= 0
    out = np.zeros((len(identities), len(readout_ids)), dtype=np.float32)
    for k, ident in enumerate(identities):
        if ident.kind != "gene":
            continue
        key = ("zero_shot", tuple(ident.token_ids), n_cells, seed, precision)
        if cache is not None and key in cache:
            out[k] = cache[key]
            continue
        with model.autocast(precision):
            res = in_silico_profiles(model, corpus, np.asarray(ident.token_ids), mode="knockout",
                                     readout_ids=readout_ids[ok], seed=seed, progress=progress)
        out[k, ok] = res["delta"].mean(axis=0)
        if cache is not None:
            cache[key] = out[k].copy()
    return out



# ---------------------------------------------------------------------- the fine-tuned model
# ---------------------------------------------------------------------- the fine-tuned model
class PerturbationModel:
    """A pretrained CellWeave plus a fitted perturbation head and what is needed to use it."""

    def __init__(self, base: CellWeave, head: PerturbationHead, meta: dict[str, Any],
                 control: AnnData | None = None) -> None:
        self.base, self.head, self.meta, self.control = base, head, meta, control
        self.path: Path | None = None
        self._cache: dict = {}

    @property
    def genes(self) -> list[str]:
        return list(self.meta["genes"])

    @property
    def labels(self) -> list[str]:
        return list(self.meta["labels"])

    # -------------------------------------------------------------- persistence
    def save(self, path: str | os.PathLike) -> Path:
        """Write the base model, the head (safetensors), the metadata (JSON) and the control cells."""
        from safetensors.torch import save

        path = Path(path)
        base_path = self.base.path
        self.base.save(path)
        self.base.path = base_path  # the base model object still describes where it came from
        state = {k: v.detach().cpu().contiguous() for k, v in self.head.state_dict().items()}
        atomic_write_bytes(path / HEAD_FILE, save(state, metadata={"format": "pt"}))
        atomic_write_json(path / META_FILE, {**self.meta, "head": self.head.config(),
                                             "base_model_sha256": self.base.model_hash})
        if self.control is not None:
            with atomic_path(path / CONTROL_FILE) as tmp:  # as cellweave.io.write: atomically
                self.control.write_h5ad(tmp)
            logger.info("Wrote %s.", path / CONTROL_FILE)
        self.path = path
        logger.info("Wrote perturbation model to %s", path)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> PerturbationModel:
        """Load a folder written by :meth:`save` (safetensors and JSON only; no pickle)."""
        import anndata
        from safetensors.torch import load_file

        path = Path(path)
        if not (path / META_FILE).is_file() or not (path / HEAD_FILE).is_file():
            raise CellWeaveModelError(
                f"{path} is not a fine-tuned perturbation model (it needs {META_FILE} and {HEAD_FILE}). "
                "Create one with `cellweave finetune-perturb --out DIR`."
            )
        base = CellWeave.load(path)
        meta = json.loads((path / META_FILE).read_text())
        state = load_file(str(path / HEAD_FILE))
        cfg = meta["head"]
        head = PerturbationHead(state["gene_tokens"], int(cfg["d_cell"]), int(cfg["n_labels"]),
                                d_hidden=int(cfg["d_hidden"]), n_extra=int(cfg["n_extra"]),
                                dropout=float(cfg["dropout"]))
        head.load_state_dict(state)
        head.eval()
        control = anndata.read_h5ad(path / CONTROL_FILE) if (path / CONTROL_FILE).is_file() else None
        out = cls(base, head, meta, control)
        out.path = path
        return out

    # -------------------------------------------------------------- prediction
    def _inputs(self, name: str) -> tuple[PerturbationIdentity, np.ndarray, np.ndarray | None]:
        ident = resolve_perturbation(self.base, name, self.labels)
        vec = identity_vectors(self.base, [ident])
        extra = None
        if self.head.n_extra:
            if self.control is None:
                raise CellWeaveModelError("This model uses zero-shot features but its folder has no control cells.")
            # At the precision of fine-tuning (older folders: float32), as the training features were made.
            extra = zero_shot_features(self.base, self.control, [ident], np.asarray(self.meta["gene_token_ids"]),
                                       n_cells=int(self.meta["zero_shot_cells"]), seed=int(self.meta["seed"]),
                                       cache=self._cache, precision=str(self.meta.get("precision", "32-true")))
            extra = extra / float(self.meta["zero_shot_scale"])
        return ident, vec, extra

    @torch.inference_mode()
    def predict_delta(self, name: str, cell_embedding: np.ndarray) -> np.ndarray:
        """Predicted change (n_cells, n_genes) of log-normalized expression for each control cell."""
        ident, vec, extra = self._inputs(name)
        n = cell_embedding.shape[0]
        g = torch.as_tensor(vec).expand(n, -1)
        lab = torch.full((n,), ident.label_index, dtype=torch.long)
        x = None if extra is None else torch.as_tensor(extra).expand(n, -1)
        return self.head(g, lab, torch.as_tensor(cell_embedding, dtype=torch.float32), x).numpy()

    def predict(self, adata: AnnData | None, perturbation: str, *, layer: str | None = None,
                batch_size: int = 256, seed: int = 0, progress: bool = True, precision: str = "32-true") -> AnnData:
        """See :func:`cellweave.tl.predict_perturbation`."""
        import anndata

        from cellweave._io_utils import h5_safe

        self.base.check_precision(precision)
        if adata is None:
            if self.control is None:
                raise CellWeaveInputError("This model folder has no control cells; pass control cells as INPUT "
                                          "(`cellweave predict-perturb CELLS.h5ad --model ...`).")
            adata = self.control
        genes = self.genes
        counts, missing = align_genes(adata, genes, layer=layer)
        if missing:
            logger.warning("%d of the model's %d genes are missing from the cells and were set to 0 (e.g. %s)",
                           len(missing), len(genes), ", ".join(missing[:5]))
        aligned = anndata.AnnData(X=counts, obs=pd.DataFrame(index=adata.obs_names.copy()),
                                  var=pd.DataFrame(index=pd.Index(genes)))
        if "gene_id" in self.meta:
            aligned.var["gene_id"] = self.meta["gene_id"]
        x = perturbation_expression(aligned)
        with self.base.autocast(precision):
            emb, _ = self.base.embed(aligned, batch_size=batch_size, seed=seed, progress=progress)
        delta = self.predict_delta(perturbation, emb)
        pred = np.clip(x + delta, 0.0, None).astype(np.float32)
        out = anndata.AnnData(X=x, obs=adata.obs.copy(), var=pd.DataFrame(index=pd.Index(genes)))
        out.layers["cellweave_predicted"] = pred
        out.obs["cellweave_predicted_shift"] = np.linalg.norm(delta, axis=1).astype(np.float32)
        out.var["cellweave_predicted_delta"] = delta.mean(axis=0).astype(np.float32)
        ident = resolve_perturbation(self.base, perturbation, self.labels)
        seen = perturbation in self.meta["training_perturbations"]
        record = {
            "perturbation": perturbation,
            "kind": f"{'seen' if seen else 'unseen'} {ident.kind}",
            "model": str(self.path) if self.path else "unsaved",
            "model_sha256": self.base.model_hash,
            "perturbation_key": self.meta["perturbation_key"],
            "control": self.meta["control"],
            "seed": seed,
            "precision": precision,
            "n_missing_genes": len(missing),
            "missing_genes": missing[:50],
            "units": "log1p(counts per 1e4)",
            **self.collapse_diagnostic(emb, extra_names=[perturbation]),
            "versions": environment_versions(),
        }
        out.uns[UNS_KEY] = {"predict_perturbation": h5_safe(record)}
        logger.info("Predicted %s (%s) for %d cells; mean |change| %.4f; spread ratio %.3f",
                    perturbation, record["kind"], out.n_obs, float(np.abs(delta).mean()), record["spread_ratio"])
        return out

    def collapse_diagnostic(self, cell_embedding: np.ndarray, extra_names: list[str] = ()) -> dict[str, Any]:
        """Spread of predicted mean changes across perturbations vs the observed spread (training data)."""
        names = list(self.meta["training_perturbations"])
        observed = np.asarray(self.meta["observed_delta"], dtype=np.float32)
        predicted = np.stack([self.predict_delta(n, cell_embedding).mean(axis=0) for n in names])
        ratio = spread_ratio(predicted, observed)
        out = {"spread_ratio": ratio, "spread_predicted": float(predicted.std(axis=0).mean()),
               "spread_observed": float(observed.std(axis=0).mean()),
               "collapsed": bool(ratio < 0.25)}
        if extra_names:
            new = np.stack([self.predict_delta(n, cell_embedding).mean(axis=0) for n in extra_names])
            dist = np.linalg.norm(new[:, None] - predicted[None], axis=-1)[0]
            out["nearest_training_perturbation"] = names[int(dist.argmin())]
        if out["collapsed"]:
            logger.warning("Predictions barely differ between perturbations (spread ratio %.3f < 0.25): "
                           "the model is close to predicting one mean response.", ratio)
        return out


def spread_ratio(predicted: np.ndarray, observed: np.ndarray) -> float:
    """Mean over genes of the std across perturbations of predicted changes, over that of observed ones."""
    obs = float(observed.std(axis=0).mean())
    return float(predicted.std(axis=0).mean() / obs) if obs > 0 else float("nan")
