"""``cellweave.tl.embed``: cell embeddings from a pretrained model, written into AnnData/MuData."""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any

from cellweave._constants import EMBEDDING_KEY, UNS_KEY
from cellweave._io_utils import h5_safe as _h5_safe
from cellweave._system import keep_torch_threads
from cellweave.models import CellWeave, environment_versions

if TYPE_CHECKING:
    from anndata import AnnData
    from mudata import MuData

    from cellweave.data import CellCorpus

logger = logging.getLogger(__name__)


def _resolve(model: CellWeave | str | None) -> CellWeave:
    return model if isinstance(model, CellWeave) else CellWeave.load(model)


def _resolve_gene_model(model: CellWeave | str | None, *, uses_tables: bool = True) -> CellWeave:
    """The model of a gene-level tool: ``None`` gives the shipped gene model
    (:data:`cellweave.models.DEFAULT_GENE_MODEL`). A model whose gene tables were kept at their
    random codes is refused where the result is read off those tables (``uses_tables``), with the
    fix, since it would look like a result and be noise."""
    from cellweave._exceptions import CellWeaveInputError
    from cellweave.models import DEFAULT_GENE_MODEL

    resolved = _resolve(DEFAULT_GENE_MODEL if model is None else model)
    if uses_tables and getattr(resolved.config, "fixed_feature_tables", False):
        raise CellWeaveInputError(
            f"Model {resolved.name} kept its gene tables at fixed random codes in pretraining "
            "(fixed_feature_tables), so its gene embeddings carry no learned information. Leave the model "
            f"out (the gene tools default to {DEFAULT_GENE_MODEL}, whose tables were learned) or give one "
            "pretrained without --fixed-feature-tables.")
    return resolved


#: ``precision`` of the embedding verbs (``embed``, ``annotate``, ``map_query``, ``integrate`` and
#: ``train.adapt``): Lightning's names, as ``pretrain --precision`` takes them.
EMBED_PRECISIONS = CellWeave.PRECISIONS


def _one_process(devices: int | str, num_nodes: int) -> bool:
    return str(devices) in ("1", "auto") and int(num_nodes) == 1


def _multi_device_embedder(model: CellWeave, *, devices: int | str, accelerator: str, num_nodes: int,
                           precision: str = "32-true"):
    """``embed_corpus`` of ``model`` run by Lightning's predict on several processes."""
    from cellweave.train import embed_corpora

    def embed_corpus(corpus, *, batch_size: int, seed: int, progress: bool):
        return embed_corpora(model, [corpus], batch_size=batch_size, seed=seed, devices=devices,
                             accelerator=accelerator, num_nodes=num_nodes, progress=progress,
                             precision=precision)[0]

    return embed_corpus


