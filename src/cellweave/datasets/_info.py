"""What the registry knows about one dataset."""

from __future__ import annotations

from dataclasses import dataclass, field

from cellweave._fetch import SourceFile

#: x_kinds a count-based model can pretrain on.
PRETRAIN_X_KINDS = ("counts", "log_normalized")

#: What a dataset can be used for (``DatasetInfo.tasks``).
TASK_TAGS = {
    "pretrain": "in the pretraining corpus (`make pretrained`, `demo --from-scratch`)",
    "panel": "labelled counts for the cell-level evaluation panel",
    "spatial": "spatial tasks (coordinates, zones or a reference for a spatial panel)",
    "crossmodal": "cross-modal prediction (paired modalities)",
    "perturb": "perturbation tasks",
    "markers": "marker-gene benchmark",
    "demo": "fetched for the demo when no mirror or cache has it (needs a converter)",
}


@dataclass(frozen=True)
class DatasetInfo:
    """One registered dataset.

    ``format`` is how the converted file is stored; ``modalities`` are cellweave's modality names.
    A protein-only dataset is stored as ``.h5ad`` (antibodies in ``X``) and loaded as a MuData
    with one ``prot`` modality, because an AnnData means RNA to every cellweave function.
    ``x_kind`` is the same for every model modality (``guide``/``hto`` aside).
    """

    name: str
    format: str  # "h5ad" or "h5mu"
    modalities: tuple[str, ...]
    n_cells: int
    organism: str  # "human", "mouse" or "fly"
    x_kind: str
    label_key: str | None
    batch_key: str | None
    licence: str
    citation: str
    files: tuple[SourceFile, ...]
    sha256: str  # of the converted file, as a mirror holds it
    tasks: tuple[str, ...] = field(default=())
    used_for: str = ""

    @property
    def filename(self) -> str:
        return f"{self.name}.{self.format}"

    @property
    def relpath(self) -> str:
        """Path of the converted file inside a mirror or the cache."""
        return f"{self.name}/{self.filename}"

    @property
    def pretrain(self) -> bool:
        """Part of the pretraining corpus: tagged so, with values a count model can read."""
        return "pretrain" in self.tasks and self.x_kind in PRETRAIN_X_KINDS

    @property
    def source(self) -> str:
        """The source as ``OWNER/REPO @ COMMIT`` (GitHub) or the wheel's URL."""
        if not self.files:
            return "not recorded"
        url = self.files[0].url
        if url.startswith("https://raw.githubusercontent.com/"):
            owner, repo, commit = url.split("/")[3:6]
            return f"GitHub {owner}/{repo} @ {commit[:10]}"
        if url.startswith("pypi:"):
            return f"PyPI {url.removeprefix('pypi:')} wheel"
        return url

    @property
    def protein_only(self) -> bool:
        return self.modalities == ("prot",)
