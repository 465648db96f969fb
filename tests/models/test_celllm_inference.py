"""FastCellLM (the inference forward) gives CellLM.embed's embeddings within 1e-5, and infer() with it, in any
batching and with several worker threads, gives the reference path's embeddings and probabilities."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from app.engine.celllm.embed import LoadedModel, infer
from app.engine.celllm.tokenize import Tokens, collate, length_batches, pad_values, token_batches
from app.models.celllm import CellLM, preset
from app.models.celllm.heads import ClassifierHead
from app.models.celllm.inference import FastCellLM

torch.set_num_threads(1)
VOCAB = 300


def _cells(n: int, seed: int, hi: int = 120) -> Tokens:
    """Cells of 0..hi-1 genes (very different lengths: batches are padded), CLS first, bins 0..5."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        k = int(rng.integers(0, hi))
        genes = np.sort(rng.choice(VOCAB, k, replace=False)) + 2
        out.append((np.concatenate([[1], genes]), np.concatenate([[6], rng.integers(0, 6, k)])))
    return Tokens.from_cells(out)


def _model(seed: int = 0, **overrides: object) -> CellLM:
    torch.manual_seed(seed)
    m = CellLM(preset("tiny", VOCAB, **overrides))
    with torch.no_grad():  # embeddings larger than the init: attention far from uniform (a stricter test)
        m.gene_emb.weight.mul_(25)
        m.bin_emb.weight.mul_(25)
    return m.eval()


def _reference(model: CellLM, tok: Tokens, pooling: str) -> np.ndarray:
    """CellLM.embed, one cell at a time (no padding at all)."""
    with torch.inference_mode():
        return np.concatenate([model.embed(*collate(tok.take([i])), pooling=pooling).numpy()
                               for i in range(len(tok))])


@pytest.mark.parametrize("overrides", [{}, {"depth": 3}, {"heads": 6, "dim_head": 8}, {"depth": 1}],
                         ids=["tiny", "depth3", "6heads-einsum", "depth1"])
@pytest.mark.parametrize("pooling", ["cls", "mean"])
@pytest.mark.parametrize("min_reuse", [0.0, 1e9], ids=["pair-table", "per-token"])
def test_fast_forward_matches_reference(overrides: dict, pooling: str, min_reuse: float) -> None:
    model = _model(**overrides)
    tok = _cells(40, seed=1)
    ref = _reference(model, tok, pooling)
    fast = FastCellLM(model)
    codes = fast.prepare(tok.ids, tok.bins, min_reuse=min_reuse)
    assert (fast.table is not None) == (min_reuse == 0.0)
    out = np.empty_like(ref)
    for rows in length_batches(np.random.default_rng(2).permutation(tok.lengths), 16):  # padded batches
        c, m = pad_values(codes, tok.ptr, rows)
        assert not bool(m.all())  # the test does see padding
        out[rows] = fast.embed(c, m, pooling).numpy()
    np.testing.assert_allclose(out, ref, rtol=0, atol=1e-5)
    assert np.abs(ref).max() > 0.5  # not a trivially small embedding


def test_exact_attention_is_not_taken_over() -> None:
    assert not FastCellLM.supports(_model(attention="exact"))
    with pytest.raises(ValueError, match="Performer"):
        FastCellLM(_model(attention="exact"))


@pytest.mark.parametrize("attention", ["performer", "exact"])
def test_infer_threads_and_batches_match_reference(attention: str) -> None:
    model = _model(attention=attention)
    head = ClassifierHead(model.config.dim, 4).eval()
    tok = _cells(90, seed=3)
    lm = LoadedModel(model, model.config, [], {}, None, head=head, classes=list("abcd"))  # type: ignore[arg-type]
    ref = _reference(model, tok, "cls")
    with torch.inference_mode():
        ref_p = torch.softmax(head(torch.from_numpy(ref)), -1).numpy()
    before = torch.get_num_threads()
    for threads, bs in ((1, 7), (2, 64), (3, 5)):
        torch.set_num_threads(threads)
        try:
            emb, probs = infer(lm, tok, torch.device("cpu"), bs)
            assert torch.get_num_threads() == threads  # the workers' one-thread setting is undone
        finally:
            torch.set_num_threads(before)
        np.testing.assert_allclose(emb, ref, rtol=0, atol=1e-5)
        np.testing.assert_allclose(probs, ref_p, rtol=0, atol=1e-5)


def test_token_batches_respect_both_budgets() -> None:
    lengths = np.array([5, 100, 3, 50, 50, 7, 400, 2])
    batches = token_batches(lengths, max_cells=3, max_tokens=120)
    assert sorted(np.concatenate(batches).tolist()) == list(range(len(lengths)))  # every cell once
    for b in batches:
        assert len(b) <= 3 and (len(b) == 1 or len(b) * lengths[b].max() <= 120)
    assert [lengths[b].tolist() for b in batches] == [[2, 3, 5], [7, 50], [50], [100], [400]]
