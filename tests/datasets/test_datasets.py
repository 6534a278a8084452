"""cellweave.datasets: the static registry agrees with the real files; loading and errors."""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import mudata as md
import pytest

import cellweave
from cellweave import datasets
from cellweave._exceptions import CellWeaveInputError
from cellweave.io import detect_x_kind

EXPECTED = {
    "perturb_papalexi2021_sceptre", "multibatch_cellbench_sc_mixology", "citeseq_pbmc_10x_scvi_tests",
    "citeseq_citefuse_eccite", "multiome_muon_test", "liger_bmmc_rna_gene_activity", "scanpy_pbmc68k_reduced",
    "celltypist_sample_559cells", "spatial_osmfish_scvi", "spatial_giotto_mini_visium_multisample",
    "spatial_giotto_mini_visium_dg", "spatial_novosparc_intestine", "spatial_novosparc_bdtnp_drosophila",
    "spatial_visium_squidpy_test",
}
ORGANISM = {"Homo sapiens": "human", "Mus musculus": "mouse", "Drosophila melanogaster": "fly"}


def test_list_table() -> None:
    table = datasets.list()
    assert datasets.list_datasets is datasets.list
    assert set(table["name"]) == EXPECTED
    for col in ["name", "path", "format", "modalities", "n_cells", "organism", "x_kind", "label_key",
                "batch_key", "licence", "pretrain"]:
        assert col in table.columns
    t = table.set_index("name")
    assert t.loc["multibatch_cellbench_sc_mixology", "label_key"] == "cell_type"
    assert t.loc["spatial_novosparc_intestine", "label_key"] == "zone"
    assert t.loc["perturb_papalexi2021_sceptre", "label_key"] == "perturbation"
    assert t.loc["celltypist_sample_559cells", "label_key"] is None
    assert not t.loc["scanpy_pbmc68k_reduced", "pretrain"]
    assert not t.loc["spatial_novosparc_bdtnp_drosophila", "pretrain"]
    assert t.loc["spatial_visium_squidpy_test", "pretrain"]
    assert t["pretrain"].sum() == 12


def test_registry_matches_the_files() -> None:
    """Every field of the static registry, checked against the file it describes."""
    for info in datasets.REGISTRY.values():
        obj = datasets.load(info.name)
        assert isinstance(obj, md.MuData if info.format == "h5mu" else ad.AnnData), info.name
        assert obj.n_obs == info.n_cells, info.name
        mods = dict(obj.mod) if info.format == "h5mu" else {"rna": obj}
        assert tuple(mods) == info.modalities, info.name
        model_mods = [m for m in mods if m not in ("guide", "hto")]
        assert {detect_x_kind(mods[m].X) for m in model_mods} == {info.x_kind}, info.name
        organism = obj.uns["dataset"]["organism"].split(" (")[0]
        assert ORGANISM[organism] == info.organism, info.name
        assert obj.uns["dataset"]["license"] == info.licence, info.name
        for key in (info.label_key, info.batch_key):
            if key is not None:
                assert key in obj.obs.columns, (info.name, key)
                assert obj.obs[key].nunique() > 1, (info.name, key)
        assert (datasets.path(info.name).parent / "PROVENANCE.md").is_file()


def test_path_and_data_dir() -> None:
    p = datasets.path("spatial_osmfish_scvi")
    assert p.name == "spatial_osmfish_scvi.h5ad" and p.is_file()
    repo = Path(cellweave.__file__).resolve().parents[2]
    assert datasets.data_dir() == repo / "data"
    assert (repo / "data" / "README.md").is_file()


def test_unknown_name_lists_valid_names() -> None:
    with pytest.raises(CellWeaveInputError, match=r"Unknown dataset 'pbmc3k'.*spatial_osmfish_scvi"):
        datasets.load("pbmc3k")
    with pytest.raises(CellWeaveInputError, match="Valid names"):
        datasets.path("pbmc3k")


def test_env_var_overrides_and_bad_env_var(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("CELLWEAVE_DATA_DIR", str(tmp_path))
    assert datasets.data_dir() == tmp_path
    with pytest.raises(CellWeaveInputError, match="does not exist"):
        datasets.path("spatial_osmfish_scvi")
    assert datasets.list()["path"].iloc[0].startswith(str(tmp_path))
    monkeypatch.setenv("CELLWEAVE_DATA_DIR", str(tmp_path / "missing"))
    with pytest.raises(CellWeaveInputError, match="Set it to the data/ folder"):
        datasets.data_dir()


def test_no_data_folder_explains_env_var(monkeypatch, tmp_path) -> None:
    import cellweave.datasets._registry as reg

    monkeypatch.delenv("CELLWEAVE_DATA_DIR", raising=False)
    fake = tmp_path / "a" / "b" / "c" / "_registry.py"
    monkeypatch.setattr(reg, "__file__", str(fake))
    with pytest.raises(CellWeaveInputError, match="CELLWEAVE_DATA_DIR"):
        datasets.data_dir()
    assert datasets.list()["path"].isna().all()


def test_mudata_obs_and_single_modality() -> None:
    mdata = datasets.load("citeseq_pbmc_10x_scvi_tests")
    assert "batch" in mdata.obs.columns
    rna = datasets.load("citeseq_pbmc_10x_scvi_tests", modality="rna")
    assert isinstance(rna, ad.AnnData) and rna.shape == (400, 15792)
    assert (rna.obs["batch"].to_numpy() == mdata.obs.loc[rna.obs_names, "batch"].to_numpy()).all()
    assert rna.uns["x_kind"] == "counts"
    with pytest.raises(CellWeaveInputError, match=r"modalities \['rna', 'prot'\], not 'atac'"):
        datasets.load("citeseq_pbmc_10x_scvi_tests", modality="atac")


def test_single_modality_of_unpaired_data() -> None:
    ga = datasets.load("liger_bmmc_rna_gene_activity", modality="gene_activity")
    assert ga.n_obs == 340 and set(ga.obs["modality"]) == {"gene_activity"}


def test_modality_of_an_anndata_dataset() -> None:
    assert datasets.load("spatial_osmfish_scvi", modality="rna").n_obs == 4530
    with pytest.raises(CellWeaveInputError, match="holds only"):
        datasets.load("spatial_osmfish_scvi", modality="prot")
