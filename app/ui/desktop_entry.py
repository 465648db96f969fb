"""A Linux desktop launcher: ``omicslab --install-desktop`` (and ``--uninstall-desktop``).

Writes, per the freedesktop.org specifications, into the user's data folder (``$XDG_DATA_HOME``, by
default ``~/.local/share``; nothing system-wide, no root):

- ``applications/omicslab.desktop``: the menu entry, starting the installed ``omicslab`` command;
- ``icons/hicolor/scalable/apps/omicslab.svg``: its icon;
- ``mime/packages/omicslab.xml``: the ``application/x-anndata`` type for ``*.h5ad`` files, which the entry
  declares it opens (so a file manager offers OmicsLab for them).

Then it refreshes the desktop's caches with ``update-mime-database`` / ``update-desktop-database`` and
makes OmicsLab the default for ``.h5ad`` with ``xdg-mime`` when those tools exist. Qt-free.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from app.resources import ICONS

APP_ID = "omicslab"
H5AD_MIME = "application/x-anndata"

_MIME_XML = f"""<?xml version="1.0" encoding="UTF-8"?>
<mime-info xmlns="http://www.freedesktop.org/standards/shared-mime-info">
  <mime-type type="{H5AD_MIME}">
    <comment>AnnData single-cell dataset</comment>
    <sub-class-of type="application/x-hdf5"/>
    <glob pattern="*.h5ad"/>
  </mime-type>
</mime-info>
"""


def data_home() -> Path:
    """``$XDG_DATA_HOME`` or ``~/.local/share``."""
    return Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")


def _targets(home: Path) -> dict[str, Path]:
    return {
        "desktop": home / "applications" / f"{APP_ID}.desktop",
        "icon": home / "icons" / "hicolor" / "scalable" / "apps" / f"{APP_ID}.svg",
        "mime": home / "mime" / "packages" / f"{APP_ID}.xml",
    }


def _quote(arg: str) -> str:
    """One argument of a desktop entry's Exec key (quoted when it holds anything but safe characters)."""
    if arg and all(c.isalnum() or c in "/._-+=:," for c in arg):
        return arg
    return '"' + "".join("\\" + c if c in '"`$\\' else c for c in arg) + '"'


def launch_command() -> list[str]:
    """The command that starts this installation's window: the bundle itself, the ``omicslab`` script
    beside this Python (venv, pipx), or ``python -m app`` as the last resort."""
    if getattr(sys, "frozen", False):  # a PyInstaller bundle: its executable is the program
        return [sys.executable]
    script = Path(sys.executable).with_name("omicslab.exe" if os.name == "nt" else "omicslab")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "app"]


def desktop_entry(command: list[str]) -> str:
    """The text of the ``.desktop`` file for ``command`` (``gui %f``: the window, on a file when given)."""
    exec_line = " ".join(_quote(a) for a in command) + " gui %f"
    return "\n".join([
        "[Desktop Entry]",
        "Type=Application",
        "Name=OmicsLab",
        "GenericName=Single-cell and genomic prediction",
        "Comment=Train and use CellLM and genomic-prediction models on your own data",
        f"Exec={exec_line}",
        f"Icon={APP_ID}",
        "Terminal=false",
        "Categories=Science;Biology;DataVisualization;",
        f"MimeType={H5AD_MIME};",
        "StartupNotify=true",
        "",
    ])


def _refresh(home: Path, *, set_default: bool) -> list[str]:
    """Run the desktop's cache tools that exist; returns what was done or skipped, in words."""
    later = "the desktop picks the files up at next login"
    steps = [(["update-mime-database", str(home / "mime")], "MIME database", later),
             (["update-desktop-database", str(home / "applications")], "desktop entry cache", later)]
    if set_default:
        steps.append((["xdg-mime", "default", f"{APP_ID}.desktop", H5AD_MIME], "default app for .h5ad",
                      "file managers still offer OmicsLab under 'Open With' for .h5ad files"))
    notes = []
    for cmd, what, without in steps:
        if shutil.which(cmd[0]) is None:
            notes.append(f"{what}: {cmd[0]} not found ({without})")
            continue
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        notes.append(f"{what}: updated" if proc.returncode == 0
                     else f"{what}: {cmd[0]} failed ({(proc.stderr or proc.stdout).strip()[:200]})")
    return notes


def install(home: Path | None = None, command: list[str] | None = None) -> list[str]:
    """Write the launcher, icon and MIME type under ``home`` (default: ``data_home()``); returns a report."""
    home = data_home() if home is None else home
    targets = _targets(home)
    icon = ICONS / f"{APP_ID}.svg"
    for path in targets.values():
        path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(icon, targets["icon"])
    targets["mime"].write_text(_MIME_XML, encoding="utf-8")
    targets["desktop"].write_text(desktop_entry(launch_command() if command is None else command), encoding="utf-8")
    return [f"wrote {p}" for p in targets.values()] + _refresh(home, set_default=True)


def uninstall(home: Path | None = None) -> list[str]:
    """Remove what ``install`` wrote; returns a report."""
    home = data_home() if home is None else home
    report = []
    for path in _targets(home).values():
        if path.is_file():
            path.unlink()
            report.append(f"removed {path}")
    return (report or [f"no OmicsLab launcher under {home}"]) + _refresh(home, set_default=False)


def main(remove: bool = False) -> int:
    """``--install-desktop`` / ``--uninstall-desktop``: print the report; 1 with a clear message on failure."""
    if sys.platform != "linux":
        print("--install-desktop writes a Linux (freedesktop.org) launcher; on macOS and Windows see the README "
              "(section 'Installing') for how to start OmicsLab.", file=sys.stderr)
        return 2
    try:
        report = uninstall() if remove else install()
    except OSError as exc:
        print(f"error: could not {'remove' if remove else 'write'} the desktop launcher: {exc}. "
              f"Check that {data_home()} is writable (or set XDG_DATA_HOME).", file=sys.stderr)
        return 1
    print("\n".join(report))
    return 0
