"""The model a user meets: configuration + vocabulary + weights + model card, AnnData in and out."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import platform
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save

from cellweave._exceptions import CellWeaveInputError, CellWeaveModelError
from cellweave._io_utils import atomic_write_bytes, atomic_write_json, atomic_write_text
from cellweave.data import CellCorpus, Tokenizer, TokenDataset, collate_tokens, prepare_cells
from cellweave.genes import Vocabulary
from cellweave.nn import PRECISIONS, CellWeaveConfig, CellWeaveModule, check_precision, precision_autocast

if TYPE_CHECKING:
    from collections.abc import Callable

    from anndata import AnnData
    from mudata import MuData

logger = logging.getLogger(__name__)

PRETRAINED_DIR = Path(__file__).parent / "pretrained"
#: The shipped model used whenever ``--model`` / ``model=`` is not given.
DEFAULT_MODEL = "cellweave-tiny"
#: The shipped model the gene-level tools (``grn``, ``gene_map``) use when no model is given: the
#: default model keeps its gene tables at fixed random codes (``fixed_feature_tables``, which makes
#: its cell embedding better; issue 12), so its gene embeddings carry no learned information; this
#: one, the default until then, learned them.
DEFAULT_GENE_MODEL = "cellweave-tiny-genes"

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
VOCAB_FILE = "vocab.json"
CARD_FILE = "model_card.json"
CARD_MD_FILE = "MODEL_CARD.md"
HISTORY_FILE = "history.json"


def available_models() -> list[str]:
    """Names of the models shipped with the package."""
    if not PRETRAINED_DIR.is_dir():
        return []
    return sorted(p.name for p in PRETRAINED_DIR.iterdir() if (p / WEIGHTS_FILE).is_file())


def resolve_model_path(model: str | os.PathLike | None) -> Path:
    """A model folder from a path, a shipped model's name, or ``None`` (the shipped default)."""
    if model is None:
        model = DEFAULT_MODEL
    path = Path(model)
    if path.is_dir():
        required = (CONFIG_FILE, WEIGHTS_FILE, VOCAB_FILE)
        missing = [name for name in required if not (path / name).is_file()]
        if len(missing) == len(required):
            raise CellWeaveModelError(
                f"{path} is a folder but not a cellweave model (it needs {CONFIG_FILE}, {WEIGHTS_FILE} "
                f"and {VOCAB_FILE}). Point --model at the --out folder of `cellweave pretrain`."
            )
        if missing:
            raise CellWeaveModelError(
                f"The model folder {path} has no {' and no '.join(missing)}, so it cannot be loaded. "
                f"{_repair_hint(path)}"
            )
        return path
    shipped = PRETRAINED_DIR / str(model)
    if (shipped / WEIGHTS_FILE).is_file():
        return shipped
    raise CellWeaveModelError(
        f"No model folder or shipped model named {str(model)!r}. Shipped models: {available_models() or 'none'}; "
        "or give the folder written by `cellweave pretrain --out`."
    )


