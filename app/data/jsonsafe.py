"""The one JSON-safety function: every metrics.json, result.json, run.json, ``--json`` print and h5ad ``uns``
entry goes through ``json_safe``.

- NaN and +-Inf become None (``json.dumps`` would write the invalid tokens ``NaN``/``Infinity``);
- numpy scalars and arrays become Python numbers and lists, ``Path`` becomes text, tuples and sets lists,
  objects with a ``to_dict()`` (typed results, job configs) that dict, other dataclasses their fields,
  anything else its ``str``;
- ``h5ad=True`` makes what AnnData can store in ``uns``: no None (dropped from dicts and lists), lists of
  records turned into columns, mixed-type lists as text, and non-finite numbers kept as NaN (a float h5ad
  stores; None it cannot).
"""

from __future__ import annotations

import dataclasses
import enum
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from app.data.atomic import write_text_atomic


def json_safe(obj: Any, *, h5ad: bool = False) -> Any:
    """A copy of ``obj`` that ``json.dumps(..., allow_nan=False)`` accepts (``h5ad``: that ``uns`` accepts)."""
    to_dict = getattr(obj, "to_dict", None)
    if callable(to_dict) and not isinstance(obj, type):  # typed results and configs know their JSON form
        obj = to_dict()
    elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        obj = {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
    elif isinstance(obj, Mapping) and not isinstance(obj, dict):
        obj = dict(obj)
    if isinstance(obj, dict):
        out = {str(k): json_safe(v, h5ad=h5ad) for k, v in obj.items()}
        return {k: v for k, v in out.items() if v is not None} if h5ad else out
    if isinstance(obj, np.ndarray):
        return json_safe(obj.tolist(), h5ad=h5ad)
    if isinstance(obj, list | tuple | set | frozenset):
        items = [json_safe(v, h5ad=h5ad) for v in obj]
        return _h5ad_list(items) if h5ad else items
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, enum.Enum):
        obj = obj.value
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else (float("nan") if h5ad else None)
    if obj is None or isinstance(obj, bool | int | str):
        return obj
    if isinstance(obj, Path):
        return str(obj)
    return str(obj)


def _h5ad_list(items: list[Any]) -> Any:
    items = [v for v in items if v is not None]
    if items and all(isinstance(v, dict) for v in items):
        # records (e.g. the metric history) -> columns: h5ad stores arrays, not lists of dicts
        keys = list(dict.fromkeys(k for v in items for k in v))
        return {k: [v.get(k, float("nan")) for v in items] for k in keys}
    if items and len({type(v) for v in items}) > 1 and not all(isinstance(v, int | float) for v in items):
        return [str(v) for v in items]  # mixed types cannot form one array
    return items


def dumps(obj: Any, indent: int | None = None, **kw: Any) -> str:
    """``json.dumps`` of the JSON-safe copy (strict: never writes NaN)."""
    return json.dumps(json_safe(obj), indent=indent, allow_nan=False, **kw)


def write_json(path: str | Path, obj: Any, indent: int | None = 2) -> Path:
    """Write ``obj`` as JSON atomically (temp file, then rename); returns the path."""
    path = Path(path)
    write_text_atomic(path, dumps(obj, indent=indent))
    return path


__all__ = ["dumps", "json_safe", "write_json"]
