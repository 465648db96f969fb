"""Repeated evaluation: seeded splits (with a test pool), label subsampling, the from-scratch control and the
summary written by ``evaluate_repeats`` (a real fine-tune of a small shared-data subsample, CPU, 1 epoch)."""

from __future__ import annotations

import json
from pathlib import Path

import anndata as ad
import numpy as np
import pytest
import torch

from app.engine.celllm.evaluate import evaluate_repeats, random_init_model, repeat_splits, subsample_train
from app.engine.celllm.finetune import stratified_subsample
from app.engine.celllm.heldout import held_out

torch.set_num_threads(1)


def _labels() -> np.ndarray:
    return np.array(["A"] * 60 + ["B"] * 30 + ["C"] * 10)


def test_repeat_splits_are_seeded_disjoint_and_differ() -> None:
    y = _labels()
    s1, s2 = repeat_splits(y, 2, seed=3)
    again = repeat_splits(y, 1, seed=3)[0]
    assert np.array_equal(s1.test, again.test) and (s1.seed, s2.seed) == (3, 4)
    assert not np.array_equal(s1.test, s2.test)
    for s in (s1, s2):
        parts = [set(s.train), set(s.val), set(s.test)]
        assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
        assert sum(map(len, parts)) == len(y)
        assert set(y[s.test]) == {"A", "B", "C"}  # stratified: every class is tested


def test_repeat_splits_draw_test_cells_from_the_pool_only() -> None:
    y = _labels()
    pool = held_out([f"cell{i}" for i in range(len(y))])
    assert 0.3 < pool.mean() < 0.7
    for s in repeat_splits(y, 3, seed=0, test_pool=pool):
        assert pool[s.test].all() and len(s.test) > 0
        assert set(y[s.test]) == {"A", "B", "C"}
        assert len(set(s.train) | set(s.val) | set(s.test)) == len(y)


def test_held_out_depends_on_the_id_only() -> None:
    ids = ["AAAC-1", "AAAG-1", "x", " x "]
    m = held_out(ids)
    assert m.tolist() == held_out(list(reversed(ids)))[::-1].tolist()
    assert m[2] == m[3]  # stripped


def test_subsample_train_keeps_every_class() -> None:
    y = _labels()
    train = np.arange(len(y))
    small = subsample_train(y, train, 0.01, seed=0)
    assert set(y[small]) == {"A", "B", "C"} and len(small) == 3
    half = subsample_train(y, train, 0.5, seed=0)
    assert [int((y[half] == c).sum()) for c in "ABC"] == [30, 15, 5]
    assert np.array_equal(subsample_train(y, train, 1.0, seed=0), train)


def test_random_init_model_keeps_architecture_not_weights(tmp_path: Path) -> None:
    from app.engine.celllm.model_io import load_model

    m0, c0, v0, _ = load_model(Path(random_init_model(None, tmp_path / "a", seed=1)))
    m1, c1, v1, _ = load_model(Path(random_init_model(None, tmp_path / "b", seed=2)))
    again, _, _, _ = load_model(Path(random_init_model(None, tmp_path / "c", seed=1)))
    assert c0 == c1 and v0 == v1
    k = "gene_emb.weight" if "gene_emb.weight" in m0.state_dict() else next(iter(m0.state_dict()))
    assert not torch.equal(m0.state_dict()[k], m1.state_dict()[k])  # another seed, other weights
    assert torch.equal(m0.state_dict()[k], again.state_dict()[k])  # same seed, same weights


@pytest.mark.shared_data
def test_evaluate_repeats_summary(shared_data: Path, tmp_path: Path) -> None:
    a = ad.read_h5ad(shared_data / "singlecell/pbmc8k_hvg200_h5ad/pbmc.h5ad")
    a = a[stratified_subsample(a.obs["cell_type"].astype(str).to_numpy(), 150, 0)].copy()
    path = tmp_path / "small.h5ad"
    a.write_h5ad(path)
    run = tmp_path / "eval"
    res = evaluate_repeats({"data": str(path), "label_key": "cell_type", "run_dir": str(run), "repeats": 2,
                            "scratch": True, "label_fractions": ["0.25"], "epochs": 1, "max_len": 64,
                            "device": "cpu", "threads": 1})
    m = json.loads((run / "metrics.json").read_text())
    assert m["methods"].keys() == {"celllm", "baseline", "scratch"}
    for meth in m["methods"].values():
        assert meth["macro_f1"]["n"] == 2 and 0 <= meth["macro_f1"]["mean"] <= 1
    d = m["differences"]["celllm_minus_baseline"]["macro_f1"]
    f1 = {k: [r["macro_f1"] for r in m["rows"] if r["method"] == k and r["fraction"] == 1.0]
          for k in ("celllm", "baseline")}
    assert d["mean"] == pytest.approx(np.mean(np.subtract(f1["celllm"], f1["baseline"])))
    assert d["low"] <= d["mean"] <= d["high"]
    assert "CellLM" in m["verdicts"]["celllm_vs_scratch"]
    curve = json.loads((run / "label_efficiency.json").read_text())
    assert [c["fraction"] for c in curve] == [0.25, 1.0]
    rows = (run / "repeats.csv").read_text().splitlines()
    assert len(rows) == 1 + 2 * 2 * 3  # header + repeats x fractions x methods
    # the methods of one repeat saw the same test cells
    s0 = [json.loads((run / "runs" / t / "split.json").read_text())["test"] for t in ("r0_celllm", "r0_scratch")]
    assert s0[0] == s0[1]
    assert res["repeats"] == 2


def test_sub_runs_have_no_live_map_unless_asked_also_from_the_command_line() -> None:
    """The command line (and the window) hand the job a dict that carries every setting, so "live_cells absent
    from the dict" never happened there: every sub-run of ``celllm finetune --repeats K`` embedded a 5,000-cell
    live map at every epoch. The default is now a typed one (EvaluateConfig.live_cells = 0)."""
    import dataclasses

    from app.cli import build_parser
    from app.cli.options import config_from_args
    from app.engine.celllm.evaluate import OWN_SETTINGS, sub_run_settings
    from app.engine.celllm.job_configs import EvaluateConfig, FinetuneConfig

    argv = ["celllm", "finetune", "--data", "cells.h5ad", "--label-key", "cell_type", "--out", "run",
            "--repeats", "2"]
    cli = config_from_args(EvaluateConfig, build_parser().parse_args(argv))
    as_job_gets_it = EvaluateConfig.coerce(cli.to_dict())  # what the job process receives
    assert "live_cells" in cli.to_dict()
    assert sub_run_settings(as_job_gets_it)["live_cells"] == 0
    asked = config_from_args(EvaluateConfig, build_parser().parse_args([*argv, "--live-cells", "300"]))
    assert sub_run_settings(asked)["live_cells"] == 300
    # one fine-tune (no --repeats) keeps its own default
    one = config_from_args(FinetuneConfig, build_parser().parse_args(argv[:-2]))
    assert one.live_cells == 5000
    # every other fine-tuning setting passes through unchanged
    shared = sub_run_settings(EvaluateConfig.from_dict({"data": "x", "run_dir": "r", "lr": 3e-4, "pooling": "mean"}))
    assert shared.keys() == {f.name for f in dataclasses.fields(FinetuneConfig)} - OWN_SETTINGS
    assert (shared["lr"], shared["pooling"]) == (3e-4, "mean")
    FinetuneConfig.from_dict({**shared, "data": "x", "run_dir": "r"})  # a valid fine-tuning config