class CellWeave:
    """A pretrained CellWeave model.

    Parameters
    ----------
    config
        Architecture; ``config.vocab_size`` must equal ``len(vocab)``.
    vocab
        Feature vocabulary (genes, proteins, peak bins).
    module
        The torch module; a freshly initialized one when not given.
    card
        Model card fields (data, command, seed, metrics...).

    Examples
    --------
    >>> model = cellweave.CellWeave.load()          # the shipped default
    >>> cellweave.tl.embed(adata, model=model)
    >>> adata.obsm["X_cellweave"].shape
    """

    def __init__(
        self,
        config: CellWeaveConfig,
        vocab: Vocabulary,
        module: CellWeaveModule | None = None,
        card: dict[str, Any] | None = None,
    ) -> None:
        if config.vocab_size != len(vocab):
            raise ValueError(f"config.vocab_size={config.vocab_size} but the vocabulary has {len(vocab)} keys.")
        self.config = config
        self.vocab = vocab
        self.module = module if module is not None else CellWeaveModule(config)
        self.card: dict[str, Any] = dict(card or {})
        self.history: list[dict[str, Any]] = []
        self.path: Path | None = None
        self._hash: str | None = None
        self.last_spatial: dict[str, Any] | None = None
        self._stored_vocab = vocab  # as saved; ``vocab`` grows past it with generated codes
        #: Whether :meth:`prepare` gives a feature the vocabulary lacks a generated code (see
        #: :attr:`generates_codes`); set ``False`` to leave such features out, as models did before.
        self.generate_codes = True

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_preset(cls, preset: str, vocab: Vocabulary, **overrides: Any) -> CellWeave:
        config = CellWeaveConfig.from_preset(preset, vocab_size=len(vocab), **overrides)
        return cls(config, vocab)

    @classmethod
    def load(cls, model: str | os.PathLike | None = None, *, map_location: str = "cpu") -> CellWeave:
        """Load a model folder or a shipped model by name (``None``: the shipped default).

        Only ``config.json``, ``vocab.json``, ``model_card.json`` and ``model.safetensors`` are
        read: no pickle is ever unpickled. A missing, corrupted or mismatched file raises
        ``CellWeaveModelError`` naming the file, what is wrong and the fix; an
        unreadable model card (optional metadata) is logged as a warning and left empty.
        """
        path = resolve_model_path(model)
        fix = _repair_hint(path)
        config_file, vocab_file, weights_file = path / CONFIG_FILE, path / VOCAB_FILE, path / WEIGHTS_FILE
        config = _read_model_file(config_file, CellWeaveConfig.from_dict, fix)
        vocab = _read_model_file(vocab_file, Vocabulary.from_dict, fix)
        if config.vocab_size != len(vocab):
            raise CellWeaveModelError(
                f"{vocab_file} has {len(vocab):,} features but {config_file} says vocab_size {config.vocab_size:,}: "
                f"the two files do not come from the same model. {fix}"
            )
        state = _read_weights(weights_file, map_location, fix)
        _check_weights_match(state, config, path, fix)
        card = _read_optional_json(path / CARD_FILE, dict, "model card")
        model_obj = cls(config, vocab, card=card)
        try:
            model_obj.module.load_state_dict(state)
        except RuntimeError as err:  # keys and shapes were checked above: a last resort
            raise CellWeaveModelError(f"Weights in {weights_file} do not match its config: {err} {fix}") from None
        model_obj.module.eval()
        model_obj.history = _read_optional_json(path / HISTORY_FILE, list, "training history") or []
        model_obj.path = path
        model_obj._hash = hashlib.sha256(weights_file.read_bytes()).hexdigest()
        return model_obj

    def save(self, path: str | os.PathLike, *, overwrite: bool = True) -> Path:
        """Write ``config.json``, ``model.safetensors``, ``vocab.json`` and the model card.

        Each file is written atomically (temporary file, then rename).
        """
        path = Path(path)
        if path.exists() and not overwrite and any(path.iterdir()):
            raise FileExistsError(f"{path} exists and is not empty; pass overwrite=True.")
        path.mkdir(parents=True, exist_ok=True)
        blob = self._weights_blob()
        atomic_write_bytes(path / WEIGHTS_FILE, blob)
        atomic_write_json(path / CONFIG_FILE, self.config.to_dict())
        self.vocab.save(path / VOCAB_FILE)
        self._stored_vocab = self.vocab
        self._hash = hashlib.sha256(blob).hexdigest()
        card = {**self.card, "model_sha256": self._hash, "vocab_sha256": self.vocab.sha256}
        self.card = card
        atomic_write_json(path / CARD_FILE, card)
        atomic_write_text(path / CARD_MD_FILE, render_model_card(self))
        if self.history:
            atomic_write_json(path / HISTORY_FILE, self.history)
        self.path = path
        return path

    # ------------------------------------------------------------------ properties
    @property
    def name(self) -> str:
        return self.card.get("name") or (self.path.name if self.path else "cellweave (unsaved)")

    @property
    def model_hash(self) -> str:
        """SHA-256 of the weights as saved in ``model.safetensors``."""
        if self._hash is None:
            self._hash = hashlib.sha256(self._weights_blob()).hexdigest()
        return self._hash

    def _weights_blob(self) -> bytes:
        """The bytes of ``model.safetensors``: what is saved and what the hash is taken of."""
        state = {k: v.detach().cpu().contiguous() for k, v in self.module.state_dict().items()}
        blob = save(state, metadata={"format": "pt", "cellweave_config": json.dumps(self.config.to_dict())})
        return _canonical_safetensors(blob)

    @property
    def generates_codes(self) -> bool:
        """Whether a feature the vocabulary lacks still enters the input, with a generated code.

        True for a model whose feature tables are fixed random codes
        (``config.fixed_feature_tables``, the shipped default) unless :attr:`generate_codes` is
        set ``False``. Such a model was trained to read random codes, not learned ones, so a new
        code from the same distribution, seeded by the feature's key
        (:func:`cellweave.nn.generated_code`), is read like a stored one: the same gene gets the
        same code in every dataset, run and machine. Measured (issue 12, zero-shot kNN macro-F1 of
        the development panel with the shipped model, 3 seeds): 0.690 against 0.681 with the unknown
        genes left out, integration (scIB total) 0.681 against 0.661; on the cell-line mixture 45% of
        the genes are outside the 19,158-feature vocabulary. Embedding records count these features
        as ``n_generated``.
        UCE (Rosen et al. 2023) likewise embeds any gene that has a code, from its protein
        sequence; here a code needs only the gene's key."""
        return self.generate_codes and bool(self.config.fixed_feature_tables)

    def warn_store_left_out(self, coverage: dict[str, list[dict[str, Any]]], store: str | os.PathLike) -> None:
        """Say so when a token store left out features that embedding its files would have kept.

        ``coverage``: each source's coverage records (a store's manifest or its corpora). A model
        with generated codes (:attr:`generates_codes`) reads features outside its vocabulary when
        it embeds a file. A store prepared for it keeps them (``prepare_store(generate_codes=
        model.code_modalities)``, what ``cellweave prepare`` does: genes since the thirty-eighth
        session, every modality the model reads since the thirty-ninth); in a store prepared
        without, they are left out, and the store's embedding then differs from the files'
        (shipped model, panel zero-shot kNN macro-F1 0.681 without the genes against 0.690 with
        them). Called by ``tl.embed_store`` and ``cellweave prepare``."""
        if not self.generates_codes:
            return
        left_out = {name: sum(int(r.get("not_in_vocab", 0)) - int(r.get("n_generated", 0)) for r in records
                              if r.get("modality") in self.config.modalities)  # a file's unread modality: not lost
                    for name, records in coverage.items()}
        left_out = {name: n for name, n in left_out.items() if n}
        if left_out:
            worst = ", ".join(f"{name} {n:,}" for name, n in sorted(left_out.items(), key=lambda kv: -kv[1])[:3])
            logger.warning(
                "%s gives features outside its vocabulary generated codes when it embeds a file, but the token "
                "store %s holds %s such features of %d source(s) left out (%s), so embedding the store differs "
                "from embedding the files themselves. To keep them, prepare the files again into a new folder "
                "with `cellweave prepare FILES --model M` (it keeps them for a model with generated codes), or "
                "embed the files (`cellweave embed FILE`, `tl.embed`) where they fit in memory.",
                self.name, store, f"{sum(left_out.values()):,}", len(left_out), worst)

    @property
    def code_modalities(self) -> list[str]:
        """The modalities whose features outside the vocabulary this model gives generated codes
        (those it reads, when :attr:`generates_codes`; else none): what :func:`cellweave.data.prepare_store`
        is given as ``generate_codes`` by ``cellweave prepare``, so a token store keeps what
        embedding the files would read."""
        return sorted(self.config.modalities) if self.generates_codes else []

    def adopt_store_features(self, corpora: list, store: str | os.PathLike) -> None:
        """Point the columns of a token store's features outside :attr:`stored_vocab` (genes, and
        proteins or peaks; a store prepared with ``generate_codes``) at this model's generated codes
        for them, by key: the model adds those it lacks, as :meth:`prepare` does for a file, so the
        store (``corpora``, from ``open_store``) embeds as its files do whatever the model added
        earlier in this process. A model that gives no codes, or does not read a kept feature's
        modality, is refused, with the fix."""
        from cellweave.data import store_vocabulary

        n_stored = len(self.stored_vocab)
        if not any((b.token_ids >= n_stored).any() for c in corpora for b in c.blocks):
            return
        keys = np.asarray(store_vocabulary(store).keys, dtype=object)
        extra = [str(k) for k in keys[n_stored:]]
        if not self.generates_codes:
            raise CellWeaveInputError(
                f"The token store {store} holds {len(extra):,} features outside {self.name}'s vocabulary (it was "
                "prepared for a model that gives them generated codes), and this model gives none. Embed with the "
                "model the store was prepared for, or prepare the files again with this one into a new folder.")
        self._add_generated(extra)
        for corpus in corpora:
            for block in corpus.blocks:
                if (block.token_ids >= n_stored).any():
                    ids = self.vocab.lookup(keys[block.token_ids])
                    if (ids < 0).any():  # a key of a modality the model does not read (never a gene key)
                        raise CellWeaveInputError(f"{corpus.name}/{block.modality}: the store holds features "
                                                  f"{self.name} cannot read; prepare the files for this model.")
                    block.token_ids = np.asarray(ids, dtype=block.token_ids.dtype)

    #: Precisions of the forward passes outside pretraining (Lightning's names): ``"32-true"``, ``"bf16-mixed"``.
    PRECISIONS = PRECISIONS
    #: Refuse a precision not in :attr:`PRECISIONS`, naming the choices (before any work).
    check_precision = staticmethod(check_precision)

    def autocast(self, precision: str = "32-true") -> torch.autocast:
        """The autocast of a Lightning precision name (``"32-true"``: none; ``"bf16-mixed"``: bf16)
        on the device the model sits on, for its forward passes (weights stay float32)."""
        return precision_autocast(precision, next(self.module.parameters()).device.type)

    @property
    def stored_vocab(self) -> Vocabulary:
        """The vocabulary as saved with the weights (``vocab.json``), without the features
        :meth:`prepare` has since added with generated codes; ``vocab`` starts with these keys."""
        return self._stored_vocab

    def _add_generated(self, keys: list[str]) -> Vocabulary:
        """Append ``keys`` (those not yet in ``vocab``, of a modality the model has a row for) to the
        vocabulary and the module's feature tables, with generated codes; returns the grown vocabulary."""
        from cellweave import modalities

        def readable(key: str) -> bool:
            spec = modalities.modality_of_key(key)  # None: a gene key, which RNA always reads
            return spec is None or spec.name in self.config.modalities

        new = [k for k in dict.fromkeys(keys) if k not in self.vocab and readable(k)]
        if not new:
            return self.vocab
        if self.module.config.vocab_size != len(self.vocab):
            raise CellWeaveModelError(
                f"This model's module has {self.module.config.vocab_size:,} feature rows but its vocabulary "
                f"{len(self.vocab):,} keys: the module is shared with another CellWeave object that added "
                "features. Give each CellWeave its own module (copy.deepcopy(model.module)), or set "
                "model.generate_codes = False."
            )
        self.module.add_features(new)
        self.vocab = self.vocab.extended(new)
        self.config = dataclasses.replace(self.config, vocab_size=len(self.vocab))
        logger.debug("%s: %d features added with generated codes (vocabulary now %d)", self.name, len(new),
                     len(self.vocab))
        return self.vocab

    @property
    def tokenizer(self) -> Tokenizer:
        return Tokenizer.from_config(self.config)

    def modality_id(self, modality: str) -> int:
        """Row of ``modality`` in this model's modality embedding (by name, from ``config.json``)."""
        try:
            return self.config.modality_id(modality)
        except ValueError as err:
            raise CellWeaveInputError(str(err)) from None

    def __repr__(self) -> str:
        n = self.module.num_parameters()
        return (
            f"CellWeave(name={self.name!r}, preset={self.config.preset!r}, d_model={self.config.d_model}, "
            f"n_layers={self.config.n_layers}, vocab={len(self.vocab)}, parameters={n:,})"
        )

    # ------------------------------------------------------------------ inference
    def prepare(self, data: AnnData | MuData, **kwargs: Any) -> CellCorpus:
        """Validate, normalize and map ``data`` onto this model's vocabulary; with
        :attr:`generates_codes`, features it lacks are added with generated codes first (the
        coverage report counts them as ``n_generated``)."""
        if not self.generates_codes:
            return prepare_cells(data, self.vocab, value_encoding=self.config.value_encoding, **kwargs)
        return prepare_cells(data, self.stored_vocab, value_encoding=self.config.value_encoding,
                             generate_codes=self._add_generated, **kwargs)

    @torch.inference_mode()
    def embed_corpus(
        self, corpus: CellCorpus, *, batch_size: int = 128, seed: int = 0, progress: bool = True,
        modalities: list[str] | None = None, pooling: str = "config",
    ) -> np.ndarray:
        """Cell embeddings ``(n_cells, embedding_dim)`` of a prepared corpus (deterministic for a seed).

        ``modalities``: embed from these modalities only (e.g. ``["rna"]`` for the RNA-only
        embedding of a CITE-seq cell). ``pooling="cls"`` returns the CLS state ``(n, d_model)``
        that the cell head reads (what :meth:`predict_features` uses), whatever the config says;
        ``pooling="pooled"`` the pooled embedding before an adapted model's latent readout
        (``config.readout_latent``; the same as ``"config"`` without one).
        """
        from tqdm.auto import tqdm

        self.module.eval()
        dataset = TokenDataset([corpus], self.tokenizer, mode="embed", seed=seed, modalities=modalities)
        loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate_tokens)
        device = next(self.module.parameters()).device
        if pooling not in ("config", "cls", "pooled"):
            raise ValueError(f"pooling={pooling!r}: give 'config', 'cls' or 'pooled'.")
        width = {"cls": self.config.d_model, "pooled": self.module.pooled_dim}.get(pooling, self.module.embedding_dim)
        out = np.zeros((len(dataset), width), dtype=np.float32)
        for batch in tqdm(loader, desc=f"embedding {corpus.name}", disable=not progress, leave=False):
            args = (batch["token_ids"].to(device), batch["values"].to(device), batch["modality_ids"].to(device),
                    batch["padding_mask"].to(device))
            cell = (self.module.encode(*args)[0] if pooling == "cls"
                    else self.module.embed_cells(*args, readout=pooling != "pooled"))
            out[batch["index"].numpy()] = cell.float().cpu().numpy()
        return out

    def modality_features(self, modality: str) -> list[str]:
        """Vocabulary keys of a modality: those with its key prefix (``prot:...``, ``atac:...``), or
        the unprefixed gene IDs (``rna`` and ``gene_activity`` share gene keys; the modality
        embedding tells them apart). Prefixes are the registered modalities' (``cellweave.modalities``)."""
        from cellweave import modalities

        spec = modalities.get(modality, exact=True)
        keys = self.stored_vocab.keys
        if spec.key_prefix:
            return [k for k in keys if k.startswith(spec.key_prefix)]
        return [k for k in keys if modalities.modality_of_key(k) is None]

    def gene_token_ids(self, genes: list[str], var: pd.DataFrame | None = None,
                       organism: str | None = "human") -> np.ndarray:
        """Vocabulary ids of ``genes`` (symbols or Ensembl IDs); -1 where a gene is not in the vocabulary.

        When ``var`` (an AnnData ``.var``) lists a gene with a ``gene_id`` column, that ID is used
        first, so renamed symbols of the user's data still resolve.
        """
        from cellweave.genes import map_features

        names = [str(g).strip() for g in genes]
        frame = pd.DataFrame(index=pd.Index(names, dtype=object))
        if var is not None and "gene_id" in var.columns:
            ids = var["gene_id"].astype(str)
            frame["gene_id"] = [ids.get(n, "") if n in var.index else "" for n in names]
        fmap = map_features(frame, modality="rna", organism=organism, aliases=self.vocab.gene_aliases)
        return self.vocab.lookup(fmap.keys).astype(np.int64)

    @torch.inference_mode()
    def predict_features(
        self,
        corpus: CellCorpus,
        features: list[str],
        *,
        target: str,
        input_modalities: list[str] | None = None,
        batch_size: int = 128,
        seed: int = 0,
        progress: bool = True,
        cell_states: np.ndarray | None = None,
    ) -> np.ndarray:
        """Values ``(n_cells, n_features)`` of vocabulary ``features`` of modality ``target``,
        predicted by the cell head from each cell's state computed on ``input_modalities``
        (default: every modality except ``target``). Values are on the model's value scale
        (``config.value_encoding``: within-cell quantile in (0, 1], 0 = not detected).
        ``cell_states``: precomputed CLS states (``embed_corpus(..., pooling="cls")``)."""
        ids = self.vocab.lookup(features)
        if (ids < 0).any():
            bad = [f for f, i in zip(features, ids) if i < 0][:5]
            raise CellWeaveInputError(f"Features not in the model's vocabulary: {bad}. Use model.modality_features().")
        if cell_states is None:
            if input_modalities is None:
                input_modalities = [m for m in corpus.modalities if m != target]
            if not input_modalities:
                raise CellWeaveInputError(
                    f"No modality to predict {target!r} from: the data carries only {corpus.modalities}."
                )
            cell_states = self.embed_corpus(corpus, batch_size=batch_size, seed=seed, progress=progress,
                                            modalities=input_modalities, pooling="cls")
        device = next(self.module.parameters()).device
        fid = torch.as_tensor(ids, dtype=torch.long, device=device)
        mid = torch.full_like(fid, self.modality_id(target))
        out = np.zeros((cell_states.shape[0], len(features)), dtype=np.float32)
        for start in range(0, cell_states.shape[0], 1024):
            cell = torch.as_tensor(cell_states[start:start + 1024], device=device)
            for f0 in range(0, len(features), 4096):
                pred = self.module.predict_features(cell, fid[f0:f0 + 4096], mid[f0:f0 + 4096])
                out[start:start + cell.shape[0], f0:f0 + pred.shape[1]] = pred.float().cpu().numpy()
        return out

    def embed(
        self,
        data: AnnData | MuData,
        *,
        batch_size: int = 128,
        seed: int = 0,
        progress: bool = True,
        spatial: bool | None = None,
        spatial_key: str = "spatial",
        section_key: str | None = None,
        n_spatial_neighbors: int | None = None,
        embed_corpus: Callable[..., np.ndarray] | None = None,
        token_space: CellCorpus | None = None,
        **prepare_kwargs: Any,
    ) -> tuple[np.ndarray, list[dict[str, Any]]]:
        """Cell embeddings of ``data`` and its per-modality coverage report.

        ``spatial``: append the mean embedding of each cell's ``n_spatial_neighbors`` nearest
        cells in space (``obsm[spatial_key]``, searched within the cell's section:
        ``obs[section_key]`` or the first of ``section``/``library_id``/``sample``/``batch``)
        to its own embedding, doubling the width. ``None``: only when the data has coordinates
        and ``config.spatial_neighbors > 0``. The spatial settings used are recorded in
        ``self.last_spatial`` (``None`` when no spatial context was used).
        ``modalities`` (a ``prepare`` keyword) restricts the input modalities.
        ``embed_corpus``: what embeds the prepared corpus, called as :meth:`embed_corpus` is
        (default: that method; ``tl.embed`` passes a multi-device one).
        ``token_space``: a prepared reference corpus whose token space the cells adopt (its
        features' means and, with ``config.hvg_tokens``, its most variable features;
        :func:`cellweave.data.adopt_token_space`), so they are tokenized as that reference was;
        ``None``: from the cells themselves.
        """
        from cellweave.data import neighbourhood_mean, section_neighbors, spatial_coordinates

        corpus = self.prepare(data, **prepare_kwargs)
        if token_space is not None:
            from cellweave.data import adopt_token_space

            adopt_token_space(corpus, token_space, hvg_tokens=int(getattr(self.config, "hvg_tokens", 0)))
        emb = (embed_corpus or self.embed_corpus)(corpus, batch_size=batch_size, seed=seed, progress=progress)
        self.last_spatial = None
        coords = spatial_coordinates(data, spatial_key) if spatial is not False else None
        use = bool(spatial) if spatial is not None else (coords is not None and self.config.spatial_neighbors > 0)
        if use:
            if coords is None:
                raise CellWeaveInputError(
                    f"spatial=True but the data has no obsm[{spatial_key!r}] coordinates; "
                    "embed with spatial=False (or --no-spatial), or add the coordinates."
                )
            k = n_spatial_neighbors or self.config.spatial_neighbors or 10
            nbr, self.last_spatial = section_neighbors(data, spatial_key=spatial_key, section_key=section_key,
                                                       n_neighbors=k)
            emb = np.concatenate([emb, neighbourhood_mean(emb, nbr)], axis=1)
        return emb, corpus.coverage


