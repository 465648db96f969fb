"""The wheel carries everything OmicsLab reads at run time, and the code finds it through app.resources."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

import app
from app import resources
from app.data.genotype.population import DEMO_FILES

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[zipfile.ZipFile]:
    """A wheel built from a clean copy of the sources (an in-tree build/ could carry stale files)."""
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    shutil.copytree(REPO / "app", src / "app", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    out = tmp_path_factory.mktemp("wheel")
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                           "-q", "-w", str(out), str(src)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (whl,) = out.glob("omicslab-*.whl")
    with zipfile.ZipFile(whl) as zf:
        yield zf


def _shipped(folder: Path) -> dict[str, int]:
    """Wheel member name -> size of every file under a resource folder of the source tree."""
    base = Path(app.__file__).resolve().parents[1]
    return {p.relative_to(base).as_posix(): p.stat().st_size for p in folder.rglob("*")
            if p.is_file() and "__pycache__" not in p.parts}


def test_wheel_has_model_vocab_icons_and_demo(wheel: zipfile.ZipFile) -> None:
    sizes = {i.filename: i.file_size for i in wheel.infolist()}
    model = _shipped(resources.CELLLM_TINY)
    for name in ("model.safetensors", "vocab.txt", "config.json"):  # what load_model reads
        assert f"app/resources/models/celllm-tiny/{name}" in model
    icons = _shipped(resources.ICONS)
    assert "app/resources/icons/omicslab.svg" in icons
    demo = {f"app/resources/demo/genotype/{n}": (resources.GENOTYPE_DEMO / n).stat().st_size for n in DEMO_FILES}
    for member, size in (model | icons | demo).items():
        assert sizes.get(member) == size, f"{member}: {sizes.get(member)} bytes in the wheel, {size} in the source"


def test_wheel_has_the_omicslab_commands(wheel: zipfile.ZipFile) -> None:
    (ep,) = [n for n in wheel.namelist() if n.endswith(".dist-info/entry_points.txt")]
    text = wheel.read(ep).decode()
    assert re.search(r"^\[console_scripts\]\nomicslab = app\.__main__:main$", text, re.M), text
    assert re.search(r"^\[gui_scripts\]\nomicslab-gui = app\.__main__:main$", text, re.M), text


def test_resources_live_inside_the_package() -> None:
    pkg = Path(app.__file__).resolve().parent
    for folder in (resources.CELLLM_TINY, resources.ICONS, resources.GENOTYPE_DEMO):
        assert folder.is_dir() and folder.resolve().is_relative_to(pkg), folder


def test_no_module_builds_a_path_into_the_checkout() -> None:
    """Run-time files come from app.resources, never from a path relative to the checkout: such a path
    works in a source tree and breaks once installed."""
    bad = re.compile(r"""parents\[\d\]\s*/\s*["']resources["']|["']resources["']\s*/\s*["'](models|icons|demo)""")
    pkg = Path(app.__file__).resolve().parent
    hits = [f"{p.relative_to(pkg)}:{i}" for p in pkg.rglob("*.py") for i, line in
            enumerate(p.read_text(encoding="utf-8").splitlines(), 1) if bad.search(line)]
    assert not hits, hits
