"""The window reads a numeric genotype matrix the way round its phenotype table says, and the Data tab's
Layout choice overrides it (the reliability campaign's genotype-layout case, through the real window)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd


def test_phenotype_join_turns_the_matrix_and_the_layout_choice_overrides(qtbot, win, idle, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    lines = [f"L{i:03d}" for i in range(60)]
    calls = rng.integers(0, 3, size=(60, 30))
    pd.DataFrame(calls, index=pd.Index(lines, name="ID"), columns=[f"snp{j}" for j in range(30)]).to_csv(
        tmp_path / "geno.csv")
    pd.DataFrame({"ID": lines, "yield": calls[:, :5].sum(axis=1) + rng.normal(0, 0.5, 60)}).to_csv(
        tmp_path / "pheno.csv", index=False)
    s = win.state
    with qtbot.waitSignal(win.datasetLoaded, timeout=60000):
        win.open_path(str(tmp_path / "geno.csv"))
    assert s.n_items == 30  # without phenotypes the shape rule decides: more lines than markers -> transposed
    win.add_phenotypes(str(tmp_path / "pheno.csv"))
    idle(win)
    assert s.geno.samples == lines and s.geno.n_markers == 30  # the join decided
    assert any("from the phenotype join" in n for n in s.summary["notes"])
    assert "60" in win.data_tab.info()["join"] and s.trait == "yield"
    combo = win.data_tab.orient_combo
    combo.setCurrentIndex(combo.findData("markers_x_samples"))
    combo.activated.emit(combo.currentIndex())  # what a user's pick sends
    idle(win)
    qtbot.waitUntil(lambda: s.geno is not None and s.geno.n_samples == 30, timeout=60000)
    assert s.orientation == "markers_x_samples"
    assert s.job_spec()[1]["orientation"] == "markers_x_samples"  # the job reads it the same way
