"""``omicslab --install-desktop``: a valid menu entry, its icon and the .h5ad MIME type, all removable."""

from __future__ import annotations

import configparser
import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from app.resources import ICONS
from app.ui import desktop_entry

REPO = Path(__file__).resolve().parents[2]


def _entry(path: Path) -> configparser.SectionProxy:
    cp = configparser.ConfigParser(interpolation=None)
    cp.optionxform = str  # desktop keys are case-sensitive
    cp.read_string(path.read_text(encoding="utf-8"))
    return cp["Desktop Entry"]


def test_install_writes_entry_icon_and_mime_type(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))  # where xdg-mime would write its default
    home = tmp_path / "share"
    report = desktop_entry.install(home, command=["/opt/my apps/bin/omicslab"])
    entry = _entry(home / "applications" / "omicslab.desktop")
    assert entry["Type"] == "Application" and entry["Name"] == "OmicsLab"
    assert entry["Exec"] == '"/opt/my apps/bin/omicslab" gui %f'  # a path with a space stays one argument
    assert entry["Icon"] == "omicslab" and entry["Terminal"] == "false"
    assert desktop_entry.H5AD_MIME in entry["MimeType"].split(";")
    icon = home / "icons" / "hicolor" / "scalable" / "apps" / "omicslab.svg"
    assert icon.read_bytes() == (ICONS / "omicslab.svg").read_bytes()
    ns = {"m": "http://www.freedesktop.org/standards/shared-mime-info"}
    mime = ET.parse(home / "mime" / "packages" / "omicslab.xml").getroot().find("m:mime-type", ns)
    assert mime.get("type") == desktop_entry.H5AD_MIME
    assert mime.find("m:glob", ns).get("pattern") == "*.h5ad"
    if shutil.which("update-mime-database"):  # the real database then maps the extension to the type
        assert "MIME database: updated" in report
        assert f"{desktop_entry.H5AD_MIME}:*.h5ad" in (home / "mime" / "globs2").read_text()

    removed = desktop_entry.uninstall(home)
    assert sum(line.startswith("removed ") for line in removed) == 3
    assert not (home / "applications" / "omicslab.desktop").exists() and not icon.exists()


def test_exec_quoting_escapes_what_the_spec_reserves() -> None:
    assert desktop_entry._quote("/usr/bin/omicslab") == "/usr/bin/omicslab"
    assert desktop_entry._quote('/a b/"$x`\\') == '"/a b/\\"\\$x\\`\\\\"'


def test_launch_command_is_this_installation() -> None:
    cmd = desktop_entry.launch_command()
    assert cmd[0] == sys.executable or Path(cmd[0]).parent == Path(sys.executable).parent


def test_command_line_install_desktop(tmp_path: Path) -> None:
    env = dict(os.environ, XDG_DATA_HOME=str(tmp_path / "share"), XDG_CONFIG_HOME=str(tmp_path / "config"),
               PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "-m", "app", "--install-desktop"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    desktop = tmp_path / "share" / "applications" / "omicslab.desktop"
    assert f"wrote {desktop}" in proc.stdout
    assert " gui %f" in _entry(desktop)["Exec"]
