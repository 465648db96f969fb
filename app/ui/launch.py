"""``python -m app`` (GUI): ``main(argv) -> int``.

    python -m app                       the main window
    python -m app PATH                  the window with PATH opened
    python -m app --demo singlecell     opens on scanpy's bundled pbmc68k_reduced (no download)
    python -m app --demo genotype       opens on the simulated breeding population
    python -m app --smoke               builds the window, reads the single-cell demo summary, quits (0 = ok)
    python -m app --install-desktop     Linux: a menu entry with the icon, opening .h5ad files (app.ui.desktop_entry)
"""

from __future__ import annotations

import argparse
import os
import sys

from app.resources import ICONS


def app_icon() -> object:
    """The window icon (SVG, crisp at any DPI; PNG fallback)."""
    from PySide6.QtGui import QIcon

    icon = QIcon()
    for name in ("omicslab.svg", "omicslab.png"):
        p = ICONS / name
        if p.is_file():
            icon.addFile(str(p))
    return icon


def icon(name: str) -> object:
    """A toolbar/button icon shipped in app/resources/icons (SVG: sharp on high-DPI screens); empty when missing."""
    from PySide6.QtGui import QIcon

    p = ICONS / f"{name}.svg"
    return QIcon(str(p)) if p.is_file() else QIcon()


_LOOP: object = None


def process_events() -> None:
    """Handle pending events from Python code that polls (tools, benchmarks). Through a ``QEventLoop``
    instance: PySide6 6.12's static ``QCoreApplication.processEvents()`` (and ``QTest.qWait``) drop a
    reference to None at every call, and a few thousand calls crash the interpreter at exit."""
    global _LOOP
    from PySide6.QtCore import QEventLoop

    if _LOOP is None:
        _LOOP = QEventLoop()
    _LOOP.processEvents()


def make_app() -> object:
    """The QApplication (created once), high-DPI friendly."""
    from PySide6.QtCore import Qt
    from PySide6.QtGui import QGuiApplication
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance()
    if app is None:
        QGuiApplication.setHighDpiScaleFactorRoundingPolicy(Qt.HighDpiScaleFactorRoundingPolicy.PassThrough)
        app = QApplication(sys.argv[:1])
        app.setApplicationName("OmicsLab")
        app.setOrganizationName("OmicsLab")
        app.setWindowIcon(app_icon())
    return app


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m app", description="OmicsLab window")
    p.add_argument("path", nargs="?", help="a dataset to open")
    p.add_argument("--demo", choices=["singlecell", "genotype"], help="open a bundled demo dataset")
    p.add_argument("--smoke", action="store_true", help="build the window, read the demo summary and quit")
    p.add_argument("--smoke-timeout", type=float, default=120.0, help=argparse.SUPPRESS)
    p.add_argument("--install-desktop", action="store_true",
                   help="Linux: add OmicsLab to the applications menu and as the opener of .h5ad files, then quit")
    p.add_argument("--uninstall-desktop", action="store_true", help="Linux: remove that launcher, then quit")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Open the window (or run the smoke check)."""
    args = parse(list(sys.argv[1:] if argv is None else argv))
    if args.install_desktop or args.uninstall_desktop:  # no window: write (or remove) the launcher files
        from app.ui.desktop_entry import main as desktop_main

        return desktop_main(remove=args.uninstall_desktop)
    if args.smoke and "QT_QPA_PLATFORM" not in os.environ and not os.environ.get("DISPLAY"):
        os.environ["QT_QPA_PLATFORM"] = "offscreen"
    app = make_app()
    from PySide6.QtCore import QTimer

    from app.ui.main_window import MainWindow

    win = MainWindow()
    win.setWindowIcon(app_icon())
    if args.smoke:
        return _smoke(app, win, args.smoke_timeout, args.demo or "singlecell")
    win.show()
    if args.demo:
        QTimer.singleShot(0, lambda: win.open_demo(args.demo))
    elif args.path:
        QTimer.singleShot(0, lambda: win.open_path(args.path))
    try:
        return int(app.exec())
    finally:
        win.shutdown()


def _smoke(app: object, win: object, timeout_s: float, demo: str = "singlecell") -> int:
    """Build the window, read a demo's summary (single-cell unless ``--demo genotype``) through the real
    worker path, quit."""
    from PySide6.QtCore import QTimer

    result = {"rc": 1}

    def check(_kind: str = "") -> None:
        ok = win.tabs.count() == 5 and win.state.summary is not None and win.state.n_items > 0
        result["rc"] = 0 if ok else 1
        shape = (f"{win.state.n_items} cells x {getattr(win.state.summary, 'n_genes', '?')} genes"
                 if demo == "singlecell" else f"{win.state.n_items} lines")
        print(f"smoke: window with {win.tabs.count()} tabs; {demo} demo: {shape} -> "
              f"{'ok' if ok else 'FAILED'}", flush=True)
        app.quit()

    def failed(msg: str) -> None:
        print(f"smoke: FAILED: {msg}", file=sys.stderr, flush=True)
        app.quit()

    win.datasetLoaded.connect(check)
    win.errorShown.connect(failed)
    QTimer.singleShot(0, lambda: win.open_demo(demo))
    QTimer.singleShot(int(timeout_s * 1000), lambda: failed("timed out"))
    app.exec()
    win.shutdown()
    return result["rc"]


if __name__ == "__main__":
    raise SystemExit(main())
