"""Metrics and baselines of the grn / markers / gene-map benchmark tasks, and their CLI commands."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cellweave.bench.tasks.grn import _coexpression, regulator_metrics, tf_enrichment


def test_regulator_metrics_perfect_reversed_and_self_excluded():
    truth = [np.array([False, True, True, False, False, False])]
    perfect = np.array([[9.0, 5.0, 4.0, 1.0, 0.5, 0.2]])  # the source (col 0) scores highest: ignored
    m = regulator_metrics(perfect, [0], truth)
    assert m["auprc"] == pytest.approx(1.0) and m["early_precision"] == pytest.approx(1.0)
    assert m["epr"] == pytest.approx(1 / (2 / 5))
    reversed_ = np.array([[9.0, 0.1, 0.2, 3.0, 4.0, 5.0]])
    r = regulator_metrics(reversed_, [0], truth)
    assert r["early_precision"] == 0.0 and r["auprc"] < 0.5


def test_tf_enrichment_counts_sources_of_top_edges():
    is_tf = np.array([True, False, False, False])
    m = np.zeros((4, 4))
    m[0, 1:] = 10.0  # the TF's outgoing edges are the strongest
    assert tf_enrichment(m, is_tf) == pytest.approx(1.0 / 0.25)
    m2 = np.zeros((4, 4))
    m2[1, [0, 2, 3]] = 10.0
    assert tf_enrichment(m2, is_tf) == 0.0


def test_coexpression_is_absolute_correlation():
    rng = np.random.default_rng(0)
    a = rng.standard_normal(200)
    X = np.stack([a, -a + 0.01 * rng.standard_normal(200), rng.standard_normal(200)], axis=1)
    p = _coexpression(X, "pearson")
    s = _coexpression(X, "spearman")
    assert p[0, 1] > 0.99 and s[0, 1] > 0.99 and p[0, 2] < 0.3 and p[0, 0] == 0


def test_grnboost2_baseline_finds_a_planted_regulator():
    pytest.importorskip("arboreto")
    from cellweave.bench.tasks.grn import grnboost2_scores

    rng = np.random.default_rng(0)
    n = 150
    reg = rng.gamma(2.0, 1.0, n)
    X = np.stack([reg, 2 * reg + 0.1 * rng.standard_normal(n), rng.gamma(2.0, 1.0, n),
                  rng.gamma(2.0, 1.0, n)], axis=1)
    scores = grnboost2_scores(X, ["R", "T", "N1", "N2"], [0, 2], seed=0)
    assert scores.shape == (2, 4)
    assert scores[0, 1] > scores[1, 1]  # R explains T, N1 does not


def test_cli_registers_gene_commands(tmp_path):
    from cellweave.cli import build_parser, main

    p = build_parser()
    args = p.parse_args(["grn", "in.h5ad", "--out", "e.tsv", "--regulators", "all"])
    assert args.func.__name__ == "cmd_grn" and args.method == "embedding"
    args = p.parse_args(["markers", "in.h5ad", "--groupby", "cell_type", "--out", "m.tsv"])
    assert args.func.__name__ == "cmd_markers"
    args = p.parse_args(["gene-map", "--out", "g.h5ad"])
    assert args.func.__name__ == "cmd_gene_map" and args.command == "gene-map"
    # Bad input: one line, exit code 2.
    assert main(["gene-map", "--out", str(tmp_path / "g.txt")]) == 2
    assert main(["grn", "in.h5ad", "--out", "e.tsv", "--regulators", str(tmp_path / "missing.txt")]) == 2


def test_cli_grn_end_to_end(tmp_path, tiny_vocab_and_data):
    import torch

    from cellweave.cli import main
    from cellweave.models import CellWeave

    vocab, adata = tiny_vocab_and_data
    torch.manual_seed(0)
    model = CellWeave.from_preset("tiny", vocab, d_model=16, n_layers=2, n_heads=2, d_ff=32,
                                  context_length={"rna": 48, "prot": 0, "atac": 0, "gene_activity": 0})
    model.save(tmp_path / "model")
    adata[:30].copy().write_h5ad(tmp_path / "in.h5ad")
    regs = tmp_path / "regs.txt"
    regs.write_text("\n".join(map(str, adata.var_names[:3])) + "\n")
    rc = main(["grn", str(tmp_path / "in.h5ad"), "--model", str(tmp_path / "model"), "--regulators", str(regs),
               "--n-top-targets", "4", "--out", str(tmp_path / "edges.tsv")])
    assert rc == 0
    edges = pd.read_csv(tmp_path / "edges.tsv", sep="\t")
    assert len(edges) == 12 and set(edges["source"]) == set(map(str, adata.var_names[:3]))
