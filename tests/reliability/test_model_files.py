"""Reliability campaign, model files: a crafted config is refused against sane bounds and a memory estimate
before any tensor is allocated."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from campaign import assert_refused, cli, sc_counts, write_h5ad

from app.data.errors import DataError
from app.engine.celllm.model_io import config_from_file, load_model
from app.models.celllm.config import LIMITS, CellLMConfig, preset
from app.resources import CELLLM_TINY

TINY = CELLLM_TINY


def _crafted(folder: Path, **overrides: int) -> Path:
    """A model folder whose safetensors header claims another size than its (tiny) weights."""
    from app.engine.checkpoint import save_tensors

    folder.mkdir()
    cfg = {**json.loads((TINY / "config.json").read_text())["config"], **overrides}
    (folder / "vocab.txt").write_text((TINY / "vocab.txt").read_text())
    save_tensors(folder / "model.safetensors", {"gene_emb.weight": torch.zeros(4, 4)}, {"config": cfg})
    return folder


@pytest.mark.parametrize(("field", "value"), [("dim", 10**6), ("depth", 10**7), ("vocab_size", 10**9)])
def test_crafted_sizes_are_refused_before_allocation(tmp_path: Path, field: str, value: int) -> None:
    folder = _crafted(tmp_path / "m", **{field: value})
    with pytest.raises(DataError) as ei:
        load_model(folder)
    assert "not valid" in str(ei.value) and f"{value:,}" in str(ei.value) and "sane limit" in str(ei.value)


def test_a_model_too_big_for_this_machine_says_how_much_it_needs(tmp_path: Path, monkeypatch) -> None:
    import app.engine.celllm.memory as memory

    cfg = preset("full", 19379)
    monkeypatch.setattr(memory, "free_memory_bytes", lambda device: 64 << 20)  # a machine with 64 MiB free
    with pytest.raises(DataError) as ei:
        config_from_file(cfg.to_dict(), tmp_path / "model.safetensors")
    msg = str(ei.value)
    assert f"{cfg.weights_bytes() / 2**30:.1f} GiB" in msg and "0.1 GiB is free" in msg
    assert "smaller model" in ei.value.hint


def test_the_parameter_estimate_is_exact_for_every_preset() -> None:
    from app.models.celllm.model import CellLM

    for name in ("tiny", "small"):
        cfg = preset(name, 500)
        m = CellLM(cfg)
        real = sum(p.numel() for p in m.parameters()) + sum(b.numel() for b in m.buffers())
        assert cfg.n_parameters() == real
    assert preset("full", 19379).n_parameters() < LIMITS["vocab_size"] * LIMITS["dim"]
    with pytest.raises(ValueError, match="sane limit"):
        CellLMConfig(vocab_size=100, depth=LIMITS["depth"] + 1)


def test_embedding_with_a_crafted_model_is_one_clear_error(tmp_path: Path) -> None:
    X, cells, genes = sc_counts(10)
    data = write_h5ad(tmp_path / "d.h5ad", X, cells, genes)
    folder = _crafted(tmp_path / "m", dim=10**6)
    p = cli(["celllm", "embed", "--data", str(data), "--model", str(folder), "--out", str(tmp_path / "o.h5ad"),
             "--quiet"], tmp_path)
    assert_refused(p, "sane limit")
    assert not (tmp_path / "o.h5ad").exists()


@pytest.mark.parametrize("field", ["n_in", "n_nets"])
def test_a_crafted_deep_gp_model_json_is_refused_before_allocation(tmp_path: Path, field: str) -> None:
    from app.data.genotype import simulate_population
    from app.engine.gp.deep import fit_deepgs, load_deep

    geno, pheno, _ = simulate_population(n_lines=40, n_markers=60, n_causal=5, seed=1)
    y = pheno.loc[geno.samples, "trait"].to_numpy()
    model = fit_deepgs(geno, y, params={"epochs": 2}, seed=0)
    model.save(tmp_path / "m")
    assert load_deep(tmp_path / "m").predict(geno).shape == (40,)  # the real folder loads
    doc = json.loads((tmp_path / "m" / "model.json").read_text())
    doc[field] = 10**7 if field == "n_in" else 500  # asks for ~10^7-input networks, or 500 of them
    (tmp_path / "m" / "model.json").write_text(json.dumps(doc))
    with pytest.raises(DataError, match="does not match its weights file"):
        load_deep(tmp_path / "m")
