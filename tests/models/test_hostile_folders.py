"""A broken or hostile model folder fails with one CellWeaveModelError that names the file, what is
wrong and the fix; a pickle where the weights belong is refused without ever being unpickled."""

from __future__ import annotations

import json
import logging
import os
import pickle
import shutil
from pathlib import Path

import pytest

from cellweave._exceptions import CellWeaveModelError
from cellweave.models import CellWeave

FIX = "Re-save the model with CellWeave.save"


@pytest.fixture(scope="module")
def good_folder(tmp_path_factory) -> Path:
    """A valid tiny model folder, written once; each test breaks a copy of it."""
    from cellweave.data import build_vocabulary, synthetic_adata

    adata = synthetic_adata(n_cells=60, n_genes=80, seed=0)
    vocab, _ = build_vocabulary({"s": adata}, min_cells=1)
    model = CellWeave.from_preset("tiny", vocab, d_model=16, n_layers=1, n_heads=2, d_ff=32,
                                  context_length={"rna": 32, "prot": 0, "atac": 0, "gene_activity": 0})
    folder = tmp_path_factory.mktemp("good") / "model"
    model.save(folder)
    return folder


@pytest.fixture()
def folder(good_folder, tmp_path) -> Path:
    """A fresh copy of the valid folder, to break."""
    return Path(shutil.copytree(good_folder, tmp_path / "model"))


def _load_error(folder: Path) -> str:
    with pytest.raises(CellWeaveModelError) as info:
        CellWeave.load(folder)
    msg = str(info.value)
    assert "\n" not in msg and FIX in msg
    return msg


def _edit_config(folder: Path, **fields) -> None:
    cfg = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**cfg, **fields}))


def test_the_intact_copy_loads(folder) -> None:
    model = CellWeave.load(folder)
    assert model.card["model_sha256"] == model.model_hash


