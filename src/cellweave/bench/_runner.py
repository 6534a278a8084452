"""The benchmark runner: ``cellweave benchmark --task ...`` and the demo's benchmark sections.

A task is a module under :mod:`cellweave.bench.tasks` with

``DESCRIPTION``
    one sentence shown under the task's heading;
``run(ctx: BenchmarkContext, report: HtmlReport) -> list[Record]``
    runs cellweave and its baselines on the same splits, over ``ctx.seeds``, and writes its
    own plots and notes into ``report`` (a section the runner places under the summary table).

Tasks honour ``ctx.quick`` (the demo's setting: one seed, fewer folds or datasets, a minute or
so each) and, where they can, ``ctx.data`` (a user's file with ``ctx.label_key`` /
``ctx.batch_key``) in place of the registered datasets.
"""

from __future__ import annotations

import importlib
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cellweave._exceptions import CellWeaveInputError
from cellweave._io_utils import atomic_write_json
from cellweave._system import hardware

from ._report import HtmlReport
from ._results import Record, comparison_table, summarize, write_results

logger = logging.getLogger(__name__)

#: Task name -> module. Order is the order of ``--task all`` and of the report. A task of a verb
#: has the verb's name (``cellweave map-query`` -> ``map-query``, in ``tasks/map_query.py``).
TASKS: dict[str, str] = {
    "annotate": "cellweave.bench.tasks.annotate",
    "integrate": "cellweave.bench.tasks.integrate",
    "map-query": "cellweave.bench.tasks.map_query",
    "impute": "cellweave.bench.tasks.impute",
    "multimodal": "cellweave.bench.tasks.multimodal",
    "spatial": "cellweave.bench.tasks.spatial",
    "perturb": "cellweave.bench.tasks.perturb",
    "grn": "cellweave.bench.tasks.grn",
    "markers": "cellweave.bench.tasks.markers",
    "gene-map": "cellweave.bench.tasks.gene_map",
    "panel": "cellweave.bench.tasks.panel",
}
#: Old task name -> its name now. The old names still run their task, with a warning, until
#: :data:`RENAMED_UNTIL`; results written under them (``benchmarks/published``) keep them.
RENAMED_TASKS: dict[str, str] = {"map": "map-query", "genes": "gene-map"}
#: The release after which the old task names are removed.
RENAMED_UNTIL = "0.3"
#: Tasks run only when named: not part of ``--task all`` or the demo (the panel takes up to 30
#: minutes in quick form and repeats the cell-level protocols on every labelled dataset).
STANDALONE = frozenset({"panel"})


@dataclass
class BenchmarkContext:
    """What every task gets: the model, the seeds, the user's data (if any) and a shared cache."""

    model: Any  # cellweave.CellWeave
    seeds: tuple[int, ...] = (0, 1, 2)
    gene_model: Any = None
    """The model of the gene-level tasks (``grn``, ``gene-map``): the shipped gene model
    (:data:`cellweave.models.DEFAULT_GENE_MODEL`) when no model was given, as the ``tl`` functions
    default to; else ``model``. ``None``: ``model`` (set on construction)."""
    quick: bool = False
    data: Any = None  # AnnData / MuData given as INPUT, else None (registered datasets)
    data_name: str | None = None
    label_key: str | None = None
    batch_key: str | None = None
    out: Path | None = None
    progress: bool = True
    adapt: tuple[str, ...] = ()
    """Variants the panel adds: ``"pretrained"`` (the model adapted to each dataset), ``"scratch"``
    (the same adaptation from random weights), ``"untrained"`` (random weights, no training) and
    ``"genes"`` (the same adaptation from random weights with the pretrained gene embeddings)."""
    adapt_max_steps: int | None = None
    adapt_lr: float | None = None
    """Learning rate of each adaptation (``None``: :func:`cellweave.train.adapt`'s default)."""
    resume: bool = False
    """Panel: continue a stopped run in ``out`` from the (dataset, seed) pairs it finished."""
    precision: str = "32-true"
    """Lightning's name of the precision of cellweave's forward passes in every task (embedding,
    adaptation, fine-tuning, imputation, GRN and perturbation; :attr:`cellweave.CellWeave.PRECISIONS`), as
    the verbs' ``precision``; the ``markers`` task's attributions stay float32 (integrated gradients,
    which no verb runs in bf16). Baselines always run as they would without cellweave."""
    joint_vs_rna_results: Path | None = None
    """``multimodal`` only: results.json of ``benchmarks/joint_vs_rna_pretraining.py`` to show;
    default: the copy shipped with cellweave (package code never reads the repository's folders)."""
    cache: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.gene_model is None:
            self.gene_model = self.model

    def embedding(self, key: str, data: Any, *, seed: int = 0, **kwargs) -> np.ndarray:
        """The model's embedding of ``data`` (cached under ``(key, seed)`` for this run)."""
        ck = ("embedding", key, seed, tuple(sorted(kwargs.items())))
        if ck not in self.cache:
            with self.model.autocast(self.precision):
                emb, _ = self.model.embed(data, seed=seed, progress=self.progress, dataset=key, **kwargs)
            self.cache[ck] = emb
        return self.cache[ck]