def _repair_hint(path: Path) -> str:
    """How to get a working model folder back: what every load error ends with."""
    try:
        shipped = path.resolve().is_relative_to(PRETRAINED_DIR.resolve())
    except OSError:
        shipped = False
    if shipped:
        return "It is a model shipped with cellweave: reinstall cellweave to restore it."
    return "Re-save the model with CellWeave.save / `cellweave pretrain`, or restore the folder from a copy."


def _read_json(file: Path) -> Any:
    """Parsed JSON of ``file``; ``ValueError`` saying what is wrong when it is not JSON text."""
    try:
        return json.loads(file.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as err:
        raise ValueError(f"it is not UTF-8 text ({err.reason} at byte {err.start})") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"it is not valid JSON ({err.msg} at line {err.lineno}, column {err.colno})") from None
    except RecursionError:  # absurdly nested brackets
        raise ValueError("its JSON is nested too deeply") from None


def _read_model_file(file: Path, parse: Any, fix: str) -> Any:
    """``parse`` of a required JSON file of a model folder, any failure as one ``CellWeaveModelError``."""
    try:
        return parse(_read_json(file))
    except OSError as err:
        raise CellWeaveModelError(
            f"Cannot read {file}: {err.strerror or err}. Check that the file is readable. {fix}"
        ) from None
    except ValueError as err:  # CellWeaveInputError (the vocabulary) is a ValueError too
        raise CellWeaveModelError(f"Cannot load {file}: {str(err).rstrip('.')}. {fix}") from None


