"""``python -m app inspect``: text and JSON for single-cell, genotype and phenotype files; clean errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from app.cli import main

REPO = Path(__file__).resolve().parents[2]
KEYS = {"kind", "n_obs", "n_vars", "value_type", "id_type", "columns", "problems"}
GENES = [f"{g}{k}" for k in range(10) for g in ("CD3E", "LYZ", "NKG7", "GNLY", "MS4A1", "CD14")]


def _h5ad(path: Path, n_cells: int = 60) -> Path:
    rng = np.random.default_rng(0)
    X = sp.csr_matrix(rng.poisson(0.5, size=(n_cells, len(GENES))).astype(np.float32))
    obs = pd.DataFrame({"cell_type": pd.Categorical(["T", "B", "NK"] * (n_cells // 3))},
                       index=[f"cell{i}" for i in range(n_cells)])
    ad.AnnData(X=X, obs=obs, var=pd.DataFrame(index=GENES)).write_h5ad(path)
    return path


def _json(capsys: pytest.CaptureFixture, argv: list[str]) -> dict:
    assert main(argv) == 0
    out = capsys.readouterr().out
    return json.loads(out)  # exactly one JSON object


def test_singlecell_json_and_text(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    p = _h5ad(tmp_path / "d.h5ad")
    d = _json(capsys, ["inspect", str(p), "--json"])
    assert d.keys() >= KEYS
    assert (d["kind"], d["n_obs"], d["n_vars"], d["value_type"], d["id_type"]) == \
        ("singlecell", 60, 60, "counts", "human_symbol")
    assert d["columns"] == {"cell_type": {"B": 20, "NK": 20, "T": 20}}
    assert any("Only 60 genes" in p for p in d["problems"])
    assert main(["inspect", str(p)]) == 0
    text = capsys.readouterr().out
    assert "60 cells x 60 genes" in text and "raw counts" in text and "cell_type: " in text and "B 20" in text


def test_inspect_big_h5ad_stays_backed(tmp_path: Path, capsys: pytest.CaptureFixture,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    import app.data.singlecell.read as rd
    import app.data.singlecell.summary as sm

    p = _h5ad(tmp_path / "big.h5ad", n_cells=300)
    seen = {}
    real = rd.read_singlecell

    def spy(*a, **kw):
        seen["adata"] = real(*a, **kw)
        seen["backed_arg"] = kw.get("backed")
        return seen["adata"]

    def no_load(*a, **kw):
        raise AssertionError("X was loaded into memory")

    monkeypatch.setattr("app.data.singlecell.read_singlecell", spy)
    monkeypatch.setattr(ad.AnnData, "to_memory", no_load)
    monkeypatch.setattr(sm, "_materialise", no_load)
    monkeypatch.setattr("app.data.singlecell.detect.BLOCK_ROWS", 64)
    d = _json(capsys, ["inspect", str(p), "--json"])
    a = seen["adata"]
    assert seen["backed_arg"] is True and a.isbacked
    assert not isinstance(a.X, np.ndarray | sp.spmatrix)  # still an on-disk dataset
    assert d["n_obs"] == 300 and d["summary"]["backed"] is True


def test_csv_with_labels_and_orientation(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    rng = np.random.default_rng(1)
    cells = [f"cell{i}" for i in range(12)]
    df = pd.DataFrame(rng.poisson(1.0, size=(len(GENES), 12)), index=GENES, columns=cells)
    df.to_csv(tmp_path / "m.csv")
    pd.DataFrame({"cell": cells[:10], "type": ["a", "b"] * 5}).to_csv(tmp_path / "lab.csv", index=False)
    d = _json(capsys, ["inspect", str(tmp_path / "m.csv"), "--labels", str(tmp_path / "lab.csv"), "--json",
                       "--orientation", "genes_x_cells"])
    assert (d["n_obs"], d["n_vars"]) == (12, 60)
    assert d["columns"]["type"] == {"a": 5, "b": 5, "(missing)": 2}
    assert any("2 cells have no row in lab.csv" in p for p in d["problems"])


def test_bad_inputs_exit_nonzero_without_traceback(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "empty.h5ad").write_bytes(b"")
    (tmp_path / "text.csv").write_text(",c1,c2\nCD3E,1,2\nLYZ,x,2\n" + "".join(f"G{i},1,2\n" for i in range(60)))
    for path, msg in ((tmp_path / "none.h5ad", "does not exist"), (tmp_path / "empty.h5ad", "empty"),
                      (tmp_path / "data.xyz", "unknown file type")):
        if path.name == "data.xyz":
            path.write_text("hello")
        assert main(["inspect", str(path)]) == 2
        err = capsys.readouterr().err
        assert msg in err and "What to do:" in err and "Traceback" not in err
    proc = subprocess.run([sys.executable, "-m", "app", "inspect", str(tmp_path / "none.h5ad"), "--json"],
                          cwd=REPO, capture_output=True, text=True)
    assert proc.returncode != 0 and "does not exist" in proc.stderr and "Traceback" not in proc.stderr


def test_genotype_numeric_with_pheno(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    rng = np.random.default_rng(2)
    samples = [f"line{i}" for i in range(30)]
    g = pd.DataFrame(rng.integers(0, 3, size=(30, 80)), index=samples, columns=[f"m{i}" for i in range(80)])
    g.iloc[0, 0] = -9
    g.to_csv(tmp_path / "geno.csv")
    pd.DataFrame({"yield": np.r_[rng.random(27), np.nan]}, index=samples[2:30]).to_csv(tmp_path / "ph.csv")
    d = _json(capsys, ["inspect", str(tmp_path / "geno.csv"), "--pheno", str(tmp_path / "ph.csv"), "--json"])
    assert d.keys() >= KEYS
    assert (d["kind"], d["n_obs"], d["n_vars"]) == ("genotype", 30, 80)
    assert d["join"]["n_both"] == 28 and d["join"]["n_geno_only"] == 2
    assert d["columns"]["yield"]["n"] == 27 and d["columns"]["yield"]["missing"] == 1
    assert any("2 genotyped samples have no phenotype row" in p for p in d["problems"])
    assert main(["inspect", str(tmp_path / "geno.csv")]) == 0
    assert "30 samples x 80 markers" in capsys.readouterr().out


def test_phenotype_table(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    pd.DataFrame({"height": [1.0, 2.5, np.nan]}, index=["a", "b", "c"]).to_csv(tmp_path / "t.csv")
    d = _json(capsys, ["inspect", str(tmp_path / "t.csv"), "--json"])
    assert d["kind"] == "phenotype" and d["n_obs"] == 3 and d["columns"]["height"]["missing"] == 1


@pytest.mark.shared_data
def test_shared_singlecell_and_genotype(shared_data: Path, capsys: pytest.CaptureFixture) -> None:
    d = _json(capsys, ["inspect", str(shared_data / "singlecell" / "mouse_plaque_smc_mtx"), "--json"])
    assert (d["n_obs"], d["n_vars"], d["id_type"]) == (4827, 160, "mouse_symbol")
    g = shared_data / "genotype" / "maize282_hapmap"
    d = _json(capsys, ["inspect", str(g / "mdp_genotype.hmp.txt"), "--pheno", str(g / "mdp_traits.txt"), "--json"])
    assert d["kind"] == "genotype" and d["n_obs"] == 281 and d["n_vars"] == 3093
    assert {"EarHT", "dpoll", "EarDia"} <= set(d["columns"])


def test_vocab_match_report(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    p = _h5ad(tmp_path / "d.h5ad")
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "vocab.txt").write_text("\n".join(["cd3e0", "LYZ0", "NOT_IN_DATA", ""]))
    d = _json(capsys, ["inspect", str(p), "--vocab", str(tmp_path / "model"), "--json"])
    gm = d["gene_match"]
    assert gm["n_matched"] == 2 and gm["how"]["case"] == 1 and gm["how"]["exact"] == 1
    assert gm["n_unmatched"] == 58 and gm["vocab_coverage"] == pytest.approx(2 / 3)
    assert main(["inspect", str(p), "--vocab", str(tmp_path / "nowhere")]) == 2
    assert "vocab.txt" in capsys.readouterr().err
