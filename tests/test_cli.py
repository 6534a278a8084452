"""The command line: end to end on real data, and clear errors on bad input."""

from __future__ import annotations

import argparse

import anndata as ad
import numpy as np
import pytest
import torch

import cellweave
from cellweave.cli import main


def test_embed_with_the_shipped_model(tmp_path) -> None:
    src = cellweave.datasets.load("spatial_osmfish_scvi")[:300].copy()
    src.write_h5ad(tmp_path / "in.h5ad")
    rc = main(["-q", "embed", str(tmp_path / "in.h5ad"), "--out", str(tmp_path / "out.h5ad")])
    assert rc == 0
    out = ad.read_h5ad(tmp_path / "out.h5ad")
    assert out.obsm["X_cellweave"].shape[0] == 300 and np.isfinite(out.obsm["X_cellweave"]).all()
    rec = out.uns["cellweave"]["X_cellweave"]
    assert rec["model"] == "cellweave-tiny" and len(rec["model_sha256"]) == 64
    assert rec["x_kind"]["rna"] == "counts"
    assert not list(tmp_path.glob("*.tmp*"))


def test_scaled_input_is_refused_with_the_fix(tmp_path, capsys) -> None:
    src = cellweave.datasets.load("scanpy_pbmc68k_reduced")
    src.write_h5ad(tmp_path / "scaled.h5ad")
    rc = main(["-q", "embed", str(tmp_path / "scaled.h5ad"), "--out", str(tmp_path / "o.h5ad")])
    err = capsys.readouterr().err
    assert rc == 2
    assert "scaled" in err and "counts" in err
    assert "Traceback" not in err
    assert not (tmp_path / "o.h5ad").exists()


def test_missing_file_and_unknown_model(tmp_path, capsys) -> None:
    assert main(["-q", "embed", str(tmp_path / "nope.h5ad"), "--out", str(tmp_path / "o.h5ad")]) == 2
    assert "nope.h5ad" in capsys.readouterr().err
    src = cellweave.datasets.load("spatial_osmfish_scvi")[:20].copy()
    src.write_h5ad(tmp_path / "in.h5ad")
    assert main(["-q", "embed", str(tmp_path / "in.h5ad"), "--model", "nonexistent", "--out", str(tmp_path / "o.h5ad")]) == 2
    assert "Shipped models" in capsys.readouterr().err


def test_uns_record_survives_a_round_trip(tmp_path) -> None:
    """Coverage reasons contain '/', which HDF5 would turn into nested groups."""
    import warnings

    src = cellweave.datasets.load("celltypist_sample_559cells")[:50].copy()
    cellweave.tl.embed(src, progress=False)
    src.write_h5ad(tmp_path / "e.h5ad")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        back = ad.read_h5ad(tmp_path / "e.h5ad")
    examples = back.uns["cellweave"]["X_cellweave"]["coverage_examples"]["rna"]
    assert all("/" not in k for k in examples) and len(examples) >= 1


