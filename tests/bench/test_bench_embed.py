"""bench embed: model rows (reference Performer, FastCellLM, exact) and end-to-end rows for each thread setting."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.bench import embed as bench_embed


def test_model_and_end_to_end_rows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("OMICSLAB_BENCH_CACHE", str(tmp_path))  # the synthetic file goes here, not /tmp
    assert bench_embed.main(["--json", "--rows", "model,end_to_end", "--presets", "tiny", "--cells-tiny", "24",
                             "--devices", "cpu", "--e2e-cells", "300", "--e2e-genes", "50"]) == 0
    rows = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["rows"]
    e2e = [r for r in rows if r.get("row") == "end_to_end"]
    assert [r["threads"] for r in e2e] == [1, 2]
    for r in e2e:
        assert r["n_cells"] == 300 and r["end_to_end_cells_per_s"] > 0
        assert set(r["stages_s"]) == {"read", "tokenise", "infer", "write", "other"}
    model = [r for r in rows if "row" not in r]
    assert [r["attention"] for r in model] == ["performer", "performer (FastCellLM)", "exact"]
    assert all(r["cells_per_s"] > 0 and r["n_cells"] == 24 for r in model)
