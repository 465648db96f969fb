"""What a tab may ask of the window it sits in: a small interface, so no tab knows the window or another tab.

Tabs are views: each gets the ``Session`` (state + workflow, Qt-free) and a ``Shell`` (the window's services:
opening files, short work in a thread, message boxes, the plots of every view). A view that has plots
implements ``PlotSource``; the Export tab saves every plot of every view through it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class PlotSource(Protocol):
    """A view that shows plots."""

    def plots(self) -> dict[str, Any]:
        """Its non-empty plots by file name stem (``{"loss": PlotWidget, ...}``), ready to export."""
        ...


class Shell(Protocol):
    """The window's services for its tabs."""

    def open_dialog(self) -> None:
        """Ask for a dataset file and open it."""
        ...

    def open_path(self, path: str) -> Any:
        """Read ``path`` (kind detected) in a worker."""
        ...

    def open_demo(self, kind: str, max_cells: int | None = None) -> Any:
        """Open a bundled demo ("singlecell" or "genotype")."""
        ...

    def add_phenotypes(self, path: str, trait: str | None = None) -> Any:
        """Join a phenotype table to the open genotypes."""
        ...

    def reopen_genotype(self, orientation: str) -> Any:
        """Read the open numeric genotype matrix again the way round chosen ("auto", "samples_x_markers",
        "markers_x_samples"), then re-join its phenotypes."""
        ...

    def run_worker(self, fn: Callable[..., Any], *args: Any, on_done: Callable[[Any], None] | None = None,
                   what: str = "working", on_error: Callable[[BaseException, str], None] | None = None) -> Any:
        """Run short work in a thread; errors become a message box."""
        ...

    def show_error(self, title: str, message: str, details: str = "") -> None:
        """A clear, non-blocking message box (details go to the log pane)."""
        ...

    def open_annotate(self, model: str | None = None) -> Any:
        """The "Annotate another dataset" step with a fine-tuned model (a run folder; None: choose one)."""
        ...

    def plot_sources(self) -> list[PlotSource]:
        """Every view that has plots."""
        ...