def _read_optional_json(file: Path, kind: type, what: str) -> Any | None:
    """A metadata file (model card, history) or ``None``: when it is broken the model still loads,
    as the weights do not depend on it, but the user is told."""
    if not file.is_file():
        return None
    try:
        value = _read_json(file)
    except (OSError, ValueError) as err:
        logger.warning("Ignoring %s: %s. The model loads without its %s; re-save the model to rewrite it.",
                       file, err, what)
        return None
    if not isinstance(value, kind):
        logger.warning("Ignoring %s: it holds a JSON %s, not a %s. The model loads without its %s; re-save the "
                       "model to rewrite it.", file, type(value).__name__, "object" if kind is dict else "list", what)
        return None
    return value


def _read_weights(file: Path, map_location: str, fix: str) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file, or one ``CellWeaveModelError`` saying what the file is instead.

    safetensors only parses a JSON header and raw tensor bytes, so whatever the file holds, no
    code in it runs (a pickle where the weights belong is refused, never unpickled).
    """
    try:
        return load_file(str(file), device=map_location)
    except OSError as err:
        raise CellWeaveModelError(
            f"Cannot read {file}: {err.strerror or err}. Check that the file is readable. {fix}"
        ) from None
    except SafetensorError as err:
        with open(file, "rb") as fh:
            head = fh.read(8)
        if head.startswith(b"PK\x03\x04") or (len(head) > 1 and head[0] == 0x80 and 2 <= head[1] <= 5):
            what = ("it is a pickle / torch.save file, not safetensors. cellweave never unpickles weights, "
                    "as unpickling can run arbitrary code")
        elif file.stat().st_size < 8:
            what = f"it is {file.stat().st_size} bytes long, too short to be a safetensors file"
        else:
            what = f"it is not a valid safetensors file ({err}): it is truncated, corrupted or in another format"
        raise CellWeaveModelError(f"Cannot load {file}: {what}. {fix}") from None


def _check_weights_match(state: dict[str, torch.Tensor], config: CellWeaveConfig, path: Path, fix: str) -> None:
    """Refuse weights whose tensor names, shapes or types are not those ``config`` builds, naming
    the first few differences, before any parameter is allocated."""
    problem = ""
    blocks = {k.split(".")[1] for k in state if k.startswith("blocks.")}
    if len(blocks) != config.n_layers:
        # checked first: the module built below has one block per layer, so a corrupt n_layers costs nothing
        problem = (f"{WEIGHTS_FILE} holds {len(blocks)} transformer blocks but {CONFIG_FILE} says "
                   f"n_layers {config.n_layers}")
    else:
        try:
            with torch.device("meta"):  # shapes only: no memory, whatever sizes the config asks for
                expected = {k: tuple(v.shape) for k, v in CellWeaveModule(config).state_dict().items()}
        except ValueError as err:
            raise CellWeaveModelError(f"Cannot load {path / CONFIG_FILE}: {str(err).rstrip('.')}. {fix}") from None
        missing = [k for k in expected if k not in state]
        unexpected = [k for k in state if k not in expected]
        shapes = [f"{k} is {tuple(state[k].shape)} in {WEIGHTS_FILE} but {expected[k]} for {CONFIG_FILE}"
                  for k in expected if k in state and tuple(state[k].shape) != expected[k]]
        not_float = [f"{k} ({state[k].dtype})" for k in expected if k in state and not state[k].is_floating_point()]
        if missing or unexpected:
            problem = f"missing {missing[:5]}, unexpected {unexpected[:5]}"
        elif shapes:
            problem = "; ".join(shapes[:3]) + (f" (and {len(shapes) - 3} more)" if len(shapes) > 3 else "")
        elif not_float:
            problem = f"tensors that are not floating point: {', '.join(not_float[:3])}"
    if not problem:
        return
    saved = _saved_config_differences(path / WEIGHTS_FILE, config)
    raise CellWeaveModelError(
        f"Weights in {path} do not match its config: {problem}.{saved} {CONFIG_FILE} and {WEIGHTS_FILE} must come "
        f"from the same model. {fix}"
    )


def _saved_config_differences(file: Path, config: CellWeaveConfig) -> str:
    """The fields where the config recorded in the weights' metadata differs from ``config``, as a
    sentence ('' when there is no usable record): it tells which of the two files was changed."""
    try:
        with safe_open(str(file), framework="pt") as fh:
            saved = json.loads((fh.metadata() or {})["cellweave_config"])
        current = config.to_dict()
        diffs = [f"{k} {saved[k]!r}" for k in current if k in saved and saved[k] != current[k]]
    except Exception:  # noqa: BLE001 - only a hint for the message; the error is raised anyway
        return ""
    if not diffs:
        return ""
    return f" The weights were saved with {', '.join(diffs[:5])}."


def _canonical_safetensors(blob: bytes) -> bytes:
    """The same safetensors file with its JSON header written with sorted keys.

    safetensors keeps the metadata in a Rust ``HashMap``, whose iteration order depends on
    the process's history, so the same weights could serialize (and hash) two ways. Tensor
    offsets are relative to the data section, so reordering the header changes nothing else.
    """
    import struct

    n = struct.unpack("<Q", blob[:8])[0]
    header = json.dumps(json.loads(blob[8:8 + n]), sort_keys=True, separators=(",", ":")).encode()
    header += b" " * (-len(header) % 8)  # the format pads the header to 8 bytes with spaces
    return struct.pack("<Q", len(header)) + header + blob[8 + n:]


def render_model_card(model: CellWeave) -> str:
    """A human-readable model card (Markdown) from ``model.card``."""
    c = model.card
    cfg = model.config
    lines = [
        f"# Model card: {c.get('name', 'cellweave model')}",
        "",
        c.get("description", "A CellWeave transformer pretrained with masked value modelling on single-cell data."),
        "",
        "## Architecture",
        f"- preset `{cfg.preset}`: d_model {cfg.d_model}, {cfg.n_layers} layers, {cfg.n_heads} heads, "
        f"MLP {cfg.d_ff}, pooling `{cfg.pooling}`",
        f"- context per modality: {cfg.context_length}; zero share {cfg.zero_fraction} (when embedding: "
        f"{getattr(cfg, 'embed_zeros', 'random')}); mask ratio {cfg.mask_ratio} "
        f"({getattr(cfg, 'mask_grouping', 'random')}); "
        f"modality dropout (cross-modal masking) {cfg.modality_dropout}",
        f"- token values: {getattr(cfg, 'value_encoding', 'quantile')}; token selection "
        f"{getattr(cfg, 'token_selection', 'value')}; tokens drawn from "
        + (f"the {cfg.hvg_tokens:,} most variable genes of the cells embedded together"
           if getattr(cfg, "hvg_tokens", 0) else "all measured features"),
        f"- vocabulary: {len(model.vocab):,} features; parameters: {model.module.num_parameters():,}",
        "",
        "## Training",
        f"- command: `{c.get('command', 'n/a')}`",
        f"- seed: {c.get('seed', 'n/a')}; epochs: {c.get('epochs', 'n/a')}; steps: {c.get('steps', 'n/a')}",
        f"- wall time: {c.get('train_seconds', 'n/a')} s on {c.get('hardware', 'n/a')}",
        "",
        "## Data",
        "| dataset | cells (train/val) | modalities | sha256 |",
        "|---|---|---|---|",
    ]
    for d in c.get("data", []):
        lines.append(
            f"| {d.get('name')} | {d.get('n_train', '?')}/{d.get('n_val', '?')} | {', '.join(d.get('modalities', []))} "
            f"| `{str(d.get('sha256', ''))[:12]}` |"
        )
    adaptation = c.get("adaptation")
    if adaptation:
        lines += ["", "## Adaptation (no labels)",
                  f"- method `{adaptation.get('method', 'encoder')}` from `{adaptation.get('base_model')}` "
                  f"(start: {adaptation.get('start', 'pretrained')}) on {adaptation.get('n_cells')} cells; "
                  f"batch covariate: {adaptation.get('batch_key') or 'none'}; {adaptation.get('steps')} steps in "
                  f"{adaptation.get('seconds')} s",
                  f"- losses before / after: {adaptation.get('losses_before')} / {adaptation.get('losses_after')}",
                  f"- command: `{adaptation.get('command', 'n/a')}`"]
        if getattr(cfg, "readout_latent", 0):
            lines.append(f"- cells are embedded as the {cfg.readout_latent}-d posterior mean of a variational "
                         "readout of the frozen model's embedding, trained with a negative-binomial decoder of the "
                         "cells' counts (scVI's model); it describes these cells, not a general-purpose space")
    metrics = c.get("metrics", {})
    if metrics:
        lines += ["", "## Validation metrics (held-out cells, masked values)", "| metric | value |", "|---|---|"]
        lines += [f"| {k} | {v:.4f} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in metrics.items()]
    lines += [
        "",
        "## Versions",
        f"- {', '.join(f'{k} {v}' for k, v in c.get('versions', {}).items())}",
        f"- model sha256: `{c.get('model_sha256', '')}`",
        "",
        "## Intended use and limits",
        "Embedding, annotation and transfer for human and mouse single-cell data whose features overlap the "
        "vocabulary. Trained on a small bundled corpus: compare against the baselines that `cellweave` reports "
        "beside every result before trusting it.",
        "",
    ]
    return "\n".join(lines)


#: Packages besides torch, anndata, scanpy and numpy whose versions every record carries.
BASELINE_PACKAGES = ("scipy", "scikit-learn", "scvi-tools", "harmonypy", "faiss-cpu")


def environment_versions() -> dict[str, str]:
    """Versions recorded in model cards, ``uns['cellweave']`` and benchmark summaries: cellweave's
    stack and the libraries whose numerics the baselines and the transfer read (scikit-learn's
    classifiers, scipy, scvi-tools, harmonypy, faiss), so a re-run that differs can be traced to a
    package (``constraints.txt`` pins only torch)."""
    from importlib.metadata import PackageNotFoundError, version

    from cellweave._version import __version__

    def _version(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "not installed"

    return {
        "cellweave": __version__,
        "torch": str(torch.__version__),
        "anndata": _version("anndata"),
        "scanpy": _version("scanpy"),
        "numpy": np.__version__,
        **{name: _version(name) for name in BASELINE_PACKAGES},
        "python": platform.python_version(),
    }
