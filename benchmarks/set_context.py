"""Issue 12 diagnostic: can a cell borrow from the other cells of its dataset?

Every pretraining objective tried so far works on one cell at a time, and the zero-shot embedding
stays below PCA, which sees the whole dataset. A set layer lets each cell's embedding attend to other
cells of its dataset (a cell-cell transformer as CellPLM, Wen et al. 2023; here one attention step on
the frozen embedding, not a layer of the model):

    h_i = (1 - a) e_i + a * sum_j softmax_j(s(e_i, e_j) / t) e_j

over a context of other cells of the dataset, with ``s`` a learned query-key product
(``--attention learned``) or the cosine of the layer-normalized embeddings (``cosine``, so only the
temperature ``t`` and the share ``a`` are learned). It stays in the embedding's space. It is trained
on the pretraining corpus (the registry's pretraining datasets outside the panel, up to 4,000 RNA
cells each) to predict genes the model did not see: each dataset's genes are split at random in two
halves, the frozen model embeds the cells from one half, and a linear decoder per dataset predicts the
other half's log-normalized most variable genes (noise2self, Batson & Royer 2019). The same decoders
without the set layer are the control. The trained layer then maps each development-panel dataset's
zero-shot embedding (context: up to 2,048 of its cells), scored by kNN macro-F1 (k=15, 5-fold, seed 0)
beside the embedding itself.

Prints the held-out reconstruction error of both fits, one line per panel dataset and the means, and
writes ``--out`` (JSON). About 5 minutes on two idle cores::

    CELLWEAVE_DATA_DIR=../shared/data .venv/bin/python benchmarks/set_context.py --attention cosine \\
        --out set_context_cosine.json
"""

from __future__ import annotations

import time

MAX_CELLS = 4000
CONTEXT = 512
PANEL_CONTEXT = 2048
BATCH = 128
STEPS = 3000


