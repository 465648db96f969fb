"""Test-wide settings: headless Qt, the shared-data marker, small thread counts."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # before any Qt import
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("NUMBA_NUM_THREADS", "1")

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("OMICSLAB_SHARED_DATA", REPO.parent / "shared" / "data"))
REQUIRE_SHARED = os.environ.get("OMICSLAB_REQUIRE_SHARED") == "1"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``shared_data`` skip with a clear reason when ../shared/data is absent (a user's
    fresh clone) and fail when CI set OMICSLAB_REQUIRE_SHARED=1."""
    if SHARED_DATA.is_dir():
        return
    if REQUIRE_SHARED:
        raise pytest.UsageError(
            f"OMICSLAB_REQUIRE_SHARED=1 but the shared test data is missing at {SHARED_DATA}; "
            "CI must run with ../shared/data beside the checkout."
        )
    skip = pytest.mark.skip(reason=f"needs the shared test data at {SHARED_DATA} (absent in a fresh clone)")
    for item in items:
        if "shared_data" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path of ../shared/data (tests using it must carry ``@pytest.mark.shared_data``)."""
    return SHARED_DATA
