"""CellLM encoder: padding and batch-mates never change a cell's output; exact vs Performer; projections."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from app.engine.celllm.tokenize import collate
from app.models.celllm import CellLM, CellLMConfig, preset
from app.models.celllm.performer import favor_features, linear_attention

torch.set_num_threads(1)


def _cells(n: int, vocab: int, seed: int, lo: int = 2, hi: int = 30) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        k = int(rng.integers(lo, hi))
        genes = np.sort(rng.choice(vocab, k, replace=False)) + 2
        out.append((np.concatenate([[1], genes]).astype(np.int64),
                    np.concatenate([[6], rng.integers(0, 6, k)]).astype(np.int64)))
    return out


def _model(attention: str, seed: int = 0) -> CellLM:
    torch.manual_seed(seed)
    # larger embedding scale than the init so that attention is far from uniform (a stricter test)
    m = CellLM(preset("tiny", 60, attention=attention))
    with torch.no_grad():
        m.gene_emb.weight.normal_(0, 1.0)
        m.gene_emb.weight[0].zero_()
    return m.eval()


@pytest.mark.parametrize("attention", ["performer", "exact"])
@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_padding_and_batch_mates_do_not_change_embedding(attention: str, pooling: str) -> None:
    model = _model(attention)
    target = _cells(1, 60, 1, 5, 6)[0]
    alone = model.embed(*collate([target]), pooling=pooling)
    with torch.no_grad():
        others = _cells(7, 60, 2, 20, 40)  # longer batch-mates: the target gets padded
        g, b, m = collate([*others[:3], target, *others[3:]])
        in_batch = model.embed(g, b, m, pooling=pooling)[3:4]
        # extra padding columns beyond the batch's longest
        pad = 11
        g2 = torch.cat([g, torch.zeros(g.shape[0], pad, dtype=g.dtype)], 1)
        b2 = torch.cat([b, torch.full((b.shape[0], pad), 7, dtype=b.dtype)], 1)
        m2 = torch.cat([m, torch.zeros(m.shape[0], pad, dtype=torch.bool)], 1)
        padded = model.embed(g2, b2, m2, pooling=pooling)[3:4]
        # a different set of batch-mates with very different scales
        mates2 = _cells(4, 60, 9, 2, 50)
        in_batch2 = model.embed(*collate([target, *mates2]), pooling=pooling)[0:1]
    for other in (in_batch, padded, in_batch2):
        assert torch.allclose(alone, other, atol=2e-5, rtol=1e-4), float((alone - other).abs().max())


def test_padding_garbage_is_ignored() -> None:
    """Whatever sits in padded positions (gene ids, bins) has no effect: only the mask decides."""
    model = _model("performer")
    g, b, m = collate(_cells(3, 60, 4))
    ref = model(g, b, m)
    g2, b2 = g.clone(), b.clone()
    g2[~m] = 17
    b2[~m] = 3
    out = model(g2, b2, m)
    assert torch.allclose(ref, out, atol=1e-5)
    assert torch.all(out[~m] == 0)


def test_key_mask_really_excludes_padded_keys() -> None:
    """Unit check of FAVOR+: masked keys contribute nothing to numerator or normaliser."""
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 2, 6, 8, generator=gen) for _ in range(3))
    proj = torch.randn(32, 8, generator=gen)
    mask = torch.tensor([[True, True, True, True, False, False]])
    out = linear_attention(favor_features(q, proj, True), favor_features(k, proj, False, mask), v)
    k2, v2 = k.clone(), v.clone()
    k2[..., 4:, :] = 50.0  # huge padded keys would dominate both sums if they leaked in
    v2[..., 4:, :] = -99.0
    out2 = linear_attention(favor_features(q, proj, True), favor_features(k2, proj, False, mask), v2)
    assert torch.allclose(out, out2, atol=1e-5)
    short = linear_attention(favor_features(q[..., :4, :], proj, True), favor_features(k[..., :4, :], proj, False),
                             v[..., :4, :])
    assert torch.allclose(out[..., :4, :], short, atol=1e-5)


def test_performer_approximates_exact_attention() -> None:
    """FAVOR+ vs exact softmax attention on the same q/k/v with a key mask: the random-feature estimate must be
    far closer to exact attention than the trivial uniform average over real keys (a sanity check)."""
    gen = torch.Generator().manual_seed(0)
    b, h, n, d = 4, 2, 40, 16
    # q, k of moderate norm, as after pre-LayerNorm and initialised projections (FAVOR+'s variance grows
    # with exp(|q|^2 + |k|^2))
    q, k, v = (torch.randn(b, h, n, d, generator=gen) * s for s in (0.5, 0.5, 1.0))
    mask = torch.ones(b, n, dtype=torch.bool)
    mask[1, 25:] = False
    mask[3, 7:] = False
    from app.models.celllm.performer import gaussian_orthogonal_random_matrix

    proj = gaussian_orthogonal_random_matrix(2048, d, torch.Generator().manual_seed(1))
    exact = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None, None, :])
    approx = linear_attention(favor_features(q, proj, True), favor_features(k, proj, False, mask), v)
    w = mask[:, None, :, None].float()
    uniform = ((v * w).sum(2, keepdim=True) / w.sum(2, keepdim=True)).expand_as(v)
    err = float((approx - exact).norm() / exact.norm())
    err_uniform = float((uniform - exact).norm() / exact.norm())
    assert err < 0.5 * err_uniform, (err, err_uniform)
    # and whole models with the same weights agree closely (cosine of the cell embeddings)
    torch.manual_seed(0)
    model = CellLM(preset("tiny", 60, nb_features=256)).eval()
    g, bins, m = collate(_cells(16, 60, 5))
    with torch.no_grad():
        e_perf = model.embed(g, bins, m)
        model.set_attention("exact")
        e_exact = model.embed(g, bins, m)
    assert float(torch.nn.functional.cosine_similarity(e_perf, e_exact, dim=-1).min()) > 0.9
    assert not torch.allclose(e_perf, e_exact)  # really two different attention computations


def test_projections_seeded_buffers_and_explicit_redraw() -> None:
    cfg = preset("tiny", 20)
    a, b = CellLM(cfg), CellLM(cfg)
    pa = a.layers[0].attn.proj.clone()
    assert torch.equal(pa, b.layers[0].attn.proj)  # same proj_seed -> same projections
    assert "encoder.layers.0.attn.proj" in a.state_dict()  # saved with the weights
    c = CellLM(preset("tiny", 20, proj_seed=1))
    assert not torch.equal(pa, c.layers[0].attn.proj)
    a.train()
    g, bins, m = collate(_cells(4, 20, 0, 2, 10))
    for _ in range(3):
        a(g, bins, m)
    assert torch.equal(pa, a.layers[0].attn.proj)  # training forwards never redraw
    a.redraw_projections()
    assert not torch.equal(pa, a.layers[0].attn.proj)


def test_presets_and_full_size() -> None:
    full = CellLM(preset("full", 19379))
    n = full.n_params()
    assert 51_000_000 < n["total"] < 53_000_000
    assert n["frozen"] == (19379 + 2) * 512  # frozen gene table
    cfg = preset("small", 100)
    assert CellLMConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError):
        preset("huge", 10)
    with pytest.raises(ValueError):
        CellLMConfig(vocab_size=10, attention="flash")


def test_mlm_logits_and_mean_pooling_shapes() -> None:
    model = _model("performer")
    g, b, m = collate(_cells(3, 60, 4))
    h = model(g, b, m)
    assert model.mlm_logits(h).shape == (*g.shape, 6)
    mean = model.embed(g, b, m, pooling="mean")
    manual = torch.stack([h[i, 1:int(m[i].sum())].mean(0) for i in range(3)])
    assert torch.allclose(mean, manual, atol=1e-6)
    with pytest.raises(ValueError):
        model.embed(g, b, m, pooling="max")


def test_cls_embedding_fast_path_equals_full_forward() -> None:
    # embed(pooling="cls") runs the last layer for the CLS position only: the same numbers as the full pass
    for attention in ("performer", "exact"):
        torch.manual_seed(0)
        model = CellLM(preset("tiny", 200, attention=attention)).eval()
        g, b, m = collate(_cells(6, 60, 4))
        with torch.no_grad():
            full = model(g, b, m)[:, 0]
            fast = model.embed(g, b, m, pooling="cls")
        assert torch.allclose(full, fast, atol=1e-5, rtol=1e-5)
