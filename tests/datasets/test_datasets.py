"""cellweave.datasets: the registry agrees with the mirror's files; mirror -> cache -> download order;
errors; the command line."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import anndata as ad
import mudata as md
import pytest

from cellweave import datasets
from cellweave._exceptions import CellWeaveDataError, CellWeaveInputError
from cellweave._io_utils import sha256_file
from cellweave.cli import main
from cellweave.genes import infer_organism
from cellweave.io import detect_x_kind, validate_matrix

RAW = Path(__file__).resolve().parents[3] / "shared" / "raw"
ORGANISM = {"Homo sapiens": "human", "Mus musculus": "mouse", "Drosophila melanogaster": "fly"}
NEW = {
    "scrna_pbmc4k_10x_soupx", "scrna_mouse_bone_marrow_stroma_cytosimplex", "scrna_pancreas_baron2016_human_mouse_cider",
    "scrna_mouse_pancreas_endocrinogenesis_veloviz", "scrna_mouse_intestine_haber2017_scdesign2",
    "scrna_mouse_ca1_zeisel2015_descend", "scrna_oligodendroglioma_tirosh2016_infercnv", "scrna_pbmc_1k_pisces",
    "scrna_mouse_cerebellum_ref_spacexr", "scrna_mouse_hippocampus_ref_spacexr", "scrna_merfish_ref_spacexr",
    "spatial_merfish_vignette_spacexr", "spatial_cosmx_nsclc_lung12_giotto_mini", "prot_citeseq_adt_13studies_adtnorm",
    "prot_citeseq_87ab_kotliarov2020_dsb",
}


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """No mirror, an empty cache, and a network that refuses every download."""
    import pooch

    monkeypatch.delenv("CELLWEAVE_DATA_DIR", raising=False)
    monkeypatch.setenv("CELLWEAVE_CACHE_DIR", str(tmp_path / "cache"))
    calls: list[str] = []

    def refuse(url, **kwargs):
        calls.append(url)
        raise ConnectionError("network unreachable")

    monkeypatch.setattr(pooch, "retrieve", refuse)
    return calls


def test_list_table() -> None:
    table = datasets.list()
    assert datasets.list_datasets is datasets.list
    assert len(table) == 29 and NEW <= set(table["name"])
    for col in ["name", "path", "format", "modalities", "n_cells", "organism", "x_kind", "label_key", "batch_key",
                "licence", "source", "pretrain", "tasks", "converter"]:
        assert col in table.columns
    t = table.set_index("name")
    assert t.loc["multibatch_cellbench_sc_mixology", "label_key"] == "cell_type"
    assert t.loc["spatial_novosparc_intestine", "label_key"] == "zone"
    assert t.loc["celltypist_sample_559cells", "label_key"] is None
    assert not t.loc["scanpy_pbmc68k_reduced", "pretrain"]
    assert not t.loc["spatial_novosparc_bdtnp_drosophila", "pretrain"]
    assert not t.loc["scrna_oligodendroglioma_tirosh2016_infercnv", "pretrain"]  # normalized values
    assert t.loc["prot_citeseq_adt_13studies_adtnorm", "pretrain"]
    assert t["pretrain"].sum() == 26
    assert set(t.index[t["converter"]]) == {"multibatch_cellbench_sc_mixology", "citeseq_pbmc_10x_scvi_tests",
                                            "spatial_osmfish_scvi"}
    # every source is pinned: a commit in the URL of a repository, or a versioned wheel
    for entry in datasets.REGISTRY.values():
        assert entry.files, entry.name
        for f in entry.files:
            assert f.url.startswith(("https://", "pypi:")), f.url
            pinned = any(len(part) == 40 and all(c in "0123456789abcdef" for c in part) for part in f.url.split("/"))
            assert pinned or "==" in f.url, f.url


def test_registry_matches_the_mirror() -> None:
    """Every field of every entry, checked against the converted file it describes."""
    if datasets.data_dir() is None:
        pytest.skip("no data mirror (set CELLWEAVE_DATA_DIR)")
    for entry in datasets.REGISTRY.values():
        p = datasets.path(entry.name)
        assert sha256_file(p) == entry.sha256, entry.name
        obj = datasets.load(entry.name)
        multimodal = len(entry.modalities) > 1 or entry.protein_only
        assert isinstance(obj, md.MuData if multimodal else ad.AnnData), entry.name
        assert obj.n_obs == entry.n_cells, entry.name
        mods = dict(obj.mod) if multimodal else {"rna": obj}
        assert tuple(mods) == entry.modalities, entry.name
        model_mods = [m for m in mods if m not in ("guide", "hto")]
        assert {detect_x_kind(mods[m].X) for m in model_mods} == {entry.x_kind}, entry.name
        organism = obj.uns["dataset"]["organism"].split(" (")[0].split(" + ")[0]
        assert ORGANISM[organism] == entry.organism, entry.name
        assert obj.uns["dataset"]["license"] == entry.licence, entry.name
        for key in (entry.label_key, entry.batch_key):
            if key is not None:
                assert key in obj.obs.columns, (entry.name, key)
                assert obj.obs[key].nunique() > 1, (entry.name, key)
        assert (p.parent / "PROVENANCE.md").is_file()
        # io validates it as the registry says: pretraining data is accepted, the rest refused with
        # a clear error; the gene-name organism is the registered one
        for mod in model_mods:
            if entry.pretrain:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    assert validate_matrix(mods[mod], modality=mod, dataset=entry.name).x_kind == entry.x_kind
            else:
                with pytest.raises(CellWeaveInputError, match=entry.name):
                    validate_matrix(mods[mod], modality=mod, dataset=entry.name)
            if mod == "rna" and entry.organism != "fly":
                assert infer_organism(mods[mod].var_names, mods[mod].var.get("gene_id")) == entry.organism, entry.name


def test_protein_only_loads_as_prot_modality() -> None:
    if datasets.data_dir() is None:
        pytest.skip("no data mirror (set CELLWEAVE_DATA_DIR)")
    mdata = datasets.load("prot_citeseq_87ab_kotliarov2020_dsb")
    assert list(mdata.mod) == ["prot"] and mdata.mod["prot"].shape == (2872, 87)
    assert "batch" in mdata.obs.columns and mdata.obs["batch"].nunique() == 6
    prot = datasets.load("prot_citeseq_87ab_kotliarov2020_dsb", modality="prot")
    assert isinstance(prot, ad.AnnData) and "batch" in prot.obs.columns
    with pytest.raises(CellWeaveInputError, match="not 'rna'"):
        datasets.load("prot_citeseq_87ab_kotliarov2020_dsb", modality="rna")


def test_unknown_name_lists_valid_names() -> None:
    with pytest.raises(CellWeaveInputError, match=r"Unknown dataset 'pbmc3k'.*spatial_osmfish_scvi"):
        datasets.load("pbmc3k")
    with pytest.raises(CellWeaveInputError, match="Valid names"):
        datasets.path("pbmc3k")


def test_bad_mirror_variable(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("CELLWEAVE_DATA_DIR", str(tmp_path / "missing"))
    with pytest.raises(CellWeaveDataError, match="is not a folder"):
        datasets.data_dir()
    assert datasets.list()["path"].isna().all()  # listing still works, with a warning


def test_mirror_then_cache_order(monkeypatch, tmp_path, offline) -> None:
    entry = datasets.info("spatial_visium_squidpy_test")
    mirror, cache = tmp_path / "mirror", tmp_path / "cache"
    for root in (mirror, cache):
        (root / entry.name).mkdir(parents=True)
    # only the cache has it
    (cache / entry.relpath).write_bytes(b"cached")
    assert datasets.path(entry.name) == cache / entry.relpath
    # the mirror wins over the cache
    monkeypatch.setenv("CELLWEAVE_DATA_DIR", str(mirror))
    (mirror / entry.relpath).write_bytes(b"mirrored")
    assert datasets.path(entry.name) == mirror / entry.relpath
    assert datasets.is_available(entry.name)
    assert offline == []  # nothing was downloaded


def test_offline_without_a_copy_names_the_dataset_url_and_variable(offline) -> None:
    with pytest.raises(CellWeaveDataError) as err:
        datasets.load("spatial_osmfish_scvi")
    msg = str(err.value)
    assert "spatial_osmfish_scvi" in msg and "CELLWEAVE_DATA_DIR" in msg
    assert "https://raw.githubusercontent.com/YosefLab/scVI-data/9a647afc" in msg
    assert offline == [datasets.info("spatial_osmfish_scvi").files[0].url]  # it tried the pinned URL once
    # a dataset without a converter says so instead of trying to download
    with pytest.raises(CellWeaveDataError, match="no converter.*CELLWEAVE_DATA_DIR"):
        datasets.load("scrna_pbmc4k_10x_soupx")
    assert len(offline) == 1


@pytest.mark.skipif(not (RAW / "spatial_osmfish_scvi").is_dir(), reason="no byte copies of the sources (shared/raw)")
def test_download_and_convert_into_the_cache(monkeypatch, tmp_path) -> None:
    """The whole download path with pooch's network call replaced by the byte copies of the source:
    hashes checked, converted, written atomically into the cache, then served from there."""
    import pooch

    real_mirror = datasets.data_dir()
    if real_mirror is None:
        pytest.skip("the converter needs the referenced gene tables (set CELLWEAVE_DATA_DIR)")
    # a mirror with the gene tables but without the dataset
    (tmp_path / "mirror").mkdir()
    (tmp_path / "mirror" / "resources").symlink_to(real_mirror / "resources")
    monkeypatch.setenv("CELLWEAVE_DATA_DIR", str(tmp_path / "mirror"))
    monkeypatch.setenv("CELLWEAVE_CACHE_DIR", str(tmp_path / "cache"))
    fetched: list[str] = []

    def from_raw(url, known_hash, fname, path, progressbar):
        fetched.append(url)
        target = Path(path) / fname
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(RAW / "spatial_osmfish_scvi" / fname, target)
        assert known_hash == f"sha256:{sha256_file(target)}"  # the pinned hash is handed to pooch
        return str(target)

    monkeypatch.setattr(pooch, "retrieve", from_raw)
    adata = datasets.load("spatial_osmfish_scvi")
    assert adata.shape == (4530, 33) and "spatial" in adata.obsm and adata.obs["cell_type"].nunique() == 6
    cached = tmp_path / "cache" / "spatial_osmfish_scvi" / "spatial_osmfish_scvi.h5ad"
    assert datasets.path("spatial_osmfish_scvi") == cached and len(fetched) == 1
    assert not [p for p in cached.parent.iterdir() if p.name.startswith(".")]  # no temporary left behind
    datasets.load("spatial_osmfish_scvi")
    assert len(fetched) == 1  # the second load reads the cache


def test_corrupt_source_is_refused(tmp_path) -> None:
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "smfish.h5ad").write_bytes(b"not the published file")
    with pytest.raises(CellWeaveDataError, match="SHA-256.*expected"):
        datasets.convert("spatial_osmfish_scvi", raw_dir=raw)
    with pytest.raises(CellWeaveDataError, match="missing"):
        datasets.convert("spatial_osmfish_scvi", raw_dir=tmp_path)


def test_cli_list_info_fetch(capsys, offline) -> None:
    assert main(["datasets", "list", "--pretrain", "--names"]) == 0
    names = capsys.readouterr().out.split()
    assert len(names) == 26 and "scanpy_pbmc68k_reduced" not in names
    # The shipped model's corpus: the pretraining datasets the development panel does not use.
    assert main(["datasets", "list", "--task", "panel", "--names"]) == 0
    panel = set(capsys.readouterr().out.split())
    assert main(["datasets", "list", "--pretrain", "--exclude-task", "panel", "--names"]) == 0
    heldout = capsys.readouterr().out.split()
    assert heldout and set(heldout) == set(names) - panel and len(panel & set(names)) >= 8
    assert main(["datasets", "list"]) == 0
    out = capsys.readouterr().out
    assert "prot_citeseq_adt_13studies_adtnorm" in out and "mirror ($CELLWEAVE_DATA_DIR): not set" in out
    assert main(["datasets", "info", "spatial_osmfish_scvi"]) == 0
    out = capsys.readouterr().out
    assert "49c6e5e0e00d963f6510b795d06d78752d24f8c8127c80c8563c73d7fa107ac6" in out and "Codeluppi" in out
    assert main(["datasets", "fetch", "spatial_osmfish_scvi"]) == 2  # offline: one clear line
    err = capsys.readouterr().err
    assert err.startswith("cellweave datasets: error: Dataset 'spatial_osmfish_scvi'") and "CELLWEAVE_DATA_DIR" in err
    assert main(["datasets", "info", "nope"]) == 2


@pytest.mark.internet
def test_real_download(monkeypatch, tmp_path) -> None:
    monkeypatch.delenv("CELLWEAVE_DATA_DIR", raising=False)
    monkeypatch.setenv("CELLWEAVE_CACHE_DIR", str(tmp_path))
    p = datasets.fetch("spatial_osmfish_scvi", progress=False)
    assert datasets.load("spatial_osmfish_scvi").n_obs == 4530 and p.is_file()


def test_pretrain_inputs_accept_registered_names(tmp_path) -> None:
    """`cellweave pretrain NAME` reads a registered dataset through the registry (what
    `make pretrained` does); a path that exists is still read as a file."""
    from cellweave._cli._common import read_named

    if datasets.data_dir() is None:
        pytest.skip("no data mirror (set CELLWEAVE_DATA_DIR)")
    data, hashes = read_named(["spatial_visium_squidpy_test", "prot_citeseq_87ab_kotliarov2020_dsb"])
    assert list(data) == ["spatial_visium_squidpy_test", "prot_citeseq_87ab_kotliarov2020_dsb"]
    assert hashes["spatial_visium_squidpy_test"] == datasets.info("spatial_visium_squidpy_test").sha256
    assert list(data["prot_citeseq_87ab_kotliarov2020_dsb"].mod) == ["prot"]  # antibodies are not read as RNA
    with pytest.raises(CellWeaveInputError):
        read_named([str(tmp_path / "missing.h5ad")])
