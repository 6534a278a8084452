"""Every failure of the command line is one line on stderr (traceback only with --debug), and an
output that cannot be written is refused before any work starts."""

from __future__ import annotations

import os

import pytest

from cellweave import cli


def test_unexpected_error_is_one_line(monkeypatch, capsys) -> None:
    def boom(args):
        raise RuntimeError("disk on fire")

    import cellweave._cli.models

    monkeypatch.setattr(cellweave._cli.models, "cmd_models", boom)  # the table names it; build_parser looks it up
    assert cli.main(["models"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("cellweave models: error: RuntimeError: disk on fire")
    assert "--debug" in err and "Traceback" not in err
    with pytest.raises(RuntimeError, match="disk on fire"):
        cli.main(["models", "--debug"])  # after the verb
    with pytest.raises(RuntimeError):
        cli.main(["--debug", "models"])  # before the verb


def test_global_flags_after_the_verb(capsys) -> None:
    args = cli.build_parser().parse_args(["models", "-q"])
    assert args.quiet and args.verbose == 0 and not args.debug
    args = cli.build_parser().parse_args(["-v", "models"])
    assert args.verbose == 1 and not args.quiet  # the verb's parser does not reset it


def test_unwritable_output_folder_fails_before_work(monkeypatch, tmp_path, capsys) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    real_access = os.access
    # as root (CI) permission bits do not stop writes, so ask os.access the way a user would see it
    monkeypatch.setattr(os, "access", lambda p, mode: False if str(p) == str(locked) else real_access(p, mode))
    assert cli.main(["embed", str(tmp_path / "missing.h5ad"), "--out", str(locked / "new" / "x.h5ad")]) == 2
    err = capsys.readouterr().err
    assert f"the folder {locked} is not writable" in err


def test_output_under_a_file_fails_before_work(tmp_path, capsys) -> None:
    """The input does not exist either: the output is checked first, before anything is read."""
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    assert cli.main(["embed", str(tmp_path / "missing.h5ad"), "--out", str(blocker / "sub" / "x.h5ad")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("cellweave embed: error: --out") and "is a file, not a folder" in err


def test_silent_accepts_are_refused(tmp_path) -> None:
    """pretrain with zero epochs and data with duplicate cell names are refused with the fix."""
    import anndata as ad

    from cellweave._exceptions import CellWeaveInputError
    from cellweave.data import synthetic_adata
    from cellweave.io import validate_matrix
    from cellweave.train import pretrain

    adata = synthetic_adata(n_cells=40, n_genes=60, seed=0)
    with pytest.raises(CellWeaveInputError, match="untrained model.*--max-epochs 1"):
        pretrain({"syn": adata}, out=tmp_path / "m", max_epochs=0)
    assert not (tmp_path / "m").exists()  # refused before anything is written
    dup = ad.concat([adata[:5], adata[:5]])
    with pytest.raises(CellWeaveInputError, match=r"5 duplicate cell names.*obs_names_make_unique"):
        validate_matrix(dup, dataset="dup")


def test_refused_pretraining_leaves_nothing_behind(tmp_path) -> None:
    """Random gene names: nothing to pretrain on. The error says why, and no folder or vocab.json
    is left at the output path (it used to keep a vocabulary, once an empty one)."""
    from cellweave._exceptions import CellWeaveInputError
    from cellweave.data import synthetic_adata
    from cellweave.train import pretrain

    adata = synthetic_adata(n_cells=40, n_genes=60, seed=0)
    adata.var_names = [f"NOTAGENE{i}X" for i in range(adata.n_vars)]
    adata.var = adata.var[[]]
    with pytest.raises(CellWeaveInputError, match="nothing to pretrain on|no feature|vocabulary"):
        pretrain({"random": adata}, out=tmp_path / "model", max_epochs=1)
    assert not (tmp_path / "model").exists()


def test_output_suffix_existing_file_and_overwrite_are_checked_before_work(tmp_path, capsys) -> None:
    from cellweave.data import synthetic_adata

    inp = tmp_path / "in.h5ad"
    synthetic_adata(n_cells=30, n_genes=50, seed=0).write_h5ad(inp)
    # A suffix the command does not write: refused with the name to use, nothing written.
    assert cli.main(["embed", str(inp), "--out", str(tmp_path / "out.csv")]) == 2
    err = capsys.readouterr().err
    assert "writes .h5ad or .h5mu" in err and "'out.h5ad'" in err and not (tmp_path / "out.csv").exists()
    # An existing file is kept unless --overwrite.
    existing = tmp_path / "done.h5ad"
    existing.write_bytes(b"previous result")
    assert cli.main(["embed", str(inp), "--out", str(existing)]) == 2
    assert "--overwrite" in capsys.readouterr().err and existing.read_bytes() == b"previous result"
    # A folder where a file is written, and a file where a folder is written.
    assert cli.main(["embed", str(inp), "--out", str(tmp_path)]) == 2
    assert cli.main(["adapt", str(inp), "--out", str(existing)]) == 2
    err = capsys.readouterr().err
    assert "is a folder" in err and "writes a folder there" in err
    assert existing.read_bytes() == b"previous result"


def test_perturb_refuses_an_unknown_modality_and_advice_never_overwrites_rna(tmp_path, capsys) -> None:
    import mudata as md

    from cellweave.data import synthetic_adata
    from cellweave.io import check_modalities

    rna = synthetic_adata(n_cells=30, n_genes=50, seed=0)
    with md.set_options(pull_on_update=False):
        mdata = md.MuData({"rna": rna, "weird": rna.copy()})
    mdata.write(tmp_path / "in.h5mu")
    gene = str(rna.var_names[0])
    assert cli.main(["perturb", str(tmp_path / "in.h5mu"), "--genes", gene, "--out", str(tmp_path / "o.h5mu")]) == 2
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("cellweave ")]
    assert len(lines) == 1 and lines[0].startswith("cellweave perturb: error: Unknown modality 'weird'")
    # With 'rna' taken, the advice is a free modality name or removal, never mod['rna'] = ... .
    with pytest.raises(Exception, match="del mdata.mod") as info:
        check_modalities(["rna", "weird"])
    assert "mdata.mod['rna'] =" not in str(info.value) and "mdata.mod['prot'] = mdata.mod.pop('weird')" in str(info.value)
    # A MuData without RNA names the fix.
    with md.set_options(pull_on_update=False):
        md.MuData({"prot": rna.copy()}).write(tmp_path / "prot.h5mu")
    assert cli.main(["perturb", str(tmp_path / "prot.h5mu"), "--genes", gene, "--out", str(tmp_path / "p.h5mu")]) == 2
    assert "rename it" in capsys.readouterr().err
    assert not (tmp_path / "o.h5mu").exists() and not (tmp_path / "p.h5mu").exists()


@pytest.mark.parametrize("content, message", [(b"", "is empty (0 bytes)"), (b"not hdf5", "Could not parse"),
                                               (None, "truncated")])
def test_prepare_refuses_a_broken_file_before_creating_the_store(tmp_path, capsys, content, message) -> None:
    """The same one-line reasons as every other verb, and no store folder left behind."""
    from cellweave.data import synthetic_adata

    bad = tmp_path / "cells.h5ad"
    if content is None:  # a file cut in half, as an interrupted copy leaves it
        synthetic_adata(n_cells=50, seed=0).write_h5ad(bad)
        bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 2])
    else:
        bad.write_bytes(content)
    store = tmp_path / "store"
    assert cli.main(["prepare", str(bad), "--out", str(store)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("cellweave prepare: error:") and message in err and "not handled" not in err
    assert not store.exists()


def test_prepare_refused_on_its_values_leaves_no_store_folder(tmp_path, capsys) -> None:
    import numpy as np
    import scipy.sparse as sp

    from cellweave.data import synthetic_adata

    adata = synthetic_adata(n_cells=40, seed=0)
    X = adata.X.toarray().astype(np.float32)
    X[0, 0] = np.nan
    adata.X = sp.csr_matrix(X)
    adata.write_h5ad(tmp_path / "nan.h5ad")
    assert cli.main(["prepare", str(tmp_path / "nan.h5ad"), "--out", str(tmp_path / "store")]) == 2
    assert "NaN or infinite" in capsys.readouterr().err
    assert not (tmp_path / "store").exists()


def test_harmony_runs_on_a_handful_of_cells() -> None:
    """harmonypy's default cluster count is 0 below 15 cells, which it cannot run with."""
    import numpy as np

    from cellweave.tl import integrate_embedding

    rng = np.random.default_rng(0)
    X = rng.normal(size=(6, 8)).astype(np.float32)
    X[3:] += 2.0
    out = integrate_embedding(X, np.array(["a", "b"] * 3), method="harmony")
    assert out.shape[0] == 6 and np.isfinite(out).all()


def test_embed_refuses_a_file_that_cannot_fit_before_reading_it(tmp_path, monkeypatch, capsys) -> None:
    """A file whose embedding would not fit in the free memory is refused with the store route,
    before it is read (other tests embed such files when the memory is there)."""
    import anndata as ad
    import numpy as np
    import scipy.sparse as sp

    import cellweave._system
    from cellweave import io

    X = sp.random(50, 30, density=0.2, format="csr", random_state=0, dtype=np.float32)
    X.data = np.ceil(X.data * 5)
    path = tmp_path / "cells.h5ad"
    ad.AnnData(X=X).write_h5ad(path)
    assert io.h5ad_matrix_bytes(path) == X.nnz * 8  # float32 values + int32 columns
    assert io.h5ad_matrix_bytes(tmp_path / "missing.h5ad") is None

    def never(*a, **k):
        raise AssertionError("the file was read")

    monkeypatch.setattr(cellweave._system, "available_memory_mb", lambda: 100.0)
    monkeypatch.setattr(io, "read", never)
    assert cli.main(["embed", str(path), "--out", str(tmp_path / "out.h5ad")]) == 2
    err = capsys.readouterr().err
    assert "GiB are free" in err and f"cellweave prepare {path} --out STORE/" in err
    assert not (tmp_path / "out.h5ad").exists()
