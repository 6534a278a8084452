"""The model's feature vocabulary: an ordered set of keys with contiguous integer ids."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pandas as pd

from cellweave._exceptions import CellWeaveInputError
from cellweave._io_utils import atomic_write_json

_FORMAT = "cellweave.vocabulary"
_VERSION = 1


class Vocabulary:
    """Feature keys (Ensembl IDs, ``prot:...``, ``atac:...``) -> ids ``0..n-1``, in order.

    Parameters
    ----------
    keys
        Unique, non-empty keys; their order fixes the ids.
    gene_aliases
        Whether human genes were mapped with NCBI Gene aliases when the vocabulary was built
        (:func:`cellweave.genes.map_features`); every later mapping for this vocabulary uses the
        same setting. Older vocabularies (files without the field) were built without them.

    Examples
    --------
    >>> vocab = Vocabulary(["ENSG00000141510", "prot:ENSG00000010610"])
    >>> vocab.lookup(["prot:ENSG00000010610", "missing"]).tolist()
    [1, -1]
    """

    def __init__(self, keys: Iterable[str], *, gene_aliases: bool = False) -> None:
        key_list = [str(k) for k in keys]
        index = pd.Index(key_list, dtype=object)
        if not index.is_unique:
            dups = index[index.duplicated()].unique().tolist()
            raise CellWeaveInputError(
                f"Vocabulary keys must be unique; {len(dups)} duplicated, e.g. {dups[:5]}. "
                "Deduplicate the keys (e.g. list(dict.fromkeys(keys)))."
            )
        if "" in key_list:
            raise CellWeaveInputError("Vocabulary keys must be non-empty; '' marks unmapped features.")
        self._keys = key_list
        self._index = index
        self.gene_aliases = bool(gene_aliases)

    @classmethod
    def from_feature_maps(
        cls, maps: Iterable[Any], counts_per_key: Mapping[str, int] | None = None, min_count: int = 0,
        *, gene_aliases: bool = False,
    ) -> Vocabulary:
        """Union of the mapped keys of several :class:`FeatureMap` objects, in first-seen order.

        With ``counts_per_key`` (e.g. number of cells a feature is detected in), keys counted
        fewer than ``min_count`` times are left out.
        """
        keys: dict[str, None] = {}
        for fmap in maps:
            for key in fmap.keys[fmap.mapped_mask]:
                keys.setdefault(str(key), None)
        if counts_per_key is not None:
            keys = {k: None for k in keys if counts_per_key.get(k, 0) >= min_count}
        return cls(keys, gene_aliases=gene_aliases)

    @property
    def keys(self) -> list[str]:
        return list(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, key: object) -> bool:
        return key in self._index

    def __iter__(self):
        return iter(self._keys)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocabulary) and self._keys == other._keys

    def __hash__(self) -> int:
        return hash(self.sha256)

    def __repr__(self) -> str:
        return f"Vocabulary({len(self)} keys, sha256={self.sha256[:12]})"

    def lookup(self, keys: Iterable[str]) -> np.ndarray:
        """Ids of ``keys`` (int64), ``-1`` for keys not in the vocabulary (and for ``""``)."""
        arr = np.asarray(list(keys) if not isinstance(keys, (np.ndarray, pd.Index, pd.Series)) else keys, dtype=object)
        if arr.size == 0:
            return np.zeros(0, dtype=np.int64)
        return self._index.get_indexer(arr).astype(np.int64)

    def extended(self, keys: Iterable[str]) -> Vocabulary:
        """This vocabulary followed by those of ``keys`` it lacks, once each, in order; ``self``
        when it lacks none (what generated codes grow a model's or a token store's vocabulary by)."""
        new = [k for k in dict.fromkeys(keys) if k not in self]
        return Vocabulary(self._keys + new, gene_aliases=self.gene_aliases) if new else self

    @property
    def sha256(self) -> str:
        """Hex SHA-256 of the ordered key list; equal vocabularies have equal hashes."""
        return hashlib.sha256(json.dumps(self._keys, separators=(",", ":")).encode("utf-8")).hexdigest()

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"format": _FORMAT, "version": _VERSION, "n_keys": len(self), "sha256": self.sha256}
        if self.gene_aliases:  # absent means False, so older vocabulary files read back unchanged
            d["gene_aliases"] = True
        return {**d, "keys": self.keys}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Vocabulary:
        if not isinstance(d, Mapping) or "keys" not in d:
            raise CellWeaveInputError("Not a cellweave vocabulary: no 'keys' field.")
        keys = d["keys"]
        # str(k) in __init__ would silently accept numbers, and a string would be read letter by letter.
        if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
            raise CellWeaveInputError("Not a cellweave vocabulary: 'keys' must be a list of strings.")
        vocab = cls(keys, gene_aliases=bool(d.get("gene_aliases", False)))
        if d.get("sha256") and d["sha256"] != vocab.sha256:
            raise CellWeaveInputError("Vocabulary file is corrupted: its sha256 does not match its keys.")
        return vocab

    def save(self, path: str | os.PathLike) -> None:
        """Write the vocabulary as JSON (atomically)."""
        atomic_write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | os.PathLike) -> Vocabulary:
        """Read a vocabulary written by :meth:`save`.

        Raises ``CellWeaveInputError`` when the file is not JSON or not a vocabulary, and
        ``OSError`` when it cannot be read.
        """
        with open(path, encoding="utf-8") as fh:
            try:
                d = json.load(fh)
            except UnicodeDecodeError as err:
                raise CellWeaveInputError(f"{path} is not a text file ({err.reason}), so not a vocabulary.") from None
            except json.JSONDecodeError as err:
                raise CellWeaveInputError(
                    f"{path} is not valid JSON ({err.msg} at line {err.lineno}, column {err.colno})."
                ) from None
            except RecursionError:  # absurdly nested brackets
                raise CellWeaveInputError(f"{path} is nested too deeply to be a vocabulary.") from None
        return cls.from_dict(d)
