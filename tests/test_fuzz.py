"""Property tests (hypothesis) over input validation, the gene mapper and the tokenizer.

Whatever the input (shapes, sparsity, dtypes, negative / NaN / inf values, feature and cell names
with unicode, whitespace, empty strings and duplicates), cellweave either accepts it or raises one
of its own exceptions (``cellweave._exceptions``), never a numpy, pandas or Python error; and the
tokenizer's output always respects the vocabulary and the context length.

Examples are few and small so the file runs in well under a minute (``CELLWEAVE_FUZZ_EXAMPLES`` sets
how many per test, 60 by default; examples are derandomized, so a run is reproducible).
"""

from __future__ import annotations

import os
import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, event, example, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.extra import numpy as hnp  # noqa: E402

from cellweave.modalities import names as modality_names  # noqa: E402
from cellweave._exceptions import CellWeaveInputError, CellWeaveModelError  # noqa: E402

#: The only exceptions bad input may raise (CellWeaveDataError is a CellWeaveInputError).
CELLWEAVE_ERRORS = (CellWeaveInputError, CellWeaveModelError)

#: Examples per test; CELLWEAVE_FUZZ_EXAMPLES=1000 for a longer hunt.
N_EXAMPLES = int(os.environ.get("CELLWEAVE_FUZZ_EXAMPLES", "60"))
FUZZ = settings(max_examples=N_EXAMPLES, deadline=None, derandomize="CELLWEAVE_FUZZ_EXAMPLES" not in os.environ,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# --------------------------------------------------------------------------------------------
# Strategies

#: Feature / cell names: real gene symbols and IDs, peaks, unicode, whitespace, empty strings.
NAME = st.one_of(
    st.sampled_from(["TP53", "CD4", "ACTB", "Actb", "ENSG00000141510", "ENSG00000141510.17", "ENSMUSG00000029580",
                     "ENSDARG00000000001", "chr1:1000-2000", "1_500_900", "chrX-10-5", "CD45RA", "anti-CD3 (TotalSeq-B)",
                     "MT-CO1", "TP53-1", "nan", "None", "", " ", "\t", "\u00e9l\u00e9ment", "\u03b2-actin", "\u2003CD8A\u2003",
                     "\U0001f9ec", "a,b", "(", ")(", "::", "chr1:-5-3"]),
    st.text(min_size=0, max_size=8),
)
#: Values of a matrix, by kind.
VALUES = {
    "counts": st.integers(min_value=0, max_value=50),
    "float": st.floats(min_value=0, max_value=20, allow_nan=False, allow_infinity=False, width=32),
    "any": st.floats(allow_nan=True, allow_infinity=True, width=64),
    "negative": st.integers(min_value=-5, max_value=5),
    "huge": st.sampled_from([0.0, 1.0, 2.0**24, 2.0**25, 1e9, 1e300]),
}
DTYPES = [np.int8, np.int32, np.int64, np.uint16, np.float16, np.float32, np.float64]


@st.composite
def matrices(draw, max_cells: int = 6, max_features: int = 6):
    n_cells = draw(st.integers(0, max_cells))
    n_features = draw(st.integers(0, max_features))
    kind = draw(st.sampled_from(sorted(VALUES)))
    values = draw(hnp.arrays(np.float64, (n_cells, n_features), elements=VALUES[kind]))
    zero_share = draw(st.floats(0, 1))
    values[np.random.default_rng(draw(st.integers(0, 2**16))).random(values.shape) < zero_share] = 0
    dtype = draw(st.sampled_from(DTYPES))
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        X = values.astype(dtype)  # NaN -> int is platform garbage, which is fine: still a matrix
    layout = draw(st.sampled_from(["dense", "csr", "csc"]))
    if layout != "dense" and dtype != np.float16:  # scipy.sparse has no float16
        X = getattr(sp, f"{layout}_matrix")(X)
    return X


def _names(draw, n: int, unique: bool | None = None) -> list[str]:
    names = draw(st.lists(NAME, min_size=n, max_size=n))
    if unique is None:
        unique = draw(st.booleans())
    if unique:
        names = [f"{name}{i}" for i, name in enumerate(names)]
    return names


@st.composite
def anndatas(draw, max_cells: int = 6, max_features: int = 6):
    X = draw(matrices(max_cells, max_features))
    obs = pd.DataFrame(index=pd.Index(_names(draw, X.shape[0]), dtype=object))
    var = pd.DataFrame(index=pd.Index(_names(draw, X.shape[1]), dtype=object))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # anndata warns on duplicate names: that is what we test
        adata = ad.AnnData(X=X, obs=obs, var=var)
    if draw(st.booleans()):
        adata.layers["counts"] = X.copy()
    if draw(st.booleans()):
        adata.uns["x_kind"] = draw(st.sampled_from(["counts", "log_normalized", "scaled", "bogus", 3]))
    return adata


def _call(fn, *args, **kwargs):
    """``fn(...)``, with warnings silenced; a cellweave error is an accepted outcome (returns None)."""
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        try:
            out = fn(*args, **kwargs)
            event(f"{fn.__name__}: accepted")
            return out
        except CELLWEAVE_ERRORS as err:
            event(f"{fn.__name__}: refused")
            message = str(err)
            assert message and "\n" not in message.strip(), f"not one line: {message!r}"
            return None


# --------------------------------------------------------------------------------------------
# Validation


@FUZZ
@given(adata=anndatas(), layer=st.sampled_from([None, "counts", "missing"]))
def test_validate_matrix_raises_only_cellweave_errors(adata, layer) -> None:
    from cellweave.io import validate_matrix

    report = _call(validate_matrix, adata, layer=layer, dataset="fuzz")
    if report is not None:
        X = adata.X if layer is None else adata.layers[layer]
        data = X.data if sp.issparse(X) else np.asarray(X)
        # Accepted matrices are finite, non-negative, and named uniquely.
        assert np.isfinite(np.asarray(data, dtype=np.float64)).all()
        assert (np.asarray(data, dtype=np.float64) >= 0).all()
        assert adata.obs_names.is_unique and adata.var_names.is_unique
        assert report.x_kind in ("counts", "log_normalized")
        assert report.n_cells == adata.n_obs > report.n_empty_cells


@FUZZ
@given(X=matrices())
def test_detect_x_kind_always_answers(X) -> None:
    from cellweave.io import detect_x_kind
    from cellweave.io._validate import X_KINDS

    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        assert detect_x_kind(X) in X_KINDS


@FUZZ
@given(names=st.lists(NAME, max_size=4), modality_for_anndata=NAME)
def test_modality_names_raise_only_cellweave_errors(names, modality_for_anndata) -> None:
    from cellweave.io import as_modalities, check_modalities

    result = _call(check_modalities, names)
    if result is not None:
        used, skipped = result
        assert set(used) <= set(modality_names()) and len(used) + len(skipped) == len(names)
    adata = ad.AnnData(X=np.ones((2, 2), dtype=np.float32))
    mods = _call(as_modalities, adata, modality_for_anndata=modality_for_anndata)
    if mods is not None:
        assert list(mods) and set(mods) <= set(modality_names())


# --------------------------------------------------------------------------------------------
# Gene mapper

ID_VALUES = st.one_of(NAME, st.none(), st.just(float("nan")), st.integers(-3, 3), st.floats(allow_nan=True))
COORDS = st.one_of(st.integers(-10, 10**6), st.none(), st.floats(allow_nan=True, allow_infinity=True), NAME)


@st.composite
def var_tables(draw):
    n = draw(st.integers(0, 6))
    var = pd.DataFrame(index=pd.Index(_names(draw, n), dtype=object))
    for column, values in (("gene_id", ID_VALUES), ("gene_symbol", ID_VALUES), ("chrom", NAME),
                           ("start", COORDS), ("end", COORDS)):
        if draw(st.booleans()):
            var[column] = pd.Series(draw(st.lists(values, min_size=n, max_size=n)), index=var.index, dtype=object)
    return var


@FUZZ
@given(var=var_tables(), modality=st.sampled_from([*modality_names(), "adt", ""]),
       organism=st.sampled_from([None, "human", "mouse", "Homo sapiens", "zebrafish", "", "HUMAN "]),
       bin_size=st.sampled_from([10_000, 1, 0, -5, 2.5, "10kb", True]))
# Found by this test: an infinite or astronomically large peak coordinate (OverflowError, or a key
# in a bin no genome has), and a bin size that is not a number (TypeError).
@example(var=pd.DataFrame({"chrom": ["chr1"], "start": [float("inf")], "end": [5.0]}, index=["p"]),
         modality="atac", organism=None, bin_size=10_000)
@example(var=pd.DataFrame(index=["chr1:1-99999999999999999999999"]), modality="atac", organism=None,
         bin_size=10_000)
@example(var=pd.DataFrame(index=["chr1:1-500"]), modality="atac", organism=None, bin_size="10kb")
def test_map_features_raises_only_cellweave_errors(var, modality, organism, bin_size) -> None:
    from cellweave.genes import map_features

    fmap = _call(map_features, var, modality=modality, organism=organism, atac_bin_size=bin_size)
    if fmap is not None:
        assert fmap.n_features == len(var) == len(fmap.keys) == len(fmap.reasons)
        for key, reason in zip(fmap.keys, fmap.reasons):
            assert isinstance(key, str) and isinstance(reason, str)
            assert bool(key) != bool(reason), (key, reason)  # mapped, or unmapped with a reason
            assert key == key.strip()  # whitespace never reaches a vocabulary key
            if key.startswith("atac:"):
                assert int(key.rsplit(":", 1)[1]) < 2**32  # a bin inside a genome


# --------------------------------------------------------------------------------------------
# Tokenizer


@pytest.fixture(scope="module")
def fuzz_vocab():
    """A vocabulary over a small synthetic human dataset, and its gene names."""
    from cellweave.data import build_vocabulary, synthetic_adata

    adata = synthetic_adata(n_cells=40, n_genes=60, seed=1)
    vocab, _ = build_vocabulary({"synthetic": adata}, min_cells=1)
    return vocab, list(adata.var_names)


@st.composite
def token_inputs(draw, genes: list[str]):
    """An AnnData over some known genes, some unknown names and duplicates of either."""
    n_cells = draw(st.integers(1, 8))
    known = draw(st.lists(st.sampled_from(genes), min_size=0, max_size=12, unique=True))
    unknown = draw(st.lists(NAME, max_size=4))
    names = [f"{n}_{i}" if n in known[:i] else n for i, n in enumerate(known + unknown)]
    names = list(dict.fromkeys(names)) or ["NOTAGENE"]
    kind = draw(st.sampled_from(["counts", "log"]))
    counts = draw(hnp.arrays(np.int64, (n_cells, len(names)), elements=st.integers(0, 300)))
    sparsity = draw(st.floats(0, 1))
    counts[np.random.default_rng(draw(st.integers(0, 2**16))).random(counts.shape) < sparsity] = 0
    X = counts.astype(np.float32)
    if kind == "log":  # log1p of counts per 10k, as scanpy writes it
        lib = X.sum(axis=1, keepdims=True)
        X = np.log1p(np.divide(X * 1e4, lib, out=np.zeros_like(X), where=lib > 0)).astype(np.float32)
    if draw(st.booleans()):
        X = sp.csr_matrix(X)
    return ad.AnnData(X=X, obs=pd.DataFrame(index=[f"c{i}" for i in range(n_cells)]),
                      var=pd.DataFrame(index=pd.Index(names, dtype=object)))


@settings(max_examples=N_EXAMPLES, deadline=None, derandomize="CELLWEAVE_FUZZ_EXAMPLES" not in os.environ,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                 HealthCheck.data_too_large])
@given(data=st.data())
def test_tokenizer_invariants(fuzz_vocab, data) -> None:
    from cellweave.data import TokenDataset, Tokenizer, collate_tokens, prepare_cells

    vocab, genes = fuzz_vocab
    adata = data.draw(token_inputs(genes), label="adata")
    encoding = data.draw(st.sampled_from(["log1p", "quantile"]), label="value_encoding")
    corpus = _call(prepare_cells, adata, vocab, organism="human", value_encoding=encoding)
    if corpus is None:
        return
    assert len(corpus) == adata.n_obs
    context = data.draw(st.integers(1, 20), label="context")
    tok = Tokenizer({"rna": context}, zero_fraction=data.draw(st.floats(0, 1), label="zero_fraction"),
                    mask_ratio=data.draw(st.floats(0, 1), label="mask_ratio"),
                    jitter=data.draw(st.floats(0, 2), label="jitter"))
    mode = data.draw(st.sampled_from(["train", "eval", "embed"]), label="mode")
    n_targets = data.draw(st.integers(0, 10), label="n_targets")
    dataset = TokenDataset([corpus], tok, mode=mode, seed=data.draw(st.integers(0, 3)), n_targets=n_targets)
    items = [dataset[i] for i in range(len(dataset))]
    n_vocab = len(vocab)
    for item in items:
        ids, values, mods = item["token_ids"], item["values"], item["modality_ids"]
        assert ids.dtype == np.int64 and values.dtype == np.float32
        assert ids.size == values.size == mods.size <= context
        assert ((ids >= 0) & (ids < n_vocab)).all()
        assert np.unique(ids).size == ids.size  # no feature twice in one cell
        assert np.isfinite(values).all() and (values >= 0).all()
        if encoding == "quantile":
            assert (values <= 1).all()
        assert (mods == tok.modality_ids["rna"]).all()
        if mode != "embed":
            mask = item["value_mask"]
            assert mask.size == ids.size and (ids.size == 0 or mask.any())
        if n_targets and mode != "embed":
            t_ids, t_values = item["target_ids"], item["target_values"]
            assert t_ids.size == t_values.size <= n_targets + 1  # rounding of the per-modality share
            assert ((t_ids >= 0) & (t_ids < n_vocab)).all() and np.isfinite(t_values).all()
            assert not set(t_ids.tolist()) & set(ids.tolist())  # targets are outside the input
    batch = collate_tokens(items)
    assert batch["token_ids"].shape == batch["values"].shape == batch["padding_mask"].shape
    assert int(batch["padding_mask"].sum()) == sum(it["token_ids"].size for it in items)