def test_pretrain_cli_with_modality_dropout_and_rna_only(tmp_path) -> None:
    import json

    from cellweave.data import synthetic_mudata

    md = synthetic_mudata(n_cells=120, n_genes=80, n_proteins=6, n_peaks=20, modalities=("rna", "prot"), seed=0)
    src = tmp_path / "cite.h5mu"
    md.write(src)
    common = ["-q", "pretrain", str(src), "--max-epochs", "1", "--batch-size", "32"]
    joint, rna = tmp_path / "joint", tmp_path / "rna"
    assert main([*common, "--out", str(joint), "--modality-dropout", "1.0"]) == 0
    assert json.loads((joint / "config.json").read_text())["modality_dropout"] == 1.0
    card = json.loads((joint / "model_card.json").read_text())
    assert card["metrics"]["val_cross_modal_values"] > 0  # one modality of held-out cells left out and predicted
    # The issue-12 architecture flags reach the saved config.
    assert main([*common, "--out", str(rna), "--modalities", "rna", "--value-encoding", "log1p", "--profile-skip",
                 "--token-selection", "deviation", "--fixed-feature-tables", "--feature-offset",
                 "--hvg-tokens", "40", "--mask-ratio", "0.5", "--mask-grouping", "modules",
                 "--vicreg-weight", "0.04", "--vicreg-neighbours", "5", "--pc-targets", "3", "--pc-weight", "2",
                 "--depth-augmentation", "0.5", "--depth-augmentation-min", "0.3", "--label-key", "zone", "cell_type",
                 "--label-weight", "0.5", "--label-loss", "cosine"]) == 0
    rna_model = cellweave.CellWeave.load(rna)
    assert rna_model.config.fixed_feature_tables and not rna_model.module.profile_embedding.weight.requires_grad
    assert rna_model.config.feature_offset and rna_model.module.feature_offset.weight.abs().sum() > 0  # trained
    assert rna_model.card["modalities"] == ["rna"] and rna_model.modality_features("prot") == []
    assert (rna_model.config.value_encoding, rna_model.config.profile_skip,
            rna_model.config.token_selection, rna_model.config.hvg_tokens) == ("log1p", True, "deviation", 40)
    assert (rna_model.config.mask_ratio, rna_model.config.mask_grouping) == (0.5, "modules")
    assert rna_model.config.depth_augmentation == 0.5 and rna_model.config.depth_augmentation_min == 0.3
    assert "50% of training cells read at a lower depth (counts thinned to 30-100%)" in rna_model.card["description"]
    assert rna_model.card["objective"]["vicreg_neighbours"] == 5 and rna_model.card["objective"]["vicreg_weight"] == 0.04
    assert rna_model.card["objective"]["pc_targets"] == 3 and rna_model.card["objective"]["pc_weight"] == 2.0
    assert rna_model.card["objective"]["labelled_datasets"]["cite"]["key"] == "cell_type"  # the first key present
    assert rna_model.card["objective"]["label_weight"] == 0.5
    assert rna_model.card["objective"]["label_loss"] == "cosine"
    assert main([*common, "--out", str(tmp_path / "bad"), "--pc-targets", "-2"]) == 2
    assert main([*common, "--out", str(tmp_path / "bad"), "--vicreg-neighbours", "5"]) == 2  # needs --vicreg-weight
    assert main([*common, "--out", str(tmp_path / "bad"), "--mask-ratio", "1.0"]) == 2
    assert main([*common, "--out", str(tmp_path / "bad"), "--modality-dropout", "1.5"]) == 2
    assert main([*common, "--out", str(tmp_path / "bad"), "--depth-augmentation", "2"]) == 2
    assert main([*common, "--out", str(tmp_path / "bad"), "--depth-augmentation", "0.5"]) == 2  # quantile values
    assert main([*common, "--out", str(tmp_path / "bad"), "--value-encoding", "log1p", "--depth-augmentation", "0.5",
                 "--depth-augmentation-min", "0"]) == 2
    assert main([*common, "--out", str(tmp_path / "bad"), "--depth-augmentation-min", "0.3"]) == 2  # nothing thinned
    assert main([*common, "--out", str(tmp_path / "bad"), "--label-key", "tissue"]) == 2  # no such column
    assert not (tmp_path / "bad").exists()


def test_pretrain_count_latent_saves_a_model_that_embeds_through_the_latent(tmp_path) -> None:
    """``--count-latent N`` (with ``--count-likelihood``) trains the variational bottleneck and saves it
    as the model's readout, so ``embed`` gives N columns; without ``--count-likelihood`` it is refused."""
    import mudata

    from cellweave.data import synthetic_mudata

    md = synthetic_mudata(n_cells=100, n_genes=80, modalities=("rna",), seed=1)
    src = tmp_path / "rna.h5mu"
    md.write(src)
    common = ["-q", "pretrain", str(src), "--max-epochs", "1", "--batch-size", "32", "--value-encoding", "log1p"]
    assert main([*common, "--out", str(tmp_path / "m"), "--count-likelihood", "--count-latent", "4"]) == 0
    model = cellweave.CellWeave.load(tmp_path / "m")
    assert model.config.readout_latent == 4 and model.card["objective"]["count_latent"] == 4
    assert main(["-q", "embed", str(src), "--model", str(tmp_path / "m"), "--out", str(tmp_path / "e.h5mu")]) == 0
    assert mudata.read_h5mu(tmp_path / "e.h5mu").obsm["X_cellweave"].shape == (100, 4)
    assert main([*common, "--out", str(tmp_path / "bad"), "--count-latent", "4"]) == 2  # needs --count-likelihood
    assert not (tmp_path / "bad").exists()


