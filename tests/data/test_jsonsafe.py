"""The one JSON-safety function: what every metrics.json, result.json and h5ad uns entry goes through."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from app.data.jsonsafe import dumps, json_safe, write_json


def test_nan_inf_numpy_paths_and_tuples_become_strict_json() -> None:
    obj = {"a": float("nan"), "b": np.float32(0.5), "c": np.arange(3), "d": (1, np.inf), "e": Path("x/y"),
           2: np.int64(7), "f": {np.bool_(True)}}
    out = json_safe(obj)
    assert out == {"a": None, "b": 0.5, "c": [0, 1, 2], "d": [1, None], "e": "x/y", "2": 7, "f": [True]}
    assert json.loads(dumps(obj)) == out  # strict: no NaN token ever written
    assert type(out["b"]) is float and type(out["2"]) is int


def test_h5ad_mode_drops_none_turns_records_into_columns_and_keeps_nan() -> None:
    hist = [{"epoch": 1, "loss": 0.5}, {"epoch": 2, "loss": float("nan"), "f1": 0.9}]
    out = json_safe({"history": hist, "lr": None, "mixed": [1, "a"], "tags": ["x", None]}, h5ad=True)
    assert set(out) == {"history", "mixed", "tags"}  # None cannot be stored in uns
    assert out["history"]["epoch"] == [1, 2] and math.isnan(out["history"]["loss"][1])
    assert math.isnan(out["history"]["f1"][0]) and out["mixed"] == ["1", "a"] and out["tags"] == ["x"]


def test_objects_with_a_json_form_and_dataclasses(tmp_path: Path) -> None:
    @dataclass
    class Plain:
        x: float

    class Typed:
        def to_dict(self) -> dict:
            return {"k": np.float64(1.5)}

    assert json_safe([Plain(float("inf")), Typed()]) == [{"x": None}, {"k": 1.5}]
    path = write_json(tmp_path / "m.json", {"r": np.float32(np.nan)})
    assert json.loads(path.read_text()) == {"r": None}
    assert not list(tmp_path.glob(".*tmp*"))  # written atomically: no temporary file left