# ---------------------------------------------------------------- model.safetensors
def test_truncated_weights(folder) -> None:
    weights = folder / "model.safetensors"
    blob = weights.read_bytes()
    weights.write_bytes(blob[: len(blob) // 2])
    msg = _load_error(folder)
    assert str(weights) in msg and "not a valid safetensors file" in msg and "truncated" in msg


@pytest.mark.parametrize("size", [0, 5, 4096])
def test_random_or_empty_weights(folder, size) -> None:
    (folder / "model.safetensors").write_bytes(os.urandom(size))
    msg = _load_error(folder)
    assert "model.safetensors" in msg and "safetensors file" in msg


def test_torch_save_checkpoint_is_refused(folder) -> None:
    import torch

    torch.save({"feature_embedding.weight": torch.zeros(3, 16)}, folder / "model.safetensors")
    msg = _load_error(folder)
    assert "pickle / torch.save file" in msg and "never unpickles" in msg
    assert "torch.load" not in msg and "weights_only" not in msg  # no advice to unpickle it


class _Payload:
    """Unpickling this would create the marker file: the proof that the pickle's code ran."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _OpenPayload(_Payload):
    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("payload", [_Payload, _OpenPayload])
@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
def test_pickle_payload_never_runs(folder, tmp_path, payload, protocol) -> None:
    marker = tmp_path / "pwned"
    blob = pickle.dumps({"state_dict": payload(str(marker))}, protocol=protocol)
    (folder / "model.safetensors").write_bytes(blob)
    msg = _load_error(folder)
    assert "pickle" in msg and "never unpickles" in msg
    assert not marker.exists()
    # the payload is live: unpickling it is what would have created the marker
    ran = pickle.loads(blob)["state_dict"]
    if hasattr(ran, "close"):
        ran.close()
    assert marker.exists()


# ---------------------------------------------------------------- config.json
def test_config_that_is_not_json(folder) -> None:
    (folder / "config.json").write_text('{"d_model": 16,')
    msg = _load_error(folder)
    assert msg.startswith(f"Cannot load {folder / 'config.json'}: it is not valid JSON (")
    assert "line 1, column" in msg


def test_config_that_is_not_text(folder) -> None:
    (folder / "config.json").write_bytes(b"\xff\xfe\x00garbage")
    assert "not UTF-8 text" in _load_error(folder)


def test_config_that_is_not_an_object(folder) -> None:
    (folder / "config.json").write_text("[16, 1, 2]")
    assert "must be a JSON object of fields, not a list" in _load_error(folder)


def test_config_with_an_unknown_field(folder) -> None:
    _edit_config(folder, warp_drive=True)
    msg = _load_error(folder)
    assert "config.json" in msg and "Unknown config fields ['warp_drive']" in msg


@pytest.mark.parametrize(("fields", "expected"), [
    ({"d_model": "big"}, "Config field 'd_model' must be an integer, not 'big'"),
    ({"n_layers": -1}, "Config field 'n_layers' must be >= 1, not -1"),
    ({"n_heads": 0}, "Config field 'n_heads' must be >= 1, not 0"),
    ({"n_heads": True}, "Config field 'n_heads' must be an integer, not True"),
    ({"dropout": 1.5}, "Config field 'dropout' must be >= 0 and < 1, not 1.5"),
    ({"mask_ratio": None}, "Config field 'mask_ratio' must be a number, not None"),
    ({"pooling": "max"}, "Config field 'pooling' must be one of 'cls', 'mean', 'bag', 'cls+bag'"),
    ({"context_length": {"rna": "32"}}, "Config field 'context_length' must be an object of str -> int"),
    ({"context_length": {"rna": -32}}, "Config field 'context_length' must hold token counts >= 0"),
    ({"context_length": {"dna": 32}}, "context_length has unknown modalities ['dna']"),
    ({"d_model": 15}, "d_model (15) must be divisible by n_heads (2)"),
])
def test_config_field_of_the_wrong_type_or_range(folder, fields, expected) -> None:
    _edit_config(folder, **fields)
    msg = _load_error(folder)
    assert msg.startswith(f"Cannot load {folder / 'config.json'}: ") and expected in msg
    assert "not all arguments converted" not in msg


# ---------------------------------------------------------------- config vs weights
def test_weights_wider_than_the_config(folder) -> None:
    # the weights were saved with d_model 16; a config claiming 32 must not reach load_state_dict
    _edit_config(folder, d_model=32)
    msg = _load_error(folder)
    assert msg.startswith(f"Weights in {folder} do not match its config: ")
    assert "feature_embedding.weight" in msg and "in model.safetensors but" in msg and "for config.json" in msg
    assert "The weights were saved with d_model 16" in msg and "size mismatch" not in msg


def test_more_layers_in_the_config_than_the_weights(folder) -> None:
    _edit_config(folder, n_layers=1000)
    msg = _load_error(folder)
    assert "model.safetensors holds 1 transformer blocks but config.json says n_layers 1000" in msg
    assert "saved with n_layers 1" in msg


def test_weights_with_a_missing_tensor(folder) -> None:
    from safetensors.torch import load_file, save_file

    state = load_file(str(folder / "model.safetensors"))
    del state["cls_embedding"]
    save_file(state, str(folder / "model.safetensors"))
    msg = _load_error(folder)
    assert "do not match" in msg and "missing ['cls_embedding']" in msg


# ---------------------------------------------------------------- vocab.json
def test_vocab_shorter_than_the_config(folder) -> None:
    vocab = json.loads((folder / "vocab.json").read_text())
    n = len(vocab["keys"])
    vocab["keys"] = vocab["keys"][:-3]
    del vocab["sha256"]
    (folder / "vocab.json").write_text(json.dumps(vocab))
    msg = _load_error(folder)
    assert f"{folder / 'vocab.json'} has {n - 3:,} features but {folder / 'config.json'} says vocab_size {n:,}" in msg
    assert "do not come from the same model" in msg


def test_vocab_that_is_not_json(folder) -> None:
    (folder / "vocab.json").write_text('{"keys": ["ENSG0000')
    msg = _load_error(folder)
    assert msg.startswith(f"Cannot load {folder / 'vocab.json'}: it is not valid JSON")


@pytest.mark.parametrize(("content", "expected"), [
    ({"keys": "ENSG00000141510"}, "'keys' must be a list of strings"),
    ({"keys": [1, 2, 3]}, "'keys' must be a list of strings"),
    (["ENSG00000141510"], "no 'keys' field"),
])
def test_vocab_that_is_not_a_vocabulary(folder, content, expected) -> None:
    (folder / "vocab.json").write_text(json.dumps(content))
    assert expected in _load_error(folder)


def test_vocab_with_edited_keys_fails_its_checksum(folder) -> None:
    vocab = json.loads((folder / "vocab.json").read_text())
    vocab["keys"][0], vocab["keys"][1] = vocab["keys"][1], vocab["keys"][0]
    (folder / "vocab.json").write_text(json.dumps(vocab))
    assert "sha256 does not match its keys" in _load_error(folder)


def test_vocabulary_load_names_the_file(tmp_path) -> None:
    from cellweave._exceptions import CellWeaveInputError
    from cellweave.genes import Vocabulary

    (tmp_path / "v.json").write_text("not json")
    with pytest.raises(CellWeaveInputError, match="v.json is not valid JSON"):
        Vocabulary.load(tmp_path / "v.json")


# ---------------------------------------------------------------- model_card.json (optional)
@pytest.mark.parametrize("content", ["{not json", "[1, 2]"])
def test_broken_model_card_loads_with_a_warning(folder, caplog, content) -> None:
    (folder / "model_card.json").write_text(content)
    (folder / "history.json").write_text("{broken")
    with caplog.at_level(logging.WARNING, logger="cellweave"):
        model = CellWeave.load(folder)
    assert model.card == {} and model.history == []
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("model_card.json" in w and "without its model card" in w for w in warnings)
    assert any("history.json" in w for w in warnings)
    assert model.name == "model"  # the folder's name stands in for the card's


# ---------------------------------------------------------------- missing files
@pytest.mark.parametrize("name", ["config.json", "model.safetensors", "vocab.json"])
def test_missing_required_file_is_named(folder, name) -> None:
    (folder / name).unlink()
    msg = _load_error(folder)
    assert f"The model folder {folder} has no {name}," in msg


def test_missing_card_is_fine(folder) -> None:
    (folder / "model_card.json").unlink()
    assert CellWeave.load(folder).card == {}


# ---------------------------------------------------------------- the command line
@pytest.mark.parametrize("breakage", ["truncate", "bad_type"])
def test_cli_embed_with_a_broken_model_is_one_line(folder, tmp_path, capsys, breakage) -> None:
    from cellweave import cli
    from cellweave.data import synthetic_adata

    if breakage == "truncate":
        weights = folder / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[:100])
    else:
        _edit_config(folder, d_model="big")
    data, out = tmp_path / "in.h5ad", tmp_path / "out.h5ad"
    synthetic_adata(n_cells=20, n_genes=80, seed=1).write_h5ad(data)
    assert cli.main(["-q", "embed", str(data), "--model", str(folder), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("cellweave embed: error: Cannot load ") and err.count("\n") == 1
    assert "Traceback" not in err and FIX in err
    assert not out.exists()