def test_prepare_cells_accepts_dense_float16(fuzz_vocab) -> None:
    from cellweave.data import prepare_cells, synthetic_adata

    vocab, _ = fuzz_vocab
    adata = synthetic_adata(n_cells=40, n_genes=60, seed=1)
    adata.X = adata.X.toarray().astype(np.float16)  # counts below 2048 are exact in float16
    corpus = prepare_cells(adata, vocab, organism="human")
    assert corpus.blocks[0].x_kind == "counts" and corpus.blocks[0].values.dtype == np.float32


@pytest.fixture(scope="module")
def fuzz_multimodal():
    """A small CITE-seq + ATAC MuData with cells missing modalities, its vocabulary and corpus."""
    from cellweave.data import build_vocabulary, prepare_cells, synthetic_mudata

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mdata = synthetic_mudata(n_cells=30, n_genes=40, n_proteins=8, n_peaks=40, missing={"prot": 0.3, "atac": 0.3},
                                 seed=2)
        vocab, _ = build_vocabulary({"mm": mdata}, min_cells=1)
        corpus = prepare_cells(mdata, vocab, dataset="mm", value_encoding="quantile")
    return vocab, corpus


@settings(max_examples=N_EXAMPLES, deadline=None, derandomize="CELLWEAVE_FUZZ_EXAMPLES" not in os.environ,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(context=st.fixed_dictionaries({m: st.integers(0, 12) for m in ("rna", "prot", "atac")}),
       mode=st.sampled_from(["train", "eval", "embed"]), n_targets=st.integers(0, 12),
       dropout=st.floats(0, 1), only=st.one_of(st.none(), st.sets(st.sampled_from(["rna", "prot", "atac"]))),
       seed=st.integers(0, 5))
def test_multimodal_tokenizer_invariants(fuzz_multimodal, context, mode, n_targets, dropout, only, seed) -> None:
    from cellweave.data import TokenDataset, Tokenizer, collate_tokens

    vocab, corpus = fuzz_multimodal
    tok = Tokenizer(context, zero_fraction=0.2, mask_ratio=0.3, modality_dropout=dropout)
    dataset = TokenDataset([corpus], tok, mode=mode, seed=seed, n_targets=n_targets,
                           modalities=sorted(only) if only is not None else None)
    allowed = {tok.modality_ids[m] for m in context if only is None or m in only}
    items = [dataset[i] for i in range(0, len(dataset), 3)]
    for item in items:
        ids, values, mods = item["token_ids"], item["values"], item["modality_ids"]
        assert ids.size == values.size == mods.size
        assert ((ids >= 0) & (ids < len(vocab))).all() and np.unique(ids).size == ids.size
        assert np.isfinite(values).all() and ((values >= 0) & (values <= 1)).all()
        assert set(mods.tolist()) <= allowed
        for m, budget in context.items():
            assert int((mods == tok.modality_ids[m]).sum()) <= budget  # each modality within its context
        if "target_ids" in item:
            t_ids = item["target_ids"]
            assert ((t_ids >= 0) & (t_ids < len(vocab))).all() and np.isfinite(item["target_values"]).all()
            assert not set(t_ids.tolist()) & set(ids.tolist())
    collate_tokens(items)
