"""Every ``python -m app bench`` carries the load average and core count (app.bench.runner / _load)."""

from __future__ import annotations

import json
import sys
import types

import pytest

from app.bench import _load, runner


def _fake_bench(monkeypatch: pytest.MonkeyPatch, out: str) -> None:
    mod = types.ModuleType("app.bench.fakebench")

    def main(argv: list[str]) -> int:
        print("progress line")
        print(out if "--json" in argv else "figure: 42 cells/s")
        return 0

    mod.main = main  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "app.bench.fakebench", mod)
    monkeypatch.setattr(runner, "available", lambda: ["fakebench"])


def test_json_output_gets_machine_key(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    _fake_bench(monkeypatch, json.dumps({"bench": "fake", "cells_per_s": 42}))
    assert runner.main(["fakebench", "--json"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == "progress line"
    obj = json.loads(lines[-1])
    assert obj["cells_per_s"] == 42
    m = obj["machine"]
    assert m["cores"] == _load.usable_cores() and m["cores"] >= 1
    if _load.load_average() is not None:
        assert len(m["load_start"]) == 3 and m["load_1m_max"] >= 0 and isinstance(m["busy"], bool)


def test_table_output_gets_load_footer(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    _fake_bench(monkeypatch, "")
    assert runner.main(["fakebench"]) == 0
    out = capsys.readouterr().out
    assert "figure: 42 cells/s" in out and f"machine: {_load.usable_cores()} cores" in out


def test_busy_machine_warns(monkeypatch: pytest.MonkeyPatch) -> None:
    mon = _load.LoadMonitor(cores=2)
    mon.start_load, mon.end_load, mon.samples = (5.0, 4.0, 3.0), (6.5, 4.2, 3.1), [5.0, 6.5]
    s = mon.summary()
    assert s["busy"] and s["load_1m_max"] == 6.5 and "6.5 on 2 cores" in s["warning"]
    assert "WARNING" in mon.text()
    quiet = _load.LoadMonitor(cores=2)
    quiet.start_load, quiet.end_load, quiet.samples = (0.5, 0.4, 0.3), (0.9, 0.5, 0.3), [0.5, 0.9]
    assert not quiet.summary()["busy"] and quiet.summary()["warning"] is None


def test_non_json_last_line_is_left_alone() -> None:
    assert runner._with_machine("a\nnot json\n", {"cores": 2}) == "a\nnot json\n"
    assert json.loads(runner._with_machine('{"x": 1}\n', {"cores": 2}).strip())["machine"] == {"cores": 2}
