"""Tokeniser: expressed, matched genes only; normalise 1e4 -> log1p -> floor -> cap 5; CLS first; padding."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from app.data.errors import DataError
from app.engine.celllm.tokenize import collate, tokenize_counts, vocab_counts
from app.models.celllm.model import CLS_ID, PAD_ID, cls_bin, gene_token, pad_bin


def test_bins_follow_normalise_log1p_floor_cap() -> None:
    # one cell, 4 matched genes with total 10000: bins = floor(log1p(count)) capped at 5
    counts = np.array([[1.0, 3.0, 50.0, 9946.0, 0.0, 7.0]])
    d2v = np.array([0, 1, 2, 3, 4, -1])  # last gene unmatched: excluded from tokens AND from the total
    (ids, bins), = tokenize_counts(sp.csr_matrix(counts), d2v)
    assert ids.tolist() == [CLS_ID, gene_token(0), gene_token(1), gene_token(2), gene_token(3)]
    expected = np.minimum(np.floor(np.log1p(np.array([1.0, 3.0, 50.0, 9946.0]))), 5).astype(int)
    assert bins.tolist() == [cls_bin(6), *expected.tolist()]
    assert expected.tolist() == [0, 1, 3, 5]


def test_normalisation_scales_to_1e4() -> None:
    counts = sp.csr_matrix(np.array([[1.0, 99.0, 9900.0], [10.0, 990.0, 99000.0]]))
    a, b = tokenize_counts(counts, np.array([0, 1, 2]))
    assert a[1].tolist() == b[1].tolist()  # same proportions -> same bins whatever the depth
    assert a[1][1:].tolist() == [0, 4, 5]  # 1, 99, 9900 per 1e4 -> floor(log1p) 0, 4, 9 capped at 5


def test_max_len_keeps_top_expressed_in_vocab_order() -> None:
    counts = sp.csr_matrix(np.array([[5.0, 1.0, 9.0, 0.0, 7.0, 1.0]]))
    (ids, _), = tokenize_counts(counts, np.arange(6), max_len=3)
    assert ids.tolist() == [CLS_ID, gene_token(0), gene_token(2), gene_token(4)]
    # ties at the cut broken by a seed are reproducible
    counts = sp.csr_matrix(np.ones((1, 10)))
    first = tokenize_counts(counts, np.arange(10), max_len=4, seed=1)[0][0]
    again = tokenize_counts(counts, np.arange(10), max_len=4, seed=1)[0][0]
    assert len(first) == 5 and first.tolist() == again.tolist()


def test_duplicates_summed_and_empty_cells() -> None:
    counts = sp.csr_matrix(np.array([[2.0, 3.0, 0.0], [0.0, 0.0, 4.0]]))
    vc = vocab_counts(counts, np.array([0, 0, -1]), 2)
    assert vc.toarray().tolist() == [[5.0, 0.0], [0.0, 0.0]]
    cells = tokenize_counts(counts, np.array([0, 0, -1]))
    assert cells[0][0].tolist() == [CLS_ID, gene_token(0)]
    assert cells[1][0].tolist() == [CLS_ID]  # nothing matched: CLS alone


def test_bad_inputs() -> None:
    with pytest.raises(DataError):
        tokenize_counts(sp.csr_matrix(np.ones((2, 3))), np.array([0, 1]))
    with pytest.raises(DataError):
        tokenize_counts(sp.csr_matrix(np.array([[-1.0, 2.0]])), np.array([0, 1]))
    with pytest.raises(DataError):
        tokenize_counts(sp.csr_matrix(np.ones((1, 2))), np.array([0, 1]), max_len=0)


def test_collate_pads_to_longest() -> None:
    cells = tokenize_counts(sp.csr_matrix(np.array([[1.0, 0, 0], [1.0, 1.0, 1.0]])), np.arange(3))
    g, b, m = collate(cells)
    assert g.shape == (2, 4) and g.dtype == torch.long and m.dtype == torch.bool
    assert m.tolist() == [[True, True, False, False], [True] * 4]
    assert g[0, 2:].tolist() == [PAD_ID, PAD_ID] and b[0, 2:].tolist() == [pad_bin(6)] * 2


def test_tokens_index_take_concat_and_collate_agree_with_lists() -> None:
    from app.engine.celllm.tokenize import Tokens, length_batches

    rng = np.random.default_rng(0)
    counts = sp.csr_matrix(rng.poisson(0.5, (30, 40)).astype(np.float32))
    tok = tokenize_counts(counts, np.arange(40), max_len=12, seed=3)
    as_list = [tok[i] for i in range(len(tok))]
    assert len(tok) == 30 and [len(c[0]) for c in as_list] == tok.lengths.tolist()
    rows = np.array([5, 0, 17, 5])
    for got, want in zip(collate(tok[rows]), collate([as_list[i] for i in rows])):
        assert torch.equal(got, want)
    both = Tokens.concat([tok[:10], tok[10:]])
    assert np.array_equal(both.ids, tok.ids) and np.array_equal(both.ptr, tok.ptr)
    # training batches: every cell exactly once, batches of similar length, seeded
    bs = length_batches(tok.lengths, 4, np.random.default_rng(1), pool=2)
    assert sorted(np.concatenate(bs).tolist()) == list(range(30)) and max(len(b) for b in bs) <= 4
    assert all(np.array_equal(a, b) for a, b in zip(bs, length_batches(tok.lengths, 4, np.random.default_rng(1),
                                                                       pool=2)))
    inf = length_batches(tok.lengths, 8)
    flat = np.concatenate(inf)
    assert np.all(np.diff(tok.lengths[flat]) >= 0)  # inference: sorted by length


def test_top_genes_cut_matches_a_per_cell_sort() -> None:
    # the vectorised cut (np.partition per block) against the definition, cell by cell, for many shapes
    rng = np.random.default_rng(5)
    dense = rng.poisson(rng.gamma(0.5, 2.0, (200, 80))).astype(np.float32)
    for max_len in (1, 7, 30):
        tok = tokenize_counts(sp.csr_matrix(dense), np.arange(80), max_len=max_len)
        for r in range(200):
            row = dense[r]
            nz = np.flatnonzero(row > 0)
            want = np.sort(nz[np.lexsort((nz, -row[nz]))][:max_len])  # most expressed, ties by gene order
            assert tok[r][0][1:].tolist() == (want + 2).tolist()


@pytest.mark.parametrize("mapping", ["in-order", "permuted", "some-unknown"])
def test_vocab_counts_reindexes_without_touching_the_input(mapping: str) -> None:
    rng = np.random.default_rng(4)
    dense = rng.integers(0, 3, (30, 12)).astype(np.float32)
    x = sp.csr_matrix(dense)
    x.data[::5] = 0  # explicit stored zeros: dropped from the result, kept in the input
    before = (x.data.copy(), x.indices.copy(), x.indptr.copy())
    d2v = {"in-order": np.arange(12), "permuted": rng.permutation(12),
           "some-unknown": np.where(np.arange(12) % 4 == 0, -1, rng.permutation(12))}[mapping]
    out = vocab_counts(x, d2v, vocab_size=12)
    want = np.zeros((30, 12), np.float32)
    keep = d2v >= 0
    want[:, d2v[keep]] = x.toarray()[:, keep]
    np.testing.assert_array_equal(out.toarray(), want)
    assert out.has_canonical_format and (out.data != 0).all()
    for a, b in zip(before, (x.data, x.indices, x.indptr)):
        np.testing.assert_array_equal(a, b)


def test_tokenising_in_threads_gives_the_same_tokens(monkeypatch: pytest.MonkeyPatch) -> None:
    from app.engine.celllm import tokenize

    monkeypatch.setattr(tokenize, "PARALLEL_MIN_CELLS", 10)
    x = sp.random(203, 80, density=0.3, format="csr", random_state=5, dtype=np.float32)
    x.data = np.ceil(x.data * 20)
    d2v = np.arange(80)[::-1].copy()
    one = tokenize_counts(x, d2v, max_len=15)
    three = tokenize_counts(x, d2v, max_len=15, workers=3)
    for a, b in ((one.ids, three.ids), (one.bins, three.bins), (one.ptr, three.ptr)):
        np.testing.assert_array_equal(a, b)
    assert one.lengths.max() == 16  # the cut did happen