def test_pretrain_embed_hvg_tokens_changes_only_the_saved_tokenization(tmp_path) -> None:
    """``--embed-hvg-tokens N`` trains exactly as without it (same weights) and saves the model to
    draw the tokens of the cells it embeds from their N most variable genes; the card says so."""
    from cellweave.data import synthetic_mudata

    md = synthetic_mudata(n_cells=100, n_genes=80, modalities=("rna",), seed=1)
    src = tmp_path / "rna.h5mu"
    md.write(src)
    common = ["-q", "pretrain", str(src), "--max-epochs", "1", "--batch-size", "32", "--seed", "3"]
    assert main([*common, "--out", str(tmp_path / "plain")]) == 0
    assert main([*common, "--out", str(tmp_path / "hvg"), "--embed-hvg-tokens", "30"]) == 0
    plain, hvg = cellweave.CellWeave.load(tmp_path / "plain"), cellweave.CellWeave.load(tmp_path / "hvg")
    assert (plain.config.hvg_tokens, hvg.config.hvg_tokens) == (0, 30)
    assert plain.card["metrics"] == hvg.card["metrics"]
    for key, value in plain.module.state_dict().items():
        assert torch.equal(value, hvg.module.state_dict()[key]), key
    card = (tmp_path / "hvg" / "MODEL_CARD.md").read_text()
    assert "the 30 most variable genes of the cells embedded together" in card
    assert "all measured features" in (tmp_path / "plain" / "MODEL_CARD.md").read_text()
    assert main([*common, "--out", str(tmp_path / "bad"), "--embed-hvg-tokens", "-1"]) == 2
    assert not (tmp_path / "bad").exists()


def _verbs():
    from cellweave.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices


def test_every_verb_help_shows_its_defaults(capsys) -> None:
    """Every option that takes a value and has a default says it in --help (appended as
    '(default: ...)' unless the help already words it), in every verb, those of cellweave._cli too."""
    missing = []
    for verb, parser in _verbs().items():
        formatter = parser._get_formatter()
        for action in parser._actions:
            if not action.option_strings or action.nargs == 0 or action.default in (None, argparse.SUPPRESS):
                continue
            if "default" not in formatter._expand_help(action).lower():
                missing.append(f"{verb} {action.option_strings[-1]}")
    assert not missing, missing
    with pytest.raises(SystemExit) as exit_info:
        main(["pretrain", "--help"])
    assert exit_info.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "--max-epochs MAX_EPOCHS (default: 5)" in out and "--lr LR (default: 0.001)" in out
    assert "(default: all cells)" in out  # a None default worded in the help itself
    assert "(default: tiny)" in out and out.count("(default:") >= 8
    with pytest.raises(SystemExit):
        main(["benchmark", "--help"])
    assert "(default: 0 1 2)" in " ".join(capsys.readouterr().out.split())  # lists shown as typed


def test_global_flags_work_before_and_after_the_verb(tmp_path) -> None:
    from cellweave._exceptions import CellWeaveInputError
    from cellweave.cli import build_parser

    parser = build_parser()
    tail = ["embed", "in.h5ad", "--out", "o.h5ad"]
    for argv in (["-q", "--debug", *tail], [*tail, "-q", "--debug"], ["-q", *tail, "--debug"]):
        args = parser.parse_args(argv)
        assert args.quiet is True and args.debug is True and args.verbose == 0, argv
    assert parser.parse_args([*tail, "-v"]).verbose == 1 and parser.parse_args(["-v", *tail]).verbose == 1
    assert parser.parse_args(tail).quiet is False  # the verb's parser does not reset the main defaults
    # --debug after the verb really shows the error (re-raised) instead of the one-line message.
    missing = ["embed", str(tmp_path / "nope.h5ad"), "--out", str(tmp_path / "o.h5ad")]
    assert main(missing + ["-q"]) == 2
    with pytest.raises(CellWeaveInputError, match="File not found"):
        main(missing + ["--debug"])


def _parse(argv: list[str]) -> argparse.Namespace:
    """Parse as :func:`cellweave.cli.main` does, old flag names applied."""
    from cellweave._cli._grammar import resolve_renamed
    from cellweave.cli import _verb_parser, build_parser

    parser = build_parser()
    args = parser.parse_args(argv)
    resolve_renamed(args, _verb_parser(parser, args.command))
    return args


