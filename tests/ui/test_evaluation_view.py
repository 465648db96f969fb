"""The window's repeated evaluation (issue #16): "Evaluate (K repeats)" runs ``celllm.evaluate`` through the job
runner on synthetic cells and Results shows mean ± SD per method, the verdict and the label-efficiency plot with
the run's own points; a finished evaluation folder loads; a worker killed mid-evaluation leaves the window
usable; the repeated-evaluation settings come from ``EvaluateConfig``."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import numpy as np
import pyqtgraph as pg
import pytest

from app.engine.events import Failed
from app.engine.registry import job
from app.resources import CELLLM_TINY
from app.ui.evaluation import efficiency_curves, method_rows, verdicts
from app.ui.state import EVAL_TARGET


@pytest.fixture
def cells(tmp_path: Path) -> Path:
    """120 synthetic cells of 3 types over 400 genes of the shipped vocabulary (type-specific markers)."""
    from app.bench.embed import synthetic_h5ad

    genes = (CELLLM_TINY / "vocab.txt").read_text().split()[:400]
    return synthetic_h5ad(120, genes, 60, seed=3, n_types=3, folder=tmp_path)


def _open(qtbot, win, path: Path) -> None:
    with qtbot.waitSignal(win.datasetLoaded, timeout=60000):
        win.open_path(str(path))
    qtbot.waitUntil(lambda: not win.workers, timeout=60000)
    win.model_tab.set_task("finetune")
    for k, v in {"epochs": 1, "max_len": 32, "batch_size": 16, "baseline_genes": 100}.items():
        win.model_tab.set_param(k, v)


def _plotted(plot: pg.PlotWidget) -> tuple[list[pg.PlotDataItem], list[pg.ErrorBarItem]]:
    items = plot.plotItem.items
    return ([i for i in items if isinstance(i, pg.PlotDataItem)], [i for i in items if isinstance(i, pg.ErrorBarItem)])


def test_evaluate_button_runs_repeats_and_results_show_them(qtbot, win, cells: Path) -> None:
    _open(qtbot, win, cells)
    tt, mt, rt = win.train_tab, win.model_tab, win.results_tab
    assert not tt.eval_btn.isHidden() and tt.eval_btn.text() == "Evaluate (3 repeats)"
    mt.set_eval_param("repeats", 2)
    mt.set_eval_param("label_fractions", ["0.25"])
    assert tt.eval_btn.text() == "Evaluate (2 repeats)"
    # the form's settings are EvaluateConfig's (one home): the window's config is the CLI twin's
    target, cfg = win.state.job_spec("RUN", evaluate=True)
    conf = job("celllm.evaluate").config.from_dict(cfg)
    assert target == EVAL_TARGET and conf.repeats == 2 and conf.label_fractions == ("0.25",) and conf.epochs == 1
    tt.eval_btn.click()
    assert tt.running and not tt.eval_btn.isEnabled() and not tt.train_btn.isEnabled()
    with qtbot.waitSignal(tt.job.finished, timeout=600000) as done:
        pass
    assert not isinstance(done.args[0], Failed), done.args[0]
    qtbot.waitUntil(lambda: win.state.evaluation is not None, timeout=10000)
    assert tt.eval_btn.isEnabled() and tt.train_btn.isEnabled()
    assert "Evaluating" in tt.status.text() or tt.status.text() == "Finished."
    run = Path(win.state.current.path)
    ev = json.loads((run / "metrics.json").read_text())
    assert win.state.current.status == "done" and win.state.current.kind == "evaluate"
    assert win.tabs.currentWidget() is rt and rt.score_tabs.currentWidget() is rt.evaluation

    # the table: one row per method, mean ± SD over the 2 repeats as the engine computed them
    panel = rt.evaluation
    assert panel.table.rowCount() == 2
    f1 = ev["methods"]["celllm"]["macro_f1"]
    assert panel.table.item(0, 1).text() == f"{f1['mean']:.3f} ± {f1['sd']:.3f}"
    assert panel.table.item(1, 0).text() == "Baseline"
    assert ev["verdicts"]["celllm_vs_baseline"] in panel.verdict.text()

    # the plot: x = log10(fraction), y = mean over repeats, error bars = SD, per method
    curves, bars = _plotted(panel.plot)
    assert len(curves) == 2 and len(bars) == 2
    for item, bar, method in zip(curves, bars, ("celllm", "baseline"), strict=True):
        table = sorted(ev["label_efficiency"], key=lambda t: t["fraction"])
        x, y = item.getData()
        assert np.allclose(x, np.log10([t["fraction"] for t in table]))
        assert np.allclose(y, [t["methods"][method]["macro_f1"]["mean"] for t in table])
        sd = [t["methods"][method]["macro_f1"]["sd"] or 0.0 for t in table]
        assert np.allclose(bar.opts["height"], 2 * np.asarray(sd))
    assert "label_efficiency" in rt.plots()

    # reopened from the run history, the finished evaluation shows again (cleared first)
    win.state.evaluation = None
    assert panel.table.isHidden()
    assert win.session.reopen(str(run))
    assert win.state.evaluation["repeats"] == 2 and panel.table.rowCount() == 2 and not panel.table.isHidden()


def test_killed_evaluation_worker_leaves_the_window_usable(qtbot, win, cells: Path) -> None:
    _open(qtbot, win, cells)
    tt = win.train_tab
    win.model_tab.set_eval_param("repeats", 2)
    with qtbot.waitSignal(win.errorShown, timeout=120000):
        tt.evaluate()
        qtbot.waitUntil(lambda: tt.job.handle is not None and bool(tt.job.handle.pid), timeout=60000)
        qtbot.waitUntil(lambda: "[1/2]" in tt.log.toPlainText(), timeout=120000)  # the job really evaluates
        assert tt._eval_step == "fine-tune 1 of 2: " and "Evaluating" in tt.status.text()
        assert tt.live_map.isHidden()  # the fine-tunes of an evaluation draw no live map
        os.kill(tt.job.handle.pid, signal.SIGKILL)
    assert isinstance(tt.job.final, Failed)
    win._last_box.close()
    assert win.state.current.status == "failed" and win.state.evaluation is None
    assert not tt.running and tt.eval_btn.isEnabled() and tt.train_btn.isEnabled() and not tt.stop_btn.isEnabled()
    assert tt.bar.format() == "failed"
    # still usable: a one-split fine-tune starts and can be stopped
    tt.train()
    assert tt.running
    tt.stop()
    with qtbot.waitSignal(tt.job.finished, timeout=120000):
        pass
    assert not tt.running and tt.eval_btn.isEnabled()


def test_evaluation_view_functions_on_a_constructed_summary() -> None:
    sp = {"macro_f1": {"mean": 0.8, "sd": 0.05, "n": 3}, "accuracy": {"mean": 0.9, "sd": None, "n": 1}}

    def at(f: float, base: float) -> dict:
        return {"fraction": f, "methods": {"celllm": {"macro_f1": {"mean": base + 0.1, "sd": 0.02, "n": 3}},
                                           "baseline": {"macro_f1": {"mean": base, "sd": None, "n": 1}}}}

    ev = {"methods": {"celllm": sp, "baseline": sp}, "rows": [],
          "differences": {"celllm_minus_baseline": {"macro_f1": {"mean": 0.04, "half_width": 0.03}}},
          "verdicts": {"celllm_vs_scratch": "b", "celllm_vs_baseline": "a"},
          "label_efficiency": [at(1.0, 0.7), at(0.1, 0.5)]}
    rows = method_rows(ev)
    assert rows[0][1:] == ("0.800 ± 0.050", "0.900", "") and rows[1][3] == "+0.040 ± 0.030"
    assert verdicts(ev) == ["a", "b"]
    c = efficiency_curves(ev)
    assert [x.method for x in c] == ["celllm", "baseline"]
    assert c[0].fraction.tolist() == [0.1, 1.0] and np.allclose(c[0].mean, [0.6, 0.8])
    assert c[1].sd.tolist() == [0.0, 0.0]  # one repeat: no SD, a bar of zero height
    assert efficiency_curves({**ev, "label_efficiency": None}) == []


def test_a_folder_that_is_not_an_evaluation_is_a_message(qtbot, win, tmp_path: Path) -> None:
    (tmp_path / "metrics.json").write_text(json.dumps({"test": {"accuracy": 1.0}}))
    with qtbot.waitSignal(win.errorShown, timeout=10000):
        assert not win.session.load_evaluation(str(tmp_path))
    assert "not the summary of a repeated evaluation" in win.last_error[1]
    win._last_box.close()
    assert win.state.evaluation is None


def test_gp_results_show_repeats_and_the_difference_to_gblup(qtbot, win) -> None:
    """A CV with 3 repeats: the table adds r's mean ± SD over repeats and the paired difference to GBLUP, as
    the engine computes them (``app.engine.gp.cv``); one repeat adds nothing."""
    from app.engine.gp.cv import METRICS, summarize, versus

    rng = np.random.default_rng(0)
    rows = []
    for r in (1, 2, 3):
        base = 0.5 + 0.02 * r
        for f in (1, 2):
            for m, v in (("GBLUP", base), ("DeepGS", base + 0.05 + 0.003 * rng.standard_normal()),
                         ("DNNGP", base + 0.01 * rng.standard_normal())):
                rows.append({"model": m, "repeat": r, "fold": f, "seconds": 0.0, **dict.fromkeys(METRICS, v)})
    models = {m: {**summarize(rows, m), "vs_gblup": versus(rows, m)} for m in ("GBLUP", "DeepGS", "DNNGP")}
    s = win.state
    s.kind = "genotype"
    s.gp_result = {"models": models, "folds": rows, "n_lines": 100, "trait": "y"}
    rt = win.results_tab
    t = rt.gp_table
    header = [t.horizontalHeaderItem(j).text() for j in range(t.columnCount())]
    assert header[:3] == ["model", "r over repeats (mean ± SD)", "minus GBLUP (95 %)"]
    shown = {t.item(i, 0).text(): (t.item(i, 1).text(), t.item(i, 2).text()) for i in range(t.rowCount())}
    d = models["DeepGS"]["vs_gblup"]
    over = models["DeepGS"]["over_repeats"]["pearson"]
    assert shown["DeepGS"] == (f"{over['mean']:.3f} ± {over['sd']:.3f}",
                               f"{d['mean']:+.3f} ± {d['half_width']:.3f} (ahead)")
    assert shown["GBLUP"][1] == "reference" and shown["DNNGP"][1].endswith("(not distinguishable)")
    assert d["verdict"] in rt.gp_label.text()
    one = [row for row in rows if row["repeat"] == 1]
    s.gp_result = {"models": {m: {**summarize(one, m), "vs_gblup": versus(one, m)} for m in ("GBLUP", "DeepGS")},
                   "folds": one}
    assert [t.horizontalHeaderItem(j).text() for j in range(t.columnCount())][:2] == ["model", "fold 1"]