def embed(
    adata: AnnData | MuData,
    *,
    model: CellWeave | str | None = None,
    key_added: str = EMBEDDING_KEY,
    layer: str | None = None,
    modalities: list[str] | None = None,
    organism: str | None = None,
    batch_size: int = 128,
    seed: int = 0,
    progress: bool = True,
    spatial: bool | None = None,
    spatial_key: str = "spatial",
    section_key: str | None = None,
    n_spatial_neighbors: int | None = None,
    devices: int | str = 1,
    accelerator: str = "auto",
    num_nodes: int = 1,
    precision: str = "32-true",
    token_space: CellCorpus | None = None,
    copy: bool = False,
) -> AnnData | MuData | None:
    """Embed every cell with a pretrained CellWeave model.

    Parameters
    ----------
    adata
        AnnData with RNA counts (or log-normalized values) in ``X`` or ``layer``, or a MuData
        with any of the modalities ``rna``, ``prot``, ``atac``, ``gene_activity``.
    model
        A :class:`~cellweave.CellWeave`, a model folder, a shipped model's name, or ``None`` for
        the shipped default model.
    key_added
        Key in ``obsm`` for the embedding.
    layer
        Layer of the RNA modality holding counts (default ``X``).
    modalities
        Embed from these modalities only (default: all the data carries).
    organism
        ``"human"`` or ``"mouse"``; inferred from gene names and IDs when not given.
    batch_size, seed, progress
        Inference batch size, seed of the token sampling, progress bar.
    spatial
        Tissue context for data with ``obsm[spatial_key]``: ``True`` appends to each cell's
        embedding the mean embedding of its ``n_spatial_neighbors`` nearest cells in space
        (2 x width); ``False`` never; ``None`` (default) only when the data has coordinates and
        the model sets ``config.spatial_neighbors``. Neighbours are searched within one section
        only: ``obs[section_key]``, else the first of ``section``, ``library_id``, ``sample``,
        ``batch``; coordinates of different sections are never compared.
    spatial_key, section_key, n_spatial_neighbors
        Where the coordinates and sections are; neighbours averaged (default: the model's
        ``config.spatial_neighbors``, else 10).
    devices, accelerator, num_nodes
        Embed on several devices (Lightning's DDP predict; each cell on one process, gathered
        back in cell order: the same embeddings as on one device). Lightning starts the other
        processes by running the calling script again (under ``torchrun`` or SLURM the launcher
        starts them), so this needs a script or ``cellweave embed --devices N``, not an
        interactive session; every process returns the result, write it from rank 0 only.
        Default: one device, in this process.
    precision
        ``"32-true"`` (default) or ``"bf16-mixed"``: the forward pass under bf16 autocast (the
        weights stay float32). It pays on GPUs and on CPUs with bf16 matrix units (e.g. Intel
        AMX); on this project's CPU (AMX bf16 units) the shipped model embeds the 13 panel
        datasets 1.7x faster with zero-shot kNN macro-F1 within 0.005 of float32's
        (``benchmarks/embed_precision.py``). Recorded in ``uns``.
    token_space
        A reference corpus prepared by the same model (``model.prepare(reference)``) whose token
        space the cells adopt: its gene means and most variable genes
        (:func:`cellweave.data.adopt_token_space`); what :func:`annotate` does for its query.
        ``None``: the cells' own.
    copy
        Return a modified copy instead of writing into ``adata``.

    Returns
    -------
    ``None``, or the modified copy when ``copy=True``. Writes:

    ``.obsm[key_added]``
        ``(n_obs, embedding_dim)`` float32 cell embeddings (twice as wide with spatial context).
    ``.uns["cellweave"][key_added]``
        model name and SHA-256, cellweave/torch versions, seed, modalities, input kind
        (counts or log-normalized), the vocabulary coverage per modality and ``spatial``
        (whether tissue context was used; with it ``spatial_context``: key, neighbours,
        section column, number of sections) and ``token_space`` (``"own"`` or ``"reference"``).

    Examples
    --------
    >>> import cellweave
    >>> adata = cellweave.datasets.load("multibatch_cellbench_sc_mixology")
    >>> cellweave.tl.embed(adata)
    >>> sc.pp.neighbors(adata, use_rep="X_cellweave")
    """
    keep_torch_threads()
    CellWeave.check_precision(precision)
    adata = adata.copy() if copy else adata
    model = _resolve(model)
    embedder = None if _one_process(devices, num_nodes) else _multi_device_embedder(
        model, devices=devices, accelerator=accelerator, num_nodes=num_nodes, precision=precision)
    with model.autocast(precision if embedder is None else "32-true"):
        emb, cov = model.embed(
            adata, batch_size=batch_size, seed=seed, progress=progress, embed_corpus=embedder,
            spatial=spatial, spatial_key=spatial_key, section_key=section_key,
            n_spatial_neighbors=n_spatial_neighbors, token_space=token_space, layer=layer,
            modalities=modalities, organism=organism,
        )
    adata.obsm[key_added] = emb
    record: dict[str, Any] = {
        "model": model.name,
        "model_sha256": model.model_hash,
        "preset": model.config.preset,
        "seed": seed,
        "layer": layer,
        "modalities": sorted({c["modality"] for c in cov}),
        "x_kind": {c["modality"]: c.get("x_kind") for c in cov},
        "coverage": {c["modality"]: {k: v for k, v in c.items() if k not in ("examples",)} for c in cov},
        "coverage_examples": {c["modality"]: c.get("examples", {}) for c in cov},
        "versions": environment_versions(),
        "pretraining_seed": model.card.get("seed"),
        "spatial": model.last_spatial is not None,
        "spatial_context": model.last_spatial,
        "token_space": "own" if token_space is None else "reference",
        "precision": precision,
    }
    uns = dict(adata.uns.get(UNS_KEY, {}))
    uns[key_added] = _h5_safe(record)
    adata.uns[UNS_KEY] = uns
    logger.info("Wrote .obsm[%r] (%d x %d)", key_added, *emb.shape)
    return adata if copy else None


