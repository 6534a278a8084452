"""``cellweave benchmark --precision``: cellweave's passes in every task run at the asked precision
(embedding, adaptation and fine-tuning), the baselines do not change, the choice is recorded, a
stopped panel resumes only at the precision it ran at, and a wrong name is refused before any work."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cellweave._exceptions import CellWeaveInputError
from cellweave.bench import read_results, run_benchmark
from cellweave.bench._report import HtmlReport
from cellweave.bench._runner import BenchmarkContext
from cellweave.bench.tasks import panel
from cellweave.cli import main


def test_panel_runs_every_cellweave_variant_at_the_context_precision(tiny_rna_model, tiny_vocab_and_data,
                                                                     attention_calls, row_cosines) -> None:
    import torch

    from cellweave.data import log_normalize

    adata = tiny_vocab_and_data[1]
    d = panel.PanelData("syn", adata, adata, adata.obs["cell_type"].astype(str).to_numpy(), None, "batch",
                        log_normalize(adata))
    embs = {}
    for precision, dtype in (("32-true", torch.float32), ("bf16-mixed", torch.bfloat16)):
        attention_calls.clear()
        ctx = BenchmarkContext(model=tiny_rna_model, seeds=(0,), quick=True, adapt=("pretrained", "untrained"),
                               adapt_max_steps=2, progress=False, precision=precision)
        embs[precision], _ = panel._model_embeddings(ctx, d, seed=0)
        passes = {dt for dt, grad in attention_calls if not grad}
        # zero-shot, untrained, the adaptation's embedding pass and the adapted embedding: all at the precision
        assert passes == {dtype}, precision
        assert len([1 for _, grad in attention_calls if not grad]) >= 4
        assert set(embs[precision]) == {"cellweave", panel.ADAPTED, panel.UNTRAINED}
    for method in ("cellweave", panel.UNTRAINED, panel.ADAPTED):
        a, b = embs["32-true"][method], embs["bf16-mixed"][method]
        assert b.dtype == np.float32 and np.isfinite(b).all() and not np.array_equal(a, b), method
        if method != panel.ADAPTED:  # the adapted latent is a readout trained on bf16 passes: close, not this close
            assert row_cosines(a, b).min() > 0.99, method


def test_annotate_task_fine_tunes_and_embeds_at_the_precision_baselines_unchanged(
        tiny_rna_model, tiny_vocab_and_data, attention_calls, training_linear_dtypes, tmp_path) -> None:
    import torch

    user = tmp_path / "mine.h5ad"
    tiny_vocab_and_data[1].write_h5ad(user)
    results = {}
    for precision in ("32-true", "bf16-mixed"):
        attention_calls.clear()
        training_linear_dtypes.clear()
        out = tmp_path / precision
        records = run_benchmark("annotate", out, model=tiny_rna_model, data=user, label_key="cell_type",
                                batch_key="batch", seeds=(0,), progress=False, precision=precision)
        assert read_results(out / "results.json") == records
        assert json.loads((out / "summary.json").read_text())["precision"] == precision
        assert "cellweave (fine-tuned)" in {r.method for r in records}  # the fine-tuning ran
        bf16 = precision == "bf16-mixed"
        passes = {dt for dt, grad in attention_calls if not grad}
        assert passes == {torch.bfloat16 if bf16 else torch.float32}
        assert training_linear_dtypes == {torch.bfloat16 if bf16 else torch.float32}  # annotate --finetune's steps
        results[precision] = {(r.split, r.method, r.metric): r.value for r in records}
    a, b = results["32-true"], results["bf16-mixed"]
    assert a.keys() == b.keys()
    baselines = [k for k in a if not k[1].startswith("cellweave")]
    assert baselines and all(a[k] == b[k] for k in baselines)  # the baselines never run in bf16
    ours = [k for k in a if k[1] == "cellweave" and k[2] == "macro_f1"]
    assert ours and max(abs(a[k] - b[k]) for k in ours) < 0.15


def test_a_wrong_precision_is_refused_before_any_work(tiny_rna_model, tmp_path) -> None:
    out = tmp_path / "never"
    with pytest.raises(CellWeaveInputError, match="32-true, bf16-mixed"):
        run_benchmark("panel", out, model=tiny_rna_model, precision="16-mixed")
    assert not out.exists()


def test_a_stopped_panel_resumes_only_at_its_precision(tmp_path, monkeypatch) -> None:
    """A checkpoint written before the panel had a precision ran in float32: it resumes a float32
    run and is refused by a bf16 one."""

    class Model:
        model_hash = "abc"

    data = [panel.PanelData("one", None, None, np.array(["a", "b"]), None, None, None)]
    monkeypatch.setattr(panel, "panel_datasets", lambda quick=False: data)
    monkeypatch.setattr(panel, "tissue_groups", lambda: [])
    monkeypatch.setattr(panel, "_model_embeddings", lambda ctx, d, seed: ({}, []))
    monkeypatch.setattr(panel, "_novel_type", lambda ctx, d, embs, seed: [])
    monkeypatch.setattr(panel, "_zero_shot", lambda ctx, d, embs, seed: [])
    ctx = BenchmarkContext(model=Model(), seeds=(0,), quick=True, out=tmp_path, progress=False)
    panel._save_finished(ctx, [])
    saved = json.loads((tmp_path / panel.PARTIAL).read_text())
    assert saved["config"]["precision"] == "32-true"
    del saved["config"]["precision"]
    (tmp_path / panel.PARTIAL).write_text(json.dumps(saved))
    bf16 = BenchmarkContext(model=Model(), seeds=(0,), quick=True, out=tmp_path, progress=False, resume=True,
                            precision="bf16-mixed")
    with pytest.raises(CellWeaveInputError, match="precision: '32-true' there, 'bf16-mixed' now"):
        panel.run(bf16, HtmlReport("t"))
    ctx.resume = True
    panel.run(ctx, HtmlReport("t"))
    assert json.loads((tmp_path / "panel.json").read_text())["precision"] == "32-true"


def test_benchmark_precision_reaches_the_runner(monkeypatch, tmp_path) -> None:
    import cellweave.bench

    seen = {}
    monkeypatch.setattr(cellweave.bench, "run_benchmark", lambda *a, **kw: seen.update(kw) or [])
    assert main(["benchmark", "--task", "panel", "--out", str(tmp_path), "--precision", "bf16-mixed"]) == 0
    assert seen["precision"] == "bf16-mixed"
    assert main(["benchmark", "--task", "panel", "--out", str(tmp_path)]) == 0
    assert seen["precision"] == "32-true"
