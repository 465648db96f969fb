"""``python -m app PATH`` and ``omicslab PATH`` open the window on PATH; commands still reach the CLI."""

from __future__ import annotations

from pathlib import Path

import pytest

import app.__main__ as entry


@pytest.fixture
def gui_calls(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    calls: list[list[str]] = []
    import app.ui.launch

    monkeypatch.setattr(app.ui.launch, "main", lambda argv: calls.append(list(argv)) or 0)
    return calls


def test_a_data_path_opens_the_window_on_it(tmp_path: Path, gui_calls: list[list[str]]) -> None:
    folder = tmp_path / "tenx"
    folder.mkdir()
    for argv in ([str(tmp_path / "pbmc.h5ad")], [str(folder)], ["data.h5ad", "--smoke"], ["gui", "x.h5ad"]):
        assert entry.main(argv) == 0
    assert gui_calls == [[str(tmp_path / "pbmc.h5ad")], [str(folder)], ["data.h5ad", "--smoke"], ["x.h5ad"]]


def test_commands_are_not_mistaken_for_paths(gui_calls: list[list[str]], capsys: pytest.CaptureFixture) -> None:
    for word in ("inspect", "celllm", "gp", "runs", "bench", "--help"):
        assert not entry.looks_like_path(word)
    with pytest.raises(SystemExit):
        entry.main(["--version"])
    assert entry.main(["gp"]) == 2 and gui_calls == []  # the CLI's help for a bare command
    assert "cv" in capsys.readouterr().out
