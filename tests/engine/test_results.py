"""Typed job results: their JSON form round-trips, unknown keys survive in ``extra``, and they read like the
JSON files they serialise to."""

from __future__ import annotations

import json

import numpy as np

from app.data.jsonsafe import dumps
from app.engine.registry import JOBS
from app.engine.results import FinetuneResult, GPCVResult, JobResult


def test_every_job_has_a_typed_result() -> None:
    for entry in JOBS.values():
        assert issubclass(entry.result, JobResult) and entry.result is not JobResult, entry.name


def test_round_trip_keeps_fields_and_extra_keys() -> None:
    d = {"test": {"accuracy": np.float64(0.9)}, "classes": ["B", "T"], "n_test": 10, "live": {"k": 1},
         "best_val_macro_f1": float("nan")}
    r = FinetuneResult.from_dict(d)
    assert r.n_test == 10 and r.classes == ["B", "T"] and r.extra == {"live": {"k": 1}}
    back = json.loads(dumps(r))
    assert back["test"] == {"accuracy": 0.9} and back["live"] == {"k": 1} and back["best_val_macro_f1"] is None
    assert FinetuneResult.from_dict(back).to_dict() == back


def test_a_result_reads_like_its_json() -> None:
    r = GPCVResult.from_dict({"trait": "E1", "folds": [{"model": "GBLUP", "pearson": 0.5}], "custom": 3})
    assert r["trait"] == "E1" and r.get("custom") == 3 and "folds" in r and r.get("missing") is None
    assert r["folds"][0]["pearson"] == 0.5 and dict(r)["custom"] == 3
    assert "fold_rows" not in r.to_dict()  # one name for the per-fold rows
