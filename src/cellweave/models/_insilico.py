"""In silico perturbation engine: re-embed cells with some gene tokens set to a new value.

Shared by the zero-shot ``cellweave.tl.perturb`` and the perturbation fine-tuning of
``cellweave.train`` (its zero-shot features), so it lives with the model both build on.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import numpy as np


if TYPE_CHECKING:
    from cellweave.data import CellCorpus

    from ._cellweave import CellWeave


def _edit_tokens(ids: np.ndarray, vals: np.ndarray, mods: np.ndarray, targets: np.ndarray, value: float,
                 rna_id: int):
    """Set the values of ``targets`` to ``value``, adding the tokens a cell's input lacks (as RNA
    tokens: modality embedding row ``rna_id``)."""
    vals = vals.copy()
    present = np.isin(ids, targets)
    vals[present] = value
    add = np.setdiff1d(targets, ids[present])
    if add.size:
        ids = np.concatenate([ids, add])
        vals = np.concatenate([vals, np.full(add.size, value, dtype=np.float32)])
        mods = np.concatenate([mods, np.full(add.size, rna_id, dtype=np.int64)])
    return ids, vals.astype(np.float32), mods


def in_silico_profiles(
    model: CellWeave,
    corpus: CellCorpus,
    targets: np.ndarray,
    *,
    mode: Literal["knockout", "overexpress"] = "knockout",
    readout_ids: np.ndarray | None = None,
    batch_size: int = 128,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, np.ndarray]:
    """Re-embed every cell of ``corpus`` with the genes ``targets`` (vocabulary ids) changed.

    Knock-out sets a target's value to zero (measured as absent); over-expression sets it to the
    cell's highest value (1.0 in quantile encoding). A target missing from a cell's input is added
    as a token with that value, so unmeasured genes can be perturbed too. Token sampling is fixed
    by ``(seed, cell)``, so the original and the perturbed input differ only in the targets.

    Returns
    -------
    ``shift`` (n,): Euclidean distance between the cell's embedding before and after;
    ``delta`` (n, len(readout_ids)): change of each readout gene's value predicted by the
    pretrained cell head (in the model's value units), when ``readout_ids`` is given.
    """
    import torch
    from tqdm.auto import tqdm

    from cellweave.data import collate_tokens

    module = model.module
    module.eval()
    device = next(module.parameters()).device
    tok = model.tokenizer
    rna_id = model.modality_id("rna")  # perturbed genes and the readout are RNA tokens
    n = len(corpus)
    targets = np.unique(np.asarray(targets, dtype=np.int64))
    shift = np.zeros(n, dtype=np.float32)
    delta = None if readout_ids is None else np.zeros((n, len(readout_ids)), dtype=np.float32)
    quantile = model.config.value_encoding == "quantile"
    for start in tqdm(range(0, n, batch_size), desc="in silico perturbation", disable=not progress, leave=False):
        idx = range(start, min(n, start + batch_size))
        before, after = [], []
        for i in idx:
            ids, vals, mods = tok.tokenize(corpus, i, np.random.default_rng([seed, i]))
            if mode == "knockout":
                value = 0.0
            else:
                value = 1.0 if quantile else float(vals.max(initial=0.0))
            e_ids, e_vals, e_mods = _edit_tokens(ids, vals, mods, targets, value, rna_id)
            before.append({"token_ids": ids, "values": vals, "modality_ids": mods, "index": i})
            after.append({"token_ids": e_ids, "values": e_vals, "modality_ids": e_mods, "index": i})
        outs = []
        with torch.inference_mode():
            for items in (before, after):
                b = {k: v.to(device) for k, v in collate_tokens(items).items()}
                args = (b["token_ids"], b["values"], b["modality_ids"], b["padding_mask"])
                emb = module.embed_cells(*args).float()
                pred = None
                if readout_ids is not None:
                    cls, _ = module.encode(*args)
                    r = torch.as_tensor(np.asarray(readout_ids), device=device).expand(cls.shape[0], -1)
                    pred = module.predict_from_cell_float32(cls, r, torch.full_like(r, rna_id))
                outs.append((emb, pred))
        sl = slice(start, start + len(before))
        shift[sl] = (outs[1][0] - outs[0][0]).norm(dim=-1).cpu().numpy()
        if delta is not None:
            delta[sl] = (outs[1][1] - outs[0][1]).cpu().numpy()
    return {"shift": shift, "delta": delta}
