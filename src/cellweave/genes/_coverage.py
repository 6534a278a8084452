"""How much of a dataset's feature space a model's vocabulary covers, and why the rest is not."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ._mapping import FeatureMap
from ._vocab import Vocabulary

NOT_IN_VOCAB = "not in model vocabulary"
N_EXAMPLES = 10


@dataclass
class CoverageReport:
    """Coverage of one modality of one dataset.

    ``n_in_vocab + not_in_vocab + sum(not_mapped.values()) == n_features``.
    """

    dataset: str | None
    modality: str
    organism: str | None
    n_features: int
    n_mapped: int
    n_in_vocab: int
    fraction_in_vocab: float
    not_mapped: dict[str, int] = field(default_factory=dict)
    not_in_vocab: int = 0
    n_generated: int = 0
    """Of the ``not_in_vocab`` features, those given a generated code (``CellWeave.prepare`` with
    fixed random feature tables), so they still enter the model's input."""
    n_keyed_by_name: int = 0
    examples: dict[str, list[str]] = field(default_factory=dict)

    @property
    def fraction_mapped(self) -> float:
        return self.n_mapped / self.n_features if self.n_features else 0.0

    def to_dict(self) -> dict[str, Any]:
        """Plain Python types only (JSON-serializable)."""
        d = asdict(self)
        d["fraction_mapped"] = self.fraction_mapped
        return d

    def __str__(self) -> str:
        name = f"{self.dataset}/{self.modality}" if self.dataset else self.modality
        lines = [
            f"{name}: {self.n_in_vocab} of {self.n_features} features in the vocabulary "
            f"({self.fraction_in_vocab:.1%}); {self.n_mapped} mapped to a key",
        ]
        if self.not_in_vocab:
            ex = ", ".join(self.examples.get(NOT_IN_VOCAB, [])[:5])
            lines.append(f"  {self.not_in_vocab:>6}  {NOT_IN_VOCAB}  (e.g. {ex})")
        if self.n_generated:
            lines.append(f"  {self.n_generated:>6}  of those given a generated code (used)")
        for reason, count in sorted(self.not_mapped.items(), key=lambda kv: -kv[1]):
            ex = ", ".join(self.examples.get(reason, [])[:5])
            lines.append(f"  {count:>6}  {reason}  (e.g. {ex})")
        if self.n_keyed_by_name:
            lines.append(f"  {self.n_keyed_by_name:>6}  proteins keyed by antibody name (target gene unknown)")
        return "\n".join(lines)


def coverage(fmap: FeatureMap, vocab: Vocabulary, *, dataset: str | None = None) -> CoverageReport:
    """Count the features of ``fmap`` that are in ``vocab``, and why the others are not.

    Parameters
    ----------
    fmap
        Output of :func:`map_features`.
    vocab
        The model's vocabulary.
    dataset
        Name shown in the report.

    Returns
    -------
    A :class:`CoverageReport`; its ``examples`` hold up to 10 feature names per reason,
    including ``"not in model vocabulary"`` for mapped features the model has never seen.
    """
    mapped = fmap.mapped_mask
    ids = vocab.lookup(fmap.keys)
    in_vocab = mapped & (ids >= 0)
    missing = mapped & ~in_vocab
    reasons = fmap.reasons[~mapped]
    not_mapped = {str(r): int(c) for r, c in Counter(str(r) or "unmapped" for r in reasons).most_common()}
    examples: dict[str, list[str]] = {}
    for reason in not_mapped:
        sel = ~mapped & np.array([(str(r) or "unmapped") == reason for r in fmap.reasons], dtype=bool)
        examples[reason] = [str(n) for n in fmap.names[sel][:N_EXAMPLES]]
    if missing.any():
        examples[NOT_IN_VOCAB] = [str(n) for n in fmap.names[missing][:N_EXAMPLES]]
    n = fmap.n_features
    return CoverageReport(
        dataset=dataset,
        modality=fmap.modality,
        organism=fmap.organism,
        n_features=int(n),
        n_mapped=int(mapped.sum()),
        n_in_vocab=int(in_vocab.sum()),
        fraction_in_vocab=float(in_vocab.sum() / n) if n else 0.0,
        not_mapped=not_mapped,
        not_in_vocab=int(missing.sum()),
        n_keyed_by_name=int(fmap.keyed_by_name.sum()),
        examples=examples,
    )


def coverage_table(reports: Iterable[CoverageReport]) -> pd.DataFrame:
    """One row per report: counts and fractions, unmapped reasons joined into one column."""
    rows = []
    for r in reports:
        rows.append({
            "dataset": r.dataset,
            "modality": r.modality,
            "organism": r.organism,
            "n_features": r.n_features,
            "n_mapped": r.n_mapped,
            "fraction_mapped": r.fraction_mapped,
            "n_in_vocab": r.n_in_vocab,
            "fraction_in_vocab": r.fraction_in_vocab,
            "not_in_vocab": r.not_in_vocab,
            "n_generated": r.n_generated,
            "n_not_mapped": int(sum(r.not_mapped.values())),
            "not_mapped_reasons": "; ".join(f"{k}: {v}" for k, v in r.not_mapped.items()),
        })
    return pd.DataFrame(rows)
