"""Benchmark results: one flat record per (task, dataset, split, seed, method, metric) value.

Every task writes the same shape, so that any tool can compare methods across tasks::

    {"task", "dataset", "split", "seed", "method", "metric", "value", "higher_is_better"}

``method`` is ``"cellweave"`` for the model (variants as ``"cellweave (frozen)"`` etc.) and the
baseline's name otherwise. ``higher_is_better`` is ``null`` for a diagnostic: a number with no
better direction (for example a ratio whose ideal is neither its largest nor its smallest value),
reported beside the scores but never ranked.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass
from typing import Iterable

import numpy as np
import pandas as pd

from cellweave._exceptions import CellWeaveInputError
from cellweave._io_utils import atomic_write_json

#: The model's own method name in result records.
CELLWEAVE = "cellweave"
RECORD_FIELDS = ("task", "dataset", "split", "seed", "method", "metric", "value", "higher_is_better")


@dataclass(frozen=True)
class Record:
    """One benchmark number."""

    task: str
    dataset: str
    split: str
    seed: int
    method: str
    metric: str
    value: float
    higher_is_better: bool | None
    """``None``: a diagnostic with no better direction (never named best)."""

    def to_dict(self) -> dict:
        d = asdict(self)
        d["seed"] = int(d["seed"])
        v = float(d["value"])
        d["value"] = None if math.isnan(v) else v
        d["higher_is_better"] = _direction(d["higher_is_better"])
        return d


def _direction(flag) -> bool | None:
    """True / False, or None for a diagnostic (also a missing value read back from a table)."""
    if flag is None or (isinstance(flag, float) and math.isnan(flag)):
        return None
    return bool(flag)


def make_records(
    task: str, dataset: str, split: str, seed: int, method: str, metrics: dict[str, float],
    higher_is_better: dict[str, bool | None] | None = None,
) -> list[Record]:
    """Records of several metrics of one run. ``higher_is_better`` defaults to True per metric;
    ``None`` marks a diagnostic (reported, never ranked)."""
    hib = higher_is_better or {}
    return [Record(task, dataset, split, int(seed), method, m, float(v), _direction(hib.get(m, True)))
            for m, v in metrics.items()]


def records_frame(records: Iterable[Record | dict]) -> pd.DataFrame:
    """A DataFrame with one row per record and the columns of :data:`RECORD_FIELDS`."""
    rows = [r.to_dict() if isinstance(r, Record) else dict(r) for r in records]
    df = pd.DataFrame(rows, columns=list(RECORD_FIELDS))
    df["value"] = pd.to_numeric(df["value"], errors="coerce")
    return df


def write_results(records: Iterable[Record], path: str | os.PathLike) -> None:
    """Write the records as one JSON list (atomically)."""
    atomic_write_json(path, [r.to_dict() for r in records])


def read_results(path: str | os.PathLike) -> list[Record]:
    """Read a ``results.json`` written by :func:`write_results`."""
    with open(path) as fh:
        rows = json.load(fh)
    return records_from_rows(rows, path)


def records_from_rows(rows: list, path: str | os.PathLike) -> list[Record]:
    """Records from the dicts of :meth:`Record.to_dict` (``path``, the file they came from, names it in errors)."""
    if not isinstance(rows, list):
        raise CellWeaveInputError(f"{path}: expected a JSON list of result records.")
    out = []
    for i, row in enumerate(rows):
        missing = [f for f in RECORD_FIELDS if f not in row]
        if missing:
            raise CellWeaveInputError(f"{path}: record {i} lacks {missing}.")
        value = float("nan") if row["value"] is None else float(row["value"])
        out.append(Record(**{**row, "value": value}))
    return out


def summarize(records: Iterable[Record | dict]) -> pd.DataFrame:
    """Mean, standard deviation and count over seeds (and folds) per task/dataset/split/method/metric."""
    df = records_frame(records)
    if df.empty:
        return pd.DataFrame(columns=["task", "dataset", "split", "method", "metric", "mean", "std", "n",
                                     "higher_is_better"])
    keys = ["task", "dataset", "split", "method", "metric"]
    g = df.groupby(keys, sort=False)
    out = g["value"].agg(mean="mean", std=lambda v: float(np.std(v.dropna())) if v.notna().any() else np.nan,
                         n="count").reset_index()
    # first() would skip None (a diagnostic) and report the group as NaN; take the first as is.
    out["higher_is_better"] = [_direction(v) for v in g["higher_is_better"].agg(lambda v: v.iloc[0])]
    return out


def comparison_table(records: Iterable[Record | dict], *, task: str | None = None) -> pd.DataFrame:
    """Wide table: rows (dataset, split, metric), one column per method with ``mean ± std``.

    A ``best`` column names the method with the best mean (by ``higher_is_better``), and
    ``cellweave vs best baseline`` gives the signed difference of cellweave's mean from the best
    other method (positive = cellweave better), when cellweave ran. Diagnostics
    (``higher_is_better`` None) are marked "(diagnostic)" and get neither.
    """
    s = summarize(records)
    if task is not None:
        s = s[s["task"] == task]
    if s.empty:
        return pd.DataFrame()
    methods = list(dict.fromkeys(s["method"]))
    rows = []
    for (dataset, split, metric), grp in s.groupby(["dataset", "split", "metric"], sort=False):
        hib = _direction(grp["higher_is_better"].iloc[0])
        suffix = " (diagnostic)" if hib is None else ("" if hib else " (lower better)")
        row: dict = {"dataset": dataset, "split": split, "metric": metric + suffix}
        means = {}
        for r in grp.itertuples():
            means[r.method] = r.mean
            row[r.method] = "–" if pd.isna(r.mean) else (
                f"{r.mean:.3f}" if pd.isna(r.std) or r.n < 2 else f"{r.mean:.3f} ± {r.std:.3f}")
        valid = {m: v for m, v in means.items() if not pd.isna(v)}
        if len(valid) >= 2 and hib is not None:
            best = max(valid, key=valid.get) if hib else min(valid, key=valid.get)
            row["best"] = best
            ours = [m for m in valid if m.startswith(CELLWEAVE)]
            others = {m: v for m, v in valid.items() if not m.startswith(CELLWEAVE)}
            if ours and others:
                mine = max(valid[m] for m in ours) if hib else min(valid[m] for m in ours)
                ref = max(others.values()) if hib else min(others.values())
                row["cellweave vs best baseline"] = (mine - ref) if hib else (ref - mine)
        rows.append(row)
    cols = ["dataset", "split", "metric"] + methods + ["best", "cellweave vs best baseline"]
    df = pd.DataFrame(rows)
    return df[[c for c in cols if c in df.columns]]