#: (old command line, the same in the new grammar, the attribute both set, its value).
RENAMED = [
    (["pretrain", "--data", "a.h5ad", "b.h5mu", "--out", "m"], ["pretrain", "a.h5ad", "b.h5mu", "--out", "m"],
     "input", ["a.h5ad", "b.h5mu"]),
    (["annotate", "--reference", "r.h5ad", "--query", "q.h5ad", "--label-key", "ct", "--out", "o.h5ad"],
     ["annotate", "q.h5ad", "--reference", "r.h5ad", "--label-key", "ct", "--out", "o.h5ad"], "input", "q.h5ad"),
    (["annotate", "q.h5ad", "--reference", "r.h5ad", "--label-key", "ct", "--out", "o.h5ad", "--finetune-epochs", "7"],
     ["annotate", "q.h5ad", "--reference", "r.h5ad", "--label-key", "ct", "--out", "o.h5ad", "--max-epochs", "7"],
     "max_epochs", 7),
    (["map-query", "--reference", "r.h5ad", "--query", "q.h5ad", "--label-key", "ct", "--out", "o.h5ad"],
     ["map-query", "q.h5ad", "--reference", "r.h5ad", "--label-key", "ct", "--out", "o.h5ad"], "input", "q.h5ad"),
    (["impute", "q.h5ad", "--target", "prot", "--reference", "cite.h5mu", "--out", "o.h5ad"],
     ["impute", "q.h5ad", "--target", "prot", "--paired", "cite.h5mu", "--out", "o.h5ad"], "paired", "cite.h5mu"),
    (["finetune-perturb", "--data", "s.h5ad", "--out", "ft"], ["finetune-perturb", "s.h5ad", "--out", "ft"],
     "input", "s.h5ad"),
    (["finetune-perturb", "s.h5ad", "--group-key", "batch", "--out", "ft"],
     ["finetune-perturb", "s.h5ad", "--groupby", "batch", "--out", "ft"], "groupby", "batch"),
    (["finetune-perturb", "s.h5ad", "--steps", "40", "--out", "ft"],
     ["finetune-perturb", "s.h5ad", "--max-steps", "40", "--out", "ft"], "max_steps", 40),
    (["predict-perturb", "--model", "ft", "--perturbation", "JAK2", "--cells", "c.h5ad", "--out", "p.h5ad"],
     ["predict-perturb", "c.h5ad", "--model", "ft", "--perturbation", "JAK2", "--out", "p.h5ad"], "input", "c.h5ad"),
    (["adapt", "x.h5ad", "--out", "m", "--adapt-epochs", "2"], ["adapt", "x.h5ad", "--out", "m", "--max-epochs", "2"],
     "max_epochs", 2),
    (["adapt", "x.h5ad", "--out", "m", "--adapt-max-steps", "9"], ["adapt", "x.h5ad", "--out", "m", "--max-steps", "9"],
     "max_steps", 9),
    (["benchmark", "--task", "annotate", "--data", "x.h5ad", "--out", "b"],
     ["benchmark", "x.h5ad", "--task", "annotate", "--out", "b"], "input", "x.h5ad"),
]


@pytest.mark.parametrize(("old", "new", "attr", "value"), RENAMED, ids=[f"{o[0]} {n}" for o, n, *_ in
                                                                       [(o, a) for o, _, a, _ in RENAMED]])
def test_old_flag_names_still_work_and_warn(old, new, attr, value, caplog) -> None:
    """Each flag renamed by the one grammar still works for one release, logging a warning that
    names the new spelling; the new spelling gives the same arguments and no warning."""
    with caplog.at_level("WARNING", logger="cellweave"):
        old_args = _parse(old)
    warned = " ".join(r.getMessage() for r in caplog.records)
    flag = next(a for a in old if a.startswith("--") and a not in new)
    assert f"{flag} is deprecated" in warned and "instead" in warned
    caplog.clear()
    with caplog.at_level("WARNING", logger="cellweave"):
        new_args = _parse(new)
    assert not caplog.records
    assert getattr(old_args, attr) == getattr(new_args, attr) == value
    assert vars(old_args) == vars(new_args)


def test_old_and_new_spelling_together_is_an_error(tmp_path, capsys) -> None:
    assert main(["impute", "q.h5ad", "--target", "prot", "--paired", "a.h5mu", "--reference", "b.h5mu",
                 "--out", str(tmp_path / "o.h5ad")]) == 2
    assert "--reference is the old name of --paired" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:  # INPUT is required where the verb reads cells
        main(["annotate", "--reference", "r.h5ad", "--label-key", "ct", "--out", str(tmp_path / "o.h5ad")])
    assert exit_info.value.code == 2 and "INPUT" in capsys.readouterr().err


