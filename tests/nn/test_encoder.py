"""The pure-torch encoder: shapes, gradients, padding invariance, a golden value."""

from __future__ import annotations

import pytest
import torch

from cellweave.nn import PRESETS, CellWeaveConfig, CellWeaveModule, masked_value_loss


def tiny_config(**kw) -> CellWeaveConfig:
    base = dict(vocab_size=50, d_model=32, n_layers=2, n_heads=4, d_ff=64,
                context_length={"rna": 16, "prot": 4, "atac": 8, "gene_activity": 8})
    return CellWeaveConfig(**{**base, **kw})


def random_batch(b: int = 3, n: int = 12, vocab: int = 50, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    token_ids = torch.randint(0, vocab, (b, n), generator=g)
    values = torch.rand(b, n, generator=g) * 3
    modality_ids = torch.randint(0, 4, (b, n), generator=g)
    padding = torch.ones(b, n, dtype=torch.bool)
    padding[0, 8:] = False
    mask = torch.rand(b, n, generator=g) < 0.3
    mask[:, 0] = True
    return token_ids, values, modality_ids, padding, mask & padding


def test_forward_shapes_and_finite() -> None:
    torch.manual_seed(0)
    m = CellWeaveModule(tiny_config())
    batch = random_batch()
    targets = torch.randint(0, 50, (3, 5)), torch.zeros(3, 5, dtype=torch.long)
    out = m(*batch, *targets)
    assert out["target_pred"].shape == (3, 5)
    assert out["cell_embedding"].shape == (3, 32)
    assert out["token_pred"].shape == (3, 12)
    assert out["cell_pred"].shape == (3, 12)
    assert all(torch.isfinite(v).all() for v in out.values())


@pytest.mark.parametrize("profile_skip", [False, True])
def test_backward_reaches_every_parameter(profile_skip: bool) -> None:
    torch.manual_seed(0)
    m = CellWeaveModule(tiny_config(profile_skip=profile_skip))
    batch = random_batch()
    t_ids, t_mods = torch.randint(0, 50, (3, 5)), torch.zeros(3, 5, dtype=torch.long)
    out = m(*batch, t_ids, t_mods)
    losses = masked_value_loss(out, batch[1], batch[4], torch.rand(3, 5), torch.ones(3, 5, dtype=torch.bool))
    assert set(losses) == {"loss", "token_mse", "cell_mse", "target_mse"}
    losses["loss"].backward()
    no_grad = [n for n, p in m.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert no_grad == []


def test_fixed_feature_tables_get_no_gradient_and_no_optimizer_slot() -> None:
    from cellweave.train._plan import adamw_warmup_cosine

    torch.manual_seed(0)
    m = CellWeaveModule(tiny_config(profile_skip=True, fixed_feature_tables=True))
    batch = random_batch()
    t_ids, t_mods = torch.randint(0, 50, (3, 5)), torch.zeros(3, 5, dtype=torch.long)
    out = m(*batch, t_ids, t_mods)
    masked_value_loss(out, batch[1], batch[4], torch.rand(3, 5), torch.ones(3, 5, dtype=torch.bool))["loss"].backward()
    frozen = {n for n, p in m.named_parameters() if p.grad is None}
    assert frozen == {"feature_embedding.weight", "profile_embedding.weight"}
    opt = adamw_warmup_cosine(m.named_parameters(), lr=1e-3, weight_decay=0.01, warmup_steps=1, total_steps=2)
    trained = {id(p) for g in opt["optimizer"].param_groups for p in g["params"]}
    assert id(m.feature_embedding.weight) not in trained and id(m.cell_key.weight) in trained
    # A model saved before the field (no key in its config) keeps learned tables.
    assert CellWeaveModule(tiny_config()).feature_embedding.weight.requires_grad


def test_feature_offset_shifts_every_prediction_of_its_feature_only() -> None:
    from cellweave.train._plan import adamw_warmup_cosine

    torch.manual_seed(0)
    m = CellWeaveModule(tiny_config(feature_offset=True, fixed_feature_tables=True)).eval()
    batch = random_batch()
    t_ids, t_mods = torch.randint(0, 50, (3, 5)), torch.zeros(3, 5, dtype=torch.long)
    features, mods = torch.tensor([7, 8]), torch.zeros(2, dtype=torch.long)
    before = m(*batch, t_ids, t_mods)
    imputed = m.predict_features(before["cell_embedding"], features, mods)
    with torch.no_grad():
        m.feature_offset.weight[7] = 5.0
    after = m(*batch, t_ids, t_mods)
    for key, ids in (("token_pred", batch[0]), ("cell_pred", batch[0]), ("target_pred", t_ids)):
        torch.testing.assert_close(after[key] - before[key], 5.0 * (ids == 7).float())
    shifted = m.predict_features(before["cell_embedding"], features, mods)
    torch.testing.assert_close(shifted - imputed, torch.tensor([[5.0, 0.0]]).expand(3, 2))
    opt = adamw_warmup_cosine(m.named_parameters(), lr=1e-3, weight_decay=0.01, warmup_steps=1, total_steps=2)
    no_decay = next(g for g in opt["optimizer"].param_groups if g["weight_decay"] == 0.0)
    assert any(p is m.feature_offset.weight for p in no_decay["params"])  # a bias: not decayed


@pytest.mark.parametrize("pooling", ["cls", "mean", "bag", "cls+bag"])
@pytest.mark.parametrize("profile_skip", [False, True])
def test_padding_does_not_change_the_cell_embedding(pooling: str, profile_skip: bool) -> None:
    torch.manual_seed(0)
    m = CellWeaveModule(tiny_config(pooling=pooling, profile_skip=profile_skip)).eval()
    ids, vals, mods, pad, _ = random_batch(b=1, n=6)
    short = m.embed_cells(ids, vals, mods, pad)
    assert short.shape == (1, m.embedding_dim)
    extra = 5
    ids2 = torch.cat([ids, torch.randint(0, 50, (1, extra))], 1)
    vals2 = torch.cat([vals, torch.rand(1, extra) * 9], 1)
    mods2 = torch.cat([mods, torch.zeros(1, extra, dtype=torch.long)], 1)
    pad2 = torch.cat([pad, torch.zeros(1, extra, dtype=torch.bool)], 1)
    padded = m.embed_cells(ids2, vals2, mods2, pad2)
    torch.testing.assert_close(short, padded, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("profile_skip", [False, True])
def test_masked_value_is_hidden(profile_skip: bool) -> None:
    """A masked token's true value must not influence any output (nor reach the profile path)."""
    torch.manual_seed(0)
    m = CellWeaveModule(tiny_config(profile_skip=profile_skip)).eval()
    ids, vals, mods, pad, mask = random_batch(b=1, n=8)
    mask = torch.zeros_like(mask)
    mask[0, 2] = True
    a = m(ids, vals, mods, pad, mask)
    vals_b = vals.clone()
    vals_b[0, 2] = 100.0
    b = m(ids, vals_b, mods, pad, mask)
    torch.testing.assert_close(a["token_pred"], b["token_pred"])
    torch.testing.assert_close(a["cell_embedding"], b["cell_embedding"])


def test_profile_skip_adds_the_linear_path_of_the_visible_values() -> None:
    """With ``profile_skip`` the cell state is the CLS state plus the profile of the visible
    (unmasked, unpadded) values, and that profile moves when a visible value does."""
    torch.manual_seed(0)
    m = CellWeaveModule(tiny_config(profile_skip=True)).eval()
    ids, vals, mods, pad, mask = random_batch()
    with torch.no_grad():
        cell, _ = m.encode(ids, vals, mods, pad, mask)
        m.config.profile_skip = False
        cls, _ = m.encode(ids, vals, mods, pad, mask)
        m.config.profile_skip = True
        torch.testing.assert_close(cell - cls, m.profile(ids, vals, pad & ~mask))
        visible = int(torch.nonzero(pad[1] & ~mask[1])[0])
        vals_b = vals.clone()
        vals_b[1, visible] += 5.0
        moved = m.profile(ids, vals_b, pad & ~mask) - m.profile(ids, vals, pad & ~mask)
    assert moved[1].abs().max() > 1e-3
    assert moved[[0, 2]].abs().max() == 0
    assert not hasattr(CellWeaveModule(tiny_config()), "profile_embedding")


def test_golden_value() -> None:
    """Fixed seed and input: a refactor must not silently change the math."""
    torch.manual_seed(1234)
    m = CellWeaveModule(tiny_config()).eval()
    batch = random_batch(seed=7)
    with torch.no_grad():
        out = m(*batch)
        loss = masked_value_loss(out, batch[1], batch[4])["loss"]
    # LayerNorm output sums to ~0, so weigh the dimensions before summing.
    weights = torch.linspace(-1, 1, 32)
    assert float((out["cell_embedding"] * weights).sum()) == pytest.approx(-5.0679221, abs=1e-4)
    assert float(out["token_pred"].sum()) == pytest.approx(-0.0802003, abs=1e-4)
    assert float(loss) == pytest.approx(6.3104343, abs=1e-4)


def test_presets_build_and_validate() -> None:
    for name in PRESETS:
        cfg = CellWeaveConfig.from_preset(name, vocab_size=10)
        assert cfg.preset == name and cfg.d_model % cfg.n_heads == 0
    with pytest.raises(ValueError, match="Unknown preset"):
        CellWeaveConfig.from_preset("huge")
    with pytest.raises(ValueError, match="divisible"):
        CellWeaveConfig(vocab_size=5, d_model=30, n_heads=4)
    with pytest.raises(ValueError, match="unknown modalities"):
        CellWeaveConfig(vocab_size=5, context_length={"rna": 4, "spatial_x": 3})
    cfg = tiny_config()
    assert CellWeaveConfig.from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize("dropout", [0.0, 0.1])
def test_gradient_checkpointing_gives_the_same_outputs_and_gradients(dropout: float) -> None:
    """Recomputing block activations in the backward pass changes memory, not the math (dropout
    included: checkpoint replays the RNG state), and is not part of the config."""
    torch.manual_seed(0)
    plain = CellWeaveModule(tiny_config(dropout=dropout))
    checkpointed = CellWeaveModule(tiny_config(dropout=dropout))
    checkpointed.load_state_dict(plain.state_dict())
    checkpointed.gradient_checkpointing = True
    batch = random_batch()
    results = []
    for m in (plain, checkpointed):
        m.train()
        torch.manual_seed(1)
        out = m(*batch)
        loss = masked_value_loss(out, batch[1], batch[4])["loss"]
        loss.backward()
        results.append((out, {n: p.grad.clone() for n, p in m.named_parameters() if p.grad is not None}))
    (out_a, grad_a), (out_b, grad_b) = results
    for k in out_a:
        torch.testing.assert_close(out_a[k], out_b[k])
    assert grad_a.keys() == grad_b.keys() and len(grad_a) > 10
    for n in grad_a:
        torch.testing.assert_close(grad_a[n], grad_b[n], rtol=1e-5, atol=1e-6)
    assert "gradient_checkpointing" not in checkpointed.config.to_dict()


def test_cpu_bf16_autocast_keeps_attention_in_float32_while_training(attention_dtypes) -> None:
    """Under CPU bf16 autocast (``pretrain --precision bf16-mixed`` on a CPU) the linear layers run
    in bf16 and attention in float32 while gradients are recorded (torch's CPU bf16 attention
    backward is the slow one); inference and a float32 run keep their own dtypes, and the bf16
    forward stays close to the float32 one."""
    import cellweave.nn._model as model_module

    seen = attention_dtypes
    torch.manual_seed(0)
    m = CellWeaveModule(tiny_config())
    batch = random_batch()
    reference = m(*batch)["cell_embedding"]
    assert seen == [torch.float32] * 2  # float32 run: one call per layer
    seen.clear()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = m(*batch)
        loss = masked_value_loss(out, batch[1], batch[4])["loss"]
    assert seen == [torch.float32] * 2
    assert out["token_pred"].dtype == torch.bfloat16  # the linear layers around attention ran in bf16
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in m.parameters() if p.grad is not None)
    torch.testing.assert_close(out["cell_embedding"].float(), reference, rtol=0.05, atol=0.05)
    seen.clear()
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        m(*batch)
    assert seen == [torch.bfloat16] * 2  # forward only: bf16 attention is the fast one
    assert not model_module.attention_in_float32(torch.zeros(1))  # no autocast: nothing to change
