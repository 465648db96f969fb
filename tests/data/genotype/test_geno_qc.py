"""QC steps, additive and one-hot encodings on small hand-made matrices."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from app.data.genotype import MISSING, GenotypeMatrix, additive, allele_freq, marker_means, one_hot, run_qc

M = MISSING


def _geno(calls: list[list[int]], coding: str = "dosage") -> GenotypeMatrix:
    a = np.array(calls, dtype=np.int8)
    m = a.shape[1]
    markers = pd.DataFrame(
        {"id": [f"m{j}" for j in range(m)], "chrom": ["1"] * m, "pos": np.arange(m), "ref": ["A"] * m, "alt": ["G"] * m}
    )
    return GenotypeMatrix(calls=a, samples=[f"s{i}" for i in range(a.shape[0])], markers=markers, coding=coding)


def test_additive_mean_imputes_per_marker() -> None:
    g = _geno([[0, 2, M], [2, M, M], [1, 2, M], [M, 0, M]])
    x = additive(g)
    assert x.dtype == np.float32 and x.shape == (4, 3)
    assert x[3, 0] == pytest.approx(1.0)  # mean of 0, 2, 1
    assert x[1, 1] == pytest.approx(4 / 3)  # mean of 2, 2, 0
    assert (x[:, 2] == 1).all()  # no call at all -> mid value
    np.testing.assert_array_equal(additive(g, signed=True), x - 1)
    np.testing.assert_array_equal(x[:3, 0], [0, 2, 1])
    np.testing.assert_array_equal(additive(g.calls), x)  # raw arrays accepted too
    # imputation with means fitted elsewhere (training lines) instead of these lines
    train_means = marker_means(g.calls[:2])
    np.testing.assert_allclose(train_means, [1.0, 2.0, 1.0])
    x2 = additive(g, means=train_means)
    assert x2[3, 0] == 1.0 and x2[1, 1] == 2.0


def test_one_hot_channels() -> None:
    g = _geno([[0, 1, 2, M]])
    oh = one_hot(g)
    assert oh.shape == (1, 4, 4) and oh.dtype == np.float32
    np.testing.assert_array_equal(oh[0], np.eye(4, dtype=np.float32))
    assert (oh.sum(axis=-1) == 1).all()
    b = one_hot(_geno([[0, 1]], coding="binary"))  # presence/absence 1 = homozygous aa
    np.testing.assert_array_equal(b[0, 1], [0, 0, 1, 0])


def test_allele_freq_and_call_rate() -> None:
    calls = np.array([[0, 2], [2, M], [1, M], [1, 2]], dtype=np.int8)
    f, r = allele_freq(calls)
    np.testing.assert_allclose(f, [0.5, 1.0])
    np.testing.assert_allclose(r, [1.0, 0.5])


def test_run_qc_steps() -> None:
    g = _geno(
        [
            [0, 2, 0, M, 1],
            [2, 2, 0, M, 1],
            [1, 2, 0, 0, 1],
            [0, 2, 1, 2, M],
            [M, M, M, M, M],
        ]
    )
    out, rep = run_qc(g, min_call_rate=0.6, min_maf=0.05, max_sample_missing=0.5)
    names = [s["name"] for s in rep.steps]
    assert names == ["marker call rate", "sample missingness", "minor allele frequency"]
    # call rates 0.8 0.8 0.8 0.4 0.6 -> marker 3 removed
    np.testing.assert_allclose(rep.marker_call_rate, [0.8, 0.8, 0.8, 0.4, 0.6])
    assert rep.steps[0] == {
        "name": "marker call rate",
        "unit": "markers",
        "threshold": ">= 0.6",
        "before": 5,
        "after": 4,
        "removed": 1,
    }
    assert rep.steps[1]["removed"] == 1 and out.samples == ["s0", "s1", "s2", "s3"]
    # marker 1 is monomorphic (all 2) -> MAF filter removes it
    assert rep.steps[2]["removed"] == 1
    assert list(out.markers["id"]) == ["m0", "m2", "m4"]
    assert rep.maf.shape == (5,) and rep.maf[1] == 0
    assert rep.n_missing_after == 1
    text = rep.to_text()
    assert "marker call rate (>= 0.6): 5 -> 4 markers (1 removed)" in text
    assert g.n_markers == 5  # input untouched


def test_align_markers_reorders_fills_and_flips() -> None:
    from app.data.errors import DataError
    from app.data.genotype import align_markers

    g = _geno([[0, 1, 2], [2, M, 0]])
    g.markers["ref"] = ["A", "C", "G"]
    g.markers["alt"] = ["G", "T", "A"]
    # model markers: m2 (alleles swapped in the new file), m0, and one absent marker
    out, rep = align_markers(g, ["m2", "m0", "zz"], ref=["A", "A", "C"], alt=["G", "G", "T"])
    np.testing.assert_array_equal(out.calls, [[0, 0, M], [2, 2, M]])  # m2 flipped: 2 - x
    assert (rep.n_matched, rep.n_absent, rep.n_flipped) == (2, 1, 1)
    assert list(out.markers["id"]) == ["m2", "m0", "zz"] and "2 of 3" in rep.to_text()
    with pytest.raises(DataError, match="only 0 of the 2 model markers"):
        align_markers(g, ["x1", "x2"])
