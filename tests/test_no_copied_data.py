"""The repository holds no copy or conversion of another project's data.

Datasets and the gene tables other repositories publish are referenced (``cellweave.datasets``,
``cellweave.genes.GENE_TABLES``) and read from a mirror, the cache or their source. This test fails
if one comes back: by file type, by location, and by content (hashes of every registered
dataset, its source files and, where a mirror is present, every file in the mirror).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from cellweave import datasets
from cellweave._io_utils import sha256_file
from cellweave.genes import GENE_TABLES

REPO = Path(__file__).resolve().parents[1]
DATA_SUFFIXES = (".h5ad", ".h5mu", ".h5", ".loom", ".mtx", ".mtx.gz", ".rda", ".rds", ".RData", ".csv", ".csv.gz",
                 ".tsv", ".tsv.gz", ".txt.gz", ".parquet", ".zarr", ".npz")
#: Tables that may ship: from a PyPI wheel whose licence allows it, or our own.
ALLOWED = {f"src/cellweave/genes/resources/{t.filename}" for t in GENE_TABLES.values() if t.bundled} | {
    "src/cellweave/genes/resources/gene_sets_cellweave.tsv.gz",
}
#: Our own benchmark outputs (results.json and reports) are ours to keep.
OWN_PREFIXES = ("benchmarks/published/", "src/cellweave/models/pretrained/")


def _tracked_files() -> list[str]:
    try:
        out = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout: nothing is committed here")
    return [line for line in out.splitlines() if line and (REPO / line).is_file()]


def test_no_dataset_or_table_files_are_tracked() -> None:
    offending = [f for f in _tracked_files()
                 if f.startswith("data/") or (f.endswith(DATA_SUFFIXES) and f not in ALLOWED
                                              and not f.startswith(OWN_PREFIXES))]
    assert not offending, (
        f"These tracked files look like copied data: {offending}. Register the dataset or table in "
        "cellweave.datasets / cellweave.genes.GENE_TABLES and read it from the mirror instead."
    )


def test_no_tracked_file_has_the_bytes_of_registered_data() -> None:
    known = {entry.sha256: f"dataset {entry.name}" for entry in datasets.REGISTRY.values()}
    for entry in datasets.REGISTRY.values():
        known.update({f.sha256: f"source of {entry.name}: {f.url}" for f in entry.files if f.sha256})
    mirror = datasets.data_dir()
    if mirror is not None:
        for p in mirror.rglob("*"):
            if p.is_file() and p.suffix != ".md":
                known.setdefault(sha256_file(p), f"mirror file {p.relative_to(mirror)}")
    hits = {}
    for f in _tracked_files():
        p = REPO / f
        if f in ALLOWED or p.stat().st_size < 4096:  # tiny files (markers, configs) could collide by chance with empty data
            continue
        h = sha256_file(p)
        if h in known:
            hits[f] = known[h]
    assert not hits, f"Tracked files that are byte copies of registered data: {hits}"


def test_guard_catches_a_copied_file(tmp_path) -> None:
    """The location and suffix rule of the guard flags what it should (it could fail)."""
    names = ["data/x/x.h5ad", "src/cellweave/genes/resources/biomart_mouse_gene_ids.tsv.gz", "README.md",
             "src/cellweave/genes/resources/gencode_v44_human_gene_id2name.tsv.gz"]
    flagged = [f for f in names if f.startswith("data/") or (f.endswith(DATA_SUFFIXES) and f not in ALLOWED)]
    assert flagged == names[:2]