def embed_store(
    store: str | os.PathLike,
    *,
    model: CellWeave | str | None = None,
    key_added: str = EMBEDDING_KEY,
    batch_size: int = 128,
    seed: int = 0,
    progress: bool = True,
    devices: int | str = 1,
    accelerator: str = "auto",
    num_nodes: int = 1,
    precision: str = "32-true",
) -> AnnData:
    """Embed every cell of a token store (``cellweave prepare``) without loading the corpus.

    Cells are read from the store's memory-mapped shards one batch at a time, so memory does not
    grow with the corpus beyond the returned embeddings (``n_cells x embedding_dim`` float32).
    The store must have been prepared with ``model``'s vocabulary and value encoding; the features
    (genes, proteins, peaks) outside that vocabulary such a store keeps (``cellweave prepare`` for
    a model with generated codes) are mapped onto the model's generated codes by key, so the store
    embeds as its files.
    ``devices``, ``accelerator``, ``num_nodes``: as in :func:`embed` (one Lightning predict over
    all sources; each rank reads its own cells from the shards); ``precision`` as there.

    Returns
    -------
    An AnnData without ``X``: ``obs`` holds the cell names and their ``dataset`` (source),
    ``.obsm[key_added]`` the embeddings and ``.uns["cellweave"][key_added]`` the model, its hash,
    the store and per source the coverage the store recorded.
    """
    import anndata as ad
    import numpy as np
    import pandas as pd

    from cellweave.data import open_store

    CellWeave.check_precision(precision)
    model = _resolve(model)
    corpora = open_store(store, vocab=model.stored_vocab, value_encoding=model.config.value_encoding)
    model.adopt_store_features(corpora, store)
    model.warn_store_left_out({c.name: c.coverage for c in corpora}, store)
    if _one_process(devices, num_nodes):
        with model.autocast(precision):
            parts = [model.embed_corpus(corpus, batch_size=batch_size, seed=seed, progress=progress)
                     for corpus in corpora]
    else:
        from cellweave.train import embed_corpora

        parts = embed_corpora(model, corpora, batch_size=batch_size, seed=seed, devices=devices,
                              accelerator=accelerator, num_nodes=num_nodes, progress=progress, precision=precision)
    names, sources = [], []
    for corpus in corpora:
        names.append(np.asarray(corpus.obs_names, dtype=str))
        sources.append(np.full(len(corpus), corpus.name, dtype=object))
    emb = np.concatenate(parts) if parts else np.zeros((0, model.module.embedding_dim), dtype=np.float32)
    obs = pd.DataFrame({"dataset": pd.Categorical(np.concatenate(sources) if sources else [])},
                       index=pd.Index(np.concatenate(names) if names else [], dtype=str))
    adata = ad.AnnData(obs=obs, obsm={key_added: emb})
    record = {
        "model": model.name,
        "model_sha256": model.model_hash,
        "preset": model.config.preset,
        "seed": seed,
        "store": str(store),
        "coverage": {c.name: {r["modality"]: {k: v for k, v in r.items() if k != "examples"} for r in c.coverage}
                     for c in corpora},
        "versions": environment_versions(),
        "pretraining_seed": model.card.get("seed"),
        "precision": precision,
    }
    adata.uns[UNS_KEY] = {key_added: _h5_safe(record)}
    logger.info("Embedded %d cells of %d sources from the store %s", adata.n_obs, len(corpora), store)
    return adata
