"""Test-wide settings: headless Qt, the shared-data marker, small thread counts."""

from __future__ import annotations

import multiprocessing as mp
import os
import time
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


@pytest.fixture
def no_child_left_behind():
    """The test must leave no job process running (the jobs tests use it: ``usefixtures``)."""
    yield
    end = time.monotonic() + 10
    while mp.active_children() and time.monotonic() < end:
        time.sleep(0.05)
    left = mp.active_children()
    for p in left:
        p.kill()
    assert not left, f"job processes left running: {left}"


@pytest.fixture
def runs_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run folders under the test's tmp_path (``OMICSLAB_RUNS_DIR``), and job children at normal priority:
    they run at nice 5 for the window's sake, which on a shared test box only starves them."""
    monkeypatch.setenv("OMICSLAB_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("OMICSLAB_JOB_NICE", "0")
    return tmp_path / "runs"


@pytest.fixture
def one_blas_thread():
    """OpenBLAS threads spin on a busy 2-core machine (eigh 0.1 s -> 8 s); numpy may be imported before this
    file sets OMP_NUM_THREADS, so limit the pool for the test."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        yield