def _import_task(name: str):
    if name not in TASKS:
        raise CellWeaveInputError(f"Unknown benchmark task {name!r}; choose from {', '.join(TASKS)} or 'all'.")
    try:
        return importlib.import_module(TASKS[name])
    except ModuleNotFoundError as err:
        if err.name == TASKS[name]:
            return None
        raise


def available_tasks() -> list[str]:
    """Tasks implemented in this version of cellweave, in report order (standalone ones excluded)."""
    return [t for t in TASKS if t not in STANDALONE and _import_task(t) is not None]


def _current_name(name: str) -> str:
    """``name``, or the name now of a renamed task (with a warning naming it)."""
    new = RENAMED_TASKS.get(name)
    if new is None:
        return name
    logger.warning("Benchmark task %r is deprecated and goes in %s; write %r instead.", name, RENAMED_UNTIL, new)
    return new


def resolve_tasks(tasks: str | list[str]) -> list[str]:
    """``"all"`` or a list of names -> the task names, checked. An old name (:data:`RENAMED_TASKS`)
    stands for its task, with a warning; a task named twice runs once."""
    names = [tasks] if isinstance(tasks, str) else list(tasks)
    if "all" in names:
        return available_tasks()
    names = list(dict.fromkeys(_current_name(n) for n in names))
    for n in names:
        if _import_task(n) is None:
            raise CellWeaveInputError(f"Benchmark task {n!r} is not available in this version; "
                                      f"available: {', '.join(available_tasks())}.")
    return names


def _factor_out(table, columns: tuple[str, ...]):
    """Drop the columns of ``columns`` that hold one value in every row; return it per column name
    (said once above the table instead of in every row, which keeps wide tables on the page)."""
    shared = {}
    for col in columns:
        if col in table.columns and table[col].nunique(dropna=False) == 1:
            shared[col] = table[col].iloc[0]
    return table.drop(columns=list(shared)), shared


def run_tasks(ctx: BenchmarkContext, tasks: list[str], report: HtmlReport) -> tuple[list[Record], dict[str, float]]:
    """Run ``tasks`` and add one section per task to ``report``. Returns records and seconds per task."""
    records: list[Record] = []
    seconds: dict[str, float] = {}
    for name in dict.fromkeys(_current_name(n) for n in tasks):
        module = _import_task(name)
        logger.info("Benchmark task %s ...", name)
        t = time.perf_counter()
        section = HtmlReport(name)
        task_records = list(module.run(ctx, section))
        seconds[name] = time.perf_counter() - t
        records.extend(task_records)
        report.heading(f"Benchmark: {name}")
        report.text(getattr(module, "DESCRIPTION", ""), css_class="note")
        table = comparison_table(task_records, task=name)
        if not table.empty:
            table, shared = _factor_out(table, ("dataset", "split"))
            report.text(
                "".join(f"{k.capitalize()}: {v}. " for k, v in shared.items())
                + f"Mean ± standard deviation over seeds and folds ({len(set(r.seed for r in task_records))} "
                "seed(s)). 'cellweave vs best baseline': signed difference of the best cellweave variant from the "
                "best baseline (positive = cellweave better).",
                css_class="note",
            )
            report.table(table)
        report.parts.extend(section.parts)
        report.text(f"Task time: {seconds[name]:.0f} s.", css_class="note")
        logger.info("Benchmark task %s: %d records in %.0f s", name, len(task_records), seconds[name])
    return records, seconds