def test_lists_are_space_separated_and_commas_still_work() -> None:
    base = ["perturb", "x.h5ad", "--out", "o.h5ad", "--genes"]
    assert _parse([*base, "STAT1", "IRF1"]).genes == _parse([*base, "STAT1,IRF1"]).genes == ["STAT1", "IRF1"]
    ft = ["finetune-perturb", "s.h5ad", "--out", "ft", "--exclude"]
    assert _parse([*ft, "JAK2", "STAT1"]).exclude == _parse([*ft, "JAK2,STAT1"]).exclude == ["JAK2", "STAT1"]
    bench = ["benchmark", "--out", "b", "--seeds"]
    assert _parse([*bench, "0", "1"]).seeds == _parse([*bench, "0,1"]).seeds == [0, 1]
    assert _parse(["pretrain", "a.h5mu", "--out", "m", "--modalities", "rna,prot"]).modalities == ["rna", "prot"]
    with pytest.raises(SystemExit):  # choices are checked item by item
        _parse(["pretrain", "a.h5mu", "--out", "m", "--modalities", "rna,protein_typo"])


def test_help_lists_every_verb_once_grouped_by_area(capsys) -> None:
    from cellweave.cli import VERBS

    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    old_names = {n for v in VERBS for n in v.old_names}
    assert [n for n in _verbs() if n not in old_names] == [v.name for v in VERBS]  # the table's order, nothing else
    areas = list(dict.fromkeys(v.area for v in VERBS))
    assert areas[:3] == ["Cells", "Modalities", "Perturbation"]
    positions = [out.index(f"  {area}:\n") for area in areas]
    assert positions == sorted(positions)
    for name in old_names:  # hidden aliases: run, but not listed
        assert f"\n    {name} " not in out and f"'{name}'" not in out, name
    for v in VERBS:
        assert out.count(f"\n    {v.name} ") == 1, v.name
        area_at = max(p for p in positions if p < out.index(f"\n    {v.name} "))
        assert out[area_at:].startswith(f"  {v.area}:")
    with pytest.raises(SystemExit):
        main(["annotate", "--help"])
    assert "usage: cellweave annotate INPUT " in capsys.readouterr().out


def test_every_verb_lives_in_its_own_module() -> None:
    """``_cli/<verb>.py`` holds ``add_<verb>`` and ``cmd_<verb>`` (``-`` as ``_``); the perturbation
    family shares ``perturb.py``."""
    from cellweave.cli import VERBS

    family = {"finetune-perturb": "perturb", "predict-perturb": "perturb"}
    for v in VERBS:
        stem = v.name.replace("-", "_")
        module = family.get(v.name, stem)
        assert (v.add_arguments, v.command) == (f"{module}:add_{stem}", f"{module}:cmd_{stem}"), v.name


def test_old_verb_name_runs_the_new_verb_with_a_warning(caplog, capsys) -> None:
    """``cellweave genes`` is ``cellweave gene-map`` until 0.3: same arguments and command, a warning
    naming gene-map (also before --help), and not listed by ``cellweave --help``."""
    with caplog.at_level("WARNING", logger="cellweave"):
        old = _parse(["genes", "--out", "g.h5ad", "--seed", "3"])
    assert "cellweave genes is deprecated" in caplog.text and "cellweave gene-map instead" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="cellweave"):
        new = _parse(["gene-map", "--out", "g.h5ad", "--seed", "3"])
    assert not caplog.records
    assert old.command == new.command == "gene-map" and old.func is new.func
    assert vars(old) == vars(new)
    with caplog.at_level("WARNING", logger="cellweave"), pytest.raises(SystemExit):
        main(["genes", "--help"])
    assert "cellweave gene-map instead" in caplog.text
    assert "usage: cellweave gene-map" in capsys.readouterr().out


def test_benchmark_resume_reaches_the_runner(monkeypatch, tmp_path) -> None:
    import cellweave.bench

    seen = {}
    monkeypatch.setattr(cellweave.bench, "run_benchmark", lambda *a, **kw: seen.update(kw) or [])
    assert main(["benchmark", "--task", "panel", "--out", str(tmp_path), "--resume"]) == 0
    assert seen["resume"] is True
    assert main(["benchmark", "--task", "panel", "--out", str(tmp_path)]) == 0
    assert seen["resume"] is False
