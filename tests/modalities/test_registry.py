"""The modality registry, and what it promises: registering a modality never changes a shipped model."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from cellweave import modalities
from cellweave._exceptions import CellWeaveInputError
from cellweave.modalities import LEGACY_ORDER, Modality

DUMMY = Modality(
    name="dummy_spliced",
    aliases=("Spliced",),
    feature_keys="gene",
    key_prefix="spliced:",  # its own tokens, although keyed on genes
    normalization="log1p_cp10k",
    readout="log1p_cp10k",
    units="log1p(counts per 10k)",
    description="a test modality: spliced counts per gene",
    default_context={"tiny": 16, "small": 32, "base": 64},
)


@pytest.fixture
def dummy():
    """``DUMMY`` registered for one test, unregistered afterwards (even when the test fails)."""
    modalities.register(DUMMY)
    try:
        yield DUMMY
    finally:
        modalities.unregister(DUMMY.name)


def _mudata(with_dummy: bool, n_cells: int = 24):
    """Synthetic RNA + protein cells; with ``with_dummy`` also the RNA counts as ``Spliced`` (an alias)."""
    import mudata

    from cellweave.data import synthetic_mudata

    md = synthetic_mudata(n_cells, modalities=("rna", "prot"), n_genes=150, seed=3)
    mods = {"rna": md["rna"], "prot": md["prot"]}
    if with_dummy:
        mods["Spliced"] = md["rna"].copy()
    with mudata.set_options(pull_on_update=False):
        return mudata.MuData(mods)


def _embed(model, data) -> np.ndarray:
    emb, _ = model.embed(data, progress=False, spatial=False, seed=0)
    return emb


# ------------------------------------------------------------------------------------ the registry

def test_builtins_are_registered_first_in_the_historic_order() -> None:
    assert modalities.names()[:4] == LEGACY_ORDER == ("rna", "prot", "atac", "gene_activity")
    assert [m.name for m in modalities.registered()] == list(modalities.names())


def test_get_resolves_names_and_aliases_case_insensitively() -> None:
    assert modalities.get("ADT").name == "prot"
    assert modalities.get(" Gene Expression ").name == "rna"
    assert modalities.get("Peaks").name == "atac"
    assert modalities.lookup("hto") is None and modalities.lookup("weird") is None
    with pytest.raises(CellWeaveInputError, match=r"Unknown modality 'weird'; cellweave knows rna, prot, atac"):
        modalities.get("weird")
    with pytest.raises(CellWeaveInputError, match=r"'adt' is an alias of modality 'prot'; pass the modality's name \(rna, prot, atac, gene_activity\), here 'prot'"):
        modalities.get("adt", exact=True)


def test_key_prefixes_name_their_modality() -> None:
    assert modalities.modality_of_key("prot:ENSG00000198851").name == "prot"
    assert modalities.modality_of_key("atac:GRCh38:chr1:0").name == "atac"
    assert modalities.modality_of_key("ENSG00000141510") is None  # gene keys are shared


def test_register_refuses_clashes_and_bad_specs(dummy) -> None:
    with pytest.raises(CellWeaveInputError, match="registered already; pass replace=True"):
        modalities.register(DUMMY)
    clash = dict(DUMMY.__dict__, name="other", default_context=dict(DUMMY.default_context))
    with pytest.raises(CellWeaveInputError, match="'spliced' already names modality 'dummy_spliced'"):
        modalities.register(Modality(**clash))
    with pytest.raises(CellWeaveInputError, match="key prefix 'prot:' belongs to 'prot'"):
        modalities.register(Modality(**{**clash, "aliases": (), "key_prefix": "prot:"}))
    with pytest.raises(CellWeaveInputError, match="label modality"):
        modalities.register(Modality(**{**clash, "name": "hto", "aliases": ()}))
    with pytest.raises(CellWeaveInputError, match="must end with ':'"):
        Modality(**{**clash, "key_prefix": "x"})
    with pytest.raises(CellWeaveInputError, match="needs its own key_prefix"):
        Modality(**{**clash, "feature_keys": "protein", "key_prefix": ""})
    with pytest.raises(CellWeaveInputError, match="normalization must be one of"):
        Modality(**{**clash, "normalization": "zscore"})
    assert "other" not in modalities.names()  # nothing half-registered
    assert modalities.register(DUMMY, replace=True) is DUMMY
    assert modalities.names()[-1] == DUMMY.name


def test_unregister_removes_name_and_aliases(dummy) -> None:
    assert modalities.get("SPLICED") is dummy
    modalities.unregister(dummy.name)
    assert modalities.lookup("spliced") is None
    modalities.register(dummy)  # for the fixture's teardown
    with pytest.raises(CellWeaveInputError, match="No modality named 'nope'"):
        modalities.unregister("nope")


def test_every_modality_sizes_every_preset() -> None:
    from cellweave.nn import PRESETS

    for preset in PRESETS:
        context = modalities.default_context(preset)
        assert set(context) == set(modalities.names())


def test_presets_keep_their_historic_context_lengths() -> None:
    """Golden values: the context lengths the presets had before the registry (the shipped model's)."""
    from cellweave.nn import CellWeaveConfig

    assert CellWeaveConfig.from_preset("tiny").context_length == {"rna": 256, "prot": 64, "atac": 128,
                                                                  "gene_activity": 128}
    assert CellWeaveConfig.from_preset("small").context_length == {"rna": 1024, "prot": 128, "atac": 512,
                                                                   "gene_activity": 512}
    assert CellWeaveConfig.from_preset("base").context_length == {"rna": 2048, "prot": 256, "atac": 1024,
                                                                  "gene_activity": 1024}
    assert CellWeaveConfig().context_length == CellWeaveConfig.from_preset("tiny").context_length


def test_the_registry_is_pure_python() -> None:
    """``genes`` and ``nn`` ask the registry, so it may import nothing but the standard library and core."""
    import cellweave.modalities as pkg

    folder = Path(pkg.__file__).parent
    for path in sorted(folder.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                tops = [a.name.split(".")[0] for a in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                tops = [(node.module or "").split(".")[0]]
            else:
                continue
            for top in tops:
                assert top in {"__future__", "logging", "threading", "collections", "dataclasses", "types",
                               "typing", "cellweave"}, f"{path.name} imports {top}"


def test_dispatch_asks_the_registry(dummy) -> None:
    """A registered modality is known to validation, feature mapping, symbols and the CLI choices."""
    import pandas as pd

    from cellweave.cli import build_parser
    from cellweave.genes import map_features, symbol_for
    from cellweave.io import check_modalities

    assert check_modalities(["RNA", "Spliced", "hto"]) == (["rna", "dummy_spliced"], ["hto"])
    fmap = map_features(pd.DataFrame(index=["TP53", "NOTAGENE123"]), modality="dummy_spliced", organism="human")
    assert list(fmap.keys) == ["spliced:ENSG00000141510", ""]
    assert symbol_for(["spliced:ENSG00000141510", "prot:ENSG00000198851", "atac:GRCh38:chr1:0"]).tolist() == [
        "TP53", "CD3E", "GRCh38:chr1:0"]
    args = build_parser().parse_args(["impute", "x.h5mu", "--target", "dummy_spliced", "--out", "y.h5mu"])
    assert args.target == "dummy_spliced"


def test_unregistered_dummy_is_an_unknown_modality() -> None:
    from cellweave.io import check_modalities

    with pytest.raises(CellWeaveInputError, match="Unknown modality 'Spliced'"):
        check_modalities(["rna", "Spliced"])


# ------------------------------------------------------------------------------------ models

@pytest.mark.parametrize("legacy", [True, False], ids=["config-without-names", "shipped"])
def test_a_saved_model_is_unchanged_by_a_registered_modality(legacy, tmp_path) -> None:
    """Modality ids are the names in config.json (or the historic order), never registration order:
    registering a modality changes neither a saved model's weights nor its embeddings, even of
    data that carries the new modality (the model has no row for it and leaves it out). Checked for
    a config.json saved before the names were stored (rows read in the historic order; the model
    shipped until issue 12's point 6 was one) and for the shipped model."""
    from cellweave.data import build_vocabulary
    from cellweave.models import CellWeave

    path = None
    if legacy:
        vocab, _ = build_vocabulary({"syn": _mudata(with_dummy=False)}, min_cells=1, gene_aliases=False)
        torch.manual_seed(0)
        CellWeave.from_preset("tiny", vocab, d_model=16, n_layers=1, n_heads=2, d_ff=32).save(tmp_path / "m")
        config = json.loads((tmp_path / "m" / "config.json").read_text())
        assert config.pop("modalities") == list(LEGACY_ORDER)
        (tmp_path / "m" / "config.json").write_text(json.dumps(config))
        path = tmp_path / "m"
    before = CellWeave.load(path)
    emb_before = _embed(before, _mudata(with_dummy=False))
    modalities.register(DUMMY)
    try:
        after = CellWeave.load(path)
        emb_after = _embed(after, _mudata(with_dummy=True))
        emb_after_plain = _embed(after, _mudata(with_dummy=False))
    finally:
        modalities.unregister(DUMMY.name)
    assert after.config.modalities == list(LEGACY_ORDER) and after.config.n_modalities == 4
    assert after.model_hash == before.model_hash
    sd_before, sd_after = before.module.state_dict(), after.module.state_dict()
    assert sd_before.keys() == sd_after.keys()
    for name, tensor in sd_before.items():
        assert torch.equal(tensor, sd_after[name]), name
    np.testing.assert_array_equal(emb_before, emb_after)
    np.testing.assert_array_equal(emb_before, emb_after_plain)


def test_new_model_gets_a_row_for_a_registered_modality_and_round_trips(dummy, tmp_path) -> None:
    from cellweave.data import build_vocabulary
    from cellweave.models import CellWeave

    data = _mudata(with_dummy=True)
    vocab, _ = build_vocabulary({"syn": data}, min_cells=1, gene_aliases=False)
    assert vocab.keys[-1].startswith("spliced:")  # prefixed modalities after gene keys, in registration order
    torch.manual_seed(0)
    model = CellWeave.from_preset("tiny", vocab, d_model=16, n_layers=1, n_heads=2, d_ff=32)
    assert model.config.modalities == [*LEGACY_ORDER, "dummy_spliced"]
    assert model.config.context_length["dummy_spliced"] == 16
    assert model.module.modality_embedding.weight.shape[0] == 5
    corpus = model.prepare(data)
    _, _, mods = model.tokenizer.tokenize(corpus, 0, np.random.default_rng(0))
    assert 4 in set(mods.tolist()) and model.modality_id("dummy_spliced") == 4

    path = model.save(tmp_path / "m")
    config = json.loads((path / "config.json").read_text())
    assert config["modalities"] == ["rna", "prot", "atac", "gene_activity", "dummy_spliced"]
    assert config["n_modalities"] == 5
    loaded = CellWeave.load(path)
    assert loaded.config == model.config
    for name, tensor in model.module.state_dict().items():
        assert torch.equal(tensor, loaded.module.state_dict()[name]), name
    np.testing.assert_array_equal(_embed(model, data), _embed(loaded, data))

    # The model's rows are its own: it still loads (and keeps 5 rows) once the modality is unregistered.
    modalities.unregister(dummy.name)
    try:
        again = CellWeave.load(path)
    finally:
        modalities.register(dummy)
    assert again.config.modalities[-1] == "dummy_spliced" and again.module.modality_embedding.weight.shape[0] == 5


def test_config_names_its_modality_rows() -> None:
    from cellweave.nn import CellWeaveConfig

    legacy = CellWeaveConfig.from_dict({"n_modalities": 4})
    assert legacy.modalities == list(LEGACY_ORDER) and legacy.modality_ids["gene_activity"] == 3
    custom = CellWeaveConfig(modalities=["prot", "rna"], context_length={"rna": 8, "prot": 4})
    assert custom.n_modalities == 2 and custom.modality_id("rna") == 1
    with pytest.raises(ValueError, match="no embedding for modality 'atac'"):
        custom.modality_id("atac")
    with pytest.raises(ValueError, match="n_modalities=3 but modalities names 2"):
        CellWeaveConfig(n_modalities=3, modalities=["prot", "rna"], context_length={"rna": 8})
    with pytest.raises(ValueError, match=r"context_length has unknown modalities \['prot'\]"):
        CellWeaveConfig(modalities=["rna"], context_length={"rna": 8, "prot": 4})
    with pytest.raises(ValueError, match="'modalities' must be a list of str"):
        CellWeaveConfig.from_dict({"modalities": "rna"})
