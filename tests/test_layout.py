"""The tests mirror the package: each test folder is a part of ``app/`` (plus the cross-layer reliability
campaign), and no two test files share a name (pytest imports them by name: a repeated name is a collection
error that hides every test of the second file)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

TESTS = Path(__file__).resolve().parent
APP = TESTS.parent / "app"
CAMPAIGNS = {"reliability"}


def test_test_folders_mirror_app() -> None:
    for folder in sorted(p for p in TESTS.rglob("*") if p.is_dir() and p.name != "__pycache__"):
        rel = folder.relative_to(TESTS)
        if rel.parts[0] in CAMPAIGNS:
            continue
        assert (APP / rel).is_dir(), f"tests/{rel} has no app/{rel} to mirror"


def test_test_file_names_are_unique() -> None:
    names = Counter(p.name for p in TESTS.rglob("test_*.py"))
    assert not [n for n, k in names.items() if k > 1], names.most_common(3)
