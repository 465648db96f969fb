"""While a window is open, cyclic garbage is collected on the GUI thread only (a worker thread's collection
freeing Qt objects deadlocked Qt and the GIL in CI)."""

from __future__ import annotations

import gc
import threading
import weakref


def test_cycles_are_collected_on_the_gui_thread_and_gc_comes_back_after_close(qtbot) -> None:
    from app.ui.main_window import MainWindow

    assert gc.isenabled()
    w = MainWindow(umap_refine=False)
    qtbot.addWidget(w)
    assert not gc.isenabled()

    where: list[str] = []

    class Node:
        pass

    def make_cycles() -> None:  # garbage made (and, without the guard, possibly collected) in a worker
        for _ in range(2000):
            a, b = Node(), Node()
            a.other, b.other = b, a
        weakref.finalize(a, lambda: where.append(threading.current_thread().name))

    t = threading.Thread(target=make_cycles, name="worker")
    t.start()
    t.join()
    qtbot.waitUntil(lambda: bool(where), timeout=10000)
    assert where == [threading.main_thread().name]

    w.close()
    assert gc.isenabled()