def run_benchmark(
    tasks: str | list[str],
    out: str | os.PathLike,
    *,
    model: Any = None,
    seeds: tuple[int, ...] = (0, 1, 2),
    quick: bool = False,
    data: str | os.PathLike | None = None,
    label_key: str | None = None,
    batch_key: str | None = None,
    progress: bool = True,
    adapt: tuple[str, ...] = (),
    adapt_max_steps: int | None = None,
    adapt_lr: float | None = None,
    resume: bool = False,
    joint_vs_rna_results: str | os.PathLike | None = None,
    precision: str = "32-true",
) -> list[Record]:
    """Run benchmark tasks and write ``out/results.json`` and ``out/report.html``.

    Parameters
    ----------
    tasks
        A task name, a list of names, or ``"all"`` (see :data:`TASKS`; the old names of
        :data:`RENAMED_TASKS` still work, with a warning).
    out
        Output folder (created).
    model
        A :class:`~cellweave.CellWeave`, a model folder or shipped name; ``None`` = the default.
    seeds
        Seeds to repeat each split with (at least 3 for reported numbers).
    quick
        The demo's setting: fewer seeds, folds and datasets.
    data, label_key, batch_key
        Run the protocol on a user's file instead of the registered datasets.
    adapt, adapt_max_steps, adapt_lr
        Panel only: also score the model adapted to each dataset (``"pretrained"``) and the same
        adaptation from random weights (``"scratch"``), with this step budget and learning rate
        (default: adapt's).
    resume
        Panel only: the panel saves the records of each finished (dataset, seed) pair in
        ``out/panel_partial.json``; with ``resume`` a run with the same model and settings starts
        from them instead of from the first dataset (without it, they are replaced).
    joint_vs_rna_results
        Multimodal only: the results.json of ``benchmarks/joint_vs_rna_pretraining.py`` to show
        (default: the copy shipped with cellweave).
    precision
        ``"32-true"`` or ``"bf16-mixed"``: the precision of cellweave's forward passes in every task,
        as the verbs' ``precision`` (readings the verbs keep in float32 stay so; baselines are not
        affected). Recorded in ``summary.json``; ``benchmarks/bench_precision.py`` compares a run at
        each precision task by task (``embed_precision.py`` and ``task_precision.py``, the verbs).
    """
    from cellweave import io
    from cellweave.models import DEFAULT_GENE_MODEL, CellWeave, environment_versions

    CellWeave.check_precision(precision)
    names = resolve_tasks(tasks)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cw = model if isinstance(model, CellWeave) else CellWeave.load(model)
    gene_tasks = {"grn", "gene-map"} & set(names)
    gene_cw = CellWeave.load(DEFAULT_GENE_MODEL) if model is None and gene_tasks else cw
    user = None
    if data is not None:
        if not label_key:
            raise CellWeaveInputError("INPUT (your file) needs --label-key (the obs column with cell labels).")
        user = io.read(data)
        obs = user.obs
        for key in [label_key] + ([batch_key] if batch_key else []):
            if key not in obs:
                raise CellWeaveInputError(f"{data}: obs has no column {key!r}; columns: {', '.join(map(str, obs.columns))}.")
    ctx = BenchmarkContext(
        model=cw, gene_model=gene_cw, seeds=tuple(seeds), quick=quick, data=user,
        data_name=Path(data).name.split(".")[0] if data is not None else None,
        label_key=label_key, batch_key=batch_key, out=out, progress=progress, adapt=tuple(adapt),
        adapt_max_steps=adapt_max_steps, adapt_lr=adapt_lr, resume=resume,
        joint_vs_rna_results=Path(joint_vs_rna_results) if joint_vs_rna_results is not None else None,
        precision=precision,
    )
    t0 = time.perf_counter()
    report = HtmlReport("cellweave benchmark")
    report.text(f"Model {cw.name}, SHA-256 {cw.model_hash[:16]}…; tasks: {', '.join(names)}; seeds: "
                f"{', '.join(map(str, seeds))}{'; quick mode' if quick else ''}"
                + (f"; adapted variants: {', '.join(adapt)}" if adapt else "")
                + (f"; cellweave's passes in {precision}" if precision != "32-true" else "")
                + f"{f'; data: {data}' if data is not None else '; registered datasets'}."
                + (f" Gene-level tasks ({', '.join(sorted(gene_tasks))}): model {gene_cw.name}, SHA-256 "
                   f"{gene_cw.model_hash[:16]}… (the shipped gene model: the default model's gene tables are "
                   "fixed random codes)." if gene_cw is not cw else ""))
    records, seconds = run_tasks(ctx, names, report)
    write_results(records, out / "results.json")
    summary = summarize(records)
    atomic_write_json(out / "summary.json", {
        "model": cw.name, "model_sha256": cw.model_hash,
        **({"gene_model": gene_cw.name, "gene_model_sha256": gene_cw.model_hash} if gene_cw is not cw else {}),
        "tasks": names, "seeds": list(seeds), "quick": quick, "precision": precision,
        "data": str(data) if data is not None else None, "seconds": {k: round(v, 1) for k, v in seconds.items()},
        "wall_seconds": round(time.perf_counter() - t0, 1), "hardware": hardware(), "versions": environment_versions(),
        "summary": summary.replace({np.nan: None}).to_dict(orient="records"),
    })
    report.write(out / "report.html")
    logger.info("Benchmark: %d records; wrote %s and %s", len(records), out / "results.json", out / "report.html")
    return records


__all__ = ["BenchmarkContext", "RENAMED_TASKS", "TASKS", "available_tasks", "resolve_tasks", "run_benchmark",
           "run_tasks"]