def corpus_views(model, seed: int = 0):
    """``[(name, embedding from half the genes, centred log-normalized HVGs of the other half)]`` for
    every RNA pretraining dataset outside the panel (as tensors)."""
    import numpy as np
    import torch

    from cellweave import datasets
    from cellweave.data import hvg_features, log_normalize

    rng = np.random.default_rng(seed)
    out = []
    for name, entry in datasets.REGISTRY.items():  # `cellweave datasets list --pretrain --exclude-task panel`
        if not entry.pretrain or "panel" in entry.tasks or "rna" not in entry.modalities:
            continue
        if not datasets.is_available(name):
            continue
        a = datasets.load(name, modality="rna") if len(entry.modalities) > 1 else datasets.load(name)
        if a.n_obs > MAX_CELLS:
            a = a[np.sort(rng.choice(a.n_obs, MAX_CELLS, replace=False))].copy()
        lognorm = log_normalize(a)
        seen = np.sort(rng.permutation(a.n_vars)[: a.n_vars // 2])
        unseen = np.setdiff1d(hvg_features(lognorm), seen)
        if unseen.size < 20:
            continue
        emb = model.embed(a[:, seen].copy(), seed=0, progress=False, dataset=name)[0]
        y = lognorm[:, unseen].toarray().astype(np.float32)
        out.append((name, torch.tensor(emb), torch.tensor(y - y.mean(0))))
    return out


def set_layer(dim: int, attention: str):
    import torch
    from torch import nn

    class SetLayer(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.norm = nn.LayerNorm(dim)
            if attention == "learned":
                self.query, self.key = nn.Linear(dim, 64), nn.Linear(dim, 64)
            self.share = nn.Parameter(torch.tensor(0.0))  # a = sigmoid(share)
            self.log_scale = nn.Parameter(torch.tensor(2.0))  # 1 / t

        def forward(self, e, context):
            q, k = self.norm(e), self.norm(context)
            if attention == "learned":
                scores = self.query(q) @ self.key(k).T / 8
            else:
                scores = nn.functional.normalize(q, dim=-1) @ nn.functional.normalize(k, dim=-1).T * 4
            w = torch.softmax(scores * self.log_scale.exp(), dim=-1)
            a = torch.sigmoid(self.share)
            return (1 - a) * e + a * (w @ context)

    return SetLayer()


def fit(views, attention: str | None, seed: int = 0):
    """Train the decoders (and the set layer unless ``attention`` is None); return the layer and
    each dataset's held-out mean squared error (10% of its cells)."""
    import torch
    from torch import nn

    torch.manual_seed(seed)
    dim = views[0][1].shape[1]
    layer = set_layer(dim, attention) if attention else None
    decoders = nn.ModuleList(nn.Linear(dim, y.shape[1]) for _, _, y in views)
    params = list(decoders.parameters()) + (list(layer.parameters()) if layer else [])
    opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=1e-4)
    g = torch.Generator().manual_seed(seed)
    splits = []
    for _, e, _ in views:
        perm = torch.randperm(len(e), generator=g)
        n_val = max(len(e) // 10, 1)
        splits.append((perm[n_val:], perm[:n_val]))
    for step in range(STEPS):
        k = step % len(views)
        _, e, y = views[k]
        train = splits[k][0]
        b = train[torch.randint(len(train), (BATCH,), generator=g)]
        h = layer(e[b], e[train[torch.randint(len(train), (CONTEXT,), generator=g)]]) if layer else e[b]
        loss = ((decoders[k](h) - y[b]) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    errors = {}
    with torch.no_grad():
        for k, (name, e, y) in enumerate(views):
            train, val = splits[k]
            h = layer(e[val], e[train[torch.randperm(len(train), generator=g)[:CONTEXT]]]) if layer else e[val]
            errors[name] = round(float(((decoders[k](h) - y[val]) ** 2).mean()), 4)
    return layer, errors


def main() -> None:
    import numpy as np
    import torch

    from _diagnostics import knn_f1, panel_arguments, panel_selection

    p = panel_arguments(__doc__, out="set_context.json")
    p.add_argument("--attention", choices=("learned", "cosine"), default="cosine")
    args = p.parse_args()
    from cellweave._system import keep_torch_threads

    keep_torch_threads()  # scanpy's first numba call would otherwise lift torch's thread limit

    from cellweave.models import CellWeave

    model = CellWeave.load(args.model or "cellweave-tiny")
    t0 = time.perf_counter()
    views = corpus_views(model)
    _, control = fit(views, None)
    layer, with_set = fit(views, args.attention)
    layer.eval()
    print(f"held-out error, mean over {len(views)} datasets: decoders alone {np.mean(list(control.values())):.4f}, "
          f"with the set layer {np.mean(list(with_set.values())):.4f}; share a = {torch.sigmoid(layer.share).item():.3f}, "
          f"1/t = {layer.log_scale.exp().item():.2f}")
    per_dataset = {}
    for d in panel_selection(args.datasets):
        e = torch.tensor(model.embed(d.model_input, seed=0, progress=False, dataset=d.name)[0])
        context = e if len(e) <= PANEL_CONTEXT else e[
            torch.randperm(len(e), generator=torch.Generator().manual_seed(0))[:PANEL_CONTEXT]]
        with torch.no_grad():
            h = layer(e, context).numpy()
        per_dataset[d.name] = {"embedding": knn_f1(e.numpy(), d.labels), "set layer": knn_f1(h, d.labels)}
        print(d.name, per_dataset[d.name], flush=True)
    mean = {k: round(float(np.mean([r[k] for r in per_dataset.values()])), 3) for k in ("embedding", "set layer")}
    print("mean", mean)
    from cellweave._io_utils import atomic_write_json

    atomic_write_json(args.out, {
        "command": f"benchmarks/set_context.py --attention {args.attention}"
                   + (f" --model {args.model}" if args.model else ""),
        "model": model.name, "metric": "kNN macro-F1 (k=15, 5-fold, seed 0)",
        "heldout_mse_decoders_alone": control, "heldout_mse_with_set_layer": with_set,
        "share": round(torch.sigmoid(layer.share).item(), 3), "inverse_temperature": round(layer.log_scale.exp().item(), 2),
        "per_dataset": per_dataset, "mean": mean, "seconds": round(time.perf_counter() - t0, 1)})


if __name__ == "__main__":
    main()
