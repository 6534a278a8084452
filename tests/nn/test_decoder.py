"""The feature-query decoder of cross-modal fine-tuning."""

from __future__ import annotations

import torch

from cellweave.nn._decoder import FeatureQueryDecoder


def test_decoder_learns_to_read_one_token_per_feature() -> None:
    """Feature f's target is a coordinate of token f's state: only attention that finds the
    right token (a different one per feature) solves it; padded tokens must be ignored."""
    torch.manual_seed(0)
    b, n_tok, d, n_feat = 64, 12, 32, 4
    states = torch.randn(b, n_tok, d)
    mask = torch.ones(b, n_tok, dtype=torch.bool)
    mask[:, -3:] = False
    target = torch.stack([states[:, f, f] for f in range(n_feat)], dim=1)
    dec = FeatureQueryDecoder(d, n_feat, n_heads=2)
    opt = torch.optim.AdamW(dec.parameters(), lr=3e-3)
    first = None
    for _ in range(300):
        loss = torch.nn.functional.mse_loss(dec(states, mask), target)
        first = float(loss) if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss) < 0.1 * first
    # Padded tokens do not change the output.
    garbage = states.clone()
    garbage[:, -3:] = 1e3
    torch.testing.assert_close(dec(garbage, mask), dec(states, mask))


def test_decoder_queries_start_from_given_embeddings() -> None:
    init = torch.randn(5, 16)
    dec = FeatureQueryDecoder(16, 5, n_heads=4, init_queries=init)
    torch.testing.assert_close(dec.queries.detach(), init)
    assert dec(torch.randn(3, 7, 16), torch.ones(3, 7, dtype=torch.bool)).shape == (3, 5)
